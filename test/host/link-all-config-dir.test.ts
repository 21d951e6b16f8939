// `link --all` with a config dir that has no VM with providers, as the installed bin says it: a
// wrong config dir (empty, one level too high) fails in one line naming the dir and where it came
// from, exit 1; a config dir whose VMs name no provider (valid) is warned of, exit 0. Neither is
// silent, also with --json: at boot, a wrong $SPECTRUM_CONFIG_DIR linked nothing in silence.
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type ExecResult, type Harness, type Netns, createHarness, describeNetns, jsonErrorOf, trackTempDir } from '../harness/index.js';
import { EXAMPLES, LINK_BIN, requireBuild } from './link-fixture.js';

describeNetns('link --all with no VM with providers', () => {
  let harness: Harness;
  let host: Netns;
  let scratch: string;

  beforeAll(async () => {
    requireBuild();
    harness = createHarness('allcfg');
    host = await harness.namespace('host');
    scratch = await mkdtemp(join(tmpdir(), 'spectrum-allcfg-'));
    trackTempDir(scratch);
    await mkdir(join(scratch, 'empty'));
    // One level too high: its entries are the config dir and a state dir.
    await cp(EXAMPLES, join(scratch, 'high', 'data'), { recursive: true });
    await mkdir(join(scratch, 'high', 'state'));
    // VMs (a kernel, a disk) that name no provider: a valid config.
    for (const vm of ['vm1', 'vm2']) {
      await mkdir(join(scratch, 'bare', vm, 'blk'), { recursive: true });
      await writeFile(join(scratch, 'bare', vm, 'vmlinux'), '');
      await writeFile(join(scratch, 'bare', vm, 'blk', 'root.img'), '');
    }
  });
  afterAll(async () => {
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
    await harness?.cleanup();
  });

  let runs = 0;
  async function linkAll(configDir: { option: string } | { variable: string }, json: boolean): Promise<ExecResult> {
    runs += 1;
    const args = ['link', '--all', '--state-dir', join(scratch, `state${runs}`), ...('option' in configDir ? ['--config-dir', configDir.option] : []), ...(json ? ['--json'] : [])];
    const env = { ...process.env, SPECTRUM_CONFIG_DIR: 'variable' in configDir ? configDir.variable : '' };
    return host.exec(['node', LINK_BIN, ...args], { enter: 'nsenter', allowFailure: true, env });
  }

  const fix = {
    option: 'check --config-dir: it must be the directory holding the VM directories',
    variable: 'check SPECTRUM_CONFIG_DIR: it must be the directory holding the VM directories (or pass --config-dir, which overrides it)',
  };
  const noVmDir = (dir: string, from: string, check: string): string =>
    `spectrum-link: config dir ${dir} (${from}) holds no VM directory (a directory with a vmlinux, blk or providers/net): nothing linked; ${check}\n`;

  it.each([false, true])('an empty config dir, or one a level too high, fails in one line naming it and its source, exit 1, making no state dir (--json: %s)', async (json) => {
    const empty = join(scratch, 'empty');
    const high = join(scratch, 'high');
    // stdout: nothing, but with --json the failure's error object.
    const errorLine = (line: string): string => (json ? `${JSON.stringify({ error: jsonErrorOf(line, 'failure', 1) })}\n` : '');
    const fromOption = await linkAll({ option: empty }, json);
    const optionLine = noVmDir(empty, 'from --config-dir', fix.option);
    expect({ code: fromOption.code, stdout: fromOption.stdout, stderr: fromOption.stderr }).toEqual({ code: 1, stdout: errorLine(optionLine), stderr: optionLine });
    // The run failed on its input: nothing made on disk, not the state dir its lock would need.
    expect(existsSync(join(scratch, `state${runs}`))).toBe(false);
    const fromVariable = await linkAll({ variable: high }, json);
    const variableLine = noVmDir(high, 'from environment variable SPECTRUM_CONFIG_DIR', fix.variable);
    expect({ code: fromVariable.code, stdout: fromVariable.stdout, stderr: fromVariable.stderr }).toEqual({ code: 1, stdout: errorLine(variableLine), stderr: variableLine });
    expect(existsSync(join(scratch, `state${runs}`))).toBe(false);
  });

  it.each([false, true])('a config dir whose VMs name no provider is warned of in one line, exit 0 (--json: %s)', async (json) => {
    const bare = join(scratch, 'bare');
    const result = await linkAll({ variable: bare }, json);
    expect({ code: result.code, stdout: result.stdout }).toEqual({ code: 0, stdout: '' });
    // stderr is no terminal here: the warning is a pino JSON line.
    const lines = result.stderr.split('\n').filter((line) => line !== '');
    expect(lines.map((line) => (JSON.parse(line) as { level: number; msg: string }))).toEqual([
      expect.objectContaining({ level: 40, msg: `config dir ${bare} (from environment variable SPECTRUM_CONFIG_DIR) has no VM with providers (providers/net): nothing linked` }),
    ]);
  });

  it('a config dir with a VM with providers says nothing of it', async () => {
    const result = await linkAll({ option: EXAMPLES }, true);
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
    expect(result.stdout.split('\n').filter((line) => line !== '')).toHaveLength(2);
  });
});
