import { describe, expect, it } from 'vitest';
import { directoryOption } from '../../../shared/cli/directory-option.js';
import { CliError, EXIT } from '../../../shared/cli/run-cli.js';

describe('directoryOption', () => {
  it.each(['/var/lib/spectrum-link', 'relative/dir', '.', ' '])('takes %j as typed', (text) => {
    expect(directoryOption('--state-dir')(text)).toBe(text);
  });

  it('refuses the empty path, which would mean the working directory, as a usage error', () => {
    const attempt = (): string => directoryOption('--state-dir')('');
    expect(attempt).toThrow(CliError);
    expect(attempt).toThrow('--state-dir "" is not valid: give a directory (an empty path would mean the working directory)');
    try {
      attempt();
    } catch (error) {
      expect(error instanceof CliError ? error.exitCode : undefined).toBe(EXIT.usage);
    }
  });
});
