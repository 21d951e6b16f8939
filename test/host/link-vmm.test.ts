// spectrum-link's VMM attach modes end to end: a real QEMU (QMP hot-plug), the spec-exact fake
// cloud-hypervisor, and `none` (taps plus printed arguments). All inside test namespaces.
import { existsSync } from 'node:fs';
import { link as hardLink, mkdir, mkdtemp, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { type Socket, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { QmpClient } from '../../host/vmm/qmp.js';
import { createHarness, describeNetns, type Harness, type Netns, type NetnsProcess } from '../harness/index.js';
import { type LinkWorld, devices, makeLinkWorld, runPrinted } from './link-fixture.js';
import { linkWorldPerSuite } from './link-world-suite.js';
import { FakeCloudHypervisor } from './vmm/fake-cloud-hypervisor.js';
import { FakeCloudHypervisorProcess } from './vmm/fake-cloud-hypervisor-process.js';

interface LinkOutput {
  links: { id: number; clientMac: string; clientDevice: string; providerDevice: string; bridge: string; vmmArguments?: { client?: { qemu: string[]; cloudHypervisor: string[] } } }[];
}

/**
 * A device's flags once it has a carrier (LOWER_UP, set by the kernel's link watch shortly after
 * a VMM takes the tap), or as they are after 5 s without one.
 */
async function carrierFlags(ns: Netns, device: string): Promise<string[]> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const flags = (await devices(ns)).get(device)?.flags ?? [];
    if (flags.includes('LOWER_UP') || Date.now() > deadline) return flags;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function qmp<T>(path: string, fn: (client: QmpClient) => Promise<T>): Promise<T> {
  const client = await QmpClient.connect(path, { timeoutMs: 5000 });
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

describeNetns('spectrum-link with VMMs', () => {
  let harness: Harness;
  let world: LinkWorld;
  let qemu: NetnsProcess;
  let qemuNs: Netns;
  let socketDir: string;

  beforeAll(async () => {
    harness = createHarness('linkvmm');
    world = await makeLinkWorld(harness);
    socketDir = await mkdtemp(join(tmpdir(), 'spectrum-vmm-'));
    // The client VM: a paused QEMU whose QMP socket is named after the VM, in a namespace of its
    // own: it gets its tap as a descriptor, so it need not see the host namespace's devices.
    qemuNs = await harness.namespace('qemu');
    qemu = qemuNs.spawn([
      'qemu-system-x86_64', '-machine', 'pc', '-accel', 'tcg', '-S', '-nodefaults', '-display', 'none',
      '-qmp', `unix:${join(socketDir, 'appvm-lynx.qmp')},server=on,wait=off`,
    ]);
    const deadline = Date.now() + 15_000;
    while (!existsSync(join(socketDir, 'appvm-lynx.qmp'))) {
      if (Date.now() > deadline) throw new Error('QEMU did not create its QMP socket within 15 s');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  });
  afterAll(async () => {
    await qemu?.kill('SIGKILL');
    await world?.dispose();
    await harness?.cleanup();
    if (socketDir !== undefined) await rm(socketDir, { recursive: true, force: true });
  });

  it('hot-plugs the client tap into QEMU over QMP and unplugs it on unlink', async () => {
    const qmpTemplate = join(socketDir, '{vm}.qmp');
    const result = await world.link(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=netns', '--qmp-socket', qmpTemplate, '--json']);
    expect(result.code, result.stderr).toBe(0);
    const link = (JSON.parse(result.stdout) as LinkOutput).links[0]!;
    expect((await devices(world.host)).get(link.clientDevice)?.linkinfo?.info_kind).toBe('tun');

    const mac = await qmp(join(socketDir, 'appvm-lynx.qmp'), (client) =>
      client.execute('qom-get', { path: `/machine/peripheral/${link.clientDevice}`, property: 'mac' }),
    );
    expect(String(mac).toUpperCase()).toBe(link.clientMac);
    // QEMU holds a queue of the host's tap (which so gets a carrier), and made no tap of that
    // name in its own namespace, as opening it by name would have.
    expect(await carrierFlags(world.host, link.clientDevice)).toContain('LOWER_UP');
    expect((await devices(qemuNs)).has(link.clientDevice)).toBe(false);
    // With its carrier, the tap has made no IPv6 address: the host sends nothing of its own to the VM.
    expect((await world.host.ip(['-6', 'addr', 'show', 'dev', link.clientDevice])).stdout).toBe('');

    // Idempotent with QEMU too.
    const again = await world.link(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=netns', '--qmp-socket', qmpTemplate]);
    expect(again.code, again.stderr).toBe(0);

    // No guest runs, so the unplug is never acknowledged: unlink waits a bounded time, removes the netdev anyway.
    const unlinked = await world.link(['unlink', 'appvm-lynx', '--qmp-socket', qmpTemplate, '--vmm-timeout', '300']);
    expect(unlinked.code, unlinked.stderr).toBe(0);
    expect((await devices(world.host)).has(link.clientDevice)).toBe(false);
    const netdevGone = await qmp(join(socketDir, 'appvm-lynx.qmp'), async (client) => {
      await client.execute('netdev_add', { type: 'user', id: `net-${link.clientDevice}` });
      return true;
    });
    expect(netdevGone).toBe(true);
  });

  it('tells the QEMU guest the link MTU (host_mtu), and refuses a re-link with another MTU, saying what to do', async () => {
    // The provider this time, in a QEMU of its own: the first test left its NIC pending unplug in the other.
    const qmpTemplate = join(socketDir, '{vm}.qmp');
    const qmpPath = join(socketDir, 'netvm.qmp');
    const provider = qemuNs.spawn([
      'qemu-system-x86_64', '-machine', 'pc', '-accel', 'tcg', '-S', '-nodefaults', '-display', 'none',
      '-qmp', `unix:${qmpPath},server=on,wait=off`,
    ]);
    try {
      const deadline = Date.now() + 15_000;
      while (!existsSync(qmpPath)) {
        if (Date.now() > deadline) throw new Error('QEMU did not create its QMP socket within 15 s');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const args = ['link', 'appvm-catgirl', '--attach', 'appvm-catgirl=netns', '--attach', 'netvm=qemu', '--qmp-socket', qmpTemplate];
      const result = await world.link([...args, '--mtu', '1400', '--json']);
      expect(result.code, result.stderr).toBe(0);
      const link = (JSON.parse(result.stdout) as LinkOutput).links[0]!;
      expect((await devices(world.host)).get(link.providerDevice)?.mtu).toBe(1400);
      // A record written before the state kept MTUs (none: 1500) of a link whose NIC was told 1400:
      // a plain link would give it 1500, and is refused so too, before its devices are changed.
      const statePath = join(world.stateDir, 'links.json');
      const state = await readFile(statePath, 'utf8');
      expect(state).toContain(',"mtu":1400}');
      await writeFile(statePath, state.replace(',"mtu":1400}', '}'));
      const legacy = await world.link(args);
      expect(legacy.code).toBe(1);
      expect(legacy.stderr).toMatch(/NIC \S+ with MTU 1400, but the link's MTU is now 1500/);
      const kept = await devices(world.host);
      expect([kept.get(link.bridge)?.mtu, kept.get(link.providerDevice)?.mtu]).toEqual([1400, 1400]);
      const hostMtu = (): Promise<unknown> => qmp(qmpPath, (client) => client.execute('qom-get', { path: `/machine/peripheral/${link.providerDevice}`, property: 'host_mtu' }));
      expect(await hostMtu()).toBe(1400);

      const again = await world.link([...args, '--mtu', '1400']);
      expect(again.code, again.stderr).toBe(0);
      // The guest took 1400 when its NIC came and keeps it: linking with another MTU says so, in one line.
      const changed = await world.link([...args, '--mtu', '1500']);
      expect(changed.code).toBe(1);
      expect(changed.stderr.trim().split('\n')).toHaveLength(1);
      expect(changed.stderr).toMatch(/NIC \S+ with MTU 1400, but the link's MTU is now 1500: .*\(unlink\) and link it again/);
      expect(await hostMtu()).toBe(1400);
      // Refused before anything was changed: the link's devices keep the MTU the guest learnt.
      const host = await devices(world.host);
      expect([host.get(link.bridge)?.mtu, host.get(link.providerDevice)?.mtu]).toEqual([1400, 1400]);
      // A link given no --mtu (a boot script's) keeps the MTU the link records: nothing to refuse.
      const plain = await world.link(args);
      expect(plain.code, plain.stderr).toBe(0);
      expect((await devices(world.host)).get(link.providerDevice)?.mtu).toBe(1400);

      // Forgotten: the next test's link of it gets no MTU kept (unlink alone keeps 1400 for it).
      const unlinked = await world.link(['unlink', 'appvm-catgirl', '--forget', '--qmp-socket', qmpTemplate, '--vmm-timeout', '300']);
      expect(unlinked.code, unlinked.stderr).toBe(0);
    } finally {
      await provider.kill('SIGKILL');
    }
  });

  it('hot-plugs into cloud-hypervisor through vm.add-net and removes through vm.remove-device', async () => {
    const fake = await FakeCloudHypervisor.start('Running');
    try {
      const result = await world.link(['link', 'appvm-catgirl', '--attach', 'appvm-catgirl=cloud-hypervisor', '--attach', 'netvm=netns', '--ch-socket', fake.socketPath, '--json']);
      expect(result.code, result.stderr).toBe(0);
      const link = (JSON.parse(result.stdout) as LinkOutput).links[0]!;
      const addNet = fake.requests.find((request) => request.path === '/api/v1/vm.add-net');
      expect(addNet).toMatchObject({ method: 'PUT', body: { mac: link.clientMac, id: link.clientDevice }, taps: [link.clientDevice] });
      expect(fake.heldTapQueues()).toBe(1);
      // The VMM holds the tap, so it has a carrier (once the kernel's link watch has seen it), and
      // so has the bridge: with IPv6 on, it would now get a link-local address, and the host be
      // reachable from the VM.
      expect(await carrierFlags(world.host, link.clientDevice)).toContain('LOWER_UP');
      expect((await world.host.ip(['-6', 'addr', 'show', 'dev', link.bridge])).stdout).toBe('');
      expect((await world.host.exec(['cat', `/proc/sys/net/ipv6/conf/${link.bridge}/disable_ipv6`])).stdout.trim()).toBe('1');
      // Nor has the tap one: the host sends nothing of its own (address detection, router
      // solicitations) to the VM.
      expect((await world.host.ip(['-6', 'addr', 'show', 'dev', link.clientDevice])).stdout).toBe('');
      // Linking again finds the NIC attached (the VMM holds its tap): nothing changes.
      const again = await world.link(['link', 'appvm-catgirl', '--attach', 'appvm-catgirl=cloud-hypervisor', '--attach', 'netvm=netns', '--ch-socket', fake.socketPath]);
      expect(again.code, again.stderr).toBe(0);
      expect(fake.nets).toHaveLength(1);

      const unlinked = await world.link(['unlink', 'appvm-catgirl', '--ch-socket', fake.socketPath]);
      expect(unlinked.code, unlinked.stderr).toBe(0);
      const remove = fake.requests.find((request) => request.path === '/api/v1/vm.remove-device');
      expect(remove).toMatchObject({ method: 'PUT', body: { id: link.clientDevice } });
      expect(fake.heldTapQueues()).toBe(0);
    } finally {
      await fake.close();
    }
  });

  it('a failed run takes back only the NICs it added: one an earlier run attached stays', async () => {
    const fake = await FakeCloudHypervisor.start('Running');
    try {
      const catgirl = ['--attach', 'appvm-catgirl=cloud-hypervisor', '--attach', 'netvm=netns', '--ch-socket', fake.socketPath];
      const first = await world.link(['link', 'appvm-catgirl', ...catgirl]);
      expect(first.code, first.stderr).toBe(0);
      expect(fake.nets).toHaveLength(1);
      // appvm-catgirl's NIC is found attached, then appvm-lynx's QEMU cannot be reached: the run fails.
      const failed = await world.link(['link', 'appvm-catgirl', 'appvm-lynx', ...catgirl, '--attach', 'appvm-lynx=qemu', '--qmp-socket', '/nonexistent/{vm}.qmp']);
      expect(failed.code).toBe(1);
      expect(fake.requests.filter((request) => request.path === '/api/v1/vm.remove-device')).toEqual([]);
      expect(fake.nets).toHaveLength(1);
      expect(fake.heldTapQueues()).toBe(1);
      const unlinked = await world.link(['unlink', 'appvm-catgirl', '--ch-socket', fake.socketPath]);
      expect(unlinked.code, unlinked.stderr).toBe(0);
    } finally {
      await fake.close();
    }
  });

  it('takes down the NIC of a provider dropped from the config; where the VMM refuses, the devices go all the same and it says so', async () => {
    const fake = await FakeCloudHypervisor.start('Running');
    const extraProvider = join(world.configDir, 'appvm-catgirl', 'providers', 'net', 'appvm-lynx');
    const args = ['link', 'appvm-catgirl', '--attach', 'appvm-catgirl=cloud-hypervisor', '--attach', 'netvm=netns', '--attach', 'appvm-lynx=netns', '--ch-socket', fake.socketPath];
    try {
      await writeFile(extraProvider, '');
      const both = await world.link(args);
      expect(both.code, both.stderr).toBe(0);
      expect(fake.nets).toHaveLength(2);
      await rm(extraProvider);
      fake.inject('vm.remove-device', { status: 500, body: 'device busy' });
      const refused = await world.link(args);
      expect(refused.code).toBe(1);
      expect(refused.stderr.trim().split('\n')).toHaveLength(1);
      expect(refused.stderr).toMatch(
        /^spectrum-link: cloud-hypervisor of appvm-catgirl did not detach NIC \S+ \(link appvm-catgirl -> appvm-lynx\): .*500.*the host side was removed anyway .*\(README: A VMM that does not detach\): .*spectrum-link unlink appvm-catgirl --state-dir \S+ --device-prefix sn --attach appvm-catgirl=cloud-hypervisor --ch-socket \S+ detaches it/,
      );
      const offered = /(spectrum-link unlink appvm-catgirl .*?) detaches it/.exec(refused.stderr)?.[1] ?? 'false';
      expect(refused.stdout).toMatch(/unlinked appvm-catgirl -> appvm-lynx \(id \d+, kept, VMM detach failed\)/);
      // The VMM still has the NIC (on a deleted tap); nothing is left to take down, so linking
      // again gets through, and the unlink the line names takes the NIC out.
      expect(fake.nets).toHaveLength(2);
      const again = await world.link(args);
      expect(again.code, again.stderr).toBe(0);
      expect(again.stdout).not.toContain('unlinked');
      // As printed, from the root directory without this run's environment.
      const unlinked = await runPrinted(world.host, offered);
      expect(unlinked.code, unlinked.stderr).toBe(0);
      expect(fake.nets).toHaveLength(0);
    } finally {
      await rm(extraProvider, { force: true });
      await fake.close();
    }
  });

  it('a QEMU that takes netdev_add but never answers device_add: bounded, one line, the VMM side asked back, devices and state as before', async () => {
    const commands: string[] = [];
    const open = new Set<Socket>();
    const path = join(socketDir, 'appvm-catgirl.hostile');
    const server = createServer((socket) => {
      open.add(socket);
      socket.on('error', () => undefined);
      socket.on('close', () => open.delete(socket));
      socket.write('{"QMP": {"version": {}, "capabilities": []}}\r\n');
      let buffer = '';
      socket.setEncoding('utf8').on('data', (chunk: string) => {
        buffer += chunk;
        for (let newline = buffer.indexOf('\n'); newline !== -1; newline = buffer.indexOf('\n')) {
          const message = JSON.parse(buffer.slice(0, newline)) as { execute: string; id: string; arguments?: { fd?: string } };
          buffer = buffer.slice(newline + 1);
          commands.push(message.execute);
          const reply = (body: object): void => void socket.write(`${JSON.stringify({ ...body, id: message.id })}\r\n`);
          if (message.execute === 'device_add') continue;
          if (message.execute === 'qom-list') reply({ return: [] });
          else if (message.execute === 'netdev_add' && message.arguments?.fd?.startsWith('net-') !== true) reply({ error: { class: 'GenericError', desc: 'not found' } });
          else reply({ return: {} });
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
    try {
      const listBefore = (await world.link(['list', '--json'])).stdout;
      const devicesBefore = [...(await devices(world.host)).keys()].sort();
      const started = Date.now();
      const result = await world.link(['link', 'appvm-catgirl', '--attach', 'appvm-catgirl=qemu', '--attach', 'netvm=netns', '--qmp-socket', join(socketDir, '{vm}.hostile'), '--vmm-timeout', '300']);
      expect(Date.now() - started).toBeLessThan(10_000);
      expect(result.code).toBe(1);
      expect(result.stderr.trim().split('\n')).toHaveLength(1);
      expect(result.stderr).toMatch(/no reply to device_add within 300 ms/);
      expect(commands.slice(-3)).toEqual(['device_add', 'device_del', 'netdev_del']);
      expect([...(await devices(world.host)).keys()].sort()).toEqual(devicesBefore);
      expect((await world.link(['list', '--json'])).stdout).toBe(listBefore);
    } finally {
      for (const socket of open) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it("does not follow a symlink at a VMM socket path (to another VM's VMM): link fails in one line naming it, nothing reaches that VMM, the run is undone", async () => {
    const fake = await FakeCloudHypervisor.start('Running');
    const links = await mkdtemp(join(tmpdir(), 'spectrum-vmm-links-'));
    try {
      // appvm-catgirl's sockets are symlinks: to the fake cloud-hypervisor, and to appvm-lynx's QEMU.
      await symlink(fake.socketPath, join(links, 'appvm-catgirl.ch'));
      await symlink(join(socketDir, 'appvm-lynx.qmp'), join(links, 'appvm-catgirl.qmp'));
      const listBefore = (await world.link(['list', '--json'])).stdout;
      const devicesBefore = [...(await devices(world.host)).keys()].sort();
      const peripheralsBefore = await qmp(join(socketDir, 'appvm-lynx.qmp'), (client) => client.execute('qom-list', { path: '/machine/peripheral' }));
      for (const [mode, flag, socket] of [
        ['cloud-hypervisor', '--ch-socket', join(links, '{vm}.ch')],
        ['qemu', '--qmp-socket', join(links, '{vm}.qmp')],
      ] as const) {
        const result = await world.link(['link', 'appvm-catgirl', '--attach', `appvm-catgirl=${mode}`, '--attach', 'netvm=netns', flag, socket]);
        expect(result.code).toBe(1);
        expect(result.stderr.trim().split('\n')).toHaveLength(1);
        expect(result.stderr).toContain(`${join(links, `appvm-catgirl.${mode === 'qemu' ? 'qmp' : 'ch'}`)}: not a socket but a symlink, which spectrum-link does not follow for VMM sockets`);
        expect([...(await devices(world.host)).keys()].sort()).toEqual(devicesBefore);
        expect((await world.link(['list', '--json'])).stdout).toBe(listBefore);
      }
      expect(fake.requests).toEqual([]);
      expect(fake.heldTapQueues()).toBe(0);
      expect(await qmp(join(socketDir, 'appvm-lynx.qmp'), (client) => client.execute('qom-list', { path: '/machine/peripheral' }))).toEqual(peripheralsBefore);
    } finally {
      await fake.close();
      await rm(links, { recursive: true, force: true });
    }
  });

  it("does not follow a symlinked directory below a VM's {vm} directory (to another VM's): link fails in one line naming it, nothing reaches that VMM; the {vm} directory itself may be a symlink, a plain subdirectory is fine", async () => {
    const fake = await FakeCloudHypervisor.start('Running');
    const own = await FakeCloudHypervisor.start('Running');
    const links = await mkdtemp(join(tmpdir(), 'spectrum-vmm-subdir-'));
    try {
      // appvm-lynx's directory holds its sockets (hard links of its QEMU's and of a cloud-hypervisor's);
      // appvm-catgirl's user made its `sub` a symlink to appvm-lynx's.
      await mkdir(join(links, 'appvm-lynx', 'sub'), { recursive: true });
      await hardLink(join(socketDir, 'appvm-lynx.qmp'), join(links, 'appvm-lynx', 'sub', 'qmp.sock'));
      await hardLink(fake.socketPath, join(links, 'appvm-lynx', 'sub', 'vmm'));
      await mkdir(join(links, 'appvm-catgirl'));
      await symlink(join(links, 'appvm-lynx', 'sub'), join(links, 'appvm-catgirl', 'sub'));
      const listBefore = (await world.link(['list', '--json'])).stdout;
      const devicesBefore = [...(await devices(world.host)).keys()].sort();
      const peripheralsBefore = await qmp(join(socketDir, 'appvm-lynx.qmp'), (client) => client.execute('qom-list', { path: '/machine/peripheral' }));
      for (const [mode, flag, socket] of [
        ['cloud-hypervisor', '--ch-socket', join(links, '{vm}', 'sub', 'vmm')],
        ['qemu', '--qmp-socket', join(links, '{vm}', 'sub', 'qmp.sock')],
      ] as const) {
        const result = await world.link(['link', 'appvm-catgirl', '--attach', `appvm-catgirl=${mode}`, '--attach', 'netvm=netns', flag, socket]);
        expect(result.code).toBe(1);
        expect(result.stderr.trim().split('\n')).toHaveLength(1);
        expect(result.stderr).toContain(
          `${join(links, 'appvm-catgirl', 'sub')} is a symlink (to ${join(links, 'appvm-lynx', 'sub')}) below the VM's directory ${join(links, 'appvm-catgirl')}, which spectrum-link does not follow for VMM sockets`,
        );
        expect([...(await devices(world.host)).keys()].sort()).toEqual(devicesBefore);
        expect((await world.link(['list', '--json'])).stdout).toBe(listBefore);
      }
      expect(fake.requests).toEqual([]);
      expect(fake.heldTapQueues()).toBe(0);
      expect(await qmp(join(socketDir, 'appvm-lynx.qmp'), (client) => client.execute('qom-list', { path: '/machine/peripheral' }))).toEqual(peripheralsBefore);

      // A plain subdirectory is fine; so is a {vm} directory that is itself a symlink (the host's,
      // to a directory by VM id). Attached there, the socket recorded is checked as the template's:
      // its `sub` made a symlink to appvm-lynx's after, unlink (without the option) reaches nothing.
      const chTemplate = join(links, '{vm}', 'sub', 'vmm');
      await rm(join(links, 'appvm-catgirl'), { recursive: true });
      await mkdir(join(links, 'by-id', '7', 'sub'), { recursive: true });
      await hardLink(own.socketPath, join(links, 'by-id', '7', 'sub', 'vmm'));
      for (const vmDir of ['plain', 'symlinked'] as const) {
        await rm(join(links, 'appvm-catgirl'), { recursive: true, force: true });
        if (vmDir === 'plain') {
          await mkdir(join(links, 'appvm-catgirl', 'sub'), { recursive: true });
          await hardLink(own.socketPath, join(links, 'appvm-catgirl', 'sub', 'vmm'));
        } else await symlink(join(links, 'by-id', '7'), join(links, 'appvm-catgirl'));
        const linked = await world.link(['link', 'appvm-catgirl', '--attach', 'appvm-catgirl=cloud-hypervisor', '--attach', 'netvm=netns', '--ch-socket', chTemplate]);
        expect(linked.code, `${vmDir}: ${linked.stderr}`).toBe(0);
        expect(own.nets).toHaveLength(1);
        // The VM's user swaps its `sub` for a symlink to appvm-lynx's.
        const sub = vmDir === 'plain' ? join(links, 'appvm-catgirl', 'sub') : join(links, 'by-id', '7', 'sub');
        await rename(sub, `${sub}.away`);
        await symlink(join(links, 'appvm-lynx', 'sub'), sub);
        const refused = await world.link(['unlink', 'appvm-catgirl']);
        expect(refused.code).toBe(1);
        expect(refused.stderr).toContain(`${join(links, 'appvm-catgirl', 'sub')} is a symlink (to ${join(links, 'appvm-lynx', 'sub')}) below the VM's directory ${join(links, 'appvm-catgirl')}`);
        expect(fake.requests).toEqual([]);
        await rm(sub);
        await rename(`${sub}.away`, sub);
        const unlinked = await world.link(['unlink', 'appvm-catgirl']);
        expect(unlinked.code, unlinked.stderr).toBe(0);
        expect(own.nets).toHaveLength(0);
      }
    } finally {
      await fake.close();
      await own.close();
      await rm(links, { recursive: true, force: true });
    }
  });

  it('refuses, before anything is made (exit 2), a socket template without {vm} that two VMs of the run would use: both ends of a link went into one QEMU; one VM through it stays fine', async () => {
    const fixed = join(socketDir, 'appvm-lynx.qmp');
    const listBefore = (await world.link(['list', '--json'])).stdout;
    const devicesBefore = [...(await devices(world.host)).keys()].sort();
    const peripheralsBefore = await qmp(fixed, (client) => client.execute('qom-list', { path: '/machine/peripheral' }));
    const runs: [string[], string][] = [
      // Both sides of appvm-lynx -> netvm through the one path.
      [['link', 'appvm-lynx', '--attach', 'qemu', '--qmp-socket', fixed], `--qmp-socket gives VMs appvm-lynx and netvm one socket path, ${fixed}`],
      // Two clients through it.
      [['link', 'appvm-lynx', 'appvm-catgirl', '--attach', 'qemu', '--attach', 'netvm=netns', '--qmp-socket', fixed], `--qmp-socket gives VMs appvm-lynx and appvm-catgirl one socket path, ${fixed}`],
      // One VM through each option, the two at one path.
      [['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=cloud-hypervisor', '--qmp-socket', fixed, '--ch-socket', fixed], `--qmp-socket and --ch-socket give VMs appvm-lynx and netvm one socket path, ${fixed}`],
      // The two at one path spelled otherwise (with --keep-going too: its one VM fails alone).
      ...[[], ['--keep-going']].map((going): [string[], string] => [
        ['link', 'appvm-lynx', ...going, '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=cloud-hypervisor', '--qmp-socket', fixed, '--ch-socket', `${socketDir}//appvm-lynx.qmp`],
        `--qmp-socket and --ch-socket give VMs appvm-lynx and netvm one socket path, ${fixed} and ${socketDir}//appvm-lynx.qmp, which lead to one socket`,
      ]),
    ];
    for (const [args, said] of runs) {
      const result = await world.link(args);
      expect(result.code, result.stderr).toBe(2);
      expect(result.stderr.trim().split('\n')).toHaveLength(1);
      expect(result.stderr).toContain(`${said}: give each its own ({vm} in the template) (README: VMM socket paths)\n`);
      expect([...(await devices(world.host)).keys()].sort()).toEqual(devicesBefore);
      expect((await world.link(['list', '--json'])).stdout).toBe(listBefore);
    }
    expect(await qmp(fixed, (client) => client.execute('qom-list', { path: '/machine/peripheral' }))).toEqual(peripheralsBefore);
    // One VM through a fixed path is fine (a fake cloud-hypervisor here: earlier tests leave NICs
    // in this paused QEMU). With --keep-going, the first VM of the run keeps the path, the other
    // fails alone.
    const fake = await FakeCloudHypervisor.start('Running');
    try {
      const going = await world.link(['link', 'appvm-lynx', 'appvm-catgirl', '--keep-going', '--json', '--attach', 'cloud-hypervisor', '--attach', 'netvm=netns', '--ch-socket', fake.socketPath]);
      expect(going.code, going.stderr).toBe(2);
      const lines = going.stdout.trim().split('\n').map((line) => JSON.parse(line) as { vm: string; links: unknown[]; error?: string; badInput?: boolean });
      expect(lines.map(({ vm, links, badInput }) => ({ vm, links: links.length, badInput }))).toEqual([
        { vm: 'appvm-lynx', links: 1, badInput: undefined },
        { vm: 'appvm-catgirl', links: 0, badInput: true },
      ]);
      expect(lines[1]?.error).toContain(`--ch-socket gives VMs appvm-lynx and appvm-catgirl one socket path, ${fake.socketPath}`);
      expect(fake.nets).toHaveLength(1);
      const unlinked = await world.link(['unlink', 'appvm-lynx', '--ch-socket', fake.socketPath]);
      expect(unlinked.code, unlinked.stderr).toBe(0);
      expect(fake.nets).toHaveLength(0);
    } finally {
      await fake.close();
    }
  });

  it("refuses (exit 2, before anything is made) a later run's path that is the socket the state records for another VM's side: its NIC went into that VM's VMM; with --keep-going that VM alone fails", async () => {
    const fake = await FakeCloudHypervisor.start('Running');
    try {
      const lynx = await world.link(['link', 'appvm-lynx', '--attach', 'appvm-lynx=cloud-hypervisor', '--attach', 'netvm=netns', '--ch-socket', fake.socketPath]);
      expect(lynx.code, lynx.stderr).toBe(0);
      expect(fake.nets).toHaveLength(1);
      const listBefore = (await world.link(['list', '--json'])).stdout;
      const devicesBefore = [...(await devices(world.host)).keys()].sort();
      // appvm-catgirl pinned at a fixed path, one VM of its run alone: the socket recorded for appvm-lynx.
      const pinned = ['link', 'appvm-catgirl', '--attach', 'appvm-catgirl=cloud-hypervisor', '--attach', 'netvm=netns', '--ch-socket', fake.socketPath];
      const said = `--ch-socket gives VM appvm-catgirl the socket path ${fake.socketPath}, which the state records for appvm-lynx (link appvm-lynx -> netvm): give appvm-catgirl its own`;
      const refused = await world.link(pinned);
      expect(refused.code, refused.stderr).toBe(2);
      expect(refused.stderr.trim().split('\n')).toHaveLength(1);
      expect(refused.stderr).toContain(said);
      const going = await world.link([...pinned, '--keep-going', '--json']);
      expect(going.code, going.stderr).toBe(2);
      const [line] = going.stdout.trim().split('\n').map((one) => JSON.parse(one) as { vm: string; links: unknown[]; error?: string; badInput?: boolean });
      expect(line).toMatchObject({ vm: 'appvm-catgirl', links: [], badInput: true, error: expect.stringContaining(said) });
      expect(fake.nets).toHaveLength(1);
      expect([...(await devices(world.host)).keys()].sort()).toEqual(devicesBefore);
      expect((await world.link(['list', '--json'])).stdout).toBe(listBefore);
      const unlinked = await world.link(['unlink', 'appvm-lynx', '--ch-socket', fake.socketPath]);
      expect(unlinked.code, unlinked.stderr).toBe(0);
      expect(fake.nets).toHaveLength(0);
    } finally {
      await fake.close();
    }
  });

  it('with --attach none makes taps and prints the VMM arguments that use them', async () => {
    const result = await world.link(['link', 'appvm-lynx', '--attach', 'none', '--json']);
    expect(result.code, result.stderr).toBe(0);
    const link = (JSON.parse(result.stdout) as LinkOutput).links[0]!;
    const host = await devices(world.host);
    expect(host.get(link.clientDevice)?.linkinfo?.info_kind).toBe('tun');
    expect(host.get(link.providerDevice)?.linkinfo?.info_kind).toBe('tun');
    expect(link.vmmArguments?.client?.cloudHypervisor).toEqual(['--net', `tap=${link.clientDevice},mac=${link.clientMac},id=${link.clientDevice}`]);
    expect(link.vmmArguments?.client?.qemu.join(' ')).toContain(`ifname=${link.clientDevice},script=no,downscript=no`);
    expect(link.vmmArguments?.client?.qemu.join(' ')).toContain(`mac=${link.clientMac}`);
  });

  it('sends cloud-hypervisor no MTU: the tap it is handed has the link MTU, which it reads and offers the guest (it runs in the taps\' namespace)', async () => {
    // The fake runs in the host namespace, as spectrum-link does: the process behind the socket
    // shares the taps' namespace, so a link MTU other than 1500 is fine.
    const fake = await FakeCloudHypervisorProcess.start(world.host, 'Running');
    try {
      const result = await world.link(['link', 'appvm-catgirl', '--attach', 'appvm-catgirl=cloud-hypervisor', '--attach', 'netvm=netns', '--ch-socket', fake.socketPath, '--mtu', '1400', '--json']);
      expect(result.code, result.stderr).toBe(0);
      expect(result.stderr).toBe('');
      const link = (JSON.parse(result.stdout) as LinkOutput).links[0]!;
      const { requests, heldTapQueues } = await fake.report();
      const addNet = requests.find((request) => request.path === '/api/v1/vm.add-net');
      expect(addNet).toMatchObject({ body: { mac: link.clientMac, id: link.clientDevice }, taps: [link.clientDevice] });
      expect(addNet?.body).toEqual({ mac: link.clientMac, id: link.clientDevice });
      expect(heldTapQueues).toBe(1);
      expect((await devices(world.host)).get(link.clientDevice)?.mtu).toBe(1400);
      expect((await world.link(['unlink', 'appvm-catgirl', '--ch-socket', fake.socketPath])).code).toBe(0);
    } finally {
      await fake.close();
    }
  });

  it("refuses a link MTU other than 1500 for a cloud-hypervisor in another network namespace than the taps (its guest would get 1500): one line, nothing sent, the run undone; --mtu 1500 attaches", async () => {
    // cloud-hypervisor reads the tap's MTU by name in its own namespace; in another it finds none
    // (or another device's), and the guest stays at 1500 whatever the link has.
    const elsewhere = await harness.namespace('chns');
    const fake = await FakeCloudHypervisorProcess.start(elsewhere, 'Running');
    const args = ['link', 'appvm-catgirl', '--attach', 'appvm-catgirl=cloud-hypervisor', '--attach', 'netvm=netns', '--ch-socket', fake.socketPath];
    try {
      const listBefore = (await world.link(['list', '--json'])).stdout;
      const devicesBefore = [...(await devices(world.host)).keys()].sort();
      const refused = await world.link([...args, '--mtu', '9000']);
      expect(refused.code).toBe(1);
      expect(refused.stderr.trim().split('\n')).toHaveLength(1);
      const escaped = fake.socketPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      expect(refused.stderr).toMatch(
        new RegExp(
          `^spectrum-link: cloud-hypervisor of VM appvm-catgirl at ${escaped} \\(pid ${fake.pid}, which made the socket listen\\) runs in network namespace net:\\[\\d+\\], not in the taps' \\(spectrum-link's own, net:\\[\\d+\\]\\): .*link MTU 9000; run cloud-hypervisor in the taps' network namespace, or link with --mtu 1500`,
        ),
      );
      expect([...(await devices(world.host)).keys()].sort()).toEqual(devicesBefore);
      expect((await world.link(['list', '--json'])).stdout).toBe(listBefore);
      expect(await fake.report()).toMatchObject({ requests: [], nets: [], heldTapQueues: 0 });

      // At 1500 the guest's default is the link's MTU: attached.
      const attached = await world.link([...args, '--mtu', '1500', '--json']);
      expect(attached.code, attached.stderr).toBe(0);
      expect(attached.stderr).toBe('');
      const link = (JSON.parse(attached.stdout) as LinkOutput).links[0]!;
      expect(await fake.report()).toMatchObject({ requests: [{ path: '/api/v1/vm.add-net', taps: [link.clientDevice] }], heldTapQueues: 1 });
      expect((await world.link(['unlink', 'appvm-catgirl', '--ch-socket', fake.socketPath])).code).toBe(0);
      expect((await fake.report()).heldTapQueues).toBe(0);
    } finally {
      await fake.close();
    }
  });

  it('with --attach none and --mtu prints QEMU arguments that tell the guest the MTU (host_mtu), in the JSON and the human output', async () => {
    const json = await world.link(['link', 'appvm-lynx', '--attach', 'none', '--mtu', '9000', '--json']);
    expect(json.code, json.stderr).toBe(0);
    const link = (JSON.parse(json.stdout) as LinkOutput).links[0]!;
    expect((await devices(world.host)).get(link.clientDevice)?.mtu).toBe(9000);
    expect(link.vmmArguments?.client?.qemu).toEqual([
      '-netdev',
      `tap,id=net-${link.clientDevice},ifname=${link.clientDevice},script=no,downscript=no`,
      '-device',
      `virtio-net-pci,netdev=net-${link.clientDevice},mac=${link.clientMac},id=${link.clientDevice},host_mtu=9000`,
    ]);
    // cloud-hypervisor reads the tap's MTU itself.
    expect(link.vmmArguments?.client?.cloudHypervisor).toEqual(['--net', `tap=${link.clientDevice},mac=${link.clientMac},id=${link.clientDevice}`]);
    const human = await world.link(['link', 'appvm-lynx', '--attach', 'none', '--mtu', '9000']);
    expect(human.stdout).toContain(`  appvm-lynx: qemu ${link.vmmArguments!.client!.qemu.join(' ')}\n`);
    // list shows the arguments for the MTU the link has, whatever --mtu it is given.
    const listed = JSON.parse((await world.link(['show', 'appvm-lynx', '--json'])).stdout) as LinkOutput['links'];
    expect(listed[0]?.vmmArguments?.client?.qemu[3]).toMatch(/,host_mtu=9000$/);
    // Linked again without --mtu, the link keeps the 9000 it records, and its arguments say so.
    const kept = JSON.parse((await world.link(['link', 'appvm-lynx', '--attach', 'none', '--json'])).stdout) as LinkOutput;
    expect(kept.links[0]?.vmmArguments?.client?.qemu[3]).toMatch(/,host_mtu=9000$/);
    // Back to 1500: the arguments are as they always were.
    const plain = JSON.parse((await world.link(['link', 'appvm-lynx', '--attach', 'none', '--mtu', '1500', '--json'])).stdout) as LinkOutput;
    expect(plain.links[0]?.vmmArguments?.client?.qemu[3]).toBe(`virtio-net-pci,netdev=net-${link.clientDevice},mac=${link.clientMac},id=${link.clientDevice}`);
  });

  it('with --attach none prints those arguments in the human output too, a line per VM and VMM', async () => {
    const json = JSON.parse((await world.link(['link', 'appvm-lynx', '--attach', 'none', '--json'])).stdout) as LinkOutput;
    const link = json.links[0]!;
    const result = await world.link(['link', 'appvm-lynx', '--attach', 'none']);
    expect(result.code, result.stderr).toBe(0);
    const lines = result.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^appvm-lynx -> netvm  id \d+/);
    expect(lines.slice(1)).toEqual([
      `  appvm-lynx: qemu ${link.vmmArguments!.client!.qemu.join(' ')}`,
      `  appvm-lynx: cloud-hypervisor ${link.vmmArguments!.client!.cloudHypervisor.join(' ')}`,
      `  netvm: qemu -netdev tap,id=net-${link.providerDevice},ifname=${link.providerDevice},script=no,downscript=no -device virtio-net-pci,netdev=net-${link.providerDevice},mac=${link.clientMac.replace(':00:', ':80:')},id=${link.providerDevice}`,
      `  netvm: cloud-hypervisor --net tap=${link.providerDevice},mac=${link.clientMac.replace(':00:', ':80:')},id=${link.providerDevice}`,
    ]);
    // A side a VMM takes over itself gets no such lines.
    const mixed = await world.link(['link', 'appvm-lynx', '--attach', 'none', '--attach', 'netvm=netns']);
    expect(mixed.stdout.trimEnd().split('\n').slice(1).map((line) => line.split(':')[0])).toEqual(['  appvm-lynx', '  appvm-lynx']);
  });
});

describeNetns('spectrum-link with VMMs, linked again without --attach', () => {
  // A world and a QEMU of its own: the suite above leaves NICs pending unplug in its QEMUs.
  const world = linkWorldPerSuite('linkvmmkeep');
  let qemu: NetnsProcess | undefined;
  let socketDir: string | undefined;
  afterAll(async () => {
    await qemu?.kill('SIGKILL');
    if (socketDir !== undefined) await rm(socketDir, { recursive: true, force: true });
  });

  it('keeps a QEMU-attached link as it is: the NIC stays in QEMU on the same tap, recorded as qemu, so unlink without --attach detaches it', async () => {
    socketDir = await mkdtemp(join(tmpdir(), 'spectrum-vmm-keep-'));
    const qmpPath = join(socketDir, 'appvm-lynx.qmp');
    qemu = world().host.spawn(['qemu-system-x86_64', '-machine', 'pc', '-accel', 'tcg', '-S', '-nodefaults', '-display', 'none', '-qmp', `unix:${qmpPath},server=on,wait=off`]);
    const deadline = Date.now() + 15_000;
    while (!existsSync(qmpPath)) {
      if (Date.now() > deadline) throw new Error('QEMU did not create its QMP socket within 15 s');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const qmpTemplate = join(socketDir, '{vm}.qmp');
    const first = await world().link(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--qmp-socket', qmpTemplate, '--json']);
    expect(first.code, first.stderr).toBe(0);
    const link = (JSON.parse(first.stdout) as LinkOutput).links[0]!;
    const nicMac = (): Promise<unknown> => qmp(qmpPath, (client) => client.execute('qom-get', { path: `/machine/peripheral/${link.clientDevice}`, property: 'mac' }));
    expect(String(await nicMac()).toUpperCase()).toBe(link.clientMac);
    expect(await carrierFlags(world().host, link.clientDevice)).toContain('LOWER_UP');
    const tapIndex = (await devices(world().host)).get(link.clientDevice)?.ifindex;

    const again = await world().link(['link', 'appvm-lynx', '--qmp-socket', qmpTemplate, '--json']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toBe('');
    expect(JSON.parse(again.stdout)).toMatchObject({ links: [{ id: link.id, clientAttach: 'qemu', providerAttach: 'none' }] });
    // The same tap, still held by QEMU's NIC.
    const tap = (await devices(world().host)).get(link.clientDevice);
    expect([tap?.ifindex, tap?.linkinfo?.info_kind]).toEqual([tapIndex, 'tun']);
    expect(tap?.flags).toContain('LOWER_UP');
    expect(String(await nicMac()).toUpperCase()).toBe(link.clientMac);

    // Recorded as qemu, unlink reaches QEMU with no --attach: the netdev goes (no guest acknowledges the device's unplug).
    const unlinked = await world().link(['unlink', 'appvm-lynx', '--qmp-socket', qmpTemplate, '--vmm-timeout', '300']);
    expect(unlinked.code, unlinked.stderr).toBe(0);
    const netdevGone = await qmp(qmpPath, async (client) => {
      await client.execute('netdev_add', { type: 'user', id: `net-${link.clientDevice}` });
      return true;
    }).catch((error: unknown) => String(error));
    expect(netdevGone).toBe(true);
  });
});
