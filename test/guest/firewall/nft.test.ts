// FirewallReconciler against a simulated table (no kernel): what it remembers of the table when
// an nft call fails, and what an audit does with the flow set that traffic fills.
import { beforeEach, expect, it, vi } from 'vitest';
import { FirewallError } from '../../../guest/firewall/firewall-error.js';
import { type FirewallModel, validateFirewallModel } from '../../../guest/firewall/model.js';
import type { NftOutput, NftResult } from '../../../guest/firewall/nft-library.js';
import { FirewallReconciler } from '../../../guest/firewall/nft.js';
import { desiredElements, staticTableText } from '../../../guest/firewall/ruleset.js';
import { type SimulatedFirewall, applyScript, arpGuardMatches, elementsOf, flowElementsOf, listTable, rateElementsOf, withFlowElements, withRateElements } from './simulated-table.js';

/** The tables, and a switch that makes the next change commit but report a timeout (a call past its timeout still runs). */
const nft = vi.hoisted(() => ({ table: undefined as SimulatedFirewall | undefined, commitThenTimeOut: false, listings: 0 }));

vi.mock('../../../guest/firewall/nft-library.js', () => ({
  loadNftLibrary: () => undefined,
  runNftInProcess: async (script: string, _output: NftOutput, timeoutMs: number, what: string): Promise<NftResult> => {
    if (script.startsWith('list table ')) {
      nft.listings += 1;
      return listTable(nft.table, script);
    }
    try {
      nft.table = applyScript(nft.table, script);
    } catch (error) {
      return { code: 1, stdout: '', stderr: `Error: ${error instanceof Error ? error.message : String(error)}` };
    }
    if (nft.commitThenTimeOut) {
      nft.commitThenTimeOut = false;
      throw new FirewallError('nft-timeout', `nft ${what} did not finish within ${timeoutMs} ms`);
    }
    return { code: 0, stdout: '', stderr: '' };
  },
}));

const SETTINGS = { clientFlowLimit: 64, clientNewFlowRate: 50 };
const link = (ifname: string, clientIp: string): FirewallModel['providerLinks'][number] => ({ ifname, clientIp });
const model = (...providerLinks: FirewallModel['providerLinks']): FirewallModel => ({ providerLinks, uplinks: ['eth0'], allowedPairs: [] });

beforeEach(() => {
  nft.table = undefined;
  nft.commitThenTimeOut = false;
  nft.listings = 0;
});

it('after a change that timed out (it may still have committed), reads the table again instead of trusting what it remembers', async () => {
  const reconciler = new FirewallReconciler(SETTINGS);
  const before = model(link('snp1', '100.64.0.1'));
  await reconciler.reconcile(before);
  // A hot-plug: the element transaction commits, but the call reports a timeout.
  nft.commitThenTimeOut = true;
  await expect(reconciler.reconcile(model(link('snp1', '100.64.0.1'), link('snp2', '100.64.0.2')))).rejects.toMatchObject({ kind: 'nft-timeout' });
  // The link went away again before the retry: the table must lose what the timed-out call added.
  await reconciler.reconcile(before);
  expect(nft.table === undefined ? undefined : elementsOf(nft.table)).toEqual(desiredElements(validateFirewallModel(before)));
  expect(nft.table && arpGuardMatches(nft.table)).toBe(true);
});

it('after a whole-table reconcile that timed out, reads the table again', async () => {
  const reconciler = new FirewallReconciler(SETTINGS);
  const first = model(link('snp1', '100.64.0.1'));
  await reconciler.reconcile(first);
  nft.commitThenTimeOut = true;
  await expect(reconciler.reconcile(model(link('snp2', '100.64.0.2')), { verify: true })).rejects.toMatchObject({ kind: 'nft-timeout' });
  await reconciler.reconcile(first);
  expect(nft.table === undefined ? undefined : elementsOf(nft.table)).toEqual(desiredElements(validateFirewallModel(first)));
});

it('remembers a change that succeeded: the next one is an element transaction, no listing', async () => {
  const reconciler = new FirewallReconciler(SETTINGS);
  await reconciler.reconcile(model(link('snp1', '100.64.0.1')));
  const listings = nft.listings;
  const next = model(link('snp1', '100.64.0.1'), link('snp2', '100.64.0.2'));
  expect(await reconciler.reconcile(next)).toEqual({ changed: true });
  expect(nft.listings).toBe(listings);
  expect(nft.table === undefined ? undefined : elementsOf(nft.table)).toEqual(desiredElements(validateFirewallModel(next)));
  // The ARP guard's sets follow in the same transaction.
  expect(nft.table && arpGuardMatches(nft.table)).toBe(true);
  await reconciler.reconcile(model(link('snp2', '100.64.0.2')));
  expect(nft.table && arpGuardMatches(nft.table)).toBe(true);
});

it('an audit makes the ARP guard again (deleted, edited, or its elements changed) without replacing the inet table or its flow counts', async () => {
  const reconciler = new FirewallReconciler(SETTINGS);
  const links = model(link('snp1', '100.64.0.1'), link('snp2', '100.64.0.2'));
  await reconciler.reconcile(links);
  const counted = ['100.64.0.1 ct count over 64'];
  nft.table = nft.table && withFlowElements(nft.table, counted);
  const inet = nft.table?.inet;
  const edits: ((firewall: SimulatedFirewall) => SimulatedFirewall)[] = [
    (firewall) => (firewall.inet === undefined ? {} : { inet: firewall.inet }),
    (firewall) => (firewall.arp === undefined ? firewall : { ...firewall, arp: { ...firewall.arp, structure: firewall.arp.structure.replace('\t\tarp saddr ip 0.0.0.0 accept\n', '') } }),
    (firewall) => (firewall.arp === undefined ? firewall : { ...firewall, arp: { ...firewall.arp, elements: { ...firewall.arp.elements, client_sources: new Set(['"snp1" . 100.64.0.9']) } } }),
  ];
  for (const edit of edits) {
    nft.table = nft.table && edit(nft.table);
    expect(nft.table && arpGuardMatches(nft.table)).toBe(false);
    expect(await reconciler.reconcile(links, { verify: true })).toEqual({ changed: true });
    expect(nft.table && arpGuardMatches(nft.table)).toBe(true);
    expect(nft.table?.inet).toEqual(inet);
    expect(nft.table && flowElementsOf(nft.table)).toEqual(counted);
  }
});

it('an audit keeps what traffic counts in the flow set, and deletes only an element a hand edit made', async () => {
  const reconciler = new FirewallReconciler(SETTINGS);
  const links = model(link('snp1', '100.64.0.1'), link('snp2', '100.64.0.2'));
  await reconciler.reconcile(links);
  // Both clients have flows: the kernel made their elements.
  const counted = ['100.64.0.1 ct count over 64', '100.64.0.2 ct count over 64'];
  nft.table = nft.table && withFlowElements(nft.table, counted);
  const before = nft.table;
  expect(await reconciler.reconcile(links, { verify: true })).toEqual({ changed: false });
  expect(nft.table).toBe(before);
  // By hand: client 1's element without its expression (every new flow of it would be dropped),
  // client 3's with a higher cap.
  nft.table = nft.table && withFlowElements(nft.table, ['100.64.0.1', counted[1] ?? '', '100.64.0.3 ct count over 100000']);
  expect(await reconciler.reconcile(links, { verify: true })).toEqual({ changed: true });
  expect(nft.table && flowElementsOf(nft.table)).toEqual([counted[1]]);
  expect(nft.table && elementsOf(nft.table)).toEqual(desiredElements(validateFirewallModel(links)));
});

it('an audit keeps what traffic left in the rate set, and deletes only an element a hand edit made', async () => {
  const reconciler = new FirewallReconciler(SETTINGS);
  const links = model(link('snp1', '100.64.0.1'), link('snp2', '100.64.0.2'));
  await reconciler.reconcile(links);
  const limited = ['100.64.0.1 limit rate over 50/second burst 100 packets', '100.64.0.2 limit rate over 50/second burst 100 packets'];
  nft.table = nft.table && withFlowElements(withRateElements(nft.table, limited), ['100.64.0.1 ct count over 64']);
  const before = nft.table;
  expect(await reconciler.reconcile(links, { verify: true })).toEqual({ changed: false });
  expect(nft.table).toBe(before);
  // By hand: client 1's element with a higher rate, client 3's with none.
  nft.table = nft.table && withRateElements(nft.table, ['100.64.0.1 limit rate over 5000/second burst 100 packets', limited[1] ?? '', '100.64.0.3']);
  expect(await reconciler.reconcile(links, { verify: true })).toEqual({ changed: true });
  expect(nft.table && rateElementsOf(nft.table)).toEqual([limited[1]]);
  expect(nft.table && flowElementsOf(nft.table)).toEqual(['100.64.0.1 ct count over 64']);
});

it("an audit replaces a table whose flow set is declared otherwise, or that was made with another cap", async () => {
  const links = model(link('snp1', '100.64.0.1'));
  await new FirewallReconciler(SETTINGS).reconcile(links);
  for (const edit of [(text: string) => text.replace('size 65535', 'size 16'), (text: string) => text.replace('\t\tflags dynamic\n', '')]) {
    const inet = nft.table?.inet;
    nft.table = inet && { ...nft.table, inet: { ...inet, structure: edit(inet.structure) } };
    expect(nft.table?.inet?.structure).not.toBe(staticTableText(SETTINGS));
    expect(await new FirewallReconciler(SETTINGS).reconcile(links, { verify: true })).toEqual({ changed: true });
    expect(nft.table?.inet?.structure).toBe(staticTableText(SETTINGS));
  }
  // The agent restarted with another --client-flow-limit, then another --client-new-flow-rate.
  for (const settings of [{ ...SETTINGS, clientFlowLimit: 65 }, { ...SETTINGS, clientFlowLimit: 65, clientNewFlowRate: 51 }]) {
    expect(await new FirewallReconciler(settings).reconcile(links)).toEqual({ changed: true });
    expect(nft.table?.inet?.structure).toBe(staticTableText(settings));
  }
});

it('refuses a cap or a rate nft cannot hold', () => {
  for (const clientFlowLimit of [-1, 1.5, 2 ** 32, Number.NaN]) {
    expect(() => new FirewallReconciler({ ...SETTINGS, clientFlowLimit })).toThrow(expect.objectContaining({ kind: 'flow-limit' }));
  }
  for (const clientNewFlowRate of [-1, 1.5, 1_000_001, Number.NaN]) {
    expect(() => new FirewallReconciler({ ...SETTINGS, clientNewFlowRate })).toThrow(expect.objectContaining({ kind: 'flow-rate' }));
  }
});
