// spectrum-netd run binds its DNS forwarder on the gateway address once a provider link carries it
// (the forwarder is not bound at start: see the README, "DNS forwarder"), whatever way the address
// comes: a link configured a reconcile after it was first planned (held back while the firewall
// could not be made), a restart onto links configured already, a first link hot-plugged into a
// provider that had none.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type Harness, type Netns, type NetnsProcess, createHarness, describeNetns, eventually } from '../../harness/index.js';
import { NETD_CLI, addProviderLink, agentLogLines, requireNetdBuild } from '../provider-world.js';

interface StatusJson {
  links: { name: string; state: string; error: string | null }[];
  services: { dns: { listening: boolean; lastBindError: string | null } | null } | null;
}

describeNetns('spectrum-netd run: the DNS forwarder listens once the gateway address is on a provider link', () => {
  let harness: Harness;
  let dir: string;

  beforeAll(() => {
    requireNetdBuild();
    dir = mkdtempSync(join(tmpdir(), 'netd-dnsbind-'));
    // No upstream to reach: a resolv.conf naming none keeps the forwarder's upstream warnings out.
    writeFileSync(join(dir, 'resolv.conf'), '');
    harness = createHarness('netdb');
  });

  afterAll(async () => {
    await harness?.cleanup();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  async function status(ns: Netns, socket: string): Promise<StatusJson> {
    const { stdout } = await ns.exec(['node', NETD_CLI, 'status', '--json', '--control-socket', socket], { enter: 'nsenter' });
    return JSON.parse(stdout) as StatusJson;
  }

  /** A provider link `name` for client id `id` in `provider`, its far end eth0 in a namespace of its own (`client`). */
  async function clientLink(provider: Netns, name: string, id: number, client: string): Promise<void> {
    await addProviderLink(provider, name, id, await harness.namespace(client));
  }

  /** The agent, without DHCP; `before`: what runs it (setpriv, say). */
  function startAgent(provider: Netns, socket: string, env: NodeJS.ProcessEnv = {}, options: { readonly dhcp?: boolean; readonly before?: readonly string[] } = {}): NetnsProcess {
    const argv = ['node', NETD_CLI, 'run', ...(options.dhcp === true ? [] : ['--no-dhcp']), '--control-socket', socket, '--notify-fd', '1', '--resolv-conf', join(dir, 'resolv.conf')];
    return provider.spawn([...(options.before ?? []), ...argv], {
      enter: 'nsenter',
      env: { ...process.env, SPECTRUM_LOG_LEVEL: 'info', ...env },
    });
  }

  const listening = async (provider: Netns, socket: string): Promise<boolean> => (await status(provider, socket)).services?.dns?.listening === true;

  /** Whether something in `provider` listens on 169.254.0.1:53 over UDP and TCP. */
  async function boundInKernel(provider: Netns): Promise<boolean> {
    const { stdout } = await provider.exec(['ss', '-Hlutn', 'src', '169.254.0.1', 'sport', '=', ':53']);
    return stdout.trim() !== '';
  }

  it('listens once a link held back at start (the firewall could not be made) is configured, though the list of links never changed', async () => {
    const provider = await harness.namespace('held');
    const socket = join(dir, 'held.sock');
    await clientLink(provider, 'vm1', 1, 'heldc1');
    // nft refuses every call while `failing` exists (as a kernel short of memory would), then is the real nft.
    const real = execFileSync('sh', ['-c', 'command -v nft'], { encoding: 'utf8' }).trim();
    const gate = mkdtempSync(join(dir, 'nft-'));
    const failing = join(gate, 'failing');
    writeFileSync(failing, '');
    writeFileSync(
      join(gate, 'nft'),
      `#!/bin/sh\nif [ -e '${failing}' ]; then echo 'Error: Could not process rule: Cannot allocate memory' >&2; exit 1; fi\nexec '${real}' "$@"\n`,
      { mode: 0o755 },
    );
    const agent = startAgent(provider, socket, { PATH: `${gate}:${process.env['PATH'] ?? ''}`, SPECTRUM_NETD_SPAWN_NFT: '1' });
    try {
      await agent.waitForOutput(/^\n/, 30_000);
      expect((await status(provider, socket)).links.find((link) => link.name === 'vm1')).toMatchObject({
        state: 'pending',
        error: expect.stringMatching(/^held back until the firewall filters this link/),
      });
      rmSync(failing);
      await eventually('vm1 configured', async () => (await status(provider, socket)).links.some((link) => link.name === 'vm1' && link.state === 'configured'));
      await eventually('the DNS forwarder listening', () => listening(provider, socket), 10_000);
      expect(await boundInKernel(provider)).toBe(true);
      expect(agentLogLines(agent).map((line) => line.msg)).toContain('DNS forwarder listening');
    } finally {
      await agent.kill('SIGTERM');
    }
  });

  it('listens at once after a restart onto provider links configured already, with no warning', async () => {
    const provider = await harness.namespace('again');
    const socket = join(dir, 'again.sock');
    await clientLink(provider, 'vm1', 1, 'againc1');
    const first = startAgent(provider, socket);
    try {
      await first.waitForOutput(/^\n/, 30_000);
      await eventually('the first agent listening', () => listening(provider, socket));
    } finally {
      await first.kill('SIGTERM');
    }
    const second = startAgent(provider, socket);
    try {
      await second.waitForOutput(/^\n/, 30_000);
      await eventually('the second agent listening', () => listening(provider, socket));
      expect(agentLogLines(second).filter((line) => line.level >= 40)).toEqual([]);
    } finally {
      await second.kill('SIGTERM');
    }
  });

  it('starts with no provider link without listening or warning, and listens once one is plugged', async () => {
    const provider = await harness.namespace('none');
    const socket = join(dir, 'none.sock');
    const agent = startAgent(provider, socket);
    try {
      await agent.waitForOutput(/^\n/, 30_000);
      expect(await listening(provider, socket)).toBe(false);
      await clientLink(provider, 'vm7', 7, 'nonec7');
      await eventually('the DNS forwarder listening', () => listening(provider, socket));
      expect(await boundInKernel(provider)).toBe(true);
      expect(agentLogLines(agent).filter((line) => line.level >= 40)).toEqual([]);
    } finally {
      await agent.kill('SIGTERM');
    }
  });

  it('goes on answering through the gateway address deleted by hand (put back by the agent) and every provider link gone then one plugged again', async () => {
    const provider = await harness.namespace('flap');
    const socket = join(dir, 'flap.sock');
    await clientLink(provider, 'vm1', 1, 'flapc1');
    const agent = startAgent(provider, socket);
    // No upstream: an answer is SERVFAIL, which only a forwarder that reads its socket sends.
    const answered = async (): Promise<boolean> =>
      /status: SERVFAIL/.test((await provider.exec(['dig', '@169.254.0.1', '+time=1', '+tries=1', 'www.test.example'], { allowFailure: true })).stdout);
    try {
      await agent.waitForOutput(/^\n/, 30_000);
      await eventually('the DNS forwarder answering', answered);
      await provider.ip(['addr', 'del', '169.254.0.1/32', 'dev', 'vm1']);
      await eventually('the gateway address back on vm1', async () => (await provider.exec(['ip', '-4', '-o', 'addr', 'show', 'dev', 'vm1'])).stdout.includes('169.254.0.1/32'));
      expect(await answered()).toBe(true);
      await provider.ip(['link', 'del', 'dev', 'vm1']);
      await eventually('vm1 gone from status', async () => (await status(provider, socket)).links.every((link) => link.name !== 'vm1'));
      expect(await listening(provider, socket)).toBe(true);
      await clientLink(provider, 'vm2', 2, 'flapc2');
      await eventually('vm2 configured', async () => (await status(provider, socket)).links.some((link) => link.name === 'vm2' && link.state === 'configured'));
      expect(await answered()).toBe(true);
      expect(await boundInKernel(provider)).toBe(true);
      expect(agentLogLines(agent).filter((line) => line.level >= 40)).toEqual([]);
    } finally {
      await agent.kill('SIGTERM');
    }
  });
});
