import { constants } from 'node:os';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UdpPeer, hostKeyOfText, udpErrorClass } from '../../../guest/dns/udp-socket.js';
import { createHarness, describeNetns, type Harness, type Netns } from '../../harness/index.js';
import { compiled } from './dns-topology.js';

describe('UDP peer keys', () => {
  it('give an IPv4 sender the same key as its text, as TCP reports it', () => {
    fc.assert(
      fc.property(fc.ipV4(), (text) => {
        const octets = text.split('.').map(Number) as [number, number, number, number];
        const peer = new UdpPeer(4, 53, ((octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]) >>> 0);
        expect(peer.hostKey()).toBe(hostKeyOfText(text));
        expect(peer.addressText()).toBe(text);
      }),
    );
  });

  it('give an IPv6 sender the same key as any spelling of its text', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 }), (groups) => {
        const words = [0, 2, 4, 6].map((i) => (((groups[i] ?? 0) << 16) | (groups[i + 1] ?? 0)) >>> 0) as [number, number, number, number];
        const peer = new UdpPeer(6, 53, ...words);
        const padded = groups.map((group) => group.toString(16).padStart(4, '0').toUpperCase()).join(':');
        expect(peer.hostKey()).toBe(hostKeyOfText(padded));
      }),
    );
    expect(hostKeyOfText('::1')).toBe(new UdpPeer(6, 53, 0, 0, 0, 1).hostKey());
  });
});

describe('udp-batch error classes', () => {
  /** Linux's numbers (asm-generic/errno.h) of errnos Node's os.constants lacks. */
  const NOT_IN_NODE: Record<string, number> = { EHOSTDOWN: 112, ENONET: 64 };
  const errno = (name: string): number => {
    const number = (constants.errno as Record<string, number | undefined>)[name] ?? NOT_IN_NODE[name];
    if (number === undefined) throw new Error(`no errno ${name}`);
    return number;
  };
  const classes = (names: readonly string[], direction: 'read' | 'send'): Record<string, string> =>
    Object.fromEntries(names.map((name) => [name, udpErrorClass(errno(name), direction)]));
  const every = (names: readonly string[], value: string): Record<string, string> => Object.fromEntries(names.map((name) => [name, value]));
  const AGAIN = ['EAGAIN', 'EINTR', 'ENOMEM', 'ENOBUFS'];
  /** ICMP errors the kernel queues on a connected socket (anyone can forge one), and sends' unreachables. */
  const PEER = ['ECONNREFUSED', 'ENETUNREACH', 'EHOSTUNREACH', 'EHOSTDOWN', 'ENONET', 'ENOPROTOOPT', 'EPROTO', 'EACCES', 'EMSGSIZE'];
  /** A send's lost route, source address or link, or a firewall's refusal; no read returns them. */
  const ROUTE = ['EINVAL', 'EADDRNOTAVAIL', 'ENETDOWN', 'ENODEV', 'EPERM'];
  const BROKEN = ['EBADF', 'ENOTSOCK', 'EFAULT', 'EOPNOTSUPP', 'ECONNABORTED', 'EDESTADDRREQ', 'ENOTCONN', 'EPIPE'];

  it('never stops a socket for what a peer, the network or a moment causes, and stops it for what says it is broken', () => {
    expect(classes([...AGAIN, ...PEER, ...ROUTE, ...BROKEN], 'read')).toEqual({ ...every(AGAIN, 'again'), ...every(PEER, 'datagram'), ...every([...ROUTE, ...BROKEN], 'fatal') });
    expect(classes([...AGAIN, ...PEER, ...ROUTE, ...BROKEN], 'send')).toEqual({ ...every(AGAIN, 'again'), ...every([...PEER, ...ROUTE], 'datagram'), ...every(BROKEN, 'fatal') });
  });

  it('takes an errno it does not list for a broken socket when reading (it may stay), and for a lost datagram when sending', () => {
    const listed = new Set([...AGAIN, ...PEER, ...ROUTE, ...BROKEN, 'EWOULDBLOCK'].map(errno));
    const unlisted = [...new Set(Object.values(constants.errno))].filter((number) => !listed.has(number));
    expect(unlisted.length).toBeGreaterThan(50);
    fc.assert(
      fc.property(fc.constantFrom(...unlisted), (number) => {
        expect(udpErrorClass(number, 'read')).toBe('fatal');
        expect(udpErrorClass(number, 'send')).toBe('datagram');
      }),
    );
  });
});

describeNetns('udp-batch sockets in a namespace', () => {
  let harness: Harness;
  let ns: Netns;
  let report: Record<string, Record<string, unknown> | string | null>;

  beforeAll(async () => {
    const [fixture = ''] = compiled(['test/guest/dns/fixtures/udp-socket', 'guest/dns/udp-socket', 'guest/dns/upstream']);
    harness = createHarness('udp');
    ns = await harness.namespace('sockets');
    // The fixture exits by itself only if closing released every socket and poll handle.
    // --expose-gc: it drops handles and collects them, to see what their finalizers close.
    const { stdout } = await ns.exec([process.execPath, '--expose-gc', fixture], { timeoutMs: 20_000 });
    report = JSON.parse(stdout) as typeof report;
  });

  afterAll(async () => {
    await harness?.cleanup();
  });

  it('names what went wrong when binding or connecting fails', () => {
    expect(report['missingAddress']).toBe('socket:EADDRNOTAVAIL');
    expect(report['portInUse']).toBe('socket:EADDRINUSE');
    expect(report['badAddress']).toBe('socket:EINVAL');
    expect(report['connectNoRoute']).toBe('socket:ENETUNREACH');
  });

  it("reads a link-local address's zone as glibc does, a name or an index, and says so where it names no interface", () => {
    // lo has no link-local address: the kernel's ENETUNREACH, once the zone was read as lo (index
    // 1). An index was taken for a name (ENODEV, "no such device"), and tried again for ever.
    const noZone = 'zone:ENXIO';
    expect(report['zones']).toEqual({
      'fe80::1%lo': 'socket:ENETUNREACH',
      'fe80::1%1': 'socket:ENETUNREACH',
      'fe80::1%01': 'socket:ENETUNREACH',
      'fe80::1%nosuch0': noZone,
      'fe80::1%99999': noZone,
      // Index 0 is no interface's: read as none, the kernel's EINVAL (a link-local address needs
      // one), a socket's error tried again for ever.
      'fe80::1%0': noZone,
      'fe80::1%00': noZone,
      '[fe80::1%lo]': 'socket:EINVAL',
      // lo too, as glibc reads these: a name up to a ':' (the kernel's look-up cuts an alias
      // label off), an index of any length (this one, 80 characters in all, was cut short: EINVAL).
      'fe80::1%lo:1': 'socket:ENETUNREACH',
      [`fe80::1%${'1'.padStart(72, '0')}`]: 'socket:ENETUNREACH',
      // Refused, not read cut short as lo: longer than the addon's buffer, the copy stopping at a
      // whole character (no upstream is that long), or holding a NUL (where C's reading stops).
      [`fe80::1%${'1'.padStart(118, '0')}é`]: 'socket:EINVAL',
      'fe80::1%lo\u0000x': 'socket:EINVAL',
    });
    // Over TCP too (Node's net reads fe80::1%1 as naming no link).
    expect(report['tcpZones']).toEqual({ 'fe80::1%1': 'socket:ENETUNREACH', 'fe80::1%nosuch0': noZone, 'fe80::1%99999': noZone, 'fe80::1%0': noZone });
  });

  it('tells the interface a zone names, by name or index, as a connect reads it: what the forwarder compares link-local upstreams by', () => {
    expect(report['zoneIndexes']).toEqual({
      'fe80::1%lo': 1,
      'fe80::1%1': 1,
      'FE80::1%01': 1,
      'fe80::1%nosuch0': null,
      'fe80::1%99999': null,
      'fe80::1%0': null,
      'fe80::1': null,
      'fe80::1%lo:1': 1,
      [`fe80::1%${'1'.padStart(72, '0')}`]: 1,
      [`fe80::1%${'1'.padStart(118, '0')}é`]: null,
      'fe80::1%lo\u0000x': null,
    });
  });

  it('shows an IPv6 address with its port in brackets in what a failed bind or connect says, IPv4 as it is', () => {
    // `fe80::1%lo:53` was read as a zone "lo:53", or an address ending in :53.
    expect(report['endpointMessages']).toEqual({
      connectV6: 'cannot connect UDP to [fe80::1%lo]:53: connect: Network is unreachable',
      connectZone: 'cannot connect UDP to [fe80::1%nosuch0]:5353: the zone %nosuch0 names no interface: no interface has that name (on a link-local address) or that index',
      connectV4: 'cannot connect UDP to 198.51.100.1:53: connect: Network is unreachable',
      bindV6: 'cannot bind UDP [::1]:PORT: bind: Address already in use',
      tcpThroughLinkV6: 'cannot connect TCP to [::1]:53 through nosuchlink0: the kernel has no interface of index 999999',
      tcpThroughZone: 'cannot connect TCP to [fe80::1%nosuch0]:53: the zone %nosuch0 names no interface: no interface has that name (on a link-local address) or that index',
    });
  });

  it('says why a zone could not be read where that is no fault of the zone (out of descriptors), rather than that it names no interface', () => {
    // Taken for a zone naming no interface, an upstream was never tried again.
    expect(report['zonesOutOfDescriptors']).toEqual({
      'fe80::1%lo': 'socket:EMFILE',
      'tcp fe80::1%lo': 'socket:EMFILE',
      'fe80::1%1': 'socket:EMFILE',
      'tcp fe80::1%1': 'socket:EMFILE',
    });
  });

  it('refuses a link index that is no whole number (tcpConnect, bindToIndex), never taking 0.5 for 0 (no link) nor 1.5 for 1', () => {
    const refused = 'RangeError:EINVAL';
    expect(report['linkIndexes']).toEqual({
      'tcpConnect 0': 'fd',
      'tcpConnect 1': 'fd',
      'tcpConnect 0.5': refused,
      'tcpConnect 1.5': refused,
      'tcpConnect -1': refused,
      'tcpConnect NaN': refused,
      'tcpConnect 2147483648': refused,
      'bindToIndex 1': 'bound',
      'bindToIndex 0.5': refused,
      'bindToIndex 1.5': refused,
      'bindToIndex 0': refused,
    });
  });

  it('makes TCP connections through a named link for net.Socket, and says when it cannot', () => {
    expect(report['tcp']).toEqual({ echoed: 'echo:hello', refused: 'error:ECONNREFUSED', noSuchLink: 'socket:ENODEV' });
  });

  it("hands an exception its datagram handler throws to 'uncaughtException', not to the next call into the addon, and reads on", () => {
    expect(report['throwingHandler']).toEqual({ caught: ['thrown by the handler'], calls: 2, laterCall: null, outcome: 'done' });
  });

  it('hands nothing more to a handler that closed its socket mid-batch, and lets the process exit', () => {
    expect(report['closedInside']).toEqual({ calls: 1, errors: [], closed: true, sentAfter: 11 });
  });

  it('closes the descriptor of a handle dropped unclosed, and no other descriptor for a handle closed before', () => {
    // 8 dropped open, and the newer socket (the 8 closed ones hold no descriptor).
    expect(report['finalized']).toEqual({ openedBeforeGc: 9, openAfterGc: 1, newerStillOpen: null });
  });

  it('goes on reading a connected socket after an ICMP error, reporting it once', () => {
    // ECONNREFUSED (111) from a peer that was not listening yet, as an upstream that restarts
    // (or anyone who forges an ICMP error for our port) causes: the answers after it are read.
    expect(report['afterRefusal']).toEqual({ errors: [111], sends: [7, 7, 7], answers: 3 });
  });

  it('reports a connected socket the kernel destroyed (ss -K) failed for good, once, and reads it no more', () => {
    // ECONNABORTED (103): disconnected and unhashed, it would never read another answer; taken for
    // an ICMP error it was reported as one and polled on, deaf. A send on it then: EDESTADDRREQ (89).
    expect(report['destroyed']).toEqual({ killed: 1, errors: [], failed: ['ECONNABORTED'], answers: 1, sends: [-89] });
  });

  it('reports a socket failed for good when a send says it is broken, from the event loop and once', () => {
    // The send before the event loop saw the socket's error: its EDESTADDRREQ is the failure
    // reported; the error the kernel queued (ECONNABORTED) is not reported after it.
    expect(report['destroyedThenSent']).toEqual({ killed: 1, errors: [], failed: ['EDESTADDRREQ'], answers: 1, sends: [-89, -89] });
  });

  it('refuses to read a socket a send found broken before it was read, with the send\'s error', () => {
    // ECONNABORTED (103): its poll would have woken for the queued datagram for ever, reading
    // nothing, and its failure never been reported.
    expect(report['brokenBeforeReceive']).toEqual({ killed: 1, sent: -103, thrown: 'socket:ECONNABORTED', delivered: 0, failed: [] });
  });

  it("refuses another addon's socket handle (rtnl-events' to udp-batch, and the reverse) with a TypeError, never reading it as its own", () => {
    // Both took any external: a udp-batch handle closed by rtnl-events was read as its struct.
    const refused = 'TypeError:EINVAL';
    expect(report['foreignHandles']).toEqual({
      udpHandleToRtnl: { close: refused, watch: refused, receiveBuffer: refused },
      rtnlHandleToUdp: { close: refused, watch: refused, localPort: refused },
      plainObjectToUdp: { close: refused },
      numberToRtnl: { close: refused },
      ownStillOpen: { udp: 'number', rtnl: 'object' },
    });
  });

  it('reports no socket as failed for good while every socket can be read', () => {
    expect(report['failures']).toEqual([]);
  });

  for (const family of ['ipv4', 'ipv6'] as const) {
    it(`carries every datagram intact both ways over ${family}, up to 64 KiB, with the sender's port and address`, () => {
      const result = report[family] as Record<string, unknown>;
      const count = family === 'ipv4' ? 500 : 200;
      expect(result).toMatchObject({ outcome: 'done', served: count, echoed: count, wrongSender: 0, wrongBytes: 0, sendFailures: 0, serverKeyMatchesText: true });
    });

    it(`lets nothing but its peer reach a connected socket, and refuses sends once closed (${family})`, () => {
      const result = report[family] as Record<string, unknown>;
      expect(result['strangerSent']).toBe(3);
      expect(result['fromStranger']).toBe(0);
      expect(result['sendAfterClose']).toBe(-9);
    });
  }
});
