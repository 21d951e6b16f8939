// A path that does not exist because it is, or goes through, a symlink to nothing or round a loop
// of symlinks: no typo, and nothing a directory can be made at. Said the same way of the state
// dir, the config dir and a VM directory's entry in it.
import { existsSync, lstatSync, readlinkSync, statSync } from 'node:fs';
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

/** `path` made absolute, or undefined where a relative one cannot be (the working directory gone). */
function absoluteOf(path: string): string | undefined {
  try {
    return resolve(path);
  } catch {
    return undefined;
  }
}

/**
 * The nearest symlink to nothing among `path` (which does not exist) and the paths above it up to
 * the first that exists, in words (symlinkToNothing); undefined where there is none, or where a
 * relative path cannot be resolved (the working directory gone).
 */
export function danglingSymlinkOn(path: string): string | undefined {
  const absolute = absoluteOf(path);
  if (absolute === undefined) return undefined;
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

/** Whether following path meets a loop of symlinks (stat says ELOOP: too many levels of them). */
function loops(path: string): boolean {
  try {
    statSync(path);
    return false;
  } catch (error) {
    return error instanceof Error && 'code' in error && error.code === 'ELOOP';
  }
}

/**
 * Where path (or a path above it) is a symlink that leads round a loop of symlinks, that symlink
 * in words (`<symlink> is a symlink to <target>, which loops ...`), else undefined. Such a path
 * does not exist either, but it is no symlink to nothing: said as what it is.
 */
export function symlinkLoopOn(path: string): string | undefined {
  let at = absoluteOf(path);
  if (at === undefined || !loops(at)) return undefined;
  // The one nearest the root: the paths above it resolve, so it is itself the symlink that loops.
  while (dirname(at) !== at && loops(dirname(at))) at = dirname(at);
  let target = '?';
  try {
    target = readlinkSync(at);
  } catch {
    // Changed meanwhile: the path is said all the same.
  }
  return `${at} is a symlink to ${target}, which loops (ELOOP: too many levels of symbolic links)`;
}
