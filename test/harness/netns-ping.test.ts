import { existsSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createHarness, describeNetns, type Harness, type Netns } from './index.js';

describeNetns('two namespaces joined by a veth', () => {
  let harness: Harness;
  let left: Netns;
  let right: Netns;

  beforeAll(async () => {
    if (!existsSync('/bin/busybox')) {
      throw new Error('/bin/busybox is missing: install busybox-static (apt-get install -y busybox-static)');
    }
    harness = createHarness('ping');
    left = await harness.namespace('left');
    right = await harness.namespace('right');
    await harness.veth(left, 'veth-l', right, 'veth-r');
    await harness.addAddress(left, 'veth-l', '100.64.0.1/24');
    await harness.addAddress(right, 'veth-r', '100.64.0.2/24');
    await harness.up(left, 'veth-l');
    await harness.up(right, 'veth-r');
    // The end raised first is activated by the kernel's linkwatch some time after the other comes up.
    await Promise.all([left.linkActive('veth-l'), right.linkActive('veth-r')]);
  });

  afterAll(async () => {
    await harness?.cleanup();
  });

  it('pings across the veth', async () => {
    const result = await left.exec(['/bin/busybox', 'ping', '-c', '1', '-W', '2', '100.64.0.2']);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/1 packets received/);
  });

  it('waits for a veth end to be operationally up: not while its peer is down, up once its peer is', async () => {
    await harness.veth(left, 'act-l', right, 'act-r');
    try {
      await harness.up(left, 'act-l');
      await expect(left.linkActive('act-l', 300)).rejects.toThrow(/timed out after 300 ms waiting for act-l in netns .* to be operationally up/);
      await harness.up(right, 'act-r');
      await left.linkActive('act-l', 5000);
      expect((await left.ip(['-o', 'link', 'show', 'dev', 'act-l'])).stdout).toMatch(/state UP/);
    } finally {
      await left.ip(['link', 'del', 'dev', 'act-l']); // the other tests here count left's devices
    }
  });

  it('reports a failed ping to an unassigned address instead of throwing when allowFailure is set', async () => {
    const result = await left.exec(['/bin/busybox', 'ping', '-c', '1', '-W', '1', '100.64.0.3'], { allowFailure: true });
    expect(result.code).not.toBe(0);
  });

  it('rejects a failing command with its stderr in the message', async () => {
    await expect(left.exec(['sh', '-c', 'echo broken-on-purpose >&2; exit 3'])).rejects.toThrow(
      /exit code 3[\s\S]*broken-on-purpose/,
    );
  });

  it('sees only its own devices inside the namespace', async () => {
    const { stdout } = await left.exec(['ip', '-o', 'link']);
    const names = stdout
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => line.split(': ')[1]?.split('@')[0]);
    expect(names.sort()).toEqual(['lo', 'veth-l']);
  });

  it('gives the namespace its own resolv.conf under ip netns exec', async () => {
    const { stdout } = await left.exec(['cat', '/etc/resolv.conf']);
    expect(stdout).toContain('spectrum-net test harness');
  });
});
