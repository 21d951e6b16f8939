// spectrum-link link --all (a few hundred VMs, --attach netns) interrupted: the first SIGINT,
// SIGTERM or SIGHUP stops it at a safe point and undoes the run; a second SIGINT exits at once, and
// a re-run converges; a SIGTERM or SIGHUP after the first signal is said, and the undo finishes.
// With --keep-going, a signal while it links VM by VM undoes the VM in progress only. A signal
// while a failed run is undone is said after the failure, which is not lost. A signal after the
// last safe point undoes nothing, and the line says so truly (a VM that failed was undone alone).
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { describeNetns, eventually, jsonErrorOf, splitJsonError, trackTempDir } from '../harness/index.js';
import { LINK_BIN, type LinkWorld, devices, withWorldOptions } from './link-fixture.js';
import { linkWorldPerSuite } from './link-world-suite.js';
import { FakeCloudHypervisor } from './vmm/fake-cloud-hypervisor.js';
import { ScriptedQemu } from './vmm/scripted-qemu.js';

const CLIENTS = 300;
const HOLD_FIXTURE = join(import.meta.dirname, '..', '..', 'dist', 'test', 'host', 'fixtures', 'allocate.js');
const RECORDER_FIXTURE = join(import.meta.dirname, '..', '..', 'dist', 'test', 'host', 'fixtures', 'exit-recorder.js');
const BLOCKED_FIXTURE = join(import.meta.dirname, 'fixtures', 'stdout-blocked.py');

/**
 * Run `args` while another process holds the state lock (after linking appvm-lynx, a state to keep:
 * idempotent where a test before linked it already), and send `signal` a second into its wait.
 */
async function interruptedWhileWaiting(world: () => LinkWorld, args: readonly string[], signal: NodeJS.Signals, exitCode: number, line: string, stateFile: 'kept' | 'removed' = 'kept'): Promise<void> {
  const statePath = (): string => join(world().stateDir, 'links.json');
  const hostDevices = async (): Promise<string[]> => [...(await devices(world().host)).keys()].sort();
  const first = await world().link(['link', 'appvm-lynx', '--attach', 'netns']);
  expect(first.code, first.stderr).toBe(0);
  // 'removed': the state dir holds no state file (its links' devices left), put back after.
  const recorded = await readFile(statePath(), 'utf8');
  if (stateFile === 'removed') await rm(statePath());
  const holder = world().host.spawn(['node', HOLD_FIXTURE, 'hold', world().stateDir], { enter: 'nsenter' });
  try {
    await holder.waitForOutput(/locked/);
    const stateBefore = stateFile === 'removed' ? undefined : await readFile(statePath(), 'utf8');
    const devicesBefore = await hostDevices();
    const run = world().host.spawn(['node', LINK_BIN, ...withWorldOptions(args, world())], { enter: 'nsenter' });
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const started = performance.now();
    const exit = await run.kill(signal, 10_000);
    await run.waitClosed();
    // Long before the lock wait's end (--lock-wait, 600 s by default).
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(exit, run.stderr).toEqual({ code: exitCode, signal: null });
    expect(run.stdout).toBe('');
    // Before it, at most the record saying that it waits (after a second of waiting: a slow start may not get there).
    const lines = run.stderr.split('\n').filter((text) => text !== '');
    const waitSaid = lines.length > 1 && (JSON.parse(lines[0] ?? '') as { msg?: string }).msg?.startsWith('waiting for another spectrum-link') === true;
    expect(lines.slice(waitSaid ? 1 : 0)).toEqual([`spectrum-link: ${line}`]);
    expect(await readFile(statePath(), 'utf8').catch(() => undefined)).toBe(stateBefore);
    expect(await hostDevices()).toEqual(devicesBefore);
  } finally {
    await holder.kill('SIGKILL', 5_000);
    if (stateFile === 'removed') await writeFile(statePath(), recorded);
  }
}

describeNetns('link --all interrupted', () => {
  const world = linkWorldPerSuite('linkint', CLIENTS);

  const spawnLink = (args: readonly string[], wrapper: readonly string[] = []) => world().host.spawn([...wrapper, 'node', LINK_BIN, ...withWorldOptions(args, world())], { enter: 'nsenter' });
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

  /** appvm-lynx linked (a state to keep: idempotent where a test before linked it already), and the state file, host devices and namespaces then. */
  const linkedBefore = async (): Promise<{ state: string; devices: string[]; namespaces: string[] }> => {
    const first = await world().link(['link', 'appvm-lynx', '--attach', 'netns']);
    expect(first.code, first.stderr).toBe(0);
    return { state: await readFile(statePath(), 'utf8'), devices: await hostDevices(), namespaces: await namespaces() };
  };
  /** The state file, host devices and namespaces as linkedBefore found them. */
  const expectAsBefore = async (before: Awaited<ReturnType<typeof linkedBefore>>): Promise<void> => {
    expect(await readFile(statePath(), 'utf8')).toBe(before.state);
    expect(await hostDevices()).toEqual(before.devices);
    expect(await namespaces()).toEqual(before.namespaces);
  };
  /** link --all stopped by `signal` well into the run: it exits `code` after its one line, having undone the run. */
  const stoppedAndUndone = async (signal: NodeJS.Signals, code: number, wrapper: readonly string[] = []): Promise<void> => {
    const before = await linkedBefore();
    const run = spawnLink(['link', '--all', '--attach', 'netns'], wrapper);
    // Some chunks' ids recorded (and devices on the way): well into the run.
    await eventually('the run to record some links', async () => (await recorded()) > 13, 30_000);
    const exit = await run.kill(signal, 60_000);
    await run.waitClosed();
    expect(exit, run.stderr).toEqual({ code, signal: null });
    expect(run.stdout).toBe('');
    const lines = run.stderr.split('\n').filter((line) => line !== '');
    expect(lines).toEqual([expect.stringMatching(new RegExp(`^spectrum-link: link interrupted by ${signal}: undid what this run had made`))]);
    await expectAsBefore(before);
  };

  it('the first SIGINT stops the run at a safe point and undoes it: exit 130, one line, state, devices and namespaces as before', async () => {
    await stoppedAndUndone('SIGINT', 130);
  });

  it('a SIGHUP (its terminal gone) stops the run and undoes it as SIGTERM does: exit 129, one line, state, devices and namespaces as before', async () => {
    await stoppedAndUndone('SIGHUP', 129);
  });

  it('under nohup a SIGHUP stops and undoes the run all the same (Node puts an ignored SIGHUP back to its default as it starts): exit 129, one line, nothing left', async () => {
    await stoppedAndUndone('SIGHUP', 129, ['nohup']);
  });

  it('a hangup whose line cannot be written (stderr a pipe closed before it) still undoes the run: SIGHUP twice, as a hangup sends it, exit 129, nothing left', async () => {
    const before = await linkedBefore();
    const run = spawnLink(['link', '--all', '--attach', 'netns']);
    await eventually('the run to record some links', async () => (await recorded()) > 13, 30_000);
    // The reader goes away: each write to stderr from here on fails (EPIPE).
    run.child.stderr?.destroy();
    // The shell sends it on to its job, then the kernel again to the terminal's foreground group as the shell exits.
    process.kill(run.pid, 'SIGHUP');
    await new Promise((resolve) => setTimeout(resolve, 20));
    process.kill(run.pid, 'SIGHUP');
    const exit = await Promise.race([run.wait(), new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 60_000))]);
    if (exit === 'timeout') await run.kill('SIGKILL', 5_000);
    expect(exit).toEqual({ code: 129, signal: null });
    await run.waitClosed();
    await expectAsBefore(before);
  });

  it('run from a terminal that hangs up (an SSH session dropped): undone all the same, though its line cannot be written (EIO): exit 129, nothing left', async () => {
    const before = await linkedBefore();
    const dir = await mkdtemp(join(tmpdir(), 'spectrum-link-hangup-'));
    trackTempDir(dir);
    const exitFile = join(dir, 'exit.json');
    // An interactive shell on a terminal of its own (script's pty), as an SSH login has: link runs
    // in it as a foreground job, its stderr the terminal (progress lines drawn).
    const terminal = world().host.spawn(['script', '-qfc', 'bash --norc --noprofile -i', '/dev/null'], { enter: 'nsenter', stdin: 'pipe' });
    try {
      const quoted = [process.execPath, RECORDER_FIXTURE, exitFile, process.execPath, LINK_BIN, ...withWorldOptions(['link', '--all', '--attach', 'netns'], world())].map((arg) => `'${arg}'`);
      terminal.child.stdin?.write(`${quoted.join(' ')}\n`);
      await eventually('the run to record some links', async () => (await recorded()) > 13, 30_000);
      // The terminal goes: its shell and the job in its foreground get SIGHUP, and its writes fail (EIO).
      await terminal.kill('SIGKILL', 0);
      let ended = '';
      await eventually('the run to end (its exit written)', async () => (ended = await readFile(exitFile, 'utf8').catch(() => '')).endsWith('}'), 60_000);
      expect(JSON.parse(ended)).toEqual({ code: 129, signal: null });
    } finally {
      await terminal.kill('SIGKILL', 0);
    }
    await expectAsBefore(before);
  });

  it.each([[['appvm-catgirl']], [['--all']]] as const)('a SIGINT while link %j waits for another run to release the state lock stops the wait: exit 130, nothing made', async (vms) => {
    await interruptedWhileWaiting(world, ['link', ...vms, '--attach', 'netns'], 'SIGINT', 130, 'link interrupted by SIGINT while waiting for another spectrum-link to finish: nothing was made');
  });

  it('a SIGTERM close after a SIGHUP (logind, a dropped SSH session), and more of both, do not cut the undo short: one line says so, exit 129, nothing left', async () => {
    const before = await linkedBefore();
    const run = spawnLink(['link', '--all', '--attach', 'netns']);
    await eventually('the run to record some links', async () => (await recorded()) > 13, 30_000);
    for (const signal of ['SIGHUP', 'SIGTERM', 'SIGHUP', 'SIGTERM'] as const) {
      // A run that exited at once (as it did, cutting its undo short) is said by its exit below.
      if (run.child.exitCode === null && run.child.signalCode === null) process.kill(run.pid, signal);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const exit = await Promise.race([run.wait(), new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 60_000))]);
    if (exit === 'timeout') await run.kill('SIGKILL', 5_000);
    await run.waitClosed();
    expect(exit, run.stderr).toEqual({ code: 129, signal: null });
    expect(run.stderr.split('\n').filter((line) => line !== '')).toEqual([
      'spectrum-link: SIGTERM after SIGHUP: not exiting at once; the undo (or the run, past its last safe point) goes on to its end (a SIGINT, or SIGKILL, ends it at once)',
      expect.stringMatching(/^spectrum-link: link interrupted by SIGHUP: undid what this run had made/),
    ]);
    await expectAsBefore(before);
  });

  it('a second SIGINT (Ctrl-C again) exits at once (130, saying so), and a re-run links every VM', async () => {
    const run = spawnLink(['link', '--all', '--attach', 'netns']);
    await eventually('the run to record some links', async () => (await recorded()) > 13, 30_000);
    process.kill(run.pid, 'SIGINT');
    await new Promise((resolve) => setTimeout(resolve, 20));
    process.kill(run.pid, 'SIGINT');
    const exit = await run.wait();
    await run.waitClosed();
    expect(exit, run.stderr).toEqual({ code: 130, signal: null });
    // stderr is a pipe: no progress line was drawn, so none is ended (no blank line first).
    expect(run.stderr).toMatch(/^spectrum-link: SIGINT again: exiting at once; .*run it again, and it converges\n$/);

    const again = await world().link(['link', '--all', '--attach', 'netns', '--json']);
    expect(again.code, again.stderr).toBe(0);
    const listed = JSON.parse((await world().link(['list', '--json'])).stdout) as { vm: string; present: boolean }[];
    // The extra clients and the example's two app VMs, each linked to netvm, all with their devices.
    expect(listed).toHaveLength(CLIENTS + 2);
    expect(listed.every((link) => link.present)).toBe(true);
  });

  it('a SIGHUP once its result is decided (writing its answer to a full pipe) is ignored: the answer is written whole, exit 0', async () => {
    const run = world().host.spawn(['python3', BLOCKED_FIXTURE, 'node', LINK_BIN, ...withWorldOptions(['link', '--all', '--attach', 'netns'], world())], { enter: 'nsenter' });
    // Every VM linked already (the test before): it links them again, converging, and prints each.
    const exit = await run.wait();
    await run.waitClosed();
    expect(exit, run.stderr).toEqual({ code: 0, signal: null });
    // Each VM linked (the extra clients and the example's two app VMs) is printed, a line each.
    expect(JSON.parse(run.stdout), run.stderr).toEqual({ full: true, code: 0, signal: null, lines: CLIENTS + 2 });
  });
});

describeNetns('link --all --keep-going interrupted VM by VM', () => {
  const world = linkWorldPerSuite('linkintkg', CLIENTS);
  const statePath = (): string => join(world().stateDir, 'links.json');
  const recorded = async (): Promise<number> => {
    try {
      return (JSON.parse(await readFile(statePath(), 'utf8')) as { links: unknown[] }).links.length;
    } catch {
      return 0;
    }
  };
  const spawnLink = (args: readonly string[]) => world().host.spawn(['node', LINK_BIN, ...withWorldOptions(args, world())], { enter: 'nsenter' });
  type Printed = { vm: string; links: { id: number }[] };
  type ListedLink = { vm: string; id: number; present: boolean };
  const listed = async (): Promise<ListedLink[]> => JSON.parse((await world().link(['list', '--json'])).stdout) as ListedLink[];

  /**
   * What a run stopped by SIGINT said: the VMs it printed, the one it undid, how many it did not
   * link. `failure`: the line that says why the one transaction failed, where it did.
   */
  async function interrupted(run: ReturnType<typeof spawnLink>, during: string, failure?: RegExp): Promise<{ printed: Printed[]; undone: string | undefined; notLinked: number }> {
    const exit = await run.kill('SIGINT', 60_000);
    await run.waitClosed();
    expect(exit, run.stderr).toEqual({ code: 130, signal: null });
    const said = splitJsonError(run.stdout);
    const printed = said.printed.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as Printed);
    const [message, ...more] = run.stderr.split('\n').filter((line) => line !== '');
    expect(more).toEqual(failure === undefined ? [] : [expect.stringMatching(failure)]);
    // After the VMs' lines, the interruption's error object, saying what stderr says.
    expect(said.error).toEqual(jsonErrorOf(message ?? '', 'interrupted', 130, more.length === 0 ? undefined : more.map((line) => line.replace(/^spectrum-link: /, ''))));
    expect(message).toMatch(
      new RegExp(`^spectrum-link: link interrupted by SIGINT while ${during} \\(--keep-going\\): (undid .*; )?the ${printed.length} VMs it had linked \\(printed\\) stay linked; (\\d+) VMs were not linked and no link was taken down: run it again$`),
    );
    const undone = /undid what it had made for (\S+), the VM it was linking/.exec(message ?? '')?.[1];
    const notLinked = Number(/; (\d+) VMs were not linked/.exec(message ?? '')?.[1]);
    expect(printed.length + notLinked + (undone === undefined ? 0 : 1)).toBe(CLIENTS + 2);
    expect(printed.map((output) => output.vm)).not.toContain(undone);
    return { printed, undone, notLinked };
  }

  it('while hot-plugging NICs VM by VM: undoes the VM in progress and those after it, keeps (and prints) those linked, says so: exit 130, every recorded link up, no device left over', async () => {
    // netvm under a cloud-hypervisor: every client's link has a NIC for it, hot-plugged VM by VM
    // once every VM has its ids and devices.
    const fake = await FakeCloudHypervisor.start('Running');
    try {
      const run = spawnLink(['link', '--all', '--keep-going', '--json', '--attach', 'none', '--attach', 'netvm=cloud-hypervisor', '--ch-socket', fake.socketPath]);
      await eventually('some NICs hot-plugged', async () => fake.nets.length >= 10, 60_000);
      const { printed, undone } = await interrupted(run, 'hot-plugging NICs VM by VM');
      expect(undone).toBeDefined();
      // What stays is what was printed, whole, each with its NIC; the others left nothing (gc finds no device unowned).
      const links = await listed();
      expect(links.map((link) => link.id).sort()).toEqual(printed.flatMap((output) => output.links.map((link) => link.id)).sort());
      expect(links.every((link) => link.present)).toBe(true);
      expect(fake.nets).toHaveLength(printed.length);
      const gc = await world().link(['gc', '--json']);
      expect([gc.code, gc.stdout]).toEqual([0, `${JSON.stringify({ removed: [] })}\n`]);
      // Unlinked again for the next test, the NICs taken back.
      expect((await world().link(['unlink', 'netvm', '--forget', '--ch-socket', fake.socketPath])).code).toBe(0);
      expect(fake.nets).toEqual([]);
    } finally {
      await fake.close();
    }
  });

  it('while linking VM by VM after the one transaction failed: undoes the VM in progress, keeps (and prints) those linked, says so: exit 130, every link linked up, no device left over', async () => {
    // The kernel refuses appvm-lynx's bridge (the last VM's: another device holds its name as an
    // altname): the one transaction fails at its last chunk and undoes itself, and the VMs are
    // linked again one by one.
    const first = await world().link(['link', 'appvm-lynx', '--attach', 'none', '--json']);
    expect(first.code, first.stderr).toBe(0);
    const lynx = (JSON.parse(first.stdout) as { links: { id: number; bridge: string }[] }).links[0]!;
    expect((await world().link(['unlink', 'appvm-lynx'])).code).toBe(0);
    await world().host.ip(['link', 'add', 'blocker', 'type', 'bridge']);
    await world().host.ip(['link', 'property', 'add', 'dev', 'blocker', 'altname', lynx.bridge]);
    try {
      const run = spawnLink(['link', '--all', '--keep-going', '--json', '--attach', 'none']);
      // The one transaction records every VM, then its undo gives their ids back; then VM by VM,
      // each recorded as it is linked (appvm-lynx's id, recorded before, stays).
      await eventually('the one transaction to record every VM', async () => (await recorded()) > CLIENTS, 60_000);
      await eventually('some VMs linked one by one', async () => (await recorded()) >= 10 && (await recorded()) < 100, 60_000);
      // Why it links VM by VM is said too: the pass may not have got to appvm-lynx.
      const { printed } = await interrupted(run, 'linking VM by VM after a failure', new RegExp(`^spectrum-link: the failure that had it link VM by VM: ip link add ${lynx.bridge} type bridge failed: `));
      const links = await listed();
      const others = links.filter((link) => link.vm !== 'appvm-lynx');
      expect(others.map((link) => link.id).sort()).toEqual(printed.flatMap((output) => output.links.map((link) => link.id)).sort());
      expect(others.every((link) => link.present)).toBe(true);
      expect(links.filter((link) => link.vm === 'appvm-lynx')).toEqual([expect.objectContaining({ id: lynx.id, present: false })]);
      const gc = await world().link(['gc', '--json']);
      expect([gc.code, gc.stdout]).toEqual([0, `${JSON.stringify({ removed: [] })}\n`]);
    } finally {
      await world().host.ip(['link', 'del', 'dev', 'blocker']);
    }
  });
});

describeNetns('link interrupted while it undoes a failure', () => {
  const world = linkWorldPerSuite('linkintundo');

  it('says the failure, then that a SIGINT came while it undid the run, which it finished: exit 130, nothing left', async () => {
    const sockets = await mkdtemp(join(tmpdir(), 'spectrum-link-interrupt-undo-'));
    trackTempDir(sockets);
    // appvm-lynx's QEMU takes its NIC, and never answers the device_del that takes it back;
    // netvm's QEMU refuses the provider side's NIC: the run fails, and its undo waits on
    // appvm-lynx's QEMU (within --vmm-timeout), long enough for a signal to come during it.
    const client = await ScriptedQemu.start(join(sockets, 'appvm-lynx.qmp'));
    client.deviceDel = 'silent';
    const provider = await ScriptedQemu.start(join(sockets, 'netvm.qmp'));
    provider.deviceAdd = 'refuse';
    try {
      const args = ['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=qemu', '--qmp-socket', join(sockets, '{vm}.qmp'), '--vmm-timeout', '3000'];
      const run = world().host.spawn(['node', LINK_BIN, ...withWorldOptions(args, world())], { enter: 'nsenter' });
      // The undo has begun: it asks appvm-lynx's QEMU for the NIC back.
      await eventually('the undo to ask for the NIC back', async () => client.commands.includes('device_del'), 30_000);
      const exit = await run.kill('SIGINT', 30_000);
      await run.waitClosed();
      expect(exit, run.stderr).toEqual({ code: 130, signal: null });
      expect(run.stdout).toBe('');
      expect(run.stderr.split('\n').filter((line) => line !== '')).toEqual([
        expect.stringMatching(/^spectrum-link: QEMU refused to add NIC snp\d+ .*No free slot on bus pcie\.0/),
        'spectrum-link: link interrupted by SIGINT while it failed (above) and undid the run: the undo went on to its end: what this run had made (its devices, the NICs it hot-plugged, the ids it allocated) is undone; links made before it are as they were',
        // The NIC appvm-lynx's QEMU did not give back is said: it may still hold it, on a deleted tap.
        expect.stringMatching(
          /^spectrum-link: undoing the run, QEMU of appvm-lynx did not detach NIC (snc\d+) that the run had hot-plugged .*no reply to device_del within 3000 ms.*; the undo went on, so that VMM may still hold it \(README: What an undo leaves\): once it answers, remove it with QMP at .*\/appvm-lynx\.qmp: device_del \{"id":"\1"\}, then, .*netdev_del \{"id":"net-\1"\}; or restart appvm-lynx$/,
        ),
      ]);
      // Undone: no link recorded, no device of ours.
      expect(JSON.parse((await world().link(['list', '--json'])).stdout)).toEqual([]);
      expect([...(await devices(world().host)).keys()].filter((name) => /^sn[bcp]\d+$/.test(name))).toEqual([]);
    } finally {
      await client.close();
      await provider.close();
      await rm(sockets, { recursive: true, force: true });
    }
  });
});

describeNetns('link --keep-going interrupted after its last safe point', () => {
  const world = linkWorldPerSuite('linkintlast');

  it('where the last VM failed meanwhile: says that the signal undid nothing, but that VM was undone alone, then its line; the other VM stays linked, exit 130', async () => {
    const sockets = await mkdtemp(join(tmpdir(), 'spectrum-link-interrupt-last-'));
    trackTempDir(sockets);
    // appvm-lynx, linked last, under a QEMU that answers each hot-plug step after 400 ms and
    // refuses its NIC: the SIGINT comes while it is asked for the NIC, after the last safe point
    // (appvm-catgirl, before it, has no NIC: netns).
    const qemu = await ScriptedQemu.start(join(sockets, 'appvm-lynx.qmp'));
    qemu.deviceAdd = 'refuse';
    qemu.stepDelayMs = 400;
    try {
      const args = ['link', 'appvm-catgirl', 'appvm-lynx', '--keep-going', '--attach', 'netns', '--attach', 'appvm-lynx=qemu', '--qmp-socket', join(sockets, '{vm}.qmp'), '--vmm-timeout', '5000'];
      const run = world().host.spawn(['node', LINK_BIN, ...withWorldOptions(args, world())], { enter: 'nsenter' });
      await eventually('QEMU to be asked for the NIC', async () => qemu.commands.includes('device_add'), 30_000);
      const exit = await run.kill('SIGINT', 30_000);
      await run.waitClosed();
      expect(exit, run.stderr).toEqual({ code: 130, signal: null });
      expect(run.stdout.split('\n').filter((line) => line !== '').map((line) => line.split(' ')[0])).toEqual(['appvm-catgirl']);
      expect(run.stderr.split('\n').filter((line) => line !== '')).toEqual([
        'spectrum-link: link interrupted by SIGINT after it had done its work: the signal undid nothing, but each VM that failed (below) was undone alone, as without it',
        expect.stringMatching(/^spectrum-link: link appvm-lynx failed: QEMU refused to add NIC snc\d+ .*No free slot on bus pcie\.0/),
      ]);
      // appvm-lynx undone (no link recorded, no device of its link), appvm-catgirl linked.
      const listed = JSON.parse((await world().link(['list', '--json'])).stdout) as { vm: string; present: boolean }[];
      expect(listed.map((link) => [link.vm, link.present])).toEqual([['appvm-catgirl', true]]);
    } finally {
      await qemu.close();
      await rm(sockets, { recursive: true, force: true });
    }
  });
});

// unlink and gc wait for the state lock as link does (up to --lock-wait): a signal stops the
// wait, saying so in one line. (Once they hold the lock, a signal ends them as it always did.)
describeNetns('unlink and gc interrupted while they wait for the state lock', () => {
  const world = linkWorldPerSuite('unlinkwait');

  it('unlink: a SIGINT stops the wait: exit 130, one line, nothing taken down', async () => {
    await interruptedWhileWaiting(world, ['unlink', 'appvm-lynx'], 'SIGINT', 130, 'unlink interrupted by SIGINT while waiting for another spectrum-link to finish: nothing was taken down');
  });

  it('unlink: a SIGHUP stops the wait as SIGTERM does: exit 129, one line, nothing taken down', async () => {
    await interruptedWhileWaiting(world, ['unlink', 'appvm-lynx'], 'SIGHUP', 129, 'unlink interrupted by SIGHUP while waiting for another spectrum-link to finish: nothing was taken down');
  });

  it('link: a SIGHUP stops the wait: exit 129, one line, nothing made', async () => {
    await interruptedWhileWaiting(world, ['link', '--all', '--attach', 'netns'], 'SIGHUP', 129, 'link interrupted by SIGHUP while waiting for another spectrum-link to finish: nothing was made');
  });

  it('gc: a SIGTERM stops the wait: exit 143, one line, nothing deleted', async () => {
    await interruptedWhileWaiting(world, ['gc'], 'SIGTERM', 143, 'gc interrupted by SIGTERM while waiting for another spectrum-link to finish: nothing was deleted');
  });

  it('gc of a state dir with no state file, where devices named as links exist (waiting for a first link to write it): a SIGINT stops the wait, said as such (not as under the lock)', async () => {
    await interruptedWhileWaiting(world, ['gc'], 'SIGINT', 130, 'gc interrupted by SIGINT while waiting for another spectrum-link to finish: nothing was deleted', 'removed');
  });
});
