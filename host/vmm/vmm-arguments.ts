// Command-line arguments that give a VM a NIC on an existing tap, for VMMs started by someone
// else (`--attach none`): the linker prints them, the caller adds them to the VMM's command line.
// Pure: no I/O. The same ids as the hot-plug adapters, so a NIC added either way is recognised.
import { type VmmNic, qemuHostMtu, qemuNetdevId, vmmNic } from './nic.js';

/**
 * cloud-hypervisor: `--net tap=<tap>,mac=<mac>,id=<id>` (config.rs NetConfig::SYNTAX). No `mtu=`:
 * cloud-hypervisor reads the MTU of the tap it opens and offers it to the guest (see the note in
 * cloud-hypervisor.ts); `mtu=` would make it set the tap's MTU, which needs CAP_NET_ADMIN.
 */
export function cloudHypervisorNetArguments(nic: VmmNic): string[] {
  const { tap, mac, id } = vmmNic(nic);
  return ['--net', `tap=${tap},mac=${mac},id=${id}`];
}

/**
 * QEMU: a tap netdev that neither creates nor configures the tap (`script=no,downscript=no`),
 * and a virtio-net-pci device on it with the link MAC, and the link MTU as `host_mtu` where it
 * is not 1500 (QEMU does not read the tap's).
 */
export function qemuNetArguments(nic: VmmNic): string[] {
  const { tap, mac, id } = vmmNic(nic);
  const netdev = qemuNetdevId(nic);
  const hostMtu = qemuHostMtu(nic);
  return [
    '-netdev',
    `tap,id=${netdev},ifname=${tap},script=no,downscript=no`,
    '-device',
    `virtio-net-pci,netdev=${netdev},mac=${mac},id=${id}${hostMtu === undefined ? '' : `,host_mtu=${hostMtu}`}`,
  ];
}
