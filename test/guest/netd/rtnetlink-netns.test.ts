// The agent's two rtnetlink sockets under load, in a namespace of their own: the notification
// socket (our addon) through an overflow, a throwing listener and a close from its callback; the
// request socket (rtnl.c's) under more requests at once than a receive buffer holds answers for,
// datagrams from another sender, a request the kernel never answers, and a close while a batch
// runs; the agent over both when a
// notification, or a link in every dump, cannot be decoded; routes
// via an IPv6 next hop (RFC 5549); dumps the kernel marks interrupted by a change, ends with an
// error, or refuses (NLMSG_ERROR); and a bridge's messages about its port.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createHarness, describeNetns, type Harness } from '../../harness/index.js';
import { compiled } from '../dns/dns-topology.js';

describeNetns('rtnetlink sockets in a namespace', () => {
  let harness: Harness;
  let events: Record<string, Record<string, unknown>>;
  let flood: { code: number | null; stderr: string; report: Record<string, unknown> | null };
  let undecodable: Record<string, unknown>;
  let viaIpv6: Record<string, unknown>;
  let interrupted: Record<string, Record<string, unknown>>;
  let failedDump: Record<string, Record<string, unknown>>;
  let refusedDump: Record<string, Record<string, unknown>>;
  let bridgePort: Record<string, unknown>;
  let requestSocket: { code: number | null; stderr: string; report: Record<string, unknown> | null };

  beforeAll(async () => {
    const [
      eventsFixture = '',
      floodFixture = '',
      undecodableFixture = '',
      viaIpv6Fixture = '',
      interruptedFixture = '',
      bridgePortFixture = '',
      failedDumpFixture = '',
      refusedDumpFixture = '',
      requestSocketFixture = '',
    ] = compiled([
      'test/guest/netd/fixtures/rtnl-events',
      'test/guest/netd/fixtures/rtnetlink-flood',
      'test/guest/netd/fixtures/undecodable-notification',
      'test/guest/netd/fixtures/route-via-ipv6',
      'test/guest/netd/fixtures/interrupted-dump',
      'test/guest/netd/fixtures/bridge-port',
      'test/guest/netd/fixtures/failed-dump',
      'test/guest/netd/fixtures/refused-dump',
      'test/guest/netd/fixtures/request-socket',
      'test/guest/netd/fixtures/request-programs',
      'shared/rtnl-socket',
      'guest/netd/rtnl-events',
      'guest/netd/rtnetlink',
      'guest/netd/agent',
    ]);
    harness = createHarness('rtnl');
    // The fixture exits by itself only if closing released every socket and poll handle.
    const { stdout } = await (await harness.namespace('events')).exec([process.execPath, eventsFixture], { timeoutMs: 20_000 });
    events = JSON.parse(stdout) as typeof events;
    const result = await (await harness.namespace('flood')).exec([process.execPath, floodFixture], { timeoutMs: 60_000, allowFailure: true });
    flood = { code: result.code, stderr: result.stderr, report: result.code === 0 ? (JSON.parse(result.stdout) as Record<string, unknown>) : null };
    const mangling = await (await harness.namespace('undec')).exec([process.execPath, undecodableFixture], { timeoutMs: 30_000 });
    undecodable = JSON.parse(mangling.stdout) as typeof undecodable;
    viaIpv6 = JSON.parse((await (await harness.namespace('via6')).exec([process.execPath, viaIpv6Fixture], { timeoutMs: 20_000 })).stdout) as typeof viaIpv6;
    // Up to 6 takes of each of its two cases (all 12: 13 s here), taken again on a loaded machine,
    // where each is slower.
    interrupted = JSON.parse((await (await harness.namespace('intr')).exec([process.execPath, interruptedFixture], { timeoutMs: 90_000 })).stdout) as typeof interrupted;
    bridgePort = JSON.parse((await (await harness.namespace('brport')).exec([process.execPath, bridgePortFixture], { timeoutMs: 30_000 })).stdout) as typeof bridgePort;
    failedDump = JSON.parse((await (await harness.namespace('fdump')).exec([process.execPath, failedDumpFixture], { timeoutMs: 30_000 })).stdout) as typeof failedDump;
    refusedDump = JSON.parse((await (await harness.namespace('rdump')).exec([process.execPath, refusedDumpFixture], { timeoutMs: 30_000 })).stdout) as typeof refusedDump;
    const socketResult = await (await harness.namespace('rsock')).exec([process.execPath, requestSocketFixture], { timeoutMs: 30_000, allowFailure: true });
    requestSocket = { code: socketResult.code, stderr: socketResult.stderr, report: socketResult.code === 0 ? (JSON.parse(socketResult.stdout) as Record<string, unknown>) : null };
  }, 210_000);

  afterAll(async () => {
    await harness?.cleanup();
  });

  it('gets the receive buffer it asks for past net.core.rmem_max (SO_RCVBUFFORCE), and says so', () => {
    const forced = events['forced'] ?? {};
    expect(forced['forced']).toBe(true);
    expect(forced['bytes']).toBe(2 * Number(forced['asked']));
    expect(Number(forced['bytes'])).toBeGreaterThan(2 * Number(forced['rmemMax']));
  });

  it('reports an overflow of its buffer, fails not, tells nothing sent before the report after it, and reads the notifications after it', () => {
    const overflow = events['overflow'] ?? {};
    expect(overflow['overflows']).toBeGreaterThanOrEqual(1);
    expect(overflow['failures']).toEqual([]);
    // Of the burst, only what was read before the overflow was met; what the socket held then
    // (some of it, before the notifications lost) is discarded: replayed over the agent's re-read
    // of the whole state, it would put back what has gone since.
    expect(overflow['burstLinksSeen']).toBeLessThan(200);
    expect(overflow['burstLinksSeenAfterOverflow']).toBe(0);
    expect(overflow['lateSeen']).toBe(true);
    expect(overflow['failuresAtEnd']).toEqual([]);
  });

  it('tells nothing queued before a loss after the overflow, though the socket held more than one discard takes', () => {
    const report = events['overflowPastOneDrain'] ?? {};
    expect(report['fdFound']).toBe(true);
    expect(report['shrinkStatus']).toBe(0);
    // Made small: one discard takes far less than the notifications of the 100 pairs queued.
    expect(Number(report['smallBuffer'])).toBeLessThan(16_384);
    expect(report['overflows']).toBe(1);
    expect(report['heldSeenAfterOverflow']).toBe(0);
    expect(report['growStatus']).toBe(0);
    expect(report['laterSeen']).toBe(true);
    expect(report['failures']).toEqual([]);
  });

  it("hands a listener's exception to 'uncaughtException', once, and reads on", () => {
    expect(events['throwing']).toEqual({ caught: ['thrown by the listener'], calls: 2, failures: [] });
  });

  it('delivers nothing more once closed from its own callback, and lets the process exit', () => {
    expect(events['closedInside']).toEqual({ calls: 1, reused: 'the rtnetlink notification socket is closed' });
  });

  it('answers every request of a flood larger than its buffer holds answers for, instead of aborting', () => {
    expect(flood.code, flood.stderr).toBe(0);
    expect(flood.report?.['answered']).toBe(flood.report?.['count']);
    expect(flood.report?.['firstRejection']).toBeNull();
  });

  it('takes answers from the kernel alone: refusals forged by another netlink socket, numbered as its next requests, are passed over and each request answered', () => {
    expect(requestSocket.code, requestSocket.stderr).toBe(0);
    const report = requestSocket.report ?? {};
    expect(report['forgedRefusals']).toBe(20);
    expect(report['underForgery']).toEqual({ answered: 10 });
  });

  it('reads off what fills its buffer between two requests before it sends the next: that one is answered at once', () => {
    const report = requestSocket.report ?? {};
    // Python's socket sent until the buffer took no more.
    expect(Number(report['filling'])).toBeGreaterThan(10);
    expect(report['whenFull']).toBe('answered');
    expect(report['afterFull']).toBe('answered');
  });

  it('fails a request the kernel never answers after 5 s, sends none of its batch behind it, and answers the next', () => {
    const report = requestSocket.report ?? {};
    const timedOut = 'netlink: request timed out: no answer from the kernel within 5 s';
    expect(report['unanswered']).toBe(timedOut);
    expect(report['behind']).toBe('netlink: request timed out: not sent, the kernel having left a request before it in its batch unanswered for 5 s');
    expect(Number(report['unansweredMs'])).toBeGreaterThanOrEqual(4_900);
    // Neither group was set: the first was passed over, the second never sent.
    expect(report['groupAfterUnanswered']).toBe('default');
    expect(report['afterUnanswered']).toBe('answered');
  });

  it('rejects every request at once when closed while a batch runs, and closes its descriptor once the batch is done', () => {
    const report = requestSocket.report ?? {};
    expect(report['closed']).toEqual({ 'closed: the rtnetlink socket was closed (the agent is stopping)': 2000 });
    expect(report['fdClosed']).toBe(true);
  });

  it('has the agent read the whole state again when a notification cannot be decoded, and converge on what it said; warned once', () => {
    // Every link notification about p2 was made undecodable: the agent learnt of p2 only by re-reading.
    expect(Number(undecodable['mangled'])).toBeGreaterThanOrEqual(1);
    expect(undecodable['p1']).toBe('configured');
    expect(undecodable['p2']).toBe('configured');
    expect(undecodable['p2InView']).toBe(true);
    expect(undecodable['p2Routes']).toMatch(/^100\.64\.0\.2 .*scope link/m);
    expect(Number(undecodable['fullSyncs'])).toBeGreaterThan(Number(undecodable['fullSyncsAtStart']));
    expect(undecodable['undecodableWarnings']).toEqual([{ messageType: 'NEWLINK', error: 'a link message of 4 bytes, shorter than its fixed header (16)' }]);
  });

  it('skips a link that cannot be decoded in its re-reads, names it once, and serves the links after it', () => {
    // p3: a link with a malformed attribute the agent reads, in notifications and dumps alike. Its
    // notifications asked for re-reads; each skipped it, and none stopped the agent.
    expect(undecodable['fatal']).toBeNull();
    expect(undecodable['p3InView']).toBe(false);
    expect(undecodable['p4']).toBe('configured');
    expect(Number(undecodable['reReadsWithP3'])).toBeGreaterThanOrEqual(1);
    expect(undecodable['skippedWarnings']).toEqual([
      { messageType: 'NEWLINK', ifindex: undecodable['p3Ifindex'], error: 'IFLA_GROUP: Unexpected length (got 2, expected 4)', keptAsLastRead: false },
      { messageType: 'NEWLINK', ifindex: undecodable['p5Ifindex'], error: 'IFLA_GROUP: Unexpected length (got 2, expected 4)', keptAsLastRead: true },
    ]);
  });

  it('serves a link whose every message carries a malformed attribute it does not read (IFLA_MTU of 2 bytes), warning of nothing', () => {
    expect(undecodable['p6']).toBe('configured');
    expect(undecodable['p6Routes']).toMatch(/^100\.64\.0\.6 .*scope link/m);
    const warnings = undecodable['allWarnings'] as { ifindex?: number | null; error?: string }[];
    expect(warnings.filter((line) => line.ifindex === undecodable['p6Ifindex'])).toEqual([]);
    // Every error warned of is p3's or p5's IFLA_GROUP, or p2's notifications cut short.
    const errors = warnings.flatMap((line) => (line.error === undefined ? [] : [line.error]));
    expect(errors.filter((error) => !error.startsWith('IFLA_GROUP: ') && !error.startsWith('a link message of 4 bytes'))).toEqual([]);
  });

  it("reads the kernel's IPv4 routes via an IPv6 next hop (RFC 5549), which the netlink package cannot, in a dump and as a notification, the next hop as their gateway", () => {
    const ifindex = viaIpv6['ifindex'];
    // The package's own parser throws on each (the dump has the kernel's local and broadcast routes besides, which it parses).
    expect((viaIpv6['dumpSays'] as string[]).filter((said) => said !== 'parsed')).toEqual(['Unexpected length for RouteVia', 'Unexpected length for RouteVia']);
    // All added by `ip route add`, which marks them boot (rtm_protocol 3). Via a gateway: not
    // routes on the link (as a client's /32 route of the agent's is).
    expect(viaIpv6['dumped']).toEqual([
      { dst: '0.0.0.0', dstLength: 0, oif: ifindex, gateway: 'fe80::1', priority: 0, protocol: 3 },
      { dst: '203.0.113.0', dstLength: 24, oif: ifindex, gateway: 'fe80::1', priority: 7, protocol: 3 },
    ]);
    expect(viaIpv6['skipped']).toEqual([]);
    // Nothing changed while it was dumped: no table said to be inconsistent.
    expect(viaIpv6['inconsistent']).toEqual([]);
    expect(viaIpv6['notificationSays']).toEqual(['Unexpected length for RouteVia']);
    expect(viaIpv6['told']).toEqual([{ op: 'new', route: { dst: '198.51.100.0', dstLength: 24, oif: ifindex, gateway: 'fe80::2', priority: 0, protocol: 3 } }]);
    expect(viaIpv6['losses']).toEqual([]);
  });

  it('takes a dump of the addresses again when the kernel marks it interrupted by a change (NLM_F_DUMP_INTR), up to 3 in a row, then uses the last', () => {
    const { once = {}, always = {} } = interrupted;
    const total = Number(interrupted['total']);
    // Each case was taken until the kernel interrupted the dumps it is about (the fixture's marks).
    // One change, under the first dump: a second is taken, whole, with the address added.
    expect(once['marks'], `attempts: ${String(once['attempts'])}`).toEqual([true, false]);
    expect(once).toMatchObject({ addressDumps: 2, newest: true, inconsistent: [], skipped: 0 });
    expect(Number(once['addresses'])).toBeGreaterThan(total);
    // A change under every dump: the third is used, and said to be inconsistent.
    expect(always['marks'], `attempts: ${String(always['attempts'])}`).toEqual([true, true, true]);
    expect(always).toMatchObject({ addressDumps: 3, inconsistent: ['addresses'], skipped: 0 });
    expect(Number(always['addresses'])).toBeGreaterThan(total);
  });

  it('takes a dump of the links again when the kernel ends it with an error in its NLMSG_DONE (EINVAL), up to 3 in a row, then uses the last and says which table failed how', () => {
    const { once = {}, always = {} } = failedDump;
    // One failed dump: the second is taken, whole.
    expect(once).toEqual({ linkDumps: 2, links: ['lo', 'v0', 'v1'], failed: [], inconsistent: [] });
    // Every one failed (before any link): the third is used as it is, and said to have failed.
    expect(always).toEqual({ linkDumps: 3, links: [], failed: [{ table: 'links', error: 'EINVAL' }], inconsistent: [] });
  });

  it('takes a dump of the routes again when the kernel refuses it with an NLMSG_ERROR (EBUSY: a dump of the socket still running), up to 3 in a row, then uses the last and says so', () => {
    const { once = {}, always = {}, after = {} } = refusedDump;
    // One refused: the second is taken, whole.
    expect(once).toEqual({ routeDumps: 2, routes: ['100.64.0.0/24'], links: 3, failed: [], inconsistent: [] });
    // Every one refused: the third is used as it is (no route at all), and said to have been refused; the other tables are read.
    expect(always).toEqual({ routeDumps: 3, routes: [], links: 3, failed: [{ table: 'routes', error: 'EBUSY', refused: true }], inconsistent: [] });
    expect(after).toEqual({ routeDumps: 1, routes: ['100.64.0.0/24'], links: 3, failed: [], inconsistent: [] });
  });

  it('fails the dump at once, in one line, when the kernel refuses a request as wrong in itself (EOPNOTSUPP: a type it has no handler for)', () => {
    const { wrong = {} } = refusedDump;
    expect(wrong['routeDumps']).toBe(1);
    expect(wrong['rejected']).toEqual({
      name: 'NetdError',
      kind: 'dump-refused',
      message: "the kernel refused the agent's request to dump its routes (NLMSG_ERROR ENOTSUP), as wrong in itself: is this kernel built with IPv4 (CONFIG_INET)?",
    });
  });

  it("takes a bridge's messages about its port (AF_BRIDGE) for nothing: the link keeps its group, and is not gone, nor its address, as it leaves the bridge", () => {
    const v0 = { inView: true, group: 7, address: true };
    expect(bridgePort['atStart']).toEqual(v0);
    expect(bridgePort['asPort']).toEqual(v0);
    expect(bridgePort['afterLeaving']).toEqual(v0);
    // Every step's notifications were told before the report.
    expect(bridgePort['markers']).toBe(2);
    expect(bridgePort['deletions']).toBe(0);
    expect(bridgePort['losses']).toEqual([]);
  });

  it('keeps a served link that became unreadable as last read, not taken as gone: still configured and routed to', () => {
    expect(undecodable['p5']).toBe('configured');
    expect(undecodable['p5InView']).toBe(true);
    expect(undecodable['p5Routes']).toMatch(/^100\.64\.0\.5 .*scope link/m);
  });
});
