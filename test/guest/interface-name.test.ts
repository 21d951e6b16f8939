// What Linux takes for an interface's name (isInterfaceName), which link-local DNS upstreams' zones
// and netd's --ignore follow: checked against the kernel itself, naming interfaces in a namespace.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isInterfaceName } from '../../guest/interface-name.js';
import { createHarness, describeNetns, type Harness, type Netns } from '../harness/index.js';

describe('isInterfaceName', () => {
  it("takes 1 to 15 bytes but . and .., none of them '/', ':', a blank to the kernel or NUL", () => {
    for (const name of ['eth0', 'br+lan', 'veth@if5', 'wlan%1', 'a]b', '-', '..a', '2', 'x'.repeat(15), 'ä', 'a\u3000b', '\u0001', 'ääääääää'.slice(0, 7)]) {
      expect(isInterfaceName(name), JSON.stringify(name)).toBe(true);
    }
    // 'à' is c3 a0 in UTF-8: 0xa0 is a blank to the kernel's isspace().
    for (const name of ['', '.', '..', 'x'.repeat(16), 'ääääääää', 'a/b', 'a:b', 'a b', 'a\tb', 'a\nb', 'a\vb', 'a\fb', 'a\rb', 'là', 'a\u00a0b', 'a\u0000b']) {
      expect(isInterfaceName(name), JSON.stringify(name)).toBe(false);
    }
  });
});

describeNetns('isInterfaceName and the kernel', () => {
  let harness: Harness;
  let ns: Netns;

  beforeAll(async () => {
    harness = createHarness('ifname');
    ns = await harness.namespace('names');
  });

  afterAll(async () => {
    await harness?.cleanup();
  });

  it('takes exactly the names the kernel gives an interface', async () => {
    // Characters the rule is about, and others it must let through. Not '%': the kernel reads a
    // new link's name holding one as a pattern (eth%d becomes eth0), though one may be in an
    // alternative name (ip link property add altname), which if_nametoindex finds too.
    const character = fc.constantFrom('a', 'b', '1', '.', '/', ':', ' ', '\t', '+', '@', ']', '-', '_', 'à', 'ä', '\u3000', '\u0001', '\u00a0');
    const names = fc.oneof(
      fc.array(character, { maxLength: 17 }).map((characters) => characters.join('')),
      fc.constantFrom('.', '..', 'a'.repeat(15), 'a'.repeat(16), 'ä'.repeat(7) + 'a', 'ä'.repeat(8)),
    );
    const sample = fc.sample(names, { numRuns: 80, seed: 20_250_611 });
    const outcomes: { name: string; kernel: boolean; rule: boolean }[] = [];
    for (const name of [...new Set(sample)]) {
      // The peer's name is of characters the sample never holds.
      const { code } = await ns.ip(['link', 'add', 'name', name, 'type', 'veth', 'peer', 'name', 'peer0'], { allowFailure: true });
      if (code === 0) await ns.ip(['link', 'del', 'dev', 'peer0']);
      outcomes.push({ name, kernel: code === 0, rule: isInterfaceName(name) });
    }
    expect(outcomes.filter(({ kernel, rule }) => kernel !== rule)).toEqual([]);
    // Both kinds were tried.
    expect(outcomes.filter(({ kernel }) => kernel).length).toBeGreaterThan(5);
    expect(outcomes.filter(({ kernel }) => !kernel).length).toBeGreaterThan(5);
  });
});
