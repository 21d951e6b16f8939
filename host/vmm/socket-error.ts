/**
 * Why connecting to a VMM's Unix socket failed, in words that say what to check. `missing` is
 * the hint for a path where no socket exists (which VMM option creates it).
 */
export function unixSocketProblem(error: NodeJS.ErrnoException, missing: string): string {
  switch (error.code) {
    case 'ENOENT':
      return `no such socket: ${missing}`;
    case 'ECONNREFUSED':
      return 'connection refused: nothing listens there; the VMM may have exited and left the socket file behind';
    case 'EACCES':
      return 'permission denied: run as a user that may open the socket';
    case 'ENOTSOCK':
      return 'not a socket: check the path';
    default:
      return error.message;
  }
}
