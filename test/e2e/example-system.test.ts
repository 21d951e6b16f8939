// startExampleSystem that fails part way (here its progress callback throws, as the demo's does
// where stderr has gone) removes the state dir it made, and the simulated internet's files once
// that is up, rethrowing the failure: nothing of it is left in the temp dir.
import { chmodSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { createHarness, describeNetns, trackTempDir } from '../harness/index.js';
import { startExampleSystem } from './example-system.js';

describeNetns('the example system failing as it comes up', () => {
  it.each([
    ['creating the netvm namespace (spectrum-link, netns attach)', ['spectrum-example-state-']],
    ['building the simulated internet behind netvm (HTTP 192.0.2.80, DNS 192.0.2.53)', ['spectrum-example-state-']],
    ['starting spectrum-netd in netvm', ['spectrum-example-state-', 'spectrum-internet-']],
  ])('failing at %j, after its state dir is made, removes what it made in the temp dir (%j) and rethrows', async (failAt, there) => {
    // The system's temp dirs go in a dir of this test's own (TMPDIR), so that no other test's count.
    const temp = mkdtempSync(join(tmpdir(), 'sn-example-fail-'));
    trackTempDir(temp);
    const harness = createHarness('exfail');
    const previous = process.env['TMPDIR'];
    const steps: string[] = [];
    let made: string[] = [];
    process.env['TMPDIR'] = temp;
    try {
      const progress = (step: string): void => {
        steps.push(step);
        // The state dir is there by the step that fails (and the internet's files by the last).
        made = readdirSync(temp);
        if (step === failAt) throw new Error('write EPIPE');
      };
      await expect(startExampleSystem(harness, progress)).rejects.toThrow('write EPIPE');
      expect(steps.at(-1)).toBe(failAt);
      expect(made.map((name) => name.replace(/[^-]+$/, '')).sort()).toEqual(there);
      expect(readdirSync(temp)).toEqual([]);
    } finally {
      if (previous === undefined) delete process.env['TMPDIR'];
      else process.env['TMPDIR'] = previous;
      await harness.cleanup();
      rmSync(temp, { recursive: true, force: true });
    }
  });

  it('failing as the simulated internet starts its servers (a python3 that exits at once), removes their files and its state dir, and rethrows', async () => {
    // A python3 first in PATH that fails at once: the internet's HTTP server never says it serves.
    const bin = mkdtempSync(join(tmpdir(), 'sn-example-bin-'));
    trackTempDir(bin);
    writeFileSync(join(bin, 'python3'), '#!/bin/sh\necho no python here >&2\nexit 3\n');
    chmodSync(join(bin, 'python3'), 0o755);
    const temp = mkdtempSync(join(tmpdir(), 'sn-example-fail-'));
    trackTempDir(temp);
    const harness = createHarness('exfail');
    const previous = { TMPDIR: process.env['TMPDIR'], PATH: process.env['PATH'] };
    const steps: string[] = [];
    process.env['TMPDIR'] = temp;
    process.env['PATH'] = `${bin}:${previous.PATH ?? ''}`;
    try {
      await expect(startExampleSystem(harness, (step) => steps.push(step))).rejects.toThrow(/python3 .*before printing .*no python here/s);
      expect(steps.at(-1)).toBe('building the simulated internet behind netvm (HTTP 192.0.2.80, DNS 192.0.2.53)');
      expect(readdirSync(temp)).toEqual([]);
    } finally {
      for (const [name, value] of Object.entries(previous)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
      await harness.cleanup();
      rmSync(temp, { recursive: true, force: true });
      rmSync(bin, { recursive: true, force: true });
    }
  });
});
