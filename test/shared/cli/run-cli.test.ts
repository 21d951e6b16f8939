// How the bins end when their output cannot be written as usual: a slow reader, a reader that went
// away (`| head`), a full disk. Spawns the built bins; `list` runs in a network namespace of its
// own (`unshare -n`), where it finds no devices, so nothing here looks at the host's.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Ended, collectOutput as collect } from '../../harness/child-output.js';
import { oneLine } from '../../../shared/cli/run-cli.js';
import { quoteText } from '../../../shared/shown-text.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const bins = {
  'spectrum-link': `${root}dist/host/spectrum-link.cjs`,
  'spectrum-netd': `${root}dist/guest/cli.js`,
} as const;
const isRoot = process.getuid?.() === 0;

beforeAll(() => {
  for (const bin of Object.values(bins)) if (!existsSync(bin)) throw new Error(`${bin} is missing: run \`npm run build\` first`);
});

describe('output through a pipe', () => {
  let stateDir = '';
  const links = 1000;

  beforeAll(() => {
    stateDir = mkdtempSync(join(tmpdir(), 'spectrum-run-cli-'));
    const lines = Array.from({ length: links }, (_, index) => `{"client":"app${index + 1}","provider":"netvm","id":${index + 1}}`);
    writeFileSync(join(stateDir, 'links.json'), `{"version":1,"links":[\n${lines.join(',\n')}\n]}\n`);
  });
  afterAll(() => rmSync(stateDir, { recursive: true, force: true }));

  // `list --json` of a thousand links is some 250 KB, several times a pipe's 64 KiB: the bin must
  // not exit before a reader that is a little late has it all.
  it.skipIf(!isRoot)('spectrum-link list --json: a reader that starts late still gets all of it', async () => {
    const child = spawn('unshare', ['-n', bins['spectrum-link'], 'list', '--json', '--state-dir', stateDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.pause();
    const ended = collect(child);
    await new Promise((resolve) => setTimeout(resolve, 500));
    child.stdout.resume();
    const { code, stdout, stderr } = await ended;
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const listed: unknown = JSON.parse(stdout);
    expect(Array.isArray(listed) && listed.length).toBe(links);
  });

  it.each(Object.entries(bins))('%s: a reader that went away (EPIPE) ends it quietly, exit 1, no stack trace', async (_name, bin) => {
    const child = spawn(bin, ['--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
    // Close our end before the bin writes: its write fails with EPIPE, as under `| head -0`.
    child.stdout.destroy();
    const { code, stderr } = await collect(child);
    expect(stderr).toBe('');
    expect(code).toBe(1);
  });

  it.each(Object.entries(bins))('%s: output that cannot be written (a full disk) is one line and exit 1', async (name, bin) => {
    const full = openSync('/dev/full', 'w');
    try {
      const child = spawn(bin, ['addr', '42310', '--json'], { stdio: ['ignore', full, 'pipe'] });
      const { code, stderr } = await collect(child);
      expect(stderr).toMatch(new RegExp(`^${name}: cannot write the output \\(ENOSPC[^\\n]*\\n$`));
      expect(code).toBe(1);
    } finally {
      closeSync(full);
    }
  });
});

describe('help of a command', () => {
  it.each(Object.entries(bins))('%s help NAME of no command: one line saying so, exit 2, as an unknown command is', async (name, bin) => {
    const asked = await collect(spawn(bin, ['help', 'bogus'], { stdio: ['ignore', 'pipe', 'pipe'] }));
    expect(asked).toEqual({ code: 2, stdout: '', stderr: `${name}: unknown command 'bogus'\n` });
    const run = await collect(spawn(bin, ['bogus'], { stdio: ['ignore', 'pipe', 'pipe'] }));
    expect(run).toEqual(asked);
  });

  const nearMisses = { 'spectrum-link': ['lnk', 'link'], 'spectrum-netd': ['stauts', 'status'] } as const;
  it.each(Object.entries(bins))('%s help NAME close to a command: one line suggesting it, exit 2, as for NAME alone', async (name, bin) => {
    const [typo, meant] = nearMisses[name as keyof typeof bins];
    const asked = await collect(spawn(bin, ['help', typo], { stdio: ['ignore', 'pipe', 'pipe'] }));
    expect(asked).toEqual({ code: 2, stdout: '', stderr: `${name}: unknown command '${typo}' (Did you mean ${meant}?)\n` });
    const run = await collect(spawn(bin, [typo], { stdio: ['ignore', 'pipe', 'pipe'] }));
    expect(run).toEqual(asked);
    // A name that looks like an option is still a command name there, not the option.
    const dashed = await collect(spawn(bin, ['help', '--', '--version'], { stdio: ['ignore', 'pipe', 'pipe'] }));
    expect(dashed).toEqual({ code: 2, stdout: '', stderr: `${name}: unknown command '--version'\n` });
  });

  it.each(Object.entries(bins))('%s help, and help of a command, print that help on stdout, exit 0', async (name, bin) => {
    const whole = await collect(spawn(bin, ['help'], { stdio: ['ignore', 'pipe', 'pipe'] }));
    expect([whole.code, whole.stderr]).toEqual([0, '']);
    expect(whole.stdout).toMatch(new RegExp(`^Usage: ${name} \\[options\\] \\[command\\]\\n`));
    expect(whole.stdout).toMatch(/^ {2}help \[command\] +display help for command$/m);
    const one = await collect(spawn(bin, ['help', 'addr'], { stdio: ['ignore', 'pipe', 'pipe'] }));
    expect([one.code, one.stderr]).toEqual([0, '']);
    expect(one.stdout).toMatch(new RegExp(`^Usage: ${name} addr \\[options\\] <address>\\n`));
  });
});

describe('what the bins say of input holding terminal controls', () => {
  // A value as the operator gave it (an option, an environment variable) is said as given: an
  // escape sequence in it reached the terminal raw (ESC [ 2 J clears it). Neither command below
  // touches a network: check reads a config dir, status connects to a Unix socket.
  const cases = {
    'spectrum-link': ['check', 'netvm', '--config-dir', '/nonexistent/\x1b[2Jx\u202e'],
    'spectrum-netd': ['status', '--control-socket', '/nonexistent/\x1b[2Jx\u202e'],
  } as const;
  // A config dir named that does not exist is bad input (exit 2); a control socket that cannot be
  // reached is a failure (exit 1).
  const codes = { 'spectrum-link': 2, 'spectrum-netd': 1 } as const;
  it.each(Object.entries(bins))('%s escapes them in its one line, as JSON writes them', async (name, bin) => {
    const ended = await collect(spawn(bin, [...cases[name as keyof typeof bins]], { stdio: ['ignore', 'pipe', 'pipe'] }));
    expect(ended.code).toBe(codes[name as keyof typeof bins]);
    expect(ended.stderr).not.toMatch(/[\p{Cc}\p{Cf}](?!$)/u);
    expect(ended.stderr).toContain('/nonexistent/\\u001b[2Jx\\u202e');
    expect(ended.stderr.split('\n').filter((line) => line !== '')).toHaveLength(1);
    const unknown = await collect(spawn(bin, ['--\x1b[2J'], { stdio: ['ignore', 'pipe', 'pipe'] }));
    expect(unknown).toEqual({ code: 2, stdout: '', stderr: `${name}: unknown option '--\\u001b[2J'\n` });
  });
});

describe('oneLine', () => {
  it('escapes the line and paragraph separators too, at which some log viewers break a line', () => {
    expect(oneLine('cannot read /tmp/a\u2028b\u2029c')).toBe('cannot read /tmp/a\\u2028b\\u2029c');
    expect(oneLine('x\u001b[2Jy')).toBe('x\\u001b[2Jy');
  });

  it('escapes a format character beyond the BMP as its surrogate pair, as quoteText and JSON do: its escapes read back as JSON', () => {
    // A tag space (U+E0020), as an operator's path may hold. Before: \u{e0020}, no JSON escape.
    expect(oneLine('cannot read /tmp/a\u{e0020}b')).toBe('cannot read /tmp/a\\udb40\\udc20b');
    expect(quoteText('a\u{e0020}b', 70)).toBe('"a\\udb40\\udc20b"');
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (text) => {
        // Text with nothing JSON would escape itself, nor anything oneLine makes a space of.
        fc.pre(!/["\\\n]/.test(text) && text === text.trim());
        expect(JSON.parse(`"${oneLine(text)}"`)).toBe(text);
        expect(JSON.parse(quoteText(text, Number.POSITIVE_INFINITY))).toBe(text);
      }),
    );
  });

  it('escapes a lone surrogate (half of a pair, as a JSON file may hold one) as JSON.stringify does: written raw it came out as U+FFFD, the text lost', () => {
    expect(oneLine('unknown VM a\ud800b')).toBe('unknown VM a\\ud800b');
    expect(oneLine('x\udc00')).toBe('x\\udc00');
    // A pair whole stays as it is.
    expect(oneLine('x\u{1f600}y')).toBe('x\u{1f600}y');
    fc.assert(
      fc.property(fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((unit) => String.fromCharCode(unit)) }), (text) => {
        fc.pre(!/["\\\n]/.test(text) && text === text.trim());
        const line = oneLine(text);
        // What UTF-8 holds as it is (stderr's bytes read back), and reads back as JSON.
        expect(Buffer.from(line, 'utf8').toString('utf8')).toBe(line);
        expect(JSON.parse(`"${line}"`)).toBe(text);
      }),
    );
  });
});
