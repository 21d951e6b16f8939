import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { clientId } from '../../../shared/client-id.js';
import { clientMacOf, providerMacOf } from '../../../shared/link-mac.js';
import { CLIENT_ID_MAX, CLIENT_ID_MIN } from '../../../shared/scheme.js';
import { DEFAULT_DEVICE_PREFIX, devicePrefix, linkDeviceNames } from '../../../host/device-names.js';
import { type VmmNic, VmmNicError, qemuHostMtu, qemuNetdevId, vmmNic } from '../../../host/vmm/nic.js';
import { cloudHypervisorNetArguments, qemuNetArguments } from '../../../host/vmm/vmm-arguments.js';

const nic: VmmNic = { id: 'snc42310', tap: 'snc42310', mac: '0A:B3:EC:00:A5:46' };

function kindOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    if (error instanceof VmmNicError) return error.kind;
    throw error;
  }
  return 'no error';
}

describe('VMM command-line arguments', () => {
  it('cloud-hypervisor: one --net with tap, mac and id', () => {
    expect(cloudHypervisorNetArguments(nic)).toEqual(['--net', 'tap=snc42310,mac=0A:B3:EC:00:A5:46,id=snc42310']);
  });

  it('QEMU: a script-less tap netdev and a virtio-net-pci device on it', () => {
    expect(qemuNetArguments(nic)).toEqual([
      '-netdev',
      'tap,id=net-snc42310,ifname=snc42310,script=no,downscript=no',
      '-device',
      'virtio-net-pci,netdev=net-snc42310,mac=0A:B3:EC:00:A5:46,id=snc42310',
    ]);
    expect(qemuNetdevId(nic)).toBe('net-snc42310');
  });

  it('QEMU: a link MTU other than 1500 goes to the guest as host_mtu; 1500, or none, leaves the device as it was', () => {
    expect(qemuNetArguments({ ...nic, mtu: 9000 })[3]).toBe('virtio-net-pci,netdev=net-snc42310,mac=0A:B3:EC:00:A5:46,id=snc42310,host_mtu=9000');
    expect(qemuNetArguments({ ...nic, mtu: 1400 })[3]).toBe('virtio-net-pci,netdev=net-snc42310,mac=0A:B3:EC:00:A5:46,id=snc42310,host_mtu=1400');
    expect(qemuNetArguments({ ...nic, mtu: 1500 })).toEqual(qemuNetArguments(nic));
    expect(qemuHostMtu({ mtu: 68 })).toBe(68);
    expect(qemuHostMtu({ mtu: 65535 })).toBe(65535);
    expect(qemuHostMtu({ mtu: 1500 })).toBeUndefined();
    expect(qemuHostMtu({})).toBeUndefined();
  });

  it('cloud-hypervisor: no mtu= whatever the MTU (it reads the tap\'s; mtu= would need CAP_NET_ADMIN)', () => {
    for (const mtu of [68, 1400, 1500, 9000, 65535]) expect(cloudHypervisorNetArguments({ ...nic, mtu })).toEqual(cloudHypervisorNetArguments(nic));
  });

  it('every MTU the CLI takes can be given (68 to 65535), and nothing else', () => {
    fc.assert(
      fc.property(fc.integer({ min: 68, max: 65535 }), (mtu) => {
        expect(vmmNic({ ...nic, mtu })).toEqual({ ...nic, mtu });
        const device = qemuNetArguments({ ...nic, mtu })[3] ?? '';
        expect(device.split(',')).toHaveLength(mtu === 1500 ? 4 : 5);
      }),
    );
    for (const mtu of [0, 67, 65536, 1400.5, Number.NaN]) expect(kindOf(() => vmmNic({ ...nic, mtu }))).toBe('mtu-range');
    expect(() => qemuNetArguments({ ...nic, mtu: 67 })).toThrow(/MTU 67 cannot be given to a VMM: give a whole number from 68 to 65535/);
  });

  it('id and tap may differ', () => {
    expect(cloudHypervisorNetArguments({ ...nic, id: 'uplink' })).toEqual(['--net', 'tap=snc42310,mac=0A:B3:EC:00:A5:46,id=uplink']);
    expect(qemuNetArguments({ ...nic, id: 'uplink' })[3]).toBe('virtio-net-pci,netdev=net-uplink,mac=0A:B3:EC:00:A5:46,id=uplink');
  });

  it('every link NIC gives well-formed option lists: three fields, no stray separators', () => {
    const prefix = devicePrefix(DEFAULT_DEVICE_PREFIX);
    fc.assert(
      fc.property(fc.integer({ min: CLIENT_ID_MIN, max: CLIENT_ID_MAX }), fc.boolean(), (n, provider) => {
        const id = clientId(n);
        const names = linkDeviceNames(prefix, id);
        const tap = provider ? names.provider : names.client;
        const linkNic = { id: tap, tap, mac: provider ? providerMacOf(id) : clientMacOf(id) };
        const ch = cloudHypervisorNetArguments(linkNic)[1] ?? '';
        expect(ch.split(',')).toEqual([`tap=${tap}`, `mac=${linkNic.mac}`, `id=${tap}`]);
        const qemu = qemuNetArguments(linkNic);
        expect(qemu[1]?.split(',')).toHaveLength(5);
        expect(qemu[3]?.split(',')).toHaveLength(4);
      }),
    );
  });

  it('refuses names and MACs that could break the option syntax or are not link MACs', () => {
    expect(kindOf(() => vmmNic({ ...nic, id: 'a,b' }))).toBe('id-syntax');
    expect(kindOf(() => vmmNic({ ...nic, id: '' }))).toBe('id-syntax');
    expect(kindOf(() => vmmNic({ ...nic, id: '_net0' }))).toBe('id-syntax');
    expect(kindOf(() => vmmNic({ ...nic, id: 'x'.repeat(65) }))).toBe('id-syntax');
    expect(kindOf(() => vmmNic({ ...nic, tap: 'tap0,script=/bin/sh' }))).toBe('tap-syntax');
    expect(kindOf(() => vmmNic({ ...nic, tap: 'a'.repeat(16) }))).toBe('tap-syntax');
    expect(kindOf(() => vmmNic({ ...nic, tap: '..' }))).toBe('tap-syntax');
    expect(kindOf(() => vmmNic({ ...nic, mac: '0a:b3:ec:00:a5:46' }))).toBe('mac-syntax');
    expect(kindOf(() => vmmNic({ ...nic, mac: '52:54:00:12:34:56' }))).toBe('mac-syntax');
    expect(kindOf(() => vmmNic({ ...nic, mac: '0A:B3:EC:00:A5:46,id=x' }))).toBe('mac-syntax');
    expect(() => cloudHypervisorNetArguments({ ...nic, id: 'a,b' })).toThrow(/letters, digits/);
    expect(() => qemuNetArguments({ ...nic, mac: '0a:b3:ec:00:a5:46' })).toThrow(/write it as 0A:B3:EC:00:A5:46/);
  });
});
