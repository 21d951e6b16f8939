// Real Linux guests end to end: Debian's cloud kernel with its virtio-net driver and busybox
// udhcpc, on taps that spectrum-link made, served by spectrum-netd in a netvm namespace.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createHarness, describeNetns, type Harness } from '../harness/index.js';
import { Agent, INTERNET_HTTP } from '../guest/provider-world.js';
import { makeConfigDir } from '../host/link-fixture.js';
import { type ExampleSystem, type GuestResult, type LinkInfo, QemuGuest, linksActive, startExampleSystem } from './example-system.js';

function linksOf(stdout: string): LinkInfo[] {
  return (JSON.parse(stdout) as { links: LinkInfo[] }).links;
}

function onlyLink(stdout: string): LinkInfo {
  const links = linksOf(stdout);
  expect(links).toHaveLength(1);
  return links[0]!;
}

describeNetns('QEMU guests on spectrum-link taps, served by spectrum-netd', () => {
  let harness: Harness;
  let system: ExampleSystem;
  let sockets: string;
  let configDir: string;
  let netvm2Agent: Agent | undefined;
  const guests: QemuGuest[] = [];

  beforeAll(async () => {
    harness = createHarness('e2e');
    sockets = mkdtempSync(join(tmpdir(), 'spectrum-e2e-'));
    // The example config, plus a second provider for appvm-lynx: its second NIC.
    configDir = await makeConfigDir();
    mkdirSync(join(configDir, 'netvm2', 'blk'), { recursive: true });
    writeFileSync(join(configDir, 'netvm2', 'vmlinux'), '');
    writeFileSync(join(configDir, 'netvm2', 'blk', 'root.img'), '');
    writeFileSync(join(configDir, 'appvm-lynx', 'providers', 'net', 'netvm2'), '');
    system = await startExampleSystem(harness, undefined, configDir);
    await system.host.exec(['ip', 'netns', 'add', `${system.netnsPrefix}netvm2`], { enter: 'nsenter' });
    const netvm2 = system.vmNetns('netvm2');
    await netvm2.ip(['link', 'set', 'lo', 'up']);
    netvm2.setResolvConf('nameserver 192.0.2.53\n');
    netvm2Agent = await Agent.start(netvm2, join(sockets, 'netvm2.sock'));
  });
  afterAll(async () => {
    for (const guest of guests) await guest.stop();
    await netvm2Agent?.kill('SIGKILL');
    await system?.dispose();
    await harness?.cleanup();
    if (sockets !== undefined) rmSync(sockets, { recursive: true, force: true });
    if (configDir !== undefined) rmSync(configDir, { recursive: true, force: true });
  });

  it('both guests get their MAC-derived addresses by DHCP, reach the internet, resolve, cannot reach each other; hot-plugged NICs work', async () => {
    const attachLynx = ['--attach', 'netvm=netns', '--attach', 'netvm2=netns'];
    // lynx: its netvm NIC on the command line, from the arguments spectrum-link prints (--attach none).
    const lynxLinked = await system.link(['link', 'appvm-lynx', '--attach', 'appvm-lynx=none', ...attachLynx, '--json']);
    expect(lynxLinked.code, lynxLinked.stderr).toBe(0);
    const lynxLinks = linksOf(lynxLinked.stdout);
    const lynx = lynxLinks.find((link) => link.provider === 'netvm')!;
    const lynxSecond = lynxLinks.find((link) => link.provider === 'netvm2')!;
    expect(lynx.vmmArguments?.client?.qemu).toBeDefined();
    expect(lynxSecond).toBeDefined();

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
    // The guest asks for its lease as soon as it finds the NIC: every device on the way must pass
    // traffic by then (the kernel's linkwatch activates a veth end raised before its peer, and a
    // tap QEMU has just taken, some time after: seconds on a loaded machine). Asking for them by
    // name makes the kernel handle their queued events at once (Linux 6.7 on).
    await linksActive(system, [catgirl]);

    const drops = (await system.agent.status()).firewall!.isolationDrops;
    const lynxGuest = QemuGuest.start(system.host, {
      qemuArguments: lynx.vmmArguments?.client?.qemu ?? [],
      qmpSocket: join(sockets, 'appvm-lynx.qmp'),
      nics: 2,
      waitSeconds: 120,
      peer: catgirl.clientIp,
      holdSeconds: 60,
    });
    guests.push(lynxGuest);
    // lynx runs with one NIC and waits for a second: spectrum-link hot-plugs it (the first is
    // already there from the command line and is left alone).
    await lynxGuest.process.waitForOutput(/SPECTRUM-WAITING nics=1/, 120_000);
    const relinked = await system.link(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', ...attachLynx, '--qmp-socket', qmpTemplate, '--json']);
    expect(relinked.code, relinked.stderr).toBe(0);
    await linksActive(system, lynxLinks);
    const [catgirlResult, lynxResult] = await Promise.all([catgirlGuest.result(), lynxGuest.result()]);

    const leased = (link: LinkInfo) => expect.objectContaining({ mac: link.clientMac.toLowerCase(), dhcp: true, ip: `${link.clientIp}/32` });
    const expectServed = (result: GuestResult): void => {
      expect(result.gateway).toBe(true);
      expect(result.internet).toBe(true);
      expect(result.resolved).toBe(INTERNET_HTTP);
      expect(result.routes).toContain('default via 169.254.0.1');
    };
    expect(catgirlResult.nics).toEqual([leased(catgirl)]);
    expectServed(catgirlResult);
    expect(lynxResult.nics).toHaveLength(2);
    expect(lynxResult.nics).toEqual(expect.arrayContaining([leased(lynx), leased(lynxSecond)]));
    expectServed(lynxResult);
    // catgirl is still up (holding): lynx's ping reached the provider and was dropped there.
    expect(lynxResult.peer).toBe(false);
    expect((await system.agent.status()).firewall!.isolationDrops).toBeGreaterThan(drops);
    const leases = (await system.agent.status()).services?.leases ?? [];
    expect(leases.map((lease) => lease.clientIp).sort()).toEqual([catgirl.clientIp, lynx.clientIp].sort());
    expect((await netvm2Agent?.status())?.services?.leases.map((lease) => lease.clientIp)).toEqual([lynxSecond.clientIp]);
  }, 300_000);
});
