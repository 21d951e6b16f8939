// A kernel without SO_BINDTOIFINDEX (before Linux 5.1), which no test machine is: raw-socket's
// setOption fails there with ENOPROTOOPT (strerror's text only), given here at the addons' boundary.
import { expect, it, vi } from 'vitest';
import { LinkSocket } from '../../../guest/dhcp/link-socket.js';

vi.mock('../../../shared/native-addon.js', () => ({
  loadNativeAddon: (_from: string, file: string): unknown => {
    if (file !== 'dhcp_filter.node') throw new Error(`unexpected addon ${file}`);
    const program = Buffer.alloc(8);
    return { dhcpServerFilter: () => ({ level: 1, option: 26, value: program, dropAll: program }), bindToIndexOption: () => ({ level: 1, option: raw.BIND_TO_INDEX }) };
  },
}));

/** raw-socket's native socket, refusing SO_BINDTOIFINDEX as raw-socket reports an errno. */
const raw = vi.hoisted(() => ({
  /** SO_BINDTOIFINDEX's number, as dhcp-filter.c gives it. */
  BIND_TO_INDEX: 62,
  SocketWrap: class {
    setOption(_level: number, option: number): void {
      if (option === raw.BIND_TO_INDEX) throw new Error('Protocol not available');
    }
    close(): void {}
  },
  SocketLevel: { SOL_SOCKET: 1, IPPROTO_IP: 0 },
  SocketOption: { SO_BROADCAST: 6, SO_BINDTODEVICE: 25, IP_HDRINCL: 3 },
}));

vi.mock('node:module', async (importOriginal) => {
  const original = await importOriginal<typeof import('node:module')>();
  return {
    ...original,
    createRequire: (from: string) => {
      const real = original.createRequire(from);
      return Object.assign((id: string): unknown => (id.endsWith('raw.node') ? raw : real(id)), { resolve: real.resolve });
    },
  };
});

it('says in one line that a DHCP socket needs Linux 5.1, when the kernel has no SO_BINDTOIFINDEX', () => {
  expect(() => LinkSocket.open({ ifname: 'vm1', ifindex: 7 }, { onDatagram: () => undefined, onError: () => undefined })).toThrow(
    expect.objectContaining({ kind: 'socket', message: 'cannot open a DHCP socket on vm1: this kernel has no SO_BINDTOIFINDEX (Linux 5.1 or later is needed)' }),
  );
});
