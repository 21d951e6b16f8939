import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { expect, it } from 'vitest';
import { createHarness, describeNetns, isRunning, processIdentity, type ProcessIdentity } from './index.js';

function rootLinks(): string {
  // Read-only look at the root namespace.
  return execFileSync('ip', ['-o', 'link'], { encoding: 'utf8' });
}

function namespaceList(): string {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
}

describeNetns('harness cleanup', () => {
  it('removes namespaces, /etc/netns folders and spawned processes, and leaves the root namespace alone', async () => {
    const linksBefore = rootLinks();
    const harness = createHarness('cleanup');
    const a = await harness.namespace('a');
    const b = await harness.namespace('b');
    await harness.veth(a, 'ca0', b, 'cb0');
    await harness.addAddress(a, 'ca0', '192.0.2.1/24');
    await harness.addAddress(b, 'cb0', '192.0.2.2/24');
    await harness.up(a, 'ca0');
    await harness.up(b, 'cb0');
    const sleeper = b.spawn(['sleep', '300']);
    const sleeperIdentity = processIdentity(sleeper.pid);
    expect(sleeperIdentity).toBeDefined();

    expect(namespaceList()).toContain(a.name);
    expect(existsSync(`/etc/netns/${a.name}/resolv.conf`)).toBe(true);

    await harness.cleanup();

    const listing = namespaceList();
    for (const name of [a.name, b.name]) {
      expect(listing).not.toContain(name);
      expect(existsSync(`/etc/netns/${name}`)).toBe(false);
    }
    expect(listing).not.toContain(harness.prefix);
    expect(isRunning(sleeperIdentity as ProcessIdentity)).toBe(false);
    expect(rootLinks()).toBe(linksBefore);

    // Idempotent, and the harness refuses further work.
    await expect(harness.cleanup()).resolves.toBeUndefined();
    await expect(harness.namespace('c')).rejects.toThrow(/cleaned up/);
  });
});
