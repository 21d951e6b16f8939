// The forwarder's listening UDP socket failing (its poll cannot go on: the fixture fails it as the
// udp-batch addon reports it, which nothing outside the process can cause): it is bound again,
// with backoff while binding fails or the new socket fails at once (which the agent's rebind() at
// each link change does not cut short: checked on a clock the test moves), warned about once per streak,
// status and log never saying it listens while it does not, and nothing said after close(). An
// upstream's socket failing: the upstream is connected again, with the same backoff while its new
// sockets fail at once (a lost route, though, at the next link change), the streak being that of
// the link's device, not its name; a query whose socket failed under it going out again out of
// another socket of its upstream, or once that is connected again; a send that found its socket
// broken counted once.
// Each forwarder listens on its own gateway address, so the tests do not disturb each other.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { UDP_SETTLED_MS } from '../../../guest/dns/forwarder.js';
import { RECONNECT_MAX_MS, reconnectDelayMs } from '../../../guest/dns/upstream-reachability.js';
import { createHarness, describeNetns, type Harness, type NetnsProcess } from '../../harness/index.js';
import { DEAD_UPSTREAM, ForwarderProcess, UPSTREAM_A, UPSTREAM_B, buildTopology, compiled, eventually, replaceResolvConf, requireDnsTools, startUpstream, type DnsTopology } from './dns-topology.js';

const TIMEOUT_MS = 500;
/** Bound again at the longest backoff, with room for a loaded machine. */
const REBOUND_MS = RECONNECT_MAX_MS + 3000;

interface LogLine {
  readonly level: number;
  readonly msg: string;
  /** When it was written (pino: Date.now() of the forwarder's process). */
  readonly time: number;
}

/** Timers fire late, never early, save for clocks' rounding. */
const CLOCK_SLACK_MS = 5;

/**
 * How many rebinds of a failure streak are due within `ms` of the failure that began it (0.25,
 * 0.75, 1.75, 3.75 s...): measured on the forwarder's clock, a loaded machine only makes fewer.
 */
function rebindsDueWithin(ms: number): number {
  let due = 0;
  for (let at = reconnectDelayMs(0); at <= ms + CLOCK_SLACK_MS; at += reconnectDelayMs(due)) due += 1;
  return due;
}

const WARN = 40;
const INFO = 30;

/** The forwarder's JSON log lines written after `from` characters of its stderr. */
function logLines(forwarder: ForwarderProcess, from = 0): LogLine[] {
  return forwarder.process.stderr
    .slice(from)
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as LogLine);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The agent calls rebind() at every change of links: a storm of them, each after the last; the counters after. */
async function linkStorm(forwarder: ForwarderProcess): Promise<Record<string, unknown>> {
  let counters: Record<string, unknown> = {};
  for (let change = 0; change < 5; change++) counters = await forwarder.rebind();
  return counters;
}

/** Said when a socket to an upstream failed: the wait before it is connected again. */
const UPSTREAM_FAILED = /^a socket to the upstream resolver failed: connecting to it again in ([\d.]+) s$/;

/** [wait in s, level] of each failure of a socket to an upstream said since `from`. */
function upstreamFailures(forwarder: ForwarderProcess, from: number): [string | undefined, number][] {
  return logLines(forwarder, from)
    .filter((line) => UPSTREAM_FAILED.test(line.msg))
    .map((line) => [UPSTREAM_FAILED.exec(line.msg)?.[1], line.level]);
}

/** What the picky upstream (its fixture) answers every query but those from the first port it heard from. */
const PICKY_ANSWER = '192.0.2.82';

describeNetns("DNS forwarder whose listening UDP socket fails", () => {
  let harness: Harness;
  let net: DnsTopology;
  let confDir: string;
  const started: ForwarderProcess[] = [];

  async function start(options: Record<string, unknown>): Promise<ForwarderProcess> {
    const forwarder = await ForwarderProcess.start(net.provider, { timeoutMs: TIMEOUT_MS, upstreams: [UPSTREAM_A], ...options });
    started.push(forwarder);
    return forwarder;
  }

  /** The answer for www.test.example from the forwarder at `server`, or '' for none. */
  async function ask(server: string): Promise<string> {
    return (await net.client.exec(['dig', `@${server}`, '+time=1', '+tries=1', '+short', 'www.test.example'], { allowFailure: true })).stdout.trim();
  }

  /** The local ports of the sockets `forwarder` has connected to `upstream` (ss names their process). */
  async function portsTo(forwarder: ForwarderProcess, upstream: string): Promise<string[]> {
    const listed = await net.provider.exec(['ss', '-H', '-u', '-n', '-p', 'dst', `${upstream}:53`]);
    return listed.stdout
      .split('\n')
      .filter((line) => line.includes(`pid=${forwarder.process.pid},`))
      .map((line) => {
        // Local address:port, then the peer's (no state column where all are alike).
        const fields = line.trim().split(/\s+/);
        return fields[fields.indexOf(`${upstream}:53`) - 1]?.split(':').at(-1) ?? '';
      });
  }

  /** The kernel destroys those sockets (ss -K), and `forwarder` has been told of each (its poll failed). */
  async function destroy(forwarder: ForwarderProcess, upstream: string, ports: readonly string[]): Promise<void> {
    const before = await forwarder.counter('sendErrors');
    const filter = ports.flatMap((port, i) => [...(i === 0 ? [] : ['or']), 'sport', '=', `:${port}`]);
    const killed = await net.provider.exec(['ss', '-K', '-H', '-u', '-n', 'dst', `${upstream}:53`, 'and', '(', ...filter, ')']);
    expect(killed.stdout.split('\n').filter((line) => line.trim() !== '').length, 'ss -K destroyed no socket: does the kernel have CONFIG_INET_DIAG_DESTROY?').toBe(ports.length);
    await eventually('the forwarder told of each socket destroyed', async () => (await forwarder.counter('sendErrors')) >= before + ports.length);
  }

  /** The picky upstream (see its fixture) at `address`, on the internet side; ready. */
  async function pickyUpstream(address: string): Promise<NetnsProcess> {
    const [fixture = ''] = compiled(['test/guest/dns/fixtures/picky-upstream']);
    await harness.addAddress(net.internet, 'inet0', `${address}/24`);
    const upstream = net.internet.spawn([process.execPath, fixture, JSON.stringify({ address, port: 53 })]);
    await upstream.waitForOutput(/^ready$/m);
    return upstream;
  }

  beforeAll(async () => {
    requireDnsTools();
    harness = createHarness('dnsre');
    net = await buildTopology(harness);
    startUpstream(net.internet, UPSTREAM_A, 'A');
    startUpstream(net.internet, UPSTREAM_B, 'B');
    confDir = mkdtempSync(join(tmpdir(), 'spectrum-dnsre-'));
    writeFileSync(join(confDir, 'resolv.conf'), `nameserver ${UPSTREAM_A}\n`);
    await eventually('the upstream resolvers', async () => {
      const answers = await Promise.all(
        [UPSTREAM_A, UPSTREAM_B].map((upstream) => net.provider.exec(['dig', `@${upstream}`, '+time=1', '+tries=1', '+short', 'www.test.example'], { allowFailure: true })),
      );
      return answers.every((result) => /192\.0\.2\.8/.test(result.stdout));
    });
  });

  afterAll(async () => {
    for (const forwarder of started) if (forwarder.process.exit === undefined) await forwarder.process.kill();
    await harness?.cleanup();
    if (confDir !== undefined) rmSync(confDir, { recursive: true, force: true });
  });

  it('does not say it listens when its new UDP socket failed while the TCP listener was bound, and binds it again after the backoff', async () => {
    const late = await start({ listen: '169.254.0.2' });
    expect((await late.counters())['listening']).toBe(false);
    await harness.addAddress(net.provider, 'cl0', '169.254.0.2/32');
    const mark = late.process.stderr.length;
    const after = await late.rebindFailing(false);
    expect(after['listening']).toBe(false);
    expect(String(after['lastBindError'])).toMatch(/^EBADF: .*its poll failed \(bound again in 0\.25 s\)$/);
    expect(logLines(late, mark).map((line) => line.msg)).toEqual(['DNS forwarder not listening on UDP: its socket failed; binding it again in 0.25 s']);
    await eventually('the UDP socket bound again', async () => (await late.counters())['listening'] === true, REBOUND_MS);
    expect((await late.counters())['lastBindError']).toBeNull();
    expect(await ask('169.254.0.2')).toBe('192.0.2.80');
    expect(logLines(late, mark).filter((line) => line.msg === 'DNS forwarder listening')).toHaveLength(1);
  });

  it('leaves a UDP socket that failed while the TCP listener was bound to its backoff, even for a rebind() asked meanwhile', async () => {
    const late = await start({ listen: '169.254.0.3', manualClock: true });
    await harness.addAddress(net.provider, 'cl0', '169.254.0.3/32');
    // The second rebind() runs a round of its own after the first: the failed socket is not in it.
    const after = await late.rebindFailing(true);
    expect(after['listening']).toBe(false);
    expect(after['listeningSockets']).toBe(1);
    expect((await late.advance(reconnectDelayMs(0) - 1))['listeningSockets']).toBe(1);
    const bound = await late.advance(1);
    expect(bound['listening']).toBe(true);
    expect(bound['listeningSockets']).toBe(2);
    expect(bound['lastBindError']).toBeNull();
    expect(await ask('169.254.0.3')).toBe('192.0.2.80');
  });

  it('binds a UDP socket that keeps failing again only when its backoff is due, however many link changes ask meanwhile', async () => {
    const forwarder = await start({ listen: '169.254.0.8', manualClock: true });
    await harness.addAddress(net.provider, 'cl0', '169.254.0.8/32');
    expect((await forwarder.rebind())['listening']).toBe(true);
    const mark = forwarder.process.stderr.length;
    // From now on each socket bound fails as soon as it is read.
    expect((await forwarder.fail('listening-at-once'))['listening']).toBe(false);
    let bound = 1;
    for (let round = 0; round < 5; round++) {
      const wait = reconnectDelayMs(round);
      const stormed = await linkStorm(forwarder);
      expect({ round, sockets: stormed['listeningSockets'], listening: stormed['listening'] }).toEqual({ round, sockets: bound, listening: false });
      expect((await forwarder.advance(wait - 1))['listeningSockets']).toBe(bound);
      bound += 1;
      expect({ round, sockets: (await forwarder.advance(1))['listeningSockets'] }).toEqual({ round, sockets: bound });
    }
    // Each failure waited the next backoff: the storms moved none of them, nor added any.
    const waits = logLines(forwarder, mark)
      .filter((line) => /its socket failed/.test(line.msg))
      .map((line) => /binding it again in ([\d.]+) s/.exec(line.msg)?.[1]);
    expect(waits).toEqual(['0.25', '0.5', '1', '2', '2', '2']);
    // Once sockets hold again, the rebind due binds one for good; link changes then find it listening.
    await forwarder.fail('none-at-once');
    expect((await linkStorm(forwarder))['listeningSockets']).toBe(bound);
    expect((await forwarder.advance(RECONNECT_MAX_MS))['listening']).toBe(true);
    const settled = await linkStorm(forwarder);
    expect(settled['listening']).toBe(true);
    expect(settled['listeningSockets']).toBe(bound + 1);
    expect(await ask('169.254.0.8')).toBe('192.0.2.80');
  });

  it('tries a rebind that failed again with backoff until it binds, then answers', async () => {
    const forwarder = await start({ listen: '169.254.0.4' });
    await harness.addAddress(net.provider, 'cl0', '169.254.0.4/32');
    expect((await forwarder.rebind())['listening']).toBe(true);
    // Gone from the link: the socket bound to it stays, binding a new one fails (EADDRNOTAVAIL).
    await net.provider.ip(['address', 'del', '169.254.0.4/32', 'dev', 'cl0']);
    const mark = forwarder.process.stderr.length;
    const before = await forwarder.fail('listening');
    expect(before['listening']).toBe(false);
    // Rebinds at 0.25, 0.75, 1.75 s (then 3.75): a few, not one every 0.25 s (no more than are
    // due by the forwarder's clock, which this process's late timers do not move), and more than
    // the first (waited for).
    const attempts = async (): Promise<number> => Number((await forwarder.counters())['bindAttempts']) - Number(before['bindAttempts']);
    await sleep(2500);
    const sample = await forwarder.counters();
    const elapsedMs = Number(sample['fixtureMs']) - Number(before['fixtureMs']);
    expect(Number(sample['bindAttempts']) - Number(before['bindAttempts'])).toBeLessThanOrEqual(rebindsDueWithin(elapsedMs));
    await eventually('a failed rebind tried again', async () => (await attempts()) >= 2, REBOUND_MS);
    const during = await forwarder.counters();
    expect(during['listening']).toBe(false);
    expect(String(during['lastBindError'])).toMatch(/EADDRNOTAVAIL/);
    // Warned once, when the socket failed; the first failed bind at info, the same failure again not at all.
    const lines = logLines(forwarder, mark);
    expect(lines.filter((line) => line.level >= WARN).map((line) => line.msg)).toEqual(['DNS forwarder not listening on UDP: its socket failed; binding it again in 0.25 s']);
    expect(lines.filter((line) => line.level === INFO && /not listening: .*trying again in 0\.5 s/.test(line.msg))).toHaveLength(1);
    expect(lines.filter((line) => /not listening/.test(line.msg))).toHaveLength(2);
    expect(lines.some((line) => line.msg === 'DNS forwarder listening')).toBe(false);
    await harness.addAddress(net.provider, 'cl0', '169.254.0.4/32');
    await eventually('the UDP socket bound again', async () => (await forwarder.counters())['listening'] === true, REBOUND_MS);
    expect((await forwarder.counters())['lastBindError']).toBeNull();
    expect(await ask('169.254.0.4')).toBe('192.0.2.80');
  });

  it('backs off a UDP socket that fails again as soon as it is bound, warning once, and binds it for good once it holds', async () => {
    const forwarder = await start({ listen: '169.254.0.5' });
    await harness.addAddress(net.provider, 'cl0', '169.254.0.5/32');
    expect((await forwarder.rebind())['listening']).toBe(true);
    const mark = forwarder.process.stderr.length;
    await forwarder.fail('listening-at-once');
    // Failures at 0, 0.25, 0.75, 1.75 s (then 3.75): without backoff, one every 0.25 s. Each after
    // the first no sooner (by the forwarder's clock) than its rebind was due; a second one waited for.
    const failed = (): ReturnType<typeof logLines> => logLines(forwarder, mark).filter((line) => /its socket failed/.test(line.msg));
    await sleep(2500);
    await eventually('the rebound socket failed again', async () => failed().length >= 2, REBOUND_MS);
    const failures = failed();
    const first = failures[0]?.time ?? 0;
    expect(failures.map((line, k) => k <= rebindsDueWithin(line.time - first))).toEqual(failures.map(() => true));
    expect(failures.map((line) => line.level)).toEqual([WARN, ...failures.slice(1).map(() => INFO)]);
    expect(failures.map((line) => /binding it again in ([\d.]+) s/.exec(line.msg)?.[1])).toEqual(['0.25', '0.5', '1', '2', '2', '2'].slice(0, failures.length));
    await forwarder.fail('none-at-once');
    await eventually('the UDP socket bound again', async () => (await forwarder.counters())['listening'] === true, REBOUND_MS);
    expect(await ask('169.254.0.5')).toBe('192.0.2.80');
  });

  it('says nothing after close(), not even of its UDP socket failing while it closes', async () => {
    const forwarder = await start({ listen: '169.254.0.6' });
    await harness.addAddress(net.provider, 'cl0', '169.254.0.6/32');
    expect((await forwarder.rebind())['listening']).toBe(true);
    const mark = forwarder.process.stderr.length;
    await forwarder.closeFailing();
    await forwarder.process.wait();
    await forwarder.process.waitClosed();
    expect(forwarder.process.stderr.slice(mark)).toBe('');
  });

  it('connects again an upstream whose sockets the kernel destroyed (ss -K), and answers through it again', async () => {
    const forwarder = await start({ listen: '169.254.0.9' });
    await harness.addAddress(net.provider, 'cl0', '169.254.0.9/32');
    expect((await forwarder.rebind())['listening']).toBe(true);
    expect(await ask('169.254.0.9')).toBe('192.0.2.80');
    const mark = forwarder.process.stderr.length;
    // Disconnected and unhashed, they would never read another answer (the other forwarders'
    // sockets to A go too: each connects again on its own).
    const killed = await net.provider.exec(['ss', '-K', '-H', '-u', '-n', 'dst', `${UPSTREAM_A}:53`]);
    expect(killed.stdout.split('\n').filter((line) => line.trim() !== '').length, 'ss -K destroyed no socket: does the kernel have CONFIG_INET_DIAG_DESTROY?').toBeGreaterThanOrEqual(64);
    await eventually(
      'the upstream connected again',
      async () => logLines(forwarder, mark).some((line) => line.msg === 'a socket to the upstream resolver failed: connecting to it again in 0.25 s'),
      REBOUND_MS,
    );
    await eventually('answers through the upstream again', async () => (await ask('169.254.0.9')) === '192.0.2.80', REBOUND_MS);
    const warnings = logLines(forwarder, mark).filter((line) => line.level >= WARN) as (LogLine & { err?: string })[];
    expect(warnings.map((line) => line.err)).toEqual([expect.stringMatching(/\((ECONNABORTED|EDESTADDRREQ)\): the kernel destroyed it/)]);
  });

  it('connects again an upstream whose new sockets keep failing only when its backoff is due, however many link changes ask meanwhile; after a lost route, at the next one', async () => {
    // A query to A with no route gets SERVFAIL within dig's wait (the default query time, 4 s, is not).
    const forwarder = await start({ listen: '169.254.0.10', manualClock: true, queryTimeoutMs: TIMEOUT_MS });
    await harness.addAddress(net.provider, 'cl0', '169.254.0.10/32');
    const started = await forwarder.rebind();
    expect(started['listening']).toBe(true);
    /** Times upstream A was connected: each connection opens the same number of sockets. */
    const perConnection = Number(started['upstreamSockets']);
    expect(perConnection).toBeGreaterThan(0);
    const connections = (counters: Record<string, unknown>): number => Number(counters['upstreamSockets']) / perConnection;
    const mark = forwarder.process.stderr.length;
    /** [wait in s, level] of each failure said since `from`. */
    const failures = (from: number): [string | undefined, number][] =>
      logLines(forwarder, from)
        .filter((line) => UPSTREAM_FAILED.test(line.msg))
        .map((line) => [UPSTREAM_FAILED.exec(line.msg)?.[1], line.level]);
    // One of A's sockets fails now, and so does every one connected from now on, as soon as it is read.
    expect(connections(await forwarder.fail('upstreams-at-once'))).toBe(1);
    let connected = 1;
    for (let round = 0; round < 5; round++) {
      const wait = reconnectDelayMs(round);
      expect({ round, connections: connections(await linkStorm(forwarder)) }).toEqual({ round, connections: connected });
      expect({ round, connections: connections(await forwarder.advance(wait - 1)) }).toEqual({ round, connections: connected });
      connected += 1;
      expect({ round, connections: connections(await forwarder.advance(1)) }).toEqual({ round, connections: connected });
    }
    // Each failure waited the next backoff, warned about once: the storms moved none of them, nor added any.
    expect(failures(mark)).toEqual([['0.25', WARN], ...['0.5', '1', '2', '2', '2'].map((wait) => [wait, INFO])]);

    /** A query whose send meets a lost route to A (EHOSTUNREACH), which then comes back. */
    const loseRoute = async (): Promise<void> => {
      const before = await forwarder.counters();
      await net.provider.ip(['route', 'add', 'unreachable', `${UPSTREAM_A}/32`]);
      try {
        expect(await ask('169.254.0.10')).toBe('');
      } finally {
        await net.provider.ip(['route', 'del', 'unreachable', `${UPSTREAM_A}/32`]);
      }
      expect(Number((await forwarder.counters())['sendErrors'])).toBeGreaterThan(Number(before['sendErrors']));
    };
    // A lost route is not the sockets' doing: while a failure still waits (2 s), the next link
    // change connects A again, at once. The route is lost to a send, which goes out of a socket
    // that works (none goes out of one that failed): A is connected again once the last failure's
    // wait is over, with sockets that hold, and then one of them fails (the streak goes on).
    await forwarder.fail('none-at-once');
    connected += 1;
    expect(connections(await forwarder.advance(RECONNECT_MAX_MS))).toBe(connected);
    let from = forwarder.process.stderr.length;
    await forwarder.fail('upstream-newest');
    expect(failures(from)).toEqual([['2', INFO]]);
    await loseRoute();
    connected += 1;
    expect(connections(await forwarder.rebind())).toBe(connected);
    expect(await ask('169.254.0.10')).toBe('192.0.2.80');
    // The new sockets go on with the streak: one failing within a minute waits the longest, said at info.
    from = forwarder.process.stderr.length;
    await forwarder.fail('upstream-newest');
    expect(failures(from)).toEqual([['2', INFO]]);
    expect(connections(await linkStorm(forwarder))).toBe(connected);
    connected += 1;
    expect(connections(await forwarder.advance(RECONNECT_MAX_MS))).toBe(connected);
    // Sockets that held a minute end the streak: the next failure is warned about, and waits the least.
    await forwarder.advance(UDP_SETTLED_MS);
    from = forwarder.process.stderr.length;
    await forwarder.fail('upstream-newest');
    expect(failures(from)).toEqual([['0.25', WARN]]);
    connected += 1;
    expect(connections(await forwarder.advance(reconnectDelayMs(0)))).toBe(connected);
    // So do sockets that held a minute and were then replaced for a lost route.
    await forwarder.advance(UDP_SETTLED_MS);
    await loseRoute();
    connected += 1;
    expect(connections(await forwarder.rebind())).toBe(connected);
    from = forwarder.process.stderr.length;
    await forwarder.fail('upstream-newest');
    expect(failures(from)).toEqual([['0.25', WARN]]);
    connected += 1;
    expect(connections(await forwarder.advance(reconnectDelayMs(0)))).toBe(connected);
    expect(await ask('169.254.0.10')).toBe('192.0.2.80');
  });

  it("sends no query out of an upstream's socket that failed: its other sockets carry them, and once none is left, the next upstream does at once", async () => {
    // A query sent out of a failed socket is never answered (nothing reads that socket): it waited
    // out the whole timeout, while the upstream waits its backoff (up to 2 s) to be connected again.
    const forwarder = await start({ listen: '169.254.0.11', upstreams: [UPSTREAM_A, UPSTREAM_B], timeoutMs: 5000, manualClock: true });
    await harness.addAddress(net.provider, 'cl0', '169.254.0.11/32');
    const started = await forwarder.rebind();
    expect(started['listening']).toBe(true);
    expect(await ask('169.254.0.11')).toBe('192.0.2.80');
    const ports = await portsTo(forwarder, UPSTREAM_A);
    expect(ports).toHaveLength(Number(started['upstreamSockets']) / 2);
    // All of A's sockets but one: each query goes out of that one (one of the dead had all but
    // surely been picked by one of these queries, which would then have had no answer).
    await destroy(forwarder, UPSTREAM_A, ports.slice(1));
    // status names it, with how many of its sockets failed.
    expect((await forwarder.counters())['failingUpstreams']).toEqual([`${UPSTREAM_A}:53 (${ports.length - 1} of ${ports.length} sockets failed)`]);
    let sendErrors = await forwarder.counter('sendErrors');
    for (let query = 0; query < 4; query++) expect({ query, answer: await ask('169.254.0.11') }).toEqual({ query, answer: '192.0.2.80' });
    // Nor did a send meet a dead one (EDESTADDRREQ).
    expect(await forwarder.counter('sendErrors')).toBe(sendErrors);
    // None of A's left: B answers at once, nothing sent to A first (where it would wait out A's resend time).
    await destroy(forwarder, UPSTREAM_A, ports.slice(0, 1));
    sendErrors = await forwarder.counter('sendErrors');
    expect(await ask('169.254.0.11')).toBe('192.0.2.81');
    expect(await forwarder.counter('sendErrors')).toBe(sendErrors);
    // Connected again once its backoff is due, A is used again.
    const reconnected = await forwarder.advance(reconnectDelayMs(0));
    expect(reconnected['upstreamSockets']).toBe(Number(started['upstreamSockets']) * 1.5);
    expect(reconnected['failingUpstreams']).toEqual([]);
    expect(await ask('169.254.0.11')).toBe('192.0.2.80');
  });

  it('moves a query whose socket failed while it waited on to the next upstream at its resend, not after the whole timeout', async () => {
    const forwarder = await start({ listen: '169.254.0.12', upstreams: [DEAD_UPSTREAM, UPSTREAM_B], timeoutMs: 8000, manualClock: true });
    await harness.addAddress(net.provider, 'cl0', '169.254.0.12/32');
    expect((await forwarder.rebind())['listening']).toBe(true);
    // Sent to the dead upstream first, resent after 1 s (the first round-trip estimate), then after 3 s...
    const asking = net.client.exec(['dig', '@169.254.0.12', '+time=5', '+tries=1', '+short', 'www.test.example'], { allowFailure: true });
    await eventually('the query waiting for the dead upstream', async () => (await forwarder.counter('pending')) === 1);
    await destroy(forwarder, DEAD_UPSTREAM, await portsTo(forwarder, DEAD_UPSTREAM));
    // ...whose socket, gone, would bring no answer: the resend due moves it on to B instead.
    expect((await asking).stdout.trim()).toBe('192.0.2.81');
  });

  it('connects again only an upstream in use when one of its sockets fails, not one just retired', async () => {
    // A's sockets are kept until its queries could have timed out: long enough to fail one of
    // them however slowly this process goes.
    const retiredMs = 5000;
    const forwarder = await start({ listen: '169.254.0.7', upstreams: undefined, resolvConfPath: join(confDir, 'resolv.conf'), timeoutMs: retiredMs });
    await harness.addAddress(net.provider, 'cl0', '169.254.0.7/32');
    expect((await forwarder.rebind())['listening']).toBe(true);
    replaceResolvConf(confDir, `nameserver ${UPSTREAM_B}\n`);
    await eventually('upstream B in use', async () => JSON.stringify((await forwarder.counters())['upstreams']) === JSON.stringify([`${UPSTREAM_B}:53`]));
    const mark = forwarder.process.stderr.length;
    // The oldest open socket: one of A's.
    const retired = await forwarder.fail('upstream');
    expect(retired['sendErrors']).toBe(1);
    expect(logLines(forwarder, mark)).toEqual([]);
    expect(await ask('169.254.0.7')).toBe('192.0.2.81');
    // Once A's are closed, the oldest is one of B's: that link is connected again (until then,
    // failing A's oldest again says nothing).
    await eventually(
      "B's socket failed and said so",
      async () => {
        await forwarder.fail('upstream');
        return logLines(forwarder, mark).some((line) => UPSTREAM_FAILED.test(line.msg));
      },
      retiredMs + REBOUND_MS,
    );
    expect(logLines(forwarder, mark).filter((line) => line.level >= WARN).map((line) => line.msg)).toEqual(['a socket to the upstream resolver failed: connecting to it again in 0.25 s']);
    await eventually('upstream B answering again', async () => (await ask('169.254.0.7')) === '192.0.2.81', REBOUND_MS);
  });
  it("gives a device made again under the name of the link to the upstream provider a failure streak of its own, while the same device's sockets go on with theirs", async () => {
    const listen = '169.254.0.13';
    const own = '100.64.0.13';
    const forwarder = await start({ listen, upstreams: [listen], manualClock: true });
    await harness.addAddress(net.provider, 'cl0', `${listen}/32`);
    expect((await forwarder.rebind())['listening']).toBe(true);
    /** The link to the upstream provider, as the agent configures it (its peer left here: no query is sent); its index. */
    const makeLink = async (): Promise<number> => {
      const lines = ['link add vp13 type veth peer name vp13p', `address add ${own}/32 dev vp13`, 'link set vp13p up', 'link set vp13 up', `route add ${listen}/32 dev vp13`];
      await net.provider.exec(['ip', '-batch', '-'], { input: lines.join('\n') });
      return Number(/^(\d+):/.exec((await net.provider.ip(['-o', 'link', 'show', 'dev', 'vp13'])).stdout)?.[1]);
    };
    const route = (ifindex: number): { device: string; ifindex: number; source: string } => ({ device: 'vp13', ifindex, source: own });
    const firstIndex = await makeLink();
    const linked = await forwarder.setUpstreamLink(route(firstIndex));
    expect(linked['upstreams']).toEqual([`${listen}:53 via vp13 from ${own}`]);
    /** Times the upstream was connected: each connection opens the same number of sockets. */
    const perConnection = Number(linked['upstreamSockets']);
    expect(perConnection).toBeGreaterThan(0);
    const connections = (counters: Record<string, unknown>): number => Number(counters['upstreamSockets']) / perConnection;
    const failNewest = async (): Promise<[string | undefined, number][]> => {
      const from = forwarder.process.stderr.length;
      await forwarder.fail('upstream-newest');
      return upstreamFailures(forwarder, from);
    };
    expect(await failNewest()).toEqual([['0.25', WARN]]);
    expect(connections(await forwarder.advance(reconnectDelayMs(0)))).toBe(2);
    // The same device: sockets failing again within a minute go on with the streak.
    expect(await failNewest()).toEqual([['0.5', INFO]]);
    expect(connections(await forwarder.advance(reconnectDelayMs(1)))).toBe(3);
    // The device goes, and another is made under its name at once (within the minute), which the
    // agent names the link: its sockets failing begin a streak of their own (before, they went on
    // with the old device's: 1 s, said at info).
    await net.provider.ip(['link', 'del', 'vp13']);
    const secondIndex = await makeLink();
    expect(secondIndex).not.toBe(firstIndex);
    expect(connections(await forwarder.setUpstreamLink(route(secondIndex)))).toBe(4);
    expect(await failNewest()).toEqual([['0.25', WARN]]);
    expect(connections(await forwarder.advance(reconnectDelayMs(0)))).toBe(5);
    expect(await failNewest()).toEqual([['0.5', INFO]]);
  });

  it('counts a send of a query that finds its socket broken once in sendErrors, not again as that socket failing', async () => {
    const forwarder = await start({ listen: '169.254.0.15', manualClock: true });
    await harness.addAddress(net.provider, 'cl0', '169.254.0.15/32');
    const started = await forwarder.rebind();
    expect(started['listening']).toBe(true);
    const sockets = Number(started['upstreamSockets']);
    expect(sockets).toBeGreaterThan(0);
    // A query comes, and every socket to A is destroyed before the forwarder reads it: its send
    // fails (EDESTADDRREQ) before a poll says its socket failed (ECONNABORTED).
    const destroyed = await forwarder.fail('upstreams-at-send');
    expect(destroyed['destroyedSockets']).toBe(sockets);
    await eventually(
      'every socket to A said failed',
      async () => JSON.stringify((await forwarder.counters())['failingUpstreams']) === JSON.stringify([`${UPSTREAM_A}:53 (${sockets} of ${sockets} sockets failed)`]),
    );
    // One each: the sockets whose poll found them broken, and the one whose send did (the send
    // counted, not its socket's failure as well). Were the send on a socket already known broken,
    // it would be one more, a send of its own.
    expect(Number((await forwarder.counters())['sendErrors']) - Number(started['sendErrors'])).toBe(sockets);
  });

  it('sends a query whose socket failed while it waited, to its only upstream, again at its resend out of another socket of that upstream', async () => {
    const address = '192.0.2.57';
    const upstream = await pickyUpstream(address);
    try {
      const forwarder = await start({ listen: '169.254.0.16', upstreams: [address], timeoutMs: 8000, manualClock: true });
      await harness.addAddress(net.provider, 'cl0', '169.254.0.16/32');
      const started = await forwarder.rebind();
      expect(started['listening']).toBe(true);
      const asking = net.client.exec(['dig', '@169.254.0.16', '+time=6', '+tries=1', '+short', 'www.test.example'], { allowFailure: true });
      // The port the query went out of, which the upstream never answers; that socket then fails.
      const port = (await upstream.waitForOutput(/^query (\d+)$/m))[1] ?? '';
      await destroy(forwarder, address, [port]);
      // Answered through another of the upstream's sockets (before, SERVFAIL at its resend).
      expect((await asking).stdout.trim()).toBe(PICKY_ANSWER);
      // The clock has not moved: the upstream was not connected again meanwhile.
      const after = await forwarder.counters();
      expect(after['upstreamSockets']).toBe(started['upstreamSockets']);
      expect(after['failingUpstreams']).toEqual([`${address}:53 (1 of ${String(started['upstreamSockets'])} sockets failed)`]);
    } finally {
      await upstream.kill();
    }
  });

  it('holds a new query to its only upstream while none of its sockets works, sending it out of none, and sends it as soon as the upstream is connected again', async () => {
    const address = '192.0.2.59';
    await harness.addAddress(net.internet, 'inet0', `${address}/24`);
    const upstream = startUpstream(net.internet, address, 'A');
    try {
      const forwarder = await start({ listen: '169.254.0.18', upstreams: [address], timeoutMs: 8000, manualClock: true });
      await harness.addAddress(net.provider, 'cl0', '169.254.0.18/32');
      expect((await forwarder.rebind())['listening']).toBe(true);
      await eventually('the upstream answering', async () => (await ask('169.254.0.18')) === '192.0.2.80');
      // Every socket to the upstream gone; it is connected again only when the test moves the
      // recovery clock.
      await destroy(forwarder, address, await portsTo(forwarder, address));
      const before = await forwarder.counters();
      const asking = net.client.exec(['dig', '@169.254.0.18', '+time=6', '+tries=1', '+short', 'www.test.example'], { allowFailure: true });
      await eventually('the query waiting', async () => (await forwarder.counter('pending')) === 1);
      // Out of no socket: a send out of a destroyed one fails (EDESTADDRREQ), a sendError (before,
      // it went out of one, and again only at its resend once the upstream was connected again).
      const waiting = await forwarder.counters();
      expect({ sendErrors: waiting['sendErrors'], failed: waiting['failed'] }).toEqual({ sendErrors: before['sendErrors'], failed: 0 });
      // Connected again: it goes out at once, its first transmission (no retransmit), and is answered.
      await forwarder.advance(reconnectDelayMs(0));
      expect((await asking).stdout.trim()).toBe('192.0.2.80');
      const after = await forwarder.counters();
      expect({ retransmits: after['retransmits'], sendErrors: after['sendErrors'], failed: after['failed'] }).toEqual({
        retransmits: before['retransmits'],
        sendErrors: before['sendErrors'],
        failed: 0,
      });
    } finally {
      await upstream.kill();
    }
  });

  it('sends a query waiting for an upstream dropped from the list meanwhile (none of its sockets working) to the new upstream at once, not SERVFAIL at its deadline', async () => {
    const listen = '169.254.0.19';
    const dir = mkdtempSync(join(confDir, 'dropped-'));
    writeFileSync(join(dir, 'resolv.conf'), `nameserver ${UPSTREAM_A}\n`);
    const forwarder = await start({ listen, upstreams: undefined, resolvConfPath: join(dir, 'resolv.conf'), timeoutMs: 8000, manualClock: true });
    await harness.addAddress(net.provider, 'cl0', `${listen}/32`);
    expect((await forwarder.rebind())['listening']).toBe(true);
    await eventually('upstream A answering', async () => (await ask(listen)) === '192.0.2.80');
    // Every socket to A gone; A is connected again only when the test moves the recovery clock (never).
    await destroy(forwarder, UPSTREAM_A, await portsTo(forwarder, UPSTREAM_A));
    const asking = net.client.exec(['dig', `@${listen}`, '+time=6', '+tries=1', '+short', 'www.test.example'], { allowFailure: true });
    await eventually('the query waiting for A', async () => (await forwarder.counter('pending')) === 1);
    // resolv.conf now names B alone: nothing will connect A again, and B works. Waiting on for A,
    // the query was answered SERVFAIL at its deadline (8 s), B never asked.
    replaceResolvConf(dir, `nameserver ${UPSTREAM_B}\n`);
    expect((await asking).stdout.trim()).toBe('192.0.2.81');
    expect(await forwarder.counters()).toMatchObject({ upstreams: [`${UPSTREAM_B}:53`], failed: 0, pending: 0 });
  });

  /** A forwarder following its own resolv.conf (in a folder of its own) naming `upstreams`, listening on `listen`. */
  async function following(listen: string, upstreams: readonly string[], options: Record<string, unknown> = {}): Promise<{ forwarder: ForwarderProcess; dir: string }> {
    const dir = mkdtempSync(join(confDir, 'list-'));
    writeFileSync(join(dir, 'resolv.conf'), upstreams.map((upstream) => `nameserver ${upstream}\n`).join(''));
    const forwarder = await start({ listen, upstreams: undefined, resolvConfPath: join(dir, 'resolv.conf'), timeoutMs: 8000, ...options });
    await harness.addAddress(net.provider, 'cl0', `${listen}/32`);
    expect((await forwarder.rebind())['listening']).toBe(true);
    return { forwarder, dir };
  }

  it('sends a query already sent to an upstream dropped from the list meanwhile to the new upstream at its resend, not SERVFAIL', async () => {
    const listen = '169.254.0.20';
    const { forwarder, dir } = await following(listen, [DEAD_UPSTREAM]);
    // Sent to the dead upstream (resent after 1 s, then 3 s, 7 s; its time up at 8 s).
    const asking = net.client.exec(['dig', `@${listen}`, '+time=6', '+tries=1', '+short', 'www.test.example'], { allowFailure: true });
    await eventually('the query waiting for the dead upstream', async () => (await forwarder.counter('pending')) === 1);
    // resolv.conf now names B alone. Its tries counted against the new list's positions, the
    // query had used that list up: SERVFAIL once its time with the dead one was up, B never asked.
    replaceResolvConf(dir, `nameserver ${UPSTREAM_B}\n`);
    expect((await asking).stdout.trim()).toBe('192.0.2.81');
    expect(await forwarder.counters()).toMatchObject({ upstreams: [`${UPSTREAM_B}:53`], failed: 0, pending: 0 });
  });

  it('asks each upstream of a list rewritten under a query once, by address, not by the old positions', async () => {
    const listen = '169.254.0.21';
    const { forwarder, dir } = await following(listen, [DEAD_UPSTREAM, UPSTREAM_B], { timeoutMs: 2000 });
    const asking = net.client.exec(['dig', `@${listen}`, '+time=6', '+tries=1', '+short', 'www.test.example'], { allowFailure: true });
    await eventually('the query waiting for the dead upstream', async () => (await forwarder.counter('pending')) === 1);
    // The same upstreams, the other way round. Moving on from the dead one's old place (the first)
    // to the next place, the query went to the dead one again, then SERVFAIL: B never asked.
    replaceResolvConf(dir, `nameserver ${UPSTREAM_B}\nnameserver ${DEAD_UPSTREAM}\n`);
    await eventually('the list reordered', async () => JSON.stringify((await forwarder.counters())['upstreams']) === JSON.stringify([`${UPSTREAM_B}:53`, `${DEAD_UPSTREAM}:53`]));
    expect((await asking).stdout.trim()).toBe('192.0.2.81');
    expect(await forwarder.counters()).toMatchObject({ upstreamTimeouts: 1, failed: 0, pending: 0 });
  });

  it('sends a query waiting for its upstream to be connected again to an upstream added to the list meanwhile, at once', async () => {
    const listen = '169.254.0.22';
    const { forwarder, dir } = await following(listen, [UPSTREAM_A], { manualClock: true });
    await eventually('upstream A answering', async () => (await ask(listen)) === '192.0.2.80');
    // Every socket to A gone; A is connected again only when the test moves the recovery clock (never).
    await destroy(forwarder, UPSTREAM_A, await portsTo(forwarder, UPSTREAM_A));
    const asking = net.client.exec(['dig', `@${listen}`, '+time=6', '+tries=1', '+short', 'www.test.example'], { allowFailure: true });
    await eventually('the query waiting for A', async () => (await forwarder.counter('pending')) === 1);
    // B is added, A kept: the query waited on for A until its deadline (8 s), and only then went to B.
    replaceResolvConf(dir, `nameserver ${UPSTREAM_A}\nnameserver ${UPSTREAM_B}\n`);
    expect((await asking).stdout.trim()).toBe('192.0.2.81');
    expect(await forwarder.counters()).toMatchObject({ upstreams: [`${UPSTREAM_A}:53`, `${UPSTREAM_B}:53`], failed: 0, pending: 0 });
  });

  it('asks an upstream it passed over while none of its sockets worked once it is connected again, when the one it asked instead does not answer', async () => {
    const listen = '169.254.0.23';
    const forwarder = await start({ listen, upstreams: [UPSTREAM_A, DEAD_UPSTREAM], timeoutMs: 2000, manualClock: true });
    await harness.addAddress(net.provider, 'cl0', `${listen}/32`);
    expect((await forwarder.rebind())['listening']).toBe(true);
    await eventually('upstream A answering', async () => (await ask(listen)) === '192.0.2.80');
    // Every socket to A gone: the query passes A over and goes to the dead upstream.
    await destroy(forwarder, UPSTREAM_A, await portsTo(forwarder, UPSTREAM_A));
    const asking = net.client.exec(['dig', `@${listen}`, '+time=6', '+tries=1', '+short', 'www.test.example'], { allowFailure: true });
    await eventually('the query sent to the dead upstream', async () => (await forwarder.counter('pending')) === 1);
    // A connected again while the query waits for the dead one. Passed over, A counted as asked:
    // SERVFAIL once the dead one's time was up, A never asked.
    await forwarder.advance(reconnectDelayMs(0));
    await eventually('A connected again', async () => ((await forwarder.counters())['failingUpstreams'] as unknown[]).length === 0);
    expect((await asking).stdout.trim()).toBe('192.0.2.80');
    expect(await forwarder.counters()).toMatchObject({ upstreamTimeouts: 1, failed: 0, pending: 0 });
  });

  it('sends a TCP query on to an upstream the list in use names when the one it asked does not answer, not only those listed when it came', async () => {
    const listen = '169.254.0.24';
    // On no host, and asked by no other test: the connection to it fails only once its neighbour
    // entry does (3 s), after the query's time with it (2 s), whatever the tests before it sent.
    const dead = '192.0.2.97';
    const { forwarder, dir } = await following(listen, [dead], { timeoutMs: 2000 });
    const asking = net.client.exec(['dig', `@${listen}`, '+tcp', '+time=6', '+tries=1', '+short', 'www.test.example'], { allowFailure: true });
    await eventually('the TCP query asked of the dead upstream', async () => (await forwarder.counter('tcpQueries')) === 1);
    // resolv.conf now names B alone: the query went through the list as it was when it came (the
    // dead upstream alone), SERVFAIL, B never asked.
    replaceResolvConf(dir, `nameserver ${UPSTREAM_B}\n`);
    expect((await asking).stdout.trim()).toBe('192.0.2.81');
    expect(await forwarder.counters()).toMatchObject({ upstreams: [`${UPSTREAM_B}:53`], upstreamTimeouts: 1, failed: 0 });
  });

  it('binds again with backoff while another server holds its address and port, said once, and listens once that one is gone', async () => {
    const listen = '169.254.0.26';
    await harness.addAddress(net.provider, 'cl0', `${listen}/32`);
    const holder = await start({ listen });
    expect((await holder.counters())['listening']).toBe(true);
    const second = await start({ listen, manualClock: true });
    const inUse = /^DNS forwarder not listening: another DNS server already listens on 169\.254\.0\.26:53; trying again in ([\d.]+) s$/;
    expect(logLines(second).filter((line) => line.level >= WARN).map((line) => line.msg)).toEqual([expect.stringMatching(inUse)]);
    expect(String((await second.counters())['lastBindError'])).toMatch(/^EADDRINUSE: /);
    // Still held at each retry: tried again later, nothing said again.
    let waited = 0;
    for (let round = 0; round < 3; round++) {
      const tried = await second.advance(reconnectDelayMs(round));
      waited += reconnectDelayMs(round);
      expect({ round, listening: tried['listening'], attempts: tried['bindAttempts'] }).toEqual({ round, listening: false, attempts: round + 2 });
    }
    expect(logLines(second).filter((line) => inUse.test(line.msg))).toHaveLength(1);
    // The other one gone, the next retry binds (before, only a change of links did).
    await holder.process.kill();
    const bound = await second.advance(reconnectDelayMs(3));
    expect({ waited, listening: bound['listening'], lastBindError: bound['lastBindError'] }).toEqual({ waited, listening: true, lastBindError: null });
    expect(await ask(listen)).toBe('192.0.2.80');
  });

  it('asks an upstream named twice (--dns-upstream) once per TCP query', async () => {
    const listen = '169.254.0.25';
    const forwarder = await start({ listen, upstreams: [DEAD_UPSTREAM, DEAD_UPSTREAM], timeoutMs: 1000 });
    await harness.addAddress(net.provider, 'cl0', `${listen}/32`);
    expect((await forwarder.rebind())['listening']).toBe(true);
    const answer = await net.client.exec(['dig', `@${listen}`, '+tcp', '+time=6', '+tries=1', 'www.test.example'], { allowFailure: true });
    expect(answer.stdout).toMatch(/status: SERVFAIL/);
    // Once, then SERVFAIL (before: a second time, the list's second place).
    expect(await forwarder.counters()).toMatchObject({ upstreamTimeouts: 1, failed: 1 });
  });

  it('sends a query whose socket failed while it waited, to its only upstream with no other socket working, as soon as that is connected again', async () => {
    const address = '192.0.2.58';
    const upstream = await pickyUpstream(address);
    try {
      const forwarder = await start({ listen: '169.254.0.17', upstreams: [address], timeoutMs: 8000, manualClock: true });
      await harness.addAddress(net.provider, 'cl0', '169.254.0.17/32');
      expect((await forwarder.rebind())['listening']).toBe(true);
      const asking = net.client.exec(['dig', '@169.254.0.17', '+time=6', '+tries=1', '+short', 'www.test.example'], { allowFailure: true });
      await upstream.waitForOutput(/^query \d+$/m);
      const sentBy = await forwarder.counter('fixtureMs');
      await destroy(forwarder, address, await portsTo(forwarder, address));
      // Past its resend (1 s after it was sent, by the forwarder's clock): no socket of the
      // upstream works, and it is to be connected again only when the test moves the recovery
      // clock. The query waits (before, it was answered SERVFAIL here).
      await eventually("past the query's resend", async () => (await forwarder.counter('fixtureMs')) > sentBy + 1500);
      const waiting = await forwarder.counters();
      expect({ pending: waiting['pending'], failed: waiting['failed'] }).toEqual({ pending: 1, failed: 0 });
      // Connected again: it goes out at once, and is answered.
      await forwarder.advance(reconnectDelayMs(0));
      expect((await asking).stdout.trim()).toBe(PICKY_ANSWER);
      expect(await forwarder.counter('failed')).toBe(0);
    } finally {
      await upstream.kill();
    }
  });
});
