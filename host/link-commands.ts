// `link`, `unlink`, `list`, `show`, `gc`: option parsing and output; the work is in linker.ts.
import { Command, Option } from 'commander';
import { NO_PROGRESS, type Progress, terminalProgress } from '../shared/cli/progress.js';
import { integerOption } from '../shared/cli/integer-option.js';
import { CliError, EXIT } from '../shared/cli/run-cli.js';
import { type Logger, createLogger, wouldLog } from '../shared/log.js';
import { type AttachChoice, parseAttachChoice } from './attach-mode.js';
import { type ConfigSnapshot, type Listing, configDirFrom } from './config.js';
import { readConfigDir } from './config-reader.js';
import { DEFAULT_DEVICE_PREFIX, devicePrefix } from './device-names.js';
import {
  type LinkOutcome,
  type LinkProgressEvent,
  type LinkReport,
  type LinkerOptions,
  type ListedLink,
  type VmmPort,
  checkNetnsPrefix,
  collectGarbage,
  linkVms,
  listLinks,
  unlinkVm,
} from './linker.js';
import { stateDirFrom } from './state-store.js';
import type { VmName } from './vm-name.js';
import { type SideArguments, type VmmFlags, vmmArgumentsFor } from './vmm-port.js';

type Env = Readonly<Record<string, string | undefined>>;

interface CommonFlags {
  configDir?: string;
  stateDir?: string;
  devicePrefix: string;
  netnsPrefix: string;
  mtu: string;
  attach: string[];
  qmpSocket: string;
  chSocket: string;
  vmmTimeout: string;
  qemuBus?: string;
  json?: boolean;
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

/** The options every linker command takes, so that any command sees the same world. */
function withCommonOptions(command: Command, env: Env): Command {
  return command
    .option('--config-dir <dir>', `VM config directories (default: $SPECTRUM_CONFIG_DIR or ${configDirFrom(undefined, {})})`)
    .option('--state-dir <dir>', `where link ids are kept (default: $SPECTRUM_STATE_DIR or ${stateDirFrom(undefined, {})})`)
    .option('--device-prefix <prefix>', 'prefix of host device names (bridge <p>b<id>, client <p>c<id>, provider <p>p<id>)', env['SPECTRUM_DEVICE_PREFIX'] || DEFAULT_DEVICE_PREFIX)
    .option('--netns-prefix <prefix>', 'netns attach: VM v lives in network namespace <prefix>v', env['SPECTRUM_NETNS_PREFIX'] ?? '')
    .option('--mtu <bytes>', "MTU of every link device, which the VMs' NICs learn", '1500')
    .addOption(new Option('--attach <mode>', 'attach mode: none|cloud-hypervisor|qemu|netns, or VM=MODE for one VM (repeatable)').argParser(collect).default([], 'none'))
    .option('--qmp-socket <template>', 'QEMU QMP socket of a VM ({vm} is replaced)', '/run/vm/{vm}/qmp.sock')
    .option('--ch-socket <template>', 'cloud-hypervisor API socket of a VM ({vm} is replaced)', '/run/vm/{vm}/vmm')
    .option('--vmm-timeout <ms>', 'bound on each VMM request, and on waiting for a guest to release a NIC', '5000')
    .option('--qemu-bus <id>', 'QEMU bus to hot-plug into (q35: a free pcie-root-port)')
    .option('--json', 'print JSON');
}

function linkerOptions(flags: CommonFlags, env: Env, vmm: (attach: AttachChoice) => VmmPort): LinkerOptions {
  const attach = parseAttachChoice(flags.attach);
  return {
    configDir: configDirFrom(flags.configDir, env),
    stateDir: stateDirFrom(flags.stateDir, env),
    devicePrefix: devicePrefix(flags.devicePrefix),
    netnsPrefix: checkNetnsPrefix(flags.netnsPrefix),
    mtu: integerOption('--mtu', flags.mtu, 68, 65535, 'an MTU'),
    attach,
    vmm: vmm(attach),
  };
}

function reportLine(report: LinkReport): string {
  return [
    `${report.vm} -> ${report.provider}`,
    `id ${report.id}`,
    `ip ${report.clientIp}`,
    `client ${report.clientDevice} ${report.clientMac} (${report.clientAttach})`,
    `provider ${report.providerDevice} ${report.providerMac} (${report.providerAttach})`,
    `bridge ${report.bridge}`,
  ].join('  ');
}

/**
 * For a side attached by hand (`--attach none`), the arguments that give its VMM a NIC on the tap
 * (whose guest learns the link MTU), one line per VMM, so that the operator can start the VM with
 * them. (Tap names and MACs need no shell quoting.)
 */
function vmmArgumentLines(report: LinkReport, mtu: number): string[] {
  const sides = vmmArgumentsFor(report, mtu);
  const lines = (vm: string, side: SideArguments | undefined): string[] =>
    side === undefined ? [] : [`  ${vm}: qemu ${side.qemu.join(' ')}`, `  ${vm}: cloud-hypervisor ${side.cloudHypervisor.join(' ')}`];
  return [...lines(report.vm, sides?.client), ...lines(report.provider, sides?.provider)];
}

/** The JSON link object of the contract, with the VMM arguments for sides attached by hand (link MTU `mtu`). */
function linkJson(report: LinkReport, mtu: number): Record<string, unknown> {
  const { vm, provider, id, clientIp, clientMac, providerMac, bridge, clientDevice, providerDevice, clientAttach, providerAttach } = report;
  const vmmArguments = vmmArgumentsFor(report, mtu);
  return {
    vm,
    provider,
    id,
    clientIp,
    clientMac,
    providerMac,
    bridge,
    clientDevice,
    providerDevice,
    clientAttach,
    providerAttach,
    ...(vmmArguments === undefined ? {} : { vmmArguments }),
  };
}

/** The progress line of `link`: how many VMs have their devices, then how many NICs are hot-plugged. */
function linkProgressText(progress: Progress): (event: LinkProgressEvent) => void {
  return ({ phase, done, total }) => progress.update(phase === 'devices' ? `linking: devices for ${done} of ${total} VMs` : `linking: ${done} of ${total} NICs hot-plugged`);
}

export type VmmPortFactory = (attach: AttachChoice, flags: VmmFlags) => VmmPort;

export function linkCommands(env: Env, vmmFactory: VmmPortFactory): Command[] {
  const options = (flags: CommonFlags): LinkerOptions => linkerOptions(flags, env, (attach) => vmmFactory(attach, flags));
  let logger: Logger | undefined;
  const log = (): Logger => (logger ??= createLogger('spectrum-link'));

  const link = withCommonOptions(new Command('link'), env)
    .description('link client VMs to each of their providers: ids, devices, VMM attachment (idempotent)')
    .argument('[vm...]', 'client VMs to link')
    .option('--all', 'link every VM of the config dir that has providers')
    .action(async (names: string[], flags: CommonFlags & { all?: boolean }) => {
      const linkerOpts = options(flags);
      let vms = names;
      let snapshot: ConfigSnapshot | undefined;
      let withoutProviders: VmName[] = [];
      if (flags.all === true) {
        if (names.length > 0) throw new CliError('link: give VM names or --all, not both', EXIT.usage);
        // The whole dir holds every VM the linker must check too, so it is read once.
        snapshot = await readConfigDir(linkerOpts.configDir);
        const listings = [...snapshot.vms.values()].flatMap((dir) => (dir.location === 'directory' ? [{ name: dir.name, providers: dir.providers }] : []));
        const count = (providers: Listing): number => (providers.state === 'directory' ? providers.entries.length : 0);
        // A providers/net that cannot be listed (no directory, unreadable) may well name providers:
        // such a VM is linked too, so that its check fails the run saying what to fix.
        const unlisted = (providers: Listing): boolean => providers.state === 'not-a-directory' || providers.state === 'unreadable';
        vms = listings.filter((vm) => count(vm.providers) > 0 || unlisted(vm.providers)).map((vm) => vm.name).sort();
        // Read, and naming no provider now: whatever they were linked to as clients goes. (A VM
        // whose directory could not be read, or has gone, is left as it is.)
        withoutProviders = listings.filter((vm) => vm.providers.state === 'missing' || (vm.providers.state === 'directory' && count(vm.providers) === 0)).map((vm) => vm.name);
      } else if (names.length === 0) throw new CliError('link: name at least one VM, or use --all', EXIT.usage);
      const started = performance.now();
      // A bulk link takes seconds: on a terminal, a line that says how far it has got.
      const progress: Progress = flags.json !== true && vms.length > 1 ? terminalProgress() : NO_PROGRESS;
      let outcome: LinkOutcome;
      try {
        outcome = await linkVms(vms, { ...linkerOpts, progress: linkProgressText(progress) }, snapshot, withoutProviders);
      } finally {
        progress.done();
      }
      const { linked, unlinked } = outcome;
      // Logged only where it is seen: making the logger loads pino, a good part of a single link.
      if (wouldLog('info')) {
        log().info({ vms: vms.length, links: [...linked.values()].flat().length, unlinked: [...unlinked.values()].flat().length, ms: Math.round(performance.now() - started) }, 'linked');
      }
      const lines: string[] = [];
      const json = (report: LinkReport): Record<string, unknown> => linkJson(report, linkerOpts.mtu);
      // VMs without providers that had nothing to take down are not reported by --all.
      for (const vm of new Set([...linked.keys(), ...unlinked.keys()])) {
        const reports = linked.get(vm) ?? [];
        const gone = unlinked.get(vm) ?? [];
        if (flags.json === true) {
          lines.push(`${JSON.stringify({ vm, links: reports.map(json), ...(gone.length > 0 && { unlinked: gone.map(json) }) })}\n`);
          continue;
        }
        if (reports.length === 0 && gone.length === 0) lines.push(`${vm}: no providers, nothing to link\n`);
        for (const report of reports) lines.push(`${reportLine(report)}\n`, ...vmmArgumentLines(report, linkerOpts.mtu).map((line) => `${line}\n`));
        for (const report of gone) lines.push(`unlinked ${report.vm} -> ${report.provider} (id ${report.id}, kept): ${report.provider} is no longer among ${report.vm}'s providers\n`);
      }
      process.stdout.write(lines.join(''));
    });

  const unlink = withCommonOptions(new Command('unlink'), env)
    .description("remove a VM's links (devices and VMM attachments); ids are kept unless --forget")
    .argument('<vm>', 'VM whose links (as client or as provider) go')
    .option('--forget', 'also release the ids')
    .action(async (name: string, flags: CommonFlags & { forget?: boolean }) => {
      const unlinkOpts = options(flags);
      const reports = await unlinkVm(name, flags.forget === true, unlinkOpts);
      const json = (report: LinkReport): Record<string, unknown> => linkJson(report, unlinkOpts.mtu);
      if (flags.json === true) process.stdout.write(`${JSON.stringify({ vm: name, unlinked: reports.map(json), forgotten: flags.forget === true })}\n`);
      else for (const report of reports) process.stdout.write(`unlinked ${report.vm} -> ${report.provider} (id ${report.id}${flags.forget === true ? ', forgotten' : ', kept'})\n`);
    });

  // A listed link's VMM arguments carry the MTU its bridge has, which --mtu gave it when it was made.
  const printListed = (listed: ListedLink[], json: boolean, mtu: number): void => {
    if (json) process.stdout.write(`${JSON.stringify(listed.map((entry) => ({ ...linkJson(entry, entry.mtu ?? mtu), present: entry.present })))}\n`);
    else if (listed.length === 0) process.stdout.write('no links recorded\n');
    else for (const entry of listed) process.stdout.write(`${reportLine(entry)}  ${entry.present ? 'up' : 'devices missing'}\n`);
  };

  const list = withCommonOptions(new Command('list'), env)
    .description('list every recorded link and whether its devices exist')
    .action(async (flags: CommonFlags) => {
      const listOpts = options(flags);
      printListed(await listLinks(undefined, listOpts), flags.json === true, listOpts.mtu);
    });

  const show = withCommonOptions(new Command('show'), env)
    .description('show the links of one VM (as client or as provider)')
    .argument('<vm>', 'VM name')
    .action(async (name: string, flags: CommonFlags) => {
      const showOpts = options(flags);
      printListed(await listLinks(name, showOpts), flags.json === true, showOpts.mtu);
    });

  const gc = withCommonOptions(new Command('gc'), env)
    .description('delete host devices with the device prefix that no recorded link owns')
    .action(async (flags: CommonFlags) => {
      const removed = await collectGarbage(options(flags));
      if (flags.json === true) process.stdout.write(`${JSON.stringify({ removed })}\n`);
      else process.stdout.write(removed.length === 0 ? 'nothing to collect\n' : `removed ${removed.join(' ')}\n`);
    });

  return [link, unlink, list, show, gc];
}

