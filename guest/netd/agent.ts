// The agent's imperative shell: keeps the kernel view current from notifications, and runs one
// reconcile at a time — events arriving meanwhile are coalesced into the next run.
import type { Logger } from '../../shared/log.js';
import { GATEWAY_IP } from '../../shared/scheme.js';
import { type Backoff, backoffDelayMs } from '../backoff.js';
import type { ConntrackPort } from '../conntrack-port.js';
import type { ArpGuardState, FirewallCounters, FirewallPort, FirewallReading, FlowLimits } from '../firewall-port.js';
import { FirewallError } from '../firewall/firewall-error.js';
import { type FirewallModel, sameFirewallModel } from '../firewall/model.js';
import type { ProviderLink, ServicesPort, UpstreamLinkInfo } from '../services-port.js';
import { type KernelEvent, type KernelView, type SysctlKey, addressKey, applyEvent, changesView, emptyView, eventObjectKey, sysctlKeyId, sysctlPath } from './kernel-view.js';
import { KernelRefusal, NetdError } from './netd-error.js';
import type { DumpTable, FailedDump, NetdKernel, NotificationLoss, SkippedEntry } from './rtnetlink.js';
import {
  type LinkReport,
  type Operation,
  type Plan,
  type PlanOptions,
  type ServedLinks,
  applyOperation,
  arpFilterOf,
  arpIgnoreOf,
  describeOperation,
  dirtyLinks,
  disableIpv6Of,
  isRemoval,
  SYSCTL_ABSENT,
  operationIfindex,
  expectedEvent,
  plan,
} from './plan.js';
import {
  NO_PURGE_DEBT,
  type PurgeDebt,
  heldForPurge,
  isSettled,
  purgeFilter,
  purgedAlone,
  releasedClientIps,
  servingLinks,
  startPurgeDebt,
  withReleased,
} from './purge-debt.js';

export interface AgentCounters {
  readonly reconciles: number;
  /** Kernel changes made since start (operations that succeeded). */
  readonly changesApplied: number;
  /** Changes made by the initial reconcile: 0 when the agent restarts onto a configured system. */
  readonly initialChanges: number | null;
  readonly failedChanges: number;
  readonly fullSyncs: number;
  readonly lastReconcileMs: number;
  /** Audits that found the ruleset changed behind the agent's back, and restored it. */
  readonly firewallRepairs: number;
  /** Conntrack entries deleted because their client IP stopped being served (see purge-debt.ts). */
  readonly conntrackPurged: number;
  readonly conntrackPurgeFailures: number;
  /** How long the last purge took (ms; 0: none yet): one dump of the table and a delete per entry. */
  readonly lastPurgeMs: number;
}

export interface AgentTiming {
  /**
   * How often the firewall is read back and repaired (ms; 0: never). Between audits the agent
   * trusts what it last applied: a change by someone else that makes none of its transactions
   * fail would otherwise last until the next start.
   */
  readonly firewallAuditMs?: number;
}

export interface AgentStatus {
  readonly links: readonly (LinkReport & { readonly error: string | null })[];
  readonly counters: AgentCounters;
  /**
   * Whether a firewall of the agent's filters: false when run with --no-firewall (and in client
   * mode), where `firewall`, `arpGuard`, `flowLimits` and `firewallError` are null, none of them
   * saying why (nothing filters, so nothing is counted).
   */
  readonly firewallEnabled: boolean;
  /**
   * The firewall's drop counters; null when the inet table's cannot be read (no table of ours
   * yet: see firewallError). Its arpDrops is null while the ARP guard is not in force (arpGuard).
   */
  readonly firewall: FirewallCounters | null;
  /**
   * The ARP guard (table arp spectrum_netd), apart from the inet table that `firewall` and
   * `flowLimits` tell of: in force, missing (deleted or replaced since the last update; the next
   * audit or update makes it again) or unsupported (the kernel has no arp family: the inet table
   * stands without it); null without a firewall of ours, or when its counter cannot be read for
   * another reason.
   */
  readonly arpGuard: ArpGuardState | null;
  /**
   * What the firewall holds each client to (0: no limit); null without a firewall, until an update
   * of it succeeded, while its table is missing or changed and updates fail (firewallError says why),
   * and while its table is missing, or has none of our counters, when status reads it (deleted or
   * replaced since the last update).
   */
  readonly flowLimits: FlowLimits | null;
  /** Why the last update of the firewall failed (it is retried); null once one succeeds, and without a firewall. */
  readonly firewallError: string | null;
  /** What the firewall was last told (empty in client mode). */
  readonly model: FirewallModel | null;
  /** Client IPs whose old conntrack entries are still to delete, and why the last try failed; null without a conntrack port. */
  readonly conntrack: ConntrackStatus | null;
}

export interface ConntrackStatus {
  /** Released IPs still to purge (their links are held back meanwhile). */
  readonly owed: readonly string[];
  /** The start's sweep of every client IP not served at start is still to do. */
  readonly sweepOwed: boolean;
  readonly lastError: string | null;
}

/** Full re-reads in a row, each made stale while it ran (notifications lost), after which the agent plans on the last one anyway. */
const DUMPS_BEFORE_PLANNING = 3;

/**
 * How long after a re-read begins a notification that could not be decoded may ask for another:
 * one asking sooner waits for this, and all those waiting share one re-read. The parser that
 * failed on a notification may fail on every one about the same object: one flapping link
 * would otherwise keep the agent re-reading everything back to back.
 */
const UNDECODABLE_REREAD_GAP_MS = 1_000;

/** How long after an MTU change or a rename a link's sysctl read missing is read once more (see #recheckMissingSysctls). */
const SYSCTL_RECHECK_MS = 100;

/** A link's sysctls, read before planning where the view has none (a link just seen), as a plan sets them on a provider link. */
function linkSysctls(ifindex: number): SysctlKey[] {
  return [disableIpv6Of(ifindex), arpFilterOf(ifindex), arpIgnoreOf(ifindex)];
}

/**
 * Why the whole state is read again: notifications were lost (an overflow, one that could not be
 * decoded), or the last re-read used a dump the kernel marked inconsistent (NLM_F_DUMP_INTR) or
 * ended with an error (NLMSG_DONE) or refused (NLMSG_ERROR), each of DUMP_TRIES in a row.
 */
type RereadCause = NotificationLoss['kind'] | 'inconsistent dump' | 'failed dump';

/** The causes of re-reads in words, for the log ('rtnetlink notifications overflowed or could not be decoded, ...'). */
function rereadCausesText(causes: ReadonlySet<RereadCause>): string {
  const lost = [causes.has('overflow') ? 'overflowed' : null, causes.has('undecodable') ? 'could not be decoded' : null].filter((part) => part !== null);
  return [
    lost.length > 0 ? `rtnetlink notifications ${lost.join(' or ')}` : null,
    causes.has('inconsistent dump') ? 'the kernel marked a dump inconsistent (NLM_F_DUMP_INTR) in each try' : null,
    causes.has('failed dump') ? 'the kernel ended a dump with an error (NLMSG_DONE), or refused it (NLMSG_ERROR), or the socket failed to receive during it, in each try' : null,
  ]
    .filter((part) => part !== null)
    .join(', and ');
}

/** What one reconcile's changes came to, beyond the count of those that failed (see #applyAll). */
interface ApplyRun {
  /** Links a change to which failed: their error stands for this reconcile. */
  readonly touched: Set<number>;
  /** Changes refused for a link gone or renamed under them: neither made nor failed. */
  vanished: number;
}

/** Failed changes are retried after 0.5 s, then 1, 2... up to every 30 s. */
const RETRY: Backoff = { firstMs: 500, maxMs: 30_000 };

export class NetdAgent {
  readonly #pending: KernelEvent[] = [];
  #view: KernelView = emptyView();
  #fullSyncWanted = true;
  /** Whether planning on a re-read that overflowed was logged, since the last one that did not. */
  #stormSaid = false;
  /** Whether a notification that could not be decoded was logged (once per agent). */
  #undecodableSaid = false;
  /** Runs for UNDECODABLE_REREAD_GAP_MS from the start of each re-read: a notification that could not be decoded meanwhile waits for it. */
  #rereadGap: NodeJS.Timeout | undefined;
  /**
   * Why a re-read is owed when #rereadGap ends (none: none is): a notification that could not be
   * decoded came while it ran, or a re-read used an inconsistent or failed dump (#rereadLater).
   */
  readonly #rereadOwed = new Set<RereadCause>();
  /** What names each dump entry the last re-read skipped (see #saySkipped). */
  #skippedSaid = new Set<string>();
  /** The tables the last re-read used though the kernel marked each of its dumps inconsistent (see #sayInconsistent). */
  #inconsistentSaid = '';
  /** The tables, with their errors, the last re-read used though the kernel ended each of its dumps with an error (see #sayFailed). */
  #failedSaid = '';
  /**
   * Links whose link-up failed (a timeout, say): the kernel may have brought the link up all the
   * same, without the GETLINK that should follow (see RtnetlinkKernel): done again while it is up.
   */
  readonly #linkUpOwed = new Set<number>();
  /** Why re-reads were asked for since the last one began: what the warning on planning on a stale one names. */
  readonly #lossKinds = new Set<RereadCause>();
  #dumping = false;
  #running = false;
  #again = false;
  #stopped = false;
  #lastPlan: Plan | undefined;
  #reportStale = false;
  #knownConfigured = new Set<number>();
  #served: ServedLinks = new Map();
  /** Links that kernel events touched since the last plan, and links that (re)appeared. */
  #dirty = new Set<number>();
  #seenLinks = new Set<number>();
  /**
   * The notifications the running reconcile's changes will cause, by `op` and kernel object: one
   * that arrives saying just that is its echo, not a change to plan for.
   */
  #expectedEchoes = new Map<string, KernelEvent>();
  #servingIp = new Map<string, number>();
  /** The last model the firewall took (null: none yet). */
  #firewallModel: FirewallModel | null = null;
  #firewallError: string | null = null;
  /** #filteredLinks() of #firewallModel, built once per model the firewall takes, when first asked for. */
  #filteredLinksOf: { readonly model: FirewallModel; readonly links: ReadonlyMap<string, string | null> } | undefined;
  /**
   * What the services were last told (null: nothing yet, or an update that failed since), and
   * whether a provider link carried the gateway address then (see #tellServices).
   */
  #servicesTold: { readonly links: readonly ProviderLink[]; readonly upstreamLink: UpstreamLinkInfo | null; readonly gateway: boolean } | null = null;
  /** The services' failure last said (see #tellServices): the same one again is said at debug. */
  #servicesFailure: string | undefined;
  #errors = new Map<number, string>();
  /** What #sayKept said last: a link's index and note. */
  #keptSaid = new Set<string>();
  /** The links #sayConflicts said are in conflict, and what it said of each (the link's name and note). */
  #conflictsSaid = new Map<number, { readonly name: string; readonly note: string }>();
  #retryTimer: NodeJS.Timeout | undefined;
  /** Links whose MTU or name changed since their sysctls were last read (see #recheckMissingSysctls). */
  #sysctlsRemade = new Set<number>();
  /** Links whose sysctls are read once more when #recheckTimer fires. */
  readonly #recheck = new Set<number>();
  #recheckTimer: NodeJS.Timeout | undefined;
  /** Retries since the last change that succeeded. */
  #retryRound = 0;
  #idleWaiters: (() => void)[] = [];
  #fatal: ((error: Error) => void) | undefined;
  #counters = {
    reconciles: 0,
    changesApplied: 0,
    initialChanges: null as number | null,
    failedChanges: 0,
    fullSyncs: 0,
    lastReconcileMs: 0,
    firewallRepairs: 0,
    conntrackPurged: 0,
    conntrackPurgeFailures: 0,
    lastPurgeMs: 0,
  };
  /** The conntrack entries to delete before some client IPs are served again (null: the first reconcile has not planned yet). */
  #purgeDebt: PurgeDebt | null = null;
  /**
   * The start's sweep (PurgeDebt.sweep) was last reckoned on a view whose links, addresses or
   * routes a failed dump cut short (KernelView.cutShort): its keep may lack a client IP served on
   * what the dump did not come to. Not run meanwhile; reckoned again until it is not.
   */
  #sweepCutShort = false;
  /** Client IPs whose entries were deleted on their own while the start's sweep waited (see #purgeAlone): it keeps them. */
  readonly #sweptAlone = new Set<string>();
  #purgeError: string | null = null;
  #auditWanted = false;
  #auditTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly kernel: NetdKernel,
    private readonly options: PlanOptions,
    private readonly log: Logger,
    private readonly firewall: FirewallPort | null,
    private readonly services: ServicesPort | null,
    private readonly timing: AgentTiming = {},
    /** Deletes the conntrack entries of client IPs no longer served (provider mode); null: never. */
    private readonly conntrack: ConntrackPort | null = null,
  ) {}

  /** Subscribe, read everything, reconcile once; resolves when that first reconcile is done. */
  async start(options: { watch: boolean; onFatal?: (error: Error) => void } = { watch: true }): Promise<void> {
    if (options.onFatal !== undefined) this.#fatal = options.onFatal;
    if (options.watch) {
      // Subscribe before the dump, so nothing that happens in between is missed.
      this.kernel.subscribe({
        events: (events) => {
          // Once a dump is due, queue: #reconcile drops what was queued before the dump is asked
          // for, and replays on top of it what arrives while it runs. Otherwise apply at once,
          // and reconcile only when something the planner reads changed.
          if (this.#dumping || this.#fullSyncWanted) {
            this.#pending.push(...events);
            this.#schedule();
            return;
          }
          let changed = false;
          for (const event of events) {
            // The kernel announces what the running reconcile changes, often before that
            // reconcile has recorded it: its own echo starts no other plan over every link.
            if (changesView(this.#view, event) && !this.#isEcho(event)) changed = true;
            this.#noteEvent(event);
            applyEvent(this.#view, event);
          }
          if (changed) this.#schedule();
        },
        lost: (loss) => {
          if (loss.kind === 'overflow') {
            // Said once per re-read: a storm overflows the socket again and again until it is read.
            if (!this.#fullSyncWanted) this.log.warn('rtnetlink notifications overflowed: reading the whole state again');
          } else {
            // Said once per agent: a kernel that sends what the parser cannot read sends it again.
            const what = { messageType: loss.messageType, error: loss.error };
            if (this.#undecodableSaid) this.log.debug(what, 'an rtnetlink notification could not be decoded: reading the whole state again');
            else this.log.warn(what, 'an rtnetlink notification could not be decoded: reading the whole state again (said once; later ones are logged at debug level)');
            this.#undecodableSaid = true;
            // Too soon after the last re-read began: coalesced into one when the gap ends. What
            // it said stays unknown meanwhile; an overflow's re-read is not held back.
            if (this.#rereadGap !== undefined) {
              this.#rereadOwed.add(loss.kind);
              return;
            }
          }
          this.#reread(loss.kind);
        },
        failed: (error) => this.#fatal?.(error),
      });
    }
    const auditMs = this.timing.firewallAuditMs ?? 0;
    if (this.firewall !== null && auditMs > 0) {
      this.#auditTimer = setInterval(() => {
        this.#auditWanted = true;
        this.#schedule();
      }, auditMs);
      this.#auditTimer.unref();
    }
    this.#schedule();
    await this.idle();
  }

  /** Resolves once no reconcile is running or queued. */
  idle(): Promise<void> {
    if (!this.#running) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#recheckTimer);
    clearTimeout(this.#rereadGap);
    clearInterval(this.#auditTimer);
    this.kernel.close();
  }

  async status(): Promise<AgentStatus> {
    if (this.#reportStale) {
      this.#lastPlan = plan(this.#view, this.options, new Set(), this.#served);
      this.#reportStale = false;
    }
    const links = (this.#lastPlan?.links ?? []).map((link) => ({ ...link, error: this.#errors.get(link.ifindex) ?? null }));
    // A table that could not be made has no counters: status still says why (firewallError).
    const reading: FirewallReading =
      this.firewall === null
        ? { off: true }
        : await this.firewall.counters().catch((error: unknown) => ({
            counters: null,
            // Missing, or replaced by a table of its name without our counters (not ours).
            inetGone: error instanceof FirewallError && (error.kind === 'table-missing' || error.kind === 'table-changed'),
            arpGuard: null,
          }));
    const debt = this.#purgeDebt ?? NO_PURGE_DEBT;
    const conntrack = this.#purging() ? { owed: [...debt.released].sort(), sweepOwed: debt.sweep !== null, lastError: this.#purgeError } : null;
    // A table deleted or replaced since the last update holds nobody to its limits, until an audit makes it again.
    const tables = 'off' in reading ? null : reading;
    const flowLimits = tables === null || tables.inetGone ? null : (this.firewall?.flowLimits() ?? null);
    return {
      links,
      counters: { ...this.#counters },
      firewallEnabled: tables !== null,
      firewall: tables?.counters ?? null,
      arpGuard: tables?.arpGuard ?? null,
      flowLimits,
      firewallError: this.#firewallError,
      model: this.#lastPlan?.firewall ?? null,
      conntrack,
    };
  }

  #noteEvent(event: KernelEvent): void {
    // The uplink going down takes the routes to the DNS upstreams with it (without a route
    // notification): the forwarder checks them, rather than the next client's query finding out.
    if (event.kind !== 'neighbour') this.services?.routesChanged?.();
    if (event.kind === 'link' && event.op !== 'del') {
      this.#seenLinks.add(event.link.ifindex);
      // Before applyEvent: the view has the link as it was.
      const before = this.#view.links.get(event.link.ifindex);
      if (before !== undefined && (before.mtu !== event.link.mtu || before.name !== event.link.name)) this.#sysctlsRemade.add(event.link.ifindex);
    }
    for (const ifindex of dirtyLinks(event, this.#servingIp)) this.#dirty.add(ifindex);
  }

  /**
   * A link's MTU back at 1280 (68 for IPv4) is said by the kernel before it makes the link's IPv6
   * (IPv4) afresh: rtnetlink's notifier runs before addrconf's, and a read in between (a reader in
   * C woken by the notification finds it so in about a fifth of round trips) finds disable_ipv6
   * missing, nothing to set, which the kernel then makes at 0: IPv6 on for good on a provider
   * link. A rename likewise: the kernel says the new name, then takes the link's sysctl files
   * away and makes them under it (a reader in C found them missing after 45% of renames); a
   * link renamed before the agent first set them kept them unset. A sysctl read missing after an
   * MTU change or a rename is read once more a moment later; once, so a file that stays missing
   * (IPv6 off in the whole system, an MTU below 1280) costs one read.
   */
  #recheckMissingSysctls(): void {
    for (const ifindex of this.#sysctlsRemade) {
      if (this.#missingSysctls(ifindex).length > 0) this.#recheck.add(ifindex);
    }
    this.#sysctlsRemade.clear();
    if (this.#recheck.size === 0 || this.#recheckTimer !== undefined || this.#stopped) return;
    this.#recheckTimer = setTimeout(() => {
      this.#recheckTimer = undefined;
      for (const ifindex of this.#recheck) {
        for (const id of this.#missingSysctls(ifindex)) this.#view.sysctls.delete(id);
        // Read again before planning (as a link just seen), and checked by the plan.
        this.#seenLinks.add(ifindex);
        this.#dirty.add(ifindex);
      }
      this.#recheck.clear();
      this.#schedule();
    }, SYSCTL_RECHECK_MS);
    this.#recheckTimer.unref();
  }

  /** The ids (sysctlKeyId) of `ifindex`'s sysctls (linkSysctls) that the view has read missing. */
  #missingSysctls(ifindex: number): string[] {
    return linkSysctls(ifindex)
      .map(sysctlKeyId)
      .filter((id) => this.#view.sysctls.get(id) === SYSCTL_ABSENT);
  }

  /** Read the whole state again, for `why`. */
  #reread(...why: readonly RereadCause[]): void {
    for (const cause of why) this.#lossKinds.add(cause);
    this.#fullSyncWanted = true;
    this.#schedule();
  }

  /**
   * A re-read begins. It reads what every notification read until now said, so one owed is paid;
   * one that comes while the gap runs is owed, and asked for when it ends (at most one re-read a
   * gap for notifications that could not be decoded, however many come).
   */
  #startRereadGap(): void {
    this.#rereadOwed.clear();
    this.#armRereadGap();
  }

  /**
   * A re-read whose tables the kernel marked inconsistent, or whose dumps it ended with an error,
   * in every try may lack an entry that was there throughout, which no notification will tell of:
   * another is owed (`why`), asked for when the gap ends (from now, where it has ended already), as
   * for a notification that could not be decoded. One a second at most while the kernel keeps
   * marking or failing them.
   */
  #rereadLater(why: RereadCause): void {
    this.#rereadOwed.add(why);
    if (this.#rereadGap === undefined) this.#armRereadGap();
  }

  #armRereadGap(): void {
    clearTimeout(this.#rereadGap);
    this.#rereadGap = setTimeout(() => {
      this.#rereadGap = undefined;
      if (this.#rereadOwed.size === 0 || this.#stopped) return;
      const why = [...this.#rereadOwed];
      this.#rereadOwed.clear();
      // Each cause was said when it came (a warning once while it lasts); this says which re-read paid it.
      this.log.debug({ why }, `reading the whole state again, as owed: ${rereadCausesText(new Set(why))}`);
      this.#reread(...why);
    }, UNDECODABLE_REREAD_GAP_MS);
    this.#rereadGap.unref();
  }

  /**
   * Warn of each dump entry that could not be decoded (skipped: the rest was read), once while it
   * lasts: re-read after re-read, the same entry fails the same way. Entries alike (routes name no
   * link) are said as one, with their count.
   */
  #saySkipped(skipped: readonly SkippedEntry[], kept: ReadonlySet<number>): void {
    const counts = new Map<string, { readonly entry: SkippedEntry; count: number }>();
    for (const entry of skipped) {
      const key = `${entry.messageType} ${entry.ifindex ?? '-'} ${entry.error}`;
      const seen = counts.get(key);
      if (seen === undefined) counts.set(key, { entry, count: 1 });
      else seen.count += 1;
    }
    for (const [key, { entry, count }] of counts) {
      if (this.#skippedSaid.has(key)) continue;
      const keptAsLastRead = entry.messageType === 'NEWLINK' && entry.ifindex !== null && kept.has(entry.ifindex);
      this.log.warn(
        { messageType: entry.messageType, ifindex: entry.ifindex, error: entry.error, entries: count, keptAsLastRead },
        keptAsLastRead
          ? 'an rtnetlink entry could not be decoded: the link keeps what was last read of it, the rest read (said once while it lasts)'
          : 'an rtnetlink entry could not be decoded: skipped, the rest read (said once while it lasts)',
      );
    }
    this.#skippedSaid = new Set(counts.keys());
  }

  /**
   * Warn of the tables a re-read used though the kernel marked each of their dumps in a row
   * inconsistent (changed while dumped), once while it lasts: a table that keeps changing marks
   * re-read after re-read so. Its notifications tell of what changed; an entry the dump missed that
   * did not change waits for the next re-read (see #rereadLater).
   */
  #sayInconsistent(tables: readonly DumpTable[]): void {
    const said = tables.join(', ');
    if (said !== '' && said !== this.#inconsistentSaid) {
      this.log.warn(
        { tables },
        `the kernel's ${said} changed while each of their dumps in a row ran (NLM_F_DUMP_INTR): using the last, which may lack an entry (said once while it lasts)`,
      );
    }
    this.#inconsistentSaid = said;
  }

  /**
   * Warn of the tables a re-read used though the kernel ended each of their dumps in a row with an
   * error (a negative errno in NLMSG_DONE: what came after it is not in the dump; or an NLMSG_ERROR
   * refusing the request: none of it is; or the socket failing to receive while it ran, taken as
   * cut short all the same), once while it lasts: a dump that fails on an entry fails on it each time.
   */
  #sayFailed(failed: readonly FailedDump[]): void {
    const how = ({ refused, receiveFailed }: FailedDump): string => (refused === true ? 'in NLMSG_ERROR' : receiveFailed === true ? 'on receiving' : 'in NLMSG_DONE');
    const said = failed.map((dump) => `${dump.table} ${dump.error} ${how(dump)}`).join(', ');
    if (said !== '' && said !== this.#failedSaid) {
      const routes = failed.some(({ table }) => table === 'routes') ? ", leaving every default route alone (one it did not come to is still someone's)" : '';
      this.log.warn(
        { failed },
        `the kernel ended every dump in a row of its ${failed.map(({ table }) => table).join(', ')} with an error (${said}): ` +
          `using the last, which lacks what came after the error${routes} (said once while it lasts)`,
      );
    }
    this.#failedSaid = said;
  }

  #schedule(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = true;
    // setImmediate lets a burst of notifications already read land in this same run.
    setImmediate(() => void this.#loop());
  }

  async #loop(): Promise<void> {
    try {
      do {
        this.#again = false;
        await this.#reconcile();
      } while ((this.#again || this.#pending.length > 0 || this.#fullSyncWanted) && !this.#stopped);
    } catch (error) {
      // A reconcile cut short by stop() (its kernel closed under it) is no failure.
      if (!this.#stopped && !isClosed(error)) this.#fatal?.(error instanceof Error ? error : new Error(String(error)));
    } finally {
      this.#running = false;
      for (const resolve of this.#idleWaiters.splice(0)) resolve();
    }
  }

  async #reconcile(): Promise<void> {
    const started = performance.now();
    // A dump during which notifications overflowed again is stale already: read again before
    // planning on it, but no more than DUMPS_BEFORE_PLANNING in a row (a storm that lasts would
    // starve planning); the loop then reads again after this plan.
    for (let dumps = 1; this.#fullSyncWanted; dumps++) {
      if (dumps > DUMPS_BEFORE_PLANNING) {
        if (!this.#stormSaid) {
          this.log.warn({ dumps: DUMPS_BEFORE_PLANNING }, `${rereadCausesText(this.#lossKinds)} during every re-read in a row: planning on the last one, reading again after`);
          this.#stormSaid = true;
        }
        break;
      }
      this.#fullSyncWanted = false;
      this.#lossKinds.clear();
      this.#knownConfigured = new Set();
      this.#counters.fullSyncs += 1;
      const fresh = emptyView();
      // What was queued until now is dropped, not replayed over the dump. Those events were
      // read, so sent, before the dump is asked for, and the kernel sends one after its change
      // is made: the dump has that change, or what followed it. After an overflow some may even
      // come from before the notifications lost (the addon discards what its socket still
      // holds when it reports one, rtnl-events.c); replayed, they would put back an address
      // since deleted, an old name or MAC. What arrives while the dump runs is kept and
      // replayed in order: the socket keeps the kernel's order, and with no loss since the
      // report every later change to the same object follows its event, so replaying converges
      // (kernel-view.ts). At start the same holds: the socket was opened (subscribe) before this
      // first dump is asked for, so what changed between the two is in the dump.
      // Kept aside for a links dump the kernel ends with an error (see keepUnlisted).
      const dropped = this.#pending.splice(0);
      this.#dumping = true;
      this.#startRereadGap();
      try {
        const { events, skipped, inconsistent, failed } = await this.kernel.dump();
        for (const event of events) applyEvent(fresh, event);
        this.#saySkipped(skipped, keepUnreadable(fresh, this.#view, skipped));
        this.#sayInconsistent(inconsistent);
        this.#sayFailed(failed);
        if (failed.length > 0) fresh.cutShort = new Set(failed.map(({ table }) => table));
        if (failed.some(({ table }) => table === 'links')) keepUnlisted(fresh, this.#view, dropped);
        // A default route the failed dump did not come to is still someone's (see unreadableDefaultRoute).
        if (failed.some(({ table }) => table === 'routes')) fresh.unreadableDefaultRoute = true;
        if (inconsistent.length > 0) this.#rereadLater('inconsistent dump');
        if (failed.length > 0) this.#rereadLater('failed dump');
      } finally {
        this.#dumping = false;
      }
      this.#view = fresh;
      if (!this.#fullSyncWanted) this.#stormSaid = false;
    }
    // Everything queued since a dump was asked for (or, without one, since the last run), in arrival order.
    for (const event of this.#pending.splice(0)) {
      this.#noteEvent(event);
      applyEvent(this.#view, event);
    }
    const seenLinks = this.#seenLinks;
    const dirty = this.#dirty;
    this.#seenLinks = new Set();
    this.#dirty = new Set();
    // Links configured at the last plan and touched by no event since need no per-link checks.
    const known = new Set(this.#knownConfigured);
    for (const ifindex of dirty) known.delete(ifindex);
    // A new link's sysctls are read before planning, not after a first plan asks for them:
    // one plan per hot-plug instead of two (each plan covers every link).
    for (const ifindex of seenLinks) {
      for (const key of linkSysctls(ifindex)) {
        if (this.#view.sysctls.has(sysctlKeyId(key))) continue;
        const path = sysctlPath(key, this.#view);
        if (path !== null) this.#view.sysctls.set(sysctlKeyId(key), this.kernel.readSysctl(path));
      }
    }

    let current = plan(this.#view, this.options, known, this.#served);
    if (current.unknownSysctls.length > 0) {
      for (const key of current.unknownSysctls) {
        const path = sysctlPath(key, this.#view);
        if (path !== null) this.#view.sysctls.set(sysctlKeyId(key), this.kernel.readSysctl(path));
      }
      current = plan(this.#view, this.options, known, this.#served);
    }
    this.#recheckMissingSysctls();

    // Client IPs no longer served by the link that served them: their conntrack entries are owed.
    // At start, every client IP but those a previous agent served as they are now (see purge-debt.ts).
    // The start's sweep keeps what the view shows served: reckoned on a view that a failed dump
    // cut short, it is reckoned again on each plan until one that is not (see #sweepCutShort).
    if (this.#purging()) {
      const debt = this.#purgeDebt;
      const before =
        debt === null || (this.#sweepCutShort && debt.sweep !== null)
          ? { ...startPurgeDebt(this.#view, current.providerLinks, this.#sweptAlone), released: debt?.released ?? new Set<string>() }
          : debt;
      if (before !== debt) this.#sweepCutShort = sweepReadsCutShort(this.#view);
      this.#purgeDebt = withReleased(before, releasedClientIps(this.#servingIp, servingLinks(current.providerLinks)));
    }
    const owed = this.#purgeDebt !== null && !isSettled(this.#purgeDebt);

    // What only takes away (a route or neighbour toward a client a link no longer serves, a link
    // going down) comes before the firewall: once the firewall gives that client to another link,
    // the old one must no longer be routed to it.
    const removals = current.operations.filter(isRemoval);
    const run: ApplyRun = { touched: new Set(), vanished: 0 };
    let failures = removals.length === 0 ? 0 : await this.#applyAll(removals, run);
    // Then the firewall and the rest. The table's chains let through whatever comes from a link
    // not in its sets, but a provider link comes up in the guarded device group (in the request
    // that brings it up), and the table drops everything of that group it does not name: a new
    // link may come up before the firewall names it, and a hot-plug waits for no nft transaction.
    // The firewall goes first where the guard is not enough: before this agent's first table is
    // in place (at start, its guard may not exist yet), and for a link the firewall knows with
    // another client (a MAC changed: it would be routed one client's traffic while allowed to
    // send as another). Where it then fails, such links are held back (retried), and one the
    // firewall still accepts as its former client goes down meanwhile. And while conntrack
    // entries are owed: the purge must come once no link is accepted as a released client any
    // more, or that link could make new entries for it after the purge.
    const firewallFirst = this.firewall !== null && (this.#firewallModel === null || this.#reassignedLinks(current) || owed);
    let filtering = true;
    let held = new Set<number>();
    let downs: Operation[] = [];
    if (firewallFirst) {
      this.#haltIfStopped();
      filtering = await this.#tellFirewall(current);
      if (!filtering) {
        held = this.#unfilteredLinks(current);
        downs = this.#linksStillAcceptedAsAnother(current, held);
        failures += await this.#applyAll(downs, run);
      }
    }
    // The old entries of released client IPs go before any link is configured to serve them
    // again. A link already up that serves one (its client changed to it) goes down first: the
    // firewall accepts the IP from it from now on, and what it sent during the purge would join the
    // old VM's flows. It stays held back in this run (going down flushed what the plan counted on),
    // and the next run brings it up for its client once the debt is settled. Where the purge
    // fails, such links are held back (retried).
    let purgeFailed = false;
    /** Why the purge did not happen, where the firewall is not why. */
    let purgeHeldBy: string | null = null;
    let heldForConntrack = new Set<number>();
    /** Links whose client IP's purge on its own (#purgeAlone) did not settle, and why (null: the firewall). */
    const heldAlone = new Map<number, string | null>();
    const takenDownForPurge = new Set<number>();
    if (owed) {
      // A sweep reckoned on a view cut short would delete the entries of clients served on what
      // the dump did not come to, and take their links down: it waits, with the links it holds
      // back, for a re-read that is whole (owed a second on: see #rereadLater).
      const sweepWaits = this.#sweepCutShort && this.#purgeDebt?.sweep !== null;
      const takenDown = sweepWaits
        ? []
        : [...heldForPurge(this.#purgeDebt ?? NO_PURGE_DEBT, current.providerLinks)]
            .filter((ifindex) => this.#view.links.get(ifindex)?.up === true)
            .map((ifindex) => ({ kind: 'link-down', ifindex }) as const);
      const downFailures = takenDown.length === 0 ? 0 : await this.#applyAll(takenDown, run);
      this.#haltIfStopped();
      failures += downFailures;
      downs = [...downs, ...takenDown];
      // A link still up could make entries anew for an IP the purge would call settled.
      const outcome = downFailures > 0 || sweepWaits ? 'not-purged' : await this.#purge(filtering);
      purgeFailed = outcome !== 'settled' && !sweepWaits;
      if (sweepWaits) {
        // Meanwhile a link it holds back that is down need not wait (see #purgeAlone).
        const alone = await this.#purgeAlone(current, filtering);
        for (const ifindex of alone.links) heldAlone.set(ifindex, alone.outcome === 'threw' ? 'deleting them failed (see the log and status)' : null);
        if (alone.outcome === 'threw') purgeFailed = true;
        const tables = SWEEP_READS.filter((table) => this.#view.cutShort?.has(table) === true).join(', ');
        purgeHeldBy = `the ${tables} could not be read whole (a dump failed, or was refused: see the log), and which client IPs are served as a previous agent left them is read from them`;
      } else if (outcome === 'threw') purgeHeldBy = 'deleting them failed (see the log and status)';
      else if (downFailures > 0) purgeHeldBy = 'a link already up serving such an IP could not be taken down first (see its error)';
      heldForConntrack = heldForPurge(this.#purgeDebt ?? NO_PURGE_DEBT, current.providerLinks);
      for (const ifindex of heldForConntrack) held.add(ifindex);
      for (const operation of takenDown) takenDownForPurge.add(operation.ifindex);
      if (takenDown.length > 0 && outcome === 'settled') this.#schedule();
    }
    const again = this.#linkUpsAgain(current);
    const additions = [...current.operations, ...again].filter((operation) => {
      const ifindex = operationIfindex(operation) ?? -1;
      return !isRemoval(operation) && !held.has(ifindex) && !takenDownForPurge.has(ifindex);
    });
    failures += await this.#applyAll(additions, run);
    if (!firewallFirst) {
      this.#haltIfStopped();
      filtering = await this.#tellFirewall(current);
    }
    this.#forgetStaleErrors([...removals, ...downs, ...additions]);
    this.#sayKept(current.links);
    this.#sayConflicts(current.links);
    // Why each link is held back: the purge only where it failed itself (it may have succeeded,
    // and the debt be kept for the firewall); a link that failed to go down for it says so already.
    for (const ifindex of held) {
      if (takenDownForPurge.has(ifindex) && run.touched.has(ifindex)) continue;
      const heldBy = heldAlone.has(ifindex) ? (heldAlone.get(ifindex) ?? null) : purgeHeldBy;
      if (heldForConntrack.has(ifindex) && heldBy !== null) {
        this.#errors.set(ifindex, `held back until the conntrack entries of its client IP's former VM are deleted: ${heldBy}; retrying`);
      } else {
        this.#errors.set(ifindex, 'held back until the firewall filters this link: updating the firewall failed (see the log); retrying');
      }
    }
    if (!firewallFirst && !filtering) {
      for (const ifindex of this.#unfilteredLinks(current)) {
        this.#errors.set(ifindex, 'all its traffic is dropped until the firewall names this link: updating the firewall failed (see the log); retrying');
      }
    }
    // A change to a link gone or renamed under it is neither made nor failed: the link's notification tells what became of it.
    const applied = removals.length + downs.length + additions.length - failures - run.vanished;
    this.#counters.reconciles += 1;
    this.#counters.changesApplied += applied;
    this.#counters.failedChanges += failures;
    this.#counters.initialChanges ??= applied;
    // The firewall model and the services' links do not depend on what was applied; the link
    // report does, and is planned again on the updated view only when status asks for it.
    this.#lastPlan = current;
    this.#reportStale = applied > 0;
    // Loops rather than filter/map chains: these run every reconcile over every link.
    const knownConfigured = new Set<number>();
    for (const link of current.links) if (link.role === 'provider' && link.state === 'configured') knownConfigured.add(link.ifindex);
    this.#knownConfigured = knownConfigured;
    this.#served = current.served;
    const servingIp = new Map<string, number>();
    for (const link of current.providerLinks) servingIp.set(link.clientIp, link.ifindex);
    this.#servingIp = servingIp;
    this.#haltIfStopped();
    const servicesFailed = !(await this.#tellServices(current));
    // Later notifications meet a view that has this reconcile's changes.
    this.#expectedEchoes.clear();
    // Their echoes start no plan, but the upstream link these changes configured is told to the
    // services only by one.
    if (current.upstreamPending && applied > 0) this.#schedule();
    this.#counters.lastReconcileMs = performance.now() - started;
    if (current.operations.length > 0 || again.length > 0) {
      this.log.info({ changes: applied, failures, ms: Number(this.#counters.lastReconcileMs.toFixed(3)) }, 'reconciled');
    } else this.log.debug({ changes: 0 }, 'reconciled: nothing to change');
    // Where a link gone or renamed under a change is heard of no more, planned again all the same.
    // A services update that failed too: else its retry's backoff began again at each reconcile
    // (every 0.5 s for good, where DHCP cannot open its sockets).
    this.#scheduleRetry(failures > 0 || run.vanished > 0 || !filtering || purgeFailed || servicesFailed);
  }

  /**
   * Cut the reconcile short once stopped: what it has not done yet (a firewall update, a
   * conntrack purge, telling the services) is not done after a stop. Its kernel requests end
   * as closed already (the kernel is closed under them); this covers the rest.
   */
  #haltIfStopped(): void {
    if (this.#stopped) throw new NetdError('closed', 'the agent is stopping');
  }

  #purging(): boolean {
    return this.conntrack !== null && this.options.mode === 'provider';
  }

  /**
   * Delete the conntrack entries the debt names. The debt is settled only when that succeeded
   * and the firewall took this plan (else a link might still be accepted as a released client,
   * and make entries anew): 'settled' then; 'threw' when the purge failed, 'not-purged' when it
   * succeeded but the debt is kept for the firewall.
   */
  async #purge(filtering: boolean): Promise<'settled' | 'not-purged' | 'threw'> {
    const debt = this.#purgeDebt;
    const filter = debt === null ? null : purgeFilter(debt);
    if (this.conntrack === null || debt === null || filter === null) return 'settled';
    const started = performance.now();
    try {
      const result = await this.conntrack.purge(filter);
      this.#counters.lastPurgeMs = performance.now() - started;
      this.#counters.conntrackPurged += result.deleted;
      this.#purgeError = null;
      const what = { released: filter.addresses, sweep: filter.sweep !== null, deleted: result.deleted, scanned: result.scanned, ms: Number(this.#counters.lastPurgeMs.toFixed(1)) };
      if (result.deleted > 0 || filter.addresses.length > 0) this.log.info(what, 'deleted the conntrack entries of client IPs no longer served');
      else this.log.debug(what, 'no conntrack entries of client IPs no longer served');
      if (!filtering) return 'not-purged';
      this.#purgeDebt = NO_PURGE_DEBT;
      return 'settled';
    } catch (error) {
      this.#counters.conntrackPurgeFailures += 1;
      this.#purgeError = error instanceof Error ? error.message : String(error);
      this.log.error({ err: error, released: filter.addresses, sweep: filter.sweep !== null }, 'deleting old conntrack entries failed; their client IPs are held back, retrying');
      return 'threw';
    }
  }

  /**
   * While the start's sweep waits for a whole dump, the links it holds back that are down: no
   * previous agent serves one (a device loses its routes as it goes down, and takes none while
   * down), so the sweep would purge its client IP whatever the dump lacked. Those IPs' entries are
   * deleted on their own, and the sweep keeps them from then on (#sweptAlone): a new link is served
   * at once, not only once a dump is whole, which a dump that fails on an entry never is. Settled as
   * #purge is, only where the firewall took the plan. Returns the links it did not settle.
   */
  async #purgeAlone(current: Plan, filtering: boolean): Promise<{ readonly outcome: 'settled' | 'not-purged' | 'threw'; readonly links: readonly number[] }> {
    const debt = this.#purgeDebt;
    if (this.conntrack === null || debt === null) return { outcome: 'settled', links: [] };
    const held = heldForPurge(debt, current.providerLinks);
    const down = current.providerLinks.filter((link) => held.has(link.ifindex) && this.#view.links.get(link.ifindex)?.up !== true);
    if (down.length === 0) return { outcome: 'settled', links: [] };
    const ips = down.map((link) => link.clientIp).sort();
    const links = down.map((link) => link.ifindex);
    const started = performance.now();
    try {
      const result = await this.conntrack.purge({ addresses: ips, sweep: null });
      this.#counters.lastPurgeMs = performance.now() - started;
      this.#counters.conntrackPurged += result.deleted;
      this.#purgeError = null;
      this.log.info(
        { released: ips, sweep: false, deleted: result.deleted, scanned: result.scanned, ms: Number(this.#counters.lastPurgeMs.toFixed(1)) },
        "deleted the conntrack entries of new links' client IPs on their own, while the start's sweep waits for a whole dump",
      );
      if (!filtering) return { outcome: 'not-purged', links };
      this.#purgeDebt = purgedAlone(debt, ips);
      for (const ip of ips) this.#sweptAlone.add(ip);
      return { outcome: 'settled', links: [] };
    } catch (error) {
      this.#counters.conntrackPurgeFailures += 1;
      this.#purgeError = error instanceof Error ? error.message : String(error);
      this.log.error({ err: error, released: ips, sweep: false }, 'deleting old conntrack entries failed; their client IPs are held back, retrying');
      return { outcome: 'threw', links };
    }
  }

  /**
   * Send every operation at once: one socket keeps them in order in the kernel, so a link is up
   * before routes through it are added, and the round trips overlap. Returns how many failed;
   * `run` gets the links whose changes failed (touched) and the count of changes refused for a
   * link gone or renamed under them (vanished), which are no failures.
   */
  async #applyAll(operations: readonly Operation[], run: ApplyRun): Promise<number> {
    const nameOf = (ifindex: number | null): string => (ifindex === null ? '-' : (this.#view.links.get(ifindex)?.name ?? `#${ifindex}`));
    for (const operation of operations) {
      const echo = expectedEvent(this.#view, operation);
      if (echo !== null) this.#expectedEchoes.set(`${echo.op} ${eventObjectKey(echo)}`, echo);
    }
    const results = await Promise.allSettled(operations.map((operation) => this.kernel.apply(operation, this.#view)));
    // Stopped meanwhile: the rest of this reconcile is dropped, with nothing to log per link.
    for (const result of results) if (result.status === 'rejected' && isClosed(result.reason)) throw result.reason;
    /** Links kept as last known that the kernel says are gone (see #forgetGone). */
    const gone = new Set<number>();
    let failures = 0;
    results.forEach((result, index) => {
      const operation = operations[index];
      if (operation === undefined) return;
      const ifindex = operationIfindex(operation);
      if (operation.kind === 'link-up') {
        if (result.status === 'fulfilled') this.#linkUpOwed.delete(operation.ifindex);
        else this.#linkUpOwed.add(operation.ifindex);
      }
      if (result.status === 'fulfilled') {
        applyOperation(this.#view, operation);
        this.log.debug(describeOperation(operation, nameOf));
        if (ifindex !== null && !run.touched.has(ifindex)) this.#errors.delete(ifindex);
        return;
      }
      const reason = result.reason instanceof Error ? result.reason.message : String(result.reason);
      const text = `${describeOperation(operation, nameOf)}: ${reason}`;
      if (ifindex !== null && vanishedUnder(result.reason)) {
        // A VM shutting down takes its link down (its routes and neighbours flushed) a moment
        // before the link is deleted, and what the agent asks of it meanwhile meets no device; a
        // link renamed as it comes (udev) has its sysctls' files moved. Neither is a failure:
        // the link's notification (its deletion, its new name) plans what follows, or nothing.
        run.vanished += 1;
        if (this.#view.lastKnown?.has(ifindex) === true) gone.add(ifindex);
        // Read again before it is set again: a link still there by that name whose file went with
        // its IPv6 (an MTU below 1280) has nothing to set ('absent'), where the value read before
        // would be asked for again at every retry, each refused so, no notification ending them.
        if (operation.kind === 'sysctl') this.#view.sysctls.delete(sysctlKeyId(operation.key));
        this.log.debug(`${text}: the link is gone or renamed meanwhile, not a failure`);
        return;
      }
      failures += 1;
      if (ifindex !== null) {
        run.touched.add(ifindex);
        this.#errors.set(ifindex, text);
      }
      this.log.warn(text);
    });
    if (gone.size > 0) this.#forgetGone(gone);
    return failures;
  }

  /**
   * Links kept as last known (KernelView.lastKnown) to which the kernel answered a change with
   * ENODEV: gone, their deletion unheard (lost in an overflow). No notification will say so, and a
   * dump that fails on an entry lists them no more each time: forgotten now, or each re-read would
   * ask the same changes of them, and warn of each, while the dump fails; their clients released.
   */
  #forgetGone(gone: ReadonlySet<number>): void {
    for (const ifindex of gone) {
      const link = this.#view.links.get(ifindex);
      if (link === undefined) continue;
      this.log.warn({ link: link.name, ifindex }, 'a link kept as last known (a dump of the links ended with an error before it) is gone, the kernel says (ENODEV): forgotten');
      applyEvent(this.#view, { kind: 'link', op: 'del', link });
    }
    this.#schedule();
  }

  /**
   * The link-ups that failed, again, for links now up that the plan neither brings up nor takes
   * down: the kernel may have made the change (its answer merely late) without the GETLINK that
   * should have followed it, which a freshly raised veth needs to pass traffic at once (see
   * RtnetlinkKernel.apply). On a link up, the change is none; the GETLINK follows it all the same.
   * A link gone, or down with no link-up planned, is owed nothing: a later link-up is a new one.
   * Nor is one the plan no longer configures (ignored, an uplink, a conflict): it is not ours to
   * bring up.
   */
  #linkUpsAgain(current: Plan): Operation[] {
    if (this.#linkUpOwed.size === 0) return [];
    const planned = new Set<number>();
    for (const operation of current.operations) if (operation.kind === 'link-up' || operation.kind === 'link-down') planned.add(operation.ifindex);
    const configured = new Set<number>();
    for (const link of current.links) if (link.state === 'configured' || link.state === 'pending') configured.add(link.ifindex);
    const again: Operation[] = [];
    for (const ifindex of this.#linkUpOwed) {
      if (planned.has(ifindex)) continue;
      if (configured.has(ifindex) && this.#view.links.get(ifindex)?.up === true) again.push({ kind: 'link-up', ifindex });
      else this.#linkUpOwed.delete(ifindex);
    }
    return again;
  }

  /**
   * Client mode: a link that keeps addresses of ours it no longer wants (LinkReport.kept), said
   * once while it lasts, at info level: `client` without --watch says it on stderr itself.
   */
  #sayKept(links: readonly LinkReport[]): void {
    const said = new Set<string>();
    for (const link of links) {
      if (link.kept === undefined) continue;
      const key = `${link.ifindex} ${link.note ?? ''}`;
      said.add(key);
      if (!this.#keptSaid.has(key)) this.log.info({ link: link.name, kept: link.kept }, link.note ?? 'keeps addresses it no longer wants');
    }
    this.#keptSaid = said;
  }

  /**
   * A link in conflict (a second link for a client id already served, all its traffic dropped; a
   * provider link whose name the firewall cannot hold, kept down) is said once at warn level as it
   * comes into it, or as what its note says changes; once at info as it comes out of it (served,
   * or gone). Not at every reconcile: the plan reports it in each.
   */
  #sayConflicts(links: readonly LinkReport[]): void {
    const said = new Map<number, { readonly name: string; readonly note: string }>();
    for (const link of links) {
      if (link.state !== 'conflict') continue;
      const note = link.note ?? 'not served';
      said.set(link.ifindex, { name: link.name, note });
      if (this.#conflictsSaid.get(link.ifindex)?.note !== note) {
        this.log.warn({ link: link.name, ifindex: link.ifindex }, `${link.name} is in conflict: ${note} (said once while it lasts)`);
      }
    }
    for (const [ifindex, { name }] of this.#conflictsSaid) {
      if (said.has(ifindex)) continue;
      const now = links.find((link) => link.ifindex === ifindex);
      // Served now, the plan has yet to configure it in this reconcile: 'pending' would say nothing of that.
      const served = now !== undefined && now.role === 'provider' && now.id !== null && (now.state === 'pending' || now.state === 'configured');
      const what = now === undefined ? 'it is gone' : served ? `client id ${String(now.id)} is served on it now` : `it is ${now.state} now`;
      this.log.info({ link: now?.name ?? name, ifindex }, `${now?.name ?? name} is no longer in conflict: ${what}`);
    }
    this.#conflictsSaid = said;
  }

  /** A link the plan asks nothing of is where it should be: an older failure is no longer true. */
  #forgetStaleErrors(operations: readonly Operation[]): void {
    const asked = new Set(operations.map(operationIfindex));
    for (const ifindex of this.#errors.keys()) if (!this.#view.links.has(ifindex) || !asked.has(ifindex)) this.#errors.delete(ifindex);
  }

  /**
   * Take down the held-back links that are up while the firewall still accepts another client's
   * address from them (their MAC changed, so a VM other than that client is now behind them);
   * the plan brings them up again once the firewall has caught up.
   */
  #linksStillAcceptedAsAnother(current: Plan, held: ReadonlySet<number>): Operation[] {
    const filtered = this.#filteredLinks();
    return current.providerLinks
      .filter((link) => held.has(link.ifindex) && typeof filtered.get(link.ifname) === 'string' && this.#view.links.get(link.ifindex)?.up === true)
      .map((link) => ({ kind: 'link-down', ifindex: link.ifindex }));
  }

  /** Whether `event` says exactly what a change of the running reconcile is to cause. */
  #isEcho(event: KernelEvent): boolean {
    const expected = this.#expectedEchoes.get(`${event.op} ${eventObjectKey(event)}`);
    if (expected === undefined) return false;
    const alone = emptyView();
    applyEvent(alone, expected);
    return !changesView(alone, event);
  }

  /**
   * The provider links of `current` that the firewall does not filter as serving their client:
   * new ones, and ones it knows with another client (a MAC changed) or as isolated. Configured
   * for the plan's client, such a link would send as one client while routed another's traffic.
   */
  #unfilteredLinks(current: Plan): Set<number> {
    const filtered = this.#filteredLinks();
    return new Set(current.providerLinks.filter((link) => filtered.get(link.ifname) !== link.clientIp).map((link) => link.ifindex));
  }

  /** Whether a provider link of `current` is one the firewall names with another client, or as isolated. */
  #reassignedLinks(current: Plan): boolean {
    const filtered = this.#filteredLinks();
    return current.providerLinks.some((link) => {
      const accepted = filtered.get(link.ifname);
      return accepted !== undefined && accepted !== link.clientIp;
    });
  }

  /**
   * How the firewall filters each link it names, from the last model it took: the one client
   * address it accepts, or null for an isolated link (all dropped).
   */
  #filteredLinks(): ReadonlyMap<string, string | null> {
    const model = this.#firewallModel;
    if (model === null) return new Map();
    if (this.#filteredLinksOf?.model !== model) {
      const links = new Map<string, string | null>([
        ...model.providerLinks.map((link) => [link.ifname, link.clientIp] as const),
        ...(model.isolatedLinks ?? []).map((name) => [name, null] as const),
      ]);
      this.#filteredLinksOf = { model, links };
    }
    return this.#filteredLinksOf.links;
  }

  /**
   * Make the firewall enforce the plan's model (or read it back, when an audit is due). Returns
   * whether it filters every link of the plan; without a firewall, true.
   */
  async #tellFirewall(current: Plan): Promise<boolean> {
    const model: FirewallModel = current.firewall;
    // An audit reads the ruleset back instead of trusting what was last applied (AgentTiming).
    const audit = this.#auditWanted;
    this.#auditWanted = false;
    if (this.firewall === null) return true;
    // Field by field, not as JSON text: at a thousand links the text alone cost a hot-plug 0.3 ms.
    const modelChanged = this.#firewallModel === null || !sameFirewallModel(model, this.#firewallModel);
    if (!modelChanged && !audit) return true;
    try {
      if (!audit) await this.firewall.reconcile(model);
      else if ((await this.firewall.verify(model)) && !modelChanged) {
        this.#counters.firewallRepairs += 1;
        this.log.warn('the firewall table had been changed by someone else: restored');
      }
      this.#firewallModel = model;
      this.#firewallError = null;
      return true;
    } catch (error) {
      this.#auditWanted ||= audit;
      // Its first line: nft goes on with a line per command it refused (the log has them all).
      this.#firewallError = (error instanceof Error ? error.message : String(error)).split('\n', 1)[0] ?? '';
      this.log.error({ err: error }, 'firewall reconcile failed; will retry');
      return false;
    }
  }

  /** Tells the services what changed, if anything did; false where they failed (retried with backoff). */
  async #tellServices(current: Plan): Promise<boolean> {
    const links: readonly ProviderLink[] = current.providerLinks;
    const told = this.#servicesTold;
    if (this.services === null) return true;
    // Field by field, not as JSON text: at a thousand links the text cost each reconcile ~0.7 ms.
    const listed = told !== null && sameUpstreamLink(told.upstreamLink, current.upstreamLink) && sameProviderLinks(told.links, links);
    // Told again, the same links, when the gateway address comes onto them: the DNS forwarder binds
    // it then, and a link planned a reconcile or more before it got the address (held back while
    // the firewall could not be made, say) would else leave it unbound until the links change.
    const gateway = (listed && told.gateway) || carriesGateway(this.#view, links);
    if (listed && gateway === told.gateway) return true;
    try {
      await this.services.linksChanged(links, current.upstreamLink);
      this.#servicesTold = { links, upstreamLink: current.upstreamLink, gateway };
      if (this.#servicesFailure !== undefined) this.log.info('services updated: the failure said before is over');
      this.#servicesFailure = undefined;
      return true;
    } catch (error) {
      // Said once while it fails the same way (DHCP without CAP_NET_RAW fails at every retry).
      const failure = error instanceof Error ? error.message : String(error);
      if (failure === this.#servicesFailure) this.log.debug({ err: failure }, 'services update failed again; will retry');
      // A service's own failure (a DHCP socket not opened, a kind of its error) in its one line, no stack: expected, not a bug.
      else this.log.error({ err: error instanceof Error && 'kind' in error ? failure : error }, 'services update failed; will retry');
      this.#servicesFailure = failure;
      // What they were told before is theirs no more: a failed update is partly made (DNS told of
      // the links as DHCP fails on one, which it keeps to retry), so they are told at the next
      // reconcile even where the links are back to those told before.
      this.#servicesTold = null;
      this.#scheduleRetry(true);
      return false;
    }
  }

  /** Failed changes are retried with backoff even without a new event (the cause may pass). */
  #scheduleRetry(failed: boolean): void {
    if (!failed) {
      this.#retryRound = 0;
      return;
    }
    if (this.#retryTimer !== undefined || this.#stopped) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#schedule();
    }, backoffDelayMs(RETRY, this.#retryRound));
    this.#retryTimer.unref();
    this.#retryRound += 1;
  }

  /** A copy of the view, for tests. */
  get view(): KernelView {
    return this.#view;
  }
}

/**
 * What a re-read (`fresh`) cannot decode but must not take as absent. A link the dump listed
 * exists: where `previous` had it, it keeps what was last read of it. Taken as gone, a provider
 * link would be dropped by the firewall, its client's services stopped and conntrack entries
 * deleted, its client id free for another link to take, all for a message the parser misreads.
 * And a default route there: the planner must know of it. Returns the links kept.
 */
function keepUnreadable(fresh: KernelView, previous: KernelView, skipped: readonly SkippedEntry[]): Set<number> {
  const kept = new Set<number>();
  for (const entry of skipped) {
    if (entry.defaultRoute) fresh.unreadableDefaultRoute = true;
    if (entry.messageType !== 'NEWLINK' || entry.ifindex === null || fresh.links.has(entry.ifindex)) continue;
    const known = previous.links.get(entry.ifindex);
    if (known === undefined) continue;
    fresh.links.set(entry.ifindex, known);
    kept.add(entry.ifindex);
  }
  return kept;
}

/**
 * A links dump the kernel ended with an error lacks the links after it, which no notification
 * will tell of: each link the agent last knew of (`previous`, with the notifications dropped since,
 * `since`) that `fresh` does not list is kept as last known. Taken as gone, a provider link would
 * be dropped by the firewall, its client's services stopped and conntrack entries deleted, and in
 * client mode the primary link's marked address and routes removed (see keepUnreadable). One
 * deleted meanwhile whose notification was lost stays until a dump of the links is whole, or until
 * another link is known by its name (KernelView.lastKnown): a name is one link's at a time, and two
 * links of one name would have the firewall refuse every update.
 */
function keepUnlisted(fresh: KernelView, previous: KernelView, since: readonly KernelEvent[]): void {
  const known = new Map(previous.links);
  for (const event of since) {
    if (event.kind !== 'link') continue;
    if (event.op === 'del') known.delete(event.link.ifindex);
    else {
      for (const [ifindex, link] of known) if (ifindex !== event.link.ifindex && link.name === event.link.name) known.delete(ifindex);
      known.set(event.link.ifindex, event.link);
    }
  }
  const listed = new Set([...fresh.links.values()].map((link) => link.name));
  const kept = new Set<number>();
  for (const [ifindex, link] of known) {
    if (fresh.links.has(ifindex) || listed.has(link.name)) continue;
    fresh.links.set(ifindex, link);
    kept.add(ifindex);
  }
  fresh.lastKnown = kept;
}

/**
 * Whether a change failed for want of its link: the kernel refused it for a device it does not
 * have (ENODEV in its NLMSG_ERROR), or the link's sysctl file is not there by the name it was
 * known by (NetdError 'link-gone'). By the refusal's code and the error's kind, never by a word in
 * a text: another failure's may name the link, whose name may be ENODEV (a sysctl's path).
 */
function vanishedUnder(reason: unknown): boolean {
  return (reason instanceof KernelRefusal && reason.code === 'ENODEV') || (reason instanceof NetdError && reason.kind === 'link-gone');
}

/** What the start's sweep is reckoned from (startPurgeDebt). */
const SWEEP_READS: readonly DumpTable[] = ['links', 'addresses', 'routes'];

/** Whether a failed dump cut short what the start's sweep is reckoned from in `view`. */
function sweepReadsCutShort(view: KernelView): boolean {
  return SWEEP_READS.some((table) => view.cutShort?.has(table) === true);
}

/** Whether `error` says the kernel was closed under a request: the agent is stopping. */
function isClosed(error: unknown): error is NetdError {
  return error instanceof NetdError && error.kind === 'closed';
}

/** Every field of every ProviderLink, in order. */
function sameProviderLinks(a: readonly ProviderLink[], b: readonly ProviderLink[]): boolean {
  if (a.length !== b.length) return false;
  for (let index = 0; index < a.length; index++) {
    const x = a[index];
    const y = b[index];
    if (x === undefined || y === undefined) return false;
    if (x.ifname !== y.ifname || x.ifindex !== y.ifindex || x.id !== y.id || x.clientIp !== y.clientIp || x.clientMac !== y.clientMac) return false;
  }
  return true;
}

/** Whether one of `links` carries the gateway address in `view` (the first that does ends the search). */
function carriesGateway(view: KernelView, links: readonly ProviderLink[]): boolean {
  return links.some((link) => view.addresses.has(addressKey({ ifindex: link.ifindex, ip: GATEWAY_IP, prefixLength: 32 })));
}

function sameUpstreamLink(a: UpstreamLinkInfo | null, b: UpstreamLinkInfo | null): boolean {
  return a === null || b === null ? a === b : a.ifname === b.ifname && a.ifindex === b.ifindex && a.ownIp === b.ownIp;
}
