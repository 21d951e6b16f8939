// The spectrum-netd subcommands as an operator meets them: --help texts, repeatable options,
// bad option values (the built bin's: option-values-netns.test.ts), the human `status` text,
// start-up refusals that come before the control socket is tried. (The agent itself is tested in
// agent*.test.ts.)
import { execFile, execFileSync } from 'node:child_process';
import { closeSync, constants, cpSync, existsSync, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { NoopFirewall } from '../../../guest/firewall-port.js';
import { NoopServices } from '../../../guest/services-port.js';
import { type PortsFactory, clientCommand, formatStatus, runCommand, statusCommand, withUnservedLinks } from '../../../guest/netd/commands.js';
import { ControlServer } from '../../../guest/netd/control-socket.js';
import { EXIT, runCli } from '../../../shared/cli/run-cli.js';

const CLI = fileURLToPath(new URL('../../../dist/guest/cli.js', import.meta.url));
const execFileAsync = promisify(execFile);

/** Parse `args` with the command's options only: the action is replaced by one that records them. */
function parsedOptions(command: Command, args: readonly string[]): Record<string, unknown> {
  let seen: Record<string, unknown> = {};
  command.exitOverride().action((options: Record<string, unknown>) => void (seen = options));
  command.parse([...args], { from: 'user' });
  return seen;
}

describe('spectrum-netd --help', () => {
  it.each([
    ['run', runCommand],
    ['client', clientCommand],
  ])('%s: a repeatable option says what it defaults to, never an empty list', (_name, make) => {
    const help = make().helpInformation();
    expect(help).not.toContain('[]');
    expect(help).toMatch(/--ignore <ifname> +an interface .*\(repeatable\)\s+\(default: none\)/s);
  });

  it('run: --dns-upstream states its default once, as the nameservers of --resolv-conf', () => {
    const help = runCommand().helpInformation().replace(/\s+/g, ' ');
    expect(help).toContain('--dns-upstream <ip[:port]> upstream resolver (repeatable) (default: the nameservers of --resolv-conf, followed as it changes)');
    expect(help.match(/default:/g)?.length).toBe(help.match(/\(default: /g)?.length);
  });

  // `auto` is a value one may give (to go back to the default in a service file), not only the default.
  it('run: --client-flow-limit says it takes auto, and what auto is derived from', () => {
    const help = runCommand().helpInformation().replace(/\s+/g, ' ');
    expect(help).toContain(
      '--client-flow-limit <n|auto> most conntrack entries (flows) one client may hold; its new flows past them are dropped (0: no limit; auto: an eighth of nf_conntrack_max, at most 4096) (default: auto)',
    );
    expect(parsedOptions(runCommand(), [])).toMatchObject({ clientFlowLimit: 'auto' });
    expect(parsedOptions(runCommand(), ['--client-flow-limit', '300'])).toMatchObject({ clientFlowLimit: 300 });
    expect(parsedOptions(runCommand(), ['--client-flow-limit', '300', '--client-flow-limit', 'auto'])).toMatchObject({ clientFlowLimit: 'auto' });
  });

  it('run: --client-new-flow-rate says it takes auto, and what auto is derived from', () => {
    const help = runCommand().helpInformation().replace(/\s+/g, ' ');
    expect(help).toMatch(/--client-new-flow-rate <n\|auto> new flows one client may open per second, .*\(0: no limit; auto: nf_conntrack_max \/ 176, at least 1, at most 100\) \(default: auto\)/);
    expect(parsedOptions(runCommand(), [])).toMatchObject({ clientNewFlowRate: 'auto' });
    expect(parsedOptions(runCommand(), ['--client-new-flow-rate', '40'])).toMatchObject({ clientNewFlowRate: 40 });
  });

  it('run: --conntrack-reap-threshold says it takes auto, and what auto is derived from', () => {
    const help = runCommand().helpInformation().replace(/\s+/g, ' ');
    expect(help).toContain(
      '--conntrack-reap-threshold <n|auto> while the conntrack table holds this many entries or more, delete its closed TCP entries (TIME_WAIT, CLOSE, whoever opened them) each second (0: never; auto: half of nf_conntrack_max) (default: auto)',
    );
    expect(parsedOptions(runCommand(), [])).toMatchObject({ conntrackReapThreshold: 'auto' });
    expect(parsedOptions(runCommand(), ['--conntrack-reap-threshold', '0'])).toMatchObject({ conntrackReapThreshold: 0 });
  });

  it('run: the numeric defaults show as numbers, the audit period in seconds', () => {
    const help = runCommand().helpInformation().replace(/\s+/g, ' ');
    expect(help).toContain('--lease-seconds <n> DHCP lease time (default: 3600)');
    expect(help).toMatch(/--firewall-audit <seconds> .* \(0: never\) \(default: 60\)/);
    expect(parsedOptions(runCommand(), [])).toMatchObject({ leaseSeconds: 3600, firewallAudit: 60_000 });
    expect(parsedOptions(runCommand(), ['--lease-seconds', '600', '--firewall-audit', '0.3'])).toMatchObject({ leaseSeconds: 600, firewallAudit: 300 });
  });

  it('run: the DNS forwarder\'s two times show their defaults, the query\'s with what it follows', () => {
    const help = runCommand().helpInformation().replace(/\s+/g, ' ');
    expect(help).toContain(
      '--dns-upstream-timeout <ms> how long one upstream has a DNS query to itself before the next is asked too (one answering later is still heard) (default: 1500)',
    );
    expect(help).toContain(
      '--dns-query-timeout <ms> how long a DNS query waits for an answer in all before its client gets SERVFAIL (at least --dns-upstream-timeout) (default: 4000, or --dns-upstream-timeout where longer)',
    );
    expect(parsedOptions(runCommand(), [])).toMatchObject({ dnsUpstreamTimeout: 1500, dnsQueryTimeout: 4000 });
    expect(parsedOptions(runCommand(), ['--dns-upstream-timeout', '800', '--dns-query-timeout', '3000'])).toMatchObject({ dnsUpstreamTimeout: 800, dnsQueryTimeout: 3000 });
  });

  it('run: repeated options still add up, starting from nothing', () => {
    expect(parsedOptions(runCommand(), [])).toMatchObject({ ignore: [], allowPair: [], dnsUpstream: [] });
    const options = parsedOptions(runCommand(), ['--ignore', 'wlan0', '--ignore', 'eth1', '--dns-upstream', '192.0.2.53', '--dns-upstream', '[2001:db8::1]:53', '--allow-pair', '1=2']);
    expect(options).toMatchObject({ ignore: ['wlan0', 'eth1'], dnsUpstream: ['192.0.2.53', '[2001:db8::1]:53'], allowPair: ['1=2'] });
  });
});

describe('spectrum-netd: a bad option value is said as every other one is', () => {
  /** The command as the bin runs it, its action replaced (nothing is started): exit code and stderr. */
  async function refused(make: () => Command, args: readonly string[]): Promise<{ code: number; err: string; ran: boolean }> {
    let err = '';
    let ran = false;
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((err += String(chunk)), true));
    try {
      const command = make().action(() => void (ran = true));
      const code = await runCli(new Command('spectrum-netd').addCommand(command), [command.name(), ...args]);
      return { code, err, ran };
    } finally {
      stderr.mockRestore();
    }
  }

  // Commander's own wording ("option '--ignore <ifname>' argument 'a b' is invalid. expected ...")
  // was the odd one out among `--lease-seconds "10" is not valid: give ...` and the like.
  it.each([
    ['run', ['--ignore', 'a b'], runCommand, `--ignore "a b" is not valid: give an interface name: 1 to 15 bytes, not . or .., without '/', ':' or blanks`],
    ['client', ['--ignore', ''], clientCommand, `--ignore "" is not valid: give an interface name: 1 to 15 bytes, not . or .., without '/', ':' or blanks`],
    ['run', ['--dns-upstream', '1.2.3'], runCommand, '--dns-upstream "1.2.3" is not valid: expected an IP address, optionally with :port (IPv6 as [addr]:port)'],
    ['run', ['--dns-upstream', '192.0.2.1:99999'], runCommand, '--dns-upstream "192.0.2.1:99999" is not valid: port must be 1..65535'],
    // Well-formed, but no resolver can be there: they were taken, and the forwarder sent to them.
    ['run', ['--dns-upstream', '0.0.0.0'], runCommand, `--dns-upstream "0.0.0.0" is not valid: the unspecified address names no server: give the resolver's own address (127.0.0.1 or ::1 for one on this VM)`],
    ['run', ['--dns-upstream', '[ff02::fb]:5353'], runCommand, `--dns-upstream "[ff02::fb]:5353" is not valid: a multicast address (ff00::/8) names no one server: give the resolver's own address`],
    ['run', ['--dns-upstream', '[::ffff:192.0.2.53%eth1]:5353'], runCommand, '--dns-upstream "[::ffff:192.0.2.53%eth1]:5353" is not valid: an IPv4-mapped address is asked over IPv4, where a zone (%eth1) picks no link (the routes do): give 192.0.2.53:5353'],
    ['run', ['--dns-upstream', '::1.2.3.4'], runCommand, '--dns-upstream "::1.2.3.4" is not valid: an IPv4-compatible address (::/96, deprecated) is asked over IPv6, as any IPv6 address, where no resolver is: give 1.2.3.4 for the IPv4 address'],
    ['run', ['--dns-upstream', '0.1.2.3:5353'], runCommand, `--dns-upstream "0.1.2.3:5353" is not valid: an address in 0.0.0.0/8 ("this network") is no destination: give the resolver's own address`],
    ['run', ['--dns-upstream', '[fe80::53]:5353'], runCommand, `--dns-upstream "[fe80::53]:5353" is not valid: a link-local address (fe80::/10) is one on each link: Linux sends to it only through the link its zone names, and refuses it without one: give that link's name or index as its zone ([fe80::53%eth0]:5353)`],
    ['run', ['--dns-upstream', '2001:db8::1%eth0'], runCommand, '--dns-upstream "2001:db8::1%eth0" is not valid: a zone (%eth0) picks a link only for a link-local address (fe80::/10); Linux ignores it on any other, sending where the routes say: give 2001:db8::1'],
    // A zone that is no name Linux gives an interface ('/', ':', a blank, 16 bytes): no address.
    ['run', ['--dns-upstream', 'fe80::1%a/b'], runCommand, '--dns-upstream "fe80::1%a/b" is not valid: expected an IP address, optionally with :port (IPv6 as [addr]:port)'],
    ['run', ['--dns-upstream', '[fe80::1%a b]:53'], runCommand, '--dns-upstream "[fe80::1%a b]:53" is not valid: not an IPv6 address in brackets'],
    ['run', ['--dns-upstream', `[fe80::1%${'x'.repeat(16)}]`], runCommand, `--dns-upstream "[fe80::1%${'x'.repeat(16)}]" is not valid: not an IPv6 address in brackets`],
    // 'à' is c3 a0 in UTF-8, and 0xa0 a blank to the kernel (it refuses the name); `--ignore` took it.
    ['run', ['--ignore', 'là'], runCommand, `--ignore "là" is not valid: give an interface name: 1 to 15 bytes, not . or .., without '/', ':' or blanks`],
    // Shown as the parser shows it (cut at 80 characters), once: not again inside the reason.
    ['run', ['--dns-upstream', `192.0.2.1:${'9'.repeat(100)}`], runCommand, `--dns-upstream "192.0.2.1:${'9'.repeat(70)}…" is not valid: expected an IP address, optionally with :port`],
    ['run', ['--control-socket', ''], runCommand, '--control-socket "" is not valid: give a path of 1 to 107 bytes'],
    ['run', ['--dns-upstream-timeout', '1.5s'], runCommand, '--dns-upstream-timeout "1.5s" is not valid: give milliseconds from 100 to 60000'],
    ['run', ['--dns-upstream-timeout', '99'], runCommand, '--dns-upstream-timeout "99" is not valid: give milliseconds from 100 to 60000'],
    ['run', ['--dns-query-timeout', '60001'], runCommand, '--dns-query-timeout "60001" is not valid: give milliseconds from 100 to 60000'],
    ['status', ['--control-socket', ''], statusCommand, '--control-socket "" is not valid: give a path of 1 to 107 bytes'],
    ['status', ['--control-socket', `/${'x'.repeat(120)}`], statusCommand, `--control-socket "/${'x'.repeat(63)}"... is not valid: give a path of 1 to 107 bytes`],
  ] as const)('%s %j: one line naming the option and the value, exit 2, nothing run', async (_name, args, make, line) => {
    expect(await refused(make, args)).toEqual({ code: EXIT.usage, err: `spectrum-netd: ${line}\n`, ran: false });
  });

  it('still takes the values those options took', () => {
    expect(parsedOptions(runCommand(), ['--ignore', 'eth0', '--dns-upstream', '192.0.2.53:5353', '--control-socket', '/run/x.sock'])).toMatchObject({
      ignore: ['eth0'],
      dnsUpstream: ['192.0.2.53:5353'],
      controlSocket: '/run/x.sock',
    });
    expect(parsedOptions(statusCommand(), [])).toMatchObject({ controlSocket: '/run/spectrum-netd/control.sock' });
  });

  it("takes a link-local --dns-upstream whose zone is any name Linux gives an interface, '+' and '@' among them, and an --ignore of such a name", () => {
    // Refused before: only letters, digits, '_', '.' and '-' were taken in a zone, and --ignore
    // refused U+3000 (a blank to JavaScript, not to the kernel).
    const upstreams = ['fe80::1%br+lan', '[fe80::1%veth@0]:5353', 'fe80::1%wlan%1', '[fe80::1%a]b]:53', 'fe80::1%a\u3000b'];
    expect(parsedOptions(runCommand(), upstreams.flatMap((upstream) => ['--dns-upstream', upstream]))).toMatchObject({ dnsUpstream: upstreams });
    expect(parsedOptions(runCommand(), ['--ignore', 'br+lan', '--ignore', 'a\u3000b'])).toMatchObject({ ignore: ['br+lan', 'a\u3000b'] });
  });
});

describe('spectrum-netd run --notify-fd', () => {
  /**
   * `run` as the bin runs it, up to where the agent would be made: its ports are a stub that
   * refuses, so no link, firewall or service is touched. The exit code and stderr.
   */
  async function runUntilPorts(args: readonly string[]): Promise<{ code: number; err: string }> {
    const dir = mkdtempSync(join(tmpdir(), 'spectrum-netd-notify-'));
    let err = '';
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((err += String(chunk)), true));
    try {
      const refuse = (): Promise<never> => Promise.reject(new Error('ports reached'));
      const program = new Command('spectrum-netd').addCommand(runCommand(refuse));
      const code = await runCli(program, ['run', '--control-socket', join(dir, 'control.sock'), ...args]);
      return { code, err };
    } finally {
      stderr.mockRestore();
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it('refuses a descriptor that is not open at start, before anything is configured: one line, exit 2', async () => {
    const { code, err } = await runUntilPorts(['--notify-fd', '987']);
    expect(err).toMatch(/^spectrum-netd: --notify-fd 987 is not valid: no such open descriptor \(EBADF\); give the descriptor the service manager opened for readiness \(s6: the notification-fd file\)\n$/);
    expect(code).toBe(EXIT.usage);
  });

  it("refuses one of Node's own descriptors (an eventfd or epoll instance), which no service manager hands over", async () => {
    const own = readdirSync('/proc/self/fd').find((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`).startsWith('anon_inode:');
      } catch {
        return false;
      }
    });
    expect(own).toBeDefined();
    const { code, err } = await runUntilPorts(['--notify-fd', own ?? '']);
    expect(err).toBe(
      `spectrum-netd: --notify-fd ${own ?? ''} is not valid: it is not a pipe, socket, file or character device given to the agent; give the descriptor the service manager opened for readiness (s6: the notification-fd file)\n`,
    );
    expect(code).toBe(EXIT.usage);
  });

  it("refuses either end of one of libuv's own pipes (both ends held by the process), which passes as a pipe but would reach only libuv", async () => {
    const byPipe = new Map<string, string[]>();
    for (const fd of readdirSync('/proc/self/fd')) {
      try {
        const target = readlinkSync(`/proc/self/fd/${fd}`);
        if (target.startsWith('pipe:')) byPipe.set(target, [...(byPipe.get(target) ?? []), fd]);
      } catch {
        // readdir's own descriptor, closed since
      }
    }
    const own = [...byPipe.values()].find((fds) => fds.length >= 2);
    expect(own, 'libuv holds both ends of its signal pipes').toBeDefined();
    const endOf = (fd: string): 'writing' | 'reading' => (/^flags:\s*[0-7]*[1-3]$/m.test(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8')) ? 'writing' : 'reading');
    const ends = (own ?? []).map(endOf);
    expect(ends.sort()).toEqual(['reading', 'writing']);
    const readingFd = own?.find((fd) => endOf(fd) === 'reading') ?? '';
    // Its writing end: the agent holds the reading end too; its reading end: no newline can be written there.
    const why = {
      writing: `the agent holds this pipe's reading end too (fd ${readingFd}), as it holds those of libuv's own pipes, where a newline would reach libuv, not a service manager; if the service manager made this pipe, it left the reading end open in the agent: check that it passes only the writing end`,
      reading: 'it is open only for reading, so the readiness newline could not be written to it',
    };
    for (const fd of own ?? []) {
      const { code, err } = await runUntilPorts(['--notify-fd', fd]);
      expect(err).toBe(`spectrum-netd: --notify-fd ${fd} is not valid: ${why[endOf(fd)]}; give the descriptor the service manager opened for readiness (s6: the notification-fd file)\n`);
      expect(code).toBe(EXIT.usage);
    }
  });

  it('refuses the writing end of a pipe whose reading end a service manager left open in the agent too, naming that descriptor', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'spectrum-netd-leak-'));
    try {
      // A FIFO opened at both ends, as an anonymous pipe() whose two ends were both passed on.
      execFileSync('mkfifo', [join(dir, 'ready')]);
      const reading = openSync(join(dir, 'ready'), constants.O_RDONLY | constants.O_NONBLOCK);
      const writing = openSync(join(dir, 'ready'), constants.O_WRONLY);
      try {
        const { code, err } = await runUntilPorts(['--notify-fd', String(writing)]);
        expect(err).toBe(
          `spectrum-netd: --notify-fd ${writing} is not valid: the agent holds this pipe's reading end too (fd ${reading}), as it holds those of libuv's own pipes, where a newline would reach libuv, not a service manager; if the service manager made this pipe, it left the reading end open in the agent: check that it passes only the writing end; give the descriptor the service manager opened for readiness (s6: the notification-fd file)\n`,
        );
        expect(code).toBe(EXIT.usage);
      } finally {
        closeSync(writing);
        closeSync(reading);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a descriptor open only for reading (/dev/null, a file), to which the readiness newline could never be written', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'spectrum-netd-ro-'));
    try {
      writeFileSync(join(dir, 'ready'), '');
      for (const path of ['/dev/null', join(dir, 'ready')]) {
        const fd = openSync(path, 'r');
        try {
          const { code, err } = await runUntilPorts(['--notify-fd', String(fd)]);
          expect(err).toBe(
            `spectrum-netd: --notify-fd ${fd} is not valid: it is open only for reading, so the readiness newline could not be written to it; give the descriptor the service manager opened for readiness (s6: the notification-fd file)\n`,
          );
          expect(code).toBe(EXIT.usage);
        } finally {
          closeSync(fd);
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('takes a named FIFO opened for reading and writing (sh: 3<>FIFO, so that the open waits for no reader), and /dev/null opened for writing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'spectrum-netd-fifo-'));
    try {
      execFileSync('mkfifo', [join(dir, 'ready')]);
      for (const [path, flags] of [
        [join(dir, 'ready'), 'r+'],
        ['/dev/null', 'w'],
      ] as const) {
        const fd = openSync(path, flags);
        try {
          expect(await runUntilPorts(['--notify-fd', String(fd)])).toEqual({ code: EXIT.internal, err: 'spectrum-netd: internal error: ports reached\n' });
        } finally {
          closeSync(fd);
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a descriptor that is a directory', async () => {
    const dir = openSync(tmpdir(), 'r');
    try {
      const { code, err } = await runUntilPorts(['--notify-fd', String(dir)]);
      expect(err).toBe(
        `spectrum-netd: --notify-fd ${dir} is not valid: it is not a pipe, socket, file or character device given to the agent; give the descriptor the service manager opened for readiness (s6: the notification-fd file)\n`,
      );
      expect(code).toBe(EXIT.usage);
    } finally {
      closeSync(dir);
    }
  });

  it('says the range of descriptor numbers it takes', async () => {
    // It said "1 or more" of 99999, which is more than 1.
    for (const fd of ['0', '99999', 'x']) {
      expect(await runUntilPorts(['--notify-fd', fd])).toEqual({ code: EXIT.usage, err: `spectrum-netd: --notify-fd "${fd}" is not valid: give a file descriptor number from 1 to 9999\n` });
    }
  });

  it('takes an open descriptor and goes on to start the agent', async () => {
    expect(await runUntilPorts(['--notify-fd', '1'])).toEqual({ code: EXIT.internal, err: 'spectrum-netd: internal error: ports reached\n' });
  });
});

describe('spectrum-netd run, stopped while it starts', () => {
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'spectrum-netd-start-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /**
   * `run` as the bin runs it, its ports (the firewall and services) still being made when `signal`
   * comes, and made a while after it (as services starting up are), saying so as they are made
   * and closed. No link, firewall or service is touched. What was said, in order: the ports' doing
   * and the lines on stderr.
   */
  async function stopWhileMakingPorts(signal: NodeJS.Signals, socket: string): Promise<{ code: number; said: string[] }> {
    const said: string[] = [];
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => (said.push(`stderr: ${String(chunk)}`), true));
    const ports: PortsFactory = () => {
      // The control socket is there: the agent is starting. Signalled as a service manager would.
      expect(statSync(socket).isSocket()).toBe(true);
      return new Promise((resolve) => {
        setImmediate(() => {
          process.emit(signal, signal);
          setTimeout(() => {
            // Where a DNS forwarder starting up logs (an upstream with no route, say).
            said.push('ports made');
            resolve({ firewall: new NoopFirewall(), services: new NoopServices(), close: () => Promise.resolve(void said.push('ports closed')) });
          }, 50);
        });
      });
    };
    try {
      const code = await runCli(new Command('spectrum-netd').addCommand(runCommand(ports)), ['run', '--control-socket', socket]);
      return { code, said };
    } finally {
      stderr.mockRestore();
    }
  }

  it.each([
    ['SIGTERM', 143],
    ['SIGINT', 130],
  ] as const)('%s: one line, its control socket removed, exit %i; services made after it are closed, before the line and nothing after it', async (signal, exitCode) => {
    // It was killed with no line, and left its control socket. Then it said the line at once, and
    // services made after it were closed later, what they logged coming after the line.
    const socket = join(dir, `${signal}.sock`);
    const listeners = process.listenerCount(signal);
    const stopped = await stopWhileMakingPorts(signal, socket);
    expect(stopped.said).toEqual([
      'ports made',
      'ports closed',
      `stderr: spectrum-netd: stopped by ${signal} while starting (before its first reconcile was done); its control socket is removed\n`,
    ]);
    expect(stopped.code).toBe(exitCode);
    expect(existsSync(socket)).toBe(false);
    // The signal handling is given back: a later signal ends the process as usual.
    expect(process.listenerCount(signal)).toBe(listeners);
  });
});

/**
 * The built bin, as an operator runs it. Every case here is refused (or, were a check lost, stopped
 * by another agent answering on the control socket) before the agent would start: no namespace
 * is needed, and none of it may ever run an agent here (option values: option-values-netns).
 */
async function netd(args: readonly string[], { cli = CLI, env = {} }: { cli?: string; env?: Readonly<Record<string, string>> } = {}): Promise<{ code: number; stderr: string }> {
  try {
    const { stderr } = await execFileAsync(process.execPath, [cli, ...args], { timeout: 15_000, env: { ...process.env, ...env } });
    return { code: 0, stderr };
  } catch (error) {
    const failed = error as { code?: unknown; stderr?: string };
    if (typeof failed.code !== 'number') throw error;
    return { code: failed.code, stderr: failed.stderr ?? '' };
  }
}

describe('spectrum-netd run: its rtnetlink notification socket', () => {
  let dir = '';
  beforeAll(() => {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
    dir = mkdtempSync(join(tmpdir(), 'spectrum-netd-events-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /**
   * `run` with another agent answering on its control socket: refused before the socket is
   * tried, or else (were the check lost) stopped there, never an agent started here.
   */
  async function runBesideAnother(options: { cli?: string; env?: Readonly<Record<string, string>> }): Promise<{ code: number; stderr: string }> {
    const socket = join(dir, 'answering.sock');
    const other = await ControlServer.listen(socket, () => Promise.resolve({ error: 'not this one' }));
    try {
      return await netd(['run', '--control-socket', socket], options);
    } finally {
      other.close();
    }
  }

  it.each(['abc', '0', '4095', '1073741825', '-1', '1e6'])('refuses SPECTRUM_NETD_EVENT_BUFFER_BYTES=%j at start: one line, exit 2', async (value) => {
    const { code, stderr } = await runBesideAnother({ env: { SPECTRUM_NETD_EVENT_BUFFER_BYTES: value } });
    expect(stderr).toBe(`spectrum-netd: environment variable SPECTRUM_NETD_EVENT_BUFFER_BYTES "${value}" is not valid: expected a whole number of bytes, 4096 to 1073741824\n`);
    expect(code).toBe(EXIT.usage);
  });

  it.each(['0', 'yes', 'true', ' 1', '1 '])('refuses SPECTRUM_NETD_SPAWN_NFT=%j at start: one line, exit 2', async (value) => {
    const { code, stderr } = await runBesideAnother({ env: { SPECTRUM_NETD_SPAWN_NFT: value } });
    expect(stderr).toBe(`spectrum-netd: environment variable SPECTRUM_NETD_SPAWN_NFT ${JSON.stringify(value)} is not valid: expected 1 (run nft from PATH), or unset\n`);
    expect(code).toBe(EXIT.usage);
  });

  it('stops at start with one line saying how to build its addon when the build lacks it', async () => {
    // The built bin where no build/Release is found above it (its packages linked in).
    const copy = join(dir, 'no-addon');
    for (const part of ['guest', 'shared']) cpSync(fileURLToPath(new URL(`../../../dist/${part}`, import.meta.url)), join(copy, 'dist', part), { recursive: true });
    symlinkSync(fileURLToPath(new URL('../../../node_modules', import.meta.url)), join(copy, 'node_modules'));
    const { code, stderr } = await runBesideAnother({ cli: join(copy, 'dist', 'guest', 'cli.js') });
    expect(stderr).toBe('spectrum-netd: the rtnl-events addon (build/Release/rtnl_events.node) is missing: run npm run build (it needs make, g++ and python3)\n');
    expect(code).toBe(EXIT.failure);
  });
});

describe('spectrum-netd status, as text', () => {
  /** An agent with no links that has done nothing worth a line; each test adds what it shows. */
  const quietStatus = {
    links: [],
    counters: { reconciles: 1, changesApplied: 0, initialChanges: 0, failedChanges: 0, fullSyncs: 1, lastReconcileMs: 1, firewallRepairs: 0, conntrackPurged: 0, conntrackPurgeFailures: 0, lastPurgeMs: 0 },
    firewall: { antispoofDrops: 0, isolationDrops: 0, inputDrops: 0, arpDrops: 0, fragmentDrops: 0, flowLimitDrops: 0, flowRateDrops: 0, leakDrops: 0 },
    flowLimits: null,
    firewallError: null,
    model: null,
    conntrack: null,
  };

  it('shows the last reconcile time to two decimals, not as a raw float', () => {
    const text = formatStatus({
      links: [{ ifindex: 3, name: 'snp7', role: 'provider', id: 7, ip: '100.64.0.7', state: 'configured', note: null, error: null }],
      counters: { reconciles: 5, changesApplied: 9, initialChanges: 1, failedChanges: 0, fullSyncs: 1, lastReconcileMs: 0.44982300000037867, firewallRepairs: 0, conntrackPurged: 0, conntrackPurgeFailures: 0, lastPurgeMs: 0 },
      firewall: { antispoofDrops: 2, isolationDrops: 2, inputDrops: 0, arpDrops: 1, fragmentDrops: 0, flowLimitDrops: 5, flowRateDrops: 3, leakDrops: 4 },
      flowLimits: { clientFlowLimit: 4096, clientNewFlowRate: 100 },
      firewallError: null,
      model: null,
      conntrack: null,
    });
    expect(text).toContain('\nlastReconcileMs: 0.45\n');
    expect(text).toContain('\nreconciles: 5\n');
    expect(text).toContain('\nflowLimitDrops: 5\n');
    expect(text).toContain('\nflowRateDrops: 3\nleakDrops: 4\nflow limits per client: 4096 conntrack entries, 100 new flows a second (200 at once)\n');
    expect(text).toMatch(/^LINK +ROLE +ID +IP +STATE +NOTE\nsnp7 +provider +7 +100\.64\.0\.7 +configured\n/);
  });

  it('shows the flow limits on one line after the firewall counters, "no" for a limit of 0, none without a firewall', () => {
    expect(formatStatus({ ...quietStatus, flowLimits: { clientFlowLimit: 0, clientNewFlowRate: 0 } })).toContain(
      '\nflowRateDrops: 0\nleakDrops: 0\nflow limits per client: no cap on conntrack entries, no new-flow rate\n',
    );
    expect(formatStatus({ ...quietStatus, flowLimits: { clientFlowLimit: 128, clientNewFlowRate: 0 } })).toContain('\nflow limits per client: 128 conntrack entries, no new-flow rate\n');
    expect(formatStatus(quietStatus)).not.toContain('flow limits');
  });

  it('says why the firewall is not in force while its updates fail, and that limits applied before still hold', () => {
    const error = 'nft -f - failed (exit 1): Error: Could not process rule: Operation not permitted';
    const failing = formatStatus({ ...quietStatus, firewall: null, firewallError: error });
    expect(failing).toContain(`\nfirewall: not in force: the last update failed (retrying): ${error}\n`);
    expect(failing).not.toContain('flowLimitDrops');
    expect(formatStatus({ ...quietStatus, flowLimits: { clientFlowLimit: 128, clientNewFlowRate: 0 }, firewallError: error })).toContain(
      `\nflow limits per client: 128 conntrack entries, no new-flow rate\nfirewall: the last update failed (retrying): ${error}\n`,
    );
    expect(formatStatus(quietStatus)).not.toContain('firewall:');
  });

  it('says the firewall is not in force where its counters cannot be read only when no limits are in force either', () => {
    // It said "not in force" under the line of the limits in force.
    const limits = { clientFlowLimit: 128, clientNewFlowRate: 0 };
    const unread = formatStatus({ ...quietStatus, firewall: null, flowLimits: limits });
    expect(unread).toContain('\nflow limits per client: 128 conntrack entries, no new-flow rate\nfirewall: its drop counters cannot be read just now\n');
    expect(unread).not.toContain('not in force');
    expect(formatStatus({ ...quietStatus, firewall: null, flowLimits: null, arpGuard: null })).toContain(
      '\nfirewall: not in force: its table inet spectrum_netd cannot be read (deleted or replaced since the last update?); the next audit or update makes it again\n',
    );
  });

  it('says the firewall is off when the agent runs with --no-firewall, with no drop counters (zeros read as "nothing dropped")', () => {
    const text = formatStatus({ ...quietStatus, firewallEnabled: false, firewall: null, arpGuard: null });
    expect(text).toContain('\nfirewall: off (run with --no-firewall): no isolation, NAT, anti-spoofing, ARP guard or flow limits, so no drop counters\n');
    expect(text).not.toMatch(/Drops|not in force|cannot be read/);
    // With one, as before; and an agent from before firewallEnabled was sent.
    expect(formatStatus({ ...quietStatus, firewallEnabled: true })).not.toContain('firewall:');
    expect(formatStatus({ ...quietStatus, firewallEnabled: true })).toContain('\nantispoofDrops: 0\n');
    expect(formatStatus(quietStatus)).toContain('\nantispoofDrops: 0\n');
  });

  it('tells the ARP guard apart from the rest of the firewall: unavailable on a kernel without the arp family, or its table missing, while the inet table stands', () => {
    const limits = { clientFlowLimit: 128, clientNewFlowRate: 10 };
    const withoutGuard = { ...quietStatus, flowLimits: limits, firewall: { ...quietStatus.firewall, arpDrops: null } };
    const unsupported = formatStatus({ ...withoutGuard, arpGuard: 'unsupported' });
    expect(unsupported).toContain('\narpDrops: -\n');
    expect(unsupported).toContain(
      '\nflow limits per client: 128 conntrack entries, 10 new flows a second (20 at once)\nfirewall: in force (table inet spectrum_netd), but not its ARP guard\n' +
        "firewall: ARP guard: unavailable: nft refused the arp family (is CONFIG_NF_TABLES_ARP set in the kernel?), so clients' ARP is not policed; the rest of the firewall stands without it\n",
    );
    expect(unsupported).not.toContain('not in force');
    const missing = formatStatus({ ...withoutGuard, arpGuard: 'missing' });
    expect(missing).toContain(
      '\nfirewall: in force (table inet spectrum_netd), but not its ARP guard\nfirewall: ARP guard: not in force: its table arp spectrum_netd cannot be read (deleted or replaced since the last update?); the next audit or update makes it again\n',
    );
    expect(missing).not.toMatch(/^firewall: not in force/m);
    // The inet table gone, the ARP guard standing: only the inet table is named.
    const inetGone = formatStatus({ ...quietStatus, firewall: null, arpGuard: 'in-force' });
    expect(inetGone).toMatch(/^firewall: not in force: its table inet spectrum_netd cannot be read/m);
    expect(inetGone).not.toContain('ARP guard');
    // Both gone: a line for each.
    expect(formatStatus({ ...quietStatus, firewall: null, arpGuard: 'missing' })).toMatch(
      /^firewall: not in force: its table inet spectrum_netd cannot be read .*\nfirewall: ARP guard: not in force: its table arp spectrum_netd cannot be read /m,
    );
    expect(formatStatus({ ...quietStatus, flowLimits: limits, arpGuard: 'in-force' })).not.toContain('firewall:');
  });

  it('while an update fails, says of the ARP guard only what it is: no guess that it was deleted, no claim that the rest stands', () => {
    const failed = 'nft replacing table inet spectrum_netd and arp spectrum_netd failed (exit 1): Error: Could not process rule: Operation not permitted';
    // A first update nft refused: neither table was ever made, and updates fail.
    const missing = formatStatus({ ...quietStatus, firewall: null, firewallError: failed, arpGuard: 'missing' });
    expect(missing).toContain(`\nfirewall: not in force: the last update failed (retrying): ${failed}\nfirewall: ARP guard: not in force: its table arp spectrum_netd cannot be read\n`);
    expect(missing).not.toMatch(/deleted or replaced|makes it again/);
    // No arp family, and the inet table refused too: nothing of the firewall stands.
    const unsupported = formatStatus({ ...quietStatus, firewall: null, firewallError: failed, arpGuard: 'unsupported' });
    expect(unsupported).toContain(
      "\nfirewall: ARP guard: unavailable: nft refused the arp family (is CONFIG_NF_TABLES_ARP set in the kernel?), so clients' ARP is not policed\n",
    );
    expect(unsupported).not.toContain('stands');
  });

  it('does not name the inet table as the one gone for an agent from before the ARP guard was told apart (either table could be)', () => {
    // quietStatus has no arpGuard, as such an agent's answer.
    const text = formatStatus({ ...quietStatus, firewall: null });
    expect(text).toContain('\nfirewall: not in force: its table inet spectrum_netd or arp spectrum_netd cannot be read (deleted or replaced since the last update?); the next audit or update makes it again\n');
    expect(text).not.toContain('ARP guard');
  });

  it("shows the reaper's threshold, count, what it deleted and its last error; nothing without a reaper", () => {
    const reaper = { threshold: 4096, thresholdOption: 'auto' as const, count: 5000, reaps: 3, reaped: 1200, lastReap: { deleted: 800, countBefore: 5000, countAfter: 4200, ms: 12 }, failures: 0, lastError: null };
    expect(formatStatus({ ...quietStatus, reaper })).toContain(
      '\nconntrack reaper: threshold 4096 entries (auto); count 5000 at last check; 1200 closed TCP entries deleted; 3 reaps done; last deleted 800 (5000 -> 4200)\n',
    );
    expect(formatStatus({ ...quietStatus, reaper: { ...reaper, threshold: null, count: null, reaps: 0, reaped: 0, lastReap: null, failures: 2, lastError: 'reading the conntrack table failed (ENOMEM)' } })).toContain(
      '\nconntrack reaper: threshold none (auto: nf_conntrack_max not readable yet, or 0); count - at last check; 0 closed TCP entries deleted; 0 reaps done; 2 failed; last error: reading the conntrack table failed (ENOMEM)\n',
    );
    expect(formatStatus({ ...quietStatus, reaper: null })).not.toContain('reaper');
  });

  it('names the upstream resolvers the DNS forwarder cannot reach yet, and the error, only when there are some', () => {
    const dns = { listening: true, upstreams: ['192.0.2.54:53'], unreachableUpstreams: ['192.0.2.53:53 (ENETUNREACH)'] };
    expect(formatStatus({ ...quietStatus, services: { leases: [], dhcp: null, dns } })).toContain(
      '\ndns: listening; upstreams in use: 192.0.2.54:53; unreachable (retried): 192.0.2.53:53 (ENETUNREACH)\n',
    );
    expect(formatStatus({ ...quietStatus, services: { leases: [], dhcp: null, dns: { ...dns, unreachableUpstreams: [] } } })).toContain('\ndns: listening; upstreams in use: 192.0.2.54:53\n');
    // Upstream TCP connections ended without an answer, upstream SERVFAIL or REFUSED answers that
    // moved their query on; queries refused a place in the pending table, and pending ones that
    // gave theirs up to a client below its share; client TCP connections taken, refused, closed
    // for a client below its share, and closed for idleness.
    // Of the answers, those relayed truncated, and those taken late from an upstream passed over.
    const counts = { queries: 9, answered: 8, truncated: 2, lateAnswers: 1, upstreamClosed: 3, upstreamErrors: 4, overloaded: 3, evicted: 2, tcpConnections: 7, tcpRejected: 5, tcpEvicted: 1, tcpIdleClosed: 6 };
    expect(formatStatus({ ...quietStatus, services: { leases: [], dhcp: null, dns: { ...dns, ...counts } } })).toContain(
      '\ndns: queries 9, answered 8, truncated 2, lateAnswers 1, retransmits 0, upstreamTimeouts 0, upstreamClosed 3, upstreamErrors 4, failed 0, rateLimited 0, overloaded 3, evicted 2, malformed 0, tcpConnections 7, tcpRejected 5, tcpEvicted 1, tcpIdleClosed 6\n',
    );
  });

  it('names the upstream resolvers in use whose sockets failed, apart, only when there are some', () => {
    const dns = { listening: true, upstreams: ['192.0.2.53:53', '192.0.2.54:53'], unreachableUpstreams: [], failingUpstreams: ['192.0.2.53:53 (64 of 64 sockets failed)'] };
    expect(formatStatus({ ...quietStatus, services: { leases: [], dhcp: null, dns } })).toContain(
      '\ndns: listening; upstreams in use: 192.0.2.53:53, 192.0.2.54:53; failing (connected again after a backoff): 192.0.2.53:53 (64 of 64 sockets failed)\n',
    );
    expect(formatStatus({ ...quietStatus, services: { leases: [], dhcp: null, dns: { ...dns, failingUpstreams: [] } } })).toContain('\ndns: listening; upstreams in use: 192.0.2.53:53, 192.0.2.54:53\n');
  });

  it('never says "none" of the upstreams of an agent that has one configured but not reached yet', () => {
    const dns = { listening: true, upstreams: [], unreachableUpstreams: ['192.0.2.53:53 (ENETUNREACH)'] };
    const text = formatStatus({ ...quietStatus, services: { leases: [], dhcp: null, dns } });
    expect(text).toContain('\ndns: listening; upstreams in use: none; unreachable (retried): 192.0.2.53:53 (ENETUNREACH)\n');
    expect(text).not.toMatch(/upstreams: none/);
    // None configured at all (nothing in resolv.conf): that, and only that, is "none".
    expect(formatStatus({ ...quietStatus, services: { leases: [], dhcp: null, dns: { ...dns, unreachableUpstreams: [] } } })).toContain('\ndns: listening; upstreams: none\n');
  });

  it('shows every DHCP counter on one line, rate-limited requests and link socket retries among them, only with a DHCP server', () => {
    const dhcp = { received: 12, offers: 3, acks: 3, socketErrors: 1, socketRetries: 2, rateLimited: 40 };
    expect(formatStatus({ ...quietStatus, services: { leases: [], dhcp, dns: null } })).toContain(
      '\ndhcp: received 12, offers 3, acks 3, socketErrors 1, socketRetries 2, rateLimited 40\n',
    );
    expect(formatStatus({ ...quietStatus, services: { leases: [], dhcp: null, dns: null } })).not.toContain('dhcp:');
  });

  it("shows a client's hostname in the lease table as one cell: quoted where it has blanks, begins with a quote or is '-', '-' where it is empty or none", () => {
    // `evil host  pl1    100.64.0.1  bound` was shown as it is, faking columns; '' as a blank cell.
    const hostnames = ['evil host  pl1    100.64.0.1  bound', '', '-', '"web"', 'web-1', 'tab\there', undefined];
    const leases = hostnames.map((hostname, index) => ({ ifname: `snp${index}`, clientIp: `100.64.0.${index}`, state: 'bound', ...(hostname !== undefined && { hostname }) }));
    const text = formatStatus({ ...quietStatus, services: { leases, dhcp: null, dns: null } });
    const table = text.slice(text.indexOf('\nLEASE')).trim().split('\n');
    expect(table).toEqual([
      'LEASE  IP          STATE  EXPIRES IN  HOSTNAME',
      'snp0   100.64.0.0  bound  -           "evil host  pl1    100.64.0.1  bound"',
      'snp1   100.64.0.1  bound  -           -',
      'snp2   100.64.0.2  bound  -           "-"',
      'snp3   100.64.0.3  bound  -           "\\"web\\""',
      'snp4   100.64.0.4  bound  -           web-1',
      'snp5   100.64.0.5  bound  -           "tab\\there"',
      'snp6   100.64.0.6  bound  -           -',
    ]);
  });

  it('says which client IPs still owe a conntrack purge, and why, only while some do', () => {
    const base = { ...quietStatus, counters: { ...quietStatus.counters, conntrackPurgeFailures: 1 } };
    const owed = { owed: ['100.64.0.1'], sweepOwed: true, lastError: 'the kernel refused to read the conntrack table (EPERM): does the agent have CAP_NET_ADMIN?' };
    expect(formatStatus({ ...base, conntrack: owed })).toContain(
      '\nconntrack: old entries still to delete: 100.64.0.1, every client IP not served at start; last error: the kernel refused to read the conntrack table (EPERM): does the agent have CAP_NET_ADMIN?\n',
    );
    expect(formatStatus({ ...base, conntrack: { owed: [], sweepOwed: false, lastError: null } })).not.toContain('conntrack:');
    expect(formatStatus({ ...base, conntrack: null })).not.toContain('conntrack:');
  });
});

describe('spectrum-netd client --json', () => {
  it('is refused with --watch, which prints nothing on stdout (its log says each reconcile): one line, exit 2, before anything is configured', async () => {
    const refused = await execFileAsync('node', [CLI, 'client', '--watch', '--json'], { encoding: 'utf8' }).then(
      () => ({ code: 0, stdout: '', stderr: '' }),
      (error: { code?: number; stdout?: string; stderr?: string }) => ({ code: error.code, stdout: error.stdout ?? '', stderr: error.stderr ?? '' }),
    );
    const line = 'client: --json is for one run, not --watch (which prints nothing on stdout: its log says each reconcile)';
    expect(refused).toEqual({ code: 2, stdout: `${JSON.stringify({ error: { kind: 'usage', message: line, exitCode: 2 } })}\n`, stderr: `spectrum-netd: ${line}\n` });
  });

  it('is said in the README as it is: the refusal prints its error object on stdout, as every --json failure', () => {
    // The README said the refusal printed nothing on stdout, against its own rule for --json (and what the test above sees).
    const readme = readFileSync(join(import.meta.dirname, '..', '..', '..', 'README.md'), 'utf8');
    const paragraph = readme.split('\n- ').find((item) => item.startsWith('`spectrum-netd client ')) ?? '';
    const sentence = /`--json` is refused with `--watch`[^)]*\)/.exec(paragraph.replace(/\s+/g, ' '))?.[0] ?? '';
    expect(sentence).toMatch(/exit 2, with the refusal's error object on stdout, as every `--json` failure/);
  });
});

describe('a provider link DHCP does not serve, in status', () => {
  // Its DHCP socket could not be opened (no CAP_NET_RAW, no descriptor left): the link read
  // "configured", and no client got an address there.
  const link = (name: string, error: string | null) => ({ name, role: 'provider', id: 1, ip: '100.64.0.1', state: 'configured', note: null, error });
  it('is shown in error with why; other links, and a link already in error, as they are', () => {
    const unserved = new Map([['vm1', 'cannot open a DHCP socket on vm1: Operation not permitted'], ['vm3', 'Too many open files']]);
    const shown = withUnservedLinks([link('vm1', null), link('vm2', null), link('vm3', 'address add failed')], unserved);
    expect(shown.map((each) => each.error)).toEqual(['DHCP not served (retrying): cannot open a DHCP socket on vm1: Operation not permitted', null, 'address add failed']);
    expect(formatStatus({ links: shown, counters: {} } as unknown as Parameters<typeof formatStatus>[0])).toContain('error: DHCP not served (retrying): cannot open a DHCP socket on vm1');
  });
});
