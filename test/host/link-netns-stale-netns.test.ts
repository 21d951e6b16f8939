// Stale /run/netns files, end to end in namespaces: a file there with no namespace mounted on it
// (what a run under ip netns exec, or an ip netns add cut short, leaves) of a VM namespace a `link`
// needs is cleared and the namespace made in that one run, every such file of it; where each run
// failed on one of them (ip: File exists), clearing only that one. A file with something else
// mounted on it is left as it is, the line naming how to look and the fix.
import { mkdtempSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { describeNetns } from '../harness/index.js';
import { oneLineError } from './link-fixture.js';
import { eachWithoutVmNamespaces, linkWorldPerSuite, vmNamespaceFiles as namespaceFilesOf } from './link-world-suite.js';

/** The file system of a namespace's file (NSFS_MAGIC). */
const NSFS_MAGIC = 0x6e736673;

describeNetns('spectrum-link stale /run/netns files', () => {
  const world = linkWorldPerSuite('linknss');
  eachWithoutVmNamespaces(world);
  const vmNamespaceFiles = (): string[] => namespaceFilesOf(world());
  const fileOf = (vm: string): string => `/run/netns/${world().netnsPrefix}${vm}`;
  const holdsNamespace = (vm: string): boolean => statfsSync(fileOf(vm)).type === NSFS_MAGIC;

  it('clears every stale file a run needs and links in that one run', async () => {
    // As a run under ip netns exec left them: files, nothing mounted on them.
    for (const vm of ['appvm-lynx', 'netvm']) writeFileSync(fileOf(vm), '', { mode: 0 });
    const run = await world().link(['link', 'appvm-lynx', '--attach', 'netns']);
    expect(run.code, run.stderr).toBe(0);
    expect(holdsNamespace('appvm-lynx')).toBe(true);
    expect(holdsNamespace('netvm')).toBe(true);
    const listed = await world().link(['list']);
    expect(listed.stdout).toMatch(/appvm-lynx -> netvm .* up$/m);
  });

  it('leaves a file with something else mounted on it, naming how to look and the fix', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'spectrum-stale-'));
    const other = join(dir, 'other');
    writeFileSync(other, 'not a namespace');
    writeFileSync(fileOf('netvm'), '', { mode: 0 });
    const mounted = await world().host.exec(['mount', '--bind', other, fileOf('netvm')], { enter: 'nsenter', allowFailure: true });
    expect(mounted.code, mounted.stderr).toBe(0);
    try {
      const run = await world().link(['link', 'appvm-lynx', '--attach', 'netns']);
      expect(run.code, run.stdout).toBe(1);
      const line = oneLineError(run.stderr);
      expect(line).toMatch(/has something else mounted on it: look at it \(findmnt \/run\/netns\/\S+netvm\), and ip netns delete \S+netvm if it is no one's$/);
      // Still mounted there, untouched by the run and its undo.
      const findmnt = await world().host.exec(['findmnt', '-n', fileOf('netvm')], { enter: 'nsenter', allowFailure: true });
      expect(findmnt.code).toBe(0);
    } finally {
      await world().host.exec(['umount', fileOf('netvm')], { enter: 'nsenter', allowFailure: true });
      rmSync(fileOf('netvm'), { force: true });
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
