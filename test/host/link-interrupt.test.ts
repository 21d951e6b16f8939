// spectrum-link link --all (a few hundred VMs, --attach netns) interrupted: the first SIGINT or
// SIGTERM stops it at a safe point and undoes the run; a second exits at once, and a re-run converges.
// With --keep-going, a signal while it links VM by VM undoes the VM in progress only.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { describeNetns, eventually } from '../harness/index.js';
import { LINK_BIN, devices, withWorldOptions } from './link-fixture.js';
import { linkWorldPerSuite } from './link-world-suite.js';
import { FakeCloudHypervisor } from './vmm/fake-cloud-hypervisor.js';

const CLIENTS = 300;

describeNetns('link --all interrupted', () => {
  const world = linkWorldPerSuite('linkint', CLIENTS);

  const spawnLink = (args: readonly string[]) => world().host.spawn(['node', LINK_BIN, ...withWorldOptions(args, world())], { enter: 'nsenter' });
  const statePath = (): string => join(world().stateDir, 'links.json');
  const recorded = async (): Promise<number> => {
    try {
      return (JSON.parse(await readFile(statePath(), 'utf8')) as { links: unknown[] }).links.length;
    } catch {
      return 0; // no state file yet (it is replaced atomically, so never half written)
    }
  };
  const namespaces = async (): Promise<string[]> =>
    (await world().host.exec(['ip', 'netns', 'list'], { enter: 'nsenter' })).stdout
      .split('\n')
      .map((line) => line.split(' ')[0] ?? '')
      .filter((name) => name.startsWith(world().netnsPrefix))
      .sort();
  const hostDevices = async (): Promise<string[]> => [...(await devices(world().host)).keys()].sort();

  it('the first SIGINT stops the run at a safe point and undoes it: exit 130, one line, state, devices and namespaces as before', async () => {
    const first = await world().link(['link', 'appvm-lynx', '--attach', 'netns']);
    expect(first.code, first.stderr).toBe(0);
    const stateBefore = await readFile(statePath(), 'utf8');
    const devicesBefore = await hostDevices();
    const namespacesBefore = await namespaces();

    const run = spawnLink(['link', '--all', '--attach', 'netns']);
    // Some chunks' ids recorded (and devices on the way): well into the run.
    await eventually('the run to record some links', async () => (await recorded()) > 13, 30_000);
    const exit = await run.kill('SIGINT', 60_000);
    await run.waitClosed();
    expect(exit, run.stderr).toEqual({ code: 130, signal: null });
    expect(run.stdout).toBe('');
    const lines = run.stderr.split('\n').filter((line) => line !== '');
    expect(lines).toEqual([expect.stringMatching(/^spectrum-link: link interrupted by SIGINT: undid what this run had made/)]);
    expect(await readFile(statePath(), 'utf8')).toBe(stateBefore);
    expect(await hostDevices()).toEqual(devicesBefore);
    expect(await namespaces()).toEqual(namespacesBefore);
  });

  it('a SIGINT while it waits for another run to release the state lock stops the wait: exit 130, nothing made', async () => {
    const fixture = join(import.meta.dirname, '..', '..', 'dist', 'test', 'host', 'fixtures', 'allocate.js');
    // A state to keep (idempotent where the test above linked it already).
    const first = await world().link(['link', 'appvm-lynx', '--attach', 'netns']);
    expect(first.code, first.stderr).toBe(0);
    const holder = world().host.spawn(['node', fixture, 'hold', world().stateDir], { enter: 'nsenter' });
    try {
      await holder.waitForOutput(/locked/);
      const stateBefore = await readFile(statePath(), 'utf8');
      const devicesBefore = await hostDevices();
      const run = spawnLink(['link', 'appvm-catgirl', '--attach', 'netns']);
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      const started = performance.now();
      const exit = await run.kill('SIGINT', 10_000);
      await run.waitClosed();
      // Long before the lock's 30 s timeout.
      expect(performance.now() - started).toBeLessThan(5_000);
      expect(exit, run.stderr).toEqual({ code: 130, signal: null });
      expect(run.stderr).toBe('spectrum-link: link interrupted by SIGINT while waiting for another spectrum-link to finish: nothing was made\n');
      expect(await readFile(statePath(), 'utf8')).toBe(stateBefore);
      expect(await hostDevices()).toEqual(devicesBefore);
    } finally {
      await holder.kill('SIGKILL', 5_000);
    }
  });

  it('a second signal exits at once (143 after SIGTERM, saying so), and a re-run links every VM', async () => {
    const run = spawnLink(['link', '--all', '--attach', 'netns']);
    await eventually('the run to record some links', async () => (await recorded()) > 13, 30_000);
    process.kill(run.pid, 'SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, 20));
    process.kill(run.pid, 'SIGTERM');
    const exit = await run.wait();
    await run.waitClosed();
    expect(exit, run.stderr).toEqual({ code: 143, signal: null });
    expect(run.stderr).toMatch(/SIGTERM again: exiting at once; .*run it again, and it converges/);

    const again = await world().link(['link', '--all', '--attach', 'netns', '--json']);
    expect(again.code, again.stderr).toBe(0);
    const listed = JSON.parse((await world().link(['list', '--json'])).stdout) as { vm: string; present: boolean }[];
    // The extra clients and the example's two app VMs, each linked to netvm, all with their devices.
    expect(listed).toHaveLength(CLIENTS + 2);
    expect(listed.every((link) => link.present)).toBe(true);
  });
});

describeNetns('link --all --keep-going interrupted while it links VM by VM', () => {
  const world = linkWorldPerSuite('linkintkg', CLIENTS);

  it('undoes the VM in progress, keeps (and prints) those linked, says so: exit 130, every recorded link up, no device left over', async () => {
    // appvm-lynx (the last VM) has a VMM that refuses its NIC: the one transaction fails at its
    // very end and undoes itself, and the VMs are linked again one by one.
    const fake = await FakeCloudHypervisor.start('Running');
    fake.refuse.set('vm.add-net', () => ({ status: 500, body: 'no free PCI slot' }));
    const statePath = join(world().stateDir, 'links.json');
    const recorded = async (): Promise<number> => {
      try {
        return (JSON.parse(await readFile(statePath, 'utf8')) as { links: unknown[] }).links.length;
      } catch {
        return 0;
      }
    };
    try {
      const args = ['link', '--all', '--keep-going', '--json', '--attach', 'none', '--attach', 'appvm-lynx=cloud-hypervisor', '--ch-socket', fake.socketPath];
      const run = world().host.spawn(['node', LINK_BIN, ...withWorldOptions(args, world())], { enter: 'nsenter' });
      await eventually('the one transaction to reach the VMM', async () => fake.requests.length > 0, 60_000);
      // Its undo gave every id back; then VM by VM, each recorded as it is linked.
      await eventually('some VMs linked one by one', async () => (await recorded()) >= 10 && (await recorded()) < 100, 60_000);
      const exit = await run.kill('SIGINT', 60_000);
      await run.waitClosed();
      expect(exit, run.stderr).toEqual({ code: 130, signal: null });
      const printed = run.stdout.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as { vm: string; links: { id: number }[] });
      const [message, ...more] = run.stderr.split('\n').filter((line) => line !== '');
      expect(more).toEqual([]);
      const undone = /undid what it had made for (\S+), the VM it was linking; /.exec(message ?? '')?.[1];
      expect(message).toMatch(
        new RegExp(`^spectrum-link: link interrupted by SIGINT while linking VM by VM after a failure \\(--keep-going\\): (undid .*; )?the ${printed.length} VMs it had linked \\(printed\\) stay linked; (\\d+) VMs were not linked and no link was taken down: run it again$`),
      );
      const notLinked = Number(/; (\d+) VMs were not linked/.exec(message ?? '')?.[1]);
      expect(printed.length + notLinked + (undone === undefined ? 0 : 1)).toBe(CLIENTS + 2);
      expect(printed.map((output) => output.vm)).not.toContain(undone);
      // What stays is what was printed, whole; the VM in progress left nothing (gc finds no device unowned).
      const listed = JSON.parse((await world().link(['list', '--json'])).stdout) as { vm: string; id: number; present: boolean }[];
      expect(listed.map((link) => link.id).sort()).toEqual(printed.flatMap((output) => output.links.map((link) => link.id)).sort());
      expect(listed.every((link) => link.present)).toBe(true);
      const gc = await world().link(['gc', '--json']);
      expect([gc.code, gc.stdout]).toEqual([0, `${JSON.stringify({ removed: [] })}\n`]);
      expect(fake.nets).toEqual([]);
    } finally {
      await fake.close();
    }
  });
});
