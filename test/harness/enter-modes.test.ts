import { afterAll, beforeAll, expect, it } from 'vitest';
import { createHarness, describeNetns, type Harness, type Netns } from './index.js';

describeNetns('entering namespaces', () => {
  let harness: Harness;
  let outer: Netns;

  beforeAll(async () => {
    harness = createHarness('enter');
    outer = await harness.namespace('outer');
  });

  afterAll(async () => {
    await harness?.cleanup();
  });

  it("a process entered with nsenter can create a working namespace, which adopt() takes charge of", async () => {
    const innerName = `${harness.prefix}inner`;
    await outer.exec(['ip', 'netns', 'add', innerName], { enter: 'nsenter' });
    const inner = harness.adopt(innerName);
    const { stdout } = await inner.exec(['ip', '-o', 'link']);
    expect(stdout).toMatch(/^1: lo:/);
    // It is a separate namespace from the one it was created in.
    await harness.veth(outer, 'out0', inner, 'in0');
    const outerLinks = await outer.ip(['-o', 'link']);
    expect(outerLinks.stdout).toContain('out0@');
    expect(outerLinks.stdout).not.toContain('in0@');
  });

  it('passes stdin through exec', async () => {
    const { stdout } = await outer.exec(['cat'], { input: 'hello from stdin' });
    expect(stdout).toBe('hello from stdin');
  });

  it('kills a command that outlives its timeout', async () => {
    await expect(outer.exec(['sleep', '30'], { timeoutMs: 200 })).rejects.toThrow(/timed out after 200 ms/);
  });
});
