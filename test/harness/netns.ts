/**
 * Network-namespace test harness. Everything that changes network state runs inside a namespace
 * this harness created (`ip -n NS`, `ip netns exec NS`, `nsenter --net=/run/netns/NS`); the root
 * namespace is only ever read. Every namespace name must carry the run prefix
 * (SPECTRUM_TEST_PREFIX, made by test/harness/global-setup.ts); anything else is refused.
 *
 * Entering a namespace — pick the mode by what the process will do:
 * - 'netns-exec' (default): `ip netns exec NS`. Gets a private mount namespace with /sys
 *   remounted for NS and /etc/netns/NS/* bind-mounted over /etc/*, so tools see NS's devices
 *   and its own resolv.conf. But `ip netns add X` run in there makes a broken X (its bind mount
 *   lands in the private mount namespace).
 * - 'nsenter': `nsenter --net=/run/netns/NS`. Keeps the caller's mount namespace, so use it for
 *   processes that create namespaces themselves (e.g. the host linker); /sys and /etc are the
 *   root's view.
 * With `pidns: true` the command runs under `unshare --fork --pid --kill-child --mount-proc`
 * (util-linux 2.38, Debian 12): killing the spawned process takes down everything it forked,
 * daemons included. That adds a private mount namespace, so namespaces created under it are
 * invisible outside: do not combine pidns with a process that must create namespaces.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import {
  HarnessError,
  assertInterfaceName,
  assertOwnedNamespace,
  assertTestCidr,
  runPrefix,
} from './names.js';
import {
  NETNS_ETC_DIR,
  NETNS_RUN_DIR,
  removeNamespaceSync,
  signalProcessGroup,
  trackNamespace,
  trackProcessGroup,
  untrackNamespace,
  untrackProcessGroup,
} from './process-registry.js';
import { eventually } from './eventually.js';
import { groupHasLiveMembers } from './proc.js';

export type EnterMode = 'netns-exec' | 'nsenter';

export interface ExecOptions {
  /** Resolve with the result instead of rejecting when the command fails. */
  readonly allowFailure?: boolean;
  /** Written to the command's stdin, which is then closed. */
  readonly input?: string;
  /** Default 30 s; on expiry the command's process group is killed and the call rejects. */
  readonly timeoutMs?: number;
  readonly enter?: EnterMode;
  readonly env?: NodeJS.ProcessEnv;
}

export interface SpawnOptions {
  /** Run in a fresh PID namespace so killing this process kills all it forked. */
  readonly pidns?: boolean;
  readonly enter?: EnterMode;
  readonly env?: NodeJS.ProcessEnv;
  /** 'pipe' exposes `child.stdin`; default 'ignore'. */
  readonly stdin?: 'ignore' | 'pipe';
}

export interface ProcessExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface ExecResult extends ProcessExit {
  readonly stdout: string;
  readonly stderr: string;
}

const DEFAULT_EXEC_TIMEOUT_MS = 30_000;
const DEFAULT_KILL_GRACE_MS = 3_000;
/** How long SIGKILLed group members may take to stop running. */
const GROUP_EXIT_WAIT_MS = 2_000;
const DEFAULT_RESOLV_CONF = '# spectrum-net test harness: no resolver inside this namespace\n';

/** A command exited non-zero, by a signal, or timed out. Carries the full result. */
export class CommandError extends HarnessError {
  constructor(
    message: string,
    readonly argv: readonly string[],
    readonly result: ExecResult,
  ) {
    super(message);
  }
}

function describeExit(exit: ProcessExit): string {
  return exit.signal !== null ? `killed by ${exit.signal}` : `exit code ${String(exit.code)}`;
}

function delay(ms: number): Promise<'timeout'> {
  return new Promise((resolve) => setTimeout(() => resolve('timeout'), ms).unref());
}

/**
 * A process started by the harness, leader of its own process group (spawned detached), so
 * kill() reaches everything in the group by PID, never by name.
 */
export class NetnsProcess {
  readonly pid: number;
  readonly child: ChildProcess;
  #stdout = '';
  #stderr = '';
  #exit: ProcessExit | undefined;
  /** Set once the group is known empty (or doomed), so a recycled PGID is never signalled. */
  #groupEnded = false;
  readonly #exited: Promise<ProcessExit>;
  readonly #closed: Promise<void>;

  constructor(readonly argv: readonly string[], options: { env?: NodeJS.ProcessEnv; stdin?: 'ignore' | 'pipe' }) {
    const [command, ...args] = argv;
    if (command === undefined) throw new HarnessError('empty command');
    this.child = spawn(command, args, {
      detached: true,
      stdio: [options.stdin ?? 'ignore', 'pipe', 'pipe'],
      env: options.env ?? process.env,
    });
    // Spawn failures arrive as an 'error' event; without a listener it would crash the worker.
    this.child.on('error', () => undefined);
    if (this.child.pid === undefined) {
      throw new HarnessError(`could not start ${command}: not found or not executable`);
    }
    this.pid = this.child.pid;
    trackProcessGroup(this.pid);
    this.child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (this.#stdout += chunk));
    this.child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (this.#stderr += chunk));
    this.#exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.#exit = { code, signal };
        // Members outliving the leader keep the group tracked until kill()/cleanup() ends them.
        this.#signalGroup(0);
        resolve(this.#exit);
      });
    });
    this.#closed = new Promise((resolve) => this.child.once('close', () => resolve()));
  }

  #signalGroup(signal: NodeJS.Signals | 0): void {
    if (this.#groupEnded) return;
    if (!signalProcessGroup(this.pid, signal)) this.#endGroup();
  }

  #endGroup(): void {
    this.#groupEnded = true;
    untrackProcessGroup(this.pid);
  }

  /**
   * SIGKILL whatever is left of the group once the leader is gone, and wait until none of it
   * runs any more: SIGKILL is delivered asynchronously, and callers check right after.
   */
  async reapGroup(): Promise<void> {
    if (this.#exit === undefined) throw new HarnessError('reapGroup() before the leader exited');
    this.#signalGroup('SIGKILL');
    const deadline = Date.now() + GROUP_EXIT_WAIT_MS;
    while (!this.#groupEnded && groupHasLiveMembers(this.pid) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    this.#endGroup();
  }

  /** Everything written to stdout so far. */
  get stdout(): string {
    return this.#stdout;
  }

  get stderr(): string {
    return this.#stderr;
  }

  /** The exit status, once the process has exited. */
  get exit(): ProcessExit | undefined {
    return this.#exit;
  }

  wait(): Promise<ProcessExit> {
    return this.#exited;
  }

  /** Resolves when stdout and stderr are closed (all output read), after exit. */
  async waitClosed(): Promise<void> {
    await this.#closed;
  }

  /** Wait until stdout matches `pattern`; rejects on timeout or if the process exits first. */
  async waitForOutput(pattern: RegExp, timeoutMs = 10_000): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const match = pattern.exec(this.#stdout);
      if (match !== null) return match;
      if (this.#exit !== undefined) {
        throw new HarnessError(
          `${this.argv.join(' ')} ${describeExit(this.#exit)} before printing ${String(pattern)}; stderr: ${this.#stderr}`,
        );
      }
      if (Date.now() > deadline) {
        throw new HarnessError(`timed out waiting for ${String(pattern)} from ${this.argv.join(' ')}; stdout: ${this.#stdout}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /**
   * Send `signal` to the whole process group; if the leader has not exited after `graceMs`,
   * SIGKILL the group. Any group member left once the leader is gone is SIGKILLed too.
   */
  async kill(signal: NodeJS.Signals = 'SIGTERM', graceMs = DEFAULT_KILL_GRACE_MS): Promise<ProcessExit> {
    this.#signalGroup(signal);
    const first = await Promise.race([this.#exited, delay(graceMs)]);
    if (first === 'timeout') this.#signalGroup('SIGKILL');
    const exit = await this.#exited;
    await this.reapGroup();
    return exit;
  }
}

/** Owner-side bookkeeping a Netns needs; implemented by the harness. */
interface NetnsOwner {
  assertOpen(): void;
  adoptProcess(process: NetnsProcess): void;
}

/** A namespace created (or adopted) by a harness. */
export class Netns {
  readonly #owner: NetnsOwner;

  constructor(
    readonly name: string,
    owner: NetnsOwner,
  ) {
    assertOwnedNamespace(name);
    this.#owner = owner;
  }

  /** Run a command inside the namespace and collect its output. */
  async exec(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    const spawnOptions: SpawnOptions = {
      ...(options.enter !== undefined && { enter: options.enter }),
      ...(options.env !== undefined && { env: options.env }),
      ...(options.input !== undefined && { stdin: 'pipe' as const }),
    };
    const child = this.spawn(argv, spawnOptions);
    return collect(child, `in netns ${this.name}`, options);
  }

  /** Start a long-running command inside the namespace; cleanup() kills it if still running. */
  spawn(argv: readonly string[], options: SpawnOptions = {}): NetnsProcess {
    this.#owner.assertOpen();
    const command = enterNamespaceArgv(this.name, argv, options.enter ?? 'netns-exec', options.pidns ?? false);
    const child = new NetnsProcess(command, {
      ...(options.env !== undefined && { env: options.env }),
      ...(options.stdin !== undefined && { stdin: options.stdin }),
    });
    this.#owner.adoptProcess(child);
    return child;
  }

  /** `ip -n NAME ...args`. Moving devices to a namespace the run does not own is refused. */
  async ip(args: readonly string[], options: Omit<ExecOptions, 'enter' | 'input'> = {}): Promise<ExecResult> {
    this.#owner.assertOpen();
    assertSafeIpArgs(args);
    return runCommand(['ip', '-n', this.name, ...args], `for netns ${this.name}`, options);
  }

  /**
   * Wait until the kernel has handled `dev`'s link-state events (operstate UP); resolves with the
   * milliseconds it took. A veth end gets its carrier the moment its peer comes up, but only the
   * kernel's linkwatch (a worker shared by every namespace, seconds behind on a loaded machine)
   * activates its transmit queue: until then whatever it sends is dropped. Asking for the link
   * by name (a GETLINK) makes Linux 6.7 on handle its queued event at once.
   */
  async linkActive(dev: string, timeoutMs = 30_000): Promise<number> {
    assertInterfaceName(dev);
    return eventually(
      `${dev} in netns ${this.name} to be operationally up (its link-state event handled)`,
      async () => {
        const { stdout } = await this.ip(['-j', 'link', 'show', 'dev', dev]);
        return (JSON.parse(stdout) as { operstate?: string }[])[0]?.operstate === 'UP';
      },
      timeoutMs,
    );
  }

  /** Write /etc/netns/NAME/resolv.conf, which `ip netns exec` bind-mounts over /etc/resolv.conf. */
  setResolvConf(content: string): void {
    this.#owner.assertOpen();
    writeResolvConf(this.name, content);
  }
}

function enterNamespaceArgv(name: string, argv: readonly string[], enter: EnterMode, pidns: boolean): string[] {
  assertOwnedNamespace(name);
  if (argv.length === 0) throw new HarnessError('empty command');
  const inner = pidns ? ['unshare', '--fork', '--pid', '--kill-child', '--mount-proc', '--', ...argv] : [...argv];
  // `ip netns exec NS cmd...` execs cmd directly (no `--`: it would be taken as the command).
  return enter === 'nsenter' ? ['nsenter', `--net=${NETNS_RUN_DIR}/${name}`, '--', ...inner] : ['ip', 'netns', 'exec', name, ...inner];
}

/**
 * `ip netns ...` via `ip -n` would act from inside the namespace's mount view and can create
 * broken namespaces; `netns <target>` moves a device, which must stay among this run's namespaces.
 */
function assertSafeIpArgs(args: readonly string[]): void {
  const first = args[0];
  // ip accepts abbreviations; "net" and longer resolve to the netns object.
  if (first !== undefined && first.length >= 3 && 'netns'.startsWith(first)) {
    throw new HarnessError('`ip netns` subcommands are not allowed through Netns.ip(); use the harness');
  }
  args.forEach((arg, index) => {
    if (arg === 'netns') {
      const target = args[index + 1];
      if (target === undefined) throw new HarnessError('`netns` without a target namespace');
      assertOwnedNamespace(target);
    }
  });
}

async function collect(child: NetnsProcess, where: string, options: ExecOptions): Promise<ExecResult> {
  if (options.input !== undefined) child.child.stdin?.end(options.input);
  const timeoutMs = options.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
  const finished = await Promise.race([child.waitClosed().then(() => child.wait()), delay(timeoutMs)]);
  if (finished === 'timeout') {
    const exit = await child.kill('SIGKILL', 0);
    const result = { ...exit, stdout: child.stdout, stderr: child.stderr };
    throw new CommandError(
      `timed out after ${timeoutMs} ms ${where}: ${child.argv.join(' ')}\nstderr: ${child.stderr.trim()}`,
      child.argv,
      result,
    );
  }
  // The leader is done; nothing it left in its group may outlive the command.
  await child.reapGroup();
  const result: ExecResult = { ...finished, stdout: child.stdout, stderr: child.stderr };
  if ((finished.code !== 0 || finished.signal !== null) && options.allowFailure !== true) {
    throw new CommandError(
      `command failed (${describeExit(finished)}) ${where}: ${child.argv.join(' ')}\nstderr: ${child.stderr.trim()}`,
      child.argv,
      result,
    );
  }
  return result;
}

/** Run a harness-internal command (argv, never a shell) and collect its output. */
function runCommand(argv: readonly string[], where: string, options: ExecOptions = {}): Promise<ExecResult> {
  const child = new NetnsProcess(argv, options.env !== undefined ? { env: options.env } : {});
  return collect(child, where, options);
}

/** Create /etc/netns/NAME/resolv.conf so `ip netns exec` never shows the host's resolver. */
export function writeResolvConf(name: string, content: string = DEFAULT_RESOLV_CONF): void {
  assertOwnedNamespace(name);
  mkdirSync(`${NETNS_ETC_DIR}/${name}`, { recursive: true });
  writeFileSync(`${NETNS_ETC_DIR}/${name}/resolv.conf`, content);
}

export interface Harness {
  /** Run prefix plus this harness's own sub-prefix; all its namespace names start with it. */
  readonly prefix: string;
  /** Create namespace `<prefix><name>` with lo up and its own resolv.conf. */
  namespace(name: string): Promise<Netns>;
  /** Take charge of a namespace created by code under test (must carry the run prefix). */
  adopt(fullName: string): Netns;
  /** Create a veth pair directly inside the two namespaces (never via the root namespace). */
  veth(a: Netns, aName: string, b: Netns, bName: string): Promise<void>;
  /** Add an IPv4 address from the test ranges (see TEST_IPV4_RANGES). */
  addAddress(ns: Netns, dev: string, cidr: string): Promise<void>;
  up(ns: Netns, dev: string): Promise<void>;
  /** Kill spawned process groups, delete namespaces and /etc/netns folders. Idempotent. */
  cleanup(): Promise<void>;
}

const LABEL_PATTERN = /^[a-z][a-z0-9]{0,15}$/;
const SHORT_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_]{0,31}$/;
let harnessCounter = 0;

class NamespaceHarness implements Harness, NetnsOwner {
  readonly prefix: string;
  readonly #namespaces = new Map<string, Netns>();
  readonly #processes = new Set<NetnsProcess>();
  #cleanup: Promise<void> | undefined;

  constructor(readonly label: string) {
    if (!LABEL_PATTERN.test(label)) {
      throw new HarnessError(`harness label ${JSON.stringify(label)} must match ${String(LABEL_PATTERN)}`);
    }
    harnessCounter += 1;
    // PID + counter keeps parallel workers and several harnesses per file apart.
    this.prefix = `${runPrefix()}${label}-${process.pid}-${harnessCounter}-`;
  }

  assertOpen(): void {
    if (this.#cleanup !== undefined) throw new HarnessError(`harness ${this.prefix} has been cleaned up`);
  }

  adoptProcess(child: NetnsProcess): void {
    this.#processes.add(child);
  }

  async namespace(name: string): Promise<Netns> {
    this.assertOpen();
    if (!SHORT_NAME_PATTERN.test(name)) {
      throw new HarnessError(`namespace name ${JSON.stringify(name)} must match ${String(SHORT_NAME_PATTERN)}`);
    }
    const fullName = this.prefix + name;
    if (this.#namespaces.has(fullName)) throw new HarnessError(`namespace ${fullName} already exists in this harness`);
    const ns = new Netns(fullName, this);
    // Recorded before creation so an interrupt between the two still removes it.
    trackNamespace(fullName);
    this.#namespaces.set(fullName, ns);
    writeResolvConf(fullName);
    await runCommand(['ip', 'netns', 'add', fullName], 'creating namespace');
    await ns.ip(['link', 'set', 'dev', 'lo', 'up']);
    return ns;
  }

  adopt(fullName: string): Netns {
    this.assertOpen();
    assertOwnedNamespace(fullName);
    if (!existsSync(`${NETNS_RUN_DIR}/${fullName}`)) throw new HarnessError(`namespace ${fullName} does not exist`);
    const existing = this.#namespaces.get(fullName);
    if (existing !== undefined) return existing;
    const ns = new Netns(fullName, this);
    trackNamespace(fullName);
    this.#namespaces.set(fullName, ns);
    return ns;
  }

  #assertMine(ns: Netns): void {
    this.assertOpen();
    if (this.#namespaces.get(ns.name) !== ns) throw new HarnessError(`namespace ${ns.name} is not managed by this harness`);
  }

  async veth(a: Netns, aName: string, b: Netns, bName: string): Promise<void> {
    this.#assertMine(a);
    this.#assertMine(b);
    assertInterfaceName(aName);
    assertInterfaceName(bName);
    await a.ip(['link', 'add', aName, 'type', 'veth', 'peer', 'name', bName, 'netns', b.name]);
  }

  async addAddress(ns: Netns, dev: string, cidr: string): Promise<void> {
    this.#assertMine(ns);
    assertInterfaceName(dev);
    assertTestCidr(cidr);
    await ns.ip(['address', 'add', cidr, 'dev', dev]);
  }

  async up(ns: Netns, dev: string): Promise<void> {
    this.#assertMine(ns);
    assertInterfaceName(dev);
    await ns.ip(['link', 'set', 'dev', dev, 'up']);
  }

  cleanup(): Promise<void> {
    this.#cleanup ??= this.#removeEverything();
    return this.#cleanup;
  }

  async #removeEverything(): Promise<void> {
    const failures: unknown[] = [];
    // Processes first: a namespace with processes still inside outlives its name.
    await Promise.all([...this.#processes].map((child) => child.kill('SIGKILL', 0)));
    this.#processes.clear();
    for (const name of this.#namespaces.keys()) {
      try {
        removeNamespaceSync(name);
        untrackNamespace(name);
      } catch (error) {
        failures.push(error);
      }
    }
    this.#namespaces.clear();
    if (failures.length > 0) throw new AggregateError(failures, `harness ${this.prefix}: cleanup failed`);
  }
}

/**
 * Start a harness; `label` (lowercase letters/digits, e.g. the test file's topic) appears in
 * namespace names to make leaks traceable. Call cleanup() in afterEach/afterAll.
 */
export function createHarness(label: string): Harness {
  return new NamespaceHarness(label);
}
