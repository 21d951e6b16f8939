import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ANY_CLOSED_FLOW, type ClosedFlowFilter, IPPROTO_TCP, TCP_CONNTRACK_STATES, type TcpConntrackState, closedFlowFilter, reapMatches } from '../../../guest/conntrack/closed-flows.js';
import { ConntrackError } from '../../../guest/conntrack/conntrack-error.js';
import type { ConntrackFilter } from '../../../guest/conntrack/conntrack-filter.js';
import { type ConntrackAddon, ConntrackPurger } from '../../../guest/conntrack/conntrack-purge.js';
import type { ConntrackPurgeResult } from '../../../guest/conntrack-port.js';
import { type Harness, type Netns, createHarness, describeNetns } from '../../harness/index.js';

// The agent purges its own namespace's table in-process: so does this compiled fixture, entered
// into a harness namespace. Entries come from real UDP packets sent out of a veth
// to a peer namespace (conntrack tracks them once a ruleset uses it); /proc/net/nf_conntrack shows what is left.
/** IANA protocol number of UDP. */
const IPPROTO_UDP = 17;
const FIXTURE = fileURLToPath(new URL('../../../dist/test/guest/conntrack/fixtures/conntrack-purge.js', import.meta.url));
/** LD_PRELOAD shim: a netlink recv(2) times out (EAGAIN) at once; compiled by the test that uses it. */
const SHIM_SOURCE = fileURLToPath(new URL('./fixtures/netlink-recv-timeout.c', import.meta.url));
/** LD_PRELOAD shim: a conntrack delete goes out with its id (CTA_ID) inverted; compiled by the test that uses it. */
const WRONG_ID_SHIM_SOURCE = fileURLToPath(new URL('./fixtures/netlink-wrong-id.c', import.meta.url));

type Outcome =
  | { readonly result: ConntrackPurgeResult; readonly ms: number; readonly peakKiB: number }
  | { readonly error: { readonly kind: string; readonly message: string } };

/** `source` built as an LD_PRELOAD library in a scratch folder, for `use`; the folder goes afterwards. */
async function withShim(source: string, use: (shim: string, scratch: string) => Promise<void>): Promise<void> {
  const scratch = await mkdtemp(join(tmpdir(), 'snt-shim-'));
  try {
    const shim = join(scratch, 'shim.so');
    execFileSync('cc', ['-shared', '-fPIC', '-O2', '-o', shim, source, '-ldl']);
    await use(shim, scratch);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** UDP datagrams from `from` to each of `to`, one per destination port `ports` (each a conntrack entry). */
function senderScript(flows: readonly { from: string; to: string; ports: number }[]): string {
  return [
    'import socket',
    ...flows.flatMap((flow) => [
      's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
      `s.bind(("${flow.from}", 0))`,
      `for port in range(1, ${flow.ports + 1}): s.sendto(b"x", ("${flow.to}", port))`,
      's.close()',
    ]),
  ].join('\n');
}

describeNetns('conntrack purge through libnetfilter_conntrack', () => {
  let harness: Harness;
  let ns: Netns;

  async function purge(filter: ConntrackFilter): Promise<Outcome> {
    const { stdout } = await ns.exec([process.execPath, FIXTURE, 'purge', JSON.stringify(filter)], { enter: 'nsenter', timeoutMs: 60_000 });
    return JSON.parse(stdout) as Outcome;
  }

  async function reap(filter: ClosedFlowFilter, env: NodeJS.ProcessEnv = process.env): Promise<Outcome> {
    const { stdout } = await ns.exec([process.execPath, FIXTURE, 'reap', JSON.stringify(filter)], { enter: 'nsenter', timeoutMs: 60_000, env });
    return JSON.parse(stdout) as Outcome;
  }

  /** `conntrack -I` of one entry (`what`: its protocol, addresses, ports, state, zone), for 300 s. */
  async function insert(what: readonly string[]): Promise<void> {
    await ns.exec(['conntrack', '-I', ...what, '-t', '300']);
  }

  /** The IPv4 table as conntrack(8) lists it, one line per entry, timeouts left out. */
  async function listing(): Promise<string[]> {
    const text = (await ns.exec(['conntrack', '-L', '-f', 'ipv4'])).stdout;
    return text
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => line.replace(/^(\S+\s+\d+)\s+\d+\s/, '$1 '))
      .sort();
  }

  async function send(flows: readonly { from: string; to: string; ports: number }[]): Promise<void> {
    await ns.exec(['python3', '-c', senderScript(flows)], { timeoutMs: 60_000 });
  }

  /** The table, one `src=... dst=... src=... dst=...` line per entry. */
  async function table(): Promise<string[]> {
    const text = (await ns.exec(['cat', '/proc/net/nf_conntrack'])).stdout;
    return text
      .split('\n')
      .filter((line) => line.startsWith('ipv4'))
      .map((line) => [...line.matchAll(/(src|dst)=(\S+)/g)].map((match) => `${match[1]}=${match[2]}`).join(' '));
  }

  const naming = (lines: readonly string[], ip: string): number => lines.filter((line) => line.split(' ').some((field) => field.endsWith(`=${ip}`))).length;

  beforeAll(async () => {
    if (!existsSync(FIXTURE)) throw new Error(`${FIXTURE} is missing: run npm run build`);
    harness = createHarness('ctpurge');
    ns = await harness.namespace('agent');
    const peer = await harness.namespace('peer');
    await harness.veth(ns, 'v0', peer, 'v1');
    for (const address of ['100.64.0.1/32', '100.64.0.2/32', '100.64.0.4/32', '192.0.2.1/32', '198.51.100.7/32']) await ns.ip(['address', 'add', address, 'dev', 'v0']);
    // The peer owns the destinations, so that they resolve; what it answers (port unreachable) makes no entries.
    for (const address of ['192.0.2.10/32', '192.0.2.20/32', '192.0.2.30/32', '100.64.0.3/32', '100.64.0.5/32']) await peer.ip(['address', 'add', address, 'dev', 'v1']);
    await ns.ip(['link', 'set', 'v0', 'up']);
    await peer.ip(['link', 'set', 'v1', 'up']);
    // v0, raised first, is activated by the kernel's linkwatch some time after v1 comes up.
    await Promise.all([ns.linkActive('v0'), peer.linkActive('v1')]);
    for (const network of ['192.0.2.0/24', '100.64.0.3/32', '100.64.0.5/32']) await ns.ip(['route', 'add', network, 'dev', 'v0']);
    // Tracking (every packet gets an entry) and a source NAT, whose entries name the client address in the reply direction only.
    await ns.exec(['nft', '-f', '-'], {
      input: [
        'table ip purge_test {',
        '  chain out { type filter hook output priority 0; ct state new counter; }',
        '  chain post { type nat hook postrouting priority srcnat; ip saddr 198.51.100.7 snat to 100.64.0.9; }',
        '}',
        '',
      ].join('\n'),
    });
  });

  beforeEach(async () => {
    await purge({ addresses: [], sweep: { network: '0.0.0.0', prefixLength: 0, keep: [] } });
  });

  afterAll(async () => {
    await harness?.cleanup();
  });

  it('deletes the entries naming an address as original source or destination, or reply destination, and no other', async () => {
    await send([
      { from: '100.64.0.1', to: '192.0.2.10', ports: 3 },
      { from: '100.64.0.2', to: '192.0.2.10', ports: 2 },
      { from: '192.0.2.1', to: '100.64.0.3', ports: 2 },
      { from: '198.51.100.7', to: '192.0.2.20', ports: 2 },
    ]);
    const before = await table();
    expect(naming(before, '100.64.0.1')).toBe(3);
    expect(naming(before, '100.64.0.3')).toBe(2);
    expect(naming(before, '100.64.0.9')).toBe(2);
    const outcome = await purge({ addresses: ['100.64.0.1', '100.64.0.3', '100.64.0.9'], sweep: null });
    expect(outcome).toMatchObject({ result: { scanned: before.length, deleted: 7 } });
    const after = await table();
    expect(after).toEqual(before.filter((line) => !/=100\.64\.0\.[139]( |$)/.test(line)));
    expect(naming(after, '100.64.0.2')).toBe(2);
    // Nothing left to match: nothing deleted, and no error.
    expect(await purge({ addresses: ['100.64.0.1'], sweep: null })).toMatchObject({ result: { deleted: 0 } });
  });

  it('sweeps a network but for the addresses it keeps', async () => {
    await send([
      { from: '100.64.0.1', to: '192.0.2.10', ports: 2 },
      { from: '100.64.0.2', to: '192.0.2.10', ports: 2 },
      { from: '100.64.0.4', to: '100.64.0.5', ports: 2 },
      { from: '192.0.2.1', to: '192.0.2.30', ports: 2 },
    ]);
    const outcome = await purge({ addresses: [], sweep: { network: '100.64.0.0', prefixLength: 16, keep: ['100.64.0.2', '100.64.0.4'] } });
    // 100.64.0.4 is kept, but its peer 100.64.0.5 is not: an entry naming both goes.
    expect(outcome).toMatchObject({ result: { deleted: 4 } });
    const after = await table();
    expect(naming(after, '100.64.0.2')).toBe(2);
    expect(naming(after, '192.0.2.30')).toBe(2);
    expect(after).toHaveLength(4);
  });

  it('purges an address among a thousand entries, and deletes a thousand, in milliseconds', async () => {
    await send([
      { from: '100.64.0.1', to: '192.0.2.10', ports: 1000 },
      { from: '100.64.0.2', to: '192.0.2.10', ports: 5 },
    ]);
    const few = await purge({ addresses: ['100.64.0.2'], sweep: null });
    const many = await purge({ addresses: ['100.64.0.1'], sweep: null });
    if (!('result' in few) || !('result' in many)) throw new Error(`purge failed: ${JSON.stringify([few, many])}`);
    expect(few.result).toEqual({ scanned: 1005, deleted: 5 });
    expect(many.result).toEqual({ scanned: 1000, deleted: 1000 });
    console.log(`conntrack purge: 5 of 1005 entries in ${few.ms.toFixed(1)} ms, 1000 of 1000 in ${many.ms.toFixed(1)} ms`);
    expect(await table()).toEqual([]);
  });

  it('says the agent lacks CAP_NET_ADMIN when it does (the kernel refuses the dump, not the socket)', async () => {
    const { stdout } = await ns.exec(
      ['setpriv', '--inh-caps=-net_admin', '--ambient-caps=-net_admin', '--bounding-set=-net_admin', '--', process.execPath, FIXTURE, 'purge', JSON.stringify({ addresses: ['100.64.0.1'], sweep: null })],
      { enter: 'nsenter', timeoutMs: 60_000 },
    );
    const outcome = JSON.parse(stdout) as Outcome;
    expect(outcome).toMatchObject({ error: { kind: 'unavailable', message: expect.stringContaining('EPERM') } });
    expect(outcome).toMatchObject({ error: { message: expect.stringContaining('CAP_NET_ADMIN') } });
  });

  it('reaps exactly the entries reapMatches takes: TCP flows in TIME_WAIT or CLOSE, of the sources given (IPv4) or (null) of any, IPv4 and IPv6', async () => {
    // Every state conntrack(8) inserts, from two clients, another client address and the
    // provider's own address, and from two IPv6 addresses (the provider's flows to an IPv6
    // upstream resolver), and a UDP flow of each: made with `conntrack -I`, as the kernel keeps them.
    const states = TCP_CONNTRACK_STATES.filter((state) => state !== 'NONE' && state !== 'SYN_SENT2');
    const sources: { family: 4 | 6; source: string; destination: string }[] = [
      ...['100.64.0.1', '100.64.0.2', '100.64.0.4', '192.0.2.1'].map((source) => ({ family: 4 as const, source, destination: '192.0.2.10' })),
      ...['2001:db8::1', '2001:db8::2'].map((source) => ({ family: 6 as const, source, destination: '2001:db8::53' })),
    ];
    const made: { family: 4 | 6; protocol: number; tcpState: TcpConntrackState | null; originalSource: string; dport: number }[] = [];
    let dport = 3000;
    for (const { family, source, destination } of sources) {
      for (const tcpState of [...states, null]) {
        dport += 1;
        const protocol = tcpState === null ? ['-p', 'udp'] : ['-p', 'tcp', '--state', tcpState];
        // The family is the addresses' (conntrack -I takes no -f).
        await ns.exec(['conntrack', '-I', ...protocol, '-s', source, '-d', destination, '--sport', '1000', '--dport', String(dport), '-t', '300']);
        made.push({ family, protocol: tcpState === null ? IPPROTO_UDP : IPPROTO_TCP, tcpState, originalSource: source, dport });
      }
    }
    // Both families (conntrack -L lists both).
    const left = async (): Promise<number[]> => {
      const listing = (await ns.exec(['conntrack', '-L'])).stdout;
      return [...listing.matchAll(/^\S+\s+\d+\s+\d+\s.*?src=\S+ dst=\S+ sport=1000 dport=(\d+)/gm)].map((match) => Number(match[1])).sort();
    };
    expect(await left()).toEqual(made.map((entry) => entry.dport).sort());
    // Two sources first: their closed flows only, from a dump of the IPv4 table.
    const some = closedFlowFilter(['100.64.0.1', '100.64.0.2']);
    const reaped = made.filter((entry) => reapMatches(some, entry));
    expect(reaped).toHaveLength(4);
    expect(await reap(some)).toMatchObject({ result: { scanned: made.filter((entry) => entry.family === 4).length, deleted: reaped.length } });
    const afterSome = made.filter((entry) => !reapMatches(some, entry));
    expect(await left()).toEqual(afterSome.map((entry) => entry.dport).sort());
    // Then any source (the reaper's): the other sources' closed flows, of both families, nothing else.
    const rest = afterSome.filter((entry) => reapMatches(ANY_CLOSED_FLOW, entry));
    expect(rest.map((entry) => entry.originalSource).sort()).toEqual(['100.64.0.4', '100.64.0.4', '192.0.2.1', '192.0.2.1', '2001:db8::1', '2001:db8::1', '2001:db8::2', '2001:db8::2']);
    expect(await reap(ANY_CLOSED_FLOW)).toMatchObject({ result: { scanned: afterSome.length, deleted: rest.length } });
    const kept = afterSome.filter((entry) => !reapMatches(ANY_CLOSED_FLOW, entry));
    expect(kept.filter((entry) => entry.family === 6)).toHaveLength(2 * (states.length - 2 + 1));
    expect(await left()).toEqual(kept.map((entry) => entry.dport).sort());
    // An empty list of sources is no source, not any.
    expect(await reap(closedFlowFilter([]))).toMatchObject({ result: { scanned: 0, deleted: 0 } });
  });

  it('deletes by the family, original tuple and zone: ICMP, a protocol it knows no ports of, entries in a zone (both directions or the original only), for a purge and a reap', async () => {
    // The client's, which a purge of 100.64.0.1 deletes.
    await insert(['-p', 'icmp', '-s', '100.64.0.1', '-d', '192.0.2.10', '--icmp-type', '8', '--icmp-code', '0', '--icmp-id', '77']);
    await insert(['-p', '253', '-s', '100.64.0.1', '-d', '192.0.2.10']);
    await insert(['-p', 'udp', '-s', '100.64.0.1', '-d', '192.0.2.10', '--sport', '1000', '--dport', '5', '--zone', '7']);
    await insert(['-p', 'udp', '-s', '100.64.0.1', '-d', '192.0.2.10', '--sport', '1000', '--dport', '6', '--orig-zone', '9']);
    // Another's, alike: kept by the purge, and by the reap but for its closed TCP flows (in zones).
    await insert(['-p', 'icmp', '-s', '192.0.2.1', '-d', '192.0.2.10', '--icmp-type', '8', '--icmp-code', '0', '--icmp-id', '77']);
    await insert(['-p', 'udp', '-s', '192.0.2.1', '-d', '192.0.2.10', '--sport', '1000', '--dport', '5', '--zone', '7']);
    await insert(['-p', 'tcp', '--state', 'TIME_WAIT', '-s', '192.0.2.1', '-d', '192.0.2.10', '--sport', '1000', '--dport', '8', '--zone', '3']);
    await insert(['-p', 'tcp', '--state', 'CLOSE', '-s', '192.0.2.1', '-d', '192.0.2.10', '--sport', '1000', '--dport', '9', '--orig-zone', '4']);
    const before = await listing();
    expect(before).toHaveLength(8);
    expect(before.filter((line) => line.includes('zone'))).toHaveLength(5);
    expect(await purge({ addresses: ['100.64.0.1'], sweep: null })).toMatchObject({ result: { scanned: 8, deleted: 4 } });
    const others = before.filter((line) => !line.includes('src=100.64.0.1 '));
    expect(others).toHaveLength(4);
    expect(await listing()).toEqual(others);
    expect(await reap(ANY_CLOSED_FLOW)).toMatchObject({ result: { deleted: 2 } });
    expect(await listing()).toEqual(others.filter((line) => !line.startsWith('tcp')));
  });

  it("names the entry's id in a reap's delete (an entry that is no longer the one dumped stays), not in a purge's", async () => {
    // The shim inverts each delete's id, as if another entry had taken the tuple since the dump.
    for (const dport of [4101, 4102, 4103]) await insert(['-p', 'tcp', '--state', 'TIME_WAIT', '-s', '100.64.0.1', '-d', '192.0.2.10', '--sport', '1000', '--dport', String(dport)]);
    await withShim(WRONG_ID_SHIM_SOURCE, async (shim, scratch) => {
      const log = join(scratch, 'ids.log');
      const env = { ...process.env, LD_PRELOAD: shim, NETLINK_WRONG_ID_LOG: log };
      // ENOENT for each: not deleted, and no error.
      expect(await reap(ANY_CLOSED_FLOW, env)).toMatchObject({ result: { deleted: 0 } });
      expect((await readFile(log, 'utf8')).split('\n').filter((line) => line === 'id')).toHaveLength(3);
      expect(await listing()).toHaveLength(3);
      // A purge deletes whatever entry has the tuple: no id to invert.
      const { stdout } = await ns.exec([process.execPath, FIXTURE, 'purge', JSON.stringify({ addresses: ['100.64.0.1'], sweep: null })], { enter: 'nsenter', timeoutMs: 60_000, env });
      expect(JSON.parse(stdout) as Outcome).toMatchObject({ result: { scanned: 3, deleted: 3 } });
      expect((await readFile(log, 'utf8')).split('\n').filter((line) => line === 'id')).toHaveLength(3);
      expect(await listing()).toEqual([]);
    });
  });

  it('ends a reap at the first delete whose answer timed out (EAGAIN), rather than wait as long for each entry matched', async () => {
    // A shim (LD_PRELOAD) makes each delete's answer time out at once, as a stuck ctnetlink socket's
    // would after 10 s: the dump goes as usual. Waiting again for each further entry would hold the
    // reap (no JS timeout) and its pool thread for 10 s per entry matched.
    await withShim(SHIM_SOURCE, async (shim, scratch) => {
      const log = join(scratch, 'recv.log');
      for (const dport of [4001, 4002, 4003, 4004, 4005]) {
        await insert(['-p', 'tcp', '--state', 'TIME_WAIT', '-s', '100.64.0.1', '-d', '192.0.2.10', '--sport', '1000', '--dport', String(dport)]);
      }
      const outcome = await reap(ANY_CLOSED_FLOW, { ...process.env, LD_PRELOAD: shim, NETLINK_RECV_TIMEOUT_LOG: log });
      expect(outcome).toMatchObject({ error: { kind: 'timeout', message: expect.stringMatching(/^the kernel did not answer a conntrack request within 10 s \(EAGAIN; \d+ entries read, 5 matched, 0 deleted\)/) } });
      // One delete sent (the kernel carried it out: its answer was what "timed out"), then none.
      expect((await readFile(log, 'utf8')).split('\n').filter((line) => line === 'recv')).toHaveLength(1);
      const left = (await ns.exec(['conntrack', '-L', '-p', 'tcp'])).stdout;
      expect([...left.matchAll(/dport=(400\d)/g)].map((match) => match[1])).toHaveLength(4);
    });
  });

  it('refuses an address that is not IPv4, saying which', async () => {
    expect(await purge({ addresses: ['100.64.0.300'], sweep: null })).toEqual({
      error: { kind: 'address', message: 'address "100.64.0.300" is not an IPv4 address like 100.64.0.1' },
    });
  });
});

describe('ConntrackPurger', () => {
  /** An addon whose calls end only when the test says so. */
  function stuckAddon(): { addon: ConntrackAddon; calls: (() => void)[] } {
    const calls: (() => void)[] = [];
    return {
      addon: {
        purge: (_exact, _network, _prefix, _keep, callback) => void calls.push(() => callback(null, null, 3, 1, 1)),
        reap: (_sources, _states, callback) => void calls.push(() => callback(null, null, 3, 1, 1)),
      },
      calls,
    };
  }
  const FILTER: ConntrackFilter = { addresses: ['100.64.0.1'], sweep: null };

  it('starts no purge while one that timed out still runs (busy, at once), and starts again once it ended', async () => {
    const { addon, calls } = stuckAddon();
    const purger = new ConntrackPurger(addon);
    await expect(purger.purge(FILTER, 20)).rejects.toMatchObject({ kind: 'timeout' });
    const second = purger.purge(FILTER, 20).catch((error: unknown) => error);
    expect(await second).toBeInstanceOf(ConntrackError);
    expect(await second).toMatchObject({ kind: 'busy', message: expect.stringMatching(/^an earlier purge is still running/) });
    expect(calls).toHaveLength(1);
    calls[0]?.();
    await new Promise((resolve) => setImmediate(resolve));
    const third = purger.purge(FILTER, 1000);
    expect(calls).toHaveLength(2);
    calls[1]?.();
    expect(await third).toEqual({ scanned: 3, deleted: 1 });
  });
});
