import { createRequire } from 'node:module';
import type { Writable } from 'node:stream';
import type { Logger } from 'pino';

// pino (and pino-pretty, only for people at a terminal) load on first use: short-lived commands
// that log nothing should not pay for them at start-up.
const require = createRequire(import.meta.url);
const loadPino = (): typeof import('pino') => require('pino') as typeof import('pino');

export type { Logger };

/** Log level from the environment (SPECTRUM_LOG_LEVEL), else the given default. */
export function logLevel(fallback: string, env: Readonly<Record<string, string | undefined>> = process.env): string {
  const wanted = env['SPECTRUM_LOG_LEVEL'];
  // Own keys only: `in` would also take inherited names such as `toString`, which pino refuses.
  return wanted !== undefined && wanted !== '' && Object.hasOwn(loadPino().levels.values, wanted) ? wanted : fallback;
}

/** pino's level values (pino.levels.values), known without loading pino. */
const LEVEL_VALUES = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 } as const;
type LevelName = keyof typeof LEVEL_VALUES;
/** The names logLevel accepts: the levels, and 'silent' (nothing is written). */
const THRESHOLDS: Readonly<Record<string, number>> = { ...LEVEL_VALUES, silent: Infinity };

/**
 * Whether a logger made by createLogger (at the level logLevel(fallback) picks) would write a
 * record at this level. Lets a short-lived command skip loading pino for a record nobody sees.
 */
export function wouldLog(level: LevelName, fallback: LevelName = 'warn', env: Readonly<Record<string, string | undefined>> = process.env): boolean {
  const wanted = env['SPECTRUM_LOG_LEVEL'];
  const threshold = (wanted !== undefined && Object.hasOwn(THRESHOLDS, wanted) ? THRESHOLDS[wanted] : undefined) ?? LEVEL_VALUES[fallback];
  return LEVEL_VALUES[level] >= threshold;
}

/**
 * Structured logs on stderr (stdout is for command output): JSON lines when stderr is not a
 * terminal, or when JSON was asked for; readable lines on a terminal.
 */
export function createLogger(name: string, options: { json?: boolean; level?: string } = {}): Logger {
  const pino = loadPino();
  const level = options.level ?? logLevel('warn');
  if (options.json === true || !process.stderr.isTTY) return pino({ name, level }, pino.destination({ fd: 2, sync: true }));
  const pinoPretty = require('pino-pretty') as typeof import('pino-pretty');
  const pretty: Writable = pinoPretty({ destination: 2, sync: true, ignore: 'pid,hostname', translateTime: 'SYS:HH:MM:ss.l' });
  return pino({ name, level }, pretty);
}
