import { createSocket as createUdpSocket, type Socket as UdpSocket } from 'node:dgram';
import { createRequire } from 'node:module';
import pino from 'pino';
import { type ClientId, isClientId } from '../../shared/client-id.js';
import type { Logger } from '../../shared/log.js';
import { GATEWAY_IP } from '../../shared/scheme.js';
import { DhcpError } from './dhcp-error.js';
import { type DhcpRequest, type DropReason, type LinkClient, linkClientOf, readRequest, replyTo } from './dhcp-exchange.js';
import { type DhcpHandler, runChain } from './dhcp-handler.js';
import { DEFAULT_MAX_MESSAGE_LENGTH, encodeDhcpPacket, parseDhcpPacket } from './dhcp-packet.js';
import type { Ipv4Text } from './ipv4.js';
import { type LeaseInfo, leaseAt, nextLease } from './lease-table.js';
import { MESSAGE_TYPE, OPTION } from './option-code.js';
import { readUint16Option } from './option-values.js';
import { CLIENT_PORT, SERVER_PORT, replyDestination } from './reply-destination.js';
import { spectrumChain } from './spectrum-chain.js';
import { IP_HEADER, buildUdpDatagram, parseUdpDatagram } from './udp-frame.js';

// raw-socket is a native addon (CommonJS); load it only when a server starts.
const require = createRequire(import.meta.url);
type RawSocketModule = typeof import('raw-socket');
let rawModule: RawSocketModule | undefined;
function rawSocket(): RawSocketModule {
  rawModule ??= require('raw-socket') as RawSocketModule;
  return rawModule;
}

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
  /** Dropped for another reason: other server chosen, relayed, invalid request, unexpected type. */
  dropped: number;
  sendErrors: number;
  socketErrors: number;
}

export interface DhcpServer {
  /** Reconcile: open a socket for each new link, close those of links no longer given. */
  setLinks(links: readonly DhcpLink[]): Promise<void>;
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

/** One served link: a raw UDP socket bound to the device, receiving and sending. */
interface LinkSocket {
  readonly link: DhcpLink;
  readonly client: LinkClient;
  readonly socket: import('raw-socket').Socket;
}

/** All raw sockets receive into one buffer: each packet is parsed (copied) before the next read. */
const RECEIVE_BUFFER_BYTES = 65_536;

/**
 * Start the provider's DHCPv4 server. Each link gets a raw IPPROTO_UDP socket bound to it with
 * SO_BINDTODEVICE: it receives the client's broadcasts from 0.0.0.0 (which no dgram socket can tell
 * apart by link) and sends complete IP packets (IP_HDRINCL, source 169.254.0.1:67) out of that
 * link only: broadcasts to 255.255.255.255, unicasts to the client address through the /32 route
 * and permanent neighbour entry the agent keeps for it, so no ARP is needed before the client has
 * its address. A plain UDP socket holds 0.0.0.0:67 so that unicast renewals find a bound port and
 * the kernel does not answer them with ICMP port-unreachable; what it reads is discarded (the raw
 * socket already has a copy).
 */
export async function startDhcpServer(options: DhcpServerOptions = {}): Promise<DhcpServer> {
  const chain: readonly DhcpHandler[] = spectrumChain({
    ...(options.leaseSeconds !== undefined && { leaseSeconds: options.leaseSeconds }),
    ...(options.dnsServers !== undefined && { dnsServers: options.dnsServers }),
  });
  const log = options.logger ?? pino({ level: 'silent' });
  const raw = rawSocket();
  const receiveBuffer = Buffer.alloc(RECEIVE_BUFFER_BYTES);
  const sockets = new Map<string, LinkSocket>();
  const leases = new Map<string, LeaseInfo>();
  const counters: DhcpCounters = {
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
  };
  const portHolder = await bindServerPort();
  let closed = false;

  function count(ifname: string, request: DhcpRequest, drop: DropReason | undefined, replyType: number | undefined): void {
    if (drop === 'wrong-mac') counters.ignoredWrongMac += 1;
    else if (drop === 'released') counters.releases += 1;
    else if (drop === 'declined') counters.declines += 1;
    else if (drop !== undefined) counters.dropped += 1;
    else if (replyType === MESSAGE_TYPE.offer) counters.offers += 1;
    else if (replyType === MESSAGE_TYPE.ack) counters.acks += 1;
    else if (replyType === MESSAGE_TYPE.nak) counters.naks += 1;
    if (drop === 'declined') log.warn({ ifname, clientIp: request.link.clientIp }, 'client declined its address: something else on the link uses it');
  }

  function handle(served: LinkSocket, bytes: Buffer): void {
    let request: DhcpRequest;
    try {
      const datagram = parseUdpDatagram(bytes);
      if (datagram.destinationPort !== SERVER_PORT) return; // other UDP on the link (DNS, ...)
      counters.received += 1;
      request = readRequest(parseDhcpPacket(datagram.payload), served.client);
    } catch (error) {
      if (!(error instanceof DhcpError)) throw error;
      counters.malformed += 1;
      log.debug({ ifname: served.link.ifname, kind: error.kind }, error.message);
      return;
    }
    if (request.packet.giaddr !== '0.0.0.0') {
      counters.dropped += 1; // nothing relays on a point-to-point link
      return;
    }
    let response;
    try {
      response = runChain(chain, request, replyTo(request));
    } catch (error) {
      // Malformed options the handlers read (a 3-byte server id, ...).
      if (!(error instanceof DhcpError)) throw error;
      counters.malformed += 1;
      log.debug({ ifname: served.link.ifname, kind: error.kind }, error.message);
      return;
    }
    const replyType = response.drop === undefined ? response.packet.options.get(OPTION.messageType)?.[0] : undefined;
    count(served.link.ifname, request, response.drop, replyType);
    const lease = nextLease(leases.get(served.link.ifname), served.link.ifname, request, response, Date.now());
    if (lease !== undefined) leases.set(served.link.ifname, lease);
    if (response.drop !== undefined) {
      log.debug({ ifname: served.link.ifname, type: request.messageType, drop: response.drop }, 'no reply');
      return;
    }
    const destination = replyDestination(request, response);
    const maxLength = maxReplyLength(request);
    let frame: Uint8Array;
    try {
      frame = buildUdpDatagram({
        source: GATEWAY_IP,
        destination,
        sourcePort: SERVER_PORT,
        destinationPort: CLIENT_PORT,
        payload: encodeDhcpPacket(response.packet, maxLength),
      });
    } catch (error) {
      if (!(error instanceof DhcpError)) throw error;
      counters.sendErrors += 1;
      log.error({ ifname: served.link.ifname, kind: error.kind }, error.message);
      return;
    }
    send(served, frame, destination, replyType);
  }

  function send(served: LinkSocket, frame: Uint8Array, destination: Ipv4Text, replyType: number | undefined): void {
    const buffer = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
    served.socket.send(buffer, 0, buffer.length, destination, (error) => {
      if (error === null) {
        log.debug({ ifname: served.link.ifname, destination, type: replyType }, 'reply sent');
        return;
      }
      counters.sendErrors += 1;
      log.warn({ ifname: served.link.ifname, destination, err: error.message }, 'could not send a DHCP reply: check the link is up and has its /32 route and neighbour entry');
    });
  }

  function open(link: DhcpLink): LinkSocket {
    const socket = raw.createSocket({ protocol: raw.Protocol.UDP, bufferSize: 1 });
    socket.buffer = receiveBuffer;
    const served: LinkSocket = { link, client: linkClientOf(link.id), socket };
    socket.on('error', (error) => {
      // raw-socket closes the socket after an error; the next setLinks opens a new one.
      counters.socketErrors += 1;
      log.error({ ifname: link.ifname, err: error.message }, 'DHCP socket failed');
      if (sockets.get(link.ifname) === served) sockets.delete(link.ifname);
    });
    try {
      // The first option creates the socket. A packet from another link queued before the bind
      // is harmless: its chaddr cannot match this link's client, so it is ignored.
      socket.setOption(raw.SocketLevel.SOL_SOCKET, raw.SocketOption.SO_BINDTODEVICE, Buffer.from(link.ifname), Buffer.byteLength(link.ifname));
      socket.setOption(raw.SocketLevel.IPPROTO_IP, raw.SocketOption.IP_HDRINCL, 1);
      socket.setOption(raw.SocketLevel.SOL_SOCKET, raw.SocketOption.SO_BROADCAST, 1);
    } catch (error) {
      socket.close();
      throw new DhcpError('socket', `cannot open a DHCP socket on ${link.ifname}: ${error instanceof Error ? error.message : String(error)} (does the link exist, and does the agent have CAP_NET_RAW?)`);
    }
    socket.on('message', (bytes) => {
      try {
        handle(served, bytes);
      } catch (error) {
        log.error({ ifname: link.ifname, err: error instanceof Error ? error.stack : String(error) }, 'DHCP handler bug');
      }
    });
    return served;
  }

  return {
    async setLinks(links) {
      if (closed) throw new DhcpError('socket', 'the DHCP server is closed');
      links.forEach(checkLink);
      const wanted = new Map(links.map((link) => [link.ifname, link]));
      for (const [ifname, served] of sockets) {
        const link = wanted.get(ifname);
        if (link === undefined || link.ifindex !== served.link.ifindex || link.id !== served.link.id) {
          served.socket.close();
          sockets.delete(ifname);
          if (link === undefined || link.id !== served.link.id) leases.delete(ifname);
        }
      }
      for (const ifname of leases.keys()) if (!wanted.has(ifname)) leases.delete(ifname);
      const failures: string[] = [];
      for (const link of wanted.values()) {
        if (sockets.has(link.ifname)) continue;
        try {
          sockets.set(link.ifname, open(link));
        } catch (error) {
          failures.push(error instanceof Error ? error.message : String(error));
        }
      }
      if (failures.length > 0) throw new DhcpError('socket', `${failures.length} link(s) not served: ${failures.join('; ')}`);
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
      for (const served of sockets.values()) served.socket.close();
      sockets.clear();
      await new Promise<void>((resolve) => portHolder.close(() => resolve()));
    },
  };
}

/** The client's option 57 (whole IP datagram, at least 576) less IP and UDP headers, else 548. */
function maxReplyLength(request: DhcpRequest): number {
  let asked: number | undefined;
  try {
    asked = readUint16Option(request.packet.options, OPTION.maxMessageSize);
  } catch {
    asked = undefined;
  }
  if (asked === undefined || asked < 576) return DEFAULT_MAX_MESSAGE_LENGTH;
  return asked - IP_HEADER - 8;
}

/** Hold 0.0.0.0:67 so unicast requests are not answered with ICMP port-unreachable. */
async function bindServerPort(): Promise<UdpSocket> {
  const socket = createUdpSocket({ type: 'udp4', recvBufferSize: 4096 });
  socket.on('message', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('error', (error) => {
      socket.close();
      reject(new DhcpError('socket', `cannot bind UDP port 67: ${error.message} (is another DHCP server running in this namespace?)`));
    });
    socket.bind({ port: SERVER_PORT, address: '0.0.0.0', exclusive: true }, () => resolve());
  });
  socket.on('error', () => undefined);
  return socket;
}
