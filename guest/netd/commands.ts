// The spectrum-netd subcommands: run (provider agent), client (app VM links), status.
import { type Stats, closeSync, constants, fstatSync, readFileSync, readdirSync, writeSync } from 'node:fs';
import { Command, Option } from 'commander';
import { integerOption } from '../../shared/cli/integer-option.js';
import { type Interruption, interruptOnSignals, signalExitCode } from '../../shared/cli/interruption.js';
import { CliError, EXIT } from '../../shared/cli/run-cli.js';
import { shownCell } from '../../shared/shown-text.js';
import { UNIX_SOCKET_PATH_MAX } from '../../shared/unix-socket-path.js';
import { type Logger, createLogger, logLevel } from '../../shared/log.js';
import type { ConntrackPort } from '../conntrack-port.js';
import { isInterfaceName } from '../interface-name.js';
import { KernelConntrack } from '../conntrack/conntrack-purge.js';
import { ConntrackReaper, MAX_REAP_THRESHOLD, type ReapThresholdOption } from '../conntrack/conntrack-reaper.js';
import { MAX_HOSTNAME_CHARS } from '../dhcp/lease-table.js';
import type { DnsForwarder } from '../dns/forwarder.js';
import { MAX_TIMEOUT_MS, QUERY_TIMEOUT_MS, UPSTREAM_TIMEOUT_MS } from '../dns/query-times.js';
import { UnusableUpstreamError, UpstreamSyntaxError, parseConfiguredUpstream } from '../dns/upstream.js';
import { type FirewallPort, NoopFirewall } from '../firewall-port.js';
import type { ServicesPort } from '../services-port.js';
import { ARP_TABLE, TABLE } from '../firewall/ruleset.js';
import { MAX_CLIENT_FLOW_LIMIT, MAX_CLIENT_NEW_FLOW_RATE, clientNewFlowBurst } from '../firewall/table-settings.js';
import { type ClientFlowLimitOption, type ClientNewFlowRateOption, NftablesFirewall, ProviderServices, removeOwnFirewall } from './provider-ports.js';
import { NetdAgent } from './agent.js';
import { type AllowedPair, parseAllowPair } from './allow-pair.js';
import { ControlServer, DEFAULT_CONTROL_SOCKET, checkControlSocketPath, controlRequest } from './control-socket.js';
import { NetdError } from './netd-error.js';
import { holdAgentLock } from './agent-lock.js';
import { clientNoNetAdminLine, noNetAdminLine, noNetRawLine, selfHoldsNetRaw } from '../capabilities.js';
import { selfHoldsNetAdmin } from '../../shared/net-admin.js';
import { RtnetlinkKernel } from './rtnetlink.js';
import { loadRtnlEventsAddon } from './rtnl-events.js';
import { SHOWN_DNS_COUNTS } from './shown-dns-counts.js';
import type { LinkReport } from './plan.js';
import type { StatusReply } from './status-shape.js';

const collect = (value: string, previous: string[]): string[] => [...previous, value];

/** The control socket's answer while the agent has not yet read the kernel's state. */
const AGENT_STARTING = 'the agent is still starting';

/**
 * --ignore: a name Linux could give an interface (isInterfaceName: dev_valid_name's 1 to 15 bytes,
 * not . or .., no '/', ':' or blanks); any other would silently match nothing.
 */
function collectInterface(value: string, previous: string[]): string[] {
  if (!isInterfaceName(value)) {
    throw new CliError(`--ignore ${JSON.stringify(value)} is not valid: give an interface name: 1 to 15 bytes, not . or .., without '/', ':' or blanks`, EXIT.usage);
  }
  return [...previous, value];
}

/**
 * --dns-upstream: checked when given, so that a typo, an address at which no resolver can be
 * (0.0.0.0 and the rest of 0.0.0.0/8, a broadcast or multicast address, an IPv4-compatible one,
 * a link-local one without a zone), or a zone that would be ignored (on any address but a
 * link-local one), is a usage error, not a failed start.
 */
function collectUpstream(value: string, previous: string[]): string[] {
  try {
    parseConfiguredUpstream(value);
  } catch (error) {
    // Said as every other bad value is: the option, the value (as the parser shows it: a long one
    // cut short), why.
    if (error instanceof UpstreamSyntaxError || error instanceof UnusableUpstreamError) throw new CliError(`--dns-upstream ${error.shown} is not valid: ${error.reason}`, EXIT.usage);
    throw error;
  }
  return [...previous, value];
}

/** --control-socket: a path a Unix socket can have, checked as it is read, before anything is made or asked. */
function controlSocketOption(value: string): string {
  try {
    return checkControlSocketPath(value);
  } catch {
    const shown = `${JSON.stringify(value.slice(0, 64))}${value.length > 64 ? '...' : ''}`;
    throw new CliError(`--control-socket ${shown} is not valid: give a path of 1 to ${UNIX_SOCKET_PATH_MAX} bytes`, EXIT.usage);
  }
}

/** --notify-fd: a descriptor number as a service manager gives one (s6: the notification-fd file). */
function parseFd(text: string): number {
  return integerOption('--notify-fd', text, 1, 9999, 'a file descriptor number');
}

const GIVE_NOTIFY_FD = 'give the descriptor the service manager opened for readiness (s6: the notification-fd file)';

/**
 * --notify-fd at start, before anything is configured: a descriptor the agent was given. One that
 * is not open would otherwise fail only after the first reconcile, the agent then exiting with its
 * links configured. What Node and libuv open for themselves before any of our code runs is an
 * anonymous inode (epoll, eventfd) or a pipe both of whose ends the process holds (libuv's signal
 * pipes): a newline written there would reach no service manager, only libuv, and corrupt it. So
 * the descriptor must be a pipe, socket, file or character device open for writing (one open
 * only for reading, a pipe's reading end or `3</dev/null`, would fail only at the write, after the
 * first reconcile), and where it is a pipe, its reading end must not be held by the agent on
 * another descriptor. (Not told apart by close-on-exec: Node sets it on the descriptors it
 * inherits too, uv_disable_stdio_inheritance.) Nor can a pipe of libuv's be told from one whose
 * reading end a service manager left open in the agent along with the writing end: refused alike,
 * the message says what was found and both.
 */
function checkNotifyFd(fd: number): void {
  let info: Stats;
  try {
    info = fstatSync(fd);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new CliError(`--notify-fd ${fd} is not valid: no such open descriptor (${code}); ${GIVE_NOTIFY_FD}`, EXIT.usage);
  }
  if (!(info.isFIFO() || info.isSocket() || info.isFile() || info.isCharacterDevice())) {
    throw new CliError(`--notify-fd ${fd} is not valid: it is not a pipe, socket, file or character device given to the agent; ${GIVE_NOTIFY_FD}`, EXIT.usage);
  }
  if (accessMode(fd) === constants.O_RDONLY) {
    throw new CliError(`--notify-fd ${fd} is not valid: it is open only for reading, so the readiness newline could not be written to it; ${GIVE_NOTIFY_FD}`, EXIT.usage);
  }
  // On another descriptor: the given one may be open for reading too where it is a named FIFO
  // opened read-write (sh: 3<>FIFO, so that the open waits for no reader), whose reader is elsewhere.
  const readingEnd = info.isFIFO() ? readingEndHeld(info, fd) : null;
  if (readingEnd !== null) {
    throw new CliError(
      `--notify-fd ${fd} is not valid: the agent holds this pipe's reading end too (fd ${readingEnd}), as it holds those of libuv's own pipes, where a newline would reach libuv, not a service manager; if the service manager made this pipe, it left the reading end open in the agent: check that it passes only the writing end; ${GIVE_NOTIFY_FD}`,
      EXIT.usage,
    );
  }
}

/** A descriptor other than `given` on which this process has the pipe `pipe` open for reading (null: none). */
function readingEndHeld(pipe: Stats, given: number): number | null {
  let fds: string[];
  try {
    fds = readdirSync('/proc/self/fd');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new CliError(`--notify-fd cannot be checked: /proc/self/fd cannot be read (${code}); mount /proc`, EXIT.usage);
  }
  for (const name of fds) {
    const fd = Number(name);
    if (fd === given) continue;
    let info: Stats;
    try {
      info = fstatSync(fd);
    } catch {
      continue; // closed meanwhile (readdir's own descriptor)
    }
    if (info.isFIFO() && info.dev === pipe.dev && info.ino === pipe.ino && accessMode(fd) !== constants.O_WRONLY) return fd;
  }
  return null;
}

/** The access mode (O_RDONLY, O_WRONLY, O_RDWR) descriptor fd was opened with, as /proc/self/fdinfo gives it (octal). */
function accessMode(fd: number): number | undefined {
  try {
    const flags = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1];
    return flags === undefined ? undefined : Number.parseInt(flags, 8) & 0o3;
  } catch {
    return undefined;
  }
}

/** s6 readiness: one newline on the descriptor, then close it (keep stdout/stderr open). */
function notifyReady(fd: number): void {
  try {
    writeSync(fd, '\n');
    if (fd > 2) closeSync(fd);
  } catch (error) {
    throw new NetdError('notify-fd', `cannot write the readiness newline to fd ${fd}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** Where the firewall and services plug in. */
export interface RunPorts {
  readonly firewall: FirewallPort;
  readonly services: ServicesPort;
  /** Deletes the conntrack entries of client IPs no longer served; none: never. */
  readonly conntrack?: ConntrackPort;
  /** Deletes closed TCP conntrack entries (any source) while the table is at a threshold; none: never. */
  readonly reaper?: Pick<ConntrackReaper, 'start' | 'stop' | 'status'>;
  /** Extra status (leases, service counters) for `status`. */
  status?(): unknown;
  /** Links a service does not serve (DHCP's socket not open), by name, with why: shown as the link's error. */
  unservedLinks?(): ReadonlyMap<string, string>;
  /** Work worth doing once the agent is ready and before clients come (DHCP's warm-up). */
  warmUp?(): Promise<void>;
  close?(): Promise<void>;
}

interface RunOptions {
  ignore: string[];
  allowPair: string[];
  controlSocket: string;
  notifyFd?: number;
  firewall: boolean;
  dhcp: boolean;
  dns: boolean;
  leaseSeconds: number;
  dnsUpstream: string[];
  /** Milliseconds. */
  dnsUpstreamTimeout: number;
  /** Milliseconds; undefined (not given): QUERY_TIMEOUT_MS, or dnsUpstreamTimeout where that is longer. */
  dnsQueryTimeout: number | undefined;
  resolvConf: string;
  /** Milliseconds (given in seconds). */
  firewallAudit: number;
  clientFlowLimit: ClientFlowLimitOption;
  clientNewFlowRate: ClientNewFlowRateOption;
  conntrackReapThreshold: ReapThresholdOption;
}

// Every option value is checked as commander reads it (argParser), whatever the other options say
// (--no-firewall included), so that a bad one is a usage error before anything is made or bound:
// before the control socket's folder, and before another agent on that socket is asked about.

/** --lease-seconds: whole seconds, a minute to a year. */
function leaseSeconds(text: string): number {
  return integerOption('--lease-seconds', text, 60, 31_536_000, 'whole seconds');
}

/** --client-flow-limit: `auto` or a whole number of flows, 0 for none. */
function clientFlowLimit(text: string): ClientFlowLimitOption {
  return text === 'auto' ? 'auto' : integerOption('--client-flow-limit', text, 0, MAX_CLIENT_FLOW_LIMIT, 'auto or a number of flows');
}

/** --client-new-flow-rate: `auto` or a whole number of new flows a second, 0 for none. */
function clientNewFlowRate(text: string): ClientNewFlowRateOption {
  return text === 'auto' ? 'auto' : integerOption('--client-new-flow-rate', text, 0, MAX_CLIENT_NEW_FLOW_RATE, 'auto or new flows per second');
}

/** --conntrack-reap-threshold: `auto` or a whole number of entries, 0 for never. */
function conntrackReapThreshold(text: string): ReapThresholdOption {
  return text === 'auto' ? 'auto' : integerOption('--conntrack-reap-threshold', text, 0, MAX_REAP_THRESHOLD, 'auto or a number of conntrack entries');
}

/** The least --dns-upstream-timeout and --dns-query-timeout: a resolver's round trip and more. */
const MIN_DNS_TIMEOUT_MS = 100;

/** --dns-upstream-timeout: milliseconds one upstream has a query to itself. */
function dnsUpstreamTimeout(text: string): number {
  return integerOption('--dns-upstream-timeout', text, MIN_DNS_TIMEOUT_MS, MAX_TIMEOUT_MS, 'milliseconds');
}

/** --dns-query-timeout: milliseconds a query waits in all (checked against --dns-upstream-timeout in checkDnsTimeouts). */
function dnsQueryTimeout(text: string): number {
  return integerOption('--dns-query-timeout', text, MIN_DNS_TIMEOUT_MS, MAX_TIMEOUT_MS, 'milliseconds');
}

/**
 * --dns-query-timeout given below --dns-upstream-timeout: a query would be given up on before its
 * first upstream's time is up. Checked once both are read, before anything is made.
 */
function checkDnsTimeouts(options: Pick<RunOptions, 'dnsUpstreamTimeout' | 'dnsQueryTimeout'>): void {
  const query = options.dnsQueryTimeout;
  if (query !== undefined && query < options.dnsUpstreamTimeout) {
    throw new CliError(`--dns-query-timeout "${query}" is not valid: give milliseconds from --dns-upstream-timeout (${options.dnsUpstreamTimeout}) to ${MAX_TIMEOUT_MS}`, EXIT.usage);
  }
}

/** --firewall-audit: seconds between read-backs of the ruleset, 0 for none. */
function firewallAuditMs(text: string): number {
  // Decimal only: Number() would also take hex, exponents and blanks.
  const seconds = /^[0-9]{1,5}(\.[0-9]{1,3})?$/.test(text) ? Number(text) : Number.NaN;
  if (!(seconds === 0 || (seconds >= 0.1 && seconds <= 86_400))) {
    throw new CliError(`--firewall-audit ${JSON.stringify(text)} is not valid: give seconds from 0.1 to 86400, or 0 for never`, EXIT.usage);
  }
  return Math.round(seconds * 1000);
}

/**
 * The real ports: nftables, the DHCP server and the DNS forwarder (each can be switched off).
 * `stop`: aborted by a signal while they are made; then no service is started only to be closed
 * again at once (each logs as it starts: a DNS upstream with no route, say), and what was made is
 * closed.
 */
async function providerPorts(options: RunOptions, log: Logger, stop: AbortSignal): Promise<RunPorts> {
  // Before anything of the namespace is touched (--no-firewall deletes the firewall's tables):
  // a second agent in it is refused in one line, whatever its control socket and services.
  const lock = await holdAgentLock();
  try {
    const ports = await lockedProviderPorts(options, log, stop);
    return {
      ...ports,
      close: async () => {
        try {
          await ports.close?.();
        } finally {
          lock.close();
        }
      },
    };
  } catch (error) {
    lock.close();
    throw error;
  }
}

async function lockedProviderPorts(options: RunOptions, log: Logger, stop: AbortSignal): Promise<RunPorts> {
  // First: it can fail (no nft-run addon), and then no service has been started.
  const nft = { spawn: spawnNftFromEnv(process.env) };
  const firewall = options.firewall ? new NftablesFirewall(options.clientFlowLimit, options.clientNewFlowRate, log, undefined, undefined, nft) : new NoopFirewall();
  // Before any link comes up: a table an earlier run left would drop the links plugged from now on.
  if (!options.firewall) await removeOwnFirewall(log, nft);
  // The firewall masquerades clients and lets established flows through: what makes a client's
  // old entries reach the next VM given its IP. Without it there is nothing of ours to purge.
  const conntrack = options.firewall ? new KernelConntrack() : undefined;
  // Without the firewall there is no flow cap for closed entries to get around (and no table of
  // ours that makes the kernel track flows): nothing to reap.
  const reaper = options.firewall && options.conntrackReapThreshold !== 0 ? new ConntrackReaper(options.conntrackReapThreshold, log) : undefined;
  // Each service's module is loaded on first use (tens of ms): checked again once it is, right
  // before the service starts.
  throwIfStopped(stop);
  const dhcpModule = options.dhcp ? await import('../dhcp/dhcp-server.js') : undefined;
  throwIfStopped(stop);
  const dhcp = dhcpModule === undefined ? null : await dhcpModule.startDhcpServer({ leaseSeconds: options.leaseSeconds, logger: log });
  let dns: DnsForwarder | null = null;
  try {
    throwIfStopped(stop);
    if (options.dns) {
      const { startDnsForwarder } = await import('../dns/forwarder.js');
      throwIfStopped(stop);
      dns = await startDnsForwarder({
        logger: log,
        resolvConfPath: options.resolvConf,
        // Bound once the first reconcile has put the gateway address on the provider links
        // (ProviderServices.linksChanged): bound now, it would warn of an address not there yet.
        bindAtStart: false,
        ...(options.dnsUpstream.length > 0 ? { upstreams: options.dnsUpstream } : {}),
        timeoutMs: options.dnsUpstreamTimeout,
        ...(options.dnsQueryTimeout !== undefined && { queryTimeoutMs: options.dnsQueryTimeout }),
      });
    }
  } catch (error) {
    await dhcp?.close();
    throw error;
  }
  const services = new ProviderServices(dhcp, dns);
  return {
    firewall,
    services,
    ...(conntrack !== undefined && { conntrack }),
    ...(reaper !== undefined && { reaper }),
    status: () => services.status(),
    unservedLinks: () => dhcp?.unserved() ?? new Map<string, string>(),
    warmUp: async () => dhcp?.warmUp(),
    close: () => services.close(),
  };
}

/** What a start-up step that `stop` cut short fails with (see runAgent's startStep: never shown). */
function throwIfStopped(stop: AbortSignal): void {
  if (stop.aborted) throw new NetdError('stopped', `stopped by ${String(stop.reason)} while starting`);
}

/** The one line of an agent stopped by `signal` before its first reconcile was done; `after`: what is left. */
function stoppedWhileStarting(signal: NodeJS.Signals, after: string): CliError {
  return new CliError(`stopped by ${signal} while starting (before its first reconcile was done); ${after}`, signalExitCode(signal));
}

/**
 * What a long-running agent (`run`, `client --watch`) does at SIGHUP and SIGUSR1 until the returned
 * function is called: says it at info level, and goes on. SIGHUP would otherwise end it with
 * nothing said (its control socket left, DHCP and DNS gone with it), and there is nothing to
 * reload: it follows its links and resolv.conf itself. SIGUSR1 would open Node's inspector, which
 * the bin's own listener keeps closed (shared/cli/inspector-signal.ts).
 */
function sayIgnoredSignals(log: Logger): () => void {
  const said: Readonly<Record<'SIGHUP' | 'SIGUSR1', string>> = {
    SIGHUP: 'SIGHUP ignored: the agent follows its links and resolv.conf by itself, there is nothing to reload (SIGTERM stops it)',
    SIGUSR1: "SIGUSR1 ignored: Node's inspector is not opened in the agent",
  };
  const listeners = (['SIGHUP', 'SIGUSR1'] as const).map((signal) => [signal, () => log.info({ signal }, said[signal])] as const);
  for (const [signal, listener] of listeners) process.on(signal, listener);
  return () => {
    for (const [signal, listener] of listeners) process.off(signal, listener);
  };
}

/** The first SIGINT or SIGTERM `interruption` takes, once it comes. */
function stopRequestedBy(interruption: Interruption): Promise<NodeJS.Signals> {
  return new Promise((resolve) => interruption.signal.addEventListener('abort', () => resolve(interruption.received ?? 'SIGTERM'), { once: true }));
}

/**
 * The notification socket's receive buffer, from the environment (for tests, which make it
 * overflow with a small one); undefined: the default.
 */
export const EVENT_BUFFER_ENV = 'SPECTRUM_NETD_EVENT_BUFFER_BYTES';
const EVENT_BUFFER_RANGE = [4096, 1024 * 1024 * 1024] as const;

/**
 * `1`: run each nft call as an `nft` process from PATH instead of in-process libnftables, for
 * tests: a wrapper nft first in PATH can stand for a kernel that nothing else can bring about (one
 * without the arp family). Unset or empty: libnftables.
 */
export const SPAWN_NFT_ENV = 'SPECTRUM_NETD_SPAWN_NFT';

export function spawnNftFromEnv(env: Readonly<Record<string, string | undefined>>): boolean {
  const text = env[SPAWN_NFT_ENV];
  if (text === undefined || text === '') return false;
  if (text !== '1') throw new CliError(`environment variable ${SPAWN_NFT_ENV} ${JSON.stringify(text)} is not valid: expected 1 (run nft from PATH), or unset`, EXIT.usage);
  return true;
}

export function eventBufferFromEnv(env: Readonly<Record<string, string | undefined>>): number | undefined {
  const text = env[EVENT_BUFFER_ENV];
  if (text === undefined || text === '') return undefined;
  const [min, max] = EVENT_BUFFER_RANGE;
  const bytes = /^[0-9]{1,10}$/.test(text) ? Number(text) : NaN;
  if (!(bytes >= min && bytes <= max)) {
    throw new CliError(`environment variable ${EVENT_BUFFER_ENV} ${JSON.stringify(text)} is not valid: expected a whole number of bytes, ${min} to ${max}`, EXIT.usage);
  }
  return bytes;
}

/**
 * Before anything is made: without CAP_NET_ADMIN every step fails, and the agent kept running,
 * retrying them (given CAP_NET_BIND_SERVICE alone, nft's refusal its only word). Where the
 * process's status cannot be read, nothing is known: the steps say what they are refused.
 */
function checkNetAdmin(dhcp: boolean): void {
  if (selfHoldsNetAdmin() === false) throw new NetdError('privilege', noNetAdminLine());
  // Without CAP_NET_RAW no DHCP link socket opens: the agent ran, serving no client an address.
  if (dhcp && selfHoldsNetRaw() === false) throw new NetdError('privilege', noNetRawLine());
}

/** `links` with those a service does not serve (by name, with why) in error, where none was: configured, yet no client gets an address there. */
export function withUnservedLinks<T extends { readonly name: string; readonly error: string | null }>(links: readonly T[], unserved: ReadonlyMap<string, string>): T[] {
  return links.map((link) => {
    const failure = link.error === null ? unserved.get(link.name) : undefined;
    return failure === undefined ? link : { ...link, error: `DHCP not served (retrying): ${failure}` };
  });
}

/** What makes the firewall and services of `run`; `stop` is aborted by a signal meanwhile (see providerPorts). */
export type PortsFactory = (options: RunOptions, log: Logger, stop: AbortSignal) => Promise<RunPorts>;

async function runAgent(options: RunOptions, portsFor: PortsFactory): Promise<void> {
  checkDnsTimeouts(options);
  const allowedPairs: AllowedPair[] = options.allowPair.map(parseAllowPair);
  if (options.notifyFd !== undefined) checkNotifyFd(options.notifyFd);
  checkNetAdmin(options.dhcp);
  const eventBufferBytes = eventBufferFromEnv(process.env);
  spawnNftFromEnv(process.env);
  // Before anything is made: without its notification socket the agent cannot follow the kernel.
  loadRtnlEventsAddon();
  const log = createLogger('spectrum-netd', { level: logLevel('info') });
  // From here on a first SIGINT or SIGTERM stops the agent at whatever step it is, start-up
  // included, through the one teardown below; a second exits at once.
  const interruption = interruptOnSignals('spectrum-netd', 'its control socket may be left (the next start replaces it)');
  const stopRequested = stopRequestedBy(interruption);
  const straySignalsHeard = sayIgnoredSignals(log);
  /**
   * A start-up step, cut short by a signal: `cancel` cuts it short where that takes more than the
   * aborted signal, the step is waited for, and `undo` undoes what it made (the control socket,
   * the services), which the teardown below never got. Waited for, so that nothing the step does
   * (a DNS upstream's warning as the forwarder starts) is logged after the line saying that the
   * agent stopped: each step ends soon once cut short (a second signal still exits at once).
   */
  const startStep = async <T>(step: Promise<T>, undo: (made: T) => unknown, cancel: () => void = () => undefined): Promise<T> => {
    const outcome = await Promise.race([step.then((made) => ({ made })), stopRequested.then((signal) => ({ signal }))]);
    if ('made' in outcome) return outcome.made;
    cancel();
    // How it ends no longer matters (a step cut short fails): the agent stops either way.
    await step.then(undo).catch(() => undefined);
    throw stoppedWhileStarting(outcome.signal, 'its control socket is removed');
  };
  let agent: NetdAgent | undefined;
  let ports: RunPorts | undefined;
  let control: ControlServer | undefined;
  // Until the first reconcile is done, firewall included (what --notify-fd signals; done also
  // where nft refused the table, and then status says why), status says the agent is starting.
  let ready = false;
  let fail: (error: Error) => void = () => undefined;
  const fatal = new Promise<never>((_, reject) => (fail = reject));
  try {
    // The control socket first: a second agent must be told so before it touches ports 53 and 67.
    const listening = ControlServer.listen(options.controlSocket, async (request) => {
      if (typeof request === 'object' && request !== null && 'command' in request && request.command === 'status') {
        if (agent === undefined || !ready) throw new Error(AGENT_STARTING);
        const status = await agent.status();
        const links = withUnservedLinks(status.links, ports?.unservedLinks?.() ?? new Map<string, string>());
        return { ...status, links, reaper: ports?.reaper?.status() ?? null, services: ports?.status?.() ?? null };
      }
      throw new Error('unknown request: the agent answers {"command":"status"}');
    });
    control = await startStep(listening, (made) => made.close());
    ports = await startStep(portsFor(options, log, interruption.signal), (made) => made.close?.());
    const kernel = new RtnetlinkKernel(eventBufferBytes !== undefined ? { eventBufferBytes } : {});
    agent = new NetdAgent(
      kernel,
      { mode: 'provider', ignored: new Set(options.ignore), allowedPairs },
      log,
      ports.firewall,
      ports.services,
      { firewallAuditMs: options.firewallAudit },
      ports.conntrack ?? null,
    );
    const started = performance.now();
    // What it configured stays, as after a stop once started (agent.stop ends its watch, and cuts
    // a reconcile under way short: its kernel requests are rejected as closed).
    const starting = agent;
    await startStep(Promise.race([starting.start({ watch: true, onFatal: (error) => fail(error) }), fatal]), () => undefined, () => starting.stop());
    ready = true;
    ports.reaper?.start();
    const status = await agent.status();
    log.info(
      {
        ms: Number((performance.now() - started).toFixed(1)),
        links: status.links.length,
        changes: status.counters.initialChanges,
        // What the kernel gave the notification socket (an overflow costs a full re-read).
        notificationBuffer: kernel.notificationBuffer(),
      },
      'initial reconcile done',
    );
    if (options.notifyFd !== undefined) notifyReady(options.notifyFd);
    ports.warmUp?.().catch((error: unknown) => log.warn({ err: error instanceof Error ? error.message : String(error) }, 'warm-up failed; serving goes on'));
    const signal = await Promise.race([stopRequested, fatal]);
    log.info({ signal }, 'stopping');
  } finally {
    ports?.reaper?.stop();
    agent?.stop();
    control?.close();
    await ports?.close?.();
    interruption.dispose();
    straySignalsHeard();
  }
}

export function runCommand(ports: PortsFactory = providerPorts): Command {
  return new Command('run')
    .description('provider agent: configure every client link as it comes and goes, feed the firewall and services')
    .addOption(new Option('--ignore <ifname>', 'an interface the agent must not touch (repeatable)').argParser(collectInterface).default([], 'none'))
    .addOption(new Option('--allow-pair <a=b>', 'let client A open connections to client B (client IPs or ids; replies return; give B=A too for the other way) (repeatable)').argParser(collect).default([], 'none'))
    .addOption(new Option('--control-socket <path>', 'Unix socket for `status`').argParser(controlSocketOption).default(DEFAULT_CONTROL_SOCKET))
    .addOption(new Option('--notify-fd <n>', 'write a newline to this fd once the initial reconcile is done (s6)').argParser(parseFd))
    .option('--no-firewall', 'do not manage nftables (no NAT, isolation, anti-spoofing or conntrack purge: for debugging only)')
    .option('--no-dhcp', 'do not serve DHCP on provider links')
    .option('--no-dns', 'do not run the DNS forwarder on the gateway')
    .addOption(new Option('--lease-seconds <n>', 'DHCP lease time').argParser(leaseSeconds).default(3600))
    .addOption(
      new Option('--dns-upstream <ip[:port]>', 'upstream resolver (repeatable)').argParser(collectUpstream).default([], 'the nameservers of --resolv-conf, followed as it changes'),
    )
    .option('--resolv-conf <path>', "the provider's resolver configuration", '/etc/resolv.conf')
    .addOption(
      new Option('--dns-upstream-timeout <ms>', 'how long one upstream has a DNS query to itself before the next is asked too (one answering later is still heard)')
        .argParser(dnsUpstreamTimeout)
        .default(UPSTREAM_TIMEOUT_MS),
    )
    .addOption(
      new Option('--dns-query-timeout <ms>', 'how long a DNS query waits for an answer in all before its client gets SERVFAIL (at least --dns-upstream-timeout)')
        .argParser(dnsQueryTimeout)
        .default(QUERY_TIMEOUT_MS, `${QUERY_TIMEOUT_MS}, or --dns-upstream-timeout where longer`),
    )
    .addOption(
      new Option('--firewall-audit <seconds>', 'read the nftables table back this often and restore what someone else changed (0: never)')
        .argParser(firewallAuditMs)
        .default(60_000, '60'),
    )
    // `auto` in the value's name: it is a value one may give, not only the default.
    .addOption(
      new Option(
        '--client-flow-limit <n|auto>',
        'most conntrack entries (flows) one client may hold; its new flows past them are dropped (0: no limit; auto: an eighth of nf_conntrack_max, at most 4096)',
      )
        .argParser(clientFlowLimit)
        .default('auto', 'auto'),
    )
    .addOption(
      new Option(
        '--client-new-flow-rate <n|auto>',
        'new flows one client may open per second, twice as many at once; past them they are dropped before the flow limit counts (0: no limit; auto: nf_conntrack_max / 176, at least 1, at most 100)',
      )
        .argParser(clientNewFlowRate)
        .default('auto', 'auto'),
    )
    .addOption(
      new Option(
        '--conntrack-reap-threshold <n|auto>',
        'while the conntrack table holds this many entries or more, delete its closed TCP entries (TIME_WAIT, CLOSE, whoever opened them) each second (0: never; auto: half of nf_conntrack_max)',
      )
        .argParser(conntrackReapThreshold)
        .default('auto', 'auto'),
    )
    .action(async (options: RunOptions, command: Command) => {
      // Not given: the forwarder's own (QUERY_TIMEOUT_MS, or --dns-upstream-timeout where longer).
      const given = command.getOptionValueSource('dnsQueryTimeout') !== 'default';
      await runAgent({ ...options, dnsQueryTimeout: given ? options.dnsQueryTimeout : undefined }, ports);
    });
}

/**
 * What `client --json` prints: what its text form says, as one object: each client link
 * (`links`, its stdout lines) and each link that keeps an address it no longer wants (`kept`,
 * their stderr lines), with those addresses.
 */
export function clientJson(links: readonly LinkReport[]): string {
  const clients = links.filter((link) => link.role === 'client').map(({ name, ip, state, note }) => ({ name, ip, state, note }));
  const kept = links.flatMap(({ name, kept: addresses, note }) => (addresses === undefined ? [] : [{ name, addresses, note }]));
  return `${JSON.stringify({ links: clients, kept })}\n`;
}

export function clientCommand(): Command {
  return new Command('client')
    .description("app VM: give each client-side link its address and routes from its MAC (Spectrum's app VM script)")
    .option('--watch', 'keep running and configure links as they are hot-plugged')
    .addOption(new Option('--ignore <ifname>', 'an interface to leave alone (repeatable)').argParser(collectInterface).default([], 'none'))
    .option('--json', 'print one JSON object: {links: [{name, ip, state, note}], kept: [{name, addresses, note}]} (not with --watch)')
    .action(async (options: { watch?: boolean; ignore: string[]; json?: boolean }) => {
      const watch = options.watch === true;
      // Watching prints nothing on stdout (its log says each reconcile): nothing to give as JSON.
      if (watch && options.json === true) throw new CliError('client: --json is for one run, not --watch (which prints nothing on stdout: its log says each reconcile)', EXIT.usage);
      // As `run`: without it every change is refused (EPERM), said per address, never why.
      if (selfHoldsNetAdmin() === false) throw new NetdError('privilege', clientNoNetAdminLine());
      const log = createLogger('spectrum-netd', { level: logLevel(watch ? 'info' : 'warn') });
      // Watching, as `run`: a first SIGINT or SIGTERM stops it at whatever step it is, start-up
      // included (one line, exit 128 + the signal; after it, a clean stop); a second exits at once.
      const interruption = watch ? interruptOnSignals('spectrum-netd', 'what it configured stays') : undefined;
      const stopRequested = interruption === undefined ? undefined : stopRequestedBy(interruption);
      const straySignalsHeard = watch ? sayIgnoredSignals(log) : undefined;
      const kernel = new RtnetlinkKernel();
      const agent = new NetdAgent(kernel, { mode: 'client', ignored: new Set(options.ignore), allowedPairs: [] }, log, null, null);
      let fail: (error: Error) => void = () => undefined;
      const fatal = new Promise<never>((_, reject) => (fail = reject));
      try {
        const starting = Promise.race([agent.start({ watch, onFatal: (error) => fail(error) }), fatal]);
        if (stopRequested !== undefined) {
          const outcome = await Promise.race([starting.then(() => undefined), stopRequested]);
          if (outcome !== undefined) {
            // The first reconcile ends at once: agent.stop below closes the kernel under its requests.
            starting.catch(() => undefined);
            throw stoppedWhileStarting(outcome, 'what it configured stays');
          }
          log.info({ signal: await Promise.race([stopRequested, fatal]) }, 'stopping');
          return;
        }
        await starting;
        const status = await agent.status();
        const failed = status.links.filter((link) => link.error !== null);
        if (failed.length > 0) {
          throw new CliError('some client links could not be configured', EXIT.failure, failed.map((link) => `${link.name}: ${link.error ?? ''}`));
        }
        const clientLinks = status.links.filter((l) => l.role === 'client');
        // Not a failure (a VM may be started before its links are plugged), but never silence.
        if (clientLinks.length === 0) process.stderr.write('spectrum-netd: no client-side link (MAC 0A:B3:EC:00:..:..) found: nothing configured\n');
        if (options.json === true) process.stdout.write(clientJson(status.links));
        else {
          for (const link of clientLinks) {
            process.stdout.write(`${link.name} ${link.ip ?? ''} ${link.state}${link.note === null ? '' : ` (${link.note})`}\n`);
          }
        }
        // What an earlier run gave a link that no longer wants it, and that stays: said, not failed.
        for (const link of status.links) if (link.kept !== undefined) process.stderr.write(`spectrum-netd: ${link.name}: ${link.note ?? ''}\n`);
      } finally {
        agent.stop();
        interruption?.dispose();
        straySignalsHeard?.();
      }
    });
}

function formatTable(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]?.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? '').length))) ?? [];
  return rows.map((row) => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column] ?? 0))).join('  ').trimEnd()).join('\n');
}

/** `status` for a terminal: the links (with why one is in conflict or left alone), counters, leases, DHCP, DNS. */
export function formatStatus(status: StatusReply): string {
  const links = formatTable([
    ['LINK', 'ROLE', 'ID', 'IP', 'STATE', 'NOTE'],
    ...status.links.map((l) => [l.name, l.role, l.id === null ? '-' : String(l.id), l.ip ?? '-', l.error === null ? l.state : `error: ${l.error}`, l.note ?? '']),
  ]);
  const counters = { ...status.counters, ...(status.firewall ?? {}) };
  // Timings are fractions of a millisecond: two decimals say all there is (--json keeps them whole).
  // A counter of a table not in force (arpDrops without the ARP guard) is null: none to show.
  const shown = (value: unknown): string => (value === null ? '-' : typeof value === 'number' && !Number.isInteger(value) ? String(Number(value.toFixed(2))) : String(value));
  let text = `${links}\n\n${Object.entries(counters).map(([name, value]) => `${name}: ${shown(value)}`).join('\n')}\n`;
  // Beside the drops they cause: what `auto` came to, and the rate.
  const limits = status.flowLimits;
  if (limits !== null && limits !== undefined) {
    const cap = limits.clientFlowLimit === 0 ? 'no cap on conntrack entries' : `${limits.clientFlowLimit} conntrack entries`;
    const rate = limits.clientNewFlowRate === 0 ? 'no new-flow rate' : `${limits.clientNewFlowRate} new flows a second (${clientNewFlowBurst(limits)} at once)`;
    text += `flow limits per client: ${cap}, ${rate}\n`;
  }
  // Limits are shown only once applied: without them, this says why. Each table apart: the inet
  // one (isolation, NAT, anti-spoofing, the limits), then the ARP guard where it is not in force.
  const updateFailed = status.firewallError !== null && status.firewallError !== undefined;
  const arpGuard = arpGuardText(status.arpGuard, updateFailed);
  if (status.firewallEnabled === false) {
    // Zero counters here read as "in force, nothing dropped".
    text += 'firewall: off (run with --no-firewall): no isolation, NAT, anti-spoofing, ARP guard or flow limits, so no drop counters\n';
  } else if (updateFailed) {
    text += `firewall: ${limits === null || limits === undefined ? 'not in force: ' : ''}the last update failed (retrying): ${status.firewallError}\n`;
  } else if (status.firewall === null && (limits === null || limits === undefined)) {
    // No update failed, yet no table of ours can be read: deleted or replaced since the last update.
    // An agent from before arpGuard read both tables' counters as one: either may be the one gone.
    const gone = status.arpGuard === undefined ? `${TABLE} or ${ARP_TABLE}` : TABLE;
    text += `firewall: not in force: its table ${gone} cannot be read (deleted or replaced since the last update?); the next audit or update makes it again\n`;
  } else if (status.firewall === null) {
    // Its table stands, as far as the agent can tell: only the read of its counters failed.
    text += 'firewall: its drop counters cannot be read just now\n';
  } else if (arpGuard !== undefined) {
    // The inet table stands: say so, or the line below would read as the whole firewall's.
    text += `firewall: in force (table ${TABLE}), but not its ARP guard\n`;
  }
  if (arpGuard !== undefined) text += `firewall: ARP guard: ${arpGuard}\n`;
  // Only while something is owed: then the links serving those IPs are held back.
  const conntrack = status.conntrack;
  if (conntrack !== null && conntrack !== undefined && (conntrack.owed.length > 0 || conntrack.sweepOwed || conntrack.lastError !== null)) {
    const owed = [...conntrack.owed, ...(conntrack.sweepOwed ? ['every client IP not served at start'] : [])];
    text += `\nconntrack: old entries still to delete: ${owed.length === 0 ? 'none' : owed.join(', ')}${conntrack.lastError === null ? '' : `; last error: ${conntrack.lastError}`}\n`;
  }
  const reaper = status.reaper;
  if (reaper !== null && reaper !== undefined) {
    const threshold = reaper.threshold === null ? 'none (auto: nf_conntrack_max not readable yet, or 0)' : `${reaper.threshold} entries${reaper.thresholdOption === 'auto' ? ' (auto)' : ''}`;
    const last = reaper.lastReap === null ? '' : `; last deleted ${reaper.lastReap.deleted} (${reaper.lastReap.countBefore} -> ${reaper.lastReap.countAfter})`;
    text += `\nconntrack reaper: threshold ${threshold}; count ${reaper.count ?? '-'} at last check; ${reaper.reaped} closed TCP entries deleted; ${reaper.reaps} reaps done${last}`;
    text += `${reaper.failures > 0 ? `; ${reaper.failures} failed` : ''}${reaper.lastError === null ? '' : `; last error: ${reaper.lastError}`}\n`;
  }
  const leases = status.services?.leases ?? [];
  if (leases.length > 0) {
    const now = Date.now();
    const rows = leases.map((lease) => [
      lease.ifname,
      lease.clientIp,
      lease.state,
      lease.expires === undefined ? '-' : `${Math.max(0, Math.round((lease.expires - now) / 1000))} s`,
      // The client's own text: quoted where it would not read as one cell (blanks faked columns), '-' for none or an empty one.
      shownCell(lease.hostname ?? '', MAX_HOSTNAME_CHARS),
    ]);
    text += `\n${formatTable([['LEASE', 'IP', 'STATE', 'EXPIRES IN', 'HOSTNAME'], ...rows])}\n`;
  }
  // Every DHCP counter, in the server's order: what it answered, dropped, rate-limited, and its link sockets' failures and retries.
  const dhcp = status.services?.dhcp;
  if (dhcp !== undefined && dhcp !== null) text += `\ndhcp: ${Object.entries(dhcp).map(([name, value]) => `${name} ${String(value)}`).join(', ')}\n`;
  const dns = status.services?.dns;
  if (dns !== undefined && dns !== null) {
    const upstreams = Array.isArray(dns['upstreams']) ? dns['upstreams'].map(String) : [];
    const listening = dns['listening'] === true ? 'listening' : `not listening (${String(dns['lastBindError'] ?? 'no provider link yet')})`;
    const count = (name: string): string => `${name} ${String(dns[name] ?? 0)}`;
    // `upstreams` are those connected; configured ones not reached (no route or address yet) are
    // listed apart: what to look at when DNS fails. A bare "none" only when there is nothing to use
    // at all (none configured, or only our own address), never for one that is waiting.
    const unreachable = Array.isArray(dns['unreachableUpstreams']) ? dns['unreachableUpstreams'].map(String) : [];
    // In use, but with sockets that failed (their queries go elsewhere until they are connected again).
    const failing = Array.isArray(dns['failingUpstreams']) ? dns['failingUpstreams'].map(String) : [];
    const inUse = upstreams.length === 0 ? 'none' : upstreams.join(', ');
    const apart = `${unreachable.length === 0 ? '' : `; unreachable (retried): ${unreachable.join(', ')}`}${failing.length === 0 ? '' : `; failing (connected again after a backoff): ${failing.join(', ')}`}`;
    const upstreamText = unreachable.length === 0 && upstreams.length === 0 ? 'upstreams: none' : `upstreams in use: ${inUse}${apart}`;
    text += `\ndns: ${listening}; ${upstreamText}\n`;
    text += `dns: ${SHOWN_DNS_COUNTS.map(count).join(', ')}\n`;
  }
  return text;
}

/**
 * Why the ARP guard is not in force, for `status`; undefined while it is (or nothing is known of
 * it). While updates fail (`updateFailed`, said on the line before), no more than that: the guard
 * may never have been made, and whether the rest stands is that line's to say.
 */
function arpGuardText(state: StatusReply['arpGuard'], updateFailed: boolean): string | undefined {
  if (state === 'unsupported') {
    const unpoliced = `unavailable: nft refused the arp family (is CONFIG_NF_TABLES_ARP set in the kernel?), so clients' ARP is not policed`;
    return updateFailed ? unpoliced : `${unpoliced}; the rest of the firewall stands without it`;
  }
  if (state === 'missing') {
    const unread = `not in force: its table ${ARP_TABLE} cannot be read`;
    return updateFailed ? unread : `${unread} (deleted or replaced since the last update?); the next audit or update makes it again`;
  }
  return undefined;
}

export function statusCommand(): Command {
  return new Command('status')
    .description('show the running agent: links (name, role, id, client IP, state) and counters')
    .option('--json', 'print JSON')
    .addOption(new Option('--control-socket <path>', "the agent's control socket").argParser(controlSocketOption).default(DEFAULT_CONTROL_SOCKET))
    .option('--wait <seconds>', 'first wait up to this long for an agent that has configured every link (its first reconcile done): for service managers')
    .action(async (options: { json?: boolean; controlSocket: string; wait?: string }) => {
      const waitMs = options.wait === undefined ? undefined : integerOption('--wait', options.wait, 0, 3600, 'whole seconds') * 1000;
      const reply = waitMs === undefined ? await agentStatus(options.controlSocket) : await readyStatus(options.controlSocket, waitMs);
      process.stdout.write(options.json === true ? `${JSON.stringify(reply)}\n` : formatStatus(reply));
    });
}

/** The agent's status; its error answer (starting, an unknown request), or an answer that is no status, as a NetdError. */
async function agentStatus(controlSocket: string): Promise<StatusReply> {
  const reply = await controlRequest(controlSocket, { command: 'status' });
  if (typeof reply === 'object' && reply !== null && !('links' in reply) && 'error' in reply && typeof reply.error === 'string') {
    throw new NetdError(reply.error === AGENT_STARTING ? 'not-ready' : 'control-socket', `spectrum-netd answered: ${reply.error}`);
  }
  // Loaded here, not at start-up: zod costs ~35 ms, which every other command (and a status
  // with no agent to answer) would pay.
  const { readStatusReply } = await import('./status-shape.js');
  const read = readStatusReply(reply);
  if ('problem' in read) {
    throw new NetdError('control-socket', `the answer on ${controlSocket} is not a spectrum-netd status: ${read.problem}; is --control-socket the agent's socket?`);
  }
  return read.status;
}

const READY_POLL_MS = 100;

/** The status once the agent answers it (after its first reconcile, firewall included), polling up to waitMs. */
async function readyStatus(controlSocket: string, waitMs: number): Promise<StatusReply> {
  const deadline = performance.now() + waitMs;
  for (;;) {
    try {
      // The agent answers status only once its first reconcile is done (see runAgent).
      return await agentStatus(controlSocket);
    } catch (error) {
      // Not started yet (no socket, nothing listening on it, or starting): wait; anything else is an answer.
      if (!(error instanceof NetdError && (error.kind === 'not-running' || error.kind === 'not-ready'))) throw error;
      if (performance.now() >= deadline) {
        throw new NetdError('not-ready', `spectrum-netd was not ready within ${String(waitMs / 1000)} s: ${error.message}; see its log`);
      }
    }
    await new Promise((resolve) => setTimeout(resolve, READY_POLL_MS));
  }
}
