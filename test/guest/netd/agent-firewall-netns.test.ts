// spectrum-netd's firewall as `status` reports it, run in provider namespaces: limits are shown as
// in force only while a table of ours holds them (a first update nft refuses, or a table deleted
// that the agent cannot make again, shows the failure instead), and clients' TCP timeouts and
// `auto` flow limits follow the provider's sysctls at the next audit, replacing the table once,
// then left alone. The ARP guard apart: its table missing, or refused by a kernel without the arp
// family (the inet table in force all the same); and --no-firewall deleting an earlier run's tables,
// its status saying the firewall is off.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseTableListing } from '../../../guest/firewall/ruleset.js';
import { type Harness, type Netns, type NetnsProcess, createHarness, describeNetns, eventually } from '../../harness/index.js';
import { writeNoArpFamilyNft } from '../firewall/no-arp-family.js';

const CLI = fileURLToPath(new URL('../../../dist/guest/cli.js', import.meta.url));
const mac = (role: 0x80 | 0x00, id: number): string => `0a:b3:ec:${role.toString(16).padStart(2, '0')}:00:${id.toString(16).padStart(2, '0')}`;
const AUDIT_SECONDS = 0.5;

interface StatusJson {
  counters: { firewallRepairs: number };
  firewallEnabled?: boolean;
  reaper: { threshold: number | null; lastError: string | null } | null;
  firewall: { antispoofDrops: number; arpDrops: number | null } | null;
  arpGuard: 'in-force' | 'missing' | 'unsupported' | null;
  flowLimits: { clientFlowLimit: number; clientNewFlowRate: number } | null;
  firewallError: string | null;
  links: { name: string; state: string; error: string | null }[];
}

describeNetns('spectrum-netd firewall status and settings in provider namespaces', () => {
  let harness: Harness;
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'netd-fw-'));
    harness = createHarness('netdfw');
  });

  afterAll(async () => {
    await harness?.cleanup();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  /** A provider namespace with one client link vm1 (client 1). */
  async function providerWithClient(name: string): Promise<Netns> {
    const provider = await harness.namespace(name);
    const client = await harness.namespace(`${name}c`);
    await harness.veth(provider, 'vm1', client, 'eth0');
    await provider.ip(['link', 'set', 'dev', 'vm1', 'address', mac(0x80, 1)]);
    await client.ip(['link', 'set', 'dev', 'eth0', 'address', mac(0x00, 1)]);
    return provider;
  }

  /** A provider link `name` for client `id`, its far end eth0 in a namespace of its own, `clientName` (returned). */
  async function plugClient(provider: Netns, clientName: string, name: string, id: number): Promise<Netns> {
    const client = await harness.namespace(clientName);
    await harness.veth(provider, name, client, 'eth0');
    await provider.ip(['link', 'set', 'dev', name, 'address', mac(0x80, id)]);
    await client.ip(['link', 'set', 'dev', 'eth0', 'address', mac(0x00, id)]);
    return client;
  }

  /** The tables in `ns`, in the order nft lists them. */
  const tables = async (ns: Netns): Promise<string[]> => (await ns.exec(['nft', 'list', 'tables'])).stdout.trim().split('\n').filter(Boolean);

  /** `limits`: --client-flow-limit and --client-new-flow-rate; `wrap`: what runs the agent (its argv follows); `env`: added to its environment. */
  async function startAgent(
    ns: Netns,
    socket: string,
    extra: readonly string[] = [],
    { limits = ['300', '30'], wrap = [], env = {} }: { limits?: readonly [string, string]; wrap?: readonly string[]; env?: Readonly<Record<string, string>> } = {},
  ): Promise<NetnsProcess> {
    const options = ['--client-flow-limit', limits[0], '--client-new-flow-rate', limits[1]];
    const child = ns.spawn([...wrap, 'node', CLI, 'run', '--control-socket', socket, '--notify-fd', '1', ...options, ...extra], {
      enter: 'nsenter',
      env: { ...process.env, SPECTRUM_LOG_LEVEL: 'info', ...env },
    });
    await child.waitForOutput(/^\n/, 10_000); // the readiness newline
    return child;
  }

  async function status(ns: Netns, socket: string): Promise<StatusJson> {
    const { stdout } = await ns.exec(['node', CLI, 'status', '--json', '--control-socket', socket]);
    return JSON.parse(stdout) as StatusJson;
  }

  describe('a first firewall update that nft refuses', () => {
    it('shows no flow limits in force, but why, until an update succeeds', async () => {
      const provider = await providerWithClient('owned');
      // Another process owns a table of our name (`flags owner`: only its netlink socket may
      // change or delete it, and it goes with that socket): nft refuses the agent's replacement
      // with EPERM, as it would a ruleset the kernel cannot take.
      const owner = provider.spawn(['nft', '-i'], { stdin: 'pipe' });
      owner.child.stdin?.write('add table inet spectrum_netd { flags owner; }\n');
      await eventually('the owned table', async () => (await provider.exec(['nft', 'list', 'tables'])).stdout.includes('table inet spectrum_netd'));
      const socket = join(dir, 'owned.sock');
      const agent = await startAgent(provider, socket);
      try {
        const failed = await status(provider, socket);
        expect(failed.flowLimits).toBeNull();
        expect(failed.firewallError).toMatch(/Operation not permitted/);
        expect(failed.firewall).toBeNull();
        const text = (await provider.exec(['node', CLI, 'status', '--control-socket', socket])).stdout;
        expect(text).not.toMatch(/^flow limits per client/m);
        expect(text).toMatch(/^firewall: not in force: the last update failed \(retrying\): .*Operation not permitted/m);

        // The owner goes, and its table with it: the agent's retry makes ours.
        owner.child.stdin?.end();
        await owner.wait();
        await eventually('the retried update', async () => (await status(provider, socket)).flowLimits !== null, 15_000);
        const applied = await status(provider, socket);
        expect(applied.flowLimits).toEqual({ clientFlowLimit: 300, clientNewFlowRate: 30 });
        expect(applied.firewallError).toBeNull();
        expect(applied.firewall).toMatchObject({ antispoofDrops: 0 });
        expect(applied.links.find((link) => link.name === 'vm1')).toMatchObject({ state: 'configured', error: null });
        const rules = parseTableListing((await provider.exec(['nft', '-s', 'list', 'table', 'inet', 'spectrum_netd'])).stdout).structure;
        expect(rules.match(/ct count over (\d+) /g)).toEqual(Array(2).fill('ct count over 300 '));
        const after = (await provider.exec(['node', CLI, 'status', '--control-socket', socket])).stdout;
        expect(after).toContain('\nflow limits per client: 300 conntrack entries, 30 new flows a second (60 at once)\n');
        expect(after).not.toMatch(/^firewall: not in force/m);
      } finally {
        await agent.kill();
      }
    });
  });

  describe('a table deleted by someone else that the agent cannot make again', () => {
    it('shows its flow limits no longer in force, and why, until the agent makes it again', async () => {
      const provider = await providerWithClient('gone');
      const socket = join(dir, 'gone.sock');
      const agent = await startAgent(provider, socket, ['--firewall-audit', String(AUDIT_SECONDS)]);
      const owner = provider.spawn(['nft', '-i'], { stdin: 'pipe' });
      try {
        expect((await status(provider, socket)).flowLimits).toEqual({ clientFlowLimit: 300, clientNewFlowRate: 30 });
        // Ours deleted, and in the same transaction a table of its name that only the owner's
        // netlink socket may change: the audit finds ours missing, and nft refuses to make it again.
        owner.child.stdin?.write('delete table inet spectrum_netd; add table inet spectrum_netd { flags owner; }\n');
        await eventually('the failed audit', async () => (await status(provider, socket)).firewallError !== null, 8 * AUDIT_SECONDS * 1000);
        const failed = await status(provider, socket);
        expect(failed.flowLimits).toBeNull();
        expect(failed.firewallError).toMatch(/Operation not permitted/);
        const text = (await provider.exec(['node', CLI, 'status', '--control-socket', socket])).stdout;
        expect(text).not.toMatch(/^flow limits per client/m);
        expect(text).toMatch(/^firewall: not in force: the last update failed \(retrying\): .*Operation not permitted/m);
        // Retried audits that fail change nothing of that.
        await new Promise((resolve) => setTimeout(resolve, 3 * AUDIT_SECONDS * 1000));
        expect(await status(provider, socket)).toMatchObject({ flowLimits: null, firewallError: expect.stringMatching(/Operation not permitted/) });

        // The owner goes, and its table with it: the agent's retry makes ours again.
        owner.child.stdin?.end();
        await owner.wait();
        await eventually('the table made again', async () => (await status(provider, socket)).flowLimits !== null, 15_000);
        const back = await status(provider, socket);
        expect(back).toMatchObject({ flowLimits: { clientFlowLimit: 300, clientNewFlowRate: 30 }, firewallError: null });
        expect(back.counters.firewallRepairs).toBeGreaterThanOrEqual(1);
        const rules = parseTableListing((await provider.exec(['nft', '-s', 'list', 'table', 'inet', 'spectrum_netd'])).stdout).structure;
        expect(rules.match(/ct count over (\d+) /g)).toEqual(Array(2).fill('ct count over 300 '));
      } finally {
        await owner.kill();
        await agent.kill();
      }
    });
  });

  describe('a table deleted by someone else between audits', () => {
    it('shows its flow limits no longer in force at once, not only after the next audit', async () => {
      const provider = await providerWithClient('between');
      const socket = join(dir, 'between.sock');
      // No audit: only the read of status can tell the table went.
      const agent = await startAgent(provider, socket, ['--firewall-audit', '0']);
      try {
        expect((await status(provider, socket)).flowLimits).toEqual({ clientFlowLimit: 300, clientNewFlowRate: 30 });
        await provider.exec(['nft', 'delete', 'table', 'inet', 'spectrum_netd']);
        const gone = await status(provider, socket);
        expect(gone).toMatchObject({ flowLimits: null, firewall: null, firewallError: null });
        const text = (await provider.exec(['node', CLI, 'status', '--control-socket', socket])).stdout;
        expect(text).not.toMatch(/^flow limits per client/m);
        expect(text).toMatch(/^firewall: not in force: its table inet spectrum_netd cannot be read/m);
      } finally {
        await agent.kill();
      }
    });
  });

  describe('a table replaced by someone else between audits', () => {
    it('shows its flow limits no longer in force when the table of its name has none of our counters', async () => {
      const provider = await providerWithClient('replaced');
      const socket = join(dir, 'replaced.sock');
      const agent = await startAgent(provider, socket, ['--firewall-audit', '0']);
      try {
        expect((await status(provider, socket)).flowLimits).toEqual({ clientFlowLimit: 300, clientNewFlowRate: 30 });
        // Another table of its name, in one transaction: it holds no client to anything.
        await provider.exec(['nft', '-f', '-'], { input: 'delete table inet spectrum_netd\ntable inet spectrum_netd { chain other { counter; }; }\n' });
        // The limits were shown as in force beside a line saying the firewall was not.
        const replaced = await status(provider, socket);
        expect(replaced).toMatchObject({ flowLimits: null, firewall: null, firewallError: null });
        const text = (await provider.exec(['node', CLI, 'status', '--control-socket', socket])).stdout;
        expect(text).not.toMatch(/^flow limits per client/m);
        expect(text).toMatch(/^firewall: not in force: its table inet spectrum_netd cannot be read \(deleted or replaced since the last update\?\)/m);
      } finally {
        await agent.kill();
      }
    });
  });

  describe('a kernel without the arp family (a wrapper nft stands for one: see test/guest/firewall/no-arp-family.ts)', () => {
    it('makes the rest of the firewall, says once what to check, and status shows it in force without its ARP guard', async () => {
      const provider = await providerWithClient('noarp');
      const wrapper = writeNoArpFamilyNft(mkdtempSync(join(dir, 'nft-')));
      const socket = join(dir, 'noarp.sock');
      // The agent runs nft from PATH (SPECTRUM_NETD_SPAWN_NFT), so the wrapper first in it.
      const env = { PATH: `${wrapper.dir}:${process.env['PATH'] ?? ''}`, SPECTRUM_NETD_SPAWN_NFT: '1' };
      const agent = await startAgent(provider, socket, ['--firewall-audit', String(AUDIT_SECONDS)], { env });
      try {
        const shown = await status(provider, socket);
        expect(shown).toMatchObject({ arpGuard: 'unsupported', flowLimits: { clientFlowLimit: 300, clientNewFlowRate: 30 }, firewallError: null, firewall: { antispoofDrops: 0, arpDrops: null } });
        expect(shown.links.find((link) => link.name === 'vm1')).toMatchObject({ state: 'configured', error: null });
        expect(await tables(provider)).toEqual(['table inet spectrum_netd']);
        const text = (await provider.exec(['node', CLI, 'status', '--control-socket', socket])).stdout;
        expect(text).toContain(
          "\nfirewall: in force (table inet spectrum_netd), but not its ARP guard\nfirewall: ARP guard: unavailable: nft refused the arp family (is CONFIG_NF_TABLES_ARP set in the kernel?), so clients' ARP is not policed; the rest of the firewall stands without it\n",
        );
        expect(text).toContain('\narpDrops: -\n');
        expect(text).not.toMatch(/not in force/);

        // A link plugged later joins the inet table's sets, and audits go by: no failure, no repair.
        await plugClient(provider, 'noarpc2', 'vm2', 2);
        await eventually('vm2 configured', async () => (await status(provider, socket)).links.some((link) => link.name === 'vm2' && link.state === 'configured'), 10_000);
        const listed = parseTableListing((await provider.exec(['nft', '-s', 'list', 'table', 'inet', 'spectrum_netd'])).stdout);
        expect(listed.elements.client_links).toEqual(['"vm1"', '"vm2"']);
        await new Promise((resolve) => setTimeout(resolve, 4 * AUDIT_SECONDS * 1000));
        expect(await status(provider, socket)).toMatchObject({ arpGuard: 'unsupported', firewallError: null, counters: { firewallRepairs: 0 } });
        const warnings = agent.stderr.split('\n').filter((line) => /nft refused the arp family/.test(line));
        expect(warnings).toHaveLength(1);
        expect(warnings[0]).toMatch(/"level":40.*is CONFIG_NF_TABLES_ARP set in the kernel\?/);
      } finally {
        await agent.kill();
      }
    });
  });

  describe('the ARP guard deleted by someone else', () => {
    it('shows the ARP guard missing and the rest in force; the next update makes it again', async () => {
      const provider = await providerWithClient('arpgone');
      const socket = join(dir, 'arpgone.sock');
      // No audit: the update that follows the plugged link makes it again.
      const agent = await startAgent(provider, socket, ['--firewall-audit', '0']);
      try {
        expect(await status(provider, socket)).toMatchObject({ firewallEnabled: true, arpGuard: 'in-force', firewall: { arpDrops: 0 } });
        await provider.exec(['nft', 'delete', 'table', 'arp', 'spectrum_netd']);
        const gone = await status(provider, socket);
        expect(gone).toMatchObject({ arpGuard: 'missing', flowLimits: { clientFlowLimit: 300, clientNewFlowRate: 30 }, firewallError: null, firewall: { antispoofDrops: 0, arpDrops: null } });
        const text = (await provider.exec(['node', CLI, 'status', '--control-socket', socket])).stdout;
        expect(text).toContain(
          '\nfirewall: in force (table inet spectrum_netd), but not its ARP guard\nfirewall: ARP guard: not in force: its table arp spectrum_netd cannot be read (deleted or replaced since the last update?); the next audit or update makes it again\n',
        );
        expect(text).not.toMatch(/^firewall: not in force/m);

        await plugClient(provider, 'arpgonec2', 'vm2', 2);
        await eventually('the ARP guard made again', async () => (await status(provider, socket)).arpGuard === 'in-force', 10_000);
        const listed = parseTableListing((await provider.exec(['nft', '-s', 'list', 'table', 'arp', 'spectrum_netd'])).stdout);
        expect(listed.elements.client_links).toEqual(['"vm1"', '"vm2"']);
        expect(await status(provider, socket)).toMatchObject({ firewallError: null, firewall: { arpDrops: 0 } });
      } finally {
        await agent.kill();
      }
    });
  });

  describe('--no-firewall after a run with it', () => {
    it("deletes the tables the earlier run left, and no other, saying so once: they drop no link plugged later; status says the firewall is off", async () => {
      const provider = await providerWithClient('nofw');
      const socket = join(dir, 'nofw.sock');
      const first = await startAgent(provider, socket);
      // Stopped, it leaves its tables (clients stay isolated until a restart takes them over).
      await first.kill('SIGTERM', 5000);
      expect(await tables(provider)).toEqual(['table inet spectrum_netd', 'table arp spectrum_netd']);
      // Others' tables, one of our name in another family: never touched.
      await provider.exec(['nft', '-f', '-'], { input: 'table ip spectrum_netd {\n}\ntable arp filter {\n}\ntable inet spectrum_netd_other {\n}\n' });
      const agent = await startAgent(provider, socket, ['--no-firewall']);
      try {
        expect(await tables(provider)).toEqual(['table ip spectrum_netd', 'table arp filter', 'table inet spectrum_netd_other']);
        const said = agent.stderr.split('\n').filter((line) => /--no-firewall: deleted/.test(line));
        expect(said).toHaveLength(1);
        expect(said[0]).toMatch(/deleted the firewall tables an earlier run left \(inet spectrum_netd, arp spectrum_netd\)/);

        // A provider link plugged now reaches the gateway: the earlier run's guard would drop it (not in its sets).
        const client = await plugClient(provider, 'nofwc2', 'vm2', 2);
        await eventually('vm2 configured', async () => (await status(provider, socket)).links.some((link) => link.name === 'vm2' && link.state === 'configured'), 10_000);
        expect((await client.exec(['node', CLI, 'client'])).stdout).toContain('eth0 100.64.0.2 configured');
        await Promise.all([provider.linkActive('vm2'), client.linkActive('eth0')]);
        const ping = await client.exec(['/bin/busybox', 'ping', '-c', '1', '-W', '2', '169.254.0.1'], { allowFailure: true });
        expect(ping.stdout).toMatch(/1 packets received/);

        // Status says the firewall is off: not zero drops, which read as a firewall in force.
        expect(await status(provider, socket)).toMatchObject({ firewallEnabled: false, firewall: null, arpGuard: null, flowLimits: null, firewallError: null });
        const text = (await provider.exec(['node', CLI, 'status', '--control-socket', socket])).stdout;
        expect(text).toContain('\nfirewall: off (run with --no-firewall): no isolation, NAT, anti-spoofing, ARP guard or flow limits, so no drop counters\n');
        expect(text).not.toMatch(/Drops:|not in force/);
      } finally {
        await agent.kill();
      }
    });
  });

  describe('`auto` flow limits', () => {
    const MAX = '/proc/sys/net/netfilter/nf_conntrack_max';

    it('follow a change of nf_conntrack_max at the next audit, as the reaper its threshold; an unreadable value keeps them, warned once', async () => {
      // nf_conntrack_max is the whole kernel's, read-only outside the initial namespace (0444 in
      // this one's /proc/sys). So the agent gets a mount namespace of its own in which a file of
      // the test's stands over it: what it reads changes, the kernel's value never does.
      const hostMax = readFileSync(MAX, 'utf8');
      const provider = await providerWithClient('ctmax');
      const socket = join(dir, 'ctmax.sock');
      const sysctl = join(dir, 'nf_conntrack_max');
      writeFileSync(sysctl, '8192\n');
      const wrap = ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', `mount --bind ${sysctl} ${MAX} && exec "$@"`, 'sh'];
      const agent = await startAgent(provider, socket, ['--firewall-audit', String(AUDIT_SECONDS)], { limits: ['auto', 'auto'], wrap });
      const rules = async (): Promise<string[]> =>
        parseTableListing((await provider.exec(['nft', '-s', 'list', 'table', 'inet', 'spectrum_netd'])).stdout).structure.match(/ct count over \d+ |(?<=@client_new_flows \{ ip saddr )limit rate over \d+\/second/g) ?? [];
      try {
        const first = await status(provider, socket);
        expect(first.flowLimits).toEqual({ clientFlowLimit: 1024, clientNewFlowRate: 46 });
        // The reaper reads nf_conntrack_max at its own tick (each second), not at the audit.
        await eventually('the reaper to read nf_conntrack_max', async () => (await status(provider, socket)).reaper?.threshold === 4096, 5000);
        expect(await rules()).toEqual(['limit rate over 46/second', 'ct count over 1024 ', 'limit rate over 46/second', 'ct count over 1024 ']);

        writeFileSync(sysctl, '4096\n');
        await eventually('the limits to follow', async () => (await status(provider, socket)).flowLimits?.clientFlowLimit === 512, 8 * AUDIT_SECONDS * 1000);
        const followed = await status(provider, socket);
        expect(followed.flowLimits).toEqual({ clientFlowLimit: 512, clientNewFlowRate: 23 });
        await eventually('the reaper to follow', async () => (await status(provider, socket)).reaper?.threshold === 2048, 5000);
        expect(await rules()).toEqual(['limit rate over 23/second', 'ct count over 512 ', 'limit rate over 23/second', 'ct count over 512 ']);
        const text = (await provider.exec(['node', CLI, 'status', '--control-socket', socket])).stdout;
        expect(text).toContain('\nflow limits per client: 512 conntrack entries, 23 new flows a second (46 at once)\n');
        // Several audits later: not replaced again, and no repair counted.
        await new Promise((resolve) => setTimeout(resolve, 4 * AUDIT_SECONDS * 1000));
        expect((await status(provider, socket)).counters.firewallRepairs).toBe(0);
        expect(agent.stderr.split('\n').filter((line) => /the flow limits derived from it \(auto\) follow/.test(line))).toHaveLength(1);

        // Unreadable: the limits and the reaper's threshold stay; said once each, not at every audit.
        writeFileSync(sysctl, 'many\n');
        await new Promise((resolve) => setTimeout(resolve, 6 * AUDIT_SECONDS * 1000));
        const kept = await status(provider, socket);
        expect(kept.flowLimits).toEqual({ clientFlowLimit: 512, clientNewFlowRate: 23 });
        expect(kept.reaper).toMatchObject({ threshold: 2048, lastError: expect.stringMatching(/nf_conntrack_max holds "many"/) });
        expect(await rules()).toEqual(['limit rate over 23/second', 'ct count over 512 ', 'limit rate over 23/second', 'ct count over 512 ']);
        expect(agent.stderr.split('\n').filter((line) => /firewall: cannot read nf_conntrack_max/.test(line))).toHaveLength(1);
        expect(agent.stderr.split('\n').filter((line) => /the reaper cannot read nf_conntrack_max/.test(line))).toHaveLength(1);
      } finally {
        await agent.kill();
      }
      expect(readFileSync(MAX, 'utf8')).toBe(hostMax);
    });
  });

  describe("clients' TCP timeouts", () => {
    const ESTABLISHED = '/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established';

    /** The table's handle (a replaced table gets a new one) and its ct timeout policy line. */
    async function table(ns: Netns): Promise<{ handle: string; policy: string }> {
      const { stdout } = await ns.exec(['nft', '-a', 'list', 'table', 'inet', 'spectrum_netd']);
      return { handle: /^table inet spectrum_netd \{ # handle (\d+)$/m.exec(stdout)?.[1] ?? '', policy: /^\t\tpolicy = \{ (.*) \}$/m.exec(stdout)?.[1] ?? '' };
    }

    it("follow a change of the provider's sysctls at the next audit: one table replacement, then stable", async () => {
      const provider = await providerWithClient('tcpto');
      const socket = join(dir, 'tcpto.sock');
      const agent = await startAgent(provider, socket, ['--firewall-audit', String(AUDIT_SECONDS)]);
      try {
        const first = await table(provider);
        expect(first.policy).toBe('time_wait : 10');
        // Writable per network namespace: this provider's own value, the host's untouched.
        await provider.exec(['sh', '-c', `echo 3600 > ${ESTABLISHED}`]);
        await eventually('the policy to follow', async () => (await table(provider)).policy === 'established : 3600, time_wait : 10', 4 * AUDIT_SECONDS * 1000);
        const followed = await table(provider);
        expect(followed.handle).not.toBe(first.handle);
        // Several audits later: the same table, not replaced again, and no repair counted (the
        // listing matches what the agent now expects).
        await new Promise((resolve) => setTimeout(resolve, 4 * AUDIT_SECONDS * 1000));
        expect(await table(provider)).toEqual(followed);
        expect((await status(provider, socket)).counters.firewallRepairs).toBe(0);
        expect(agent.stderr.split('\n').filter((line) => /clients' TCP flows follow/.test(line))).toHaveLength(1);

        // Back to the kernel's default, which nft lists no more: the policy follows again, once.
        await provider.exec(['sh', '-c', `echo 432000 > ${ESTABLISHED}`]);
        await eventually('the policy to follow back', async () => (await table(provider)).policy === 'time_wait : 10', 4 * AUDIT_SECONDS * 1000);
        const back = await table(provider);
        await new Promise((resolve) => setTimeout(resolve, 4 * AUDIT_SECONDS * 1000));
        expect(await table(provider)).toEqual(back);
        expect((await status(provider, socket)).counters.firewallRepairs).toBe(0);
        expect(agent.stderr.split('\n').filter((line) => /clients' TCP flows follow/.test(line))).toHaveLength(2);
      } finally {
        await agent.kill();
      }
    });
  });
});
