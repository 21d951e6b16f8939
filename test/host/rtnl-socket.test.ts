// The rtnl addon against the real kernel, in a namespace of its own: the addon opens its socket
// (and the tun device, for taps) inside that namespace, so this process's own is never touched.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeviceStep } from '../../host/device-plan.js';
import { ProgramWriter, decodeLinks } from '../../host/link-message.js';
import { PROGRAM_FORMAT, type RecordOutcome, RtnlError, RtnlSocket, assertProgramFormat } from '../../shared/rtnl-socket.js';
import { loadNativeAddon } from '../../shared/native-addon.js';
import { createHarness, describeNetns, type Harness, type Netns } from '../harness/index.js';
import { compiledFixture } from './vmm/fake-cloud-hypervisor-process.js';

/** A step without its namespace (the socket's is meant), for each kind of step. */
type StepHere<T = DeviceStep> = T extends unknown ? Omit<T, 'netns'> : never;

function programOf(steps: readonly StepHere[]) {
  const writer = new ProgramWriter();
  for (const step of steps) writer.step({ netns: null, ...step } as DeviceStep, new Map());
  return writer.finish();
}

const states = (outcomes: readonly RecordOutcome[]) => outcomes.map((outcome) => (outcome.state === 'failed' ? outcome.code : outcome.state));

/**
 * A Node process of its own (from dist) that runs `steps` (StepHere values, or queries of a device
 * by name) on a socket in the namespace at `nsPath`, keeping going, and prints each record's
 * [state or code, text]; run by `command` (e.g. strace's, ending with the node to run) with `env`.
 */
async function runInChild(nsPath: string, steps: readonly (StepHere | { query: string })[], command: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<[string, string?][]> {
  const socketModule = compiledFixture('shared/rtnl-socket', ['host/link-message']);
  const messageModule = compiledFixture('host/link-message', []);
  const script = `
    import { RtnlSocket } from ${JSON.stringify(socketModule)};
    import { ProgramWriter } from ${JSON.stringify(messageModule)};
    const writer = new ProgramWriter();
    for (const step of ${JSON.stringify(steps)}) {
      if ('query' in step) writer.getLink(step.query);
      else writer.step({ netns: null, ...step }, new Map());
    }
    const socket = RtnlSocket.open(${JSON.stringify(nsPath)});
    const outcomes = await socket.run(writer.finish(), true);
    socket.close();
    console.log(JSON.stringify(outcomes.map((outcome) => (outcome.state === 'failed' ? [outcome.code, outcome.text] : [outcome.state]))));`;
  const [program = process.execPath, ...args] = command;
  const { stdout } = await promisify(execFile)(program, [...args, '--input-type=module', '-e', script], { env });
  return JSON.parse(stdout) as [string, string?][];
}

interface IpLink {
  ifname: string;
  mtu: number;
  master?: string;
  flags: string[];
  address: string;
  linkinfo?: { info_kind?: string };
}

describeNetns('rtnl sockets in a namespace', () => {
  let harness: Harness;
  let ns: Netns;
  let socket: RtnlSocket;

  const ipLinks = async (): Promise<Map<string, IpLink>> => {
    const { stdout } = await ns.ip(['-d', '-j', 'link', 'show']);
    return new Map((JSON.parse(stdout) as IpLink[]).map((link) => [link.ifname, link]));
  };

  const indexOf = async (name: string): Promise<number> => {
    const [link] = JSON.parse((await ns.ip(['-j', 'link', 'show', 'dev', name])).stdout) as { ifindex: number }[];
    return link?.ifindex ?? -1;
  };

  beforeAll(async () => {
    harness = createHarness('rtnl');
    ns = await harness.namespace('kernel');
    socket = RtnlSocket.open(`/run/netns/${ns.name}`);
  });

  afterAll(async () => {
    socket?.close();
    await harness?.cleanup();
  });

  it('makes a bridge with two taps that joined it, as ip sees them', async () => {
    const outcomes = await socket.run(
      programOf([
        { op: 'add-bridge', name: 'tb1' },
        { op: 'add-tap', name: 'tc1' },
        { op: 'set', name: 'tc1', change: { mtu: 9000, master: 'tb1', up: true } },
        { op: 'add-tap', name: 'tp1' },
        { op: 'set', name: 'tp1', change: { mtu: 9000, master: 'tb1', up: true } },
        { op: 'set', name: 'tb1', change: { mtu: 9000, mac: '0a:b3:ec:80:00:01', up: true } },
      ]),
    );
    expect(states(outcomes)).toEqual(Array(6).fill('done'));
    const links = await ipLinks();
    expect(links.get('tb1')).toMatchObject({ mtu: 9000, address: '0a:b3:ec:80:00:01', linkinfo: { info_kind: 'bridge' } });
    expect(links.get('tb1')?.flags).toContain('UP');
    for (const tap of ['tc1', 'tp1']) {
      expect(links.get(tap)).toMatchObject({ mtu: 9000, master: 'tb1', linkinfo: { info_kind: 'tun' } });
      expect(links.get(tap)?.flags).toContain('UP');
    }
  });

  it('answers queries by name and dumps with what the kernel holds', async () => {
    const writer = new ProgramWriter().getLink('tc1').getLink('nosuch').dumpLinks();
    const [byName, missing, dump] = await socket.run(writer.finish(), true);
    expect(missing).toMatchObject({ state: 'failed', code: 'ENODEV' });
    const tc1 = byName?.state === 'done' ? decodeLinks(byName.reply) : [];
    const bridgeIndex = await indexOf('tb1');
    expect(tc1).toMatchObject([{ name: 'tc1', kind: 'tun', masterIndex: bridgeIndex, mtu: 9000, up: true }]);
    const names = dump?.state === 'done' ? decodeLinks(dump.reply).map((link) => link.name) : [];
    expect(names.sort()).toEqual([...(await ipLinks()).keys()].sort());
  });

  it('stops at the first refusal with the kernel\'s reason, or goes on when asked to', async () => {
    const program = programOf([
      { op: 'add-bridge', name: 'tb1' },
      { op: 'add-bridge', name: 'tb2' },
    ]);
    const stopped = await socket.run(program);
    expect(states(stopped)).toEqual(['EEXIST', 'not-run']);
    expect(stopped[0]).toMatchObject({ text: expect.stringMatching(/^File exists/) });
    expect((await ipLinks()).has('tb2')).toBe(false);
    expect(states(await socket.run(program, true))).toEqual(['EEXIST', 'done']);
    expect((await ipLinks()).has('tb2')).toBe(true);
  });

  it('joins a master made anew under the same name within one program to the new one (its index is looked up again after a delete)', async () => {
    // A delete goes by the index the plan saw: the bridge is there before the program.
    expect(states(await socket.run(programOf([{ op: 'add-bridge', name: 'tb9' }, { op: 'add-tap', name: 'tc9' }])))).toEqual(['done', 'done']);
    const outcomes = await socket.run(
      programOf([
        { op: 'set', name: 'tc9', change: { master: 'tb9' } },
        { op: 'delete', name: 'tb9', index: await indexOf('tb9') },
        { op: 'add-bridge', name: 'tb9' },
        { op: 'add-tap', name: 'tp9' },
        { op: 'set', name: 'tp9', change: { master: 'tb9' } },
        { op: 'set', name: 'tc9', change: { master: 'tb9' } },
      ]),
    );
    expect(states(outcomes)).toEqual(Array(6).fill('done'));
    const links = await ipLinks();
    expect(links.get('tp9')?.master).toBe('tb9');
    expect(links.get('tc9')?.master).toBe('tb9');
    for (const device of ['tc9', 'tp9', 'tb9']) await ns.ip(['link', 'del', device]);
  });

  it('refuses a join record whose message claims more bytes than the record holds (EINVAL, said), writing nothing past it', async () => {
    expect(states(await socket.run(programOf([{ op: 'add-bridge', name: 'tb8' }, { op: 'add-tap', name: 'tc8' }])))).toEqual(['done', 'done']);
    const { bytes, records } = programOf([{ op: 'set', name: 'tc8', change: { master: 'tb8' } }]);
    const forged = Uint8Array.from(bytes);
    const view = new DataView(forged.buffer);
    expect(view.getUint32(0, true)).toBe(3); // one join (ENSLAVE) record: kind, length, master's name, message
    view.setUint32(8 + 16, 0x7fff_0000, true); // the message's nlmsg_len
    const [outcome] = await socket.run({ bytes: forged, records });
    expect(outcome).toMatchObject({ state: 'failed', code: 'EINVAL', text: expect.stringMatching(/message length \(2147418112\) is not within it/) });
    expect((await ipLinks()).get('tc8')?.master).toBeUndefined();
    for (const device of ['tc8', 'tb8']) await ns.ip(['link', 'del', device]);
  });

  it('says which master is missing when a device cannot join it', async () => {
    const [outcome] = await socket.run(programOf([{ op: 'set', name: 'tc1', change: { master: 'nosuch' } }]));
    expect(outcome).toMatchObject({ state: 'failed', code: 'ENODEV', text: 'No such device: master nosuch' });
    expect((await ipLinks()).get('tc1')?.master).toBe('tb1');
  });

  it('joins a port to no master that is not a bridge (a veth, an ifb, a vxlan, loopback of no link kind under the name): refused, EOPNOTSUPP, naming the device and its kind', async () => {
    await ns.ip(['link', 'add', 'tk1', 'type', 'veth', 'peer', 'name', 'tk1peer']);
    await ns.ip(['link', 'add', 'tk2', 'type', 'ifb']);
    await ns.ip(['link', 'add', 'tk3', 'type', 'vxlan', 'id', '7', 'dstport', '4789']);
    await ns.ip(['tuntap', 'add', 'dev', 'tkp', 'mode', 'tap']);
    const masters = ['tk1', 'tk2', 'tk3', 'lo'];
    const outcomes = await socket.run(programOf(masters.map((master) => ({ op: 'set', name: 'tkp', change: { master } }))), true);
    const shown = [`of kind veth`, `of kind ifb`, `of kind vxlan`, `of no link kind (a physical one, say)`];
    const texts = await Promise.all(masters.map(async (master, index) => `Operation not supported: master ${master} (ifindex ${await indexOf(master)}) is a device ${shown[index]}, not a bridge`));
    expect(outcomes).toEqual(texts.map((text) => ({ state: 'failed', errno: expect.any(Number), code: 'EOPNOTSUPP', text })));
    expect((await ipLinks()).get('tkp')?.master).toBeUndefined();
    await ns.ip(['link', 'del', 'tk1']);
    for (const device of ['tk2', 'tk3', 'tkp']) await ns.ip(['link', 'del', device]);
  });

  it('joins no port to a device of another kind made under the bridge\'s name after a delete within the program (the name looked up again): refused, EOPNOTSUPP', async () => {
    expect(states(await socket.run(programOf([{ op: 'add-bridge', name: 'tb6' }, { op: 'add-tap', name: 'tc6' }])))).toEqual(['done', 'done']);
    const outcomes = await socket.run(
      programOf([
        { op: 'set', name: 'tc6', change: { master: 'tb6' } },
        { op: 'delete', name: 'tb6', index: await indexOf('tb6') },
        { op: 'add-tap', name: 'tb6' },
        { op: 'add-tap', name: 'tp6' },
        { op: 'set', name: 'tp6', change: { master: 'tb6' } },
      ]),
    );
    expect(states(outcomes)).toEqual([...Array(4).fill('done'), 'EOPNOTSUPP']);
    expect(outcomes[4]).toMatchObject({ text: `Operation not supported: master tb6 (ifindex ${await indexOf('tb6')}) is a device of kind tun, not a bridge` });
    expect((await ipLinks()).get('tp6')?.master).toBeUndefined();
    for (const device of ['tc6', 'tp6', 'tb6']) await ns.ip(['link', 'del', device]);
  });

  it('takes the kind from the lookup\'s answer: a bridge the kernel would take the port into, reported as a bond (a preload rewrites its IFLA_INFO_KIND), is refused', async () => {
    // This kernel has no bond or VRF (CONFIG_BONDING, CONFIG_NET_VRF), the kinds besides a bridge
    // that take ports: a bridge whose answer says bond stands for one. Joined, the port would be
    // the bond's.
    await ns.ip(['link', 'add', 'tg1', 'type', 'bridge']);
    await ns.ip(['tuntap', 'add', 'dev', 'tg2', 'mode', 'tap']);
    const dir = mkdtempSync(join(tmpdir(), 'sn-rtnl-kind-'));
    try {
      const shim = join(dir, 'disguise.so');
      writeFileSync(
        join(dir, 'shim.c'),
        `#define _GNU_SOURCE
#include <dlfcn.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
/* Each RTM_NEWLINK read of device $DISGUISE of kind bridge says bond instead (same padded length). */
static void disguise(void *buffer, ssize_t length) {
  const char *name = getenv("DISGUISE");
  int left = (int)length;
  for (struct nlmsghdr *message = buffer; name != NULL && NLMSG_OK(message, left); message = NLMSG_NEXT(message, left)) {
    if (message->nlmsg_type != RTM_NEWLINK) continue;
    int attributes = IFLA_PAYLOAD(message);
    struct rtattr *kind = NULL;
    int named = 0;
    for (struct rtattr *attribute = IFLA_RTA((struct ifinfomsg *)NLMSG_DATA(message)); RTA_OK(attribute, attributes); attribute = RTA_NEXT(attribute, attributes)) {
      if (attribute->rta_type == IFLA_IFNAME && strcmp(RTA_DATA(attribute), name) == 0) named = 1;
      if ((attribute->rta_type & NLA_TYPE_MASK) != IFLA_LINKINFO) continue;
      int inner = RTA_PAYLOAD(attribute);
      for (struct rtattr *nested = RTA_DATA(attribute); RTA_OK(nested, inner); nested = RTA_NEXT(nested, inner)) {
        if (nested->rta_type == IFLA_INFO_KIND) kind = nested;
      }
    }
    if (named && kind != NULL && RTA_PAYLOAD(kind) == 7 && memcmp(RTA_DATA(kind), "bridge", 7) == 0) {
      memcpy(RTA_DATA(kind), "bond\\0\\0", 7);
      kind->rta_len = RTA_LENGTH(5);
    }
  }
}
ssize_t recvfrom(int fd, void *buffer, size_t length, int flags, struct sockaddr *from, socklen_t *from_length) {
  static ssize_t (*real)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
  if (real == NULL) real = (ssize_t (*)(int, void *, size_t, int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "recvfrom");
  ssize_t received = real(fd, buffer, length, flags, from, from_length);
  if (received > 0 && buffer != NULL && !(flags & MSG_PEEK)) disguise(buffer, received < (ssize_t)length ? received : (ssize_t)length);
  return received;
}
`,
      );
      await promisify(execFile)('cc', ['-shared', '-fPIC', '-O2', '-o', shim, join(dir, 'shim.c'), '-ldl']);
      const join2: StepHere = { op: 'set', name: 'tg2', change: { master: 'tg1' } };
      const disguised = await runInChild(`/run/netns/${ns.name}`, [join2], [process.execPath], { ...process.env, LD_PRELOAD: shim, DISGUISE: 'tg1' });
      expect(disguised).toEqual([['EOPNOTSUPP', `Operation not supported: master tg1 (ifindex ${await indexOf('tg1')}) is a device of kind bond, not a bridge`]]);
      expect((await ipLinks()).get('tg2')?.master).toBeUndefined();
      // The same join, its answer as the kernel gave it: done.
      expect(await runInChild(`/run/netns/${ns.name}`, [join2], [process.execPath], { ...process.env, LD_PRELOAD: shim })).toEqual([['done']]);
      expect((await ipLinks()).get('tg2')?.master).toBe('tg1');
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await ns.ip(['link', 'del', 'tg2']);
      await ns.ip(['link', 'del', 'tg1']);
    }
  });

  it('takes 15-byte names and refuses 16-byte ones without cutting them short', async () => {
    const fifteen = 'a'.repeat(15);
    const sixteen = 'b'.repeat(16);
    const outcomes = await socket.run(
      programOf([
        { op: 'add-tap', name: fifteen },
        { op: 'add-tap', name: sixteen },
        { op: 'add-bridge', name: `c${'c'.repeat(15)}` },
      ]),
      true,
    );
    expect(states(outcomes)).toEqual(['done', 'EINVAL', expect.stringMatching(/^E/)]);
    // The kernel explains its refusal of the too-long bridge name (an extended ack).
    expect(outcomes[2]).toMatchObject({ state: 'failed', text: expect.stringMatching(/: ./) });
    const names = [...(await ipLinks()).keys()];
    expect(names).toContain(fifteen);
    expect(names.filter((name) => name.startsWith('bbb') || name.startsWith('ccc'))).toEqual([]);
  });

  it("turns IPv6 off on a device of the socket's namespace (only there), and reads it back", async () => {
    const sysctl = async (key: string) => (await ns.exec(['cat', `/proc/sys/net/ipv6/conf/${key}/disable_ipv6`])).stdout.trim();
    const ownAll = readFileSync('/proc/sys/net/ipv6/conf/all/disable_ipv6', 'utf8');
    await ns.ip(['link', 'add', 'tb9', 'type', 'bridge']);
    await ns.ip(['link', 'set', 'tb9', 'up']);
    // Below an MTU of 1280 the kernel takes IPv6 off a device itself: nothing to do there.
    await ns.ip(['link', 'add', 'tb8', 'mtu', '1000', 'type', 'bridge']);
    const outcomes = await socket.run(
      programOf([
        { op: 'add-tap', name: 'tc9' },
        { op: 'disable-ipv6', name: 'tc9' },
        { op: 'disable-ipv6', name: 'tb8' },
        { op: 'disable-ipv6', name: 'nosuch' },
        // Never the namespace-wide settings, whatever a program says.
        { op: 'disable-ipv6', name: 'all' },
        { op: 'disable-ipv6', name: 'default' },
        { op: 'disable-ipv6', name: '..' },
      ]),
      true,
    );
    expect(states(outcomes)).toEqual(['done', 'done', 'done', 'ENODEV', 'EINVAL', 'EINVAL', 'EINVAL']);
    expect([await sysctl('tc9'), await sysctl('tb9'), await sysctl('all'), await sysctl('default')]).toEqual(['1', '0', '0', '0']);
    const [tap, bridge] = await socket.run(new ProgramWriter().getLink('tc9').getLink('tb9').finish());
    expect(tap?.state === 'done' ? decodeLinks(tap.reply)[0]?.ipv6 : undefined).toBe(false);
    expect(bridge?.state === 'done' ? decodeLinks(bridge.reply)[0]?.ipv6 : undefined).toBe(true);
    // Turning it off on a device that is up drops the addresses it has.
    await ns.ip(['addr', 'add', 'fe80::9/64', 'dev', 'tb9']);
    await socket.run(programOf([{ op: 'disable-ipv6', name: 'tb9' }]));
    expect((await ns.ip(['-6', 'addr', 'show', 'dev', 'tb9'])).stdout).toBe('');
    // This process's namespace was not touched.
    expect(readFileSync('/proc/sys/net/ipv6/conf/all/disable_ipv6', 'utf8')).toBe(ownAll);
    expect(existsSync('/proc/sys/net/ipv6/conf/tc9')).toBe(false);
  });

  it('turns IPv6 off on a device the plan saw by its index, under the name it has now; one gone fails saying so', async () => {
    await ns.ip(['link', 'add', 'ti1', 'type', 'bridge']);
    const index = await indexOf('ti1');
    await ns.ip(['link', 'set', 'dev', 'ti1', 'name', 'ti2']);
    await ns.ip(['link', 'add', 'ti1', 'type', 'bridge']);
    const outcomes = await socket.run(
      programOf([
        { op: 'disable-ipv6', name: 'ti1', index },
        { op: 'disable-ipv6', name: 'tgone', index: 0x7fff_fff0 },
      ]),
      true,
    );
    expect(outcomes).toEqual([
      { state: 'done', reply: expect.anything() },
      { state: 'failed', errno: expect.any(Number), code: 'ENODEV', text: 'No such device: device tgone (ifindex 2147483632), there when the plan looked, is gone' },
    ]);
    const sysctl = async (name: string) => (await ns.exec(['cat', `/proc/sys/net/ipv6/conf/${name}/disable_ipv6`])).stdout.trim();
    expect([await sysctl('ti2'), await sysctl('ti1')]).toEqual(['1', '0']);
  });

  it('sets addrgenmode none with the message that enslaves a port and brings it up: no address comes with its carrier', async () => {
    await ns.ip(['link', 'add', 'tb7', 'type', 'bridge']);
    await ns.ip(['link', 'add', 'tv7', 'type', 'veth', 'peer', 'name', 'tw7']);
    await ns.ip(['link', 'add', 'tv6', 'type', 'veth', 'peer', 'name', 'tw6']);
    const outcomes = await socket.run(
      programOf([
        { op: 'set', name: 'tv7', change: { master: 'tb7', up: true, addrGenModeNone: true } },
        // The kernel refuses IPv6 settings for a device that has no IPv6 once its MTU is set.
        { op: 'set', name: 'tv6', change: { mtu: 1000, up: true, addrGenModeNone: true } },
      ]),
      true,
    );
    expect(states(outcomes)).toEqual(['done', 'EAFNOSUPPORT']);
    // The far end comes up: tv7 has a carrier now, and with addrgenmode eui64 a link-local address.
    await ns.ip(['link', 'set', 'tw7', 'up']);
    expect((await ipLinks()).get('tv7')).toMatchObject({ master: 'tb7', flags: expect.arrayContaining(['UP', 'LOWER_UP']) });
    expect((await ns.ip(['-6', 'addr', 'show', 'dev', 'tv7'])).stdout).toBe('');
    const [port] = await socket.run(new ProgramWriter().getLink('tv7').finish());
    expect(port?.state === 'done' ? decodeLinks(port.reply)[0] : undefined).toMatchObject({ ipv6: true, ipv6LinkLocal: false });
  });

  it('makes only new taps: a tap or other device of that name is refused, not joined (it is no device of this run)', async () => {
    await ns.ip(['tuntap', 'add', 'dev', 'tx1', 'mode', 'tap']);
    await ns.ip(['link', 'add', 'tx2', 'type', 'bridge']);
    const outcomes = await socket.run(programOf([{ op: 'add-tap', name: 'tx1' }, { op: 'add-tap', name: 'tx2' }]), true);
    expect(states(outcomes)).toEqual(['EBUSY', 'EBUSY']);
    expect(outcomes[0]).toMatchObject({ text: 'Device or resource busy: a device of that name exists' });
    expect((await ipLinks()).get('tx2')?.linkinfo?.info_kind).toBe('bridge');
  });

  it("acts on no device by another device's altname: a tap of that name is not made, a master of that name not joined, IPv6 of that name not its business; each says whose altname it is", async () => {
    await ns.ip(['link', 'add', 'ta1', 'type', 'bridge']);
    await ns.ip(['link', 'property', 'add', 'dev', 'ta1', 'altname', 'taalias']);
    await ns.ip(['tuntap', 'add', 'dev', 'ta2', 'mode', 'tap']);
    const outcomes = await socket.run(
      programOf([
        { op: 'add-tap', name: 'taalias' },
        { op: 'set', name: 'ta2', change: { master: 'taalias' } },
        { op: 'disable-ipv6', name: 'taalias' },
      ]),
      true,
    );
    expect(outcomes).toEqual([
      { state: 'failed', errno: expect.any(Number), code: 'EBUSY', text: 'Device or resource busy: device ta1 has that name as an altname' },
      { state: 'failed', errno: expect.any(Number), code: 'ENODEV', text: "No such device: master taalias is an altname of device ta1, not a device's own name" },
      { state: 'failed', errno: expect.any(Number), code: 'ENODEV', text: "No such device: taalias is an altname of device ta1, not a device's own name" },
    ]);
    const links = await ipLinks();
    expect(links.get('ta2')?.master).toBeUndefined();
    expect(links.has('taalias')).toBe(false);
  });

  it('looks a master and a device without IPv6 settings up by route netlink, not by a device ioctl (SIOCGIF*, for which the kernel first tries to load a module named after a missing name: dev_load runs modprobe), as strace shows; missing, they fail as before', async () => {
    // Run from dist, in a process of its own under strace (ptrace: nothing outside it changes).
    await ns.ip(['tuntap', 'add', 'dev', 'ts1', 'mode', 'tap']);
    await ns.ip(['link', 'add', 'tsb1', 'type', 'bridge']);
    const dir = mkdtempSync(join(tmpdir(), 'sn-rtnl-strace-'));
    try {
      const trace = join(dir, 'trace');
      const outcomes = await runInChild(
        `/run/netns/${ns.name}`,
        [
          // Deleted meanwhile (by someone else): the master, a device to turn IPv6 off on.
          { op: 'set', name: 'ts1', change: { master: 'tsgone' } },
          { op: 'disable-ipv6', name: 'tsgone' },
          // There: both work as ever.
          { op: 'set', name: 'ts1', change: { master: 'tsb1' } },
          { op: 'disable-ipv6', name: 'ts1' },
          { op: 'add-tap', name: 'ts2' },
        ],
        ['strace', '-f', '-qq', '-e', 'trace=ioctl', '-o', trace, process.execPath],
      );
      expect(outcomes).toEqual([['ENODEV', 'No such device: master tsgone'], ['ENODEV', 'No such device'], ['done'], ['done'], ['done']]);
      expect((await ipLinks()).get('ts1')?.master).toBe('tsb1');
      const calls = readFileSync(trace, 'utf8').split('\n');
      // The trace saw the run's thread: the tap made (TUNSETIFF on /dev/net/tun) ...
      expect(calls.filter((line) => /\bioctl\(\d+, TUNSETIFF\b/.test(line))).toHaveLength(1);
      // ... and no socket device ioctl (SIOC*, or the 0x89xx range where strace has no name).
      expect(calls.filter((line) => /\bioctl\(\d+, (SIOC|0x89[0-9a-f]{2}\b)/i.test(line))).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("reads off (discards) an answer it has no memory for and says so, so that the next request is answered: realloc made to fail for the addon's receive buffer", async () => {
    // A device whose answer passes 64 KiB (the buffer's first size): hundreds of long altnames.
    await ns.ip(['link', 'add', 'tbig', 'type', 'bridge']);
    const altnames = Array.from({ length: 520 }, (_, index) => `alt${String(index).padStart(3, '0')}${'x'.repeat(121)}`);
    await ns.exec(['ip', '-force', '-batch', '-'], { input: altnames.map((name) => `link property add dev tbig altname ${name}\n`).join(''), allowFailure: true });
    const dir = mkdtempSync(join(tmpdir(), 'sn-rtnl-nomem-'));
    try {
      // A preload whose realloc fails for the rtnl addon's calls above 64 KiB (its receive buffer
      // growing; its kept replies start at 64 KiB): malloc failing as it would with no memory.
      const shim = join(dir, 'no-big-realloc.so');
      writeFileSync(
        join(dir, 'shim.c'),
        `#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <string.h>
void *realloc(void *pointer, size_t size) {
  static void *(*real)(void *, size_t);
  if (real == NULL) real = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
  Dl_info caller;
  if (size > 65536 && dladdr(__builtin_return_address(0), &caller) != 0 && caller.dli_fname != NULL) {
    size_t length = strlen(caller.dli_fname);
    if (length >= 10 && strcmp(caller.dli_fname + length - 10, "/rtnl.node") == 0) {
      errno = ENOMEM;
      return NULL;
    }
  }
  return real(pointer, size);
}
`,
      );
      await promisify(execFile)('cc', ['-shared', '-fPIC', '-O2', '-o', shim, join(dir, 'shim.c'), '-ldl']);
      const small: StepHere = { op: 'set', name: 'tb1', change: { up: true } };
      // The big answer (to a query, then to the lookup of a master), each followed by a request
      // answered by a small one.
      const outcomes = await runInChild(`/run/netns/${ns.name}`, [{ query: 'tbig' }, small, { op: 'set', name: 'tc1', change: { master: 'tbig' } }, small], [process.execPath], {
        ...process.env,
        LD_PRELOAD: shim,
      });
      const discarded = "no memory to read the kernel's answer of \\d+ bytes, which was discarded";
      expect(outcomes).toEqual([
        ['ENOMEM', expect.stringMatching(new RegExp(`^Cannot allocate memory: ${discarded}$`))],
        ['done'],
        ['ENOMEM', expect.stringMatching(new RegExp(`^Cannot allocate memory: master tbig: ${discarded}$`))],
        ['done'],
      ]);
      expect((await ipLinks()).get('tc1')?.master).toBe('tb1');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('gives up on a dump the kernel cannot make a part of (a receive error, ENOBUFS), saying whole why: the no-op that would bring it on not sent, or 16 nudges in a row in vain', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sn-rtnl-nudge-'));
    try {
      // A preload: once a dump is sent on a netlink socket, each read that waits for a datagram
      // fails as the kernel failing to make the dump's part would (ENOBUFS); NUDGE=unsent also
      // makes the no-op (NLMSG_NOOP) fail to be sent (ENOBUFS), NUDGE=sent lets it go out.
      const shim = join(dir, 'dump-enobufs.so');
      writeFileSync(
        join(dir, 'shim.c'),
        `#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <linux/netlink.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
static int armed;
ssize_t sendto(int fd, const void *buffer, size_t length, int flags, const struct sockaddr *to, socklen_t to_length) {
  static ssize_t (*real)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
  if (real == NULL) real = (ssize_t (*)(int, const void *, size_t, int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "sendto");
  if (to != NULL && to->sa_family == AF_NETLINK && length >= sizeof(struct nlmsghdr)) {
    const struct nlmsghdr *header = buffer;
    if ((header->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP) armed = 1;
    const char *nudge = getenv("NUDGE");
    if (header->nlmsg_type == NLMSG_NOOP && nudge != NULL && strcmp(nudge, "unsent") == 0) {
      errno = ENOBUFS;
      return -1;
    }
  }
  return real(fd, buffer, length, flags, to, to_length);
}
ssize_t recvfrom(int fd, void *buffer, size_t length, int flags, struct sockaddr *from, socklen_t *from_length) {
  static ssize_t (*real)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
  if (real == NULL) real = (ssize_t (*)(int, void *, size_t, int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "recvfrom");
  if (armed && (flags & MSG_PEEK) && !(flags & MSG_DONTWAIT)) {
    errno = ENOBUFS;
    return -1;
  }
  return real(fd, buffer, length, flags, from, from_length);
}
`,
      );
      await promisify(execFile)('cc', ['-shared', '-fPIC', '-O2', '-o', shim, join(dir, 'shim.c'), '-ldl']);
      const socketModule = compiledFixture('shared/rtnl-socket', ['host/link-message']);
      // A dump of the links (RTM_GETLINK, NLM_F_DUMP): its header and an empty ifinfomsg.
      const script = `
        import { RtnlSocket, requestProgram } from ${JSON.stringify(socketModule)};
        const message = new Uint8Array(32);
        const view = new DataView(message.buffer);
        view.setUint32(0, 32, true);
        view.setUint16(4, 18, true);
        view.setUint16(6, 0x301, true);
        const socket = RtnlSocket.open(${JSON.stringify(`/run/netns/${ns.name}`)});
        const [outcome] = await socket.runMarked(requestProgram([message]));
        socket.close();
        console.log(JSON.stringify([outcome.state === 'failed' ? outcome.code : outcome.state, outcome.state === 'failed' ? outcome.text : '', outcome.marks.failure]));`;
      const dump = async (nudge: string): Promise<unknown> =>
        JSON.parse((await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, LD_PRELOAD: shim, NUDGE: nudge } })).stdout);
      const said = 'No buffer space available: the kernel could not make a part of the dump';
      expect(await dump('unsent')).toEqual(['ENOBUFS', `${said}, and the no-op to bring it on could not be sent (No buffer space available)`, 'receive']);
      expect(await dump('sent')).toEqual(['ENOBUFS', `${said} 16 times in a row`, 'receive']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("lets go of the socket's handle where a run cannot be queued (the N-API calls after the handle is held fail): the handle is collected and its descriptor closed", async () => {
    // A build of the addon in which one of those calls fails, as RTNL_FAIL says: each wrapped by
    // a macro of a header included first (node_api.h is guarded, so only the addon's calls are).
    const dir = mkdtempSync(join(tmpdir(), 'sn-rtnl-nocall-'));
    try {
      writeFileSync(
        join(dir, 'failing.h'),
        `#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <stdlib.h>
#include <string.h>
static int failing(const char *call) { const char *named = getenv("RTNL_FAIL"); return named != NULL && strcmp(named, call) == 0; }
static napi_status failing_create_promise(napi_env env, napi_deferred *deferred, napi_value *promise) {
  return failing("promise") ? napi_generic_failure : napi_create_promise(env, deferred, promise);
}
static napi_status failing_create_string(napi_env env, const char *text, size_t length, napi_value *value) {
  return failing("string") && strcmp(text, "rtnl.run") == 0 ? napi_generic_failure : napi_create_string_utf8(env, text, length, value);
}
static napi_status failing_create_work(napi_env env, napi_value resource, napi_value name, napi_async_execute_callback execute, napi_async_complete_callback complete, void *data, napi_async_work *work) {
  return failing("work") ? napi_generic_failure : napi_create_async_work(env, resource, name, execute, complete, data, work);
}
static napi_status failing_queue_work(napi_env env, napi_async_work work) {
  return failing("queue") ? napi_generic_failure : napi_queue_async_work(env, work);
}
#define napi_create_promise failing_create_promise
#define napi_create_string_utf8 failing_create_string
#define napi_create_async_work failing_create_work
#define napi_queue_async_work failing_queue_work
`,
      );
      const addonPath = join(dir, 'rtnl.node');
      const native = join(import.meta.dirname, '../../shared/native');
      // The running Node's own headers (<prefix>/include/node: /usr for a distribution's package,
      // /usr/local or nvm's directory for one from nodejs.org).
      const headers = join(dirname(process.execPath), '..', 'include', 'node');
      await promisify(execFile)('cc', ['-shared', '-fPIC', '-O2', `-I${headers}`, `-I${native}`, '-include', join(dir, 'failing.h'), '-o', addonPath, join(native, 'rtnl.c')]);
      // A run (of no records) on a socket the script then drops without closing it; the
      // finalizer closes an unclosed one's descriptor once the handle is collected.
      const script = `
        const addon = { exports: {} };
        process.dlopen(addon, ${JSON.stringify(addonPath)});
        const { open, run } = addon.exports;
        const collected = [];
        const registry = new FinalizationRegistry((what) => collected.push(what));
        const sockets = () => fs.readdirSync('/proc/self/fd').filter((fd) => { try { return fs.readlinkSync('/proc/self/fd/' + fd).startsWith('socket:'); } catch { return false; } }).length;
        const before = sockets();
        let handle = open(${JSON.stringify(`/run/netns/${ns.name}`)});
        let outcome;
        try { await run(handle, new Uint8Array(0), false); outcome = 'ran'; } catch (error) { outcome = error.code + ': ' + error.message; }
        registry.register(handle, 'handle');
        handle = undefined;
        for (let tries = 0; tries < 20 && collected.length === 0; tries++) {
          globalThis.gc();
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        console.log(JSON.stringify({ outcome, collected, socketsLeft: sockets() - before }));`;
      const outcomes: Record<string, unknown> = {};
      for (const call of ['none', 'promise', 'string', 'work', 'queue']) {
        const { stdout } = await promisify(execFile)(process.execPath, ['--expose-gc', '--input-type=module', '-e', `import fs from 'node:fs';${script}`], { env: { ...process.env, RTNL_FAIL: call } });
        outcomes[call] = JSON.parse(stdout);
      }
      const failed = (call: string) => ({ outcome: `EINTERNAL: rtnl: ${call} failed`, collected: ['handle'], socketsLeft: 0 });
      expect(outcomes).toEqual({
        none: { outcome: 'ran', collected: ['handle'], socketsLeft: 0 },
        promise: failed('napi_create_promise'),
        string: failed('napi_create_string_utf8'),
        work: failed('napi_create_async_work'),
        queue: failed('napi_queue_async_work'),
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('puts devices in a device group and deletes the group with one request: those devices go, with a veth\'s peer, and nothing else', async () => {
    await ns.ip(['link', 'add', 'tg1', 'type', 'bridge']);
    await ns.ip(['tuntap', 'add', 'dev', 'tg2', 'mode', 'tap']);
    await ns.ip(['link', 'add', 'tg3', 'type', 'veth', 'peer', 'name', 'tg4']);
    await ns.ip(['link', 'add', 'tg5', 'type', 'bridge']);
    const group = 0x7000_0001;
    const marking = new ProgramWriter();
    for (const name of ['tg1', 'tg2', 'tg3']) marking.setGroup(await indexOf(name), group);
    const outcomes = await socket.run(marking.dumpLinks().finish(), true);
    expect(states(outcomes)).toEqual(['done', 'done', 'done', 'done']);
    const dump = outcomes[3];
    const grouped = dump?.state === 'done' ? decodeLinks(dump.reply).filter((link) => link.group === group).map((link) => link.name) : [];
    expect(grouped.sort()).toEqual(['tg1', 'tg2', 'tg3']);
    expect(states(await socket.run(new ProgramWriter().deleteGroup(group).finish()))).toEqual(['done']);
    const left = [...(await ipLinks()).keys()];
    expect(left.filter((name) => name.startsWith('tg'))).toEqual(['tg5']);
    // An empty group: nothing to delete.
    expect(states(await socket.run(new ProgramWriter().deleteGroup(group).finish()))).toEqual(['ENODEV']);
  });

  it('deletes by index, and reports a device already gone as ENODEV', async () => {
    const index = await indexOf('tb2');
    const outcomes = await socket.run(new ProgramWriter().deleteByIndex(index).deleteByIndex(index).finish(), true);
    expect(states(outcomes)).toEqual(['done', 'ENODEV']);
    expect((await ipLinks()).has('tb2')).toBe(false);
  });

  it("goes on past a delete step whose device is gone (the kernel's ENODEV, said), in a program that stops at a failure; any other ENODEV stops it, a removal's delete by index too", async () => {
    await ns.ip(['link', 'add', 'tz1', 'type', 'bridge']);
    const gone = await indexOf('tz1');
    await ns.ip(['link', 'del', 'tz1']);
    const program = programOf([
      { op: 'delete', name: 'tz1', index: gone },
      { op: 'add-bridge', name: 'tz2' },
      { op: 'delete', name: 'tz1', index: gone },
      // By the index it had: no device has it, and this step is not one that makes it gone.
      { op: 'set', name: 'tz1', index: gone, change: { mtu: 1400 } },
      { op: 'add-bridge', name: 'tz3' },
    ]);
    const outcomes = await socket.runMarked(program);
    expect(outcomes.map((outcome) => [outcome.state === 'failed' ? outcome.code : outcome.state, outcome.marks.failure])).toEqual([
      ['ENODEV', 'refused'],
      ['done', null],
      ['ENODEV', 'refused'],
      ['ENODEV', 'refused'],
      ['not-run', null],
    ]);
    expect(outcomes[0]).toMatchObject({ text: expect.stringMatching(/^No such device/) });
    expect([(await ipLinks()).has('tz2'), (await ipLinks()).has('tz3')]).toEqual([true, false]);
    expect(states(await socket.run(new ProgramWriter().deleteByIndex(gone).deleteByIndex(await indexOf('tz2')).finish()))).toEqual(['ENODEV', 'not-run']);
    await ns.ip(['link', 'del', 'tz2']);
  });

  it('fails a request the kernel leaves unanswered after 5 s, and the one behind it unsent, each saying what happened (not "Connection timed out")', async () => {
    await ns.ip(['link', 'add', 'tt1', 'type', 'bridge']);
    const index = await indexOf('tt1');
    const { bytes, records } = new ProgramWriter().setGroup(index, 9).setGroup(index, 8).finish();
    // The first message's nlmsg_len past its datagram: the kernel passes it over, answering nothing.
    const cut = Uint8Array.from(bytes);
    const view = new DataView(cut.buffer);
    view.setUint32(8, view.getUint32(8, true) + 4, true);
    const outcomes = await socket.runMarked({ bytes: cut, records }, true);
    expect(outcomes.map((outcome) => (outcome.state === 'failed' ? [outcome.code, outcome.text, outcome.marks.failure] : [outcome.state]))).toEqual([
      ['ETIMEDOUT', 'no answer from the kernel within 5 s', 'timed-out'],
      ['ETIMEDOUT', 'not sent: the kernel left an earlier request of its batch unanswered', 'not-sent'],
    ]);
    expect(JSON.parse((await ns.ip(['-j', 'link', 'show', 'dev', 'tt1'])).stdout)).toMatchObject([{ group: 'default' }]);
    // The socket goes on: the next request is answered.
    expect(states(await socket.run(new ProgramWriter().setGroup(index, 8).finish()))).toEqual(['done']);
  });

  it('opens in a namespace named whole or not at all: a path with a NUL inside, or cut short at a whole character, opens nothing', () => {
    const path = `/run/netns/${ns.name}`;
    // Before, the copy into C stopped there and opened the namespace all the same.
    expect(() => RtnlSocket.open(`${path}\0x`)).toThrow(expect.objectContaining({ name: 'RtnlError', message: expect.stringContaining('without NUL') }));
    const padded = `${'/'.repeat(4094 - path.length + 1)}${path.slice(1)}`;
    expect(Buffer.byteLength(padded)).toBe(4094);
    const whole = RtnlSocket.open(padded);
    expect(whole.namespace()).toEqual(socket.namespace());
    whole.close();
    expect(() => RtnlSocket.open(`${padded}\u{1F600}`)).toThrow(expect.objectContaining({ name: 'RtnlError', message: expect.stringContaining('shorter than 4096 bytes') }));
  });

  it("says which namespace it is in: that of the namespace file it was opened by (its nsfs device and inode), another namespace's differing; none for the caller's own", async () => {
    const { dev, ino } = statSync(`/run/netns/${ns.name}`);
    const { cookie } = socket.namespace() ?? { cookie: null };
    expect(socket.namespace()).toEqual({ dev, ino, cookie: expect.any(Number) as number });
    const other = await harness.namespace('other');
    const elsewhere = RtnlSocket.open(`/run/netns/${other.name}`);
    try {
      const { dev: otherDev, ino: otherIno } = statSync(`/run/netns/${other.name}`);
      expect(elsewhere.namespace()).toEqual({ dev: otherDev, ino: otherIno, cookie: expect.any(Number) as number });
      expect(otherIno).not.toBe(ino);
      // The cookie is the namespace's, never another's. (Not in order of making: a namespace made
      // later had the smaller one in one run here.)
      expect(cookie).toEqual(expect.any(Number));
      expect(elsewhere.namespace()?.cookie).not.toBe(cookie);
    } finally {
      elsewhere.close();
    }
    // Only opened (a socket changes nothing): the caller's namespace has no file to tell it by.
    const own = RtnlSocket.open(null);
    try {
      expect(own.namespace()).toBeNull();
    } finally {
      own.close();
    }
    expect(() => elsewhere.namespace()).toThrow(expect.objectContaining({ code: 'EBADF' }) as Error);
  });

  it('says clearly when the namespace does not exist, and refuses use after close', async () => {
    expect(() => RtnlSocket.open(`/run/netns/${ns.name}-missing`)).toThrow(RtnlError);
    try {
      RtnlSocket.open(`/run/netns/${ns.name}-missing`);
    } catch (error) {
      expect(error).toMatchObject({ kind: 'socket', code: 'ENOENT' });
    }
    const closed = RtnlSocket.open(`/run/netns/${ns.name}`);
    closed.close();
    await expect(closed.run(new ProgramWriter().dumpLinks().finish())).rejects.toMatchObject({ code: 'EBADF' });
  });
});

describe('the rtnl addon and this code agreeing on the program format', () => {
  it('the built addon reads the format this code writes', () => {
    const addon = loadNativeAddon<{ programFormat?: number }>(import.meta.url, 'rtnl.node');
    expect(addon?.programFormat).toBe(PROGRAM_FORMAT);
  });

  it('an addon built from other sources (no format, or another) is refused on one line saying to build, not run', () => {
    expect(() => assertProgramFormat(PROGRAM_FORMAT)).not.toThrow();
    for (const [format, its] of [[undefined, 'an older format'], [PROGRAM_FORMAT - 1, `format ${PROGRAM_FORMAT - 1}`]] as const) {
      expect(() => assertProgramFormat(format)).toThrow(
        expect.objectContaining({
          name: 'RtnlError',
          kind: 'addon-stale',
          message: `the rtnl addon (build/Release/rtnl.node) was built from other sources than this code (it reads ${its}, this code writes format ${PROGRAM_FORMAT}): run npm run build`,
        }),
      );
    }
  });
});
