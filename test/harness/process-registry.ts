/**
 * Process-wide record of what the harness created, so it can be removed synchronously when the
 * process exits or is signalled, even if no test reached its cleanup(). Only namespaces and
 * process groups the harness itself made, and temporary directories its users made, are ever
 * recorded here.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { HarnessError, assertOwnedNamespace, checkRunPrefix, runPrefix } from './names.js';

export const NETNS_RUN_DIR = '/run/netns';
export const NETNS_ETC_DIR = '/etc/netns';

const liveNamespaces = new Set<string>();
const liveProcessGroups = new Set<number>();
const liveTempDirs = new Set<string>();
const liveNamespacePrefixes = new Set<string>();
/** The run's prefix where this process sweeps it on exit or signal (sweepRunOnExit): the global setup's. */
let sweptRunPrefix: string | undefined;
/** The dir useOwnTempDir made, so that a second call in this process keeps it. */
let ownTempDir: string | undefined;
const EXIT_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
let handlersInstalled = false;
/** What reportSignalCleanup registered. */
let signalCleanupReport: ((signal: NodeJS.Signals, failures: readonly string[]) => void) | undefined;

/**
 * Have `report` called once the cleanup at a signal is done, just before the process dies by the
 * signal, with what the cleanup failed to remove (its lines as printed, none if it removed
 * everything): the demo says there that its tear-down finished, or failed. Not called where
 * another listener of the signal owns the decision (the process does not die by it).
 */
export function reportSignalCleanup(report: (signal: NodeJS.Signals, failures: readonly string[]) => void): void {
  installExitHandlers();
  signalCleanupReport = report;
}

export function trackNamespace(name: string): void {
  installExitHandlers();
  liveNamespaces.add(name);
}

export function untrackNamespace(name: string): void {
  liveNamespaces.delete(name);
}

export function trackProcessGroup(pgid: number): void {
  installExitHandlers();
  liveProcessGroups.add(pgid);
}

export function untrackProcessGroup(pgid: number): void {
  liveProcessGroups.delete(pgid);
}

/**
 * Namespaces that something other than the harness makes (spectrum-link's netns attach) under a
 * prefix of this run's own, removed on exit or signal with the rest: one made before the harness
 * adopts it (its maker stopped by the signal part way) would be left otherwise.
 */
export function trackNamespacePrefix(prefix: string): void {
  assertOwnedNamespace(prefix);
  installExitHandlers();
  liveNamespacePrefixes.add(prefix);
}

/**
 * Every namespace and /etc/netns folder of this run (`prefix`, the run's own), removed on exit
 * or signal with the rest (sweepRunPrefixSync): the global setup's last resort. At a signal the
 * handler here raises it again once done, and the process dies by it before vitest's own exit
 * handlers run: a sweep left to those was skipped, and a stopped run left the namespaces of a
 * worker killed before its cleanup. Returns the sweep to run at the end (the global teardown's):
 * it returns the namespaces it found, and once it is done there is no sweep on exit (it would
 * find nothing: the run is over).
 */
export function sweepRunOnExit(prefix: string): () => string[] {
  if (checkRunPrefix(prefix) !== runPrefix()) throw new HarnessError(`sweepRunOnExit: ${prefix} is not this run's prefix ${runPrefix()}`);
  installExitHandlers();
  sweptRunPrefix = prefix;
  return () => {
    const leaked = sweepRunPrefixSync(prefix);
    sweptRunPrefix = undefined;
    return leaked;
  };
}

/**
 * A directory a test or benchmark made directly under the system temp dir (mkdtemp), removed
 * on exit or signal if it is still there. Nothing elsewhere is accepted.
 */
export function trackTempDir(path: string): void {
  if (dirname(resolve(path)) !== resolve(tmpdir())) throw new HarnessError(`trackTempDir: ${path} is not directly under ${tmpdir()}`);
  installExitHandlers();
  liveTempDirs.add(resolve(path));
}

/** Signal a process group we spawned; a group that is already gone is not an error. */
export function signalProcessGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw error;
  }
}

/**
 * Whether the file at `path` is this process's own network namespace (the host's, with every
 * process in it): a name of the run's can lead there (a symlink to /proc/PID/ns/net whose PID was
 * reused since, a bind mount of it), and nothing in it is the run's to kill.
 */
function isOwnNamespace(path: string): boolean {
  let own;
  try {
    own = statSync('/proc/self/ns/net');
  } catch {
    // Not known: any name might lead here, so taken as this one (nothing killed), as scripts/run-tests does.
    return true;
  }
  try {
    const named = statSync(path);
    return named.dev === own.dev && named.ino === own.ino;
  } catch {
    return false;
  }
}

/** PIDs of processes inside an (owned) namespace; none if it is gone or half-created. */
function pidsInNamespace(name: string): number[] {
  let listing = '';
  try {
    listing = execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return [];
  }
  return listing
    .split('\n')
    .map((line) => Number(line.trim()))
    .filter((pid) => Number.isInteger(pid) && pid > 0);
}

/**
 * Point this process's temp dir (os.tmpdir(), from $TMPDIR, inherited by what it spawns: vitest's
 * workers) at a new directory of its own under the current one, removed on exit or signal with
 * the rest. The test run's global setup calls it, so a temp dir a test makes and removes only in
 * its own cleanup is not left in /tmp when the run is stopped (a CI run ended by SIGTERM). Sticky
 * and open to all, as /tmp is: tests run commands as other users. Called again, the same dir.
 */
export function useOwnTempDir(): string {
  if (ownTempDir !== undefined && ownTempDir === process.env['TMPDIR'] && liveTempDirs.has(ownTempDir)) return ownTempDir;
  const dir = mkdtempSync(join(tmpdir(), 'spectrum-test-'));
  trackTempDir(dir);
  chmodSync(dir, 0o1777);
  process.env['TMPDIR'] = dir;
  ownTempDir = dir;
  return dir;
}

/**
 * Delete a namespace (and so its devices) and its /etc/netns folder; missing ones are fine.
 * Processes still inside are SIGKILLed by PID first: the namespace carries this run's prefix,
 * so they are this run's, and left alive they would keep the namespace and its devices; not
 * where the name leads to this process's own namespace (isOwnNamespace).
 */
export function removeNamespaceSync(name: string): void {
  assertOwnedNamespace(name);
  if (existsSync(`${NETNS_RUN_DIR}/${name}`)) {
    for (const pid of isOwnNamespace(`${NETNS_RUN_DIR}/${name}`) ? [] : pidsInNamespace(name)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    execFileSync('ip', ['netns', 'delete', name], { stdio: ['ignore', 'ignore', 'pipe'] });
  }
  rmSync(`${NETNS_ETC_DIR}/${name}`, { recursive: true, force: true });
}

function cleanupSync(): string[] {
  const failures: string[] = [];
  const failed = (line: string): void => {
    failures.push(line);
    process.stderr.write(`test harness: ${line}\n`);
  };
  for (const pgid of liveProcessGroups) signalProcessGroup(pgid, 'SIGKILL');
  liveProcessGroups.clear();
  for (const name of liveNamespaces) {
    try {
      removeNamespaceSync(name);
    } catch (error) {
      // Keep going: one stuck namespace must not leave the others behind.
      failed(`could not delete namespace ${name}: ${String(error)}`);
    }
  }
  liveNamespaces.clear();
  if (liveNamespacePrefixes.size > 0) {
    let names: string[] = [];
    try {
      names = namespaceNames();
    } catch (error) {
      failed(`could not list the namespaces under ${[...liveNamespacePrefixes].join(', ')}: ${String(error)}`);
    }
    for (const name of names.filter((candidate) => [...liveNamespacePrefixes].some((prefix) => candidate.startsWith(prefix)))) {
      try {
        removeNamespaceSync(name);
      } catch (error) {
        failed(`could not delete namespace ${name}: ${String(error)}`);
      }
    }
    liveNamespacePrefixes.clear();
  }
  if (sweptRunPrefix !== undefined) {
    try {
      sweepRunPrefixSync(sweptRunPrefix);
    } catch (error) {
      failed(`could not sweep the namespaces of run ${sweptRunPrefix}: ${String(error)}`);
    }
    sweptRunPrefix = undefined;
  }
  for (const dir of liveTempDirs) rmSync(dir, { recursive: true, force: true });
  liveTempDirs.clear();
  return failures;
}

function onExitSignal(signal: NodeJS.Signals): void {
  const failures = cleanupSync();
  for (const exitSignal of EXIT_SIGNALS) process.off(exitSignal, onExitSignal);
  // Our listener suppressed the default action; re-raise so the process still dies by the
  // signal, unless someone else also listens and so owns the decision.
  if (process.listenerCount(signal) === 0) {
    signalCleanupReport?.(signal, failures);
    process.kill(process.pid, signal);
  }
}

function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', cleanupSync);
  for (const signal of EXIT_SIGNALS) process.on(signal, onExitSignal);
}

function namespaceNames(): string[] {
  // Its stderr kept (in the error, where it fails): `ip netns list` says "Peer netns reference is
  // invalid" of a namespace another process is deleting meanwhile, which the demo and a run's end
  // would otherwise print.
  const listing = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  // Lines look like "name" or "name (id: 3)".
  return listing
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0] ?? '')
    .filter((name) => name !== '');
}

/**
 * Remove every namespace and /etc/netns folder carrying `prefix`, killing the processes still
 * inside those namespaces. Returns the namespaces it found.
 */
export function sweepRunPrefixSync(prefix: string): string[] {
  const leaked = namespaceNames().filter((name) => name.startsWith(prefix));
  for (const name of leaked) removeNamespaceSync(name);
  if (existsSync(NETNS_ETC_DIR)) {
    for (const entry of readdirSync(NETNS_ETC_DIR)) {
      if (entry.startsWith(prefix)) rmSync(`${NETNS_ETC_DIR}/${entry}`, { recursive: true, force: true });
    }
  }
  return leaked;
}
