// The example system of the spec (netvm providing for appvm-lynx and appvm-catgirl) brought up
// for real: spectrum-link builds the links in a "host" namespace, netvm is a namespace running
// spectrum-netd in front of a simulated internet, and each app VM is either a namespace running
// a stock DHCP client or a QEMU guest on its tap. Used by the end-to-end tests and the demo.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Harness, type Netns, type NetnsProcess, trackNamespacePrefix, trackTempDir } from '../harness/index.js';
import { EXAMPLES, LINK_BIN, ROOT, linkDevicesActive, withWorldOptions } from '../host/link-fixture.js';
import { Agent, INTERNET_HTTP, type Internet, TEST_NAME, makeInternet } from '../guest/provider-world.js';

export const APP_VMS = ['appvm-lynx', 'appvm-catgirl'] as const;
export type AppVm = (typeof APP_VMS)[number];
export const GUEST_DIR = join(ROOT, 'dist', 'test-guest');

export interface LinkInfo {
  readonly vm: string;
  readonly provider: string;
  readonly id: number;
  readonly clientIp: string;
  readonly clientMac: string;
  readonly clientDevice: string;
  readonly providerDevice: string;
  readonly clientAttach: string;
  readonly providerAttach: string;
  readonly vmmArguments?: { readonly client?: { readonly qemu: readonly string[] } };
}

export interface ExampleSystem {
  readonly host: Netns;
  readonly netvm: Netns;
  readonly internet: Internet;
  readonly agent: Agent;
  readonly stateDir: string;
  readonly netnsPrefix: string;
  /** spectrum-link in the host namespace, with this system's config, state and prefixes. */
  link(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }>;
  /** The namespace spectrum-link made for a VM (netns attach). */
  vmNetns(vm: string): Netns;
  dispose(): Promise<void>;
}

type Progress = (step: string) => void;

/**
 * Bring up host, netvm (agent + internet behind it). App VMs are linked by the caller, with the
 * attach mode it wants (netns for namespace clients, none or qemu for QEMU guests).
 */
export async function startExampleSystem(harness: Harness, progress: Progress = () => undefined, configDir = EXAMPLES): Promise<ExampleSystem> {
  if (!existsSync(LINK_BIN)) throw new Error(`${LINK_BIN} is missing: run \`npm run build\` first`);
  progress('creating the host namespace');
  const host = await harness.namespace('host');
  const stateDir = mkdtempSync(join(tmpdir(), 'spectrum-example-state-'));
  // Removed by dispose, at once where the system fails to come up (the namespaces and processes
  // made by then are the harness's to remove), and at exit or on a signal before either.
  trackTempDir(stateDir);
  try {
    return await bringUp(harness, host, stateDir, progress, configDir);
  } catch (error) {
    rmSync(stateDir, { recursive: true, force: true });
    throw error;
  }
}

/** startExampleSystem once its host namespace and state dir are made. */
async function bringUp(harness: Harness, host: Netns, stateDir: string, progress: Progress, configDir: string): Promise<ExampleSystem> {
  const netnsPrefix = `${harness.prefix}vm-`;
  // spectrum-link makes the VMs' namespaces, adopted once it has said their links (vmNetns): one
  // it made before a signal stopped it (and the demo) is removed at exit all the same.
  trackNamespacePrefix(netnsPrefix);
  const adopted = new Map<string, Netns>();
  const vmNetns = (vm: string): Netns => {
    const name = `${netnsPrefix}${vm}`;
    const known = adopted.get(name) ?? harness.adopt(name);
    adopted.set(name, known);
    return known;
  };
  const link = (args: readonly string[]) =>
    host.exec(['node', LINK_BIN, ...withWorldOptions(args, { configDir, stateDir, netnsPrefix })], {
      enter: 'nsenter',
      allowFailure: true,
      timeoutMs: 60_000,
    });
  progress('creating the netvm namespace (spectrum-link, netns attach)');
  // netvm provides for nobody yet: its namespace is made by linking its first client later, so
  // make it now directly through spectrum-link's naming, to start the agent before any client.
  await host.exec(['ip', 'netns', 'add', `${netnsPrefix}netvm`], { enter: 'nsenter' });
  const netvm = vmNetns('netvm');
  await netvm.ip(['link', 'set', 'lo', 'up']);
  progress('building the simulated internet behind netvm (HTTP 192.0.2.80, DNS 192.0.2.53)');
  const internet = await makeInternet(harness, netvm);
  let agent: Agent;
  try {
    progress('starting spectrum-netd in netvm');
    agent = await Agent.start(netvm, join(stateDir, 'netd.sock'));
  } catch (error) {
    // Its servers' files too (the servers would go with the harness, the files not).
    await internet.stop();
    throw error;
  }
  return {
    host,
    netvm,
    internet,
    agent,
    stateDir,
    netnsPrefix,
    link,
    vmNetns,
    dispose: async () => {
      await agent.kill('SIGKILL');
      await internet.stop();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

/**
 * Wait until the kernel has activated every device the links' traffic crosses (see
 * linkDevicesActive): spectrum-link raises a veth's host end before its far end, and the kernel's
 * linkwatch activates it (and makes the bridge port forward) some time after, seconds on a loaded
 * machine. A tap is active once its VMM holds it: with taps, call this after the guests started.
 */
export async function linksActive(system: ExampleSystem, links: Iterable<LinkInfo>, options: { taps?: boolean } = {}): Promise<void> {
  await Promise.all([...links].map((link) => linkDevicesActive(system, link, options)));
}

/** What a test guest printed: its NICs, and what it could reach. */
export interface GuestResult {
  readonly nics: readonly { readonly name: string; readonly mac: string; readonly dhcp: boolean; readonly ip: string }[];
  readonly gateway: boolean;
  readonly internet: boolean;
  readonly resolved: string;
  readonly peer: boolean;
  readonly routes: string;
}

export interface GuestOptions {
  /** Extra QEMU arguments, e.g. the -netdev/-device pair spectrum-link printed. */
  readonly qemuArguments?: readonly string[];
  readonly qmpSocket?: string;
  /** The other guest's address, to try to reach. */
  readonly peer?: string;
  readonly nics?: number;
  readonly waitSeconds?: number;
  readonly settleSeconds?: number;
  readonly holdSeconds?: number;
}

export class QemuGuest {
  private constructor(readonly process: NetnsProcess) {}

  /** Boot the test guest (TCG) in the host namespace, where its taps are. */
  static start(host: Netns, options: GuestOptions): QemuGuest {
    if (!existsSync(join(GUEST_DIR, 'vmlinuz'))) throw new Error(`${GUEST_DIR}/vmlinuz is missing: run scripts/build-test-guest`);
    const append = [
      'console=ttyS0', 'quiet', 'panic=-1',
      `spectrum.url=http://${INTERNET_HTTP}/`, `spectrum.name=${TEST_NAME}`,
      ...(options.peer === undefined ? [] : [`spectrum.peer=${options.peer}`]),
      `spectrum.nics=${options.nics ?? 1}`, `spectrum.wait=${options.waitSeconds ?? 0}`,
      `spectrum.settle=${options.settleSeconds ?? 0}`, `spectrum.hold=${options.holdSeconds ?? 0}`,
    ].join(' ');
    const argv = [
      'qemu-system-x86_64', '-machine', 'pc', '-accel', 'tcg', '-m', '256', '-nodefaults', '-no-reboot', '-display', 'none',
      '-serial', 'stdio', '-kernel', join(GUEST_DIR, 'vmlinuz'), '-initrd', join(GUEST_DIR, 'initrd.gz'), '-append', append,
      ...(options.qmpSocket === undefined ? [] : ['-qmp', `unix:${options.qmpSocket},server=on,wait=off`]),
      ...(options.qemuArguments ?? []),
    ];
    return new QemuGuest(host.spawn(argv));
  }

  /** The guest's result line; fails if the guest powers off without one or takes too long. */
  async result(timeoutMs = 120_000): Promise<GuestResult> {
    // Up to the end of the line: the serial console's output arrives in pieces, and a piece can
    // end just after a `}` inside the JSON.
    const match = await this.process.waitForOutput(/SPECTRUM-RESULT (\{.*\})\r?\n/, timeoutMs);
    return JSON.parse(match[1] ?? '{}') as GuestResult;
  }

  async stop(): Promise<void> {
    await this.process.kill('SIGKILL');
  }
}
