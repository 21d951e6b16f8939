// One agent per network namespace: two reconcilers took each other's firewall for tampering
// (each "restored" it at its audit, a pair allowed and then not), and purged conntrack and changed
// links under each other. Only the same control socket or port 67 stopped a second one, not
// --no-dhcp with another socket. A named abstract unix socket is the lock: the kernel keeps one
// name per network namespace (the provider's, whatever mount namespace or folder a run sees) and
// frees it when the process ends, however it ends: nothing stale is left to clean.
import { createServer } from 'node:net';
import { NetdError } from './netd-error.js';

/** The abstract socket's name (shown as @spectrum-netd-agent by `ss -xl`). */
export const AGENT_LOCK_NAME = 'spectrum-netd-agent';

/** Held while the agent runs; close() frees it. */
export interface AgentLock {
  close(): void;
}

/** Take the namespace's agent lock, or fail: NetdError 'already-running' where another agent holds it. */
export function holdAgentLock(name: string = AGENT_LOCK_NAME): Promise<AgentLock> {
  return new Promise((resolve, reject) => {
    // Nobody connects to it; one that does is let go at once.
    const server = createServer((socket) => socket.destroy());
    server.once('error', (error: NodeJS.ErrnoException) => {
      reject(
        error.code === 'EADDRINUSE'
          ? new NetdError('already-running', `another spectrum-netd run is running in this network namespace (it holds @${name}): one agent per provider; stop it first`)
          : new NetdError('control-socket', `cannot take the agent's lock, the abstract socket @${name}: ${error.message}`),
      );
    });
    server.listen(`\0${name}`, () => {
      // The agent's own loop keeps the process alive, not its lock.
      server.unref();
      resolve({ close: () => void server.close() });
    });
  });
}
