import { afterAll, beforeAll, expect, it } from 'vitest';
import { createHarness, describeNetns, runPrefix, writeResolvConf, type Harness, type Netns } from './index.js';

describeNetns('harness refusals', () => {
  let harness: Harness;
  let ns: Netns;
  let peer: Netns;

  beforeAll(async () => {
    harness = createHarness('refusal');
    ns = await harness.namespace('x');
    peer = await harness.namespace('y');
  });

  afterAll(async () => {
    await harness?.cleanup();
  });

  it('refuses namespaces without the run prefix', () => {
    expect(() => harness.adopt('foreign')).toThrow(/does not carry this run's prefix/);
    expect(() => harness.adopt(`x${runPrefix()}y`)).toThrow(/does not carry this run's prefix/);
    expect(() => writeResolvConf('foreign')).toThrow(/does not carry this run's prefix/);
  });

  it('refuses to move a device to a namespace outside the run, or to run ip netns through ip()', async () => {
    await expect(ns.ip(['link', 'set', 'dev', 'lo', 'netns', '1'])).rejects.toThrow(/does not carry this run's prefix/);
    await expect(ns.ip(['netns', 'add', `${harness.prefix}z`])).rejects.toThrow(/not allowed/);
  });

  it('refuses a 16-byte interface name', async () => {
    const sixteen = 'abcdefghijklmnop';
    expect(Buffer.byteLength(sixteen)).toBe(16);
    await expect(harness.veth(ns, sixteen, peer, 'ok0')).rejects.toThrow(/16 bytes; Linux allows at most 15/);
    await expect(harness.up(ns, sixteen)).rejects.toThrow(/at most 15/);
    // Multi-byte characters count in bytes: 8 two-byte characters are 16 bytes.
    await expect(harness.veth(ns, 'éééééééé', peer, 'ok1')).rejects.toThrow(/16 bytes/);
  });

  it('creates a real device with a 15-byte name', async () => {
    const fifteen = 'abcdefghijklmno';
    expect(Buffer.byteLength(fifteen)).toBe(15);
    await harness.veth(ns, fifteen, peer, 'peer15');
    await harness.up(ns, fifteen);
    const { stdout } = await ns.ip(['-o', 'link', 'show', 'dev', fifteen]);
    expect(stdout).toContain(`${fifteen}@`);
  });

  it('refuses addresses outside the test ranges', async () => {
    await expect(harness.addAddress(ns, 'lo', '10.0.0.1/24')).rejects.toThrow(/outside the test address ranges/);
    await expect(harness.addAddress(ns, 'lo', '100.64.0.1/8')).rejects.toThrow(/outside the test address ranges/);
  });

  it('refuses namespaces of another harness', async () => {
    const other = createHarness('other');
    try {
      await expect(other.up(ns, 'lo')).rejects.toThrow(/not managed by this harness/);
    } finally {
      await other.cleanup();
    }
  });
});
