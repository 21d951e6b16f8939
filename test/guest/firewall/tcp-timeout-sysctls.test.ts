import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KERNEL_TCP_TIMEOUTS, TCP_TIMEOUT_SYSCTLS } from '../../../guest/firewall/client-tcp-timeouts.js';
import { parseTimeoutSysctl, readTcpTimeouts } from '../../../guest/firewall/tcp-timeout-sysctls.js';

// Made when the tests run, not when the file is loaded (`vitest list` loads it and runs no hook).
let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'snt-tcpto-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("the provider's conntrack TCP timeouts", () => {
  it('reads a sysctl as the kernel prints it, and refuses anything else naming it', () => {
    expect(parseTimeoutSysctl('x', '432000\n')).toBe(432_000);
    expect(parseTimeoutSysctl('x', '0\n')).toBe(0);
    for (const wrong of ['', '-1\n', '0x10\n', 'long\n']) expect(() => parseTimeoutSysctl('nf_x', wrong)).toThrow(expect.objectContaining({ kind: 'tcp-timeouts', message: expect.stringMatching(/^nf_x /) }));
  });

  it('is undefined while the sysctls do not exist (nf_conntrack not loaded yet), else every state, syn_sent2 at the default', () => {
    expect(readTcpTimeouts(dir)).toBeUndefined();
    for (const [state, name] of Object.entries(TCP_TIMEOUT_SYSCTLS)) writeFileSync(join(dir, name), `${KERNEL_TCP_TIMEOUTS[state as keyof typeof KERNEL_TCP_TIMEOUTS]}\n`);
    expect(readTcpTimeouts(dir)).toEqual(KERNEL_TCP_TIMEOUTS);
    writeFileSync(join(dir, 'nf_conntrack_tcp_timeout_established'), '3600\n');
    writeFileSync(join(dir, 'nf_conntrack_tcp_timeout_max_retrans'), '90\n');
    expect(readTcpTimeouts(dir)).toEqual({ ...KERNEL_TCP_TIMEOUTS, established: 3600, retrans: 90 });
    expect(() => readTcpTimeouts(join(dir, 'nf_conntrack_tcp_timeout_close'))).toThrow(expect.objectContaining({ kind: 'tcp-timeouts' }));
  });

  it("reads this machine's, where nf_conntrack is loaded", () => {
    // Read only; the root namespace has its own values, whatever they are.
    const timeouts = readTcpTimeouts();
    if (timeouts !== undefined) expect(Object.keys(timeouts).sort()).toEqual(Object.keys(KERNEL_TCP_TIMEOUTS).sort());
    else expect(timeouts).toBeUndefined();
  });
});
