// `link` in netns mode under `ip netns exec`, end to end in namespaces: that gives spectrum-link a
// mount namespace of its own, whose /run/netns mounts (the VM namespaces it adds) go when it
// exits. It is refused, one line naming the fix, exit 2, nothing made; where it printed its links
// and exited 0, the links already broken and the /run/netns files left dangling. Under unshare -m
// with shared propagation the mounts reach the host's: it links, and the namespaces stay.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { describeNetns } from '../harness/index.js';
import { LINK_BIN, oneLineError, withWorldOptions } from './link-fixture.js';
import { eachWithoutVmNamespaces, linkWorldPerSuite, vmNamespaceFiles as namespaceFilesOf } from './link-world-suite.js';

describeNetns('spectrum-link netns mode outside the host mount namespace', () => {
  const world = linkWorldPerSuite('linknsx');
  eachWithoutVmNamespaces(world);
  const vmNamespaceFiles = (): string[] => namespaceFilesOf(world());
  const linkArgs = (): string[] => withWorldOptions(['link', 'appvm-lynx', '--attach', 'netns'], world());

  it.each([[[] as string[]], [['--keep-going']]])('refuses under ip netns exec, naming nsenter, before it makes anything (%j)', async (extra) => {
    const run = await world().host.exec(['node', LINK_BIN, ...linkArgs(), ...extra], { enter: 'netns-exec', allowFailure: true, timeoutMs: 60_000 });
    expect(run.code, run.stdout + run.stderr).toBe(2);
    const line = oneLineError(run.stderr);
    expect(line).toMatch(/mount namespace of its own/);
    expect(line).toMatch(/run under nsenter --net=\/run\/netns\/NS \(README: the --attach table, netns\)$/);
    expect(run.stdout).toBe('');
    expect(vmNamespaceFiles()).toEqual([]);
    const listed = await world().link(['list']);
    expect(listed.stdout).not.toMatch(/appvm-lynx/);
  });

  it('refuses as PID 1 of a PID namespace of its own with private mounts (unshare -mpf --mount-proc): PID 1\'s mount namespace is its own, gone when it exits', async () => {
    const run = await world().host.exec(['unshare', '-m', '-p', '-f', '--mount-proc', 'node', LINK_BIN, ...linkArgs()], { enter: 'nsenter', allowFailure: true, timeoutMs: 60_000 });
    expect(run.code, run.stdout + run.stderr).toBe(2);
    expect(oneLineError(run.stderr)).toMatch(/mount namespace of its own.*nsenter --net=\/run\/netns\/NS \(README: the --attach table, netns\)$/);
    expect(vmNamespaceFiles()).toEqual([]);
    expect((await world().link(['list'])).stdout).not.toMatch(/appvm-lynx/);
  });

  it.each([[[] as string[]], [['--keep-going']]])('refuses under ip netns exec into a state dir not made yet, leaving it unmade (%j)', async (extra) => {
    const parent = mkdtempSync(join(tmpdir(), 'spectrum-nsx-'));
    try {
      const stateDir = join(parent, 'state');
      const args = withWorldOptions(['link', 'appvm-lynx', '--attach', 'netns', ...extra], { ...world(), stateDir });
      const run = await world().host.exec(['node', LINK_BIN, ...args], { enter: 'netns-exec', allowFailure: true, timeoutMs: 60_000 });
      expect(run.code, run.stdout + run.stderr).toBe(2);
      expect(oneLineError(run.stderr)).toMatch(/mount namespace of its own/);
      expect(existsSync(stateDir)).toBe(false);
      expect(vmNamespaceFiles()).toEqual([]);
    } finally {
      rmSync(parent, { recursive: true, force: true });
    }
  });

  it('takes itself for PID 1 only where /proc/1 is itself: not under unshare -pf with the host\'s /proc, whose PID 1 is the host\'s', () => {
    const lasting = new URL('../../dist/host/netns-lasting.js', import.meta.url).pathname;
    const probe = `import('${lasting}').then((m) => console.log(process.pid, m.procSelfIsPid1()))`;
    expect(execFileSync('unshare', ['-p', '-f', 'node', '-e', probe], { encoding: 'utf8' }).trim()).toBe('1 false');
    expect(execFileSync('unshare', ['-m', '-p', '-f', '--mount-proc', 'node', '-e', probe], { encoding: 'utf8' }).trim()).toBe('1 true');
  });

  it('links under unshare -m with shared propagation, the namespaces kept', async () => {
    const run = await world().host.exec(['unshare', '-m', '--propagation', 'shared', 'node', LINK_BIN, ...linkArgs()], { enter: 'nsenter', allowFailure: true, timeoutMs: 60_000 });
    expect(run.code, run.stderr).toBe(0);
    expect(vmNamespaceFiles().sort()).toEqual([`${world().netnsPrefix}appvm-lynx`, `${world().netnsPrefix}netvm`]);
    const listed = await world().link(['list']);
    expect(listed.stdout).toMatch(/appvm-lynx -> netvm .* up$/m);
  });

  // The verdict (are its /run/netns mounts kept) was read before the lock and again under it, where
  // a first run (the state dir not made yet) adds namespaces: its mount namespace is the same.
  it('a first run that adds namespaces reads where its mounts land once (PID 1\'s mountinfo once)', async () => {
    const parent = mkdtempSync(join(tmpdir(), 'spectrum-nsx-'));
    try {
      const stateDir = join(parent, 'state');
      const trace = join(parent, 'trace');
      const args = withWorldOptions(['link', 'appvm-lynx', '--attach', 'netns'], { ...world(), stateDir });
      const run = await world().host.exec(['strace', '-f', '-qq', '-e', 'trace=openat', '-o', trace, 'node', LINK_BIN, ...args], { enter: 'nsenter', allowFailure: true, timeoutMs: 60_000 });
      expect(run.code, run.stderr).toBe(0);
      expect(vmNamespaceFiles().sort()).toEqual([`${world().netnsPrefix}appvm-lynx`, `${world().netnsPrefix}netvm`]);
      expect(readFileSync(trace, 'utf8').split('\n').filter((line) => line.includes('"/proc/1/mountinfo"'))).toHaveLength(1);
    } finally {
      const unlinked = await world().link(['unlink', 'appvm-lynx', '--forget', '--state-dir', join(parent, 'state')]);
      rmSync(parent, { recursive: true, force: true });
      expect(unlinked.code, unlinked.stderr).toBe(0);
    }
  });

  it('goes through under ip netns exec where its namespaces are there already (it adds none)', async () => {
    const first = await world().link(['link', 'appvm-lynx', '--attach', 'netns']);
    expect(first.code, first.stderr).toBe(0);
    const again = await world().host.exec(['node', LINK_BIN, ...linkArgs()], { enter: 'netns-exec', allowFailure: true, timeoutMs: 60_000 });
    expect(again.code, again.stderr).toBe(0);
    const listed = await world().link(['list']);
    expect(listed.stdout).toMatch(/appvm-lynx -> netvm .* up$/m);
  });
});
