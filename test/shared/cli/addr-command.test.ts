import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { jsonErrorOf, splitJsonError } from '../../harness/json-error.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../../', import.meta.url));
const bins = {
  'spectrum-link': `${root}dist/host/spectrum-link.cjs`,
  'spectrum-netd': `${root}dist/guest/cli.js`,
} as const;

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

async function invoke(bin: string, args: string[]): Promise<Outcome> {
  try {
    const { stdout, stderr } = await run(bin, args, { encoding: 'utf8' });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string };
    return { code: failed.code ?? -1, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' };
  }
}

const expected = {
  id: 42310,
  clientIp: '100.64.165.70',
  clientMac: '0A:B3:EC:00:A5:46',
  providerMac: '0A:B3:EC:80:A5:46',
};

// Twenty-odd kinds of bad input; each must give exit 2, nothing on stdout, one line on stderr.
const badInputs: string[][] = [
  [''],
  ['0'],
  ['65535'],
  ['70000'],
  ['042310'],
  ['+42310'],
  ['0x1'],
  ['4.2e4'],
  ['100.64.0.0'],
  ['100.64.255.255'],
  ['100.65.1.1'],
  ['100.64.1'],
  ['100.64.001.1'],
  ['100.64.1.300'],
  ['0A:B3:EC:00:A5'],
  ['0A:B3:EC:01:A5:46'],
  ['0A:B3:ED:00:A5:46'],
  ['0A:B3-EC:00:A5:46'],
  ['0A:B3:EC:00:A5:4G'],
  ['0A:B3:EC:00:00:00'],
  ['appvm-lynx'],
  [' 42310'],
  ['x'.repeat(5000)],
  ['42\n310'],
  ['\u0007'],
  [],
  ['1', '2'],
  ['--bogus-option', '1'],
];

describe.each(Object.entries(bins))('%s addr', (name, bin) => {
  beforeAll(() => {
    if (!existsSync(bin)) throw new Error(`${bin} is missing: run \`npm run build\` first`);
  });

  it.each(['0A:B3:EC:00:A5:46', '0a-b3-ec-80-a5-46', '100.64.165.70', '42310'])('prints the JSON contract for %s', async (input) => {
    const outcome = await invoke(bin, ['addr', input, '--json']);
    expect(outcome).toMatchObject({ code: 0, stderr: '' });
    expect(outcome.stdout.endsWith('\n')).toBe(true);
    expect(outcome.stdout.trim().split('\n')).toHaveLength(1);
    expect(JSON.parse(outcome.stdout)).toMatchObject(expected);
  });

  it('prints readable lines without --json', async () => {
    const outcome = await invoke(bin, ['addr', '100.64.165.70']);
    expect(outcome.code).toBe(0);
    expect(outcome.stdout).toMatch(/client IP\s+100\.64\.165\.70/);
    expect(outcome.stdout).toMatch(/client MAC\s+0A:B3:EC:00:A5:46/);
    expect(outcome.stdout).toMatch(/provider MAC\s+0A:B3:EC:80:A5:46/);
  });

  it.each(badInputs.map((args) => [JSON.stringify(args).slice(0, 40), args] as const))(
    'refuses %s with exit 2 and one line',
    async (_label, args) => {
      const outcome = await invoke(bin, ['addr', ...args, '--json']);
      expect(outcome.code).toBe(2);
      const lines = outcome.stderr.split('\n').filter((line) => line !== '');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(new RegExp(`^${name}: `));
      // stdout: nothing but the error object (--json), its message that line's, its kind the address error's.
      expect(splitJsonError(outcome.stdout)).toEqual({ printed: '', error: jsonErrorOf(lines[0] ?? '', expect.stringMatching(/^[a-z-]+$/), 2) });
      expect(outcome.stderr).not.toMatch(/\n\s+at /);
      expect(outcome.stderr.length).toBeLessThan(300);
    },
  );
});
