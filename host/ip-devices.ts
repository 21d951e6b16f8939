// Adapter between device plans and the kernel, through iproute2: observe with `ip -d -j link
// show`, apply with `ip -batch` per namespace and phase. No decisions are made here.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { type DevicePlan, type IpStep, type ObservedDevice, type ObservedDevices, splitSteps } from './device-plan.js';

export type DeviceErrorKind = 'ip-missing' | 'ip-failed' | 'ip-output' | 'netns-create';

export class DeviceError extends Error {
  override readonly name = 'DeviceError';
  constructor(
    readonly kind: DeviceErrorKind,
    message: string,
  ) {
    super(message);
  }
}

interface IpResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * An `ip` process started ahead of need: its exec and start-up (a few milliseconds of another
 * core) overlap the caller's own work, and it runs nothing until it is given its input.
 * Whoever starts one runs it or cancels it; a cancelled one reads an empty batch and exits, and
 * so does one whose parent dies (its stdin closes).
 */
export interface PendingIp {
  /** Give ip its input and wait for it to exit. At most once. */
  run(input?: string): Promise<IpResult>;
  /** End it without running anything (no-op once run or cancelled). */
  cancel(): void;
}

export function startIp(args: readonly string[]): PendingIp {
  const child = spawn('ip', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.stdin.on('error', () => undefined); // ip may exit before reading all input; its exit code tells
  // Settles exactly once and never rejects, so a cancelled process leaves no unhandled rejection.
  const outcome = new Promise<IpResult | DeviceError>((resolve) => {
    child.on('error', (error: NodeJS.ErrnoException) =>
      resolve(
        error.code === 'ENOENT'
          ? new DeviceError('ip-missing', 'the `ip` command was not found: install iproute2')
          : new DeviceError('ip-failed', `could not run ip: ${error.message}`),
      ),
    );
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
  let used = false;
  return {
    async run(input) {
      if (used) throw new Error('PendingIp.run: this ip process was already run or cancelled');
      used = true;
      child.stdin.end(input ?? '');
      const result = await outcome;
      if (result instanceof DeviceError) throw result;
      return result;
    },
    cancel() {
      if (used) return;
      used = true;
      child.stdin.end();
    },
  };
}

function runIp(args: readonly string[], input?: string): Promise<IpResult> {
  return startIp(args).run(input);
}

function firstLine(text: string): string {
  return text.split('\n').find((line) => line.trim() !== '')?.trim() ?? '';
}

const record = (value: unknown): Record<string, unknown> | null =>
  typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : null;

/** Reduce `ip -d -j link show` output to what the planner compares. */
export function parseLinkShow(json: string): Map<string, ObservedDevice> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    throw new DeviceError('ip-output', 'ip -j link show printed something that is not JSON: is iproute2 too old?');
  }
  if (!Array.isArray(parsed)) throw new DeviceError('ip-output', 'ip -j link show did not print a list');
  const devices = new Map<string, ObservedDevice>();
  for (const entry of parsed) {
    const link = record(entry);
    const name = link?.['ifname'];
    if (link === null || typeof name !== 'string') continue;
    const kind = record(link['linkinfo'])?.['info_kind'];
    const master = link['master'];
    const mtu = link['mtu'];
    const flags = link['flags'];
    const address = link['address'];
    devices.set(name, {
      name,
      kind: typeof kind === 'string' ? kind : null,
      master: typeof master === 'string' ? master : null,
      mtu: typeof mtu === 'number' ? mtu : 0,
      up: Array.isArray(flags) && flags.includes('UP'),
      mac: typeof address === 'string' ? address.toLowerCase() : '',
    });
  }
  return devices;
}

/** Parse the output of several `ip -j link show dev X` commands: one JSON list per line. */
export function parseLinkShowLines(output: string): Map<string, ObservedDevice> {
  const devices = new Map<string, ObservedDevice>();
  for (const line of output.split('\n')) {
    if (line.trim() === '') continue;
    for (const [name, device] of parseLinkShow(line)) devices.set(name, device);
  }
  return devices;
}

// Up to this many names, asking for each device by name beats dumping every device (a host with
// a thousand links has three thousand; its full dump is 4 MB of JSON).
const NAMED_QUERY_MAX = 256;

/** The arguments of the process that answers a named-device query (see listNamedDevices). */
function queryArgs(netns: string | null): string[] {
  // -force: a missing device fails its own line ("does not exist") and the rest still run.
  return netns === null ? ['-force', '-d', '-j', '-batch', '-'] : ['-n', netns, '-force', '-d', '-j', '-batch', '-'];
}

/** The named devices that exist (missing names are simply absent from the map). */
async function listNamedDevices(netns: string | null, names: readonly string[], pending?: PendingIp): Promise<Map<string, ObservedDevice>> {
  if (names.length === 0) {
    pending?.cancel();
    return new Map();
  }
  const ip = pending ?? startIp(queryArgs(netns));
  // Past NAMED_QUERY_MAX names, one dump of every device is cheaper than a line per name.
  const dump = names.length > NAMED_QUERY_MAX;
  const result = await ip.run(dump ? 'link show\n' : `${names.map((name) => `link show dev ${name}`).join('\n')}\n`);
  const unexpected = result.stderr.split('\n').filter((line) => line.trim() !== '' && !/does not exist|^Command failed/.test(line));
  if (unexpected.length > 0) throw new DeviceError('ip-failed', `ip link show failed: ${unexpected[0]?.trim() ?? ''}`);
  const found = parseLinkShowLines(result.stdout);
  if (!dump) return found;
  return new Map(names.flatMap((name) => (found.has(name) ? [[name, found.get(name) as ObservedDevice] as const] : [])));
}

async function listDevices(netns: string | null): Promise<Map<string, ObservedDevice>> {
  const args = netns === null ? ['-d', '-j', 'link', 'show'] : ['-n', netns, '-d', '-j', 'link', 'show'];
  const result = await runIp(args);
  if (result.code !== 0) {
    throw new DeviceError('ip-failed', `ip ${args.join(' ')} failed: ${firstLine(result.stderr)}`);
  }
  return parseLinkShow(result.stdout);
}

export function netnsExists(name: string): boolean {
  return existsSync(`/run/netns/${name}`);
}

/**
 * The two ip processes a link run needs in the current namespace, started before the run knows
 * what to ask or do (see PendingIp): one answers the device query, one applies the host steps.
 */
export interface HostIp {
  readonly query: PendingIp;
  readonly apply: PendingIp;
  /** Cancel whichever was not run. */
  close(): void;
}

export function startHostIp(): HostIp {
  const query = startIp(queryArgs(null));
  const apply = startIp(['-batch', '-']);
  return {
    query,
    apply,
    close() {
      query.cancel();
      apply.cancel();
    },
  };
}

/**
 * The devices of the current namespace and of each named VM namespace (null where absent): all
 * of them, or only those named in `only` (all a plan needs, and far cheaper on a busy host).
 * `hostQuery`: an ip process started with startHostIp, used for the current namespace's query.
 */
export async function observeDevices(netnsNames: Iterable<string>, only?: readonly string[], hostQuery?: PendingIp): Promise<ObservedDevices> {
  const names = [...new Set(netnsNames)];
  const list = (netns: string | null): Promise<Map<string, ObservedDevice>> =>
    only === undefined ? listDevices(netns) : listNamedDevices(netns, only, netns === null ? hostQuery : undefined);
  const [hostDevices, ...farDevices] = await Promise.all([
    list(null),
    ...names.map((name) => (netnsExists(name) ? list(name) : Promise.resolve(null))),
  ]);
  return { host: hostDevices, netns: new Map(names.map((name, index) => [name, farDevices[index] ?? null])) };
}

/** Steps grouped by namespace, order kept within each group. */
function byNamespace(steps: readonly IpStep[]): Map<string | null, string[]> {
  const groups = new Map<string | null, string[]>();
  for (const step of steps) {
    const lines = groups.get(step.netns) ?? [];
    lines.push(step.args.join(' '));
    groups.set(step.netns, lines);
  }
  return groups;
}

async function runBatch(netns: string | null, lines: readonly string[], pending?: PendingIp): Promise<void> {
  if (lines.length === 0) {
    pending?.cancel();
    return;
  }
  const args = netns === null ? ['-batch', '-'] : ['-n', netns, '-batch', '-'];
  const result = await (pending ?? startIp(args)).run(`${lines.join('\n')}\n`);
  if (result.code !== 0) {
    // ip names the failing line as "Command failed -:N"; show that command with the kernel's answer.
    const failedLine = Number(/Command failed -:(\d+)/.exec(result.stderr)?.[1] ?? 0);
    const command = failedLine > 0 ? lines[failedLine - 1] : undefined;
    const where = netns === null ? '' : ` in namespace ${netns}`;
    throw new DeviceError('ip-failed', `ip ${command ?? 'batch'}${where} failed: ${firstLine(result.stderr)}`);
  }
}

// The kernel takes the RTNL lock for most of each step, yet two ip processes link a thousand
// connections about 18% faster than one (measured on 2 cores: 1.65 -> 1.35 s; the RCU waits as
// taps are closed, and each process's own parsing and reading, overlap). Below this many steps
// the second process's start-up costs more than it saves.
const PARALLEL_APPLY_MIN_STEPS = 60;
const PARALLEL_APPLY_PROCESSES = Math.min(2, availableParallelism());

/** The current namespace's steps, split by connection over one or two `ip -batch` processes. */
async function runHostSteps(groups: readonly (readonly IpStep[])[], pending?: PendingIp): Promise<void> {
  const steps = groups.reduce((sum, group) => sum + group.length, 0);
  const batches = splitSteps(groups, steps >= PARALLEL_APPLY_MIN_STEPS ? PARALLEL_APPLY_PROCESSES : 1);
  if (batches.length === 0) pending?.cancel();
  // Every batch runs to its end before a failure is reported, so that the undo sees it all.
  const outcomes = await Promise.allSettled(batches.map((batch, index) => runBatch(null, batch.map((step) => step.args.join(' ')), index === 0 ? pending : undefined)));
  const failed = outcomes.find((outcome): outcome is PromiseRejectedResult => outcome.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
}

async function createNamespace(name: string): Promise<void> {
  const result = await runIp(['netns', 'add', name]);
  if (result.code !== 0 && !netnsExists(name)) {
    throw new DeviceError('netns-create', `could not create network namespace ${name}: ${firstLine(result.stderr)}`);
  }
}

/**
 * Carry out a plan; on failure delete what it created, then rethrow. `hostApply`: an ip process
 * started with startHostIp, used for the steps in the current namespace.
 */
export async function applyDevicePlan(plan: DevicePlan, hostApply?: PendingIp): Promise<void> {
  try {
    for (const name of plan.createNamespaces) await createNamespace(name);
    await Promise.all([...byNamespace(plan.clearFarEnds)].map(([netns, lines]) => runBatch(netns, lines)));
    await runHostSteps(plan.hostSteps, hostApply);
    await Promise.all([...byNamespace(plan.configureFarEnds)].map(([netns, lines]) => runBatch(netns, lines)));
  } catch (error) {
    await undoDevicePlan(plan);
    throw error;
  }
}

/** Remove what a plan created (devices, then the namespaces it made), as far as possible. */
export async function undoDevicePlan(plan: DevicePlan): Promise<void> {
  await removeDevices(plan.creates).catch(() => undefined);
  for (const name of plan.createNamespaces) await runIp(['netns', 'delete', name]).catch(() => undefined);
}

/** Delete these devices from the current namespace where they exist; a veth takes its peer along. */
export async function removeDevices(names: readonly string[]): Promise<void> {
  if (names.length === 0) return;
  const present = await listDevices(null);
  const lines = names.filter((name) => present.has(name)).map((name) => `link del dev ${name}`);
  if (lines.length === 0) return;
  const result = await runIp(['-force', '-batch', '-'], `${lines.join('\n')}\n`);
  if (result.code !== 0) throw new DeviceError('ip-failed', `removing devices failed: ${firstLine(result.stderr)}`);
}
