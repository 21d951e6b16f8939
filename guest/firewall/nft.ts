/**
 * Adapter: runs nft commands to make the table what ruleset.ts plans. In the agent's own
 * namespace they run in-process through libnftables (nft-library.ts: no process per change, so
 * a hot-plug's firewall change costs a transaction, not an nft start-up); with `netns`, for tests
 * and benchmarks that drive a namespace from outside, a spawned `ip netns exec NS nft`. Reads
 * first, changes only what differs, each change one nft transaction; an unchanged model changes
 * nothing at all, so counters and `nft list ruleset` stay byte-identical across agent restarts.
 */
import { spawn } from 'node:child_process';
import { arpFamilyRefused } from './arp-family.js';
import { type FirewallCounters, type InetCounters, parseArpDropsJson, parseInetCountersJson } from './counters.js';
import { FirewallError } from './firewall-error.js';
import { type FirewallState, advanceFirewallState, firewallStateOf } from './firewall-state.js';
import { type FirewallModel, type ValidFirewallModel, validateFirewallModel } from './model.js';
import { type NftOutput, type NftResult, runNftInProcess } from './nft-library.js';
import {
  ARP_TABLE,
  type FirewallListings,
  type FirewallTable,
  TABLE,
  TABLE_OF,
  elementCommands,
  isEmptyDiff,
  parseTableListing,
  planFirewall,
  removeTableScript,
  staticTableText,
} from './ruleset.js';
import { type TableSettings, assertTableSettings } from './table-settings.js';

export interface NftOptions {
  /**
   * Run a spawned nft in this named network namespace (`ip netns exec`); default: libnftables
   * in the caller's own process and namespace.
   */
  readonly netns?: string;
  /**
   * Without `netns`: run `nft` from PATH as a process in the caller's namespace instead of
   * libnftables (SPECTRUM_NETD_SPAWN_NFT): for tests that put a wrapper nft first in PATH.
   */
  readonly spawn?: boolean;
  /** Per nft call; default 10 s. */
  readonly timeoutMs?: number;
}

/**
 * Where nft runs, and the settings the table is made with. The settings are required: a table
 * made with one cap and audited against another would be replaced at every audit.
 * `arpFamilyRefused`: nft refused the arp family before (the kernel has no CONFIG_NF_TABLES_ARP):
 * make the inet table alone, and try the ARP guard no more.
 */
export type FirewallOptions = NftOptions & TableSettings & { readonly arpFamilyRefused?: boolean };

const DEFAULT_TIMEOUT_MS = 10_000;
const NETNS_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** One nft call: a command (with output options), or a script as `nft -f -` reads it. */
type NftCall = { readonly kind: 'command'; readonly output: NftOutput; readonly words: readonly string[] } | { readonly kind: 'script'; readonly script: string };

function describe(call: NftCall): string {
  return call.kind === 'command' ? [...outputArgs(call.output), ...call.words].join(' ') : '-f -';
}

function outputArgs(output: NftOutput): string[] {
  return [...(output.stateless === true ? ['-s'] : []), ...(output.json === true ? ['-j'] : []), ...(output.numeric === true ? ['-n'] : [])];
}

function runNft(call: NftCall, options: NftOptions): Promise<NftResult> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (options.netns === undefined && options.spawn !== true) {
    return call.kind === 'command'
      ? runNftInProcess(call.words.join(' '), call.output, timeoutMs, describe(call))
      : runNftInProcess(call.script, {}, timeoutMs, describe(call));
  }
  if (options.netns !== undefined && !NETNS_NAME.test(options.netns)) {
    throw new FirewallError('netns-name', `network namespace name ${JSON.stringify(options.netns)} is not a plain name under /run/netns`);
  }
  const args = call.kind === 'command' ? [...outputArgs(call.output), ...call.words] : ['-f', '-'];
  const where = options.netns === undefined ? [] : ['ip', 'netns', 'exec', options.netns];
  return spawnNft([...where, 'nft', ...args], timeoutMs, describe(call), call.kind === 'script' ? call.script : '');
}

/** One nft process: output collected, killed on timeout, never left running. */
function spawnNft(argv: readonly string[], timeoutMs: number, what: string, input: string): Promise<NftResult> {
  const [command, ...rest] = argv;
  return new Promise((resolve, reject) => {
    const child = spawn(command ?? 'nft', rest, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let settled = false;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish(() => reject(new FirewallError('nft-timeout', `nft ${what} did not finish within ${timeoutMs} ms: is the netlink socket stuck?`)));
    }, timeoutMs);
    const finish = (settle: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      settle();
    };
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', (error: NodeJS.ErrnoException) => {
      finish(() =>
        reject(
          error.code === 'ENOENT'
            ? new FirewallError('nft-missing', `${command ?? 'nft'} is not installed: install nftables and iproute2 (--netns runs ip netns exec NS nft)`, { cause: error })
            : new FirewallError('nft-failed', `could not run nft: ${error.message}`, { cause: error }),
        ),
      );
    });
    child.on('close', (code) => finish(() => resolve({ code, stdout, stderr })));
    // A missing binary closes stdin before we write; the 'error' event reports that instead.
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

function failure(what: string, result: NftResult): FirewallError {
  return new FirewallError('nft-failed', `nft ${what} failed (exit ${String(result.code)}): ${result.stderr.trim()}`);
}

const NO_SUCH_TABLE = /No such file or directory/;

/**
 * A table's stateless numeric listing (see staticTableText), or undefined when there is no such
 * table. Numeric, so that names /etc files give to the values (a device group in
 * /etc/iproute2/group, a protocol in /etc/protocols) never make it differ from the expected text.
 */
async function readTable(table: string, options: NftOptions): Promise<string | undefined> {
  const result = await runNft({ kind: 'command', output: { stateless: true, numeric: true, listing: true }, words: ['list', 'table', ...table.split(' ')] }, options);
  if (result.code === 0) return result.stdout;
  if (NO_SUCH_TABLE.test(result.stderr)) return undefined;
  throw failure(`list table ${table}`, result);
}

/** Both tables' listings: the inet table and the ARP guard (without `arpGuard`, not listed). */
async function readTables(options: NftOptions, arpGuard: boolean): Promise<FirewallListings> {
  return { inet: await readTable(TABLE, options), arp: arpGuard ? await readTable(ARP_TABLE, options) : undefined };
}

async function applyScript(script: string, options: NftOptions): Promise<NftResult> {
  return runNft({ kind: 'script', script }, options);
}

/**
 * What a reconcile did: whether anything changed, and `arpFamilyRefused` (only then present) when
 * the ARP guard was left out because nft refused its family (see arp-family.ts).
 */
export interface ReconcileOutcome {
  readonly changed: boolean;
  readonly arpFamilyRefused?: true;
}

/**
 * Make the firewall enforce `model`: nothing happens when it already does; changed elements
 * only when a table has the expected structure; otherwise that whole table is replaced, all in one
 * transaction. Returns whether anything changed. Where the kernel has no arp family (nft refuses
 * the ARP guard's chain as unsupported), the inet table is made alone, and the outcome says so;
 * any other failure throws.
 */
export async function reconcileFirewall(model: FirewallModel, options: FirewallOptions): Promise<ReconcileOutcome> {
  const found = { arpFamilyRefused: options.arpFamilyRefused === true };
  const { changed } = await reconcileTables(model, options, found);
  return found.arpFamilyRefused ? { changed, arpFamilyRefused: true } : { changed };
}

/**
 * reconcileFirewall, telling `found` the arp family refused as soon as nft does, so that a
 * reconcile that then fails for another reason (and throws) still tells it.
 */
async function reconcileTables(model: FirewallModel, options: FirewallOptions, found: { arpFamilyRefused: boolean }): Promise<{ changed: boolean }> {
  assertTableSettings(options);
  const valid = validateFirewallModel(model);
  let arpGuard = !found.arpFamilyRefused;
  // Two attempts: an element transaction computed from a listing can fail if the table changed
  // in between (deleting an element someone else deleted); the second plan sees the new state.
  // The arp family refused is no attempt: the same listing is planned again without it.
  for (let attempt = 1; ; ) {
    const plan = planFirewall(await readTables(options, arpGuard), valid, options, { arpGuard });
    if (plan.kind === 'unchanged') return { changed: false };
    const result = await applyScript(plan.script, options);
    if (result.code === 0) return { changed: true };
    if (arpGuard && plan.kind === 'replace-table' && plan.tables.includes('arp') && arpFamilyRefused(plan.script, result.stderr)) {
      arpGuard = false;
      found.arpFamilyRefused = true;
      continue;
    }
    if (attempt >= 2) {
      const names = plan.kind === 'replace-table' ? plan.tables.map((table) => TABLE_OF[table]).join(' and ') : '';
      throw failure(plan.kind === 'replace-table' ? `replacing table ${names}` : `updating set elements of ${arpGuard ? `${TABLE} and ${ARP_TABLE}` : TABLE}`, result);
    }
    attempt += 1;
  }
}

/**
 * Whether the inet table exists with the structure `settings` make (its chains, rules and sets,
 * whatever their elements): the rules that hold clients to the flow limits (the ARP guard holds
 * none). False when it is missing or someone changed or replaced it, as the audit finds it
 * (planFirewall's 'replace-table'). A listing that fails throws.
 */
export async function tableHasStructure(settings: TableSettings, options: NftOptions = {}): Promise<boolean> {
  const listing = await readTable(TABLE, options);
  return listing !== undefined && parseTableListing(listing).structure === staticTableText(settings);
}

/** `nft -j list counters` of one table; a FirewallError of kind 'table-missing' when it does not exist. */
async function listCounters(table: string, options: NftOptions): Promise<string> {
  const result = await runNft({ kind: 'command', output: { json: true, listing: true }, words: ['list', 'counters', 'table', ...table.split(' ')] }, options);
  if (result.code === 0) return result.stdout;
  if (NO_SUCH_TABLE.test(result.stderr)) {
    throw new FirewallError('table-missing', `table ${table} does not exist: reconcileFirewall() creates it`);
  }
  throw failure(`list counters table ${table}`, result);
}

/**
 * The inet table's drop counters; a FirewallError of kind 'table-missing' when it is missing,
 * 'table-changed' when a table of its name has none of our counters.
 */
export async function inetCounters(options: NftOptions = {}): Promise<InetCounters> {
  return parseInetCountersJson(await listCounters(TABLE, options));
}

/** The ARP guard's drop counter; failing as inetCounters does, for its own table. */
export async function arpDrops(options: NftOptions = {}): Promise<number> {
  return parseArpDropsJson(await listCounters(ARP_TABLE, options));
}

/** The firewall's drop counters, both tables'; a FirewallError of kind 'table-missing' when either table is missing. */
export async function firewallCounters(options: NftOptions = {}): Promise<FirewallCounters> {
  const inet = await inetCounters(options);
  return { ...inet, arpDrops: await arpDrops(options) };
}

/**
 * Delete the firewall's tables, by name (TABLE, ARP_TABLE: never another table), and with them
 * every rule, set and counter, in one transaction. Returns those that existed, in that order;
 * nothing to do for one that is gone.
 */
export async function removeFirewall(options: NftOptions = {}): Promise<FirewallTable[]> {
  const present: FirewallTable[] = [];
  for (const table of ['inet', 'arp'] as const) if ((await readTable(TABLE_OF[table], options)) !== undefined) present.push(table);
  if (present.length === 0) return present;
  const result = await applyScript(removeTableScript(present), options);
  if (result.code !== 0) throw failure(`deleting ${present.map((table) => `table ${TABLE_OF[table]}`).join(' and ')}`, result);
  return present;
}

/**
 * reconcileFirewall for a long-running agent: remembers the model it last applied, so a link
 * coming or going costs one element transaction instead of listing a table of a thousand
 * clients, and planning it costs the links that changed (advanceFirewallState), not all of them.
 * The first call, any transaction that fails (the table was changed behind our back), and any
 * call after one that threw (a timeout: it may have committed all the same), go through
 * reconcileFirewall's listing.
 */
export class FirewallReconciler {
  #applied: FirewallState | undefined;
  /** nft refused the arp family (options', or found by a reconcile): the inet table alone from then on. */
  #arpFamilyRefused: boolean;

  constructor(private readonly options: FirewallOptions) {
    assertTableSettings(options);
    this.#arpFamilyRefused = options.arpFamilyRefused === true;
  }

  /**
   * Whether nft refused the arp family (the kernel has no CONFIG_NF_TABLES_ARP): the firewall is
   * the inet table alone, without the ARP guard. Once found, for the reconciler's life: a kernel
   * does not gain the family without a reboot.
   */
  get arpFamilyRefused(): boolean {
    return this.#arpFamilyRefused;
  }

  /**
   * Whether the table differs from what `model` and these settings make (missing, or changed by
   * someone else): a listing, nothing changed.
   */
  async differs(model: FirewallModel): Promise<boolean> {
    const arpGuard = !this.#arpFamilyRefused;
    return planFirewall(await readTables(this.options, arpGuard), validateFirewallModel(model), this.options, { arpGuard }).kind !== 'unchanged';
  }

  /**
   * `verify`: list the table whatever is remembered, and repair what differs (someone changed it
   * behind our back without making one of our transactions fail).
   */
  async reconcile(model: FirewallModel, { verify = false }: { verify?: boolean } = {}): Promise<{ changed: boolean }> {
    let valid: ValidFirewallModel | undefined;
    if (this.#applied !== undefined && !verify) {
      const { state, diff } = advanceFirewallState(this.#applied, model);
      if (isEmptyDiff(diff)) {
        this.#applied = state;
        return { changed: false };
      }
      // Forgotten until the call succeeds: one that throws (a timeout) may still commit later,
      // libnftables cannot be stopped and a killed nft may have sent its batch; then only a
      // listing knows what the table holds.
      this.#applied = undefined;
      const result = await applyScript(elementCommands(diff, { arpGuard: !this.#arpFamilyRefused }), this.options);
      if (result.code === 0) {
        this.#applied = state;
        return { changed: true };
      }
      valid = state.model;
    }
    valid ??= validateFirewallModel(model);
    // As above: what a whole reconcile that throws did is unknown.
    this.#applied = undefined;
    const found = { arpFamilyRefused: this.#arpFamilyRefused };
    try {
      const outcome = await reconcileTables(valid, this.options, found);
      this.#applied = firewallStateOf(valid);
      return outcome;
    } finally {
      this.#arpFamilyRefused = found.arpFamilyRefused;
    }
  }
}
