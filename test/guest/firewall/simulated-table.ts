// A model of the one nft table, for checking generated scripts without a kernel: it runs the
// commands ruleset.ts emits with nft's transaction semantics, stricter where nft would be lenient
// (adding an element that exists, merging into an existing table), and prints listings the way
// `nft -n -s list table` does, element lists wrapped over lines. Traffic's elements of the flow
// set (`100.64.0.1 ct count over 4096`) and the rate set are given as they are listed; nft
// deletes one by its key.
import { FLOW_RATE_SET, FLOW_SET, SET_NAMES, type FirewallElements, type SetName, TABLE, emptyElements, parseElementList } from '../../../guest/firewall/ruleset.js';

export interface SimulatedTable {
  readonly structure: string;
  readonly elements: Readonly<Record<string, ReadonlySet<string>>>;
}

/** `flowElements`, `rateElements`: what traffic put in the flow set and the rate set, as listed. */
export function tableOf(structure: string, elements: FirewallElements, flowElements: readonly string[] = [], rateElements: readonly string[] = []): SimulatedTable {
  return {
    structure,
    elements: {
      ...Object.fromEntries(SET_NAMES.map((name) => [name, new Set(elements[name])])),
      ...(flowElements.length > 0 && { [FLOW_SET]: new Set(flowElements) }),
      ...(rateElements.length > 0 && { [FLOW_RATE_SET]: new Set(rateElements) }),
    },
  };
}

/** The rate set's elements as listed, sorted. */
export function rateElementsOf(table: SimulatedTable): string[] {
  return [...(table.elements[FLOW_RATE_SET] ?? [])].sort();
}

/** The flow set's elements as listed, sorted. */
export function flowElementsOf(table: SimulatedTable): string[] {
  return [...(table.elements[FLOW_SET] ?? [])].sort();
}

/** The table with traffic's elements of the flow set replaced by `flowElements`, as the kernel would. */
export function withFlowElements(table: SimulatedTable, flowElements: readonly string[]): SimulatedTable {
  return { structure: table.structure, elements: { ...table.elements, [FLOW_SET]: new Set(flowElements) } };
}

/** The table with traffic's elements of the rate set replaced by `rateElements`, as the kernel would. */
export function withRateElements(table: SimulatedTable, rateElements: readonly string[]): SimulatedTable {
  return { structure: table.structure, elements: { ...table.elements, [FLOW_RATE_SET]: new Set(rateElements) } };
}

/** The element of `set` that `element` names: itself, or in a traffic set the one with that key. */
function elementNamed(set: ReadonlySet<string>, setName: string, element: string): string | undefined {
  if (set.has(element)) return element;
  if (setName !== FLOW_SET && setName !== FLOW_RATE_SET) return undefined;
  return [...set].find((listed) => listed.split(' ')[0] === element);
}

export function elementsOf(table: SimulatedTable): FirewallElements {
  const result: Record<SetName, readonly string[]> = { ...emptyElements() };
  for (const name of SET_NAMES) result[name] = [...(table.elements[name] ?? [])].sort();
  return result;
}

const ELEMENT_COMMAND = new RegExp(`^(add|delete) element ${TABLE} (\\S+) \\{ (.*) \\}$`);

/** Apply a script atomically: any failing command leaves the table as it was, like nft -f. */
export function applyScript(table: SimulatedTable | undefined, script: string): SimulatedTable | undefined {
  let state = table === undefined ? undefined : { structure: table.structure, elements: cloneSets(table.elements) };
  const lines = script.split('\n');
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index] ?? '';
    if (line === '') continue;
    if (line === `add table ${TABLE}`) {
      state ??= { structure: `table ${TABLE} {\n}\n`, elements: {} };
      continue;
    }
    if (line === `delete table ${TABLE}`) {
      if (state === undefined) throw new Error('delete table: no such table');
      state = undefined;
      continue;
    }
    if (line === `table ${TABLE} {`) {
      if (state !== undefined) throw new Error('table block would merge into an existing table');
      const body = [line];
      while (lines[index] !== '}') {
        index += 1;
        if (index >= lines.length) throw new Error('unterminated table block');
        body.push(lines[index] ?? '');
      }
      const structure = `${body.join('\n')}\n`;
      const sets = [...structure.matchAll(/^\tset (\S+) \{$/gm)].map((match) => match[1] ?? '');
      state = { structure, elements: Object.fromEntries(sets.map((name) => [name, new Set<string>()])) };
      continue;
    }
    const command = ELEMENT_COMMAND.exec(line);
    if (command === null) throw new Error(`unknown command: ${line}`);
    const [, verb, setName = '', list = ''] = command;
    const set = state?.elements[setName];
    if (set === undefined) throw new Error(`${verb} element: no set ${setName}`);
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
  return state;
}

function cloneSets(sets: Readonly<Record<string, ReadonlySet<string>>>): Record<string, Set<string>> {
  return Object.fromEntries(Object.entries(sets).map(([name, set]) => [name, new Set(set)]));
}

/** The listing nft would print; `perLine` elements per line as nft wraps them, after the set's type, size and flags. */
export function renderListing(table: SimulatedTable, perLine = 2): string {
  return table.structure.replace(/^(\tset (\S+) \{\n(?:\t\t[^\n]*\n)*)(?=\t\}$)/gm, (block: string, _header: string, name: string) => {
    const elements = [...(table.elements[name] ?? [])];
    if (elements.length === 0) return block;
    const rows: string[] = [];
    for (let start = 0; start < elements.length; start += perLine) rows.push(elements.slice(start, start + perLine).join(', '));
    return `${block}\t\telements = { ${rows.join(',\n\t\t\t     ')} }\n`;
  });
}
