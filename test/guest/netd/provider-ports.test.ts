// The agent's firewall port against a simulated table (no kernel): how it settles the client flow
// cap and new-flow rate, from their options or from nf_conntrack_max, and clients' TCP timeouts
// from the provider's, before the table's first load; how audits follow those sysctls; and when it
// says the limits are in force.
import { Writable } from 'node:stream';
import pino from 'pino';
import { beforeEach, expect, it, vi } from 'vitest';
import { KERNEL_TCP_TIMEOUTS, type TcpTimeouts, clientTcpTimeouts } from '../../../guest/firewall/client-tcp-timeouts.js';
import type { FirewallModel } from '../../../guest/firewall/model.js';
import type { NftResult } from '../../../guest/firewall/nft-library.js';
import { validateFirewallModel } from '../../../guest/firewall/model.js';
import { desiredElements, emptyElements, staticTableText } from '../../../guest/firewall/ruleset.js';
import { NftablesFirewall } from '../../../guest/netd/provider-ports.js';
import { type SimulatedFirewall, applyScript, elementsOf, listTable, tableOf } from '../firewall/simulated-table.js';

/** The tables, and the structures the inet one was made with, in order. */
/** `refusing`: nft refuses every change (a listing still works), as the kernel may a transaction. */
const nft = vi.hoisted(() => ({ table: undefined as SimulatedFirewall | undefined, made: [] as string[], refusing: false }));

vi.mock('../../../guest/firewall/nft-library.js', () => ({
  loadNftLibrary: () => undefined,
  runNftInProcess: async (script: string): Promise<NftResult> => {
    if (script.startsWith('list table ')) {
      return listTable(nft.table, script);
    }
    if (nft.refusing) return { code: 1, stdout: '', stderr: 'Error: Could not process rule: Operation not permitted' };
    const before = nft.table?.inet?.structure;
    nft.table = applyScript(nft.table, script);
    if (nft.table?.inet !== undefined && nft.table.inet.structure !== before) nft.made.push(nft.table.inet.structure);
    return { code: 0, stdout: '', stderr: '' };
  },
}));

const log = pino({ level: 'silent' });
const RATE = 500;
/** The provider's TCP timeouts: the kernel's defaults, as the sysctls of a fresh namespace have them. */
const kernelTimeouts = (): TcpTimeouts => KERNEL_TCP_TIMEOUTS;
const table = (clientFlowLimit: number, clientNewFlowRate = RATE, provider: TcpTimeouts = KERNEL_TCP_TIMEOUTS): string =>
  staticTableText({ clientFlowLimit, clientNewFlowRate, clientTcpTimeouts: clientTcpTimeouts(provider) });
const model: FirewallModel = { providerLinks: [{ ifname: 'snp1', clientIp: '100.64.0.1' }], uplinks: ['eth0'], allowedPairs: [] };

beforeEach(() => {
  nft.table = undefined;
  nft.made = [];
  nft.refusing = false;
});

it('derives the cap from nf_conntrack_max: an eighth of the table, at most 4096', async () => {
  const firewall = new NftablesFirewall('auto', RATE, log, () => 16_384, kernelTimeouts);
  // What `status` shows: nothing until the table is made, then the cap it was made with.
  expect(firewall.flowLimits()).toBeNull();
  await firewall.reconcile(model);
  expect(nft.made).toEqual([table(2048)]);
  expect(firewall.flowLimits()).toEqual({ clientFlowLimit: 2048, clientNewFlowRate: RATE });
  nft.table = undefined;
  await new NftablesFirewall('auto', RATE, log, () => 262_144, kernelTimeouts).reconcile(model);
  expect(nft.made).toEqual([table(2048), table(4096)]);
});

it('loads the table without the cap first when nf_conntrack is not loaded yet (its rules load it), then with it', async () => {
  // nf_conntrack_max exists once a table with ct rules is loaded.
  const firewall = new NftablesFirewall('auto', RATE, log, () => (nft.table === undefined ? undefined : 4096), kernelTimeouts);
  await firewall.reconcile(model);
  expect(nft.made).toEqual([table(0), table(512)]);
  expect(firewall.flowLimits()).toEqual({ clientFlowLimit: 512, clientNewFlowRate: RATE });
  // Settled once: the next calls, audits included, keep it.
  expect(await firewall.verify(model)).toBe(false);
  await firewall.reconcile(model);
  expect(nft.made).toHaveLength(2);
});

it('fails, saying what to give, when nf_conntrack_max never appears', async () => {
  await expect(new NftablesFirewall('auto', RATE, log, () => undefined, kernelTimeouts).reconcile(model)).rejects.toMatchObject({ kind: 'flow-limit', message: expect.stringMatching(/--client-flow-limit/) });
});

it('takes --client-flow-limit as it is, without reading nf_conntrack_max; refuses what nft cannot hold', async () => {
  const conntrackMax = vi.fn(() => 65_536);
  await new NftablesFirewall(100, RATE, log, conntrackMax, kernelTimeouts).reconcile(model);
  await new NftablesFirewall(0, RATE, log, conntrackMax, kernelTimeouts).reconcile(model);
  expect(nft.made).toEqual([table(100), table(0)]);
  expect(conntrackMax).not.toHaveBeenCalled();
  expect(() => new NftablesFirewall(2 ** 32, RATE, log)).toThrow(expect.objectContaining({ kind: 'flow-limit' }));
});

it('takes --client-new-flow-rate as it is, 0 for none, with the cap derived or given; refuses what nft cannot hold', async () => {
  await new NftablesFirewall('auto', 20, log, () => 65_536, kernelTimeouts).reconcile(model);
  await new NftablesFirewall(100, 0, log, () => undefined, kernelTimeouts).reconcile(model);
  expect(nft.made).toEqual([table(4096, 20), table(100, 0)]);
  for (const rate of [-1, 1_000_001]) {
    expect(() => new NftablesFirewall('auto', rate, log)).toThrow(expect.objectContaining({ kind: 'flow-rate' }));
    expect(() => new NftablesFirewall(100, rate, log)).toThrow(expect.objectContaining({ kind: 'flow-rate' }));
  }
});

it('derives the new-flow rate from nf_conntrack_max with `auto`: an eighth of the table per 22 s, at least 1, at most 100; logs both and shows them', async () => {
  const lines: string[] = [];
  const logged = pino({ level: 'info' }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(chunk.toString()), done()) }));
  const firewall = new NftablesFirewall('auto', 'auto', logged, () => 8192, kernelTimeouts);
  await firewall.reconcile(model);
  expect(nft.made).toEqual([table(1024, 46)]);
  expect(firewall.flowLimits()).toEqual({ clientFlowLimit: 1024, clientNewFlowRate: 46 });
  const entries = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  expect(entries).toContainEqual(expect.objectContaining({ clientFlowLimit: 1024, conntrackMax: 8192 }));
  expect(entries).toContainEqual(expect.objectContaining({ clientNewFlowRate: 46, conntrackMax: 8192 }));
  nft.table = undefined;
  // An explicit cap with the derived rate, and the other way round.
  await new NftablesFirewall(300, 'auto', log, () => 1024, kernelTimeouts).reconcile(model);
  nft.table = undefined;
  await new NftablesFirewall('auto', 7, log, () => 262_144, kernelTimeouts).reconcile(model);
  expect(nft.made.slice(1)).toEqual([table(300, 5), table(4096, 7)]);
});

it('loads the table with no cap and the most the default rate gives while nf_conntrack is not loaded, then with both derived', async () => {
  const loaded = (): boolean => nft.table !== undefined;
  const firewall = new NftablesFirewall('auto', 'auto', log, () => (loaded() ? 4096 : undefined), () => (loaded() ? KERNEL_TCP_TIMEOUTS : undefined));
  await firewall.reconcile(model);
  expect(nft.made).toEqual([table(0, 100), table(512, 23)]);
  expect(firewall.flowLimits()).toEqual({ clientFlowLimit: 512, clientNewFlowRate: 23 });
});

it("gives clients' TCP flows the provider's timeouts, TIME_WAIT and CLOSE at most 10 s, read once the table has loaded nf_conntrack", async () => {
  const tuned: TcpTimeouts = { ...KERNEL_TCP_TIMEOUTS, established: 3600, close: 30 };
  const firewall = new NftablesFirewall(100, 20, log, () => 65_536, () => (nft.table === undefined ? undefined : tuned));
  await firewall.reconcile(model);
  // Numbers given: nf_conntrack_max is not needed, the timeouts are.
  expect(nft.made).toEqual([table(100, 20), table(100, 20, tuned)]);
  expect(nft.made[1]).toContain('\t\tpolicy = { established : 3600, time_wait : 10 }\n');
  expect(await firewall.verify(model)).toBe(false);
});

it('fails, saying what to give, when nf_conntrack_max never appears for the rate, or the TCP timeouts never do', async () => {
  await expect(new NftablesFirewall(100, 'auto', log, () => undefined, kernelTimeouts).reconcile(model)).rejects.toMatchObject({
    kind: 'flow-rate',
    message: expect.stringMatching(/--client-new-flow-rate/),
  });
  await expect(new NftablesFirewall(100, 20, log, () => 65_536, () => undefined).reconcile(model)).rejects.toMatchObject({ kind: 'tcp-timeouts' });
});

it("follows a change of the provider's TCP timeouts that nft refused at the next audit: as a follow, not counted as a repair, logged once done", async () => {
  const lines: string[] = [];
  const logged = pino({ level: 'info' }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(chunk.toString()), done()) }));
  const follows = (): number => lines.filter((line) => line.includes("clients' TCP flows follow")).length;
  let provider: TcpTimeouts = KERNEL_TCP_TIMEOUTS;
  const firewall = new NftablesFirewall(100, 20, logged, () => 65_536, () => provider);
  await firewall.reconcile(model);
  provider = { ...KERNEL_TCP_TIMEOUTS, established: 3600 };
  nft.refusing = true;
  await expect(firewall.verify(model)).rejects.toMatchObject({ kind: 'nft-failed' });
  expect(follows()).toBe(0);
  nft.refusing = false;
  // The table still has the old policy: the next audit replaces it as the follow it is.
  expect(await firewall.verify(model)).toBe(false);
  expect(nft.made).toEqual([table(100, 20), table(100, 20, provider)]);
  expect(follows()).toBe(1);
  expect(await firewall.verify(model)).toBe(false);
  expect(nft.made).toHaveLength(2);
});

it("warns once that the provider's TCP timeouts cannot be read, not at every audit, and again for another reason or after they could be read", async () => {
  const lines: string[] = [];
  const logged = pino({ level: 'info' }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(chunk.toString()), done()) }));
  const warnings = (): number => lines.filter((line) => line.includes("cannot read the provider's TCP timeouts")).length;
  let unreadable: string | undefined;
  const provider = (): TcpTimeouts => {
    if (unreadable !== undefined) throw new Error(unreadable);
    return KERNEL_TCP_TIMEOUTS;
  };
  const firewall = new NftablesFirewall(100, 20, logged, () => 65_536, provider);
  await firewall.reconcile(model);
  unreadable = 'EACCES: nf_conntrack_tcp_timeout_established';
  for (let audit = 0; audit < 3; audit += 1) expect(await firewall.verify(model)).toBe(false);
  expect(warnings()).toBe(1);
  unreadable = 'EIO: nf_conntrack_tcp_timeout_close';
  expect(await firewall.verify(model)).toBe(false);
  expect(warnings()).toBe(2);
  unreadable = undefined;
  expect(await firewall.verify(model)).toBe(false);
  unreadable = 'EIO: nf_conntrack_tcp_timeout_close';
  expect(await firewall.verify(model)).toBe(false);
  expect(warnings()).toBe(3);
  // The table kept its policy throughout.
  expect(nft.made).toEqual([table(100, 20)]);
});

it('keeps its flow limits in force after a refused update while the table stands as applied; none once an update finds it missing or changed and cannot make it again', async () => {
  const firewall = new NftablesFirewall(100, 20, log, () => 65_536, kernelTimeouts);
  await firewall.reconcile(model);
  const applied = { clientFlowLimit: 100, clientNewFlowRate: 20 };
  expect(firewall.flowLimits()).toEqual(applied);
  nft.refusing = true;
  // An element change refused: the table, with the rules that hold clients to the limits, stands.
  const more: FirewallModel = { ...model, providerLinks: [...model.providerLinks, { ifname: 'snp2', clientIp: '100.64.0.2' }] };
  await expect(firewall.reconcile(more)).rejects.toMatchObject({ kind: 'nft-failed' });
  await expect(firewall.verify(more)).rejects.toMatchObject({ kind: 'nft-failed' });
  expect(firewall.flowLimits()).toEqual(applied);
  // Someone deletes the table, and the audit cannot make it again.
  nft.table = undefined;
  await expect(firewall.verify(more)).rejects.toMatchObject({ kind: 'nft-failed' });
  expect(firewall.flowLimits()).toBeNull();
  // Made again: in force again (a repair).
  nft.refusing = false;
  expect(await firewall.verify(more)).toBe(true);
  expect(firewall.flowLimits()).toEqual(applied);
  // Someone replaces it with another table of its name (other rules), and ours is refused: none.
  await new NftablesFirewall(7, 20, log, () => 65_536, kernelTimeouts).reconcile(more);
  nft.refusing = true;
  await expect(firewall.reconcile(model)).rejects.toMatchObject({ kind: 'nft-failed' });
  expect(firewall.flowLimits()).toBeNull();
  // Still none while its retries fail, whatever they change.
  await expect(firewall.verify(more)).rejects.toMatchObject({ kind: 'nft-failed' });
  expect(firewall.flowLimits()).toBeNull();
  nft.refusing = false;
  await firewall.reconcile(model);
  expect(firewall.flowLimits()).toEqual(applied);
  expect(nft.made).toEqual([table(100, 20), table(100, 20), table(7, 20), table(100, 20)]);
});

it('has `auto` flow limits follow nf_conntrack_max at each audit: the table replaced once, not a repair, logged once done', async () => {
  const lines: string[] = [];
  const logged = pino({ level: 'info' }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(chunk.toString()), done()) }));
  const follows = (): number => lines.filter((line) => line.includes('the flow limits derived from it (auto) follow')).length;
  let conntrackMax = 8192;
  const firewall = new NftablesFirewall('auto', 'auto', logged, () => conntrackMax, kernelTimeouts);
  await firewall.reconcile(model);
  expect(firewall.flowLimits()).toEqual({ clientFlowLimit: 1024, clientNewFlowRate: 46 });
  expect(await firewall.verify(model)).toBe(false);
  expect(nft.made).toEqual([table(1024, 46)]);
  conntrackMax = 4096;
  // A reconcile between audits keeps to the table as it is.
  await firewall.reconcile(model);
  expect(nft.made).toHaveLength(1);
  expect(await firewall.verify(model)).toBe(false);
  expect(nft.made).toEqual([table(1024, 46), table(512, 23)]);
  expect(firewall.flowLimits()).toEqual({ clientFlowLimit: 512, clientNewFlowRate: 23 });
  expect(follows()).toBe(1);
  expect(lines.map((line) => JSON.parse(line) as Record<string, unknown>)).toContainEqual(
    expect.objectContaining({ from: { clientFlowLimit: 1024, clientNewFlowRate: 46 }, to: { clientFlowLimit: 512, clientNewFlowRate: 23 }, conntrackMax: 4096 }),
  );
  // Then stable: no replacement, no other line.
  expect(await firewall.verify(model)).toBe(false);
  await firewall.reconcile(model);
  expect(nft.made).toHaveLength(2);
  expect(follows()).toBe(1);
  // A follow nft refuses: the old table and its limits stand; the next audit follows, once.
  conntrackMax = 2048;
  nft.refusing = true;
  await expect(firewall.verify(model)).rejects.toMatchObject({ kind: 'nft-failed' });
  expect(firewall.flowLimits()).toEqual({ clientFlowLimit: 512, clientNewFlowRate: 23 });
  expect(follows()).toBe(1);
  nft.refusing = false;
  expect(await firewall.verify(model)).toBe(false);
  expect(nft.made).toEqual([table(1024, 46), table(512, 23), table(256, 11)]);
  expect(firewall.flowLimits()).toEqual({ clientFlowLimit: 256, clientNewFlowRate: 11 });
  expect(follows()).toBe(2);
});

it('counts a repair an audit makes while it follows a change of nf_conntrack_max or of the TCP timeouts: the table was changed behind its back too', async () => {
  let conntrackMax = 8192;
  let provider: TcpTimeouts = KERNEL_TCP_TIMEOUTS;
  const firewall = new NftablesFirewall('auto', 'auto', log, () => conntrackMax, () => provider);
  await firewall.reconcile(model);
  // Someone empties the table's sets (its structure stands), and nf_conntrack_max changes.
  nft.table = tableOf(nft.table!.inet!.structure, emptyElements());
  conntrackMax = 4096;
  expect(await firewall.verify(model)).toBe(true);
  expect(nft.made).toEqual([table(1024, 46), table(512, 23)]);
  expect(elementsOf(nft.table)).toEqual(elementsOf(tableOf(table(512, 23), desiredElements(validateFirewallModel(model)))));
  // Someone deletes the table, and the provider's TCP timeouts change.
  nft.table = undefined;
  provider = { ...KERNEL_TCP_TIMEOUTS, established: 3600 };
  expect(await firewall.verify(model)).toBe(true);
  expect(nft.made.at(-1)).toBe(table(512, 23, provider));
  // A follow alone is no repair.
  conntrackMax = 2048;
  expect(await firewall.verify(model)).toBe(false);
  expect(nft.made.at(-1)).toBe(table(256, 11, provider));
});

it('keeps `auto` limits as they are while nf_conntrack_max cannot be read, warned once per reason; a limit given as a number never follows', async () => {
  const lines: string[] = [];
  const logged = pino({ level: 'info' }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(chunk.toString()), done()) }));
  const warnings = (): number => lines.filter((line) => line.includes('cannot read nf_conntrack_max')).length;
  let unreadable: string | undefined;
  let conntrackMax = 8192;
  const read = (): number => {
    if (unreadable !== undefined) throw new Error(unreadable);
    return conntrackMax;
  };
  const firewall = new NftablesFirewall('auto', 7, logged, read, kernelTimeouts);
  await firewall.reconcile(model);
  unreadable = '/proc/sys/net/netfilter/nf_conntrack_max holds "many", not a number of entries';
  conntrackMax = 4096;
  for (let audit = 0; audit < 3; audit += 1) expect(await firewall.verify(model)).toBe(false);
  expect(warnings()).toBe(1);
  expect(firewall.flowLimits()).toEqual({ clientFlowLimit: 1024, clientNewFlowRate: 7 });
  unreadable = 'cannot read /proc/sys/net/netfilter/nf_conntrack_max: EACCES';
  expect(await firewall.verify(model)).toBe(false);
  expect(warnings()).toBe(2);
  expect(nft.made).toEqual([table(1024, 7)]);
  // Readable again: the cap follows, the rate given stays.
  unreadable = undefined;
  expect(await firewall.verify(model)).toBe(false);
  expect(nft.made).toEqual([table(1024, 7), table(512, 7)]);
  expect(firewall.flowLimits()).toEqual({ clientFlowLimit: 512, clientNewFlowRate: 7 });

  // Both given: nf_conntrack_max is never read, and nothing follows it.
  nft.table = undefined;
  nft.made = [];
  const given = vi.fn(() => conntrackMax);
  const fixed = new NftablesFirewall(300, 30, log, given, kernelTimeouts);
  await fixed.reconcile(model);
  conntrackMax = 1024;
  expect(await fixed.verify(model)).toBe(false);
  expect(given).not.toHaveBeenCalled();
  expect(nft.made).toEqual([table(300, 30)]);
  expect(fixed.flowLimits()).toEqual({ clientFlowLimit: 300, clientNewFlowRate: 30 });
});
