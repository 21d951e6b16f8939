// The provider agent's real ports: the nftables firewall and the per-link services (DHCP on
// every provider link, DNS on the gateway), behind the interfaces the agent core talks to.
import type { Logger } from '../../shared/log.js';
import { clientId } from '../../shared/client-id.js';
import type { DhcpServer } from '../dhcp/dhcp-server.js';
import type { LeaseInfo } from '../dhcp/lease-table.js';
import type { DnsForwarder } from '../dns/forwarder.js';
import type { ArpGuardState, FirewallModel, FirewallPort, FirewallReading, FlowLimits } from '../firewall-port.js';
import { type TcpTimeouts, clientTcpTimeouts, sameTcpTimeouts, tcpTimeoutPolicyText } from '../firewall/client-tcp-timeouts.js';
import { readConntrackMax } from '../firewall/conntrack-max.js';
import { FirewallError } from '../firewall/firewall-error.js';
import { FirewallReconciler, type NftOptions, arpDrops, inetCounters, removeFirewall, tableHasStructure } from '../firewall/nft.js';
import { ARP_TABLE, TABLE, TABLE_OF } from '../firewall/ruleset.js';
import { loadNftLibrary } from '../firewall/nft-library.js';
import {
  MAX_DEFAULT_CLIENT_NEW_FLOW_RATE,
  type TableSettings,
  assertTableSettings,
  clientTcpTimeoutsOf,
  defaultClientFlowLimit,
  defaultClientNewFlowRate,
} from '../firewall/table-settings.js';
import { readTcpTimeouts } from '../firewall/tcp-timeout-sysctls.js';
import type { ProviderLink, ServicesPort, UpstreamLinkInfo } from '../services-port.js';

/** --client-flow-limit: a number of conntrack entries per client (0: none), or derived from nf_conntrack_max. */
export type ClientFlowLimitOption = number | 'auto';

/** --client-new-flow-rate: new flows a second per client (0: none), or derived from nf_conntrack_max. */
export type ClientNewFlowRateOption = number | 'auto';

/** The agent's own firewall, changed in-process through libnftables. */
export class NftablesFirewall implements FirewallPort {
  #reconciler: FirewallReconciler | undefined;
  /** What #reconciler makes the table with; once #flowLimits is set, what the table was last made (or found) with. */
  #settings: TableSettings | undefined;
  /** Clients' TCP timeouts from the provider's, read again at each audit. */
  readonly #auditedTcpTimeouts: Reread<TcpTimeouts>;
  /** nf_conntrack_max, read again at each audit for `auto` limits. */
  readonly #auditedConntrackMax: Reread<number>;
  /**
   * The limits of #settings while the table holds them: set by each reconcile or audit that
   * succeeds, cleared by one that fails and leaves the table missing or changed (undefined: none
   * in force).
   */
  #flowLimits: FlowLimits | undefined;
  /** nft refused the arp family (said once): every reconciler makes the inet table alone. */
  #arpFamilyRefused = false;

  constructor(
    private readonly clientFlowLimit: ClientFlowLimitOption,
    private readonly clientNewFlowRate: ClientNewFlowRateOption,
    private readonly log: Logger,
    /** nf_conntrack_max, undefined while nf_conntrack is not loaded; tests give their own. */
    private readonly conntrackMax: () => number | undefined = readConntrackMax,
    /** The provider's conntrack TCP timeouts (sysctls), likewise. */
    private readonly tcpTimeouts: () => TcpTimeouts | undefined = readTcpTimeouts,
    /** How nft runs: libnftables in-process by default (`spawn`: SPECTRUM_NETD_SPAWN_NFT). */
    private readonly nft: NftOptions = {},
  ) {
    assertTableSettings({ clientFlowLimit: clientFlowLimit === 'auto' ? 0 : clientFlowLimit, clientNewFlowRate: clientNewFlowRate === 'auto' ? 0 : clientNewFlowRate });
    this.#auditedTcpTimeouts = new Reread(() => mapDefined(tcpTimeouts(), clientTcpTimeouts), log, "firewall: cannot read the provider's TCP timeouts; clients' keep theirs until they can be read");
    this.#auditedConntrackMax = new Reread(conntrackMax, log, 'firewall: cannot read nf_conntrack_max; the flow limits derived from it (auto) stay as they are until it can be read');
    // A broken install (addon not built, libnftables missing) fails when the agent starts.
    loadNftLibrary();
  }

  async reconcile(model: FirewallModel): Promise<void> {
    try {
      await this.#noting(await this.#ready(model), (reconciler) => reconciler.reconcile(model));
    } catch (error) {
      await this.#afterFailure();
      throw error;
    }
    this.#flowLimits = this.#settings === undefined ? undefined : limitsOf(this.#settings);
  }

  /**
   * The audit: also where clients' TCP timeouts follow a change of the provider's sysctls (an
   * operator's, after start), and `auto` flow limits one of nf_conntrack_max. The table is then
   * replaced once, which is not counted as a repair; unless someone else had changed it too,
   * which the table is first checked for against the settings it was made with.
   */
  async verify(model: FirewallModel): Promise<boolean> {
    let follow: Follow | undefined;
    let changed: boolean;
    let changedBehind = false;
    try {
      const reconciler = await this.#ready(model);
      follow = this.#followKernel();
      // A follow replaces the table whatever it holds: a repair in the same audit would be
      // counted nowhere. One more listing, at a follow only.
      if (follow !== undefined) changedBehind = await reconciler.differs(model);
      ({ changed } = await this.#noting(follow?.reconciler ?? reconciler, (chosen) => chosen.reconcile(model, { verify: true })));
    } catch (error) {
      await this.#afterFailure();
      throw error;
    }
    // Taken on only once the table has it: after a refusal the next audit follows again (still
    // not a repair), and a reconcile meanwhile keeps to the table as it is.
    if (follow !== undefined) {
      const { from, settings } = follow;
      this.#settings = settings;
      this.#reconciler = follow.reconciler;
      if (!sameTcpTimeouts(clientTcpTimeoutsOf(from), clientTcpTimeoutsOf(settings))) {
        this.log.info(
          { from: tcpTimeoutPolicyText(clientTcpTimeoutsOf(from)), to: tcpTimeoutPolicyText(clientTcpTimeoutsOf(settings)) },
          "firewall: the provider's TCP timeouts changed; clients' TCP flows follow (the table is replaced, its counters start from 0)",
        );
      }
      if (from.clientFlowLimit !== settings.clientFlowLimit || from.clientNewFlowRate !== settings.clientNewFlowRate) {
        this.log.info(
          { from: limitsOf(from), to: limitsOf(settings), conntrackMax: follow.conntrackMax },
          'firewall: nf_conntrack_max changed; the flow limits derived from it (auto) follow (the table is replaced, its counters start from 0)',
        );
      }
    }
    this.#flowLimits = this.#settings === undefined ? undefined : limitsOf(this.#settings);
    return changed && (follow === undefined || changedBehind);
  }

  /**
   * After an update that failed: the limits stay in force only while the table still has the
   * structure they were applied with (the failure was an element change); one the update found
   * missing or changed and could not make again holds no client to anything. A listing that fails
   * too tells nothing new: what was last applied is kept, as between audits.
   */
  async #afterFailure(): Promise<void> {
    const applied = this.#settings;
    if (this.#flowLimits === undefined || applied === undefined) return;
    const intact = await tableHasStructure(applied, this.nft).catch(() => true);
    if (!intact) this.#flowLimits = undefined;
  }

  /**
   * The settings with clients' TCP timeouts taken anew from the provider's sysctls, and `auto`
   * limits from nf_conntrack_max, and a reconciler for them, when they differ from the table's;
   * undefined when they do not. A value that cannot be read keeps what the table has (warned once).
   */
  #followKernel(): Follow | undefined {
    const from = this.#settings;
    if (from === undefined) return undefined;
    let settings = from;
    const wanted = this.#auditedTcpTimeouts.read();
    if (wanted !== undefined && !sameTcpTimeouts(wanted, clientTcpTimeoutsOf(from))) settings = { ...settings, clientTcpTimeouts: wanted };
    const limit = this.clientFlowLimit;
    const rate = this.clientNewFlowRate;
    // Numbers given stay as they are: nf_conntrack_max is not even read.
    const conntrackMax = limit === 'auto' || rate === 'auto' ? this.#auditedConntrackMax.read() : undefined;
    if (conntrackMax !== undefined) {
      const clientFlowLimit = limit === 'auto' ? defaultClientFlowLimit(conntrackMax) : limit;
      const clientNewFlowRate = rate === 'auto' ? defaultClientNewFlowRate(conntrackMax) : rate;
      if (clientFlowLimit !== from.clientFlowLimit || clientNewFlowRate !== from.clientNewFlowRate) settings = { ...settings, clientFlowLimit, clientNewFlowRate };
    }
    return settings === from ? undefined : { from, settings, reconciler: this.#reconcilerFor(settings), conntrackMax };
  }

  /**
   * The reconciler, made on the first call with `auto` resolved and the clients' TCP timeouts
   * taken from the provider's (both read again at each audit: #followKernel).
   */
  async #ready(model: FirewallModel): Promise<FirewallReconciler> {
    if (this.#reconciler !== undefined) return this.#reconciler;
    const limit = this.clientFlowLimit;
    const rate = this.clientNewFlowRate;
    const needsMax = limit === 'auto' || rate === 'auto';
    const read = (): { conntrackMax: number | undefined; tcpTimeouts: TcpTimeouts | undefined } => ({
      conntrackMax: needsMax ? this.conntrackMax() : undefined,
      tcpTimeouts: this.tcpTimeouts(),
    });
    let kernel = read();
    if (kernel.tcpTimeouts === undefined || (needsMax && kernel.conntrackMax === undefined)) {
      // nf_conntrack is not loaded yet (a fresh boot, a modular kernel): the table's ct rules
      // load it. Made with what is known first (no cap, the most the default rate gives, the
      // kernel's default timeouts), then as it should be, before any client has a flow.
      const first = this.#reconcilerFor({ clientFlowLimit: limit === 'auto' ? 0 : limit, clientNewFlowRate: rate === 'auto' ? MAX_DEFAULT_CLIENT_NEW_FLOW_RATE : rate });
      await this.#noting(first, (reconciler) => reconciler.reconcile(model));
      kernel = read();
    }
    const { conntrackMax, tcpTimeouts } = kernel;
    if (needsMax && conntrackMax === undefined) {
      throw new FirewallError(
        limit === 'auto' ? 'flow-limit' : 'flow-rate',
        'nf_conntrack_max does not exist even with the firewall table loaded: is nf_conntrack in the kernel? Else give --client-flow-limit and --client-new-flow-rate numbers',
      );
    }
    if (tcpTimeouts === undefined) {
      throw new FirewallError('tcp-timeouts', 'the nf_conntrack_tcp_timeout_* sysctls do not exist even with the firewall table loaded: is nf_conntrack in the kernel?');
    }
    const settings: TableSettings = {
      clientFlowLimit: limit === 'auto' ? defaultClientFlowLimit(conntrackMax ?? 0) : limit,
      clientNewFlowRate: rate === 'auto' ? defaultClientNewFlowRate(conntrackMax ?? 0) : rate,
      clientTcpTimeouts: clientTcpTimeouts(tcpTimeouts),
    };
    if (limit === 'auto') {
      this.log.info({ clientFlowLimit: settings.clientFlowLimit, conntrackMax }, 'firewall: each client may hold this many conntrack entries (an eighth of the table, at most 4096)');
    }
    if (rate === 'auto') {
      this.log.info(
        { clientNewFlowRate: settings.clientNewFlowRate, conntrackMax },
        'firewall: each client may open this many new flows a second (an eighth of the table per 22 s, at most 100)',
      );
    }
    this.#settings = settings;
    this.#reconciler = this.#reconcilerFor(settings);
    return this.#reconciler;
  }

  /** A reconciler for `settings`, run as this firewall runs nft, knowing what nft refused. */
  #reconcilerFor(settings: TableSettings): FirewallReconciler {
    return new FirewallReconciler({ ...settings, ...this.nft, arpFamilyRefused: this.#arpFamilyRefused });
  }

  /**
   * Run `step` on `reconciler`; when it finds (failing or not) that nft refuses the arp family,
   * say so once, and make every reconciler from then on the inet table alone.
   */
  async #noting<T>(reconciler: FirewallReconciler, step: (reconciler: FirewallReconciler) => Promise<T>): Promise<T> {
    try {
      return await step(reconciler);
    } finally {
      if (reconciler.arpFamilyRefused && !this.#arpFamilyRefused) {
        this.#arpFamilyRefused = true;
        // The table's reconciler, where another one found it (a follow's that failed), knows it too.
        if (this.#reconciler !== undefined && !this.#reconciler.arpFamilyRefused && this.#settings !== undefined) this.#reconciler = this.#reconcilerFor(this.#settings);
        this.log.warn(
          { table: ARP_TABLE },
          `firewall: nft refused the arp family, so there is no ARP guard and clients' ARP is not policed (arp_filter still narrows what is answered): is CONFIG_NF_TABLES_ARP set in the kernel? The rest of the firewall (table ${TABLE}) is made without it`,
        );
      }
    }
  }

  async counters(): Promise<FirewallReading> {
    const [inet, arp] = await Promise.allSettled([inetCounters(this.nft), this.#arpFamilyRefused ? Promise.resolve(null) : arpDrops(this.nft)]);
    // Missing, or replaced by a table of its name without our counters (not ours).
    const gone = (result: PromiseSettledResult<unknown>): boolean =>
      result.status === 'rejected' && result.reason instanceof FirewallError && (result.reason.kind === 'table-missing' || result.reason.kind === 'table-changed');
    const arpGuard: ArpGuardState | null = this.#arpFamilyRefused ? 'unsupported' : arp.status === 'fulfilled' ? 'in-force' : gone(arp) ? 'missing' : null;
    return {
      counters: inet.status === 'fulfilled' ? { ...inet.value, arpDrops: arp.status === 'fulfilled' ? arp.value : null } : null,
      inetGone: gone(inet),
      arpGuard,
    };
  }

  /**
   * Only while the table holds them: once a reconcile applied them, until one finds the table
   * missing or changed and cannot make it again (a table that is not there holds no client to
   * anything).
   */
  flowLimits(): FlowLimits | null {
    return this.#flowLimits ?? null;
  }
}

/** A change of the table's settings that an audit follows: from what, to what. */
interface Follow {
  readonly from: TableSettings;
  readonly settings: TableSettings;
  readonly reconciler: FirewallReconciler;
  /** What `auto` limits were derived from (undefined: not read, or unreadable). */
  readonly conntrackMax: number | undefined;
}

function mapDefined<T, U>(value: T | undefined, map: (value: T) => U): U | undefined {
  return value === undefined ? undefined : map(value);
}

/** The flow limits of `settings`. */
function limitsOf(settings: TableSettings): FlowLimits {
  return { clientFlowLimit: settings.clientFlowLimit, clientNewFlowRate: settings.clientNewFlowRate };
}

/**
 * A kernel value the table follows, read again at each audit: undefined when it does not exist
 * or cannot be read. A failure is warned once per reason (again after a read that worked), not at
 * every audit; the audit goes on with what the table has.
 */
class Reread<T> {
  #unreadable: string | undefined;

  constructor(
    private readonly source: () => T | undefined,
    private readonly log: Logger,
    private readonly warning: string,
  ) {}

  read(): T | undefined {
    try {
      const value = this.source();
      this.#unreadable = undefined;
      return value;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      if (message !== this.#unreadable) this.log.warn({ err: message }, this.warning);
      this.#unreadable = message;
      return undefined;
    }
  }
}

/** What `status` shows of the services. */
export interface ServicesStatus {
  readonly leases: readonly LeaseInfo[];
  readonly dhcp: Readonly<Record<string, number>> | null;
  readonly dns: Readonly<Record<string, unknown>> | null;
}

/** DHCP and DNS, told of every change to the set of provider links. */
export class ProviderServices implements ServicesPort {
  constructor(
    private readonly dhcp: DhcpServer | null,
    private readonly dns: DnsForwarder | null,
  ) {}

  async linksChanged(links: readonly ProviderLink[], upstreamLink: UpstreamLinkInfo | null): Promise<void> {
    // DHCP's failure (a link's socket not opened: it tries again on its own) is thrown once DNS
    // has been told as well: the forwarder binds the gateway here, and a DHCP that kept failing
    // (no CAP_NET_RAW) kept DNS from ever listening.
    const dhcp = await this.dhcp?.setLinks(links.map((link) => ({ ifname: link.ifname, ifindex: link.ifindex, id: clientId(link.id) }))).then(
      () => undefined,
      (error: unknown) => ({ error }),
    );
    // A chained provider reaches its upstream provider's forwarder (at our own gateway address) through that link.
    await this.dns?.setUpstreamLink(upstreamLink === null ? null : { device: upstreamLink.ifname, ifindex: upstreamLink.ifindex, source: upstreamLink.ownIp });
    // The gateway address exists once a provider link carries it: the forwarder can bind then.
    // Upstreams with no route yet it retries on its own (DHCP on the uplink raises no link
    // event here); a link change is just an early chance to connect them. The forwarder says
    // itself, once, that it listens and where.
    if (this.dns !== null && links.length > 0) await this.dns.rebind();
    if (dhcp !== undefined) throw dhcp.error;
  }

  routesChanged(): void {
    this.dns?.routesChanged();
  }

  status(): ServicesStatus {
    return {
      leases: this.dhcp?.leases() ?? [],
      dhcp: this.dhcp?.counters() ?? null,
      dns: this.dns === null ? null : { ...this.dns.counters() },
    };
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.dhcp?.close(), this.dns?.close()]);
  }
}

/**
 * --no-firewall: delete the firewall's tables that an earlier run (or another version) of the
 * agent left, by their names (inet and arp spectrum_netd, no other table), before any link comes
 * up. Left in place, they would filter as that run left them: their guard drops every provider
 * link plugged since, which their sets do not name. Said once, when there was one to delete. A
 * failure is logged with what to do, and the agent goes on: --no-firewall is for debugging, and
 * the tables may not even be there. Where nft itself is not there (no nft binary, no libnftables:
 * a debugging run may well lack them) nothing could be checked: said in one info line, no error.
 */
export async function removeOwnFirewall(log: Logger, nft: NftOptions = {}): Promise<void> {
  try {
    const removed = (await removeFirewall(nft)).map((table) => TABLE_OF[table]);
    if (removed.length > 0) {
      log.warn({ tables: removed }, `--no-firewall: deleted the firewall tables an earlier run left (${removed.join(', ')}): no table of spectrum-netd filters traffic now`);
    }
  } catch (error) {
    if (error instanceof FirewallError && (error.kind === 'nft-missing' || error.kind === 'nft-library')) {
      log.info(
        { reason: error.message },
        `--no-firewall: nft is not available here, so whether an earlier run left its firewall tables (${TABLE}, ${ARP_TABLE}) could not be checked; none deleted`,
      );
      return;
    }
    log.error(
      { err: error },
      `--no-firewall: cannot delete the firewall tables an earlier run may have left (${TABLE}, ${ARP_TABLE}); while they stand they drop the traffic of provider links plugged from now on: delete them with nft delete table`,
    );
  }
}
