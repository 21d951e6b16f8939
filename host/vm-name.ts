// VM names: the names of the directories under the config dir (creating-vms.adoc "Configuration").
// They end up in paths (<config>/<vm>/..., /run/vm/<vm>/vmm) and in the state file, never in
// device names (see device-names.ts), so the rules are about paths and logs.

import { characterCount, quoteName, shownPath } from '../shared/shown-text.js';

/** Every way a VM name can be wrong. */
export type VmNameErrorKind = 'empty' | 'too-long' | 'bad-character' | 'bad-first-character' | 'dot-dot';

export class VmNameError extends Error {
  override readonly name = 'VmNameError';
  constructor(
    readonly kind: VmNameErrorKind,
    message: string,
  ) {
    super(message);
  }
}

/** A checked VM name: safe as one path component and as a log word. */
export type VmName = string & { readonly __brand: 'VmName' };

/**
 * Longest VM name, in characters (all allowed characters are ASCII, so also bytes). Keeps
 * /run/vm/<vm>/vmm well under the 108-byte limit of a Unix socket path.
 */
export const VM_NAME_MAX = 64;

const ALLOWED = /^[A-Za-z0-9._-]$/;
const FIRST = /^[A-Za-z0-9]$/;
/** What Node makes of bytes that are no UTF-8, in argv and in file names read as strings. */
const REPLACEMENT = '\uFFFD';

// Untrusted text in messages: shared with the guest (shared/shown-text.ts), re-exported for host code.
export { quoteName, quoteText, shownPath, shownSocket, shownText } from '../shared/shown-text.js';

/** A path to a directory entry for a message, its name shown as shownPath shows it (under `/`, one slash). */
export function entryPath(dir: string, name: string): string {
  return `${dir === '/' ? '' : dir}/${shownPath(name)}`;
}

/** Why a string is not a VM name, or undefined when it is one. */
export function vmNameProblem(text: string): VmNameError | undefined {
  const rules = `VM names are 1 to ${VM_NAME_MAX} characters: letters, digits, '.', '_' and '-', starting with a letter or digit`;
  if (text.length === 0) return new VmNameError('empty', `no VM name given: ${rules}`);
  // In characters (code points), as quoteName cuts it: 40 emoji are 40 characters, not 80 (UTF-16
  // units). The bound in bytes holds all the same: every allowed character is ASCII (below).
  const length = characterCount(text);
  if (length > VM_NAME_MAX) {
    return new VmNameError('too-long', `VM name ${quoteName(text)} is ${length} characters long: ${rules}`);
  }
  for (const char of text) {
    // Bytes that are no UTF-8 (in an argument, a file name) reach us as U+FFFD, which a message
    // quoting it would show as a bare "�": say what it stands for.
    if (char === REPLACEMENT) {
      return new VmNameError(
        'bad-character',
        `VM name ${quoteName(text)} is not valid UTF-8 (a "${REPLACEMENT}", U+FFFD, stands for bytes that are not): ${rules}`,
      );
    }
    if (!ALLOWED.test(char)) {
      return new VmNameError(
        'bad-character',
        `VM name ${quoteName(text)} contains ${quoteName(char)}: ${rules}`,
      );
    }
  }
  if (!FIRST.test(text.charAt(0))) {
    return new VmNameError('bad-first-character', `VM name ${quoteName(text)} starts with ${quoteName(text.charAt(0))}: ${rules}`);
  }
  if (text.includes('..')) {
    return new VmNameError('dot-dot', `VM name ${quoteName(text)} contains "..": ${rules}, without ".."`);
  }
  return undefined;
}

// The rules of vmNameProblem in one expression, for the hot path (a state file of a thousand
// links holds two thousand names); vmNameProblem stays the one that explains.
const VM_NAME = new RegExp(`^(?!.*\\.\\.)[A-Za-z0-9][A-Za-z0-9._-]{0,${VM_NAME_MAX - 1}}$`);

export function isVmName(text: string): text is VmName {
  return VM_NAME.test(text);
}

/** Accept a string as a VM name, or explain why it is not one. */
export function vmName(text: string): VmName {
  const problem = vmNameProblem(text);
  if (problem !== undefined) throw problem;
  return text as VmName;
}
