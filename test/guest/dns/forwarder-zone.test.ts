// The forwarder and link-local upstreams from resolv.conf, their link named by its zone as glibc
// reads one: an interface's name or index (`nameserver fe80::1%2`, as resolv.conf managers write
// it), any name Linux gives one. A zone naming no interface is said once, and tried again on the
// reconnect rounds: an interface of that name may yet come (hot-plugged, renamed). The same
// server given by its link's name and by its index is one upstream; one given without a zone is
// said once and left out. A zone is read to a ':' (an alias label, `eth0:1`), an index whatever its
// length, an empty one as none; IPv4 in inet_aton's forms too; an indented nameserver line is
// none (glibc's reading, all of it).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { RECONNECT_MAX_MS } from '../../../guest/dns/upstream-reachability.js';
import { createHarness, describeNetns, type Harness, type Netns, type NetnsProcess } from '../../harness/index.js';
import { DEAD_UPSTREAM, ForwarderProcess, UPSTREAM_A, buildTopology, compiled, eventually, replaceResolvConf, requireDnsTools, type DnsTopology } from './dns-topology.js';

const ANSWER = '192.0.2.80';
/** What the IPv4 upstream (UPSTREAM_A, in the last test) answers. */
const ANSWER_V4 = '192.0.2.81';
const NO_INTERFACE = /its zone names no interface of this VM/;

/** The query timeout of the suite's forwarder: also how long the sockets of an upstream link it replaced stay open. */
const QUERY_TIMEOUT_MS = 3000;

describeNetns('DNS forwarder with a link-local upstream, its link given by name or index', () => {
  let harness: Harness;
  let net: DnsTopology;
  let confDir: string;
  let upstream: NetnsProcess;
  let forwarder: ForwarderProcess;
  /** The upstream's address: the internet end's link-local address. */
  let linkLocal = '';
  /** The scripted upstream, compiled. */
  let fixture = '';
  /** The index of the provider's end of that link. */
  let uplinkIndex = 0;

  /** `dev`'s link-local address once duplicate address detection is done with it. */
  async function linkLocalOf(ns: Netns, dev: string): Promise<string> {
    let address = '';
    await eventually(`the link-local address of ${dev}`, async () => {
      const { stdout } = await ns.ip(['-6', '-o', 'address', 'show', 'dev', dev, 'scope', 'link']);
      address = /inet6 (fe80::[0-9a-f:]+)\/64/.exec(stdout)?.[1] ?? '';
      return address !== '' && !/tentative/.test(stdout);
    });
    return address;
  }

  /** The answer to `label`.test.example (`lame`: the upstream never answers it), its status, or 'no reply'. */
  async function ask(tcp = false, label = 'www', port = 53): Promise<string> {
    const name = `${label}.test.example`;
    const { stdout } = await net.client.exec(['dig', '@169.254.0.1', '-p', String(port), '+time=4', '+tries=1', ...(tcp ? ['+tcp'] : []), name], { allowFailure: true });
    return new RegExp(`^${name.replaceAll('.', '\\.')}\\.\\s+\\d+\\s+IN\\s+A\\s+(\\S+)`, 'm').exec(stdout)?.[1] ?? (/status: (\w+)/.exec(stdout)?.[1] ?? 'no reply');
  }

  /** The uplink's name now (tests rename it). */
  async function uplinkName(): Promise<string> {
    const name = new RegExp(`^${uplinkIndex}: ([^:@]+)[:@]`, 'm').exec((await net.provider.ip(['-o', 'link', 'show'])).stdout)?.[1];
    if (name === undefined) throw new Error(`no interface has index ${uplinkIndex}`);
    return name;
  }

  const warnings = (): string[] => forwarder.process.stderr.split('\n').filter((line) => NO_INTERFACE.test(line));

  async function reloaded(text: string): Promise<void> {
    const reloads = await forwarder.counter('resolvConfReloads');
    replaceResolvConf(confDir, text);
    await eventually('the reload', async () => (await forwarder.counter('resolvConfReloads')) > reloads);
  }

  beforeAll(async () => {
    requireDnsTools();
    [fixture = ''] = compiled(['test/guest/dns/fixtures/scripted-upstream']);
    harness = createHarness('dnszone');
    net = await buildTopology(harness);
    linkLocal = await linkLocalOf(net.internet, 'inet0');
    await linkLocalOf(net.provider, 'up0');
    uplinkIndex = Number(/^(\d+):/.exec((await net.provider.ip(['-o', 'link', 'show', 'dev', 'up0'])).stdout)?.[1]);
    expect(uplinkIndex).toBeGreaterThan(1);
    upstream = net.internet.spawn([process.execPath, fixture, JSON.stringify({ address: `${linkLocal}%inet0`, port: 53, answer: ANSWER, labels: { lame: 'silent' } })]);
    await upstream.waitForOutput(/^ready$/m);
    confDir = mkdtempSync(join(tmpdir(), 'spectrum-dns-zone-'));
    writeFileSync(join(confDir, 'resolv.conf'), `nameserver ${linkLocal}%${uplinkIndex}\n`);
    // Reconnect rounds come only when the test moves the clock on.
    // A query no upstream answers: SERVFAIL at 3 s, within dig's wait (the default, 4 s, is not),
    // and long enough for a second upstream, were there one, to be asked and time out as well.
    forwarder = await ForwarderProcess.start(net.provider, { resolvConfPath: join(confDir, 'resolv.conf'), timeoutMs: 1500, queryTimeoutMs: QUERY_TIMEOUT_MS, manualClock: true });
  });

  afterAll(async () => {
    if (forwarder !== undefined && forwarder.process.exit === undefined) await forwarder.process.kill();
    if (upstream !== undefined && upstream.exit === undefined) await upstream.kill();
    await harness?.cleanup();
    if (confDir !== undefined) rmSync(confDir, { recursive: true, force: true });
  });

  it("asks an upstream whose zone is its link's index, over UDP and TCP", async () => {
    // The index was taken for an interface's name: "no such device", SERVFAIL for ever.
    expect(await forwarder.counters()).toMatchObject({ upstreams: [`[${linkLocal}%${uplinkIndex}]:53`], unreachableUpstreams: [] });
    expect(await ask()).toBe(ANSWER);
    // Node's net reads a zone as a name alone: over TCP too, through the addon.
    expect(await ask(true)).toBe(ANSWER);
    expect(upstream.stdout).toMatch(/^query www tcp$/m);
  });

  it("takes a link-local upstream given by its link's name and again by its index as one, asked once (the first kept), from resolv.conf and --dns-upstream alike", async () => {
    // Two upstreams before: each took its sockets and a place, and a query failed at each in turn.
    await reloaded(`nameserver ${linkLocal}%up0\nnameserver ${linkLocal}%${uplinkIndex}\n`);
    expect(await forwarder.counters()).toMatchObject({ upstreams: [`[${linkLocal}%up0]:53`], unreachableUpstreams: [] });
    const before = await forwarder.counters();
    // A name it never answers: one upstream timed out, not two (the same server asked again as another).
    expect(await ask(false, 'lame')).toBe('SERVFAIL');
    const after = await forwarder.counters();
    const grew = (name: string): number => Number(after[name]) - Number(before[name]);
    expect({ upstreamTimeouts: grew('upstreamTimeouts'), failed: grew('failed') }).toEqual({ upstreamTimeouts: 1, failed: 1 });
    expect(await ask(true)).toBe(ANSWER);
    // The first kept, however it names the link; another address on that link is another server.
    await reloaded(`nameserver ${linkLocal}%${uplinkIndex}\nnameserver [${linkLocal}%up0]:53\nnameserver fe80::53%up0\n`);
    expect(await forwarder.counters()).toMatchObject({ upstreams: [`[${linkLocal}%${uplinkIndex}]:53`, '[fe80::53%up0]:53'] });
    const configured = await ForwarderProcess.start(net.provider, { port: 5300, upstreams: [`${linkLocal}%up0`, `[${linkLocal}%${uplinkIndex}]:53`], timeoutMs: 1500, manualClock: true });
    try {
      expect(await configured.counters()).toMatchObject({ upstreams: [`[${linkLocal}%up0]:53`], unreachableUpstreams: [] });
      expect(await ask(false, 'www', 5300)).toBe(ANSWER);
    } finally {
      await configured.process.kill();
    }
  });

  it('leaves out a link-local nameserver without a zone, saying once what to write instead, and tries it no more; said plainly when it is the only one', async () => {
    // It was taken, every connect refused (EINVAL), "unreachable" and tried again for ever, its
    // warning saying to check an address of ours.
    const said = (): string[] => forwarder.process.stderr.split('\n').filter((line) => line.includes('without a zone'));
    const text = `nameserver fe80::53\nnameserver ${linkLocal}%up0\n`;
    await reloaded(text);
    expect(await forwarder.counters()).toMatchObject({ upstreams: [`[${linkLocal}%up0]:53`], unreachableUpstreams: [] });
    expect(await ask()).toBe(ANSWER);
    const binds = await forwarder.counter('upstreamBinds');
    await forwarder.advance(RECONNECT_MAX_MS);
    expect((await forwarder.advance(RECONNECT_MAX_MS))['upstreamBinds']).toBe(binds);
    await reloaded(text);
    expect(said()).toEqual([
      expect.stringContaining(
        'resolv.conf names a link-local nameserver without a zone (fe80::53): left out, the other nameservers used (Linux sends to a link-local address, fe80::/10, only through the link its zone names, and refuses one without; ' +
          "glibc's resolver fails on it too): write it with its link's name or index as its zone (nameserver fe80::53%eth0)",
      ),
    ]);
    await reloaded('nameserver fe80::53\nnameserver [fe80::54]:5353\n');
    expect(await forwarder.counters()).toMatchObject({ upstreams: [], unreachableUpstreams: [] });
    expect(await ask()).toBe('SERVFAIL');
    expect((await forwarder.advance(RECONNECT_MAX_MS))['upstreamBinds']).toBe(binds);
    expect(said()).toHaveLength(2);
    expect(said()[1]).toContain(
      'resolv.conf names link-local nameservers without a zone (fe80::53, [fe80::54]:5353), and no other: no upstream resolvers, every query answered SERVFAIL (',
    );
    expect(said()[1]).toContain('write each with its link\'s name or index as its zone (nameserver fe80::53%eth0, nameserver [fe80::54%eth0]:5353)');
    // One written with a zone that can name no interface (glibc reads it as none) is said by what
    // is wrong with that zone: it was said to be "without a zone".
    await reloaded(`nameserver fe80::53%a/b\nnameserver ${linkLocal}%up0\n`);
    expect(await forwarder.counters()).toMatchObject({ upstreams: [`[${linkLocal}%up0]:53`], unreachableUpstreams: [] });
    expect(said()).toHaveLength(2);
    expect(forwarder.process.stderr.split('\n').filter((line) => line.includes('can name no interface'))).toEqual([
      expect.stringContaining(
        "resolv.conf names a link-local nameserver whose zone can name no interface (fe80::53%a/b: '/' is not allowed in an interface's name): left out, the other nameservers used (glibc's resolver reads such a zone as naming no link; ",
      ),
    ]);
  });

  it('says once that a zone names no interface, by name or index, tries it again on the reconnect rounds without saying it again, and asks the others meanwhile', async () => {
    const text = [`nameserver ${linkLocal}%nosuch0`, `nameserver ${linkLocal}%99999`, `nameserver ${linkLocal}%up0`].join('\n');
    await reloaded(text);
    expect(await forwarder.counters()).toMatchObject({
      upstreams: [`[${linkLocal}%up0]:53`],
      unreachableUpstreams: [`[${linkLocal}%nosuch0]:53 (ENXIO)`, `[${linkLocal}%99999]:53 (ENXIO)`],
    });
    expect(await ask()).toBe(ANSWER);
    expect(warnings()).toHaveLength(2);
    // Each reconnect round tries each once (an advance runs one round: the next is scheduled once
    // it has run), and so does a reload; none is said again while it stays listed.
    const binds = Number((await forwarder.counters())['upstreamBinds']);
    for (let round = 1; round <= 3; round++) expect((await forwarder.advance(RECONNECT_MAX_MS))['upstreamBinds']).toBe(binds + 2 * round);
    await reloaded(text);
    expect(await forwarder.counter('upstreamBinds')).toBe(binds + 8);
    expect(await forwarder.counters()).toMatchObject({ upstreams: [`[${linkLocal}%up0]:53`] });
    expect(warnings()).toHaveLength(2);
    expect(warnings()[0]).toMatch(/trying again at least every 2 s \(an interface of that name may yet come\)/);
  });

  it('drops an upstream whose zone named no interface once it names the link of one before it, trying it no more', async () => {
    await reloaded(`nameserver ${linkLocal}%up0\nnameserver ${linkLocal}%alias0\n`);
    expect(await forwarder.counters()).toMatchObject({ upstreams: [`[${linkLocal}%up0]:53`], unreachableUpstreams: [`[${linkLocal}%alias0]:53 (ENXIO)`] });
    // The uplink gets that name too (an alternative name, which if_nametoindex finds).
    await net.provider.ip(['link', 'property', 'add', 'dev', 'up0', 'altname', 'alias0']);
    try {
      // Compared again at the next reconnect round: the same server, left out (it was connected as another).
      expect(await forwarder.advance(RECONNECT_MAX_MS)).toMatchObject({ upstreams: [`[${linkLocal}%up0]:53`], unreachableUpstreams: [] });
      const binds = await forwarder.counter('upstreamBinds');
      expect((await forwarder.advance(RECONNECT_MAX_MS))['upstreamBinds']).toBe(binds);
      expect(await ask()).toBe(ANSWER);
    } finally {
      await net.provider.ip(['link', 'property', 'del', 'dev', 'up0', 'altname', 'alias0']);
    }
  });

  it('uses an upstream whose zone named no interface once one of that name comes (hot-plugged, renamed), with no resolv.conf rewrite', async () => {
    await reloaded(`nameserver ${linkLocal}%late0\n`);
    expect(await forwarder.counters()).toMatchObject({ upstreams: [], unreachableUpstreams: [`[${linkLocal}%late0]:53 (ENXIO)`] });
    expect(await ask()).toBe('SERVFAIL');
    // The uplink takes that name (a link is renamed only while down: its link-local address comes back).
    await net.provider.ip(['link', 'set', 'up0', 'down']);
    await net.provider.ip(['link', 'set', 'up0', 'name', 'late0']);
    await net.provider.ip(['link', 'set', 'late0', 'up']);
    await linkLocalOf(net.provider, 'late0');
    await linkLocalOf(net.internet, 'inet0');
    // At the next reconnect round (it was left out until resolv.conf was read again, or the agent
    // started again for a --dns-upstream, however soon the interface came).
    expect(await forwarder.advance(RECONNECT_MAX_MS)).toMatchObject({ upstreams: [`[${linkLocal}%late0]:53`], unreachableUpstreams: [] });
    expect(await ask()).toBe(ANSWER);
  });

  it('says an upstream whose sockets could not be opened for want of file descriptors is so (the agent out of them), not to check its address and link', async () => {
    // The forwarder's own process (ip netns exec execs it): its limit of open files just above
    // what it holds, fewer than an upstream's 64 sockets.
    const pid = forwarder.process.pid;
    expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain('fixtures/forwarder');
    // The sockets of upstream links an earlier test replaced are closed only a query timeout after
    // (a late answer may still come through them): counted as held below, then closed during the
    // reload, they left room for the upstream's 64 (a CI run). Their time is let pass first.
    await new Promise((resolve) => setTimeout(resolve, QUERY_TIMEOUT_MS + 400));
    const prlimit = (...args: string[]): string => execFileSync('prlimit', ['--pid', String(pid), ...args], { encoding: 'utf8' });
    const limit = /^\s*(\d+)/.exec(prlimit('--nofile', '--noheadings', '--output', 'SOFT'))?.[1];
    if (limit === undefined) throw new Error('cannot read the limit of open files');
    // Descriptors take the lowest free number below the limit: 8 free ones below it (the reload
    // reads resolv.conf through one), whatever gaps the sockets closed before left.
    const open = new Set(readdirSync(`/proc/${pid}/fd`).map(Number));
    let below = 0;
    for (let free = 0; free < 8; below += 1) if (!open.has(below)) free += 1;
    prlimit(`--nofile=${below}:`);
    try {
      await reloaded(`nameserver ${linkLocal}%late0\nnameserver ${DEAD_UPSTREAM}\n`);
      expect(await forwarder.counters()).toMatchObject({ upstreams: [`[${linkLocal}%late0]:53`], unreachableUpstreams: [`${DEAD_UPSTREAM}:53 (EMFILE)`] });
    } finally {
      prlimit(`--nofile=${limit}:`);
    }
    const said = forwarder.process.stderr.split('\n').filter((line) => line.includes(`${DEAD_UPSTREAM}:53`) && line.includes('cannot use upstream resolver'));
    expect(said).toEqual([expect.stringContaining('cannot use upstream resolver: the agent is out of file descriptors (EMFILE: its limit of open files is reached; each upstream takes 64)')]);
    expect(said[0]).not.toContain('check the address');
    expect(await ask()).toBe(ANSWER);
  });

  it('asks over TCP through the interface its UDP sockets reach (by index, as when the list was set) once it is renamed away and another takes its name, until the list is next set', async () => {
    await reloaded(`nameserver ${linkLocal}%late0\n`);
    expect(await ask()).toBe(ANSWER);
    expect(await ask(true)).toBe(ANSWER);
    const tcpQueries = (): number => upstream.stdout.split('\n').filter((line) => line === 'query www tcp').length;
    const before = await forwarder.counters();
    // The uplink renamed away: its UDP sockets stay connected to it (by index). A TCP connection
    // looked the zone's name up afresh: none had it (ENXIO), SERVFAIL over TCP alone.
    await net.provider.ip(['link', 'set', 'late0', 'down']);
    await net.provider.ip(['link', 'set', 'late0', 'name', 'away0']);
    await net.provider.ip(['link', 'set', 'away0', 'up']);
    await linkLocalOf(net.provider, 'away0');
    await linkLocalOf(net.internet, 'inet0');
    const asked = tcpQueries();
    expect(await ask()).toBe(ANSWER);
    expect(await ask(true)).toBe(ANSWER);
    expect(tcpQueries()).toBe(asked + 1);
    // Another interface takes the zone's name (a veth whose peer has no resolver): before, TCP
    // went through it, UDP through the uplink; both go through the uplink until the list is set.
    await net.provider.ip(['link', 'add', 'lt0', 'type', 'veth', 'peer', 'name', 'ltpeer']);
    try {
      await net.provider.ip(['link', 'set', 'lt0', 'name', 'late0']);
      await net.provider.ip(['link', 'set', 'ltpeer', 'up']);
      await net.provider.ip(['link', 'set', 'late0', 'up']);
      await linkLocalOf(net.provider, 'late0');
      expect(await ask()).toBe(ANSWER);
      expect(await ask(true)).toBe(ANSWER);
      expect(tcpQueries()).toBe(asked + 2);
      const after = await forwarder.counters();
      const grew = (name: string): number => Number(after[name]) - Number(before[name]);
      expect({ upstreamTimeouts: grew('upstreamTimeouts'), sendErrors: grew('sendErrors'), failed: grew('failed') }).toEqual({ upstreamTimeouts: 0, sendErrors: 0, failed: 0 });
      // The list set again: both go through the interface that has the name now, where nothing answers.
      await reloaded(`nameserver ${linkLocal}%late0\n`);
      expect(await ask()).toBe('SERVFAIL');
      expect(await ask(true)).toBe('SERVFAIL');
      expect(tcpQueries()).toBe(asked + 2);
    } finally {
      // Its peer goes with it.
      for (const name of ['lt0', 'late0']) await net.provider.ip(['link', 'del', name], { allowFailure: true });
    }
  });

  it('asks over TCP through the interface of its index even where another interface is called by that number (a zone written as text is read as a name first)', async () => {
    const uplink = await uplinkName();
    await reloaded(`nameserver ${linkLocal}%${uplink}\n`);
    const tcpQueries = (): number => upstream.stdout.split('\n').filter((line) => line === 'query www tcp').length;
    // Another interface called by the uplink's index (Linux takes a name of digits), whose peer
    // has no resolver. The index was written as the zone (%N), which names that one first: TCP
    // went through it, UDP through the uplink.
    const named = String(uplinkIndex);
    await net.provider.ip(['link', 'add', 'ix0', 'type', 'veth', 'peer', 'name', 'ixpeer']);
    try {
      await net.provider.ip(['link', 'set', 'dev', 'ix0', 'name', named]);
      await net.provider.ip(['link', 'set', 'dev', 'ixpeer', 'up']);
      await net.provider.ip(['link', 'set', 'dev', named, 'up']);
      await linkLocalOf(net.provider, named);
      const asked = tcpQueries();
      expect(await ask()).toBe(ANSWER);
      expect(await ask(true)).toBe(ANSWER);
      expect(tcpQueries()).toBe(asked + 1);
    } finally {
      // Its peer goes with it.
      for (const name of ['ix0', named]) await net.provider.ip(['link', 'del', 'dev', name], { allowFailure: true });
    }
  });

  it("asks an upstream whose zone is any name Linux gives an interface, '+' and '@' among them", async () => {
    // Such a nameserver was skipped as "not an IP address": SERVFAIL.
    await net.provider.ip(['link', 'set', 'away0', 'down']);
    await net.provider.ip(['link', 'set', 'away0', 'name', 'up+0']);
    await net.provider.ip(['link', 'set', 'up+0', 'up']);
    await linkLocalOf(net.provider, 'up+0');
    await linkLocalOf(net.internet, 'inet0');
    await reloaded(`nameserver ${linkLocal}%up+0\n`);
    expect(await forwarder.counters()).toMatchObject({ upstreams: [`[${linkLocal}%up+0]:53`], unreachableUpstreams: [] });
    expect(await ask()).toBe(ANSWER);
    expect(await ask(true)).toBe(ANSWER);
    await net.provider.ip(['link', 'property', 'add', 'dev', 'up+0', 'altname', 'br@lan']);
    await reloaded(`nameserver [${linkLocal}%br@lan]:53\n`);
    expect(await forwarder.counters()).toMatchObject({ upstreams: [`[${linkLocal}%br@lan]:53`], unreachableUpstreams: [] });
    expect(await ask()).toBe(ANSWER);
  });

  it('takes the first 8 upstreams of a resolv.conf that it can use: a link-local one again by its index, or this forwarder, takes none of their places', async () => {
    const uplink = await uplinkName();
    // Resolvers on the provider itself (a connect there needs no route): nothing answers there.
    const others = Array.from({ length: 7 }, (_, i) => `127.0.0.${i + 2}:5301`);
    await reloaded([`${linkLocal}%${uplink}`, `${linkLocal}%${uplinkIndex}`, '169.254.0.1', ...others].map((upstream) => `nameserver ${upstream}`).join('\n'));
    // Only resolv.conf's first 8 were taken before: the duplicate and ourselves, left out after
    // that, left 6, the last two never asked.
    expect(await forwarder.counters()).toMatchObject({ upstreams: [`[${linkLocal}%${uplink}]:53`, ...others], unreachableUpstreams: [] });
    expect(forwarder.process.stderr).toContain('ignoring 169.254.0.1:53 as an upstream: that is this forwarder');
    expect(await ask()).toBe(ANSWER);
  });

  it("connects an upstream again through the interface its zone names now once another took that name, not dropping the upstream given by that one's index in its place", async () => {
    const uplink = await uplinkName();
    // Another interface of the provider, where no resolver answers (its peer has no address).
    await net.provider.ip(['link', 'add', 'zz0', 'type', 'veth', 'peer', 'name', 'zzpeer']);
    try {
      await net.provider.ip(['link', 'set', 'zzpeer', 'up']);
      await net.provider.ip(['link', 'set', 'zz0', 'up']);
      await linkLocalOf(net.provider, 'zz0');
      const text = `nameserver ${linkLocal}%zz0\nnameserver ${linkLocal}%${uplinkIndex}\n`;
      await reloaded(text);
      expect(await forwarder.counters()).toMatchObject({ upstreams: [`[${linkLocal}%zz0]:53`, `[${linkLocal}%${uplinkIndex}]:53`], unreachableUpstreams: [] });
      // zz0 is renamed away, and the uplink takes its name (an alternative name).
      await net.provider.ip(['link', 'set', 'zz0', 'down']);
      await net.provider.ip(['link', 'set', 'zz0', 'name', 'zz1']);
      await net.provider.ip(['link', 'set', 'zz1', 'up']);
      await net.provider.ip(['link', 'property', 'add', 'dev', uplink, 'altname', 'zz0']);
      // The first now names the uplink: one server with the second. Its sockets were kept on the
      // dummy, and the second dropped as its duplicate: every query went to the dummy (SERVFAIL).
      await reloaded(text);
      expect(await forwarder.counters()).toMatchObject({ upstreams: [`[${linkLocal}%zz0]:53`], unreachableUpstreams: [] });
      const before = await forwarder.counters();
      expect(await ask()).toBe(ANSWER);
      expect(Number((await forwarder.counters())['upstreamTimeouts'])).toBe(Number(before['upstreamTimeouts']));
      // The name gone from the uplink: its sockets still reach the uplink (by index), so the
      // second is still one server with it (not asked again on the same link).
      await net.provider.ip(['link', 'property', 'del', 'dev', uplink, 'altname', 'zz0']);
      await reloaded(text);
      expect(await forwarder.counters()).toMatchObject({ upstreams: [`[${linkLocal}%zz0]:53`], unreachableUpstreams: [] });
      expect(await ask()).toBe(ANSWER);
    } finally {
      await net.provider.ip(['link', 'property', 'del', 'dev', uplink, 'altname', 'zz0'], { allowFailure: true });
      // Its peer goes with it.
      for (const name of ['zz0', 'zz1']) await net.provider.ip(['link', 'del', name], { allowFailure: true });
    }
  });

  it('says once per upstream and cause why a TCP connection to it could not be opened (the interface its zone named is gone), not at every query, and asks the next', async () => {
    const uplink = await uplinkName();
    // Another interface of the provider, where no resolver answers (its peer has no address).
    await net.provider.ip(['link', 'add', 'gz0', 'type', 'veth', 'peer', 'name', 'gzpeer']);
    try {
      await net.provider.ip(['link', 'set', 'gzpeer', 'up']);
      await net.provider.ip(['link', 'set', 'gz0', 'up']);
      await linkLocalOf(net.provider, 'gz0');
      const index = Number(/^(\d+):/.exec((await net.provider.ip(['-o', 'link', 'show', 'dev', 'gz0'])).stdout)?.[1]);
      await reloaded(`nameserver fe80::99%gz0\nnameserver ${linkLocal}%${uplink}\n`);
      expect(await forwarder.counters()).toMatchObject({ upstreams: ['[fe80::99%gz0]:53', `[${linkLocal}%${uplink}]:53`], unreachableUpstreams: [] });
      // Gone: its UDP sockets stay connected to its index until the list is next set, and each
      // TCP connection to the first, through that index, cannot be opened. Why was never said.
      await net.provider.ip(['link', 'del', 'gz0']);
      const sendErrors = await forwarder.counter('sendErrors');
      for (let query = 0; query < 3; query++) expect(await ask(true)).toBe(ANSWER);
      expect(await forwarder.counter('sendErrors')).toBe(sendErrors + 3);
      const said = forwarder.process.stderr.split('\n').filter((line) => line.includes('cannot open a TCP connection'));
      expect(said).toEqual([expect.stringContaining('"upstream":"[fe80::99%gz0]:53"')]);
      expect(said[0]).toContain(`the interface of index ${index} that its zone %gz0 named when the upstream was connected is gone`);
      expect(said[0]).toContain('"level":40');
    } finally {
      // Its peer goes with it.
      for (const name of ['gz0', 'gzpeer']) await net.provider.ip(['link', 'del', name], { allowFailure: true });
    }
  });

  it("reads resolv.conf's nameservers as glibc does: a zone up to a ':' (an alias label), an index of any length, an empty one as none, IPv4 in inet_aton's forms, and a line only where the keyword starts it", async () => {
    const uplink = await uplinkName();
    const v4 = net.internet.spawn([process.execPath, fixture, JSON.stringify({ address: UPSTREAM_A, port: 53, answer: ANSWER_V4 })]);
    const v4Queries = (): number => v4.stdout.split('\n').filter((line) => line.startsWith('query ')).length;
    try {
      await v4.waitForOutput(/^ready$/m);
      // Each was skipped as "not an IP address": no upstream, SERVFAIL.
      for (const zone of [`${uplink}:1`, `${'0'.repeat(16)}${uplinkIndex}`]) {
        await reloaded(`nameserver ${linkLocal}%${zone}\n`);
        expect(await forwarder.counters()).toMatchObject({ upstreams: [`[${linkLocal}%${zone}]:53`], unreachableUpstreams: [] });
        expect(await ask()).toBe(ANSWER);
        expect(await ask(true)).toBe(ANSWER);
      }
      // An empty zone is none to glibc: on an address that needs none, the address, where the
      // provider's own programs ask.
      await reloaded(`nameserver ::ffff:${UPSTREAM_A}%\n`);
      expect(await forwarder.counters()).toMatchObject({ upstreams: [`${UPSTREAM_A}:53`], unreachableUpstreams: [] });
      expect(await ask()).toBe(ANSWER_V4);
      // IPv4 in inet_aton's forms (octal, the last part filling two bytes): it was skipped as
      // "not an IP address". Asked, said once what it is read as.
      expect(UPSTREAM_A).toBe('192.0.2.53');
      await reloaded('nameserver 0300.0.565\n');
      expect(await forwarder.counters()).toMatchObject({ upstreams: [`${UPSTREAM_A}:53`], unreachableUpstreams: [] });
      expect(await ask(true)).toBe(ANSWER_V4);
      // The file rewritten with the same nameservers (a DHCP client's renewal): not said again.
      await reloaded('# renewed\nnameserver 0300.0.565\n');
      const legacySaid = (): string[] => forwarder.process.stderr.split('\n').filter((line) => line.includes("inet_aton's older forms"));
      expect(legacySaid()).toEqual([
        expect.stringContaining(
          "resolv.conf writes IPv4 nameservers in inet_aton's older forms, read as glibc's resolver reads them: 0300.0.565 as 192.0.2.53 (a part that begins with 0 is octal",
        ),
      ]);
      // Another one is said; so is the first again once it has been gone.
      await reloaded('nameserver 0xc0.0.2.53\n');
      await reloaded(`nameserver ${UPSTREAM_A}\n`);
      await reloaded('nameserver 0300.0.565\n');
      expect(legacySaid()).toEqual([
        expect.stringContaining(': 0300.0.565 as 192.0.2.53 ('),
        expect.stringContaining(': 0xc0.0.2.53 as 192.0.2.53 ('),
        expect.stringContaining(': 0300.0.565 as 192.0.2.53 ('),
      ]);
      // An indented line is no nameserver line to glibc: it was read, and asked first.
      const asked = v4Queries();
      await reloaded(`  nameserver ${UPSTREAM_A}\nnameserver ${linkLocal}%${uplinkIndex}\n`);
      await reloaded(`# renewed\n  nameserver ${UPSTREAM_A}\nnameserver ${linkLocal}%${uplinkIndex}\n`);
      expect(await forwarder.counters()).toMatchObject({ upstreams: [`[${linkLocal}%${uplinkIndex}]:53`], unreachableUpstreams: [] });
      expect(await ask()).toBe(ANSWER);
      expect(await ask(true)).toBe(ANSWER);
      expect(v4Queries()).toBe(asked);
      const said = forwarder.process.stderr.split('\n').filter((line) => line.includes('blanks before the keyword'));
      expect(said).toEqual([
        expect.stringContaining(
          "resolv.conf has nameserver lines with blanks before the keyword: not read, as glibc's resolver reads none (a keyword must start its line): remove the blanks to use them",
        ),
      ]);
      expect(said[0]).toContain(`"indented":["nameserver ${UPSTREAM_A}"]`);
      // A line that is no address, rewritten unchanged: said once.
      for (const comment of ['', '# renewed\n']) await reloaded(`${comment}nameserver not-an-address\nnameserver ${UPSTREAM_A}\n`);
      expect(forwarder.process.stderr.split('\n').filter((line) => line.includes('nameserver lines that are not IP addresses'))).toEqual([
        expect.stringContaining('"skipped":["not-an-address"]'),
      ]);
    } finally {
      await v4.kill();
    }
  });
});
