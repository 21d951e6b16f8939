// The fake cloud-hypervisor run as a child process inside a test namespace
// (fixtures/fake-cloud-hypervisor-process.ts): the process behind its API socket (SO_PEERCRED)
// then runs in that namespace, as a real cloud-hypervisor would.
import { existsSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Netns, NetnsProcess } from '../../harness/index.js';
import type { FakeVmState, RecordedRequest } from './fake-cloud-hypervisor.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const FIXTURE = 'test/host/vmm/fixtures/fake-cloud-hypervisor-process';

/**
 * The compiled fixture (a path under the root, without .ts), to be run from dist/; it and the
 * modules it runs (`sources`) must be as new as their sources.
 */
export function compiledFixture(fixture: string, sources: readonly string[]): string {
  for (const source of [fixture, ...sources]) {
    const compiled = `${ROOT}dist/${source}.js`;
    if (!existsSync(compiled)) throw new Error(`${compiled} is missing: run \`npm run build\` before the tests`);
    if (statSync(compiled).mtimeMs < statSync(`${ROOT}${source}.ts`).mtimeMs) throw new Error(`${compiled} is older than ${source}.ts: run \`npm run build\` before the tests`);
  }
  return `${ROOT}dist/${fixture}.js`;
}

export interface FakeReport {
  readonly requests: RecordedRequest[];
  readonly nets: Record<string, unknown>[];
  readonly heldTapQueues: number;
}

export class FakeCloudHypervisorProcess {
  private constructor(
    private readonly process: NetnsProcess,
    readonly socketPath: string,
    /** The fake's pid, as our PID namespace sees it. */
    readonly pid: number,
  ) {}

  /** A fake cloud-hypervisor (VM in `state`) running in namespace `ns`; the harness kills it at cleanup if close() is not reached. */
  static async start(ns: Netns, state?: FakeVmState): Promise<FakeCloudHypervisorProcess> {
    // nsenter: our mount namespace, so the socket in /tmp is the one the test and the linker see.
    const child = ns.spawn(['node', compiledFixture(FIXTURE, ['test/host/vmm/fake-cloud-hypervisor', 'host/vmm/tap-fd']), ...(state === undefined ? [] : [state])], { enter: 'nsenter', stdin: 'pipe' });
    const ready = await child.waitForOutput(/^ready (.*)$/m);
    const { socketPath, pid } = JSON.parse(ready[1] ?? '') as { socketPath: string; pid: number };
    return new FakeCloudHypervisorProcess(child, socketPath, pid);
  }

  /** What the fake has seen and holds now. */
  async report(): Promise<FakeReport> {
    const reports = (): string[] => this.process.stdout.split('\n').filter((line) => line.startsWith('report '));
    const before = reports().length;
    this.process.child.stdin?.write('report\n');
    const deadline = Date.now() + 5000;
    while (reports().length === before) {
      if (this.process.exit !== undefined || Date.now() > deadline) throw new Error(`the fake cloud-hypervisor gave no report; stderr: ${this.process.stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return JSON.parse(reports()[before]?.slice('report '.length) ?? '') as FakeReport;
  }

  async close(): Promise<void> {
    this.process.child.stdin?.end();
    const exit = await Promise.race([this.process.wait(), new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 5000))]);
    if (exit === 'timeout') await this.process.kill('SIGKILL');
  }
}
