// A model of the firewall's two nft tables (inet and the ARP guard), for checking generated scripts
// without a kernel: it runs the commands ruleset.ts emits with nft's transaction semantics, stricter
// where nft would be lenient (adding an element that exists, merging into an existing table), and
// prints listings the way `nft -n -s list table` does, element lists wrapped over lines. Traffic's
// elements of the flow set (`100.64.0.1 ct count over 4096`) and the rate set are given as they are
// listed; nft deletes one by its key.
import {
  ARP_SET_NAMES,
  ARP_TABLE,
  FLOW_RATE_SET,
  FLOW_SET,
  FRAGMENT_RATE_SET,
  type FirewallElements,
  type FirewallListings,
  type FirewallTable,
  SET_NAMES,
  type SetName,
  TABLE,
  arpElementsOf,
  emptyElements,
  parseElementList,
  staticArpTableText,
} from '../../../guest/firewall/ruleset.js';

/** One table: its text without elements, and its sets' elements. */
export interface SimulatedTable {
  readonly structure: string;
  readonly elements: Readonly<Record<string, ReadonlySet<string>>>;
}

/** The firewall's tables as nft holds them; a table that does not exist is absent. */
export interface SimulatedFirewall {
  readonly inet?: SimulatedTable;
  readonly arp?: SimulatedTable;
}

const TABLE_NAMES: Readonly<Record<FirewallTable, string>> = { inet: TABLE, arp: ARP_TABLE };

/** The ARP guard as the planner makes it for these elements (its sets hold a subset of them). */
export function arpTableOf(elements: FirewallElements, structure = staticArpTableText()): SimulatedTable {
  return { structure, elements: Object.fromEntries(ARP_SET_NAMES.map((name) => [name, new Set(elements[name])])) };
}

/**
 * The firewall with an inet table of `structure` and `elements`, and the ARP guard as made for
 * those elements. `flowElements`, `rateElements`, `fragmentElements`: what traffic put in the flow
 * set, the rate set and the fragment rate set, as listed.
 */
export function tableOf(
  structure: string,
  elements: FirewallElements,
  flowElements: readonly string[] = [],
  rateElements: readonly string[] = [],
  fragmentElements: readonly string[] = [],
): SimulatedFirewall {
  return {
    inet: {
      structure,
      elements: {
        ...Object.fromEntries(SET_NAMES.map((name) => [name, new Set(elements[name])])),
        ...(flowElements.length > 0 && { [FLOW_SET]: new Set(flowElements) }),
        ...(rateElements.length > 0 && { [FLOW_RATE_SET]: new Set(rateElements) }),
        ...(fragmentElements.length > 0 && { [FRAGMENT_RATE_SET]: new Set(fragmentElements) }),
      },
    },
    arp: arpTableOf(elements),
  };
}

function inetOf(firewall: SimulatedFirewall): SimulatedTable {
  if (firewall.inet === undefined) throw new Error('no inet table');
  return firewall.inet;
}

/** The fragment rate set's elements as listed, sorted. */
export function fragmentElementsOf(firewall: SimulatedFirewall): string[] {
  return [...(inetOf(firewall).elements[FRAGMENT_RATE_SET] ?? [])].sort();
}

/** The rate set's elements as listed, sorted. */
export function rateElementsOf(firewall: SimulatedFirewall): string[] {
  return [...(inetOf(firewall).elements[FLOW_RATE_SET] ?? [])].sort();
}

/** The flow set's elements as listed, sorted. */
export function flowElementsOf(firewall: SimulatedFirewall): string[] {
  return [...(inetOf(firewall).elements[FLOW_SET] ?? [])].sort();
}

/** The firewall with traffic's elements of the flow set replaced by `flowElements`, as the kernel would. */
export function withFlowElements(firewall: SimulatedFirewall, flowElements: readonly string[]): SimulatedFirewall {
  const inet = inetOf(firewall);
  return { ...firewall, inet: { structure: inet.structure, elements: { ...inet.elements, [FLOW_SET]: new Set(flowElements) } } };
}

/** The firewall with traffic's elements of the rate set replaced by `rateElements`, as the kernel would. */
export function withRateElements(firewall: SimulatedFirewall, rateElements: readonly string[]): SimulatedFirewall {
  const inet = inetOf(firewall);
  return { ...firewall, inet: { structure: inet.structure, elements: { ...inet.elements, [FLOW_RATE_SET]: new Set(rateElements) } } };
}

/** The element of `set` that `element` names: itself, or in a traffic set the one with that key. */
function elementNamed(set: ReadonlySet<string>, setName: string, element: string): string | undefined {
  if (set.has(element)) return element;
  if (setName !== FLOW_SET && setName !== FLOW_RATE_SET && setName !== FRAGMENT_RATE_SET) return undefined;
  return [...set].find((listed) => listed.split(' ')[0] === element);
}

function setElementsOf(table: SimulatedTable | undefined): FirewallElements {
  const result: Record<SetName, readonly string[]> = { ...emptyElements() };
  for (const name of SET_NAMES) result[name] = [...(table?.elements[name] ?? [])].sort();
  return result;
}

/** The inet table's elements, per set, sorted. */
export function elementsOf(firewall: SimulatedFirewall): FirewallElements {
  return setElementsOf(inetOf(firewall));
}

/** The ARP guard's elements (its sets; the others empty), sorted; undefined without the table. */
export function arpSetElementsOf(firewall: SimulatedFirewall): FirewallElements | undefined {
  return firewall.arp === undefined ? undefined : setElementsOf(firewall.arp);
}

/** Whether the ARP guard stands as made, holding exactly the elements the inet table's sets say it should. */
export function arpGuardMatches(firewall: SimulatedFirewall): boolean {
  return firewall.arp?.structure === staticArpTableText() && JSON.stringify(arpSetElementsOf(firewall)) === JSON.stringify(arpElementsOf(elementsOf(firewall)));
}

const ELEMENT_COMMAND = /^(add|delete) element (\S+ \S+) (\S+) \{ (.*) \}$/;
const TABLE_COMMAND = /^(add|delete) table (\S+ \S+)$/;
const TABLE_BLOCK = /^table (\S+ \S+) \{$/;

function tableKey(name: string): FirewallTable {
  const key = (Object.keys(TABLE_NAMES) as FirewallTable[]).find((table) => TABLE_NAMES[table] === name);
  if (key === undefined) throw new Error(`a table the firewall does not have: ${name}`);
  return key;
}

/**
 * Apply a script atomically: any failing command leaves the tables as they were, like nft -f.
 * Undefined once neither table exists.
 */
export function applyScript(firewall: SimulatedFirewall | undefined, script: string): SimulatedFirewall | undefined {
  const state: Partial<Record<FirewallTable, { structure: string; elements: Record<string, Set<string>> }>> = {};
  for (const key of Object.keys(TABLE_NAMES) as FirewallTable[]) {
    const table = firewall?.[key];
    if (table !== undefined) state[key] = { structure: table.structure, elements: cloneSets(table.elements) };
  }
  const lines = script.split('\n');
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index] ?? '';
    if (line === '') continue;
    const tableCommand = TABLE_COMMAND.exec(line);
    if (tableCommand !== null) {
      const key = tableKey(tableCommand[2] ?? '');
      if (tableCommand[1] === 'add') state[key] ??= { structure: `table ${TABLE_NAMES[key]} {\n}\n`, elements: {} };
      else {
        if (state[key] === undefined) throw new Error('delete table: no such table');
        delete state[key];
      }
      continue;
    }
    const block = TABLE_BLOCK.exec(line);
    if (block !== null) {
      const key = tableKey(block[1] ?? '');
      if (state[key] !== undefined) throw new Error('table block would merge into an existing table');
      const body = [line];
      while (lines[index] !== '}') {
        index += 1;
        if (index >= lines.length) throw new Error('unterminated table block');
        body.push(lines[index] ?? '');
      }
      const structure = `${body.join('\n')}\n`;
      const sets = [...structure.matchAll(/^\tset (\S+) \{$/gm)].map((match) => match[1] ?? '');
      state[key] = { structure, elements: Object.fromEntries(sets.map((name) => [name, new Set<string>()])) };
      continue;
    }
    const command = ELEMENT_COMMAND.exec(line);
    if (command === null) throw new Error(`unknown command: ${line}`);
    const [, verb, tableName = '', setName = '', list = ''] = command;
    const set = state[tableKey(tableName)]?.elements[setName];
    if (set === undefined) throw new Error(`${verb} element: no set ${setName} in ${tableName}`);
    for (const element of parseElementList(list)) {
      if (verb === 'add') {
        if (set.has(element)) throw new Error(`add element: ${element} already in ${setName}`);
        set.add(element);
      } else {
        const named = elementNamed(set, setName, element);
        if (named === undefined) throw new Error(`delete element: ${element} not in ${setName}`);
        set.delete(named);
      }
    }
  }
  return state.inet === undefined && state.arp === undefined ? undefined : state;
}

function cloneSets(sets: Readonly<Record<string, ReadonlySet<string>>>): Record<string, Set<string>> {
  return Object.fromEntries(Object.entries(sets).map(([name, set]) => [name, new Set(set)]));
}

/** The listing nft would print of one table; `perLine` elements per line as nft wraps them, after the set's type, size and flags. */
export function renderListing(table: SimulatedTable, perLine = 2): string {
  return table.structure.replace(/^(\tset (\S+) \{\n(?:\t\t[^\n]*\n)*)(?=\t\}$)/gm, (block: string, _header: string, name: string) => {
    const elements = [...(table.elements[name] ?? [])];
    if (elements.length === 0) return block;
    const rows: string[] = [];
    for (let start = 0; start < elements.length; start += perLine) rows.push(elements.slice(start, start + perLine).join(', '));
    return `${block}\t\telements = { ${rows.join(',\n\t\t\t     ')} }\n`;
  });
}

/** Both tables' listings, as the adapter reads them. */
export function listingsOf(firewall: SimulatedFirewall | undefined, perLine = 2): FirewallListings {
  return {
    inet: firewall?.inet === undefined ? undefined : renderListing(firewall.inet, perLine),
    arp: firewall?.arp === undefined ? undefined : renderListing(firewall.arp, perLine),
  };
}

/** What nft answers `list table FAMILY NAME` with, for a mocked libnftables. */
export function listTable(firewall: SimulatedFirewall | undefined, command: string): { code: number; stdout: string; stderr: string } {
  const table = firewall?.[tableKey(command.replace(/^list table /, '').trim())];
  return table === undefined ? { code: 1, stdout: '', stderr: 'Error: No such file or directory' } : { code: 0, stdout: renderListing(table), stderr: '' };
}
