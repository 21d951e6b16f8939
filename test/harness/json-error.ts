/**
 * The error object a `--json` failure ends its stdout with (run-cli.ts): `{"error": {"kind",
 * "message", "exitCode"[, "details"]}}` on a line of its own, after what the command printed.
 */
export interface JsonError {
  readonly kind: string;
  readonly message: string;
  readonly exitCode: number;
  readonly details?: readonly string[];
}

/** stdout split into what the command printed and the error object it ends with, if it does. */
export function splitJsonError(stdout: string): { printed: string; error: JsonError | undefined } {
  const body = stdout.endsWith('\n') ? stdout.slice(0, -1) : stdout;
  const start = body.lastIndexOf('\n') + 1;
  const last = body.slice(start);
  if (!last.startsWith('{"error":')) return { printed: stdout, error: undefined };
  return { printed: stdout.slice(0, start), error: (JSON.parse(last) as { error: JsonError }).error };
}

/** The error object of a failure whose stderr line is `line` (the bin's name and a newline included, or not). */
export function jsonErrorOf(line: string, kind: string, exitCode: number, details?: readonly string[]): JsonError {
  const message = line.replace(/^spectrum-(?:link|netd): /, '').replace(/\n$/, '');
  return { kind, message, exitCode, ...(details !== undefined && { details }) };
}

/**
 * What the command printed, less the error object it ends with where it does, which must agree
 * with the run: its exitCode the run's `code`, `BIN: message` one of its stderr lines.
 */
export function printedChecked(stdout: string, code: number, stderr: readonly string[], bin = 'spectrum-link'): string {
  const { printed, error } = splitJsonError(stdout);
  if (error !== undefined && (error.exitCode !== code || !stderr.includes(`${bin}: ${error.message}`))) {
    throw new Error(`the error object ${JSON.stringify(error)} does not agree with exit code ${code} and stderr ${JSON.stringify(stderr)}`);
  }
  return printed;
}
