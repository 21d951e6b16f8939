// SIGUSR1 to either bin: Node opens its inspector on 127.0.0.1:9229 in a process with no listener
// for it, and any local process could then run code as the bin (root). Each bin's first import
// listens (shared/cli/inspector-signal.ts). Run in a namespace of its own, where a port that opens
// anyway opens nowhere else; each bin waits meanwhile (for an agent, for the state lock).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type Harness, type Netns, type NetnsProcess, createHarness, describeNetns } from '../../harness/index.js';
import { LINK_BIN } from '../../host/link-fixture.js';
import { NETD_CLI } from '../../guest/provider-world.js';

const HOLD_FIXTURE = join(import.meta.dirname, '..', '..', '..', 'dist', 'test', 'host', 'fixtures', 'allocate.js');

describeNetns("the bins keep Node's inspector closed at SIGUSR1", () => {
  let harness: Harness;
  let ns: Netns;
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'inspector-signal-'));
    harness = createHarness('usr1');
    ns = await harness.namespace('bins');
  });

  afterAll(async () => {
    await harness?.cleanup();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  /** Send `waiting` SIGUSR1 once it is under way, and see that it goes on waiting with no inspector open. */
  async function signalled(waiting: NetnsProcess, underWay: () => boolean): Promise<void> {
    const deadline = Date.now() + 20_000;
    while (!underWay() && waiting.exit === undefined && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(waiting.exit, waiting.stderr).toBeUndefined();
    process.kill(waiting.pid, 'SIGUSR1');
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(waiting.exit, waiting.stderr).toBeUndefined();
    expect((await ns.exec(['ss', '-Hltn'])).stdout).not.toMatch(/:9229\b/);
    expect(waiting.stderr).not.toContain('Debugger listening');
  }

  it('spectrum-netd (status --wait, waiting for an agent)', async () => {
    const waiting = ns.spawn(['node', NETD_CLI, 'status', '--wait', '60', '--control-socket', join(dir, 'nobody.sock')], { enter: 'nsenter' });
    // status --wait says nothing while it waits: a second is long past its imports.
    const started = Date.now();
    await signalled(waiting, () => Date.now() - started > 1_000);
    await waiting.kill('SIGKILL', 0);
  });

  it('spectrum-link (gc, waiting for the state lock another run holds)', async () => {
    const stateDir = join(dir, 'state');
    // A state to keep (gc refuses to run on none), then its lock held.
    await ns.exec(['node', HOLD_FIXTURE, 'allocate', stateDir, 'appvm-a', 'netvm'], { enter: 'nsenter' });
    const holder = ns.spawn(['node', HOLD_FIXTURE, 'hold', stateDir], { enter: 'nsenter' });
    try {
      await holder.waitForOutput(/locked/);
      const waiting = ns.spawn(['node', LINK_BIN, 'gc', '--state-dir', stateDir], { enter: 'nsenter', env: { ...process.env, SPECTRUM_LOG_LEVEL: 'info' } });
      await signalled(waiting, () => waiting.stderr.includes('waiting for another spectrum-link'));
      const exit = await waiting.kill('SIGINT', 10_000);
      expect(exit, waiting.stderr).toEqual({ code: 130, signal: null });
    } finally {
      await holder.kill('SIGKILL', 5_000);
    }
  });
});
