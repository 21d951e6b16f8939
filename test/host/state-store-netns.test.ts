// The state lock across network namespaces: spectrum-link processes entered into different
// network namespaces (nsenter --net, unshare -n) with one --state-dir must still exclude each other.
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, expect, it } from 'vitest';
import { loadState } from '../../host/state-store.js';
import { createHarness, describeNetns, type Harness, type Netns } from '../harness/index.js';

const FIXTURE = join(import.meta.dirname, '..', '..', 'dist', 'test', 'host', 'fixtures', 'allocate.js');

describeNetns('state lock across network namespaces', () => {
  let harness: Harness;
  let left: Netns;
  let right: Netns;
  let dir: string;

  beforeAll(async () => {
    if (!existsSync(FIXTURE)) throw new Error(`${FIXTURE} is missing: run \`npm run build\` first`);
    harness = createHarness('lock');
    left = await harness.namespace('left');
    right = await harness.namespace('right');
  });
  afterAll(async () => {
    await harness?.cleanup();
  });
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'spectrum-state-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a holder in one namespace makes a waiter in another time out (naming its PID) until it is SIGKILLed', async () => {
    const holder = left.spawn([process.execPath, FIXTURE, 'hold', dir]);
    await holder.waitForOutput(/locked/);
    const waiting = await right.exec([process.execPath, FIXTURE, 'try', dir, '300'], { allowFailure: true });
    expect(waiting.stdout).toMatch(new RegExp(`^lock-timeout: .*another spectrum-link \\(PID ${holder.pid}\\) is still holding it`));
    expect(waiting.code).toBe(1);
    expect((await holder.kill('SIGKILL')).signal).toBe('SIGKILL');
    const after = await right.exec([process.execPath, FIXTURE, 'try', dir, '2000']);
    expect(after.stdout).toBe('locked\n');
  });

  it('allocations racing from two namespaces get distinct ids, all recorded', async () => {
    const clients = Array.from({ length: 24 }, (_, i) => `appvm-${i}`);
    const results = await Promise.all(
      clients.map((client, i) => (i % 2 === 0 ? left : right).exec([process.execPath, FIXTURE, 'allocate', dir, client, 'netvm'])),
    );
    const ids = results.map((result) => Number(result.stdout.trim()));
    expect(new Set(ids).size).toBe(clients.length);
    const state = await loadState(dir);
    expect(state.links.map((link) => link.client).sort()).toEqual([...clients].sort());
    expect(new Set(state.links.map((link) => link.id))).toEqual(new Set(ids));
    expect(await readdir(dir)).toEqual(['links.json']);
  });
});
