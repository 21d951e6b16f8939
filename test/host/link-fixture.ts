// Shared set-up for tests that run the built spectrum-link inside a test "host" namespace.
import { existsSync } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_DEVICE_PREFIX, devicePrefix, linkDeviceNames } from '../../host/device-names.js';
import { preferredId } from '../../host/link-state.js';
import { vmName } from '../../host/vm-name.js';
import { type ExecResult, type Harness, type Netns, runPrefix, trackTempDir } from '../harness/index.js';

/** The checkout: two levels up from test/host, three from its compiled copy in dist/test/host. */
export const ROOT = [join(import.meta.dirname, '..', '..'), join(import.meta.dirname, '..', '..', '..')].find((dir) =>
  existsSync(join(dir, 'package.json')),
) ?? join(import.meta.dirname, '..', '..');
/** The bin as installed: the bundle `npm run build` makes (scripts/bundle.mjs). */
export const LINK_BIN = join(ROOT, 'dist', 'host', 'spectrum-link.cjs');
export const EXAMPLES = join(ROOT, 'examples', 'svc', 'data');

export function requireBuild(): void {
  if (!existsSync(LINK_BIN)) throw new Error(`${LINK_BIN} is missing: run \`npm run build\` first`);
}

/** The commands that read the config dir, and those that read the state dir. */
const CONFIG_COMMANDS = new Set(['link', 'show', 'check']);
const STATE_COMMANDS = new Set(['link', 'unlink', 'list', 'show', 'gc']);
/** The commands that take --netns-prefix (where netns-mode VMs live). */
const NETNS_COMMANDS = new Set(['link', 'list', 'show']);

/**
 * `args` (a spectrum-link command line) with a world's dirs and netns prefix right after the
 * subcommand, each only where that command takes it (a command refuses options it does not use)
 * and the test's own options do not give it: those win (a command refuses an option given twice
 * with different values).
 */
export function withWorldOptions(args: readonly string[], world: { configDir: string; stateDir: string; netnsPrefix: string }): string[] {
  const [command = '', ...rest] = args;
  const own = (flag: string): boolean => rest.some((arg) => arg === flag || arg.startsWith(`${flag}=`));
  const worldOption = (commands: ReadonlySet<string>, flag: string, value: string): string[] => (commands.has(command) && !own(flag) ? [flag, value] : []);
  return [
    command,
    ...worldOption(CONFIG_COMMANDS, '--config-dir', world.configDir),
    ...worldOption(STATE_COMMANDS, '--state-dir', world.stateDir),
    ...worldOption(NETNS_COMMANDS, '--netns-prefix', world.netnsPrefix),
    ...rest,
  ];
}

/** A link as `link --json`, `unlink --json` and `list --json` print it (the fields tests read). */
export interface LinkJson {
  vm: string;
  provider: string;
  id: number;
  bridge: string;
  clientDevice: string;
  providerDevice: string;
  clientAttach: string;
  providerAttach: string;
}

export interface LinkWorld {
  readonly harness: Harness;
  readonly host: Netns;
  readonly configDir: string;
  readonly stateDir: string;
  /** Namespace prefix for VM namespaces, owned by the harness. */
  readonly netnsPrefix: string;
  /** Run spectrum-link in the host namespace with this world's dirs; never throws on exit codes. */
  /** `env`: variables added to the bin's environment (e.g. SPECTRUM_LOG_LEVEL). */
  link(args: readonly string[], env?: Readonly<Record<string, string>>): Promise<ExecResult>;
  /** The namespace of VM `vm` (netns attach), adopted for cleanup. */
  vmNetns(vm: string): Netns;
  /** Adopt every VM namespace spectrum-link made and remove the temp dirs; then clean the harness. */
  dispose(): Promise<void>;
}

/** A config dir with the example VMs plus `extraClients` app VMs that use netvm. */
export async function makeConfigDir(extraClients = 0): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'spectrum-config-'));
  trackTempDir(dir); // gone with the process even if it is signalled before its clean-up
  await cp(EXAMPLES, dir, { recursive: true });
  for (let index = 0; index < extraClients; index++) {
    const vm = join(dir, `appvm-${index}`);
    await mkdir(join(vm, 'blk'), { recursive: true });
    await mkdir(join(vm, 'providers', 'net'), { recursive: true });
    await writeFile(join(vm, 'vmlinux'), '');
    await writeFile(join(vm, 'blk', 'root.img'), '');
    await writeFile(join(vm, 'providers', 'net', 'netvm'), '');
  }
  return dir;
}

/** Link worlds made by this worker so far: part of each one's VM namespace prefix. */
let worldsMade = 0;

/**
 * The VM namespaces' prefix of a new world: the run's prefix, then this worker's PID and a
 * counter, short whatever the harness label and the PID (spectrum-link takes up to 32 bytes; a
 * prefix built from the harness's, label and decimal PID included, passed that with a 10-letter
 * label and a 6-digit PID, as on systems whose pid_max is 4194304).
 */
function vmNetnsPrefix(): string {
  worldsMade += 1;
  return `${runPrefix()}vm${process.pid.toString(36)}w${worldsMade.toString(36)}-`;
}

export async function makeLinkWorld(harness: Harness, extraClients = 0): Promise<LinkWorld> {
  requireBuild();
  const host = await harness.namespace('host');
  const configDir = await makeConfigDir(extraClients);
  const stateDir = await mkdtemp(join(tmpdir(), 'spectrum-state-'));
  trackTempDir(stateDir);
  const netnsPrefix = vmNetnsPrefix();
  const adopted = new Map<string, Netns>();
  return {
    harness,
    host,
    configDir,
    stateDir,
    netnsPrefix,
    link: (args, env) =>
      // nsenter keeps our mount namespace, so namespaces spectrum-link creates are visible to all.
      host.exec(['node', LINK_BIN, ...withWorldOptions(args, { configDir, stateDir, netnsPrefix })], {
        enter: 'nsenter',
        allowFailure: true,
        timeoutMs: 60_000,
        ...(env === undefined ? {} : { env: { ...process.env, ...env } }),
      }),
    vmNetns: (vm) => {
      const name = `${netnsPrefix}${vm}`;
      const known = adopted.get(name) ?? harness.adopt(name);
      adopted.set(name, known);
      return known;
    },
    dispose: async () => {
      // Namespaces spectrum-link made for VMs belong to the harness too, so cleanup removes them.
      const listed = await host.exec(['ip', 'netns', 'list'], { enter: 'nsenter' });
      for (const line of listed.stdout.split('\n')) {
        const name = line.split(' ')[0] ?? '';
        if (name.startsWith(netnsPrefix) && !adopted.has(name)) adopted.set(name, harness.adopt(name));
      }
      await rm(configDir, { recursive: true, force: true });
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}

export interface DeviceInfo {
  ifname: string;
  ifindex: number;
  address: string;
  mtu: number;
  flags: string[];
  master?: string;
  linkinfo?: { info_kind?: string };
}

export async function devices(ns: Netns): Promise<Map<string, DeviceInfo>> {
  const result = await ns.ip(['-d', '-j', 'link', 'show']);
  const list = JSON.parse(result.stdout) as DeviceInfo[];
  return new Map(list.map((device) => [device.ifname, device]));
}

/** What linkDevicesActive needs of a link, as `link --json` prints it. */
export type LinkDevices = Pick<LinkJson, 'vm' | 'provider' | 'clientDevice' | 'providerDevice' | 'clientAttach' | 'providerAttach'>;

/**
 * Wait until the kernel has activated every device a link's traffic crosses (see
 * Netns.linkActive): the host's two bridge ports and, where a side is attached as netns, its
 * veth's far end in the VM's namespace. A veth end raised before its peer gets its carrier when
 * the peer comes up, but the kernel's linkwatch activates it (and makes a bridge port forward)
 * some time after: seconds on a loaded machine, dropping what crosses it meanwhile. A side
 * attached otherwise is a tap, active once a VMM holds it; `taps: false` leaves taps out.
 */
export async function linkDevicesActive(world: Pick<LinkWorld, 'host' | 'vmNetns'>, link: LinkDevices, { taps = true }: { taps?: boolean } = {}): Promise<void> {
  const side = (vm: string, device: string, attach: string): Promise<unknown>[] =>
    attach === 'netns' ? [world.host.linkActive(device), world.vmNetns(vm).linkActive(device)] : taps ? [world.host.linkActive(device)] : [];
  await Promise.all([...side(link.vm, link.clientDevice, link.clientAttach), ...side(link.provider, link.providerDevice, link.providerAttach)]);
}

/** The host devices of link appvm-lynx -> netvm where it gets its preferred id (a world's first link of it), with the default prefix. */
export function lynxDeviceNames(): ReturnType<typeof linkDeviceNames> {
  return linkDeviceNames(devicePrefix(DEFAULT_DEVICE_PREFIX), preferredId({ client: vmName('appvm-lynx'), provider: vmName('netvm') }));
}

/** A directory holding `spectrum-link`, a script that runs the built bin (runPrinted puts it first on PATH). */
let printedBinDir: Promise<string> | undefined;
function spectrumLinkOnPath(): Promise<string> {
  printedBinDir ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), 'spectrum-printed-bin-'));
    trackTempDir(dir);
    const script = join(dir, 'spectrum-link');
    await writeFile(script, `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(LINK_BIN)} "$@"\n`);
    await chmod(script, 0o755);
    return dir;
  })();
  return printedBinDir;
}

/**
 * The SPECTRUM_ variables that say what a command acts on, as another shell may have them: each
 * leads elsewhere (a state dir and config dir that do not exist, prefixes of no device or
 * namespace of the test's), so that a printed command that left its option out would not do what
 * it says (runPrinted).
 */
export const ANOTHER_SHELL: Readonly<Record<string, string>> = {
  SPECTRUM_STATE_DIR: '/nonexistent/spectrum-printed-state',
  SPECTRUM_CONFIG_DIR: '/nonexistent/spectrum-printed-config',
  SPECTRUM_DEVICE_PREFIX: 'zq',
  SPECTRUM_NETNS_PREFIX: 'spectrum-printed-',
};

/**
 * Run a command line that spectrum-link printed for the operator to run (`cd DIR && spectrum-link
 * ...` included), as bash runs it typed: from the root directory, not this process's working
 * directory, and without the run's SPECTRUM_ variables but the log level: those that say what a
 * command acts on set to lead elsewhere (ANOTHER_SHELL), so that the line must carry every option
 * it needs; in `ns` (a world's host namespace), `spectrum-link` the built bin.
 */
export async function runPrinted(ns: Netns, line: string): Promise<ExecResult> {
  const bin = await spectrumLinkOnPath();
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('SPECTRUM_') || name === 'SPECTRUM_LOG_LEVEL'));
  return ns.exec(['bash', '-c', `cd / && ${line}`], { enter: 'nsenter', allowFailure: true, timeoutMs: 60_000, env: { ...env, ...ANOTHER_SHELL, PATH: `${bin}:${process.env['PATH'] ?? ''}` } });
}

/**
 * A failure's stderr, which must be one line without a stack trace: that line (else it throws,
 * failing the test: this module is loaded outside vitest too, by the demo and the benchmarks).
 */
export function oneLineError(stderr: string): string {
  const lines = stderr.split('\n').filter((line) => line !== '');
  if (lines.length !== 1 || /\n\s+at /.test(stderr)) throw new Error(`expected one line on stderr, without a stack trace, got: ${JSON.stringify(stderr)}`);
  return lines[0] ?? '';
}

/**
 * `link appvm-lynx --attach none` started so that it stops just before port `port` joins the
 * bridge (`provider`: after the client port joined it; `client`: before either did, the bridge
 * made): in a mount namespace of its own, spectrum-link finds at /proc/sys/net/ipv6/conf a
 * directory of the test's, where new devices forward IPv6 (default/forwarding 1), so each new port
 * has IPv6 turned off just before it joins the bridge, and that port's disable_ipv6 is a FIFO,
 * whose opening for writing waits until the test reads it.
 */
export async function linkPausedBeforeJoin(
  world: LinkWorld,
  port: 'client' | 'provider',
): Promise<{ names: ReturnType<typeof linkDeviceNames>; fifo: string; run: ReturnType<LinkWorld['host']['spawn']> }> {
  const names = lynxDeviceNames();
  const conf = await mkdtemp(join(tmpdir(), 'spectrum-ipv6-conf-'));
  trackTempDir(conf);
  for (const dir of ['default', names.bridge, names.client, names.provider]) await mkdir(join(conf, dir));
  await writeFile(join(conf, 'default', 'forwarding'), '1\n');
  for (const device of [names.bridge, names.client, names.provider].filter((device) => device !== names[port])) await writeFile(join(conf, device, 'disable_ipv6'), '0\n');
  const fifo = join(conf, names[port], 'disable_ipv6');
  await world.host.exec(['mkfifo', fifo], { enter: 'nsenter' });
  const withConf = 'mount --bind "$0" /proc/sys/net/ipv6/conf && exec "$@"';
  const args = withWorldOptions(['link', 'appvm-lynx', '--attach', 'none'], world);
  const run = world.host.spawn(['unshare', '-m', 'sh', '-c', withConf, conf, 'node', LINK_BIN, ...args], { enter: 'nsenter' });
  return { names, fifo, run };
}

/** The messages of the warnings on a run's stderr (log lines: JSON off a terminal). */
export function warningMessages(stderr: string): string[] {
  return stderr
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as { level: number; msg: string })
    .filter((entry) => entry.level === 40)
    .map((entry) => entry.msg);
}
