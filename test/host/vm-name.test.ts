import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { VM_NAME_MAX, VmNameError, entryPath, isVmName, quoteName, shownPath, vmName, vmNameProblem } from '../../host/vm-name.js';

const GOOD_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-'.split('');
const alnum = fc.constantFrom(...GOOD_CHARS.filter((c) => /[A-Za-z0-9]/.test(c)));
const goodName = fc
  .tuple(alnum, fc.array(fc.constantFrom(...GOOD_CHARS), { maxLength: VM_NAME_MAX - 1 }))
  .map(([first, rest]) => first + rest.join(''))
  .filter((name) => !name.includes('..'));

function kindOf(text: string): string | undefined {
  return vmNameProblem(text)?.kind;
}

describe('vmName', () => {
  it('accepts the spec names', () => {
    for (const name of ['netvm', 'appvm-lynx', 'appvm-catgirl', 'user.netvm', 'a', 'vm_2']) expect(vmName(name)).toBe(name);
  });

  it('refuses each kind of bad name with its own kind', () => {
    expect(kindOf('')).toBe('empty');
    expect(kindOf('a'.repeat(VM_NAME_MAX + 1))).toBe('too-long');
    expect(kindOf('a/b')).toBe('bad-character');
    expect(kindOf('a b')).toBe('bad-character');
    expect(kindOf('a\0b')).toBe('bad-character');
    expect(kindOf('a\nb')).toBe('bad-character');
    expect(kindOf('ünïcode')).toBe('bad-character');
    expect(kindOf('.hidden')).toBe('bad-first-character');
    expect(kindOf('-flag')).toBe('bad-first-character');
    expect(kindOf('..')).toBe('bad-first-character');
    expect(kindOf('a..b')).toBe('dot-dot');
    expect(() => vmName('../etc')).toThrow(VmNameError);
  });

  it('says of a name with U+FFFD, as bytes that are no UTF-8 reach it (an argument, a file name), that it is not UTF-8', () => {
    const fromBytes = Buffer.from([0x76, 0x6d, 0xff, 0xfe]).toString('utf8');
    expect(vmNameProblem(fromBytes)).toMatchObject({
      kind: 'bad-character',
      message: expect.stringMatching(/^VM name "vm\uFFFD\uFFFD" is not valid UTF-8 \(a "\uFFFD", U\+FFFD, stands for bytes that are not\): VM names are /),
    });
  });

  it('accepts exactly the names of the grammar', () => {
    fc.assert(fc.property(goodName, (name) => {
      expect(isVmName(name)).toBe(true);
      expect(vmName(name)).toBe(name);
    }));
  });

  it('isVmName agrees with vmNameProblem on any text', () => {
    const near = fc.string({ unit: fc.constantFrom(...GOOD_CHARS, '.', '/', ' ', '\n', 'ü', '\u{1F600}'), maxLength: VM_NAME_MAX + 2 });
    fc.assert(
      fc.property(fc.oneof(near, fc.string({ maxLength: VM_NAME_MAX + 2 }), fc.string({ unit: 'binary' })), (text) => {
        expect(isVmName(text)).toBe(vmNameProblem(text) === undefined);
      }),
      { numRuns: 500 },
    );
  });

  it('refuses any name with a slash, "..", NUL, whitespace or control character', () => {
    const bad = fc.constantFrom('/', '..', '\0', ' ', '\t', '\n', '\x7f', '\\', ':', '*');
    fc.assert(
      fc.property(fc.string({ maxLength: 20 }), bad, fc.string({ maxLength: 20 }), (before, poison, after) => {
        expect(isVmName(before + poison + after)).toBe(false);
      }),
    );
  });

  it('refuses anything too long, and quotes it bounded in the message', () => {
    fc.assert(
      fc.property(goodName, fc.integer({ min: 1, max: 500 }), (name, extra) => {
        const long = name + 'x'.repeat(VM_NAME_MAX + extra);
        const problem = vmNameProblem(long);
        expect(problem?.kind).toBe('too-long');
        expect(problem?.message.length).toBeLessThan(300);
      }),
    );
  });

  it('counts a name in characters (code points), as quoteName cuts it, not in UTF-16 units: 40 emoji are no name for what they are, not for being 80 long', () => {
    const emoji = '\u{1F600}';
    // 40 characters (80 UTF-16 units, 160 bytes): within the bound in characters, refused for the character.
    expect(vmNameProblem(emoji.repeat(40))).toMatchObject({ kind: 'bad-character', message: `VM name "${emoji.repeat(40)}" contains "${emoji}": VM names are 1 to 64 characters: letters, digits, '.', '_' and '-', starting with a letter or digit` });
    // 65 of them are 65 characters long, shown as quoteName cuts them (70 characters, then …).
    expect(vmNameProblem(emoji.repeat(65))?.message).toMatch(new RegExp(`^VM name "${emoji.repeat(65)}" is 65 characters long: `, 'u'));
    expect(vmNameProblem(emoji.repeat(100))?.message).toMatch(new RegExp(`^VM name "${emoji.repeat(70)}…" is 100 characters long: `, 'u'));
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom('a', '\u00e9', emoji, '\u{10FFFF}'), maxLength: 3 * VM_NAME_MAX }), (text) => {
        const characters = [...text].length;
        const problem = vmNameProblem(text);
        if (characters > VM_NAME_MAX) expect(problem?.message).toContain(` is ${characters} characters long: `);
        else expect(problem?.kind).not.toBe('too-long');
        // The bound in bytes (a path component, a socket path under /run/vm) holds all the same: a name is ASCII.
        if (problem === undefined) expect(Buffer.byteLength(text)).toBeLessThanOrEqual(VM_NAME_MAX);
      }),
    );
  });

  it('escapes control characters in messages', () => {
    expect(vmNameProblem('a\u001bb')?.message).toContain('\\u001b');
  });
});

describe('quoteName, entryPath and shownPath', () => {
  // What a terminal could act on: C0 and C1 controls, DEL, and format characters such as bidi overrides.
  const TERMINAL_ACTIVE = /[\p{Cc}\p{Cf}]/u;

  it('leave no control or format character of any text in a message', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 80 }), (text) => {
        expect(quoteName(text)).not.toMatch(TERMINAL_ACTIVE);
        expect(entryPath('/cfg/app/providers/net', text)).not.toMatch(TERMINAL_ACTIVE);
        expect(shownPath(`/tmp/${text}`)).not.toMatch(TERMINAL_ACTIVE);
        expect(vmNameProblem(text)?.message ?? '').not.toMatch(TERMINAL_ACTIVE);
      }),
    );
  });

  it('escape C1 controls and bidi overrides as JSON does C0 ones, and leave plain paths alone', () => {
    expect(quoteName('a\u009b2Jb\u202ec')).toBe('"a\\u009b2Jb\\u202ec"');
    expect(entryPath('/cfg/app/providers/net', 'netvm')).toBe('/cfg/app/providers/net/netvm');
    expect(entryPath('/cfg/app/providers/net', 'x\r\u001b[2K')).toBe('/cfg/app/providers/net/"x\\r\\u001b[2K"');
  });
});
