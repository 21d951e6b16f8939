import { createRequire } from 'node:module';
import type { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';

// pino-pretty is only for people at a terminal; loading it costs start-up time everywhere else.
const require = createRequire(import.meta.url);

export type { Logger };

/** Log level from the environment (SPECTRUM_LOG_LEVEL), else the given default. */
export function logLevel(fallback: string, env: Readonly<Record<string, string | undefined>> = process.env): string {
  const wanted = env['SPECTRUM_LOG_LEVEL'];
  return wanted !== undefined && wanted !== '' && wanted in pino.levels.values ? wanted : fallback;
}

/**
 * Structured logs on stderr (stdout is for command output): JSON lines when stderr is not a
 * terminal, or when JSON was asked for; readable lines on a terminal.
 */
export function createLogger(name: string, options: { json?: boolean; level?: string } = {}): Logger {
  const level = options.level ?? logLevel('warn');
  if (options.json === true || !process.stderr.isTTY) return pino({ name, level }, pino.destination({ fd: 2, sync: true }));
  const pinoPretty = require('pino-pretty') as typeof import('pino-pretty');
  const pretty: Writable = pinoPretty({ destination: 2, sync: true, ignore: 'pid,hostname', translateTime: 'SYS:HH:MM:ss.l' });
  return pino({ name, level }, pretty);
}
