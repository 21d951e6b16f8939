// A path that does not exist because it is, or goes through, a symlink to nothing: no typo, and
// nothing a directory can be made at. Said the same way of the state dir and the config dir.
import { existsSync, lstatSync, readlinkSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** A symlink to nothing, in words: `<path> is a symlink to <target>, which does not exist`. */
export function symlinkToNothing(path: string): string {
  let target = '?';
  try {
    target = readlinkSync(path);
  } catch {
    // Gone or changed meanwhile: the path is said all the same.
  }
  return `${path} is a symlink to ${target}, which does not exist`;
}

/**
 * The nearest symlink to nothing among `path` (which does not exist) and the paths above it up to
 * the first that exists, in words (symlinkToNothing); undefined where there is none, or where a
 * relative path cannot be resolved (the working directory gone).
 */
export function danglingSymlinkOn(path: string): string | undefined {
  let absolute: string;
  try {
    absolute = resolve(path);
  } catch {
    return undefined;
  }
  for (let at = absolute; !existsSync(at); at = dirname(at)) {
    try {
      if (lstatSync(at).isSymbolicLink()) return symlinkToNothing(at);
    } catch {
      // Not there at all: the path above it is looked at.
    }
    if (dirname(at) === at) break;
  }
  return undefined;
}
