// A kernel without SO_BINDTOIFINDEX (before Linux 5.1), which no test machine is: the udp-batch
// addon's bindToIndex fails there with ENOPROTOOPT, given here at the addon's boundary.
import { expect, it, vi } from 'vitest';
import { UdpError, UdpSocket } from '../../../guest/dns/udp-socket.js';

vi.mock('../../../shared/native-addon.js', () => ({
  loadNativeAddon: (_from: string, file: string): unknown => {
    if (file !== 'udp_batch.node') throw new Error(`unexpected addon ${file}`);
    return {
      arena: () => undefined,
      open: () => ({}),
      close: () => undefined,
      // As the addon throws an errno (napi-plumbing.h's throw_errno): its name as `code`.
      bindToIndex: () => {
        throw Object.assign(new Error('SO_BINDTOIFINDEX: Protocol not available'), { code: 'ENOPROTOOPT' });
      },
    };
  },
}));

it('says in one line that binding to a link needs Linux 5.1, when the kernel has no SO_BINDTOIFINDEX', () => {
  const socket = UdpSocket.bind(4, '', 0, 65_536);
  let thrown: unknown;
  try {
    socket.bindToLink({ ifname: 'up0', ifindex: 7 });
  } catch (error) {
    thrown = error;
  } finally {
    socket.close();
  }
  expect(thrown).toBeInstanceOf(UdpError);
  expect(thrown).toMatchObject({ kind: 'socket', code: 'ENOPROTOOPT', message: 'cannot bind UDP to link up0: this kernel has no SO_BINDTOIFINDEX (Linux 5.1 or later is needed)' });
});
