// spectrum-link run without CAP_NET_ADMIN (a non-root user, or root with it dropped): the kernel's
// refusal of a netlink request says what it needs, in its one line, where "Operation not
// permitted" alone named no cause. What needs no privilege (list) still works.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type ExecResult, type Harness, type Netns, createHarness, describeNetns, trackTempDir } from '../harness/index.js';
import { EXAMPLES, LINK_BIN, requireBuild } from './link-fixture.js';

describeNetns('spectrum-link without CAP_NET_ADMIN', () => {
  let harness: Harness;
  let host: Netns;
  let scratch: string;

  beforeAll(async () => {
    requireBuild();
    harness = createHarness('nopriv');
    host = await harness.namespace('host');
    scratch = await mkdtemp(join(tmpdir(), 'spectrum-nopriv-'));
    trackTempDir(scratch);
  });
  afterAll(async () => {
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
    await harness?.cleanup();
  });

  /** The bin in the test namespace, CAP_NET_ADMIN dropped from its bounding set (so from root's capabilities after exec). */
  const unprivileged = (args: readonly string[]): Promise<ExecResult> =>
    host.exec(['setpriv', '--bounding-set', '-net_admin', 'node', LINK_BIN, ...args, '--state-dir', join(scratch, 'state')], { enter: 'nsenter', allowFailure: true });

  it('link: the refused netlink request in one line, with what it needs (root or CAP_NET_ADMIN), exit 1, nothing made', async () => {
    const result = await unprivileged(['link', 'appvm-lynx', '--config-dir', EXAMPLES]);
    expect({ code: result.code, stdout: result.stdout, stderr: result.stderr }).toEqual({
      code: 1,
      stdout: '',
      stderr: expect.stringMatching(/^spectrum-link: ip link add \S+ type bridge failed: Operation not permitted \(needs root or CAP_NET_ADMIN\)\n$/),
    });
    const { stdout } = await host.exec(['ip', '-o', 'link', 'show'], { enter: 'nsenter' });
    expect(stdout.split('\n').filter((line) => line !== '').map((line) => line.split(': ')[1])).toEqual(['lo']);
  });

  it('link as root refused for another reason (/dev/net/tun on a nodev mount: EACCES) says the kernel\'s words alone, no privilege it has already', async () => {
    // A mount namespace of its own (private mounts), /dev/net a nodev tmpfs holding a tun node: opening it is refused, root or not.
    const script = 'mount -t tmpfs -o nodev none /dev/net && mknod /dev/net/tun c 10 200 && exec "$@"';
    const result = await host.exec(['unshare', '-m', 'sh', '-c', script, 'sh', 'node', LINK_BIN, 'link', 'appvm-lynx', '--config-dir', EXAMPLES, '--state-dir', join(scratch, 'state-root')], {
      enter: 'nsenter',
      allowFailure: true,
    });
    expect({ code: result.code, stdout: result.stdout }).toEqual({ code: 1, stdout: '' });
    expect(result.stderr).toMatch(/Permission denied/);
    expect(result.stderr).not.toMatch(/CAP_NET_ADMIN/);
  });

  it('list, which needs no privilege, still works', async () => {
    const result = await unprivileged(['list']);
    expect({ code: result.code, stdout: result.stdout, stderr: result.stderr }).toEqual({ code: 0, stdout: 'no links recorded\n', stderr: '' });
  });
});
