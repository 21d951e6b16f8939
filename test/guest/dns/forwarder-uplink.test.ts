// The forwarder and a provider uplink that is not there yet, goes and comes back, or changes its
// address (as DHCP on the netvm's uplink does it): once an upstream can be reached again it is
// used within a few seconds, with no link event and no rebind(), and while it cannot be the
// forwarder neither spins nor fills the log.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createHarness, describeNetns, type Harness } from '../../harness/index.js';
import { RECONNECT_MAX_MS } from '../../../guest/dns/upstream-reachability.js';
import { ForwarderProcess, PROVIDER_UPLINK_IP, UPSTREAM_A, UPSTREAM_B, buildTopology, eventually, replaceResolvConf, requireDnsTools, startUpstream, type DnsTopology } from './dns-topology.js';

const TIMEOUT_MS = 500;
/** Route there to answer: the reconnect backoff, plus a query that may just have timed out. */
const RECOVERY_MS = RECONNECT_MAX_MS + TIMEOUT_MS + 1000;
const UPLINK_PREFIX = '192.0.2.0/24';

interface Outcome {
  readonly status: string;
  readonly answer: string;
}

describeNetns('DNS forwarder with an uplink that comes late, goes and comes back, or changes address', () => {
  let harness: Harness;
  let net: DnsTopology;
  let confDir: string;
  /** Upstream A from --dns-upstream, on port 53. */
  let fixed: ForwarderProcess;
  /** Upstreams from resolv.conf (B at first), on port 5353. */
  let followed: ForwarderProcess;

  async function ask(port: number): Promise<Outcome> {
    const result = await net.client.exec(['dig', '@169.254.0.1', '-p', String(port), '+time=1', '+tries=1', 'www.test.example'], { allowFailure: true });
    const status = /status: (\w+)/.exec(result.stdout)?.[1] ?? 'no reply';
    const answer = /^www\.test\.example\.\s+\d+\s+IN\s+A\s+(\S+)/m.exec(result.stdout)?.[1] ?? '';
    return { status, answer };
  }

  /** Milliseconds until `port` answers `answer`, asking every 200 ms; throws after `limitMs`. */
  async function answeredWithin(port: number, answer: string, limitMs: number): Promise<number> {
    const started = Date.now();
    let last: Outcome = { status: 'not asked', answer: '' };
    while (Date.now() - started < limitMs) {
      last = await ask(port);
      if (last.status === 'NOERROR' && last.answer === answer) return Date.now() - started;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    throw new Error(`port ${port} did not answer ${answer} within ${limitMs} ms; last: ${JSON.stringify(last)}`);
  }

  function logLines(forwarder: ForwarderProcess, pattern: RegExp): number {
    return forwarder.process.stderr.split('\n').filter((line) => pattern.test(line)).length;
  }

  /** CPU time (clock ticks) the process has used. */
  function cpuTicks(forwarder: ForwarderProcess): number {
    const fields = readFileSync(`/proc/${forwarder.process.pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
    return Number(fields[11]) + Number(fields[12]);
  }


  beforeAll(async () => {
    requireDnsTools();
    harness = createHarness('dnsup');
    net = await buildTopology(harness);
    startUpstream(net.internet, UPSTREAM_A, 'A');
    startUpstream(net.internet, UPSTREAM_B, 'B');
    await eventually('the upstream resolvers', async () => {
      const results = await Promise.all(
        [UPSTREAM_A, UPSTREAM_B].map((upstream) =>
          net.internet.exec(['dig', `@${upstream}`, '+time=1', '+tries=1', '+short', 'www.test.example'], { allowFailure: true }),
        ),
      );
      return results.every((result) => /192\.0\.2\.8/.test(result.stdout));
    });
    // The netvm at boot: the uplink is up, DHCP has not given it an address (nor routes) yet.
    await net.provider.ip(['address', 'del', `${PROVIDER_UPLINK_IP}/24`, 'dev', 'up0']);
    confDir = mkdtempSync(join(tmpdir(), 'spectrum-dns-uplink-'));
    writeFileSync(join(confDir, 'resolv.conf'), `nameserver ${UPSTREAM_B}\n`);
    // SERVFAIL within dig's wait while there is no route (the default query time, 4 s, is not).
    fixed = await ForwarderProcess.start(net.provider, { upstreams: [UPSTREAM_A], timeoutMs: TIMEOUT_MS, queryTimeoutMs: TIMEOUT_MS });
    followed = await ForwarderProcess.start(net.provider, { port: 5353, resolvConfPath: join(confDir, 'resolv.conf'), timeoutMs: TIMEOUT_MS, queryTimeoutMs: TIMEOUT_MS });
  });

  afterAll(async () => {
    await harness?.cleanup();
    if (confDir !== undefined) rmSync(confDir, { recursive: true, force: true });
  });

  it('answers SERVFAIL while no upstream has a route, says why once, and does not spin', async () => {
    expect(await fixed.counters()).toMatchObject({ listening: true, upstreams: [], unreachableUpstreams: [`${UPSTREAM_A}:53 (ENETUNREACH)`] });
    expect(await followed.counters()).toMatchObject({ upstreams: [], unreachableUpstreams: [`${UPSTREAM_B}:53 (ENETUNREACH)`] });
    expect((await ask(53)).status).toBe('SERVFAIL');
    expect((await ask(5353)).status).toBe('SERVFAIL');
    const ticks = cpuTicks(fixed);
    // Long enough for several retries at the longest backoff.
    await new Promise((resolve) => setTimeout(resolve, 2.5 * RECONNECT_MAX_MS));
    expect(cpuTicks(fixed) - ticks).toBeLessThan(20);
    for (const forwarder of [fixed, followed]) {
      const warnings = forwarder.process.stderr.split('\n').filter((line) => /cannot use upstream resolver/.test(line));
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/no route to it: check that the uplink is up and has its address and routes/);
    }
  });

  it('uses an upstream within seconds of its route appearing, with no link event and no rebind', async () => {
    await harness.addAddress(net.provider, 'up0', `${PROVIDER_UPLINK_IP}/24`);
    expect(await answeredWithin(53, '192.0.2.80', RECOVERY_MS)).toBeLessThan(RECOVERY_MS);
    expect(await answeredWithin(5353, '192.0.2.81', RECOVERY_MS)).toBeLessThan(RECOVERY_MS);
    expect(await fixed.counters()).toMatchObject({ upstreams: [`${UPSTREAM_A}:53`], unreachableUpstreams: [] });
    expect(logLines(fixed, /upstream resolver reachable again/)).toBe(1);
  });

  it('when the route goes and comes back: SERVFAIL meanwhile, one warning, answers again within seconds', async () => {
    await net.provider.ip(['route', 'del', UPLINK_PREFIX, 'dev', 'up0']);
    expect((await ask(53)).status).toBe('SERVFAIL');
    await eventually('the lost route to be noticed', async () => ((await fixed.counters())['unreachableUpstreams'] as string[]).length === 1);
    expect((await ask(53)).status).toBe('SERVFAIL');
    // resolv.conf still followed meanwhile: the new upstream waits for the route too.
    const reloads = await followed.counter('resolvConfReloads');
    replaceResolvConf(confDir, `nameserver ${UPSTREAM_A}\n`);
    await eventually('the reload', async () => (await followed.counter('resolvConfReloads')) > reloads);
    expect(await followed.counters()).toMatchObject({ upstreams: [], unreachableUpstreams: [`${UPSTREAM_A}:53 (ENETUNREACH)`] });
    await new Promise((resolve) => setTimeout(resolve, 1.5 * RECONNECT_MAX_MS));
    expect(logLines(fixed, /cannot use upstream resolver/)).toBe(2);

    await net.provider.ip(['route', 'add', UPLINK_PREFIX, 'dev', 'up0', 'proto', 'kernel', 'scope', 'link', 'src', PROVIDER_UPLINK_IP]);
    expect(await answeredWithin(53, '192.0.2.80', RECOVERY_MS)).toBeLessThan(RECOVERY_MS);
    expect(await answeredWithin(5353, '192.0.2.80', RECOVERY_MS)).toBeLessThan(RECOVERY_MS);
    expect(logLines(fixed, /upstream resolver reachable again/)).toBe(2);
  });

  it('uses a new uplink address (a new lease) within seconds: the upstream sockets, bound to the old one by connect, are connected again', async () => {
    await net.provider.ip(['address', 'del', `${PROVIDER_UPLINK_IP}/24`, 'dev', 'up0']);
    await harness.addAddress(net.provider, 'up0', '192.0.2.3/24');
    expect(await answeredWithin(53, '192.0.2.80', RECOVERY_MS)).toBeLessThan(RECOVERY_MS);
    expect(await answeredWithin(5353, '192.0.2.80', RECOVERY_MS)).toBeLessThan(RECOVERY_MS);
  });

  it('answers again within seconds after the uplink goes down and comes back up', async () => {
    await net.provider.ip(['link', 'set', 'dev', 'up0', 'down']);
    expect((await ask(53)).status).toBe('SERVFAIL');
    await net.provider.ip(['link', 'set', 'dev', 'up0', 'up']);
    // Timed from when the link passes traffic: up0 went down, so inet0 lost its carrier, and the
    // kernel's linkwatch activates it again some time after up0 comes up (seconds under load).
    await Promise.all([net.provider.linkActive('up0'), net.internet.linkActive('inet0')]);
    expect(await answeredWithin(53, '192.0.2.80', RECOVERY_MS)).toBeLessThan(RECOVERY_MS);
    expect(await answeredWithin(5353, '192.0.2.80', RECOVERY_MS)).toBeLessThan(RECOVERY_MS);
  });

  it('lists an upstream unreachable as soon as it is told that links or routes changed (the uplink down), before any query', async () => {
    // It stayed "in use" until a client's query waited its whole time for it and failed.
    expect(await fixed.counters()).toMatchObject({ upstreams: [`${UPSTREAM_A}:53`], unreachableUpstreams: [] });
    const queries = await fixed.counter('queries');
    const said = logLines(fixed, /no upstream resolvers: answering SERVFAIL/);
    await net.provider.ip(['link', 'set', 'dev', 'up0', 'down']);
    try {
      await fixed.routesChanged();
      await eventually('the lost route to be listed', async () => ((await fixed.counters())['unreachableUpstreams'] as string[]).length === 1, 1000);
      expect(await fixed.counters()).toMatchObject({ upstreams: [], unreachableUpstreams: [`${UPSTREAM_A}:53 (ENETUNREACH)`] });
      expect(await fixed.counter('queries')).toBe(queries);
      expect(logLines(fixed, /no upstream resolvers: answering SERVFAIL/)).toBe(said + 1);
    } finally {
      await net.provider.ip(['link', 'set', 'dev', 'up0', 'up']);
    }
    await Promise.all([net.provider.linkActive('up0'), net.internet.linkActive('inet0')]);
    expect(await answeredWithin(53, '192.0.2.80', RECOVERY_MS)).toBeLessThan(RECOVERY_MS);
  });
});
