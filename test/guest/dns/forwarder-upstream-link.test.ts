// A chained provider's forwarder reaches its upstream provider's (at the same 169.254.0.1) through
// the link to it, its sockets bound by the link's index. When that link goes and another device
// takes its name (a device the agent has not configured as the link to the upstream provider),
// neither a reconnect over UDP nor a query over TCP may reach whatever answers behind the new
// device: they fail (ENODEV, SERVFAIL to the client) until the agent names the link again.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { RECONNECT_MAX_MS } from '../../../guest/dns/upstream-reachability.js';
import { createHarness, describeNetns, type Harness, type Netns } from '../../harness/index.js';
import { ForwarderProcess, eventually, requireDnsTools, startUpstream } from './dns-topology.js';

const GATEWAY = '169.254.0.1';
const CLIENT_IP = '100.64.0.5';
/** Our address on the link to the upstream provider. */
const OWN_IP = '100.64.0.9';
const TIMEOUT_MS = 500;
/** Long enough for several reconnects at the longest backoff, each of which would rebind by name. */
const RECONNECTS_MS = 2 * RECONNECT_MAX_MS + TIMEOUT_MS + 500;

describeNetns("DNS forwarder's link to its upstream provider, bound by index", () => {
  let harness: Harness;
  let provider: Netns;
  let client: Netns;
  let upstreamA: Netns;
  let upstreamB: Netns;
  let forwarder: ForwarderProcess;

  async function ifindexOf(ns: Netns, name: string): Promise<number> {
    return Number(/^(\d+):/.exec((await ns.ip(['-o', 'link', 'show', 'dev', name])).stdout)?.[1]);
  }

  /** The answer to `www.test.example`, or the status when there is none (`SERVFAIL`, `no reply`). */
  async function ask(tcp: boolean): Promise<string> {
    const result = await client.exec(['dig', `@${GATEWAY}`, ...(tcp ? ['+tcp'] : []), '+time=1', '+tries=1', 'www.test.example'], { allowFailure: true });
    const answer = /^www\.test\.example\.\s+\d+\s+IN\s+A\s+(\S+)/m.exec(result.stdout)?.[1];
    return answer ?? /status: (\w+)/.exec(result.stdout)?.[1] ?? 'no reply';
  }

  /** How the agent configures a chained provider's link to its upstream provider, on our side of `link`. */
  function linkLines(link: string): string[] {
    return [`address add ${OWN_IP}/32 dev ${link}`, `link set ${link} up`, `route add ${GATEWAY}/32 dev ${link}`];
  }

  /** The upstream provider's side: the gateway address, a route back to us, its resolver. */
  async function upstreamSide(ns: Netns, tag: 'A' | 'B'): Promise<void> {
    await harness.addAddress(ns, 'eth0', `${GATEWAY}/32`);
    await harness.up(ns, 'eth0');
    await ns.ip(['route', 'add', `${OWN_IP}/32`, 'dev', 'eth0']);
    startUpstream(ns, GATEWAY, tag);
    await eventually(`upstream provider ${tag}'s resolver`, async () =>
      /192\.0\.2\./.test((await ns.exec(['dig', `@${GATEWAY}`, '+time=1', '+tries=1', '+short', 'www.test.example'], { allowFailure: true })).stdout),
    );
  }

  beforeAll(async () => {
    requireDnsTools();
    harness = createHarness('dnsvia');
    provider = await harness.namespace('prov');
    client = await harness.namespace('client');
    upstreamA = await harness.namespace('upa');
    upstreamB = await harness.namespace('upb');
    await harness.veth(provider, 'cl0', client, 'eth0');
    await harness.addAddress(provider, 'cl0', `${GATEWAY}/32`);
    await harness.up(provider, 'cl0');
    await provider.ip(['route', 'add', `${CLIENT_IP}/32`, 'dev', 'cl0']);
    await harness.addAddress(client, 'eth0', `${CLIENT_IP}/32`);
    await harness.up(client, 'eth0');
    await client.ip(['route', 'add', '169.254.0.0/16', 'dev', 'eth0', 'scope', 'link', 'src', CLIENT_IP]);
    await harness.veth(provider, 'up0', upstreamA, 'eth0');
    await provider.exec(['ip', '-batch', '-'], { input: linkLines('up0').join('\n') });
    // The answers come from an address that is ours too.
    await provider.exec(['sh', '-c', 'echo 1 > /proc/sys/net/ipv4/conf/up0/accept_local']);
    await upstreamSide(upstreamA, 'A');
    // Each veth end raised before its peer is activated by the kernel's linkwatch some time
    // after the peer comes up (seconds on a loaded machine), dropping what it sends meanwhile.
    await Promise.all([provider.linkActive('cl0'), client.linkActive('eth0'), provider.linkActive('up0'), upstreamA.linkActive('eth0')]);
    // SERVFAIL within dig's wait while the upstream is unreached (the default query time, 4 s, is not).
    forwarder = await ForwarderProcess.start(provider, { upstreams: [GATEWAY], timeoutMs: TIMEOUT_MS, queryTimeoutMs: TIMEOUT_MS });
    await forwarder.setUpstreamLink({ device: 'up0', ifindex: await ifindexOf(provider, 'up0'), source: OWN_IP });
  });

  afterAll(async () => {
    await harness?.cleanup();
  });

  it('reaches the upstream provider through the link, over UDP and TCP, and leaves no socket in TIME_WAIT', async () => {
    expect(await ask(false)).toBe('192.0.2.80');
    expect(await ask(true)).toBe('192.0.2.80');
    // The TCP query's connection upstream ends with a reset once answered: no socket left (a close
    // would leave ours in TIME_WAIT, a minute).
    const states = async (): Promise<string[]> =>
      (await provider.exec(['ss', '-Htan', 'src', OWN_IP, 'dst', `${GATEWAY}:53`])).stdout
        .split('\n')
        .filter((line) => line.trim() !== '')
        .map((line) => line.trim().split(/\s+/)[0] ?? '');
    let left: string[] = [];
    await eventually('the upstream connection over', async () => (left = await states()).every((state) => state === 'TIME-WAIT'));
    expect(left).toEqual([]);
    expect((await forwarder.counters())['upstreams']).toEqual([`${GATEWAY}:53 via up0 from ${OWN_IP}`]);
  });

  it('never follows the name to another device that took it: SERVFAIL until told the new link', async () => {
    const oldIndex = await ifindexOf(provider, 'up0');
    // The link goes and a device of the same name, to someone else, takes its place at once.
    await provider.exec(['ip', '-batch', '-'], { input: ['link del up0', `link add up0 type veth peer name eth0 netns ${upstreamB.name}`, ...linkLines('up0')].join('\n') });
    await provider.exec(['sh', '-c', 'echo 1 > /proc/sys/net/ipv4/conf/up0/accept_local']);
    const newIndex = await ifindexOf(provider, 'up0');
    expect(newIndex).not.toBe(oldIndex);
    await upstreamSide(upstreamB, 'B');
    // The new link passes traffic (both ends activated): what keeps B unreached is the forwarder.
    await Promise.all([provider.linkActive('up0'), upstreamB.linkActive('eth0')]);

    // Over TCP each query opens a connection through the link; over UDP the sends fail and the
    // sockets are opened again, several times over this while. Neither reaches B.
    const started = Date.now();
    const answers = new Set<string>();
    while (Date.now() - started < RECONNECTS_MS) {
      answers.add(await ask(true));
      answers.add(await ask(false));
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect([...answers].sort()).toEqual(['SERVFAIL']);
    expect((await forwarder.counters())['unreachableUpstreams']).toEqual([`${GATEWAY}:53 via up0 from ${OWN_IP} (ENODEV)`]);
    const warnings = forwarder.process.stderr.split('\n').filter((line) => /cannot use upstream resolver/.test(line));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(`link up0 (index ${oldIndex}) is gone`);

    // The agent names the new device the link to the upstream provider: now it is used.
    await forwarder.setUpstreamLink({ device: 'up0', ifindex: newIndex, source: OWN_IP });
    await eventually('answers through the new link', async () => (await ask(false)) === '192.0.2.81');
    expect(await ask(true)).toBe('192.0.2.81');
    expect((await forwarder.counters())['upstreams']).toEqual([`${GATEWAY}:53 via up0 from ${OWN_IP}`]);
  });
});
