// With --json, a failure is also one JSON object on stdout, `{"error": {"kind", "message",
// "exitCode"[, "details"]}}`, its own line after anything the command printed; stderr keeps its
// one line. Spawns the built bins; spectrum-link runs in a network namespace of its own
// (`unshare -n`), where it finds no devices, so nothing here looks at the host's.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Ended, collectOutput as collect } from '../../harness/child-output.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const LINK = `${root}dist/host/spectrum-link.cjs`;
const NETD = `${root}dist/guest/cli.js`;
const isRoot = process.getuid?.() === 0;

const link = (args: readonly string[]): Promise<Ended> => collect(spawn('unshare', ['-n', LINK, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }));
const netd = (args: readonly string[]): Promise<Ended> => collect(spawn(NETD, [...args], { stdio: ['ignore', 'pipe', 'pipe'] }));

interface ErrorObject {
  kind: string;
  message: string;
  exitCode: number;
  details?: string[];
}

/** stdout's lines, each parsed as JSON. */
const jsonLines = (stdout: string): unknown[] => stdout.split('\n').filter((line) => line !== '').map((line): unknown => JSON.parse(line));

/**
 * The failure as both streams say it: stdout's last line is the error object (returned), its
 * exitCode the process's, its message stderr's line (less the bin's name), which is stderr's
 * only line where `stderrLines` is 1.
 */
function saidFailure(ended: Ended, bin: string, stderrLines = 1): ErrorObject {
  const last = jsonLines(ended.stdout).at(-1);
  expect(last).toEqual({ error: expect.objectContaining({ kind: expect.any(String), message: expect.any(String), exitCode: ended.code }) });
  const { error } = last as { error: ErrorObject };
  const lines = ended.stderr.split('\n').filter((line) => line !== '' && !line.startsWith('{'));
  expect(lines).toHaveLength(stderrLines);
  expect(lines).toContain(`${bin}: ${error.message}`);
  return error;
}

beforeAll(() => {
  for (const bin of [LINK, NETD]) if (!existsSync(bin)) throw new Error(`${bin} is missing: run \`npm run build\` first`);
});

describe.skipIf(!isRoot)('spectrum-link --json: a failure is one JSON object on stdout too', () => {
  let dir = '';
  let configDir = '';
  let stateDir = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'spectrum-json-errors-'));
    configDir = join(dir, 'cfg');
    stateDir = join(dir, 'state');
    mkdirSync(join(configDir, 'appvm-a', 'providers', 'net'), { recursive: true });
    mkdirSync(stateDir);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const dirs = (): string[] => ['--config-dir', configDir, '--state-dir', stateDir];

  it('link of a VM that is not valid: kind invalid-vm, exit 1, stderr its one line', async () => {
    const ended = await link(['link', 'nosuchvm', '--json', ...dirs()]);
    expect(ended.code).toBe(1);
    expect(jsonLines(ended.stdout)).toHaveLength(1);
    expect(saidFailure(ended, 'spectrum-link')).toMatchObject({ kind: 'invalid-vm', exitCode: 1, message: expect.stringMatching(/^VM nosuchvm in .* is not valid/) });
    // Without --json, stdout stays empty, and stderr as it is.
    const text = await link(['link', 'nosuchvm', ...dirs()]);
    expect(text).toEqual({ code: 1, stdout: '', stderr: ended.stderr });
  });

  it('show of an unknown VM: kind unknown-vm, exit 1', async () => {
    const ended = await link(['show', 'nosuchvm', '--json', ...dirs()]);
    expect(ended.code).toBe(1);
    expect(saidFailure(ended, 'spectrum-link')).toMatchObject({ kind: 'unknown-vm', exitCode: 1, message: expect.stringMatching(/^show: no VM nosuchvm in config dir /) });
  });

  it('usage errors: a bad option value, and an unknown option commander finds, are kind usage, exit 2', async () => {
    const value = await link(['link', 'appvm-a', '--mtu', 'abc', '--json', ...dirs()]);
    expect(value.code).toBe(2);
    expect(saidFailure(value, 'spectrum-link')).toEqual({ kind: 'usage', exitCode: 2, message: '--mtu "abc" is not valid: give an MTU from 68 to 65535' });
    const unknown = await link(['list', '--json', '--bogus', '--state-dir', stateDir]);
    expect(unknown.code).toBe(2);
    expect(saidFailure(unknown, 'spectrum-link')).toEqual({ kind: 'usage', exitCode: 2, message: "unknown option '--bogus'" });
    // A config dir named that does not exist: bad input, its module error's kind.
    const missing = await link(['show', 'appvm-a', '--config-dir', join(dir, 'none'), '--json']);
    expect(missing.code).toBe(2);
    expect(saidFailure(missing, 'spectrum-link')).toMatchObject({ kind: 'named-config-dir-missing', exitCode: 2 });
    // Where --json cannot be seen as the command's: an unknown command, or --json after `--`, text alone.
    // Nor where --json is an option's value (--config-dir's, here), not an option of its own.
    for (const args of [['frob', '--json'], ['list', '--bogus', '--', '--json'], ['link', 'appvm-a', '--config-dir', '--json', '--bogus'], ['list', '--state-dir', '--json', '--bogus']]) {
      const ended = await link(args);
      expect([ended.code, ended.stdout]).toEqual([2, '']);
    }
  });

  it('a command that printed lines first: the error object is one more line after them', async () => {
    // A link recorded for a VM whose directory is gone, and a config dir with no VM at all:
    // link --all prints the orphan's line, then fails (the config dir is most likely the wrong one).
    const own = join(dir, 'printed');
    mkdirSync(join(own, 'cfg'), { recursive: true });
    mkdirSync(join(own, 'state'));
    writeFileSync(join(own, 'state', 'links.json'), '{"version":1,"links":[{"client":"app1","provider":"netvm","id":1}]}\n');
    const ended = await link(['link', '--all', '--json', '--config-dir', join(own, 'cfg'), '--state-dir', join(own, 'state')]);
    expect(ended.code).toBe(1);
    const lines = jsonLines(ended.stdout);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ vm: 'app1', links: [], orphaned: [expect.objectContaining({ vm: 'app1', id: 1 })] });
    // stderr: the orphan's warning (a JSON log line, not a terminal), then the failure's one line.
    expect(saidFailure(ended, 'spectrum-link')).toMatchObject({ kind: 'failure', exitCode: 1, message: expect.stringMatching(/holds no VM directory/) });
  });

  it('link --keep-going --json says each VM that failed in its line ("error"): no error object besides', async () => {
    const ended = await link(['link', 'nosuchvm', 'othervm', '--keep-going', '--json', ...dirs()]);
    expect(ended.code).toBe(1);
    const lines = jsonLines(ended.stdout);
    expect(lines).toEqual([
      { vm: 'nosuchvm', links: [], error: expect.stringMatching(/^VM nosuchvm in .* is not valid/) },
      { vm: 'othervm', links: [], error: expect.stringMatching(/^VM othervm in .* is not valid/) },
    ]);
  });

  it('check --json of a VM not valid says it in its own object ("valid": false): no error object besides', async () => {
    const ended = await link(['check', 'appvm-a', '--json', '--config-dir', configDir]);
    expect(ended.code).toBe(1);
    const lines = jsonLines(ended.stdout);
    expect(lines).toEqual([expect.objectContaining({ vm: 'appvm-a', valid: false })]);
  });
});

describe('spectrum-netd --json: a failure is one JSON object on stdout too', () => {
  let dir = '';
  beforeAll(() => void (dir = mkdtempSync(join(tmpdir(), 'spectrum-json-errors-netd-'))));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('status --json with no agent: kind not-running, exit 1, stderr its one line', async () => {
    const socket = join(dir, 'control.sock');
    const ended = await netd(['status', '--json', '--control-socket', socket]);
    expect(ended.code).toBe(1);
    expect(jsonLines(ended.stdout)).toHaveLength(1);
    expect(saidFailure(ended, 'spectrum-netd')).toMatchObject({ kind: 'not-running', exitCode: 1, message: expect.stringContaining(socket) });
  });

  it('addr --json of a bad address: the address error kind, exit 2; status --json --wait of a bad value: usage', async () => {
    const addr = await netd(['addr', '0A:B3:EC:00:00', '--json']);
    expect(addr.code).toBe(2);
    expect(saidFailure(addr, 'spectrum-netd')).toMatchObject({ kind: expect.stringMatching(/^mac-|^unrecognised$/), exitCode: 2 });
    const wait = await netd(['status', '--json', '--wait', 'x', '--control-socket', join(dir, 'control.sock')]);
    expect(wait.code).toBe(2);
    expect(saidFailure(wait, 'spectrum-netd')).toMatchObject({ kind: 'usage', exitCode: 2, message: expect.stringMatching(/^--wait "x" is not valid/) });
  });
});
