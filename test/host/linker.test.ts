// The linker's sequencing with the kernel adapter (netlink-devices.ts) replaced by a scripted one:
// what the namespace tests cannot make happen, such as an undo step that fails. The state store
// is the real one, but for a switch that makes its next writes fail (the file left as it is).
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { parseAttachChoice } from '../../host/attach-mode.js';
import { readConfigDir } from '../../host/config-reader.js';
import type { DevicePlan, ObservedDevice } from '../../host/device-plan.js';
import { devicePrefix, linkDeviceNames } from '../../host/device-names.js';
import { ID_COUNT, type LinkState, allocateMany, emptyState, isRecordedSocket, parseState, preferredId, serializeState, setAttachments, withDevicePrefix, withNetnsPrefix } from '../../host/link-state.js';
import type { PlanMade } from '../../host/netlink-devices.js';
import { StateStoreError, loadState, saveState, withStateLock } from '../../host/state-store.js';
import { recordedPrefixesOf } from '../../host/state-prefix.js';
import { CliError, EXIT, runCli } from '../../shared/cli/run-cli.js';
import { leftDownLine, linkCommands, linkProgressLine, unlinkProgressLine } from '../../host/link-commands.js';
import { isLinkUsageError } from '../../host/exit-codes.js';
import { linkAllKeepGoing, linkVmsKeepGoing } from '../../host/link-keep-going.js';
import { collectGarbage, unlinkVm } from '../../host/link-take-down.js';
import { linkAll, linkVms } from '../../host/linker.js';
import type { LinkerError } from '../../host/linker-error.js';
import type { KeepGoingOutcome, LeftDownLink, LinkProgressEvent, LinkReport, LinkerOptions, UndoStateWriteFailure, UndoStepFailure, VmmDetachFailure, VmmPort } from '../../host/linker-types.js';
import type { ClientId } from '../../shared/client-id.js';
import { type VmName, vmName } from '../../host/vm-name.js';
import { jsonErrorOf, printedChecked, splitJsonError } from '../harness/json-error.js';

/** What a line says itself: its length up to the commands it gives (`, run `), less what it shows (paths, a VMM's reason). */
const ownLength = (message: string, ...shown: string[]): number => shown.reduce((length, text) => length - text.length, (message.split(', run ')[0] ?? '').length);
/** The README's text under the heading `#### <heading>`, up to the next heading. */
async function readmeSection(heading: string): Promise<string> {
  const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
  return readme.split(new RegExp(`^#### ${heading}$`, 'm'))[1]?.split(/^#/m)[0] ?? '';
}

/**
 * The scripted kernel: the host devices it reports; a plan creating one of `refused` fails; the
 * next `undoFailures` undos throw; an undo (of a plan, or of VMs) leaves the devices of `kept`
 * it is to delete, and the namespaces of `keptNamespaces`; `whileApplying` runs as a plan is
 * carried out.
 */
const kernel = vi.hoisted(() => ({
  host: new Map<string, ObservedDevice>(),
  refused: new Set<string>(),
  undoFailures: 0,
  kept: new Set<string>(),
  keptNamespaces: new Set<string>(),
  undone: 0,
  /** The plans undone, in order. */
  undonePlans: [] as DevicePlan[],
  /** What each undone plan was told it made (undoDevicePlan's second argument), in order: its devices. */
  undoneMade: [] as (ReadonlySet<string> | undefined)[],
  /** And its namespaces. */
  undoneMadeNamespaces: [] as (ReadonlySet<string> | undefined)[],
  /** VM namespaces someone else makes between a plan's look and its `ip netns add`: applyDevicePlan does not make them. */
  foreignNamespaces: new Set<string>(),
  /** Host devices something else deletes between a plan's look and its delete steps: applyDevicePlan finds those gone (made.vanished). */
  vanished: new Set<string>(),
  /** The namespaces deleteNamespaces was asked to delete (the undo of VMs of a --keep-going run), in order. */
  deletedNamespaces: [] as string[],
  /** Device queries so far (one per chunk of VMs). */
  observed: 0,
  /** Of those, listings of every device of the namespace (no names given). */
  wholeListings: 0,
  /** The devices removeDevices was asked to delete (unlink, link taking down a dropped provider), in order. */
  removed: [] as string[],
  /** Where set, removeDevices fails with it before deleting anything (a lookup the kernel refused). */
  lookupRefused: undefined as string | undefined,
  /** Where set, a listing of every device (list, show, link --all's left links) fails with it. */
  listingRefused: undefined as string | undefined,
  /** A query of named devices that names one of these fails, as the kernel's refusal. */
  unlistable: new Set<string>(),
  /** Where set, a query of named devices that names `device` throws `error` (a bug in the lookup). */
  lookupBug: undefined as { device: string; error: Error; once?: boolean; first?: () => void } | undefined,
  /**
   * Where set, the next undo (of a plan, or of VMs of a --keep-going run) throws it as it is called:
   * a bug in that undo, not the kernel's refusal (which the adapter returns as devices left).
   */
  undoBug: undefined as Error | undefined,
  whileApplying: (): void | Promise<void> => undefined,
  /** The plans applyDevicePlan was given, in order. */
  applied: [] as DevicePlan[],
  /** Where set, a plan that only puts MTUs back fails with it. */
  mtuRestoreRefused: undefined as string | undefined,
  /** Runs as removeDevices deletes devices (unlink, link taking down a provider dropped). */
  whileRemoving: (): void => undefined,
}));

/**
 * Reads of a whole config dir (readConfigDir, as link --all makes them) and of VMs named
 * (readConfigVms), counted; each as the real one. `afterRead`, where set, runs once after the
 * next read of either (what another run does meanwhile), then is cleared.
 */
const configReads = vi.hoisted(() => ({ whole: 0, named: 0, afterRead: undefined as (() => Promise<void>) | undefined }));

vi.mock('../../host/config-reader.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../host/config-reader.js')>();
  const after = async (): Promise<void> => {
    const hook = configReads.afterRead;
    configReads.afterRead = undefined;
    await hook?.();
  };
  return {
    ...real,
    readConfigDir: async (...args: Parameters<typeof real.readConfigDir>) => {
      configReads.whole += 1;
      const snapshot = await real.readConfigDir(...args);
      await after();
      return snapshot;
    },
    readConfigVms: async (...args: Parameters<typeof real.readConfigVms>) => {
      configReads.named += 1;
      const snapshot = await real.readConfigVms(...args);
      await after();
      return snapshot;
    },
  };
});

/**
 * The next `failSaves` state writes fail as a full disk makes them fail: the file keeps what it
 * held. The next `failSyncs` replace the file but fail to sync its directory. A probe of a write
 * (the check before a take-down) counts as a write here: `passSaves`, `failSaves` and `failSyncs`
 * apply to it as to a save. `saves`: the state files really written. `thrown`, where set, is
 * what the next write or probe throws instead (once): an error not of the store's.
 */
const store = vi.hoisted(() => ({ failSaves: 0, failSyncs: 0, passSaves: 0, saves: 0, thrown: undefined as Error | undefined }));

/** Throw `store.thrown` where set (once). */
const throwStoreThrown = vi.hoisted(() => (): void => {
  const thrown = store.thrown;
  store.thrown = undefined;
  if (thrown !== undefined) throw thrown;
});

vi.mock('../../host/state-store.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../host/state-store.js')>();
  return {
    ...real,
    saveState: async (dir: string, state: LinkState) => {
      throwStoreThrown();
      // `passSaves` saves go through before `failSaves` and `failSyncs` apply.
      if (store.passSaves > 0) {
        store.passSaves -= 1;
        store.saves += 1;
        await real.saveState(dir, state);
        return;
      }
      if (store.failSaves > 0) {
        store.failSaves -= 1;
        throw new real.StateStoreError('write-failed', `cannot write state file ${real.stateFilePath(dir)} (ENOSPC); check the state dir's permissions and free space`, 'ENOSPC');
      }
      store.saves += 1;
      await real.saveState(dir, state);
      if (store.failSyncs > 0) {
        store.failSyncs -= 1;
        throw new real.StateStoreError('sync-failed', `wrote ${real.stateFilePath(dir)} but could not sync ${dir} (EIO); the change may not survive a crash`, 'EIO');
      }
    },
    probeStateWrite: async (dir: string) => {
      throwStoreThrown();
      if (store.passSaves > 0) {
        store.passSaves -= 1;
        await real.probeStateWrite(dir);
        return;
      }
      if (store.failSaves > 0) {
        store.failSaves -= 1;
        throw new real.StateStoreError('write-failed', `cannot write state file ${real.stateFilePath(dir)} (ENOSPC); check the state dir's permissions and free space`, 'ENOSPC');
      }
      await real.probeStateWrite(dir);
      if (store.failSyncs > 0) {
        store.failSyncs -= 1;
        throw new real.StateStoreError('sync-failed', `cannot sync state dir ${dir} (EIO), so a state saved there may not survive a crash`, 'EIO');
      }
    },
  };
});

/**
 * Where `fail` is set (an errno name), the state lock's next unlock throws it, the real unlock done
 * first, as a file system whose flock(2) fails would: the release of the lock fails.
 */
const lockRelease = vi.hoisted(() => ({ fail: undefined as string | undefined, whileUnlocking: undefined as (() => void) | undefined }));

vi.mock('../../shared/native-addon.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../shared/native-addon.js')>();
  type LockAddon = { tryLock(fd: number): boolean; unlock(fd: number): void };
  return {
    loadNativeAddon: <T>(fromUrl: string, file: string): T | undefined => {
      const addon = real.loadNativeAddon<T>(fromUrl, file);
      if (file !== 'state_lock.node' || addon === undefined) return addon;
      const lock = addon as LockAddon;
      const failing: LockAddon = {
        tryLock: (fd) => lock.tryLock(fd),
        unlock: (fd) => {
          lock.unlock(fd);
          lockRelease.whileUnlocking?.();
          lockRelease.whileUnlocking = undefined;
          const code = lockRelease.fail;
          lockRelease.fail = undefined;
          if (code !== undefined) throw Object.assign(new Error(`flock: ${code}`), { code });
        },
      };
      return failing as T;
    },
  };
});

/**
 * What the bin logs at `warn` (its warnings), the messages in order: captured here, as the real
 * logger writes to fd 2, past process.stderr.write; the level as the real one picks it.
 */
const logged = vi.hoisted(() => ({ warnings: [] as string[] }));

vi.mock('../../shared/log.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../shared/log.js')>();
  const { pino } = await import('pino');
  const capture = {
    write: (line: string): void => {
      const record = JSON.parse(line) as { level: number; msg: string };
      if (record.level === pino.levels.values['warn']) logged.warnings.push(record.msg);
    },
  };
  return { ...real, createLogger: (name: string) => pino({ name, level: real.logLevel('warn') }, capture) };
});

/** What the scripted kernel's undo of these devices and namespaces leaves. */
const leftOf = vi.hoisted(() => (devices: readonly string[], namespaces: readonly string[]) => {
  const kept = devices.filter((device) => kernel.kept.has(device));
  return {
    kept: [] as string[],
    ...(kept.length > 0 && { left: { devices: kept, error: `removing device ${kept[0]} failed: Device or resource busy` } }),
    namespaces: namespaces.filter((netns) => kernel.keptNamespaces.has(netns)).map((netns) => ({ netns, error: `Cannot remove namespace file "/run/netns/${netns}": Device or resource busy` })),
  };
});

/** Throw `kernel.undoBug` where set (once). */
const throwUndoBug = vi.hoisted(() => (): void => {
  const bug = kernel.undoBug;
  kernel.undoBug = undefined;
  if (bug !== undefined) throw bug;
});

/** The scripted kernel's undo of a plan (undoDevicePlan), once it is called. */
const undoPlan = vi.hoisted(() => async (plan: DevicePlan, made?: PlanMade) => {
  kernel.undone += 1;
  kernel.undonePlans.push(plan);
  kernel.undoneMade.push(made === undefined ? undefined : new Set(made.devices));
  kernel.undoneMadeNamespaces.push(made === undefined ? undefined : new Set(made.namespaces));
  if (kernel.undoFailures > 0) {
    kernel.undoFailures -= 1;
    throw Object.assign(new Error('the undo failed part-way'), { kind: 'netlink' });
  }
  return leftOf(plan.creates, plan.createNamespaces);
});

vi.mock('../../host/netlink-devices.js', () => ({
  newPlanMade: (): PlanMade => ({ devices: new Set(), namespaces: new Set(), vanished: new Set(), heldDisabled: new Set() }),
  // Every VM namespace counts as there: the check that one added would outlive the run (under
  // ip netns exec it would not) reads the host's mounts, not this fake's; tested on its own.
  namespaceMounted: (): boolean => true,
  observeDevices: async (_netns: Iterable<string>, only?: readonly string[]) => {
    if (only === undefined && kernel.listingRefused !== undefined) throw Object.assign(new Error(kernel.listingRefused), { name: 'DeviceError', kind: 'query-failed' });
    const unlisted = only?.find((name) => kernel.unlistable.has(name));
    if (unlisted !== undefined) throw Object.assign(new Error(`listing devices failed: ${unlisted}: No buffer space available`), { name: 'DeviceError', kind: 'query-failed' });
    // (`once`: only the first such query; `first` runs before it throws.)
    const lookupBug = kernel.lookupBug;
    if (lookupBug !== undefined && only?.includes(lookupBug.device) === true) {
      if (lookupBug.once === true) kernel.lookupBug = undefined;
      lookupBug.first?.();
      throw lookupBug.error;
    }
    kernel.observed += 1;
    if (only === undefined) kernel.wholeListings += 1;
    return { ipv6: false, ipv6Forwarding: false, host: kernel.host, netns: new Map(), netnsIds: new Map() };
  },
  applyDevicePlan: async (plan: DevicePlan, made?: PlanMade) => {
    kernel.applied.push(plan);
    // A plan that only puts MTUs back (an undo's), refused where told.
    if (kernel.mtuRestoreRefused !== undefined && plan.creates.length === 0 && plan.hostSteps.flat().every((step) => step.op === 'set' && step.change.mtu !== undefined)) throw new Error(kernel.mtuRestoreRefused);
    await kernel.whileApplying();
    // Namespaces first, but for those someone else made meanwhile; then devices, in order up to the first refused.
    for (const netns of plan.createNamespaces) if (!kernel.foreignNamespaces.has(netns)) made?.namespaces.add(netns);
    for (const step of plan.hostSteps.flat()) if (step.op === 'delete' && kernel.vanished.has(step.name)) made?.vanished.add(step.name);
    for (const device of plan.creates) {
      if (kernel.refused.has(device)) break;
      made?.devices.add(device);
    }
    const refused = plan.creates.find((device) => kernel.refused.has(device));
    if (refused !== undefined) throw Object.assign(new Error(`ip link add ${refused} type bridge failed: File exists`), { kind: 'step-failed' });
  },
  undoDevicePlan: (plan: DevicePlan, made?: PlanMade) => {
    throwUndoBug();
    return undoPlan(plan, made);
  },
  undoDevices: (names: readonly string[]) => {
    throwUndoBug();
    return Promise.resolve(leftOf(names, []));
  },
  removeDevices: async (names: readonly string[]) => {
    if (kernel.lookupRefused !== undefined) throw Object.assign(new Error(kernel.lookupRefused), { name: 'DeviceError', kind: 'query-failed', removed: [] });
    kernel.whileRemoving();
    kernel.removed.push(...names);
    const { left } = leftOf(names, []);
    const removed = names.flatMap((name) => (kernel.host.has(name) && !kernel.kept.has(name) ? [{ name, kind: kernel.host.get(name)?.kind ?? null }] : []));
    // As the real one: the deletions after a refused one are tried too, and what went is said with
    // the failure, as are the devices it found to delete.
    const found = names.filter((name) => kernel.host.has(name));
    if (left !== undefined) throw Object.assign(new Error(left.error), { name: 'DeviceError', kind: 'step-failed', removed, found });
    return { kept: [], removed };
  },
  deleteNamespaces: async (names: readonly string[]) => {
    kernel.deletedNamespaces.push(...names);
    return leftOf([], names).namespaces;
  },
}));

const NO_VMM: VmmPort = { attach: async () => true, detach: async () => undefined };
const PREFIX = devicePrefix('sn');
const CLIENTS = ['c1', 'c2', 'c3'].map(vmName);
const NETVM = vmName('netvm');

let configDir: string;
let stateDir: string;
/** What link says after a SIGINT where a bug stopped the run before it had linked any VM. */
const BUG_STOPPED_AT_SIGINT = 'spectrum-link: link interrupted by SIGINT as a bug stopped it (above): what it had made for the VMs it did not link (devices, ids) may be left over: run it again, and it converges';
beforeEach(async () => {
  configDir = await mkdtemp(join(tmpdir(), 'spectrum-config-'));
  stateDir = await mkdtemp(join(tmpdir(), 'spectrum-state-'));
  for (const vm of [NETVM, ...CLIENTS]) {
    await mkdir(join(configDir, vm, 'blk'), { recursive: true });
    await writeFile(join(configDir, vm, 'vmlinux'), '');
    await writeFile(join(configDir, vm, 'blk', 'root.img'), '');
  }
  for (const vm of CLIENTS) {
    await mkdir(join(configDir, vm, 'providers', 'net'), { recursive: true });
    await writeFile(join(configDir, vm, 'providers', 'net', NETVM), '');
  }
  kernel.host = new Map();
  kernel.refused.clear();
  kernel.undoFailures = 0;
  kernel.kept.clear();
  kernel.keptNamespaces.clear();
  kernel.undone = 0;
  kernel.undonePlans = [];
  kernel.undoneMade = [];
  kernel.undoneMadeNamespaces = [];
  kernel.foreignNamespaces.clear();
  kernel.vanished.clear();
  kernel.deletedNamespaces = [];
  kernel.observed = 0;
  kernel.wholeListings = 0;
  kernel.removed = [];
  kernel.lookupRefused = undefined;
  kernel.listingRefused = undefined;
  kernel.unlistable.clear();
  kernel.lookupBug = undefined;
  kernel.undoBug = undefined;
  lockRelease.fail = undefined;
  lockRelease.whileUnlocking = undefined;
  kernel.whileApplying = () => undefined;
  kernel.applied = [];
  kernel.mtuRestoreRefused = undefined;
  kernel.whileRemoving = () => undefined;
  configReads.afterRead = undefined;
  store.failSaves = 0;
  store.thrown = undefined;
  store.failSyncs = 0;
  store.passSaves = 0;
  store.saves = 0;
  logged.warnings = [];
});
afterEach(async () => {
  await rm(configDir, { recursive: true, force: true });
  await rm(stateDir, { recursive: true, force: true });
});

const options = (): LinkerOptions => ({ configDir, stateDir, devicePrefix: PREFIX, netnsPrefix: '', mtu: 1500, attach: parseAttachChoice(['none']), vmm: NO_VMM });

/**
 * `spectrum-link link ARGS` as the bin runs it (runCli), over the scripted kernel, with the config
 * and state dirs of `options()` (`stateDir` in their place where given), `--attach none` (or
 * `attach`'s, each an --attach) and no VMM (or `vmm`): its exit code, stdout, and stderr's lines.
 */
async function linkCli(args: readonly string[], state = stateDir, { vmm = NO_VMM, attach = ['none'] }: { vmm?: VmmPort; attach?: readonly string[] } = {}): Promise<{ code: number; stdout: string; stderr: string[] }> {
  let stdout = '';
  let stderr = '';
  const out = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => ((stdout += String(chunk)), true));
  const err = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((stderr += String(chunk)), true));
  try {
    const program = new Command('spectrum-link');
    for (const command of linkCommands({}, () => vmm)) program.addCommand(command);
    const attaching = attach.flatMap((value) => ['--attach', value]);
    const code = await runCli(program, ['link', '--config-dir', configDir, '--state-dir', state, '--device-prefix', 'sn', ...attaching, ...args]);
    const lines = stderr.split('\n').filter((line) => line !== '');
    // What it printed: a --json failure's error object (json-errors.test.ts) checked and left off.
    return { code, stdout: printedChecked(stdout, code, lines), stderr: lines };
  } finally {
    out.mockRestore();
    err.mockRestore();
  }
}

describe('a state lock not released as it should be (its unlock failing: EIO)', () => {
  const [c1] = CLIENTS as [VmName];
  const released = (): string =>
    `the lock of state dir ${stateDir} was not released as it should be: unlocking it failed (EIO), so closing its descriptor released it; check the state dir's file system (spectrum-link needs flock(2) on it)`;

  it("after link failed: the failure stays the error (its exit code), the release's a line after it", async () => {
    const id = allocateMany(emptyState(), [{ client: c1, provider: NETVM }]).links[0]!.id;
    kernel.refused.add(linkDeviceNames(PREFIX, id).bridge);
    lockRelease.fail = 'EIO';
    const run = await linkCli([c1]);
    expect({ code: run.code, stdout: run.stdout, stderr: run.stderr }).toEqual({
      code: 1,
      stdout: '',
      stderr: [expect.stringMatching(/^spectrum-link: ip link add snb\S+ type bridge failed: File exists$/), `spectrum-link: ${released()}`],
    });
  });

  it.each([false, true])('after link succeeded (--json: %s): what it linked is printed (it is linked and recorded), then the release\'s line; exit 1', async (json) => {
    lockRelease.fail = 'EIO';
    const run = await linkCli([...(json ? ['--json'] : []), c1]);
    const { id } = (await loadState(stateDir)).links[0]!;
    const linked = json ? expect.stringMatching(new RegExp(`^\\{"vm":"c1","links":\\[\\{"vm":"c1","provider":"netvm","id":${id},`)) : expect.stringMatching(new RegExp(`^c1 -> netvm  id ${id} `));
    expect({ code: run.code, stdout: run.stdout.split('\n').filter((line) => line !== '' && !line.startsWith(' ')), stderr: run.stderr }).toEqual({ code: 1, stdout: [linked], stderr: [`spectrum-link: ${released()}`] });
    expect((await loadState(stateDir)).links.map((link) => [link.client, link.provider, link.attached])).toEqual([[c1, NETVM, { client: 'none', provider: 'none' }]]);
  });

  it('after link --keep-going succeeded but for a VM failed by bad input: the VMs linked printed, that VM\'s line, then the release\'s; exit 2 (bad input outranks it)', async () => {
    const c0 = vmName('c0');
    await addVm(c0, [NETVM]);
    const vmm: VmmPort = {
      ...NO_VMM,
      checkSocket: (kind, vm) => {
        if (vm === c0) throw new CliError(`--qmp-socket gives VM ${vm} a socket path too long (${kind})`, EXIT.usage);
      },
    };
    lockRelease.fail = 'EIO';
    const run = await linkCli(['--keep-going', c0, c1], stateDir, { vmm, attach: ['none', 'c0=qemu'] });
    expect({ code: run.code, stdout: run.stdout.split('\n').filter((line) => line !== '' && !line.startsWith(' ')), stderr: run.stderr }).toEqual({
      code: 2,
      stdout: [expect.stringMatching(/^c1 -> netvm  id /)],
      stderr: ['spectrum-link: link c0 failed: --qmp-socket gives VM c0 a socket path too long (qemu)', `spectrum-link: ${released()}`],
    });
  });

  it('after link succeeded, a signal having come after its last safe point: said as such a signal is (nothing undone), then the release\'s line; exit 130', async () => {
    lockRelease.fail = 'EIO';
    lockRelease.whileUnlocking = () => void process.emit('SIGINT', 'SIGINT');
    const run = await linkCli([c1]);
    expect({ code: run.code, stdout: run.stdout.split('\n').filter((line) => line !== '' && !line.startsWith(' ')), stderr: run.stderr }).toEqual({
      code: 130,
      stdout: [expect.stringMatching(/^c1 -> netvm  id /)],
      stderr: ['spectrum-link: link interrupted by SIGINT after it had done its work: nothing was undone', `spectrum-link: ${released()}`],
    });
  });

  /** `spectrum-link ARGS` as the bin runs it (runCli): its exit code, stdout, and stderr's lines. */
  const cli = async (args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string[] }> => {
    let stdout = '';
    let stderr = '';
    const out = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => ((stdout += String(chunk)), true));
    const err = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((stderr += String(chunk)), true));
    try {
      const program = new Command('spectrum-link');
      for (const command of linkCommands({}, () => NO_VMM)) program.addCommand(command);
      const code = await runCli(program, args);
      const lines = stderr.split('\n').filter((line) => line !== '');
      return { code, stdout: printedChecked(stdout, code, lines), stderr: lines };
    } finally {
      out.mockRestore();
      err.mockRestore();
    }
  };

  it('after unlink succeeded: what it took down is printed (it is, and recorded so), then the release\'s line; exit 1', async () => {
    await linkVms([c1], options());
    const { id } = (await loadState(stateDir)).links[0]!;
    lockRelease.fail = 'EIO';
    const run = await cli(['unlink', '--state-dir', stateDir, '--device-prefix', 'sn', c1]);
    expect(run).toEqual({ code: 1, stdout: `unlinked c1 -> netvm (id ${id}, kept)\n`, stderr: [`spectrum-link: ${released()}`] });
    expect((await loadState(stateDir)).links.map((link) => link.attached)).toEqual([undefined]);
  });

  it('after gc succeeded: what it deleted is printed (--json too), then the release\'s line; exit 1', async () => {
    // A state that claims the prefix (one that claims none refuses to delete devices named with it).
    await writeFile(join(stateDir, 'links.json'), serializeState(withDevicePrefix(emptyState(), PREFIX)));
    kernel.host = new Map([['snb7', { name: 'snb7', kind: 'bridge' } as ObservedDevice]]);
    lockRelease.fail = 'EIO';
    const run = await cli(['gc', '--state-dir', stateDir, '--device-prefix', 'sn', '--json']);
    expect(run).toEqual({ code: 1, stdout: '{"removed":["snb7"]}\n', stderr: [`spectrum-link: ${released()}`] });
  });

  it("after unlink failed: the failure stays the error, its line first (as link's), the release's a line after it", async () => {
    await writeFile(join(stateDir, 'links.json'), serializeState(emptyState()));
    lockRelease.fail = 'EIO';
    let stderr = '';
    const err = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((stderr += String(chunk)), true));
    let code: number;
    try {
      const program = new Command('spectrum-link');
      for (const command of linkCommands({}, () => NO_VMM)) program.addCommand(command);
      code = await runCli(program, ['unlink', '--state-dir', stateDir, '--device-prefix', 'sn', c1]);
    } finally {
      err.mockRestore();
    }
    expect({ code, stderr: stderr.split('\n').filter((line) => line !== '') }).toEqual({
      code: 1,
      stderr: [expect.stringMatching(/^spectrum-link: c1 has no recorded links in /), `spectrum-link: ${released()}`],
    });
  });

  it("after gc failed (its state file corrupt): the failure's line first, then the release's", async () => {
    await writeFile(join(stateDir, 'links.json'), '{"version": 2, "links": [');
    lockRelease.fail = 'EIO';
    const run = await cli(['gc', '--state-dir', stateDir, '--device-prefix', 'sn', '--json']);
    expect(run).toEqual({ code: 1, stdout: '', stderr: [expect.stringMatching(/^spectrum-link: gc: state file \S+ is not valid JSON /), `spectrum-link: ${released()}`] });
  });
});

describe('link into a state dir that claims no device prefix, where devices named as links with it exist', () => {
  const foreign = (name: string, kind = 'bridge'): [string, ObservedDevice] => [name, { index: 9, name, kind, master: null, mtu: 1500, up: true, mac: '02:00:00:00:00:09', ipv6: false, ipv6LinkLocal: false, ipv6Forwarding: false }];
  const stateFile = (): string => join(stateDir, 'links.json');

  it.each([
    ['no state file', undefined],
    ['a version 1 file with no link', '{"version":1,"links":[]}'],
    ['a version 2 file with no link and no prefix', serializeState(emptyState())],
  ])('%s: refused before anything is made or recorded (plain, --keep-going; named VMs and --all), bad input', async (_what, file) => {
    if (file !== undefined) await writeFile(stateFile(), file);
    // Another state dir's link's devices, under an id none of the run's links gets, of any kind.
    kernel.host = new Map([foreign('snp77', 'tun'), foreign('snb77'), foreign('snc77', 'veth'), foreign('snx1'), foreign('zzb5')]);
    for (const run of [() => linkVms(CLIENTS, options()), () => linkVmsKeepGoing(CLIENTS, options()), () => linkAll(options()), () => linkAllKeepGoing(options())]) {
      const error = await run().catch((caught: unknown) => caught);
      expect(error).toMatchObject({ name: 'LinkerError', kind: 'unrecorded-devices', message: expect.stringContaining('yet 3 link devices with prefix sn (given) are here: snb77 snc77 snp77: nothing made') });
      expect(isLinkUsageError(error)).toBe(true);
      expect(store.saves).toBe(0);
      expect(kernel.undone).toBe(0);
      if (file === undefined) expect(existsSync(stateFile())).toBe(false);
      else expect(await readFile(stateFile(), 'utf8')).toBe(file);
    }
  });

  it('a state dir not made yet is refused before the lock makes it', async () => {
    const missing = join(stateDir, 'mistyped');
    kernel.host = new Map([foreign('snb77')]);
    for (const run of [() => linkVms(CLIENTS, { ...options(), stateDir: missing }), () => linkVmsKeepGoing(CLIENTS, { ...options(), stateDir: missing })]) {
      await expect(run()).rejects.toMatchObject({ kind: 'unrecorded-devices', message: expect.stringMatching(/^state dir \S+mistyped records no link, yet 1 link device with prefix sn \(given\) is here: snb77: /) });
      expect(existsSync(missing)).toBe(false);
    }
    // None there: linked, the namespace listed before the lock makes the dir and again under it.
    kernel.host = new Map();
    kernel.wholeListings = 0;
    await linkVms(CLIENTS, { ...options(), stateDir: missing });
    expect(kernel.wholeListings).toBe(2);
    expect((await loadState(missing)).links).toHaveLength(CLIENTS.length);
  });

  it('none there: linked, the namespace listed once; from then on (the prefix recorded, with links or every one forgotten) never listed whole, and its leftovers under new ids taken as its own', async () => {
    await linkVms([CLIENTS[0]!], options());
    expect(kernel.wholeListings).toBe(1);
    expect((await loadState(stateDir)).devicePrefix).toBe(PREFIX);
    // A leftover of this state's (an id it does not record): converged on, not refused.
    const c2Id = allocateMany(await loadState(stateDir), [{ client: CLIENTS[1]!, provider: NETVM }]).links[0]!.id;
    kernel.host = new Map([foreign(linkDeviceNames(PREFIX, c2Id).bridge)]);
    await linkVms(CLIENTS, options());
    await linkVmsKeepGoing(CLIENTS, options());
    await linkAll(options());
    expect(kernel.wholeListings).toBe(1);
    for (const vm of CLIENTS) await unlinkVm(vm, { forget: true, force: false }, options());
    expect(await loadState(stateDir)).toEqual(withDevicePrefix(emptyState(), PREFIX));
    await linkVms(CLIENTS, options());
    expect(kernel.wholeListings).toBe(1);
  });

  it.each([
    ['linkVms', (run: LinkerOptions) => linkVms(CLIENTS, run)],
    ['linkVmsKeepGoing', (run: LinkerOptions) => linkVmsKeepGoing(CLIENTS, run)],
  ] as const)('%s: a state dir not made yet that another run makes and links into meanwhile (VMs starting together at a first boot) is not refused over that run\'s devices', async (_name, link) => {
    const fresh = join(stateDir, 'fresh');
    const [c1] = CLIENTS as [VmName];
    const other = withDevicePrefix(allocateMany(emptyState(), [{ client: c1, provider: NETVM }]).state, PREFIX);
    const c1Devices = Object.values(linkDeviceNames(PREFIX, other.links[0]!.id));
    // Once this run has read its config (before the lock: no state dir), the other run records c1's link, then makes its devices.
    configReads.afterRead = async () => {
      await mkdir(fresh);
      await saveState(fresh, other);
      kernel.host = new Map(c1Devices.map((name, index) => [name, { index: 20 + index, name, kind: index === 0 ? 'bridge' : 'tun', master: null, mtu: 1500, up: true, mac: '02:00:00:00:00:09', ipv6: false, ipv6LinkLocal: false, ipv6Forwarding: false }]));
    };
    const outcome = await link({ ...options(), stateDir: fresh });
    expect([...outcome.linked.keys()]).toEqual(CLIENTS);
    expect((await loadState(fresh)).links.map((recorded) => [recorded.client, recorded.id])).toEqual(expect.arrayContaining([[c1, other.links[0]!.id]]));
    expect((await loadState(fresh)).links).toHaveLength(CLIENTS.length);
  });

  it('a first link that fails and is undone whole leaves the state claiming no prefix, as it found it: a retry with a corrected --device-prefix links (plain, --keep-going)', async () => {
    const typo = devicePrefix('xx');
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    for (const id of ids) kernel.refused.add(linkDeviceNames(typo, id).bridge);
    await expect(linkVms(CLIENTS, { ...options(), devicePrefix: typo })).rejects.toThrow(/File exists$/);
    expect(store.saves).toBeGreaterThan(0); // its ids were recorded (under the prefix), then taken back
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(serializeState(emptyState()));
    const kept = await linkVmsKeepGoing(CLIENTS, { ...options(), devicePrefix: typo });
    expect(kept.failed.map(({ vm }) => vm)).toEqual(CLIENTS);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(serializeState(emptyState()));
    // Undone VM by VM as their NICs fail to hot-plug (every one): the same.
    const refusing: VmmPort = { ...NO_VMM, attach: async (_kind, vm) => Promise.reject(new Error(`QEMU of ${vm} refused device_add`)) };
    kernel.refused.clear();
    const unplugged = await linkVmsKeepGoing(CLIENTS, { ...options(), devicePrefix: typo, attach: parseAttachChoice(['none', 'netvm=qemu']), vmm: refusing });
    expect(unplugged.failed.map(({ vm }) => vm)).toEqual(CLIENTS);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(serializeState(emptyState()));
    const retried = await linkVms(CLIENTS, options());
    expect([...retried.linked.keys()]).toEqual(CLIENTS);
    expect(await loadState(stateDir)).toEqual(expect.objectContaining({ devicePrefix: PREFIX, links: CLIENTS.map((client) => expect.objectContaining({ client })) }));
  });

  it('a run given no prefix that took the one such a failing first link had recorded (the CLI read it then) is refused once that link is undone, not recording it again (plain, --keep-going, --all), bad input; one that took the default goes on', async () => {
    const typo = devicePrefix('xx');
    const [c1, c2] = CLIENTS as [VmName, VmName];
    /** The failing run's ids recorded under `prefix`, read as the CLI of a run given none reads them before the lock (it then waits for the lock), then that run undone whole: the state claims no prefix, as it was. */
    const takenThenUndone = async (prefix: typeof typo): Promise<LinkerOptions> => {
      await saveState(stateDir, allocateMany(withDevicePrefix(emptyState(), prefix), [{ client: c1, provider: NETVM }]).state);
      const taken = (await recordedPrefixesOf(stateDir)).devicePrefix;
      expect(taken).toBe(prefix);
      await saveState(stateDir, emptyState());
      store.saves = 0;
      return { ...options(), devicePrefix: taken ?? PREFIX, devicePrefixSource: { from: 'state', otherwise: PREFIX } };
    };
    const fromState = await takenThenUndone(typo);
    const text = serializeState(emptyState());
    for (const run of [() => linkVms([c2], fromState), () => linkVmsKeepGoing([c2], fromState), () => linkAll(fromState), () => linkAllKeepGoing(fromState)]) {
      const error = await run().catch((caught: unknown) => caught);
      expect(error).toMatchObject({ name: 'LinkerError', kind: 'device-prefix-mismatch', message: expect.stringMatching(/^device prefix xx \(recorded when this run began\) is no longer recorded in state file .*: nothing done; run this again, which uses sn \(README: Device prefix\)$/) });
      expect(isLinkUsageError(error)).toBe(true);
      expect(store.saves).toBe(0);
      expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
    }
    // Run again (the CLI reads no prefix now: the default), and the failed link's retry with the prefix corrected: both linked.
    expect((await recordedPrefixesOf(stateDir)).devicePrefix).toBeUndefined();
    await linkVms([c2], options());
    await linkVms([c1], options());
    expect(await loadState(stateDir)).toEqual(expect.objectContaining({ devicePrefix: PREFIX, links: expect.arrayContaining([expect.objectContaining({ client: c1 }), expect.objectContaining({ client: c2 })]) }));
    // The failing run's prefix the default, as the run's would be (VMs starting together at a first boot, one failing): it goes on.
    await rm(join(stateDir, 'links.json'));
    const linked = await linkVmsKeepGoing([c2], await takenThenUndone(PREFIX));
    expect([...linked.linked.keys()]).toEqual([c2]);
    expect(await loadState(stateDir)).toEqual(expect.objectContaining({ devicePrefix: PREFIX, links: [expect.objectContaining({ client: c2 })] }));
  });
});

describe('a failed link whose run had changed the MTU of a link that was up', () => {
  it.each([
    ['linkVms', (run: LinkerOptions) => linkVms([CLIENTS[0]!], run).then(() => 'linked')],
    ['linkVmsKeepGoing (undone VM by VM)', (run: LinkerOptions) => linkVmsKeepGoing([CLIENTS[0]!], run).then((outcome) => outcome.failed.map(({ vm }) => vm).join())],
  ] as const)('%s: its undo puts back the MTU each of that link\'s devices had, by the index it saw, as its record goes back', async (_name, link) => {
    const [c1] = CLIENTS as [VmName];
    const recorded = withDevicePrefix(setAttachments(allocateMany(emptyState(), [{ client: c1, provider: NETVM }]).state, [{ pair: { client: c1, provider: NETVM }, attached: { client: 'qemu', provider: 'none' } }]), PREFIX);
    await saveState(stateDir, recorded);
    const stateBefore = await readFile(join(stateDir, 'links.json'), 'utf8');
    const names = linkDeviceNames(PREFIX, recorded.links[0]!.id);
    const up = (name: string, index: number, kind: string): [string, ObservedDevice] => [name, { index, name, kind, master: kind === 'bridge' ? null : names.bridge, mtu: 1500, up: true, mac: '02:00:00:00:00:09', ipv6: false, ipv6LinkLocal: false, ipv6Forwarding: false }];
    kernel.host = new Map([up(names.bridge, 31, 'bridge'), up(names.client, 32, 'tun'), up(names.provider, 33, 'tun')]);
    // Its QEMU refuses the NIC once the devices have the run's MTU (a VMM that cannot say which MTU its NIC has).
    const refusing: VmmPort = { ...NO_VMM, attach: async (_kind, vm) => Promise.reject(Object.assign(new Error(`QEMU of ${vm} refused device_add`), { kind: 'command-failed' })) };
    const run = { ...options(), mtu: 9000, attach: parseAttachChoice(['none', 'c1=qemu']), vmm: refusing };
    await link(run).then(
      (result) => expect(result).toBe('c1'),
      (error: unknown) => expect(error).toMatchObject({ message: 'QEMU of c1 refused device_add' }),
    );
    const setMtus = (plan: DevicePlan): [string, number | undefined, number | undefined][] =>
      plan.hostSteps.flat().flatMap((step) => (step.op === 'set' && step.change.mtu !== undefined ? [[step.name, step.index, step.change.mtu] as [string, number | undefined, number | undefined]] : []));
    expect(kernel.applied.map(setMtus)).toEqual([
      [[names.client, 32, 9000], [names.provider, 33, 9000], [names.bridge, 31, 9000]],
      [[names.client, 32, 1500], [names.provider, 33, 1500], [names.bridge, 31, 1500]],
    ]);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(stateBefore);
    // Where the kernel refuses that, it is told as a step of the undo, naming the link and its devices; the undo goes on.
    kernel.applied = [];
    kernel.mtuRestoreRefused = 'No such device';
    const told: UndoStepFailure[] = [];
    await link({ ...run, onUndoStepFailed: (failure) => void told.push(failure) }).catch(() => undefined);
    expect(told).toEqual([{ step: 'mtu', error: 'No such device', left: [{ link: expect.objectContaining({ vm: c1, id: recorded.links[0]!.id }), devices: [names.bridge, names.client, names.provider] }] }]);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(stateBefore);
  });
});

describe('gc of a state dir with no state file', () => {
  it('has nothing to collect where no device is named as a link with the prefix (a fresh host), making no dir; refuses (bad input, nothing removed) where one is', async () => {
    const missing = join(stateDir, 'not-made');
    // Devices of no link name with the prefix: another prefix's, no id, no role.
    kernel.host = new Map([['zzb5', {} as ObservedDevice], ['snx1', {} as ObservedDevice], ['snb', {} as ObservedDevice]]);
    for (const dir of [stateDir, missing]) expect(await collectGarbage({ stateDir: dir, devicePrefix: PREFIX })).toEqual([]);
    expect(existsSync(missing)).toBe(false);
    expect(await readdir(stateDir)).toEqual([]);
    kernel.host.set('snp9', {} as ObservedDevice);
    for (const dir of [stateDir, missing]) {
      const error = await collectGarbage({ stateDir: dir, devicePrefix: PREFIX }).catch((caught: unknown) => caught);
      expect(error).toMatchObject({ name: 'LinkerError', kind: 'no-state', message: expect.stringMatching(/^gc: no state file .*links\.json, so every snb\/snc\/snp device would go: nothing deleted/) });
      expect(isLinkUsageError(error)).toBe(true);
    }
    expect(kernel.removed).toEqual([]);
    expect(existsSync(missing)).toBe(false);
  });
});

describe('gc racing a first link into a new state dir', () => {
  /**
   * gc meeting a first link into the state dir: the link's lock held, its devices there, its state
   * file not yet written. gc starts once the lock is held, and `meanwhile` (what the link does
   * before it lets go of its lock) runs once gc's first listing is done: gc has found no state file
   * by then, and waits for the lock. Returns what gc collected.
   */
  async function gcRacingFirstLink(meanwhile: (recorded: LinkState) => Promise<void> | void): Promise<string[]> {
    const recorded = withDevicePrefix(allocateMany(emptyState(), [{ client: CLIENTS[0]!, provider: NETVM }]).state, PREFIX);
    const names = linkDeviceNames(PREFIX, recorded.links[0]!.id);
    let release = (): void => undefined;
    let held = (): void => undefined;
    const lockHeld = new Promise<void>((resolve) => (held = resolve));
    const holding = withStateLock(stateDir, () => {
      held();
      return new Promise<void>((resolve) => (release = resolve));
    });
    await lockHeld;
    kernel.host = new Map([names.bridge, names.client, names.provider].map((name): [string, ObservedDevice] => [name, { name } as ObservedDevice]));
    try {
      const listings = kernel.observed;
      const gc = collectGarbage({ stateDir, devicePrefix: PREFIX, lockWaitMs: 5000 });
      while (kernel.observed === listings) await new Promise((resolve) => setTimeout(resolve, 1));
      await meanwhile(recorded);
      release();
      return await gc;
    } finally {
      release();
      await holding;
    }
  }

  it('waits for the link holding the lock and collects as its state file says, not refusing that there is no state file (there is one by then)', async () => {
    // The link writes its state file before it lets go of its lock.
    expect(await gcRacingFirstLink((recorded) => saveState(stateDir, recorded))).toEqual([]);
    expect(kernel.removed).toEqual([]);
    // With no state file under the lock either, it is refused as before, nothing removed.
    await rm(join(stateDir, 'links.json'));
    await expect(collectGarbage({ stateDir, devicePrefix: PREFIX })).rejects.toMatchObject({ name: 'LinkerError', kind: 'no-state' });
    expect(kernel.removed).toEqual([]);
  });

  it('has nothing to collect where that link failed and undid its devices meanwhile (no state file written): not refused as if they were there', async () => {
    // The link's undo: its devices deleted, no state file written.
    expect(
      await gcRacingFirstLink(() => {
        kernel.host = new Map();
      }),
    ).toEqual([]);
    expect(existsSync(join(stateDir, 'links.json'))).toBe(false);
    expect(kernel.removed).toEqual([]);
  });
});

describe('gc with a --state-dir that is a file', () => {
  it('says the state dir is no directory (as link does), not that it holds no state file, and removes nothing', async () => {
    const file = join(stateDir, 'a-file');
    await writeFile(file, '');
    kernel.host = new Map([['snb9', {} as ObservedDevice]]);
    for (const dir of [file, join(file, 'below')]) {
      await expect(collectGarbage({ stateDir: dir, devicePrefix: PREFIX })).rejects.toMatchObject({
        name: 'StateStoreError',
        kind: 'state-dir-unusable',
        message: expect.stringMatching(new RegExp(`^state dir ${dir} cannot be used \\((it|a path above it) is not a directory\\); pass --state-dir or set SPECTRUM_STATE_DIR to a writable directory$`)),
      });
    }
    expect(kernel.removed).toEqual([]);
  });
});

describe('gc with a state file that is a symlink', () => {
  it.each([
    ['to nothing', 'gone.json'],
    ['to a state file', 'real.json'],
  ])('%s: says it is a symlink, as link and list do, not that there is no state file (whose fix would write through it), and removes nothing', async (_, target) => {
    await writeFile(join(stateDir, 'real.json'), serializeState(emptyState()));
    await symlink(target, join(stateDir, 'links.json'));
    kernel.host = new Map([['snb9', {} as ObservedDevice]]);
    await expect(collectGarbage({ stateDir, devicePrefix: PREFIX })).rejects.toMatchObject({
      name: 'StateStoreError',
      kind: 'read-failed',
      message: expect.stringMatching(/links\.json is a symbolic link .*--state-dir/),
    });
    expect(kernel.removed).toEqual([]);
    expect(await readlink(join(stateDir, 'links.json'))).toBe(target);
  });
});

describe('unlink and gc waiting for the state lock', () => {
  it('wait as long as told, and say once that they wait (with the PID of the holder), as link does', async () => {
    await writeFile(join(stateDir, 'links.json'), serializeState(emptyState()));
    let release = (): void => undefined;
    const holding = withStateLock(stateDir, () => new Promise<void>((resolve) => (release = resolve)));
    await new Promise((resolve) => setTimeout(resolve, 20));
    const told: Record<string, (string | undefined)[]> = { gc: [], unlink: [] };
    const wait = { lockWaitMs: 1200 };
    try {
      const gc = collectGarbage({ stateDir, devicePrefix: PREFIX, ...wait, onLockWait: (pid) => void told['gc']!.push(pid) });
      const unlink = unlinkVm(CLIENTS[0]!, { forget: false, force: false }, { ...options(), ...wait, onLockWait: (pid) => void told['unlink']!.push(pid) });
      const gaveUp = { name: 'StateStoreError', kind: 'lock-timeout', message: expect.stringContaining('after waiting 1.2 s') };
      // Both watched at once: whichever gives up first is not left unhandled.
      await Promise.all([expect(gc).rejects.toMatchObject(gaveUp), expect(unlink).rejects.toMatchObject(gaveUp)]);
    } finally {
      release();
      await holding;
    }
    expect(told).toEqual({ gc: [String(process.pid)], unlink: [String(process.pid)] });
    expect(kernel.removed).toEqual([]);
  });
});

describe('link --keep-going after the one transaction failed', () => {
  it('goes on from the state file as it is, not as it was before the run: an undo step that failed leaves ids recorded whose devices may exist, and they stay', async () => {
    // The ids the three clients get (an empty state: their preferred ones); the kernel refuses c3's bridge.
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    kernel.refused.add(linkDeviceNames(PREFIX, ids[2]!).bridge);
    // The one transaction's undo of its plan fails: every device may be there, so every id stays recorded.
    kernel.undoFailures = 1;
    const outcome = await linkVmsKeepGoing(CLIENTS, options());
    expect(kernel.undone).toBe(2); // the one transaction's, then c3's own
    expect(outcome.failed.map((failure) => failure.vm)).toEqual(['c3']);
    expect([...outcome.linked.keys()]).toEqual(['c1', 'c2']);
    // c3's id stays recorded (its devices may exist: gc leaves them, unlink takes them down), as
    // do the others'; reusing the state from before the run, c1's save would have dropped it.
    const state = parseState(await readFile(join(stateDir, 'links.json'), 'utf8'), 'test');
    expect(state.links.map((link) => [link.client, link.id])).toEqual(
      expect.arrayContaining([
        ['c1', ids[0]],
        ['c2', ids[1]],
        ['c3', ids[2]],
      ]),
    );
    expect(state.links).toHaveLength(3);
  });
});

describe('link --keep-going interrupted during the one transaction', () => {
  it('undoes it, and says which earlier links the undo left down (their devices replaced for another attach mode)', async () => {
    // c1 linked earlier by netns (its client device a veth, recorded so); now to be a tap.
    const allocation = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM })));
    // As a run records it, with its device prefix and, for its link up in netns mode, its netns prefix (the undo writes it back with those too).
    const earlier = withNetnsPrefix(withDevicePrefix(setAttachments(allocation.state, [{ pair: { client: CLIENTS[0]!, provider: NETVM }, attached: { client: 'netns', provider: 'none' } }]), PREFIX), options().netnsPrefix);
    await saveState(stateDir, earlier);
    const c1 = linkDeviceNames(PREFIX, allocation.links[0]!.id);
    const device = (name: string, kind: string): ObservedDevice => ({ index: 2, name, kind, master: c1.bridge, mtu: 1500, up: true, mac: '02:00:00:00:00:01', ipv6: false, ipv6LinkLocal: false, ipv6Forwarding: false });
    kernel.host = new Map([
      [c1.bridge, { ...device(c1.bridge, 'bridge'), master: null }],
      [c1.client, device(c1.client, 'veth')],
      [c1.provider, device(c1.provider, 'tun')],
    ]);
    // A SIGINT while the kernel makes the devices.
    const stop = new AbortController();
    kernel.whileApplying = () => stop.abort('SIGINT');
    const leftDown: LinkReport[] = [];
    const run = linkVmsKeepGoing(CLIENTS, { ...options(), signal: stop.signal, onLeftDown: (links) => void leftDown.push(...links) });
    await expect(run).rejects.toMatchObject({ kind: 'interrupted' });
    expect(leftDown.map((link) => [link.vm, link.provider, link.id, link.clientAttach])).toEqual([['c1', 'netvm', allocation.links[0]!.id, 'netns']]);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(serializeState(earlier));
  });
});

describe('link failing after a device it was to replace turned out gone', () => {
  it('does not say an earlier link left down for a device something else deleted (found gone when its delete came): the run replaced none of it', async () => {
    // c1 and c2 linked earlier by netns (their client devices veths, recorded so); this run makes
    // them taps. Something else deleted c1's veth after the run looked; the kernel then refuses
    // c3's bridge, and the run is undone: c2's veth it did delete, c1's it did not.
    const allocation = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM })));
    const [c1Link, c2Link, c3Link] = allocation.links;
    if (c1Link === undefined || c2Link === undefined || c3Link === undefined) throw new Error('no ids');
    const attached = { client: 'netns', provider: 'none' } as const;
    await saveState(stateDir, setAttachments(allocation.state, [c1Link, c2Link].map((link) => ({ pair: { client: link.client, provider: NETVM }, attached }))));
    kernel.host = new Map();
    for (const link of [c1Link, c2Link]) {
      const names = linkDeviceNames(PREFIX, link.id);
      const device = (name: string, kind: string): ObservedDevice => ({ index: 2, name, kind, master: names.bridge, mtu: 1500, up: true, mac: '02:00:00:00:00:01', ipv6: false, ipv6LinkLocal: false, ipv6Forwarding: false });
      kernel.host.set(names.bridge, { ...device(names.bridge, 'bridge'), master: null });
      kernel.host.set(names.client, device(names.client, 'veth'));
      kernel.host.set(names.provider, device(names.provider, 'tun'));
    }
    kernel.vanished.add(linkDeviceNames(PREFIX, c1Link.id).client);
    kernel.refused.add(linkDeviceNames(PREFIX, c3Link.id).bridge);
    const leftDown: LinkReport[] = [];
    await expect(linkVms(CLIENTS, { ...options(), onLeftDown: (links) => void leftDown.push(...links) })).rejects.toThrow(/File exists$/);
    expect(leftDown.map((link) => [link.vm, link.id, link.clientAttach])).toEqual([['c2', c2Link.id, 'netns']]);
  });
});

describe('link failing in its first chunk while the next chunk is planned', () => {
  it('undoes only the plans it began: a later chunk planned to replace an earlier link\'s devices leaves them as they are', async () => {
    // Six clients: the first chunk is four VMs, the next two. c6 was linked earlier by netns (its
    // client device a veth, recorded so); this run would make it a tap.
    const clients = ['c1', 'c2', 'c3', 'c4', 'c5', 'c6'].map(vmName);
    for (const vm of clients.slice(3)) {
      await mkdir(join(configDir, vm, 'blk'), { recursive: true });
      await mkdir(join(configDir, vm, 'providers', 'net'), { recursive: true });
      await writeFile(join(configDir, vm, 'vmlinux'), '');
      await writeFile(join(configDir, vm, 'blk', 'root.img'), '');
      await writeFile(join(configDir, vm, 'providers', 'net', NETVM), '');
    }
    const allocation = allocateMany(emptyState(), clients.map((client) => ({ client, provider: NETVM })));
    const c6 = allocation.links.find((link) => link.client === 'c6');
    const c1 = allocation.links.find((link) => link.client === 'c1');
    if (c6 === undefined || c1 === undefined) throw new Error('no ids');
    await saveState(stateDir, setAttachments(allocation.state, [{ pair: { client: c6.client, provider: NETVM }, attached: { client: 'netns', provider: 'none' } }]));
    const names = linkDeviceNames(PREFIX, c6.id);
    const device = (name: string, kind: string): ObservedDevice => ({ index: 2, name, kind, master: names.bridge, mtu: 1500, up: true, mac: '02:00:00:00:00:06', ipv6: false, ipv6LinkLocal: false, ipv6Forwarding: false });
    kernel.host = new Map([
      [names.bridge, { ...device(names.bridge, 'bridge'), master: null }],
      [names.client, device(names.client, 'veth')],
      [names.provider, device(names.provider, 'tun')],
    ]);
    // The kernel refuses c1's bridge, once the second chunk has been planned.
    kernel.refused.add(linkDeviceNames(PREFIX, c1.id).bridge);
    kernel.whileApplying = async () => {
      while (kernel.observed < 2) await new Promise((resolve) => setTimeout(resolve, 1));
      await new Promise((resolve) => setTimeout(resolve, 20));
    };
    const leftDown: LinkReport[] = [];
    await expect(linkVms(clients, { ...options(), onLeftDown: (links) => void leftDown.push(...links) })).rejects.toThrow(/File exists/);
    expect(kernel.observed).toBe(2); // the second chunk was planned
    // Only the first chunk's plan is undone; c6's devices, which the second was to replace, stay.
    expect(kernel.undonePlans).toHaveLength(1);
    expect(kernel.undonePlans.flatMap((plan) => plan.creates)).not.toContain(names.client);
    expect(leftDown).toEqual([]);
  });
});

describe('link --keep-going interrupted while linking VM by VM after the one transaction failed', () => {
  it("says which earlier links the one transaction's undo left down, of the VMs it then did not get to", async () => {
    // c3 linked earlier by netns (its client device a veth, recorded so); now to be a tap.
    const allocation = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM })));
    const [c1Link, , c3Link] = allocation.links;
    if (c1Link === undefined || c3Link === undefined) throw new Error('no ids');
    await saveState(stateDir, setAttachments(allocation.state, [{ pair: { client: c3Link.client, provider: NETVM }, attached: { client: 'netns', provider: 'none' } }]));
    const c3 = linkDeviceNames(PREFIX, c3Link.id);
    const device = (name: string, kind: string): ObservedDevice => ({ index: 2, name, kind, master: c3.bridge, mtu: 1500, up: true, mac: '02:00:00:00:00:03', ipv6: false, ipv6LinkLocal: false, ipv6Forwarding: false });
    kernel.host = new Map([
      [c3.bridge, { ...device(c3.bridge, 'bridge'), master: null }],
      [c3.client, device(c3.client, 'veth')],
      [c3.provider, device(c3.provider, 'tun')],
    ]);
    // The kernel refuses c1's bridge: the one transaction fails (its undo deletes c3's new
    // devices: c3's link is down), and so does c1 alone; a SIGINT comes while c2's are made.
    kernel.refused.add(linkDeviceNames(PREFIX, c1Link.id).bridge);
    const stop = new AbortController();
    let applies = 0;
    kernel.whileApplying = () => {
      applies += 1;
      if (applies === 3) stop.abort('SIGINT');
    };
    const leftDown: LinkReport[] = [];
    const outcome = await linkVmsKeepGoing(CLIENTS, { ...options(), signal: stop.signal, onLeftDown: (links) => void leftDown.push(...links) });
    // With why the one transaction failed: the pass may not get to the VM that made it fail.
    const c1Bridge = linkDeviceNames(PREFIX, c1Link.id).bridge;
    expect(outcome.interrupted).toEqual({ during: 'one-by-one', undone: 'c2', notLinked: ['c3'], failure: expect.objectContaining({ message: expect.stringContaining(c1Bridge) }) });
    expect(outcome.failed.map((failure) => failure.vm)).toEqual(['c1']);
    // c3 was not linked again: its earlier link is down, and is said to be.
    expect(leftDown.map((link) => [link.vm, link.id, link.clientAttach])).toEqual([['c3', c3Link.id, 'netns']]);
  });
});

describe('link --keep-going linking VM by VM after the one transaction failed', () => {
  it('fails the whole run where the state file cannot be written, as the one transaction does (not each VM after it, one by one), with the VM failed before it, and the VM linked again before it (c2) with its links, to be printed (text and --json)', async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    kernel.refused.add(linkDeviceNames(PREFIX, ids[0]!).bridge);
    // While c2 (the second VM linked one by one) has its devices made (its ids recorded before),
    // the state file becomes a directory with something in it: no state can be written over it
    // from then on, and c3's record of its ids fails.
    const breakWhileC2Applies = (): void => {
      let applies = 0;
      kernel.whileApplying = async () => {
        applies += 1;
        if (applies !== 3) return;
        await rm(join(stateDir, 'links.json'));
        await mkdir(join(stateDir, 'links.json', 'in-the-way'), { recursive: true });
      };
    };
    breakWhileC2Applies();
    // c1, refused by the kernel alone too, failed before: it comes with the state failure, to be
    // said; c2, linked and recorded, too, to be printed.
    const c1Bridge = linkDeviceNames(PREFIX, ids[0]!).bridge;
    await expect(linkVmsKeepGoing(CLIENTS, options())).rejects.toMatchObject({
      name: 'LinkerError',
      kind: 'state-failed',
      message: expect.stringMatching(/^cannot write state file /),
      failure: { name: 'StateStoreError', kind: 'write-failed' },
      failed: [{ vm: 'c1', error: expect.objectContaining({ message: expect.stringContaining(c1Bridge) }) }],
      linked: new Map([['c2', [expect.objectContaining({ vm: 'c2', provider: NETVM, id: ids[1] })]]]),
    });
    // As the bin says it: c2's line on stdout; the state failure, then c1's failure, on stderr (exit 1).
    for (const json of [false, true]) {
      await rm(join(stateDir, 'links.json'), { recursive: true, force: true });
      breakWhileC2Applies();
      const run = await linkCli([...(json ? ['--json'] : []), '--keep-going', ...CLIENTS]);
      const out = run.stdout.split('\n').filter((line) => line !== '');
      if (json) {
        expect(out.map((line) => JSON.parse(line) as unknown)).toEqual([
          { vm: 'c2', links: [expect.objectContaining({ vm: 'c2', provider: NETVM, id: ids[1] })] },
          { vm: 'c1', links: [], error: expect.stringContaining(c1Bridge) },
        ]);
      } else {
        expect(out.filter((line) => / -> /.test(line))).toEqual([expect.stringMatching(new RegExp(`^c2 -> netvm  id ${ids[1]}  `))]);
      }
      expect({ code: run.code, stderr: run.stderr }).toEqual({
        code: 1,
        stderr: [expect.stringMatching(/^spectrum-link: cannot write state file /), expect.stringMatching(new RegExp(`^spectrum-link: link c1 failed: .*${c1Bridge}`))],
      });
    }
  });

  it('on a terminal, erases its progress line before it prints the VM linked again (c2): its line starts a line of its own', async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    kernel.refused.add(linkDeviceNames(PREFIX, ids[0]!).bridge);
    let applies = 0;
    kernel.whileApplying = async () => {
      applies += 1;
      if (applies !== 3) return;
      await rm(join(stateDir, 'links.json'));
      await mkdir(join(stateDir, 'links.json', 'in-the-way'), { recursive: true });
    };
    const { code, written } = await linkOnTerminal(['--keep-going', ...CLIENTS]);
    // A progress line was drawn (redrawn in place: carriage return, erase line).
    expect(written).toContain('\r\x1b[2Klinking VM by VM after a failure: ');
    const screen = terminalScreen(written);
    expect({ code, linked: screen.filter((line) => / -> /.test(line)) }).toEqual({ code: 1, linked: [expect.stringMatching(new RegExp(`^c2 -> netvm  id ${ids[1]}  `))] });
  });
});

/**
 * `spectrum-link link` with these arguments (after the run's config dir, state dir, prefix and
 * --attach none), in process, with stderr a terminal: its exit code, and what it wrote to stdout
 * and stderr, in order, as one terminal would take it.
 */
/**
 * `client`'s link to netvm recorded up, its client side as QEMU attached it (to be attached another
 * way by a run), its devices in the scripted kernel.
 */
async function recordUpAsQemu(client: VmName): Promise<ReturnType<typeof allocateMany>> {
  const allocation = allocateMany(emptyState(), [{ client, provider: NETVM }]);
  const upAsQemu = allocation.links.map((link) => ({ pair: link, attached: { client: 'qemu', provider: 'none' } as const }));
  await saveState(stateDir, withDevicePrefix(setAttachments(allocation.state, upAsQemu), PREFIX));
  kernel.host = new Map(allocation.links.flatMap((link) => Object.values(linkDeviceNames(PREFIX, link.id)).map((name): [string, ObservedDevice] => [name, { name, kind: name.includes('b') ? 'bridge' : 'tun' } as ObservedDevice])));
  return allocation;
}

/** `spectrum-link` with this command line, in process, stderr a terminal (or not): its exit code and what it wrote, in order. */
async function onTerminal(argv: readonly string[], isTTY = true): Promise<{ code: number; written: string }> {
  let written = '';
  const out = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => ((written += String(chunk)), true));
  const err = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((written += String(chunk)), true));
  const tty = Object.getOwnPropertyDescriptor(process.stderr, 'isTTY');
  Object.defineProperty(process.stderr, 'isTTY', { value: isTTY, configurable: true, writable: true });
  try {
    const program = new Command('spectrum-link');
    for (const command of linkCommands({}, () => NO_VMM)) program.addCommand(command);
    const code = await runCli(program, [...argv]);
    return { code, written };
  } finally {
    out.mockRestore();
    err.mockRestore();
    if (tty === undefined) delete (process.stderr as { isTTY?: boolean }).isTTY;
    else Object.defineProperty(process.stderr, 'isTTY', tty);
  }
}

/** `spectrum-link link` with these arguments (attach none), on a terminal. */
const linkOnTerminal = (args: readonly string[]): Promise<{ code: number; written: string }> =>
  onTerminal(['link', '--config-dir', configDir, '--state-dir', stateDir, '--device-prefix', 'sn', '--attach', 'none', ...args]);

/** The lines a terminal shows for `written`: carriage return, erase line (ESC [2K) and newline as a terminal takes them. */
function terminalScreen(written: string): string[] {
  const lines = [''];
  let column = 0;
  for (let at = 0; at < written.length; at++) {
    const row = lines.length - 1;
    if (written.startsWith('\x1b[2K', at)) {
      lines[row] = '';
      at += 3;
    } else if (written[at] === '\r') {
      column = 0;
    } else if (written[at] === '\n') {
      lines.push('');
      column = 0;
    } else {
      const line = (lines[row] ?? '').padEnd(column);
      lines[row] = `${line.slice(0, column)}${written[at] ?? ''}${line.slice(column + 1)}`;
      column += 1;
    }
  }
  return lines;
}

describe('link --keep-going whose one transaction\'s undo could not sync its write back, then stopped by a state failure in the pass one by one', () => {
  it('says that write back of the links of the VMs not linked again only: the VM linked again before the state failure (c2) is recorded anew', async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    kernel.refused.add(linkDeviceNames(PREFIX, ids[0]!).bridge);
    // The one transaction's undo writes the state back, its dir's sync failing; then, while c2
    // has its devices made one by one, no state can be written any more (c3's record fails).
    let applies = 0;
    kernel.whileApplying = async () => {
      applies += 1;
      if (applies === 1) store.failSyncs = 1;
      if (applies !== 3) return;
      await rm(join(stateDir, 'links.json'));
      await mkdir(join(stateDir, 'links.json', 'in-the-way'), { recursive: true });
    };
    const told: UndoStateWriteFailure[] = [];
    await expect(linkVmsKeepGoing(CLIENTS, { ...options(), onUndoStateWriteFailed: (failure) => void told.push(failure) })).rejects.toMatchObject({
      kind: 'state-failed',
      failed: [{ vm: 'c1' }],
      linked: new Map([['c2', [expect.objectContaining({ id: ids[1] })]]]),
    });
    expect(told).toEqual([
      expect.objectContaining({ written: true, recorded: [expect.objectContaining({ vm: 'c1', id: ids[0] }), expect.objectContaining({ vm: 'c3', id: ids[2] })], clients: ['c1', 'c3'] }),
    ]);
  });
});

describe('link --keep-going whose one transaction\'s undo left devices, then stopped by a state failure in the pass one by one', () => {
  it('says the devices left of VMs not linked again only: those of the VM linked again before the state failure (c2) are its own now', async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    const bridges = ids.map((id) => linkDeviceNames(PREFIX, id).bridge);
    kernel.refused.add(bridges[0]!);
    // The undos leave c1's and c2's bridges (their ids stay recorded); then, while c2 has its
    // devices made one by one, no state can be written any more (c3's record fails).
    kernel.kept.add(bridges[0]!);
    kernel.kept.add(bridges[1]!);
    let applies = 0;
    kernel.whileApplying = async () => {
      applies += 1;
      if (applies !== 3) return;
      await rm(join(stateDir, 'links.json'));
      await mkdir(join(stateDir, 'links.json', 'in-the-way'), { recursive: true });
    };
    const told: UndoStepFailure[] = [];
    await expect(linkVmsKeepGoing(CLIENTS, { ...options(), onUndoStepFailed: (failure) => void told.push(failure) })).rejects.toMatchObject({
      kind: 'state-failed',
      failed: [{ vm: 'c1' }],
      linked: new Map([['c2', [expect.objectContaining({ id: ids[1] })]]]),
    });
    expect(told.flatMap((failure) => (failure.step === 'devices' ? failure.left.map(({ link, devices }) => [link.vm, devices]) : []))).toEqual([['c1', [bridges[0]]]]);
  });
});

describe('link --keep-going where the state dir is not made yet, and the state lock cannot be taken', () => {
  // No directory can be made under /proc (mkdir says ENOENT): nothing is made anywhere.
  const unmakeable = '/proc/spectrum-link-test-no-such-dir/state';

  it.each([
    ['linkVmsKeepGoing', (run: LinkerOptions) => linkVmsKeepGoing(CLIENTS, run)],
    ['linkAllKeepGoing', linkAllKeepGoing],
  ] as const)('%s: the VMs that failed their checks before it (c1: its config) come with the lock failure, to be said; with none, the lock failure as thrown (with --all, carrying the config dir as read, to say what it leaves as it is)', async (name, link) => {
    await writeFile(join(configDir, 'c1', 'providers', 'net', 'nosuchvm'), '');
    const lockFailure = { name: 'StateStoreError', kind: 'state-dir-unusable', message: expect.stringMatching(/^state dir \/proc\/spectrum-link-test-no-such-dir\/state .*cannot be used/) };
    await expect(link({ ...options(), stateDir: unmakeable })).rejects.toMatchObject({
      name: 'LinkerError',
      kind: 'state-failed',
      message: lockFailure.message,
      failure: lockFailure,
      failed: [{ vm: 'c1', error: expect.objectContaining({ name: 'ConfigError', kind: 'invalid-vm' }) }],
      linked: new Map(),
    });
    await rm(join(configDir, 'c1', 'providers', 'net', 'nosuchvm'));
    const alone = await link({ ...options(), stateDir: unmakeable }).catch((error: unknown) => error);
    if (name === 'linkVmsKeepGoing') {
      expect(alone).toBeInstanceOf(StateStoreError);
      expect(alone).toMatchObject(lockFailure);
    } else {
      expect(alone).toMatchObject({
        name: 'LinkerError',
        kind: 'state-failed',
        failure: lockFailure,
        failed: [],
        linked: new Map(),
        leftAsItIs: { all: { vms: CLIENTS, wholeDir: expect.objectContaining({ withoutProviders: [NETVM] }) }, orphaned: [], unusable: [] },
      });
    }
  });

  it('the bin says the lock failure, then the VM that failed before it (with --json also its line on stdout); exit 1, as for the lock failure alone', async () => {
    await writeFile(join(configDir, 'c1', 'providers', 'net', 'nosuchvm'), '');
    const lockLine = expect.stringMatching(/^spectrum-link: state dir \/proc\/spectrum-link-test-no-such-dir\/state .*cannot be used/);
    const failedLine = expect.stringMatching(/^spectrum-link: link c1 failed: VM c1 in .* is not valid .*nosuchvm/);
    const text = await linkCli(['--keep-going', ...CLIENTS], unmakeable);
    expect(text).toEqual({ code: 1, stdout: '', stderr: [lockLine, failedLine] });
    const json = await linkCli(['--keep-going', '--json', '--all'], unmakeable);
    expect({ ...json, stdout: json.stdout.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as unknown) }).toEqual({
      code: 1,
      stdout: [{ vm: 'c1', links: [], error: expect.stringMatching(/^VM c1 in .* is not valid .*nosuchvm/) }],
      stderr: [lockLine, failedLine],
    });
    const alone = await linkCli(['--keep-going', 'c2'], unmakeable);
    expect(alone).toEqual({ code: 1, stdout: '', stderr: [lockLine] });
  });
});

describe('link --keep-going stopped by a state that cannot be read or written', () => {
  const invalid = vmName('c0');
  const stopped = (failure: Record<string, unknown>): Record<string, unknown> => ({
    name: 'LinkerError',
    kind: 'state-failed',
    failure,
    failed: [{ vm: invalid, error: expect.objectContaining({ name: 'ConfigError', kind: 'invalid-vm' }) }],
  });

  it.each([
    ['cannot be read (a directory in its place)', async (): Promise<void> => void (await mkdir(join(stateDir, 'links.json', 'in-the-way'), { recursive: true })), { name: 'StateStoreError', kind: 'read-failed' }],
    ['cannot be written (the one transaction\'s record of its ids)', async (): Promise<void> => void (store.failSaves = 1), { name: 'StateStoreError', kind: 'write-failed' }],
  ] as const)('where it %s, carries the VMs that had failed before it (an invalid one), in the order asked for; with none, the state failure as thrown', async (_how, breakState, failure) => {
    await addVm(invalid, ['nosuchvm']);
    await breakState();
    await expect(linkVmsKeepGoing([invalid, ...CLIENTS], options())).rejects.toMatchObject({ ...stopped(failure), message: expect.stringMatching(/state file/) });
    await breakState();
    const alone = await linkVmsKeepGoing(CLIENTS, options()).catch((error: unknown) => error);
    expect(alone).toBeInstanceOf(StateStoreError);
    expect(alone).toMatchObject(failure);
  });
});

describe('link --keep-going whose take-down of a dropped provider cannot be recorded', () => {
  it.each([
    ['not begun (the state dir cannot be written)', 'unlisted-not-taken-down', /^linked, but taking down c1 -> netvm2 .*was not begun: cannot write state file /],
    ['done, not recorded (the state file cannot be written after)', 'taken-down-not-recorded', /^linked; then, as no longer among the providers, took down c1 -> netvm2 .*but then cannot write state file /],
  ] as const)('%s: a state failure that stops the run, so it carries the VMs that had failed before it (an invalid one), to be said', async (_how, kind, message) => {
    const c0 = vmName('c0');
    const c1 = CLIENTS[0]!;
    await addVm('netvm2');
    await writeFile(join(configDir, c1, 'providers', 'net', 'netvm2'), '');
    await linkVms([c1], options());
    await rm(join(configDir, c1, 'providers', 'net', 'netvm2'));
    await addVm(c0, ['nosuchvm']);
    // The probe before the take-down, or the write after it.
    if (kind === 'unlisted-not-taken-down') store.failSaves = 1;
    else kernel.whileRemoving = () => void (store.failSaves = 1);
    await expect(linkVmsKeepGoing([c0, c1], options())).rejects.toMatchObject({
      name: 'LinkerError',
      kind: 'state-failed',
      message: expect.stringMatching(message),
      failure: { name: 'LinkerError', kind, message: expect.stringMatching(message), failure: { name: 'StateStoreError', kind: 'write-failed' } },
      failed: [{ vm: c0, error: expect.objectContaining({ name: 'ConfigError', kind: 'invalid-vm' }) }],
    });
  });
});

describe('link --keep-going whose take-down of a dropped provider fails after its passes', () => {
  const c0 = vmName('c0');
  const [c1, c2, c3] = CLIENTS as [VmName, VmName, VmName];
  // The take-down fails: the kernel refusing the lookup of its devices; the state dir found not
  // writable before it (the probe, the first write after c3's record); or the write after it.
  const endings = [
    ['a kernel refusal', 'unlisted-not-taken-down', /^linked, but taking down c1 -> netvm2 \(no longer among the providers\) failed: removing devices failed before any was removed: looking up /],
    ['the state dir not writable before it', 'state-failed', /^linked, but taking down c1 -> netvm2 .*was not begun: cannot write state file /],
    ['the state file not written after it', 'state-failed', /^linked; then, as no longer among the providers, took down c1 -> netvm2 .*but then cannot write state file /],
  ] as const;

  /**
   * c1 linked to netvm and netvm2, netvm2 then dropped from its config; c0 invalid. The kernel
   * refuses c2's bridge: the one transaction fails (its undo leaves c3's bridge, its id kept), and
   * so does c2 alone in the pass one by one, which links c1 and c3 again. Then the take-down of
   * c1 -> netvm2 fails as `how` says. Returns the ids of c1's, c2's and c3's links to netvm.
   */
  const prepare = async (how: (typeof endings)[number][0]): Promise<ClientId[]> => {
    await rm(join(stateDir, 'links.json'), { force: true });
    kernel.whileApplying = () => undefined;
    kernel.lookupRefused = undefined;
    kernel.refused.clear();
    kernel.kept.clear();
    Object.assign(store, { failSaves: 0, passSaves: 0 });
    await writeFile(join(configDir, c1, 'providers', 'net', 'netvm2'), '');
    await linkVms([c1], options());
    await rm(join(configDir, c1, 'providers', 'net', 'netvm2'));
    const ids = allocateMany(await loadState(stateDir), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    kernel.refused.add(linkDeviceNames(PREFIX, ids[1]!).bridge);
    kernel.kept.add(linkDeviceNames(PREFIX, ids[2]!).bridge);
    kernel.lookupRefused = how === 'a kernel refusal' ? 'removing devices failed before any was removed: looking up snb1 failed (No buffer space available), so whether it exists is unknown; run it again' : undefined;
    // Plans: the one transaction (1), then c1 (2), c2 (3, refused) and c3 (4) one by one; the
    // next write after c3's record is the take-down's probe.
    let applies = 0;
    kernel.whileApplying = () => {
      applies += 1;
      if (applies !== 4) return;
      if (how === 'the state dir not writable before it') store.failSaves = 1;
      if (how === 'the state file not written after it') {
        store.passSaves = 1;
        store.failSaves = 1;
      }
    };
    return ids;
  };

  beforeEach(async () => {
    await addVm('netvm2');
    await addVm(c0, ['nosuchvm']);
  });

  it.each(endings)('%s: fails with the VMs failed (c0, c2) and those linked (c1, c3), and says no device left of a VM linked again (c3)', async (how, kind, message) => {
    const ids = await prepare(how);
    const told: UndoStepFailure[] = [];
    const c2Bridge = linkDeviceNames(PREFIX, ids[1]!).bridge;
    await expect(linkVmsKeepGoing([c0, ...CLIENTS], { ...options(), onUndoStepFailed: (failure) => void told.push(failure) })).rejects.toMatchObject({
      name: 'LinkerError',
      kind,
      message: expect.stringMatching(message),
      failed: [
        { vm: c0, error: expect.objectContaining({ name: 'ConfigError', kind: 'invalid-vm' }) },
        { vm: c2, error: expect.objectContaining({ message: expect.stringContaining(c2Bridge) }) },
      ],
      linked: new Map([
        [c1, [expect.objectContaining({ vm: c1, provider: NETVM, id: ids[0] })]],
        [c3, [expect.objectContaining({ vm: c3, provider: NETVM, id: ids[2] })]],
      ]),
    });
    // c3's bridge, left by the one transaction's undo, is c3's own again: not said.
    expect(told).toEqual([]);
  });

  it.each(endings)('%s: the bin prints the VMs linked (c1, c3; c1 with its link to netvm2 where that was taken down), then says the failure, then each VM failed (c0, c2); with --json their lines too; exit 1', async (how, _kind, message) => {
    const failureLine = new RegExp(`^spectrum-link: ${message.source.slice(1)}`);
    // Taken down, then not recorded: it is down all the same, and said so.
    const takenDown = how === 'the state file not written after it';
    for (const json of [false, true]) {
      const ids = await prepare(how);
      const dropped = (await loadState(stateDir)).links.find((link) => link.provider === 'netvm2')!;
      const c2Bridge = linkDeviceNames(PREFIX, ids[1]!).bridge;
      const run = await linkCli([...(json ? ['--json'] : []), '--keep-going', c0, ...CLIENTS]);
      const out = run.stdout.split('\n').filter((line) => line !== '');
      if (json) {
        expect(out.map((line) => JSON.parse(line) as unknown)).toEqual([
          { vm: c1, links: [expect.objectContaining({ vm: c1, provider: NETVM, id: ids[0] })], ...(takenDown && { unlinked: [expect.objectContaining({ vm: c1, provider: 'netvm2', id: dropped.id })] }) },
          { vm: c3, links: [expect.objectContaining({ vm: c3, provider: NETVM, id: ids[2] })] },
          { vm: c0, links: [], error: expect.stringMatching(/^VM c0 in .* is not valid .*nosuchvm/) },
          { vm: c2, links: [], error: expect.stringContaining(c2Bridge) },
        ]);
      } else {
        expect(out.filter((line) => / -> /.test(line))).toEqual([
          expect.stringMatching(new RegExp(`^c1 -> netvm  id ${ids[0]}  `)),
          ...(takenDown ? [`unlinked c1 -> netvm2 (id ${dropped.id}, kept): netvm2 is no longer among c1's providers`] : []),
          expect.stringMatching(new RegExp(`^c3 -> netvm  id ${ids[2]}  `)),
        ]);
      }
      expect({ code: run.code, stderr: run.stderr }).toEqual({
        code: 1,
        stderr: [
          expect.stringMatching(failureLine),
          expect.stringMatching(/^spectrum-link: link c0 failed: VM c0 in .* is not valid .*nosuchvm/),
          expect.stringMatching(new RegExp(`^spectrum-link: link c2 failed: .*${c2Bridge}`)),
        ],
      });
    }
  });
});

describe('link --keep-going where the state dir is not made yet, and a signal comes while another run holds its lock', () => {
  /**
   * Once the run has read the config (before the lock: no state dir), another run makes the dir
   * and holds its lock; `signal` is then called a little later. Returns the release of that lock.
   */
  const holdLockThenSignal = (fresh: string, signal: () => void): { release: () => Promise<void> } => {
    let release = (): void => undefined;
    let holding: Promise<void> = Promise.resolve();
    configReads.afterRead = async () => {
      await mkdir(fresh);
      await new Promise<void>((held) => {
        holding = withStateLock(fresh, () => {
          held();
          return new Promise<void>((resolve) => (release = resolve));
        });
      });
      setTimeout(signal, 50);
    };
    return {
      release: async () => {
        release();
        await holding;
      },
    };
  };

  it.each([
    ['linkVmsKeepGoing', (run: LinkerOptions) => linkVmsKeepGoing(CLIENTS, run)],
    ['linkAllKeepGoing', linkAllKeepGoing],
  ] as const)('%s: the VMs that failed their checks before it (c1: its config) come with the interruption, to be said; with none, none', async (_name, link) => {
    for (const invalid of [true, false]) {
      const fresh = join(stateDir, `fresh-${String(invalid)}`);
      if (invalid) await writeFile(join(configDir, 'c1', 'providers', 'net', 'nosuchvm'), '');
      else await rm(join(configDir, 'c1', 'providers', 'net', 'nosuchvm'), { force: true });
      const stop = new AbortController();
      const holder = holdLockThenSignal(fresh, () => stop.abort('SIGINT'));
      try {
        await expect(link({ ...options(), stateDir: fresh, signal: stop.signal })).rejects.toMatchObject({
          name: 'LinkerError',
          kind: 'interrupted-waiting',
          failed: invalid ? [{ vm: 'c1', error: expect.objectContaining({ name: 'ConfigError', kind: 'invalid-vm' }) }] : [],
        });
      } finally {
        await holder.release();
      }
    }
  });

  it('the bin says the interruption, then the VM that failed before it (with --json also its line on stdout); exit 130, nothing made', async () => {
    await writeFile(join(configDir, 'c1', 'providers', 'net', 'nosuchvm'), '');
    const interruptedLine = 'spectrum-link: link interrupted by SIGINT while waiting for another spectrum-link to finish: nothing was made';
    const failedLine = expect.stringMatching(/^spectrum-link: link c1 failed: VM c1 in .* is not valid .*nosuchvm/);
    let applies = 0;
    kernel.whileApplying = () => void (applies += 1);
    for (const json of [false, true]) {
      const fresh = join(stateDir, `fresh-${String(json)}`);
      const holder = holdLockThenSignal(fresh, () => void process.emit('SIGINT', 'SIGINT'));
      let run: Awaited<ReturnType<typeof linkCli>>;
      try {
        run = await linkCli([...(json ? ['--json'] : []), '--keep-going', ...CLIENTS], fresh);
      } finally {
        await holder.release();
      }
      const stdout = run.stdout.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as unknown);
      expect({ ...run, stdout }).toEqual({
        code: 130,
        stdout: json ? [{ vm: 'c1', links: [], error: expect.stringMatching(/^VM c1 in .* is not valid .*nosuchvm/) }] : [],
        stderr: [interruptedLine, failedLine],
      });
    }
    expect(applies).toBe(0);
  });
});

describe('link whose take-down of a dropped provider fails after its links were made: what it did is said as where it ends well', () => {
  const [c1, c2, c3] = CLIENTS as [VmName, VmName, VmName];
  const netvm2 = vmName('netvm2');
  // The take-down fails: the kernel refusing the lookup of its devices; the state dir found not
  // writable before it (the probe: the first state write after the run's devices are made, its
  // records written before them); or the state file not written after it.
  const endings = [
    ['a kernel refusal', /^linked, but taking down c1 -> netvm2 \(no longer among the providers\) failed: removing devices failed before any was removed: looking up /],
    ['the state dir not writable before it', /^linked, but taking down c1 -> netvm2 .*was not begun: cannot write state file /],
    ['the state file not written after it', /^linked; then, as no longer among the providers, took down c1 -> netvm2 .*but then cannot write state file /],
  ] as const;
  type Ending = (typeof endings)[number][0];
  const lineOf = (message: RegExp): RegExp => new RegExp(`^spectrum-link: ${message.source.slice(1)}`);

  /** The next run's take-down fails as `how` says. */
  const breakTakeDown = (how: Ending): void => {
    kernel.lookupRefused = how === 'a kernel refusal' ? 'removing devices failed before any was removed: looking up snb1 failed (No buffer space available), so whether it exists is unknown; run it again' : undefined;
    let applied = false;
    kernel.whileApplying = () => {
      if (how === 'the state dir not writable before it' && !applied) store.failSaves = 1;
      applied = true;
    };
    kernel.whileRemoving = () => void (how === 'the state file not written after it' && (store.failSaves = 1));
  };

  /** c1 linked to netvm and netvm2 (with these --attach values and VMM), netvm2 then dropped from its config; returns that link. */
  const linkC1ThenDrop = async (attach: readonly string[] = ['none'], vmm: VmmPort = NO_VMM): Promise<LinkReport> => {
    await addVm(netvm2);
    await writeFile(join(configDir, c1, 'providers', 'net', netvm2), '');
    const linked = await linkVms([c1], { ...options(), attach: parseAttachChoice(attach), vmm });
    await rm(join(configDir, c1, 'providers', 'net', netvm2));
    return linked.linked.get(c1)!.find((report) => report.provider === netvm2)!;
  };

  const jsonOf = (stdout: string): unknown[] => stdout.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as unknown);
  /** The lines of text stdout that are not VMM arguments (those are indented). */
  const textOf = (stdout: string): string[] => stdout.split('\n').filter((line) => line !== '' && !line.startsWith(' '));

  it.each(endings.flatMap(([how, message]) => [false, true].map((json) => [how, json, message] as const)))(
    '%s (--json: %s): plain link prints the VMs it linked (c1, c2), and the link it took down where it did, before the failure line; exit 1',
    async (how, json, message) => {
      const dropped = await linkC1ThenDrop();
      breakTakeDown(how);
      const run = await linkCli([...(json ? ['--json'] : []), c1, c2]);
      const state = await loadState(stateDir);
      const idOf = (client: VmName): number => state.links.find((link) => link.client === client && link.provider === NETVM)!.id;
      const takenDown = how === 'the state file not written after it';
      if (json) {
        expect(jsonOf(run.stdout)).toEqual([
          {
            vm: c1,
            links: [expect.objectContaining({ vm: c1, provider: NETVM, id: idOf(c1) })],
            ...(takenDown && { unlinked: [expect.objectContaining({ vm: c1, provider: netvm2, id: dropped.id, clientAttach: 'none', providerAttach: 'none' })] }),
          },
          { vm: c2, links: [expect.objectContaining({ vm: c2, provider: NETVM, id: idOf(c2) })] },
        ]);
      } else {
        expect(textOf(run.stdout)).toEqual([
          expect.stringMatching(new RegExp(`^c1 -> netvm  id ${idOf(c1)}  `)),
          ...(takenDown ? [`unlinked c1 -> netvm2 (id ${dropped.id}, kept): netvm2 is no longer among c1's providers`] : []),
          expect.stringMatching(new RegExp(`^c2 -> netvm  id ${idOf(c2)}  `)),
        ]);
      }
      expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 1, stderr: [expect.stringMatching(lineOf(message))] });
    },
  );

  it('done, not recorded, where a VMM did not detach a NIC of the link it took down: says that link as unlinked with that VMM (--json: vmmFailures), and the retry line after the failure, as where it ends well', async () => {
    const refusing: VmmPort = {
      attach: async () => true,
      detach: async (_kind, vm, nic) => {
        if (vm === netvm2) throw new Error(`QEMU refused device_del of ${nic.id}`);
      },
    };
    const dropped = await linkC1ThenDrop(['qemu'], refusing);
    const failureLine = expect.stringMatching(new RegExp(`^spectrum-link: linked; then, as no longer among the providers, took down c1 -> netvm2 \\(id ${dropped.id}\\): .*but for NIC ${dropped.providerDevice}, which the QEMU of netvm2 did not detach .*but then cannot write state file `));
    const retryLine = expect.stringMatching(
      new RegExp(
        `^spectrum-link: QEMU of netvm2 did not detach NIC ${dropped.providerDevice} \\(link c1 -> netvm2\\): QEMU refused device_del of ${dropped.providerDevice}; .*once the VMM answers, spectrum-link unlink c1 --state-dir \\S+ --device-prefix sn --attach netvm2=qemu detaches it `,
      ),
    );
    for (const json of [false, true]) {
      breakTakeDown('the state file not written after it');
      const run = await linkCli([...(json ? ['--json'] : []), c1], stateDir, { vmm: refusing, attach: ['qemu'] });
      if (json) {
        expect(jsonOf(run.stdout)).toEqual([
          {
            vm: c1,
            links: [expect.objectContaining({ vm: c1, provider: NETVM })],
            unlinked: [
              expect.objectContaining({
                vm: c1,
                provider: netvm2,
                id: dropped.id,
                vmmFailures: [{ vm: netvm2, vmm: 'qemu', nic: dropped.providerDevice, error: `QEMU refused device_del of ${dropped.providerDevice}` }],
              }),
            ],
          },
        ]);
      } else {
        expect(textOf(run.stdout)).toEqual([
          expect.stringMatching(/^c1 -> netvm  id /),
          `unlinked c1 -> netvm2 (id ${dropped.id}, kept, VMM detach failed): netvm2 is no longer among c1's providers`,
        ]);
      }
      expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 1, stderr: [failureLine, retryLine] });
    }
  });

  it.each(endings.flatMap(([how, message]) => [false, true].map((keepGoing) => [how, keepGoing, message] as const)))(
    '%s (--keep-going: %s): link --all says what it leaves as it is (orphaned, unusable, misnamed: warnings and --json lines) and the ambiguous and stray --attach warnings, as where it ends well',
    async (how, keepGoing, message) => {
      // netvm's side is netns in c1's link, none in c2's: ambiguous, so c3's new link gets none there.
      await linkC1ThenDrop(['none', 'netvm=netns']);
      await linkVms([c2], options());
      // netvm2 has gone altogether: an --attach of it is for the take-down (not a stray), done or not.
      await rm(join(configDir, netvm2), { recursive: true });
      // A client gone with a link recorded; an entry leading outside the config dir; a directory with providers under no VM name.
      const gone = vmName('gone');
      const allocation = allocateMany(await loadState(stateDir), [{ client: gone, provider: NETVM }]);
      await writeFile(join(stateDir, 'links.json'), serializeState(setAttachments(allocation.state, [{ pair: { client: gone, provider: NETVM }, attached: { client: 'none', provider: 'none' } }])));
      await symlink(tmpdir(), join(configDir, 'outside'));
      await mkdir(join(configDir, 'bad name', 'providers', 'net'), { recursive: true });
      await writeFile(join(configDir, 'bad name', 'providers', 'net', NETVM), '');
      breakTakeDown(how);
      const attach = ['c1=none', 'c2=none', 'c3=none', 'netvm2=none', 'ghost=none'];
      const run = await linkCli(['--json', '--all', ...(keepGoing ? ['--keep-going'] : [])], stateDir, { attach });
      expect(jsonOf(run.stdout)).toEqual([
        expect.objectContaining({ vm: c1, links: [expect.objectContaining({ vm: c1, provider: NETVM })] }),
        { vm: c2, links: [expect.objectContaining({ vm: c2, provider: NETVM })] },
        { vm: c3, links: [expect.objectContaining({ vm: c3, provider: NETVM, providerAttach: 'none' })] },
        { vm: gone, links: [], orphaned: [expect.objectContaining({ vm: gone, provider: NETVM, id: allocation.links[0]!.id })] },
        { vm: 'outside', links: [], unusableDir: expect.stringContaining('outside') },
        { vm: 'bad name', links: [], invalidName: expect.stringContaining('contains " "') },
      ]);
      expect(logged.warnings).toEqual([
        expect.stringMatching(/^gone has 1 recorded link but no directory in /),
        expect.stringMatching(/^outside is not linked: /),
        expect.stringMatching(/^netvm's links are attached as .* on its side, so its mode is ambiguous: those links keep theirs, and c3 -> netvm takes none; /),
        expect.stringMatching(/\/bad name has a providers\/net but no VM name, so it is not linked: /),
        expect.stringMatching(/^--attach ghost=none was not used: /),
      ]);
      expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 1, stderr: [expect.stringMatching(lineOf(message))] });
    },
  );

  it.each([false, true])('a signal during the take-down, which then fails (--keep-going: %s): the failure, then a line saying the signal undid nothing, then the VM failed; the VMs linked printed; exit 130', async (keepGoing) => {
    const c0 = vmName('c0');
    await addVm(c0, ['nosuchvm']);
    const dropped = await linkC1ThenDrop();
    breakTakeDown('the state file not written after it');
    kernel.whileRemoving = () => {
      process.emit('SIGINT', 'SIGINT');
      store.failSaves = 1;
    };
    const run = await linkCli(keepGoing ? ['--keep-going', c0, c1, c2] : [c1, c2]);
    expect(textOf(run.stdout)).toEqual([
      expect.stringMatching(/^c1 -> netvm  id /),
      `unlinked c1 -> netvm2 (id ${dropped.id}, kept): netvm2 is no longer among c1's providers`,
      expect.stringMatching(/^c2 -> netvm  id /),
    ]);
    const undid = keepGoing ? 'the signal undid nothing, but each VM that failed \\(below\\) was undone alone, as without it' : 'the signal undid nothing';
    expect({ code: run.code, stderr: run.stderr }).toEqual({
      code: 130,
      stderr: [
        expect.stringMatching(lineOf(endings[2][1])),
        expect.stringMatching(new RegExp(`^spectrum-link: link interrupted by SIGINT after it had made its links: ${undid}; the links it made stay \\(printed\\), and its take-down of links to providers no longer named went on regardless and took them down \\(printed\\), then failed \\(above\\)$`)),
        ...(keepGoing ? [expect.stringMatching(/^spectrum-link: link c0 failed: VM c0 in .* is not valid .*nosuchvm/)] : []),
      ],
    });
  });

  // An error of no LinkerError out of the take-down (another module's, which has a `kind`; or a
  // bug, which has none), thrown where the state is probed before it (nothing taken down) or
  // written after it (taken down, not recorded).
  it.each(
    (['the probe before it', 'the write after it'] as const).flatMap((where) =>
      [true, false].flatMap((moduleError) => [false, true].map((keepGoing) => [where, moduleError, keepGoing] as const)),
    ),
  )('an error of no LinkerError from %s (another module\'s: %s; --keep-going: %s): what the run did is said as where it ends well, then that error as said without it (exit 1; a bug: 70)', async (where, moduleError, keepGoing) => {
    const c0 = vmName('c0');
    await addVm(c0, ['nosuchvm']);
    const dropped = await linkC1ThenDrop();
    const thrown = moduleError
      ? Object.assign(new Error('listing devices failed: No buffer space available'), { name: 'DeviceError', kind: 'query-failed' })
      : new TypeError("Cannot read properties of undefined (reading 'links')");
    const arm = (): void => {
      let applied = false;
      kernel.whileApplying = () => {
        if (where === 'the probe before it' && !applied) store.thrown = thrown;
        applied = true;
      };
      kernel.whileRemoving = () => void (where === 'the write after it' && (store.thrown = thrown));
    };
    const takenDown = where === 'the write after it';
    arm();
    await expect(keepGoing ? linkVmsKeepGoing([c0, c1, c2], options()) : linkVms([c1, c2], options())).rejects.toMatchObject({
      name: 'LinkerError',
      kind: 'take-down-failed',
      failure: thrown,
      failed: keepGoing ? [{ vm: c0, error: expect.objectContaining({ name: 'ConfigError', kind: 'invalid-vm' }) }] : [],
      linked: new Map([
        [c1, [expect.objectContaining({ vm: c1, provider: NETVM })]],
        [c2, [expect.objectContaining({ vm: c2, provider: NETVM })]],
      ]),
      outcome: expect.objectContaining({ unlinked: takenDown ? new Map([[c1, [expect.objectContaining({ vm: c1, provider: netvm2, id: dropped.id })]]]) : new Map() }),
    });
    arm();
    const run = await linkCli(keepGoing ? ['--keep-going', c0, c1, c2] : [c1, c2]);
    expect(textOf(run.stdout)).toEqual([
      expect.stringMatching(/^c1 -> netvm  id /),
      ...(takenDown ? [`unlinked c1 -> netvm2 (id ${dropped.id}, kept): netvm2 is no longer among c1's providers`] : []),
      expect.stringMatching(/^c2 -> netvm  id /),
    ]);
    const failedLine = expect.stringMatching(/^spectrum-link: link c0 failed: VM c0 in .* is not valid .*nosuchvm/);
    // A bug's line comes last, after the lines written before it is rethrown (withLeftDown).
    expect({ code: run.code, stderr: run.stderr }).toEqual(
      moduleError
        ? { code: 1, stderr: [`spectrum-link: ${thrown.message}`, ...(keepGoing ? [failedLine] : [])] }
        : { code: 70, stderr: [...(keepGoing ? [failedLine] : []), `spectrum-link: internal error: ${thrown.message}`] },
    );
  });

  // A bug (an error of no kind) out of the take-down itself: the lookup of the devices of a link
  // recorded without attach modes (whether it is up), or their removal.
  it.each((['the lookup of its devices', 'their removal'] as const).flatMap((where) => [false, true].map((keepGoing) => [where, keepGoing] as const)))(
    'a bug in %s (--keep-going: %s): still a bug (exit 70, its line `internal error:` and last), the line saying what the take-down did; what the run did said as where it ends well',
    async (where, keepGoing) => {
      const c0 = vmName('c0');
      await addVm(c0, ['nosuchvm']);
      const dropped = await linkC1ThenDrop();
      const bug = new TypeError("Cannot read properties of undefined (reading 'index')");
      if (where === 'the lookup of its devices') {
        // Recorded before the state kept attach modes: whether it is up is looked up.
        const state = await loadState(stateDir);
        await writeFile(join(stateDir, 'links.json'), serializeState(setAttachments(state, [{ pair: { client: c1, provider: netvm2 }, attached: undefined }])));
        kernel.lookupBug = { device: dropped.bridge, error: bug };
      } else {
        kernel.whileRemoving = () => {
          throw bug;
        };
      }
      await expect(keepGoing ? linkVmsKeepGoing([c0, c1, c2], options()) : linkVms([c1, c2], options())).rejects.toMatchObject({
        name: 'LinkerError',
        kind: 'unlisted-not-taken-down',
        failure: bug,
        outcome: expect.objectContaining({ linked: new Map([[c1, [expect.objectContaining({ provider: NETVM })]], [c2, [expect.objectContaining({ provider: NETVM })]]]) }),
      });
      const run = await linkCli(keepGoing ? ['--keep-going', c0, c1, c2] : [c1, c2]);
      expect(textOf(run.stdout)).toEqual([expect.stringMatching(/^c1 -> netvm  id /), expect.stringMatching(/^c2 -> netvm  id /)]);
      const said =
        where === 'the lookup of its devices'
          ? 'linked, but taking down c1 -> netvm2 \\(no longer among the providers\\) was not begun: whether their devices exist .* is unknown: '
          : `linked, but taking down c1 -> netvm2 \\(id ${dropped.id}\\), no longer among the providers, stopped part-way: `;
      const tail = where === 'the lookup of its devices' ? '; so none of them was taken down: ' : '; by then whether it had deleted any of their devices .* is unknown; the state file still records them as linked \\(README: A provider dropped\\): ';
      expect({ code: run.code, stderr: run.stderr }).toEqual({
        code: 70,
        stderr: [
          ...(keepGoing ? [expect.stringMatching(/^spectrum-link: link c0 failed: VM c0 in .* is not valid .*nosuchvm/)] : []),
          expect.stringMatching(new RegExp(`^spectrum-link: internal error: ${said}${bug.message.replace(/[()]/g, '\\$&')}${tail}`)),
        ],
      });
    },
  );

  it.each(
    (['not begun (a socket path for a NIC of the link)', 'stopped part-way (the kernel keeps its bridge)', 'failed with an error of no LinkerError (the probe before it)'] as const).flatMap((how) => [false, true].map((keepGoing) => [how, keepGoing] as const)),
  )('a signal after the last safe point, the take-down then %s (--keep-going: %s): the line says how far the take-down got, not that it went on where it had not', async (how, keepGoing) => {
    const c0 = vmName('c0');
    await addVm(c0, ['nosuchvm']);
    const notBegun = how.startsWith('not begun');
    const stopped = how.startsWith('stopped');
    // netvm2's side of the link to be taken down is QEMU's: its socket checked first (not begun:
    // refused, as too long), then the state dir probed, its NIC detached, the link's devices deleted.
    let armed = false;
    const vmm: VmmPort = {
      ...NO_VMM,
      checkSocket: (_kind, vm) => {
        if (!armed || vm !== netvm2 || stopped) return;
        process.emit('SIGINT', 'SIGINT');
        if (notBegun) throw new CliError('--qmp-socket gives VM netvm2 a socket path too long', EXIT.usage);
        store.thrown = Object.assign(new Error('listing devices failed: No buffer space available'), { name: 'DeviceError', kind: 'query-failed' });
      },
    };
    const dropped = await linkC1ThenDrop(['none', 'netvm2=qemu'], vmm);
    if (stopped) {
      kernel.host = new Map([dropped.clientDevice, dropped.providerDevice, dropped.bridge].map((name): [string, ObservedDevice] => [name, { name, kind: name === dropped.bridge ? 'bridge' : 'tun' } as ObservedDevice]));
      kernel.kept.add(dropped.bridge);
      kernel.whileRemoving = () => void process.emit('SIGINT', 'SIGINT');
    }
    armed = true;
    const run = await linkCli(keepGoing ? ['--keep-going', c0, c1, c2] : [c1, c2], stateDir, { vmm });
    expect(textOf(run.stdout)).toEqual([expect.stringMatching(/^c1 -> netvm  id /), expect.stringMatching(/^c2 -> netvm  id /)]);
    const undid = keepGoing ? 'the signal undid nothing, but each VM that failed \\(below\\) was undone alone, as without it' : 'the signal undid nothing';
    const reach = notBegun ? 'failed \\(above\\) before it took any of them down' : stopped ? 'went on regardless, and stopped part-way \\(above\\)' : 'failed \\(above\\)';
    const failure = notBegun
      ? /^spectrum-link: linked, but taking down c1 -> netvm2 \(no longer among the providers\) was not begun: --qmp-socket /
      : stopped
        ? /^spectrum-link: linked, but taking down c1 -> netvm2 .*stopped part-way: removing device /
        : /^spectrum-link: listing devices failed: No buffer space available$/;
    expect({ code: run.code, stderr: run.stderr }).toEqual({
      code: 130,
      stderr: [
        expect.stringMatching(failure),
        expect.stringMatching(new RegExp(`^spectrum-link: link interrupted by SIGINT after it had made its links: ${undid}; the links it made stay \\(printed\\), and its take-down of links to providers no longer named ${reach}$`)),
        ...(keepGoing ? [expect.stringMatching(/^spectrum-link: link c0 failed: VM c0 in .* is not valid .*nosuchvm/)] : []),
      ],
    });
  });

  it.each([false, true])('a signal after the last safe point, the take-down then failed by a bug (--keep-going: %s): its line still says it is an internal error, as without the signal; exit 130', async (keepGoing) => {
    const c0 = vmName('c0');
    await addVm(c0, ['nosuchvm']);
    const bug = new TypeError("Cannot read properties of undefined (reading 'links')");
    let armed = false;
    const vmm: VmmPort = {
      ...NO_VMM,
      checkSocket: (_kind, vm) => {
        if (!armed || vm !== netvm2) return;
        process.emit('SIGINT', 'SIGINT');
        store.thrown = bug;
      },
    };
    await linkC1ThenDrop(['none', 'netvm2=qemu'], vmm);
    armed = true;
    const run = await linkCli(keepGoing ? ['--keep-going', c0, c1, c2] : [c1, c2], stateDir, { vmm });
    expect(textOf(run.stdout)).toEqual([expect.stringMatching(/^c1 -> netvm  id /), expect.stringMatching(/^c2 -> netvm  id /)]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({
      code: 130,
      stderr: [
        `spectrum-link: internal error: ${bug.message}`,
        expect.stringMatching(/^spectrum-link: link interrupted by SIGINT after it had made its links: .*its take-down of links to providers no longer named failed \(above\)$/),
        ...(keepGoing ? [expect.stringMatching(/^spectrum-link: link c0 failed: VM c0 in .* is not valid .*nosuchvm/)] : []),
      ],
    });
  });

  it.each([false, true])('a signal after the last safe point, the removal of the take-down then stopped by a bug (--keep-going: %s): its line says it is an internal error and what the take-down did; exit 130', async (keepGoing) => {
    const c0 = vmName('c0');
    await addVm(c0, ['nosuchvm']);
    const bug = new TypeError("Cannot read properties of undefined (reading 'index')");
    const dropped = await linkC1ThenDrop();
    kernel.whileRemoving = () => {
      process.emit('SIGINT', 'SIGINT');
      throw bug;
    };
    const run = await linkCli(keepGoing ? ['--keep-going', c0, c1, c2] : [c1, c2]);
    expect(textOf(run.stdout)).toEqual([expect.stringMatching(/^c1 -> netvm  id /), expect.stringMatching(/^c2 -> netvm  id /)]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({
      code: 130,
      stderr: [
        expect.stringMatching(new RegExp(`^spectrum-link: internal error: linked, but taking down c1 -> netvm2 \\(id ${dropped.id}\\), no longer among the providers, stopped part-way: Cannot read properties `)),
        expect.stringMatching(/^spectrum-link: link interrupted by SIGINT after it had made its links: .*its take-down of links to providers no longer named went on regardless, and stopped part-way \(above\)$/),
        ...(keepGoing ? [expect.stringMatching(/^spectrum-link: link c0 failed: VM c0 in .* is not valid .*nosuchvm/)] : []),
      ],
    });
  });

  it('on a terminal, plain link erases its progress line before it prints the VMs it linked: each line starts a line of its own', async () => {
    await linkC1ThenDrop();
    breakTakeDown('a kernel refusal');
    const { code, written } = await linkOnTerminal(CLIENTS);
    // A progress line was drawn (redrawn in place: carriage return, erase line).
    expect(written).toContain('\r\x1b[2Klinking: devices for ');
    const screen = terminalScreen(written);
    expect({ code, linked: screen.filter((line) => / -> netvm  /.test(line)) }).toEqual({
      code: 1,
      linked: [expect.stringMatching(/^c1 -> netvm  id /), expect.stringMatching(/^c2 -> netvm  id /), expect.stringMatching(/^c3 -> netvm  id /)],
    });
  });
});

describe('link failed by a bug while a signal came, then undone', () => {
  it("says the bug's line as an internal error, as without the signal, then the signal's; exit 130", async () => {
    const bug = new TypeError("Cannot read properties of undefined (reading 'creates')");
    kernel.whileApplying = () => {
      process.emit('SIGINT', 'SIGINT');
      throw bug;
    };
    const run = await linkCli([CLIENTS[0]!]);
    expect({ code: run.code, stdout: run.stdout, stderr: run.stderr }).toEqual({
      code: 130,
      stdout: '',
      stderr: [`spectrum-link: internal error: ${bug.message}`, expect.stringMatching(/^spectrum-link: link interrupted by SIGINT while it failed \(above\) and undid the run: /)],
    });
  });

  // The undo cut short by a bug (in its write back of the state file, or its deletion of devices):
  // it did not go on to its end, and what the run made may be left over.
  it.each(['the write back of the state file', 'the deletion of its devices'] as const)('its VMM refusing, a signal, then %s failed by a bug: the signal\'s line says what it made may be left over, not that the undo went on to its end; exit 130', async (where) => {
    const bug = new TypeError("Cannot read properties of undefined (reading 'devices')");
    const vmm: VmmPort = {
      ...NO_VMM,
      attach: async () => {
        process.emit('SIGINT', 'SIGINT');
        if (where === 'the write back of the state file') store.thrown = bug;
        else kernel.undoBug = bug;
        throw Object.assign(new Error('QEMU of c1 refused NIC: DeviceAddFailed: Duplicate ID'), { name: 'VmmError', kind: 'refused' });
      },
    };
    const run = await linkCli([CLIENTS[0]!], stateDir, { vmm, attach: ['none', 'c1=qemu'] });
    expect({ code: run.code, stdout: run.stdout, stderr: run.stderr }).toEqual({
      code: 130,
      stdout: '',
      stderr: [
        `spectrum-link: internal error: ${bug.message}`,
        BUG_STOPPED_AT_SIGINT,
      ],
    });
  });
});

describe('link --keep-going with a VM that failed by bad input, whatever else fails: exit 2, as where it ends well (bad input outranks a failure)', () => {
  const c0 = vmName('c0');
  const [c1] = CLIENTS as [VmName];
  const netvm2 = vmName('netvm2');
  // c0 attached by QEMU through a socket path that cannot be: bad input (plain link exits 2 on it).
  const vmm: VmmPort = {
    ...NO_VMM,
    checkSocket: (kind, vm) => {
      if (vm === c0) throw new CliError(`--qmp-socket gives VM ${vm} a socket path too long (${kind})`, EXIT.usage);
    },
  };
  const attach = ['none', 'c0=qemu'];
  const badInputLine = 'spectrum-link: link c0 failed: --qmp-socket gives VM c0 a socket path too long (qemu)';
  const unmakeable = '/proc/spectrum-link-test-no-such-dir/state';

  /** c1 linked to netvm2 too, netvm2 then dropped from its config: the next run takes that link down. */
  const dropNetvm2 = async (): Promise<void> => {
    await addVm(netvm2);
    await writeFile(join(configDir, c1, 'providers', 'net', netvm2), '');
    await linkVms([c1], options());
    await rm(join(configDir, c1, 'providers', 'net', netvm2));
  };

  // Each: how the run is made to end, the state dir it runs with, and the line of that ending (none where it ends well).
  const endings: readonly (readonly [string, () => Promise<string>, RegExp | undefined])[] = [
    ['it ends well', async () => stateDir, undefined],
    [
      'the kernel refuses the take-down of a dropped provider',
      async () => {
        await dropNetvm2();
        kernel.lookupRefused = 'removing devices failed before any was removed: looking up snb1 failed (No buffer space available), so whether it exists is unknown; run it again';
        return stateDir;
      },
      /^spectrum-link: linked, but taking down c1 -> netvm2 \(no longer among the providers\) failed: removing devices failed before any was removed/,
    ],
    [
      'the state file is not written after that take-down',
      async () => {
        await dropNetvm2();
        kernel.whileRemoving = () => void (store.failSaves = 1);
        return stateDir;
      },
      /^spectrum-link: linked; then, as no longer among the providers, took down c1 -> netvm2 .*but then cannot write state file /,
    ],
    [
      'the state file is not written in the pass one by one (c1\'s record of its ids)',
      async () => {
        // The one transaction fails at c0's side before it writes anything; one by one, c0 fails
        // alone, and c1's record is the run's first write.
        store.failSaves = 1;
        return stateDir;
      },
      /^spectrum-link: cannot write state file .*\(ENOSPC\)/,
    ],
    ['the state lock cannot be taken (no state dir yet, and none can be made)', async () => unmakeable, /^spectrum-link: state dir \/proc\/spectrum-link-test-no-such-dir\/state .*cannot be used/],
  ];

  it.each(endings)('where %s: the line of that ending, then c0\'s line; exit 2', async (_how, prepare, endingLine) => {
    await addVm(c0, [NETVM]);
    const state = await prepare();
    const run = await linkCli(['--keep-going', c0, c1], state, { vmm, attach });
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 2, stderr: [...(endingLine === undefined ? [] : [expect.stringMatching(endingLine)]), badInputLine] });
  });

  it('without the bad input (c0 invalid instead: exit 1 alone), such an ending exits 1', async () => {
    await addVm(c0, ['nosuchvm']);
    store.failSaves = 1;
    const run = await linkCli(['--keep-going', c0, c1], stateDir, { vmm, attach });
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 1, stderr: [expect.stringMatching(/^spectrum-link: cannot write state file /), expect.stringMatching(/^spectrum-link: link c0 failed: VM c0 in .* is not valid .*nosuchvm/)] });
  });

  // c0 failed by a bug instead (an error of no kind out of the check of its side's socket, which
  // plain link exits 70 on), alone or with c2 failed by that bad input: 70 outranks 2 and the
  // ending's own 1 (or 2), the ending's line said as it is, c0's as a bug.
  it.each(endings.flatMap(([how, prepare, endingLine]) => [false, true].map((badInput) => [how, badInput, prepare, endingLine] as const)))(
    'c0 failed by a bug, where %s (c2 failed by bad input too: %s): the line of that ending (no `internal error:`), then c0\'s saying it is one; exit 70',
    async (_how, badInput, prepare, endingLine) => {
      const c2 = CLIENTS[1] as VmName;
      const bug = new TypeError("Cannot read properties of undefined (reading 'socket')");
      await addVm(c0, [NETVM]);
      const buggy: VmmPort = {
        ...NO_VMM,
        checkSocket: (kind, vm) => {
          if (vm === c0) throw bug;
          if (vm === c2) throw new CliError(`--qmp-socket gives VM ${vm} a socket path too long (${kind})`, EXIT.usage);
        },
      };
      const state = await prepare();
      // c2 before c1: where c1's record fails the run, c2 has failed already.
      const run = await linkCli(['--keep-going', c0, ...(badInput ? [c2] : []), c1], state, { vmm: buggy, attach: ['none', 'c0=qemu', 'c2=qemu'] });
      expect({ code: run.code, stderr: run.stderr }).toEqual({
        code: 70,
        stderr: [
          ...(endingLine === undefined ? [] : [expect.stringMatching(endingLine)]),
          `spectrum-link: link c0 failed: internal error: ${bug.message}`,
          ...(badInput ? ['spectrum-link: link c2 failed: --qmp-socket gives VM c2 a socket path too long (qemu)'] : []),
        ],
      });
    },
  );

  // The one transaction failed by a bug (out of the check of c0's side's socket, once) that no VM
  // failed by again one by one (c0 then linked): said on every ending all the same, exit 70 (but
  // where the state lock is not taken: the checks before it meet the bug, c0's failure then).
  it.each(endings.slice(0, 4))('the one transaction failed by a bug no VM failed by again, where %s: the line of that ending, then the bug\'s; exit 70', async (_how, prepare, endingLine) => {
    const bug = new TypeError("Cannot read properties of undefined (reading 'socket')");
    await addVm(c0, [NETVM]);
    let thrown = false;
    const once: VmmPort = {
      ...NO_VMM,
      checkSocket: (_kind, vm) => {
        if (vm !== c0 || thrown) return;
        thrown = true;
        throw bug;
      },
    };
    const state = await prepare();
    const run = await linkCli(['--keep-going', c0, c1], state, { vmm: once, attach });
    expect({ code: run.code, stderr: run.stderr }).toEqual({
      code: 70,
      stderr: [...(endingLine === undefined ? [] : [expect.stringMatching(endingLine)]), `spectrum-link: the failure that had it link VM by VM: internal error: ${bug.message}`],
    });
  });
});

describe('link --keep-going with a VM failed by a bug (an error of no kind) in its own part of the run: it fails alone, undone as any failed VM, said as plain link says a bug (`internal error:`, --json `internalError`), exit 70', () => {
  const [c1, c2, c3] = CLIENTS as [VmName, VmName, VmName];
  const bug = new TypeError("Cannot read properties of undefined (reading 'nic')");
  /** A VMM whose attach of a NIC of `vm` throws the bug (first running `first`, where given). */
  const attachBug = (vm: VmName, first?: () => void): VmmPort => ({
    ...NO_VMM,
    attach: async (_kind, at) => {
      if (at !== vm) return true;
      first?.();
      throw bug;
    },
  });
  const recorded = async (): Promise<string[]> => (await loadState(stateDir)).links.map((link) => link.client).sort();
  const linkedLines = (stdout: string): string[] => stdout.split('\n').filter((line) => / -> /.test(line));

  it.each([false, true])('as its NIC is hot-plugged (the pass VM by VM; --json: %s): c2 linked, c1 undone, its line as plain link says that bug after `link c1 failed: `', async (json) => {
    const attach = ['none', 'c1=qemu'];
    const plain = await linkCli([c1, c2], stateDir, { vmm: attachBug(c1), attach });
    expect({ code: plain.code, stderr: plain.stderr }).toEqual({ code: 70, stderr: [`spectrum-link: internal error: ${bug.message}`] });
    const run = await linkCli([...(json ? ['--json'] : []), '--keep-going', c1, c2], stateDir, { vmm: attachBug(c1), attach });
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 70, stderr: [`spectrum-link: link c1 failed: ${plain.stderr[0]?.replace(/^spectrum-link: /, '')}`] });
    if (json) {
      expect(run.stdout.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as unknown)).toEqual([
        { vm: 'c2', links: [expect.objectContaining({ vm: 'c2', provider: NETVM })] },
        { vm: 'c1', links: [], error: bug.message, internalError: true },
      ]);
    } else expect(linkedLines(run.stdout)).toEqual([expect.stringMatching(/^c2 -> netvm  id /)]);
    expect(await recorded()).toEqual(['c2']);
  });

  it('as it is linked again one by one (the one transaction refused by the kernel at c1): c1 fails as the kernel refused it, c2 by the bug, undone; c3 linked; exit 70', async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    kernel.refused.add(linkDeviceNames(PREFIX, ids[0]!).bridge);
    const run = await linkCli(['--keep-going', c1, c2, c3], stateDir, { vmm: attachBug(c2), attach: ['none', 'c2=qemu'] });
    expect({ code: run.code, stderr: run.stderr }).toEqual({
      code: 70,
      stderr: [expect.stringMatching(/^spectrum-link: link c1 failed: ip link add \S+ type bridge failed: File exists$/), `spectrum-link: link c2 failed: internal error: ${bug.message}`],
    });
    expect(linkedLines(run.stdout)).toEqual([expect.stringMatching(/^c3 -> netvm  id /)]);
    expect(await recorded()).toEqual(['c3']);
  });

  it('as its NIC comes out of its VMM to be attached another way (the take-out VM by VM): c1 fails with nothing taken out, its link as it was; c2 linked; exit 70', async () => {
    // c1's client side up as QEMU attached it, to be attached another way (--attach none).
    await recordUpAsQemu(c1);
    const detached: string[] = [];
    const vmm: VmmPort = {
      ...NO_VMM,
      detach: async (_kind, vm) => void detached.push(vm),
      unansweredDetach: (_kind, vm) => {
        if (vm === c1) throw bug;
        return undefined;
      },
    };
    const run = await linkCli(['--keep-going', c1, c2], stateDir, { vmm });
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 70, stderr: [`spectrum-link: link c1 failed: internal error: ${bug.message}`] });
    expect(linkedLines(run.stdout)).toEqual([expect.stringMatching(/^c2 -> netvm  id /)]);
    expect(detached).toEqual([]);
    expect((await loadState(stateDir)).links.map((link) => [link.client, link.attached?.client])).toEqual(expect.arrayContaining([['c1', 'qemu']]));
  });

  it('the one transaction of the others (c2, c3) failed once by a bug of the message c1 failed by as its NIC came out before it: that is no VM failing by it again one by one, so it is said too; exit 70', async () => {
    // c1's client side up as QEMU attached it, to be attached another way (--attach none).
    const allocation = await recordUpAsQemu(c1);
    const vmm: VmmPort = {
      ...NO_VMM,
      unansweredDetach: (_kind, vm) => {
        if (vm === c1) throw bug;
        return undefined;
      },
    };
    // Another bug, of the same message, as the transaction looks up c2's devices (once).
    const c2Id = allocateMany(allocation.state, [c2, c3].map((client) => ({ client, provider: NETVM }))).links[0]!.id;
    kernel.lookupBug = { device: linkDeviceNames(PREFIX, c2Id).bridge, error: new TypeError(bug.message), once: true };
    const run = await linkCli(['--keep-going', c1, c2, c3], stateDir, { vmm });
    expect({ code: run.code, linked: linkedLines(run.stdout), stderr: run.stderr }).toEqual({
      code: 70,
      linked: [expect.stringMatching(/^c2 -> netvm  id /), expect.stringMatching(/^c3 -> netvm  id /)],
      stderr: [`spectrum-link: link c1 failed: internal error: ${bug.message}`, `spectrum-link: the failure that had it link VM by VM: internal error: ${bug.message}`],
    });
    expect(kernel.lookupBug).toBeUndefined();
  });

  it('as the one transaction of its run of one VM makes its devices: it fails, said as a bug; exit 70', async () => {
    const id = allocateMany(emptyState(), [{ client: c1, provider: NETVM }]).links[0]!.id;
    kernel.lookupBug = { device: linkDeviceNames(PREFIX, id).bridge, error: bug };
    const run = await linkCli(['--json', '--keep-going', c1]);
    expect({ code: run.code, stdout: run.stdout.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as unknown), stderr: run.stderr }).toEqual({
      code: 70,
      stdout: [{ vm: 'c1', links: [], error: bug.message, internalError: true }],
      stderr: [`spectrum-link: link c1 failed: internal error: ${bug.message}`],
    });
  });

  it('in the checks of a run with no state dir yet and nothing to link but it: it fails, said as a bug, and no state dir is made; exit 70', async () => {
    const fresh = join(stateDir, 'fresh');
    const vmm: VmmPort = {
      ...NO_VMM,
      checkSocket: (_kind, vm) => {
        if (vm === c1) throw bug;
      },
    };
    const run = await linkCli(['--keep-going', c1], fresh, { vmm, attach: ['none', 'c1=qemu'] });
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 70, stderr: [`spectrum-link: link c1 failed: internal error: ${bug.message}`] });
    expect(existsSync(fresh)).toBe(false);
  });

  it.each([false, true])('a shown text in its message escaped, on one line, as other messages are (the run then stopped by a bug of its own, whose line comes last, the lines before it written first: %s)', async (stopped) => {
    const shown = new TypeError("Cannot read properties of undefined (reading '\x1b[31mred\nline')");
    const escaped = "Cannot read properties of undefined (reading '\\u001b[31mred line')";
    const ownBug = new TypeError("Cannot read properties of undefined (reading 'devices')");
    const refused = Object.assign(new Error('QEMU of c2 refused NIC: DeviceAddFailed: Duplicate ID'), { name: 'VmmError', kind: 'refused' });
    const vmm: VmmPort = {
      ...NO_VMM,
      attach: async (_kind, vm) => {
        if (vm === c1) throw shown;
        if (vm !== c2 || !stopped) return true;
        // c2 refused, its undo then stopped by a bug: the run's own.
        kernel.undoBug = ownBug;
        throw refused;
      },
    };
    const run = await linkCli(['--keep-going', c1, c2], stateDir, { vmm, attach: ['none', 'c1=qemu', 'c2=qemu'] });
    expect({ code: run.code, stderr: run.stderr }).toEqual({
      code: 70,
      stderr: [
        `spectrum-link: link c1 failed: internal error: ${escaped}`,
        ...(stopped
          ? [
              `spectrum-link: link c2 failed: ${refused.message}`,
              'spectrum-link: link stopped by a bug as it undid c2: what the run had made for it (devices, ids) may be left over: run it again, and it converges',
              `spectrum-link: internal error: ${ownBug.message}`,
            ]
          : []),
      ],
    });
  });

  it('the one transaction failed by it too (c1\'s devices looked up with every VM\'s), a signal then stopping the pass one by one: the line of why it linked VM by VM says it is a bug, as c1\'s does; exit 130', async () => {
    const id = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links[0]!.id;
    kernel.lookupBug = { device: linkDeviceNames(PREFIX, id).bridge, error: bug };
    // One by one, a SIGINT as c2's devices are made (c1 failed before them).
    kernel.whileApplying = () => void process.emit('SIGINT', 'SIGINT');
    const run = await linkCli(['--keep-going', c1, c2, c3]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({
      code: 130,
      stderr: [
        expect.stringMatching(/^spectrum-link: link interrupted by SIGINT while linking VM by VM after a failure \(--keep-going\): undid what it had made for c2, /),
        `spectrum-link: the failure that had it link VM by VM: internal error: ${bug.message}`,
        `spectrum-link: link c1 failed: internal error: ${bug.message}`,
      ],
    });
  });

  it.each([false, true])('none of one VM\'s: the one transaction of several VMs failed by it (c1\'s devices looked up with every VM\'s), no VM by it again one by one (--json: %s): every VM linked one by one, the bug said all the same, not lost; exit 70', async (json) => {
    const c0 = vmName('c0');
    await addVm(c0, ['nosuchvm']);
    const id = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links[0]!.id;
    kernel.lookupBug = { device: linkDeviceNames(PREFIX, id).bridge, error: bug, once: true };
    const run = await linkCli([...(json ? ['--json'] : []), '--keep-going', c0, c1, c2, c3]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({
      code: 70,
      stderr: [expect.stringMatching(/^spectrum-link: link c0 failed: VM c0 in .* is not valid .*nosuchvm/), `spectrum-link: the failure that had it link VM by VM: internal error: ${bug.message}`],
    });
    if (json) {
      expect(run.stdout.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as unknown)).toEqual([
        ...[c1, c2, c3].map((vm) => ({ vm, links: [expect.objectContaining({ vm, provider: NETVM })] })),
        { vm: 'c0', links: [], error: expect.stringMatching(/nosuchvm/) },
      ]);
    } else expect(linkedLines(run.stdout)).toEqual([/^c1 -> netvm  id /, /^c2 -> netvm  id /, /^c3 -> netvm  id /].map((line) => expect.stringMatching(line)));
    expect(await recorded()).toEqual(['c1', 'c2', 'c3']);
  });

  it.each([false, true])('none of one VM\'s, the pass one by one then stopped by a bug of its own, in c3\'s undo (a signal: %s): said too, with the bug that stopped it', async (signal) => {
    const id = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links[0]!.id;
    kernel.lookupBug = { device: linkDeviceNames(PREFIX, id).bridge, error: bug, once: true };
    const undoBug = new TypeError("Cannot read properties of undefined (reading 'devices')");
    const vmm: VmmPort = {
      ...NO_VMM,
      attach: async (_kind, at) => {
        if (at !== c3) return true;
        if (signal) process.emit('SIGINT', 'SIGINT');
        kernel.undoBug = undoBug;
        throw Object.assign(new Error('QEMU of c3 refused NIC: DeviceAddFailed: Duplicate ID'), { name: 'VmmError', kind: 'refused' });
      },
    };
    const run = await linkCli(['--keep-going', c1, c2, c3], stateDir, { vmm, attach: ['none', 'c3=qemu'] });
    const transactionBug = `spectrum-link: the failure that had it link VM by VM: internal error: ${bug.message}`;
    const cutShort = 'spectrum-link: link stopped by a bug as it undid c3: what the run had made for it (devices, ids) may be left over: run it again, and it converges';
    const c3Failed = 'spectrum-link: link c3 failed: QEMU of c3 refused NIC: DeviceAddFailed: Duplicate ID';
    expect({ code: run.code, stderr: run.stderr }).toEqual(
      signal
        ? { code: 130, stderr: [`spectrum-link: internal error: ${undoBug.message}`, expect.stringMatching(/^spectrum-link: link interrupted by SIGINT as a bug stopped it \(above\): /), c3Failed, cutShort, transactionBug] }
        : { code: 70, stderr: [c3Failed, cutShort, transactionBug, `spectrum-link: internal error: ${undoBug.message}`] },
    );
    expect(linkedLines(run.stdout)).toEqual([/^c1 -> netvm  id /, /^c2 -> netvm  id /].map((line) => expect.stringMatching(line)));
  });

  it('with a signal after the last safe point: the signal\'s 130 outranks its 70, its line still saying it is an internal error', async () => {
    const run = await linkCli(['--keep-going', c1, c2], stateDir, { vmm: attachBug(c1, () => void process.emit('SIGINT', 'SIGINT')), attach: ['none', 'c1=qemu'] });
    expect({ code: run.code, stderr: run.stderr }).toEqual({
      code: 130,
      stderr: [
        'spectrum-link: link interrupted by SIGINT after it had done its work: the signal undid nothing, but each VM that failed (below) was undone alone, as without it',
        `spectrum-link: link c1 failed: internal error: ${bug.message}`,
      ],
    });
    expect(linkedLines(run.stdout)).toEqual([expect.stringMatching(/^c2 -> netvm  id /)]);
  });
});

describe('link --keep-going stopped by a bug in the undo of a failed VM (its state unknown): the VMs it had linked VM by VM stay linked, printed, and with a signal the line says so', () => {
  const [c1, c2, c3] = CLIENTS as [VmName, VmName, VmName];
  const bug = new TypeError("Cannot read properties of undefined (reading 'devices')");
  const refusal = Object.assign(new Error('QEMU of c2 refused NIC: DeviceAddFailed: Duplicate ID'), { name: 'VmmError', kind: 'refused' });
  /** A VMM that refuses `vm`'s NIC, the undo that follows then stopped by the bug (after a SIGINT, where `signal`). */
  const refusingThenBug = (vm: VmName, signal: boolean): VmmPort => ({
    ...NO_VMM,
    attach: async (_kind, at) => {
      if (at !== vm) return true;
      if (signal) process.emit('SIGINT', 'SIGINT');
      kernel.undoBug = bug;
      throw Object.assign(new Error(refusal.message.replace('c2', vm)), { name: refusal.name, kind: refusal.kind });
    },
  });
  const linkedLines = (stdout: string): string[] => stdout.split('\n').filter((line) => / -> /.test(line));
  const stayLinked = /^spectrum-link: link interrupted by SIGINT as a bug stopped it \(above\): the VMs it had linked VM by VM \(printed\) stay linked; what it had made for the VMs it did not link \(devices, ids\) may be left over: run it again, and it converges$/;

  it.each([false, true])('hot-plugging VM by VM, c2 refused, its undo stopped by the bug (a signal: %s): c1 (hot-plugged before) printed, c2\'s failure said, the bug; every id recorded kept', async (signal) => {
    const run = await linkCli(['--keep-going', c1, c2, c3], stateDir, { vmm: refusingThenBug(c2, signal), attach: ['none', 'c2=qemu'] });
    expect(linkedLines(run.stdout)).toEqual([expect.stringMatching(/^c1 -> netvm  id /)]);
    const c2Failed = `spectrum-link: link c2 failed: ${refusal.message}`;
    const cutShort =
      'spectrum-link: link stopped by a bug as it undid c2: what the run had made for it (devices, ids) may be left over; c3, after it, was neither linked nor undone: the devices and ids the run had made for it are left: run it again, and it converges';
    expect({ code: run.code, stderr: run.stderr }).toEqual(
      signal
        ? { code: 130, stderr: [`spectrum-link: internal error: ${bug.message}`, expect.stringMatching(stayLinked), c2Failed, cutShort] }
        : { code: 70, stderr: [c2Failed, cutShort, `spectrum-link: internal error: ${bug.message}`] },
    );
    // Nothing recorded is written away: c2's devices may be there (its undo cut short), and c3's are.
    expect((await loadState(stateDir)).links.map((link) => link.client).sort()).toEqual(['c1', 'c2', 'c3']);
  });

  it.each(['hot-plugging VM by VM', 'one by one'] as const)('%s, the VM refused (c1; one by one c2, c1 refused by the kernel), its undo stopped by the bug as a signal came, none linked yet: the signal\'s line says what it made may be left over, not that it is undone', async (pass) => {
    const oneByOne = pass === 'one by one';
    if (oneByOne) {
      const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
      kernel.refused.add(linkDeviceNames(PREFIX, ids[0]!).bridge);
    }
    const refused = oneByOne ? c2 : c1;
    const run = await linkCli(['--keep-going', c1, c2, c3], stateDir, { vmm: refusingThenBug(refused, true), attach: ['none', `${refused}=qemu`] });
    expect({ code: run.code, stdout: run.stdout, stderr: run.stderr }).toEqual({
      code: 130,
      stdout: '',
      stderr: [
        `spectrum-link: internal error: ${bug.message}`,
        BUG_STOPPED_AT_SIGINT,
        oneByOne ? expect.stringMatching(/^spectrum-link: link c1 failed: ip link add \S+ type bridge failed: File exists$/) : `spectrum-link: link c1 failed: ${refusal.message.replace('c2', 'c1')}`,
        // One by one, c2's failure said too: known before its undo, which the bug cut short.
        ...(oneByOne ? [`spectrum-link: link c2 failed: ${refusal.message}`] : []),
        oneByOne
          ? 'spectrum-link: link stopped by a bug as it undid c2: what the run had made for it (devices, ids) may be left over; c3, after it, was not linked (the pass one by one had not got to it): run it again, and it converges'
          : 'spectrum-link: link stopped by a bug as it undid c1: what the run had made for it (devices, ids) may be left over; c2, c3, after it, were neither linked nor undone: the devices and ids the run had made for them are left: run it again, and it converges',
      ],
    });
    // Hot-plugging, c2 and c3 keep the devices and ids the one transaction made for them.
    if (!oneByOne) expect((await loadState(stateDir)).links.map((link) => link.client).sort()).toEqual(['c1', 'c2', 'c3']);
  });

  it('hot-plugging VM by VM, a signal after c1\'s NIC, the undo of c2 and c3 it makes then stopped by the bug: c1 printed, the line says what it made for c2 and c3 may be left over', async () => {
    const vmm: VmmPort = {
      ...NO_VMM,
      attach: async (_kind, at) => {
        if (at !== c1) return true;
        process.emit('SIGINT', 'SIGINT');
        kernel.undoBug = bug;
        return true;
      },
    };
    const run = await linkCli(['--keep-going', c1, c2, c3], stateDir, { vmm, attach: ['none', 'c1=qemu', 'c2=qemu'] });
    expect({ code: run.code, linked: linkedLines(run.stdout), stderr: run.stderr }).toEqual({
      code: 130,
      linked: [expect.stringMatching(/^c1 -> netvm  id /)],
      stderr: [
        `spectrum-link: internal error: ${bug.message}`,
        expect.stringMatching(stayLinked),
        'spectrum-link: link stopped by a bug as it undid c2, c3: what the run had made for them (devices, ids) may be left over: run it again, and it converges',
      ],
    });
  });

  it('with --json: c1\'s line, then c2\'s', async () => {
    const run = await linkCli(['--json', '--keep-going', c1, c2, c3], stateDir, { vmm: refusingThenBug(c2, false), attach: ['none', 'c2=qemu'] });
    expect({ code: run.code, stdout: run.stdout.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as unknown) }).toEqual({
      code: 70,
      stdout: [{ vm: 'c1', links: [expect.objectContaining({ vm: 'c1', provider: NETVM })] }, { vm: 'c2', links: [], error: refusal.message }],
    });
  });

  it.each([false, true])('linking one by one (c1 refused by the kernel), c2 linked, c3 refused by its VMM and its undo stopped by the bug (a signal: %s): c2 printed, c1\'s failure said, the bug', async (signal) => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    kernel.refused.add(linkDeviceNames(PREFIX, ids[0]!).bridge);
    const run = await linkCli(['--keep-going', c1, c2, c3], stateDir, { vmm: refusingThenBug(c3, signal), attach: ['none', 'c3=qemu'] });
    expect(linkedLines(run.stdout)).toEqual([expect.stringMatching(/^c2 -> netvm  id /)]);
    const c1Failed = expect.stringMatching(/^spectrum-link: link c1 failed: ip link add \S+ type bridge failed: File exists$/);
    const cutShort = 'spectrum-link: link stopped by a bug as it undid c3: what the run had made for it (devices, ids) may be left over: run it again, and it converges';
    // c3's own failure, known before its undo, which the bug cut short.
    const c3Failed = `spectrum-link: link c3 failed: ${refusal.message.replace('c2', 'c3')}`;
    expect({ code: run.code, stderr: run.stderr }).toEqual(
      signal
        ? { code: 130, stderr: [`spectrum-link: internal error: ${bug.message}`, expect.stringMatching(stayLinked), c1Failed, c3Failed, cutShort] }
        : { code: 70, stderr: [c1Failed, c3Failed, cutShort, `spectrum-link: internal error: ${bug.message}`] },
    );
  });

  it('linking one by one, with --json: c2\'s line, then c1\'s and c3\'s (its failure known before its undo, which the bug cut short)', async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    kernel.refused.add(linkDeviceNames(PREFIX, ids[0]!).bridge);
    const run = await linkCli(['--json', '--keep-going', c1, c2, c3], stateDir, { vmm: refusingThenBug(c3, false), attach: ['none', 'c3=qemu'] });
    expect({ code: run.code, stdout: run.stdout.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as unknown) }).toEqual({
      code: 70,
      stdout: [
        { vm: 'c2', links: [expect.objectContaining({ vm: 'c2', provider: NETVM })] },
        { vm: 'c1', links: [], error: expect.stringMatching(/^ip link add \S+ type bridge failed: File exists$/) },
        { vm: 'c3', links: [], error: refusal.message.replace('c2', 'c3') },
      ],
    });
  });

  it('linking one by one, the VM whose undo the bug stopped (c3) not the last: the run stops there, c3\'s ids recorded kept, not written away by the next VM (c2) going on from the state before', async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    kernel.refused.add(linkDeviceNames(PREFIX, ids[0]!).bridge);
    const run = await linkCli(['--keep-going', c1, c3, c2], stateDir, { vmm: refusingThenBug(c3, false), attach: ['none', 'c3=qemu'] });
    expect({ code: run.code, linked: linkedLines(run.stdout), stderr: run.stderr }).toEqual({
      code: 70,
      linked: [],
      stderr: [
        expect.stringMatching(/^spectrum-link: link c1 failed: /),
        `spectrum-link: link c3 failed: ${refusal.message.replace('c2', 'c3')}`,
        'spectrum-link: link stopped by a bug as it undid c3: what the run had made for it (devices, ids) may be left over; c2, after it, was not linked (the pass one by one had not got to it): run it again, and it converges',
        `spectrum-link: internal error: ${bug.message}`,
      ],
    });
    expect((await loadState(stateDir)).links.map((link) => [link.client, link.id])).toEqual([['c3', ids[2]]]);
  });

  it.each([false, true])('a run of one VM (c1), its transaction refused by the kernel, its undo stopped by the bug (a signal: %s): c1\'s failure said as the kernel\'s, and that what the run made for it may be left over, not that it was undone', async (signal) => {
    const id = allocateMany(emptyState(), [{ client: c1, provider: NETVM }]).links[0]!.id;
    kernel.refused.add(linkDeviceNames(PREFIX, id).bridge);
    kernel.whileApplying = () => {
      if (signal) process.emit('SIGINT', 'SIGINT');
      kernel.undoBug = bug;
    };
    const run = await linkCli(['--keep-going', c1]);
    const c1Failed = expect.stringMatching(/^spectrum-link: link c1 failed: ip link add \S+ type bridge failed: File exists$/);
    const cutShort = 'spectrum-link: link stopped by a bug as it undid c1: what the run had made for it (devices, ids) may be left over: run it again, and it converges';
    expect({ code: run.code, stderr: run.stderr }).toEqual(
      signal
        ? {
            code: 130,
            stderr: [
              `spectrum-link: internal error: ${bug.message}`,
              BUG_STOPPED_AT_SIGINT,
              c1Failed,
              cutShort,
            ],
          }
        : { code: 70, stderr: [c1Failed, cutShort, `spectrum-link: internal error: ${bug.message}`] },
    );
    // Its id kept: its devices may be there.
    expect((await loadState(stateDir)).links.map((link) => [link.client, link.id])).toEqual([['c1', id]]);
  });

  /** The line of a bug that cut short the undo of the one transaction of several VMs, which then had them linked again one by one. */
  const transactionUndoLine = (message: string): string =>
    `spectrum-link: the undo of its one transaction, which had it link VM by VM, was cut short by a bug: what that had made for the VMs it did not link (devices, ids) may be left over (run it again, and it converges): internal error: ${message}`;

  it('a run of several VMs, its one transaction refused by the kernel (c2), its undo stopped by the bug: the VMs linked again one by one from the state file as that left it (c2 failing again, undone), the bug said as the undo\'s, not as the failure that had it link VM by VM; exit 70', async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    kernel.refused.add(linkDeviceNames(PREFIX, ids[1]!).bridge);
    let applies = 0;
    kernel.whileApplying = () => {
      applies += 1;
      if (applies === 1) kernel.undoBug = bug;
    };
    const run = await linkCli(['--keep-going', c1, c2, c3]);
    expect({ code: run.code, linked: linkedLines(run.stdout), stderr: run.stderr }).toEqual({
      code: 70,
      linked: [expect.stringMatching(/^c1 -> netvm  id /), expect.stringMatching(/^c3 -> netvm  id /)],
      stderr: [expect.stringMatching(/^spectrum-link: link c2 failed: ip link add \S+ type bridge failed: File exists$/), transactionUndoLine(bug.message)],
    });
    // c2's id kept, never written away: the undo the bug cut short left it recorded, and c2's undo one by one goes back to that.
    expect((await loadState(stateDir)).links.map((link) => [link.client, link.id])).toEqual([['c1', ids[0]], ['c2', ids[1]], ['c3', ids[2]]]);
  });

  // A signal, or the state's failure, fails the whole run (nothing goes on one by one): where a bug
  // then cuts short the undo of the one transaction of several VMs, the run stops there as for one
  // VM, saying what it made for them all may be left over; not linked again one by one as after a
  // kernel refusal, said as a pass one by one a signal stopped before any VM.
  it('a run of several VMs, a signal in its one transaction, the undo it makes then stopped by the bug: stopped there, the line says what it made for them may be left over, not that it linked VM by VM after a failure; every id recorded kept', async () => {
    kernel.whileApplying = () => {
      process.emit('SIGINT', 'SIGINT');
      kernel.undoBug = bug;
    };
    const run = await linkCli(['--keep-going', c1, c2, c3]);
    expect({ code: run.code, stdout: run.stdout, stderr: run.stderr }).toEqual({
      code: 130,
      stdout: '',
      stderr: [
        `spectrum-link: internal error: ${bug.message}`,
        BUG_STOPPED_AT_SIGINT,
        'spectrum-link: link stopped by a bug as it undid c1, c2, c3: what the run had made for them (devices, ids) may be left over: run it again, and it converges',
      ],
    });
    expect((await loadState(stateDir)).links.map((link) => link.client).sort()).toEqual(['c1', 'c2', 'c3']);
  });

  it('a run of several VMs (five: two chunks), its one transaction failed by the state file (the second chunk\'s record), the undo then stopped by the bug: stopped there, not linked again one by one, the records written kept; exit 70', async () => {
    const more = ['c4', 'c5'].map(vmName);
    for (const vm of more) await addVm(vm, [NETVM]);
    // The first chunk's record written, the second's fails (as the first chunk's devices are
    // made), and then the undo.
    Object.assign(store, { passSaves: 1, failSaves: 1 });
    let applies = 0;
    kernel.whileApplying = () => {
      applies += 1;
      kernel.undoBug = bug;
    };
    const run = await linkCli(['--keep-going', c1, c2, c3, ...more]);
    expect({ code: run.code, stdout: run.stdout, stderr: run.stderr }).toEqual({
      code: 70,
      stdout: '',
      stderr: [
        'spectrum-link: link stopped by a bug as it undid c1, c2, c3, c4, c5: what the run had made for them (devices, ids) may be left over: run it again, and it converges',
        `spectrum-link: internal error: ${bug.message}`,
      ],
    });
    expect(applies).toBe(1);
    // The first chunk's records kept: their devices may be there.
    expect((await loadState(stateDir)).links.map((link) => link.client).sort()).toEqual(['c1', 'c2', 'c3', 'c4']);
  });

  it.each([false, true])('a run of several VMs, its one transaction failed by a bug (as its devices are made), its undo stopped by another: neither lost, the first said as the failure that had it link VM by VM, the other as the undo\'s; every VM linked one by one (a signal in that pass, at c2: %s)', async (signal) => {
    const failed = new TypeError("Cannot read properties of undefined (reading 'steps')");
    let applies = 0;
    kernel.whileApplying = () => {
      applies += 1;
      if (applies === 1) {
        kernel.undoBug = bug;
        throw failed;
      }
      // One by one: c1's devices (2), then c2's (3).
      if (signal && applies === 3) process.emit('SIGINT', 'SIGINT');
    };
    const run = await linkCli(['--keep-going', c1, c2, c3]);
    const why = `spectrum-link: the failure that had it link VM by VM: internal error: ${failed.message}`;
    expect({ code: run.code, linked: linkedLines(run.stdout), stderr: run.stderr }).toEqual(
      signal
        ? {
            code: 130,
            linked: [expect.stringMatching(/^c1 -> netvm  id /)],
            stderr: [expect.stringMatching(/^spectrum-link: link interrupted by SIGINT while linking VM by VM after a failure \(--keep-going\): undid what it had made for c2, /), why, transactionUndoLine(bug.message)],
          }
        : { code: 70, linked: [/^c1 -> netvm  id /, /^c2 -> netvm  id /, /^c3 -> netvm  id /].map((line) => expect.stringMatching(line)), stderr: [why, transactionUndoLine(bug.message)] },
    );
  });

  it('a run of several VMs, its one transaction refused by the kernel (c2), its undo stopped by a bug that then stops c2\'s undo one by one too: that bug said once, as the one that stopped the run', async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    kernel.refused.add(linkDeviceNames(PREFIX, ids[1]!).bridge);
    // In every undo (the bug is the undo's own, not one of a VM).
    kernel.whileApplying = () => void (kernel.undoBug = bug);
    const run = await linkCli(['--keep-going', c1, c2, c3]);
    expect({ code: run.code, linked: linkedLines(run.stdout), stderr: run.stderr }).toEqual({
      code: 70,
      linked: [expect.stringMatching(/^c1 -> netvm  id /)],
      stderr: [
        expect.stringMatching(/^spectrum-link: link c2 failed: ip link add \S+ type bridge failed: File exists$/),
        'spectrum-link: link stopped by a bug as it undid c2: what the run had made for it (devices, ids) may be left over; c3, after it, was not linked (the pass one by one had not got to it): run it again, and it converges',
        `spectrum-link: internal error: ${bug.message}`,
      ],
    });
  });

  /** A VMM that refuses `vm`'s NIC, the undo's write back of the state file that follows then failed by the bug (not the store's failure). */
  const refusingThenWriteBug = (vm: VmName): VmmPort => ({
    ...NO_VMM,
    attach: async (_kind, at) => {
      if (at !== vm) return true;
      store.thrown = bug;
      throw Object.assign(new Error(refusal.message.replace('c2', vm)), { name: refusal.name, kind: refusal.kind });
    },
  });
  const notWrittenBack = /undoing the run, the state file could not be written back/;

  it('hot-plugging VM by VM, c2 refused, the write back of its undo failed by a bug: said as a bug that stops the run (c1 printed, c3 not linked), not as a state file not written back; every id recorded kept', async () => {
    const run = await linkCli(['--keep-going', c1, c2, c3], stateDir, { vmm: refusingThenWriteBug(c2), attach: ['none', 'c2=qemu'] });
    expect({ code: run.code, linked: linkedLines(run.stdout), stderr: run.stderr }).toEqual({
      code: 70,
      linked: [expect.stringMatching(/^c1 -> netvm  id /)],
      stderr: [`spectrum-link: link c2 failed: ${refusal.message}`, expect.stringMatching(/^spectrum-link: link stopped by a bug as it undid c2: .*; c3, after it, was neither linked nor undone: /), `spectrum-link: internal error: ${bug.message}`],
    });
    expect(run.stderr).not.toContainEqual(expect.stringMatching(notWrittenBack));
    expect((await loadState(stateDir)).links.map((link) => link.client).sort()).toEqual(['c1', 'c2', 'c3']);
  });

  it('linking one by one (c1 refused by the kernel), c3 refused by its VMM, the write back of its undo failed by a bug: said as a bug that stops the run (c2 printed), not as a state file not written back', async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    kernel.refused.add(linkDeviceNames(PREFIX, ids[0]!).bridge);
    const run = await linkCli(['--keep-going', c1, c2, c3], stateDir, { vmm: refusingThenWriteBug(c3), attach: ['none', 'c3=qemu'] });
    expect({ code: run.code, linked: linkedLines(run.stdout), stderr: run.stderr }).toEqual({
      code: 70,
      linked: [expect.stringMatching(/^c2 -> netvm  id /)],
      stderr: [
        expect.stringMatching(/^spectrum-link: link c1 failed: ip link add \S+ type bridge failed: File exists$/),
        `spectrum-link: link c3 failed: ${refusal.message.replace('c2', 'c3')}`,
        expect.stringMatching(/^spectrum-link: link stopped by a bug as it undid c3: /),
        `spectrum-link: internal error: ${bug.message}`,
      ],
    });
    expect(run.stderr).not.toContainEqual(expect.stringMatching(notWrittenBack));
  });

  it('plain link, its VMM refusing, the write back of the undo failed by a bug: said as a bug (exit 70), not as a state file not written back', async () => {
    const run = await linkCli([c1], stateDir, { vmm: refusingThenWriteBug(c1), attach: ['none', 'c1=qemu'] });
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 70, stderr: [`spectrum-link: internal error: ${bug.message}`] });
  });
});

describe('link --keep-going stopped by a state failure as a signal comes: the signal outranks it, as in plain link', () => {
  const c0 = vmName('c0');
  const [c1, c2, c3] = CLIENTS as [VmName, VmName, VmName];
  const undid = /^spectrum-link: link interrupted by SIGINT while it failed \(above\) and undid the run: the undo went on to its end: what this run had made .* is undone; links made before it are as they were$/;

  it.each([
    ['no VM failed', []],
    ['c0 failed (invalid)', ['nosuchvm']],
    ['c0 failed by bad input', [NETVM]],
  ] as const)('the state dir found not writable before a NIC comes out, the signal as its socket is checked (%s): the failure, the signal\'s line, then c0\'s where it failed; exit 130', async (how, c0Providers) => {
    const badInput = how.includes('bad input');
    if (how !== 'no VM failed') await addVm(c0, c0Providers);
    // c1's client side (and c0's, where it fails by bad input) up as QEMU attached it, to be
    // attached another way: its NIC would come out first (c0's to cloud-hypervisor through a
    // socket path that cannot be: it fails before the state dir is probed).
    const allocation = allocateMany(emptyState(), (badInput ? [c0, c1] : [c1]).map((client) => ({ client, provider: NETVM })));
    const upAsQemu = allocation.links.map((link) => ({ pair: link, attached: { client: 'qemu', provider: 'none' } as const }));
    await saveState(stateDir, withDevicePrefix(setAttachments(allocation.state, upAsQemu), PREFIX));
    kernel.host = new Map(allocation.links.flatMap((link) => Object.values(linkDeviceNames(PREFIX, link.id)).map((name): [string, ObservedDevice] => [name, { name, kind: name.includes('b') ? 'bridge' : 'tun' } as ObservedDevice])));
    store.failSaves = 1;
    const vmm: VmmPort = {
      ...NO_VMM,
      checkSocket: (kind, vm) => {
        if (vm === c0) throw new CliError(`--qmp-socket gives VM ${vm} a socket path too long (${kind})`, EXIT.usage);
        if (vm === c1) process.emit('SIGINT', 'SIGINT');
      },
    };
    const names = how === 'no VM failed' ? [c1] : [c0, c1];
    const run = await linkCli(['--keep-going', ...names], stateDir, { vmm, attach: ['none', ...(badInput ? ['c0=cloud-hypervisor'] : [])] });
    expect({ code: run.code, stderr: run.stderr }).toEqual({
      code: 130,
      stderr: [
        expect.stringMatching(/^spectrum-link: link: cannot write state file .*\(ENOSPC\)/),
        expect.stringMatching(undid),
        ...(how === 'no VM failed' ? [] : [expect.stringMatching(badInput ? /^spectrum-link: link c0 failed: --qmp-socket gives VM c0 a socket path too long/ : /^spectrum-link: link c0 failed: VM c0 in .* is not valid /)]),
      ],
    });
  });

  it('in the pass one by one (c1 refused by the kernel, c2 linked again, the signal as c3 records its ids, which fails): c2 printed, the failure, the signal\'s line saying c2 stays linked, then c1\'s; exit 130', async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    kernel.refused.add(linkDeviceNames(PREFIX, ids[0]!).bridge);
    // Plans: the one transaction (1, refused), then c1 (2, refused) and c2 (3) one by one; then
    // c3's transaction asks for its QEMU side's socket before it records its ids.
    let applies = 0;
    kernel.whileApplying = () => void (applies += 1);
    const vmm: VmmPort = {
      ...NO_VMM,
      socketOf: (_kind, vm) => {
        if (vm !== c3 || applies !== 3) return undefined;
        applies += 1;
        process.emit('SIGINT', 'SIGINT');
        store.failSaves = 1;
        return undefined;
      },
    };
    const run = await linkCli(['--keep-going', c1, c2, c3], stateDir, { vmm, attach: ['none', 'c3=qemu'] });
    expect(run.stdout.split('\n').filter((line) => / -> /.test(line))).toEqual([expect.stringMatching(new RegExp(`^c2 -> netvm  id ${ids[1]}  `))]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({
      code: 130,
      stderr: [
        expect.stringMatching(/^spectrum-link: cannot write state file .*\(ENOSPC\)/),
        expect.stringMatching(/^spectrum-link: link interrupted by SIGINT while it failed \(above\) and undid the VM it was linking: the undo went on to its end; the VMs it had linked VM by VM \(printed\) stay linked, and links made before it are as they were$/),
        expect.stringMatching(/^spectrum-link: link c1 failed: .*File exists$/),
      ],
    });
  });
});

describe('link stopped by a bug (an error of no kind) as a signal comes: the signal outranks its 70 too, its line still an internal error, as in plain link', () => {
  const c0 = vmName('c0');
  const [c1] = CLIENTS as [VmName];
  const bug = new TypeError("Cannot read properties of undefined (reading 'attached')");
  const undid = /^spectrum-link: link interrupted by SIGINT while it failed \(above\) and undid the run: the undo went on to its end: what this run had made .* is undone; links made before it are as they were$/;
  const c0Failed = /^spectrum-link: link c0 failed: VM c0 in .* is not valid /;

  it.each((['no VM failed', 'c0 failed (invalid)'] as const).flatMap((how) => [true, false].map((signal) => [how, signal] as const)))(
    'link --keep-going, the bug out of the probe of the state dir before a NIC comes out (%s; a signal: %s): the bug, the signal\'s line, then c0\'s, exit 130; without the signal c0\'s then the bug, exit 70',
    async (how, signal) => {
      if (how !== 'no VM failed') await addVm(c0, ['nosuchvm']);
      // c1's client side up as QEMU attached it, to be attached another way: its NIC would come
      // out first, once the state dir is probed.
      await recordUpAsQemu(c1);
      const vmm: VmmPort = {
        ...NO_VMM,
        checkSocket: (_kind, vm) => {
          if (vm !== c1) return;
          if (signal) process.emit('SIGINT', 'SIGINT');
          store.thrown = bug;
        },
      };
      const run = await linkCli(['--keep-going', ...(how === 'no VM failed' ? [c1] : [c0, c1])], stateDir, { vmm });
      const failed = how === 'no VM failed' ? [] : [expect.stringMatching(c0Failed)];
      expect({ code: run.code, stderr: run.stderr }).toEqual(
        signal
          ? { code: 130, stderr: [`spectrum-link: internal error: ${bug.message}`, expect.stringMatching(undid), ...failed] }
          : { code: 70, stderr: [...failed, `spectrum-link: internal error: ${bug.message}`] },
      );
    },
  );

  it.each([false, true])('a bug before anything is made, as the config is read under the lock (--keep-going: %s): the bug, then the signal\'s line; exit 130', async (keepGoing) => {
    // A state dir there: the config is read under the lock.
    await saveState(stateDir, withDevicePrefix(emptyState(), PREFIX));
    configReads.afterRead = async () => {
      process.emit('SIGINT', 'SIGINT');
      throw bug;
    };
    const run = await linkCli([...(keepGoing ? ['--keep-going'] : []), c1]);
    expect({ code: run.code, stdout: run.stdout, stderr: run.stderr }).toEqual({ code: 130, stdout: '', stderr: [`spectrum-link: internal error: ${bug.message}`, expect.stringMatching(undid)] });
    expect(kernel.observed).toBe(0);
  });
});

describe('link --all --keep-going stopped by a state failure: what it leaves as it is in the config dir is said, as where it ends well', () => {
  const [c1, c2] = CLIENTS as [VmName, VmName];
  const gone = vmName('gone');
  const jsonOf = (stdout: string): unknown[] => stdout.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as unknown);

  /** An entry leading outside the config dir, and a directory with providers under no VM name. */
  const strayEntries = async (): Promise<void> => {
    await symlink(tmpdir(), join(configDir, 'outside'));
    await mkdir(join(configDir, 'bad name', 'providers', 'net'), { recursive: true });
    await writeFile(join(configDir, 'bad name', 'providers', 'net', NETVM), '');
  };
  /** A client gone with a link recorded (the state file written here); returns that link's id. */
  const goneClient = async (): Promise<number> => {
    const allocation = allocateMany(emptyState(), [{ client: gone, provider: NETVM }]);
    await writeFile(join(stateDir, 'links.json'), serializeState(setAttachments(allocation.state, [{ pair: { client: gone, provider: NETVM }, attached: { client: 'none', provider: 'none' } }])));
    return allocation.links[0]!.id;
  };

  it('in the pass one by one (c1 refused by the kernel, c2 linked again, then c3\'s record not written): the warnings (gone client, unusable entry, misnamed directory, stray --attach) and --json lines, after the VMs linked and failed; exit 1', async () => {
    await strayEntries();
    const goneId = await goneClient();
    const ids = allocateMany(await loadState(stateDir), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    kernel.refused.add(linkDeviceNames(PREFIX, ids[0]!).bridge);
    // Plans: the one transaction (1, refused), then c1 (2, refused) and c2 (3) one by one; c3's record of its id is the next write.
    let applies = 0;
    kernel.whileApplying = () => {
      applies += 1;
      if (applies === 3) store.failSaves = 1;
    };
    const run = await linkCli(['--json', '--all', '--keep-going'], stateDir, { attach: ['none', 'ghost=none'] });
    expect(jsonOf(run.stdout)).toEqual([
      { vm: c2, links: [expect.objectContaining({ vm: c2, provider: NETVM, id: ids[1] })] },
      { vm: c1, links: [], error: expect.stringMatching(/File exists$/) },
      { vm: gone, links: [], orphaned: [expect.objectContaining({ vm: gone, provider: NETVM, id: goneId })] },
      { vm: 'outside', links: [], unusableDir: expect.stringContaining('outside') },
      { vm: 'bad name', links: [], invalidName: expect.stringContaining('contains " "') },
    ]);
    expect(logged.warnings).toEqual([
      expect.stringMatching(/^gone has 1 recorded link but no directory in /),
      expect.stringMatching(/^outside is not linked: .*; no links are recorded for it$/),
      expect.stringMatching(/\/bad name has a providers\/net but no VM name, so it is not linked: /),
      expect.stringMatching(/^--attach ghost=none was not used: /),
    ]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({
      code: 1,
      stderr: [expect.stringMatching(/^spectrum-link: cannot write state file .*\(ENOSPC\)/), expect.stringMatching(/^spectrum-link: link c1 failed: .*File exists$/)],
    });
  });

  it('where the state file cannot be read: the misnamed directory (of the dir alone: what the state records of the others is unknown); exit 1', async () => {
    await strayEntries();
    await mkdir(join(stateDir, 'links.json', 'in-the-way'), { recursive: true });
    const run = await linkCli(['--json', '--all', '--keep-going']);
    expect(jsonOf(run.stdout)).toEqual([{ vm: 'bad name', links: [], invalidName: expect.stringContaining('contains " "') }]);
    expect(logged.warnings).toEqual([expect.stringMatching(/\/bad name has a providers\/net but no VM name, so it is not linked: /)]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 1, stderr: [expect.stringMatching(/^spectrum-link: cannot read state file /)] });
  });

  it('where the state lock cannot be taken (no state dir yet, and none can be made): the unusable entry (nothing recorded) and the misnamed directory; exit 1', async () => {
    await strayEntries();
    const run = await linkCli(['--json', '--all', '--keep-going'], '/proc/spectrum-link-test-no-such-dir/state');
    expect(jsonOf(run.stdout)).toEqual([
      { vm: 'outside', links: [], unusableDir: expect.stringContaining('outside') },
      { vm: 'bad name', links: [], invalidName: expect.stringContaining('contains " "') },
    ]);
    expect(logged.warnings).toEqual([expect.stringMatching(/^outside is not linked: .*; no links are recorded for it$/), expect.stringMatching(/\/bad name has a providers\/net but no VM name, so it is not linked: /)]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 1, stderr: [expect.stringMatching(/^spectrum-link: state dir \/proc\/spectrum-link-test-no-such-dir\/state .*cannot be used/)] });
  });
});

/** A VM directory in the config dir, with these providers. */
async function addVm(vm: string, providers: readonly string[] = []): Promise<void> {
  await mkdir(join(configDir, vm, 'blk'), { recursive: true });
  await writeFile(join(configDir, vm, 'vmlinux'), '');
  await writeFile(join(configDir, vm, 'blk', 'root.img'), '');
  if (providers.length > 0) await mkdir(join(configDir, vm, 'providers', 'net'), { recursive: true });
  for (const provider of providers) await writeFile(join(configDir, vm, 'providers', 'net', provider), '');
}

const recordedPairs = (state: LinkState): [string, number][] => state.links.map((link): [string, number] => [link.client, link.id]).sort();

describe('a failed link whose undo cannot write the state file back', () => {
  it('throws the failure it undid, not the write error, and tells what the file still records (the run\'s links, their devices deleted)', async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    kernel.refused.add(linkDeviceNames(PREFIX, ids[2]!).bridge);
    // The run's ids are recorded; then, while the kernel makes the devices, the disk fills.
    kernel.whileApplying = () => void (store.failSaves = 1);
    const told: UndoStateWriteFailure[] = [];
    await expect(linkVms(CLIENTS, { ...options(), onUndoStateWriteFailed: (failure) => void told.push(failure) })).rejects.toThrow(/^ip link add snb\d+ type bridge failed: File exists$/);
    expect(kernel.undone).toBe(1);
    expect(told).toEqual([
      {
        stateFile: join(stateDir, 'links.json'),
        error: expect.stringMatching(/^cannot write state file .*links\.json \(ENOSPC\)/),
        written: false,
        recorded: CLIENTS.map((vm, index) => expect.objectContaining({ vm, provider: NETVM, id: ids[index] })),
        clients: CLIENTS,
      },
    ]);
    // As told: the file still records them (nothing it held was lost).
    expect(recordedPairs(await loadState(stateDir))).toEqual(CLIENTS.map((vm, index): [string, number] => [vm, ids[index]!]).sort());
  });

  it('where only the sync of the state dir fails, tells that the file holds what it did before the run (a crash may bring back the run\'s records)', async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    kernel.refused.add(linkDeviceNames(PREFIX, ids[2]!).bridge);
    kernel.whileApplying = () => void (store.failSyncs = 1);
    const told: UndoStateWriteFailure[] = [];
    await expect(linkVms(CLIENTS, { ...options(), onUndoStateWriteFailed: (failure) => void told.push(failure) })).rejects.toThrow(/File exists$/);
    expect(told).toEqual([expect.objectContaining({ written: true, error: expect.stringMatching(/^wrote .* but could not sync/), recorded: CLIENTS.map((vm) => expect.objectContaining({ vm })) })]);
    // No link: every id back, and no prefix recorded, as before the run (none was).
    expect(await loadState(stateDir)).toEqual(emptyState());
  });

  it('where the sync of the run\'s own record of its ids fails (the file replaced all the same), takes those records back too', async () => {
    // The first save (the ids, before any device) replaces the file, then cannot sync the dir.
    store.failSyncs = 1;
    await expect(linkVms(CLIENTS, options())).rejects.toMatchObject({ name: 'StateStoreError', kind: 'sync-failed' });
    expect(kernel.undone).toBe(0); // no device was begun
    // The file holds no id the run allocated: no link is recorded whose devices were never made (nor the prefix, none before the run).
    expect(await loadState(stateDir)).toEqual(emptyState());
  });

  it('--keep-going, hot-plugging VM by VM: the VM fails with its VMM\'s refusal, the write failure is told, the other VMs are linked', async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    // netvm's VMM refuses c2's NIC, as the disk fills: c2's undo cannot write the state back.
    const vmm: VmmPort = {
      attach: async (_kind, vm, nic) => {
        if (nic.id !== linkDeviceNames(PREFIX, ids[1]!).provider) return true;
        store.failSaves = 1;
        throw new Error(`cloud-hypervisor of ${vm} failed to add NIC ${nic.id}: no free PCI slot`);
      },
      detach: async () => undefined,
    };
    const told: UndoStateWriteFailure[] = [];
    const attach = parseAttachChoice(['none', 'netvm=cloud-hypervisor']);
    const outcome = await linkVmsKeepGoing(CLIENTS, { ...options(), attach, vmm, onUndoStateWriteFailed: (failure) => void told.push(failure) });
    expect(outcome.failed).toEqual([{ vm: 'c2', error: expect.objectContaining({ message: expect.stringMatching(/no free PCI slot$/) }) }]);
    expect([...outcome.linked.keys()]).toEqual(['c1', 'c3']);
    expect(told).toEqual([expect.objectContaining({ written: false, recorded: [expect.objectContaining({ vm: 'c2', id: ids[1] })], clients: ['c2'] })]);
    expect(recordedPairs(await loadState(stateDir))).toEqual(CLIENTS.map((vm, index): [string, number] => [vm, ids[index]!]).sort());
  });

  it('--keep-going after the one transaction failed: its undo\'s write failure is said of the VMs not linked again only', async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    // The kernel refuses c1's bridge: the one transaction fails, and its undo cannot write the
    // state back (the disk full for one write). Linked one by one from the file as it is, c2 and
    // c3 are recorded anew; c1 fails again.
    kernel.refused.add(linkDeviceNames(PREFIX, ids[0]!).bridge);
    kernel.whileApplying = () => {
      if (kernel.undone === 0) store.failSaves = 1;
    };
    const told: UndoStateWriteFailure[] = [];
    const outcome = await linkVmsKeepGoing(CLIENTS, { ...options(), onUndoStateWriteFailed: (failure) => void told.push(failure) });
    expect(outcome.failed.map((failure) => failure.vm)).toEqual(['c1']);
    expect([...outcome.linked.keys()]).toEqual(['c2', 'c3']);
    expect(told).toEqual([expect.objectContaining({ written: false, recorded: [expect.objectContaining({ vm: 'c1', id: ids[0] })], clients: ['c1'] })]);
    expect(recordedPairs(await loadState(stateDir))).toEqual(CLIENTS.map((vm, index): [string, number] => [vm, ids[index]!]).sort());
  });

  it('--keep-going linking one by one: a VM linked after one whose undo could not write goes on from the state the file holds, keeping that VM\'s records, as told', async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    // The kernel refuses c1's bridge: the one transaction fails (and undoes itself); linked one
    // by one, c1 records its id, fails again, and its undo cannot write the state back.
    kernel.refused.add(linkDeviceNames(PREFIX, ids[0]!).bridge);
    let applies = 0;
    kernel.whileApplying = () => {
      applies += 1;
      if (applies === 2) store.failSaves = 1;
    };
    const told: UndoStateWriteFailure[] = [];
    const outcome = await linkVmsKeepGoing(CLIENTS, { ...options(), onUndoStateWriteFailed: (failure) => void told.push(failure) });
    expect(outcome.failed.map((failure) => failure.vm)).toEqual(['c1']);
    expect([...outcome.linked.keys()]).toEqual(['c2', 'c3']);
    expect(told).toEqual([expect.objectContaining({ recorded: [expect.objectContaining({ vm: 'c1', id: ids[0] })], clients: ['c1'] })]);
    // c2 and c3, recorded after it, kept c1's record in the file (as the line says).
    expect(recordedPairs(await loadState(stateDir))).toEqual(CLIENTS.map((vm, index): [string, number] => [vm, ids[index]!]).sort());
  });
});

describe('link --keep-going linking one by one, a VM whose undo wrote the state back but could not sync its dir', () => {
  it('goes on from the state written back (the file holds it): a later VM\'s save does not bring back that VM\'s records', async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    // The kernel refuses c1's bridge: the one transaction fails (and undoes itself); linked one
    // by one, c1 records its id, fails again, and its undo writes the state back, the sync failing.
    kernel.refused.add(linkDeviceNames(PREFIX, ids[0]!).bridge);
    let applies = 0;
    kernel.whileApplying = () => {
      applies += 1;
      if (applies === 2) store.failSyncs = 1;
    };
    const told: UndoStateWriteFailure[] = [];
    const outcome = await linkVmsKeepGoing(CLIENTS, { ...options(), onUndoStateWriteFailed: (failure) => void told.push(failure) });
    expect(outcome.failed.map((failure) => failure.vm)).toEqual(['c1']);
    expect([...outcome.linked.keys()]).toEqual(['c2', 'c3']);
    expect(told).toEqual([expect.objectContaining({ written: true, recorded: [expect.objectContaining({ vm: 'c1', id: ids[0] })] })]);
    // As told, the file holds what it did before c1's run (no c1): c2's and c3's saves keep it so.
    expect(recordedPairs(await loadState(stateDir))).toEqual(CLIENTS.slice(1).map((vm, index): [string, number] => [vm, ids[index + 1]!]).sort());
  });
});

describe('link --keep-going: a NIC an undo could not detach, and a later VM of the run given a NIC of the same id by that VMM', () => {
  /**
   * Two clients of netvm whose links to it get the same preferred id: linked one by one, the
   * second gets the id the first's undo gave back, and with it the same NIC id in netvm's VMM.
   */
  function collidingClients(): [string, string] {
    const seen = new Map<number, string>();
    for (let index = 0; index < 100_000; index++) {
      const vm = `app${index}`;
      const id = preferredId({ client: vmName(vm), provider: NETVM });
      const earlier = seen.get(id);
      if (earlier !== undefined) return [earlier, vm];
      seen.set(id, vm);
    }
    throw new Error('no two clients with the same preferred id');
  }

  /**
   * c3 fails (the kernel refuses its bridge), so the VMs are linked one by one; `first` hot-plugs
   * its NIC into netvm's VMM, whose netvm2 refuses the next: its undo asks netvm's VMM for the NIC
   * back, which does not answer in time (`lateRemoval`: having removed it all the same); then
   * `second`, given the same id, hot-plugs a NIC of that id into netvm's VMM.
   */
  async function run(lateRemoval: boolean): Promise<{ outcome: Awaited<ReturnType<typeof linkVmsKeepGoing>>; told: VmmDetachFailure[]; nic: string; first: string; second: string }> {
    const [first, second] = collidingClients();
    await addVm('netvm2');
    await addVm(first, ['netvm', 'netvm2']);
    await addVm(second, ['netvm']);
    const c3 = CLIENTS[2]!;
    kernel.refused.add(linkDeviceNames(PREFIX, preferredId({ client: c3, provider: NETVM })).bridge);
    const nic = linkDeviceNames(PREFIX, preferredId({ client: vmName(first), provider: NETVM })).provider;
    const held = new Set<string>();
    const vmm: VmmPort = {
      attach: async (_kind, vm, added) => {
        if (vm === 'netvm2') throw new Error(`cloud-hypervisor of netvm2 failed to add NIC ${added.id}: no free PCI slot`);
        if (held.has(added.id)) throw new Error(`cloud-hypervisor of ${vm} already has NIC ${added.id}, but not on tap ${added.tap}: take the link down and link it again`);
        held.add(added.id);
        return true;
      },
      detach: async (_kind, _vm, removed) => {
        if (lateRemoval) held.delete(removed.id);
        throw new Error(`no answer to PUT vm.remove-device within 300 ms (NIC ${removed.id})`);
      },
    };
    const told: VmmDetachFailure[] = [];
    const attach = parseAttachChoice(['none', 'netvm=cloud-hypervisor', 'netvm2=cloud-hypervisor']);
    const outcome = await linkVmsKeepGoing([c3, first, second], { ...options(), attach, vmm, onUndoDetachFailed: (failures) => void told.push(...failures) });
    return { outcome, told, nic, first, second };
  }

  it('still there: the later attach fails on it (a conflict), and the NIC is still said', async () => {
    const { outcome, told, nic, first, second } = await run(false);
    expect(outcome.failed.map((failure) => failure.vm)).toEqual(['c3', first, second]);
    expect(String((outcome.failed[2]?.error as Error).message)).toMatch(/already has NIC .* take the link down/);
    expect(told).toEqual([expect.objectContaining({ vm: 'netvm', nic, link: expect.objectContaining({ vm: first }) })]);
  });

  it('gone (the VMM removed it after all): the later attach adds a NIC of that id anew, so that NIC is not said', async () => {
    const { outcome, told, first, second } = await run(true);
    expect(outcome.failed.map((failure) => failure.vm)).toEqual(['c3', first]);
    expect([...outcome.linked.keys()]).toEqual([second]);
    expect(told).toEqual([]);
  });
});

describe('a failed link whose undo has a step that fails', () => {
  const devicesOf = (id: Parameters<typeof linkDeviceNames>[1]): string[] => {
    const names = linkDeviceNames(PREFIX, id);
    return [names.bridge, names.client, names.provider];
  };

  it('throws the failure it undid, does every other step (the earlier chunk undone, the state written back, links left down said) and tells the step, whose links keep their ids', async () => {
    // Five clients: the first chunk is four VMs, the next one. c1 was linked earlier by netns (its
    // client device a veth, recorded so); this run makes it a tap. The kernel refuses c5's bridge,
    // and the undo of c5's chunk then fails outright.
    const clients = [...CLIENTS, vmName('c4'), vmName('c5')];
    for (const vm of clients.slice(3)) await addVm(vm, [NETVM]);
    const allocation = allocateMany(emptyState(), clients.map((client) => ({ client, provider: NETVM })));
    const ids = new Map(allocation.links.map((link) => [link.client, link.id]));
    const earlier = setAttachments(allocateMany(emptyState(), [{ client: clients[0]!, provider: NETVM }]).state, [{ pair: { client: clients[0]!, provider: NETVM }, attached: { client: 'netns', provider: 'none' } }]);
    await saveState(stateDir, earlier);
    const c1 = linkDeviceNames(PREFIX, ids.get(clients[0]!)!);
    const device = (name: string, kind: string): ObservedDevice => ({ index: 2, name, kind, master: c1.bridge, mtu: 1500, up: true, mac: '02:00:00:00:00:01', ipv6: false, ipv6LinkLocal: false, ipv6Forwarding: false });
    kernel.host = new Map([
      [c1.bridge, { ...device(c1.bridge, 'bridge'), master: null }],
      [c1.client, device(c1.client, 'veth')],
      [c1.provider, device(c1.provider, 'tun')],
    ]);
    const c5 = ids.get(vmName('c5'))!;
    kernel.refused.add(linkDeviceNames(PREFIX, c5).bridge);
    kernel.undoFailures = 1;
    const steps: UndoStepFailure[] = [];
    const leftDown: LinkReport[] = [];
    await expect(linkVms(clients, { ...options(), onUndoStepFailed: (failure) => void steps.push(failure), onLeftDown: (links) => void leftDown.push(...links) })).rejects.toThrow(
      /^ip link add snb\d+ type bridge failed: File exists$/,
    );
    // The later chunk's undo failed; the earlier one's was done all the same.
    expect(kernel.undone).toBe(2);
    expect(steps).toEqual([{ step: 'devices', error: 'the undo failed part-way', left: [{ link: expect.objectContaining({ vm: 'c5', id: c5 }), devices: devicesOf(c5) }] }]);
    // Written back: c5's devices may be there, so its id stays recorded (as the run made it); c2 to c4's are given back; c1's record is as it was.
    const state = await loadState(stateDir);
    expect(recordedPairs(state)).toEqual([
      ['c1', ids.get(clients[0]!)!],
      ['c5', c5],
    ]);
    expect(state.links.find((link) => link.client === 'c1')?.attached).toEqual({ client: 'netns', provider: 'none' });
    expect(state.links.find((link) => link.client === 'c5')?.attached).toEqual({ client: 'none', provider: 'none' });
    expect(leftDown.map((link) => [link.vm, link.clientAttach])).toEqual([['c1', 'netns']]);
  });

  it('devices the kernel did not delete: only their links keep their ids, the others are given back', async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    kernel.refused.add(linkDeviceNames(PREFIX, ids[2]!).bridge);
    const c2Tap = linkDeviceNames(PREFIX, ids[1]!).client;
    kernel.kept.add(c2Tap);
    const steps: UndoStepFailure[] = [];
    await expect(linkVms(CLIENTS, { ...options(), onUndoStepFailed: (failure) => void steps.push(failure) })).rejects.toThrow(/File exists$/);
    expect(steps).toEqual([{ step: 'devices', error: `removing device ${c2Tap} failed: Device or resource busy`, left: [{ link: expect.objectContaining({ vm: 'c2', id: ids[1] }), devices: [c2Tap] }] }]);
    expect(recordedPairs(await loadState(stateDir))).toEqual([['c2', ids[1]!]]);
  });

  it('--keep-going, hot-plugging VM by VM: a VM whose devices its undo could not delete keeps its id, and the step is told', async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    const c2Bridge = linkDeviceNames(PREFIX, ids[1]!).bridge;
    kernel.kept.add(c2Bridge);
    const vmm: VmmPort = {
      attach: async (_kind, vm, nic) => {
        if (vm === 'c2') throw new Error(`cloud-hypervisor of c2 failed to add NIC ${nic.id}: no free PCI slot`);
        return true;
      },
      detach: async () => undefined,
    };
    const steps: UndoStepFailure[] = [];
    const outcome = await linkVmsKeepGoing(CLIENTS, { ...options(), attach: parseAttachChoice(['none', 'c2=cloud-hypervisor']), vmm, onUndoStepFailed: (failure) => void steps.push(failure) });
    expect(outcome.failed.map((failure) => failure.vm)).toEqual(['c2']);
    expect([...outcome.linked.keys()]).toEqual(['c1', 'c3']);
    expect(steps).toEqual([{ step: 'devices', error: expect.stringContaining(c2Bridge), left: [{ link: expect.objectContaining({ vm: 'c2', id: ids[1] }), devices: [c2Bridge] }] }]);
    expect(recordedPairs(await loadState(stateDir))).toEqual(CLIENTS.map((vm, index): [string, number] => [vm, ids[index]!]).sort());
  });

  it('--keep-going linking one by one: a VM whose own undo could not delete its devices keeps its id through the saves of the VMs after it', async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    // The kernel refuses c1's bridge: the one transaction fails, its undo deleting everything;
    // linked alone, c1 fails again, and now its undo cannot delete its tap.
    kernel.refused.add(linkDeviceNames(PREFIX, ids[0]!).bridge);
    const c1Tap = linkDeviceNames(PREFIX, ids[0]!).client;
    let applies = 0;
    kernel.whileApplying = () => {
      applies += 1;
      if (applies === 2) kernel.kept.add(c1Tap);
    };
    const steps: UndoStepFailure[] = [];
    const outcome = await linkVmsKeepGoing(CLIENTS, { ...options(), onUndoStepFailed: (failure) => void steps.push(failure) });
    expect(outcome.failed.map((failure) => failure.vm)).toEqual(['c1']);
    expect([...outcome.linked.keys()]).toEqual(['c2', 'c3']);
    // Said: c1's tap may still exist, and its id stays recorded so that no other link is given it.
    expect(steps).toEqual([{ step: 'devices', error: expect.any(String), left: [{ link: expect.objectContaining({ vm: 'c1', id: ids[0] }), devices: [c1Tap] }] }]);
    // As said: c2's and c3's saves, after c1's undo, keep it.
    expect(recordedPairs(await loadState(stateDir))).toEqual(CLIENTS.map((vm, index): [string, number] => [vm, ids[index]!]).sort());
  });

  it('--keep-going after the one transaction failed: what its undo left is said only where still left at the end (not of VMs linked again, nor a namespace a linked VM uses), once', async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    // The kernel refuses c1's bridge: the one transaction fails, and so does c1 alone. Each undo
    // leaves c1's and c2's taps, and the namespaces of c1 and netvm, where it is to delete them.
    kernel.refused.add(linkDeviceNames(PREFIX, ids[0]!).bridge);
    const [c1Tap, c2Tap] = [linkDeviceNames(PREFIX, ids[0]!).client, linkDeviceNames(PREFIX, ids[1]!).client];
    kernel.kept.add(c1Tap).add(c2Tap);
    kernel.keptNamespaces.add('c1').add('netvm');
    const steps: UndoStepFailure[] = [];
    const outcome = await linkVmsKeepGoing(CLIENTS, { ...options(), attach: parseAttachChoice(['netns']), onUndoStepFailed: (failure) => void steps.push(failure) });
    expect(outcome.failed.map((failure) => failure.vm)).toEqual(['c1']);
    expect([...outcome.linked.keys()]).toEqual(['c2', 'c3']);
    // c2 was linked again (its devices are its link's now), netvm's namespace is in use: neither is said.
    expect(steps).toEqual([
      { step: 'devices', error: expect.any(String), left: [{ link: expect.objectContaining({ vm: 'c1', id: ids[0] }), devices: [c1Tap] }] },
      { step: 'namespace', netns: 'c1', error: 'Cannot remove namespace file "/run/netns/c1": Device or resource busy' },
    ]);
    expect(recordedPairs(await loadState(stateDir))).toEqual(CLIENTS.map((vm, index): [string, number] => [vm, ids[index]!]).sort());
  });
});

describe('taking links down (unlink, link of a VM that dropped a provider) where the state file cannot be written', () => {
  /** A VMM that takes every NIC and records each detach; `onDetach` runs as a NIC is detached. */
  function recordingVmm(onDetach: () => void = () => undefined): { vmm: VmmPort; detached: string[] } {
    const detached: string[] = [];
    const vmm: VmmPort = {
      attach: async () => true,
      detach: async (_kind, _vm, nic) => {
        detached.push(nic.id);
        onDetach();
      },
    };
    return { vmm, detached };
  }
  const qemu = parseAttachChoice(['qemu']);
  const c1 = CLIENTS[0]!;
  /** c1 linked to netvm (and `more` providers), both sides QEMU; the state file's text then, and c1's link to netvm. */
  async function linkC1(vmm: VmmPort, more: readonly string[] = []): Promise<{ text: string; link: LinkReport }> {
    for (const provider of more) {
      await addVm(provider);
      await writeFile(join(configDir, c1, 'providers', 'net', provider), '');
    }
    const outcome = await linkVms([c1], { ...options(), attach: qemu, vmm });
    return { text: await readFile(join(stateDir, 'links.json'), 'utf8'), link: outcome.linked.get(c1)!.find((link) => link.provider === NETVM)! };
  }

  it('unlink, and link taking down a dropped provider: the check before writes no state file (a probe in the state dir), so each writes it once, leaving only it there', async () => {
    const { vmm } = recordingVmm();
    await linkC1(vmm, ['netvm2']);
    await rm(join(configDir, c1, 'providers', 'net', 'netvm2'));
    store.saves = 0;
    const linked = await linkVms([c1], { ...options(), attach: qemu, vmm });
    expect(linked.unlinked.get(c1)?.map((report) => report.provider)).toEqual(['netvm2']);
    expect(store.saves).toBe(1);
    store.saves = 0;
    await unlinkVm(c1, { forget: true, force: false }, { ...options(), attach: qemu, vmm });
    expect(store.saves).toBe(1);
    expect((await loadState(stateDir)).links).toEqual([]);
    expect(await readdir(stateDir)).toEqual(['links.json']);
  });

  it('link, unlink and gc remove the temp files a writer that died left (of a save, or of the probe before a take-down), as nothing else does', async () => {
    const { vmm } = recordingVmm();
    const stale = (pid: number): Promise<void> => writeFile(join(stateDir, `.links.json.${pid}.1a2b.tmp`), 'probe\n');
    await stale(123);
    await linkC1(vmm);
    expect(await readdir(stateDir)).toEqual(['links.json']);
    await stale(124);
    await unlinkVm(c1, { forget: false, force: false }, { ...options(), attach: qemu, vmm });
    expect(await readdir(stateDir)).toEqual(['links.json']);
    await stale(125);
    await collectGarbage({ stateDir, devicePrefix: PREFIX });
    expect(await readdir(stateDir)).toEqual(['links.json']);
  });

  it('unlink: a state dir that cannot be written (a full disk) stops it before anything is taken down, saying so in one line', async () => {
    const { vmm, detached } = recordingVmm();
    const { text } = await linkC1(vmm);
    store.failSaves = 1;
    const unlinking = unlinkVm(c1, { forget: false, force: false }, { ...options(), attach: qemu, vmm });
    await expect(unlinking).rejects.toMatchObject({
      name: 'LinkerError',
      kind: 'state-not-writable',
      message: expect.stringMatching(
        /^unlink c1: cannot write state file .*links\.json \(ENOSPC\); check the state dir's permissions and free space; so nothing was taken down \(no NIC detached, no device deleted\), as the state could not record it: unlink again once the state dir can be written$/,
      ),
    });
    expect([detached, kernel.removed]).toEqual([[], []]);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
  });

  it.each([[false], [true]])('unlink (--forget: %j): a state file that cannot be written after the take-down says what went, that the file still records it, and to unlink again, which records it', async (forget) => {
    const { vmm, detached } = recordingVmm(() => void (store.failSaves = 1));
    const { text, link } = await linkC1(vmm);
    const unlinking = unlinkVm(c1, { forget, force: false }, { ...options(), attach: qemu, vmm });
    const idsKept = forget ? ' (their ids not released)' : '';
    await expect(unlinking).rejects.toMatchObject({
      name: 'LinkerError',
      kind: 'taken-down-not-recorded',
      message:
        `unlink c1: took down c1 -> netvm (id ${link.id}): their devices deleted, their NICs detached from their VMMs (where these run); ` +
        `but then cannot write state file ${join(stateDir, 'links.json')} (ENOSPC); check the state dir's permissions and free space; so the state file still records them as linked${idsKept}: ` +
        `once the state dir can be written, run spectrum-link unlink c1${forget ? ' --forget' : ''} again (it finds them gone and records it)`,
    });
    expect(detached).toEqual([link.clientDevice, link.providerDevice]);
    expect(kernel.removed).toEqual([link.clientDevice, link.providerDevice, link.bridge]);
    // As said: the file still records the link as linked.
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
    // The same unlink again, the state dir writable: it records what went.
    const again = await unlinkVm(c1, { forget, force: false }, { ...options(), attach: qemu, vmm: recordingVmm().vmm });
    expect(again.reports.map((report) => report.id)).toEqual([link.id]);
    const state = await loadState(stateDir);
    expect(state.links.filter((recorded) => recorded.attached !== undefined)).toEqual([]);
    expect(state.links.map((recorded) => recorded.id)).toEqual(forget ? [] : [link.id]);
  });

  it('unlink --forget of links unlinked already: a state file that cannot be written after says their ids stay recorded, not that anything was taken down', async () => {
    const { vmm } = recordingVmm();
    const { link } = await linkC1(vmm);
    await unlinkVm(c1, { forget: false, force: false }, { ...options(), attach: qemu, vmm });
    const text = await readFile(join(stateDir, 'links.json'), 'utf8');
    // The check before goes through; the write after fails (a disk filling meanwhile).
    store.passSaves = 1;
    store.failSaves = 1;
    await expect(unlinkVm(c1, { forget: true, force: false }, { ...options(), attach: qemu, vmm })).rejects.toMatchObject({
      kind: 'taken-down-not-recorded',
      message:
        `unlink c1: its links were unlinked already; but then cannot write state file ${join(stateDir, 'links.json')} (ENOSPC); check the state dir's permissions and free space; ` +
        `so the state file still records their ids: once the state dir can be written, run spectrum-link unlink c1 --forget again`,
    });
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
    expect((await loadState(stateDir)).links.map((recorded) => recorded.id)).toEqual([link.id]);
  });

  it('unlink --forget of a link recorded before the state kept attach modes, its devices up: a state file that cannot be written after says it took the link down', async () => {
    const { vmm, detached } = recordingVmm();
    const { link } = await linkC1(vmm);
    // Its record as written before the state kept attach modes; its devices exist.
    const legacy = JSON.parse(await readFile(join(stateDir, 'links.json'), 'utf8')) as { links: Record<string, unknown>[] };
    for (const entry of legacy.links) delete entry['attached'];
    await writeFile(join(stateDir, 'links.json'), JSON.stringify(legacy));
    const text = await readFile(join(stateDir, 'links.json'), 'utf8');
    // Of their kinds: a device of another kind under a link's name is none of its (link-device-kinds.ts).
    kernel.host = new Map([link.bridge, link.clientDevice, link.providerDevice].map((name) => [name, { name, kind: name === link.bridge ? 'bridge' : 'tun' } as ObservedDevice]));
    store.passSaves = 1;
    store.failSaves = 1;
    await expect(unlinkVm(c1, { forget: true, force: false }, { ...options(), attach: qemu, vmm })).rejects.toMatchObject({
      kind: 'taken-down-not-recorded',
      message:
        `unlink c1: took down c1 -> netvm (id ${link.id}): their devices deleted, their NICs detached from their VMMs (where these run); ` +
        `but then cannot write state file ${join(stateDir, 'links.json')} (ENOSPC); check the state dir's permissions and free space; so the state file still records them as linked (their ids not released): ` +
        `once the state dir can be written, run spectrum-link unlink c1 --forget again (it finds them gone and records it)`,
    });
    expect(detached).toEqual([link.clientDevice, link.providerDevice]);
    expect(kernel.removed).toEqual([link.clientDevice, link.providerDevice, link.bridge]);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
  });

  it.each([[false], [true]])('unlink (--forget: %j) whose device removal fails before any device goes (a lookup the kernel refused): that failure, saying the NICs that came out by then, the state file as it was, ids kept', async (forget) => {
    const { vmm, detached } = recordingVmm();
    const { text, link } = await linkC1(vmm);
    kernel.lookupRefused = 'removing devices failed before any was removed: looking up snb1 failed (No buffer space available), so whether it exists is unknown; run it again';
    await expect(unlinkVm(c1, { forget, force: false }, { ...options(), attach: qemu, vmm })).rejects.toMatchObject({
      name: 'LinkerError',
      kind: 'take-down-stopped',
      message:
        `unlink c1: taking down c1 -> netvm (id ${link.id}) stopped part-way: ${kernel.lookupRefused}; ` +
        `by then it had taken NIC ${link.clientDevice} out of the QEMU of c1 and NIC ${link.providerDevice} out of the QEMU of netvm (c1 and netvm no longer have them); it had deleted no device of theirs; ` +
        `the state file is as it was${forget ? ', their ids not released' : ''} (README: An unlink stopped part-way): run spectrum-link unlink c1${forget ? ' --forget' : ''} again`,
    });
    expect(detached).toEqual([link.clientDevice, link.providerDevice]);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
  });

  it('unlink of a link attached by hand (no NIC in a VMM) whose device removal fails before any device goes: nothing was done, so that failure, after `unlink <vm>:` as every unlink failure', async () => {
    await linkVms([c1], options());
    const text = await readFile(join(stateDir, 'links.json'), 'utf8');
    kernel.lookupRefused = 'removing devices failed before any was removed: looking up snb1 failed (No buffer space available), so whether it exists is unknown; run it again';
    await expect(unlinkVm(c1, { forget: false, force: false }, options())).rejects.toMatchObject({
      name: 'LinkerError',
      kind: 'take-down-refused',
      message: `unlink c1: ${kernel.lookupRefused}; so nothing was taken down (no NIC detached, no device deleted), the state file as it was`,
      failure: { kind: 'query-failed' },
    });
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
  });

  it.each([
    ['after another NIC came out', NETVM, (clientNic: string) => `; before it, it had taken NIC ${clientNic} out of the QEMU of c1 (c1 no longer has it)`],
    // Before any came out: said as the kernel's refusal before anything went is, not as it was thrown.
    ['before any NIC came out', CLIENTS[0]!, () => '; so nothing was taken down (no NIC detached, no device deleted), the state file as it was'],
  ] as const)('unlink: a usage error of a VMM side found %s says `unlink <vm>:` first too, then what it had done; its exit code kept', async (_when, refusing, after) => {
    const detached: string[] = [];
    const vmm: VmmPort = {
      attach: async () => true,
      detach: async (_kind, vm, nic) => {
        if (vm === refusing) throw new CliError(`--qmp-socket gives VM ${vm} no usable socket path`, EXIT.usage);
        detached.push(nic.id);
      },
    };
    const { text, link } = await linkC1(vmm);
    await expect(unlinkVm(c1, { forget: false, force: false }, { ...options(), attach: qemu, vmm })).rejects.toMatchObject({
      name: 'CliError',
      exitCode: EXIT.usage,
      message: `unlink c1: --qmp-socket gives VM ${refusing} no usable socket path${after(link.clientDevice)}`,
    });
    expect(detached).toEqual(refusing === NETVM ? [link.clientDevice] : []);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
  });

  it('unlink: a check before whose only failure is the sync of the state dir says so, not that a change may be lost (there was none)', async () => {
    const { vmm, detached } = recordingVmm();
    await linkC1(vmm);
    store.failSyncs = 1;
    await expect(unlinkVm(c1, { forget: false, force: false }, { ...options(), attach: qemu, vmm })).rejects.toMatchObject({
      kind: 'state-not-writable',
      message: expect.stringMatching(/^unlink c1: cannot sync state dir .* \(EIO\), so a state saved there may not survive a crash; so nothing was taken down/),
    });
    expect(detached).toEqual([]);
  });

  it('unlink --force: the line says which NIC a VMM did not detach; where only the sync fails, that a crash may bring the records back', async () => {
    const refusing: VmmPort = {
      attach: async () => true,
      detach: async (_kind, vm, nic) => {
        store.failSyncs = 1;
        if (vm === NETVM) throw new Error(`QEMU refused device_del of ${nic.id}`);
      },
    };
    const { link } = await linkC1(refusing);
    await expect(unlinkVm(c1, { forget: false, force: true }, { ...options(), attach: qemu, vmm: refusing })).rejects.toMatchObject({
      kind: 'taken-down-not-recorded',
      message: expect.stringMatching(
        new RegExp(
          `^unlink c1: took down c1 -> netvm \\(id ${link.id}\\): their devices deleted, their NICs detached from their VMMs \\(where these run\\) but for NIC ${link.providerDevice}, which the QEMU of netvm did not detach \\(QEMU refused device_del of ${link.providerDevice}\\); ` +
            `then wrote .* but could not sync .*: should a crash bring back their records as linked, run spectrum-link unlink c1 --force again`,
        ),
      ),
    });
    // Written: the file records the link taken down.
    expect((await loadState(stateDir)).links.map((recorded) => recorded.attached)).toEqual([undefined]);
  });

  it('unlink --forget of links unlinked already, only the sync of the state dir failing after the rename: says their ids are released, and to run it again only should a crash bring them back', async () => {
    const { vmm } = recordingVmm();
    await linkC1(vmm);
    await unlinkVm(c1, { forget: false, force: false }, { ...options(), attach: qemu, vmm });
    // The check before goes through; the save renames the file, then its dir's sync fails.
    store.passSaves = 1;
    store.failSyncs = 1;
    await expect(unlinkVm(c1, { forget: true, force: false }, { ...options(), attach: qemu, vmm })).rejects.toMatchObject({
      kind: 'taken-down-not-recorded',
      message: expect.stringMatching(
        /^unlink c1: its links were unlinked already, and their ids are released: wrote .* but could not sync .* \(EIO\); the change may not survive a crash: should a crash bring back their records, run spectrum-link unlink c1 --forget again$/,
      ),
    });
    // Written: the file records no link of c1, so an unlink --forget now finds none (as the line says, not to run it again).
    expect((await loadState(stateDir)).links).toEqual([]);
    await expect(unlinkVm(c1, { forget: true, force: false }, { ...options(), attach: qemu, vmm })).rejects.toMatchObject({ kind: 'not-linked' });
  });

  it('link, a provider dropped from the config: a state dir that cannot be written stops its take-down before anything goes, saying so; what was linked stays', async () => {
    const { vmm, detached } = recordingVmm();
    const { text } = await linkC1(vmm, ['netvm2']);
    await rm(join(configDir, c1, 'providers', 'net', 'netvm2'));
    store.failSaves = 1;
    await expect(linkVms([c1], { ...options(), attach: qemu, vmm })).rejects.toMatchObject({
      name: 'LinkerError',
      kind: 'unlisted-not-taken-down',
      message: expect.stringMatching(
        /^linked, but taking down c1 -> netvm2 \(no longer among the providers\) was not begun: cannot write state file .*\(ENOSPC\).*; so none of them was taken down \(no NIC detached, no device deleted\): run the same link again once the state dir can be written$/,
      ),
    });
    expect([detached, kernel.removed]).toEqual([[], []]);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
  });

  it('link, a provider dropped from the config: a state file that cannot be written after the take-down says what went, and to run the same link again, which records it', async () => {
    let failing = false;
    const { vmm } = recordingVmm(() => void (store.failSaves = failing ? 1 : 0));
    await linkC1(vmm, ['netvm2']);
    const dropped = (await loadState(stateDir)).links.find((recorded) => recorded.provider === 'netvm2')!;
    const names = linkDeviceNames(PREFIX, dropped.id);
    await rm(join(configDir, c1, 'providers', 'net', 'netvm2'));
    failing = true;
    await expect(linkVms([c1], { ...options(), attach: qemu, vmm })).rejects.toMatchObject({
      name: 'LinkerError',
      kind: 'taken-down-not-recorded',
      message: expect.stringMatching(
        new RegExp(
          `^linked; then, as no longer among the providers, took down c1 -> netvm2 \\(id ${dropped.id}\\): their devices deleted, their NICs detached from their VMMs \\(where these run\\); ` +
            'but then cannot write state file .*; so the state file still records them as linked: once the state dir can be written, run the same link again \\(it finds them gone and records it\\)$',
        ),
      ),
    });
    expect(kernel.removed).toEqual([names.client, names.provider, names.bridge]);
    expect((await loadState(stateDir)).links.find((recorded) => recorded.provider === 'netvm2')?.attached).toBeDefined();
    failing = false;
    const again = await linkVms([c1], { ...options(), attach: qemu, vmm });
    expect(again.unlinked.get(c1)?.map((report) => report.provider)).toEqual(['netvm2']);
    expect((await loadState(stateDir)).links.find((recorded) => recorded.provider === 'netvm2')?.attached).toBeUndefined();
  });
});

describe('a take-down stopped part-way by the kernel (unlink, link of a VM that dropped a provider): what it had done is said, the state file as it was, and the same run again converges', () => {
  const qemu = parseAttachChoice(['qemu']);
  const c1 = CLIENTS[0]!;
  const netvm2 = vmName('netvm2');

  /** A VMM that records each NIC detached and refuses the detaches of the VMs in `refusing` (changed at will). */
  function qemuPort(): { vmm: VmmPort; detached: string[]; refusing: Set<string> } {
    const detached: string[] = [];
    const refusing = new Set<string>();
    const vmm: VmmPort = {
      attach: async () => true,
      detach: async (_kind, vm, nic) => {
        if (refusing.has(vm)) throw new Error(`QEMU refused device_del of ${nic.id}`);
        detached.push(nic.id);
      },
    };
    return { vmm, detached, refusing };
  }

  /** The devices of a link as the kernel lists them (a bridge, two taps). */
  const devicesOf = (link: LinkReport): [string, ObservedDevice][] => [
    [link.bridge, { name: link.bridge, kind: 'bridge' } as ObservedDevice],
    [link.clientDevice, { name: link.clientDevice, kind: 'tun' } as ObservedDevice],
    [link.providerDevice, { name: link.providerDevice, kind: 'tun' } as ObservedDevice],
  ];

  /** The last bin run's whole stdout, a --json failure's error object included. */
  let binStdout = '';
  /** `spectrum-link ARGS` as the bin runs it, over the scripted kernel, with `vmm`: its exit code, stdout, and stderr's lines. */
  async function bin(args: readonly string[], vmm: VmmPort): Promise<{ code: number; stdout: string; stderr: string[] }> {
    let stdout = '';
    let stderr = '';
    const out = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => ((stdout += String(chunk)), true));
    const err = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((stderr += String(chunk)), true));
    try {
      const program = new Command('spectrum-link');
      for (const command of linkCommands({}, () => vmm)) program.addCommand(command);
      const code = await runCli(program, [...args, '--state-dir', stateDir, '--device-prefix', 'sn']);
      const lines = stderr.split('\n').filter((line) => line !== '');
      binStdout = stdout;
      return { code, stdout: printedChecked(stdout, code, lines), stderr: lines };
    } finally {
      out.mockRestore();
      err.mockRestore();
    }
  }

  const again = '(README: An unlink stopped part-way): run spectrum-link unlink c1';

  it('unlink of a link recorded without attach modes whose devices the kernel will not list: that failure after `unlink <vm>:`, nothing taken down; exit 1 (one line) from the bin', async () => {
    const link = (await linkVms([c1], options())).linked.get(c1)![0]!;
    // Its record as written before the state kept attach modes: whether it is up, its devices tell.
    const legacy = JSON.parse(await readFile(join(stateDir, 'links.json'), 'utf8')) as { links: Record<string, unknown>[] };
    for (const entry of legacy.links) delete entry['attached'];
    await writeFile(join(stateDir, 'links.json'), JSON.stringify(legacy));
    const text = await readFile(join(stateDir, 'links.json'), 'utf8');
    kernel.unlistable.add(link.bridge);
    const said = `unlink c1: listing devices failed: ${link.bridge}: No buffer space available; so nothing was taken down (no NIC detached, no device deleted), the state file as it was`;
    await expect(unlinkVm(c1, { forget: false, force: false }, options())).rejects.toMatchObject({ name: 'LinkerError', kind: 'take-down-refused', message: said });
    expect(await bin(['unlink', c1], NO_VMM)).toEqual({ code: 1, stdout: '', stderr: [`spectrum-link: ${said}`] });
    expect(kernel.removed).toEqual([]);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
  });

  it('unlink stopped part-way says what is wrong and what is left in about 200 characters besides what it shows (the kernel\'s words, the links, what it had done), then the unlink to run again; the README section it names says the rest', async () => {
    const { vmm } = qemuPort();
    const link = (await linkVms([c1], { ...options(), attach: qemu, vmm })).linked.get(c1)![0]!;
    kernel.host = new Map(devicesOf(link));
    kernel.kept.add(link.bridge);
    const failure = await unlinkVm(c1, { forget: false, force: false }, { ...options(), attach: qemu, vmm }).then(
      () => undefined,
      (error: unknown) => error,
    );
    const message = failure instanceof Error ? failure.message : '';
    const done = /; (by then .*?); the state file/.exec(message)?.[1] ?? '';
    expect(done).toContain('may still exist');
    expect(message).toMatch(/\(README: An unlink stopped part-way\): run spectrum-link unlink c1 again$/);
    const own = message.length - done.length - `c1 -> netvm (id ${link.id})`.length - `removing device ${link.bridge} failed: Device or resource busy`.length - 'spectrum-link unlink c1'.length;
    expect(own, message).toBeLessThanOrEqual(200);
    const section = await readmeSection('An unlink stopped part-way');
    expect(section).toContain('a NIC\nalready out of its VMM');
    expect(section).toContain('count as done');
    expect(await readmeSection('A VMM that does not detach')).toContain('may be gone from its VM: unlink again once it answers');
  });

  it('unlink: the kernel refuses a deletion after the NICs came out and other devices went: says them and what may still exist; the state file as it was; the same unlink again takes down the rest', async () => {
    const { vmm, detached } = qemuPort();
    const link = (await linkVms([c1], { ...options(), attach: qemu, vmm })).linked.get(c1)![0]!;
    const text = await readFile(join(stateDir, 'links.json'), 'utf8');
    kernel.host = new Map(devicesOf(link));
    kernel.kept.add(link.bridge);
    await expect(unlinkVm(c1, { forget: false, force: false }, { ...options(), attach: qemu, vmm })).rejects.toMatchObject({
      name: 'LinkerError',
      kind: 'take-down-stopped',
      message:
        `unlink c1: taking down c1 -> netvm (id ${link.id}) stopped part-way: removing device ${link.bridge} failed: Device or resource busy; ` +
        `by then it had taken NIC ${link.clientDevice} out of the QEMU of c1 and NIC ${link.providerDevice} out of the QEMU of netvm (c1 and netvm no longer have them); ` +
        `it had deleted ${link.clientDevice} ${link.providerDevice} (${link.bridge} may still exist); ` +
        `the state file is as it was ${again} again`,
      released: { deleted: [link.clientDevice, link.providerDevice], failures: [] },
    });
    expect(detached).toEqual([link.clientDevice, link.providerDevice]);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
    // Again, the kernel deleting it now: taken down and recorded.
    kernel.kept.clear();
    const rerun = await unlinkVm(c1, { forget: false, force: false }, { ...options(), attach: qemu, vmm });
    expect(rerun.reports.map((report) => [report.id, report.linked])).toEqual([[link.id, true]]);
    expect((await loadState(stateDir)).links.map((recorded) => [recorded.id, recorded.attached])).toEqual([[link.id, undefined]]);
  });

  it.each([
    ['unlinked before, its id kept', false],
    ['recorded as linked, its devices gone (a reboot)', true],
  ])('unlink: stopped part-way, the devices of a link already down (%s) are not said to be ones that may still exist', async (_how, recordedLinked) => {
    const [down, up] = [...(await linkVms([c1, CLIENTS[1]!], options())).linked.values()].map((reports) => reports[0]!);
    if (!recordedLinked) await unlinkVm(c1, { forget: false, force: false }, options());
    // Only the other link's devices exist; the kernel refuses its bridge's deletion.
    kernel.host = new Map(devicesOf(up!));
    kernel.kept.add(up!.bridge);
    await expect(unlinkVm(NETVM, { forget: false, force: false }, options())).rejects.toMatchObject({
      name: 'LinkerError',
      kind: 'take-down-stopped',
      message: expect.stringMatching(
        new RegExp(
          `^unlink netvm: taking down c1 -> netvm \\(id ${down!.id}\\), c2 -> netvm \\(id ${up!.id}\\) stopped part-way: removing device ${up!.bridge} failed: Device or resource busy; ` +
            `by then it had deleted ${up!.clientDevice} ${up!.providerDevice} \\(${up!.bridge} may still exist\\); the state file is as it was`,
        ),
      ),
      released: { deleted: [up!.clientDevice, up!.providerDevice], existed: [up!.clientDevice, up!.providerDevice, up!.bridge] },
    });
  });

  it('unlink --json (the bin), stopped part-way: its line on stdout has the links it had wholly taken down (`unlinked`) and the rest with what went of them (`takeDownStopped`), forgotten none; then the line, exit 1', async () => {
    const [down, up] = [...(await linkVms([c1, CLIENTS[1]!], options())).linked.values()].map((reports) => reports[0]!);
    await unlinkVm(c1, { forget: false, force: false }, options());
    kernel.host = new Map(devicesOf(up!));
    kernel.kept.add(up!.bridge);
    const run = await bin(['unlink', NETVM, '--forget', '--json', '--attach', 'none'], NO_VMM);
    expect({ code: run.code, stderr: run.stderr }).toEqual({
      code: 1,
      stderr: [expect.stringMatching(new RegExp(`^spectrum-link: unlink netvm: taking down .* stopped part-way: removing device ${up!.bridge} failed: Device or resource busy; `))],
    });
    const fields = (report: LinkReport): Record<string, unknown> => {
      const { vm, provider, id, clientIp, clientMac, providerMac, bridge, clientDevice, providerDevice } = report;
      return { vm, provider, id, clientIp, clientMac, providerMac, bridge, clientDevice, providerDevice };
    };
    expect(JSON.parse(run.stdout)).toEqual({
      vm: NETVM,
      // Down before: attached no way, as a finished unlink says it.
      unlinked: [{ ...fields(down!), clientAttach: null, providerAttach: null }],
      forgotten: false,
      takeDownStopped: [
        {
          ...fields(up!),
          clientAttach: 'none',
          providerAttach: 'none',
          nicsDetached: [],
          vmmFailures: [],
          devicesDeleted: [up!.clientDevice, up!.providerDevice],
          devicesLeft: [up!.bridge],
        },
      ],
    });
    expect((await loadState(stateDir)).links.map((link) => [link.id, link.attached])).toEqual([
      [down!.id, undefined],
      [up!.id, { client: 'none', provider: 'none' }],
    ]);
  });

  it('unlink --json (the bin), stopped part-way: a link of `takeDownStopped` whose names held a device of another kind, deleted, says it (`foreignDeleted`), as a finished unlink does', async () => {
    const up = (await linkVms([c1], options())).linked.get(c1)![0]!;
    // Its client name holds a vxlan (deleted); the kernel refuses its bridge's deletion.
    kernel.host = new Map([...devicesOf(up), [up.clientDevice, { name: up.clientDevice, kind: 'vxlan' } as ObservedDevice]]);
    kernel.kept.add(up.bridge);
    const run = await bin(['unlink', c1, '--json', '--attach', 'none'], NO_VMM);
    const stdout = JSON.parse(run.stdout) as { takeDownStopped: { id: number; devicesDeleted: unknown; foreignDeleted?: unknown }[] };
    expect({ code: run.code, takeDownStopped: stdout.takeDownStopped.map(({ id, devicesDeleted, foreignDeleted }) => ({ id, devicesDeleted, foreignDeleted })) }).toEqual({
      code: 1,
      takeDownStopped: [{ id: up.id, devicesDeleted: [up.clientDevice, up.providerDevice], foreignDeleted: [{ device: up.clientDevice, kind: 'vxlan', expected: ['tun'] }] }],
    });
  });

  it.each([
    ['a VMM that refuses after another NIC came out', 'vmm'],
    ["the kernel refusing the devices' lookup after the NICs came out", 'lookup'],
  ] as const)('unlink --json (the bin), stopped before the removal\'s lookup found anything (%s): a link already down (no device of its names there) is among `unlinked`, not said to have devices that may still exist', async (_how, stop) => {
    const [down, up] = [...(await linkVms([c1, CLIENTS[1]!], { ...options(), attach: qemu, vmm: NO_VMM })).linked.values()].map((reports) => reports[0]!);
    await unlinkVm(c1, { forget: false, force: false }, { ...options(), vmm: NO_VMM });
    kernel.host = new Map(devicesOf(up!));
    if (stop === 'lookup') kernel.lookupRefused = `removing devices failed before any was removed: looking up ${up!.bridge} failed (No buffer space available), so whether it exists is unknown; run it again`;
    const removedBefore = kernel.removed.length;
    const detached: string[] = [];
    // QEMU: the NICs of the link down are in no VMM (DeviceNotFound); netvm's refuses the other's (stop 'vmm').
    const vmm: VmmPort = {
      attach: async () => true,
      detach: async (_kind, _vm, nic) => {
        if (nic.id === down!.clientDevice || nic.id === down!.providerDevice) return 'absent';
        if (stop === 'vmm' && nic.id === up!.providerDevice) throw new Error(`QEMU refused device_del of ${nic.id}`);
        detached.push(nic.id);
      },
    };
    const run = await bin(['unlink', NETVM, '--json', '--attach', 'qemu'], vmm);
    expect({ code: run.code, detached, removed: kernel.removed.slice(removedBefore) }).toEqual({
      code: 1,
      detached: stop === 'vmm' ? [up!.clientDevice] : [up!.clientDevice, up!.providerDevice],
      removed: [],
    });
    const stdout = JSON.parse(run.stdout) as { unlinked: { id: number }[]; takeDownStopped: { id: number; devicesDeleted: unknown; devicesLeft: unknown }[] };
    expect({
      unlinked: stdout.unlinked.map((entry) => entry.id),
      takeDownStopped: stdout.takeDownStopped.map(({ id, devicesDeleted, devicesLeft }) => ({ id, devicesDeleted, devicesLeft })),
    }).toEqual({
      unlinked: [down!.id],
      // Recorded as linked, its devices not looked up: each may still exist.
      takeDownStopped: [{ id: up!.id, devicesDeleted: [], devicesLeft: [up!.clientDevice, up!.providerDevice, up!.bridge] }],
    });
  });

  it('unlink: a VMM that refuses after another NIC came out: the refusal says that NIC came out (its VM lost it), no device deleted', async () => {
    const { vmm, detached, refusing } = qemuPort();
    const link = (await linkVms([c1], { ...options(), attach: qemu, vmm })).linked.get(c1)![0]!;
    refusing.add(NETVM);
    await expect(unlinkVm(c1, { forget: false, force: false }, { ...options(), attach: qemu, vmm })).rejects.toMatchObject({
      name: 'LinkerError',
      kind: 'vmm-detach-failed',
      message: expect.stringMatching(
        new RegExp(
          `^unlink c1: QEMU refused device_del of ${link.providerDevice}; so no host device was deleted .*run spectrum-link unlink c1 --force; ` +
            `before that refusal, it had taken NIC ${link.clientDevice} out of the QEMU of c1 \\(c1 no longer has it\\)$`,
        ),
      ),
    });
    expect([detached, kernel.removed]).toEqual([[link.clientDevice], []]);
  });

  it('unlink --force (the bin): a VMM that did not detach, then the kernel refusing a tap\'s deletion: one line saying what it had done, then that VMM\'s line (its tap and bridge deleted); exit 1 (--json: its line says it too); again, it converges', async () => {
    const { vmm, refusing } = qemuPort();
    const link = (await linkVms([c1], { ...options(), attach: qemu, vmm })).linked.get(c1)![0]!;
    kernel.host = new Map(devicesOf(link));
    kernel.kept.add(link.clientDevice);
    refusing.add(NETVM);
    const error = `QEMU refused device_del of ${link.providerDevice}`;
    // As `link --json` says such a link (takeDownStopped): recorded still, with what went of it.
    const stoppedLine = {
      vm: c1,
      unlinked: [],
      forgotten: false,
      takeDownStopped: [
        {
          vm: c1,
          provider: NETVM,
          id: link.id,
          clientIp: link.clientIp,
          clientMac: link.clientMac,
          providerMac: link.providerMac,
          bridge: link.bridge,
          clientDevice: link.clientDevice,
          providerDevice: link.providerDevice,
          clientAttach: 'qemu',
          providerAttach: 'qemu',
          nicsDetached: [{ vm: c1, vmm: 'qemu', nic: link.clientDevice }],
          vmmFailures: [{ vm: NETVM, vmm: 'qemu', nic: link.providerDevice, error }],
          devicesDeleted: [link.providerDevice, link.bridge],
          devicesLeft: [link.clientDevice],
        },
      ],
    };
    for (const json of [false, true]) {
      const run = await bin(['unlink', c1, '--force', '--attach', 'qemu', ...(json ? ['--json'] : [])], vmm);
      expect({ ...run, stdout: json ? (JSON.parse(run.stdout) as unknown) : run.stdout }).toEqual({
        code: 1,
        stdout: json ? stoppedLine : '',
        stderr: [
          `spectrum-link: unlink c1: taking down c1 -> netvm (id ${link.id}) stopped part-way: removing device ${link.clientDevice} failed: Device or resource busy; ` +
            `by then it had taken NIC ${link.clientDevice} out of the QEMU of c1 (c1 no longer has it); ` +
            `but not NIC ${link.providerDevice}, which the QEMU of netvm did not detach (QEMU refused device_del of ${link.providerDevice}); ` +
            `it had deleted ${link.providerDevice} ${link.bridge} (${link.clientDevice} may still exist); ` +
            `the state file is as it was ${again} --force --state-dir ${stateDir} --device-prefix sn --attach qemu again`,
          expect.stringMatching(
            new RegExp(
              `^spectrum-link: QEMU of netvm did not detach NIC ${link.providerDevice} \\(link c1 -> netvm\\): QEMU refused device_del of ${link.providerDevice}; ` +
                `the host side was removed anyway \\(tap ${link.providerDevice}, bridge ${link.bridge}\\), but the VMM may still hold the NIC \\(README: A VMM that does not detach\\)`,
            ),
          ),
        ],
      });
    }
    expect((await loadState(stateDir)).links.map((recorded) => recorded.attached)).toEqual([{ client: 'qemu', provider: 'qemu' }]);
    kernel.kept.clear();
    refusing.clear();
    expect(await bin(['unlink', c1, '--force', '--attach', 'qemu'], vmm)).toEqual({ code: 0, stdout: `unlinked c1 -> netvm (id ${link.id}, kept)\n`, stderr: [] });
    expect((await loadState(stateDir)).links.map((recorded) => recorded.attached)).toEqual([undefined]);
  });

  it('unlink --force --json (the bin) stopped part-way with a VMM\'s line after it: the error object keeps the take-down\'s kind (take-down-stopped), as without that line', async () => {
    const { vmm, refusing } = qemuPort();
    const link = (await linkVms([c1], { ...options(), attach: qemu, vmm })).linked.get(c1)![0]!;
    kernel.host = new Map(devicesOf(link));
    kernel.kept.add(link.clientDevice);
    refusing.add(NETVM);
    const run = await bin(['unlink', c1, '--force', '--attach', 'qemu', '--json'], vmm);
    expect(run.stderr).toHaveLength(2);
    const [first = '', ...more] = run.stderr;
    expect(splitJsonError(binStdout).error).toEqual(jsonErrorOf(first, 'take-down-stopped', 1, more.map((line) => line.replace(/^spectrum-link: /, ''))));
    kernel.kept.clear();
    refusing.clear();
    expect((await bin(['unlink', c1, '--force', '--attach', 'qemu'], vmm)).code).toBe(0);
  });

  it.each([false, true])('link (--json: %s): its take-down of a dropped provider stopped by the kernel says the NIC out, the VMM that did not detach and the devices deleted (--json: takeDownStopped), then that VMM\'s line; the link stays recorded, and link again takes it down', async (json) => {
    const { vmm, refusing } = qemuPort();
    await addVm(netvm2);
    await writeFile(join(configDir, c1, 'providers', 'net', netvm2), '');
    const dropped = (await linkVms([c1], { ...options(), attach: qemu, vmm })).linked.get(c1)!.find((report) => report.provider === netvm2)!;
    await rm(join(configDir, c1, 'providers', 'net', netvm2));
    kernel.host = new Map(devicesOf(dropped));
    kernel.kept.add(dropped.clientDevice);
    refusing.add(netvm2);
    const run = await linkCli([...(json ? ['--json'] : []), c1], stateDir, { vmm, attach: ['qemu'] });
    const error = `QEMU refused device_del of ${dropped.providerDevice}`;
    if (json) {
      expect(run.stdout.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as unknown)).toEqual([
        {
          vm: c1,
          links: [expect.objectContaining({ vm: c1, provider: NETVM })],
          takeDownStopped: [
            {
              vm: c1,
              provider: netvm2,
              id: dropped.id,
              clientIp: dropped.clientIp,
              clientMac: dropped.clientMac,
              providerMac: dropped.providerMac,
              bridge: dropped.bridge,
              clientDevice: dropped.clientDevice,
              providerDevice: dropped.providerDevice,
              clientAttach: 'qemu',
              providerAttach: 'qemu',
              nicsDetached: [{ vm: c1, vmm: 'qemu', nic: dropped.clientDevice }],
              vmmFailures: [{ vm: netvm2, vmm: 'qemu', nic: dropped.providerDevice, error }],
              devicesDeleted: [dropped.providerDevice, dropped.bridge],
              devicesLeft: [dropped.clientDevice],
            },
          ],
        },
      ]);
    } else {
      expect(run.stdout.split('\n').filter((line) => line !== '' && !line.startsWith(' '))).toEqual([expect.stringMatching(/^c1 -> netvm  id /)]);
    }
    expect({ code: run.code, stderr: run.stderr }).toEqual({
      code: 1,
      stderr: [
        `spectrum-link: linked, but taking down c1 -> netvm2 (id ${dropped.id}), no longer among the providers, stopped part-way: removing device ${dropped.clientDevice} failed: Device or resource busy; ` +
          `by then it had taken NIC ${dropped.clientDevice} out of the QEMU of c1 (c1 no longer has it); but not NIC ${dropped.providerDevice}, which the QEMU of netvm2 did not detach (${error}); ` +
          `it had deleted ${dropped.providerDevice} ${dropped.bridge} (${dropped.clientDevice} may still exist); ` +
          'the state file still records them as linked (README: A provider dropped): run the same link again',
        expect.stringMatching(new RegExp(`^spectrum-link: QEMU of netvm2 did not detach NIC ${dropped.providerDevice} \\(link c1 -> netvm2\\): ${error}; the host side was removed anyway`)),
      ],
    });
    const recorded = async (): Promise<unknown> => (await loadState(stateDir)).links.find((link) => link.provider === netvm2)?.attached;
    expect(await recorded()).toEqual({ client: 'qemu', provider: 'qemu' });
    // Again, the kernel and the VMM going along now: taken down and recorded.
    kernel.kept.clear();
    refusing.clear();
    const rerun = await linkCli([c1], stateDir, { vmm, attach: ['qemu'] });
    expect({ code: rerun.code, stderr: rerun.stderr }).toEqual({ code: 0, stderr: [] });
    expect(rerun.stdout).toContain(`unlinked c1 -> netvm2 (id ${dropped.id}, kept): netvm2 is no longer among c1's providers\n`);
    expect(await recorded()).toBeUndefined();
  });
  it('link --all --json: a client that names no provider any more, whose take-down stopped part-way, gets a line with takeDownStopped (in text, the failure\'s line alone says it)', async () => {
    const { vmm } = qemuPort();
    const link = (await linkVms([c1], { ...options(), attach: qemu, vmm })).linked.get(c1)![0]!;
    // c1 names no provider now; c2 and c3 do.
    await rm(join(configDir, c1, 'providers', 'net', NETVM));
    kernel.host = new Map(devicesOf(link));
    kernel.kept.add(link.bridge);
    for (const json of [true, false]) {
      const run = await linkCli([...(json ? ['--json'] : []), '--all'], stateDir, { vmm, attach: ['qemu'] });
      const lines = run.stdout.split('\n').filter((line) => line !== '' && !line.startsWith(' '));
      if (json) {
        expect(lines.map((line) => JSON.parse(line) as { vm: string })).toEqual([
          { vm: 'c2', links: [expect.objectContaining({ vm: 'c2' })] },
          { vm: 'c3', links: [expect.objectContaining({ vm: 'c3' })] },
          {
            vm: c1,
            links: [],
            takeDownStopped: [
              expect.objectContaining({
                id: link.id,
                clientAttach: 'qemu',
                providerAttach: 'qemu',
                nicsDetached: [
                  { vm: c1, vmm: 'qemu', nic: link.clientDevice },
                  { vm: NETVM, vmm: 'qemu', nic: link.providerDevice },
                ],
                vmmFailures: [],
                devicesDeleted: [link.clientDevice, link.providerDevice],
              }),
            ],
          },
        ]);
      } else expect(lines).toEqual([expect.stringMatching(/^c2 -> netvm  /), expect.stringMatching(/^c3 -> netvm  /)]);
      expect({ code: run.code, stderr: run.stderr }).toEqual({
        code: 1,
        stderr: [expect.stringMatching(new RegExp(`^spectrum-link: linked, but taking down c1 -> netvm \\(id ${link.id}\\), no longer among the providers, stopped part-way: removing device ${link.bridge} failed: `))],
      });
    }
  });
});

describe('an MTU above what a tap takes', () => {
  it('is refused for a named VM with a tap side before any chunk is planned: no device query, no state write, however late the VM comes in the list', async () => {
    // Chunks grow from 4: the seventh VM would be planned only after the first chunk's devices were made.
    const vms = ['c4', 'c5', 'c6', 'c7'];
    for (const vm of vms) await addVm(vm, [NETVM]);
    const attach = parseAttachChoice(['netns', 'netvm=netns', 'c7=qemu']);
    await expect(linkVms([...CLIENTS, ...vms], { ...options(), mtu: 65535, attach })).rejects.toMatchObject({ name: 'AttachModeError', kind: 'mtu', message: expect.stringContaining('c7 is attached with qemu') });
    expect([kernel.observed, kernel.undone]).toEqual([0, 0]);
    expect(existsSync(join(stateDir, 'links.json'))).toBe(false);
  });
});

describe("link --all whose listing of the devices, for the links it leaves as they are, fails", () => {
  it("still returns what it linked, and gives those links as the state records them (attachRecorded false, modes null where it records none)", async () => {
    // A client whose directory has gone: one link recorded before the state kept attach modes, one recorded with them.
    const gone = vmName('gone');
    const other = vmName('other');
    const allocation = allocateMany(emptyState(), [{ client: gone, provider: NETVM }, { client: gone, provider: other }]);
    const [old, modern] = allocation.links;
    const state = setAttachments(allocation.state, [{ pair: { client: gone, provider: other }, attached: { client: 'netns', provider: 'qemu' } }]);
    await writeFile(join(stateDir, 'links.json'), serializeState(state));
    kernel.listingRefused = 'listing devices failed: Cannot allocate memory';
    const outcome = await linkVms([CLIENTS[0]!], options(), { snapshot: await readConfigDir(configDir), withoutProviders: [] });
    expect([...outcome.linked.keys()]).toEqual(['c1']);
    expect(outcome.orphaned.map(({ vm, links }) => ({ vm, links: links.map(({ id, clientAttach, providerAttach, attachRecorded, linked }) => ({ id, clientAttach, providerAttach, attachRecorded, linked })) }))).toEqual([
      {
        vm: 'gone',
        links: expect.arrayContaining([
          { id: old!.id, clientAttach: null, providerAttach: null, attachRecorded: false, linked: false },
          { id: modern!.id, clientAttach: 'netns', providerAttach: 'qemu', attachRecorded: true, linked: true },
        ]),
      },
    ]);
    // What it linked is recorded.
    const saved = parseState(await readFile(join(stateDir, 'links.json'), 'utf8'), 'test');
    expect(saved.links.map((link) => link.client).sort()).toEqual(['c1', 'gone', 'gone']);
  });
});

describe('link --all: an unusable entry recorded as a provider', () => {
  const jsonOf = (stdout: string): Record<string, unknown>[] => stdout.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as Record<string, unknown>);

  it("its warning says the links linked with it as provider (up to three named, the rest counted), not that none are recorded; a stray file so linked is warned of too", async () => {
    const [outside, note] = [vmName('outside'), vmName('note')];
    await symlink(tmpdir(), join(configDir, outside));
    await writeFile(join(configDir, note), 'a note\n');
    // Their clients' directories have gone: link --all leaves their links as they are (linked).
    const gone = ['g1', 'g2', 'g3', 'g4'].map(vmName);
    const pairs = [{ client: gone[0]!, provider: outside }, ...gone.map((client) => ({ client, provider: note }))];
    const allocation = allocateMany(emptyState(), pairs);
    await writeFile(join(stateDir, 'links.json'), serializeState(setAttachments(allocation.state, pairs.map((pair) => ({ pair, attached: { client: 'none', provider: 'none' } as const })))));
    const run = await linkCli(['--all']);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: [] });
    expect(logged.warnings.filter((warning) => !warning.startsWith('g'))).toEqual([
      expect.stringMatching(/^note is not linked: .*; no links are recorded for it as client; as provider, 4 recorded links \(g1 -> note, g2 -> note, g3 -> note and 1 more\), their clients' to link or take down$/),
      expect.stringMatching(/^outside is not linked: .*; no links are recorded for it as client; as provider, 1 recorded link \(g1 -> outside\), its client's to link or take down$/),
    ]);
  });

  it('its --json line gives the links linked with it as provider (`linkedAsProvider`, by client, as `recorded` gives its own), as its warning names them; none where there are none', async () => {
    const [outside, note, loose] = [vmName('outside'), vmName('note'), vmName('loose')];
    await symlink(tmpdir(), join(configDir, outside));
    await writeFile(join(configDir, note), 'a note\n');
    await symlink(join(configDir, 'nowhere'), join(configDir, loose));
    const [g1, g2] = ['g1', 'g2'].map(vmName) as [VmName, VmName];
    // g2 -> note taken down, its id kept: no one's to link or take down, so not given (and the
    // stray file, with no other link, passed over quietly).
    const pairs = [{ client: g2, provider: outside }, { client: g1, provider: outside }, { client: g2, provider: note }];
    const allocation = allocateMany(emptyState(), pairs);
    const linked = pairs.slice(0, 2).map((pair) => ({ pair, attached: { client: 'none', provider: 'qemu' } as const }));
    await writeFile(join(stateDir, 'links.json'), serializeState(setAttachments(allocation.state, linked)));
    const run = await linkCli(['--all', '--json']);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: [] });
    const idOf = (client: VmName, provider: VmName): number => allocation.links.find((link) => link.client === client && link.provider === provider)!.id;
    const left = (client: VmName): Record<string, unknown> => ({ vm: client, provider: outside, id: idOf(client, outside), clientAttach: 'none', providerAttach: 'qemu', attachRecorded: true });
    expect(jsonOf(run.stdout).filter((line) => 'unusableDir' in line)).toEqual([
      { vm: loose, links: [], unusableDir: `${configDir}/loose is a symlink to nothing` },
      { vm: outside, links: [], unusableDir: expect.stringContaining('leads outside the config dir'), linkedAsProvider: [expect.objectContaining(left(g1)), expect.objectContaining(left(g2))] },
    ]);
    expect(logged.warnings.filter((warning) => warning.startsWith(outside))).toEqual([
      expect.stringMatching(/^outside is not linked: .*; no links are recorded for it as client; as provider, 2 recorded links \(g1 -> outside, g2 -> outside\), their clients' to link or take down$/),
    ]);
  });

  it('a symlink to nothing (or round a loop) whose VM has links recorded as client is said as what it is, as other unusable entries are, with how to release them (as of a client whose directory has gone) and its links as provider; not as a client with no directory', async () => {
    const [gone, loop] = [vmName('gone'), vmName('loop')];
    await symlink(join(configDir, 'nowhere'), join(configDir, gone));
    await symlink(loop, join(configDir, loop));
    const pairs = [{ client: gone, provider: NETVM }, { client: loop, provider: NETVM }, { client: loop, provider: vmName('netvm2') }, { client: vmName('g1'), provider: gone }];
    const allocation = allocateMany(emptyState(), pairs);
    await writeFile(join(stateDir, 'links.json'), serializeState(setAttachments(allocation.state, pairs.map((pair) => ({ pair, attached: { client: 'none', provider: 'none' } as const })))));
    const run = await linkCli(['--all', '--json']);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: [] });
    const linkOf = (client: string, provider: string): Record<string, unknown> =>
      expect.objectContaining({ vm: client, provider, id: allocation.links.find((link) => link.client === client && link.provider === provider)!.id, clientAttach: 'none', providerAttach: 'none' });
    const said = (vm: string): string => `${join(configDir, vm)} is a symlink to ${vm === gone ? 'nothing' : 'loop, which loops (ELOOP: too many levels of symbolic links)'}`;
    expect(jsonOf(run.stdout).filter((line) => line['vm'] === gone || line['vm'] === loop)).toEqual([
      { vm: gone, links: [], unusableDir: said(gone), recorded: [linkOf(gone, NETVM)], linkedAsProvider: [linkOf('g1', gone)] },
      // In the state's order, as `recorded` gives every entry's.
      { vm: loop, links: [], unusableDir: said(loop), recorded: allocation.state.links.filter((link) => link.client === loop).map((link) => linkOf(loop, link.provider)) },
    ]);
    const release = (vm: string, them: string): string => `as the VM may still run; if it is gone for good, release ${them} with: spectrum-link unlink ${vm} --forget --state-dir ${stateDir} --device-prefix sn`;
    expect(logged.warnings.filter((warning) => warning.startsWith(gone) || warning.startsWith(loop))).toEqual([
      // The unlink offered takes down its links as provider too (unlink <vm> takes every link of the VM): said so.
      `gone is not linked: ${said(gone)}; its 1 recorded link as client is left as it is (devices too), ${release(gone, 'it and its links as provider')}; as provider, 1 recorded link (g1 -> gone), its client's to link or take down`,
      `loop is not linked: ${said(loop)}; its 2 recorded links are left as they are (devices too), ${release(loop, 'them')}`,
    ]);
    // As said: that unlink releases g1 -> gone with gone -> netvm.
    await unlinkVm(gone, { forget: true, force: false }, options());
    const left = (await loadState(stateDir)).links.filter((link) => [gone, loop, 'g1'].includes(link.client));
    expect(left.map(({ client, provider }) => `${client} -> ${provider}`).sort()).toEqual(['loop -> netvm', 'loop -> netvm2']);
  });

  it('a client whose directory has gone, linked with as provider: how to release its links says that unlink takes its links as provider down too, named (one taken down, its id kept, not), as of a symlink to nothing', async () => {
    const gone = vmName('gone');
    const [g1, g2] = ['g1', 'g2'].map(vmName) as [VmName, VmName];
    const pairs = [{ client: gone, provider: NETVM }, { client: g1, provider: gone }, { client: g2, provider: gone }];
    const allocation = allocateMany(emptyState(), pairs);
    const linked = pairs.slice(0, 2).map((pair) => ({ pair, attached: { client: 'none', provider: 'none' } as const }));
    await writeFile(join(stateDir, 'links.json'), serializeState(setAttachments(allocation.state, linked)));
    const run = await linkCli(['--all', '--json']);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: [] });
    const release = `as the VM may still run; if it is gone for good, release it and its 1 link as provider (g1 -> gone) with: spectrum-link unlink gone --forget --state-dir ${stateDir} --device-prefix sn`;
    expect(logged.warnings.filter((warning) => warning.startsWith(gone))).toEqual([`gone has 1 recorded link but no directory in ${configDir}: left as it is (devices too), ${release}`]);
    // Its --json line as before: its own links.
    expect(jsonOf(run.stdout).filter((line) => line['vm'] === gone)).toEqual([{ vm: gone, links: [], orphaned: [expect.objectContaining({ vm: gone, provider: NETVM })] }]);
    // As said: that unlink takes down g1 -> gone with gone -> netvm (and releases g2 -> gone's id).
    await unlinkVm(gone, { forget: true, force: false }, options());
    expect((await loadState(stateDir)).links.filter((link) => link.client === gone || link.provider === gone)).toEqual([]);
  });

  it('says none of those links taken down (ids kept: the run took them down, its clients naming it no more), on that run and every one after; a stray file with only such links is passed over quietly again', async () => {
    const c4 = vmName('c4');
    await addVm(c4, [NETVM]);
    const [outside, note] = [vmName('outside'), vmName('note')];
    await symlink(tmpdir(), join(configDir, outside));
    await writeFile(join(configDir, note), 'a note\n');
    // Their clients named them once; each names netvm alone now, so link --all takes those links
    // down (ids kept). g1's directory has gone; its link to note, recorded before the state kept
    // attach modes, is up while a device of its kind is there: that one is said.
    const g1 = vmName('g1');
    const pairs = [{ client: CLIENTS[0]!, provider: outside }, ...[...CLIENTS, c4].map((client) => ({ client, provider: note }))];
    const allocation = allocateMany(emptyState(), [...pairs, { client: g1, provider: note }]);
    await writeFile(join(stateDir, 'links.json'), serializeState(setAttachments(allocation.state, pairs.map((pair) => ({ pair, attached: { client: 'none', provider: 'none' } as const })))));
    const legacy = linkDeviceNames(PREFIX, allocation.links.find((link) => link.client === g1)!.id);
    kernel.host = new Map([[legacy.bridge, { name: legacy.bridge, kind: 'bridge' } as ObservedDevice]]);
    const warned = (): string[] => logged.warnings.filter((warning) => !warning.startsWith('g1 '));
    const first = await linkCli(['--all']);
    expect({ code: first.code, stderr: first.stderr, unlinked: first.stdout.split('\n').filter((line) => line.startsWith('unlinked')).length }).toEqual({ code: 0, stderr: [], unlinked: 5 });
    const expected = [
      expect.stringMatching(/^note is not linked: .*; no links are recorded for it as client; as provider, 1 recorded link \(g1 -> note\), its client's to link or take down$/),
      expect.stringMatching(/^outside is not linked: .*; no links are recorded for it$/),
    ];
    expect(warned()).toEqual(expected);
    logged.warnings = [];
    const again = await linkCli(['--all']);
    expect({ code: again.code, stderr: again.stderr, warnings: warned() }).toEqual({ code: 0, stderr: [], warnings: expected });
    // The legacy link gone too: nothing is said of the stray file.
    kernel.host = new Map();
    logged.warnings = [];
    await linkCli(['--all']);
    expect(warned()).toEqual([expected[1]]);
  });
});

describe('a failed link undoes only what its plans made', () => {
  it("tells each plan's undo the devices that plan made: not the one the kernel refused (someone else's of that name), nor those after it", async () => {
    const ids = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM }))).links.map((link) => link.id);
    const c3 = linkDeviceNames(PREFIX, ids[2]!);
    kernel.refused.add(c3.bridge);
    await expect(linkVms(CLIENTS, options())).rejects.toThrow(/File exists$/);
    expect(kernel.undonePlans).toHaveLength(kernel.undoneMade.length);
    const made = kernel.undonePlans.map((plan, index) => ({ creates: plan.creates, made: kernel.undoneMade[index] }));
    const refusedPlan = made.find(({ creates }) => creates.includes(c3.bridge));
    expect(refusedPlan?.made).toBeInstanceOf(Set);
    const refusedAt = refusedPlan!.creates.indexOf(c3.bridge);
    expect([...refusedPlan!.made!]).toEqual(refusedPlan!.creates.slice(0, refusedAt));
    expect(refusedPlan!.made!.has(c3.bridge)).toBe(false);
    expect(refusedPlan!.made!.has(c3.client)).toBe(false);
  });
});

describe('a failed link deletes only the VM namespaces its own `ip netns add` made', () => {
  /** A VMM that refuses every NIC: c1 fails at its hot-plug, after its devices (and namespace) are made. */
  const refusingVmm: VmmPort = {
    attach: async () => {
      throw new Error('QMP: device_add refused');
    },
    detach: async () => undefined,
  };
  const c1 = CLIENTS[0]!;
  const run = () => linkVmsKeepGoing([c1], { ...options(), attach: parseAttachChoice([`${c1}=netns`, `${NETVM}=qemu`]), vmm: refusingVmm });

  it('--keep-going: a VM undone alone keeps its namespace where someone else made it between the look and the make', async () => {
    kernel.foreignNamespaces.add(c1);
    const outcome = await run();
    expect(outcome.failed.map((failure) => failure.vm)).toEqual([c1]);
    expect(kernel.deletedNamespaces).toEqual([]);
  });

  it('--keep-going: a VM undone alone loses the namespace its run made', async () => {
    const outcome = await run();
    expect(outcome.failed.map((failure) => failure.vm)).toEqual([c1]);
    expect(kernel.deletedNamespaces).toEqual([c1]);
  });
});

describe("link of several chunks of VMs, a later chunk's side refused as bad input (its kept mode's VMM socket)", () => {
  /**
   * c1..c12 (the first two chunks, of 4 and 8) and c13 (the third), whose provider qvm is
   * recorded as QEMU-attached, its socket path one that cannot be: the first chunk would be made
   * while the second is planned.
   */
  async function laterChunkRefused(): Promise<{ clients: VmName[]; vmm: VmmPort; refused: Error; applies: () => number }> {
    const qvm = vmName('qvm');
    const more = Array.from({ length: 10 }, (_, index) => vmName(`c${index + 4}`));
    const last = more.at(-1)!;
    await addVm(qvm);
    for (const vm of more) await addVm(vm, [vm === last ? qvm : NETVM]);
    const clients = [...CLIENTS, ...more];
    const pairs = clients.map((client) => ({ client, provider: client === last ? qvm : NETVM }));
    const allocated = allocateMany(emptyState(), pairs);
    await saveState(stateDir, setAttachments(allocated.state, pairs.map((pair) => ({ pair, attached: { client: 'none', provider: pair.provider === qvm ? 'qemu' : 'none' } }))));
    kernel.host = new Map(
      allocated.state.links.flatMap((link) => Object.entries(linkDeviceNames(PREFIX, link.id)).map(([role, name]): [string, ObservedDevice] => [name, { name, kind: role === 'bridge' ? 'bridge' : 'tun' } as ObservedDevice])),
    );
    let applied = 0;
    kernel.whileApplying = () => void (applied += 1);
    const refused = new Error('the QMP socket path of qvm is longer than a Unix socket takes');
    const vmm: VmmPort = {
      ...NO_VMM,
      checkSocket: (kind, vm) => {
        if (kind === 'qemu' && vm === qvm) throw refused;
      },
    };
    return { clients, vmm, refused, applies: () => applied };
  }

  it('is refused before any chunk\'s devices are made: a provider\'s recorded mode is checked up front where the config is read whole (link --all)', async () => {
    const { clients, vmm, refused, applies } = await laterChunkRefused();
    const snapshot = await readConfigDir(configDir);
    await expect(linkVms(clients, { ...options(), attach: parseAttachChoice([]), vmm }, { snapshot, withoutProviders: [] })).rejects.toBe(refused);
    expect(applies()).toBe(0);
  });

  it("is refused before any chunk's devices are made, as with --all, where VMs are named: the named VMs' providers are read up front, a provider's recorded mode checked there", async () => {
    const { clients, vmm, refused, applies } = await laterChunkRefused();
    const stateBefore = await readFile(join(stateDir, 'links.json'), 'utf8');
    await expect(linkVms(clients, { ...options(), attach: parseAttachChoice([]), vmm })).rejects.toBe(refused);
    expect(applies()).toBe(0);
    expect(kernel.undone).toBe(0);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(stateBefore);
  });
});

describe('link of several chunks of VMs, an invalid VM in a later chunk', () => {
  it.each([
    ['named', false],
    ['the config read whole (--all)', true],
  ])("fails the run before any chunk's devices are made (%s): none replaced only for the undo, no link left down", async (_how, whole) => {
    // c1..c12 (the first two chunks, of 4 and 8), their links up as netns (veths, which
    // --attach none replaces with taps); c13 (the third chunk) names a provider that is no VM.
    const more = Array.from({ length: 10 }, (_, index) => vmName(`c${index + 4}`));
    const last = more.at(-1)!;
    for (const vm of more) await addVm(vm, [vm === last ? 'nosuchvm' : NETVM]);
    const clients = [...CLIENTS, ...more];
    const pairs = clients.filter((client) => client !== last).map((client) => ({ client, provider: NETVM }));
    const allocated = allocateMany(emptyState(), pairs);
    await saveState(stateDir, setAttachments(allocated.state, pairs.map((pair) => ({ pair, attached: { client: 'netns', provider: 'netns' } }))));
    kernel.host = new Map(
      allocated.state.links.flatMap((link) =>
        Object.entries(linkDeviceNames(PREFIX, link.id)).map(([role, name]): [string, ObservedDevice] => [name, { name, kind: role === 'bridge' ? 'bridge' : 'veth' } as ObservedDevice]),
      ),
    );
    const stateBefore = await readFile(join(stateDir, 'links.json'), 'utf8');
    let applies = 0;
    kernel.whileApplying = () => void (applies += 1);
    const leftDown: LeftDownLink[] = [];
    const run = { ...options(), attach: parseAttachChoice(['none']), onLeftDown: (links: readonly LeftDownLink[]) => void leftDown.push(...links) };
    const wholeDir = whole ? { snapshot: await readConfigDir(configDir), withoutProviders: [] } : undefined;
    await expect(linkVms(clients, run, wholeDir)).rejects.toMatchObject({ name: 'ConfigError', message: expect.stringContaining('nosuchvm') });
    expect(applies).toBe(0);
    expect(kernel.undone).toBe(0);
    expect(leftDown).toEqual([]);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(stateBefore);
  });
});

describe('link of several chunks of VMs with the config read whole, a later chunk failing as it is planned', () => {
  it('never begins the plan of the chunk before it that had not begun: no devices made only for the undo', async () => {
    // c1..c4 (the first chunk) and c5 (the second), whose provider is no VM of the config dir.
    const c4 = vmName('c4');
    const c5 = vmName('c5');
    await addVm(c4, [NETVM]);
    await addVm(c5, ['nosuchvm']);
    let applies = 0;
    kernel.whileApplying = () => void (applies += 1);
    const snapshot = await readConfigDir(configDir);
    await expect(linkVms([...CLIENTS, c4, c5], options(), { snapshot, withoutProviders: [] })).rejects.toMatchObject({ name: 'ConfigError' });
    expect(applies).toBe(0);
    expect(kernel.undone).toBe(0);
  });
});

describe('link of a side up as a VMM attached it, to be attached another way', () => {
  const [c1, c2, c3] = CLIENTS as [VmName, VmName, VmName];
  /** What happened, in order: each detach (`detach KIND VM NIC`), attach, and plan carried out. */
  let events: string[];
  /** Detaches of these NIC ids are refused, as a VMM refuses device_del. */
  let refuse: Set<string>;
  const vmm = (): VmmPort => ({
    attach: async (kind, vm, nic) => {
      events.push(`attach ${kind} ${vm} ${nic.id}`);
      return true;
    },
    detach: async (kind, vm, nic) => {
      events.push(`detach ${kind} ${vm} ${nic.id}`);
      if (refuse.has(nic.id)) throw new Error("QEMU refused device_del: Bus 'pci.0' does not support hotplugging (GenericError)");
    },
  });
  /** Each client linked to netvm, recorded with these modes, its devices there (up). */
  async function linkedAs(modes: { client: 'qemu' | 'cloud-hypervisor' | 'none' | 'netns'; provider: 'qemu' | 'cloud-hypervisor' | 'none' | 'netns' }, clients: readonly VmName[] = CLIENTS): Promise<{ text: string; ids: ClientId[] }> {
    const allocation = allocateMany(emptyState(), clients.map((client) => ({ client, provider: NETVM })));
    // As a run records them, with its device prefix (an undo writes the state back with that too).
    await saveState(stateDir, withDevicePrefix(setAttachments(allocation.state, allocation.links.map((link) => ({ pair: link, attached: modes }))), PREFIX));
    kernel.host = new Map(allocation.links.flatMap((link) => Object.values(linkDeviceNames(PREFIX, link.id)).map((name): [string, ObservedDevice] => [name, { name, kind: name.includes('b') ? 'bridge' : 'tun' } as ObservedDevice])));
    return { text: await readFile(join(stateDir, 'links.json'), 'utf8'), ids: allocation.links.map((link) => link.id) };
  }
  const names = (id: ClientId): ReturnType<typeof linkDeviceNames> => linkDeviceNames(PREFIX, id);
  beforeEach(() => {
    events = [];
    refuse = new Set();
    kernel.whileApplying = () => void events.push('apply');
  });

  it("takes the NIC out of the VMM the state records, before anything is made, and records the new mode; a side kept, or a VMM mode kept, is not taken out", async () => {
    const { ids } = await linkedAs({ client: 'qemu', provider: 'cloud-hypervisor' });
    const outcome = await linkVms([c1], { ...options(), attach: parseAttachChoice([`${c1}=none`]), vmm: vmm() });
    expect(events).toEqual([`detach qemu c1 ${names(ids[0]!).client}`, 'apply', `attach cloud-hypervisor netvm ${names(ids[0]!).provider}`]);
    expect(outcome.linked.get(c1)).toMatchObject([{ clientAttach: 'none', providerAttach: 'cloud-hypervisor' }]);
    expect((await loadState(stateDir)).links.find((link) => link.client === c1)?.attached).toEqual({ client: 'none', provider: 'cloud-hypervisor' });
    // The provider's side to netns, c2's side kept (its VMM's mode): only netvm's NIC comes out.
    events = [];
    await linkVms([c2], { ...options(), attach: parseAttachChoice([`${NETVM}=netns`]), vmm: vmm() });
    expect(events.filter((event) => event.startsWith('detach'))).toEqual([`detach cloud-hypervisor netvm ${names(ids[1]!).provider}`]);
    // The other VMM's mode is another mode: out of QEMU, into cloud-hypervisor.
    events = [];
    await linkVms([c3], { ...options(), attach: parseAttachChoice([`${c3}=cloud-hypervisor`, `${NETVM}=cloud-hypervisor`]), vmm: vmm() });
    expect(events).toEqual([`detach qemu c3 ${names(ids[2]!).client}`, 'apply', `attach cloud-hypervisor c3 ${names(ids[2]!).client}`, `attach cloud-hypervisor netvm ${names(ids[2]!).provider}`]);
  });

  it('takes nothing out of a link whose devices are all gone (after a reboot: no VMM holds a NIC of it), the NIC of one up in the same run', async () => {
    const { ids } = await linkedAs({ client: 'qemu', provider: 'none' }, [c1, c2]);
    for (const name of Object.values(names(ids[0]!))) kernel.host.delete(name);
    await linkVms([c1, c2], { ...options(), attach: parseAttachChoice(['none']), vmm: vmm() });
    expect(events.filter((event) => event.startsWith('detach'))).toEqual([`detach qemu c2 ${names(ids[1]!).client}`]);
  });

  it('says what is wrong and that the link is as it was in about 200 characters besides the VMM\'s reason, then the commands; the README section it names says the rest', async () => {
    const { ids } = await linkedAs({ client: 'qemu', provider: 'none' });
    refuse.add(names(ids[0]!).client);
    const failure = await linkVms(CLIENTS, { ...options(), attach: parseAttachChoice(['none']), vmm: vmm() }).then(
      () => undefined,
      (error: unknown) => error,
    );
    const message = failure instanceof Error ? failure.message : '';
    const reason = /: (QEMU refused device_del: [^;]*);/.exec(message)?.[1] ?? '';
    expect(reason).not.toBe('');
    expect(message).toMatch(/\(README: Modes kept and switched\): to attach it anyway, run spectrum-link unlink c1 --force, then this link again$/);
    expect(ownLength(message, reason)).toBeLessThanOrEqual(200);
    expect(await readmeSection('Modes kept and switched')).toContain('a NIC whose removal the VMM had accepted may be\n  gone from the guest: `link` again once it answers');
  });

  it('a VMM refusing stops the run before anything is made, as a plain unlink stops: the link as it was, one line saying so and what to do', async () => {
    const { text, ids } = await linkedAs({ client: 'qemu', provider: 'none' });
    refuse.add(names(ids[0]!).client);
    const leftDown: LinkReport[] = [];
    await expect(linkVms(CLIENTS, { ...options(), attach: parseAttachChoice(['none']), vmm: vmm(), onLeftDown: (links) => void leftDown.push(...links) })).rejects.toMatchObject({
      name: 'LinkerError',
      kind: 'vmm-detach-failed',
      message:
        `c1's side of c1 -> netvm was not attached as none: the QEMU of c1 did not take out NIC ${names(ids[0]!).client}: QEMU refused device_del: Bus 'pci.0' does not support hotplugging (GenericError); ` +
        'nothing was made, the link is as it was (README: Modes kept and switched): to attach it anyway, run spectrum-link unlink c1 --force, then this link again',
    });
    expect(events).toEqual([`detach qemu c1 ${names(ids[0]!).client}`]);
    expect(kernel.undone).toBe(0);
    expect(leftDown).toEqual([]);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
  });

  it('the link after that unlink pins no VM whose side another link of the run, recorded before the state kept modes, has in another mode as its device shows it (the pin would switch that link)', async () => {
    const { ids } = await linkedAs({ client: 'qemu', provider: 'cloud-hypervisor' }, [c1, c2]);
    // c2 -> netvm as recorded before the state kept modes, netvm's side a veth (netns), which the run keeps.
    const legacy = JSON.parse(await readFile(join(stateDir, 'links.json'), 'utf8')) as { links: Record<string, unknown>[] };
    for (const entry of legacy.links) if (entry['client'] === c2) delete entry['attached'];
    await writeFile(join(stateDir, 'links.json'), JSON.stringify(legacy));
    const veth = names(ids[1]!).provider;
    kernel.host.set(veth, { name: veth, kind: 'veth' } as ObservedDevice);
    refuse.add(names(ids[0]!).client);
    const refused = await linkVms([c1, c2], { ...options(), attach: parseAttachChoice([`${c1}=none`]), vmm: vmm() }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(refused).toMatchObject({ name: 'LinkerError', kind: 'vmm-detach-failed' });
    // Not `--attach netvm=cloud-hypervisor`, as c1 -> netvm has it: c2 -> netvm's netvm side would become cloud-hypervisor.
    expect((refused as LinkerError).message).toMatch(/, run spectrum-link unlink c1 --force, then this link again$/);
  });

  it('where one VMM refuses after another gave its NIC back, or the run fails after, the links whose NICs came out are said left down, their records as before', async () => {
    const { text, ids } = await linkedAs({ client: 'qemu', provider: 'none' });
    refuse.add(names(ids[1]!).client);
    const leftDown: LeftDownLink[] = [];
    const run = { ...options(), attach: parseAttachChoice(['none']), vmm: vmm(), onLeftDown: (links: readonly LeftDownLink[]) => void leftDown.push(...links) };
    await expect(linkVms(CLIENTS, run)).rejects.toMatchObject({ kind: 'vmm-detach-failed' });
    expect(leftDown).toEqual([expect.objectContaining({ vm: 'c1', id: ids[0], clientAttach: 'qemu', replaced: false, takenBack: [{ vmm: 'qemu', vm: 'c1', nic: names(ids[0]!).client, to: 'none', outcome: 'taken' }] })]);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);

    // All given back, then the kernel refuses c3's bridge: every link is undone to its record, each said down.
    refuse.clear();
    leftDown.length = 0;
    // c3's bridge gone (its link still up: its taps are there), made anew: where the kernel refuses it.
    kernel.host.delete(names(ids[2]!).bridge);
    kernel.refused.add(names(ids[2]!).bridge);
    await expect(linkVms(CLIENTS, run)).rejects.toThrow(/File exists$/);
    expect(leftDown.map((link) => [link.vm, link.clientAttach, link.takenBack.map((nic) => nic.nic)]).sort()).toEqual(CLIENTS.map((vm, index) => [vm, 'qemu', [names(ids[index]!).client]]));
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
  });

  it('a VMM that was not running held no NIC: a run that fails after leaves that side as it was, so its link is not said down for it', async () => {
    // c1's and c2's client sides up as QEMU attached them, c3's both sides; c1's QEMU and c3's
    // are not running (the VMs stopped), c2's and netvm's give their NICs back.
    const allocation = allocateMany(emptyState(), CLIENTS.map((client) => ({ client, provider: NETVM })));
    const modes = (client: VmName): { client: 'qemu'; provider: 'qemu' | 'none' } => ({ client: 'qemu', provider: client === c3 ? 'qemu' : 'none' });
    await saveState(stateDir, setAttachments(allocation.state, allocation.links.map((link) => ({ pair: link, attached: modes(link.client) }))));
    kernel.host = new Map(allocation.links.flatMap((link) => Object.values(names(link.id)).map((name): [string, ObservedDevice] => [name, { name, kind: name.includes('b') ? 'bridge' : 'tun' } as ObservedDevice])));
    const [, id2, id3] = allocation.links.map((link) => link.id) as [ClientId, ClientId, ClientId];
    const port: VmmPort = {
      ...vmm(),
      detach: async (kind, vm, nic) => {
        events.push(`detach ${kind} ${vm} ${nic.id}`);
        return vm === c1 || vm === c3 ? 'not-running' : undefined;
      },
    };
    // c3's bridge gone (its link still up: its taps are there), made anew: the kernel refuses it,
    // and the run fails after every NIC came out.
    kernel.host.delete(names(id3).bridge);
    kernel.refused.add(names(id3).bridge);
    const leftDown: LeftDownLink[] = [];
    await expect(linkVms(CLIENTS, { ...options(), attach: parseAttachChoice(['none']), vmm: port, onLeftDown: (links) => void leftDown.push(...links) })).rejects.toThrow(/File exists$/);
    expect(events.filter((event) => event.startsWith('detach'))).toHaveLength(4);
    // c1: nothing taken out, nothing replaced: as it was, not said. c3: its provider side's NIC
    // taken out, its client side's VMM not running: said, each NIC as it went.
    expect(leftDown.map((link) => [link.vm, link.takenBack.map(({ nic, outcome }) => [nic, outcome])]).sort()).toEqual([
      ['c2', [[names(id2).client, 'taken']]],
      ['c3', [[names(id3).client, 'not-running'], [names(id3).provider, 'taken']]],
    ]);
  });

  it('a running VMM that no longer held the NIC: recorded as absent, not taken; a run that fails after says that link down as the VMM found it, not as taken out by the run', async () => {
    // Each client side up as QEMU attached them; c1's QEMU runs without its NIC (taken out before,
    // or c1 restarted without it), c2's and c3's give theirs back.
    const { ids } = await linkedAs({ client: 'qemu', provider: 'none' });
    const port: VmmPort = {
      ...vmm(),
      detach: async (kind, vm, nic) => {
        events.push(`detach ${kind} ${vm} ${nic.id}`);
        return vm === c1 ? 'absent' : undefined;
      },
    };
    // c3's bridge gone (its link still up: its taps are there), made anew: the kernel refuses it,
    // and the run fails after every NIC came out.
    kernel.host.delete(names(ids[2]!).bridge);
    kernel.refused.add(names(ids[2]!).bridge);
    const leftDown: LeftDownLink[] = [];
    await expect(linkVms(CLIENTS, { ...options(), attach: parseAttachChoice(['none']), vmm: port, onLeftDown: (links) => void leftDown.push(...links) })).rejects.toThrow(/File exists$/);
    expect(leftDown.map((link) => [link.vm, link.takenBack.map(({ nic, outcome }) => [nic, outcome])]).sort()).toEqual([
      ['c1', [[names(ids[0]!).client, 'absent']]],
      ['c2', [[names(ids[1]!).client, 'taken']]],
      ['c3', [[names(ids[2]!).client, 'taken']]],
    ]);
    const c1Line = leftDownLine(leftDown.find((link) => link.vm === c1)!);
    expect(c1Line).toContain(`the QEMU of c1 no longer held NIC ${names(ids[0]!).client}`);
    expect(c1Line).not.toContain('this run took its NIC');
    expect(leftDownLine(leftDown.find((link) => link.vm === c2)!)).toContain(`this run took its NIC ${names(ids[1]!).client} out of the QEMU of c2`);
  });

  it('an invalid VM in the run: its error, before any NIC comes out (the run would fail at it); without it, the NIC comes out', async () => {
    await linkedAs({ client: 'qemu', provider: 'none' }, [c1]);
    await expect(linkVms([c1, vmName('nosuchvm')], { ...options(), attach: parseAttachChoice(['none']), vmm: vmm() })).rejects.toMatchObject({ name: 'ConfigError', message: expect.stringContaining('nosuchvm') });
    expect(events).toEqual([]);
    await linkVms([c1], { ...options(), attach: parseAttachChoice(['none']), vmm: vmm() });
    expect(events.filter((event) => event.startsWith('detach'))).toHaveLength(1);
  });

  it('a socket path that cannot be, of a VMM a NIC is to come out of, is refused as bad input before any NIC comes out', async () => {
    // Both sides of each link up as QEMU attached them; this run's --qmp-socket gives netvm a path too long.
    const { text } = await linkedAs({ client: 'qemu', provider: 'qemu' }, [c1]);
    const tooLong = new CliError('--qmp-socket "/long/{vm}" gives VM netvm the socket path "/long/netvm", 108 bytes: a Unix socket path has at most 107; use a shorter path', EXIT.usage);
    const port: VmmPort = {
      ...vmm(),
      checkSocket: (kind, vm) => {
        if (kind === 'qemu' && vm === NETVM) throw tooLong;
      },
    };
    const leftDown: LeftDownLink[] = [];
    await expect(linkVms([c1], { ...options(), attach: parseAttachChoice(['none']), vmm: port, onLeftDown: (links) => void leftDown.push(...links) })).rejects.toBe(tooLong);
    expect(events).toEqual([]);
    expect(leftDown).toEqual([]);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
    // --keep-going: that client fails alone, as bad input, its NIC still in.
    const outcome = await linkVmsKeepGoing([c1], { ...options(), attach: parseAttachChoice(['none']), vmm: port });
    expect(outcome.failed).toEqual([{ vm: c1, error: tooLong }]);
    expect(events).toEqual([]);
  });

  it.each([['link', false], ['link --keep-going', true]])('%s: a state dir that cannot be written (a full disk) stops it before any NIC comes out, as it stops unlink', async (_how, keepGoing) => {
    const { text } = await linkedAs({ client: 'qemu', provider: 'none' });
    store.failSaves = 1;
    const leftDown: LeftDownLink[] = [];
    const run = { ...options(), attach: parseAttachChoice(['none']), vmm: vmm(), onLeftDown: (links: readonly LeftDownLink[]) => void leftDown.push(...links) };
    await expect(keepGoing ? linkVmsKeepGoing(CLIENTS, run) : linkVms(CLIENTS, run)).rejects.toMatchObject({
      name: 'LinkerError',
      kind: 'state-not-writable',
      message: expect.stringMatching(
        /^link: cannot write state file .*links\.json \(ENOSPC\); check the state dir's permissions and free space; so no NIC was taken out of its VMM and nothing was made .*: link again once the state dir can be written$/,
      ),
    });
    expect(events).toEqual([]);
    expect(leftDown).toEqual([]);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
    // Writable again: the NICs come out, the new modes recorded.
    await (keepGoing ? linkVmsKeepGoing(CLIENTS, run) : linkVms(CLIENTS, run));
    expect(events.filter((event) => event.startsWith('detach'))).toHaveLength(CLIENTS.length);
  });

  it('link --keep-going: that state failure, after a VM failed (an invalid one), carries it, to be said with it, no NIC out', async () => {
    const { text } = await linkedAs({ client: 'qemu', provider: 'none' });
    const c0 = vmName('c0');
    await addVm(c0, ['nosuchvm']);
    store.failSaves = 1;
    const run = { ...options(), attach: parseAttachChoice(['none']), vmm: vmm() };
    await expect(linkVmsKeepGoing([c0, ...CLIENTS], run)).rejects.toMatchObject({
      name: 'LinkerError',
      kind: 'state-failed',
      message: expect.stringMatching(/^link: cannot write state file .*; so no NIC was taken out of its VMM and nothing was made/),
      failure: { name: 'LinkerError', kind: 'state-not-writable', failure: { name: 'StateStoreError', kind: 'write-failed' } },
      failed: [{ vm: c0, error: expect.objectContaining({ name: 'ConfigError', kind: 'invalid-vm' }) }],
    });
    expect(events).toEqual([]);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
  });

  it('a state dir that cannot be written while a signal comes: that failure, then the signal, said (interrupted-undoing), no NIC out', async () => {
    await linkedAs({ client: 'qemu', provider: 'none' }, [c1]);
    store.failSaves = 1;
    const controller = new AbortController();
    controller.abort('SIGINT');
    const failure = await linkVms([c1], { ...options(), attach: parseAttachChoice(['none']), vmm: vmm(), signal: controller.signal }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toMatchObject({ kind: 'interrupted-undoing', failure: { kind: 'state-not-writable' } });
    expect(events).toEqual([]);
  });

  it('--keep-going: a VMM that did not answer a detach in time is not asked again for the next client: each of its clients fails, the VMM asked once', async () => {
    // netvm's side of each link up as QEMU attached it, to be attached as none; netvm's QEMU stalls.
    await linkedAs({ client: 'none', provider: 'qemu' });
    const stalled = new Map<string, string>();
    const port: VmmPort = {
      ...vmm(),
      detach: async (kind, vm, nic) => {
        events.push(`detach ${kind} ${vm} ${nic.id}`);
        const said = `QMP socket /run/vm/${vm}/qmp.sock: no reply to device_del within 300 ms`;
        stalled.set(`${kind} ${vm}`, said);
        throw new Error(said);
      },
      unansweredDetach: (kind, vm) => stalled.get(`${kind} ${vm}`),
    };
    const outcome = await linkVmsKeepGoing(CLIENTS, { ...options(), attach: parseAttachChoice([`${NETVM}=none`]), vmm: port });
    expect(events.filter((event) => event.startsWith('detach'))).toHaveLength(1);
    expect(outcome.failed.map(({ vm }) => vm)).toEqual(CLIENTS);
    expect(outcome.failed[1]?.error).toMatchObject({
      kind: 'vmm-detach-failed',
      message: expect.stringMatching(
        /^netvm's side of c2 -> netvm was not attached as none: the QEMU of netvm did not take out NIC \S+: the QEMU of netvm did not answer a detach in time earlier in this run \(QMP socket \/run\/vm\/netvm\/qmp\.sock: no reply to device_del within 300 ms\), so it was not asked to remove NIC \S+: check that VMM; nothing was made/,
      ),
    });
  });

  it("--keep-going: a later client of a VMM that did not answer a detach in time keeps its own NICs in: it fails before any comes out, its link not left down", async () => {
    // Both sides of each link up as QEMU attached them, to be attached as none; netvm's QEMU
    // stalls, the clients' own QEMUs give their NICs back.
    const { ids } = await linkedAs({ client: 'qemu', provider: 'qemu' });
    const stalled = new Map<string, string>();
    const port: VmmPort = {
      ...vmm(),
      detach: async (kind, vm, nic) => {
        events.push(`detach ${kind} ${vm} ${nic.id}`);
        if (vm !== NETVM) return;
        const said = `QMP socket /run/vm/${vm}/qmp.sock: no reply to device_del within 300 ms`;
        stalled.set(`${kind} ${vm}`, said);
        throw new Error(said);
      },
      unansweredDetach: (kind, vm) => stalled.get(`${kind} ${vm}`),
    };
    const leftDown: LeftDownLink[] = [];
    const run = { ...options(), attach: parseAttachChoice(['none']), vmm: port, onLeftDown: (links: readonly LeftDownLink[]) => void leftDown.push(...links) };
    const outcome = await linkVmsKeepGoing(CLIENTS, run);
    expect(outcome.failed.map(({ vm }) => vm)).toEqual(CLIENTS);
    // c1's NIC came out before netvm stalled (unknown then); c2's and c3's stay in.
    expect(events).toEqual([`detach qemu c1 ${names(ids[0]!).client}`, `detach qemu netvm ${names(ids[0]!).provider}`]);
    expect(leftDown.map((link) => link.vm)).toEqual(['c1']);
  });

  it('--keep-going, a signal after a VM failed with a NIC of its out: that link is said left down once', async () => {
    // Both sides of c1's and c2's links up as QEMU attached them; c1's provider side is refused
    // (its client side came out), and a signal comes meanwhile: the run stops before c2.
    const { ids } = await linkedAs({ client: 'qemu', provider: 'qemu' }, [c1, c2]);
    refuse.add(names(ids[0]!).provider);
    const controller = new AbortController();
    const port: VmmPort = {
      ...vmm(),
      detach: async (kind, vm, nic) => {
        events.push(`detach ${kind} ${vm} ${nic.id}`);
        if (refuse.has(nic.id)) {
          controller.abort('SIGTERM');
          throw new Error('QEMU refused device_del');
        }
      },
    };
    const leftDown: LeftDownLink[] = [];
    const run = { ...options(), attach: parseAttachChoice(['none']), vmm: port, signal: controller.signal, onLeftDown: (links: readonly LeftDownLink[]) => void leftDown.push(...links) };
    // c1's failure comes with the interruption, to be said with it.
    await expect(linkVmsKeepGoing([c1, c2], run)).rejects.toMatchObject({ kind: 'interrupted', failed: [{ vm: c1, error: expect.objectContaining({ kind: 'vmm-detach-failed' }) }] });
    expect(events).toEqual([`detach qemu c1 ${names(ids[0]!).client}`, `detach qemu netvm ${names(ids[0]!).provider}`]);
    expect(leftDown.map((link) => [link.vm, link.takenBack.map((nic) => nic.nic)])).toEqual([['c1', [names(ids[0]!).client]]]);
  });

  it('a VMM refusing while a signal comes: the refusal, then the signal, said (interrupted-undoing), not the refusal alone', async () => {
    const { ids } = await linkedAs({ client: 'qemu', provider: 'none' }, [c1]);
    const controller = new AbortController();
    const port: VmmPort = {
      ...vmm(),
      detach: async (kind, vm, nic) => {
        events.push(`detach ${kind} ${vm} ${nic.id}`);
        controller.abort('SIGTERM');
        throw new Error('QEMU refused device_del');
      },
    };
    const failure = await linkVms([c1], { ...options(), attach: parseAttachChoice(['none']), vmm: port, signal: controller.signal }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toMatchObject({ kind: 'interrupted-undoing', failure: { kind: 'vmm-detach-failed', message: expect.stringContaining(`the QEMU of c1 did not take out NIC ${names(ids[0]!).client}: QEMU refused device_del`) } });
    expect(events).toEqual([`detach qemu c1 ${names(ids[0]!).client}`]);
    expect(kernel.undone).toBe(0);
  });

  describe('what the run would fail at before it made anything, found before any NIC comes out', () => {
    /** c1 up with its side as QEMU attached it (to be none), c1 naming c2 as a provider too: a link that needs an id. */
    beforeEach(async () => {
      await writeFile(join(configDir, 'c1', 'providers', 'net', 'c2'), '');
    });
    const runs = [
      ['link', linkVms],
      ['link --keep-going', linkVmsKeepGoing],
    ] as const;
    /** The run's failure: thrown (link), or its one VM's (--keep-going). */
    const failureOf = async (run: (typeof runs)[number][1], options: LinkerOptions): Promise<unknown> => {
      try {
        const outcome = await run([c1], options);
        expect(outcome).toMatchObject({ failed: [{ vm: c1 }], linked: new Map() });
        return (outcome as Awaited<ReturnType<typeof linkVmsKeepGoing>>).failed[0]?.error;
      } catch (error) {
        return error;
      }
    };

    it.each(runs)('%s: ids run out (every id held): that failure, no NIC out, no link said down, the state as it was', async (_how, run) => {
      // Every id held: c1 -> netvm (id 1) among them; c1 -> c2 gets none.
      const held: LinkState = {
        version: 2,
        links: Array.from({ length: ID_COUNT }, (_, index) => ({
          client: index === 0 ? c1 : vmName(`f${index}`),
          provider: NETVM,
          id: (index + 1) as ClientId,
          ...(index === 0 && { attached: { client: 'qemu', provider: 'none' } as const }),
        })),
      };
      await saveState(stateDir, held);
      kernel.host = new Map(Object.values(names(1 as ClientId)).map((name): [string, ObservedDevice] => [name, { name, kind: name.includes('b') ? 'bridge' : 'tun' } as ObservedDevice]));
      const text = await readFile(join(stateDir, 'links.json'), 'utf8');
      const leftDown: LeftDownLink[] = [];
      const failure = await failureOf(run, { ...options(), attach: parseAttachChoice(['none']), vmm: vmm(), onLeftDown: (links) => void leftDown.push(...links) });
      expect(failure).toMatchObject({ name: 'StateError', kind: 'exhausted', message: expect.stringContaining('no free client id for c1 -> c2') });
      expect(events).toEqual([]);
      expect(leftDown).toEqual([]);
      expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
    });

    it.each(runs)('%s: a listing of the devices that fails: that failure, no NIC out, no link said down, the state as it was', async (_how, run) => {
      const { text } = await linkedAs({ client: 'qemu', provider: 'none' }, [c1]);
      // The new link c1 -> c2's id, and its bridge, whose query the kernel refuses.
      const [, added] = allocateMany(await loadState(stateDir), [{ client: c1, provider: NETVM }, { client: c1, provider: vmName('c2') }]).links;
      kernel.unlistable.add(names(added!.id).bridge);
      const leftDown: LeftDownLink[] = [];
      const failure = await failureOf(run, { ...options(), attach: parseAttachChoice(['none']), vmm: vmm(), onLeftDown: (links) => void leftDown.push(...links) });
      expect(failure).toMatchObject({ name: 'DeviceError', kind: 'query-failed', message: expect.stringContaining(names(added!.id).bridge) });
      expect(events).toEqual([]);
      expect(leftDown).toEqual([]);
      expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
    });
  });

  it('--keep-going: a VM whose VMM does not give its NIC back fails alone, nothing made for it; the others are linked', async () => {
    const { ids } = await linkedAs({ client: 'qemu', provider: 'none' });
    refuse.add(names(ids[1]!).client);
    const outcome = await linkVmsKeepGoing(CLIENTS, { ...options(), attach: parseAttachChoice(['none']), vmm: vmm() });
    expect(outcome.failed).toEqual([{ vm: 'c2', error: expect.objectContaining({ kind: 'vmm-detach-failed' }) }]);
    expect([...outcome.linked.keys()]).toEqual(['c1', 'c3']);
    const recorded = new Map((await loadState(stateDir)).links.map((link) => [link.client, link.attached?.client]));
    expect(Object.fromEntries(recorded)).toEqual({ c1: 'none', c2: 'qemu', c3: 'none' });
    // Nothing was planned for c2: its devices are not among those any plan made.
    expect(kernel.undone).toBe(0);
  });

  it('--keep-going, the one transaction failed after every NIC came out, then a state write fails in the pass one by one: every link not linked again is said left down', async () => {
    const { text, ids } = await linkedAs({ client: 'qemu', provider: 'none' });
    // c3's bridge gone (its link still up: its taps are there), made anew: the kernel refuses it.
    kernel.host.delete(names(ids[2]!).bridge);
    kernel.refused.add(names(ids[2]!).bridge);
    // The probe before the NICs come out, the transaction's save and its undo's write back go
    // through; c1's save in the pass one by one fails (a full disk), failing the whole run.
    store.passSaves = 3;
    store.failSaves = 1;
    const leftDown: LeftDownLink[] = [];
    const run = { ...options(), attach: parseAttachChoice(['none']), vmm: vmm(), onLeftDown: (links: readonly LeftDownLink[]) => void leftDown.push(...links) };
    await expect(linkVmsKeepGoing(CLIENTS, run)).rejects.toMatchObject({ name: 'StateStoreError', kind: 'write-failed' });
    expect(events.filter((event) => event.startsWith('detach'))).toHaveLength(CLIENTS.length);
    // Each link once, its record as before the run.
    expect(leftDown.map((link) => [link.vm, link.takenBack.map((nic) => nic.nic)]).sort()).toEqual(CLIENTS.map((vm, index) => [vm, [names(ids[index]!).client]]));
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
  });

  it('--keep-going, a state write that fails in the pass one by one after a VM was linked again there: its links are not said down, the others are', async () => {
    const { ids } = await linkedAs({ client: 'qemu', provider: 'none' });
    kernel.host.delete(names(ids[2]!).bridge);
    kernel.refused.add(names(ids[2]!).bridge);
    // As above, but c1 is linked again one by one (its save goes through), and c2's save fails:
    // c1 comes with the state failure, linked (no VM had failed before it).
    store.passSaves = 4;
    store.failSaves = 1;
    const leftDown: LeftDownLink[] = [];
    const run = { ...options(), attach: parseAttachChoice(['none']), vmm: vmm(), onLeftDown: (links: readonly LeftDownLink[]) => void leftDown.push(...links) };
    await expect(linkVmsKeepGoing(CLIENTS, run)).rejects.toMatchObject({
      name: 'LinkerError',
      kind: 'state-failed',
      failure: { name: 'StateStoreError', kind: 'write-failed' },
      failed: [],
      linked: new Map([[c1, [expect.objectContaining({ vm: c1, id: ids[0], clientAttach: 'none' })]]]),
    });
    expect(leftDown.map((link) => link.vm).sort()).toEqual(['c2', 'c3']);
    expect((await loadState(stateDir)).links.find((link) => link.client === c1)?.attached).toEqual({ client: 'none', provider: 'none' });
  });
});

describe('link --all reads the config dir itself (linkAll, linkAllKeepGoing)', () => {
  const runs = [
    ['linkAll', linkAll],
    ['linkAllKeepGoing', linkAllKeepGoing],
  ] as const;
  /** While the run holds the state lock, before it does anything else: c3 drops netvm, c4 comes (netvm its provider). */
  const changeOnceLocked = (): void => {
    rmSync(join(configDir, 'c3', 'providers', 'net', NETVM));
    mkdirSync(join(configDir, 'c4', 'providers', 'net'), { recursive: true });
    mkdirSync(join(configDir, 'c4', 'blk'));
    writeFileSync(join(configDir, 'c4', 'vmlinux'), '');
    writeFileSync(join(configDir, 'c4', 'blk', 'root.img'), '');
    writeFileSync(join(configDir, 'c4', 'providers', 'net', NETVM), '');
  };

  it.each(runs)('%s, the state dir there: once it holds the state lock (a change made then is linked), the dir read once', async (_name, link) => {
    configReads.whole = 0;
    const outcome = await link({ ...options(), onLockHeld: changeOnceLocked });
    expect({ linked: [...outcome.linked.keys()], vms: outcome.all.vms, withoutProviders: outcome.all.wholeDir.withoutProviders, reads: configReads.whole }).toEqual({
      linked: ['c1', 'c2', 'c4'],
      vms: ['c1', 'c2', 'c4'],
      withoutProviders: ['c3', NETVM],
      reads: 1,
    });
    expect(parseState(await readFile(join(stateDir, 'links.json'), 'utf8'), 'test').links.map((link) => link.client).sort()).toEqual(['c1', 'c2', 'c4']);
  });

  it.each(runs)('%s, the state dir not made yet: before the lock, which makes it (a change made once it is held is not linked), the dir read once', async (_name, link) => {
    configReads.whole = 0;
    const fresh = join(stateDir, 'fresh');
    const outcome = await link({ ...options(), stateDir: fresh, onLockHeld: changeOnceLocked });
    expect({ linked: [...outcome.linked.keys()], vms: outcome.all.vms, reads: configReads.whole }).toEqual({ linked: CLIENTS, vms: CLIENTS, reads: 1 });
  });

  it.each(runs)('%s, the state dir not made yet, the config dir missing: fails, nothing made (no state dir)', async (_name, link) => {
    const fresh = join(stateDir, 'fresh');
    await expect(link({ ...options(), configDir: join(configDir, 'missing'), stateDir: fresh })).rejects.toMatchObject({ name: 'ConfigError', kind: 'config-dir-missing' });
    expect(existsSync(fresh)).toBe(false);
  });

  it('linkAll, the state dir not made yet, a VM naming a provider that is no VM: fails, nothing made (no state dir, no device)', async () => {
    await addVm('c4', ['nosuchvm']);
    let applies = 0;
    kernel.whileApplying = () => void (applies += 1);
    const fresh = join(stateDir, 'fresh');
    await expect(linkAll({ ...options(), stateDir: fresh })).rejects.toMatchObject({ name: 'ConfigError', message: expect.stringContaining('nosuchvm') });
    expect({ applies, stateDir: existsSync(fresh) }).toEqual({ applies: 0, stateDir: false });
  });
});

/** Every way `link` runs, of CLIENTS (named) or of the whole config dir. */
const EVERY_LINK_RUN = [
  ['linkVms', (options: LinkerOptions) => linkVms(CLIENTS, options)],
  ['linkVmsKeepGoing', (options: LinkerOptions) => linkVmsKeepGoing(CLIENTS, options)],
  ['linkAll', linkAll],
  ['linkAllKeepGoing', linkAllKeepGoing],
] as const;

describe('link where the state dir is not made yet, and another run makes it and records while this one waits', () => {
  it.each(EVERY_LINK_RUN)('%s: reads the config again under the lock (c3 dropped netvm meanwhile: not linked)', async (_name, link) => {
    const fresh = join(stateDir, 'fresh');
    // Read before the lock (the dir not there); then, before this run holds the lock, another
    // makes the dir and records (an empty state will do), and c3 drops netvm.
    configReads.afterRead = async () => {
      await mkdir(fresh);
      await saveState(fresh, emptyState());
      await rm(join(configDir, 'c3', 'providers', 'net', NETVM));
    };
    const outcome = await link({ ...options(), stateDir: fresh });
    const withLinks = [...outcome.linked].filter(([, reports]) => reports.length > 0).map(([vm]) => vm);
    const recorded = parseState(await readFile(join(fresh, 'links.json'), 'utf8'), 'test').links.map((entry) => entry.client).sort();
    expect({ withLinks, recorded }).toEqual({ withLinks: ['c1', 'c2'], recorded: ['c1', 'c2'] });
  });

  it.each(EVERY_LINK_RUN)('%s: no other run recorded (the dir its own lock made): the config read before the lock serves, read once', async (_name, link) => {
    configReads.whole = 0;
    configReads.named = 0;
    const outcome = await link({ ...options(), stateDir: join(stateDir, 'fresh') });
    expect({ linked: [...outcome.linked.keys()], reads: configReads.whole + configReads.named }).toEqual({ linked: CLIENTS, reads: 1 });
  });
});

describe('link where the state dir is not made yet, interrupted while it reads the config before the lock', () => {
  it.each(EVERY_LINK_RUN)('%s: stopped there: interrupted, no state dir made', async (_name, link) => {
    const fresh = join(stateDir, 'fresh');
    const stop = new AbortController();
    configReads.afterRead = async () => stop.abort('SIGINT');
    await expect(link({ ...options(), stateDir: fresh, signal: stop.signal })).rejects.toMatchObject({ name: 'LinkerError', kind: 'interrupted' });
    expect(existsSync(fresh)).toBe(false);
  });
});

describe('link where the state dir is not made yet, and the run has no link to make', () => {
  it.each(EVERY_LINK_RUN.filter(([name]) => name.endsWith('KeepGoing')))('%s: every VM failed (its config, a side refused as bad input): each said, no state dir made', async (_name, link) => {
    for (const vm of ['c1', 'c2']) await writeFile(join(configDir, vm, 'providers', 'net', 'nosuchvm'), '');
    const tooLong = new CliError('--qmp-socket "/long/{vm}" gives VM c3 the socket path "/long/c3", 108 bytes: a Unix socket path has at most 107; use a shorter path', EXIT.usage);
    const vmm: VmmPort = {
      ...NO_VMM,
      checkSocket: (kind, vm) => {
        if (kind === 'qemu' && vm === 'c3') throw tooLong;
      },
    };
    const fresh = join(stateDir, 'fresh');
    const outcome = (await link({ ...options(), stateDir: fresh, attach: parseAttachChoice(['c3=qemu']), vmm })) as KeepGoingOutcome;
    expect(outcome.failed.map(({ vm, error }) => [vm, (error as Error).name])).toEqual([
      ['c1', 'ConfigError'],
      ['c2', 'ConfigError'],
      ['c3', 'CliError'],
    ]);
    expect([...outcome.linked]).toEqual([]);
    expect(existsSync(fresh)).toBe(false);
  });

  it.each(EVERY_LINK_RUN)('%s: no VM has a provider: nothing linked (each VM named said so), no state dir made', async (_name, link) => {
    for (const vm of CLIENTS) await rm(join(configDir, vm, 'providers', 'net', NETVM));
    const fresh = join(stateDir, 'fresh');
    const outcome = await link({ ...options(), stateDir: fresh });
    expect([...outcome.linked].every(([, reports]) => reports.length === 0)).toBe(true);
    expect([...outcome.linked.keys()]).toEqual(_name.startsWith('linkAll') ? [] : CLIENTS);
    expect(existsSync(fresh)).toBe(false);
  });
});

describe('the VMM socket each side was attached through, recorded', () => {
  const [c1, c2] = CLIENTS as [VmName, VmName];
  /** What happened, in order: each detach and attach with its socket, and each plan carried out. */
  let events: string[];
  /** The directory the port's templates give each VM's sockets in now (as --qmp-socket and --ch-socket would). */
  let socketDir: string;
  /** Detaches of these NIC ids are refused, as a VMM refuses device_del. */
  let refuse: Set<string>;
  const socketOf = (kind: string, vm: string): string => `${socketDir}/${vm}.${kind}`;
  const vmm = (): VmmPort => ({
    attach: async (kind, vm, nic) => {
      events.push(`attach ${kind} ${vm} ${nic.id} at ${socketOf(kind, vm)}`);
      return true;
    },
    detach: async (kind, vm, nic, socket) => {
      events.push(`detach ${kind} ${vm} ${nic.id} at ${socket ?? `the template's ${socketOf(kind, vm)}`}`);
      if (refuse.has(nic.id)) throw new Error("QEMU refused device_del: Bus 'pci.0' does not support hotplugging (GenericError)");
    },
    socketOf,
  });
  const names = (id: ClientId): ReturnType<typeof linkDeviceNames> => linkDeviceNames(PREFIX, id);
  /** The devices of these links there, as the kernel reports them: the links are up. */
  const up = (ids: readonly ClientId[]): void => {
    kernel.host = new Map(ids.flatMap((id) => Object.values(names(id)).map((name): [string, ObservedDevice] => [name, { name, kind: name.includes('b') ? 'bridge' : 'tun' } as ObservedDevice])));
  };
  const attachedOf = async (client: VmName): Promise<unknown> => (await loadState(stateDir)).links.find((link) => link.client === client)?.attached;
  /** c1 (and `more`) linked to netvm through the sockets under /run/a: c1's side qemu, netvm's cloud-hypervisor; the links up. */
  async function linkedAtA(more: readonly VmName[] = []): Promise<ClientId[]> {
    socketDir = '/run/a';
    const outcome = await linkVms([c1, ...more], { ...options(), attach: parseAttachChoice(['qemu', `${NETVM}=cloud-hypervisor`]), vmm: vmm() });
    const ids = [c1, ...more].map((vm) => outcome.linked.get(vm)![0]!.id as ClientId);
    up(ids);
    events = [];
    return ids;
  }
  beforeEach(() => {
    events = [];
    refuse = new Set();
    kernel.whileApplying = () => void events.push('apply');
  });

  it('link records each VMM side with the socket it attached it through; unlink, under templates that now give other paths, detaches each NIC there', async () => {
    const [id] = await linkedAtA();
    expect(await attachedOf(c1)).toEqual({ client: 'qemu', provider: 'cloud-hypervisor', clientSocket: '/run/a/c1.qemu', providerSocket: '/run/a/netvm.cloud-hypervisor' });
    socketDir = '/run/b';
    const outcome = await unlinkVm(c1, { forget: false, force: false }, { ...options(), attach: parseAttachChoice([]), vmm: vmm() });
    expect(events).toEqual([`detach qemu c1 ${names(id!).client} at /run/a/c1.qemu`, `detach cloud-hypervisor netvm ${names(id!).provider} at /run/a/netvm.cloud-hypervisor`]);
    expect(outcome.reports).toMatchObject([{ clientSocket: '/run/a/c1.qemu', providerSocket: '/run/a/netvm.cloud-hypervisor' }]);
    // Taken down: nothing recorded of how it was attached, sockets too.
    expect(await attachedOf(c1)).toBeUndefined();
  });

  it('unlink --force: a VMM that does not detach is said with the socket it was asked at', async () => {
    const [id] = await linkedAtA();
    socketDir = '/run/b';
    refuse.add(names(id!).client);
    const outcome = await unlinkVm(c1, { forget: false, force: true }, { ...options(), attach: parseAttachChoice([]), vmm: vmm() });
    expect(outcome.failures).toMatchObject([{ vmm: 'qemu', vm: 'c1', nic: names(id!).client, socket: '/run/a/c1.qemu' }]);
  });

  it('link taking down a provider dropped from the config detaches at the sockets recorded', async () => {
    const [id] = await linkedAtA();
    await addVm('netvm2');
    await writeFile(join(configDir, c1, 'providers', 'net', 'netvm2'), '');
    await rm(join(configDir, c1, 'providers', 'net', NETVM));
    socketDir = '/run/b';
    const outcome = await linkVms([c1], { ...options(), attach: parseAttachChoice(['none']), vmm: vmm() });
    expect(outcome.unlinked.get(c1)?.map((report) => report.id)).toEqual([id]);
    expect(events.filter((event) => event.startsWith('detach'))).toEqual([
      `detach qemu c1 ${names(id!).client} at /run/a/c1.qemu`,
      `detach cloud-hypervisor netvm ${names(id!).provider} at /run/a/netvm.cloud-hypervisor`,
    ]);
  });

  it('link of a side to another mode takes its NIC out at the socket recorded', async () => {
    const [id] = await linkedAtA();
    socketDir = '/run/b';
    await linkVms([c1], { ...options(), attach: parseAttachChoice([`${c1}=none`]), vmm: vmm() });
    expect(events).toEqual([
      `detach qemu c1 ${names(id!).client} at /run/a/c1.qemu`,
      // netvm's side keeps its mode, through the socket its template gives now: out at the old one first.
      `detach cloud-hypervisor netvm ${names(id!).provider} at /run/a/netvm.cloud-hypervisor`,
      'apply',
      `attach cloud-hypervisor netvm ${names(id!).provider} at /run/b/netvm.cloud-hypervisor`,
    ]);
    expect(await attachedOf(c1)).toEqual({ client: 'none', provider: 'cloud-hypervisor', providerSocket: '/run/b/netvm.cloud-hypervisor' });
  });

  it('link of a side kept in its VMM mode whose template now gives another path: out at the old socket first, in at the new, recorded so; the same path changes nothing', async () => {
    const [id] = await linkedAtA();
    // The same templates: nothing comes out.
    await linkVms([c1], { ...options(), attach: parseAttachChoice([]), vmm: vmm() });
    expect(events.filter((event) => event.startsWith('detach'))).toEqual([]);
    events = [];
    socketDir = '/run/b';
    const outcome = await linkVms([c1], { ...options(), attach: parseAttachChoice([]), vmm: vmm() });
    expect(events).toEqual([
      `detach qemu c1 ${names(id!).client} at /run/a/c1.qemu`,
      `detach cloud-hypervisor netvm ${names(id!).provider} at /run/a/netvm.cloud-hypervisor`,
      'apply',
      `attach qemu c1 ${names(id!).client} at /run/b/c1.qemu`,
      `attach cloud-hypervisor netvm ${names(id!).provider} at /run/b/netvm.cloud-hypervisor`,
    ]);
    expect(outcome.linked.get(c1)).toMatchObject([{ clientAttach: 'qemu', providerAttach: 'cloud-hypervisor', clientSocket: '/run/b/c1.qemu', providerSocket: '/run/b/netvm.cloud-hypervisor' }]);
    expect(await attachedOf(c1)).toEqual({ client: 'qemu', provider: 'cloud-hypervisor', clientSocket: '/run/b/c1.qemu', providerSocket: '/run/b/netvm.cloud-hypervisor' });
  });

  it('a record written before sockets were recorded is taken as at the template\'s: nothing comes out, and the socket is recorded now', async () => {
    const allocation = allocateMany(emptyState(), [{ client: c1, provider: NETVM }]);
    await saveState(stateDir, setAttachments(allocation.state, [{ pair: allocation.links[0]!, attached: { client: 'qemu', provider: 'none' } }]));
    const id = allocation.links[0]!.id;
    up([id]);
    socketDir = '/run/b';
    await linkVms([c1], { ...options(), attach: parseAttachChoice([]), vmm: vmm() });
    expect(events).toEqual(['apply', `attach qemu c1 ${names(id).client} at /run/b/c1.qemu`]);
    expect(await attachedOf(c1)).toEqual({ client: 'qemu', provider: 'none', clientSocket: '/run/b/c1.qemu' });
    // And unlink of such a record goes to the template's, as before.
    await saveState(stateDir, setAttachments(allocation.state, [{ pair: allocation.links[0]!, attached: { client: 'qemu', provider: 'none' } }]));
    events = [];
    await unlinkVm(c1, { forget: false, force: false }, { ...options(), attach: parseAttachChoice([]), vmm: vmm() });
    expect(events).toEqual([`detach qemu c1 ${names(id).client} at the template's /run/b/c1.qemu`]);
  });

  it('a VMM refusing a moved NIC back stops the run as it stops a switch: nothing made, the link as it was, one line naming both sockets', async () => {
    const [id] = await linkedAtA();
    const text = await readFile(join(stateDir, 'links.json'), 'utf8');
    refuse.add(names(id!).client);
    socketDir = '/run/b';
    await expect(linkVms([c1], { ...options(), attach: parseAttachChoice([]), vmm: vmm() })).rejects.toMatchObject({
      name: 'LinkerError',
      kind: 'vmm-detach-failed',
      message: expect.stringMatching(
        new RegExp(
          `^c1's side of c1 -> netvm was not attached as qemu through socket /run/b/c1\\.qemu: the QEMU of c1 at /run/a/c1\\.qemu \\(recorded\\) did not take out NIC ${names(id!).client}: ` +
            "QEMU refused device_del: .*; nothing was made, the link is as it was \\(README: Modes kept and switched\\): " +
            // The link after that unlink gives c1 the mode this run keeps for it, which the unlink takes away, and netvm its own.
            'to attach it anyway, run spectrum-link unlink c1 --force, then this link again with --attach c1=qemu --attach netvm=cloud-hypervisor$',
        ),
      ),
    });
    expect(events).toEqual([`detach qemu c1 ${names(id!).client} at /run/a/c1.qemu`]);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
  });

  it('a run that fails after a moved NIC came out says that link down, with the sockets; its record as before', async () => {
    const [id1, id2] = await linkedAtA([c2]);
    const text = await readFile(join(stateDir, 'links.json'), 'utf8');
    // c2's bridge gone (its link still up: its taps are there), made anew: the kernel refuses it.
    kernel.host.delete(names(id2!).bridge);
    kernel.refused.add(names(id2!).bridge);
    socketDir = '/run/b';
    const leftDown: LeftDownLink[] = [];
    await expect(linkVms([c1, c2], { ...options(), attach: parseAttachChoice([`${NETVM}=none`]), vmm: vmm(), onLeftDown: (links) => void leftDown.push(...links) })).rejects.toThrow(/File exists$/);
    const c1Down = leftDown.find((link) => link.vm === c1);
    expect(c1Down).toMatchObject({ id: id1, clientSocket: '/run/a/c1.qemu', takenBack: expect.arrayContaining([{ vmm: 'qemu', vm: 'c1', nic: names(id1!).client, to: 'qemu', toSocket: '/run/b/c1.qemu', socket: '/run/a/c1.qemu', outcome: 'taken' }]) });
    // netvm's side to none: a switch, its NIC out at the socket recorded.
    expect(c1Down?.takenBack).toContainEqual({ vmm: 'cloud-hypervisor', vm: 'netvm', nic: names(id1!).provider, to: 'none', socket: '/run/a/netvm.cloud-hypervisor', outcome: 'taken' });
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
  });

  it('the socket recorded is checked before any NIC comes out, and a VMM that stalled a detach there is not asked again (--keep-going)', async () => {
    await linkedAtA([c2]);
    socketDir = '/run/b';
    const checked: string[] = [];
    const stalled = new Map<string, string>();
    const port: VmmPort = {
      ...vmm(),
      checkSocket: (kind, vm, socket) => void checked.push(`${kind} ${vm} ${socket ?? 'template'}`),
      detach: async (kind, vm, nic, socket) => {
        events.push(`detach ${kind} ${vm} ${nic.id} at ${socket ?? 'template'}`);
        if (vm === NETVM) {
          stalled.set(socket ?? 'template', 'no reply to device_del within 300 ms');
          throw new Error('no reply to device_del within 300 ms');
        }
      },
      unansweredDetach: (_kind, _vm, socket) => stalled.get(socket ?? 'template'),
    };
    const outcome = await linkVmsKeepGoing([c1, c2], { ...options(), attach: parseAttachChoice([`${NETVM}=none`]), vmm: port });
    expect(checked).toContain('cloud-hypervisor netvm /run/a/netvm.cloud-hypervisor');
    // c1's QEMU moves (out at /run/a), netvm's stalls: c1 fails; c2 fails at once, netvm's VMM not asked again.
    expect(outcome.failed.map(({ vm }) => vm)).toEqual([c1, c2]);
    expect(events.filter((event) => event.startsWith('detach cloud-hypervisor'))).toHaveLength(1);
  });
});

describe('a side whose socket moved, where a VMM runs at the socket recorded', () => {
  const [c1, c2] = CLIENTS as [VmName, VmName];
  let events: string[];
  let socketDir: string;
  /** The sockets a VMM takes connections at. */
  let running: Set<string>;
  const socketOf = (kind: string, vm: string): string => `${socketDir}/${vm}.${kind}`;
  const vmm = (key?: (path: string) => string): VmmPort => ({
    attach: async (kind, vm, nic) => {
      events.push(`attach ${kind} ${vm} ${nic.id} at ${socketOf(kind, vm)}`);
      return true;
    },
    detach: async (kind, vm, nic, socket) => {
      events.push(`detach ${kind} ${vm} ${nic.id} at ${socket ?? 'template'}`);
    },
    socketOf,
    vmmAt: async (_kind, _vm, socket) => {
      events.push(`asked ${socket}`);
      return running.has(socket) ? { running: true } : { running: false, none: true, why: 'nothing is at that path' };
    },
    ...(key === undefined ? {} : { socketKey: key }),
  });
  const names = (id: ClientId): ReturnType<typeof linkDeviceNames> => linkDeviceNames(PREFIX, id);
  const up = (ids: readonly ClientId[]): void => {
    kernel.host = new Map(ids.flatMap((id) => Object.values(names(id)).map((name): [string, ObservedDevice] => [name, { name, kind: name.includes('b') ? 'bridge' : 'tun' } as ObservedDevice])));
  };
  /** c1 (and `more`) linked to netvm, each client side qemu through /run/a, netvm's side netns; the links up. */
  async function linkedAtA(more: readonly VmName[] = []): Promise<ClientId[]> {
    socketDir = '/run/a';
    const outcome = await linkVms([c1, ...more], { ...options(), attach: parseAttachChoice(['qemu', `${NETVM}=netns`]), vmm: vmm() });
    const ids = [c1, ...more].map((vm) => outcome.linked.get(vm)![0]!.id as ClientId);
    up(ids);
    events = [];
    return ids;
  }
  beforeEach(() => {
    events = [];
    running = new Set();
    kernel.whileApplying = () => void events.push('apply');
  });

  it('a VMM at the socket recorded and none at the new path: refused before any NIC comes out, nothing made, one line naming both', async () => {
    const [id] = await linkedAtA();
    const text = await readFile(join(stateDir, 'links.json'), 'utf8');
    running.add('/run/a/c1.qemu');
    socketDir = '/run/b';
    const refused = linkVms([c1], { ...options(), attach: parseAttachChoice([]), vmm: vmm() });
    await expect(refused).rejects.toMatchObject({
      name: 'LinkerError',
      kind: 'vmm-socket-moved',
      message: expect.stringMatching(
        new RegExp(
          `^c1's NIC ${names(id!).client} \\(link c1 -> netvm\\) was not moved to socket /run/b/c1\\.qemu: no QEMU answers there \\(nothing is at that path\\), ` +
            'and the one at /run/a/c1\\.qemu holds it; nothing changed \\(README: Modes kept and switched\\): give the --qmp-socket c1 runs with$',
        ),
      ),
    });
    expect(events).toEqual(['asked /run/a/c1.qemu', 'asked /run/b/c1.qemu']);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
  });

  it('says what is wrong, what holds the NIC and the option to give in about 200 characters besides its paths and NIC; the README section it names says the rest', async () => {
    const [id] = await linkedAtA();
    running.add('/run/a/c1.qemu');
    socketDir = '/run/b';
    const failure = await linkVms([c1], { ...options(), attach: parseAttachChoice([]), vmm: vmm() }).then(
      () => undefined,
      (error: unknown) => error,
    );
    const message = failure instanceof Error ? failure.message : '';
    expect(message).toMatch(/\(README: Modes kept and switched\): give the --qmp-socket c1 runs with$/);
    expect(ownLength(message, names(id!).client, '/run/a/c1.qemu', '/run/b/c1.qemu', 'nothing is at that path')).toBeLessThanOrEqual(200);
    expect(await readmeSection('Modes kept and switched')).toContain('once a VMM of the VM runs at the new path, that `link` moves the NIC');
  });

  it('no VMM at the socket recorded (the VM restarted elsewhere), or one at both: the side moves, out at the old, in at the new', async () => {
    const [id] = await linkedAtA();
    socketDir = '/run/b';
    await linkVms([c1], { ...options(), attach: parseAttachChoice([]), vmm: vmm() });
    expect(events).toEqual(['asked /run/a/c1.qemu', `detach qemu c1 ${names(id!).client} at /run/a/c1.qemu`, 'apply', `attach qemu c1 ${names(id!).client} at /run/b/c1.qemu`]);
    events = [];
    running = new Set(['/run/b/c1.qemu', '/run/c/c1.qemu']);
    socketDir = '/run/c';
    await linkVms([c1], { ...options(), attach: parseAttachChoice([]), vmm: vmm() });
    expect(events).toEqual(['asked /run/b/c1.qemu', 'asked /run/c/c1.qemu', `detach qemu c1 ${names(id!).client} at /run/b/c1.qemu`, 'apply', `attach qemu c1 ${names(id!).client} at /run/c/c1.qemu`]);
  });

  it('--keep-going: that VM fails alone, its NIC in, nothing made for it; the others are linked', async () => {
    const [id1, id2] = await linkedAtA([c2]);
    running.add('/run/a/c1.qemu');
    socketDir = '/run/b';
    const outcome = await linkVmsKeepGoing([c1, c2], { ...options(), attach: parseAttachChoice([]), vmm: vmm() });
    expect(outcome.failed).toEqual([{ vm: c1, error: expect.objectContaining({ kind: 'vmm-socket-moved' }) }]);
    expect(outcome.linked.get(c2)).toMatchObject([{ id: id2, clientSocket: '/run/b/c2.qemu' }]);
    expect(events.filter((event) => event.includes(names(id1!).client))).toEqual([]);
    expect((await loadState(stateDir)).links.find((link) => link.id === id1)?.attached).toEqual({ client: 'qemu', provider: 'netns', clientSocket: '/run/a/c1.qemu' });
  });

  it('the same socket spelled otherwise (one key of the port\'s socketKey) is no move: nothing asked, nothing comes out; the new spelling is recorded', async () => {
    const [id] = await linkedAtA();
    running.add('/run/a/c1.qemu');
    socketDir = '/run/./a';
    await linkVms([c1], { ...options(), attach: parseAttachChoice([]), vmm: vmm((path) => path.replace('/./', '/')) });
    expect(events).toEqual(['apply', `attach qemu c1 ${names(id!).client} at /run/./a/c1.qemu`]);
    expect((await loadState(stateDir)).links[0]?.attached).toEqual({ client: 'qemu', provider: 'netns', clientSocket: '/run/./a/c1.qemu' });
  });
});

describe('a side kept in its VMM mode whose template now gives a path the state cannot record', () => {
  const [c1, c2] = CLIENTS as [VmName, VmName];
  let events: string[];
  /** The directory each VM's template gives its socket in now (as --qmp-socket would), by VM; /run/a where none is given. */
  let dirs: Map<string, string>;
  /** Over 107 bytes: the state cannot record a socket under it. */
  const LONG = `/run/${'x'.repeat(110)}`;
  const pathOf = (kind: string, vm: string): string => `${dirs.get(vm) ?? '/run/a'}/${vm}.${kind}`;
  // As the real port: socketOf only where the state can record it, templateSocket whatever it is;
  // the same socket however many `/./` spell it.
  const vmm: VmmPort = {
    attach: async (kind, vm, nic) => {
      events.push(`attach ${kind} ${vm} ${nic.id} at ${pathOf(kind, vm)}`);
      return true;
    },
    detach: async (kind, vm, nic, socket) => void events.push(`detach ${kind} ${vm} ${nic.id} at ${socket ?? 'template'}`),
    socketOf: (kind, vm) => (isRecordedSocket(pathOf(kind, vm)) ? pathOf(kind, vm) : undefined),
    templateSocket: pathOf,
    socketKey: (path) => path.replace(/\/(?:\.\/)+/g, '/'),
    vmmAt: async () => ({ running: true }),
  };
  const names = (id: ClientId): ReturnType<typeof linkDeviceNames> => linkDeviceNames(PREFIX, id);
  /** c1 and c2 linked to netvm, each client side qemu through /run/a, netvm's netns; the links up. */
  async function linkedAtA(): Promise<ClientId[]> {
    dirs = new Map();
    const outcome = await linkVms([c1, c2], { ...options(), attach: parseAttachChoice(['qemu', `${NETVM}=netns`]), vmm });
    const ids = [c1, c2].map((vm) => outcome.linked.get(vm)![0]!.id as ClientId);
    kernel.host = new Map(ids.flatMap((id) => Object.values(names(id)).map((name): [string, ObservedDevice] => [name, { name, kind: name.includes('b') ? 'bridge' : 'tun' } as ObservedDevice])));
    events = [];
    return ids;
  }
  beforeEach(() => {
    events = [];
    kernel.whileApplying = () => void events.push('apply');
  });

  it('another socket there is refused as bad input before any NIC comes out: nothing asked or made, the record (its socket too) as it was', async () => {
    const [id] = await linkedAtA();
    const text = await readFile(join(stateDir, 'links.json'), 'utf8');
    dirs.set(c1, LONG);
    const path = `${LONG}/c1.qemu`;
    const refused = await linkVms([c1], { ...options(), attach: parseAttachChoice([]), vmm }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(refused).toMatchObject({
      name: 'LinkerError',
      kind: 'vmm-socket-unrecordable',
      message:
        `c1's NIC ${names(id!).client} (link c1 -> netvm) was not moved to socket ${path}, a path the state cannot record (it is ${path.length} bytes long, and a Unix socket path at most 107); ` +
        'it stays at /run/a/c1.qemu (README: Modes kept and switched): give a --qmp-socket the state can record, ' +
        `or if c1 runs there, run spectrum-link unlink c1, then this link again with --attach c1=qemu --attach netvm=netns`,
    });
    expect(isLinkUsageError(refused)).toBe(true);
    expect(events).toEqual([]);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
  });

  it('says what is wrong, where the NIC stays and the option to give in about 200 characters besides its paths, NIC and why the state cannot record one, then the commands for a VM that runs there; the README section it names says the rest', async () => {
    const [id] = await linkedAtA();
    dirs.set(c1, LONG);
    const path = `${LONG}/c1.qemu`;
    const failure = await linkVms([c1], { ...options(), attach: parseAttachChoice([]), vmm }).then(
      () => undefined,
      (error: unknown) => error,
    );
    const message = failure instanceof Error ? failure.message : '';
    const reason = /a path the state cannot record \(([^)]*)\)/.exec(message)?.[1] ?? '';
    expect(reason).toContain('bytes long');
    expect(ownLength(message, names(id!).client, path, '/run/a/c1.qemu', reason)).toBeLessThanOrEqual(200);
    const section = await readmeSection('Modes kept and switched');
    expect(section).toContain('longer than 107 bytes once made absolute');
    expect(section).toContain('attaches it without recording its socket (a later `unlink` finds it only through the option)');
  });

  it('a path with a newline (which the state cannot record) is shown escaped: the one line names that very path', async () => {
    await linkedAtA();
    dirs.set(c1, '/run/a\nb');
    const refused = await linkVms([c1], { ...options(), attach: parseAttachChoice([]), vmm }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(refused).toMatchObject({ kind: 'vmm-socket-unrecordable', message: expect.stringContaining('was not moved to socket "/run/a\\nb/c1.qemu", a path the state cannot record') });
    expect((refused as Error).message).toContain('if c1 runs there, run ');
    expect((refused as Error).message).not.toContain('\n');
  });

  it('--keep-going: that VM fails alone (bad input), its record as it was; the others are linked', async () => {
    const [id1, id2] = await linkedAtA();
    dirs.set(c1, LONG).set(c2, '/run/b');
    const outcome = await linkVmsKeepGoing([c1, c2], { ...options(), attach: parseAttachChoice([]), vmm });
    expect(outcome.failed).toEqual([{ vm: c1, error: expect.objectContaining({ kind: 'vmm-socket-unrecordable' }) }]);
    expect(isLinkUsageError(outcome.failed[0]?.error)).toBe(true);
    expect(outcome.linked.get(c2)).toMatchObject([{ id: id2, clientSocket: '/run/b/c2.qemu' }]);
    expect(events.filter((event) => event.includes(names(id1!).client))).toEqual([]);
    expect((await loadState(stateDir)).links.find((link) => link.id === id1)?.attached).toEqual({ client: 'qemu', provider: 'netns', clientSocket: '/run/a/c1.qemu' });
  });

  it('and a state dir that cannot be written: plain link refuses the bad input first (exit 2); --keep-going too, that VM failing alone before the probe of the state dir fails the run (a VM moving elsewhere): nothing asked', async () => {
    const [id1] = await linkedAtA();
    const text = await readFile(join(stateDir, 'links.json'), 'utf8');
    dirs.set(c1, LONG).set(c2, '/run/b');
    store.failSaves = 1;
    const unrecordable = expect.objectContaining({ kind: 'vmm-socket-unrecordable' });
    await expect(linkVms([c1, c2], { ...options(), attach: parseAttachChoice([]), vmm })).rejects.toEqual(unrecordable);
    expect(store.failSaves).toBe(1);
    const keepGoing = await linkVmsKeepGoing([c1, c2], { ...options(), attach: parseAttachChoice([]), vmm }).then(
      () => undefined,
      (error: unknown) => error,
    );
    // The state failure stops the run (the state is every VM's), carrying c1's failure, bad input, to be said with it.
    expect(keepGoing).toMatchObject({ name: 'LinkerError', kind: 'state-failed', failed: [{ vm: c1, error: unrecordable }] });
    expect(isLinkUsageError((keepGoing as LinkerError).failed[0]?.error)).toBe(true);
    expect(store.failSaves).toBe(0);
    expect(events).toEqual([]);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
    // Writable, with only c1 there to move: it fails alone, as bad input; nothing of it asked.
    dirs.delete(c2);
    const alone = await linkVmsKeepGoing([c1, c2], { ...options(), attach: parseAttachChoice([]), vmm });
    expect(alone.failed).toEqual([{ vm: c1, error: unrecordable }]);
    expect(events.filter((event) => event.includes(names(id1!).client))).toEqual([]);
  });

  it("the line's link names a client of the VM (link c1 c2): that link brings back that client's link to it, not said 'as it was' (the run's --attach c2=none is in it); one not named gets its own link, as it was", async () => {
    dirs = new Map();
    // c2 and c3: clients of c1 too.
    for (const client of [c2, CLIENTS[2]!]) await writeFile(join(configDir, client, 'providers', 'net', c1), '');
    const made = await linkVms(CLIENTS, { ...options(), attach: parseAttachChoice(['qemu', `${NETVM}=netns`]), vmm });
    const ids = [...made.linked.values()].flat().map((report) => report.id as ClientId);
    expect(ids).toHaveLength(5);
    kernel.host = new Map(ids.flatMap((id) => Object.values(names(id)).map((name): [string, ObservedDevice] => [name, { name, kind: name.includes('b') ? 'bridge' : 'tun' } as ObservedDevice])));
    dirs.set(c1, LONG);
    const refused = await linkCli([c1, c2, '--qmp-socket', '/run/a/{vm}.qmp'], stateDir, { vmm, attach: [`${c2}=none`] });
    const line = refused.stderr.join('\n');
    expect(refused.code, line).not.toBe(0);
    // c2 -> c1 comes back with c2's side none: said brought back by that link (first, next to it), not as it was.
    expect(line).toEqual(
      expect.stringMatching(
        /, then spectrum-link link c1 c2 .*--attach c2=none [^;]*; that unlink takes down the links c1 provides too, to c[23], c[23]: that link brings back c2 -> c1 too, naming c2; to bring back c3 -> c1 as it was, run spectrum-link link c3 .*--attach c3=qemu --attach c1=qemu /,
      ),
    );
    expect(line).not.toContain('c2 -> c1 as it was');
  });

  it('the same socket there is no move: nothing comes out, and the socket recorded stays recorded', async () => {
    const [id] = await linkedAtA();
    dirs.set(c1, `/run/${'./'.repeat(60)}a`);
    await linkVms([c1], { ...options(), attach: parseAttachChoice([]), vmm });
    expect(events).toEqual(['apply', `attach qemu c1 ${names(id!).client} at ${pathOf('qemu', c1)}`]);
    expect((await loadState(stateDir)).links.find((link) => link.id === id)?.attached).toEqual({ client: 'qemu', provider: 'netns', clientSocket: '/run/a/c1.qemu' });
  });
});

describe('link taking down a dropped provider whose VMM does not detach: what an unlink of the client would reach through the socket template', () => {
  const c1 = CLIENTS[0]!;
  const c2 = CLIENTS[1]!;
  const socketOf = (kind: string, vm: string): string => `/run/a/${vm}.${kind}`;
  /** Detaches of NICs of these VMs are refused. */
  let refusing: Set<string>;
  const vmm: VmmPort = {
    attach: async () => true,
    detach: async (_kind, vm) => {
      if (refusing.has(vm)) throw new Error('QEMU refused device_del');
    },
    socketOf,
  };

  it('names the VMs whose sides of the client\'s links left (client or provider) an unlink would detach through the template: recorded in that mode without a socket; not those recorded with one, nor of the links taken down', async () => {
    refusing = new Set();
    await addVm('netvm2');
    await writeFile(join(configDir, c1, 'providers', 'net', 'netvm2'), '');
    const linked = await linkVms([c1], { ...options(), attach: parseAttachChoice(['qemu', `${NETVM}=cloud-hypervisor`]), vmm });
    expect(linked.linked.get(c1)?.map((report) => report.provider)).toEqual([NETVM, 'netvm2']);
    // Up: their devices there.
    const ids = linked.linked.get(c1)!.map((report) => report.id as ClientId);
    kernel.host = new Map(ids.flatMap((id) => Object.values(linkDeviceNames(PREFIX, id)).map((name): [string, ObservedDevice] => [name, { name, kind: name.includes('b') ? 'bridge' : 'tun' } as ObservedDevice])));
    // c1 is c2's provider too, in a record written before sockets were recorded: its side qemu, no socket.
    const before = await loadState(stateDir);
    const allocation = allocateMany(before, [{ client: c2, provider: c1 }]);
    await saveState(stateDir, setAttachments(allocation.state, [{ pair: allocation.links[0]!, attached: { client: 'none', provider: 'qemu' } }]));
    await rm(join(configDir, c1, 'providers', 'net', 'netvm2'));
    refusing.add('netvm2');
    const outcome = await linkVms([c1], { ...options(), attach: parseAttachChoice([]), vmm });
    expect(outcome.vmmFailures).toEqual([expect.objectContaining({ vm: 'netvm2', vmm: 'qemu', socket: '/run/a/netvm2.qemu', throughTemplate: [c1] })]);
    // Of cloud-hypervisor sides, none: netvm's is recorded with its socket.
    refusing = new Set([NETVM]);
    await rm(join(configDir, c1, 'providers', 'net', NETVM));
    await writeFile(join(configDir, c1, 'providers', 'net', 'netvm2'), '');
    const again = await linkVms([c1], { ...options(), attach: parseAttachChoice(['netvm2=qemu']), vmm });
    expect(again.vmmFailures).toEqual([expect.objectContaining({ vm: NETVM, vmm: 'cloud-hypervisor', throughTemplate: [] })]);
  });
});

describe('unlink: a socket path that cannot be, for a side the state records no socket for', () => {
  const [c1, c2] = CLIENTS as [VmName, VmName];
  /** The VMs whose template path is too long for a socket: checkSocket and detach refuse it, as the real port does. */
  let tooLong: Set<string>;
  let events: string[];
  const refuse = (kind: string, vm: string, socket: string | undefined): void => {
    if (socket === undefined && tooLong.has(vm)) throw new CliError(`--${kind} gives VM ${vm} a socket path too long`, EXIT.usage);
  };
  const vmm: VmmPort = {
    attach: async () => true,
    detach: async (kind, vm, nic, socket) => {
      refuse(kind, vm, socket);
      events.push(`detach ${kind} ${vm} ${nic.id}`);
    },
    checkSocket: refuse,
    // c2's side is recorded without a socket (a path the state cannot hold, say).
    socketOf: (kind, vm) => (vm === c2 ? undefined : `/run/a/${vm}.${kind}`),
  };

  it.each([[false], [true]])('(--force: %j) is bad input before anything: no NIC asked out (not those of links before it), no device deleted, the state as it was', async (force) => {
    tooLong = new Set();
    events = [];
    await linkVms([c1, c2], { ...options(), attach: parseAttachChoice(['qemu']), vmm });
    const text = await readFile(join(stateDir, 'links.json'), 'utf8');
    tooLong.add(c2);
    events = [];
    kernel.removed = [];
    // netvm's links: c1's first (every socket recorded), then c2's.
    const unlinking = unlinkVm(NETVM, { forget: false, force }, { ...options(), attach: parseAttachChoice([]), vmm });
    await expect(unlinking).rejects.toMatchObject({ name: 'CliError', exitCode: EXIT.usage, message: '--qemu gives VM c2 a socket path too long' });
    expect([events, kernel.removed]).toEqual([[], []]);
    expect(await readFile(join(stateDir, 'links.json'), 'utf8')).toBe(text);
  });
});

describe('link --keep-going whose VMMs refuse: the progress of its NICs', () => {
  it('counts the NICs of a VM that failed as tried and failed, and says its undo, so that the line moves on failures as on successes', async () => {
    const [c1, c2, c3] = CLIENTS as [VmName, VmName, VmName];
    const refusing: VmmPort = { ...NO_VMM, attach: async (_kind, vm) => (vm === c2 ? Promise.reject(new Error(`cannot connect to QMP socket of ${vm}`)) : true) };
    const events: LinkProgressEvent[] = [];
    const outcome = await linkVmsKeepGoing(CLIENTS, { ...options(), attach: parseAttachChoice(['none', `${c1}=qemu`, `${c2}=qemu`, `${c3}=qemu`]), vmm: refusing, progress: (event) => void events.push(event) });
    expect(outcome.failed.map(({ vm }) => vm)).toEqual([c2]);
    expect(events.filter((event) => event.phase === 'vmm')).toEqual([
      { phase: 'vmm', done: 1, total: 3, failed: 0 },
      { phase: 'vmm', done: 2, total: 3, failed: 1, undoing: c2 },
      { phase: 'vmm', done: 2, total: 3, failed: 1 },
      { phase: 'vmm', done: 3, total: 3, failed: 1 },
    ]);
    expect(events.filter((event) => event.phase === 'vmm').map(linkProgressLine)).toEqual([
      'linking: 1 of 3 NICs hot-plugged',
      'linking: 2 of 3 NICs tried, 1 failed, undoing c2',
      'linking: 2 of 3 NICs tried, 1 failed',
      'linking: 3 of 3 NICs tried, 1 failed',
    ]);
  });
});

describe('unlink of several links on a terminal', () => {
  /** `spectrum-link unlink` with these arguments, stderr a terminal (or not). */
  const unlinkOnTerminal = (args: readonly string[], isTTY = true): Promise<{ code: number; written: string }> =>
    onTerminal(['unlink', '--state-dir', stateDir, '--device-prefix', 'sn', ...args], isTTY);

  it('says how far it has got on one line, as link does, erased before the links it took down', async () => {
    await linkVms(CLIENTS, options());
    const { code, written } = await unlinkOnTerminal([NETVM]);
    expect(written).toContain(`\r\x1b[2Kunlinking netvm: deleting the 9 devices of its 3 links`);
    const screen = terminalScreen(written).filter((line) => line !== '');
    expect({ code, screen }).toEqual({ code: 0, screen: CLIENTS.map((client) => expect.stringMatching(new RegExp(`^unlinked ${client} -> netvm \\(id \\d+, kept\\)$`))) });
  });

  it('draws none with --json, where stderr is no terminal, nor for one link', async () => {
    await linkVms(CLIENTS, options());
    expect((await unlinkOnTerminal([NETVM, '--json'])).written).not.toContain('unlinking');
    await linkVms(CLIENTS, options());
    expect((await unlinkOnTerminal([NETVM], false)).written).not.toContain('unlinking');
    await linkVms(CLIENTS, options());
    const [c1] = CLIENTS as [VmName];
    const one = await unlinkOnTerminal([c1]);
    expect({ code: one.code, written: one.written }).toEqual({ code: 0, written: expect.stringMatching(/^unlinked c1 -> netvm \(id \d+, kept\)\n$/) });
  });

  it('gives the seconds the deletion has taken, once it has taken one, and what goes before it: NICs asked out of their VMMs', () => {
    expect(unlinkProgressLine('netvm', { phase: 'detach', done: 12, total: 302, links: 302 })).toBe('unlinking netvm: 12 of 302 NICs asked out of their VMMs');
    expect(unlinkProgressLine('netvm', { phase: 'delete', devices: 906, links: 302 })).toBe('unlinking netvm: deleting the 906 devices of its 302 links');
    expect(unlinkProgressLine('netvm', { phase: 'delete', devices: 906, links: 302 }, 3)).toBe('unlinking netvm: deleting the 906 devices of its 302 links (3 s)');
  });
});
