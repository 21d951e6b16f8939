// The provider agent in Spectrum's boot order: spectrum-netd starts and links its clients before
// DHCP (connman) has given the netvm's uplink its address and route; a chained provider's link to
// its upstream provider is plugged in after its agent started. DNS must work once the upstream
// can be reached, within seconds, without waiting for some unrelated link event.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { RECONNECT_MAX_MS } from '../../guest/dns/upstream-reachability.js';
import { createHarness, describeNetns, type Harness, type Netns } from '../harness/index.js';
import { Agent, INTERNET_DNS, INTERNET_HTTP, type Internet, TEST_NAME, addClient, clientIp, eventually, linkEndsActive, linkMac, makeInternet, udhcpc } from './provider-world.js';

/** Route there to answer: the forwarder's reconnect backoff, plus a dig that may just have failed. */
const RECOVERY_MS = RECONNECT_MAX_MS + 2000;

/** Milliseconds until `client` resolves TEST_NAME through its gateway, asking every 200 ms; throws after `limitMs`. */
async function resolvedWithin(client: Netns, limitMs: number): Promise<number> {
  const started = Date.now();
  let last = '';
  while (Date.now() - started < limitMs) {
    last = (await client.exec(['dig', '@169.254.0.1', '+time=1', '+tries=1', '+short', TEST_NAME], { allowFailure: true })).stdout.trim();
    if (last === INTERNET_HTTP) return Date.now() - started;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`${TEST_NAME} did not resolve within ${limitMs} ms; last: ${JSON.stringify(last)}`);
}

describeNetns('spectrum-netd DNS with an uplink configured after the agent started', () => {
  let harness: Harness;
  let provider: Netns;
  let internet: Internet;
  let dir: string;
  const agents: Agent[] = [];

  beforeAll(async () => {
    harness = createHarness('late');
    dir = mkdtempSync(join(tmpdir(), 'spectrum-late-uplink-'));
    provider = await harness.namespace('netvm');
    internet = await makeInternet(harness, provider);
    // DHCP on the uplink is not done yet: no address, hence no route.
    await provider.ip(['address', 'del', '192.0.2.1/24', 'dev', 'up0']);
  });
  afterAll(async () => {
    for (const agent of agents) await agent.kill('SIGKILL');
    await internet?.stop();
    await harness?.cleanup();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('netvm: an upstream given with --dns-upstream is used within seconds of the uplink getting its address, clients linked before', async () => {
    const client = await addClient(harness, provider, 10);
    const agent = await Agent.start(provider, join(dir, 'netd.sock'), ['--dns-upstream', INTERNET_DNS]);
    agents.push(agent);
    await linkEndsActive(provider, 'p10', client);
    expect((await udhcpc(client)).code).toBe(0);
    const dig = await client.exec(['dig', '@169.254.0.1', '+time=2', '+tries=1', TEST_NAME], { allowFailure: true });
    expect(dig.stdout).toMatch(/status: SERVFAIL/);
    expect((await agent.status()).services?.dns).toMatchObject({ upstreams: [], unreachableUpstreams: [`${INTERNET_DNS}:53 (ENETUNREACH)`] });
    await harness.addAddress(provider, 'up0', '192.0.2.1/24');
    expect(await resolvedWithin(client, RECOVERY_MS)).toBeLessThan(RECOVERY_MS);
    expect((await agent.status()).services?.dns).toMatchObject({ upstreams: [`${INTERNET_DNS}:53`], unreachableUpstreams: [] });
  }, 60_000);

  it("a chained provider: its upstream provider's forwarder is used as soon as the link to it is plugged in, its own client linked before", async () => {
    const vpn = await harness.namespace('vpnvm');
    vpn.setResolvConf('nameserver 169.254.0.1\n');
    const inner = await addClient(harness, vpn, 14);
    const agent = await Agent.start(vpn, join(dir, 'vpn.sock'));
    agents.push(agent);
    await linkEndsActive(vpn, 'p14', inner);
    expect((await udhcpc(inner)).code).toBe(0);
    // Plugged in now: netvm's end p13, vpnvm's end up13 (a client link of netvm).
    await harness.veth(provider, 'p13', vpn, 'up13');
    await provider.ip(['link', 'set', 'dev', 'p13', 'address', linkMac('provider', 13)]);
    await vpn.ip(['link', 'set', 'dev', 'up13', 'address', linkMac('client', 13)]);
    await eventually('vpnvm to have its upstream address', async () => (await vpn.ip(['-4', '-o', 'addr', 'show', 'dev', 'up13'])).stdout.includes(clientIp(13)));
    // Timed from when the link passes traffic: the agents raise its ends, and the kernel's
    // linkwatch activates the one raised first some time after (seconds on a loaded machine).
    await linkEndsActive(provider, 'p13', vpn, 'up13');
    expect(await resolvedWithin(inner, RECOVERY_MS)).toBeLessThan(RECOVERY_MS);
    expect((await agent.status()).services?.dns?.upstreams).toEqual([`169.254.0.1:53 via up13 from ${clientIp(13)}`]);
  }, 60_000);
});
