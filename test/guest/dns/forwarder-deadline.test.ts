// How long the forwarder waits for an answer: each upstream has a query to itself for a short time
// (timeoutMs, 1.5 s by default) before the next is asked too, but the query as a whole waits
// longer (queryTimeoutMs, 4 s by default, under a stub resolver's 5 s) before its client gets
// SERVFAIL, the last upstream asked again meanwhile, and an answer that comes late from an
// upstream asked before is still taken. Scripted upstreams answer each name as its first label
// says (see their fixture), some of them seconds late; each forwarder listens on its own address.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DnsError } from '../../../guest/dns/dns-error.js';
import { startDnsForwarder } from '../../../guest/dns/forwarder.js';
import { createHarness, describeNetns, type Harness } from '../../harness/index.js';
import { buildTopology, compiled, requireDnsTools, type DnsTopology } from './dns-topology.js';
import { scriptedWorld } from './scripted-world.js';

const FIRST = { address: '192.0.2.61', answer: '192.0.2.71' };
const SECOND = { address: '192.0.2.62', answer: '192.0.2.72' };

/**
 * slowN: the first answers N hundredths of a second late; the second never answers them.
 * late: the first answers 2.5 s late, the second SERVFAIL at once.
 * lame: neither answers. www: both at once.
 * bigfail: the first never answers, the second SERVFAIL at once, 8,000 bytes of it.
 * held: the first never answers, the second SERVFAIL at once (held while the first may answer).
 */
const FIRST_LABELS = { slow14: 'slow:1400', slow16: 'slow:1600', slow25: 'slow:2500', slow30: 'slow:3000', late: 'slow:2500', lame: 'silent', bigfail: 'silent', held: 'silent' };
const SECOND_LABELS = { slow14: 'silent', slow16: 'silent', slow25: 'silent', slow30: 'silent', late: 'servfail', lame: 'silent', bigfail: 'big-servfail:8000', held: 'servfail' };

interface Answer {
  readonly status: string;
  /** The A record's address, or '' for none. */
  readonly address: string;
  /** dig's "Query time", in ms. */
  readonly ms: number;
}

describe('DNS forwarder options: how long it waits', () => {
  it('refuses a query time shorter than an upstream\'s: one line saying so', async () => {
    const started = startDnsForwarder({ upstreams: [], timeoutMs: 2000, queryTimeoutMs: 1000 });
    await expect(started).rejects.toThrow(DnsError);
    await expect(started).rejects.toThrow('queryTimeoutMs must be at least timeoutMs (2000), got 1000');
  });
});

describeNetns('DNS forwarder waiting for slow upstreams', () => {
  let harness: Harness;
  let net: DnsTopology;
  const { scriptedUpstream, start, track, stopAll } = scriptedWorld(() => ({ harness, net }));

  /** dig as a stub resolver asks: one try, waiting up to 8 s (longer than any time under test). */
  async function ask(listen: string, name: string, tcp = false): Promise<Answer> {
    const { stdout } = await net.client.exec(['dig', `@${listen}`, '+time=8', '+tries=1', ...(tcp ? ['+tcp'] : []), `${name}.test.example`], { allowFailure: true });
    return {
      status: /status: (\w+)/.exec(stdout)?.[1] ?? 'none',
      address: /^\S+\s+\d+\s+IN\s+A\s+(\S+)$/m.exec(stdout)?.[1] ?? '',
      ms: Number(/Query time: (\d+) msec/.exec(stdout)?.[1] ?? Number.NaN),
    };
  }

  beforeAll(async () => {
    requireDnsTools();
    harness = createHarness('dnsdead');
    net = await buildTopology(harness);
    await scriptedUpstream(FIRST, FIRST_LABELS);
    await scriptedUpstream(SECOND, SECOND_LABELS);
  });

  afterAll(async () => {
    await stopAll();
    await harness?.cleanup();
  });

  it('relays the answer of its one upstream that comes after 1.5 s, over UDP and TCP, by default', async () => {
    const listen = '169.254.0.60';
    const forwarder = await start(listen, { upstreams: [FIRST.address] });
    // Before: SERVFAIL at 1.5 s for each of these but the first.
    expect(await ask(listen, 'slow14')).toMatchObject({ status: 'NOERROR', address: FIRST.answer });
    expect(await ask(listen, 'slow16')).toMatchObject({ status: 'NOERROR', address: FIRST.answer });
    expect(await ask(listen, 'slow25')).toMatchObject({ status: 'NOERROR', address: FIRST.answer });
    expect(await ask(listen, 'slow30', true)).toMatchObject({ status: 'NOERROR', address: FIRST.answer });
    // Its time to itself was up for the three after the first (it had no other upstream to go
    // on to): counted, and the query sent again to it with backoff meanwhile.
    const counters = await forwarder.counters();
    expect(counters).toMatchObject({ answered: 4, upstreamTimeouts: 3, failed: 0, lateAnswers: 0 });
    expect(Number(counters['retransmits'])).toBeGreaterThan(0);
  });

  it('answers SERVFAIL only at the query time, 4 s by default: before a stub resolver asks again at 5 s', async () => {
    const listen = '169.254.0.61';
    const forwarder = await start(listen, { upstreams: [FIRST.address] });
    const udp = await ask(listen, 'lame');
    expect(udp.status).toBe('SERVFAIL');
    expect(udp.ms).toBeGreaterThanOrEqual(3950);
    expect(udp.ms).toBeLessThan(5000);
    const tcp = await ask(listen, 'lame', true);
    expect(tcp.status).toBe('SERVFAIL');
    expect(tcp.ms).toBeGreaterThanOrEqual(3950);
    expect(tcp.ms).toBeLessThan(5000);
    expect(await forwarder.counters()).toMatchObject({ failed: 2, upstreamTimeouts: 2 });
  });

  it("takes an upstream's late answer after the query went on to the next, which does not answer or answers SERVFAIL: the first good answer wins, over UDP and TCP", async () => {
    const listen = '169.254.0.62';
    const forwarder = await start(listen, { upstreams: [FIRST.address, SECOND.address] });
    // The first answers at 2.5 s, the second (asked at 1.5 s) never: before, SERVFAIL at 3 s.
    expect(await ask(listen, 'slow25')).toMatchObject({ status: 'NOERROR', address: FIRST.answer });
    expect(await ask(listen, 'slow25', true)).toMatchObject({ status: 'NOERROR', address: FIRST.answer });
    // The second answers SERVFAIL at once: held while the first may still answer (before, relayed at 1.5 s).
    expect(await ask(listen, 'late')).toMatchObject({ status: 'NOERROR', address: FIRST.answer });
    expect(await ask(listen, 'late', true)).toMatchObject({ status: 'NOERROR', address: FIRST.answer });
    expect(await forwarder.counters()).toMatchObject({ answered: 4, lateAnswers: 4, upstreamTimeouts: 4, failed: 0, upstreamErrors: 0 });
    // The first is slow, not down: still asked first (it answered each query itself).
    expect(await ask(listen, 'www')).toMatchObject({ status: 'NOERROR', address: FIRST.answer });
    expect(forwarder.process.stderr).not.toContain('first from now on');
  });

  it('relays the SERVFAIL held for a query once no upstream asked before may answer, and at the query time where one is silent', async () => {
    const listen = '169.254.0.63';
    const forwarder = await start(listen, { upstreams: [FIRST.address, SECOND.address], timeoutMs: 500, queryTimeoutMs: 2000 });
    // The first answers at 2.5 s, past the query's 2 s: the second's SERVFAIL, held, is relayed then.
    const late = await ask(listen, 'late');
    expect(late.status).toBe('SERVFAIL');
    expect(late.ms).toBeGreaterThanOrEqual(1950);
    expect(late.ms).toBeLessThan(2500);
    expect(await forwarder.counters()).toMatchObject({ answered: 1, failed: 0, lateAnswers: 0 });
  });

  it('holds a SERVFAIL while an upstream asked before may answer as 4,096 bytes at most: a larger one is relayed truncated, whatever the client takes', async () => {
    const listen = '169.254.0.66';
    const forwarder = await start(listen, { upstreams: [FIRST.address, SECOND.address], timeoutMs: 300, queryTimeoutMs: 1000 });
    // A client that takes 65,535 bytes over UDP (its OPT record's payload size).
    const name = Buffer.from('\x07bigfail\x04test\x07example\x00', 'latin1');
    const query = Buffer.concat([Buffer.from([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]), name, Buffer.from([0, 1, 0, 1]), Buffer.from([0, 0, 41, 0xff, 0xff, 0, 0, 0, 0, 0, 0])]);
    const [queryFixture = ''] = compiled(['test/guest/dns/fixtures/query']);
    const request = { mode: 'raw', server: listen, port: 53, packets: [query.toString('hex')], holdMs: 5000 };
    const { stdout } = await net.client.exec([process.execPath, queryFixture, JSON.stringify(request)]);
    const [hex] = JSON.parse(stdout) as (string | null)[];
    const reply = Buffer.from(hex ?? '', 'hex');
    // SERVFAIL, TC set, relayed at the query's time. Before: the whole 8,000 bytes held (up to
    // 64 KiB a query, 256 MiB for a full pending table) and relayed.
    expect(reply.readUInt16BE(0)).toBe(0x1234);
    expect(reply[3]! & 0x0f).toBe(2);
    expect(reply[2]! & 0x02).toBe(0x02);
    expect(reply.length).toBeLessThanOrEqual(4096);
    expect(await forwarder.counters()).toMatchObject({ answered: 1, truncated: 1, failed: 0 });
    // Over TCP the whole failure answer goes, as the upstream sent it.
    const tcp = await net.client.exec(['dig', `@${listen}`, '+time=8', '+tries=1', '+tcp', 'bigfail.test.example'], { allowFailure: true });
    expect(tcp.stdout).toMatch(/status: SERVFAIL/);
    expect(Number(/MSG SIZE {2}rcvd: (\d+)$/m.exec(tcp.stdout)?.[1])).toBeGreaterThan(4096);
  });

  it('keeps no more TCP connections to upstreams open than client TCP queries may be in flight: at that bound, a query asking its next upstream ends its earlier connection first', async () => {
    // Eight upstreams that take TCP connections and never answer, on ports of the first's address.
    const ports = Array.from({ length: 8 }, (_, index) => 5301 + index);
    const script = `const net = require('node:net'); let ready = 0;
      for (const port of ${JSON.stringify(ports)}) net.createServer((socket) => socket.on('error', () => {})).listen(port, '${FIRST.address}', () => { if (++ready === ${ports.length}) console.log('ready'); });`;
    const silent = net.internet.spawn([process.execPath, '-e', script]);
    track(silent);
    await silent.waitForOutput(/^ready$/m);
    const listen = '169.254.0.67';
    // 4 client TCP queries at most (4 connections, 1 query each): 4 upstream connections at most.
    // Each upstream has a query 100 ms to itself, the query 3 s: each asks all 8 within 0.8 s.
    const forwarder = await start(listen, {
      upstreams: ports.map((port) => `${FIRST.address}:${port}`),
      timeoutMs: 100,
      queryTimeoutMs: 3000,
      maxTcpConnections: 4,
      maxTcpConnectionsPerClient: 4,
      maxTcpQueriesPerConnection: 1,
    });
    const answers = Promise.all(Array.from({ length: 4 }, () => ask(listen, 'lame', true)));
    /** The provider's (the forwarder's) established TCP connections to those upstreams. */
    const openUpstream = async (): Promise<number> => {
      const { stdout } = await net.provider.exec(['ss', '-Htn', 'state', 'established', 'dst', FIRST.address]);
      return stdout.split('\n').filter((line) => ports.some((port) => line.includes(`${FIRST.address}:${port}`))).length;
    };
    const seen: number[] = [];
    await new Promise((resolve) => setTimeout(resolve, 1200));
    for (let sample = 0; sample < 5; sample++) {
      seen.push(await openUpstream());
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    // Before: each query kept all 8 open until its time, 32 in all.
    expect(Math.max(...seen)).toBeGreaterThan(0);
    expect(Math.max(...seen)).toBeLessThanOrEqual(4);
    for (const answer of await answers) expect(answer.status).toBe('SERVFAIL');
    // Each query did go on to every upstream in its time.
    const counters = await forwarder.counters();
    expect(counters).toMatchObject({ tcpQueries: 4, failed: 4 });
    expect(Number(counters['upstreamTimeouts'])).toBeGreaterThanOrEqual(4 * 7);
    expect(await openUpstream()).toBe(0);
  });

  it('keeps to that bound when queries begin while earlier ones hold it: a query asking its first upstream ends the connection another query kept longest', async () => {
    // Eight upstreams that take TCP connections and never answer, on ports of the first's address.
    const ports = Array.from({ length: 8 }, (_, index) => 5311 + index);
    const script = `const net = require('node:net'); let ready = 0;
      for (const port of ${JSON.stringify(ports)}) net.createServer((socket) => socket.on('error', () => {})).listen(port, '${FIRST.address}', () => { if (++ready === ${ports.length}) console.log('ready'); });`;
    const silent = net.internet.spawn([process.execPath, '-e', script]);
    track(silent);
    await silent.waitForOutput(/^ready$/m);
    const listen = '169.254.0.68';
    // 4 client TCP queries at most: 4 upstream connections at most. Each upstream has a query
    // 100 ms to itself, the query 3 s.
    const forwarder = await start(listen, {
      upstreams: ports.map((port) => `${FIRST.address}:${port}`),
      timeoutMs: 100,
      queryTimeoutMs: 3000,
      maxTcpConnections: 4,
      maxTcpConnectionsPerClient: 4,
      maxTcpQueriesPerConnection: 1,
    });
    const openUpstream = async (): Promise<number> => {
      const { stdout } = await net.provider.exec(['ss', '-Htn', 'state', 'established', 'dst', FIRST.address]);
      return stdout.split('\n').filter((line) => ports.some((port) => line.includes(`${FIRST.address}:${port}`))).length;
    };
    // The first query alone, until it has asked all 8 and holds 4 (its earlier ones kept, its
    // own oldest ended at the bound as it asked its next); then three more, each asking its first.
    const first = ask(listen, 'lame', true);
    for (let tries = 0; tries < 40 && (await openUpstream()) < 4; tries++);
    await new Promise((resolve) => setTimeout(resolve, 700));
    const seen: number[] = [await openUpstream()];
    const others = Promise.all(Array.from({ length: 3 }, () => ask(listen, 'lame', true)));
    const until = performance.now() + 1500;
    while (performance.now() < until) seen.push(await openUpstream());
    // Before: each of the three opened its first past the bound (the first query's four kept: it
    // asks no more, so ends none of them), 7 until the first query's time.
    expect(seen[0]).toBe(4);
    // Past the bound in two samples running: a sample of ss is no instant (a dump walks the
    // kernel's table while the forwarder resets one connection and opens the next, and may list
    // both, 5 once in a few runs); queries past it each hold theirs for the rest of their time.
    const past = seen.filter((open, at) => open > 4 && (seen[at - 1] ?? 0) > 4);
    expect(past).toEqual([]);
    for (const answer of [await first, ...(await others)]) expect(answer.status).toBe('SERVFAIL');
    expect(await forwarder.counters()).toMatchObject({ tcpQueries: 4, failed: 4 });
    expect(await openUpstream()).toBe(0);
  });

  it("answers a query at once whose connection kept for a late answer another query ended at that bound, its latest upstream having failed: not never", async () => {
    const listen = '169.254.0.69';
    // 3 client TCP queries at most: 3 upstream connections at most. Each upstream has a query
    // 300 ms to itself, the query 6 s (dig waits 8).
    const forwarder = await start(listen, {
      upstreams: [FIRST.address, SECOND.address],
      timeoutMs: 300,
      queryTimeoutMs: 6000,
      maxTcpConnections: 3,
      maxTcpConnectionsPerClient: 3,
      maxTcpQueriesPerConnection: 1,
    });
    const openUpstream = async (): Promise<number> => {
      const { stdout } = await net.provider.exec(['ss', '-Htn', 'state', 'established', '( dport = :53 )']);
      return stdout.split('\n').filter((line) => line.trim() !== '').length;
    };
    const until = async (count: number): Promise<void> => {
      for (let tries = 0; tries < 100 && (await openUpstream()) < count; tries++) await new Promise((resolve) => setTimeout(resolve, 20));
    };
    // The first: the first upstream silent, kept open once the second is asked, whose SERVFAIL
    // is held while the first may still answer: one connection, kept.
    const held = ask(listen, 'held', true);
    await new Promise((resolve) => setTimeout(resolve, 600));
    // The second asks both (both silent): its latest and one kept. Three open: the bound.
    const lame = ask(listen, 'lame', true);
    await until(3);
    await new Promise((resolve) => setTimeout(resolve, 600));
    // The third, asking its first at the bound, ends the connection kept longest: the first
    // query's last. Before, that query waited for nothing, never answered (its client's
    // connection held for good); now its held SERVFAIL is relayed then, before its time.
    const third = ask(listen, 'lame', true);
    const first = await held;
    expect(first.status).toBe('SERVFAIL');
    expect(first.ms).toBeLessThan(6000);
    for (const answer of [await lame, await third]) expect(answer.status).toBe('SERVFAIL');
    expect(await forwarder.counters()).toMatchObject({ tcpQueries: 3 });
    expect(await openUpstream()).toBe(0);
  });

  it('takes both times as options: an upstream passed over sooner, a query given up on sooner', async () => {
    const listen = '169.254.0.64';
    const forwarder = await start(listen, { upstreams: [FIRST.address], timeoutMs: 300, queryTimeoutMs: 1000 });
    const udp = await ask(listen, 'slow14');
    expect(udp.status).toBe('SERVFAIL');
    expect(udp.ms).toBeGreaterThanOrEqual(950);
    expect(udp.ms).toBeLessThan(1400);
    const tcp = await ask(listen, 'slow14', true);
    expect(tcp.status).toBe('SERVFAIL');
    expect(tcp.ms).toBeGreaterThanOrEqual(950);
    expect(tcp.ms).toBeLessThan(1400);
    expect(await forwarder.counters()).toMatchObject({ failed: 2, upstreamTimeouts: 2 });
    // A short time to itself, the default query time: the answer at 1.6 s is relayed.
    const passedOver = await start('169.254.0.65', { upstreams: [FIRST.address, SECOND.address], timeoutMs: 300 });
    expect(await ask('169.254.0.65', 'slow16')).toMatchObject({ status: 'NOERROR', address: FIRST.answer });
    expect(await passedOver.counters()).toMatchObject({ answered: 1, lateAnswers: 1, upstreamTimeouts: 2 });
  });
});
