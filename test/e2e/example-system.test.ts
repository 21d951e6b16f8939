// startExampleSystem that fails part way (here its progress callback throws, as the demo's does
// where stderr has gone) removes the state dir it made, and the simulated internet's files once
// that is up, rethrowing the failure: nothing of it is left in the temp dir.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
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
});
