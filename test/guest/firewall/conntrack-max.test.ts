import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConntrackMax, readConntrackMax } from '../../../guest/firewall/conntrack-max.js';

// Made when the tests run, not when the file is loaded (`vitest list` loads it and runs no hook).
let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'snt-ctmax-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('nf_conntrack_max', () => {
  it('reads the sysctl as the kernel prints it', () => {
    expect(parseConntrackMax('262144\n')).toBe(262_144);
    expect(parseConntrackMax('0\n')).toBe(0);
    for (const wrong of ['', '-1\n', '0x10\n', '1e5\n', 'many\n']) expect(() => parseConntrackMax(wrong)).toThrow(expect.objectContaining({ kind: 'flow-limit' }));
  });

  it('is undefined while the sysctl does not exist (nf_conntrack not loaded yet)', () => {
    const path = join(dir, 'nf_conntrack_max');
    expect(readConntrackMax(path)).toBeUndefined();
    writeFileSync(path, '65536\n');
    expect(readConntrackMax(path)).toBe(65_536);
    // Anything else than a missing file says what to do.
    expect(() => readConntrackMax(dir)).toThrow(/give --client-flow-limit and --client-new-flow-rate numbers/);
  });
});
