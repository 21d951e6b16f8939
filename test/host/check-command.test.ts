import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { checkCommand } from '../../host/check-command.js';
import { LINK_EXIT_CODES } from '../../host/exit-codes.js';
import { DEFAULT_CONFIG_DIR } from '../../host/config.js';
import { EXIT, runCli } from '../../shared/cli/run-cli.js';

const EXAMPLES = join(import.meta.dirname, '..', '..', 'examples', 'svc', 'data');

async function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const stdout = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => ((out += String(chunk)), true));
  const stderr = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((err += String(chunk)), true));
  try {
    const program = new Command('spectrum-link').addCommand(checkCommand(env));
    const code = await runCli(program, args, LINK_EXIT_CODES);
    return { code, out, err };
  } finally {
    stdout.mockRestore();
    stderr.mockRestore();
  }
}

let base: string;
beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), 'spectrum-check-'));
});
afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

describe('spectrum-link check', () => {
  it('passes the examples', async () => {
    for (const vm of ['appvm-lynx', 'appvm-catgirl', 'netvm']) {
      const result = await run(['check', vm, '--config-dir', EXAMPLES]);
      expect(result).toMatchObject({ code: 0, err: '' });
      expect(result.out).toContain(`${vm}: ok`);
    }
  });

  it('takes the config dir from SPECTRUM_CONFIG_DIR', async () => {
    expect((await run(['check', 'appvm-lynx'], { SPECTRUM_CONFIG_DIR: EXAMPLES })).code).toBe(0);
  });

  it('prints JSON', async () => {
    const result = await run(['check', 'appvm-lynx', '--config-dir', EXAMPLES, '--json']);
    expect(JSON.parse(result.out)).toEqual({ vm: 'appvm-lynx', configDir: expect.any(String), valid: true, providers: ['netvm'], problems: [] });
  });

  it('lists every problem, one per line, and exits 1', async () => {
    await mkdir(join(base, 'bad', 'providers', 'net'), { recursive: true });
    await writeFile(join(base, 'bad', 'providers', 'net', 'bad'), '');
    await writeFile(join(base, 'bad', 'providers', 'net', 'ghost'), '');
    const result = await run(['check', 'bad', '--config-dir', base]);
    expect(result.code).toBe(EXIT.failure);
    expect(result.out).toBe('');
    const lines = result.err.trimEnd().split('\n');
    expect(lines[0]).toBe('spectrum-link: check: bad is not a valid VM (4 problems):');
    expect(lines.slice(1).map((l) => l.replace(/^spectrum-link: {3}bad: /, '').split(/[ :]/)[0])).toEqual(['no', 'no', `${base}/bad/providers/net/bad`, 'provider']);
    const json = await run(['check', 'bad', '--config-dir', base, '--json']);
    expect(json.code).toBe(EXIT.failure);
    expect(JSON.parse(json.out).problems.map((p: { kind: string }) => p.kind)).toEqual(['kernel-missing', 'blk-missing', 'self-provider', 'provider-missing']);
  });

  it('refuses a VM directory that is a symlink to another VM\'s, itself and as a client\'s provider, saying which VM has that directory and what to do; exit 1 (invalid config, as other VM entries that are no VM directory)', async () => {
    const cfg = join(await realpath(base), 'cfg');
    await cp(EXAMPLES, cfg, { recursive: true });
    await symlink('netvm', join(cfg, 'netalias'));
    await mkdir(join(cfg, 'appvm-alias', 'blk'), { recursive: true });
    await mkdir(join(cfg, 'appvm-alias', 'providers', 'net'), { recursive: true });
    await writeFile(join(cfg, 'appvm-alias', 'vmlinux'), '');
    await writeFile(join(cfg, 'appvm-alias', 'blk', 'root.img'), '');
    await writeFile(join(cfg, 'appvm-alias', 'providers', 'net', 'netalias'), '');
    const said = `${cfg}/netalias is a symlink that leads to VM netvm's directory ${cfg}/netvm: one directory, two VM names; remove the symlink and name netvm, not netalias, in providers/net (README: VM directories)`;
    expect(await run(['check', 'netalias', '--config-dir', cfg])).toEqual({
      code: EXIT.failure,
      out: '',
      err: `spectrum-link: check: netalias is not a valid VM (1 problem):\nspectrum-link:   netalias: ${said}\n`,
    });
    const client = await run(['check', 'appvm-alias', '--config-dir', cfg, '--json']);
    expect(client.code).toBe(EXIT.failure);
    expect(JSON.parse(client.out)).toEqual({
      vm: 'appvm-alias',
      configDir: cfg,
      valid: false,
      providers: ['netalias'],
      problems: [{ vm: 'appvm-alias', kind: 'provider-not-a-vm', message: `appvm-alias: provider "netalias" (${cfg}/appvm-alias/providers/net/netalias) is not a VM directory: ${said}` }],
    });
    expect((await run(['check', 'netvm', '--config-dir', cfg])).code).toBe(0);
  });

  it('exits 2 for bad names and usage, and for a config dir named that does not exist', async () => {
    for (const name of ['../etc', 'a/b', '', 'a b', '..']) expect((await run(['check', name, '--config-dir', EXAMPLES])).code).toBe(EXIT.usage);
    expect((await run(['check'])).code).toBe(EXIT.usage);
    // Not the working directory: a checked VM of that name there would pass.
    expect(await run(['check', 'netvm', '--config-dir', ''])).toEqual({
      code: EXIT.usage,
      out: '',
      err: 'spectrum-link: --config-dir "" is not valid: give a directory (an empty path would mean the working directory)\n',
    });
    const missing = await run(['check', 'netvm', '--config-dir', join(base, 'none')]);
    expect(missing.code).toBe(EXIT.usage);
    expect(missing.err).toContain('does not exist');
  });

  it('says where a config dir that does not exist came from (the option, the variable, the default) and what to check accordingly: named, bad input (exit 2); the default, the host lacks it (exit 1)', async () => {
    const none = join(base, 'none');
    const want = 'the directory holding the VM directories';
    expect(await run(['check', 'netvm', '--config-dir', none], { SPECTRUM_CONFIG_DIR: EXAMPLES })).toEqual({
      code: EXIT.usage,
      out: '',
      err: `spectrum-link: config dir ${none} (from --config-dir) does not exist; check --config-dir: it must be ${want}\n`,
    });
    expect(await run(['check', 'netvm'], { SPECTRUM_CONFIG_DIR: none })).toEqual({
      code: EXIT.usage,
      out: '',
      err: `spectrum-link: config dir ${none} (from environment variable SPECTRUM_CONFIG_DIR) does not exist; check SPECTRUM_CONFIG_DIR: it must be ${want} (or pass --config-dir, which overrides it)\n`,
    });
    // Spectrum's own, which a test machine has not (an empty variable is as none).
    expect(existsSync(DEFAULT_CONFIG_DIR)).toBe(false);
    expect(await run(['check', 'netvm'], { SPECTRUM_CONFIG_DIR: '' })).toEqual({
      code: EXIT.failure,
      out: '',
      err: `spectrum-link: config dir ${DEFAULT_CONFIG_DIR} (the default) does not exist; pass --config-dir or set SPECTRUM_CONFIG_DIR to ${want}\n`,
    });
  });
});
