// qemuAttach/qemuDetach against a real QEMU (TCG, paused, no guest), run with its taps inside a
// throw-away network namespace. Needs root and qemu-system-x86_64; without them the tests are
// skipped locally, and fail in CI (CI=true) so that a broken runner is not mistaken for a pass.
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type VmmNic } from '../../../host/vmm/nic.js';
import { qemuAttach, qemuCheckMtu, qemuDetach, withQmp } from '../../../host/vmm/qmp.js';
import { TapFd } from '../../../host/vmm/tap-fd.js';
import { type QemuInstance, qemuUnavailable, startQemu } from './qemu-harness.js';
import { qmpError } from './rejection.js';

const unavailable = qemuUnavailable();
const inCi = process.env.CI === 'true';

if (unavailable !== undefined && inCi) {
  describe('QEMU hot-plug (real QEMU)', () => {
    it('can run here', () => {
      expect.fail(`the real-QEMU tests cannot run: ${unavailable}; CI must provide root and qemu-system-x86`);
    });
  });
}

const TIMEOUT = { timeoutMs: 5000 };

interface PciDevice {
  readonly qdev_id: string;
  readonly id: { readonly vendor: number; readonly device: number };
}

async function pciDevices(path: string): Promise<PciDevice[]> {
  const buses = (await withQmp(path, TIMEOUT, (client) => client.execute('query-pci'))) as Array<{ devices: PciDevice[] }>;
  return buses.flatMap((bus) => bus.devices);
}

async function qmp(path: string, command: string, args?: Record<string, unknown>): Promise<unknown> {
  return withQmp(path, TIMEOUT, (client) => client.execute(command, args));
}

async function infoNetwork(path: string): Promise<string> {
  return String(await qmp(path, 'human-monitor-command', { 'command-line': 'info network' }));
}

/** Attach options: the taps are in QEMU's namespace, which is not this process's. */
const attachOptions = (qemu: QemuInstance, extra: { bus?: string } = {}) => ({ ...TIMEOUT, tapNetnsPath: `/run/netns/${qemu.namespace}`, ...extra });

describe.skipIf(unavailable !== undefined)('QEMU hot-plug (real QEMU, machine pc)', () => {
  let qemu: QemuInstance;
  const nic: VmmNic = { id: 'snp101', tap: 'snp101', mac: '0A:B3:EC:80:00:65' };

  beforeAll(async () => {
    qemu = await startQemu('pc');
    for (const tap of ['snp101', 'snp102', 'snp103', 'snp104', 'snp107', 'snp108']) qemu.addTap(tap);
  });
  afterAll(async () => {
    await qemu?.stop();
  });

  it('attach adds a virtio-net-pci NIC with the MAC on a descriptor of the tap', async () => {
    expect(await qemuAttach(qemu.qmpPath, nic, attachOptions(qemu))).toEqual({ alreadyAttached: false });
    const device = (await pciDevices(qemu.qmpPath)).find((d) => d.qdev_id === nic.id);
    expect(device?.id).toMatchObject({ vendor: 0x1af4, device: 0x1000 }); // virtio-net (transitional)
    expect(await qmp(qemu.qmpPath, 'qom-get', { path: `/machine/peripheral/${nic.id}`, property: 'mac' })).toBe('0a:b3:ec:80:00:65');
    // The netdev runs on the descriptor handed over (getfd), not on a tap QEMU opened by name.
    expect(await infoNetwork(qemu.qmpPath)).toMatch(/net-snp101: .*type=tap,fd=\d+/);
  });

  it('attach again changes nothing and is not an error', async () => {
    const before = await pciDevices(qemu.qmpPath);
    const network = await infoNetwork(qemu.qmpPath);
    expect(await qemuAttach(qemu.qmpPath, nic, attachOptions(qemu))).toEqual({ alreadyAttached: true });
    expect(await pciDevices(qemu.qmpPath)).toEqual(before);
    expect(await infoNetwork(qemu.qmpPath)).toBe(network);
  });

  it('attach with the same id and another MAC is a conflict, and changes nothing', async () => {
    const network = await infoNetwork(qemu.qmpPath);
    const error = await qmpError(qemuAttach(qemu.qmpPath, { ...nic, mac: '0A:B3:EC:80:00:66' }, attachOptions(qemu)));
    expect(error.kind).toBe('conflict');
    expect(error.message).toMatch(/already has NIC snp101 with MAC 0A:B3:EC:80:00:65, not 0A:B3:EC:80:00:66/);
    expect(await infoNetwork(qemu.qmpPath)).toBe(network);
    // Detach refuses it too: it must not unplug another link's NIC.
    expect((await qmpError(qemuDetach(qemu.qmpPath, { ...nic, mac: '0A:B3:EC:80:00:66' }, TIMEOUT))).kind).toBe('conflict');
  });

  it('detach without a guest: bounded, not acknowledged, netdev removed all the same', async () => {
    const started = Date.now();
    expect(await qemuDetach(qemu.qmpPath, nic, { timeoutMs: 300 })).toEqual({ acknowledged: false, alreadyDetached: false });
    expect(Date.now() - started).toBeLessThan(3000);
    // The netdev is gone: its id is free again.
    await qmp(qemu.qmpPath, 'netdev_add', { type: 'tap', id: 'net-snp101', ifname: 'snp101', script: 'no', downscript: 'no' });
    await qmp(qemu.qmpPath, 'netdev_del', { id: 'net-snp101' });
  });

  it('attach while the unacknowledged unplug is pending says so, and leaves no netdev', async () => {
    const error = await qmpError(qemuAttach(qemu.qmpPath, nic, attachOptions(qemu)));
    expect(error.kind).toBe('unplug-pending');
    expect(error.message).toMatch(/waiting for the guest/);
    expect((await qmpError(qmp(qemu.qmpPath, 'netdev_del', { id: 'net-snp101' }))).qmpClass).toBe('DeviceNotFound');
  });

  it('detach again while the unplug is pending: bounded, still not acknowledged, no error', async () => {
    expect(await qemuDetach(qemu.qmpPath, nic, { timeoutMs: 200 })).toEqual({ acknowledged: false, alreadyDetached: false });
  });

  it('detach of a NIC that is not there is not an error', async () => {
    expect(await qemuDetach(qemu.qmpPath, { id: 'snp999', tap: 'snp999', mac: '0A:B3:EC:80:03:E7' }, TIMEOUT)).toEqual({
      acknowledged: true,
      alreadyDetached: true,
    });
  });

  it('attach reuses a netdev left by a half-done attach', async () => {
    const half: VmmNic = { id: 'snp102', tap: 'snp102', mac: '0A:B3:EC:80:00:66' };
    await qmp(qemu.qmpPath, 'netdev_add', { type: 'tap', id: 'net-snp102', ifname: 'snp102', script: 'no', downscript: 'no' });
    expect(await qemuAttach(qemu.qmpPath, half, attachOptions(qemu))).toEqual({ alreadyAttached: false });
    expect((await pciDevices(qemu.qmpPath)).some((d) => d.qdev_id === 'snp102')).toBe(true);
  });

  /** Delete the tap and make one of the same name: what a rollback, or an unlink while QEMU was unreachable, and a later link do. */
  function tapMadeAnew(tap: string): void {
    expect(spawnSync('ip', ['-n', qemu.namespace, 'link', 'del', tap]).status).toBe(0);
    qemu.addTap(tap);
  }

  /** Whether the tap's one queue is held (by QEMU): a NIC on it holds it. */
  function tapHeld(tap: string): boolean {
    try {
      TapFd.open(tap, `/run/netns/${qemu.namespace}`).close();
      return false;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EBUSY') return true;
      throw error;
    }
  }

  it('a netdev left on a tap deleted since is not reused: the NIC goes onto the tap there is now', async () => {
    const half: VmmNic = { id: 'snp107', tap: 'snp107', mac: '0A:B3:EC:80:00:6B' };
    await qmp(qemu.qmpPath, 'netdev_add', { type: 'tap', id: 'net-snp107', ifname: 'snp107', script: 'no', downscript: 'no' });
    tapMadeAnew('snp107');
    expect(tapHeld('snp107')).toBe(false);
    expect(await qemuAttach(qemu.qmpPath, half, attachOptions(qemu))).toEqual({ alreadyAttached: false });
    expect(tapHeld('snp107')).toBe(true);
  });

  it('a NIC on a tap deleted since is not attached: attach says so and what to do, and changes nothing', async () => {
    const stale: VmmNic = { id: 'snp108', tap: 'snp108', mac: '0A:B3:EC:80:00:6C' };
    expect(await qemuAttach(qemu.qmpPath, stale, attachOptions(qemu))).toEqual({ alreadyAttached: false });
    tapMadeAnew('snp108');
    const network = await infoNetwork(qemu.qmpPath);
    const error = await qmpError(qemuAttach(qemu.qmpPath, stale, attachOptions(qemu)));
    expect(error.kind).toBe('conflict');
    expect(error.message).toMatch(/NIC snp108 .* not on tap snp108: .*made anew.*unlink.*link it again/);
    expect(await infoNetwork(qemu.qmpPath)).toBe(network);
    expect(tapHeld('snp108')).toBe(false);
  });

  it('detach removes a netdev left by a half-done attach', async () => {
    await qmp(qemu.qmpPath, 'netdev_add', { type: 'tap', id: 'net-snp104', ifname: 'snp104', script: 'no', downscript: 'no' });
    expect(await qemuDetach(qemu.qmpPath, { id: 'snp104', tap: 'snp104', mac: '0A:B3:EC:80:00:68' }, TIMEOUT)).toEqual({
      acknowledged: true,
      alreadyDetached: true,
    });
    expect(await infoNetwork(qemu.qmpPath)).not.toMatch(/net-snp104/);
  });

  it('a failed device_add removes the netdev it added', async () => {
    const failing: VmmNic = { id: 'snp103', tap: 'snp103', mac: '0A:B3:EC:80:00:67' };
    const error = await qmpError(qemuAttach(qemu.qmpPath, failing, attachOptions(qemu, { bus: 'no-such-bus' })));
    expect(error.kind).toBe('command');
    expect(error.message).toMatch(/refused to add NIC snp103.*no-such-bus/);
    expect(await infoNetwork(qemu.qmpPath)).not.toMatch(/net-snp103/);
  });

  it('a tap held by another NIC, or missing: the error says so, and QEMU is left as it was', async () => {
    const network = await infoNetwork(qemu.qmpPath);
    // snp102 is already open (by NIC snp102); a tap without multi_queue opens only once.
    const busy = await qmpError(qemuAttach(qemu.qmpPath, { id: 'snp105', tap: 'snp102', mac: '0A:B3:EC:80:00:69' }, attachOptions(qemu)));
    expect(busy.kind).toBe('tap-unavailable');
    expect(busy.message).toMatch(/tap snp102 is held by another process/);
    const missing = await qmpError(qemuAttach(qemu.qmpPath, { id: 'snp106', tap: 'snp106', mac: '0A:B3:EC:80:00:6A' }, attachOptions(qemu)));
    expect(missing.kind).toBe('tap-unavailable');
    expect(missing.message).toMatch(/tap snp106 does not exist in this network namespace/);
    expect(await infoNetwork(qemu.qmpPath)).toBe(network);
    // Nothing was made in QEMU's namespace either (opening a tap by name would make one).
    expect(spawnSync('ip', ['-n', qemu.namespace, 'link', 'show', 'snp106']).status).not.toBe(0);
  });
});

describe.skipIf(unavailable !== undefined)('QEMU hot-plug (real QEMU, machine q35)', () => {
  let qemu: QemuInstance;
  const nic: VmmNic = { id: 'snc201', tap: 'snc201', mac: '0A:B3:EC:00:00:C9' };

  beforeAll(async () => {
    qemu = await startQemu('q35', ['-device', 'pcie-root-port,id=sn-rp1,bus=pcie.0,chassis=1']);
    qemu.addTap('snc201');
  });
  afterAll(async () => {
    await qemu?.stop();
  });

  it('the root bus is refused with a hint, and leaves no netdev', async () => {
    const error = await qmpError(qemuAttach(qemu.qmpPath, nic, attachOptions(qemu)));
    expect(error.kind).toBe('command');
    expect(error.message).toMatch(/not hot-pluggable.*pcie-root-port/);
    expect(await infoNetwork(qemu.qmpPath)).not.toMatch(/net-snc201/);
  });

  it('a free pcie-root-port given as bus takes the NIC', async () => {
    expect(await qemuAttach(qemu.qmpPath, nic, attachOptions(qemu, { bus: 'sn-rp1' }))).toEqual({ alreadyAttached: false });
    expect(await qemuAttach(qemu.qmpPath, nic, attachOptions(qemu, { bus: 'sn-rp1' }))).toEqual({ alreadyAttached: true });
    expect(await qemuDetach(qemu.qmpPath, nic, { timeoutMs: 300 })).toEqual({ acknowledged: false, alreadyDetached: false });
  });
});

describe.skipIf(unavailable !== undefined)('QEMU hot-plug: the guest learns the link MTU (real QEMU)', () => {
  let qemu: QemuInstance;
  const hostMtu = (id: string): Promise<unknown> => qmp(qemu.qmpPath, 'qom-get', { path: `/machine/peripheral/${id}`, property: 'host_mtu' });

  beforeAll(async () => {
    qemu = await startQemu('pc');
    for (const tap of ['snp301', 'snp302', 'snp303', 'snp304']) qemu.addTap(tap);
  });
  afterAll(async () => {
    await qemu?.stop();
  });

  it('a link MTU other than 1500 is offered as host_mtu (VIRTIO_NET_F_MTU); 1500 leaves the device without it', async () => {
    expect(await qemuAttach(qemu.qmpPath, { id: 'snp301', tap: 'snp301', mac: '0A:B3:EC:80:01:2D', mtu: 1400 }, attachOptions(qemu))).toEqual({ alreadyAttached: false });
    expect(await hostMtu('snp301')).toBe(1400);
    expect(await qemuAttach(qemu.qmpPath, { id: 'snp302', tap: 'snp302', mac: '0A:B3:EC:80:01:2E', mtu: 1500 }, attachOptions(qemu))).toEqual({ alreadyAttached: false });
    expect(await hostMtu('snp302')).toBe(0); // QEMU's "not offered": the guest takes 1500
  });

  it('QEMU takes both ends of the range the CLI allows (68 and 65535)', async () => {
    expect(await qemuAttach(qemu.qmpPath, { id: 'snp303', tap: 'snp303', mac: '0A:B3:EC:80:01:2F', mtu: 68 }, attachOptions(qemu))).toEqual({ alreadyAttached: false });
    expect(await hostMtu('snp303')).toBe(68);
    expect(await qemuAttach(qemu.qmpPath, { id: 'snp304', tap: 'snp304', mac: '0A:B3:EC:80:01:30', mtu: 65535 }, attachOptions(qemu))).toEqual({ alreadyAttached: false });
    expect(await hostMtu('snp304')).toBe(65535);
  });

  it('attach again with the same MTU changes nothing; with another MTU it says the guest keeps the old one, and changes nothing', async () => {
    const nic: VmmNic = { id: 'snp301', tap: 'snp301', mac: '0A:B3:EC:80:01:2D', mtu: 1400 };
    expect(await qemuAttach(qemu.qmpPath, nic, attachOptions(qemu))).toEqual({ alreadyAttached: true });
    const network = await infoNetwork(qemu.qmpPath);
    const changed = await qmpError(qemuAttach(qemu.qmpPath, { ...nic, mtu: 9000 }, attachOptions(qemu)));
    expect(changed.kind).toBe('mtu-mismatch');
    expect(changed.message).toMatch(/has NIC snp301 with MTU 1400, but the link's MTU is now 9000: the guest learns its MTU only when the NIC is added/);
    // A NIC made without host_mtu is one of MTU 1500: no mismatch for 1500, or for no MTU, but for any other.
    const plain: VmmNic = { id: 'snp302', tap: 'snp302', mac: '0A:B3:EC:80:01:2E' };
    expect(await qemuAttach(qemu.qmpPath, plain, attachOptions(qemu))).toEqual({ alreadyAttached: true });
    expect(await qemuAttach(qemu.qmpPath, { ...plain, mtu: 1500 }, attachOptions(qemu))).toEqual({ alreadyAttached: true });
    expect((await qmpError(qemuAttach(qemu.qmpPath, { ...plain, mtu: 1400 }, attachOptions(qemu)))).message).toMatch(/with MTU 1500, but the link's MTU is now 1400/);
    expect(await infoNetwork(qemu.qmpPath)).toBe(network);
    expect(await hostMtu('snp301')).toBe(1400);
  });

  it('qemuCheckMtu, asked before the link is changed: the same mismatch for a NIC there told another MTU; nothing for the same MTU, or a NIC not there; it changes nothing', async () => {
    const nic: VmmNic = { id: 'snp301', tap: 'snp301', mac: '0A:B3:EC:80:01:2D', mtu: 1400 };
    const network = await infoNetwork(qemu.qmpPath);
    await expect(qemuCheckMtu(qemu.qmpPath, nic, { timeoutMs: 5000 })).resolves.toBeUndefined();
    const changed = await qmpError(qemuCheckMtu(qemu.qmpPath, { ...nic, mtu: 1500 }, { timeoutMs: 5000 }));
    expect(changed.kind).toBe('mtu-mismatch');
    expect(changed.message).toMatch(/has NIC snp301 with MTU 1400, but the link's MTU is now 1500: the guest learns its MTU only when the NIC is added/);
    await expect(qemuCheckMtu(qemu.qmpPath, { id: 'snp399', tap: 'snp399', mac: '0A:B3:EC:80:01:99', mtu: 9000 }, { timeoutMs: 5000 })).resolves.toBeUndefined();
    expect(await infoNetwork(qemu.qmpPath)).toBe(network);
  });
});
