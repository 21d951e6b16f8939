// FirewallReconciler against a simulated table (no kernel): what it remembers of the table when
// an nft call fails.
import { beforeEach, expect, it, vi } from 'vitest';
import { FirewallError } from '../../../guest/firewall/firewall-error.js';
import { type FirewallModel, validateFirewallModel } from '../../../guest/firewall/model.js';
import type { NftOutput, NftResult } from '../../../guest/firewall/nft-library.js';
import { FirewallReconciler } from '../../../guest/firewall/nft.js';
import { desiredElements } from '../../../guest/firewall/ruleset.js';
import { type SimulatedTable, applyScript, elementsOf, renderListing } from './simulated-table.js';

/** The one table, and a switch that makes the next change commit but report a timeout (a call past its timeout still runs). */
const nft = vi.hoisted(() => ({ table: undefined as SimulatedTable | undefined, commitThenTimeOut: false, listings: 0 }));

vi.mock('../../../guest/firewall/nft-library.js', () => ({
  loadNftLibrary: () => undefined,
  runNftInProcess: async (script: string, _output: NftOutput, timeoutMs: number, what: string): Promise<NftResult> => {
    if (script.startsWith('list table ')) {
      nft.listings += 1;
      return nft.table === undefined ? { code: 1, stdout: '', stderr: 'Error: No such file or directory' } : { code: 0, stdout: renderListing(nft.table), stderr: '' };
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

const link = (ifname: string, clientIp: string): FirewallModel['providerLinks'][number] => ({ ifname, clientIp });
const model = (...providerLinks: FirewallModel['providerLinks']): FirewallModel => ({ providerLinks, uplinks: ['eth0'], allowedPairs: [] });

beforeEach(() => {
  nft.table = undefined;
  nft.commitThenTimeOut = false;
  nft.listings = 0;
});

it('after a change that timed out (it may still have committed), reads the table again instead of trusting what it remembers', async () => {
  const reconciler = new FirewallReconciler();
  const before = model(link('snp1', '100.64.0.1'));
  await reconciler.reconcile(before);
  // A hot-plug: the element transaction commits, but the call reports a timeout.
  nft.commitThenTimeOut = true;
  await expect(reconciler.reconcile(model(link('snp1', '100.64.0.1'), link('snp2', '100.64.0.2')))).rejects.toMatchObject({ kind: 'nft-timeout' });
  // The link went away again before the retry: the table must lose what the timed-out call added.
  await reconciler.reconcile(before);
  expect(nft.table === undefined ? undefined : elementsOf(nft.table)).toEqual(desiredElements(validateFirewallModel(before)));
});

it('after a whole-table reconcile that timed out, reads the table again', async () => {
  const reconciler = new FirewallReconciler();
  const first = model(link('snp1', '100.64.0.1'));
  await reconciler.reconcile(first);
  nft.commitThenTimeOut = true;
  await expect(reconciler.reconcile(model(link('snp2', '100.64.0.2')), { verify: true })).rejects.toMatchObject({ kind: 'nft-timeout' });
  await reconciler.reconcile(first);
  expect(nft.table === undefined ? undefined : elementsOf(nft.table)).toEqual(desiredElements(validateFirewallModel(first)));
});

it('remembers a change that succeeded: the next one is an element transaction, no listing', async () => {
  const reconciler = new FirewallReconciler();
  await reconciler.reconcile(model(link('snp1', '100.64.0.1')));
  const listings = nft.listings;
  const next = model(link('snp1', '100.64.0.1'), link('snp2', '100.64.0.2'));
  expect(await reconciler.reconcile(next)).toEqual({ changed: true });
  expect(nft.listings).toBe(listings);
  expect(nft.table === undefined ? undefined : elementsOf(nft.table)).toEqual(desiredElements(validateFirewallModel(next)));
});
