// The commands a line tells the operator to run: whole, each word as bash reads it back, relative
// paths made absolute (or run from the run's directory), so that they work as printed from anywhere.
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type GivenOptions, NO_OPTIONS, linkCommand, shellWord, socketFromAnywhere, unlinkCommand } from '../../host/printed-command.js';

/** What a terminal acts on: C0 and C1 controls, DEL, format characters; and the line and paragraph separators, which some viewers break a line at. */
const TERMINAL_ACTIVE = /[\p{Cc}\p{Cf}\u2028\u2029]/u;

/**
 * A character of a word to quote: often one a shell or a terminal acts on (quotes, backslash, `$`,
 * `!`, globs, blanks, a line break, ESC, DEL, C1, bidi and zero-width), else any ASCII or any
 * code point; never NUL, which no argument holds. (Code points drawn alone from the whole range
 * are almost never ASCII: such a word would hardly ever hold what the quoting is for.)
 */
const WORD_CHAR = fc.oneof(
  fc.constantFrom(..."'\"\\$!`*?[]{}()<>|&;#~=%^ \t\n-", '\u001b', '\u007f', '\u0085', '\u009b', '\u00a0', '\u200b', '\u202e', '\u2028', '\u2029', 'é', '\u{1f600}'),
  fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 1 }),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
).filter((char) => char !== '\0');

/**
 * The words of a printed command as bash runs it (`spectrum-link` a function that prints them),
 * and the directory it runs in; from `from`.
 */
function runByBash(line: string, from = '/'): { cwd: string; words: string[] } {
  const script = `spectrum-link() { printf '%s\\0' "$PWD" "$@"; }; cd ${shellWord(from)} && ${line}`;
  const [cwd = '', ...words] = execFileSync('bash', ['-c', script], { encoding: 'utf8' }).split('\0').slice(0, -1);
  return { cwd, words };
}

describe('shellWord', () => {
  it('bash reads any word back as it was (but NUL, which no argument holds), and the word printed holds nothing a terminal acts on, nor a line break', () => {
    const word = fc.string({ unit: WORD_CHAR, maxLength: 24 });
    fc.assert(
      fc.property(word, (text) => {
        const quoted = shellWord(text);
        expect(quoted).not.toMatch(TERMINAL_ACTIVE);
        expect(execFileSync('bash', ['-c', `printf %s ${quoted}`], { encoding: 'utf8' })).toBe(text);
      }),
      { numRuns: 150 },
    );
  });

  it('leaves a word as it is where the shell does nothing with it; single-quotes one it would split or expand; $-quotes one with control or format characters', () => {
    expect(shellWord('/run/vm/appvm-lynx/qmp.sock')).toBe('/run/vm/appvm-lynx/qmp.sock');
    expect(shellWord('/run/vm/{vm}/qmp.sock')).toBe("'/run/vm/{vm}/qmp.sock'");
    expect(shellWord("it's")).toBe("'it'\\''s'");
    expect(shellWord('')).toBe("''");
    expect(shellWord("/run/a\u001b]0;x\u0007'\\\u202e")).toBe("$'/run/a\\x1b]0;x\\x07\\'\\\\\\xe2\\x80\\xae'");
    expect(shellWord('/run/a\u2028b\u2029')).toBe("$'/run/a\\xe2\\x80\\xa8b\\xe2\\x80\\xa9'");
  });
});

describe('the commands printed', () => {
  /** A run given paths relative to its working directory, and options with their values. */
  const relative: GivenOptions = {
    cwd: '/srv/spectrum',
    configDir: 'config',
    stateDir: './state',
    devicePrefix: 'tp',
    netnsPrefix: '',
    mtu: '9000',
    attach: ['qemu', 'netvm=netns'],
    qmpSocket: 'q/{vm}.qmp',
    chSocket: '/run/ch/{vm}',
    vmmTimeout: '20000',
    qemuBus: 'rp0',
    lockWait: '0',
  };

  it('a run given no options: the command alone', () => {
    expect(unlinkCommand('appvm-lynx', ['--force'], NO_OPTIONS)).toBe('spectrum-link unlink appvm-lynx --force');
    expect(linkCommand(['appvm-lynx', 'appvm-catgirl'], NO_OPTIONS)).toBe('spectrum-link link appvm-lynx appvm-catgirl');
  });

  it('unlink: the options of the run an unlink takes, relative paths made absolute ({vm} kept); only the --attach values passed; a socket in place of a template where passed', () => {
    expect(unlinkCommand('appvm-lynx', ['--force'], relative)).toBe(
      "spectrum-link unlink appvm-lynx --force --state-dir /srv/spectrum/./state --device-prefix tp --qmp-socket '/srv/spectrum/q/{vm}.qmp' --ch-socket '/run/ch/{vm}' --vmm-timeout 20000 --lock-wait 0",
    );
    expect(unlinkCommand('appvm-lynx', [], relative, ['netvm=qemu'], { chSocket: '/run/old/netvm.ch' })).toBe(
      "spectrum-link unlink appvm-lynx --state-dir /srv/spectrum/./state --device-prefix tp --attach netvm=qemu --qmp-socket '/srv/spectrum/q/{vm}.qmp' --ch-socket /run/old/netvm.ch --vmm-timeout 20000 --lock-wait 0",
    );
  });

  it("link: every option of the run a link takes, the VM=MODE values added after its own --attach (one there already not said twice), an empty --netns-prefix kept", () => {
    expect(linkCommand(['--all', '--keep-going'], relative, ['appvm-lynx=qemu', 'netvm=netns'])).toBe(
      "spectrum-link link --all --keep-going --config-dir /srv/spectrum/config --state-dir /srv/spectrum/./state --device-prefix tp --netns-prefix '' --mtu 9000 " +
        "--attach qemu --attach netvm=netns --attach appvm-lynx=qemu --qmp-socket '/srv/spectrum/q/{vm}.qmp' --ch-socket '/run/ch/{vm}' --vmm-timeout 20000 --qemu-bus rp0 --lock-wait 0",
    );
  });

  it('a relative template too long made absolute for some VM (the longest name): every path as given, run from the run\'s directory; bash runs it there, from anywhere', async () => {
    const base = await mkdtemp(join(tmpdir(), 'sn-printed-'));
    try {
      // A directory whose name the shell would split and expand, the line one all the same.
      const cwd = join(base, `d'i r $HOME!\n${'d'.repeat(34)}`);
      await mkdir(cwd);
      const given: GivenOptions = { cwd, stateDir: 'state', attach: [], qmpSocket: 'q/{vm}.qmp' };
      const line = unlinkCommand('appvm-lynx', ['--force'], given);
      expect(line).not.toMatch(TERMINAL_ACTIVE);
      expect(line).toBe(`cd ${shellWord(cwd)} && spectrum-link unlink appvm-lynx --force --state-dir state --qmp-socket 'q/{vm}.qmp'`);
      expect(runByBash(line)).toEqual({ cwd, words: ['unlink', 'appvm-lynx', '--force', '--state-dir', 'state', '--qmp-socket', 'q/{vm}.qmp'] });
      // Short enough for every VM (a run from /): absolute, the command runs where it is typed.
      const short = unlinkCommand('appvm-lynx', ['--force'], { ...given, cwd: '/' });
      expect(runByBash(short, cwd)).toEqual({ cwd, words: ['unlink', 'appvm-lynx', '--force', '--state-dir', '/state', '--qmp-socket', '/q/{vm}.qmp'] });
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });

  it('bash runs a command printed with the values given, whatever they hold (spaces, quotes, control characters), each an argument of its own', () => {
    const value = fc.string({ unit: WORD_CHAR, minLength: 1, maxLength: 12 });
    fc.assert(
      fc.property(value, value, (stateDir, prefix) => {
        const given: GivenOptions = { cwd: '/', stateDir: `/${stateDir}`, devicePrefix: prefix, attach: [], qmpSocket: `/q/${stateDir}/{vm}` };
        const line = linkCommand(['appvm-lynx'], given, ['netvm=qemu']);
        expect(line).not.toMatch(TERMINAL_ACTIVE);
        expect(runByBash(line).words).toEqual(['link', 'appvm-lynx', '--state-dir', `/${stateDir}`, '--device-prefix', prefix, '--attach', 'netvm=qemu', '--qmp-socket', `/q/${stateDir}/{vm}`]);
      }),
      { numRuns: 60 },
    );
  });

  it('a socket for a command run from anywhere: absolute as it is; relative, joined to the run\'s directory, or, too long so, as given with that directory', () => {
    expect(socketFromAnywhere('/run/a.sock', '/srv')).toEqual({ path: '/run/a.sock' });
    expect(socketFromAnywhere('a/../b.sock', '/srv')).toEqual({ path: '/srv/a/../b.sock' });
    expect(socketFromAnywhere('a.sock', '/')).toEqual({ path: '/a.sock' });
    const deep = `/${'d'.repeat(104)}`;
    expect(socketFromAnywhere('a.sock', deep)).toEqual({ path: 'a.sock', from: deep });
  });
});
