// The DHCP server against what goes wrong on a provider: a link socket that fails (reopened on
// its own, with backoff), one that cannot be opened, a link gone from the kernel, and a client
// VM flooding its link with requests (rate-limited per link). Real clients (busybox udhcpc) get
// their leases throughout.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type ClientId, clientId } from '../../../shared/client-id.js';
import { clientIpTextOf } from '../../../shared/client-ip.js';
import { clientMacOf } from '../../../shared/link-mac.js';
import type { DhcpLink } from '../../../guest/dhcp/dhcp-server.js';
import { LINK_REQUEST_LIMIT, SOCKET_RETRY } from '../../../guest/dhcp/dhcp-server.js';
import { MAX_MESSAGE_LENGTH, encodeDhcpPacket } from '../../../guest/dhcp/dhcp-packet.js';
import { MESSAGE_TYPE, OPTION } from '../../../guest/dhcp/option-code.js';
import { createHarness, describeNetns, eventually, type Harness, type Netns, type NetnsProcess, type ProcessExit } from '../../harness/index.js';
import { buildTopology, clientLink, clientNetns, linksActive, linksOf, providerIfname, remakeLink, type DhcpTopology } from './dhcp-topology.js';
import { type ServerStats, ServerFixture, failLinkSocket, requireBuild, startProbeAsBoundClient } from './dhcp-server-fixture.js';

/** busybox udhcpc with Debian's default.script, in a PID namespace: its exit (undefined if it ran out of time). */
async function udhcpc(ns: Netns, tries: number): Promise<{ exit: ProcessExit | undefined; stderr: string }> {
  const run = ns.spawn(['udhcpc', '-f', '-q', '-n', '-t', String(tries), '-T', '1', '-i', 'eth0', '-s', '/etc/udhcpc/default.script'], { pidns: true });
  const exit = await Promise.race([run.wait(), new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), (tries + 4) * 1000))]);
  await run.kill('SIGKILL', 0);
  return { exit, stderr: run.stderr };
}

async function addresses(ns: Netns): Promise<string[]> {
  const { stdout } = await ns.exec(['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
  return [...stdout.matchAll(/inet (\S+)/g)].map((match) => match[1] ?? '');
}

function counter(stats: ServerStats, name: string): number {
  return stats.counters[name] ?? 0;
}

/** The server's log lines about `ifname` at `level` (pino's number) containing `text`. */
function logLines(server: ServerFixture, ifname: string, level: number, text: string): string[] {
  return server.process.stderr.split('\n').filter((line) => line.includes(`"ifname":"${ifname}"`) && line.includes(`"level":${level}`) && line.includes(text));
}

const WARN = 40;
const ERROR = 50;

const REOPENED = clientId(0x0701);
const LATE = clientId(0x0702);
const GONE = clientId(0x0703);
const DROPPED = clientId(0x0704);
const SWAPPED = clientId(0x0705);
const ALL = [REOPENED, LATE, GONE, DROPPED, SWAPPED];

describeNetns('DHCP server reopening its link sockets on its own', () => {
  let harness: Harness;
  let topology: DhcpTopology;
  let server: ServerFixture;

  beforeAll(async () => {
    requireBuild();
    harness = createHarness('dhcpretry');
    topology = await buildTopology(harness, ALL);
    await linksActive(topology, ALL);
    // LATE is not served yet: a later setLinks adds it.
    server = await ServerFixture.start(topology.provider, topology.links.filter((link) => link.id !== LATE), 600);
  });

  afterAll(async () => {
    await server?.stop();
    await harness?.cleanup();
  });

  const client = (id: ClientId): Netns => clientNetns(topology, id);
  const linkOf = (id: ClientId): DhcpLink => clientLink(topology, id);

  it('reopens a link socket that failed, after a second, and a client then gets its lease without any setLinks', async () => {
    const { pid } = await server.stats();
    const { ifname } = linkOf(REOPENED);
    await failLinkSocket(topology.provider, pid, ifname, clientIpTextOf(REOPENED));
    await eventually('the socket error', async () => counter(await server.stats(), 'socketErrors') === 1, 5000);
    // The client starts at once: what it sends before the socket is reopened goes unanswered.
    const { exit, stderr } = await udhcpc(client(REOPENED), 8);
    expect(exit, stderr).toMatchObject({ code: 0 });
    expect(await addresses(client(REOPENED))).toEqual([`${clientIpTextOf(REOPENED)}/32`]);
    const stats = await server.stats();
    expect(counter(stats, 'socketRetries')).toBe(1);
    expect(stats.leases.find((lease) => lease.id === REOPENED)?.state).toBe('bound');
    // Logged once, saying it is being reopened.
    expect(logLines(server, ifname, ERROR, 'DHCP socket failed')).toHaveLength(1);
  });

  it('goes on with the backoff, not from its start, when a reopened socket fails again soon', async () => {
    const { pid } = await server.stats();
    const { ifname } = linkOf(REOPENED);
    // Reopened by the test above seconds ago: well within SOCKET_RETRY.maxMs.
    await failLinkSocket(topology.provider, pid, ifname, clientIpTextOf(REOPENED));
    await eventually('the second socket error', async () => counter(await server.stats(), 'socketErrors') === 2, 5000);
    const failures = logLines(server, ifname, ERROR, 'DHCP socket failed');
    expect(failures).toHaveLength(2);
    expect(failures[1]).toContain(`"retryInMs":${2 * SOCKET_RETRY.firstMs}`);
    await eventually('the socket reopened', async () => counter(await server.stats(), 'socketRetries') === 2, 8000);
  });

  it('keeps trying a link whose socket setLinks could not open (no descriptor left), and serves it once it opens', async () => {
    const { pid } = await server.stats();
    const before = counter(await server.stats(), 'socketRetries');
    const { stdout } = await topology.provider.exec(['prlimit', '--pid', String(pid), '--nofile', '--noheadings', '--output', 'SOFT']);
    const soft = stdout.trim();
    let answer: string;
    // Descriptors 0-2 are taken: the new link's socket() fails with EMFILE.
    await topology.provider.exec(['prlimit', '--pid', String(pid), '--nofile=3:']);
    try {
      answer = await server.setLinks(topology.links);
    } finally {
      await topology.provider.exec(['prlimit', '--pid', String(pid), `--nofile=${soft}:`]);
    }
    expect(answer).toMatch(new RegExp(`^error 1 link\\(s\\) not served yet .*${linkOf(LATE).ifname}: Too many open files`));
    // Said for that link while it is not served (status shows it as the link's error), and no more once it is.
    expect((await server.stats()).unserved).toEqual({ [linkOf(LATE).ifname]: expect.stringMatching(/Too many open files/) });
    const { exit, stderr } = await udhcpc(client(LATE), 8);
    expect(exit, stderr).toMatchObject({ code: 0 });
    expect(await addresses(client(LATE))).toEqual([`${clientIpTextOf(LATE)}/32`]);
    expect(counter(await server.stats(), 'socketRetries')).toBe(before + 1);
    expect((await server.stats()).unserved).toEqual({});
  });

  it('stops trying a link gone from the kernel, until setLinks names it (anew) again', async () => {
    const { pid } = await server.stats();
    const before = counter(await server.stats(), 'socketRetries');
    const ifname = providerIfname(GONE);
    await failLinkSocket(topology.provider, pid, ifname, clientIpTextOf(GONE));
    // Gone before the first retry, a second after the failure.
    await topology.provider.ip(['link', 'del', ifname]);
    await eventually('the retry that finds no link', async () => counter(await server.stats(), 'socketRetries') === before + 1, 5000);
    // Not parked, it would try again 2 s after that one.
    await new Promise((resolve) => setTimeout(resolve, 2 * SOCKET_RETRY.firstMs + 1500));
    expect(counter(await server.stats(), 'socketRetries')).toBe(before + 1);
    expect(logLines(server, ifname, WARN, 'the link is gone')).toHaveLength(1);

    // The agent sees the link come back (a new device of the same name) and names it.
    const ns = client(GONE);
    await remakeLink(topology, GONE, false);
    const links = await linksOf(topology.provider, ALL);
    expect(links.find((link) => link.id === GONE)?.ifindex).not.toBe(linkOf(GONE).ifindex);
    expect(await server.setLinks(links)).toBe('ok');
    topology = { ...topology, links };
    await linksActive(topology, [GONE]);
    const { exit, stderr } = await udhcpc(ns, 4);
    expect(exit, stderr).toMatchObject({ code: 0 });
    expect(await addresses(ns)).toEqual([`${clientIpTextOf(GONE)}/32`]);
  });

  it('never reopens a socket on another device that took a gone link\'s name: that device is served once setLinks names it', async () => {
    const stats = await server.stats();
    const before = counter(stats, 'socketRetries');
    const received = counter(stats, 'received');
    const ifname = providerIfname(SWAPPED);
    await failLinkSocket(topology.provider, stats.pid, ifname, clientIpTextOf(SWAPPED));
    // Replaced before the retry a second after the failure, by a device of the same name and
    // MACs (so its client's chaddr is the one the link serves): what a retry binding by name
    // would take for the link.
    await remakeLink(topology, SWAPPED, true);
    expect(counter(await server.stats(), 'socketRetries')).toBe(before);
    const links = await linksOf(topology.provider, ALL);
    expect(links.find((link) => link.id === SWAPPED)?.ifindex).not.toBe(linkOf(SWAPPED).ifindex);
    await eventually('the retry that finds no link of its index', async () => counter(await server.stats(), 'socketRetries') === before + 1, 5000);
    expect(logLines(server, ifname, WARN, 'the link is gone')).toHaveLength(1);

    // The new device's client gets nothing until the agent names the device (the device passing
    // traffic: the kernel has activated both ends, so the server is what sends no answer).
    await linksActive(topology, [SWAPPED]);
    const ns = client(SWAPPED);
    const unserved = await udhcpc(ns, 3);
    expect(unserved.exit?.code, unserved.stderr).not.toBe(0);
    expect(await addresses(ns)).toEqual([]);
    const after = await server.stats();
    expect(counter(after, 'received')).toBe(received);
    expect(after.leases.find((lease) => lease.id === SWAPPED)).toBeUndefined();

    expect(await server.setLinks(links)).toBe('ok');
    topology = { ...topology, links };
    const { exit, stderr } = await udhcpc(ns, 4);
    expect(exit, stderr).toMatchObject({ code: 0 });
    expect(await addresses(ns)).toEqual([`${clientIpTextOf(SWAPPED)}/32`]);
  });

  it('leaves no retry behind for a link setLinks removes, nor once closed: the process ends on its own', async () => {
    const stats = await server.stats();
    const before = counter(stats, 'socketRetries');
    const errors = counter(stats, 'socketErrors');
    await failLinkSocket(topology.provider, stats.pid, linkOf(DROPPED).ifname, clientIpTextOf(DROPPED));
    expect(await server.setLinks(topology.links.filter((link) => link.id !== DROPPED))).toBe('ok');
    await new Promise((resolve) => setTimeout(resolve, SOCKET_RETRY.firstMs + 500));
    expect(counter(await server.stats(), 'socketRetries')).toBe(before);

    // A retry pending when the server closes: the fixture does not exit by itself, so a timer
    // (or socket) left behind would keep it running.
    await failLinkSocket(topology.provider, stats.pid, linkOf(REOPENED).ifname, clientIpTextOf(REOPENED));
    await eventually('the socket error', async () => counter(await server.stats(), 'socketErrors') === errors + 2, 5000);
    expect(await server.stop(2000)).toEqual({ code: 0, signal: null });
  });
});

const FLOODER = clientId(0x0801);
const QUIET = clientId(0x0802);

/** A DISCOVER from `id`'s client, as the codec encodes it (the probe adds the IP and UDP headers). */
function discoverOf(id: ClientId): string {
  const chaddr = new Uint8Array(16);
  chaddr.set(clientMacOf(id).split(':').map((octet) => Number.parseInt(octet, 16)));
  const bytes = encodeDhcpPacket(
    {
      op: 1, htype: 1, hlen: 6, hops: 0, xid: 0x0f100d, secs: 0, flags: 0,
      ciaddr: '0.0.0.0', yiaddr: '0.0.0.0', siaddr: '0.0.0.0', giaddr: '0.0.0.0',
      chaddr, sname: new Uint8Array(64), file: new Uint8Array(128),
      options: new Map([[OPTION.messageType, Uint8Array.of(MESSAGE_TYPE.discover)]]),
    },
    MAX_MESSAGE_LENGTH,
  );
  return Buffer.from(bytes).toString('hex');
}

describeNetns('DHCP server under a client flooding its link', () => {
  let harness: Harness;
  let topology: DhcpTopology;
  let server: ServerFixture;
  let probe: NetnsProcess;

  beforeAll(async () => {
    requireBuild();
    harness = createHarness('dhcpflood');
    topology = await buildTopology(harness, [FLOODER, QUIET]);
    await linksActive(topology, [FLOODER, QUIET]);
    server = await ServerFixture.start(topology.provider, topology.links, 600);
    probe = await startProbeAsBoundClient(harness, clientNetns(topology, FLOODER), clientIpTextOf(FLOODER));
  });

  afterAll(async () => {
    await server?.stop();
    await harness?.cleanup();
  });

  it('answers a flooding client at the link rate, drops the rest unread, and a client on another link gets its lease meanwhile', async () => {
    const before = await server.stats();
    const floodMs = 3000;
    const waitMs = 300;
    const started = performance.now();
    probe.child.stdin?.write(`${JSON.stringify({ send: discoverOf(FLOODER), to: '255.255.255.255', waitMs, floodMs })}\n`);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const quiet = topology.clients.get(QUIET) as Netns;
    const { exit, stderr } = await udhcpc(quiet, 4);
    const quietDoneMs = performance.now() - started;
    expect(exit, stderr).toMatchObject({ code: 0 });
    expect(await addresses(quiet)).toEqual([`${clientIpTextOf(QUIET)}/32`]);
    // Leased while the flood was still going.
    expect(quietDoneMs).toBeLessThan(floodMs);

    const [line] = await probe.waitForOutput(/^\{.*\}$/m, floodMs + 10_000);
    const { replies, sent } = JSON.parse(line) as { replies: unknown[]; sent: number };
    const seconds = (performance.now() - started) / 1000;
    const after = await server.stats();
    const grew = (name: string): number => counter(after, name) - counter(before, name);
    const allowed = LINK_REQUEST_LIMIT.burst + LINK_REQUEST_LIMIT.perSecond * seconds;
    // The flooder's answers: a burst, then the rate; the quiet client's DISCOVER and REQUEST on top.
    expect(replies.length).toBeGreaterThanOrEqual(LINK_REQUEST_LIMIT.burst);
    expect(replies.length).toBeLessThanOrEqual(allowed);
    expect(grew('offers')).toBeLessThanOrEqual(allowed + 2);
    expect(grew('received')).toBeLessThanOrEqual(allowed + 4);
    // Most of what the server read was dropped before decoding (the kernel dropped more).
    expect(grew('rateLimited')).toBeGreaterThan(20 * replies.length);
    expect(grew('rateLimited')).toBeLessThanOrEqual(sent);
    // Warned a few times, not per datagram.
    const warned = logLines(server, providerIfname(FLOODER), WARN, 'rate limit').length;
    expect(warned).toBeGreaterThanOrEqual(1);
    expect(warned).toBeLessThanOrEqual(5);
  });

  it('serves a stock client on the flooding link once the flood stops', async () => {
    probe.child.stdin?.write('quit\n');
    await probe.wait();
    const ns = topology.clients.get(FLOODER) as Netns;
    // Once the bucket the flood emptied is full again, as it is for any client that keeps to the rate.
    await new Promise((resolve) => setTimeout(resolve, (1000 * LINK_REQUEST_LIMIT.burst) / LINK_REQUEST_LIMIT.perSecond));
    const before = counter(await server.stats(), 'rateLimited');
    const { exit, stderr } = await udhcpc(ns, 4);
    expect(exit, stderr).toMatchObject({ code: 0 });
    expect(await addresses(ns)).toEqual([`${clientIpTextOf(FLOODER)}/32`]);
    expect((await server.stats()).leases.find((lease) => lease.id === FLOODER)?.state).toBe('bound');
    expect(counter(await server.stats(), 'rateLimited')).toBe(before);
  });
});
