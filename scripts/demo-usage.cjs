// scripts/demo's check of its arguments, run before scripts/setup installs or builds anything:
// bad usage is one line on stderr and exit 2, said as the demo says it (test/e2e/demo.ts, which
// parses them with commander through shared/cli/run-cli.ts); a request for help prints the demo's
// help on stdout and exits HELP_SHOWN (3), for scripts/demo to exit 0 without setting anything up
// (the demo itself, which setup builds, would print the same); what the demo runs with (its
// options, `--`) exits 0, quietly. The options are the demo's own (test/e2e/demo-options.json).
// Plain CommonJS for any Node.js: it runs before setup checks the version or runs npm ci. Once
// npm ci has put commander in node_modules, the parse is commander's, as the demo's (with its
// "(Did you mean --json?)"); before that (a fresh clone), the same rules checked here.
'use strict';
const { join } = require('path');

/** The exit code that tells scripts/demo the help was printed (bad usage is 2, as everywhere). */
const HELP_SHOWN = 3;

const root = join(__dirname, '..');
const options = require(join(root, 'test', 'e2e', 'demo-options.json'));
const args = process.argv.slice(2);

/** A message as run-cli.ts's oneLine says it: one line, nothing in it a terminal acts on. */
function oneLine(text) {
  return text
    .replace(/\s*\n\s*/g, ' ')
    .trim()
    .replace(/[\p{Cc}\p{Cf}]/gu, (char) => {
      const code = char.codePointAt(0);
      return code > 0xffff ? `\\u{${code.toString(16)}}` : `\\u${code.toString(16).padStart(4, '0')}`;
    });
}

/**
 * The demo's parse, by commander: undefined where it runs with the arguments, `{ help }` (the text
 * commander prints, as the demo's own) where they ask for help, else `{ problem }`, its error.
 */
function commanderVerdict(Command) {
  let said = '';
  let help = '';
  const program = new Command('demo')
    .exitOverride()
    .configureOutput({ writeOut: (text) => (help += text), writeErr: () => {}, outputError: (text) => (said = text) })
    .action(() => {});
  for (const [flag, description] of Object.entries(options)) program.option(flag, description);
  try {
    program.parse(args, { from: 'user' });
    return undefined;
  } catch (error) {
    if (!error || typeof error.code !== 'string' || !error.code.startsWith('commander.')) throw error;
    // Help asked for: printed as the demo prints it (exit 0).
    if (error.exitCode === 0) return { help };
    return { problem: said.replace(/^error: /, '') };
  }
}

/**
 * The demo's help as commander lays it out on a stream that is no terminal (80 columns; every
 * line of the demo's fits), for a tree without node_modules.
 */
function plainHelp() {
  const entries = [...Object.entries(options), ['-h, --help', 'display help for command']];
  const width = Math.max(...entries.map(([flag]) => flag.length));
  return `Usage: demo [options]\n\nOptions:\n${entries.map(([flag, description]) => `  ${flag.padEnd(width)}  ${description}\n`).join('')}`;
}

/**
 * Commander's rules, for a tree without node_modules: `--help` or `-h` anywhere before `--` is
 * help; else the first unknown option is refused, then any operand (`-` is one, and so is every
 * argument after `--`). As commanderVerdict says it.
 */
function plainVerdict() {
  const end = args.indexOf('--');
  const before = end === -1 ? args : args.slice(0, end);
  const after = end === -1 ? [] : args.slice(end + 1);
  if (before.includes('--help') || before.includes('-h')) return { help: plainHelp() };
  const isOption = (arg) => arg.length > 1 && arg.startsWith('-');
  const unknown = before.find((arg) => isOption(arg) && !Object.prototype.hasOwnProperty.call(options, arg));
  if (unknown !== undefined) return { problem: `unknown option '${unknown}'` };
  const operands = before.filter((arg) => !isOption(arg)).length + after.length;
  if (operands > 0) return { problem: `too many arguments. Expected 0 arguments but got ${operands}.` };
  return undefined;
}

let Command;
try {
  // This tree's own, not one found above it.
  ({ Command } = require(join(root, 'node_modules', 'commander')));
} catch {
  // Not installed yet (or too new for this Node.js, which setup then says).
}
let verdict;
try {
  verdict = Command === undefined ? plainVerdict() : commanderVerdict(Command);
} catch {
  // Commander failing itself (too new for this Node.js, which setup then says): checked as without it.
  verdict = plainVerdict();
}
// No syntax past ES2019 (`?.` and the like): an older Node.js than setup takes runs this too.
if (verdict !== undefined && verdict.help !== undefined) {
  process.stdout.write(verdict.help);
  process.exitCode = HELP_SHOWN;
} else if (verdict !== undefined && verdict.problem !== undefined) {
  process.stderr.write(`demo: ${oneLine(verdict.problem)}\n`);
  process.exitCode = 2;
}
