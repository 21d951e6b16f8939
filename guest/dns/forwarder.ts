// The provider agent's DNS forwarder: clients ask the gateway address (UDP, TCP for truncated
// answers); we relay to the provider's upstream resolvers. The imperative shell around the pure
// pieces (header.ts, pending-table.ts, pending-shares.ts, fair-share.ts, rate-limiter.ts,
// resolv-conf.ts, tcp-frames.ts).
import { setMaxListeners } from 'node:events';
import { isIPv4, isIPv6, createServer, type Server, type Socket as TcpSocket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { GATEWAY_IP } from '../../shared/scheme.js';
import { createLogger, type Logger } from '../../shared/log.js';
import { shownText } from '../../shared/shown-text.js';
import { DnsError } from './dns-error.js';
import { admission } from './fair-share.js';
import {
  HEADER_LENGTH,
  RCODE,
  answersQuestion,
  errorResponse,
  fitUdpAnswer,
  heldAnswer,
  inspectQuery,
  messageEnd,
  isFailureAnswer,
  isResponse,
  rcodeOf,
  readId,
  udpRoomOf,
  writeId,
  type FittedAnswer,
  type Rcode,
  type UdpRoom,
} from './header.js';
import { PendingShares, type Share } from './pending-shares.js';
import { ID_SPACE, PendingTable } from './pending-table.js';
import { cryptoRandomId } from './random-id.js';
import { RateLimiter, type RateLimit } from './rate-limiter.js';
import { MAX_UPSTREAMS, type ZonelessNameserver } from './resolv-conf.js';
import { ResolvConfWatcher, readResolvConf } from './resolv-conf-watcher.js';
import { exchangeOverTcp, resetConnection } from './tcp-exchange.js';
import { FrameReader, frame } from './tcp-frames.js';
import {
  DNS_PORT,
  distinctUpstreams,
  endpointText,
  givenAs,
  parseConfiguredUpstream,
  parseUpstream,
  sameUpstream,
  upstreamKey,
  upstreamText,
  withoutDuplicates,
  zonedExample,
  type Upstream,
} from './upstream.js';
import { MAX_TIMEOUT_MS, QUERY_TIMEOUT_MS, UPSTREAM_TIMEOUT_MS } from './query-times.js';
import { RttEstimator } from './rtt-estimator.js';
import { UdpError, UdpPeer, UdpSocket, connectTcpThroughLink, connectTcpThroughZone, hostKeyOfText, loadUdpAddon, tcpUnacknowledged, zoneIndexOf } from './udp-socket.js';
import { NO_BIND_TO_INDEX } from '../link-binding.js';
import { bindPrivilegeHint } from '../capabilities.js';
import { RECONNECT_MAX_MS, UpstreamReachability, reconnectDelayMs } from './upstream-reachability.js';

export interface DnsForwarderOptions {
  /** Address clients query; default GATEWAY_IP. May not exist yet: see rebind(). */
  listen?: string;
  /** Default 53. */
  port?: number;
  /**
   * "ip" or "ip:port" ("[v6]:port"); when absent, the nameservers of resolvConfPath. An address at
   * which no resolver can be (0.0.0.0/8, a broadcast, multicast or IPv4-compatible address, a
   * link-local one without a zone), or one with a zone that would be ignored (any but a
   * link-local address), is refused at start (parseConfiguredUpstream). The same server given
   * again (sameUpstream, however written; a link-local one by its link's name and by its index)
   * is taken once, where it first comes.
   */
  upstreams?: readonly string[];
  /**
   * Default /etc/resolv.conf; re-read whenever it changes (also when replaced by rename). A
   * link-local nameserver without a zone is left out, said once (see #sayWithoutZone).
   */
  resolvConfPath?: string;
  /**
   * How long one upstream has a query to itself before the next upstream is asked too (failover):
   * 1 to 60000 ms, default 1500. Within it the query is sent again (same id, same port) once the
   * upstream's round-trip estimate has passed, doubling the wait each time: a lost datagram costs
   * a few round trips, not this. The upstream passed over is still listened to: its answer, come
   * late, is taken if it is the first good one (see queryTimeoutMs). Also the time an upstream
   * asked first must have answered nothing for before another takes its place (#preferOver).
   */
  timeoutMs?: number;
  /**
   * How long a query waits for a good answer in all, from when it came, before its client gets
   * SERVFAIL: timeoutMs to 60000 ms, default 4000 (or timeoutMs where that is longer). Answers
   * slower than timeoutMs are common (a resolver looking up a cold name, validating DNSSEC,
   * behind a VPN: 2-3 s), and the forwarder is its clients' only server: where they come within
   * this time, they are relayed. Under the 5 s a stub resolver (glibc's, musl's) waits for its
   * first try, so that the client gets an answer, SERVFAIL included, before it asks again. Once
   * no upstream is left to ask, the last one asked is asked again with backoff until then, and
   * the answers of those asked before it are still taken; over TCP, each connection is kept open
   * until then. It also bounds how long a query holds its place in the pending table.
   */
  queryTimeoutMs?: number;
  /**
   * Most UDP queries waiting for upstream at once (<= 65536). Default 4096. Once they are all
   * taken, a client holding less than its fair share (this divided among the clients holding
   * any) takes the place of the oldest query of the client holding the most, which is answered
   * SERVFAIL; any other is answered SERVFAIL. So a few clients asking for names that never
   * resolve cannot keep the others from it (fair-share.ts).
   */
  maxPending?: number;
  /**
   * Most of them from one client address, even while the table has room; beyond it the client
   * gets SERVFAIL. Default 256.
   */
  maxPendingPerClient?: number;
  /** Per client address. Default 200/s, burst 400. */
  ratePerClient?: { perSecond: number; burst: number };
  /** Clients tracked by the rate limiter (least recently seen evicted). Default 4096. */
  maxRateClients?: number;
  /**
   * Open client TCP connections at once. Default 64. Once they are all open, a client holding
   * fewer than its fair share (this divided among the clients holding any, it counted) gets one
   * in place of the oldest idle connection (else the oldest) of the client holding the most,
   * which is closed; any other is refused (fair-share.ts, as for the pending table).
   */
  maxTcpConnections?: number;
  /** Open TCP connections per client address; more are refused, so one client cannot hold them all. Default 8. */
  maxTcpConnectionsPerClient?: number;
  /** Queries relayed at once per TCP connection; reading pauses beyond. Default 8. */
  maxTcpQueriesPerConnection?: number;
  /**
   * A TCP connection that neither completes a query nor is answered one for this long is closed,
   * however many bytes of an unfinished message trickle in. Default 10 s (RFC 7766 suggests seconds).
   */
  tcpIdleMs?: number;
  logger?: Logger;
  /** What the forwarder's recovery runs on (see RecoveryClock); default the process's own. */
  clock?: RecoveryClock;
  /**
   * Whether start() binds the listen address; default true. false: the first rebind() does (the
   * agent's, once its first reconcile has put the address on the provider links).
   */
  bindAtStart?: boolean;
}

/**
 * The time the forwarder's recovery runs on: when its listening UDP socket was bound and its
 * upstreams connected (a failure streak's length), and the backoff before binding it again or
 * connecting upstreams again. Tests pass one they move by hand, so that backoff is checked by
 * driving time, not by waiting for it.
 */
export interface RecoveryClock {
  /** Milliseconds, monotonic. */
  now(): number;
  /** Call `callback` once, `ms` from now, without keeping the process alive; returns what cancels it. */
  after(ms: number, callback: () => void): () => void;
}

/** The process's monotonic clock and its timers. */
const PROCESS_CLOCK: RecoveryClock = {
  now: () => performance.now(),
  after(ms, callback) {
    const timer = setTimeout(callback, ms);
    timer.unref();
    return () => clearTimeout(timer);
  },
};

export interface DnsForwarderCounters {
  readonly listening: boolean;
  readonly bindAttempts: number;
  readonly bindFailures: number;
  readonly lastBindError: string | null;
  readonly upstreams: readonly string[];
  /** Configured upstreams not reached (no route or address yet), with the error; tried again every few seconds. */
  readonly unreachableUpstreams: readonly string[];
  /**
   * Upstreams in use some of whose sockets failed (nothing reads them; queries leave them alone),
   * with how many: connected again once their backoff is over.
   */
  readonly failingUpstreams: readonly string[];
  readonly resolvConfReloads: number;
  /** Client messages received, UDP and TCP. */
  readonly queries: number;
  readonly tcpQueries: number;
  /** Upstream answers relayed to clients. */
  readonly answered: number;
  /**
   * Of those, the answers of an upstream that had not answered within timeoutMs, taken after the
   * query had gone on to the next upstream (the first good answer wins): a sign that timeoutMs is
   * short for that upstream.
   */
  readonly lateAnswers: number;
  /**
   * UDP answers too large for their client (512 bytes without EDNS, else the payload size its OPT
   * record gives), cut short by the upstream with TC set, or failure answers held while an earlier
   * upstream might answer and larger than MAX_HELD_ANSWER, relayed as a truncated answer (header,
   * question and OPT record, TC set) so that the client asks again over TCP.
   */
  readonly truncated: number;
  /** Dropped silently: too short, or a response sent to us (over TCP its connection is closed), and zero-length TCP frames. */
  readonly malformed: number;
  readonly formErr: number;
  readonly notImp: number;
  readonly refused: number;
  readonly rateLimited: number;
  /**
   * Queries refused a place in the pending table, answered SERVFAIL: their client held
   * maxPendingPerClient places, or its fair share of a full table.
   */
  readonly overloaded: number;
  /**
   * Pending queries that gave their place to a client holding less than its fair share of the full
   * table: each the oldest of the client holding the most, answered SERVFAIL.
   */
  readonly evicted: number;
  /** No usable upstream configured: answered SERVFAIL. */
  readonly noUpstream: number;
  /**
   * Upstreams that did not answer a query within timeoutMs (once per query and upstream, over UDP
   * and TCP): each has the query go on to the next upstream, the one passed over still listened to
   * until the query's time is up (queryTimeoutMs); the last is asked again until then.
   */
  readonly upstreamTimeouts: number;
  /**
   * TCP connections to an upstream that it ended, once it had taken them, before a whole answer:
   * closed (FIN) or reset, with no answer or one cut short, or an empty frame sent (a protocol
   * error). Each moves its query on to the next upstream at once, without waiting out the timeout;
   * not counted as a timeout (the upstream did not stay silent) nor a send error (no socket of
   * ours failed). A connection refused is a send error (see sendErrors).
   */
  readonly upstreamClosed: number;
  /**
   * Upstream answers SERVFAIL, REFUSED or NOTIMP that moved their query on to an upstream it had not asked
   * (where none was left, the answer was relayed and is not counted here).
   */
  readonly upstreamErrors: number;
  /** Queries sent to the same upstream again because its answer was late. */
  readonly retransmits: number;
  /**
   * No good answer within the query's time (queryTimeoutMs), nor a failure answer to relay (every
   * upstream silent, or ending its TCP connection): answered SERVFAIL.
   */
  readonly failed: number;
  /**
   * Upstream datagrams that matched no pending query (its time up, spoofed, wrong source, port or
   * question), and those that did but are malformed (records running past the datagram's end,
   * TC not set): dropped, the query still waiting.
   */
  readonly upstreamRejected: number;
  /**
   * Our sockets' troubles, each counted once: sends that failed (to clients and upstreams), errors
   * the kernel queued on a socket (ICMP unreachables), upstream sockets that failed for good
   * (a send that found its socket broken is one of them, not two), and TCP connections to an
   * upstream that could not be opened (through a zone or a link) or that failed with an error
   * (refused, unreachable; but the upstream's reset of one it took, see upstreamClosed), as ICMP
   * errors on its UDP sockets are.
   */
  readonly sendErrors: number;
  readonly tcpConnections: number;
  readonly tcpRejected: number;
  /**
   * Open TCP connections closed to give their place to a client holding fewer than its fair share
   * of them (all maxTcpConnections open): each of the client holding the most.
   */
  readonly tcpEvicted: number;
  /** Closed for idleness (see DnsForwarderOptions.tcpIdleMs), a stalled partial message included. */
  readonly tcpIdleClosed: number;
  readonly pending: number;
}

/**
 * A chained provider's link to its own upstream provider, whose gateway address (and DNS
 * forwarder) is the same 169.254.0.1 this forwarder listens on: queries to it must leave through
 * that link from our address there, or they would come straight back to us.
 */
export interface UpstreamLinkRoute {
  readonly device: string;
  /**
   * The link's index, which its sockets are bound by: a socket opened again (a reconnect after
   * the link went) binds that link or fails, never another device that took its name.
   */
  readonly ifindex: number;
  /** Our address on that link. */
  readonly source: string;
}

export interface DnsForwarder {
  /** True once both the UDP socket and the TCP listener are bound. */
  listening(): boolean;
  /**
   * Bind whatever is not bound yet (call after links, hence the listen address, appear); but a UDP
   * socket that failed, which is bound again when its backoff is due, not sooner.
   */
  rebind(): Promise<void>;
  /**
   * Reach an upstream that is our own listen address through this link (null: no such link).
   * The link needs accept_local=1: the answers come from an address that is also ours.
   */
  setUpstreamLink(route: UpstreamLinkRoute | null): Promise<void>;
  /**
   * Links, addresses or routes changed (the uplink went down, say): each upstream in use is
   * checked, a moment later (one check for a burst of changes), for a route to it from its
   * address; one without is listed unreachable at once, and connected again on the reconnect
   * rounds, rather than found so by the next client's query, which waited its whole time.
   */
  routesChanged(): void;
  counters(): DnsForwarderCounters;
  /** Stop serving and release every socket, watcher and timer. Idempotent. */
  close(): Promise<void>;
}

const DEFAULTS = {
  port: DNS_PORT,
  resolvConfPath: '/etc/resolv.conf',
  timeoutMs: UPSTREAM_TIMEOUT_MS,
  queryTimeoutMs: QUERY_TIMEOUT_MS,
  maxPending: 4096,
  maxPendingPerClient: 256,
  ratePerClient: { perSecond: 200, burst: 400 },
  maxRateClients: 4096,
  maxTcpConnections: 64,
  maxTcpConnectionsPerClient: 8,
  maxTcpQueriesPerConnection: 8,
  tcpIdleMs: 10_000,
} as const;
const SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;
/**
 * Answers waiting in a TCP connection's write buffer beyond which no further query of it is read:
 * a client that sends queries and never reads the answers would otherwise have us buffer them
 * all. Two of the largest messages.
 */
const TCP_WRITE_HIGH_WATER = 2 * 65_537;
/** The earliest resend: answers slow down with an upstream's load and with names it must look up. */
const MIN_RETRANSMIT_MS = 100;
/** Before an upstream has answered anything (RFC 6298's initial RTO). */
const INITIAL_RETRANSMIT_MS = 1000;
/**
 * UDP sockets per upstream, each on its own port the kernel picked at random; every query goes
 * out of one chosen at random (RFC 5452: a forged answer must guess the port as well as the
 * 16-bit id; one fixed port would leave the id alone to guess). A power of two, for an unbiased
 * pick. Each socket costs the agent about 10 KB (measured), so 64 is ~0.7 MB per upstream.
 */
const SOCKETS_PER_UPSTREAM = 64;
/**
 * What send() on a connected upstream socket returns (negated) once its route or our source
 * address is gone: the kernel fixed the source at connect time, so the sockets are connected
 * again (a new address after a new DHCP lease is then used), not just sent on until it returns.
 * EINVAL: the source is no longer ours; ENODEV: the link a socket is bound to is gone.
 */
const ROUTE_ERRNOS: ReadonlySet<number> = new Set([19 /* ENODEV */, 22 /* EINVAL */, 99 /* EADDRNOTAVAIL */, 100 /* ENETDOWN */, 101 /* ENETUNREACH */, 113 /* EHOSTUNREACH */]);
/** The errors of a connect that say the route or our address toward an upstream is gone (as ROUTE_ERRNOS). */
const ROUTE_CODES: ReadonlySet<string> = new Set(['ENODEV', 'EINVAL', 'EADDRNOTAVAIL', 'ENETDOWN', 'ENETUNREACH', 'EHOSTUNREACH']);
/** How long after a change of links or routes the upstreams' routes are checked: a burst of changes (a link going takes its routes) is one check. */
const ROUTE_CHECK_DELAY_MS = 50;

/**
 * Whether `link`'s upstream has a route from its address now: a socket as its own, connected
 * (the kernel's route lookup) and closed. Connected sockets keep their route until a send fails.
 */
function routed(link: UpstreamLink): boolean {
  let probe: UdpSocket | undefined;
  try {
    probe = UdpSocket.bind(link.upstream.family, link.via?.source ?? '', 0, 0);
    if (link.via !== undefined) probe.bindToLink({ ifname: link.via.device, ifindex: link.via.ifindex });
    probe.connect(link.upstream.address, link.upstream.port);
    return true;
  } catch (error) {
    return !(error instanceof UdpError && ROUTE_CODES.has(error.code));
  } finally {
    probe?.close();
  }
}

/**
 * A listening UDP socket bound again, or an upstream connected again after a socket of it failed,
 * that lasts this long ends its failure streak: the next failure is warned about again, and bound
 * or connected again after RECONNECT_FIRST_MS. One failing sooner waits longer each time (up to
 * RECONNECT_MAX_MS) and is said at info.
 */
export const UDP_SETTLED_MS = 60_000;

/**
 * An upstream and our UDP sockets connected to it. Connected: the kernel drops datagrams from any
 * other source, and sends need no per-packet address resolution.
 */
interface UpstreamLink {
  readonly upstream: Upstream;
  /** upstreamKey(upstream), made once: the key of its last answer's time (see Forwarder.#lastAnswered). */
  readonly key: string;
  /** Set for the upstream provider's forwarder at our own address (see UpstreamLinkRoute). */
  readonly via: UpstreamLinkRoute | undefined;
  /**
   * For a link-local upstream, the index of the interface its zone named when its sockets were
   * connected: they stay on that interface (the kernel binds a connected socket to it by index),
   * whatever it is called since and whatever has its name now (see Forwarder.#setUpstreams), and
   * its TCP connections go through it too (#serveTcpQuery).
   */
  readonly zoneIndex: number | undefined;
  readonly sockets: readonly UdpSocket[];
  /** When to resend a query this upstream has not answered. */
  readonly rtt: RttEstimator;
  /**
   * A send failed for want of a route or source address: connected again at the next link change
   * or reconnect round, whichever comes first (see ROUTE_ERRNOS). Apart from `failure`: a lost
   * route is the network's doing, which a link change may well cure.
   */
  broken: boolean;
  /** When it was connected (the recovery clock): a socket of it failing within UDP_SETTLED_MS continues its failure streak. */
  readonly connectedAt: number;
  /**
   * A socket of it failed (see #upstreamSocketFailed): it is connected again once `due`, which
   * its streak's backoff sets, not sooner (a link change does not cut the wait short); `cancel`
   * cancels that backoff's timer.
   */
  failure: { due: boolean; readonly cancel: () => void } | undefined;
  /**
   * Its sockets that failed: nothing reads them, so no query goes out of them while any other
   * works (see #pickSocket); while none does, its queries go to the next upstream (#nextUpstream).
   */
  readonly failedSockets: Set<UdpSocket>;
}

/** An open client TCP connection, as the fair share of connections sees it. */
interface TcpClientConnection {
  readonly socket: TcpSocket;
  /** Its queries waiting for upstream: one with none is idle, the first to close for a newcomer. */
  inFlight: number;
}

/**
 * An upstream a query went on from once its time was up (see PendingQuery.earlier): its answer is
 * still taken, through the socket the query last went out of to it, and no other.
 */
interface EarlierAttempt {
  readonly link: UpstreamLink;
  readonly socket: UdpSocket;
  /** When the query last went out to it, and how often (1: once, its answer timed: Karn). */
  readonly sentAt: number;
  readonly transmissions: number;
}

interface PendingQuery {
  readonly client: UdpPeer;
  /** What the client takes over UDP: an answer larger is relayed truncated (fitUdpAnswer). */
  readonly room: UdpRoom;
  /** Its place among its client's pending queries (under the client's host key), once in the table. */
  share: Share<number | string, PendingQuery> | undefined;
  readonly clientId: number;
  /** A copy of the client's query; its id is overwritten with ours for each attempt. */
  readonly message: Buffer;
  /** View of the question bytes (after the header, so id rewrites leave it alone). */
  readonly question: Buffer;
  readonly questionEnd: number;
  link: UpstreamLink;
  /** The socket of `link` the current attempt went out of: only it may bring the answer. */
  socket: UdpSocket | undefined;
  /**
   * The upstreams it went to (or waited for), by address: each is asked once at most. Not a count
   * of positions: the list may change under the query (resolv.conf rewritten), and it then goes on
   * to the new list's upstreams it has not tried.
   */
  readonly tried: Upstream[];
  /**
   * Upstreams it passed over because none of their sockets worked (see #nextUpstream), by address:
   * not waited for later, but asked once they can answer, if it is still unanswered then. Made
   * only when there is one.
   */
  passed: Upstream[] | undefined;
  /**
   * Set where this query failed (no answer in time, SERVFAIL, REFUSED or NOTIMP) at the upstream then asked
   * first for new queries: that upstream, when, and how; whether another's answer to it makes that
   * other asked first instead is #preferOver's to weigh.
   */
  failedFirst: { readonly upstream: Upstream; readonly at: number; readonly how: FailureHow } | undefined;
  /**
   * Our id for it upstream, its key in the pending table: one for its whole life, whichever
   * upstream it goes to, so that an upstream it went on from can still answer it. (Anyone who sees
   * it go to one upstream can answer it as that upstream already: the id tells them nothing more.)
   */
  id: number;
  /** When the query last went out, and how often to the current upstream (1: not resent; 0: not yet, see #sendUpstream). */
  sentAt: number;
  transmissions: number;
  /**
   * When the current upstream's time is up (timeoutMs after the first transmission, the query's
   * own time at most); for the last upstream it can ask, once that has passed, the query's time.
   */
  upstreamUntil: number;
  /** When the query's whole time is up (queryTimeoutMs after it came): its client is answered then. */
  readonly queryUntil: number;
  /** The current upstream's time is up, counted in upstreamTimeouts: the last, asked until queryUntil. */
  timedOut: boolean;
  /**
   * Upstreams whose time was up, the query gone on to the next, whose answer is still taken
   * until the query's time is up; made only when there is one.
   */
  earlier: EarlierAttempt[] | undefined;
  /**
   * No upstream is asked any more (the last answered SERVFAIL, REFUSED or NOTIMP, or none is left
   * to go to), but one asked earlier may still answer: the query waits for it until its time is up.
   */
  parked: boolean;
  /**
   * A failure answer (SERVFAIL, REFUSED, NOTIMP) that moved the query on to no other upstream,
   * fitted to its client and to MAX_HELD_ANSWER bytes (heldAnswer): relayed once no upstream asked earlier may answer better, or at the
   * query's time.
   */
  held: FittedAnswer | undefined;
}

/** How an upstream failed a query: no answer within the timeout, or an answer that is none (isFailureAnswer). */
type FailureHow = 'timed-out' | 'SERVFAIL' | 'REFUSED' | 'NOTIMP';

type MutableCounters = { -readonly [K in keyof DnsForwarderCounters]: DnsForwarderCounters[K] };

/** Whether a client TCP connection has no query waiting for upstream. */
function isIdle(connection: TcpClientConnection): boolean {
  return connection.inFlight === 0;
}

/**
 * End a client's TCP connection that the forwarder closes itself (refused, evicted for a client
 * below its fair share, idle, sending junk) with a reset where that loses nothing: all it was
 * written acknowledged. Closed with a FIN, each left the provider a socket in TIME_WAIT (or
 * FIN_WAIT) for about a minute, and a client opening connections only to be refused made them at
 * its new-flow rate; after a reset none is left (RFC 7766 lets a server close idle connections).
 * While an answer is still on its way or unread (a client reading it slowly), a reset would
 * discard it: closed then as before, the kernel sending what it holds before its FIN (unless the
 * client sent what we have not read, reading paused: closing then resets anyway, RFC 2525 2.17).
 * So is one whose sending side we shut down already (libuv cannot reset it).
 */
function closeClientConnection(socket: TcpSocket): void {
  if (socket.destroyed) return;
  if (socket.writableEnded || tcpUnacknowledged(socket) !== 0) socket.destroy();
  else resetConnection(socket);
}

/** Whether `upstream` is among those a query `tried` (see PendingQuery.tried). */
function hasTried(tried: readonly Upstream[], upstream: Upstream): boolean {
  return tried.some((done) => sameUpstream(done, upstream));
}

/** The first link of `upstreams` from `start` on in turn whose upstream is not among `tried`. */
function untriedFrom(upstreams: readonly UpstreamLink[], tried: readonly Upstream[], start: number): UpstreamLink | undefined {
  for (let step = 0; step < upstreams.length; step++) {
    const link = upstreams[(start + step) % upstreams.length];
    if (link !== undefined && !hasTried(tried, link.upstream)) return link;
  }
  return undefined;
}

/** Whether a query sent to `link` can be answered: some socket of it has not failed. */
function usable(link: UpstreamLink): boolean {
  return link.failedSockets.size < link.sockets.length;
}

/** Whether `link` is to be connected again now: its route went, or a socket of it failed and its backoff is over. */
function needsConnecting(link: UpstreamLink): boolean {
  return link.broken || link.failure?.due === true;
}

/** The same upstream through the same link: a device that took the link's name is another. */
function sameLink(a: { readonly upstream: Upstream; readonly via: UpstreamLinkRoute | undefined }, b: { readonly upstream: Upstream; readonly via: UpstreamLinkRoute | undefined }): boolean {
  return (
    sameUpstream(a.upstream, b.upstream) &&
    a.via?.device === b.via?.device &&
    a.via?.source === b.via?.source &&
    a.via?.ifindex === b.via?.ifindex
  );
}

/**
 * An upstream in the list and the interface its zone is taken to name (see Forwarder.#setUpstreams),
 * which a link connected through another interface is not.
 */
interface WantedUpstream {
  readonly upstream: Upstream;
  readonly via: UpstreamLinkRoute | undefined;
  readonly zoneIndex: number | undefined;
}

/** Whether `link` is `want`'s, connected through the interface `want`'s zone names. */
function connectedAsWanted(link: UpstreamLink, want: WantedUpstream): boolean {
  return sameLink(link, want) && link.zoneIndex === want.zoneIndex;
}

/**
 * What an upstream's failure streak belongs to (see Forwarder.#upstreamFailureRounds): what its
 * sockets are, not how it is named. Through a link, that link's index too (sameLink's identity):
 * a device deleted and made again under the link's name has a new index, and its sockets start a
 * streak of their own instead of going on with the old device's (a longer wait, and their first
 * failure not warned about); sockets connected again through the same device go on with theirs.
 */
function streakKey(link: { readonly upstream: Upstream; readonly via: UpstreamLinkRoute | undefined }): string {
  const { upstream, via } = link;
  return via === undefined ? upstreamKey(upstream) : `${upstreamKey(upstream)} via ${via.device} from ${via.source} (index ${via.ifindex})`;
}

/** An upstream as counters and logs show it: `169.254.0.1:53 via up0` for one reached through a link. */
function linkText(link: { readonly upstream: Upstream; readonly via: UpstreamLinkRoute | undefined }): string {
  return link.via === undefined ? upstreamText(link.upstream) : `${upstreamText(link.upstream)} via ${link.via.device} from ${link.via.source}`;
}

/**
 * What an upstream's sockets that could not be opened for want of file descriptors say to check:
 * the agent's own limit of open files (EMFILE; its 64 sockets per upstream count) or the system's
 * (ENFILE). Not the address or the link, which are not why.
 */
function outOfDescriptors(code: 'EMFILE' | 'ENFILE'): string {
  return code === 'EMFILE'
    ? `the agent is out of file descriptors (EMFILE: its limit of open files is reached; each upstream takes ${SOCKETS_PER_UPSTREAM}): raise its limit (LimitNOFILE, ulimit -n) or see what holds them in /proc/${process.pid}/fd`
    : "the agent is out of file descriptors (ENFILE: the system's limit of open files, fs.file-max, is reached): raise it or see which process holds them";
}

function positiveInteger(name: string, value: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isInteger(value) || value < 1 || value > max) throw new DnsError('option-range', `${name} must be an integer 1..${max}, got ${value}`);
  return value;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** resolv.conf's warnings, each said once until what it says changes. */
type ResolvConfWarning = 'unreadable' | 'skipped' | 'legacyIpv4' | 'indented';

class Forwarder implements DnsForwarder {
  readonly #log: Logger;
  readonly #listen: string;
  readonly #family: 4 | 6;
  readonly #port: number;
  readonly #bindAtStart: boolean;
  /** How long one upstream has a query to itself (DnsForwarderOptions.timeoutMs). */
  readonly #timeoutMs: number;
  /** How long a query waits in all (DnsForwarderOptions.queryTimeoutMs). */
  readonly #queryTimeoutMs: number;
  readonly #maxTcpConnections: number;
  readonly #maxTcpConnectionsPerClient: number;
  /** Open client TCP connections by host key, oldest first: who holds how many, and the largest holder. */
  readonly #tcpShares = new PendingShares<number | string, TcpClientConnection>();
  readonly #maxTcpQueriesPerConnection: number;
  /**
   * Most TCP connections to upstreams open at once: maxTcpConnections x maxTcpQueriesPerConnection
   * (512 by default), one per TCP query in flight, as when each query kept one connection open.
   * A query keeps one open to each upstream it asked until its time is up (#askOverTcp): up to
   * min(MAX_UPSTREAMS, queryTimeoutMs / timeoutMs) each, unbounded by this, 4,096 with 8 upstreams
   * and a short timeoutMs, past the agent's descriptors (EMFILE). At this bound, a query asking its
   * next upstream first ends (resets) its own earlier connections, oldest first, as it did before
   * earlier upstreams were kept; one that has none (asking its first) ends the one another query
   * has kept longest (#keptTcpUpstreams): else queries beginning while others held the bound each
   * opened one past it, up to 448 past 512.
   */
  readonly #maxTcpUpstreams: number;
  /**
   * The exchanges of TCP queries with upstreams they went on from (kept open for a late answer:
   * not their query's latest), oldest kept first, each ended by aborting its controller (#askOverTcp).
   */
  readonly #keptTcpUpstreams = new Set<AbortController>();
  readonly #tcpIdleMs: number;
  readonly #resolvConfPath: string | undefined;
  readonly #pending: PendingTable<PendingQuery>;
  readonly #maxPendingPerClient: number;
  /** The entries of #pending by client host key: who holds how many, and the largest holder. */
  readonly #shares = new PendingShares<number | string, PendingQuery>();
  /** Which of an upstream's sockets a query goes out of. */
  readonly #socketPick = cryptoRandomId();
  readonly #limiter: RateLimiter;
  readonly #counters: MutableCounters;
  #upstreams: readonly UpstreamLink[] = [];
  /**
   * Wanted upstreams that #upstreams lacks (they could not be connected): retried on
   * #reconnectTimer. One whose zone named no interface is too: the interface may yet come
   * (hot-plugged, or another renamed to that name), as netd's links do.
   */
  #missingUpstreams = 0;
  readonly #reachability = new UpstreamReachability();
  readonly #clock: RecoveryClock;
  /** Cancels the pending reconnect (see #scheduleReconnect). */
  #reconnectTimer: (() => void) | undefined;
  /** Cancels the pending check of the upstreams' routes (see routesChanged). */
  #routeCheckTimer: (() => void) | undefined;
  /**
   * Cancels the pending rebind of the listening UDP socket after a failure (see #scheduleRebind):
   * while it is set, only it binds that socket again.
   */
  #rebindTimer: (() => void) | undefined;
  /** Rebinds scheduled in the listening UDP socket's current failure streak (sets the backoff). */
  #rebindRound = 0;
  /** Whether the listening UDP socket has failed, and when it was last bound (see UDP_SETTLED_MS). */
  #udpFailed = false;
  /** The last bind failed for another server holding the address and port (see #bindMissing). */
  #bindInUse = false;
  #udpBoundAt = 0;
  /** Retries since every wanted upstream was last connected (sets the backoff). */
  #reconnectRound = 0;
  /**
   * Per upstream link (its streakKey), the round of the last failure of its sockets' current
   * failure streak (sets the backoff before it is connected again; see #upstreamSocketFailed).
   */
  readonly #upstreamFailureRounds = new Map<string, number>();
  /** Whether the last upstream list left out our own address (warned once per change). */
  #ignoringSelf = false;
  /**
   * Per upstream link (its linkText), TCP connections to it that could not be opened (see
   * #tcpOpenFailed): the causes said in the current episode, when the last one failed (the
   * recovery clock), and whether one opened since. Kept while the upstream stays in the list.
   */
  readonly #tcpOpenFailures = new Map<string, { readonly said: Set<string>; lastAt: number; openedSince: boolean }>();
  #upstreamRoute: UpstreamLinkRoute | undefined;
  /** Upstreams given in the options, connected in start(). */
  readonly #configured: readonly Upstream[] | undefined;
  /**
   * The upstream new queries go to first (see #firstIndex): the list's first until it fails in a
   * way that is its own, not one name's (see #preferOver). By address, not by place: upstreams
   * connected again (a socket that failed, a route back) keep it; a list changed starts again
   * from its first.
   */
  #preferred: Upstream | undefined;
  /** The upstreams in the list last asked for (see #setUpstreams), connected or not. */
  #wantedList: readonly Upstream[] = [];
  /**
   * When each upstream in the list (by upstreamKey) last answered a query with an answer (not
   * SERVFAIL, REFUSED or NOTIMP): the upstream asked first gives way only after failing for a whole
   * timeout with none (#preferOver).
   */
  readonly #lastAnswered = new Map<string, number>();
  /** This forwarder as an upstream: one naming it (however written) would be asked by itself. */
  readonly #self: Upstream;
  #udp: UdpSocket | undefined;
  #tcp: Server | undefined;
  readonly #tcpClients = new Set<TcpSocket>();
  readonly #tcpUpstreams = new Set<TcpSocket>();
  /** Sockets of upstreams dropped from the list, closed once their queries' time is up (queryTimeoutMs). */
  readonly #retired = new Set<UdpSocket>();
  /**
   * Pending queries whose socket failed while no socket of their upstream works, and queries that
   * came while none did (not sent yet, see #sendUpstream): each goes out (again) as soon as its
   * upstream is connected again (#resendAwaiting), or, at its deadline, on to the next upstream or
   * SERVFAIL (#socketFailedUnder).
   */
  readonly #awaitingReconnect = new Set<PendingQuery>();
  #watcher: ResolvConfWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** When #timer fires (Infinity when unarmed). */
  #timerAt = Number.POSITIVE_INFINITY;
  #closed: Promise<void> | undefined;
  #binding: Promise<void> | undefined;
  /** The round of binding asked for while #binding was under way, run once that ends. */
  #bindingNext: Promise<void> | undefined;
  #reloading: Promise<void> = Promise.resolve();

  constructor(options: DnsForwarderOptions) {
    this.#log = options.logger ?? createLogger('spectrum-netd-dns');
    this.#clock = options.clock ?? PROCESS_CLOCK;
    this.#listen = options.listen ?? GATEWAY_IP;
    this.#family = isIPv6(this.#listen) ? 6 : 4;
    this.#port = positiveInteger('port', options.port ?? DEFAULTS.port, 65_535);
    if (!isIPv4(this.#listen) && !isIPv6(this.#listen)) {
      throw new DnsError('listen-address', `listen address ${JSON.stringify(this.#listen.slice(0, 80))} is not an IP address`);
    }
    this.#self = parseUpstream(endpointText(this.#listen, this.#port));
    this.#bindAtStart = options.bindAtStart ?? true;
    this.#timeoutMs = positiveInteger('timeoutMs', options.timeoutMs ?? DEFAULTS.timeoutMs, MAX_TIMEOUT_MS);
    // At least one upstream's time: a query given less would end before its first upstream's.
    this.#queryTimeoutMs = positiveInteger('queryTimeoutMs', options.queryTimeoutMs ?? Math.max(DEFAULTS.queryTimeoutMs, this.#timeoutMs), MAX_TIMEOUT_MS);
    if (this.#queryTimeoutMs < this.#timeoutMs) {
      throw new DnsError('option-range', `queryTimeoutMs must be at least timeoutMs (${this.#timeoutMs}), got ${this.#queryTimeoutMs}`);
    }
    this.#maxTcpConnections = positiveInteger('maxTcpConnections', options.maxTcpConnections ?? DEFAULTS.maxTcpConnections, 65_535);
    this.#maxTcpConnectionsPerClient = positiveInteger(
      'maxTcpConnectionsPerClient',
      options.maxTcpConnectionsPerClient ?? DEFAULTS.maxTcpConnectionsPerClient,
      65_535,
    );
    this.#maxTcpQueriesPerConnection = positiveInteger(
      'maxTcpQueriesPerConnection',
      options.maxTcpQueriesPerConnection ?? DEFAULTS.maxTcpQueriesPerConnection,
      1024,
    );
    this.#maxTcpUpstreams = this.#maxTcpConnections * this.#maxTcpQueriesPerConnection;
    this.#tcpIdleMs = positiveInteger('tcpIdleMs', options.tcpIdleMs ?? DEFAULTS.tcpIdleMs, 3_600_000);
    const maxPending = positiveInteger('maxPending', options.maxPending ?? DEFAULTS.maxPending, ID_SPACE);
    this.#pending = new PendingTable(maxPending, cryptoRandomId());
    this.#maxPendingPerClient = positiveInteger('maxPendingPerClient', options.maxPendingPerClient ?? DEFAULTS.maxPendingPerClient, ID_SPACE);
    const rate: RateLimit = options.ratePerClient ?? DEFAULTS.ratePerClient;
    try {
      this.#limiter = new RateLimiter(rate, positiveInteger('maxRateClients', options.maxRateClients ?? DEFAULTS.maxRateClients));
    } catch (error) {
      if (error instanceof DnsError) throw error;
      throw new DnsError('option-range', `ratePerClient: ${errorText(error)}`);
    }
    this.#counters = {
      listening: false,
      bindAttempts: 0,
      bindFailures: 0,
      lastBindError: null,
      upstreams: [],
      unreachableUpstreams: [],
      failingUpstreams: [],
      resolvConfReloads: 0,
      queries: 0,
      tcpQueries: 0,
      answered: 0,
      lateAnswers: 0,
      truncated: 0,
      malformed: 0,
      formErr: 0,
      notImp: 0,
      refused: 0,
      rateLimited: 0,
      overloaded: 0,
      evicted: 0,
      noUpstream: 0,
      upstreamTimeouts: 0,
      upstreamClosed: 0,
      upstreamErrors: 0,
      retransmits: 0,
      failed: 0,
      upstreamRejected: 0,
      sendErrors: 0,
      tcpConnections: 0,
      tcpRejected: 0,
      tcpEvicted: 0,
      tcpIdleClosed: 0,
      pending: 0,
    };
    // The same server given twice (or written two ways) is one upstream, as in resolv.conf: else
    // each would take its own sockets, show twice in status and count twice toward MAX_UPSTREAMS.
    this.#configured = options.upstreams === undefined ? undefined : withoutDuplicates(options.upstreams.map(parseConfiguredUpstream));
    if (this.#configured === undefined) {
      this.#resolvConfPath = options.resolvConfPath ?? DEFAULTS.resolvConfPath;
    }
  }

  async start(): Promise<void> {
    loadUdpAddon();
    if (this.#configured !== undefined) await this.#setUpstreams(this.#configured, 'options');
    const path = this.#resolvConfPath;
    if (path !== undefined) {
      try {
        this.#watcher = new ResolvConfWatcher(
          path,
          () => void this.#queueReload(path),
          (error) => this.#log.warn({ path, err: error.message }, 'cannot watch for changes to resolv.conf'),
        );
      } catch (error) {
        this.#log.warn({ path, err: errorText(error) }, 'cannot watch the folder of resolv.conf; changes will not be followed');
      }
      await this.#queueReload(path);
    }
    if (this.#bindAtStart) await this.rebind();
  }

  listening(): boolean {
    return this.#udp !== undefined && this.#tcp !== undefined;
  }

  counters(): DnsForwarderCounters {
    return {
      ...this.#counters,
      listening: this.listening(),
      pending: this.#pending.size,
      upstreams: this.#upstreams.map(linkText),
      unreachableUpstreams: this.#reachability.list(),
      failingUpstreams: this.#upstreams.filter((link) => link.failedSockets.size > 0).map((link) => `${linkText(link)} (${link.failedSockets.size} of ${link.sockets.length} sockets failed)`),
    };
  }

  rebind(): Promise<void> {
    if (this.#closed !== undefined) return Promise.reject(new DnsError('closed', 'the DNS forwarder is closed'));
    const running = this.#binding;
    if (running !== undefined) {
      // The round under way may be past a step that would succeed now (a bind that failed before
      // the listen address came): joining it would leave that unbound. Everyone asking meanwhile
      // gets one more round, after it, which binds what is missing then (but a UDP socket that
      // failed meanwhile: that waits out its backoff, see #bindMissing).
      this.#bindingNext ??= running
        .catch(() => undefined)
        .then(() => {
          this.#bindingNext = undefined;
          return this.#closed === undefined ? this.rebind() : undefined;
        });
      return this.#bindingNext;
    }
    this.#binding = Promise.all([this.#bindMissing(), this.#connectMissingUpstreams()])
      .then(() => undefined)
      .finally(() => (this.#binding = undefined));
    return this.#binding;
  }

  setUpstreamLink(route: UpstreamLinkRoute | null): Promise<void> {
    const next = route ?? undefined;
    const current = this.#upstreamRoute;
    if (next?.device === current?.device && next?.ifindex === current?.ifindex && next?.source === current?.source) return Promise.resolve();
    this.#upstreamRoute = next;
    // In line with resolv.conf reloads, so that the last change of either wins.
    this.#reloading = this.#reloading.then(() => {
      const wanted = this.#wantedUpstreams;
      return wanted === undefined || this.#closed !== undefined ? undefined : this.#setUpstreams(wanted.candidates, wanted.source);
    });
    return this.#reloading;
  }

  routesChanged(): void {
    if (this.#closed !== undefined || this.#routeCheckTimer !== undefined) return;
    this.#routeCheckTimer = this.#clock.after(ROUTE_CHECK_DELAY_MS, () => {
      this.#routeCheckTimer = undefined;
      this.#reloading = this.#reloading.then(() => this.#checkRoutes());
    });
  }

  /** Each upstream in use without a route from its address now is connected again (and, failing, listed unreachable). */
  async #checkRoutes(): Promise<void> {
    if (this.#closed !== undefined) return;
    let lost = false;
    for (const link of this.#upstreams) {
      if (needsConnecting(link) || routed(link)) continue;
      link.broken = true;
      lost = true;
    }
    if (lost) await this.#connectMissingUpstreams();
  }

  /**
   * Upstreams that could not be connected (no route to them yet), or whose route went, are tried
   * again; and those whose socket failed, once their backoff is due.
   */
  async #connectMissingUpstreams(): Promise<void> {
    const wanted = this.#wantedUpstreams;
    if (wanted === undefined || this.#closed !== undefined) return;
    if (this.#missingUpstreams === 0 && !this.#upstreams.some(needsConnecting)) return;
    await this.#setUpstreams(wanted.candidates, wanted.source);
  }

  /**
   * While some upstream is missing, try again after a backoff (never more often than every
   * RECONNECT_FIRST_MS, at least every RECONNECT_MAX_MS): its route may appear with no event we
   * see (DHCP on the uplink). In line with reloads, like them.
   */
  #scheduleReconnect(): void {
    const needed = this.#missingUpstreams > 0 || this.#upstreams.some((link) => link.broken);
    if (!needed) {
      this.#reconnectTimer?.();
      this.#reconnectTimer = undefined;
      this.#reconnectRound = 0;
      return;
    }
    if (this.#reconnectTimer !== undefined || this.#closed !== undefined) return;
    const delay = reconnectDelayMs(this.#reconnectRound);
    this.#reconnectRound += 1;
    this.#reconnectTimer = this.#clock.after(delay, () => {
      this.#reconnectTimer = undefined;
      this.#reloading = this.#reloading.then(() => this.#connectMissingUpstreams());
    });
  }

  /**
   * A send to `link` failed with -`result`; a lost route or source address gets the link connected
   * again, on the reconnect rounds and at the next link change, even while a failure of its
   * sockets waits out its backoff: the new sockets then go on with that failure streak.
   */
  #sendFailed(link: UpstreamLink, result: number): void {
    this.#counters.sendErrors += 1;
    if (link.broken || !ROUTE_ERRNOS.has(-result)) return;
    link.broken = true;
    this.#scheduleReconnect();
  }

  /**
   * Whether the listening UDP socket is in a failure streak: it failed, and has not stayed bound
   * UDP_SETTLED_MS since. Binding is then tried again with backoff until it succeeds, and said at
   * info (the failure that began the streak was warned about).
   */
  #udpFailing(): boolean {
    return this.#udpFailed && (this.#udp === undefined || this.#clock.now() - this.#udpBoundAt < UDP_SETTLED_MS);
  }

  async #bindMissing(): Promise<void> {
    if (this.listening()) return;
    // A UDP socket that failed waits out its backoff whoever asks (the agent at each change of
    // links): only the rebind timer binds it again, so one that fails at once is not bound again
    // at every link event of a storm. Nor does a link change cut the wait short: the forwarder
    // cannot tell whether a change cures what failed (a socket the kernel destroyed or that
    // failed its reads is not cured by a link appearing), the agent's link events come in storms
    // just when links flap, and the wait is RECONNECT_MAX_MS at most.
    const udpWaits = this.#udp === undefined && this.#rebindTimer !== undefined;
    if (udpWaits && this.#tcp !== undefined) return;
    this.#counters.bindAttempts += 1;
    const where = endpointText(this.#listen, this.#port);
    try {
      if (this.#udp === undefined && !udpWaits) {
        this.#udp = this.#bindUdp();
        this.#udpBoundAt = this.#clock.now();
      }
      if (this.#tcp === undefined) this.#tcp = await this.#bindTcp();
    } catch (error) {
      if (this.#closed !== undefined) return;
      this.#counters.bindFailures += 1;
      const code = (error as NodeJS.ErrnoException).code;
      const hint =
        code === 'EADDRNOTAVAIL'
          ? `${this.#listen} is not on any link yet; the forwarder listens once a provider link carries it`
          : code === 'EADDRINUSE'
            ? `another DNS server already listens on ${where}`
            : code === 'EACCES' || code === 'EPERM'
              ? bindPrivilegeHint(this.#port)
              : 'check the listen address and port';
      const failure = `${code ?? 'error'}: ${errorText(error)} (${hint})`;
      const failing = this.#udpFailing();
      // Another server on the address and port (an agent started while the last one still runs,
      // one the operator stops once warned) may go with no link changing: bound again with the
      // same backoff, up to every 2 s, for as long as it stays (a bind a try, no line after the first).
      const inUse = code === 'EADDRINUSE';
      const streak = failing || (inUse && this.#bindInUse);
      if (inUse && !streak) this.#rebindRound = 0;
      this.#bindInUse = inUse;
      // In a failure streak, the same failure again is not said again (as an upstream that stays unreachable).
      const repeated = streak && failure === this.#counters.lastBindError;
      this.#counters.lastBindError = failure;
      // Outside one, rebind() is called again when links change (the listen address may come with one).
      const retryMs = failing || inUse ? this.#scheduleRebind() : undefined;
      if (repeated) return;
      const retry = retryMs === undefined ? '' : `; trying again in ${retryMs / 1000} s`;
      this.#log[streak ? 'info' : 'warn']({ listen: where, err: errorText(error) }, `DNS forwarder not listening: ${hint}${retry}`);
      return;
    }
    // The UDP socket may have failed while the TCP listener was being bound (or we were closed):
    // #clientSocketFailed said so and binds it again; nothing says listening meanwhile.
    if (!this.listening() || this.#closed !== undefined) return;
    this.#bindInUse = false;
    this.#counters.lastBindError = null;
    this.#log.info({ listen: where }, 'DNS forwarder listening');
  }

  #bindUdp(): UdpSocket {
    const socket = UdpSocket.bind(this.#family, this.#listen, this.#port, SOCKET_BUFFER_BYTES);
    try {
      // Errors the kernel queues for a client (its link gone, say): counted, not logged, so a flood cannot fill the log.
      socket.receive(
        this.#onClientDatagram,
        () => (this.#counters.sendErrors += 1),
        (error) => this.#clientSocketFailed(socket, error),
      );
    } catch (error) {
      socket.close();
      throw error;
    }
    return socket;
  }

  /**
   * The listening UDP socket cannot be read any more: as a bind that failed, said (log,
   * lastBindError) and bound again, after RECONNECT_FIRST_MS, then with backoff while it keeps
   * failing (a socket that fails again at once is not rebound in a loop), warned about once per
   * failure streak (see UDP_SETTLED_MS). While closing: closed, nothing more.
   */
  #clientSocketFailed(socket: UdpSocket, error: UdpError): void {
    socket.close();
    if (this.#udp !== socket) return;
    this.#udp = undefined;
    if (this.#closed !== undefined) return;
    const streak = this.#udpFailed && this.#clock.now() - this.#udpBoundAt < UDP_SETTLED_MS;
    this.#udpFailed = true;
    if (!streak) this.#rebindRound = 0;
    this.#counters.bindFailures += 1;
    const retryMs = this.#scheduleRebind();
    const when = retryMs === undefined ? 'shortly' : `in ${retryMs / 1000} s`;
    this.#counters.lastBindError = `${error.code}: ${error.message} (bound again ${when})`;
    this.#log[streak ? 'info' : 'warn'](
      { listen: endpointText(this.#listen, this.#port), err: error.message },
      `DNS forwarder not listening on UDP: its socket failed; binding it again ${when}`,
    );
  }

  /**
   * rebind() after the backoff of the current failure streak (RECONNECT_FIRST_MS, doubling up to
   * RECONNECT_MAX_MS, as upstream reconnects); the wait, or undefined where one is already due.
   */
  #scheduleRebind(): number | undefined {
    if (this.#rebindTimer !== undefined || this.#closed !== undefined) return undefined;
    const delay = reconnectDelayMs(this.#rebindRound);
    this.#rebindRound += 1;
    this.#rebindTimer = this.#clock.after(delay, () => {
      this.#rebindTimer = undefined;
      if (this.#closed === undefined) this.rebind().catch(() => undefined);
    });
    return delay;
  }

  /**
   * A socket of `link` (`key` as logs say it) cannot be read any more: the link is connected again
   * after the backoff of its failure streak (streakKey's), as the listening UDP socket is bound
   * again: RECONNECT_FIRST_MS after a socket that had stayed connected UDP_SETTLED_MS, else the
   * next wait, doubling up to RECONNECT_MAX_MS; warned about once per streak, the rest at info. A
   * link change does not cut the wait short (the forwarder cannot tell whether it cures what
   * failed, and link events come in storms just when links flap); a lost route (#sendFailed) still does.
   */
  #upstreamSocketFailed(link: UpstreamLink, socket: UdpSocket, key: string, error: UdpError): void {
    // A send that found the socket broken was counted by #sendFailed, as it returned: one
    // failure, counted once.
    if (error.foundBy !== 'send') this.#counters.sendErrors += 1;
    link.failedSockets.add(socket);
    // Only a link in use is connected again (a retired one's sockets are closed once its queries
    // time out), and once: its other sockets failing meanwhile change nothing.
    if (link.broken || link.failure !== undefined || this.#closed !== undefined || !this.#upstreams.includes(link)) return;
    const last = this.#upstreamFailureRounds.get(streakKey(link));
    const streak = last !== undefined && this.#clock.now() - link.connectedAt < UDP_SETTLED_MS;
    const round = streak ? last + 1 : 0;
    this.#upstreamFailureRounds.set(streakKey(link), round);
    const delay = reconnectDelayMs(round);
    const failure: { due: boolean; cancel: () => void } = { due: false, cancel: () => undefined };
    link.failure = failure;
    failure.cancel = this.#clock.after(delay, () => {
      failure.due = true;
      if (this.#closed === undefined) this.#reloading = this.#reloading.then(() => this.#connectMissingUpstreams());
    });
    this.#log[streak ? 'info' : 'warn']({ upstream: key, err: error.message }, `a socket to the upstream resolver failed: connecting to it again in ${delay / 1000} s`);
  }

  #bindTcp(): Promise<Server> {
    return new Promise((resolve, reject) => {
      // Half-open: a client may send its queries and shut down its sending side at once (`nc -N`,
      // shutdown(SHUT_WR)); it still reads the answers, so we end ours only once they are sent.
      // No server.maxConnections: Node would refuse a newcomer at the cap before #onTcpClient
      // could close a connection of the client holding the most to make room for it.
      const server = createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: false }, (socket) => this.#onTcpClient(socket));
      const fail = (error: Error): void => {
        server.close();
        reject(error);
      };
      server.once('error', fail);
      server.listen({ host: this.#listen, port: this.#port, exclusive: true }, () => {
        server.off('error', fail);
        server.on('error', (error) => this.#log.warn({ err: error.message }, 'TCP listener error'));
        resolve(server);
      });
    });
  }

  #connectUpstream(upstream: Upstream, via: UpstreamLinkRoute | undefined): UpstreamLink | undefined {
    const key = linkText({ upstream, via });
    // Read as each connect below reads it (the interface of that name, or index, now).
    const zoneIndex = zoneIndexOf(upstream.address);
    const sockets: UdpSocket[] = [];
    try {
      for (let i = 0; i < SOCKETS_PER_UPSTREAM; i++) {
        const socket = UdpSocket.bind(upstream.family, via?.source ?? '', 0, SOCKET_BUFFER_BYTES);
        sockets.push(socket);
        // Bound to the link, the route lookup skips the local route of our own gateway address.
        if (via !== undefined) socket.bindToLink({ ifname: via.device, ifindex: via.ifindex });
        // A failed connect (no route yet: ENETUNREACH) throws; rebind() tries again later.
        socket.connect(upstream.address, upstream.port);
      }
    } catch (error) {
      for (const socket of sockets) socket.close();
      const code = error instanceof UdpError ? error.code : 'error';
      if (error instanceof UdpError && error.kind === 'zone') {
        if (this.#reachability.failed(key, code) === 'lost') {
          this.#log.warn(
            { upstream: key, err: errorText(error) },
            `cannot use upstream resolver: its zone names no interface of this VM (no interface has that name, nor that index): check the address; trying again at least every ${RECONNECT_MAX_MS / 1000} s (an interface of that name may yet come), its queries going to the other upstreams or answered SERVFAIL meanwhile`,
          );
        }
        return undefined;
      }
      if (this.#reachability.failed(key, code) === 'lost') {
        const hint =
          code === 'ENETUNREACH' || code === 'EHOSTUNREACH'
            ? via === undefined
              ? 'no route to it: check that the uplink is up and has its address and routes (DHCP on the uplink may not be done yet)'
              : `no route to it: check that link ${via.device} is up`
            : code === 'EADDRNOTAVAIL' || code === 'EINVAL'
              ? `our address ${via?.source ?? 'towards it'} is not configured: check the ${via === undefined ? 'uplink' : `link ${via.device}`}`
              : code === 'ENODEV' && via !== undefined
                ? `link ${via.device} (index ${via.ifindex}) is gone: its sockets bind no other device of that name; waiting for the link to the upstream provider to be configured again`
                : code === 'ENOPROTOOPT'
                  ? NO_BIND_TO_INDEX
                  : code === 'EMFILE' || code === 'ENFILE'
                    ? outOfDescriptors(code)
                    : 'check the address and the link towards it';
        this.#log.warn(
          { upstream: key, err: errorText(error) },
          `cannot use upstream resolver: ${hint}; trying again at least every ${RECONNECT_MAX_MS / 1000} s, its queries going to the other upstreams or answered SERVFAIL meanwhile`,
        );
      }
      return undefined;
    }
    if (this.#reachability.reached(key) === 'regained') this.#log.info({ upstream: key }, 'upstream resolver reachable again');
    const rtt = new RttEstimator({ initialMs: Math.min(INITIAL_RETRANSMIT_MS, this.#timeoutMs), minMs: Math.min(MIN_RETRANSMIT_MS, this.#timeoutMs), maxMs: this.#timeoutMs });
    const link: UpstreamLink = {
      upstream,
      key: upstreamKey(upstream),
      via,
      zoneIndex,
      sockets,
      rtt,
      broken: false,
      connectedAt: this.#clock.now(),
      failure: undefined,
      failedSockets: new Set(),
    };
    // Errors here are ICMP unreachables (ECONNREFUSED) and the like: the timeout moves on.
    const onError = (): void => void (this.#counters.sendErrors += 1);
    try {
      for (const socket of sockets) {
        socket.receive(
          (message) => this.#onUpstreamDatagram(link, socket, message),
          onError,
          (error) => this.#upstreamSocketFailed(link, socket, key, error),
        );
      }
    } catch (error) {
      for (const socket of sockets) socket.close();
      this.#log.warn({ upstream: key, err: errorText(error) }, 'cannot read the sockets to the upstream resolver; trying again');
      this.#reachability.failed(key, error instanceof UdpError ? error.code : 'error');
      return undefined;
    }
    return link;
  }

  /** Reloads run one after another, so an older file never wins over a newer one. */
  #queueReload(path: string): Promise<void> {
    this.#reloading = this.#reloading.then(() => this.#reloadResolvConf(path));
    return this.#reloading;
  }

  async #reloadResolvConf(path: string): Promise<void> {
    const conf = await readResolvConf(path);
    if (this.#closed !== undefined) return;
    this.#counters.resolvConfReloads += 1;
    // Each said once until what it says changes: a DHCP client rewrites the file at every
    // renewal, with the same lines, and the same warning each time buried the log.
    this.#sayOnChange('unreadable', conf.error === undefined ? undefined : `${path}\0${conf.error}`, () =>
      this.#log.warn({ path, err: conf.error }, 'cannot read resolv.conf; no upstream resolvers'),
    );
    this.#sayOnChange('skipped', conf.skipped.length === 0 ? undefined : `${path}\0${conf.skipped.join('\0')}`, () =>
      this.#log.warn({ path, skipped: conf.skipped }, 'resolv.conf has nameserver lines that are not IP addresses'),
    );
    const read = conf.legacyIpv4.map(({ written, address }) => `${written} as ${address}`);
    this.#sayOnChange('legacyIpv4', read.length === 0 ? undefined : `${path}\0${read.join('\0')}`, () =>
      this.#log.warn(
        { path, nameservers: read },
        `resolv.conf writes IPv4 nameservers in inet_aton's older forms, read as glibc's resolver reads them: ${read.join(', ')} ` +
          '(a part that begins with 0 is octal, 0x hex, and the last part fills the bytes left): write the address meant in dotted decimal',
      ),
    );
    this.#sayOnChange('indented', conf.indented.length === 0 ? undefined : `${path}\0${conf.indented.join('\0')}`, () =>
      this.#log.warn(
        { path, indented: conf.indented },
        "resolv.conf has nameserver lines with blanks before the keyword: not read, as glibc's resolver reads none (a keyword must start its line): remove the blanks to use them",
      ),
    );
    this.#sayWithoutZone(path, conf.withoutZone, conf.upstreams.length === 0);
    await this.#setUpstreams(conf.upstreams, path);
  }

  /** What each of resolv.conf's warnings last said (see #sayOnChange); none while it has nothing to say. */
  readonly #resolvConfSaid = new Map<ResolvConfWarning, string>();

  /**
   * Calls `say` where warning `kind` has something to say (`what`, its content) that differs
   * from what it said last; a reload with nothing to say for it forgets, so that it is said
   * again should it come back.
   */
  #sayOnChange(kind: ResolvConfWarning, what: string | undefined, say: () => void): void {
    if (what === undefined) {
      this.#resolvConfSaid.delete(kind);
      return;
    }
    if (this.#resolvConfSaid.get(kind) === what) return;
    this.#resolvConfSaid.set(kind, what);
    say();
  }

  /**
   * What resolv.conf's link-local nameservers without a zone were last said to be (see
   * #sayWithoutZone): said again only once that changes.
   */
  #withoutZoneSaid = '';

  /**
   * Say once that resolv.conf's link-local nameservers `withoutZone` (fe80::1) are not used, and
   * what to write instead: each with its link's zone. They are left out, not tried again: the
   * kernel refuses every connect to one (EINVAL: no link), as glibc's resolver finds; tried on
   * the reconnect rounds, one was "not reached" for ever, its warning saying to check an address
   * of ours. One written with a zone that can name no interface (fe80::1%a/b, which glibc reads
   * as none) is said by what is wrong with that zone, not as one without. Said again when the
   * list changes, or whether they are all there is (`only`: then every query is answered
   * SERVFAIL, which is said plainly).
   */
  #sayWithoutZone(path: string, withoutZone: readonly ZonelessNameserver[], only: boolean): void {
    // As written: the zone's text is the file's, shown quoted where it holds what a terminal acts on.
    const given = withoutZone.map(({ upstream, zone }) => (zone === undefined ? givenAs(upstream) : shownText(givenAs({ ...upstream, address: `${upstream.address}%${zone.written}` }), 80)));
    const said = given.length === 0 ? '' : `${given.join(' ')}${only ? ' (only)' : ''}`;
    if (said === this.#withoutZoneSaid) return;
    this.#withoutZoneSaid = said;
    if (said === '') return;
    const examples = [...new Set(withoutZone.map(({ upstream }) => `nameserver ${zonedExample(upstream)}`))];
    const described = withoutZone.map(({ zone }, i) => (zone === undefined ? given[i] : `${given[i]}: ${zone.problem}`));
    const zoned = withoutZone.filter(({ zone }) => zone !== undefined).length;
    const which =
      zoned === 0
        ? given.length === 1
          ? `a link-local nameserver without a zone (${described[0]})`
          : `link-local nameservers without a zone (${described.join(', ')})`
        : zoned === given.length
          ? given.length === 1
            ? `a link-local nameserver whose zone can name no interface (${described[0]})`
            : `link-local nameservers whose zones can name no interface (${described.join('; ')})`
          : `link-local nameservers without a zone that can name an interface (${described.join('; ')})`;
    const outcome = only ? ', and no other: no upstream resolvers, every query answered SERVFAIL' : ': left out, the other nameservers used';
    const reading = zoned === 0 ? '' : "glibc's resolver reads such a zone as naming no link; ";
    this.#log.warn(
      { path, nameservers: given },
      `resolv.conf names ${which}${outcome} (${reading}Linux sends to a link-local address, fe80::/10, only through the link its zone names, and refuses one without; glibc's resolver fails on it too): ` +
        `write ${given.length === 1 ? 'it' : 'each'} with its link's name or index as its zone (${examples.join(', ')})`,
    );
  }

  #wantedUpstreams: { readonly candidates: readonly Upstream[]; readonly source: string } | undefined;

  async #setUpstreams(candidates: readonly Upstream[], source: string): Promise<void> {
    this.#wantedUpstreams = { candidates, source };
    // A link-local upstream given by its link's name and again by its index is one server: the
    // first kept, as for any duplicate. By the interfaces of now: a zone naming none yet counts
    // on its own until it does (this runs again at each reconnect round while it is missing).
    // One whose sockets are connected, and whose zone names no interface now (renamed away),
    // still reaches the interface it was connected through: that one it names. One whose zone
    // names another interface now (another took the name) is connected again through that one:
    // compared by the old one, it could drop the upstream given by the new one's index, and
    // ask the old one in its place.
    const connected = (upstream: Upstream): number | undefined =>
      this.#upstreams.find((link) => link.via === undefined && !needsConnecting(link) && sameUpstream(link.upstream, upstream))?.zoneIndex;
    const zoneIndexes = new Map<Upstream, number | undefined>();
    const zoneIndex = (upstream: Upstream): number | undefined => {
      if (!zoneIndexes.has(upstream)) zoneIndexes.set(upstream, upstream.address.includes('%') ? (zoneIndexOf(upstream.address) ?? connected(upstream)) : undefined);
      return zoneIndexes.get(upstream);
    };
    // Forwarding to ourselves would loop every query until the pending table fills, unless our
    // address is also the upstream provider's and a link to it is known (a chained provider).
    // The first MAX_UPSTREAMS of the others: neither ourselves nor a duplicate takes a place.
    const self = this.#self;
    const route = this.#upstreamRoute;
    const wanted: WantedUpstream[] = [];
    let ignoringSelf = false;
    for (const upstream of distinctUpstreams(candidates, zoneIndex)) {
      if (wanted.length === MAX_UPSTREAMS) break;
      const itself = sameUpstream(upstream, self);
      if (itself && (route === undefined || upstream.family !== 4)) ignoringSelf = true;
      else wanted.push({ upstream, via: itself ? route : undefined, zoneIndex: zoneIndex(upstream) });
    }
    if (ignoringSelf && !this.#ignoringSelf) {
      this.#log.warn({ source }, `ignoring ${upstreamText(self)} as an upstream: that is this forwarder (and no link to an upstream provider is known)`);
    }
    this.#ignoringSelf = ignoringSelf;
    // The upstream asked first is kept while the list is the same (upstreams connected again, a
    // resolv.conf rewritten with the same servers): a new list is the operator's order.
    const list = wanted.map((want) => want.upstream);
    const sameList = list.length === this.#wantedList.length && list.every((upstream, i) => {
      const before = this.#wantedList[i];
      return before !== undefined && sameUpstream(upstream, before);
    });
    if (!sameList) this.#preferred = undefined;
    this.#wantedList = list;
    const listKeys = new Set(list.map(upstreamKey));
    for (const key of [...this.#lastAnswered.keys()]) if (!listKeys.has(key)) this.#lastAnswered.delete(key);
    const wantedKeys = wanted.map(linkText);
    this.#reachability.retain(wantedKeys);
    for (const key of [...this.#tcpOpenFailures.keys()]) if (!wantedKeys.includes(key)) this.#tcpOpenFailures.delete(key);
    // A link no longer wanted ends its streak: by its streakKey, so a device made again under the
    // link's name (another index) does not inherit the old one's.
    const wantedStreaks = wanted.map(streakKey);
    for (const key of [...this.#upstreamFailureRounds.keys()]) if (!wantedStreaks.includes(key)) this.#upstreamFailureRounds.delete(key);
    const old = this.#upstreams;
    const changed =
      wanted.length !== old.length || old.some(needsConnecting) || wanted.some((want, i) => old[i] === undefined || !connectedAsWanted(old[i], want));
    if (changed) this.#switchUpstreams(old, wanted, source);
    else this.#missingUpstreams = 0;
    if (this.#closed === undefined) this.#scheduleReconnect();
  }

  /** Connect what `wanted` lacks and switch over; what failed to connect is counted in #missingUpstreams. */
  #switchUpstreams(old: readonly UpstreamLink[], wanted: readonly WantedUpstream[], source: string): void {
    // Keep the links of upstreams still listed (and still routed); connect new ones before switching over.
    const links = wanted.map(
      (want) => old.find((link) => !needsConnecting(link) && connectedAsWanted(link, want)) ?? this.#connectUpstream(want.upstream, want.via),
    );
    const kept = links.filter((link): link is UpstreamLink => link !== undefined);
    if (this.#closed !== undefined) {
      for (const link of kept) if (!old.includes(link)) for (const socket of link.sockets) socket.close();
      return;
    }
    this.#missingUpstreams = wanted.length - kept.length;
    // A retry that connected nothing new leaves the list as it was: nothing to switch or log.
    if (kept.length === old.length && kept.every((link, i) => link === old[i])) return;
    this.#upstreams = kept;
    for (const link of old) {
      if (kept.includes(link)) continue;
      link.failure?.cancel();
      // Replaced (a lost route, say) after holding that long without a failure: its streak is over.
      if (link.failure === undefined && this.#clock.now() - link.connectedAt >= UDP_SETTLED_MS) this.#upstreamFailureRounds.delete(streakKey(link));
      for (const socket of link.sockets) {
        this.#retired.add(socket);
        setTimeout(() => {
          if (this.#retired.delete(socket)) socket.close();
        }, this.#queryTimeoutMs + 100).unref();
      }
    }
    this.#resendAwaiting(wanted);
    const level = kept.length === 0 ? 'warn' : 'info';
    this.#log[level]({ source, upstreams: kept.map(linkText) }, kept.length === 0 ? 'no upstream resolvers: answering SERVFAIL' : 'upstream resolvers');
  }

  // ---- UDP ----

  // A property, not a method: the socket calls it for every datagram (no bound copy per call).
  readonly #onClientDatagram = (message: Buffer, remote: UdpPeer): void => {
    this.#counters.queries += 1;
    const clientKey = remote.hostKey();
    const now = performance.now();
    if (!this.#limiter.allow(clientKey, now)) {
      this.#counters.rateLimited += 1;
      return;
    }
    const verdict = inspectQuery(message);
    if (verdict.kind === 'drop') {
      this.#counters.malformed += 1;
      return;
    }
    if (verdict.kind === 'answer') {
      this.#answerUdp(message, verdict.questionEnd, verdict.rcode, remote);
      return;
    }
    const upstreamCount = this.#upstreams.length;
    if (upstreamCount === 0) {
      this.#counters.noUpstream += 1;
      this.#answerUdp(message, verdict.questionEnd, RCODE.servFail, remote);
      return;
    }
    const shares = this.#shares;
    const place = admission(shares.countOf(clientKey), shares.clients, this.#pending.size, this.#pending.capacity, this.#maxPendingPerClient);
    if (place === 'refuse') {
      this.#counters.overloaded += 1;
      this.#answerUdp(message, verdict.questionEnd, RCODE.servFail, remote);
      return;
    }
    // Where it goes is set below (#nextUpstream, which finds one for a new query while there are upstreams).
    const firstIndex = this.#firstIndex();
    const first = this.#upstreams[firstIndex];
    if (first === undefined) return;
    // The datagram is a view into the socket's arena: the pending query keeps a copy, of the
    // message alone (see queryMessage).
    const query = Buffer.from(queryMessage(message));
    const entry: PendingQuery = {
      client: remote.copy(),
      room: udpRoomOf(query, verdict.questionEnd),
      share: undefined,
      clientId: readId(query),
      message: query,
      question: query.subarray(HEADER_LENGTH, verdict.questionEnd),
      questionEnd: verdict.questionEnd,
      link: first,
      socket: undefined,
      tried: [],
      passed: undefined,
      failedFirst: undefined,
      id: 0,
      sentAt: 0,
      transmissions: 0,
      upstreamUntil: 0,
      queryUntil: now + this.#queryTimeoutMs,
      timedOut: false,
      earlier: undefined,
      parked: false,
      held: undefined,
    };
    const index = this.#nextUpstream(entry, firstIndex);
    const link = index === undefined ? undefined : this.#upstreams[index];
    if (link === undefined || index === undefined) return;
    entry.link = link;
    if (place === 'evict') this.#evictOldestOfLargest();
    if (!this.#sendUpstream(entry)) {
      this.#counters.overloaded += 1;
      this.#answerUdp(message, verdict.questionEnd, RCODE.servFail, remote);
      return;
    }
    entry.share = shares.add(clientKey, entry);
  };

  /** A query leaves the pending table for good (answered, given up on, or evicted). */
  #settled(entry: PendingQuery): void {
    if (this.#pending.peek(entry.id) === entry) this.#pending.take(entry.id);
    if (entry.share !== undefined) this.#shares.remove(entry.share);
    this.#awaitingReconnect.delete(entry);
  }

  /** Free a place of the full table for a client below its fair share (see fair-share.ts). */
  #evictOldestOfLargest(): void {
    const entry = this.#shares.oldestOfLargest()?.value;
    if (entry === undefined) return;
    this.#settled(entry);
    this.#counters.evicted += 1;
    writeId(entry.message, entry.clientId);
    this.#answerUdp(entry.message, entry.questionEnd, RCODE.servFail, entry.client);
  }

  /**
   * Send the query to its upstream (`entry.link`), which has timeoutMs of it to itself: a new query
   * takes a fresh id, its place in the table (false when the table is full); one going on to
   * another upstream keeps both.
   */
  #sendUpstream(entry: PendingQuery): boolean {
    const now = performance.now();
    const upstreamUntil = Math.min(now + this.#timeoutMs, entry.queryUntil);
    const resendAt = Math.min(now + entry.link.rtt.timeoutMs(), upstreamUntil);
    if (this.#pending.peek(entry.id) === entry) this.#pending.reschedule(entry.id, resendAt);
    else {
      const id = this.#pending.insert(entry, resendAt);
      if (id === undefined) return false;
      entry.id = id;
      writeId(entry.message, id);
    }
    const id = entry.id;
    entry.sentAt = now;
    entry.transmissions = 1;
    entry.upstreamUntil = upstreamUntil;
    entry.timedOut = false;
    if (!hasTried(entry.tried, entry.link.upstream)) entry.tried.push(entry.link.upstream);
    if (!usable(entry.link)) {
      // No socket of its upstream works (all failed, the upstream to be connected again after its
      // backoff; #nextUpstream found no other upstream to try either): nothing reads them, so a query
      // sent out of one could not be answered and would go out again only at its resend. It waits
      // for the upstream to be connected again (#resendAwaiting) and goes out then, within its
      // time; at its deadline, on to the next upstream or SERVFAIL (#socketFailedUnder).
      entry.socket = undefined;
      entry.transmissions = 0;
      this.#awaitingReconnect.add(entry);
      this.#pending.reschedule(id, entry.upstreamUntil);
      this.#armTimer();
      return true;
    }
    const socket = this.#pickSocket(entry.link);
    entry.socket = socket;
    // A failed send (a socket closed as the upstream list changed, a route gone): the timeout moves the query on.
    const sent = socket === undefined ? -9 : socket.send(entry.message);
    if (sent < 0) this.#sendFailed(entry.link, sent);
    this.#armTimer();
    return true;
  }

  /** A socket of `link` at random, among those that have not failed while any has not. */
  #pickSocket(link: UpstreamLink): UdpSocket | undefined {
    const { sockets, failedSockets } = link;
    if (!usable(link)) return sockets[this.#socketPick() % sockets.length];
    // Drawn again until it is one that works: as even a pick among them as among all.
    for (;;) {
      const socket = sockets[this.#socketPick() % sockets.length];
      if (socket !== undefined && !failedSockets.has(socket)) return socket;
    }
  }

  /** Where in the list in use a new query goes first: the preferred upstream, else (not connected, or none) the first. */
  #firstIndex(): number {
    const preferred = this.#preferred;
    if (preferred === undefined) return 0;
    const index = this.#upstreams.findIndex((link) => sameUpstream(link.upstream, preferred));
    return index === -1 ? 0 : index;
  }

  /**
   * Where in the list in use `entry` goes next, from `start` on in turn: the first upstream it has
   * not tried that can answer (see usable()), those passed over on the way added to `entry.passed`
   * (not waited for later, but asked once they can answer); where none can, the first it has
   * neither tried nor passed over, to wait for (a send may still tell of a lost route); undefined
   * where there is none of either (see #hasUntried).
   */
  #nextUpstream(entry: PendingQuery, start: number): number | undefined {
    const upstreams = this.#upstreams;
    let firstUnusable: number | undefined;
    let passing: Upstream[] | undefined;
    for (let step = 0; step < upstreams.length; step++) {
      const at = (start + step) % upstreams.length;
      const link = upstreams[at];
      if (link === undefined || hasTried(entry.tried, link.upstream)) continue;
      if (usable(link)) {
        if (passing !== undefined) (entry.passed ??= []).push(...passing);
        return at;
      }
      if (entry.passed !== undefined && hasTried(entry.passed, link.upstream)) continue;
      firstUnusable ??= at;
      (passing ??= []).push(link.upstream);
    }
    return firstUnusable;
  }

  /**
   * Whether the list in use has an upstream `entry` may go to (#nextUpstream finds one): one it has
   * not tried that can answer, or (`usableOnly` false) that it has neither tried nor passed over.
   */
  #hasUntried(entry: PendingQuery, usableOnly: boolean): boolean {
    const { tried, passed } = entry;
    return this.#upstreams.some(
      (link) => !hasTried(tried, link.upstream) && (usable(link) || (!usableOnly && (passed === undefined || !hasTried(passed, link.upstream)))),
    );
  }

  #answerUdp(query: Buffer, questionEnd: number, rcode: Rcode, client: UdpPeer): void {
    this.#countRcode(rcode);
    this.#sendToClient(errorResponse(query, questionEnd, rcode), client);
  }

  #sendToClient(message: Buffer, client: UdpPeer): void {
    const socket = this.#udp;
    if (socket === undefined || socket.sendTo(message, client) < 0) this.#counters.sendErrors += 1;
  }

  #countRcode(rcode: Rcode): void {
    if (rcode === RCODE.formErr) this.#counters.formErr += 1;
    else if (rcode === RCODE.notImp) this.#counters.notImp += 1;
    else if (rcode === RCODE.refused) this.#counters.refused += 1;
  }

  #onUpstreamDatagram(link: UpstreamLink, socket: UdpSocket, message: Buffer): void {
    if (message.length < HEADER_LENGTH || !isResponse(message)) {
      this.#counters.upstreamRejected += 1;
      return;
    }
    const entry = this.#pending.peek(readId(message));
    // Only an upstream we asked (the connected socket filters sources), on the port we last asked
    // it from, answering the question we asked, may settle a query: a stray or forged datagram
    // must not cancel the real answer. The upstream asked now, or one asked before it whose time
    // was up (its answer come late: the first good answer wins).
    const current = entry !== undefined && !entry.parked && entry.link === link && entry.socket === socket;
    const earlier = entry === undefined || current ? undefined : entry.earlier?.find((attempt) => attempt.link === link && attempt.socket === socket);
    if (entry === undefined || (!current && earlier === undefined) || !answersQuestion(message, entry.question)) {
      this.#counters.upstreamRejected += 1;
      return;
    }
    // Fitted to what the client takes; a malformed one (records past its end) is no answer, and
    // the query waits on (its resend may bring a whole one; its time moves it on).
    const fitted = fitUdpAnswer(message, entry.question.length, entry.room);
    if (fitted === undefined) {
      this.#counters.upstreamRejected += 1;
      return;
    }
    const now = performance.now();
    // Karn: a resent query's answer may be to either copy, so only single sends are timed.
    const sent = earlier ?? entry;
    if (sent.transmissions === 1) link.rtt.sample(now - sent.sentAt);
    if (!isFailureAnswer(message)) {
      this.#lastAnswered.set(link.key, now);
      if (entry.failedFirst !== undefined) this.#preferOver(entry.failedFirst, link);
      if (earlier !== undefined) this.#counters.lateAnswers += 1;
      this.#relay(entry, fitted);
      return;
    }
    if (current && this.#hasUntried(entry, true)) {
      // SERVFAIL, REFUSED or NOTIMP: this upstream could not answer it, another may (as a stub
      // resolver given the same list would ask it: our clients have only us to ask). The last one's is relayed.
      const rcode = rcodeOf(message);
      this.#retry(entry, rcode === RCODE.servFail ? 'SERVFAIL' : rcode === RCODE.refused ? 'REFUSED' : 'NOTIMP');
      return;
    }
    // A failure answer that moves the query on to no other upstream: relayed, unless an upstream
    // asked before may still answer better (its time was up, not the query's); then held until
    // it does, or the query's time is up. Held fitted to MAX_HELD_ANSWER bytes at most, as a copy
    // (the datagram is a view into the socket's arena): see heldAnswer.
    if (earlier !== undefined) entry.earlier = entry.earlier?.filter((attempt) => attempt !== earlier);
    if (current) {
      entry.parked = true;
      entry.socket = undefined;
      this.#pending.reschedule(entry.id, entry.queryUntil);
      this.#armTimer();
    }
    if (entry.parked && (entry.earlier === undefined || entry.earlier.length === 0)) this.#relay(entry, fitted);
    else entry.held = heldAnswer(message, entry.question.length, entry.room);
  }

  /** Answer `entry`'s client with `answer` (an upstream's, fitted to it), and settle it. */
  #relay(entry: PendingQuery, answer: FittedAnswer): void {
    this.#settled(entry);
    writeId(answer.message, entry.clientId);
    this.#counters.answered += 1;
    if (answer.truncated) this.#counters.truncated += 1;
    this.#sendToClient(answer.message, entry.client);
  }

  /** Have #onTimer run at the next deadline (re-armed only when that is earlier than planned). */
  #armTimer(): void {
    const next = this.#pending.nextDeadline();
    if (next === undefined || next >= this.#timerAt) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timerAt = next;
    this.#timer = setTimeout(this.#onTimer, Math.max(0, Math.ceil(next - performance.now())) + 1);
  }

  readonly #onTimer = (): void => {
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
    const now = performance.now();
    for (const id of this.#pending.due(now)) {
      const entry = this.#pending.peek(id);
      if (entry === undefined) continue;
      const left = entry.upstreamUntil - now;
      if (now >= entry.queryUntil) this.#queryTimedOut(entry);
      else if (entry.parked) this.#pending.reschedule(id, entry.queryUntil);
      else if (this.#awaitingReconnect.has(entry) || (entry.socket !== undefined && entry.link.failedSockets.has(entry.socket))) this.#socketFailedUnder(entry, now);
      else if (left > 0 && this.#leftForUntried(entry)) this.#moveToCurrent(entry);
      else if (left >= MIN_RETRANSMIT_MS) this.#resend(entry, now, left);
      else if (left > 0) this.#pending.reschedule(id, entry.upstreamUntil);
      else this.#retry(entry, 'timed-out');
    }
    this.#armTimer();
  };

  /**
   * Whether `entry`'s upstream has left the list in use (resolv.conf rewritten since it was sent)
   * while that list has an upstream it has not tried: it then goes there at its resend
   * (#moveToCurrent), as a new query would, rather than again to the one the operator dropped (and
   * which has not answered it yet). Where it has tried them all, it stays with its own, whose
   * sockets are read until its time is up.
   */
  #leftForUntried(entry: PendingQuery): boolean {
    const upstreams = this.#upstreams;
    if (upstreams.includes(entry.link)) return false;
    const upstream = entry.link.upstream;
    return !upstreams.some((link) => sameUpstream(link.upstream, upstream)) && this.#hasUntried(entry, false);
  }

  /**
   * The socket `entry` went out of (still pending, due now) failed since: no answer can come
   * through it (nothing reads it). It goes out again, as a resend, out of a working socket of its
   * upstream: another of the link's, or of the link it has been connected again as. Where there
   * is none, to the next upstream; where none is left to try (a single upstream, say), it waits
   * within its time for its upstream to be connected again (#resendAwaiting: the failure's backoff
   * is RECONNECT_MAX_MS at most), rather than be answered SERVFAIL while that is due.
   */
  #socketFailedUnder(entry: PendingQuery, now: number): void {
    this.#awaitingReconnect.delete(entry);
    // The last upstream it can ask has the query's whole time, its own once up (see #retry).
    if (entry.upstreamUntil <= now && !this.#hasUntried(entry, false)) entry.upstreamUntil = entry.queryUntil;
    const left = entry.upstreamUntil - now;
    if (left > 0) {
      const working = this.#workingLinkTo(entry.link.upstream);
      if (working !== undefined) {
        this.#resendThrough(entry, working, now, left);
        return;
      }
      if (!this.#hasUntried(entry, false)) {
        this.#awaitingReconnect.add(entry);
        this.#pending.reschedule(entry.id, entry.upstreamUntil);
        return;
      }
    }
    this.#retry(entry, 'socket-failed');
  }

  /**
   * Upstreams were connected (again), or the list changed: the queries waiting for theirs
   * (#awaitingReconnect) go out to it now, as resends, within their time (past it, their deadline
   * moves them on). One whose upstream is no longer `wanted` (dropped from the list) waits for
   * nothing that will come, and one for which the list now has an upstream that can answer and
   * that it has not tried (added, or connected again) need not wait up to RECONNECT_MAX_MS or its
   * deadline for its own: each goes to the list's upstreams now (#moveToCurrent).
   */
  #resendAwaiting(wanted: readonly { readonly upstream: Upstream }[]): void {
    if (this.#awaitingReconnect.size === 0) return;
    const now = performance.now();
    // A copy: a query moved on may wait again, for its new upstream.
    for (const entry of [...this.#awaitingReconnect]) {
      const working = this.#workingLinkTo(entry.link.upstream);
      const left = entry.upstreamUntil - now;
      if (left <= 0) continue;
      if (working !== undefined) {
        this.#awaitingReconnect.delete(entry);
        this.#resendThrough(entry, working, now, left);
      } else if (!wanted.some((want) => sameUpstream(want.upstream, entry.link.upstream)) || this.#hasUntried(entry, true)) {
        this.#moveToCurrent(entry);
      }
    }
    this.#armTimer();
  }

  /**
   * A pending query whose upstream was dropped from the list, or that has a better one to go to
   * than the one it waits for: sent to the first upstream of the list now in use that it has not
   * tried and that can answer (waiting for one it has not tried where none can), as a new query
   * would be; where it has tried them all, it waits for those asked before, or is answered (#sendTo).
   */
  #moveToCurrent(entry: PendingQuery): void {
    this.#awaitingReconnect.delete(entry);
    this.#keepListening(entry);
    this.#sendTo(entry, this.#nextUpstream(entry, this.#firstIndex()));
  }

  /**
   * `entry` goes on from its upstream without that one having failed it (its time is up, or it
   * left the list): its answer is still taken until the query's time is up (see #onUpstreamDatagram),
   * through the socket the query last went out of to it, where that one is still read.
   */
  #keepListening(entry: PendingQuery): void {
    const { link, socket, sentAt, transmissions } = entry;
    if (socket === undefined || link.failedSockets.has(socket)) return;
    (entry.earlier ??= []).push({ link, socket, sentAt, transmissions });
  }

  /**
   * Send `entry` (in the table: it keeps its place and id) to the upstream at `index` of the list in
   * use; where there is none (undefined: it has tried every one), it waits for an upstream asked
   * before that may still answer, or, with none, is answered (see #answerAtLast).
   */
  #sendTo(entry: PendingQuery, index: number | undefined): void {
    const link = index === undefined ? undefined : this.#upstreams[index];
    if (link !== undefined && index !== undefined) {
      entry.link = link;
      if (this.#sendUpstream(entry)) return;
    }
    // Those whose socket failed since can bring no answer (nothing reads it).
    entry.earlier = entry.earlier?.filter((attempt) => !attempt.link.failedSockets.has(attempt.socket));
    if (entry.earlier !== undefined && entry.earlier.length > 0 && performance.now() < entry.queryUntil) {
      entry.parked = true;
      entry.socket = undefined;
      this.#awaitingReconnect.delete(entry);
      this.#pending.reschedule(entry.id, entry.queryUntil);
      this.#armTimer();
      return;
    }
    this.#answerAtLast(entry);
  }

  /**
   * No good answer came for `entry` and none will: its client gets the failure answer held for it
   * (see PendingQuery.held), else SERVFAIL.
   */
  #answerAtLast(entry: PendingQuery): void {
    if (entry.held !== undefined) {
      this.#relay(entry, entry.held);
      return;
    }
    if (this.#upstreams.length === 0) this.#counters.noUpstream += 1;
    else this.#counters.failed += 1;
    this.#settled(entry);
    writeId(entry.message, entry.clientId);
    this.#answerUdp(entry.message, entry.questionEnd, RCODE.servFail, entry.client);
  }

  /**
   * The query's time is up (queryTimeoutMs): the upstream asked now, if it had not been counted as
   * timed out already, is; its client is answered (#answerAtLast).
   */
  #queryTimedOut(entry: PendingQuery): void {
    if (!entry.parked && entry.socket !== undefined && !entry.timedOut) this.#counters.upstreamTimeouts += 1;
    this.#answerAtLast(entry);
  }

  /**
   * The link in use to `upstream` with a socket that works. By address and port: through a link,
   * one made again under another index serves it as a new query would be.
   */
  #workingLinkTo(upstream: Upstream): UpstreamLink | undefined {
    return this.#upstreams.find((link) => usable(link) && sameUpstream(link.upstream, upstream));
  }

  /**
   * Resend `entry` (same id) out of a working socket of `link`, which then alone may bring the
   * answer: a new port, as random as the first (RFC 5452).
   */
  #resendThrough(entry: PendingQuery, link: UpstreamLink, now: number, left: number): void {
    entry.link = link;
    entry.socket = this.#pickSocket(link);
    this.#resend(entry, now, left);
  }

  /**
   * The upstream's answer is late: the same query (id, port) again, and twice as long to wait. Or
   * its first transmission, for one that waited for its upstream to be connected (#sendUpstream):
   * not counted as a retransmit, and its answer timed.
   */
  #resend(entry: PendingQuery, now: number, left: number): void {
    entry.transmissions += 1;
    entry.sentAt = now;
    if (entry.transmissions > 1) this.#counters.retransmits += 1;
    const wait = Math.min(left, entry.link.rtt.timeoutMs() * 2 ** (entry.transmissions - 1));
    this.#pending.reschedule(entry.id, now + wait);
    const sent = entry.socket === undefined ? -9 : entry.socket.send(entry.message);
    if (sent < 0) this.#sendFailed(entry.link, sent);
  }

  /**
   * An upstream did not answer within its time (timeoutMs), answered SERVFAIL, REFUSED or NOTIMP (with
   * another left to ask), or the socket the query went out of failed (said already, and our
   * socket's failure, not the upstream's): move on to the next one. One whose time is up is still
   * listened to (#keepListening); where it is the last the query can ask, it is asked again, with
   * backoff, until the query's time is up (queryTimeoutMs): a slow upstream is still one that
   * answers. Where none is left otherwise, the query waits for those asked before, or is answered
   * (#sendTo). A failure of the upstream asked first is noted on the query, for #preferOver to
   * weigh once another answers it.
   */
  #retry(entry: PendingQuery, why: FailureHow | 'socket-failed'): void {
    if (why === 'timed-out') this.#counters.upstreamTimeouts += 1;
    else if (why !== 'socket-failed') this.#counters.upstreamErrors += 1;
    const upstreams = this.#upstreams;
    const now = performance.now();
    if (why !== 'socket-failed' && entry.failedFirst === undefined) {
      const first = upstreams[this.#firstIndex()];
      if (first !== undefined && sameUpstream(first.upstream, entry.link.upstream)) entry.failedFirst = { upstream: first.upstream, at: now, how: why };
    }
    // Its upstream's place in the list in use, by address: the list may have changed since the
    // query was sent (its upstream dropped: it goes on as a new query would).
    const failedIndex = upstreams.findIndex((link) => sameUpstream(link.upstream, entry.link.upstream));
    const next = this.#nextUpstream(entry, failedIndex === -1 ? this.#firstIndex() : failedIndex + 1);
    if (why === 'timed-out') {
      if (next === undefined) {
        entry.timedOut = true;
        entry.upstreamUntil = entry.queryUntil;
        this.#resend(entry, now, entry.queryUntil - now);
        return;
      }
      this.#keepListening(entry);
    }
    this.#sendTo(entry, next);
  }

  /**
   * `link` answered a query that the upstream asked first failed (`failed`): new queries go to
   * `link` first from now on, if that one is still asked first and gave no answer (but SERVFAIL,
   * REFUSED and NOTIMP) to any query for a whole timeout up to its failure or since.
   *
   * Why so much (one client's broken names must not move everyone's queries): a query can fail
   * for its name alone. A name whose servers are down or lame takes a resolver seconds to give up
   * on (past our timeout), then SERVFAIL; a name one resolver refuses or cannot validate (DNSSEC),
   * another may answer. The upstream is at fault only where it fails everything: silent, or
   * failing every query, for as long as one query is given (had it answered others meanwhile, the
   * name was at fault); and another upstream must do better on the same query (where none answers
   * it, nothing is learned). dnsmasq and systemd-resolved let a single failure move every query
   * (dnsmasq: a client's retry or a REFUSED has it take whichever server answers next; resolved
   * moves to its next server after a timeout, SERVFAIL or REFUSED), which is this weakness; both
   * ask the next server for the query that failed, as we do. A socket of ours failing is none of
   * the upstream's doing, and moves nothing.
   */
  #preferOver(failed: { readonly upstream: Upstream; readonly at: number; readonly how: FailureHow }, link: UpstreamLink): void {
    const upstreams = this.#upstreams;
    const first = upstreams[this.#firstIndex()];
    if (first === undefined || !sameUpstream(first.upstream, failed.upstream) || sameUpstream(link.upstream, failed.upstream) || !upstreams.includes(link)) return;
    const answered = this.#lastAnswered.get(first.key);
    if (answered !== undefined && answered >= failed.at - this.#timeoutMs) return;
    this.#preferred = link.upstream;
    const how = failed.how === 'timed-out' ? `did not answer a query within ${this.#timeoutMs} ms` : `answered a query ${failed.how}`;
    // Named: the one that answered may come anywhere after it in the list (those between failed the query too).
    this.#log.warn(
      { failed: linkText(first), askedFirst: linkText(link) },
      `upstream resolver ${upstreamText(first.upstream)} ${how}, and answered no other for that long, while ${upstreamText(link.upstream)} answered it: ` +
        `asking ${upstreamText(link.upstream)} first from now on`,
    );
  }

  // ---- TCP ----

  #onTcpClient(socket: TcpSocket): void {
    socket.on('error', () => undefined);
    const address = socket.remoteAddress;
    // Reset before we took it (getpeername: ENOTCONN): no query can come, and its client is
    // unknown. Taken as a client of its own (holding none), it would close a connection of the
    // client holding the most to make room for nothing: any client could do that at will.
    if (address === undefined) {
      socket.destroy();
      return;
    }
    const remote = hostKeyOfText(address);
    const shares = this.#tcpShares;
    // A fixed cap per client alone let a few clients asking steadily (maxTcpConnections /
    // maxTcpConnectionsPerClient of them) hold every connection, and every other client's TCP
    // was refused. As for the pending table, a client below its fair share takes a place of the
    // client holding the most once all are taken; one at or below its share never loses one.
    const place = admission(shares.countOf(remote), shares.clients, shares.size, this.#maxTcpConnections, this.#maxTcpConnectionsPerClient);
    if (place === 'refuse') {
      this.#counters.tcpRejected += 1;
      closeClientConnection(socket);
      return;
    }
    if (place === 'evict') this.#evictTcpClient();
    const connection: TcpClientConnection = { socket, inFlight: 0 };
    const share = shares.add(remote, connection);
    this.#counters.tcpConnections += 1;
    this.#tcpClients.add(socket);
    const reader = new FrameReader();
    // Aborted once the connection is closed (the client reset it, or we closed it for junk or
    // idleness): its queries' upstream exchanges end then, not at their timeouts. Else a client
    // that resets each connection as soon as its queries are read frees its slots at once and
    // opens more, and its exchanges upstream add up beyond every cap on connections.
    const closed = new AbortController();
    // One listener per query in flight: more than Node's default of 10 is no leak.
    setMaxListeners(this.#maxTcpQueriesPerConnection, closed.signal);
    let pumpScheduled = false;
    /** The client has sent its FIN: no further query comes. */
    let clientEnded = false;
    // Idle is measured in DNS messages, not bytes (RFC 7766 6.2.3: an application-level idle
    // period): the clock restarts when a query is complete or settled, not at each byte. A client
    // sending a message a byte every few seconds, each byte restarting a socket timeout, held one
    // of the few slots for ever; now a partial message must complete within tcpIdleMs. A client
    // that does not read its answers stops our reading (pump), so nothing restarts the clock and
    // it is closed too. Not a maximum lifetime: a client asking steadily keeps its connection, the
    // reuse RFC 7766 asks clients for.
    let lastActivity = performance.now();
    const onIdle = (): void => {
      const quietFor = performance.now() - lastActivity;
      // A query waiting for upstream is bounded by its time (queryTimeoutMs); its settling restarts the clock.
      if (connection.inFlight > 0 || quietFor < this.#tcpIdleMs) {
        idleTimer = setTimeout(onIdle, connection.inFlight > 0 ? this.#tcpIdleMs : this.#tcpIdleMs - quietFor);
        return;
      }
      this.#counters.tcpIdleClosed += 1;
      closeClientConnection(socket);
    };
    let idleTimer = setTimeout(onIdle, this.#tcpIdleMs);
    socket.on('close', () => {
      closed.abort();
      clearTimeout(idleTimer);
      this.#tcpClients.delete(socket);
      // A no-op for one evicted: its place went when it was chosen.
      shares.remove(share);
    });
    // Answers the client has not read yet hold back its further queries (see TCP_WRITE_HIGH_WATER).
    const writeBlocked = (): boolean => socket.writableLength >= TCP_WRITE_HIGH_WATER;
    socket.on('drain', () => pump());
    // A query served at once (junk, an error answer, rate-limited) frees its place in this same
    // turn: pumping again at once would run through all the frames a chunk holds (21,845 in
    // 64 KiB) before anything else, and a client streaming them kept the agent from every other
    // client. On the next turn, once per connection: at most a few queries a turn each.
    const pumpLater = (): void => {
      if (pumpScheduled) return;
      pumpScheduled = true;
      setImmediate(() => {
        pumpScheduled = false;
        pump();
      });
    };
    const pump = (): void => {
      let received = false;
      while (connection.inFlight < this.#maxTcpQueriesPerConnection && !socket.destroyed && !writeBlocked()) {
        // Frames are cut only as they are served: the rest of a chunk waits as bytes.
        const query = reader.next();
        if (query === undefined) break;
        if (query === 'empty-frame') {
          this.#counters.malformed += 1;
          closeClientConnection(socket);
          return;
        }
        connection.inFlight += 1;
        received = true;
        void this.#serveTcpQuery(socket, query, remote, closed.signal).finally(() => {
          connection.inFlight -= 1;
          lastActivity = performance.now();
          pumpLater();
        });
      }
      if (received) lastActivity = performance.now();
      if (socket.destroyed) return;
      // After the client's FIN: every query it sent answered (the frames still held included; an
      // unfinished one never will be), our side ends too. end() sends what is buffered first.
      if (clientEnded && connection.inFlight === 0 && !reader.holding) {
        if (!socket.writableEnded) socket.end();
        return;
      }
      // Reading pauses while frames wait: a client cannot make us buffer more than one chunk.
      if (reader.holding || connection.inFlight >= this.#maxTcpQueriesPerConnection || writeBlocked()) socket.pause();
      else if (socket.isPaused()) socket.resume();
    };
    socket.on('data', (chunk: Buffer) => {
      reader.feed(chunk);
      pump();
    });
    // While reading is paused for held frames, 'end' waits until they have all been fed.
    socket.on('end', () => {
      clientEnded = true;
      pump();
    });
  }

  /**
   * Close a connection of the client holding the most, to make room for a client below its fair
   * share of them (see #onTcpClient): its oldest idle one, whose client loses no answer (it opens
   * another when it asks again), else its oldest. Its place is free at once; its close comes later.
   */
  #evictTcpClient(): void {
    const share = this.#tcpShares.oldestOfLargest(isIdle);
    if (share === undefined) return;
    this.#tcpShares.remove(share);
    this.#counters.tcpEvicted += 1;
    closeClientConnection(share.value.socket);
  }

  async #serveTcpQuery(socket: TcpSocket, query: Buffer, remote: number | string, closed: AbortSignal): Promise<void> {
    this.#counters.queries += 1;
    this.#counters.tcpQueries += 1;
    if (!this.#limiter.allow(remote, performance.now())) {
      this.#counters.rateLimited += 1;
      return;
    }
    const verdict = inspectQuery(query);
    if (verdict.kind === 'drop') {
      this.#counters.malformed += 1;
      // Not a query (shorter than a header, or a response): unanswered, as over UDP, and the
      // connection closed (RFC 7766 lets a server), so that one sending junk frees its client's
      // slot now, not after the idle timeout. The queries it still has pending go unanswered.
      closeClientConnection(socket);
      return;
    }
    const reply = (response: Buffer): void => {
      if (!socket.destroyed) socket.write(frame(response));
    };
    if (verdict.kind === 'answer') {
      this.#countRcode(verdict.rcode);
      reply(errorResponse(query, verdict.questionEnd, verdict.rcode));
      return;
    }
    const upstreams = this.#upstreams;
    if (upstreams.length === 0) {
      this.#counters.noUpstream += 1;
      reply(errorResponse(query, verdict.questionEnd, RCODE.servFail));
      return;
    }
    const outcome = await this.#askOverTcp(queryMessage(query), verdict.questionEnd, socket, closed);
    // The client is gone, or the forwarder closing: nobody to answer, and no upstream failed.
    if (outcome === 'gone') return;
    if (outcome !== 'none') {
      this.#counters.answered += 1;
      reply(outcome);
      return;
    }
    if (this.#upstreams.length === 0) this.#counters.noUpstream += 1;
    else this.#counters.failed += 1;
    reply(errorResponse(query, verdict.questionEnd, RCODE.servFail));
  }

  /**
   * Ask the upstreams `query` (from `client`, whose connection's closing aborts `closed`) over TCP,
   * as over UDP: each once at most, by address, from the one asked first on, in the list in use at
   * each step (resolv.conf may be rewritten meanwhile, and an upstream given twice is one). Each has
   * its own connection, and timeoutMs of the query to itself; then the next is asked too, the
   * connections before it kept open (but where all the upstream connections the forwarder may have
   * are open, #maxTcpUpstreams: then its earlier ones end first, or, asking its first, the one
   * another query kept longest): the first good answer of any is
   * the query's, the others then ended (a reset each). An upstream that answers SERVFAIL, REFUSED or NOTIMP, ends the connection
   * (FIN or reset), or whose connection cannot be opened or fails has the next asked at once. Every
   * connection ends at the query's time (queryTimeoutMs). Resolves with the answer to relay (a good
   * one, else the last failure answer that moved the query on to no other upstream), 'none' where
   * there is none (SERVFAIL), or 'gone' where nobody is left to answer (the client's connection
   * closed, the forwarder closing). Over TCP, though, nothing moves the upstream asked first: the
   * exchanges are few (truncated answers), and an upstream may fail TCP alone.
   */
  #askOverTcp(query: Buffer, questionEnd: number, client: TcpSocket, closed: AbortSignal): Promise<Buffer | 'none' | 'gone'> {
    const deadline = performance.now() + this.#queryTimeoutMs;
    // Aborted once the query is settled, or its client gone: every exchange still open ends.
    const done = new AbortController();
    setMaxListeners(MAX_UPSTREAMS + 1, done.signal);
    const onClosed = (): void => done.abort();
    closed.addEventListener('abort', onClosed, { once: true });
    const tried: Upstream[] = [];
    /** The upstream asked last: the next is looked for after it, and it alone has a failover timer. */
    let latest: Upstream | undefined;
    let running = 0;
    /**
     * Its exchanges still open, oldest first, each ended by aborting its controller: the query's
     * own (done) or, at the bound on upstream connections, before the next is asked (ask).
     */
    const open: AbortController[] = [];
    let held: Buffer | undefined;
    let failover: NodeJS.Timeout | undefined;
    let settled = false;
    return new Promise((resolve) => {
      const finish = (result: Buffer | 'none' | 'gone'): void => {
        if (settled) return;
        settled = true;
        clearTimeout(failover);
        closed.removeEventListener('abort', onClosed);
        done.abort();
        resolve(result);
      };
      const untried = (): UpstreamLink | undefined => {
        const inUse = this.#upstreams;
        // On from the place of the one asked last in the list in use now (it may be gone from it, or elsewhere).
        const at = latest === undefined ? -1 : inUse.findIndex((link) => latest !== undefined && sameUpstream(link.upstream, latest));
        return untriedFrom(inUse, tried, at === -1 ? this.#firstIndex() : at + 1);
      };
      const askNext = (): void => {
        clearTimeout(failover);
        failover = undefined;
        if (closed.aborted || client.destroyed || this.#closed !== undefined) {
          finish('gone');
          return;
        }
        const next = untried();
        const left = deadline - performance.now();
        if (next !== undefined && left > 0) ask(next, left);
        else if (running === 0) finish(held ?? 'none');
      };
      const ask = (link: UpstreamLink, left: number): void => {
        const { upstream, via, zoneIndex } = link;
        // All upstream connections the forwarder may have open are (#maxTcpUpstreams): this query's
        // earlier ones end first, oldest first (their upstreams' own time is up), as when a query
        // kept one connection, so that the agent does not run out of descriptors. Each ends at once
        // (its socket leaves #tcpUpstreams as it is reset); its outcome is then only passed over.
        // One asking its first has none: the one another query kept longest ends (that query is
        // still asking its latest), so that queries beginning at the bound do not go past it.
        while (this.#tcpUpstreams.size >= this.#maxTcpUpstreams) {
          const oldest = open.shift() ?? this.#keptTcpUpstreams.values().next().value;
          if (oldest === undefined) break;
          this.#keptTcpUpstreams.delete(oldest);
          oldest.abort();
        }
        // Those still open are kept from now on: the query goes on from them.
        for (const earlier of open) this.#keptTcpUpstreams.add(earlier);
        const attempt = new AbortController();
        const onDone = (): void => attempt.abort();
        done.signal.addEventListener('abort', onDone, { once: true });
        open.push(attempt);
        tried.push(upstream);
        latest = upstream;
        running += 1;
        let timedOut = false;
        const countTimeout = (): void => {
          if (!timedOut) this.#counters.upstreamTimeouts += 1;
          timedOut = true;
        };
        // Its time to itself up: the next is asked too (this one still heard until the query's time).
        failover = setTimeout(() => {
          countTimeout();
          askNext();
        }, Math.min(this.#timeoutMs, left));
        // Through the link, as for UDP: to our own address a plain connection would reach us.
        // A link-local one's zone picks its link, by name or index (Node's net reads only a name):
        // the interface its UDP sockets were connected through (by index, UpstreamLink.zoneIndex),
        // not whatever has the zone's name now, so that UDP and TCP reach the same one after a
        // rename, until the list is next set connects both again.
        const connectOther =
          via !== undefined
            ? () => connectTcpThroughLink(upstream.family, upstream.address, upstream.port, via.source, { ifname: via.device, ifindex: via.ifindex })
            : upstream.address.includes('%')
              ? () => connectTcpThroughZone(upstream.address, upstream.port, zoneIndex)
              : undefined;
        // Why it could not be opened is said here (open threw, or Node's own connect found no
        // descriptor, an 'error' event): the outcome is only 'socket-error'.
        // One that opens, as it opens, may end an episode of failures to (see #tcpOpenFailed).
        const unopened = (error: unknown): void => this.#tcpOpenFailed({ upstream, via }, error);
        const opened = (): void => this.#tcpOpened({ upstream, via });
        void exchangeOverTcp(upstream, query, questionEnd, left, this.#tcpUpstreams, connectOther, attempt.signal, unopened, opened).then((outcome) => {
          running -= 1;
          done.signal.removeEventListener('abort', onDone);
          this.#keptTcpUpstreams.delete(attempt);
          const at = open.indexOf(attempt);
          if (at !== -1) open.splice(at, 1);
          if (settled) return;
          // Ended to make room (above): passed over. By this query, a later upstream is asked; by
          // another, this query may have nothing open any more (its latest ended, with no
          // upstream left to ask): done then, as when its last exchange ends.
          if (attempt.signal.aborted && !done.signal.aborted) {
            if (running === 0) askNext();
            return;
          }
          if (closed.aborted || outcome === 'abandoned' || outcome === 'closed' || this.#closed !== undefined) {
            finish('gone');
            return;
          }
          const isLatest = latest === upstream;
          if (typeof outcome !== 'string' && !isFailureAnswer(outcome)) {
            if (!isLatest) this.#counters.lateAnswers += 1;
            finish(outcome);
            return;
          }
          // A connection that could not be opened (its zone names no interface any more, the agent
          // out of descriptors) or that Node reported an error on (refused, unreachable) is a
          // socket's trouble, as an ICMP error on a UDP socket is: a sendError, not the upstream's
          // silence. Nor is one the upstream ended (FIN or reset) once it had taken it: it will not
          // answer, and the next upstream is asked at once. As over UDP, SERVFAIL, REFUSED or
          // NOTIMP goes on to the next upstream; one that moves it on to none is held, relayed
          // once no other may answer better.
          if (outcome === 'socket-error') this.#counters.sendErrors += 1;
          else if (outcome === 'upstream-ended') this.#counters.upstreamClosed += 1;
          else if (outcome === 'timed-out') countTimeout();
          else if (isLatest && untried() !== undefined) this.#counters.upstreamErrors += 1;
          else held = outcome;
          // The one asked last: on to the next at once (or, with none, done once none is open).
          if (isLatest || running === 0) askNext();
        });
      };
      askNext();
    });
  }

  /**
   * A TCP connection to `link` could not be opened (the interface its zone named is gone, the link
   * to the upstream provider is gone, the agent is out of descriptors): said at warn, once per
   * upstream and cause in an episode (every TCP query to it would say it again). A failure is a
   * new episode, said again, where a connection to it opened since the last failure and that was
   * UDP_SETTLED_MS or more before. Not at the first connection that opens: out of descriptors,
   * the agent hovers at its limit (a client holding many connections can keep it there),
   * connections opening and failing in turn, and each failure after one that opened was said, a
   * warning per query. The query goes on to the next upstream, counted in sendErrors.
   */
  #tcpOpenFailed(link: { readonly upstream: Upstream; readonly via: UpstreamLinkRoute | undefined }, error: unknown): void {
    const key = linkText(link);
    const cause = errorText(error);
    const now = this.#clock.now();
    const last = this.#tcpOpenFailures.get(key);
    const episode = last === undefined || (last.openedSince && now - last.lastAt >= UDP_SETTLED_MS) ? { said: new Set<string>(), lastAt: now, openedSince: false } : last;
    episode.lastAt = now;
    episode.openedSince = false;
    this.#tcpOpenFailures.set(key, episode);
    if (episode.said.has(cause)) return;
    episode.said.add(cause);
    this.#log.warn(
      { upstream: key, err: cause },
      'cannot open a TCP connection to the upstream resolver: its TCP queries go on to the next upstream, or are answered SERVFAIL (said once per upstream and cause, and again only once one opened and a minute passed without such a failure)',
    );
  }

  /**
   * A TCP connection to `link` opened (its descriptor made through its zone or link, or Node's own
   * connected), as it opened: an episode of failures to open one may end (see #tcpOpenFailed).
   * Not when its exchange ends: one opened before the failures, and ending after them (its
   * answer, its timeout), was taken for one opened since.
   */
  #tcpOpened(link: { readonly upstream: Upstream; readonly via: UpstreamLinkRoute | undefined }): void {
    const failures = this.#tcpOpenFailures.get(linkText(link));
    if (failures !== undefined) failures.openedSince = true;
  }

  close(): Promise<void> {
    this.#closed ??= this.#closeAll();
    return this.#closed;
  }

  async #closeAll(): Promise<void> {
    await this.#binding;
    this.#watcher?.close();
    this.#reconnectTimer?.();
    this.#reconnectTimer = undefined;
    this.#routeCheckTimer?.();
    this.#routeCheckTimer = undefined;
    this.#rebindTimer?.();
    this.#rebindTimer = undefined;
    await this.#reloading;
    // After the reloads: none connects a link from now on, nor schedules a failure's backoff.
    for (const link of this.#upstreams) link.failure?.cancel();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#pending.drain();
    this.#shares.clear();
    this.#awaitingReconnect.clear();
    for (const socket of this.#tcpClients) socket.destroy();
    // Each in the middle of its exchange: ended with a reset, as every upstream connection is.
    for (const socket of this.#tcpUpstreams) resetConnection(socket);
    const closing: Promise<void>[] = [];
    const upstreamSockets = [...this.#upstreams.flatMap((link) => link.sockets), ...this.#retired];
    this.#retired.clear();
    for (const socket of [this.#udp, ...upstreamSockets]) socket?.close();
    const tcp = this.#tcp;
    if (tcp !== undefined) closing.push(new Promise((resolve) => tcp.close(() => resolve())));
    this.#udp = undefined;
    this.#tcp = undefined;
    await Promise.all(closing);
  }
}

/**
 * A query as relayed: up to the end of its message (its question and the records its header
 * counts, an OPT record), without bytes after it, which belong to no section: stock resolvers
 * (BIND, unbound) read none of them and answer the query. Relayed as sent, a few bytes of question
 * padded to 4 KB went upstream at each resend, to an upstream that may ignore it (dnsmasq did),
 * its client waiting the whole query timeout. One whose records run past its bytes is none
 * (inspectQuery answers it FORMERR): it is not forwarded.
 */
export function queryMessage(query: Buffer): Buffer {
  const end = messageEnd(query);
  return end === undefined || end === query.length ? query : query.subarray(0, end);
}

/**
 * Start the forwarder. Never fails because the listen address is missing: it then reports
 * listening() === false (and the reason in counters().lastBindError) until rebind() succeeds.
 * Throws DnsError for invalid options.
 */
export async function startDnsForwarder(options: DnsForwarderOptions): Promise<DnsForwarder> {
  const forwarder = new Forwarder(options);
  try {
    await forwarder.start();
  } catch (error) {
    await forwarder.close();
    throw error;
  }
  return forwarder;
}
