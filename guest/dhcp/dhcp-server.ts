import { closeSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import pino from 'pino';
import { type ClientId, clientId, isClientId } from '../../shared/client-id.js';
import type { Logger } from '../../shared/log.js';
import { GATEWAY_IP } from '../../shared/scheme.js';
import { DhcpError } from './dhcp-error.js';
import { RateLimiter } from '../dns/rate-limiter.js';
import { type Backoff, backoffDelayMs } from '../backoff.js';
import { bindPrivilegeHint } from '../capabilities.js';
import { type RateLimit, type TokenBucket, takeToken } from '../token-bucket.js';
import { type DhcpRequest, type DropReason, linkClientOf } from './dhcp-exchange.js';
import { LinkSocket, type LinkSocketEvents, linkMtuOf, nativeParts } from './link-socket.js';
import { runSlice } from './time-slice.js';
import type { DhcpHandler } from './dhcp-handler.js';
import type { Ipv4Text } from './ipv4.js';
import { type LeaseInfo, leaseAt } from './lease-table.js';
import { MESSAGE_TYPE } from './option-code.js';
import { SERVER_PORT } from './reply-destination.js';
import { type LinkMtuSource, serveDatagram, warmUpFrames } from './serve-datagram.js';
import { spectrumChain } from './spectrum-chain.js';

export type { LeaseInfo, LeaseState } from './lease-table.js';

/** A provider-side link to serve: the agent core hands these over (id from the link's MAC). */
export interface DhcpLink {
  readonly ifname: string;
  readonly ifindex: number;
  readonly id: ClientId;
}

export interface DhcpServerOptions {
  readonly leaseSeconds?: number;
  /** Default [GATEWAY_IP]. */
  readonly dnsServers?: readonly string[];
  readonly logger?: Logger;
}

export interface DhcpCounters {
  /** Packets to port 67 read from the links. */
  received: number;
  ignoredWrongMac: number;
  /** Not IPv4/UDP, not DHCP, or a DHCP message that does not parse. */
  malformed: number;
  offers: number;
  acks: number;
  naks: number;
  releases: number;
  declines: number;
  /**
   * Dropped for another reason: other server chosen, relayed, invalid request, unexpected type, a
   * client identifier too long for the reply that must echo it.
   */
  dropped: number;
  sendErrors: number;
  /** Link sockets that failed after opening (each is then reopened on a timer). */
  socketErrors: number;
  /** Attempts, on the timer, to reopen a link socket that failed or could not be opened. */
  socketRetries: number;
  /** Datagrams dropped unread (not in `received`) by their link's rate limit. */
  rateLimited: number;
}

export interface DhcpServer {
  /**
   * Run the request path on made-up traffic (default 1000 rounds of four requests, in event-loop slices) so that
   * V8 has compiled it before a boot storm; once per server, settles when done or closed.
   */
  warmUp(rounds?: number): Promise<void>;
  /**
   * Reconcile: open a socket for each new link (and try again at once for any given link whose
   * socket is not open), close those of links no longer given. Rejects naming the links whose
   * socket could not be opened; the server keeps trying those on its own, but for a link the
   * kernel does not have, which waits for the next setLinks that names it.
   */
  setLinks(links: readonly DhcpLink[]): Promise<void>;
  /** The links given whose socket is not open (so not served), by name, with why. */
  unserved(): ReadonlyMap<string, string>;
  leases(): readonly LeaseInfo[];
  counters(): Readonly<DhcpCounters>;
  close(): Promise<void>;
}

const IFNAME = /^[^\s/:]{1,15}$/;

function checkLink(link: DhcpLink): void {
  if (!IFNAME.test(link.ifname) || link.ifname === '.' || link.ifname === '..') {
    throw new DhcpError('config', `${JSON.stringify(link.ifname)} is not an interface name`);
  }
  if (!Number.isInteger(link.ifindex) || link.ifindex <= 0) throw new DhcpError('config', `link ${link.ifname}: ifindex ${link.ifindex} is not positive`);
  if (!isClientId(link.id)) throw new DhcpError('config', `link ${link.ifname}: ${String(link.id)} is not a client id (1..65534)`);
}

interface ServerHooks {
  datagram(served: ServedLink, bytes: Buffer): void;
  failed(served: ServedLink, error: Error): void;
}

/** A link whose socket is not open: when it is tried again. */
interface SocketRetry {
  /** The backoff round of the wait in progress or last made (0: the first, SOCKET_RETRY.firstMs). */
  readonly round: number;
  /** Unset while an attempt runs, and while the link is gone from the kernel (setLinks revives it). */
  timer: NodeJS.Timeout | undefined;
}

/**
 * Datagrams a link's client may send: 16 at once, then 8 a second. A stock client sends a
 * handful a minute: a DISCOVER and a REQUEST per lease, retransmitted after 1-4 s, doubling
 * (udhcpc every -T seconds, 3 by default; dhclient from about 1 s; dhcpcd from 4 s), a renewal
 * now and then. So a VM whose initramfs client, then its init's, then a restarted one all start
 * at once (a boot storm of its own: each 2-4 datagrams) stays inside the burst, and a client
 * retransmitting at the fastest stock schedule uses an eighth of the rate. A flooding client gets
 * 8 answers a second; the rest is dropped before it is decoded.
 */
export const LINK_REQUEST_LIMIT: RateLimit = { perSecond: 8, burst: 16 };

/** A failed link socket is reopened after 1 s, then 2, 4... up to every minute. */
export const SOCKET_RETRY: Backoff = { firstMs: 1000, maxMs: 60_000 };

/**
 * One served link and its socket. Methods, not closures, so that a link costs one small object:
 * a provider serves thousands of them. Its request rate limit is two numbers on it (a
 * TokenBucket), not an entry in a table.
 */
class ServedLink implements LinkSocketEvents, TokenBucket, LinkMtuSource {
  /** Unset: replies go nowhere (the warm-up's made-up link, a link whose socket failed). */
  socket: LinkSocket | undefined = undefined;
  /** Set while the socket is not open. */
  retry: SocketRetry | undefined = undefined;
  /** Why the socket is not open (its last open or its failure); unset while it is. */
  failure: string | undefined = undefined;
  /** When the socket last opened (performance.now()), and its failures since it last stayed open SOCKET_RETRY.maxMs. */
  openedAt = 0;
  flaps = 0;
  tokens: number = LINK_REQUEST_LIMIT.burst;
  refilledAt: number = performance.now();
  constructor(
    readonly link: DhcpLink,
    private readonly hooks: ServerHooks,
    /** The server's counters; the warm-up's own for its made-up link. */
    readonly tally: DhcpCounters,
  ) {}
  onDatagram(bytes: Buffer): void {
    this.hooks.datagram(this, bytes);
  }
  onError(error: Error): void {
    this.hooks.failed(this, error);
  }
  linkMtu(): number | undefined {
    return linkMtuOf(this.link.ifindex);
  }
}

/** Rounds of made-up traffic (the four frames of warmUpFrames) after start-up: enough for V8 to optimise the path. */
const WARM_UP_ROUNDS = 1000;
/**
 * Time the warm-up takes per event-loop turn, so that real requests and netlink events wait
 * little. A budget, not a number of rounds: before V8 has compiled the path a round costs ten
 * times what it costs after (25 rounds took 6-20 ms at first, 3 ms warm), and whatever awaits
 * I/O in between (a hot-plug's reconcile waits a turn per netlink reply) waits a slice per turn.
 */
const WARM_UP_SLICE_MS = 2;
/** Not a possible interface name (a space), so the warm-up lease never meets a real link's. */
const WARM_UP_IFNAME = 'warm up';
/**
 * Warnings and errors a client's packets cause (a DECLINE, a client identifier too long to echo, a
 * send that failed), per link: a few at once, then one a minute. Each would otherwise be a
 * synchronous write to the log per packet, at whatever rate a hostile client sends; the counters
 * still count all.
 */
const LINK_LOG_RATE = { perSecond: 1 / 60, burst: 5 } as const;
/** Links whose log budget is tracked (least recently logging forgotten first). */
const LINK_LOG_TRACKED = 4096;

/**
 * Start the provider's DHCPv4 server. Each link gets a raw IPPROTO_UDP socket bound to it by
 * index (SO_BINDTOIFINDEX, the DhcpLink's ifindex): it receives the client's broadcasts from 0.0.0.0 (which no dgram socket can tell
 * apart by link) and sends complete IP packets (IP_HDRINCL, source 169.254.0.1:67) out of that
 * link only: broadcasts to 255.255.255.255, unicasts to the client address through the /32 route
 * and permanent neighbour entry the agent keeps for it, so no ARP is needed before the client has
 * its address. A plain UDP socket holds the gateway's port 67 so that unicast renewals find a bound
 * port and the kernel does not answer them with ICMP port-unreachable; it never reads (see bindServerPort).
 */
export async function startDhcpServer(options: DhcpServerOptions = {}): Promise<DhcpServer> {
  const chain: readonly DhcpHandler[] = spectrumChain({
    ...(options.leaseSeconds !== undefined && { leaseSeconds: options.leaseSeconds }),
    ...(options.dnsServers !== undefined && { dnsServers: options.dnsServers }),
  });
  const log = options.logger ?? pino({ level: 'silent' });
  try {
    nativeParts();
  } catch (error) {
    throw new DhcpError('socket', `cannot load the DHCP server's native addons: ${error instanceof Error ? error.message : String(error)} (npm ci builds raw-socket's, npm run build the project's)`);
  }
  /** Every link given by setLinks, by name, with its socket (or, while that is not open, its retry). */
  const servedLinks = new Map<string, ServedLink>();
  const leases = new Map<string, LeaseInfo>();
  const counters = zeroCounters();
  const linkLogs = new RateLimiter(LINK_LOG_RATE, LINK_LOG_TRACKED);
  /** Whether a warning or error caused by `ifname`'s client may be logged now. */
  const mayLog = (ifname: string): boolean => linkLogs.allow(ifname, performance.now());
  const portHolder = bindServerPort();
  let closed = false;

  function count(tally: DhcpCounters, ifname: string, request: DhcpRequest, drop: DropReason | undefined, replyType: number | undefined): void {
    if (drop === 'wrong-mac') tally.ignoredWrongMac += 1;
    else if (drop === 'released') tally.releases += 1;
    else if (drop === 'declined') tally.declines += 1;
    else if (drop !== undefined) tally.dropped += 1;
    else if (replyType === MESSAGE_TYPE.offer) tally.offers += 1;
    else if (replyType === MESSAGE_TYPE.ack) tally.acks += 1;
    else if (replyType === MESSAGE_TYPE.nak) tally.naks += 1;
    if (drop === 'declined' && mayLog(ifname)) log.warn({ ifname, clientIp: request.link.clientIp }, 'client declined its address: something else on the link uses it');
  }

  /** Everything about one datagram but the send: counters, lease, logs; the reply to send. */
  function answer(served: ServedLink, bytes: Uint8Array): { readonly frame: Uint8Array; readonly destination: Ipv4Text } | undefined {
    const { link, tally } = served;
    const { ifname } = link;
    // The link's client (address text, MAC bytes) is derived per datagram, about a microsecond,
    // rather than kept per link: a provider holds thousands of idle links, a client sends a few packets an hour.
    const outcome = serveDatagram(chain, linkClientOf(link.id), ifname, bytes, leases.get(ifname), Date.now(), served);
    if (outcome.kind === 'not-dhcp') return;
    tally.received += 1;
    if (outcome.kind === 'malformed') {
      tally.malformed += 1;
      log.debug({ ifname, kind: outcome.error.kind }, outcome.error.message);
      return;
    }
    if (outcome.kind === 'relayed') {
      tally.dropped += 1;
      return;
    }
    const { request, response, replyType, lease, reply, replyError } = outcome;
    count(tally, ifname, request, response.drop, replyType);
    if (lease !== undefined) leases.set(ifname, lease);
    if (response.drop !== undefined) {
      // The client's doing, at whatever rate it sends: a warning, a few per link.
      if (replyError !== undefined) {
        if (mayLog(ifname)) log.warn({ ifname, type: request.messageType, drop: response.drop }, replyError.message);
      } else {
        log.debug({ ifname, type: request.messageType, drop: response.drop }, 'no reply');
      }
      return;
    }
    if (replyError !== undefined || reply === undefined) {
      // The server's own options do not fit, or a bug: no client causes this.
      tally.sendErrors += 1;
      if (mayLog(ifname)) log.error({ ifname, kind: replyError?.kind }, `DHCP reply not built: ${replyError?.message ?? 'no reply'}`);
      return;
    }
    return reply;
  }

  const hooks: ServerHooks = {
    datagram(served, bytes) {
      if (!takeToken(served, LINK_REQUEST_LIMIT, performance.now())) {
        served.tally.rateLimited += 1;
        if (mayLog(served.link.ifname)) {
          log.warn(
            { ifname: served.link.ifname, limit: LINK_REQUEST_LIMIT },
            'DHCP requests over the link\'s rate limit dropped: its client sends far more than any DHCP client does',
          );
        }
        return;
      }
      try {
        const reply = answer(served, bytes);
        if (reply === undefined) return;
        const error = served.socket?.send(reply.frame, reply.destination);
        if (error === undefined) return;
        served.tally.sendErrors += 1;
        if (!mayLog(served.link.ifname)) return;
        log.warn(
          { ifname: served.link.ifname, destination: reply.destination, bytes: reply.frame.length, err: error.message },
          `could not send a DHCP reply: ${sendFailureHint(error.message)}`,
        );
      } catch (error) {
        if (mayLog(served.link.ifname)) log.error({ ifname: served.link.ifname, err: error instanceof Error ? error.stack : String(error) }, 'DHCP handler bug');
      }
    },
    failed(served, error) {
      // The socket is closed: open a new one soon, whether or not the agent calls setLinks again
      // (it does so only when its links change).
      counters.socketErrors += 1;
      served.socket = undefined;
      served.failure = error.message;
      if (closed || servedLinks.get(served.link.ifname) !== served) return;
      // A socket that fails again soon after it was reopened goes on with the backoff (and its
      // log budget), not from the start: else one failing at once every time is reopened, and
      // logged, every second for ever.
      const stayedOpen = performance.now() - served.openedAt >= SOCKET_RETRY.maxMs;
      const round = stayedOpen ? 0 : served.flaps;
      served.flaps = round + 1;
      const delayMs = retryLater(served, round);
      if (round === 0 || mayLog(served.link.ifname)) {
        log.error({ ifname: served.link.ifname, err: error.message, retryInMs: delayMs }, 'DHCP socket failed: reopening it, less and less often until it opens');
      }
    },
  };

  /** Try `served`'s link socket again after the backoff of `round`; returns the wait. */
  function retryLater(served: ServedLink, round: number): number {
    const delayMs = backoffDelayMs(SOCKET_RETRY, round);
    const timer = setTimeout(retryOpen, delayMs, served);
    // The agent's loop and sockets keep the process alive, not a retry.
    timer.unref();
    served.retry = { round, timer };
    return delayMs;
  }

  function retryOpen(served: ServedLink): void {
    if (served.retry !== undefined) served.retry.timer = undefined;
    if (closed || servedLinks.get(served.link.ifname) !== served || served.socket !== undefined) return;
    counters.socketRetries += 1;
    const round = served.retry?.round ?? 0;
    const error = open(served);
    const ifname = served.link.ifname;
    if (error === undefined) log.info({ ifname, retries: round + 1 }, 'DHCP socket reopened');
    else if (error.kind === 'no-device') log.warn({ ifname, err: error.message }, 'DHCP socket not reopened: the link is gone; waiting for the agent to name it again');
    else if (mayLog(ifname)) log.warn({ ifname, err: error.message, retryInMs: backoffDelayMs(SOCKET_RETRY, round + 1) }, 'DHCP socket still cannot be opened');
  }

  /**
   * Open `served`'s socket now. On failure plan the next try (the round after the last one),
   * but for a link the kernel does not have: that one waits for setLinks to name it again.
   */
  function open(served: ServedLink): DhcpError | undefined {
    const previous = served.retry;
    clearTimeout(previous?.timer);
    try {
      served.socket = LinkSocket.open(served.link, served);
    } catch (error) {
      const failure = error instanceof DhcpError ? error : new DhcpError('socket', String(error));
      served.failure = failure.message;
      const round = previous === undefined ? 0 : previous.round + 1;
      if (failure.kind === 'no-device') served.retry = { round, timer: undefined };
      else retryLater(served, round);
      return failure;
    }
    served.retry = undefined;
    served.failure = undefined;
    served.openedAt = performance.now();
    return undefined;
  }

  /** Close `served`'s socket and forget its retry: its link is no longer served. */
  function stop(served: ServedLink): void {
    served.socket?.close();
    served.socket = undefined;
    clearTimeout(served.retry?.timer);
    served.retry = undefined;
  }

  // A boot storm's first few hundred requests would otherwise run in V8's interpreter, several
  // times slower, while V8 compiles the request path on another core. Running the path on
  // made-up traffic moves most of that to a quiet moment: the agent asks once its links are set
  // up (clients of a booting provider come seconds later). In slices, so that real requests go
  // ahead. The highest client id, on a name no link can have, with counters of its own (made
  // alike: a copy of another shape made V8 recompile the path at the first real request).
  const warmUpLink: DhcpLink = { ifname: WARM_UP_IFNAME, ifindex: 1, id: clientId(65534) };
  let warmingUp: Promise<void> | undefined;
  function warmUp(rounds: number): Promise<void> {
    // Through the same calls a datagram from a link takes, with the same types (Buffers), so
    // that what V8 compiles now is what real traffic runs, not recompiled during a storm.
    const frames = warmUpFrames(linkClientOf(warmUpLink.id)).map((frame) => Buffer.from(frame));
    const served = new ServedLink(warmUpLink, hooks, zeroCounters());
    let left = rounds;
    return new Promise<void>((resolve) => {
      const round = (): boolean => {
        if (left <= 0 || closed) return false;
        // Through the rate limit like any link's datagrams, never limited.
        served.tokens = LINK_REQUEST_LIMIT.burst;
        for (const frame of frames) served.onDatagram(frame);
        left--;
        return left > 0;
      };
      const slice = (): void => {
        runSlice(round, WARM_UP_SLICE_MS);
        leases.delete(WARM_UP_IFNAME);
        if (left > 0 && !closed) setImmediate(slice);
        else resolve();
      };
      slice();
    });
  }

  return {
    warmUp(rounds = WARM_UP_ROUNDS) {
      warmingUp ??= warmUp(rounds);
      return warmingUp;
    },
    async setLinks(links) {
      if (closed) throw new DhcpError('socket', 'the DHCP server is closed');
      links.forEach(checkLink);
      const wanted = new Map(links.map((link) => [link.ifname, link]));
      for (const [ifname, served] of servedLinks) {
        const link = wanted.get(ifname);
        if (link === undefined || link.ifindex !== served.link.ifindex || link.id !== served.link.id) {
          stop(served);
          servedLinks.delete(ifname);
          if (link === undefined || link.id !== served.link.id) leases.delete(ifname);
        }
      }
      for (const ifname of leases.keys()) if (!wanted.has(ifname)) leases.delete(ifname);
      const failures: string[] = [];
      for (const link of wanted.values()) {
        let served = servedLinks.get(link.ifname);
        if (served?.socket !== undefined) continue;
        // New, or its socket failed (retrying), or its link was gone at the last try: try now.
        if (served === undefined) {
          served = new ServedLink(link, hooks, counters);
          servedLinks.set(link.ifname, served);
        }
        const error = open(served);
        if (error !== undefined) failures.push(error.message);
      }
      if (failures.length > 0) throw new DhcpError('socket', `${failures.length} link(s) not served yet (tried again on their own while the link exists): ${failures.join('; ')}`);
    },
    unserved() {
      const unserved = new Map<string, string>();
      for (const [ifname, served] of servedLinks) if (served.socket === undefined && served.failure !== undefined) unserved.set(ifname, served.failure);
      return unserved;
    },
    leases() {
      const now = Date.now();
      return [...leases.values()].map((lease) => leaseAt(lease, now));
    },
    counters() {
      return { ...counters };
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const served of servedLinks.values()) stop(served);
      servedLinks.clear();
      closeSync(portHolder);
    },
  };
}

/**
 * Hold the gateway's port 67 so unicast requests are not answered with ICMP port-unreachable;
 * returns the socket's descriptor. The link sockets read every request: this socket queues nothing
 * (a filter that keeps nothing, attached before the bind), so the kernel drops each datagram to it
 * (counted in /proc/net/udp's drops) and nothing is read twice. A socket of Node's dgram always
 * reads, so a DHCP flood would cost the agent a second read and discard of every datagram; this
 * one Node never polls. Bound to the gateway's address, not 0.0.0.0: broadcasts (most DHCP
 * traffic, and on an uplink every other host's) then find no socket, as none is needed for them
 * (the kernel answers no broadcast with port-unreachable), and count as no one's drop; a drop on
 * 0.0.0.0:67 counted each in the provider's UdpInErrors, an error counter monitoring watches. Only
 * unicast requests to the gateway (renewals, a few per client an hour) are still dropped here.
 */
function bindServerPort(): number {
  try {
    return nativeParts().holdUdpPort(GATEWAY_IP, SERVER_PORT);
  } catch (error) {
    const text = error instanceof Error ? error.message : String(error);
    const code = error instanceof Error && 'code' in error ? error.code : undefined;
    throw new DhcpError('socket', `cannot bind UDP port 67 of ${GATEWAY_IP}: ${text} (${portHolderHint(code)})`);
  }
}

/**
 * What a failed send of a reply points at, by the error's text (raw-socket gives strerror's only;
 * exported for its test).
 */
export function sendFailureHint(message: string): string {
  // EMSGSIZE: replies longer than 548 bytes are kept to the MTU read before the send, so the MTU
  // changed since, or is below the 576 bytes DHCP needs (a shorter reply is sent unread).
  if (/message too long/i.test(message)) return "it is larger than the link's MTU (lowered just now, or below the 576 bytes every DHCP client takes?)";
  // EAGAIN, ENOBUFS: dropped like any UDP server drops under load; the client sends again.
  if (/temporarily unavailable|no buffer space/i.test(message)) return "the link's send queue is full: the reply is dropped and the client will ask again";
  return 'check the link is up and has its /32 route and neighbour entry';
}

/** What to check when port 67 cannot be held, by the errno's name (exported for its test). */
export function portHolderHint(code: unknown): string {
  if (code === 'EADDRINUSE') return 'is another DHCP server running in this namespace?';
  if (code === 'EACCES' || code === 'EPERM') return bindPrivilegeHint(SERVER_PORT);
  if (code === 'EMFILE' || code === 'ENFILE') return "the agent's or the system's limit of open files is reached";
  return "check the provider's kernel (IPv4, UDP) and memory";
}

function zeroCounters(): DhcpCounters {
  return {
    received: 0,
    ignoredWrongMac: 0,
    malformed: 0,
    offers: 0,
    acks: 0,
    naks: 0,
    releases: 0,
    declines: 0,
    dropped: 0,
    sendErrors: 0,
    socketErrors: 0,
    socketRetries: 0,
    rateLimited: 0,
  };
}
