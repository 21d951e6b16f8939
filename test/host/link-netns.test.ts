import { accessSync, constants, existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createHarness, describeNetns, eventually, type Harness, jsonErrorOf, type Netns, splitJsonError, trackTempDir } from '../harness/index.js';
import { LINK_BIN, ROOT, type LinkWorld, devices, linkDevicesActive, linkPausedBeforeJoin, makeLinkWorld, oneLineError, runPrinted, warningMessages, withWorldOptions } from './link-fixture.js';
import { linkWorldPerSuite, resumePausedLink } from './link-world-suite.js';

interface LinkJson {
  vm: string;
  links: {
    provider: string;
    id: number;
    clientIp: string;
    clientMac: string;
    providerMac: string;
    bridge: string;
    clientDevice: string;
    providerDevice: string;
    clientAttach: string;
    providerAttach: string;
  }[];
}

function parseLink(stdout: string): LinkJson {
  return JSON.parse(stdout) as LinkJson;
}

/** A device's disable_ipv6 setting, as its namespace sees it. */
async function disableIpv6(ns: Netns, device: string): Promise<string> {
  return (await ns.exec(['cat', `/proc/sys/net/ipv6/conf/${device}/disable_ipv6`])).stdout.trim();
}

/**
 * Counts the IPv6 frames an interface receives from one MAC (argv: interface, MAC, seconds): from
 * the moment it prints "listening" until some seconds after a line on stdin.
 */
const CAPTURE_IPV6_FROM = `
import select, socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86dd))
s.bind((sys.argv[1], 0))
print('listening', flush=True)
source = bytes.fromhex(sys.argv[2].replace(':', ''))
end = None
count = 0
while end is None or time.time() < end:
    ready = select.select([s] if end is not None else [s, sys.stdin], [], [], 0.1)[0]
    if sys.stdin in ready:
        sys.stdin.readline()
        end = time.time() + float(sys.argv[3])
    if s in ready:
        frame, address = s.recvfrom(2048)
        if address[2] != socket.PACKET_OUTGOING and frame[6:12] == source:
            count += 1
print(count)
`;

/**
 * The IPv6 frames the netvm's interface receives from the host's port while the port goes down
 * and up, and for 2.5 s after it is active again (a port with addresses sends duplicate address
 * detection, router solicitation and listener reports each time). The kernel starts those once
 * its linkwatch has handled the port's carrier-on, which can come seconds after the port is up
 * on a loaded machine: a window timed from the `up` alone could close before the first of them.
 */
async function ipv6FramesFromPort(world: LinkWorld, port: string): Promise<number> {
  const portMac = (await devices(world.host)).get(port)?.address ?? '';
  expect(portMac).toMatch(/^[0-9a-f:]{17}$/);
  const capture = world.vmNetns('netvm').spawn(['python3', '-c', CAPTURE_IPV6_FROM, port, portMac, '2.5'], { stdin: 'pipe' });
  // Only once the socket is bound: python's start-up under load took longer than a fixed wait.
  await capture.waitForOutput(/^listening$/m);
  await world.host.ip(['link', 'set', 'dev', port, 'down']);
  await world.host.ip(['link', 'set', 'dev', port, 'up']);
  await Promise.all([world.host.linkActive(port), world.vmNetns('netvm').linkActive(port)]);
  capture.child.stdin?.end('active\n');
  const exit = await capture.wait();
  await capture.waitClosed();
  expect(exit.code).toBe(0);
  return Number(/^(\d+)$/m.exec(capture.stdout)?.[1] ?? 'NaN');
}

/** Rewrite link `id`'s record in the state dir as spectrum-link wrote it before commit 13513d4: no "attached". */
async function dropAttachModesOf(stateDir: string, id: number): Promise<void> {
  const statePath = join(stateDir, 'links.json');
  const state = JSON.parse(await readFile(statePath, 'utf8')) as { version: number; links: { id: number; attached?: unknown }[] };
  expect(state.links.find((entry) => entry.id === id)?.attached).toBeDefined();
  const legacy = state.links.map((entry) => {
    if (entry.id !== id) return entry;
    const { attached: _, ...rest } = entry;
    return rest;
  });
  await writeFile(statePath, JSON.stringify({ ...state, links: legacy }));
}

describeNetns('spectrum-link link --attach netns', () => {
  let harness: Harness;
  let world: LinkWorld;

  beforeAll(async () => {
    harness = createHarness('link');
    world = await makeLinkWorld(harness, 21);
  });
  afterAll(async () => {
    await world?.dispose();
    await harness?.cleanup();
  });

  it('gives the lynx namespace its client MAC and netvm the provider MAC, bridged on the host', async () => {
    const result = await world.link(['link', 'appvm-lynx', '--attach', 'netns', '--json']);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const output = parseLink(result.stdout);
    expect(output.vm).toBe('appvm-lynx');
    expect(output.links).toHaveLength(1);
    const link = output.links[0]!;
    expect(link).toMatchObject({ provider: 'netvm', bridge: `snb${link.id}`, clientDevice: `snc${link.id}`, providerDevice: `snp${link.id}` });
    expect(link.clientIp).toBe(`100.64.${link.id >> 8}.${link.id & 0xff}`);

    const lynx = await devices(world.vmNetns('appvm-lynx'));
    const netvm = await devices(world.vmNetns('netvm'));
    expect(lynx.get(link.clientDevice)?.address).toBe(link.clientMac.toLowerCase());
    expect(netvm.get(link.providerDevice)?.address).toBe(link.providerMac.toLowerCase());
    expect(lynx.get(link.clientDevice)?.flags).toContain('UP');

    const host = await devices(world.host);
    expect(host.get(link.bridge)?.linkinfo?.info_kind).toBe('bridge');
    expect(host.get(link.clientDevice)?.master).toBe(link.bridge);
    expect(host.get(link.providerDevice)?.master).toBe(link.bridge);

    // The host is no party on the link: IPv6 is off on the bridge, so it has no address (with
    // it on, it would have a link-local one by now: its ports have a carrier).
    expect(await disableIpv6(world.host, link.bridge)).toBe('1');
    expect((await world.host.ip(['-6', 'addr', 'show', 'dev', link.bridge])).stdout).toBe('');
    // The ports have a carrier too, but make no address: the host says nothing on the VM's link.
    for (const port of [link.clientDevice, link.providerDevice]) {
      expect(await disableIpv6(world.host, port)).toBe('0');
      expect((await world.host.ip(['-6', 'addr', 'show', 'dev', port])).stdout).toBe('');
      expect((await world.host.ip(['-d', 'link', 'show', 'dev', port])).stdout).toMatch(/addrgenmode none/);
    }
    // The VMs' own interfaces keep theirs.
    expect(await disableIpv6(world.vmNetns('appvm-lynx'), link.clientDevice)).toBe('0');

    // Configure both ends as Spectrum does and send traffic across the bridge.
    const lynxNs = world.vmNetns('appvm-lynx');
    const netvmNs = world.vmNetns('netvm');
    await netvmNs.ip(['address', 'add', '169.254.0.1/32', 'dev', link.providerDevice]);
    await netvmNs.ip(['route', 'add', `${link.clientIp}/32`, 'dev', link.providerDevice]);
    await lynxNs.ip(['address', 'add', `${link.clientIp}/32`, 'dev', link.clientDevice]);
    await lynxNs.ip(['route', 'add', '169.254.0.1/32', 'dev', link.clientDevice]);
    await linkDevicesActive(world, { ...link, vm: output.vm });
    const ping = await lynxNs.exec(['/bin/busybox', 'ping', '-c', '1', '-W', '3', '169.254.0.1'], { allowFailure: true });
    expect(ping.stdout).toMatch(/1 packets received/);
  });

  it('is idempotent: linking again changes no device and gives the same answer', async () => {
    const before = await devices(world.host);
    const first = await world.link(['link', 'appvm-lynx', '--attach', 'netns', '--json']);
    const second = await world.link(['link', 'appvm-lynx', '--attach', 'netns', '--json']);
    expect(second.stdout).toBe(first.stdout);
    const after = await devices(world.host);
    expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
    for (const [name, device] of after) expect(device.ifindex).toBe(before.get(name)?.ifindex);
  });

  it('converges: recreates a deleted device and fixes a downed bridge, a wrong MTU, IPv6 turned on and a port making addresses', async () => {
    const link = parseLink((await world.link(['link', 'appvm-lynx', '--attach', 'netns', '--json'])).stdout).links[0]!;
    // A port as an older spectrum-link left it: making a link-local address, which it has.
    await world.host.ip(['link', 'set', 'dev', link.clientDevice, 'addrgenmode', 'eui64']);
    await world.host.ip(['link', 'set', 'dev', link.clientDevice, 'down']);
    await world.host.ip(['link', 'set', 'dev', link.clientDevice, 'up']);
    // The kernel makes the address once its linkwatch has handled the port's carrier-on.
    await world.host.linkActive(link.clientDevice);
    expect((await world.host.ip(['-6', 'addr', 'show', 'dev', link.clientDevice])).stdout).toMatch(/inet6 fe80::/);
    await world.host.ip(['link', 'del', link.providerDevice]);
    await world.host.ip(['link', 'set', link.bridge, 'down']);
    await world.vmNetns('appvm-lynx').ip(['link', 'set', link.clientDevice, 'mtu', '1400']);
    // IPv6 back on the bridge, by hand, with an address (it is down, so none comes by itself).
    await world.host.exec(['sh', '-c', `echo 0 > /proc/sys/net/ipv6/conf/${link.bridge}/disable_ipv6`]);
    await world.host.ip(['address', 'add', 'fe80::99/64', 'dev', link.bridge]);
    const result = await world.link(['link', 'appvm-lynx', '--attach', 'netns']);
    expect(result.code).toBe(0);
    expect(await disableIpv6(world.host, link.bridge)).toBe('1');
    expect((await world.host.ip(['-6', 'addr', 'show', 'dev', link.bridge])).stdout).toBe('');
    expect((await world.host.ip(['-6', 'addr', 'show', 'dev', link.clientDevice])).stdout).toBe('');
    expect((await world.host.ip(['-6', 'addr', 'show', 'dev', link.providerDevice])).stdout).toBe('');
    const host = await devices(world.host);
    expect(host.get(link.providerDevice)?.master).toBe(link.bridge);
    expect(host.get(link.bridge)?.flags).toContain('UP');
    expect((await devices(world.vmNetns('appvm-lynx'))).get(link.clientDevice)?.mtu).toBe(1500);
    expect((await devices(world.vmNetns('netvm'))).get(link.providerDevice)?.address).toBe(link.providerMac.toLowerCase());
  });

  it("sends nothing of the host's own into a VM's link: no IPv6 frame from a port, even as it comes up again", async () => {
    const link = parseLink((await world.link(['link', 'appvm-lynx', '--attach', 'netns', '--json'])).stdout).links[0]!;
    const port = link.providerDevice;
    expect(await ipv6FramesFromPort(world, port)).toBe(0);
    // The same capture sees them from a port that makes addresses (as an older spectrum-link left it).
    await world.host.ip(['link', 'set', 'dev', port, 'addrgenmode', 'eui64']);
    expect(await ipv6FramesFromPort(world, port)).toBeGreaterThan(0);
    expect((await world.link(['link', 'appvm-lynx', '--attach', 'netns'])).code).toBe(0);
    expect(await disableIpv6(world.host, port)).toBe('1');
  });

  it('keeps the ports silent where the host forwards IPv6 (a forwarding port reports the all-routers groups, address or not)', async () => {
    const forwarding = async (value: string) => world.host.exec(['sysctl', '-qw', `net.ipv6.conf.all.forwarding=${value}`]);
    expect((await world.link(['unlink', 'appvm-lynx'])).code).toBe(0);
    await forwarding('1');
    try {
      const link = parseLink((await world.link(['link', 'appvm-lynx', '--attach', 'netns', '--json'])).stdout).links[0]!;
      for (const port of [link.clientDevice, link.providerDevice]) expect(await disableIpv6(world.host, port)).toBe('1');
      expect(await ipv6FramesFromPort(world, link.providerDevice)).toBe(0);
      // The capture sees the reports of a forwarding port without an address.
      await world.host.exec(['sh', '-c', `echo 0 > /proc/sys/net/ipv6/conf/${link.providerDevice}/disable_ipv6`]);
      await world.host.ip(['link', 'set', 'dev', link.providerDevice, 'addrgenmode', 'none']);
      expect(await ipv6FramesFromPort(world, link.providerDevice)).toBeGreaterThan(0);
      expect((await world.link(['link', 'appvm-lynx', '--attach', 'netns'])).code).toBe(0);
      expect(await disableIpv6(world.host, link.providerDevice)).toBe('1');
    } finally {
      await forwarding('0');
    }
  });

  it('keeps ids stable across unlink and re-link, and releases them on --forget', async () => {
    const first = parseLink((await world.link(['link', 'appvm-catgirl', '--attach', 'netns', '--json'])).stdout).links[0]!;
    const unlinked = await world.link(['unlink', 'appvm-catgirl']);
    expect(unlinked.code).toBe(0);
    const shown = JSON.parse((await world.link(['show', 'appvm-catgirl', '--json'])).stdout) as { id: number; present: boolean }[];
    expect(shown).toEqual([expect.objectContaining({ id: first.id, present: false })]);
    expect((await devices(world.host)).has(first.bridge)).toBe(false);
    const again = parseLink((await world.link(['link', 'appvm-catgirl', '--attach', 'netns', '--json'])).stdout).links[0]!;
    expect(again.id).toBe(first.id);
    expect((await world.link(['unlink', 'appvm-catgirl', '--forget'])).code).toBe(0);
    const state = JSON.parse(await readFile(join(world.stateDir, 'links.json'), 'utf8')) as { links: { client: string }[] };
    expect(state.links.map((l) => l.client)).not.toContain('appvm-catgirl');
  });

  it('gives 20 parallel link calls 20 distinct ids, all with devices', async () => {
    const vms = Array.from({ length: 20 }, (_, index) => `appvm-${index}`);
    const results = await Promise.all(vms.map((vm) => world.link(['link', vm, '--attach', 'netns', '--json'])));
    for (const result of results) expect(result.code, result.stderr).toBe(0);
    const ids = results.map((result) => parseLink(result.stdout).links[0]!.id);
    expect(new Set(ids).size).toBe(20);
    const host = await devices(world.host);
    for (const id of ids) expect(host.get(`snb${id}`)?.linkinfo?.info_kind).toBe('bridge');
    // list runs without --attach: the modes shown are those recorded when the links were made.
    const list = JSON.parse((await world.link(['list', '--json'])).stdout) as { vm: string; present: boolean; clientAttach: string }[];
    expect(list.filter((entry) => vms.includes(entry.vm) && entry.present && entry.clientAttach === 'netns')).toHaveLength(20);
  });

  it('gc removes devices with the prefix that no recorded link owns, and nothing else', async () => {
    await world.host.ip(['link', 'add', 'snb7', 'type', 'bridge']);
    await world.host.ip(['link', 'add', 'other7', 'type', 'bridge']);
    // The prefix and an id, but no role of a link's devices (bridge b, client c, provider p): not ours.
    await world.host.ip(['link', 'add', 'snx7', 'type', 'bridge']);
    const owned = parseLink((await world.link(['link', 'appvm-lynx', '--attach', 'netns', '--json'])).stdout).links[0]!;
    const result = await world.link(['gc', '--json']);
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({ removed: ['snb7'] });
    const host = await devices(world.host);
    expect(host.has('snb7')).toBe(false);
    expect(host.has('other7')).toBe(true);
    expect(host.has('snx7')).toBe(true);
    expect(host.has(owned.bridge)).toBe(true);
  });

  it('gc says it removed only the orphans the kernel deleted, not one that something else deleted meanwhile', async () => {
    parseLink((await world.link(['link', 'appvm-lynx', '--attach', 'netns', '--json'])).stdout);
    await world.host.ip(['link', 'add', 'snb8', 'type', 'bridge']);
    await world.host.ip(['link', 'add', 'snb9', 'type', 'bridge']);
    const moduleOf = (path: string): string => JSON.stringify(pathToFileURL(join(ROOT, 'dist', path)).href);
    // gc's route netlink programs: the listing, the orphans' lookup, their deletion. Something else
    // deletes snb8 after the lookup, before the deletion.
    const script = `import { execFileSync } from 'node:child_process';
      import { collectGarbage } from ${moduleOf('host/link-take-down.js')};
      import { devicePrefix } from ${moduleOf('host/device-names.js')};
      import { RtnlSocket } from ${moduleOf('shared/rtnl-socket.js')};
      const run = RtnlSocket.prototype.run;
      let runs = 0;
      RtnlSocket.prototype.run = async function (...args) {
        runs += 1;
        if (runs === 3) execFileSync('ip', ['link', 'del', 'snb8']);
        return run.apply(this, args);
      };
      console.log(JSON.stringify(await collectGarbage({ stateDir: ${JSON.stringify(world.stateDir)}, devicePrefix: devicePrefix('sn') })));`;
    const result = await world.host.exec(['node', '--input-type=module', '-e', script], { enter: 'nsenter', allowFailure: true });
    expect([result.code, result.stderr]).toEqual([0, '']);
    expect(JSON.parse(result.stdout)).toEqual(['snb9']);
    const host = await devices(world.host);
    expect([host.has('snb8'), host.has('snb9')]).toEqual([false, false]);
  });

  it('gc stopped by the kernel refusing a deletion says the orphans it had deleted (none too) and those that may still exist (--json: its line too), exit 1', async () => {
    parseLink((await world.link(['link', 'appvm-lynx', '--attach', 'netns', '--json'])).stdout);
    await world.host.ip(['link', 'add', 'snb8', 'type', 'bridge']);
    // The kernel deletes no loopback device (EOPNOTSUPP): this namespace's, renamed (it has to be
    // down for that) to an orphan's name.
    await world.host.ip(['link', 'set', 'lo', 'down']);
    await world.host.ip(['link', 'set', 'lo', 'name', 'snb9']);
    const runs: Awaited<ReturnType<LinkWorld['link']>>[] = [];
    try {
      runs.push(await world.link(['gc', '--json']));
      await world.host.ip(['link', 'add', 'snb8', 'type', 'bridge']);
      runs.push(await world.link(['gc']));
      // snb9 alone: the kernel refuses it with nothing deleted, said as above (--json too).
      runs.push(await world.link(['gc', '--json']));
    } finally {
      await world.host.ip(['link', 'set', 'snb9', 'name', 'lo']);
      await world.host.ip(['link', 'set', 'lo', 'up']);
    }
    const line = 'spectrum-link: gc: removing device snb9 failed: Operation not supported; by then it had deleted snb8 (snb9 may still exist): gc again deletes what is left\n';
    const nothing = 'spectrum-link: gc: removing device snb9 failed: Operation not supported; by then it had deleted nothing (snb9 may still exist): gc again deletes what is left\n';
    // With --json, its line, then the failure's error object.
    const errorLine = (said: string): string => `${JSON.stringify({ error: jsonErrorOf(said, 'gc-stopped', 1) })}\n`;
    expect(runs.map(({ code, stdout, stderr }) => ({ code, stdout, stderr }))).toEqual([
      { code: 1, stdout: `${JSON.stringify({ removed: ['snb8'], stopped: true, devicesLeft: ['snb9'] })}\n${errorLine(line)}`, stderr: line },
      { code: 1, stdout: '', stderr: line },
      { code: 1, stdout: `${JSON.stringify({ removed: [], stopped: true, devicesLeft: ['snb9'] })}\n${errorLine(nothing)}`, stderr: nothing },
    ]);
    expect((await devices(world.host)).has('snb8')).toBe(false);
  });

  it.each([
    [1, 'listing devices failed: No buffer space available', ''],
    [2, 'removing devices failed before any was removed: looking up snb8 failed (No buffer space available), so whether it exists is unknown', { removed: [], stopped: true, devicesLeft: ['snb8', 'snb9'] }],
  ] as const)("gc whose route netlink program %i the kernel refuses says it as its other failures, starting 'gc:' (--json: what it had deleted, where it got to its removal), exit 1", async (refused, reason, json) => {
    parseLink((await world.link(['link', 'appvm-lynx', '--attach', 'netns', '--json'])).stdout);
    await world.host.ip(['link', 'add', 'snb8', 'type', 'bridge']);
    await world.host.ip(['link', 'add', 'snb9', 'type', 'bridge']);
    // gc's route netlink programs: the listing, the orphans' lookup, their deletion. The one
    // refused answers each of its records as the kernel refusing it does.
    const script = `import { RtnlSocket } from ${JSON.stringify(pathToFileURL(join(ROOT, 'dist', 'shared', 'rtnl-socket.js')).href)};
      const run = RtnlSocket.prototype.run;
      let runs = 0;
      RtnlSocket.prototype.run = async function (...args) {
        runs += 1;
        const outcomes = await run.apply(this, args);
        return runs === ${refused} ? outcomes.map(() => ({ state: 'failed', errno: 105, code: 'ENOBUFS', text: 'No buffer space available' })) : outcomes;
      };
      process.argv = [process.argv[0], 'spectrum-link', ...${JSON.stringify(withWorldOptions(['gc', '--json'], world))}];
      await import(${JSON.stringify(pathToFileURL(join(ROOT, 'dist', 'host', 'cli.js')).href)});`;
    try {
      const result = await world.host.exec(['node', '--input-type=module', '-e', script], { enter: 'nsenter', allowFailure: true });
      const { printed, error } = splitJsonError(result.stdout);
      expect({ code: result.code, stdout: printed, line: oneLineError(result.stderr) }).toEqual({
        code: 1,
        stdout: json === '' ? '' : `${JSON.stringify(json)}\n`,
        line: expect.stringMatching(new RegExp(`^spectrum-link: gc: ${reason.replace(/[()]/g, '\\$&')}`)),
      });
      // Then the failure's error object.
      expect(error).toEqual(jsonErrorOf(oneLineError(result.stderr), 'gc-stopped', 1));
      const host = await devices(world.host);
      expect([host.has('snb8'), host.has('snb9')]).toEqual([true, true]);
    } finally {
      for (const name of ['snb8', 'snb9']) await world.host.ip(['link', 'del', name]);
    }
  });

  it('gc refuses a state dir without a state file (a mistyped --state-dir: missing, or there but empty: bad input, exit 2), deleting nothing and creating no dir', async () => {
    const owned = parseLink((await world.link(['link', 'appvm-lynx', '--attach', 'netns', '--json'])).stdout).links[0]!;
    const wrong = `${world.stateDir}-typo`;
    const missing = await world.link(['gc', '--state-dir', wrong, '--json']);
    // stdout: the error object alone.
    expect([missing.code, splitJsonError(missing.stdout)]).toEqual([2, { printed: '', error: jsonErrorOf(oneLineError(missing.stderr), 'state-dir-missing', 2) }]);
    expect(oneLineError(missing.stderr)).toMatch(/state dir .*-typo \(from --state-dir\) does not exist; check --state-dir/);
    expect(existsSync(wrong)).toBe(false);
    await mkdir(wrong);
    trackTempDir(wrong);
    try {
      const empty = await world.link(['gc', '--state-dir', wrong, '--json']);
      expect([empty.code, splitJsonError(empty.stdout)]).toEqual([2, { printed: '', error: jsonErrorOf(oneLineError(empty.stderr), 'no-state', 2) }]);
      expect(oneLineError(empty.stderr)).toMatch(/no state file .*-typo\/links\.json.*check --state-dir/);
      expect(await readdir(wrong)).toEqual([]);
    } finally {
      await rm(wrong, { recursive: true, force: true });
    }
    const host = await devices(world.host);
    for (const device of [owned.bridge, owned.clientDevice, owned.providerDevice]) expect(host.has(device)).toBe(true);
  });

  it('refuses a corrupt state file with one line, leaving the file as it was', async () => {
    const path = join(world.stateDir, 'links.json');
    const saved = await readFile(path, 'utf8');
    await writeFile(path, '{"version": 1, "links": [');
    try {
      const result = await world.link(['link', 'appvm-lynx', '--attach', 'netns']);
      expect(result.code).toBe(1);
      expect(oneLineError(result.stderr)).toMatch(/links\.json/);
      expect(await readFile(path, 'utf8')).toBe('{"version": 1, "links": [');
    } finally {
      await writeFile(path, saved);
    }
  });

  it('refuses a state file that is a symlink with one line, following it no more than replacing it', async () => {
    expect((await world.link(['link', 'appvm-lynx', '--attach', 'netns'])).code).toBe(0);
    const path = join(world.stateDir, 'links.json');
    const target = `${world.stateDir}-real.json`;
    trackTempDir(target);
    await rename(path, target);
    const saved = await readFile(target, 'utf8');
    await symlink(target, path);
    try {
      const result = await world.link(['link', 'appvm-catgirl', '--attach', 'netns']);
      expect(result.code).toBe(1);
      expect(oneLineError(result.stderr)).toMatch(/links\.json is a symbolic link/);
      expect(await readlink(path)).toBe(target);
      expect(await readFile(target, 'utf8')).toBe(saved);
    } finally {
      await rm(path);
      await rename(target, path);
    }
  });

  it.each([
    [['link', '../etc'], 2],
    [['link', 'no-such-vm'], 1],
    [['link', 'appvm-lynx', '--attach', 'kvm'], 2],
    [['link', 'appvm-lynx', '--attach', 'qemu', '--attach', 'netns'], 2],
    [['link', 'appvm-lynx', '--attach', 'netvm=qemu', '--attach', 'netvm=netns'], 2],
    [['link', 'appvm-lynx', '--attach', '../etc=qemu'], 2],
    [['link', 'appvm-lynx', '--mtu', 'big'], 2],
    [['link', 'appvm-lynx', '--vmm-timeout', '-1'], 2],
    [['link', 'appvm-lynx', '--netns-prefix', '../x'], 2],
    [['link', 'appvm-lynx', '--device-prefix', 'abcdefghij'], 2],
    [['link', 'appvm-lynx', '--ch-socket', ''], 2],
    [['unlink', 'appvm-lynx', '--qmp-socket', ''], 2],
    [['link'], 2],
    [['unlink', 'never-linked'], 1],
  ])('refuses %j with exit %i and one line', async (args, code) => {
    const result = await world.link(args);
    expect(result.code).toBe(code);
    expect(result.stdout).toBe('');
    oneLineError(result.stderr);
  });

  it('rolls back what a failed run created: devices gone, new id released', async () => {
    const before = await devices(world.host);
    const stateBefore = await readFile(join(world.stateDir, 'links.json'), 'utf8');
    // The client side is attached to a QEMU whose QMP socket does not exist: hot-plug fails
    // after the devices were made.
    const result = await world.link(['link', 'appvm-20', '--attach', 'netns', '--attach', 'appvm-20=qemu', '--qmp-socket', '/nonexistent/{vm}.sock']);
    expect(result.code).not.toBe(0);
    oneLineError(result.stderr);
    const after = await devices(world.host);
    expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
    expect(await readFile(join(world.stateDir, 'links.json'), 'utf8')).toBe(stateBefore);
    expect(stateBefore).not.toContain('appvm-20');
    const namespaces = await world.host.exec(['ip', 'netns', 'list'], { enter: 'nsenter' });
    expect(namespaces.stdout).toContain(`${world.netnsPrefix}netvm`);
  });
  it('links with an MTU below 1280, where the kernel takes IPv6 off the bridge itself', async () => {
    const result = await world.link(['link', 'appvm-lynx', '--attach', 'netns', '--mtu', '1000', '--json']);
    expect(result.code, result.stderr).toBe(0);
    const link = parseLink(result.stdout).links[0]!;
    expect((await devices(world.host)).get(link.bridge)?.mtu).toBe(1000);
    expect((await world.host.ip(['-6', 'addr', 'show', 'dev', link.bridge])).stdout).toBe('');
    // Back to 1500 (given: without --mtu the link keeps the 1000 it records): the kernel gives
    // the bridge and the ports IPv6 again (on, making addresses), and link turns it off.
    expect((await world.link(['link', 'appvm-lynx', '--attach', 'netns', '--mtu', '1500'])).code).toBe(0);
    expect(await disableIpv6(world.host, link.bridge)).toBe('1');
    for (const port of [link.clientDevice, link.providerDevice]) {
      expect(await disableIpv6(world.host, port)).toBe('1');
      expect((await world.host.ip(['-6', 'addr', 'show', 'dev', port])).stdout).toBe('');
    }
    // As made, but at the default MTU, which the link object does not say (`mtu` only where not 1500).
    expect(link).toHaveProperty('mtu', 1000);
    expect((await world.link(['link', 'appvm-lynx', '--attach', 'netns', '--json'])).stdout).toBe(`${JSON.stringify({ vm: 'appvm-lynx', links: [{ ...link, mtu: undefined }] })}\n`);
  });

  it('undoes a run whose kernel program fails part-way (a read-only /proc/sys refuses turning IPv6 off)', async () => {
    const before = await devices(world.host);
    const stateBefore = await readFile(join(world.stateDir, 'links.json'), 'utf8');
    // In a mount namespace of its own, /proc/sys read-only there (its /proc made private first, so
    // that nothing reaches ours); its /run/netns kept in the host's peer group (propagation
    // unchanged: ip netns makes it shared), where the VM namespace it adds lasts (not refused).
    const readOnlySysctl = 'mount --make-rprivate /proc && mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$@"';
    const args = ['link', 'appvm-20', '--config-dir', world.configDir, '--state-dir', world.stateDir, '--netns-prefix', world.netnsPrefix, '--attach', 'netns'];
    const result = await world.host.exec(['unshare', '-m', '--propagation', 'unchanged', 'sh', '-c', readOnlySysctl, 'sh', 'node', LINK_BIN, ...args], { enter: 'nsenter', allowFailure: true });
    expect(result.code).toBe(1);
    expect(oneLineError(result.stderr)).toMatch(/sysctl -w net\.ipv6\.conf\.snb\d+\.disable_ipv6=1 failed: Read-only file system/);
    const after = await devices(world.host);
    expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
    expect(await readFile(join(world.stateDir, 'links.json'), 'utf8')).toBe(stateBefore);
    // The read-only mount stayed in that mount namespace: ours is writable as before.
    expect(() => accessSync('/proc/sys/net/ipv6/conf/all/disable_ipv6', constants.W_OK)).not.toThrow();
  });

  /**
   * A directory holding an `ip` that logs its arguments and, for `netns add` only, ends as
   * `mode` says; every other command, and `netns add` once done with, goes to the real ip
   * (the directory comes first in PATH).
   */
  async function fakeIp(mode: 'interrupted-once' | 'interrupted-half-made' | 'killed' | 'silent'): Promise<{ env: Record<string, string>; calls: () => Promise<string[]> }> {
    const dir = await mkdtemp(join(tmpdir(), 'spectrum-fake-ip-'));
    trackTempDir(dir);
    const ending = {
      // As a child forked while a Ctrl-C reached spectrum-link's group: dead of SIGINT before ip ran.
      'interrupted-once': `if [ ! -e "${dir}/interrupted" ]; then : > "${dir}/interrupted"; kill -INT $$; fi`,
      // As an ip killed by a SIGTERM sent to it (a service stop signals the whole cgroup) after it
      // made the namespace's file, before it mounted the namespace there: the file left empty.
      'interrupted-half-made': `if [ ! -e "${dir}/interrupted" ]; then : > "${dir}/interrupted"; : > "/run/netns/$3"; kill -TERM $$; fi`,
      killed: 'kill -KILL $$',
      silent: 'exit 1',
    }[mode];
    const script = `#!/bin/sh\necho "$*" >> "${dir}/calls"\nif [ "$1 $2" = "netns add" ]; then ${ending}; fi\nPATH=\${PATH#*:} exec ip "$@"\n`;
    await writeFile(join(dir, 'ip'), script, { mode: 0o755 });
    const calls = async (): Promise<string[]> => (await readFile(join(dir, 'calls'), 'utf8').catch(() => '')).split('\n').filter((line) => line !== '');
    return { env: { PATH: `${dir}:${process.env.PATH ?? ''}` }, calls };
  }

  it('runs `ip netns add` again when it died of a SIGINT before it ran (one meant for spectrum-link, caught while it was forked)', async () => {
    const netns = `${world.netnsPrefix}appvm-20`;
    // netvm's namespace made already (idempotent where a test before linked lynx).
    expect((await world.link(['link', 'appvm-lynx', '--attach', 'netns'])).code).toBe(0);
    const ip = await fakeIp('interrupted-once');
    const result = await world.link(['link', 'appvm-20', '--attach', 'netns'], ip.env);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toBe('');
    expect(await ip.calls()).toEqual([`netns add ${netns}`, `netns add ${netns}`]);
    expect((await world.host.exec(['ip', 'netns', 'list'], { enter: 'nsenter' })).stdout).toContain(netns);
    // As before it: the VM neither linked nor with a namespace.
    expect((await world.link(['unlink', 'appvm-20', '--forget', '--attach', 'netns'])).code).toBe(0);
    await world.host.exec(['ip', 'netns', 'delete', netns], { enter: 'nsenter' });
  });

  it.each([
    ['killed', 'was killed by SIGKILL'],
    ['silent', 'exited with code 1, saying nothing'],
  ] as const)('says how `ip netns add` ended where it said nothing (%s): one line, exit 1, nothing made or recorded', async (mode, ending) => {
    const netns = `${world.netnsPrefix}appvm-20`;
    expect((await world.link(['link', 'appvm-lynx', '--attach', 'netns'])).code).toBe(0);
    const before = await devices(world.host);
    const stateBefore = await readFile(join(world.stateDir, 'links.json'), 'utf8');
    const ip = await fakeIp(mode);
    const result = await world.link(['link', 'appvm-20', '--attach', 'netns'], ip.env);
    expect(result.code).toBe(1);
    expect(oneLineError(result.stderr)).toBe(`spectrum-link: could not create network namespace ${netns}: ip netns add ${netns} ${ending}`);
    // Run once; the run's undo deletes what it was to make once (a namespace not there is no failure).
    expect(await ip.calls()).toEqual([`netns add ${netns}`, `netns delete ${netns}`]);
    expect([...(await devices(world.host)).keys()].sort()).toEqual([...before.keys()].sort());
    expect(await readFile(join(world.stateDir, 'links.json'), 'utf8')).toBe(stateBefore);
    expect((await world.host.exec(['ip', 'netns', 'list'], { enter: 'nsenter' })).stdout).not.toContain(netns);
  });

  it('takes no namespace file that an `ip netns add` cut short left empty for a namespace: fails saying so, its undo removes the file, and the next run links', async () => {
    const netns = `${world.netnsPrefix}appvm-20`;
    expect((await world.link(['link', 'appvm-lynx', '--attach', 'netns'])).code).toBe(0);
    const before = await devices(world.host);
    const stateBefore = await readFile(join(world.stateDir, 'links.json'), 'utf8');
    const ip = await fakeIp('interrupted-half-made');
    const result = await world.link(['link', 'appvm-20', '--attach', 'netns'], ip.env);
    expect(result.code).toBe(1);
    expect(oneLineError(result.stderr)).toBe(
      `spectrum-link: could not create network namespace ${netns}: Cannot create namespace file "/run/netns/${netns}": File exists; /run/netns/${netns} holds no network namespace (an ip netns add cut short leaves it so): ip netns delete ${netns} clears it`,
    );
    // The run again (SIGTERM, as a stop caught while forked), then its undo's deletion, which removes the empty file.
    expect(await ip.calls()).toEqual([`netns add ${netns}`, `netns add ${netns}`, `netns delete ${netns}`]);
    expect(existsSync(`/run/netns/${netns}`)).toBe(false);
    expect([...(await devices(world.host)).keys()].sort()).toEqual([...before.keys()].sort());
    expect(await readFile(join(world.stateDir, 'links.json'), 'utf8')).toBe(stateBefore);
    // Nothing left in the way: the next run links.
    const again = await world.link(['link', 'appvm-20', '--attach', 'netns']);
    expect(again.code, again.stderr).toBe(0);
    expect((await world.host.exec(['ip', 'netns', 'list'], { enter: 'nsenter' })).stdout).toContain(netns);
    expect((await world.link(['unlink', 'appvm-20', '--forget', '--attach', 'netns'])).code).toBe(0);
    await world.host.exec(['ip', 'netns', 'delete', netns], { enter: 'nsenter' });
  });

  it('clears an empty namespace file that an `ip netns add` cut short left before the run, and makes the namespace there in that run', async () => {
    const netns = `${world.netnsPrefix}appvm-20`;
    expect((await world.link(['link', 'appvm-lynx', '--attach', 'netns'])).code).toBe(0);
    await writeFile(`/run/netns/${netns}`, '');
    const result = await world.link(['link', 'appvm-20', '--attach', 'netns']);
    expect(result.code, result.stderr).toBe(0);
    expect((await world.host.exec(['ip', 'netns', 'list'], { enter: 'nsenter' })).stdout).toContain(netns);
    expect((await world.link(['list'])).stdout).toMatch(/^appvm-20 -> netvm .* up$/m);
    expect((await world.link(['unlink', 'appvm-20', '--forget', '--attach', 'netns'])).code).toBe(0);
    await world.host.exec(['ip', 'netns', 'delete', netns], { enter: 'nsenter' });
  });
});

describeNetns('device names at the 15-byte boundary', () => {
  let harness: Harness;
  let world: LinkWorld;
  beforeAll(async () => {
    harness = createHarness('names');
    world = await makeLinkWorld(harness);
  });
  afterAll(async () => {
    await world?.dispose();
    await harness?.cleanup();
  });

  it('makes real 15-byte devices with the longest prefix', async () => {
    const result = await world.link(['link', 'appvm-lynx', '--attach', 'netns', '--device-prefix', 'abcdefghi', '--json']);
    expect(result.code, result.stderr).toBe(0);
    const link = parseLink(result.stdout).links[0]!;
    expect(Buffer.byteLength(link.bridge)).toBeLessThanOrEqual(15);
    expect((await devices(world.host)).has(link.bridge)).toBe(true);
  });
});

describeNetns('linking many VMs in one call', () => {
  const VMS = Array.from({ length: 12 }, (_, index) => `appvm-${index}`);
  let harness: Harness;
  let world: LinkWorld;
  beforeAll(async () => {
    harness = createHarness('bulk');
    world = await makeLinkWorld(harness, VMS.length);
  });
  afterAll(async () => {
    await world?.dispose();
    await harness?.cleanup();
  });

  async function expectWhole(links: LinkJson['links']): Promise<void> {
    const host = await devices(world.host);
    for (const link of links) {
      expect(host.get(link.bridge)?.linkinfo?.info_kind).toBe('bridge');
      expect(host.get(link.bridge)?.flags).toContain('UP');
      for (const side of [link.clientDevice, link.providerDevice]) {
        expect(host.get(side)?.linkinfo?.info_kind).toBe('tun');
        expect(host.get(side)?.master).toBe(link.bridge);
        expect(host.get(side)?.flags).toContain('UP');
      }
    }
  }

  it('links every connection whole, and a failure at the last connection undoes them all and keeps the state', async () => {
    const first = await world.link(['link', ...VMS, '--attach', 'none', '--json']);
    expect(first.code, first.stderr).toBe(0);
    const links = first.stdout.trim().split('\n').flatMap((line) => parseLink(line).links);
    expect(links).toHaveLength(VMS.length);
    await expectWhole(links);

    for (const vm of VMS) expect((await world.link(['unlink', vm])).code).toBe(0);
    const before = await devices(world.host);
    const stateBefore = await readFile(join(world.stateDir, 'links.json'), 'utf8');
    // A device elsewhere holds the last connection's bridge name as an altname: a query by that
    // name answers with the other device, so the plan creates the bridge, and the kernel refuses
    // that step after every other connection's devices were made. The undo must delete what this
    // run made, not the device that answers to the name.
    const last = links[links.length - 1]!;
    await world.host.ip(['link', 'add', 'blocker', 'type', 'bridge']);
    await world.host.ip(['link', 'property', 'add', 'dev', 'blocker', 'altname', last.bridge]);
    const failed = await world.link(['link', ...VMS, '--attach', 'none']);
    expect(failed.code).not.toBe(0);
    expect(oneLineError(failed.stderr)).toContain(last.bridge);
    const after = await devices(world.host);
    expect([...after.keys()].sort()).toEqual([...before.keys(), 'blocker'].sort());
    expect(await readFile(join(world.stateDir, 'links.json'), 'utf8')).toBe(stateBefore);

    await world.host.ip(['link', 'del', 'dev', 'blocker']);
    const again = await world.link(['link', ...VMS, '--attach', 'none', '--json']);
    expect(again.code, again.stderr).toBe(0);
    const relinked = again.stdout.trim().split('\n').flatMap((line) => parseLink(line).links);
    expect(relinked.map((link) => link.id)).toEqual(links.map((link) => link.id));
    await expectWhole(relinked);
  });

  it('undoes the earlier VMs\' devices and ids when a VM late in the list is bad (VMs are linked in chunks)', async () => {
    // A state file with one recorded link and no devices, whatever ran before.
    expect((await world.link(['link', 'appvm-0', '--attach', 'none'])).code).toBe(0);
    for (const vm of VMS) await world.link(['unlink', vm]);
    const before = await devices(world.host);
    const stateBefore = await readFile(join(world.stateDir, 'links.json'), 'utf8');
    // Twelve good VMs make the chunks of 4 and 8 before the thirteenth, which does not exist.
    const failed = await world.link(['link', ...VMS, 'appvm-missing', '--attach', 'none']);
    expect(failed.code).not.toBe(0);
    expect(oneLineError(failed.stderr)).toContain('appvm-missing');
    expect([...(await devices(world.host)).keys()].sort()).toEqual([...before.keys()].sort());
    expect(await readFile(join(world.stateDir, 'links.json'), 'utf8')).toBe(stateBefore);
  });
  it('on a terminal, says how far a bulk link has got on one line, erased before the answer or an error', async () => {
    const quote = (word: string): string => `'${word.replace(/'/g, "'\\''")}'`;
    // script(1) runs the command on a terminal of its own, which stdout and stderr share.
    const onTerminal = (args: readonly string[]) => {
      const argv = ['node', LINK_BIN, ...withWorldOptions(args, world)];
      return world.host.exec(['script', '-qefc', argv.map(quote).join(' '), '/dev/null'], { enter: 'nsenter', allowFailure: true, timeoutMs: 60_000 });
    };
    const ERASE = '\r\x1b[2K';
    /** The lines after the progress line was erased for the last time (the terminal ends lines with CR LF). */
    const afterProgress = (screen: string): string[] => screen.slice(screen.lastIndexOf(ERASE) + ERASE.length).replace(/\r/g, '').split('\n').filter((line) => line !== '');

    const linked = await onTerminal(['link', ...VMS, '--attach', 'none']);
    expect(linked.code, linked.stdout).toBe(0);
    expect(linked.stdout).toMatch(/\r\x1b\[2Klinking: devices for \d+ of 12 VMs/);
    // A line per link, each followed by the VMM arguments of its two taps (two VMMs each).
    const answer = afterProgress(linked.stdout);
    expect(answer.filter((line) => !line.startsWith('  '))).toHaveLength(VMS.length);
    expect(answer).toHaveLength(VMS.length * 5);
    expect(answer[0]).toMatch(/^appvm-0 -> netvm  id \d+/);

    // A late failure (the last VM's QEMU is nowhere: its NIC's hot-plug fails): the chunks' devices
    // were made (and drawn) before the run failed and was undone. (A late bad VM is refused before
    // anything is made, and draws nothing.)
    const last = VMS.at(-1) ?? '';
    const failed = await onTerminal(['link', ...VMS, '--attach', 'none', '--attach', `${last}=qemu`, '--qmp-socket', '/nonexistent/{vm}.qmp']);
    expect(failed.code).not.toBe(0);
    expect(failed.stdout).toContain(`${ERASE}linking: devices for 4 of 12 VMs`);
    expect(afterProgress(failed.stdout)).toEqual([expect.stringMatching(new RegExp(`^spectrum-link: .*${last}`))]);
    // A late bad VM fails the run before anything is made: nothing drawn, its error alone.
    const refused = await onTerminal(['link', ...VMS, 'appvm-missing', '--attach', 'none']);
    expect(refused.code).not.toBe(0);
    expect(refused.stdout).not.toContain(ERASE);
    expect(refused.stdout.replace(/\r/g, '').split('\n').filter((line) => line !== '')).toEqual([expect.stringMatching(/^spectrum-link: .*appvm-missing/)]);

    // Asked for JSON, the terminal gets only JSON.
    const json = await onTerminal(['link', ...VMS, '--attach', 'none', '--json']);
    expect(json.code).toBe(0);
    expect(json.stdout).not.toContain(ERASE);
  });
});

describeNetns('a provider dropped from a client\'s config', () => {
  const world = linkWorldPerSuite('linkdrop');

  type LinkOutput = LinkJson & { unlinked?: LinkJson['links'] };
  const providerFile = (client: string, provider: string): string => join(world().configDir, client, 'providers', 'net', provider);
  const linkJsonOf = async (args: readonly string[]): Promise<LinkOutput[]> => {
    const result = await world().link([...args, '--attach', 'netns', '--json']);
    expect(result.code, result.stderr).toBe(0);
    return result.stdout.trim().split('\n').map((line) => JSON.parse(line) as LinkOutput);
  };

  it('takes the link down on the next link of the client (devices and far ends gone), keeping its id', async () => {
    await writeFile(providerFile('appvm-catgirl', 'appvm-lynx'), '');
    const [both] = await linkJsonOf(['link', 'appvm-catgirl']);
    expect(both?.links.map((link) => link.provider)).toEqual(['appvm-lynx', 'netvm']);
    const viaLynx = both!.links[0]!;
    expect((await devices(world().vmNetns('appvm-lynx'))).has(viaLynx.providerDevice)).toBe(true);

    await rm(providerFile('appvm-catgirl', 'appvm-lynx'));
    const [after] = await linkJsonOf(['link', 'appvm-catgirl']);
    expect(after?.links.map((link) => link.provider)).toEqual(['netvm']);
    expect(after?.unlinked).toEqual([expect.objectContaining({ provider: 'appvm-lynx', id: viaLynx.id, bridge: viaLynx.bridge })]);
    const host = await devices(world().host);
    for (const device of [viaLynx.bridge, viaLynx.clientDevice, viaLynx.providerDevice]) expect(host.has(device)).toBe(false);
    expect((await devices(world().vmNetns('appvm-lynx'))).has(viaLynx.providerDevice)).toBe(false);
    expect((await devices(world().vmNetns('appvm-catgirl'))).has(viaLynx.clientDevice)).toBe(false);
    const shown = JSON.parse((await world().link(['show', 'appvm-catgirl', '--json'])).stdout) as { provider: string; id: number; present: boolean }[];
    expect(shown).toContainEqual(expect.objectContaining({ provider: 'appvm-lynx', id: viaLynx.id, present: false }));

    // Nothing more to take down; listed again, it comes back with its id.
    const [again] = await linkJsonOf(['link', 'appvm-catgirl']);
    expect(again).not.toHaveProperty('unlinked');
    await writeFile(providerFile('appvm-catgirl', 'appvm-lynx'), '');
    const [back] = await linkJsonOf(['link', 'appvm-catgirl']);
    expect(back?.links.find((link) => link.provider === 'appvm-lynx')?.id).toBe(viaLynx.id);
    await rm(providerFile('appvm-catgirl', 'appvm-lynx'));
    const text = await world().link(['link', 'appvm-catgirl', '--attach', 'netns']);
    expect(text.stdout).toContain(`unlinked appvm-catgirl -> appvm-lynx (id ${viaLynx.id}, kept): appvm-lynx is no longer among appvm-catgirl's providers\n`);
  });

  it('link --all takes down the links of a VM that names no provider any more, and reports no other VM without providers', async () => {
    await linkJsonOf(['link', 'appvm-lynx', 'appvm-catgirl']);
    const providers = join(world().configDir, 'appvm-catgirl', 'providers');
    await rename(providers, `${providers}.away`);
    try {
      const outputs = await linkJsonOf(['link', '--all']);
      expect(outputs.map((output) => output.vm).sort()).toEqual(['appvm-catgirl', 'appvm-lynx']);
      const catgirl = outputs.find((output) => output.vm === 'appvm-catgirl');
      expect(catgirl?.links).toEqual([]);
      expect(catgirl?.unlinked?.map((link) => link.provider)).toEqual(['netvm']);
      expect(outputs.find((output) => output.vm === 'appvm-lynx')?.links.map((link) => link.provider)).toEqual(['netvm']);
      const host = await devices(world().host);
      expect(host.has(catgirl!.unlinked![0]!.bridge)).toBe(false);
    } finally {
      await rename(`${providers}.away`, providers);
    }
  });

  it('link --all refuses a VM whose providers/net is not a directory, saying so, instead of skipping it; its links stay', async () => {
    const [linked] = await linkJsonOf(['link', 'appvm-catgirl']);
    const net = join(world().configDir, 'appvm-catgirl', 'providers', 'net');
    await rename(net, `${net}.away`);
    await writeFile(net, 'netvm\n');
    try {
      const result = await world().link(['link', '--all', '--attach', 'netns', '--json']);
      expect(result.code).toBe(1);
      // stdout: the error object alone.
      expect(splitJsonError(result.stdout)).toEqual({ printed: '', error: jsonErrorOf(oneLineError(result.stderr), 'invalid-vm', 1) });
      expect(oneLineError(result.stderr)).toMatch(/appvm-catgirl\/providers\/net is not a directory/);
      const host = await devices(world().host);
      for (const device of [linked!.links[0]!.bridge, linked!.links[0]!.clientDevice]) expect(host.has(device)).toBe(true);
    } finally {
      await rm(net);
      await rename(`${net}.away`, net);
    }
  });

  it('takes down a link recorded before the state kept attach modes whose devices are up (as unlink takes it), not only links with attach modes recorded', async () => {
    await writeFile(providerFile('appvm-catgirl', 'appvm-lynx'), '');
    const [both] = await linkJsonOf(['link', 'appvm-catgirl']);
    const viaLynx = both!.links.find((link) => link.provider === 'appvm-lynx')!;
    // Its record as spectrum-link wrote it before commit 13513d4: no "attached".
    const statePath = join(world().stateDir, 'links.json');
    const state = JSON.parse(await readFile(statePath, 'utf8')) as { links: { id: number; attached?: unknown }[] };
    expect(state.links.find((entry) => entry.id === viaLynx.id)?.attached).toBeDefined();
    const legacy = state.links.map((entry) => {
      if (entry.id !== viaLynx.id) return entry;
      const { attached: _, ...rest } = entry;
      return rest;
    });
    await writeFile(statePath, JSON.stringify({ ...state, links: legacy }));

    await rm(providerFile('appvm-catgirl', 'appvm-lynx'));
    const [after] = await linkJsonOf(['link', 'appvm-catgirl']);
    expect(after?.links.map((link) => link.provider)).toEqual(['netvm']);
    // Taken down with --attach's modes, as unlink takes such a link.
    expect(after?.unlinked).toEqual([viaLynx]);
    const host = await devices(world().host);
    expect([viaLynx.bridge, viaLynx.clientDevice, viaLynx.providerDevice].filter((device) => host.has(device))).toEqual([]);
    expect((await devices(world().vmNetns('appvm-lynx'))).has(viaLynx.providerDevice)).toBe(false);
    // Down now, its id kept: nothing more to take down.
    const listed = JSON.parse((await world().link(['list', '--json'])).stdout) as { id: number; linked: boolean; present: boolean }[];
    expect(listed.find((entry) => entry.id === viaLynx.id)).toMatchObject({ linked: false, present: false });
    const [again] = await linkJsonOf(['link', 'appvm-catgirl']);
    expect(again).not.toHaveProperty('unlinked');
  });
});

describeNetns('link --all and a client VM whose directory has gone', () => {
  const world = linkWorldPerSuite('linkorphan');

  type LinkOutput = LinkJson & { orphaned?: (LinkJson['links'][number] & { vm: string })[] };
  const warnings = (stderr: string): string[] => stderr.split('\n').filter((line) => line !== '');

  it('warns of its recorded links (kept, devices too) once per VM, a field in --json, exit 0; unlink and unlink --forget work from the state alone, the latter as the warning prints it', async () => {
    const linked = await world().link(['link', 'appvm-lynx', 'appvm-catgirl', '--attach', 'netns', '--json']);
    expect(linked.code, linked.stderr).toBe(0);
    const catgirl = linked.stdout.trim().split('\n').map((line) => JSON.parse(line) as LinkOutput).find((output) => output.vm === 'appvm-catgirl')!.links[0]!;
    // Moved out of the config dir (as `appvm-catgirl.away` in there it would be a VM of its own).
    const dir = join(world().configDir, 'appvm-catgirl');
    const away = `${world().configDir}-appvm-catgirl`;
    trackTempDir(away);
    await rename(dir, away);
    try {
      const text = await world().link(['link', '--all', '--attach', 'netns']);
      expect(text.code, text.stderr).toBe(0);
      expect(text.stdout).not.toContain('appvm-catgirl');
      const [warning, ...more] = warnings(text.stderr);
      expect(more).toEqual([]);
      expect(warning).toContain(`appvm-catgirl has 1 recorded link but no directory in ${world().configDir}`);
      // The unlink that releases them, with this run's options that find them (the world gave it --state-dir).
      const release = /release it with: (.*)$/.exec((JSON.parse(warning ?? '{}') as { msg?: string }).msg ?? '')?.[1];
      expect(release).toBe(`spectrum-link unlink appvm-catgirl --forget --state-dir ${world().stateDir} --device-prefix sn`);
      // Nothing of it was taken down: the VM may still run.
      const host = await devices(world().host);
      for (const device of [catgirl.bridge, catgirl.clientDevice, catgirl.providerDevice]) expect(host.has(device)).toBe(true);

      const json = await world().link(['link', '--all', '--attach', 'netns', '--json']);
      expect(json.code, json.stderr).toBe(0);
      const outputs = json.stdout.trim().split('\n').map((line) => JSON.parse(line) as LinkOutput);
      expect(outputs.map((output) => output.vm)).toEqual(['appvm-lynx', 'appvm-catgirl']);
      expect(outputs[0]).not.toHaveProperty('orphaned');
      const { vmmArguments: _, ...recorded } = catgirl as typeof catgirl & { vmmArguments?: unknown };
      expect(outputs[1]).toEqual({ vm: 'appvm-catgirl', links: [], orphaned: [{ vm: 'appvm-catgirl', ...recorded, attachRecorded: true }] });
      expect(warnings(json.stderr)).toHaveLength(1);

      // Without its directory: unlink takes its devices down (id kept, so it is still reported, as
      // attached no way: null, as list says, not this run's --attach)...
      const unlinked = await world().link(['unlink', 'appvm-catgirl', '--json']);
      expect(unlinked.code, unlinked.stderr).toBe(0);
      expect((await devices(world().host)).has(catgirl.bridge)).toBe(false);
      const down = await world().link(['link', '--all', '--attach', 'netns', '--json']);
      expect(warnings(down.stderr)).toEqual([expect.stringContaining('appvm-catgirl has 1 recorded link')]);
      const downOutputs = down.stdout.trim().split('\n').map((line) => JSON.parse(line) as LinkOutput);
      expect(downOutputs[1]).toEqual({ vm: 'appvm-catgirl', links: [], orphaned: [{ vm: 'appvm-catgirl', ...recorded, clientAttach: null, providerAttach: null, attachRecorded: false }] });
      // ...and --forget, as the warning printed it (from the root directory, without this run's environment), releases the id: nothing more to say.
      const forgotten = await runPrinted(world().host, `${release ?? 'false'} --json`);
      expect(forgotten.code, forgotten.stderr).toBe(0);
      expect(JSON.parse(forgotten.stdout)).toMatchObject({ vm: 'appvm-catgirl', forgotten: true, unlinked: [expect.objectContaining({ id: catgirl.id })] });
      const after = await world().link(['link', '--all', '--attach', 'netns']);
      expect([after.code, after.stderr]).toEqual([0, '']);
      const listed = JSON.parse((await world().link(['list', '--json'])).stdout) as { vm: string }[];
      expect(listed.map((entry) => entry.vm)).toEqual(['appvm-lynx']);
    } finally {
      await rename(away, dir);
    }
  });
});

describeNetns('show, unlink --json and options a command does not use', () => {
  const world = linkWorldPerSuite('linkshow');
  const statePath = (): string => join(world().stateDir, 'links.json');

  it.each([[[]], [['--json']]])('show of a name that is no VM and has no links (a typo) fails with one line, also with %j', async (extra) => {
    await world().link(['link', 'appvm-lynx', '--attach', 'none']);
    const result = await world().link(['show', 'appvm-lynxx', ...extra]);
    expect(result.code).toBe(1);
    // stdout: nothing, but with --json the error object.
    expect(splitJsonError(result.stdout)).toEqual({ printed: '', error: extra.length === 0 ? undefined : jsonErrorOf(oneLineError(result.stderr), 'unknown-vm', 1) });
    expect(oneLineError(result.stderr)).toBe(
      `spectrum-link: show: no VM appvm-lynxx in config dir ${world().configDir} (from --config-dir): no directory ${world().configDir}/appvm-lynxx; ` +
        `and no links recorded for it in state dir ${world().stateDir} (from --state-dir); check the name, --config-dir and --state-dir`,
    );
  });

  it('show of an entry of the config dir that is no VM directory fails, saying what it is', async () => {
    await writeFile(join(world().configDir, 'notes.txt'), '');
    try {
      const result = await world().link(['show', 'notes.txt']);
      expect(result.code).toBe(1);
      expect(oneLineError(result.stderr)).toMatch(/no VM notes\.txt in config dir .*: .*\/notes\.txt is not a directory; and no links recorded/);
    } finally {
      await rm(join(world().configDir, 'notes.txt'));
    }
  });

  it('show of a VM directory without links says so, exit 0', async () => {
    const text = await world().link(['show', 'appvm-catgirl']);
    expect([text.code, text.stdout, text.stderr]).toEqual([0, 'no links recorded\n', '']);
    const json = await world().link(['show', 'appvm-catgirl', '--json']);
    expect([json.code, json.stdout, json.stderr]).toEqual([0, '[]\n', '']);
  });

  it('show of a VM whose directory has gone still shows its recorded links', async () => {
    const linked = parseLink((await world().link(['link', 'appvm-catgirl', '--attach', 'none', '--json'])).stdout).links[0]!;
    const dir = join(world().configDir, 'appvm-catgirl');
    await rename(dir, `${dir}.away`);
    try {
      const result = await world().link(['show', 'appvm-catgirl', '--json']);
      expect(result.code, result.stderr).toBe(0);
      expect(JSON.parse(result.stdout)).toEqual([expect.objectContaining({ vm: 'appvm-catgirl', id: linked.id, present: true })]);
    } finally {
      await rename(`${dir}.away`, dir);
    }
  });

  it('show refuses an invalid VM name as a usage error', async () => {
    const result = await world().link(['show', '../etc']);
    expect(result.code).toBe(2);
    expect(oneLineError(result.stderr)).toMatch(/VM name "\.\.\/etc" contains "\/"/);
  });

  it('unlink --json reports the links taken down without VMM arguments (their taps are gone); link --json keeps them', async () => {
    const linked = await world().link(['link', 'appvm-lynx', '--attach', 'none', '--json']);
    const link = parseLink(linked.stdout).links[0]!;
    expect(Object.keys(link)).toEqual(['vm', 'provider', 'id', 'clientIp', 'clientMac', 'providerMac', 'bridge', 'clientDevice', 'providerDevice', 'clientAttach', 'providerAttach', 'vmmArguments']);
    const unlinked = await world().link(['unlink', 'appvm-lynx', '--json']);
    expect(unlinked.code, unlinked.stderr).toBe(0);
    const output = JSON.parse(unlinked.stdout) as { vm: string; unlinked: Record<string, unknown>[]; forgotten: boolean };
    const { vmmArguments: _, ...withoutArguments } = link as typeof link & { vmmArguments: unknown };
    expect(output).toEqual({ vm: 'appvm-lynx', unlinked: [withoutArguments], forgotten: false });
  });

  it('unlink --json of a link taken down already gives its attach modes as null (attached no way), as list --json does, not the --attach default', async () => {
    const link = parseLink((await world().link(['link', 'appvm-lynx', '--attach', 'none', '--json'])).stdout).links[0]!;
    const { vmmArguments: _, ...fields } = link as typeof link & { vmmArguments: unknown };
    const unlinkJson = async (args: readonly string[]): Promise<unknown> => {
      const result = await world().link(['unlink', 'appvm-lynx', ...args, '--json']);
      expect(result.code, result.stderr).toBe(0);
      return JSON.parse(result.stdout);
    };
    // Taken down: how it was attached.
    expect(await unlinkJson([])).toEqual({ vm: 'appvm-lynx', unlinked: [{ ...fields, clientAttach: 'none', providerAttach: 'none' }], forgotten: false });
    const down = { ...fields, clientAttach: null, providerAttach: null };
    const listed = JSON.parse((await world().link(['list', '--json'])).stdout) as Record<string, unknown>[];
    expect(listed.find((entry) => entry.id === link.id)).toEqual({ ...down, attachRecorded: false, present: false, linked: false, foreign: [] });
    // Again, and with --forget: attached no way, whatever --attach says of links without a record.
    expect(await unlinkJson([])).toEqual({ vm: 'appvm-lynx', unlinked: [down], forgotten: false });
    expect(await unlinkJson(['--attach', 'appvm-lynx=netns', '--forget'])).toEqual({ vm: 'appvm-lynx', unlinked: [down], forgotten: true });
  });

  const dropAttachModes = (id: number): Promise<void> => dropAttachModesOf(world().stateDir, id);

  it('unlink --json of a link recorded before the state kept attach modes, its devices up, gives the --attach modes it took it down with; unlink again, null', async () => {
    const link = parseLink((await world().link(['link', 'appvm-lynx', '--attach', 'netns', '--json'])).stdout).links[0]!;
    expect([link.clientAttach, link.providerAttach]).toEqual(['netns', 'netns']);
    await dropAttachModes(link.id);
    // Up, as list says too (its veths show netns).
    const listed = JSON.parse((await world().link(['list', '--json'])).stdout) as { id: number; linked: boolean; present: boolean }[];
    expect(listed.find((entry) => entry.id === link.id)).toEqual({ ...link, attachRecorded: false, linked: true, present: true, foreign: [] });

    const unlinkJson = async (): Promise<unknown> => {
      const result = await world().link(['unlink', 'appvm-lynx', '--attach', 'netns', '--json']);
      expect(result.code, result.stderr).toBe(0);
      return JSON.parse(result.stdout);
    };
    expect(await unlinkJson()).toEqual({ vm: 'appvm-lynx', unlinked: [link], forgotten: false });
    const host = await devices(world().host);
    expect([link.bridge, link.clientDevice, link.providerDevice].filter((device) => host.has(device))).toEqual([]);
    expect((await devices(world().vmNetns('appvm-lynx'))).has(link.clientDevice)).toBe(false);
    // Taken down now: attached no way.
    expect(await unlinkJson()).toEqual({ vm: 'appvm-lynx', unlinked: [{ ...link, clientAttach: null, providerAttach: null }], forgotten: false });
  });

  it('list and show report a link recorded before the state kept attach modes as linked while devices of its names exist: a veth side netns, a tap side unknown (null, ?) and without VMM arguments', async () => {
    const linked = parseLink((await world().link(['link', 'appvm-lynx', '--attach', 'none', '--attach', 'appvm-lynx=netns', '--json'])).stdout).links[0]!;
    const { vmmArguments: _, ...link } = linked as typeof linked & { vmmArguments?: unknown };
    expect([link.clientAttach, link.providerAttach]).toEqual(['netns', 'none']);
    await dropAttachModes(link.id);
    const shown = async (args: readonly string[]): Promise<{ json: unknown; lines: string[] }> => {
      const json = await world().link([...args, '--json']);
      const text = await world().link(args);
      expect([json.code, json.stderr, text.code, text.stderr]).toEqual([0, '', 0, '']);
      const entry = (JSON.parse(json.stdout) as { id: number }[]).find((listed) => listed.id === link.id);
      const lines = text.stdout.trimEnd().split('\n');
      const start = lines.findIndex((line) => line.startsWith('appvm-lynx -> netvm '));
      const end = lines.findIndex((line, index) => index > start && !line.startsWith('  '));
      return { json: entry, lines: lines.slice(start, end < 0 ? undefined : end) };
    };
    const line = (client: string, provider: string, state: string): string =>
      `appvm-lynx -> netvm  id ${link.id}  ip ${link.clientIp}  client ${link.clientDevice} ${link.clientMac} (${client})  provider ${link.providerDevice} ${link.providerMac} (${provider})  bridge ${link.bridge}  ${state}`;
    for (const command of [['list'], ['show', 'appvm-lynx'], ['show', 'netvm']]) {
      expect(await shown(command)).toEqual({
        json: { ...link, clientAttach: 'netns', providerAttach: null, attachRecorded: false, present: true, linked: true, foreign: [] },
        lines: [line('netns', '?', 'up (attach modes not recorded)')],
      });
    }
    // Its provider's tap lost: still linked (devices of its names exist), but not all there.
    await world().host.ip(['link', 'del', 'dev', link.providerDevice]);
    expect(await shown(['list'])).toEqual({
      json: { ...link, clientAttach: 'netns', providerAttach: null, attachRecorded: false, present: false, linked: true, foreign: [] },
      lines: [line('netns', '?', 'devices missing (attach modes not recorded)')],
    });
    // Every device gone: taken down (as unlink takes such a link), attached no way.
    await world().host.ip(['link', 'del', 'dev', link.clientDevice]);
    await world().host.ip(['link', 'del', 'dev', link.bridge]);
    expect(await shown(['show', 'appvm-lynx'])).toEqual({
      json: { ...link, clientAttach: null, providerAttach: null, attachRecorded: false, present: false, linked: false, foreign: [] },
      lines: [line('-', '-', 'unlinked (id kept)')],
    });
  });

  it('list and show give VMM arguments only to links whose devices exist: after unlink (id kept) or a lost device they would name missing taps', async () => {
    type Listed = Record<string, unknown> & { id: number; present: boolean; vmmArguments?: { client?: { qemu: string[] } } };
    const listedJson = async (args: readonly string[]): Promise<Listed | undefined> => {
      const result = await world().link([...args, '--json']);
      expect(result.code, result.stderr).toBe(0);
      return (JSON.parse(result.stdout) as Listed[]).find((entry) => entry.vm === 'appvm-lynx');
    };
    /** The human output's line for the link, and the lines under it. */
    const human = async (args: readonly string[]): Promise<string[]> => {
      const result = await world().link(args);
      expect(result.code, result.stderr).toBe(0);
      const lines = result.stdout.trimEnd().split('\n');
      const start = lines.findIndex((line) => line.startsWith('appvm-lynx -> netvm '));
      const end = lines.findIndex((line, index) => index > start && !line.startsWith('  '));
      return lines.slice(start, end < 0 ? undefined : end);
    };
    const linked = JSON.parse((await world().link(['link', 'appvm-lynx', '--attach', 'none', '--json'])).stdout) as { links: (Record<string, unknown> & { vmmArguments: unknown; clientDevice: string })[] };
    const link = linked.links[0]!;
    for (const command of [['list'], ['show', 'appvm-lynx']]) {
      expect(await listedJson(command)).toEqual({ ...link, attachRecorded: true, present: true, linked: true, foreign: [] });
      const lines = await human(command);
      expect(lines[0]).toMatch(/  up$/);
      expect(lines.slice(1).map((line) => line.split(':')[0])).toEqual(['  appvm-lynx', '  appvm-lynx', '  netvm', '  netvm']);
    }
    const { vmmArguments: _, ...withoutArguments } = link;
    const missing = async (): Promise<void> => {
      for (const command of [['list'], ['show', 'appvm-lynx']]) {
        expect(await listedJson(command)).toEqual({ ...withoutArguments, attachRecorded: true, present: false, linked: true, foreign: [] });
        const lines = await human(command);
        expect(lines).toHaveLength(1);
        expect(lines[0]).toMatch(/  devices missing$/);
      }
    };
    // unlink keeps the id: the link is still recorded, its taps gone, and no attach mode: shown
    // as none (null, `-`), not as the default (`none`, which would say it was attached by hand).
    expect((await world().link(['unlink', 'appvm-lynx'])).code).toBe(0);
    for (const command of [['list'], ['show', 'appvm-lynx']]) {
      expect(await listedJson(command)).toEqual({ ...withoutArguments, clientAttach: null, providerAttach: null, attachRecorded: false, present: false, linked: false, foreign: [] });
      const lines = await human(command);
      expect(lines).toEqual([`appvm-lynx -> netvm  id ${link.id}  ip ${String(link.clientIp)}  client ${link.clientDevice} ${String(link.clientMac)} (-)  provider ${String(link.providerDevice)} ${String(link.providerMac)} (-)  bridge ${String(link.bridge)}  unlinked (id kept)`]);
    }
    // One tap lost (a crash, a reboot): the arguments would name it.
    expect((await world().link(['link', 'appvm-lynx', '--attach', 'none'])).code).toBe(0);
    await world().host.ip(['link', 'del', 'dev', link.clientDevice]);
    await missing();
  });

  it('refuses an MTU above what a tap takes where a side gets a tap (exit 2, one line, nothing made or recorded), and takes it for netns links', async () => {
    const state = await readFile(statePath(), 'utf8').catch(() => '');
    const before = await devices(world().host);
    const refused = await world().link(['link', 'appvm-lynx', '--attach', 'none', '--mtu', '65535']);
    expect(refused.code).toBe(2);
    expect(refused.stdout).toBe('');
    expect(oneLineError(refused.stderr)).toMatch(/^spectrum-link: --mtu 65535 is more than a tap takes \(65521, Linux's tun driver\), and appvm-lynx is attached with none/);
    expect(await readFile(statePath(), 'utf8').catch(() => '')).toBe(state);
    expect([...(await devices(world().host)).keys()].sort()).toEqual([...before.keys()].sort());
    // The kernel's own ceiling, as the check has it: a tap takes 65521, not one more.
    const tap = await world().link(['link', 'appvm-lynx', '--attach', 'none', '--mtu', '65521']);
    expect(tap.code, tap.stderr).toBe(0);
    const veth = await world().link(['link', 'appvm-lynx', '--attach', 'netns', '--mtu', '65535']);
    expect(veth.code, veth.stderr).toBe(0);
  });

  it.each([
    [['list', '--mtu', '9000']],
    [['list', '--config-dir', '/tmp']],
    [['show', 'appvm-lynx', '--attach', 'qemu']],
    [['show', 'appvm-lynx', '--mtu', '9000']],
    [['gc', '--attach', 'none']],
    [['gc', '--qmp-socket', '/tmp/{vm}']],
    [['unlink', 'appvm-lynx', '--mtu', '9000']],
    [['unlink', 'appvm-lynx', '--qemu-bus', 'rp0']],
  ])('refuses %j, an option the command does not use (exit 2, one line), changing nothing', async (args) => {
    await world().link(['link', 'appvm-lynx', '--attach', 'none']);
    const state = await readFile(statePath(), 'utf8');
    const before = await devices(world().host);
    const result = await world().link(args);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    expect(oneLineError(result.stderr)).toBe(`spectrum-link: unknown option '${args.find((arg) => arg.startsWith('--'))}'`);
    expect(await readFile(statePath(), 'utf8')).toBe(state);
    expect([...(await devices(world().host)).keys()].sort()).toEqual([...before.keys()].sort());
  });
});

describeNetns('link --attach VM=MODE naming a VM the run does not touch', () => {
  const world = linkWorldPerSuite('linkatt');
  const lines = (stderr: string): string[] => stderr.split('\n').filter((line) => line !== '');

  it('warns once of a VM that is nowhere (exit 0), and not of a VM of the config dir that this run does not link', async () => {
    const args = ['--attach', 'netns', '--attach', 'apvm-lynx=qemu', '--attach', 'appvm-catgirl=qemu'];
    const single = await world().link(['link', 'appvm-lynx', ...args, '--json']);
    expect(single.code, single.stderr).toBe(0);
    expect(JSON.parse(single.stdout)).toMatchObject({ vm: 'appvm-lynx', links: [{ provider: 'netvm' }] });
    const [warning, ...more] = lines(single.stderr);
    expect(more).toEqual([]);
    expect(warning).toContain('--attach apvm-lynx=qemu was not used');
    expect(warning).toContain(`no directory ${world().configDir}/apvm-lynx`);
    expect(warning).not.toContain('appvm-catgirl');

    const all = await world().link(['link', '--all', ...args.slice(0, 4)]);
    expect(all.code, all.stderr).toBe(0);
    expect(lines(all.stderr)).toEqual([expect.stringContaining('--attach apvm-lynx=qemu was not used')]);

    // Used (netvm is the provider), nothing to say.
    const used = await world().link(['link', 'appvm-lynx', '--attach', 'netns', '--attach', 'netvm=netns']);
    expect([used.code, used.stderr]).toEqual([0, '']);
  });

  it('unlink warns once of a VM=MODE that no recorded link involves (exit 0), not of one for a VM with links, taken down or not (one --attach set for every call)', async () => {
    expect((await world().link(['link', 'appvm-lynx', '--attach', 'netns'])).code).toBe(0);
    expect((await world().link(['link', 'appvm-catgirl', '--attach', 'netns'])).code).toBe(0);
    const attach = ['--attach', 'apvm-lynx=qemu', '--attach', 'netvm=netns', '--attach', 'appvm-lynx=netns', '--attach', 'appvm-catgirl=netns'];
    const result = await world().link(['unlink', 'appvm-lynx', ...attach, '--json']);
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ vm: 'appvm-lynx', unlinked: [{ provider: 'netvm' }] });
    expect(lines(result.stderr)).toEqual([expect.stringContaining('--attach apvm-lynx=qemu was not used: no recorded link involves apvm-lynx (as client or provider); check the name')]);
    // appvm-lynx's link is recorded still (its id kept): nothing to say of it, nor of appvm-catgirl.
    const again = await world().link(['unlink', 'appvm-catgirl', ...attach.slice(2)]);
    expect([again.code, again.stderr]).toEqual([0, '']);
    // Taking down the provider's links: the client is involved, nothing to say.
    expect((await world().link(['link', 'appvm-lynx', '--attach', 'netns'])).code).toBe(0);
    const provider = await world().link(['unlink', 'netvm', '--attach', 'appvm-lynx=netns']);
    expect([provider.code, provider.stderr]).toEqual([0, '']);
  });
});

describeNetns('link --all and a VM directory whose name is no VM name', () => {
  const world = linkWorldPerSuite('linkname');
  const lines = (text: string): string[] => text.split('\n').filter((line) => line !== '');

  it('warns once per such directory with providers (a line in --json too), links the rest, exit 0', async () => {
    const plus = join(world().configDir, 'appvm+lynx');
    const latin1 = Buffer.concat([Buffer.from(`${world().configDir}/appvm-caf`), Buffer.from([0xe9])]);
    await mkdir(join(plus, 'providers', 'net'), { recursive: true });
    await writeFile(join(plus, 'providers', 'net', 'netvm'), '');
    await mkdir(Buffer.concat([latin1, Buffer.from('/providers/net')]), { recursive: true });
    await mkdir(join(world().configDir, 'lost+found'));
    try {
      const text = await world().link(['link', '--all', '--attach', 'netns']);
      expect(text.code, text.stderr).toBe(0);
      expect(text.stdout).toMatch(/appvm-lynx -> netvm/);
      // Log lines: JSON, stderr being no terminal.
      const warnings = lines(text.stderr).map((line) => (JSON.parse(line) as { msg: string }).msg);
      expect(warnings).toHaveLength(2);
      expect(warnings[0]).toContain(`${world().configDir}/"appvm-caf\\xe9" has a providers/net but no VM name, so it is not linked: VM name "appvm-caf\\xe9" is not valid UTF-8`);
      expect(warnings[1]).toContain(`${world().configDir}/appvm+lynx has a providers/net but no VM name, so it is not linked: VM name "appvm+lynx" contains "+"`);

      const json = await world().link(['link', '--all', '--attach', 'netns', '--json']);
      expect(json.code, json.stderr).toBe(0);
      const outputs = lines(json.stdout).map((line) => JSON.parse(line) as { vm: string; links: unknown[]; invalidName?: string });
      expect(outputs.filter((output) => output.invalidName !== undefined)).toEqual([
        { vm: 'appvm-caf\ufffd', links: [], invalidName: expect.stringContaining('not valid UTF-8') },
        { vm: 'appvm+lynx', links: [], invalidName: expect.stringContaining('contains "+"') },
      ]);
      expect(lines(json.stderr)).toHaveLength(2);
    } finally {
      await rm(plus, { recursive: true });
      await rm(latin1, { recursive: true });
      await rm(join(world().configDir, 'lost+found'), { recursive: true });
    }
  });
});

/**
 * The bytes of the kernel's answer to RTM_GETLINK by name, statistics left out, as spectrum-link
 * asks (argv: device name): read into a buffer far larger than any answer.
 */
const GETLINK_ANSWER_BYTES = `
import socket, struct, sys
name = sys.argv[1].encode() + b'\\0'
attributes = struct.pack('HH', 4 + len(name), 3) + name + b'\\0' * (-len(name) % 4) + struct.pack('HHI', 8, 29, 1 << 3)
body = struct.pack('BxHiII', 0, 0, 0, 0, 0) + attributes
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
s.send(struct.pack('IHHII', 16 + len(body), 18, 1, 1, 0) + body)
print(len(s.recv(1 << 20)))
`;

describeNetns('a link device whose route netlink answer passes 64 KiB (hundreds of long altnames)', () => {
  const world = linkWorldPerSuite('linkbig');

  it('show, list, link again, gc and unlink read it whole: each does its work as without them, and unlink deletes it', async () => {
    const link = parseLink((await world().link(['link', 'appvm-lynx', '--attach', 'none', '--json'])).stdout).links[0]!;
    // As many altnames of 127 bytes as the kernel takes (it keeps the property list below 64 KiB;
    // -force goes on past its refusals) ...
    const altnames = Array.from({ length: 520 }, (_, index) => `alt${String(index).padStart(3, '0')}${'x'.repeat(121)}`);
    await world().host.exec(['ip', '-force', '-batch', '-'], { input: altnames.map((name) => `link property add dev ${link.bridge} altname ${name}\n`).join(''), allowFailure: true });
    // ... and the rest of the bridge's answer take it past 64 KiB.
    expect(Number((await world().host.exec(['python3', '-c', GETLINK_ANSWER_BYTES, link.bridge])).stdout)).toBeGreaterThan(65536);

    type Listed = { id: number; present: boolean; linked: boolean };
    for (const command of [['show', 'appvm-lynx'], ['list']]) {
      const result = await world().link([...command, '--json']);
      expect(result.code, result.stderr).toBe(0);
      expect((JSON.parse(result.stdout) as Listed[]).find((entry) => entry.id === link.id)).toMatchObject({ present: true, linked: true });
    }
    const again = await world().link(['link', 'appvm-lynx', '--attach', 'none', '--json']);
    expect(again.code, again.stderr).toBe(0);
    expect(parseLink(again.stdout).links).toEqual([link]);
    const gc = await world().link(['gc', '--json']);
    expect([gc.code, gc.stderr, gc.stdout]).toEqual([0, '', '{"removed":[]}\n']);
    const unlinked = await world().link(['unlink', 'appvm-lynx']);
    expect(unlinked.code, unlinked.stderr).toBe(0);
    const left = await devices(world().host);
    expect([link.bridge, link.clientDevice, link.providerDevice].filter((device) => left.has(device))).toEqual([]);
  });
});

describeNetns('a bridge deleted by someone else while its ports join it', () => {
  const world = linkWorldPerSuite('linkgone');

  it('says its master is gone, in one line saying what to check, where the kernel says only "Invalid argument" (of the index the run had looked up); the run is undone', async () => {
    const paused = await linkPausedBeforeJoin(world(), 'provider');
    const { names, run } = paused;
    // Then on with the run: the provider port joins the bridge as the run looked it up for the client port.
    await resumePausedLink(world(), paused, 1, async () => {
      await eventually(`${names.client} to join ${names.bridge}`, async () => (await devices(world().host)).get(names.client)?.master === names.bridge, 30_000);
      await world().host.ip(['link', 'del', 'dev', names.bridge]);
    });
    expect(oneLineError(run.stderr)).toContain(
      `ip link set dev ${names.provider} mtu 1500 master ${names.bridge} up failed: No such device: master ${names.bridge}, there when this run looked it up, was deleted meanwhile by something else; ` +
        'check what else deletes network devices on this host',
    );
    // Undone: no device of the link, nothing recorded.
    const host = await devices(world().host);
    expect([names.bridge, names.client, names.provider].filter((device) => host.has(device))).toEqual([]);
    expect(JSON.parse((await world().link(['list', '--json'])).stdout)).toEqual([]);
  });
});

describeNetns('a bridge deleted and made anew under its name by someone else while its ports join it', () => {
  const world = linkWorldPerSuite('linkanew');

  it('joins the second port to the new bridge (the join refused with the index the run had looked up, EINVAL, the bridge is looked up again and the join tried once more): the run succeeds', async () => {
    const paused = await linkPausedBeforeJoin(world(), 'provider');
    const { names } = paused;
    const ifindex = async (name: string) => (JSON.parse((await world().host.ip(['-j', 'link', 'show', 'dev', name])).stdout) as { ifindex: number }[])[0]?.ifindex;
    let oldIndex: number | undefined;
    await resumePausedLink(world(), paused, 0, async () => {
      await eventually(`${names.client} to join ${names.bridge}`, async () => (await devices(world().host)).get(names.client)?.master === names.bridge, 30_000);
      oldIndex = await ifindex(names.bridge);
      await world().host.ip(['link', 'del', 'dev', names.bridge]);
      await world().host.ip(['link', 'add', names.bridge, 'type', 'bridge']);
    });
    const newIndex = await ifindex(names.bridge);
    expect(newIndex).not.toBe(oldIndex);
    const host = await devices(world().host);
    expect(host.get(names.provider)?.master).toBe(names.bridge);
    expect(host.get(names.bridge)?.flags).toContain('UP');
  });
});

describeNetns('link --all and a link recorded before the state kept attach modes', () => {
  const world = linkWorldPerSuite('linklegacy');

  type Output = { vm: string; links: unknown[]; orphaned?: unknown[]; unusableDir?: string; recorded?: unknown[] };

  it("reports it, up, as list does in a client's orphaned (directory gone) and recorded (no directory) entries: a veth side netns, a tap side null, attachRecorded false", async () => {
    const linked = parseLink((await world().link(['link', 'appvm-catgirl', '--attach', 'none', '--attach', 'appvm-catgirl=netns', '--json'])).stdout).links[0]!;
    const { vmmArguments: _, ...link } = linked as typeof linked & { vmmArguments?: unknown };
    expect([link.clientAttach, link.providerAttach]).toEqual(['netns', 'none']);
    await dropAttachModesOf(world().stateDir, link.id);
    // Its modes as its devices show them: netns for the client's veth, unknown for netvm's tap.
    const inferred = { vm: 'appvm-catgirl', ...link, clientAttach: 'netns', providerAttach: null, attachRecorded: false };
    const listed = (JSON.parse((await world().link(['list', '--json'])).stdout) as { id: number }[]).find((entry) => entry.id === link.id);
    expect(listed).toEqual({ ...inferred, present: true, linked: true, foreign: [] });
    const catgirlOutput = async (): Promise<Output | undefined> => {
      const result = await world().link(['link', '--all', '--attach', 'none', '--json']);
      expect(result.code, result.stderr).toBe(0);
      return result.stdout.trim().split('\n').map((line) => JSON.parse(line) as Output).find((output) => output.vm === 'appvm-catgirl');
    };
    const dir = join(world().configDir, 'appvm-catgirl');
    const away = `${world().configDir}-appvm-catgirl`;
    trackTempDir(away);
    await rename(dir, away);
    try {
      expect(await catgirlOutput()).toEqual({ vm: 'appvm-catgirl', links: [], orphaned: [inferred] });
      // A file in its place: no VM directory, its links left as they are.
      await writeFile(dir, '');
      try {
        expect(await catgirlOutput()).toEqual({ vm: 'appvm-catgirl', links: [], unusableDir: `${dir} is not a directory`, recorded: [inferred] });
      } finally {
        await rm(dir);
      }
    } finally {
      await rename(away, dir);
    }
    // Left as it was: its devices up.
    const host = await devices(world().host);
    expect([link.bridge, link.clientDevice, link.providerDevice].filter((device) => !host.has(device))).toEqual([]);
  });
});

describeNetns('link without --attach keeps the recorded attach modes', () => {
  // appvm-0: a third client of netvm, for a new link of a provider recorded with two modes.
  const world = linkWorldPerSuite('linkkeep', 1);

  type Link = LinkJson['links'][number];
  const linkOf = async (args: readonly string[]): Promise<{ links: Link[]; stderr: string }> => {
    const result = await world().link([...args, '--json']);
    expect(result.code, result.stderr).toBe(0);
    return { links: result.stdout.trim().split('\n').flatMap((line) => parseLink(line).links), stderr: result.stderr };
  };
  /** The ifindex and kind of each device a link has: on the host, and in the VM namespaces of its netns sides. */
  type Shown = [index: number | undefined, kind: string | undefined];
  const deviceIndexes = async (link: Link, client: string): Promise<{ bridge: Shown; client: Shown; provider: Shown; clientFar: Shown; providerFar: Shown }> => {
    const host = await devices(world().host);
    const shown = (map: Map<string, { ifindex: number; linkinfo?: { info_kind?: string } }>, name: string): Shown => [map.get(name)?.ifindex, map.get(name)?.linkinfo?.info_kind];
    const far = async (vm: string, device: string, mode: string): Promise<Shown> => (mode === 'netns' ? shown(await devices(world().vmNetns(vm)), device) : [undefined, undefined]);
    return {
      bridge: shown(host, link.bridge),
      client: shown(host, link.clientDevice),
      provider: shown(host, link.providerDevice),
      clientFar: await far(client, link.clientDevice, link.clientAttach),
      providerFar: await far(link.provider, link.providerDevice, link.providerAttach),
    };
  };
  const recorded = async (id: number): Promise<unknown> =>
    (JSON.parse(await readFile(join(world().stateDir, 'links.json'), 'utf8')) as { links: { id: number; attached?: unknown }[] }).links.find((entry) => entry.id === id)?.attached;

  it('a netns link re-run without --attach (by name, --keep-going, --all) stays up as it is: same devices (ifindex unchanged), the VM namespace\'s interface intact; --attach none switches it to taps', async () => {
    const [made] = (await linkOf(['link', 'appvm-lynx', '--attach', 'netns'])).links;
    expect([made?.clientAttach, made?.providerAttach]).toEqual(['netns', 'netns']);
    const before = await deviceIndexes(made!, 'appvm-lynx');
    expect(before.clientFar[1]).toBe('veth');
    expect(before.providerFar[1]).toBe('veth');
    for (const args of [['link', 'appvm-lynx'], ['link', '--keep-going', 'appvm-lynx'], ['link', '--all']]) {
      const { links, stderr } = await linkOf(args);
      expect(stderr).toBe('');
      const again = links.find((link) => link.id === made!.id);
      expect(again, args.join(' ')).toEqual(made);
      expect(await deviceIndexes(made!, 'appvm-lynx'), args.join(' ')).toEqual(before);
      expect(await recorded(made!.id)).toEqual({ client: 'netns', provider: 'netns' });
    }
    // And carries traffic as before: the lynx namespace's interface is up with its MAC.
    const lynx = (await devices(world().vmNetns('appvm-lynx'))).get(made!.clientDevice);
    expect(lynx?.flags).toContain('UP');
    expect(lynx?.address).toBe(made!.clientMac.toLowerCase());

    // Asked for, `none` is a request: taps replace the veths, their far ends gone.
    const [switched] = (await linkOf(['link', 'appvm-lynx', '--attach', 'none'])).links;
    expect([switched?.id, switched?.clientAttach, switched?.providerAttach]).toEqual([made!.id, 'none', 'none']);
    const host = await devices(world().host);
    expect([host.get(made!.clientDevice)?.linkinfo?.info_kind, host.get(made!.providerDevice)?.linkinfo?.info_kind]).toEqual(['tun', 'tun']);
    expect((await devices(world().vmNetns('appvm-lynx'))).has(made!.clientDevice)).toBe(false);
    expect(await recorded(made!.id)).toEqual({ client: 'none', provider: 'none' });
    // Now recorded as none, a re-run keeps the taps.
    const [kept] = (await linkOf(['link', 'appvm-lynx'])).links;
    expect([kept?.clientAttach, kept?.providerAttach]).toEqual(['none', 'none']);
    // --all linked netvm's other clients too.
    await world().link(['unlink', 'netvm', '--forget']);
  });

  it('a link recorded before the state kept attach modes keeps what its devices show: a veth side netns, a tap side none', async () => {
    const [made] = (await linkOf(['link', 'appvm-catgirl', '--attach', 'none', '--attach', 'appvm-catgirl=netns'])).links;
    const before = await deviceIndexes(made!, 'appvm-catgirl');
    await dropAttachModesOf(world().stateDir, made!.id);
    const [again] = (await linkOf(['link', 'appvm-catgirl'])).links;
    expect([again?.clientAttach, again?.providerAttach]).toEqual(['netns', 'none']);
    expect(await deviceIndexes(made!, 'appvm-catgirl')).toEqual(before);
    // Recorded now.
    expect(await recorded(made!.id)).toEqual({ client: 'netns', provider: 'none' });
    await world().link(['unlink', 'appvm-catgirl', '--forget']);
  });

  it('a link recorded whose devices are all gone (a reboot: the state outlives them), linked again without --attach: a netns side keeps netns, a qemu side gets none (its VMM may not run yet), and a warning says so', async () => {
    const [made] = (await linkOf(['link', 'appvm-lynx', '--attach', 'netns'])).links;
    expect([made?.clientAttach, made?.providerAttach]).toEqual(['netns', 'netns']);
    // As after a reboot: none of its devices left (a veth's far end goes with it); and, as if it
    // had been linked to a QEMU, its client side recorded qemu.
    for (const device of [made!.clientDevice, made!.providerDevice, made!.bridge]) await world().host.ip(['link', 'del', device]);
    const file = join(world().stateDir, 'links.json');
    const state = JSON.parse(await readFile(file, 'utf8')) as { links: { id: number; attached?: { client: string; provider: string } }[] };
    for (const entry of state.links) if (entry.id === made!.id) entry.attached = { client: 'qemu', provider: 'netns' };
    await writeFile(file, JSON.stringify(state));
    const { links, stderr } = await linkOf(['link', 'appvm-lynx']);
    // The change of mode said, with the --attach that restores it.
    expect(warningMessages(stderr)).toEqual([expect.stringMatching(/^appvm-lynx's side of appvm-lynx -> netvm was qemu and is none now .*; to attach it as before: link with --attach appvm-lynx=qemu$/)]);
    const [again] = links;
    expect([again?.id, again?.clientAttach, again?.providerAttach]).toEqual([made!.id, 'none', 'netns']);
    const host = await devices(world().host);
    expect(host.get(made!.clientDevice)?.linkinfo?.info_kind).toBe('tun');
    expect((await devices(world().vmNetns('netvm'))).get(made!.providerDevice)?.linkinfo?.info_kind).toBe('veth');
    expect(await recorded(made!.id)).toEqual({ client: 'none', provider: 'netns' });
    await world().link(['unlink', 'appvm-lynx', '--forget']);
  });

  it("gives a new client of a provider recorded as netns a netns side in the provider's namespace, and itself none where nothing is recorded of it", async () => {
    await linkOf(['link', 'appvm-lynx', '--attach', 'netns']);
    const { links, stderr } = await linkOf(['link', 'appvm-catgirl']);
    expect(stderr).toBe('');
    const [link] = links;
    expect([link?.clientAttach, link?.providerAttach]).toEqual(['none', 'netns']);
    const netvm = await devices(world().vmNetns('netvm'));
    expect(netvm.get(link!.providerDevice)?.linkinfo?.info_kind).toBe('veth');
    expect((await devices(world().host)).get(link!.clientDevice)?.linkinfo?.info_kind).toBe('tun');
    await world().link(['unlink', 'netvm', '--forget']);
  });

  it('a provider recorded with two modes: each of its links keeps its own, a new one gets none on its side, and a warning says so; --attach VM=MODE settles it', async () => {
    const [lynx] = (await linkOf(['link', 'appvm-lynx', '--attach', 'netns'])).links;
    const [catgirl] = (await linkOf(['link', 'appvm-catgirl', '--attach', 'none'])).links;
    const lynxDevices = await deviceIndexes(lynx!, 'appvm-lynx');
    const catgirlDevices = await deviceIndexes(catgirl!, 'appvm-catgirl');
    // Re-run, the two as they are: nothing ambiguous is decided, nothing said.
    const rerun = await linkOf(['link', 'appvm-lynx', 'appvm-catgirl']);
    expect(rerun.stderr).toBe('');
    expect(rerun.links).toEqual([lynx, catgirl]);
    expect(await deviceIndexes(lynx!, 'appvm-lynx')).toEqual(lynxDevices);
    expect(await deviceIndexes(catgirl!, 'appvm-catgirl')).toEqual(catgirlDevices);

    const { links, stderr } = await linkOf(['link', 'appvm-0']);
    const [fresh] = links;
    expect([fresh?.clientAttach, fresh?.providerAttach]).toEqual(['none', 'none']);
    expect(stderr.split('\n').filter((line) => line !== '')).toEqual([
      expect.stringContaining("netvm's links are attached as none and netns on its side, so its mode is ambiguous: those links keep theirs, and appvm-0 -> netvm takes none; to attach netvm one way, link with --attach netvm=MODE"),
    ]);
    expect(await deviceIndexes(lynx!, 'appvm-lynx')).toEqual(lynxDevices);
    // Named, netvm gets that mode on the link of the run, and no warning.
    const named = await linkOf(['link', 'appvm-0', '--attach', 'netvm=netns']);
    expect(named.stderr).toBe('');
    expect([named.links[0]?.clientAttach, named.links[0]?.providerAttach]).toEqual(['none', 'netns']);
    await world().link(['unlink', 'netvm', '--forget']);
  });
});
