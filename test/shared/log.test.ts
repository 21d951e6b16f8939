import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createLogger, logLevel, wouldLog } from '../../shared/log.js';

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;

describe('wouldLog', () => {
  it('agrees with the logger createLogger makes, whatever SPECTRUM_LOG_LEVEL holds', () => {
    // Names of Object.prototype ("toString", ...) included: pino would throw if they got through.
    const wanted = fc.oneof(fc.constantFrom(...LEVELS, 'silent', '', 'INFO', 'verbose', 'toString', '__proto__', 'constructor'), fc.string({ maxLength: 8 }));
    fc.assert(
      fc.property(fc.option(wanted, { nil: undefined }), fc.constantFrom(...LEVELS), fc.constantFrom(...LEVELS), (value, level, fallback) => {
        const env = value === undefined ? {} : { SPECTRUM_LOG_LEVEL: value };
        const logger = createLogger('test', { json: true, level: logLevel(fallback, env) });
        expect(wouldLog(level, fallback, env)).toBe(logger.isLevelEnabled(level));
      }),
    );
  });
});
