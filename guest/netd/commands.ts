// The spectrum-netd subcommands: run (provider agent), client (app VM links), status.
import { closeSync, writeSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { CliError, EXIT } from '../../shared/cli/run-cli.js';
import { createLogger, logLevel } from '../../shared/log.js';
import { type FirewallPort, NoopFirewall } from '../firewall-port.js';
import { NoopServices, type ServicesPort } from '../services-port.js';
import { type AgentStatus, NetdAgent } from './agent.js';
import { type AllowedPair, parseAllowPair } from './allow-pair.js';
import { ControlServer, DEFAULT_CONTROL_SOCKET, controlRequest } from './control-socket.js';
import { NetdError } from './netd-error.js';
import { RtnetlinkKernel } from './rtnetlink.js';

const collect = (value: string, previous: string[]): string[] => [...previous, value];

function parseFd(text: string): number {
  if (!/^[0-9]{1,4}$/.test(text) || Number(text) < 1) throw new InvalidArgumentError('expected a file descriptor number, 1 or more');
  return Number(text);
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

/** Where the real firewall and services plug in; no-ops until they exist. */
export interface RunPorts {
  readonly firewall: FirewallPort;
  readonly services: ServicesPort;
}

const defaultPorts = (): RunPorts => ({ firewall: new NoopFirewall(), services: new NoopServices() });

interface RunOptions {
  ignore: string[];
  allowPair: string[];
  controlSocket: string;
  notifyFd?: number;
}

function waitForSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      process.off('SIGTERM', onSignal).off('SIGINT', onSignal);
      resolve(signal);
    };
    process.on('SIGTERM', onSignal).on('SIGINT', onSignal);
  });
}

async function runAgent(options: RunOptions, ports: RunPorts): Promise<void> {
  const allowedPairs: AllowedPair[] = options.allowPair.map(parseAllowPair);
  const log = createLogger('spectrum-netd', { level: logLevel('info') });
  const kernel = new RtnetlinkKernel();
  const agent = new NetdAgent(kernel, { mode: 'provider', ignored: new Set(options.ignore), allowedPairs }, log, ports.firewall, ports.services);
  let control: ControlServer | undefined;
  let fail: (error: Error) => void = () => undefined;
  const fatal = new Promise<never>((_, reject) => (fail = reject));
  try {
    control = await ControlServer.listen(options.controlSocket, async (request) => {
      if (typeof request === 'object' && request !== null && 'command' in request && request.command === 'status') return agent.status();
      throw new Error('unknown request: the agent answers {"command":"status"}');
    });
    const started = performance.now();
    await Promise.race([agent.start({ watch: true, onFatal: (error) => fail(error) }), fatal]);
    const status = await agent.status();
    log.info(
      { ms: Number((performance.now() - started).toFixed(1)), links: status.links.length, changes: status.counters.initialChanges },
      'initial reconcile done',
    );
    if (options.notifyFd !== undefined) notifyReady(options.notifyFd);
    const signal = await Promise.race([waitForSignal(), fatal]);
    log.info({ signal }, 'stopping');
  } finally {
    agent.stop();
    control?.close();
  }
}

export function runCommand(ports: () => RunPorts = defaultPorts): Command {
  return new Command('run')
    .description('provider agent: configure every client link as it comes and goes, feed the firewall and services')
    .option('--ignore <ifname>', 'an interface the agent must not touch (repeatable)', collect, [])
    .option('--allow-pair <a=b>', 'let clients A and B (client IPs or ids) reach each other (repeatable)', collect, [])
    .option('--control-socket <path>', 'Unix socket for `status`', DEFAULT_CONTROL_SOCKET)
    .addOption(new Option('--notify-fd <n>', 'write a newline to this fd once the initial reconcile is done (s6)').argParser(parseFd))
    .action(async (options: RunOptions) => {
      await runAgent(options, ports());
    });
}

export function clientCommand(): Command {
  return new Command('client')
    .description("app VM: give each client-side link its address and routes from its MAC (Spectrum's app VM script)")
    .option('--watch', 'keep running and configure links as they are hot-plugged')
    .option('--ignore <ifname>', 'an interface to leave alone (repeatable)', collect, [])
    .action(async (options: { watch?: boolean; ignore: string[] }) => {
      const log = createLogger('spectrum-netd', { level: logLevel(options.watch === true ? 'info' : 'warn') });
      const kernel = new RtnetlinkKernel();
      const agent = new NetdAgent(kernel, { mode: 'client', ignored: new Set(options.ignore), allowedPairs: [] }, log, null, null);
      let fail: (error: Error) => void = () => undefined;
      const fatal = new Promise<never>((_, reject) => (fail = reject));
      try {
        await Promise.race([agent.start({ watch: options.watch === true, onFatal: (error) => fail(error) }), fatal]);
        const status = await agent.status();
        if (options.watch === true) {
          await Promise.race([waitForSignal(), fatal]);
          return;
        }
        const failed = status.links.filter((link) => link.error !== null);
        if (failed.length > 0) {
          throw new CliError('some client links could not be configured', EXIT.failure, failed.map((link) => `${link.name}: ${link.error ?? ''}`));
        }
        for (const link of status.links.filter((l) => l.role === 'client')) {
          process.stdout.write(`${link.name} ${link.ip ?? ''} ${link.state}${link.note === null ? '' : ` (${link.note})`}\n`);
        }
      } finally {
        agent.stop();
      }
    });
}

function formatStatus(status: AgentStatus): string {
  const rows = [['LINK', 'ROLE', 'ID', 'IP', 'STATE'], ...status.links.map((l) => [l.name, l.role, l.id === null ? '-' : String(l.id), l.ip ?? '-', l.error === null ? l.state : `error: ${l.error}`])];
  const widths = rows[0]?.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? '').length))) ?? [];
  const table = rows.map((row) => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column] ?? 0))).join('  ')).join('\n');
  const counters = { ...status.counters, ...status.firewall };
  return `${table}\n\n${Object.entries(counters).map(([name, value]) => `${name}: ${String(value)}`).join('\n')}\n`;
}

function isStatus(value: unknown): value is AgentStatus {
  return typeof value === 'object' && value !== null && 'links' in value && Array.isArray(value.links) && 'counters' in value;
}

export function statusCommand(): Command {
  return new Command('status')
    .description('show the running agent: links (name, role, id, client IP, state) and counters')
    .option('--json', 'print JSON')
    .option('--control-socket <path>', "the agent's control socket", DEFAULT_CONTROL_SOCKET)
    .action(async (options: { json?: boolean; controlSocket: string }) => {
      const reply = await controlRequest(options.controlSocket, { command: 'status' });
      if (!isStatus(reply)) {
        const error = typeof reply === 'object' && reply !== null && 'error' in reply ? String(reply.error) : 'unexpected reply';
        throw new NetdError('control-socket', `spectrum-netd answered: ${error}`);
      }
      process.stdout.write(options.json === true ? `${JSON.stringify(reply, null, 2)}\n` : formatStatus(reply));
    });
}
