// Real Linux guests end to end: Debian's cloud kernel with its virtio-net driver and busybox
// udhcpc, on taps that spectrum-link made, served by spectrum-netd in a netvm namespace.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createHarness, describeNetns, type Harness } from '../harness/index.js';
import { INTERNET_HTTP } from '../guest/provider-world.js';
import { type ExampleSystem, type GuestResult, type LinkInfo, QemuGuest, startExampleSystem } from './example-system.js';

function onlyLink(stdout: string): LinkInfo {
  const parsed = JSON.parse(stdout) as { links: LinkInfo[] };
  expect(parsed.links).toHaveLength(1);
  return parsed.links[0]!;
}

describeNetns('QEMU guests on spectrum-link taps, served by spectrum-netd', () => {
  let harness: Harness;
  let system: ExampleSystem;
  let sockets: string;
  const guests: QemuGuest[] = [];

  beforeAll(async () => {
    harness = createHarness('e2e');
    sockets = mkdtempSync(join(tmpdir(), 'spectrum-e2e-'));
    system = await startExampleSystem(harness);
  });
  afterAll(async () => {
    for (const guest of guests) await guest.stop();
    await system?.dispose();
    await harness?.cleanup();
    if (sockets !== undefined) rmSync(sockets, { recursive: true, force: true });
  });

  it('both guests get their MAC-derived addresses by DHCP, reach the internet, resolve, and cannot reach each other', async () => {
    // lynx: its NIC on the command line, from the arguments spectrum-link prints (--attach none).
    const lynxLinked = await system.link(['link', 'appvm-lynx', '--attach', 'appvm-lynx=none', '--attach', 'netvm=netns', '--json']);
    expect(lynxLinked.code, lynxLinked.stderr).toBe(0);
    const lynx = onlyLink(lynxLinked.stdout);
    expect(lynx.vmmArguments?.client?.qemu).toBeDefined();

    // catgirl: boots with no NIC and waits; spectrum-link hot-plugs one over QMP while it runs.
    const qmpTemplate = join(sockets, '{vm}.qmp');
    const catgirlGuest = QemuGuest.start(system.host, { qmpSocket: join(sockets, 'appvm-catgirl.qmp'), waitSeconds: 120, holdSeconds: 60 });
    guests.push(catgirlGuest);
    await catgirlGuest.process.waitForOutput(/SPECTRUM-WAITING nics=0/, 120_000);
    const catgirlLinked = await system.link([
      'link', 'appvm-catgirl', '--attach', 'appvm-catgirl=qemu', '--attach', 'netvm=netns', '--qmp-socket', qmpTemplate, '--json',
    ]);
    expect(catgirlLinked.code, catgirlLinked.stderr).toBe(0);
    const catgirl = onlyLink(catgirlLinked.stdout);

    const drops = (await system.agent.status()).firewall.isolationDrops;
    const lynxGuest = QemuGuest.start(system.host, { qemuArguments: lynx.vmmArguments?.client?.qemu ?? [], peer: catgirl.clientIp, holdSeconds: 60 });
    guests.push(lynxGuest);
    const [catgirlResult, lynxResult] = await Promise.all([catgirlGuest.result(), lynxGuest.result()]);

    const expectServed = (result: GuestResult, link: LinkInfo): void => {
      expect(result.nics).toEqual([expect.objectContaining({ mac: link.clientMac.toLowerCase(), dhcp: true, ip: `${link.clientIp}/32` })]);
      expect(result.gateway).toBe(true);
      expect(result.internet).toBe(true);
      expect(result.resolved).toBe(INTERNET_HTTP);
      expect(result.routes).toContain('default via 169.254.0.1');
    };
    expectServed(catgirlResult, catgirl);
    expectServed(lynxResult, lynx);
    // catgirl is still up (holding): lynx's ping reached the provider and was dropped there.
    expect(lynxResult.peer).toBe(false);
    expect((await system.agent.status()).firewall.isolationDrops).toBeGreaterThan(drops);
    const leases = (await system.agent.status()).services?.leases ?? [];
    expect(leases.map((lease) => lease.clientIp).sort()).toEqual([catgirl.clientIp, lynx.clientIp].sort());
  }, 240_000);
});
