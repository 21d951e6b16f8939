import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { integerOption } from '../../../shared/cli/integer-option.js';
import { CliError, EXIT } from '../../../shared/cli/run-cli.js';

describe('integerOption', () => {
  it('takes every whole number in range, written in decimal', () => {
    fc.assert(
      fc.property(fc.integer({ min: 68, max: 65535 }), (mtu) => {
        expect(integerOption('--mtu', String(mtu), 68, 65535, 'an MTU')).toBe(mtu);
      }),
    );
  });

  it.each(['', '67', '65536', '0x5dc', '1e3', ' 1500', '1500 ', '1500.0', '+1500', 'big', '-1', '9'.repeat(400)])('refuses %j as a usage error that quotes it', (text) => {
    const attempt = () => integerOption('--mtu', text, 68, 65535, 'an MTU');
    expect(attempt).toThrow(CliError);
    expect(attempt).toThrow(`--mtu ${JSON.stringify(text)} is not valid: give an MTU from 68 to 65535`);
    try {
      attempt();
    } catch (error) {
      expect(error instanceof CliError ? error.exitCode : undefined).toBe(EXIT.usage);
    }
  });

  it('takes leading zeros as decimal (not octal)', () => {
    expect(integerOption('--lease-seconds', '0600', 60, 31_536_000, 'whole seconds')).toBe(600);
  });
});
