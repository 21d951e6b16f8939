// TEMPORARY stub until the VMM adapters land.
import type { AttachChoice } from './attach-mode.js';
import type { LinkReport, VmmPort } from './linker.js';
import { CliError } from '../shared/cli/run-cli.js';

export function vmmArgumentsFor(_report: LinkReport): Record<string, unknown> | undefined {
  return undefined;
}

export function vmmPort(_attach: AttachChoice, _flags: { qmpSocket: string; chSocket: string }): VmmPort {
  const fail = (): Promise<void> => Promise.reject(new CliError('VMM attachment is not available yet'));
  return { attach: fail, detach: fail };
}
