import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { quoteName, quoteText, shownCell, shownPath, shownSocket, shownText } from '../../shared/shown-text.js';

/** What may not reach a message raw: controls, format characters, line and paragraph separators. */
const LINE_BREAKING_OR_ACTIVE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;

describe('shown text', () => {
  it('escapes the line and paragraph separators (U+2028, U+2029), which some viewers take for a new line, as it does format characters', () => {
    // They were left raw: a name or path holding one broke its log line in such viewers.
    for (const separator of ['\u2028', '\u2029']) {
      const escaped = `\\u${separator.codePointAt(0)?.toString(16)}`;
      expect(quoteText(`a${separator}b`, 70)).toBe(`"a${escaped}b"`);
      expect(quoteName(`vm${separator}x`)).toBe(`"vm${escaped}x"`);
      expect(shownText(`peer${separator}said`, 70)).toBe(`"peer${escaped}said"`);
      expect(shownSocket(`/run/vm/a${separator}b.sock`)).toBe(`"/run/vm/a${escaped}b.sock"`);
      expect(shownPath(`/cfg/${separator}`)).toBe(`"/cfg/${escaped}"`);
    }
  });

  it('cuts a text longer than its bound between characters (code points), never inside one beyond the BMP, and keeps at most that many', () => {
    // An emoji is two UTF-16 units: cut by units, the last one shown was half of one (JSON: "\ud83d").
    const unit = fc.constantFrom('a', '\u{1F600}', '\u00e9', '\n');
    fc.assert(
      fc.property(fc.string({ unit, maxLength: 60 }), fc.integer({ min: 1, max: 40 }), (text, max) => {
        const shown = JSON.parse(quoteText(text, max)) as string;
        const characters = [...text];
        if (characters.length <= max) expect(shown).toBe(text);
        else expect(shown).toBe(`${characters.slice(0, max).join('')}…`);
      }),
    );
  });

  it('leaves no control, format or line-separating character of any text raw, and a quoted text reads back as JSON to the text', () => {
    const unit = fc.oneof(fc.constantFrom('\u2028', '\u2029', '\u202e', '\u0085', '\u001b', '\n', '"', '\\'), fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }));
    fc.assert(
      fc.property(fc.string({ unit, maxLength: 40 }), (text) => {
        for (const shown of [quoteText(text, Number.POSITIVE_INFINITY), quoteName(text), shownText(text, 70), shownSocket(text), shownPath(text)]) {
          expect(shown).not.toMatch(LINE_BREAKING_OR_ACTIVE);
        }
        expect(JSON.parse(quoteText(text, Number.POSITIVE_INFINITY))).toBe(text);
        const socket = shownSocket(text);
        expect(socket === text || JSON.parse(socket) === text).toBe(true);
      }),
    );
  });

  it("shows a table cell as one word: as it is, or quoted reading back to the text; '-' only for an empty one", () => {
    const unit = fc.oneof(fc.constantFrom(' ', '\t', '\u00a0', '\u3000', '-', '"', '\u202e', '\n'), fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }));
    fc.assert(
      fc.property(fc.string({ unit, maxLength: 30 }), (text) => {
        const shown = shownCell(text, 63);
        expect(shown).not.toMatch(LINE_BREAKING_OR_ACTIVE);
        if (text === '') expect(shown).toBe('-');
        else if (shown === text) expect(text).toMatch(/^(?!-$)(?!")[^\s\p{Zs}]+$/u);
        else expect(JSON.parse(shown)).toBe(text);
      }),
    );
    expect(shownCell('evil host  pl1    100.64.0.1  bound', 63)).toBe('"evil host  pl1    100.64.0.1  bound"');
    expect(shownCell('-', 63)).toBe('"-"');
    expect(shownCell('web-1', 63)).toBe('web-1');
    expect(shownCell('x'.repeat(64), 63)).toBe(`"${'x'.repeat(63)}…"`);
  });
});

describe('shownText counts characters', () => {
  it('shows text of at most max characters as it is, emoji counted once (they were counted as two UTF-16 units, and quoted early)', () => {
    const emoji = '\u{1F600}'.repeat(40);
    expect(shownText(emoji, 70)).toBe(emoji);
    expect(shownText('\u{1F600}'.repeat(71), 70)).toMatch(/^"\u{1F600}{70}…"$/u);
  });
});

describe('quoteText beyond the BMP', () => {
  it('escapes a format character beyond the BMP (U+E0020, a tag) as its surrogate pair, so the quoted text reads back as JSON (it was \\u{e0020}, no JSON escape)', () => {
    expect(quoteText('a\u{E0020}b', 70)).toBe('"a\\udb40\\udc20b"');
    expect(JSON.parse(shownCell('\u{E0020}', 63))).toBe('\u{E0020}');
  });
});
