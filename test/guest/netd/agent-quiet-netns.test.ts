// spectrum-netd run through what an ordinary provider goes through (a start onto links not yet
// configured, client VMs shutting down, links renamed as they are hot-plugged, a duplicate client
// link, stray signals): nothing ordinary is warned of or counted as a failed change, and what is
// not ordinary is said once.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type Harness, type Netns, type NetnsProcess, createHarness, describeNetns, eventually } from '../../harness/index.js';
import { type LogLine, NETD_CLI, addProviderLink, agentLogLines, linkMac, requireNetdBuild } from '../provider-world.js';

interface StatusJson {
  links: { name: string; role: string; id: number | null; state: string; note: string | null; error: string | null }[];
  counters: { failedChanges: number; changesApplied: number; reconciles: number };
  services: { dns: { listening: boolean } | null } | null;
}

/** pino's warn level: what an operator alerts on. */
const WARN = 40;

describeNetns('spectrum-netd run says nothing of what an ordinary provider goes through', () => {
  let harness: Harness;
  let provider: Netns;
  let agent: NetnsProcess;
  let dir: string;
  let socket: string;

  /** The agent's log lines so far (JSON, one a line: its stderr is no terminal). */
  const logLines = (process: NetnsProcess = agent): LogLine[] => agentLogLines(process);
  /** Its warnings and errors from the `from`th log line on. */
  const warnings = (from = 0, process: NetnsProcess = agent): string[] =>
    logLines(process)
      .slice(from)
      .filter((line) => line.level >= WARN)
      .map((line) => JSON.stringify(line));

  async function status(): Promise<StatusJson> {
    const { stdout } = await provider.exec(['node', NETD_CLI, 'status', '--json', '--control-socket', socket], { enter: 'nsenter' });
    return JSON.parse(stdout) as StatusJson;
  }

  /** A provider link `name` for client id `id`, its far end eth0 in `client`. */
  async function clientLink(client: Netns, name: string, id: number): Promise<void> {
    await addProviderLink(provider, name, id, client);
  }

  const configured = async (name: string): Promise<boolean> => (await status()).links.some((link) => link.name === name && link.state === 'configured');
  const known = async (name: string): Promise<boolean> => (await status()).links.some((link) => link.name === name);

  beforeAll(async () => {
    requireNetdBuild();
    dir = mkdtempSync(join(tmpdir(), 'netd-quiet-'));
    socket = join(dir, 'control.sock');
    harness = createHarness('netdq');
    provider = await harness.namespace('prov');
    // No upstream to reach: a resolv.conf naming none keeps the forwarder's upstream warnings out.
    writeFileSync(join(dir, 'resolv.conf'), '');
    // Provider links there before the agent starts, none of them configured yet.
    await clientLink(await harness.namespace('c1'), 'vm1', 1);
    await clientLink(await harness.namespace('c2'), 'vm2', 2);
    agent = provider.spawn(['node', NETD_CLI, 'run', '--control-socket', socket, '--notify-fd', '1', '--resolv-conf', join(dir, 'resolv.conf')], {
      enter: 'nsenter',
      env: { ...process.env, SPECTRUM_LOG_LEVEL: 'info' },
    });
    await agent.waitForOutput(/^\n/, 30_000); // the readiness newline
  });

  afterAll(async () => {
    await harness?.cleanup();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('starts onto provider links not configured yet without a warning: the DNS forwarder listens once they carry the gateway', async () => {
    await eventually('the DNS forwarder listening', async () => (await status()).services?.dns?.listening === true);
    expect(warnings()).toEqual([]);
    expect(logLines().map((line) => line.msg)).toContain('DNS forwarder listening');
    // Said once, with where: the agent said it again ('... on the gateway') at every start.
    expect(logLines().filter((line) => /DNS forwarder listening/.test(line.msg))).toEqual([expect.objectContaining({ msg: 'DNS forwarder listening', listen: expect.stringMatching(/^169\.254\.0\.1[:#]53$/) })]);
  });

  it('takes client VMs shutting down (their end of the link deleted) and provider links deleted without a warning or a failed change', async () => {
    const before = (await status()).counters.failedChanges;
    const from = logLines().length;
    const ids = Array.from({ length: 12 }, (_, index) => 20 + index);
    const clients = new Map<number, Netns>();
    for (const id of ids) {
      const client = await harness.namespace(`d${id}`);
      clients.set(id, client);
      await clientLink(client, `vm${id}`, id);
    }
    for (const id of ids) await eventually(`vm${id} configured`, () => configured(`vm${id}`));
    // A VM shutting down takes its end, and so the pair, with it: the provider end goes down, its
    // routes and neighbours flushed, a moment before it is deleted. Half from the client side, half from the provider's.
    for (const id of ids) {
      if (id % 2 === 0) await clients.get(id)!.ip(['link', 'del', 'dev', 'eth0']);
      else await provider.ip(['link', 'del', 'dev', `vm${id}`]);
      await new Promise((resolve) => setTimeout(resolve, 30));
    }
    for (const id of ids) await eventually(`vm${id} gone`, async () => !(await known(`vm${id}`)));
    // Whatever the agent was retrying meanwhile is done by now.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(warnings(from)).toEqual([]);
    expect((await status()).counters.failedChanges).toBe(before);
  });

  it('takes links renamed as they are moved in (ip link set X netns P name Y, as udev renames) without a warning or a failed change, and sets their sysctls', async () => {
    const before = (await status()).counters.failedChanges;
    const from = logLines().length;
    const stage = await harness.namespace('stage');
    const ids = Array.from({ length: 20 }, (_, index) => 40 + index);
    const sysctls = async (id: number): Promise<string> =>
      (await provider.exec(['cat', `/proc/sys/net/ipv4/conf/pl${id}/arp_filter`, `/proc/sys/net/ipv6/conf/pl${id}/disable_ipv6`])).stdout.trim().replace('\n', ',');
    for (const id of ids) {
      await stage.ip(['link', 'add', `xnd-p${id}`, 'address', linkMac('provider', id), 'type', 'veth', 'peer', 'name', `e${id}`, 'address', linkMac('client', id)]);
      // It comes into the provider under its old name, and is renamed a moment after.
      await stage.ip(['link', 'set', 'dev', `xnd-p${id}`, 'netns', provider.name, 'name', `pl${id}`]);
      await eventually(`pl${id} configured`, () => configured(`pl${id}`));
    }
    await eventually('arp_filter and disable_ipv6 on every renamed link', async () => (await Promise.all(ids.map(sysctls))).every((value) => value === '1,1'));
    expect(warnings(from)).toEqual([]);
    expect((await status()).counters.failedChanges).toBe(before);
    await provider.exec(['ip', '-batch', '-'], { input: ids.map((id) => `link del dev pl${id}\n`).join('') });
  });

  it('says once, at warn, that a second link for a client id already served is in conflict, and once that it is over: not at every reconcile', async () => {
    const from = logLines().length;
    const conflictLines = (): LogLine[] => logLines().slice(from).filter((line) => line['link'] === 'dup1');
    await clientLink(await harness.namespace('dup'), 'dup1', 1);
    await eventually('dup1 in conflict', async () => (await status()).links.some((link) => link.name === 'dup1' && link.state === 'conflict'));
    // Reconciles after it: another link comes and goes.
    const other = await harness.namespace('c61');
    await clientLink(other, 'vm61', 61);
    await eventually('vm61 configured', () => configured('vm61'));
    await provider.ip(['link', 'set', 'dev', 'vm61', 'down']);
    await eventually('vm61 configured again', () => configured('vm61'));
    await provider.ip(['link', 'del', 'dev', 'vm61']);
    await eventually('vm61 gone', async () => !(await known('vm61')));
    expect(conflictLines().map((line) => [line.level, line.msg])).toEqual([[WARN, 'dup1 is in conflict: client id 1 is already served on vm1; all its traffic is dropped (said once while it lasts)']]);
    await provider.ip(['link', 'del', 'dev', 'dup1']);
    await eventually('dup1 gone', async () => !(await known('dup1')));
    await eventually('the conflict said to be over', () => Promise.resolve(conflictLines().length === 2));
    expect(conflictLines().map((line) => [line.level, line.msg])).toEqual([
      [WARN, 'dup1 is in conflict: client id 1 is already served on vm1; all its traffic is dropped (said once while it lasts)'],
      [30, 'dup1 is no longer in conflict: it is gone'],
    ]);
    expect(warnings(from)).toHaveLength(1);
  });

  it('ignores SIGUSR1 (no inspector opens) and SIGHUP (said at info), and stops in order at SIGTERM', async () => {
    const from = logLines().length;
    const said = (signal: NodeJS.Signals) => () => Promise.resolve(logLines().slice(from).some((line) => line['signal'] === signal));
    process.kill(agent.pid, 'SIGUSR1');
    await eventually('SIGUSR1 said', said('SIGUSR1'));
    process.kill(agent.pid, 'SIGHUP');
    await eventually('SIGHUP said', said('SIGHUP'));
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(agent.exit).toBeUndefined();
    // Nothing listens in the provider: Node's inspector would, on 127.0.0.1:9229.
    expect((await provider.exec(['ss', '-Hltn'])).stdout).not.toMatch(/:9229\b/);
    expect(agent.stderr).not.toContain('Debugger listening');
    expect(logLines().slice(from).filter((line) => line['signal'] !== undefined).map((line) => [line.level, line['signal']])).toEqual([
      [30, 'SIGUSR1'],
      [30, 'SIGHUP'],
    ]);
    expect((await status()).links.some((link) => link.name === 'vm1')).toBe(true);
    expect(warnings(from)).toEqual([]);
    const exit = await agent.kill('SIGTERM', 5000);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(existsSync(socket)).toBe(false);
  });
});
