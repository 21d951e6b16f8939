import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  createHarness,
  descendantsOf,
  describeNetns,
  isRunning,
  processIdentity,
  type Harness,
  type Netns,
  type NetnsProcess,
  type ProcessIdentity,
} from './index.js';

/** A foreground sleep, a background one, and one that leaves the process group like a daemon. */
const FORKING_SCRIPT = 'sleep 300 & setsid sleep 301 & sleep 302';

async function waitForDescendants(child: NetnsProcess, count: number): Promise<ProcessIdentity[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const found = descendantsOf(child.pid);
    if (found.length >= count) return found;
    if (Date.now() > deadline) throw new Error(`expected ${count} descendants of ${child.pid}, found ${found.length}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describeNetns('spawning in a PID namespace', () => {
  let harness: Harness;
  let ns: Netns;

  beforeAll(async () => {
    harness = createHarness('pidns');
    ns = await harness.namespace('p');
  });

  afterAll(async () => {
    await harness?.cleanup();
  });

  it('kills everything the process forked, including a setsid daemon', async () => {
    const child = ns.spawn(['sh', '-c', FORKING_SCRIPT], { pidns: true });
    const leader = processIdentity(child.pid);
    expect(leader).toBeDefined();
    // unshare -> sh (PID 1 inside) -> three sleeps.
    const tree = await waitForDescendants(child, 4);
    const everything = [leader as ProcessIdentity, ...tree];
    expect(everything.every(isRunning)).toBe(true);

    await child.kill();

    expect(everything.filter(isRunning)).toEqual([]);
  });

  it('runs the command as PID 1 of its own PID namespace, with a /proc to match', async () => {
    const plain = await ns.exec(['sh', '-c', 'echo $$']);
    expect(Number(plain.stdout.trim())).toBeGreaterThan(1);
    const child = ns.spawn(['sh', '-c', 'echo pid=$$ procs=$(ls /proc | grep -c "^[0-9]"); sleep 300'], { pidns: true });
    const match = await child.waitForOutput(/pid=(\d+) procs=(\d+)/);
    expect(match[1]).toBe('1');
    // sh, the sleep may not exist yet, ls and grep: a handful, not the host's hundreds.
    expect(Number(match[2])).toBeLessThan(10);
    await child.kill('SIGKILL');
  });

  it('without pidns, a setsid child escapes the process-group kill (why the option exists)', async () => {
    const child = ns.spawn(['sh', '-c', FORKING_SCRIPT]);
    const tree = await waitForDescendants(child, 3);
    await child.kill();
    const survivors = tree.filter(isRunning);
    try {
      expect(survivors).toHaveLength(1);
    } finally {
      // We started it; end it by PID.
      for (const survivor of survivors) process.kill(survivor.pid, 'SIGKILL');
    }
  });
});
