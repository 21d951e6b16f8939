// The firewall on a kernel without the arp family (CONFIG_NF_TABLES_ARP), in a provider namespace:
// nft stands for such a kernel through the wrapper of no-arp-family.ts (why that is the one fake
// here: see there), put first in this process's PATH for `ip netns exec NS nft`. The inet table is
// made all the same, alone, and kept so without trying the ARP guard again; any other refusal
// still fails. And what nft really prints for that refusal, spawned and in-process, is what the
// check in arp-family.ts recognises.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { arpFamilyRefused } from '../../../guest/firewall/arp-family.js';
import type { FirewallModel } from '../../../guest/firewall/model.js';
import { validateFirewallModel } from '../../../guest/firewall/model.js';
import type { NftResult } from '../../../guest/firewall/nft-library.js';
import { FirewallReconciler, reconcileFirewall } from '../../../guest/firewall/nft.js';
import { desiredElements, parseTableListing, replaceTableScript } from '../../../guest/firewall/ruleset.js';
import { type Harness, type Netns, type NetnsProcess, createHarness, describeNetns, eventually } from '../../harness/index.js';
import { writeNoArpFamilyNft } from './no-arp-family.js';
import { TEST_FLOW_LIMIT, TEST_NEW_FLOW_RATE } from './provider-world.js';

const FIXTURE = fileURLToPath(new URL('../../../dist/test/guest/firewall/fixtures/nft-in-process.js', import.meta.url));
const SETTINGS = { clientFlowLimit: TEST_FLOW_LIMIT, clientNewFlowRate: TEST_NEW_FLOW_RATE };

const model = (...ids: number[]): FirewallModel => ({ providerLinks: ids.map((id) => ({ ifname: `vm${id}`, clientIp: `100.64.0.${id}` })), uplinks: ['wan'], allowedPairs: [] });

/** The replacement script of both tables, its ARP guard's hook turned to one the arp family refuses (as the wrapper does). */
function refusedScript(): string {
  const script = replaceTableScript(desiredElements(validateFirewallModel(model(1))), SETTINGS);
  return script.replace(/(table arp spectrum_netd \{\n[\s\S]*?\t\ttype filter hook) input /, '$1 forward ');
}

describeNetns('the firewall where nft refuses the arp family', () => {
  let harness: Harness;
  let dir: string;
  let wrapper: { readonly dir: string; readonly calls: string };
  let path: string | undefined;

  beforeAll(() => {
    if (!existsSync(FIXTURE)) throw new Error(`${FIXTURE} is missing: run npm run build`);
    harness = createHarness('noarp');
    dir = mkdtempSync(join(tmpdir(), 'snt-noarp-'));
    wrapper = writeNoArpFamilyNft(dir);
  });

  afterAll(async () => {
    await harness?.cleanup();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  /** The tables in `ns`, by the real nft. */
  const tables = async (ns: Netns): Promise<string[]> => (await ns.exec(['/usr/sbin/nft', 'list', 'tables'])).stdout.trim().split('\n').filter(Boolean);

  describe('what nft prints for it', () => {
    it('is recognised, spawned and in-process; the same errno on the inet table is not', async () => {
      const ns = await harness.namespace('print');
      const script = refusedScript();
      const spawned = await ns.exec(['/usr/sbin/nft', '-f', '-'], { input: script, allowFailure: true });
      expect(spawned.code).toBe(1);
      expect(spawned.stderr).toMatch(/^\/dev\/stdin:\d+:\d+-\d+: Error: Could not process rule: Operation not supported\n\tchain input \{\n/);
      expect(arpFamilyRefused(script, spawned.stderr)).toBe(true);
      const [inProcess] = JSON.parse((await ns.exec([process.execPath, FIXTURE, 'run', JSON.stringify([{ script }])], { enter: 'nsenter', timeoutMs: 30_000 })).stdout) as NftResult[];
      expect(inProcess?.code).toBe(1);
      expect(inProcess?.stderr).toMatch(/^\/proc\/self\/fd\/\d+:\d+:\d+-\d+: Error: Could not process rule: Operation not supported\n\tchain input \{\n/);
      expect(arpFamilyRefused(script, inProcess?.stderr ?? '')).toBe(true);
      // The inet table's forward chain on a hook its type does not take: EOPNOTSUPP too, elsewhere.
      const inetRefused = replaceTableScript(desiredElements(validateFirewallModel(model(1))), SETTINGS).replace(/(\ttype nat hook) postrouting /, '$1 forward ');
      const other = await ns.exec(['/usr/sbin/nft', '-f', '-'], { input: inetRefused, allowFailure: true });
      expect(other.stderr).toMatch(/Error: Could not process rule: Operation not supported/);
      expect(arpFamilyRefused(inetRefused, other.stderr)).toBe(false);
      expect(await tables(ns)).toEqual([]);
    });
  });

  describe('through the wrapper', () => {
    beforeAll(() => {
      path = process.env['PATH'];
      process.env['PATH'] = `${wrapper.dir}:${path ?? ''}`;
    });

    afterAll(() => {
      if (path === undefined) delete process.env['PATH'];
      else process.env['PATH'] = path;
    });

    beforeEach(() => {
      writeFileSync(wrapper.calls, '');
    });

    const calls = (): string[] => readFileSync(wrapper.calls, 'utf8').split('\n').filter(Boolean);

    it('makes the inet table alone and says so, and then finds nothing to change', async () => {
      const ns = await harness.namespace('alone');
      const options = { netns: ns.name, ...SETTINGS };
      expect(await reconcileFirewall(model(1, 2), options)).toEqual({ changed: true, arpFamilyRefused: true });
      expect(await tables(ns)).toEqual(['table inet spectrum_netd']);
      const listed = parseTableListing((await ns.exec(['/usr/sbin/nft', '-s', 'list', 'table', 'inet', 'spectrum_netd'])).stdout);
      expect(listed.elements).toEqual(desiredElements(validateFirewallModel(model(1, 2))));
      // Idempotent: a fresh reconcile finds the inet table as it should be, the ARP guard refused again.
      expect(await reconcileFirewall(model(1, 2), options)).toEqual({ changed: false, arpFamilyRefused: true });
      // Told beforehand, it tries the ARP guard no more: one listing, of the inet table, and no change.
      writeFileSync(wrapper.calls, '');
      expect(await reconcileFirewall(model(1, 2), { ...options, arpFamilyRefused: true })).toEqual({ changed: false, arpFamilyRefused: true });
      expect(calls()).toEqual(['-s -n list table inet spectrum_netd']);
    });

    it('FirewallReconciler remembers it: a hot-plug after is one element transaction on the inet table, and audits try the ARP guard no more', async () => {
      const ns = await harness.namespace('remember');
      const reconciler = new FirewallReconciler({ netns: ns.name, ...SETTINGS });
      expect(reconciler.arpFamilyRefused).toBe(false);
      expect(await reconciler.reconcile(model(1))).toEqual({ changed: true });
      expect(reconciler.arpFamilyRefused).toBe(true);
      writeFileSync(wrapper.calls, '');
      expect(await reconciler.reconcile(model(1, 2))).toEqual({ changed: true });
      expect(calls()).toEqual(['-f -']);
      writeFileSync(wrapper.calls, '');
      expect(await reconciler.reconcile(model(1, 2), { verify: true })).toEqual({ changed: false });
      expect(calls()).toEqual(['-s -n list table inet spectrum_netd']);
      const listed = parseTableListing((await ns.exec(['/usr/sbin/nft', '-s', 'list', 'table', 'inet', 'spectrum_netd'])).stdout);
      expect(listed.elements).toEqual(desiredElements(validateFirewallModel(model(1, 2))));
      expect(await tables(ns)).toEqual(['table inet spectrum_netd']);
    });

    it('still fails, as before, where nft refuses the inet table too', async () => {
      const ns = await harness.namespace('owned');
      const owner = await ownedTable(ns, 'inet');
      try {
        const failed = reconcileFirewall(model(1), { netns: ns.name, ...SETTINGS });
        await expect(failed).rejects.toMatchObject({ kind: 'nft-failed', message: expect.stringMatching(/replacing table inet spectrum_netd failed .*Operation not permitted/) });
      } finally {
        await owner.kill();
      }
    });
  });

  it('a refusal of the ARP guard for another reason (its table owned by another process) still fails the whole firewall, as before', async () => {
    const ns = await harness.namespace('arpowned');
    const owner = await ownedTable(ns, 'arp');
    try {
      await expect(reconcileFirewall(model(1), { netns: ns.name, ...SETTINGS })).rejects.toMatchObject({ kind: 'nft-failed', message: expect.stringMatching(/Operation not permitted/) });
      expect(await tables(ns)).toEqual(['table arp spectrum_netd']);
    } finally {
      await owner.kill();
    }
  });

  /** A table of our name in `family` that only another process's netlink socket may change (`flags owner`), until it goes. */
  async function ownedTable(ns: Netns, family: 'inet' | 'arp'): Promise<NetnsProcess> {
    const owner = ns.spawn(['/usr/sbin/nft', '-i'], { stdin: 'pipe' });
    owner.child.stdin?.write(`add table ${family} spectrum_netd { flags owner; }\n`);
    await eventually('the owned table', async () => (await tables(ns)).includes(`table ${family} spectrum_netd`));
    return owner;
  }
});
