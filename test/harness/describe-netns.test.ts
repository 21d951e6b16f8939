import { describe, expect, it } from 'vitest';
import { netnsSuiteMode } from './describe-netns.js';

describe('describeNetns mode (no root needed)', () => {
  const unsupported = { ok: false, reason: 'not running as root (uid 1000)' } as const;

  it('runs when supported, with or without CI', () => {
    expect(netnsSuiteMode({ ok: true }, { CI: 'true' })).toBe('run');
    expect(netnsSuiteMode({ ok: true }, {})).toBe('run');
  });

  it('fails instead of skipping under CI', () => {
    expect(netnsSuiteMode(unsupported, { CI: 'true' })).toBe('fail');
  });

  it('skips outside CI', () => {
    expect(netnsSuiteMode(unsupported, {})).toBe('skip');
    expect(netnsSuiteMode(unsupported, { CI: 'false' })).toBe('skip');
  });
});
