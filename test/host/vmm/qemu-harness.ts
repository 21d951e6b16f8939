// A real QEMU for QMP tests, inside a throw-away network namespace so that the taps it opens (and
// any it would create) never touch the host's root namespace. Everything is released by PID and
// by name in stop(), which the tests call in afterAll/afterEach, also after failures.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Why a real QEMU cannot run here, or undefined if it can. */
export function qemuUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'not running as root (network namespaces and taps need root)';
  if (spawnSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' }).status !== 0) return 'qemu-system-x86_64 is not installed';
  if (spawnSync('ip', ['netns', 'list'], { stdio: 'ignore' }).status !== 0) return 'iproute2 `ip netns` does not work';
  return undefined;
}

function ip(args: readonly string[]): void {
  const result = spawnSync('ip', args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`ip ${args.join(' ')} failed: ${result.stderr.trim()}`);
}

export interface QemuInstance {
  readonly namespace: string;
  readonly qmpPath: string;
  readonly pid: number;
  /** Create a tap in the instance's namespace (never in the root namespace). */
  addTap(name: string): void;
  /** Kill QEMU by its PID, delete the namespace and the temp dir; safe to call twice. */
  stop(): Promise<void>;
}

export async function startQemu(machine: 'pc' | 'q35' = 'pc', extra: readonly string[] = []): Promise<QemuInstance> {
  const namespace = `${process.env.SPECTRUM_TEST_PREFIX ?? 'snt'}vmm${randomBytes(3).toString('hex')}`;
  const dir = mkdtempSync(join(tmpdir(), 'sn-vmm-qemu-'));
  const qmpPath = join(dir, 'qmp.sock');
  let child: ChildProcess | undefined;
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (child !== undefined && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child?.once('exit', () => resolve()));
      child.kill('SIGKILL'); // by PID: ChildProcess.kill signals exactly this process
      await exited;
    }
    spawnSync('ip', ['netns', 'delete', namespace], { stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  };
  ip(['netns', 'add', namespace]);
  try {
    // `ip netns exec` execs QEMU in place: the PID we hold is QEMU's.
    child = spawn(
      'ip',
      [
        'netns', 'exec', namespace,
        'qemu-system-x86_64', '-machine', machine, '-accel', 'tcg', '-S', '-nodefaults', '-display', 'none',
        '-qmp', `unix:${qmpPath},server=on,wait=off`,
        ...extra,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const deadline = Date.now() + 15_000;
    while (!existsSync(qmpPath)) {
      if (child.exitCode !== null) throw new Error(`QEMU exited with ${child.exitCode}: ${stderr.trim()}`);
      if (Date.now() > deadline) throw new Error(`QEMU did not create its QMP socket within 15 s: ${stderr.trim()}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  } catch (error) {
    await stop();
    throw error;
  }
  const pid = child.pid ?? -1;
  return { namespace, qmpPath, pid, addTap: (name) => ip(['-n', namespace, 'tuntap', 'add', 'dev', name, 'mode', 'tap', 'vnet_hdr']), stop };
}
