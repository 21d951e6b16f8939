/**
 * Adapter: runs nft commands to make the table what ruleset.ts plans. In the agent's own
 * namespace they run in-process through libnftables (nft-library.ts: no process per change, so
 * a hot-plug's firewall change costs a transaction, not an nft start-up); with `netns`, for tests
 * and benchmarks that drive a namespace from outside, a spawned `ip netns exec NS nft`. Reads
 * first, changes only what differs, each change one nft transaction; an unchanged model changes
 * nothing at all, so counters and `nft list ruleset` stay byte-identical across agent restarts.
 */
import { spawn } from 'node:child_process';
import { type FirewallCounters, parseCountersJson } from './counters.js';
import { FirewallError } from './firewall-error.js';
import { type FirewallState, advanceFirewallState, firewallStateOf } from './firewall-state.js';
import { type FirewallModel, type ValidFirewallModel, validateFirewallModel } from './model.js';
import { type NftOutput, type NftResult, runNftInProcess } from './nft-library.js';
import {
  ARP_TABLE,
  type FirewallListings,
  TABLE,
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
  /** Per nft call; default 10 s. */
  readonly timeoutMs?: number;
}

/**
 * Where nft runs, and the settings the table is made with. The settings are required: a table
 * made with one cap and audited against another would be replaced at every audit.
 */
export type FirewallOptions = NftOptions & TableSettings;

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
  if (options.netns === undefined) {
    return call.kind === 'command'
      ? runNftInProcess(call.words.join(' '), call.output, timeoutMs, describe(call))
      : runNftInProcess(call.script, {}, timeoutMs, describe(call));
  }
  if (!NETNS_NAME.test(options.netns)) {
    throw new FirewallError('netns-name', `network namespace name ${JSON.stringify(options.netns)} is not a plain name under /run/netns`);
  }
  const args = call.kind === 'command' ? [...outputArgs(call.output), ...call.words] : ['-f', '-'];
  return spawnNft(['ip', 'netns', 'exec', options.netns, 'nft', ...args], timeoutMs, describe(call), call.kind === 'script' ? call.script : '');
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

/** Both tables' listings: the inet table and the ARP guard. */
async function readTables(options: NftOptions): Promise<FirewallListings> {
  return { inet: await readTable(TABLE, options), arp: await readTable(ARP_TABLE, options) };
}

async function applyScript(script: string, options: NftOptions): Promise<NftResult> {
  return runNft({ kind: 'script', script }, options);
}

/**
 * Make the firewall enforce `model`: nothing happens when it already does; changed elements
 * only when a table has the expected structure; otherwise that whole table is replaced, all in one
 * transaction. Returns whether anything changed.
 */
export async function reconcileFirewall(model: FirewallModel, options: FirewallOptions): Promise<{ changed: boolean }> {
  assertTableSettings(options);
  const valid = validateFirewallModel(model);
  // Two attempts: an element transaction computed from a listing can fail if the table changed
  // in between (deleting an element someone else deleted); the second plan sees the new state.
  for (let attempt = 1; ; attempt++) {
    const plan = planFirewall(await readTables(options), valid, options);
    if (plan.kind === 'unchanged') return { changed: false };
    const result = await applyScript(plan.script, options);
    if (result.code === 0) return { changed: true };
    if (attempt >= 2) {
      const names = plan.kind === 'replace-table' ? plan.tables.map((table) => (table === 'inet' ? TABLE : ARP_TABLE)).join(' and ') : '';
      throw failure(plan.kind === 'replace-table' ? `replacing table ${names}` : `updating set elements of ${TABLE} and ${ARP_TABLE}`, result);
    }
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

/** The firewall's drop counters, both tables'; a FirewallError of kind 'table-missing' when either table is missing. */
export async function firewallCounters(options: NftOptions = {}): Promise<FirewallCounters> {
  const listCounters = async (table: string): Promise<string> => {
    const result = await runNft({ kind: 'command', output: { json: true, listing: true }, words: ['list', 'counters', 'table', ...table.split(' ')] }, options);
    if (result.code === 0) return result.stdout;
    if (NO_SUCH_TABLE.test(result.stderr)) {
      throw new FirewallError('table-missing', `table ${table} does not exist: reconcileFirewall() creates it`);
    }
    throw failure(`list counters table ${table}`, result);
  };
  return parseCountersJson(await listCounters(TABLE), await listCounters(ARP_TABLE));
}

/** Delete both tables (and with them every rule, set and counter); nothing to do for one that is gone. */
export async function removeFirewall(options: NftOptions = {}): Promise<void> {
  const result = await applyScript(removeTableScript(), options);
  if (result.code !== 0) throw failure(`deleting tables ${TABLE} and ${ARP_TABLE}`, result);
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

  constructor(private readonly options: FirewallOptions) {
    assertTableSettings(options);
  }

  /**
   * Whether the table differs from what `model` and these settings make (missing, or changed by
   * someone else): a listing, nothing changed.
   */
  async differs(model: FirewallModel): Promise<boolean> {
    return planFirewall(await readTables(this.options), validateFirewallModel(model), this.options).kind !== 'unchanged';
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
      const result = await applyScript(elementCommands(diff), this.options);
      if (result.code === 0) {
        this.#applied = state;
        return { changed: true };
      }
      valid = state.model;
    }
    valid ??= validateFirewallModel(model);
    // As above: what a whole reconcile that throws did is unknown.
    this.#applied = undefined;
    const outcome = await reconcileFirewall(valid, this.options);
    this.#applied = firewallStateOf(valid);
    return outcome;
  }
}
