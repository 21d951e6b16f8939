// The demo (scripts/demo): the spec's example system brought up for real, probed, reported,
// torn down. App VMs are namespaces running busybox udhcpc, or QEMU guests with --qemu.
import { randomBytes } from 'node:crypto';
import { Command } from 'commander';
import { oneLine, runCli } from '../../shared/cli/run-cli.js';
import { createHarness, netnsSupport, reportSignalCleanup } from '../harness/index.js';
import { INTERNET_HTTP, TEST_NAME, udhcpc } from '../guest/provider-world.js';
import { type Reach, type VmReport, demoJson, demoText } from './demo-report.js';
import { APP_VMS, type ExampleSystem, type GuestResult, type LinkInfo, QemuGuest, linksActive, startExampleSystem } from './example-system.js';
// The options (flag: help text), in one place: scripts/demo checks its arguments against them
// before it runs scripts/setup.
import DEMO_OPTIONS from './demo-options.json' with { type: 'json' };

/** What commander makes of DEMO_OPTIONS: `--qemu` given is `{ qemu: true }`. */
type DemoOptions = { [Flag in keyof typeof DEMO_OPTIONS as Flag extends `--${infer Name}` ? Name : never]?: boolean };

/**
 * The demo's options, or the exit code to end with at once: bad usage (an unknown option, an
 * operand) is one line and exit 2, as in the project's bins (run-cli.ts); --help exits 0.
 */
async function demoOptions(argv: readonly string[]): Promise<DemoOptions | number> {
  let parsed: DemoOptions | undefined;
  const program = new Command('demo').action((given: DemoOptions) => {
    parsed = given;
  });
  for (const [flag, description] of Object.entries(DEMO_OPTIONS)) program.option(flag, description);
  const code = await runCli(program, argv);
  return parsed ?? code;
}

const given = await demoOptions(process.argv.slice(2));
if (typeof given === 'number') process.exit(given);
const options: DemoOptions = given;

const steps = 9;
let step = 0;
const progress = (text: string): void => {
  step += 1;
  process.stderr.write(`[${step}/${steps}] ${text}\n`);
};

async function linkAll(system: ExampleSystem, attach: string): Promise<Map<string, LinkInfo>> {
  const result = await system.link(['link', ...APP_VMS, '--attach', attach, '--attach', 'netvm=netns', '--json']);
  if (result.code !== 0) throw new Error(`spectrum-link link failed: ${result.stderr.trim()}`);
  const links = new Map<string, LinkInfo>();
  for (const line of result.stdout.trim().split('\n')) {
    const parsed = JSON.parse(line) as { vm: string; links: LinkInfo[] };
    const link = parsed.links[0];
    if (link !== undefined) links.set(parsed.vm, link);
  }
  return links;
}

async function namespaceVms(system: ExampleSystem): Promise<{ vms: VmReport[]; reach: Reach[] }> {
  progress('linking appvm-lynx and appvm-catgirl to netvm (spectrum-link, netns attach)');
  const links = await linkAll(system, 'netns');
  progress('each app VM asks for a lease with busybox udhcpc and its stock script');
  await linksActive(system, links.values());
  const vms: VmReport[] = [];
  for (const vm of APP_VMS) {
    const link = links.get(vm);
    if (link === undefined) throw new Error(`no link for ${vm}`);
    const ns = system.vmNetns(vm);
    const run = await udhcpc(ns, link.clientDevice);
    const address = (await ns.ip(['-4', '-o', 'addr', 'show', 'dev', link.clientDevice])).stdout.split(/\s+/)[3] ?? '';
    vms.push({ name: vm, interface: link.clientDevice, mac: link.clientMac, ip: address, method: run.code === 0 ? 'DHCP (udhcpc)' : 'DHCP failed', lease: '', internet: false, dns: false });
  }
  progress('probing: internet over HTTP, DNS through the gateway, each other');
  const reach: Reach[] = [];
  for (const vm of vms) {
    const ns = system.vmNetns(vm.name);
    const page = await ns.exec(['curl', '-sS', '--max-time', '3', '-o', '/dev/null', '-w', '%{http_code}', `http://${INTERNET_HTTP}/`], { allowFailure: true });
    vm.internet = page.stdout === '200';
    const lookup = await ns.exec(['/bin/busybox', 'nslookup', TEST_NAME, '169.254.0.1'], { allowFailure: true });
    vm.dns = lookup.stdout.includes(INTERNET_HTTP);
    reach.push({ from: vm.name, to: 'internet', allowed: vm.internet });
    for (const other of vms) {
      if (other === vm) continue;
      const ping = await ns.exec(['/bin/busybox', 'ping', '-c', '1', '-W', '1', other.ip.split('/')[0] ?? ''], { allowFailure: true });
      reach.push({ from: vm.name, to: other.name, allowed: ping.code === 0 });
    }
  }
  return { vms, reach };
}

async function qemuVms(system: ExampleSystem): Promise<{ vms: VmReport[]; reach: Reach[]; guests: QemuGuest[] }> {
  progress('linking appvm-lynx and appvm-catgirl to netvm (taps, QEMU arguments printed by spectrum-link)');
  const links = await linkAll(system, 'none');
  // The veths' ends (the taps are activated as QEMU takes them, while the guests boot).
  await linksActive(system, links.values(), { taps: false });
  progress('booting both app VMs under QEMU (TCG, about 10 s): cloud kernel, virtio-net, busybox udhcpc');
  const guests: QemuGuest[] = [];
  const results = new Map<string, GuestResult>();
  const started = APP_VMS.map((vm) => {
    const link = links.get(vm);
    const other = links.get(APP_VMS.find((candidate) => candidate !== vm) ?? vm);
    if (link === undefined || other === undefined) throw new Error(`no link for ${vm}`);
    const guest = QemuGuest.start(system.host, { qemuArguments: link.vmmArguments?.client?.qemu ?? [], peer: other.clientIp, settleSeconds: 2, holdSeconds: 20 });
    guests.push(guest);
    return guest.result().then((result) => results.set(vm, result));
  });
  await Promise.all(started);
  progress('collecting what each guest reported');
  const vms: VmReport[] = [];
  const reach: Reach[] = [];
  for (const vm of APP_VMS) {
    const link = links.get(vm);
    const result = results.get(vm);
    if (link === undefined || result === undefined) continue;
    const nic = result.nics[0];
    vms.push({
      name: vm, interface: `${nic?.name ?? '?'} (tap ${link.clientDevice})`, mac: link.clientMac, ip: nic?.ip ?? '',
      method: nic?.dhcp === true ? 'DHCP (udhcpc in a QEMU guest)' : 'DHCP failed', lease: '', internet: result.internet, dns: result.resolved === INTERNET_HTTP,
    });
    reach.push({ from: vm, to: 'internet', allowed: result.internet });
    const other = APP_VMS.find((candidate) => candidate !== vm);
    if (other !== undefined) reach.push({ from: vm, to: other, allowed: result.peer });
  }
  return { vms, reach, guests };
}

async function main(): Promise<void> {
  const started = performance.now();
  // Start to report shown: with --keep, the time until Ctrl-C is not the demo's.
  let shownAfter = 0;
  let teardownFrom = 0;
  const support = netnsSupport();
  if (!support.ok) throw new Error(`the demo needs root and network namespaces: ${support.reason}`);
  // Stopped by a signal (Ctrl-C), the harness tears everything down at once and the demo dies by
  // the signal (exit 130 for SIGINT): said in its last line, as a normal run's last line says it.
  reportSignalCleanup((signal, failures) =>
    process.stderr.write(
      failures.length === 0
        ? `demo: stopped by ${signal}, everything torn down\n`
        : `demo: stopped by ${signal}, the tear-down failed: ${oneLine(failures.join('; '))}\n`,
    ),
  );
  const harness = createHarness('demo');
  let guests: QemuGuest[] = [];
  let system: ExampleSystem | undefined;
  try {
    system = await startExampleSystem(harness, progress);
    let outcome: { vms: VmReport[]; reach: Reach[] };
    if (options.qemu === true) {
      const booted = await qemuVms(system);
      guests = booted.guests;
      outcome = booted;
    } else {
      outcome = await namespaceVms(system);
    }
    progress('asking spectrum-netd for its leases and counters');
    const status = await system.agent.status();
    for (const vm of outcome.vms) {
      const lease = status.services?.leases.find((candidate) => `${candidate.clientIp}/32` === vm.ip);
      vm.lease = lease === undefined ? '-' : lease.state;
    }
    // A provider whose table nft refused has no counters: said as the demo's one line, not a TypeError.
    if (status.firewall === null) throw new Error(`netvm's firewall is not in place: ${status.firewallError ?? 'no table'}`);
    const report = { ...outcome, drops: status.firewall };
    process.stdout.write(options.json === true ? demoJson(report) : demoText(report, APP_VMS, TEST_NAME));
    shownAfter = performance.now() - started;
    if (options.keep === true) {
      process.stderr.write(
        `\nThe system is running. Explore it from another terminal, for example:\n` +
          `  ip netns list | grep ${harness.prefix}\n` +
          `  ip netns exec ${system.netnsPrefix}netvm nft list ruleset\n` +
          `  ip netns exec ${system.netnsPrefix}netvm node dist/guest/cli.js status --control-socket ${system.stateDir}/netd.sock\n` +
          (options.qemu === true ? '' : `  ip netns exec ${system.netnsPrefix}appvm-lynx curl http://${INTERNET_HTTP}/\n`) +
          `Press Ctrl-C here (or kill ${process.pid}) to tear everything down.\n`,
      );
      await new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      });
    }
  } finally {
    teardownFrom = performance.now();
    progress('tearing down');
    for (const guest of guests) await guest.stop();
    await system?.dispose();
    await harness.cleanup();
  }
  // The README's demo times are this figure: up to the report, then the tear-down.
  const seconds = (ms: number): string => (ms / 1000).toFixed(1);
  process.stderr.write(`demo: done in ${seconds(shownAfter + performance.now() - teardownFrom)} s (${seconds(shownAfter)} s to the report, then the tear-down), everything torn down\n`);
}

process.env['SPECTRUM_TEST_PREFIX'] ??= `sndemo${randomBytes(3).toString('hex')}-`;
main().then(
  () => process.exit(0),
  (error: unknown) => {
    // One line, as the README says, also where the message carries a command's stderr (the
    // harness's CommandError: "...\nstderr: ...").
    process.stderr.write(`demo: ${oneLine(error instanceof Error ? error.message : String(error))}\n`);
    process.exit(1);
  },
);
