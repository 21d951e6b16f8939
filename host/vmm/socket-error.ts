import { statSync } from 'node:fs';

/** What is at a path that is no socket, in words; undefined for a socket, nothing, or an unreadable path. */
function notASocket(path: string): string | undefined {
  try {
    const info = statSync(path); // connect(2) follows symlinks too
    if (info.isSocket()) return undefined;
    if (info.isFile()) return 'a regular file';
    if (info.isDirectory()) return 'a directory';
    return 'a special file';
  } catch {
    return undefined;
  }
}

/**
 * Why connecting to a VMM's Unix socket at `path` failed, in words that say what to check.
 * `missing` is the hint for a path where no socket exists (which VMM option creates it).
 */
export function unixSocketProblem(error: NodeJS.ErrnoException, path: string, missing: string): string {
  switch (error.code) {
    case 'ENOENT':
      return `no such socket: ${missing}`;
    case 'ECONNREFUSED': {
      // Linux refuses a connection to any file that is not a socket with ECONNREFUSED too.
      const other = notASocket(path);
      if (other !== undefined) return `not a socket but ${other}: check the path`;
      return 'connection refused: nothing listens there; the VMM may have exited and left the socket file behind';
    }
    case 'EACCES':
      return 'permission denied: run as a user that may open the socket';
    case 'ENOTSOCK':
      return 'not a socket: check the path';
    default:
      return error.message;
  }
}
