// Crafting and watching ICMP errors, for the firewall's tests of RELATED traffic: conntrack ties
// an ICMP error to whichever flow the header embedded in it names, so a test builds the error by
// hand (python3 raw sockets, struct-packed: no scapy here) to name any flow it likes.

/** A UDP flow as an ICMP error embeds it: the header of the packet the error is about. */
export interface EmbeddedUdp {
  readonly src: string;
  readonly sport: number;
  readonly dst: string;
  readonly dport: number;
}

export interface IcmpErrorSpec {
  /** Outer destination. */
  readonly to: string;
  /** Outer source (bound, so it must be an address of the sender); default: the route's. */
  readonly from?: string;
  readonly type: number;
  readonly code: number;
  /** Next-hop MTU, for frag-needed (type 3 code 4). */
  readonly mtu?: number;
  readonly about: EmbeddedUdp;
  /** Sent this many times, so one lost packet does not decide a test. */
  readonly copies?: number;
}

export const ICMP_UNREACHABLE = 3;
export const CODE_PORT_UNREACHABLE = 3;
export const CODE_FRAG_NEEDED = 4;

const CHECKSUM = [
  'def checksum(data):',
  '    if len(data) % 2: data += b"\\0"',
  '    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))',
  '    while total >> 16: total = (total & 0xFFFF) + (total >> 16)',
  '    return ~total & 0xFFFF',
];

/** argv: send `spec` once per copy from a raw ICMP socket (the kernel adds the outer IP header). */
export function icmpErrorSender(spec: IcmpErrorSpec): string[] {
  const { about } = spec;
  return [
    'python3',
    '-c',
    [
      'import socket, struct',
      ...CHECKSUM,
      'payload = b"hello"',
      `udp = struct.pack("!HHHH", ${about.sport}, ${about.dport}, 8 + len(payload), 0)`,
      `ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 0, 0x4000, 64, 17, 0, socket.inet_aton("${about.src}"), socket.inet_aton("${about.dst}"))`,
      'ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]',
      `icmp = struct.pack("!BBHHH", ${spec.type}, ${spec.code}, 0, 0, ${spec.mtu ?? 0}) + ip + udp`,
      'icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]',
      's = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)',
      ...(spec.from === undefined ? [] : [`s.bind(("${spec.from}", 0))`]),
      `for _ in range(${spec.copies ?? 3}): s.sendto(icmp, ("${spec.to}", 0))`,
    ].join('\n'),
  ];
}

/**
 * argv: print every ICMP message this namespace's stack receives, after the firewall (a raw
 * socket gets its copy after the input hook), one line each, errors with the flow they name:
 * `icmp 3/3 100.64.1.1>100.64.1.2 about 100.64.1.2:40001>169.254.0.1:53`. Prints "ready" first.
 */
export function icmpWatcher(): string[] {
  return [
    'python3',
    '-u',
    '-c',
    [
      'import socket, struct',
      's = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)',
      'print("ready")',
      'while True:',
      '    data = s.recv(65535)',
      '    ihl = (data[0] & 15) * 4',
      '    kind, code = data[ihl], data[ihl + 1]',
      '    line = "icmp %d/%d %s>%s" % (kind, code, socket.inet_ntoa(data[12:16]), socket.inet_ntoa(data[16:20]))',
      '    inner = data[ihl + 8:]',
      '    if kind in (3, 11, 12) and len(inner) >= 20 and inner[9] in (6, 17) and len(inner) >= (inner[0] & 15) * 4 + 4:',
      '        sport, dport = struct.unpack("!HH", inner[(inner[0] & 15) * 4:(inner[0] & 15) * 4 + 4])',
      '        line += " about %s:%d>%s:%d" % (socket.inet_ntoa(inner[12:16]), sport, socket.inet_ntoa(inner[16:20]), dport)',
      '    print(line)',
    ].join('\n'),
  ];
}

/** The watcher line for an error of `type`/`code` naming `about` (any outer addresses). */
export function errorLine(type: number, code: number, about: EmbeddedUdp): RegExp {
  const escape = (text: string): string => text.replaceAll('.', '\\.');
  return new RegExp(`icmp ${type}/${code} \\S+ about ${escape(about.src)}:${about.sport}>${escape(about.dst)}:${about.dport}`);
}

/**
 * argv: a UDP server on ip:port printing `from <ip>:<port> <payload>` per datagram (the sender
 * as it arrives, after masquerading), echoing only payloads that start with "echo", half a second
 * later. Prints "ready".
 */
export function udpEchoServer(ip: string, port: number): string[] {
  return [
    'python3',
    '-u',
    '-c',
    [
      'import socket, time',
      's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
      `s.bind(("${ip}", ${port}))`,
      'print("ready")',
      'while True:',
      '    data, peer = s.recvfrom(4096)',
      '    print("from %s:%d %s" % (peer[0], peer[1], data.decode(errors="replace")))',
      // Late, so that a sender that closes its socket right after sending has closed it (on a
      // loaded machine it may be preempted between send and close): the echo meets a closed port.
      '    if data.startswith(b"echo"): time.sleep(0.5); s.sendto(data, peer)',
    ].join('\n'),
  ];
}

/**
 * argv: a UDP socket on local:lport connected to remote:rport that sends `payload` and then
 * keeps the flow's socket open (printing "sent") until killed, or closes it at once if `close`.
 */
export function udpFlow(local: string, lport: number, remote: string, rport: number, payload: string, close = false): string[] {
  return [
    'python3',
    '-u',
    '-c',
    [
      'import socket, time',
      's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
      `s.bind(("${local}", ${lport}))`,
      `s.connect(("${remote}", ${rport}))`,
      `s.send(b"${payload}")`,
      ...(close ? ['s.close()'] : []),
      'print("sent")',
      ...(close ? [] : ['time.sleep(600)']),
    ].join('\n'),
  ];
}
