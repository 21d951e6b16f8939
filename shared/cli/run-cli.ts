import { Command, CommanderError } from 'commander';
import { AddressError } from '../address-error.js';
import { TERMINAL_ACTIVE, jsonEscaped } from '../shown-text.js';
import { exitProcess, releaseHungUpTerminal, sayExitOnStdout } from './exit.js';

/** Exit codes shared by both bins; scripts rely on them. */
export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  internal: 70,
} as const;

/**
 * An error meant for the user: printed as one line, then one line per detail (e.g. every problem
 * found by a check), exit code chosen by the thrower. `detailsAs` 'lines': the details are more
 * lines like the first (several failures, each said in full), not indented under it. Exit 70 (a
 * bug) says `internal error:` at the start of the first line, but with `bugSaid`: the lines say
 * themselves which failure is a bug (one of several failures said, not the first of them, maybe).
 */
export class CliError extends Error {
  override readonly name = 'CliError';
  /** The kind of the module error it says (one it was made from), for `--json`'s error object. */
  readonly errorKind: string | undefined;
  /** With `--json`, the command printed this failure in JSON already (check's `"valid": false`): no error object for it. */
  readonly saidInJson: boolean;
  constructor(
    message: string,
    readonly exitCode: number = EXIT.failure,
    readonly details: readonly string[] = [],
    readonly detailsAs: 'details' | 'lines' = 'details',
    readonly bugSaid = false,
    more: { readonly errorKind?: string | undefined; readonly saidInJson?: boolean } = {},
  ) {
    super(message);
    this.errorKind = more.errorKind;
    this.saidInJson = more.saidInJson ?? false;
  }
}

/**
 * A bin's own module error classes and the exit code each means (e.g. a name error: usage);
 * optionally only for some kinds of that class.
 */
export type ErrorExitCodes = ReadonlyArray<
  readonly [abstract new (...args: never[]) => Error, number] | readonly [abstract new (...args: never[]) => Error, number, readonly string[]]
>;

/** Errors from a known module carry their own code; anything else is a bug, still one line. */
export function exitCodeOf(error: unknown, known: ErrorExitCodes): number {
  if (error instanceof AddressError) return EXIT.usage;
  if (error instanceof CliError) return error.exitCode;
  for (const [type, code, kinds] of known) {
    if (!(error instanceof type)) continue;
    if (kinds === undefined || kinds.includes(String((error as { kind?: unknown }).kind))) return code;
  }
  // Every module error of this project carries a `kind` (one per failure): an expected failure
  // whose message says what to check. Anything else is a bug.
  if (error instanceof Error && typeof (error as { kind?: unknown }).kind === 'string') return EXIT.failure;
  return EXIT.internal;
}

// What a terminal would act on, or a viewer break a line at (shown-text.ts), each one of them;
// and a lone surrogate (\p{Cs} matches no half of a whole pair in a 'u' pattern): UTF-8 cannot
// hold one, and written out it became U+FFFD, where JSON.stringify writes its escape.
const EVERY_TERMINAL_ACTIVE = new RegExp(`${TERMINAL_ACTIVE.source}|\\p{Cs}`, 'gu');

/**
 * A message as one line, with nothing in it a terminal acts on: names from files and peers are
 * quoted where they are put in (shown-text.ts), but a path or value as the operator gave it (an
 * option, an environment variable) is said as given, and an escape sequence in it would reach
 * the terminal raw. Escaped here, for every message, as JSON writes them (jsonEscaped: one beyond
 * the BMP, a tag character, as its surrogate pair, as quoteText writes it).
 */
export function oneLine(text: string): string {
  return text
    .replace(/\s*\n\s*/g, ' ')
    .trim()
    .replace(EVERY_TERMINAL_ACTIVE, jsonEscaped);
}

/**
 * `help [command]` as a command of the program's own, in place of commander's: that one, asked of
 * a command there is none of, prints the program's whole help as an error (exit 2) without saying
 * why; this one says it in one line, as an unknown command is said.
 */
function addHelpCommand(program: Command): void {
  if (program.commands.length === 0 || program.commands.some((command) => command.name() === 'help')) return;
  const help = new Command('help')
    .description('display help for command')
    .argument('[command]')
    .action(async (name: string | undefined) => {
      if (name === undefined) program.help();
      const command = program.commands.find((candidate) => candidate.name() === name || candidate.aliases().includes(name));
      if (command === undefined) {
        // Said by commander itself, as `PROGRAM -- NAME` is (its "Did you mean ...?" included): the
        // program parsed again with NAME as its one operand, which, as the bins have no default
        // command, fails as an unknown command.
        await program.parseAsync(['--', name], { from: 'user' });
        throw new CliError(`unknown command '${name}'`, EXIT.usage);
      }
      command.help();
    });
  program.helpCommand(false).addCommand(help);
}

/**
 * The kind `--json`'s error object gives a failure (`code`: its exit code): the kind of its module
 * error; else `usage` (exit 2: commander's own, or a bad option value), `internal` (a bug, 70),
 * `interrupted` (a signal's exit code, 128 + its number) or `failure`.
 */
export function errorKindOf(error: unknown, code: number): string {
  const own = error instanceof CliError ? error.errorKind : error instanceof Error ? (error as { kind?: unknown }).kind : undefined;
  if (typeof own === 'string' && own !== '') return own;
  if (code === EXIT.usage) return 'usage';
  if (code === EXIT.internal) return 'internal';
  return code > 128 ? 'interrupted' : 'failure';
}

/** What `--json` prints on stdout of a failure: one line, its stderr lines' text (less the bin's name) as `message` and `details`. */
export function errorJsonLine(kind: string, message: string, exitCode: number, details: readonly string[]): string {
  return `${JSON.stringify({ error: { kind, message, exitCode, ...(details.length > 0 && { details }) } })}\n`;
}

/**
 * Whether the run asked for JSON: `ran`, the command whose action ran (or failed), says so by its
 * own `--json`; a run that failed before any did (commander's usage errors, a bad option value)
 * where `--json` is among the words before any `--`, and the command they name takes it (an
 * unknown command, or one without --json, is said in text alone).
 */
function jsonAsked(program: Command, argv: readonly string[], ran: Command | undefined): boolean {
  const takesJson = (command: Command): boolean => command.options.some((option) => option.long === '--json');
  if (ran !== undefined) return takesJson(ran) && ran.opts()['json'] === true;
  const end = argv.indexOf('--');
  const words = end === -1 ? argv : argv.slice(0, end);
  const at = words.findIndex((word) => !word.startsWith('-'));
  const name = words[at];
  const command = program.commands.find((candidate) => candidate.name() === name || candidate.aliases().includes(name ?? ''));
  if (command === undefined || !takesJson(command)) return false;
  if (words.slice(0, at).includes('--json')) return true;
  // A word of its own, not the value of an option that takes one (`--config-dir --json`).
  for (let index = at + 1; index < words.length; index += 1) {
    const word = words[index];
    if (word === '--json') return true;
    if (command.options.some((option) => option.required && (option.long === word || option.short === word))) index += 1;
  }
  return false;
}

/**
 * Run a commander program so that every failure is one line on stderr and a non-zero exit:
 * bad input exits 2, other expected failures their own code, bugs 70 — never a stack trace.
 * With `--json`, a failure is also one JSON object on stdout (errorJsonLine), after anything the
 * command printed, but where the command printed it in JSON already (CliError.saidInJson).
 */
export async function runCli(program: Command, argv: readonly string[], known: ErrorExitCodes = []): Promise<number> {
  const name = program.name();
  addHelpCommand(program);
  program.exitOverride();
  program.configureOutput({
    outputError: (text, write) => write(`${name}: ${oneLine(text.replace(/^error: /, ''))}\n`),
  });
  // Subcommands inherit neither setting from their parent when they were added earlier.
  for (const command of program.commands) {
    command.exitOverride();
    command.configureOutput(program.configureOutput());
  }
  let ran: Command | undefined;
  program.hook('preAction', (_program, command) => {
    ran = command;
    // A signal that ends it at once (interruption.ts) says so in JSON too.
    if (jsonAsked(program, argv, ran)) sayExitOnStdout((line, code) => process.stdout.write(errorJsonLine('interrupted', oneLine(line), code, [])));
  });
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return EXIT.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version requests arrive here too, with exit code 0; commander already printed.
      if (error.exitCode === 0) return EXIT.ok;
      // Commander printed its line (outputError, above) from this message.
      if (jsonAsked(program, argv, ran)) process.stdout.write(errorJsonLine('usage', oneLine(error.message.replace(/^error: /, '')), EXIT.usage, []));
      return EXIT.usage;
    }
    const message = error instanceof Error ? error.message : String(error);
    const code = exitCodeOf(error, known);
    const indent = error instanceof CliError && error.detailsAs === 'lines' ? ' ' : '   ';
    const detailLines = error instanceof CliError ? error.details.map(oneLine) : [];
    const bug = code === EXIT.internal && !(error instanceof CliError && error.bugSaid);
    const line = `${bug ? 'internal error: ' : ''}${oneLine(message)}`;
    process.stderr.write(`${name}: ${line}\n${detailLines.map((detail) => `${name}:${indent}${detail}\n`).join('')}`);
    if (!(error instanceof CliError && error.saidInJson) && jsonAsked(program, argv, ran)) {
      process.stdout.write(errorJsonLine(errorKindOf(error, code), line, code, detailLines));
    }
    return code;
  } finally {
    sayExitOnStdout(undefined);
  }
}

/**
 * Watch the bin's output streams. A reader that went away (`| head`, EPIPE) ends the output
 * quietly, as SIGPIPE ends a C program, where Node would throw a stack trace; any other failed
 * write to stdout (a full disk, a closed descriptor) is said on a line. Either way the exit code
 * says the output is incomplete. `flushed` resolves once what was written has left the process:
 * a pipe takes 64 KiB at once, and the rest waits for its reader.
 */
function watchOutput(name: string): { failed: () => boolean; flushed: () => Promise<void> } {
  let failed = false;
  const fail = (): void => {
    failed = true;
    // Also where the exit code was set already (a bin that does not exit at once).
    if (process.exitCode === undefined || process.exitCode === EXIT.ok) process.exitCode = EXIT.failure;
  };
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (failed) return;
    fail();
    if (error.code !== 'EPIPE') process.stderr.write(`${name}: cannot write the output (${error.code ?? error.message}): it is incomplete\n`);
  });
  // Nowhere left to say it: only the exit code.
  process.stderr.on('error', fail);
  const flushed = (stream: NodeJS.WriteStream): Promise<void> =>
    stream.destroyed || stream.writableLength === 0 ? Promise.resolve() : new Promise((resolve) => stream.write('', () => resolve()));
  return {
    failed: () => failed,
    flushed: async () => {
      await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
      // A write that failed at once reports it on the next tick.
      await new Promise((resolve) => setImmediate(resolve));
    },
  };
}

/**
 * Entry point helper for the bins: set the exit code once the output has been written (or could
 * not be). `exitAtOnce`: exit then instead of letting Node tear its heap down page by page (5-10
 * ms); only for one-shot commands.
 */
export function main(program: Command, known: ErrorExitCodes = [], options: { exitAtOnce?: boolean } = {}): void {
  const output = watchOutput(program.name());
  const finish = async (code: number): Promise<void> => {
    await output.flushed();
    const final = code === EXIT.ok && output.failed() ? EXIT.failure : code;
    // A terminal that hung up meanwhile would have Node abort as it exits (exit.ts).
    if (options.exitAtOnce === true) exitProcess(final);
    releaseHungUpTerminal();
    process.exitCode = final;
  };
  runCli(program, process.argv.slice(2), known).then(finish, (error: unknown) => {
    process.stderr.write(`${program.name()}: internal error: ${String(error)}\n`);
    return finish(EXIT.internal);
  });
}
