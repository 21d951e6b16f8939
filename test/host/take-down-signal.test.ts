// unlink and gc at a SIGINT or SIGTERM once they hold the state lock: they end at once (128 + the
// signal's number) after one line that says what is so. Before they begin to take anything down
// (reading the state, probing a write, listing devices; a gc of a state dir with no state file,
// which deletes nothing), that nothing was; once they have begun, that it may be partly done and
// what to run. The kernel adapter is scripted (no device touched); the signal is emitted from
// inside it, as one that comes while it works, and process.exit is caught there.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { ObservedDevice } from '../../host/device-plan.js';
import { linkCommands } from '../../host/link-commands.js';
import { allocateMany, emptyState, setAttachments } from '../../host/link-state.js';
import type { VmmPort } from '../../host/linker-types.js';
import { saveState } from '../../host/state-store.js';
import { vmName } from '../../host/vm-name.js';
import { runCli } from '../../shared/cli/run-cli.js';

/** The host devices the scripted kernel reports, and what runs as it lists them, deletes them, or as the state dir's write is probed. */
const hooks = vi.hoisted(() => ({
  host: new Map<string, ObservedDevice>(),
  whileListing: (): void => undefined,
  whileRemoving: (): void => undefined,
  whileProbing: (): void => undefined,
}));

vi.mock('../../host/netlink-devices.js', async (importOriginal) => ({
  ...(await importOriginal<typeof import('../../host/netlink-devices.js')>()),
  observeDevices: async () => {
    hooks.whileListing();
    return { ipv6: false, ipv6Forwarding: false, host: hooks.host, netns: new Map(), netnsIds: new Map() };
  },
  removeDevices: async (names: readonly string[]) => {
    hooks.whileRemoving();
    return { kept: [], removed: names.filter((name) => hooks.host.has(name)).map((name) => ({ name, kind: hooks.host.get(name)?.kind ?? null })) };
  },
}));

vi.mock('../../host/state-store.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../host/state-store.js')>();
  return {
    ...real,
    probeStateWrite: async (dir: string) => {
      hooks.whileProbing();
      await real.probeStateWrite(dir);
    },
  };
});

const NO_VMM: VmmPort = { attach: async () => true, detach: async () => undefined };
const c1 = vmName('c1');
const netvm = vmName('netvm');
let stateDir: string;

beforeEach(async () => {
  stateDir = await mkdtemp(join(tmpdir(), 'spectrum-take-down-signal-'));
  hooks.host = new Map();
  hooks.whileListing = () => undefined;
  hooks.whileRemoving = () => undefined;
  hooks.whileProbing = () => undefined;
});

afterEach(async () => {
  vi.restoreAllMocks();
  await rm(stateDir, { recursive: true, force: true });
});

class Exited extends Error {
  constructor(readonly code: number | string | null | undefined) {
    super(`exit ${String(code)}`);
  }
}

/** What the last signalled run had printed on stdout as it exited (undefined: it did not exit). */
let printedAtExit: string | undefined;

/**
 * `spectrum-link ARGS` as the bin runs it (runCli), `signal` emitted where `at` is set to run: the
 * exit code it ended with there and stderr's lines by then (undefined: it did not end so).
 */
async function signalled(args: readonly string[], signal: 'SIGINT' | 'SIGTERM', at: 'whileListing' | 'whileRemoving' | 'whileProbing'): Promise<{ code: number | string | null | undefined; lines: string[] } | undefined> {
  let stderr = '';
  let stdout = '';
  let ended: { code: number | string | null | undefined; lines: string[] } | undefined;
  printedAtExit = undefined;
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => ((stdout += String(chunk)), true));
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((stderr += String(chunk)), true));
  vi.spyOn(process, 'exit').mockImplementation((code) => {
    ended ??= { code, lines: stderr.split('\n').filter((line) => line !== '') };
    printedAtExit ??= stdout;
    throw new Exited(code);
  });
  hooks[at] = () => void process.emit(signal, signal);
  const program = new Command('spectrum-link');
  for (const command of linkCommands({}, () => NO_VMM)) program.addCommand(command);
  await runCli(program, [...args, '--state-dir', stateDir, '--device-prefix', 'sn']);
  return ended;
}

const device = (kind: string): ObservedDevice => ({ kind }) as ObservedDevice;

describe('gc at a signal once it holds the lock', () => {
  it('with no state file (where it deletes nothing): exits 130 saying that nothing was deleted, not to run gc again (which refuses)', async () => {
    hooks.host.set('snb7', device('bridge'));
    expect(await signalled(['gc'], 'SIGINT', 'whileListing')).toEqual({ code: 130, lines: ['spectrum-link: gc interrupted by SIGINT before it changed anything: nothing was deleted'] });
  });

  it('with a state file: while it lists the devices, nothing was deleted (exit 143); while it deletes them, they may be partly deleted, gc again deletes what is left', async () => {
    await writeFile(join(stateDir, 'links.json'), '{"version":2,"devicePrefix":"sn","links":[]}\n');
    hooks.host.set('snb7', device('bridge'));
    expect(await signalled(['gc'], 'SIGTERM', 'whileListing')).toEqual({ code: 143, lines: ['spectrum-link: gc interrupted by SIGTERM before it changed anything: nothing was deleted'] });
    vi.restoreAllMocks();
    hooks.whileListing = () => undefined;
    expect(await signalled(['gc'], 'SIGINT', 'whileRemoving')).toEqual({
      code: 130,
      lines: ['spectrum-link: gc interrupted by SIGINT: the devices it found to delete may be partly deleted (the kernel finishing a deletion begun): run gc again to delete what is left'],
    });
  });
});

describe('unlink at a signal once it holds the lock', () => {
  it('before its take-down (probing the state dir): nothing was taken down; during it: may be partly done, and the same unlink to finish it', async () => {
    const { state } = allocateMany(emptyState(), [{ client: c1, provider: netvm }]);
    await saveState(stateDir, setAttachments(state, [{ pair: { client: c1, provider: netvm }, attached: { client: 'none', provider: 'none' } }]));
    expect(await signalled(['unlink', 'c1'], 'SIGINT', 'whileProbing')).toEqual({ code: 130, lines: ['spectrum-link: unlink interrupted by SIGINT before it changed anything: nothing was taken down'] });
    vi.restoreAllMocks();
    hooks.whileProbing = () => undefined;
    expect(await signalled(['unlink', 'c1'], 'SIGTERM', 'whileRemoving')).toEqual({
      code: 143,
      lines: [expect.stringMatching(/^spectrum-link: unlink interrupted by SIGTERM: its take-down may be partly done .*: run spectrum-link unlink c1 --state-dir \S+ --device-prefix sn again to finish it$/)],
    });
  });
});

describe('--json: unlink and gc ended at once by a signal say it on stdout too', () => {
  it('gc --json and unlink --json: one error object, kind interrupted, its message the stderr line, its exitCode the exit code', async () => {
    await writeFile(join(stateDir, 'links.json'), '{"version":2,"devicePrefix":"sn","links":[]}\n');
    hooks.host.set('snb7', device('bridge'));
    const gc = await signalled(['gc', '--json'], 'SIGINT', 'whileRemoving');
    expect(gc?.lines).toHaveLength(1);
    const said = (line: string, code: number): string => `${JSON.stringify({ error: { kind: 'interrupted', message: line.replace(/^spectrum-link: /, ''), exitCode: code } })}\n`;
    expect([gc?.code, printedAtExit]).toEqual([130, said(gc?.lines[0] ?? '', 130)]);
    vi.restoreAllMocks();
    hooks.whileRemoving = () => undefined;
    const { state } = allocateMany(emptyState(), [{ client: c1, provider: netvm }]);
    await saveState(stateDir, setAttachments(state, [{ pair: { client: c1, provider: netvm }, attached: { client: 'none', provider: 'none' } }]));
    const unlink = await signalled(['unlink', 'c1', '--json'], 'SIGTERM', 'whileProbing');
    expect([unlink?.code, printedAtExit]).toEqual([143, said(unlink?.lines[0] ?? '', 143)]);
    // Without --json: nothing on stdout.
    vi.restoreAllMocks();
    await signalled(['unlink', 'c1'], 'SIGTERM', 'whileProbing');
    expect(printedAtExit).toBe('');
  });
});
