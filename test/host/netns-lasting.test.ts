// Where mounts under /run/netns land (netns-lasting.ts): the mountinfo lines are as the kernel
// writes them, ours and PID 1's, under nsenter (one mount namespace), ip netns exec (a slave copy)
// and unshare -m --propagation shared (a copy in the same peer group).
import { describe, expect, it } from 'vitest';
import { coveringMount, parseMountinfo } from '../../host/mountinfo.js';
import { mountsReach } from '../../host/netns-lasting.js';

const HOST = [
  '27 1 254:0 / / rw,relatime - ext4 /dev/vda rw',
  '22 27 0:21 / /proc rw,relatime - proc proc rw',
  '42 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw',
].join('\n');
/** ip netns exec: its own copies, /run/netns a slave of the host's peer group. */
const NETNS_EXEC = [
  '45 44 254:0 / / rw,relatime - ext4 /dev/vda rw',
  '65 45 254:0 /run/netns /run/netns rw,relatime master:1 - ext4 /dev/vda rw',
].join('\n');
/** unshare -m --propagation shared: its own copies, in the host's peer group. */
const UNSHARED = [
  '45 44 254:0 / / rw,relatime - ext4 /dev/vda rw',
  '65 45 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw',
].join('\n');

describe('mountsReach', () => {
  const host = parseMountinfo(HOST);

  it('reads ids, mount points and peer groups, undoing octal escapes', () => {
    expect(parseMountinfo('7 1 0:5 / /a\\040b rw shared:3 master:2 - tmpfs t rw')).toEqual([{ id: 7, mountPoint: '/a b', shared: 3, master: 2 }]);
    expect(coveringMount(host, '/run/netns')?.id).toBe(42);
    expect(coveringMount(host, '/run/netnsx')?.id).toBe(27);
  });

  it("is lasting in PID 1's own mount namespace", () => {
    expect(mountsReach(host, host, '/run/netns')).toBe('lasting');
    // No /run/netns mount yet, / private: the mount is PID 1's all the same.
    const bare = parseMountinfo('27 1 254:0 / / rw - ext4 /dev/vda rw');
    expect(mountsReach(bare, bare, '/run/netns')).toBe('lasting');
  });

  it('is own under ip netns exec (a slave: nothing propagates out)', () => {
    expect(mountsReach(parseMountinfo(NETNS_EXEC), host, '/run/netns')).toBe('own');
  });

  it('is lasting in a mount namespace whose /run/netns shares a peer group with PID 1', () => {
    expect(mountsReach(parseMountinfo(UNSHARED), host, '/run/netns')).toBe('lasting');
    // PID 1's a slave of ours: it receives our mounts too.
    const slaveHost = parseMountinfo(HOST.replace('shared:1', 'master:1'));
    expect(mountsReach(parseMountinfo(UNSHARED), slaveHost, '/run/netns')).toBe('lasting');
    // Shared, but with a group PID 1 has no mount of.
    expect(mountsReach(parseMountinfo(UNSHARED.replace('shared:1', 'shared:9')), host, '/run/netns')).toBe('own');
  });

  it('cannot tell where a mountinfo is unread', () => {
    expect(mountsReach(undefined, host, '/run/netns')).toBe('unknown');
    expect(mountsReach(parseMountinfo(NETNS_EXEC), undefined, '/run/netns')).toBe('unknown');
  });
});
