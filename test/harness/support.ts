import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { runPrefix } from './names.js';
import { NETNS_RUN_DIR, removeNamespaceSync, trackNamespace, untrackNamespace } from './process-registry.js';

export type NetnsSupport = { readonly ok: true } | { readonly ok: false; readonly reason: string };

let cached: NetnsSupport | undefined;

function commandWorks(argv: readonly [string, ...string[]]): boolean {
  try {
    execFileSync(argv[0], argv.slice(1), { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function errorText(error: unknown): string {
  const stderr = (error as { stderr?: unknown }).stderr;
  return typeof stderr === 'string' && stderr.trim() !== '' ? stderr.trim() : String(error);
}

function probe(): NetnsSupport {
  if (process.platform !== 'linux') return { ok: false, reason: `network namespaces need Linux, not ${process.platform}` };
  const uid = process.getuid?.();
  if (uid !== 0) return { ok: false, reason: `not running as root (uid ${String(uid)})` };
  let prefix: string;
  try {
    prefix = runPrefix();
  } catch (error) {
    return { ok: false, reason: String(error) };
  }
  for (const tool of [['ip', '-V'], ['unshare', '--version'], ['nsenter', '--version']] as const) {
    if (!commandWorks(tool)) return { ok: false, reason: `\`${tool[0]}\` is missing or broken (install iproute2 / util-linux)` };
  }
  // A throw-away namespace proves both `ip netns add` and `ip netns exec` (mounts) are allowed.
  const probeName = `${prefix}probe-${process.pid}`;
  trackNamespace(probeName);
  try {
    execFileSync('ip', ['netns', 'add', probeName], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    execFileSync('ip', ['netns', 'exec', probeName, 'true'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    return { ok: false, reason: `cannot create and enter a network namespace: ${errorText(error)}` };
  } finally {
    try {
      removeNamespaceSync(probeName);
      untrackNamespace(probeName);
    } catch {
      // Left tracked: the exit handler tries again.
    }
  }
  if (existsSync(`${NETNS_RUN_DIR}/${probeName}`)) return { ok: false, reason: `could not delete probe namespace ${probeName}` };
  return { ok: true };
}

/** Whether this process can run namespace tests; probed once per process. */
export function netnsSupport(): NetnsSupport {
  cached ??= probe();
  return cached;
}
