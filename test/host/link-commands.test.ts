// spectrum-link's linker commands as an operator meets them: --help texts and option parsing.
// (What the commands do is tested in link-netns.test.ts and link-vmm.test.ts.)
import { readFile } from 'node:fs/promises';
import { Command } from 'commander';
import { describe, expect, it, vi } from 'vitest';
import { checkCommand } from '../../host/check-command.js';
import { forcedLine, foreignChangedLines, givenOptions, interruptedUndoingError, leftDownLine, linkCommands, misnamedWarning, nicRemoval, undoStateLine, undoStepLine, unlistedLine } from '../../host/link-commands.js';
import type { LeftDownLink, LinkReport, VmmDetachFailure, VmmPort } from '../../host/linker-types.js';
import { DEFAULT_LOCK_TIMEOUT_MS } from '../../host/state-store.js';
import { vmName } from '../../host/vm-name.js';
import { vmmPort } from '../../host/vmm-port.js';
import { type GivenOptions, NO_OPTIONS, unlinkCommand } from '../../host/printed-command.js';
import { parseAttachChoice } from '../../host/attach-mode.js';
import { CliError, EXIT, runCli } from '../../shared/cli/run-cli.js';

const commands = (): Command[] => linkCommands({}, () => ({}) as VmmPort);
const named = (name: string): Command => {
  const command = commands().find((candidate) => candidate.name() === name);
  if (command === undefined) throw new Error(`no ${name} command`);
  return command;
};

/** The options each command uses, and so takes (--help aside). */
const OWN_OPTIONS: Record<string, readonly string[]> = {
  link: ['--config-dir', '--state-dir', '--device-prefix', '--netns-prefix', '--mtu', '--attach', '--qmp-socket', '--ch-socket', '--vmm-timeout', '--qemu-bus', '--lock-wait', '--json', '--all', '--keep-going'],
  unlink: ['--state-dir', '--device-prefix', '--attach', '--qmp-socket', '--ch-socket', '--vmm-timeout', '--lock-wait', '--json', '--forget', '--force'],
  list: ['--state-dir', '--device-prefix', '--netns-prefix', '--json'],
  show: ['--config-dir', '--state-dir', '--device-prefix', '--netns-prefix', '--json'],
  gc: ['--state-dir', '--device-prefix', '--lock-wait', '--json'],
};
/** The commands that take the state lock, and so --lock-wait. */
const LOCKING = ['link', 'unlink', 'gc'];
const EVERY_OPTION = [...new Set(Object.values(OWN_OPTIONS).flat())];
/** A value for each option that takes one. */
const VALUE: Record<string, string> = { '--mtu': '9000', '--attach': 'qemu', '--qemu-bus': 'rp0', '--netns-prefix': 'vm-', '--vmm-timeout': '300', '--lock-wait': '60' };
const withValue = (option: string): string[] => (['--json', '--all', '--keep-going', '--forget', '--force'].includes(option) ? [option] : [option, VALUE[option] ?? '/tmp/x']);
const argumentsOf: Record<string, string[]> = { link: ['appvm-lynx'], unlink: ['appvm-lynx'], list: [], show: ['appvm-lynx'], gc: [] };

/**
 * Run spectrum-link's linker commands as the bin does (runCli), each command's work replaced by
 * nothing (so no test touches a device): the exit code, stdout, stderr and whether the command ran.
 */
async function parse(args: string[]): Promise<{ code: number; out: string; err: string; ran: boolean }> {
  let out = '';
  let err = '';
  let ran = false;
  const stdout = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => ((out += String(chunk)), true));
  const stderr = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((err += String(chunk)), true));
  try {
    const program = new Command('spectrum-link');
    for (const command of commands()) program.addCommand(command.action(() => void (ran = true)));
    const code = await runCli(program, args);
    return { code, out, err, ran };
  } finally {
    stdout.mockRestore();
    stderr.mockRestore();
  }
}

/**
 * A run's options as the CLI passes them to a line: relative paths (the config dir, the QMP
 * template) relative to its working directory, a --device-prefix left at its default.
 */
const RUN: GivenOptions = {
  cwd: '/srv/spectrum',
  configDir: 'config',
  stateDir: '/var/state',
  mtu: '9000',
  attach: ['netvm=qemu'],
  qmpSocket: 'q/{vm}.qmp',
  vmmTimeout: '20000',
  lockWait: '5',
};

/** A link of `vm` to netvm with id `id`, as the linker reports it. */
const link = (vm: string, id: number): LinkReport => ({
  vm,
  provider: 'netvm',
  id,
  clientIp: '100.64.0.7',
  clientMac: '0A:B3:EC:00:00:07',
  providerMac: '0A:B3:EC:80:00:07',
  bridge: `snb${id}`,
  clientDevice: `snc${id}`,
  providerDevice: `snp${id}`,
  clientAttach: 'qemu',
  providerAttach: 'netns',
});

describe('spectrum-link linker commands', () => {
  it.each([
    ['link', 'keeps the mode its links record.*\\(default: recorded, else none\\)'],
    ['unlink', '\\(repeatable\\) \\(default: none\\)'],
  ])('%s --help names the default attach mode, not an empty list', (name, fallback) => {
    const help = named(name).helpInformation().replace(/\s+/g, ' ');
    expect(help).not.toContain('[]');
    expect(help).toMatch(new RegExp(`--attach <mode> attach mode.*${fallback}`));
  });

  it.each(Object.keys(OWN_OPTIONS))('%s --help names the environment variable behind each default that has one', (name) => {
    const help = named(name).helpInformation().replace(/\s+/g, ' ');
    const expected: Record<string, string> = {
      '--config-dir': '(default: $SPECTRUM_CONFIG_DIR or /ext/svc/data)',
      '--state-dir': '(default: $SPECTRUM_STATE_DIR or /var/lib/spectrum-link)',
      '--device-prefix': '(default: $SPECTRUM_DEVICE_PREFIX, else the one the state records, else sn)',
      '--netns-prefix': '(default: $SPECTRUM_NETNS_PREFIX, else the one the state records, else none)',
      '--lock-wait': '(default: $SPECTRUM_LOCK_WAIT or 600)',
    };
    for (const [option, text] of Object.entries(expected)) if ((OWN_OPTIONS[name] ?? []).includes(option)) expect(help, option).toContain(text);
  });

  it('link --help says --keep-going\'s exit codes as the README does (70 for a VM failed by a bug outranks 2), and --vmm-timeout\'s default as a number, unquoted', () => {
    const help = named('link').helpInformation().replace(/\s+/g, ' ');
    expect(help).toContain('exits 70 if any failed by a bug, else 2 if any failed by bad input, else 1 if any failed');
    for (const name of ['link', 'unlink']) expect(named(name).helpInformation().replace(/\s+/g, ' '), name).toContain('gets twice it (default: 5000)');
  });

  it("says a port's STP state the kernel refused as its carrier was lost (untilCarrier) as not forwarding yet, not as done", () => {
    const changed = (untilCarrier: boolean) => ({ bridge: 'snb7', released: [], addressesRemoved: [], settingsPutBack: [{ device: 'snp7', settings: ['hairpin off', 'state forwarding'], ...(untilCarrier && { untilCarrier: true as const }) }] });
    expect(foreignChangedLines('appvm-lynx', changed(false))).toEqual(["link appvm-lynx: put back snp7's hairpin off, state forwarding (a port of bridge snb7)"]);
    expect(foreignChangedLines('appvm-lynx', changed(true))).toEqual([
      "link appvm-lynx: put back snp7's hairpin off, state forwarding (a port of bridge snb7); its state once its carrier is back: the kernel holds it disabled until then",
    ]);
  });

  it('check, link and show describe --config-dir in the same words', () => {
    const described = (command: Command): string | undefined => command.options.find((option) => option.long === '--config-dir')?.description;
    expect(described(named('link'))).toBe(described(checkCommand({})));
    expect(described(named('show'))).toBe(described(checkCommand({})));
  });

  it.each(LOCKING)('%s --help gives the range of --lock-wait', (name) => {
    const help = named(name).helpInformation().replace(/\s+/g, ' ');
    expect(help).toContain('--lock-wait <seconds> how long to wait for another spectrum-link that holds the state lock: 0 (not at all) to 3600 (default: $SPECTRUM_LOCK_WAIT or 600)');
  });

  it.each(LOCKING)('%s waits 600 s for the lock by default (as the store does), or what $SPECTRUM_LOCK_WAIT says, or what --lock-wait says', (name) => {
    expect(DEFAULT_LOCK_TIMEOUT_MS).toBe(600_000);
    const waitOf = (env: Record<string, string>, args: readonly string[]): unknown => {
      let wait: unknown;
      const command = linkCommands(env, () => ({}) as VmmPort).find((candidate) => candidate.name() === name)!;
      command
        .exitOverride()
        .action((...parsed: unknown[]) => void (wait = (parsed.at(-2) as { lockWait: unknown }).lockWait))
        .parse([...(argumentsOf[name] ?? []), ...args], { from: 'user' });
      return wait;
    };
    expect(waitOf({}, [])).toBe('600');
    // An empty variable is as none.
    expect(waitOf({ SPECTRUM_LOCK_WAIT: '' }, [])).toBe('600');
    expect(waitOf({ SPECTRUM_LOCK_WAIT: '1200' }, [])).toBe('1200');
    expect(waitOf({ SPECTRUM_LOCK_WAIT: '1200' }, ['--lock-wait', '0'])).toBe('0');
  });

  it.each(['link', 'unlink'])(
    '%s: the commands its lines print name the state dir, config dir and prefixes whatever their source (the default too), so that another value of their variable in the shell they are run from does not change what they act on; the lock wait only where given',
    (name) => {
      const printedOf = (env: Record<string, string>, args: readonly string[]): GivenOptions => {
        let given: GivenOptions | undefined;
        const command = linkCommands(env, () => ({}) as VmmPort).find((candidate) => candidate.name() === name)!;
        command
          .exitOverride()
          .action((...parsed: unknown[]) => void (given = givenOptions(parsed.at(-2) as Parameters<typeof givenOptions>[0], parsed.at(-1) as Command, env)))
          .parse([...(argumentsOf[name] ?? []), ...args], { from: 'user' });
        if (given === undefined) throw new Error(`${name} did not run`);
        return given;
      };
      const withoutCwd = ({ cwd: _, ...options }: GivenOptions): Omit<GivenOptions, 'cwd'> => options;
      const linkOnly = (options: Partial<GivenOptions>): Partial<GivenOptions> => (name === 'link' ? options : {});
      // Each at its default: said all the same (a $SPECTRUM_STATE_DIR where the command is run would lead it elsewhere).
      expect(withoutCwd(printedOf({}, []))).toEqual({ stateDir: '/var/lib/spectrum-link', devicePrefix: 'sn', attach: [], ...linkOnly({ configDir: '/ext/svc/data', netnsPrefix: '' }) });
      const fromEnv = { SPECTRUM_STATE_DIR: '/srv/state', SPECTRUM_CONFIG_DIR: '/srv/config', SPECTRUM_DEVICE_PREFIX: 'tp', SPECTRUM_NETNS_PREFIX: 'vm-', SPECTRUM_LOCK_WAIT: '5' };
      expect(withoutCwd(printedOf(fromEnv, []))).toEqual({ stateDir: '/srv/state', devicePrefix: 'tp', attach: [], lockWait: '5', ...linkOnly({ configDir: '/srv/config', netnsPrefix: 'vm-' }) });
      // The options typed win over the variables, as in the run.
      const typed = ['--state-dir', '/typed/state', '--device-prefix', 'ty', '--lock-wait', '0', ...(name === 'link' ? ['--config-dir', '/typed/config', '--netns-prefix', ''] : [])];
      expect(withoutCwd(printedOf(fromEnv, typed))).toEqual({ stateDir: '/typed/state', devicePrefix: 'ty', attach: [], lockWait: '0', ...linkOnly({ configDir: '/typed/config', netnsPrefix: '' }) });
      // The unlink it prints, at the defaults: both named.
      expect(unlinkCommand('appvm-lynx', ['--force'], printedOf({}, []))).toBe('spectrum-link unlink appvm-lynx --force --state-dir /var/lib/spectrum-link --device-prefix sn');
    },
  );

  it.each(['link', 'unlink'])('%s --help gives the range of --vmm-timeout that the VMM options take', (name) => {
    const help = named(name).helpInformation().replace(/\s+/g, ' ');
    expect(help).toContain('--vmm-timeout <ms> bound on each VMM request, and on waiting for a guest to release a NIC: 1 to 600000;');
    const port = (vmmTimeout: string): VmmPort => vmmPort(parseAttachChoice([]), { qmpSocket: '/run/vm/{vm}/qmp.sock', chSocket: '/run/vm/{vm}/vmm', vmmTimeout });
    expect(() => port('600000')).not.toThrow();
    expect(() => port('1')).not.toThrow();
    for (const outside of ['600001', '0']) expect(() => port(outside)).toThrow(expect.objectContaining({ exitCode: EXIT.usage, message: expect.stringContaining('from 1 to 600000') }));
  });

  it('link --help gives the range of --mtu, the most a tap takes, and that a link keeps the MTU it records', () => {
    const help = named('link').helpInformation().replace(/\s+/g, ' ');
    expect(help).toContain("--mtu <bytes> MTU of every link device, which the VMs' NICs learn: 68 to 65535, a tap at most 65521 (default: the MTU the link records, else 1500)");
  });

  it.each(Object.keys(OWN_OPTIONS))('%s takes, and --help lists, only the options it uses', (name) => {
    const command = named(name);
    expect(command.options.map((option) => option.long)).toEqual(OWN_OPTIONS[name]);
    const listed = [...command.helpInformation().matchAll(/^ {2}(?:-\w, )?(--[a-z-]+)/gm)].map((match) => match[1]);
    expect(listed).toEqual([...(OWN_OPTIONS[name] ?? []), '--help']);
  });

  it.each(Object.keys(OWN_OPTIONS))('%s accepts each of its options', async (name) => {
    for (const option of OWN_OPTIONS[name] ?? []) {
      // --all names no VM; the others come after the command's arguments.
      const args = option === '--all' ? [name, option] : [name, ...(argumentsOf[name] ?? []), ...withValue(option)];
      expect(await parse(args), args.join(' ')).toEqual({ code: EXIT.ok, out: '', err: '', ran: true });
    }
  });

  it.each(Object.keys(OWN_OPTIONS))('%s refuses every option it does not use: one line on stderr, exit 2, nothing run', async (name) => {
    const unused = EVERY_OPTION.filter((option) => !(OWN_OPTIONS[name] ?? []).includes(option));
    expect(unused.length).toBeGreaterThan(0);
    for (const option of unused) {
      const args = [name, ...(argumentsOf[name] ?? []), ...withValue(option)];
      expect(await parse(args), args.join(' ')).toEqual({ code: EXIT.usage, out: '', err: `spectrum-link: unknown option '${option}'\n`, ran: false });
    }
  });

  it.each(Object.keys(OWN_OPTIONS))('%s refuses an empty --state-dir or --config-dir (the working directory): one line, exit 2, nothing run', async (name) => {
    for (const option of ['--state-dir', '--config-dir'].filter((flag) => (OWN_OPTIONS[name] ?? []).includes(flag))) {
      const args = [name, ...(argumentsOf[name] ?? []), option, ''];
      const err = `spectrum-link: ${option} "" is not valid: give a directory (an empty path would mean the working directory)\n`;
      expect(await parse(args), args.join(' ')).toEqual({ code: EXIT.usage, out: '', err, ran: false });
    }
  });

  it.each(Object.keys(OWN_OPTIONS))('%s refuses an option of one value given twice with different values, in one line, exit 2, nothing run; the same value twice is taken', async (name) => {
    const scalar = (OWN_OPTIONS[name] ?? []).filter((option) => option !== '--attach' && withValue(option).length === 2);
    expect(scalar.length).toBeGreaterThan(0);
    for (const option of scalar) {
      const first = VALUE[option] ?? '/tmp/x';
      const second = option === '--mtu' ? '1500' : option === '--vmm-timeout' ? '5000' : option === '--lock-wait' ? '0' : `${first}2`;
      const args = [name, ...(argumentsOf[name] ?? []), option, first, option, second];
      const err = `spectrum-link: ${option} "${first}" and ${option} "${second}" give two values: keep one\n`;
      expect(await parse(args), args.join(' ')).toEqual({ code: EXIT.usage, out: '', err, ran: false });
      const same = [name, ...(argumentsOf[name] ?? []), option, first, `${option}=${first}`];
      expect(await parse(same), same.join(' ')).toEqual({ code: EXIT.ok, out: '', err: '', ran: true });
    }
  });

  it.each(Object.keys(OWN_OPTIONS))('%s takes --state-dir and --config-dir given twice as paths to one directory (/x and /x/, x and ./x), and refuses two directories', async (name) => {
    const directories = ['--state-dir', '--config-dir'].filter((flag) => (OWN_OPTIONS[name] ?? []).includes(flag));
    expect(directories.length).toBeGreaterThan(0);
    for (const option of directories) {
      for (const [first, second] of [['/tmp/x', '/tmp/x/'], ['/tmp/x/', '/tmp//x/.'], ['x', './x/']] as const) {
        const args = [name, ...(argumentsOf[name] ?? []), option, first, option, second];
        expect(await parse(args), args.join(' ')).toEqual({ code: EXIT.ok, out: '', err: '', ran: true });
      }
      const other = [name, ...(argumentsOf[name] ?? []), option, '/tmp/x/', option, '/tmp/x/y'];
      expect(await parse(other), other.join(' ')).toEqual({ code: EXIT.usage, out: '', err: `spectrum-link: ${option} "/tmp/x/" and ${option} "/tmp/x/y" give two values: keep one\n`, ran: false });
    }
  });

  it('check takes one --config-dir twice (/a and /a/) and refuses two different values as link does', async () => {
    const program = new Command('spectrum-link').addCommand(checkCommand({}).action(() => undefined));
    let err = '';
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((err += String(chunk)), true));
    try {
      const code = await runCli(program, ['check', 'appvm-lynx', '--config-dir', '/a', '--config-dir', '/b']);
      expect({ code, err }).toEqual({ code: EXIT.usage, err: 'spectrum-link: --config-dir "/a" and --config-dir "/b" give two values: keep one\n' });
      err = '';
      const same = await runCli(new Command('spectrum-link').addCommand(checkCommand({}).action(() => undefined)), ['check', 'appvm-lynx', '--config-dir', '/a', '--config-dir', '/a/']);
      expect({ code: same, err }).toEqual({ code: EXIT.ok, err: '' });
    } finally {
      stderr.mockRestore();
    }
  });

  it('collects repeated --attach values in order, starting from nothing', () => {
    const parse = (args: readonly string[]): unknown => {
      let attach: unknown;
      named('link')
        .exitOverride()
        .action((_vms: string[], flags: { attach: unknown }) => void (attach = flags.attach))
        .parse([...args], { from: 'user' });
      return attach;
    };
    expect(parse(['appvm-lynx'])).toEqual([]);
    expect(parse(['appvm-lynx', '--attach', 'qemu', '--attach', 'netvm=netns'])).toEqual(['qemu', 'netvm=netns']);
  });

  it('a link failing, then interrupted while it undoes the run: every line the failure carried, then the signal, then what the undo left', async () => {
    const interrupted = /^link interrupted by SIGTERM while it failed \(above\) and undid the run: the undo went on to its end/;
    const failure = new CliError('link appvm-lynx failed: first line', EXIT.failure, ['second line', 'third line'], 'lines');
    const error = interruptedUndoingError(failure, 'SIGTERM', ['appvm-lynx -> netvm (id 7) is down: left down']);
    expect({ message: error.message, exitCode: error.exitCode, details: error.details, detailsAs: error.detailsAs }).toEqual({
      message: 'link appvm-lynx failed: first line',
      exitCode: 143,
      details: ['second line', 'third line', expect.stringMatching(interrupted), 'appvm-lynx -> netvm (id 7) is down: left down'],
      detailsAs: 'lines',
    });
    // As the bin prints it: a line each, the failure's first.
    const program = new Command('spectrum-link').addCommand(
      new Command('link').action(() => {
        throw error;
      }),
    );
    let err = '';
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((err += String(chunk)), true));
    try {
      expect(await runCli(program, ['link'])).toBe(143);
    } finally {
      stderr.mockRestore();
    }
    const lines = err.split('\n').filter((line) => line !== '');
    expect(lines.slice(0, 3)).toEqual(['spectrum-link: link appvm-lynx failed: first line', 'spectrum-link: second line', 'spectrum-link: third line']);
    expect(lines[3]).toMatch(/^spectrum-link: link interrupted by SIGTERM while it failed/);
    expect(lines).toHaveLength(5);
    // A failure of one line (any module error) gives that line alone before the signal's.
    expect(interruptedUndoingError(new Error('QEMU refused to add NIC snp1'), 'SIGINT', []).details).toEqual([expect.stringMatching(/^link interrupted by SIGINT/)]);
  });

  it('a state file an undo could not write back: one line naming the records it still holds (or, synced not, may bring back) and the link to run again', () => {
    const failure = {
      stateFile: '/state/links.json',
      error: "cannot write state file /state/links.json (ENOSPC); check the state dir's permissions and free space",
      written: false,
      recorded: [link('appvm-lynx', 7), link('appvm-catgirl', 9)],
      clients: ['appvm-lynx', 'appvm-catgirl'].map(vmName),
    };
    expect(undoStateLine(failure, NO_OPTIONS)).toBe(
      "undoing the run, the state file could not be written back: cannot write state file /state/links.json (ENOSPC); check the state dir's permissions and free space; " +
        'it still records appvm-lynx -> netvm (id 7), appvm-catgirl -> netvm (id 9) as this run made them, whose devices are deleted (README: What an undo leaves): ' +
        'once it can be written, run spectrum-link link appvm-lynx appvm-catgirl',
    );
    const synced = { ...failure, written: true, error: 'wrote /state/links.json but could not sync /state (EIO); the change may not survive a crash', recorded: [link('appvm-lynx', 7)], clients: [vmName('appvm-lynx')] };
    expect(undoStateLine(synced, NO_OPTIONS)).toBe(
      'undoing the run, wrote /state/links.json but could not sync /state (EIO); the change may not survive a crash: ' +
        "a crash before its next write may bring back this run's records of appvm-lynx -> netvm (id 7), whose devices are deleted (README: What an undo leaves); " +
        'if one does, run spectrum-link link appvm-lynx',
    );
    // With this run's options a link takes (not --all, --keep-going or --json, which the CLI does not pass), paths absolute.
    expect(undoStateLine(synced, RUN)).toMatch(/, run spectrum-link link appvm-lynx --config-dir \/srv\/spectrum\/config --state-dir \/var\/state --mtu 9000 --attach netvm=qemu --qmp-socket '\/srv\/spectrum\/q\/\{vm\}\.qmp' --vmm-timeout 20000 --lock-wait 5$/);
  });

  it('devices an undo could not delete: one line naming them, the links whose ids stay recorded, and the link to run again', () => {
    const line = undoStepLine(
      {
      step: 'devices',
      error: 'removing device snb7 failed: Operation not supported',
      left: [
        { link: link('appvm-lynx', 7), devices: ['snb7', 'snc7'] },
        { link: link('appvm-catgirl', 9), devices: ['snp9'] },
      ],
      },
      NO_OPTIONS,
    );
    expect(line).toBe(
      'undoing the run, deleting devices it had made failed: removing device snb7 failed: Operation not supported; snb7 snc7 snp9 may still exist, ' +
        'the ids of appvm-lynx -> netvm (id 7), appvm-catgirl -> netvm (id 9) kept (README: What an undo leaves): check why (ip -d link show snb7), ' +
        'then run spectrum-link link appvm-lynx appvm-catgirl',
    );
    expect(line).not.toContain('\n');
  });

  it('an MTU an undo could not put back: one line naming the devices and links, and the link without --mtu that gives them back the MTU they record', () => {
    const line = undoStepLine({ step: 'mtu', error: 'No such device', left: [{ link: link('appvm-lynx', 7), devices: ['snc7', 'snb7'] }] }, RUN);
    expect(line).toMatch(/^undoing the run, putting back the MTU it had changed on snc7 snb7 failed: No such device; appvm-lynx -> netvm \(id 7\) may keep the run's MTU there \(README: What an undo leaves\): check them \(ip link show snc7\), then run spectrum-link link appvm-lynx /);
    // The run's other options, but not its --mtu: the records went back to the MTU before the run.
    expect(line).toContain('--state-dir /var/state');
    expect(line).not.toContain('--mtu');
    expect(line).toMatch(/ --lock-wait 5$/);
    expect(line).not.toContain('\n');
  });
});

/** appvm-lynx -> netvm, id 42, both sides qemu unless `fields` says otherwise, left down as `fields` says. */
const leftDownOf = (fields: Pick<LeftDownLink, 'replaced' | 'takenBack'> & Partial<LeftDownLink>): LeftDownLink => ({
  vm: 'appvm-lynx',
  provider: 'netvm',
  id: 42,
  clientIp: '100.64.0.42',
  clientMac: '02:00:00:00:00:2a',
  providerMac: '02:00:00:00:00:2b',
  bridge: 'snb42',
  clientDevice: 'snc42',
  providerDevice: 'snp42',
  clientAttach: 'qemu',
  providerAttach: 'qemu',
  ...fields,
});

describe('leftDownLine', () => {
  it('says a NIC taken out as taken out, and a VMM that was not running as holding none, nothing taken out of it', () => {
    const line = leftDownLine(
      leftDownOf({
        replaced: false,
        takenBack: [
          { vmm: 'qemu', vm: vmName('appvm-lynx'), nic: 'snc42', to: 'none', outcome: 'not-running' },
          { vmm: 'qemu', vm: vmName('netvm'), nic: 'snp42', to: 'none', outcome: 'taken' },
        ],
      }),
    );
    expect(line).toBe(
      'appvm-lynx -> netvm (id 42) is down: this run took its NIC snp42 out of the QEMU of netvm (the QEMU of appvm-lynx was not running) and cannot put it back; ' +
        'its record is as before (README: What an undo leaves): link appvm-lynx again',
    );
  });

  it('a link down for its devices replaced, whose VMM was not running: says it replaced them, and took nothing out', () => {
    const line = leftDownLine(leftDownOf({ replaced: true, takenBack: [{ vmm: 'cloud-hypervisor', vm: vmName('appvm-lynx'), nic: 'snc42', to: 'netns', outcome: 'not-running' }] }));
    expect(line).toBe(
      'appvm-lynx -> netvm (id 42) is down: this run replaced its devices to attach it another way, and undoing the run deleted the new ones (the old ones cannot be brought back) ' +
        '(the cloud-hypervisor of appvm-lynx was not running): link appvm-lynx again',
    );
  });
});

describe('leftDownLine of a NIC its running VMM no longer held', () => {
  it('says that VMM no longer held it and nothing was taken out, not that the run took it out; beside a NIC taken out, says both', () => {
    const absent = { vmm: 'qemu', vm: vmName('appvm-lynx'), nic: 'snc42', to: 'none', outcome: 'absent' } as const;
    expect(leftDownLine(leftDownOf({ replaced: false, takenBack: [absent] }))).toBe(
      'appvm-lynx -> netvm (id 42) is down: this run took no NIC of it out (the QEMU of appvm-lynx no longer held NIC snc42); ' +
        'its record is as before (README: What an undo leaves): link appvm-lynx again',
    );
    const both = leftDownLine(leftDownOf({ replaced: false, takenBack: [absent, { vmm: 'qemu', vm: vmName('netvm'), nic: 'snp42', to: 'none', outcome: 'taken' }] }));
    expect(both).toBe(
      'appvm-lynx -> netvm (id 42) is down: this run took its NIC snp42 out of the QEMU of netvm (the QEMU of appvm-lynx no longer held NIC snc42) and cannot put it back; ' +
        'its record is as before (README: What an undo leaves): link appvm-lynx again',
    );
  });
});

describe('leftDownLine of a side kept in its mode through another socket', () => {
  it('says the socket its NIC came out at', () => {
    const line = leftDownLine(
      leftDownOf({
        providerAttach: 'netns',
        clientSocket: '/run/a/appvm-lynx.qmp',
        replaced: false,
        takenBack: [{ vmm: 'qemu', vm: vmName('appvm-lynx'), nic: 'snc42', to: 'qemu', toSocket: '/run/b/appvm-lynx.qmp', socket: '/run/a/appvm-lynx.qmp', outcome: 'taken' }],
      }),
    );
    expect(line).toBe(
      'appvm-lynx -> netvm (id 42) is down: this run took its NIC snc42 out of the QEMU of appvm-lynx at /run/a/appvm-lynx.qmp and cannot put it back; ' +
        'its record is as before (README: What an undo leaves): link appvm-lynx again',
    );
  });

  it('shows sockets with a newline escaped (a raw one would become a space on the line, naming another path)', () => {
    const [from, to] = ['/run/a\nb/appvm-lynx.qmp', '/run/c\nd/appvm-lynx.qmp'];
    const line = leftDownLine(
      leftDownOf({ providerAttach: 'netns', clientSocket: from, replaced: false, takenBack: [{ vmm: 'qemu', vm: vmName('appvm-lynx'), nic: 'snc42', to: 'qemu', toSocket: to, socket: from, outcome: 'taken' }] }),
    );
    expect(line).toContain('out of the QEMU of appvm-lynx at "/run/a\\nb/appvm-lynx.qmp" and cannot put it back');
    expect(line).not.toContain('\n');
  });
});

describe('what an undo leaves, said in a line', () => {
  /** A line's own length: less what it shows (errors, devices, links) and the command it gives. */
  const ownLength = (line: string, ...shown: string[]): number => shown.reduce((length, text) => (line.includes(text) ? length - text.length : Number.NaN), line.length);
  const lynx = link('appvm-lynx', 7);
  const lynxLink = 'appvm-lynx -> netvm (id 7)';

  it('each says what is wrong and what is left in about 200 characters besides what it shows, then the command; the README section it names says the rest', async () => {
    const devices = undoStepLine({ step: 'devices', error: 'E', left: [{ link: lynx, devices: ['snb7', 'snc7'] }] }, RUN);
    const mtu = undoStepLine({ step: 'mtu', error: 'E', left: [{ link: lynx, devices: ['snc7', 'snb7'] }] }, RUN);
    const netns = undoStepLine({ step: 'namespace', error: 'E', netns: 'vm-appvm-lynx' }, RUN);
    const state = undoStateLine({ stateFile: '/state/links.json', error: 'E', written: false, recorded: [lynx], clients: [vmName('appvm-lynx')] }, RUN);
    const synced = undoStateLine({ stateFile: '/state/links.json', error: 'E', written: true, recorded: [lynx], clients: [vmName('appvm-lynx')] }, RUN);
    const command = /spectrum-link link appvm-lynx .*$/.exec(devices)?.[0] ?? '';
    expect(command).not.toBe('');
    const noMtu = /spectrum-link link appvm-lynx .*$/.exec(mtu)?.[0] ?? '';
    const down = leftDownLine(leftDownOf({ replaced: false, takenBack: [{ vmm: 'qemu', vm: vmName('netvm'), nic: 'snp42', to: 'none', outcome: 'taken' }] }));
    for (const [line, own] of [
      [devices, ownLength(devices, 'E', 'snb7 snc7', lynxLink, 'ip -d link show snb7', command)],
      [mtu, ownLength(mtu, 'E', 'snc7 snb7', lynxLink, 'ip link show snc7', noMtu)],
      [netns, ownLength(netns, 'E', 'vm-appvm-lynx', '(findmnt /run/netns/vm-appvm-lynx; ip netns pids vm-appvm-lynx), then ip netns delete vm-appvm-lynx')],
      [state, ownLength(state, 'E', lynxLink, command)],
      [synced, ownLength(synced, 'E', lynxLink, command)],
      [down, ownLength(down, 'appvm-lynx -> netvm (id 42)', 'snp42')],
    ] as const) {
      expect(line).toContain('(README: What an undo leaves)');
      expect(own, line).toBeLessThanOrEqual(200);
    }
    const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
    const section = readme.split(/^#### What an undo leaves$/m)[1]?.split(/^#/m)[0] ?? '';
    expect(section).toContain('so that no other link is given\n  it while they may be there');
    expect(section).toContain('a\n  later link that needs it uses it as it is');
    expect(section).toContain('the `link` (without `--mtu`) that gives them back the MTU\n  they record');
    expect(section).toContain('without `--attach` that attaches the link as recorded (the NIC added again)');
    // A NIC the undo could not detach (undoDetachLine): its tap is deleted only where the run made
    // it; on a tap the run found, the NIC keeps its VM on the link.
    const said = section.replace(/\s+/g, ' ');
    expect(said).toContain('on its tap: deleted where the run had made it (the NIC then reaches nothing, and the next link reports it as a conflict)');
    expect(said).toContain('a tap the run found there (a link up as `none`, or one whose VM restarted without its NIC) is not deleted by the undo');
  });
});

describe('nicRemoval', () => {
  it('gives a socket path the shell would split or act on quoted, so the command runs as printed', () => {
    expect(nicRemoval('cloud-hypervisor', '/run/vm/appvm-lynx/api.sock', 'snc7c')).toMatch(/^ch-remote --api-socket \/run\/vm\/appvm-lynx\/api\.sock remove-device snc7c /);
    expect(nicRemoval('cloud-hypervisor', "/run/my vms/it's.sock", 'snc7c')).toMatch(/^ch-remote --api-socket '\/run\/my vms\/it'\\''s\.sock' remove-device snc7c /);
    expect(nicRemoval('qemu', '/run/vm/appvm-lynx/qmp.sock', 'snc7c')).toContain('netdev_del');
  });

  it("a socket relative to this run's directory (a relative template's) is said absolute; where that is too long for a socket, with the directory to run from", () => {
    expect(nicRemoval('cloud-hypervisor', 'vms/appvm-lynx.api', 'snc7c', '/srv/spectrum')).toMatch(/^ch-remote --api-socket \/srv\/spectrum\/vms\/appvm-lynx\.api remove-device snc7c /);
    expect(nicRemoval('qemu', 'vms/appvm-lynx.qmp', 'snc7c', '/srv/spectrum')).toMatch(/^QMP at \/srv\/spectrum\/vms\/appvm-lynx\.qmp: device_del/);
    const deep = `/${'d'.repeat(100)}`;
    expect(nicRemoval('cloud-hypervisor', 'vms/appvm-lynx.api', 'snc7c', deep)).toMatch(new RegExp(`^cd ${deep} && ch-remote --api-socket vms/appvm-lynx\\.api remove-device snc7c `));
    expect(nicRemoval('qemu', 'vms/appvm-lynx.qmp', 'snc7c', deep)).toMatch(new RegExp(`^QMP at vms/appvm-lynx\\.qmp \\(from directory ${deep}\\): device_del`));
  });

  it('a socket path with what a terminal acts on: escaped, whole (not cut short), the ch-remote command still one the shell reads back', () => {
    const hostile = `/run/${'v'.repeat(80)}/\u001b]0;x\u0007.sock`;
    const ch = nicRemoval('cloud-hypervisor', hostile, 'snc7c');
    expect(ch).toBe(`ch-remote --api-socket $'/run/${'v'.repeat(80)}/\\x1b]0;x\\x07.sock' remove-device snc7c (PUT /api/v1/vm.remove-device {"id":"snc7c"} on that socket)`);
    const qmp = nicRemoval('qemu', hostile, 'snc7c');
    expect(qmp).toContain(`QMP at "/run/${'v'.repeat(80)}/\\u001b]0;x\\u0007.sock": device_del`);
    for (const line of [ch, qmp]) expect(line).not.toMatch(/[\p{Cc}\p{Cf}]/u);
  });
});

describe('the unlink a line offers for a NIC a VMM did not give back', () => {
  const dropped: LinkReport = { ...link('appvm-lynx', 42), provider: 'appvm-catgirl', providerAttach: 'qemu', providerSocket: '/run/old/appvm-catgirl.qmp' };
  const failure = (throughTemplate?: string[]): VmmDetachFailure => ({
    link: dropped,
    vmm: 'qemu',
    vm: vmName('appvm-catgirl'),
    nic: 'snp42',
    error: 'QEMU refused device_del',
    socket: '/run/old/appvm-catgirl.qmp',
    ...(throughTemplate === undefined ? {} : { throughTemplate: throughTemplate.map(vmName) }),
  });
  /** The command a line offers, from `spectrum-link unlink` to `detaches it`, or undefined. */
  const offered = (line: string): string | undefined => /spectrum-link unlink .*? detaches it/.exec(line)?.[0];

  it("names that VM's mode alone and, exactly, this run's options an unlink takes that find the link and its VMMs, not link's others (which unlink refuses) nor its --attach (which would give other sides modes)", () => {
    const at = '/run/vm/appvm-catgirl/qmp.sock';
    const plain = 'spectrum-link unlink appvm-lynx --attach appvm-catgirl=qemu detaches it';
    expect(offered(unlistedLine(failure([]), at, undefined, NO_OPTIONS))).toBe(plain);
    expect(offered(forcedLine(failure(), 'appvm-lynx', false, at, undefined, NO_OPTIONS))).toBe(plain);
    // The state dir, device prefix, socket templates, VMM timeout and lock wait this run was given;
    // a relative template made absolute, from this run's directory (the {vm} kept: every other VM's socket as in this run).
    const given = { ...RUN, devicePrefix: 'tp', chSocket: '/run/ch/{vm}' };
    const exact =
      "spectrum-link unlink appvm-lynx --state-dir /var/state --device-prefix tp --attach appvm-catgirl=qemu --qmp-socket '/srv/spectrum/q/{vm}.qmp' --ch-socket '/run/ch/{vm}' --vmm-timeout 20000 --lock-wait 5 detaches it";
    expect(offered(unlistedLine(failure([]), at, undefined, given))).toBe(exact);
    expect(offered(forcedLine(failure(), 'appvm-lynx', false, at, undefined, given))).toBe(exact);
    // With --forget nothing is left for an unlink to find.
    expect(offered(forcedLine(failure(), 'appvm-lynx', true, at, undefined, given))).toBeUndefined();
  });

  it('says what is wrong and what is left in about 200 characters besides what it shows, then what to run; the README section it names says the rest', async () => {
    const at = '/run/vm/appvm-catgirl/qmp.sock';
    for (const line of [forcedLine(failure(), 'appvm-lynx', false, at, undefined, RUN), forcedLine(failure(), 'appvm-lynx', true, at, undefined, RUN), unlistedLine(failure([]), at, undefined, RUN)]) {
      expect(line).toMatch(/^QEMU of appvm-catgirl did not detach NIC snp42 \(link appvm-lynx -> appvm-catgirl\): QEMU refused device_del; the host side was removed anyway \(tap snp42, bridge snb42\), but the VMM may still hold the NIC \(README: A VMM that does not detach\): once the VMM answers, /);
      expect(line).toMatch(/[;,] or restart appvm-catgirl$/);
      // Less what it shows: the VMM's words, the VMs and devices.
      const shown = ['QEMU refused device_del', 'appvm-catgirl', 'appvm-lynx', 'appvm-catgirl', 'snp42', 'snp42', 'snb42', 'appvm-catgirl'].join('').length;
      const own = line.slice(0, line.indexOf('once the VMM answers')).length + '; or restart appvm-catgirl'.length - shown;
      expect(own, line).toBeLessThanOrEqual(200);
    }
    const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
    const section = readme.split(/^#### A VMM that does not detach$/m)[1]?.split(/^#/m)[0] ?? '';
    // The link that reports that NIC: the one that makes its link again, the client's (appvm-lynx's
    // here, not a link of appvm-catgirl, whose VMM it is), and of a provider dropped (unlistedLine)
    // only once the client names it again.
    const said = section.replace(/\s+/g, ' ');
    expect(said).toContain('linking that link again meanwhile (a `link` of its client, not of a provider whose VMM it is; of a provider dropped, once the client names it again) reports it as a conflict');
    expect(said).not.toContain('a `link` of its VM meanwhile');
    // The section is of a VMM that does not detach: not of every command a line gives, nor of the state dir's probe (headings of their own).
    expect(said).not.toContain('Every command a line tells the operator to run');
    expect(said).not.toContain('probes a write in the state dir');
  });

  it('the link of the client after that unlink, which takes its other links down too: with this run\'s link options and the modes of those links', () => {
    const line = unlistedLine({ ...failure([]), relinkAttach: ['appvm-lynx=qemu'] }, '/run/vm/appvm-catgirl/qmp.sock', undefined, RUN);
    expect(line).toContain(
      "(taking appvm-lynx's other links down too: run spectrum-link link appvm-lynx --config-dir /srv/spectrum/config --state-dir /var/state --mtu 9000 --attach netvm=qemu --attach appvm-lynx=qemu " +
        "--qmp-socket '/srv/spectrum/q/{vm}.qmp' --vmm-timeout 20000 --lock-wait 5 after)",
    );
  });

  it('the client of a chain: after the link of the client, a link of each client of the links it provides, without this run\'s --attach, pinning that link as recorded', () => {
    const relinkClients = [
      { client: vmName('appvm-0'), attach: ['appvm-0=netns', 'appvm-lynx=qemu'] },
      { client: vmName('appvm-1'), attach: ['appvm-lynx=netns'] },
    ];
    const line = unlistedLine({ ...failure([]), relinkAttach: ['appvm-lynx=qemu'], relinkClients }, '/run/vm/appvm-catgirl/qmp.sock', undefined, RUN);
    const options = "--config-dir /srv/spectrum/config --state-dir /var/state --mtu 9000";
    const sockets = "--qmp-socket '/srv/spectrum/q/{vm}.qmp' --vmm-timeout 20000 --lock-wait 5";
    expect(line).toContain(
      `(taking appvm-lynx's other links down too: run spectrum-link link appvm-lynx ${options} --attach netvm=qemu --attach appvm-lynx=qemu ${sockets} after, ` +
        "which brings back appvm-lynx's own links; that unlink takes down the links appvm-lynx provides too, to appvm-0, appvm-1: " +
        `to bring back appvm-0 -> appvm-lynx as it was, run spectrum-link link appvm-0 ${options} --attach appvm-0=netns --attach appvm-lynx=qemu ${sockets}; ` +
        `to bring back appvm-1 -> appvm-lynx as it was, run spectrum-link link appvm-1 ${options} --attach appvm-lynx=netns ${sockets})`,
    );
  });

  it('a socket recorded where this run\'s option does not lead: named by its option, a path without {vm}, only where that unlink would look there for no other NIC', () => {
    const old = '/run/old/appvm-catgirl.qmp';
    const named = 'spectrum-link unlink appvm-lynx --state-dir /var/state --attach appvm-catgirl=qemu --qmp-socket /run/old/appvm-catgirl.qmp --vmm-timeout 20000 --lock-wait 5 detaches it';
    expect(offered(unlistedLine(failure([]), old, old, RUN))).toBe(named);
    expect(offered(forcedLine(failure(), 'appvm-lynx', false, old, old, RUN))).toBe(named);
    // A side of appvm-lynx's links left that the state records as qemu without a socket: that
    // unlink would look for its NIC at that path too. No unlink is offered; the removal at the socket is.
    const line = unlistedLine(failure(['appvm-lynx']), old, old, RUN);
    expect(offered(line)).toBeUndefined();
    expect(line).toContain(`once the VMM answers, remove the NIC with ${nicRemoval('qemu', old, 'snp42')} (an unlink naming that socket would look there for NICs of other VMs too), or restart appvm-catgirl`);
  });
});

describe('misnamedWarning', () => {
  it('gives the directory\'s path one slash under a config dir that is /, as check\'s paths are', () => {
    const dir = { name: 'bad name', shown: '"bad name"', reason: 'VM name "bad name" contains " "' };
    expect(misnamedWarning(dir, '/')).toBe('/"bad name" has a providers/net but no VM name, so it is not linked: VM name "bad name" contains " "; rename it to link it');
    expect(misnamedWarning(dir, '/ext/svc/data')).toMatch(/^\/ext\/svc\/data\/"bad name" has a providers\/net/);
  });
});
