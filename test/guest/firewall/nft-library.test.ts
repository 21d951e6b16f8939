import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { FirewallModel } from '../../../guest/firewall/model.js';
import type { NftResult } from '../../../guest/firewall/nft-library.js';
import { FirewallReconciler, reconcileFirewall } from '../../../guest/firewall/nft.js';
import { desiredElements, parseTableListing } from '../../../guest/firewall/ruleset.js';
import { validateFirewallModel } from '../../../guest/firewall/model.js';
import { type Harness, type Netns, createHarness, describeNetns } from '../../harness/index.js';
import { TEST_FLOW_LIMIT, TEST_NEW_FLOW_RATE } from './provider-world.js';

// The agent runs libnftables in its own namespace: so does this compiled fixture, entered into a
// harness namespace. The spawned `nft` (through the harness) checks what it did.
const FIXTURE = fileURLToPath(new URL('../../../dist/test/guest/firewall/fixtures/nft-in-process.js', import.meta.url));

interface Call {
  readonly script: string;
  readonly stateless?: boolean;
  readonly json?: boolean;
  readonly numeric?: boolean;
}

const SCRIPT_TABLE = [
  'add table inet nft_library_test',
  'add set inet nft_library_test links { type ifname; }',
  'add element inet nft_library_test links { "a0", "a1" }',
  'add counter inet nft_library_test drops',
  // Names that numeric listings print as numbers: a priority, a protocol, conntrack states.
  'add chain inet nft_library_test input { type filter hook input priority raw; policy accept; }',
  'add rule inet nft_library_test input meta l4proto tcp ct state established,related accept',
  '',
].join('\n');

const model = (links: number): FirewallModel => ({
  providerLinks: Array.from({ length: links }, (_, index) => ({ ifname: `snp${index + 1}`, clientIp: `100.64.${Math.floor((index + 1) / 256)}.${(index + 1) % 256}` })),
  uplinks: ['eth0'],
  allowedPairs: [],
});

describeNetns('nft in-process through libnftables', () => {
  let harness: Harness;
  let ns: Netns;

  async function inProcess<T>(mode: 'run' | 'reconcile', argument: unknown): Promise<T> {
    const result = await ns.exec([process.execPath, FIXTURE, mode, JSON.stringify(argument)], { enter: 'nsenter', timeoutMs: 30_000 });
    return JSON.parse(result.stdout) as T;
  }
  const run = (calls: readonly Call[]): Promise<NftResult[]> => inProcess('run', calls);
  const spawnedListing = async (table: string): Promise<string> => (await ns.exec(['nft', '-s', 'list', 'table', 'inet', table])).stdout;

  beforeAll(async () => {
    if (!existsSync(FIXTURE)) throw new Error(`${FIXTURE} is missing: run npm run build`);
    harness = createHarness('nftlib');
    ns = await harness.namespace('agent');
  });

  afterAll(async () => {
    await harness?.cleanup();
  });

  it('runs a script, and lists stateless, numeric and as JSON as the spawned nft does', async () => {
    const [created, listed, counters, numeric] = await run([
      { script: SCRIPT_TABLE },
      { script: 'list table inet nft_library_test', stateless: true },
      { script: 'list counters table inet nft_library_test', json: true },
      { script: 'list table inet nft_library_test', stateless: true, numeric: true },
    ]);
    expect(created).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(listed).toEqual({ code: 0, stdout: await spawnedListing('nft_library_test'), stderr: '' });
    expect(listed?.stdout).toMatch(/elements = \{ "a0",\s+"a1" \}/);
    expect(counters?.code).toBe(0);
    expect(counters?.stdout).toBe((await ns.exec(['nft', '-j', 'list', 'counters', 'table', 'inet', 'nft_library_test'])).stdout);
    const json = JSON.parse(counters?.stdout ?? '') as { nftables: unknown[] };
    expect(json.nftables).toContainEqual({ counter: expect.objectContaining({ family: 'inet', table: 'nft_library_test', name: 'drops', packets: 0, bytes: 0 }) });
    expect(numeric).toEqual({ code: 0, stdout: (await ns.exec(['nft', '-n', '-s', 'list', 'table', 'inet', 'nft_library_test'])).stdout, stderr: '' });
    expect(numeric?.stdout).toContain('priority -300;');
    expect(numeric?.stdout).toContain('meta l4proto 6 ct state 0x2,0x4 accept');
  });

  it('calls queued at once run one at a time, in order', async () => {
    const results = await run(
      Array.from({ length: 5 }, (_, index) => [
        { script: `add element inet nft_library_test links { "q${index}" }` },
        { script: 'list set inet nft_library_test links' },
      ]).flat(),
    );
    // Each listing sees the calls before it: q0 alone after the first, all five after the last.
    const listings = results.filter((_, index) => index % 2 === 1);
    expect(listings.map((result) => (result.stdout.match(/"q\d"/g) ?? []).length)).toEqual([1, 2, 3, 4, 5]);
    await run([{ script: 'delete element inet nft_library_test links { "q0", "q1", "q2", "q3", "q4" }' }]);
  });

  it('a failing script: exit 1, nft error text naming the line, nothing applied', async () => {
    const before = await spawnedListing('nft_library_test');
    const [failed, syntax] = await run([
      { script: 'add element inet nft_library_test links { "applied-not" }\nadd element inet nft_library_test no_such_set { "x" }\n' },
      { script: 'list table inet nft_library_test this is not nft' },
    ]);
    expect(failed?.code).toBe(1);
    expect(failed?.stdout).toBe('');
    expect(failed?.stderr).toMatch(/:2:\d+-\d+: Error: No such file or directory\nadd element inet nft_library_test no_such_set/);
    expect(syntax?.code).toBe(1);
    expect(syntax?.stderr).toMatch(/^Error: syntax error/);
    expect(await spawnedListing('nft_library_test')).toBe(before);
  });

  it('a missing table: the same error nft prints', async () => {
    const [missing] = await run([{ script: 'list table inet no_such_table', stateless: true }]);
    const spawned = await ns.exec(['nft', '-s', 'list', 'table', 'inet', 'no_such_table'], { allowFailure: true });
    expect(missing).toEqual({ code: 1, stdout: '', stderr: spawned.stderr });
  });

  it("the agent's FirewallReconciler in-process: element transactions the spawned nft reads back as planned", async () => {
    const small = model(20);
    const grown = model(21);
    const shrunk = { ...grown, providerLinks: grown.providerLinks.filter((_, index) => index !== 3) };
    expect(await inProcess('reconcile', [small, grown, grown, shrunk])).toEqual([{ changed: true }, { changed: true }, { changed: false }, { changed: true }]);
    // The spawned path (from outside) finds nothing to change, and lists exactly the plan.
    expect(await reconcileFirewall(shrunk, { netns: ns.name, clientFlowLimit: TEST_FLOW_LIMIT, clientNewFlowRate: TEST_NEW_FLOW_RATE })).toEqual({ changed: false });
    const listing = parseTableListing((await ns.exec(['nft', '-s', 'list', 'table', 'inet', 'spectrum_netd'])).stdout);
    expect(listing.elements).toEqual(desiredElements(validateFirewallModel(shrunk)));
    expect(listing.unknownSets).toEqual([]);
  });
});

describeNetns('the audit compares listings that no name in /etc changes', () => {
  let harness: Harness;
  let ns: Netns;
  const listing = async (args: readonly string[]): Promise<string> => (await ns.exec(['nft', ...args, 'list', 'table', 'inet', 'spectrum_netd'])).stdout;

  beforeAll(async () => {
    if (!existsSync(FIXTURE)) throw new Error(`${FIXTURE} is missing: run npm run build`);
    harness = createHarness('nftnames');
    ns = await harness.namespace('agent');
    // `ip netns exec NS` bind-mounts /etc/netns/NS/* over /etc/* in a mount namespace of its own:
    // there, and only there, the provider link group has a name and TCP and UDP other names.
    mkdirSync(`/etc/netns/${ns.name}/iproute2`, { recursive: true });
    writeFileSync(`/etc/netns/${ns.name}/iproute2/group`, '0\tdefault\n179563648\tspectrum\n');
    writeFileSync(`/etc/netns/${ns.name}/protocols`, 'ip\t0\tIP\nicmp\t1\tICMP\ntcpx\t6\tTCP\nudpx\t17\tUDP\n');
  });

  afterAll(async () => {
    await harness?.cleanup();
  });

  it('an audit after a load finds nothing to change, spawned (--netns) or in-process', async () => {
    const links = model(3);
    expect(await reconcileFirewall(links, { netns: ns.name, clientFlowLimit: TEST_FLOW_LIMIT, clientNewFlowRate: TEST_NEW_FLOW_RATE })).toEqual({ changed: true });
    // The names are in effect for nft run in there.
    const named = await listing(['-s']);
    expect(named).toContain('iifgroup "spectrum" iifname != @client_links');
    expect(named).toContain('meta l4proto { tcpx, udpx } th dport 53');
    // Handles change when a table is replaced: the same handles after the audits, nothing was.
    const before = await listing(['-a', '-s']);
    expect(await reconcileFirewall(links, { netns: ns.name, clientFlowLimit: TEST_FLOW_LIMIT, clientNewFlowRate: TEST_NEW_FLOW_RATE })).toEqual({ changed: false });
    expect(await new FirewallReconciler({ netns: ns.name, clientFlowLimit: TEST_FLOW_LIMIT, clientNewFlowRate: TEST_NEW_FLOW_RATE }).reconcile(links, { verify: true })).toEqual({ changed: false });
    // The agent's path: libnftables in its own process, entered with `ip netns exec` to see the names.
    const inProcess = await ns.exec([process.execPath, FIXTURE, 'verify', JSON.stringify([links, links])], { timeoutMs: 30_000 });
    expect(JSON.parse(inProcess.stdout)).toEqual([{ changed: false }, { changed: false }]);
    expect(await listing(['-a', '-s'])).toBe(before);
    // A ct timeout policy's protocol is a name even with -n; with no entry for it, a number.
    expect(await listing(['-n', '-s'])).toContain('\t\tprotocol tcpx\n');
    writeFileSync(`/etc/netns/${ns.name}/protocols`, '');
    expect(await listing(['-n', '-s'])).toContain('\t\tprotocol 6\n');
    expect(await reconcileFirewall(links, { netns: ns.name, clientFlowLimit: TEST_FLOW_LIMIT, clientNewFlowRate: TEST_NEW_FLOW_RATE })).toEqual({ changed: false });
    // Nothing was replaced: the same handles.
    const handles = (text: string): string[] => text.match(/# handle \d+/g) ?? [];
    expect(handles(await listing(['-a', '-s']))).toEqual(handles(before));
  });
});
