// Commands a line tells the operator to run after this run (an unlink once a VMM answers, a link
// again): whole, with the options of this run that the command needs, each with the value this
// run took (typed, or from its environment variable), a relative path made absolute, so that the
// command runs as printed from any working directory and without this run's environment.
import { TERMINAL_ACTIVE } from '../shared/shown-text.js';
import { UNIX_SOCKET_PATH_MAX } from '../shared/unix-socket-path.js';
import { VM_NAME_MAX } from './vm-name.js';

/**
 * The options of a run that a command printed after it carries over, each with the value the run
 * took (typed, or from its environment variable); one at its built-in default is left out, as the
 * printed command takes the same default, but for those a variable in the shell the command is
 * run from could change to act on other links (the state dir, config dir and prefixes: the CLI
 * gives them always, link-commands.ts givenOptions).
 */
export interface GivenOptions {
  /** The run's working directory, which a relative path below is relative to (undefined: it is gone, and the CLI refused relative paths). */
  readonly cwd: string | undefined;
  readonly configDir?: string;
  readonly stateDir?: string;
  readonly devicePrefix?: string;
  readonly netnsPrefix?: string;
  readonly mtu?: string;
  /** --attach's values, in order (none given: empty). */
  readonly attach: readonly string[];
  readonly qmpSocket?: string;
  readonly chSocket?: string;
  readonly vmmTimeout?: string;
  readonly qemuBus?: string;
  readonly lockWait?: string;
}

/** A run given no option: the command printed names none. */
export const NO_OPTIONS: GivenOptions = { cwd: undefined, attach: [] };

/** Words a POSIX shell reads back as they are. */
const SHELL_PLAIN = /^[A-Za-z0-9_./@%+=:,-]+$/;

/**
 * A word as a shell reads it back: as it is where it holds nothing the shell acts on; else
 * single-quoted; where it holds what a terminal acts on, in `$'...'` with each byte of such a
 * character as `\xHH` (bash, zsh, ksh and POSIX.1-2024 sh read it back), so that the line stays
 * one, shows nothing raw, and the command still runs as printed.
 */
export function shellWord(word: string): string {
  if (SHELL_PLAIN.test(word)) return word;
  if (!TERMINAL_ACTIVE.test(word)) return `'${word.replaceAll("'", "'\\''")}'`;
  let quoted = "$'";
  for (const char of word) {
    if (TERMINAL_ACTIVE.test(char)) for (const byte of Buffer.from(char)) quoted += `\\x${byte.toString(16).padStart(2, '0')}`;
    else quoted += char === "'" || char === '\\' ? `\\${char}` : char;
  }
  return `${quoted}'`;
}

/** A relative path joined to the working directory as it is, as the kernel takes it (absoluteSocket's rule: `..` after a symlink is not folded). */
const joined = (cwd: string, path: string): string => `${cwd === '/' ? '' : cwd}/${path}`;

/**
 * Whether a relative socket template, made absolute, gives every VM a socket path a Unix socket
 * can have (at most UNIX_SOCKET_PATH_MAX bytes, for the longest VM name): else the command is run
 * from the run's directory with the template as given.
 */
function templateFits(template: string, cwd: string): boolean {
  return Buffer.byteLength(joined(cwd, template).replaceAll('{vm}', 'v'.repeat(VM_NAME_MAX))) <= UNIX_SOCKET_PATH_MAX;
}

/** An option of a printed command: its flag, its value (left out where undefined), and whether the value is a path (a template: `{vm}` in it). */
type PrintedOption = readonly [flag: string, value: string | undefined, path?: 'dir' | 'template'];

/**
 * `spectrum-link WORDS OPTIONS`, every word shell-quoted where needed: each relative path made
 * absolute; where a template's cannot be for some VM (too long once absolute), every path as given
 * and the command run from the run's directory (`cd DIR && ...`).
 */
function printed(words: readonly string[], options: readonly PrintedOption[], cwd: string | undefined): string {
  const given = options.filter((option): option is readonly [string, string, ('dir' | 'template')?] => option[1] !== undefined);
  const relative = (value: string, path: PrintedOption[2]): boolean => path !== undefined && !value.startsWith('/');
  const fromCwd = cwd !== undefined && given.some(([, value, path]) => path === 'template' && relative(value, path) && !templateFits(value, cwd));
  const shown = given.flatMap(([flag, value, path]) => [flag, cwd !== undefined && !fromCwd && relative(value, path) ? joined(cwd, value) : value]);
  const command = ['spectrum-link', ...words, ...shown].map(shellWord).join(' ');
  return fromCwd && cwd !== undefined ? `cd ${shellWord(cwd)} && ${command}` : command;
}

/** The socket options of a printed command: the run's templates, or (`sockets`) a path in place of one. */
function socketOptions(given: GivenOptions, sockets: SocketOverride): PrintedOption[] {
  return [
    ['--qmp-socket', sockets.qmpSocket ?? given.qmpSocket, 'template'],
    ['--ch-socket', sockets.chSocket ?? given.chSocket, 'template'],
  ];
}

/** A socket option of a printed command given a path of its own (a socket the state recorded). */
export interface SocketOverride {
  readonly qmpSocket?: string;
  readonly chSocket?: string;
}

/**
 * `spectrum-link unlink VM WORDS` with `attach` as its --attach values and the run's options an
 * unlink takes that find what the run found: the state dir, the device prefix, the socket
 * templates (or `sockets`), the VMM timeout and the lock wait. (Not link's other options, which
 * unlink refuses; not the run's --attach unless passed: link's means another thing.)
 */
export function unlinkCommand(vm: string, words: readonly string[], given: GivenOptions, attach: readonly string[] = [], sockets: SocketOverride = {}): string {
  return printed(
    ['unlink', vm, ...words],
    [
      ['--state-dir', given.stateDir, 'dir'],
      ['--device-prefix', given.devicePrefix],
      ...attach.map((value): PrintedOption => ['--attach', value]),
      ...socketOptions(given, sockets),
      ['--vmm-timeout', given.vmmTimeout],
      ['--lock-wait', given.lockWait],
    ],
    given.cwd,
  );
}

/**
 * `spectrum-link link TARGETS` (VM names, or `--all`, `--keep-going`) with every option of the run
 * a link takes (--json aside: the command is for a human), `attach` added to its --attach values
 * (one already there is not said twice).
 */
export function linkCommand(targets: readonly string[], given: GivenOptions, attach: readonly string[] = []): string {
  const attachValues = [...new Set([...given.attach, ...attach])];
  return printed(
    ['link', ...targets],
    [
      ['--config-dir', given.configDir, 'dir'],
      ['--state-dir', given.stateDir, 'dir'],
      ['--device-prefix', given.devicePrefix],
      ['--netns-prefix', given.netnsPrefix],
      ['--mtu', given.mtu],
      ...attachValues.map((value): PrintedOption => ['--attach', value]),
      ...socketOptions(given, {}),
      ['--vmm-timeout', given.vmmTimeout],
      ['--qemu-bus', given.qemuBus],
      ['--lock-wait', given.lockWait],
    ],
    given.cwd,
  );
}

/**
 * A socket path for a command run from anywhere (ch-remote's, a QMP client's): as it is where
 * absolute; a relative one joined to the run's directory where that is a path a socket can have,
 * else as given with that directory (`from`) to run it from.
 */
export function socketFromAnywhere(path: string, cwd: string | undefined): { readonly path: string; readonly from?: string } {
  if (path.startsWith('/') || cwd === undefined) return { path };
  const absolute = joined(cwd, path);
  return Buffer.byteLength(absolute) <= UNIX_SOCKET_PATH_MAX ? { path: absolute } : { path, from: cwd };
}
