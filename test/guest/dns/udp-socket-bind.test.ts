// Failures of the udp-batch addon that no test machine gives, given here at the addon's boundary:
// a kernel without SO_BINDTOIFINDEX (before Linux 5.1), where bindToIndex fails with ENOPROTOOPT;
// and an ENXIO (which the addon gives for a zone naming no interface) for an address with no zone.
import { expect, it, vi } from 'vitest';
import { UdpError, UdpSocket, connectTcpThroughZone } from '../../../guest/dns/udp-socket.js';

/** As the addon throws an errno (napi-plumbing.h's throw_errno): its name as `code`. */
const noSuchDevice = (): never => {
  throw Object.assign(new Error('bad address: No such device or address'), { code: 'ENXIO' });
};

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
      connect: noSuchDevice,
      tcpConnect: noSuchDevice,
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

it('says an ENXIO of an address with a zone as that zone naming no interface, and of one without as the addon said it (not as a zone made of its last character)', () => {
  const socket = UdpSocket.bind(6, '', 0, 65_536);
  const thrown = (run: () => unknown): unknown => {
    try {
      run();
    } catch (error) {
      return error;
    }
    return undefined;
  };
  try {
    expect(thrown(() => socket.connect('fe80::1%eth9', 53))).toMatchObject({
      kind: 'zone',
      code: 'ENXIO',
      message: 'cannot connect UDP to [fe80::1%eth9]:53: the zone %eth9 names no interface: no interface has that name (on a link-local address) or that index',
    });
    for (const [run, what] of [
      // In brackets: `2001:db8::53:53` read as an address ending in :53.
      [() => socket.connect('2001:db8::53', 53), 'cannot connect UDP to [2001:db8::53]:53'],
      [() => connectTcpThroughZone('fe80::1', 53), 'cannot connect TCP to [fe80::1]:53'],
    ] as const) {
      const error = thrown(run);
      expect(error).toBeInstanceOf(UdpError);
      expect(error).toMatchObject({ kind: 'socket', code: 'ENXIO', message: `${what}: bad address: No such device or address` });
    }
  } finally {
    socket.close();
  }
});
