/**
 * Untrusted text (a peer's answer, a file name, a name from a config dir) made safe for a one-line
 * message: bounded, and nothing in it a terminal would act on. Used by both sides.
 */
/** How much of a name a message shows. */
const SHOWN_MAX = 70;

// JSON.stringify escapes only C0 controls: DEL, C1 controls (0x9B is CSI on some terminals),
// format characters (bidirectional overrides) and the line and paragraph separators (U+2028,
// U+2029: a new line to some log viewers and editors) would reach the terminal as they are.
const UNESCAPED_CONTROL = /[\u007f-\u009f\p{Cf}\u2028\u2029]/gu;

/**
 * How many characters `text` has, as the messages count them and `bounded` cuts them: code points,
 * so that one beyond the BMP (an emoji, two UTF-16 units) counts once.
 */
export function characterCount(text: string): number {
  let count = 0;
  for (const _ of text) count += 1;
  return count;
}

/**
 * At most `max` characters of `text`, `…` after where it is cut. Characters are code points: one
 * beyond the BMP (an emoji, two UTF-16 units) is not cut in two, which JSON would show as a lone
 * surrogate's escape (`\ud83d`), nor counted twice.
 */
function bounded(text: string, max: number): string {
  if (text.length <= max) return text;
  let shown = 0;
  let end = 0;
  for (const char of text) {
    if (shown === max) return `${text.slice(0, end)}…`;
    shown += 1;
    end += char.length;
  }
  return text;
}

/**
 * `char` (one character: a code point) as JSON escapes it: each UTF-16 unit as `\uXXXX`, one
 * beyond the BMP as its surrogate pair, so that the text reads back as JSON (`\u{...}` is no
 * JSON escape). Shared by quoteText and run-cli's oneLine, so that both write the same.
 */
export function jsonEscaped(char: string): string {
  return char
    .split('')
    .map((unit) => `\\u${unit.charCodeAt(0).toString(16).padStart(4, '0')}`)
    .join('');
}

/** Quote untrusted text for a message: at most `max` characters of it, control and format characters and line separators escaped. */
export function quoteText(text: string, max: number): string {
  // A format character beyond the BMP as its surrogate pair: the quoted text reads back as JSON.
  return JSON.stringify(bounded(text, max)).replace(UNESCAPED_CONTROL, jsonEscaped);
}

/** Quote an untrusted name for a message: bounded, control and format characters escaped. */
export function quoteName(text: string): string {
  return quoteText(text, SHOWN_MAX);
}

/**
 * What a terminal could act on: C0 and C1 controls, DEL, and format characters (bidi overrides);
 * and what breaks a line: the line and paragraph separators (U+2028, U+2029) too.
 */
export const TERMINAL_ACTIVE = /[\p{Cc}\p{Cf}\u2028\u2029]/u;

/**
 * Text read from the file system (a file name, a symlink's target) for a message: as it is, or
 * quoted like a name where it holds control or format characters (it must not rewrite the
 * user's terminal).
 */
export function shownPath(path: string): string {
  return TERMINAL_ACTIVE.test(path) ? quoteName(path) : path;
}

/**
 * Text from an untrusted peer (a VMM's error description, a MAC it reports) for a message: as it
 * is where it is at most `max` characters and holds nothing a terminal acts on, else quoted.
 */
export function shownText(text: string, max: number): string {
  // In characters (code points), as quoteText cuts: 40 emoji are 40, not 80 (UTF-16 units).
  return characterCount(text) <= max && !TERMINAL_ACTIVE.test(text) ? text : quoteText(text, max);
}

/** A blank of any kind: spaces (Unicode's too, U+00A0, U+3000...), tabs, line ends. */
const BLANK = /[\s\p{Zs}]/u;

/**
 * Untrusted text (a DHCP client's hostname) for a cell of a table whose columns are parted by
 * blanks: as it is where it reads as one cell, else quoted (quoteText, at most `max` characters);
 * `-`, the table's "none", where it is empty. Quoted: one with a blank (as it is, it would read
 * as more cells, faking columns), one with anything a terminal acts on, one longer than `max`,
 * one that begins with '"' (it would read as the quoted form of another), and `-` itself (it
 * would read as none).
 */
export function shownCell(text: string, max: number): string {
  if (text === '') return '-';
  const plain = text !== '-' && !text.startsWith('"') && !BLANK.test(text) && !TERMINAL_ACTIVE.test(text) && characterCount(text) <= max;
  return plain ? text : quoteText(text, max);
}

/**
 * A socket path for a message (an error, list, show, a log line): as it is, or quoted with control
 * and format characters escaped where it holds any (a template given with a newline, a state file
 * edited by hand), whole, never cut short: a message names the very path. (A newline left raw
 * would be made a space on the message's one line, naming another path.) One that begins with '"'
 * is quoted too: as it is, it would read as the quoted form of another (a template given with its
 * quotes kept, '"/run/vm/{vm}/qmp.sock"', as /run/vm/<vm>/qmp.sock).
 */
export function shownSocket(path: string): string {
  return path.startsWith('"') ? quoteText(path, Number.POSITIVE_INFINITY) : shownText(path, Number.POSITIVE_INFINITY);
}
