// spectrum-netd run where a change meets a link's sysctl file missing though the link is there by
// the name it was known by: not renamed or deleted (what the agent takes quietly, its notification
// planning what follows), so no notification comes to end the agent's retries.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type Harness, type Netns, type NetnsProcess, createHarness, describeNetns, eventually } from '../../harness/index.js';
import { NETD_CLI, linkMac, requireNetdBuild } from '../provider-world.js';

interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly [key: string]: unknown;
}

interface StatusJson {
  links: { name: string; state: string; error: string | null }[];
  counters: { failedChanges: number };
}

describeNetns('spectrum-netd run: a link sysctl file missing under a link still there', () => {
  let harness: Harness;
  let provider: Netns;
  let agent: NetnsProcess;
  let dir: string;
  let socket: string;

  const logLines = (): LogLine[] =>
    agent.stderr
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as LogLine);

  async function status(): Promise<StatusJson> {
    const { stdout } = await provider.exec(['node', NETD_CLI, 'status', '--json', '--control-socket', socket], { enter: 'nsenter' });
    return JSON.parse(stdout) as StatusJson;
  }

  const state = async (name: string): Promise<string | undefined> => (await status()).links.find((link) => link.name === name)?.state;

  async function clientLink(name: string, id: number, client: string): Promise<void> {
    const far = await harness.namespace(client);
    await provider.ip(['link', 'add', name, 'address', linkMac('provider', id), 'type', 'veth', 'peer', 'name', 'eth0', 'address', linkMac('client', id), 'netns', far.name]);
  }

  beforeAll(async () => {
    requireNetdBuild();
    dir = mkdtempSync(join(tmpdir(), 'netd-gone-'));
    socket = join(dir, 'control.sock');
    writeFileSync(join(dir, 'resolv.conf'), '');
    harness = createHarness('netdg');
    provider = await harness.namespace('prov');
    agent = provider.spawn(['node', NETD_CLI, 'run', '--no-dhcp', '--control-socket', socket, '--notify-fd', '1', '--resolv-conf', join(dir, 'resolv.conf')], {
      enter: 'nsenter',
      env: { ...process.env, SPECTRUM_LOG_LEVEL: 'info' },
    });
    await agent.waitForOutput(/^\n/, 30_000);
  });

  afterAll(async () => {
    await harness?.cleanup();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('configures a link whose IPv6 went (its MTU set below 1280) after its disable_ipv6 was read, and stops retrying', async () => {
    await clientLink('vm1', 1, 'c1');
    await eventually('vm1 configured', async () => (await state('vm1')) === 'configured');
    // A second link for client id 1: in conflict, its sysctls read as it came (IPv6 on), none set.
    await clientLink('dup1', 1, 'd1');
    await eventually('dup1 in conflict', async () => (await state('dup1')) === 'conflict');
    expect((await provider.exec(['cat', '/proc/sys/net/ipv6/conf/dup1/disable_ipv6'])).stdout.trim()).toBe('0');
    // Below IPv6's minimum MTU the kernel takes IPv6 off the link, its sysctl files with it.
    await provider.ip(['link', 'set', 'dev', 'dup1', 'mtu', '1000']);
    expect((await provider.exec(['ls', '/proc/sys/net/ipv6/conf'])).stdout.split('\n')).not.toContain('dup1');
    const from = logLines().length;
    // vm1 goes: dup1 serves client 1 now, its disable_ipv6 to be set by the name it still has.
    await provider.ip(['link', 'del', 'dev', 'vm1']);
    await eventually('dup1 configured', async () => (await state('dup1')) === 'configured', 5000);
    // And stays so, with nothing more asked of it: no retry goes on (each would plan again).
    const reconciles = logLines().length;
    await new Promise((resolve) => setTimeout(resolve, 2500));
    expect(logLines().slice(reconciles).filter((line) => line.msg === 'reconciled')).toEqual([]);
    expect(logLines().slice(from).filter((line) => line.level >= 40)).toEqual([]);
    expect((await status()).counters.failedChanges).toBe(0);
  });

  it("turns IPv6 off again on a link whose MTU went below 1280 and back (the kernel makes its IPv6 afresh, disable_ipv6 at the default 0)", async () => {
    const disableIpv6 = async (): Promise<string> => (await provider.exec(['cat', '/proc/sys/net/ipv6/conf/vm5/disable_ipv6'])).stdout.trim();
    await clientLink('vm5', 5, 'c5');
    await eventually('vm5 configured', async () => (await state('vm5')) === 'configured');
    expect(await disableIpv6()).toBe('1');
    await provider.ip(['link', 'set', 'dev', 'vm5', 'mtu', '1000']);
    expect((await provider.exec(['ls', '/proc/sys/net/ipv6/conf'])).stdout.split('\n')).not.toContain('vm5');
    await provider.ip(['link', 'set', 'dev', 'vm5', 'mtu', '1500']);
    await eventually('IPv6 off on vm5 again', async () => (await disableIpv6()) === '1', 5000);
    expect(await state('vm5')).toBe('configured');
  });
});
