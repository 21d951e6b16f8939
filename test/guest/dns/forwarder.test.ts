import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { UDP_SETTLED_MS } from '../../../guest/dns/forwarder.js';
import { createHarness, describeNetns, type Harness, type NetnsProcess } from '../../harness/index.js';
import {
  BIG_TXT_CHUNK,
  BIG_TXT_CHUNKS,
  CLIENT_IP,
  DEAD_UPSTREAM,
  FLOOD_CLIENT_IP,
  ForwarderProcess,
  NUMBERED_NAMES,
  PROVIDER_UPLINK_IP,
  UPSTREAM_A,
  UPSTREAM_B,
  buildTopology,
  compiled,
  eventually,
  replaceResolvConf,
  requireDnsTools,
  startUpstream,
  type DnsTopology,
} from './dns-topology.js';

const QUERY_SOURCES = ['test/guest/dns/fixtures/query'];
const BIG_UPSTREAM_SOURCES = ['test/guest/dns/fixtures/big-upstream'];
const TIMEOUT_MS = 500;
const RATE = { perSecond: 100, burst: 200 };

/** A query as the fixture client and the raw-packet checks build it. */
function query(name: string, id: number, options: { qtype?: number; flags?: number; qdcount?: number } = {}): string {
  const header = Buffer.from([id >> 8, id & 0xff, (options.flags ?? 0x0100) >> 8, (options.flags ?? 0x0100) & 0xff, 0, options.qdcount ?? 1, 0, 0, 0, 0, 0, 0]);
  const labels = name.split('.').map((label) => Buffer.concat([Buffer.from([label.length]), Buffer.from(label)]));
  const qtype = options.qtype ?? 1;
  return Buffer.concat([header, ...labels, Buffer.from([0, qtype >> 8, qtype & 0xff, 0, 1])]).toString('hex');
}

function rcodeOfHex(hex: string | null): number | null {
  return hex === null ? null : Buffer.from(hex, 'hex').readUInt8(3) & 0x0f;
}

/**
 * A DNS-over-TCP client as scripts and some stub resolvers behave, for the namespace tests:
 *   half-close PORT NAMES  writes a query per name (ids 0x100, 0x101, ...) in one go, shuts down
 *       its sending side (FIN) and reads until the forwarder closes; prints
 *       {"answers": [[id, address]...], "end": "eof"|"reset"|"timeout", "ms"}
 *   trickle PORT NAMES     sends the first name's framed query a byte a second; prints
 *       {"closedAfterMs": ms | null} (null: still open after 8 s)
 *   steady PORT NAMES      sends one query every 0.5 s for each name in turn on one connection,
 *       reading each answer; prints {"answers": [[id, address]...], "end": ...}
 *   ask-then-wait PORT NAMES  sends the first name's query, then reads until the forwarder closes;
 *       prints {"answers", "end": "eof"|"reset"|"timeout", "bytes"} (bytes: all it read)
 *   slow-read PORT NAMES   as ask-then-wait, but with a receive buffer of a few KB, and reading
 *       nothing for its first 1.5 s: an answer larger than that waits in the forwarder's kernel
 * An empty name is a header asking no question, which the forwarder answers FORMERR.
 */
const TCP_CLIENT = `
import json, socket, struct, sys, time
mode, port, names = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(',')
def framed(name, ident):
    q = struct.pack('>HHHHHH', ident, 0x0100, 1 if name else 0, 0, 0, 0)
    if name:
        q += b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\\0\\0\\1\\0\\1'
    return struct.pack('>H', len(q)) + q
def answers_of(data):
    answers = []
    while len(data) >= 2 and len(data) >= 2 + struct.unpack('>H', data[:2])[0]:
        length = struct.unpack('>H', data[:2])[0]
        message, data = data[2:2 + length], data[2 + length:]
        answers.append([struct.unpack('>H', message[:2])[0], '.'.join(str(b) for b in message[-4:])])
    return answers
def read_until_closed():
    data, end = b'', 'eof'
    try:
        while chunk := s.recv(65536):
            data += chunk
    except socket.timeout:
        end = 'timeout'
    except ConnectionResetError:
        end = 'reset'
    return data, end
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
if mode == 'slow-read':
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
s.settimeout(5)
s.connect(('169.254.0.1', port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
started = time.monotonic()
ms = lambda: round((time.monotonic() - started) * 1000)
if mode == 'trickle':
    s.settimeout(1)
    closed = None
    for byte in framed(names[0], 0x100):
        try:
            s.send(bytes([byte]))
            if s.recv(1) == b'':
                closed = ms()
                break
        except socket.timeout:
            pass
        except OSError:
            closed = ms()
            break
        if ms() > 8000:
            break
    print(json.dumps({'closedAfterMs': closed}))
    sys.exit(0)
data, end = b'', 'eof'
if mode == 'half-close':
    s.sendall(b''.join(framed(name, 0x100 + i) for i, name in enumerate(names)))
    s.shutdown(socket.SHUT_WR)
    data, end = read_until_closed()
elif mode in ('ask-then-wait', 'slow-read'):
    s.sendall(framed(names[0], 0x100))
    if mode == 'slow-read':
        time.sleep(1.5)
    data, end = read_until_closed()
    print(json.dumps({'answers': answers_of(data), 'end': end, 'bytes': len(data)}))
    sys.exit(0)
else:
    for i, name in enumerate(names):
        s.sendall(framed(name, 0x100 + i))
        want = len(answers_of(data)) + 1
        try:
            while len(answers_of(data)) < want:
                chunk = s.recv(65536)
                if chunk == b'':
                    end = 'closed'
                    break
                data += chunk
        except OSError:
            end = 'error'
        if end != 'eof':
            break
        time.sleep(0.5)
print(json.dumps({'answers': answers_of(data), 'end': end, 'ms': ms()}))
`;

/**
 * An upstream over TCP at 192.0.2.1:`port` answering every query with an A record, 192.0.2.77:
 * at once, or after `delayMs` (its answers still on their way when a client's FIN reaches the
 * forwarder); names containing `neverAnswered` it never answers.
 */
function tcpUpstreamScript(port: number, options: { delayMs?: number; neverAnswered?: string } = {}): string {
  const send = 'socket.write(Buffer.concat([length, answer]))';
  return `const net = require('node:net');
    net.createServer((socket) => {
      let buffered = Buffer.alloc(0);
      socket.on('error', () => undefined);
      socket.on('data', (chunk) => {
        buffered = Buffer.concat([buffered, chunk]);
        while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
          const query = buffered.subarray(2, 2 + buffered.readUInt16BE(0));
          buffered = buffered.subarray(2 + query.length);${options.neverAnswered === undefined ? '' : `
          if (query.includes(${JSON.stringify(options.neverAnswered)})) continue;`}
          const record = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 77]);
          const answer = Buffer.concat([query, record]); answer[2] |= 0x80; answer[3] |= 0x80; answer.writeUInt16BE(1, 6);
          const length = Buffer.alloc(2); length.writeUInt16BE(answer.length, 0);
          ${options.delayMs === undefined ? `${send};` : `setTimeout(() => ${send}, ${options.delayMs});`}
        }
      });
    }).listen(${port}, '192.0.2.1', () => process.stdout.write('ready\\n'));`;
}

describeNetns('DNS forwarder between a client and upstream resolvers', () => {
  let harness: Harness;
  let net: DnsTopology;
  let forwarder: ForwarderProcess;
  let confDir: string;
  let queryFixture: string;
  const upstreams: NetnsProcess[] = [];

  function dig(args: readonly string[], server = '169.254.0.1'): Promise<string> {
    return net.client.exec(['dig', `@${server}`, '+time=3', '+tries=1', ...args]).then((result) => result.stdout);
  }

  async function runQueryFixture(request: Record<string, unknown>): Promise<unknown> {
    const { stdout } = await net.client.exec([process.execPath, queryFixture, JSON.stringify({ server: '169.254.0.1', port: 53, ...request })]);
    return JSON.parse(stdout) as unknown;
  }


  beforeAll(async () => {
    requireDnsTools();
    [queryFixture = ''] = compiled(QUERY_SOURCES);
    harness = createHarness('dns');
    net = await buildTopology(harness);
    upstreams.push(startUpstream(net.internet, UPSTREAM_A, 'A'), startUpstream(net.internet, UPSTREAM_B, 'B'));
    confDir = mkdtempSync(join(tmpdir(), 'spectrum-dns-'));
    writeFileSync(join(confDir, 'resolv.conf'), `# written by the test\nsearch test.example\nnameserver ${UPSTREAM_A}\n`);
    // Both upstreams answer before the forwarder starts.
    await eventually('the upstream resolvers', async () => {
      const results = await Promise.all(
        [UPSTREAM_A, UPSTREAM_B].map((upstream) =>
          net.provider.exec(['dig', `@${upstream}`, '+time=1', '+tries=1', '+short', 'www.test.example'], { allowFailure: true }),
        ),
      );
      return results.every((result) => /192\.0\.2\.8/.test(result.stdout));
    });
    forwarder = await ForwarderProcess.start(net.provider, {
      resolvConfPath: join(confDir, 'resolv.conf'),
      timeoutMs: TIMEOUT_MS,
      // A query no upstream answers gets SERVFAIL within dig's wait (the default, 4 s, is not).
      queryTimeoutMs: 2 * TIMEOUT_MS,
      ratePerClient: RATE,
    });
  });

  afterAll(async () => {
    await harness?.cleanup();
    if (confDir !== undefined) rmSync(confDir, { recursive: true, force: true });
  });

  it('resolves a name through the forwarder on the gateway address', async () => {
    expect((await forwarder.counters())['listening']).toBe(true);
    expect((await dig(['+short', 'www.test.example'])).trim()).toBe('192.0.2.80');
    expect(await forwarder.counter('answered')).toBeGreaterThanOrEqual(1);
  });

  it('asks each upstream from 64 ports the kernel chose, a random one per query (RFC 5452)', async () => {
    // nftables in the upstreams' namespace records the source port of every query reaching them.
    const table = `table inet ${harness.prefix.replace(/-/g, '_')}ports`;
    await net.internet.exec(['nft', '-f', '-'], {
      input: `${table} {\n set ports { type inet_service; flags dynamic; }\n chain seen { type filter hook input priority 0; ip saddr ${PROVIDER_UPLINK_IP} udp dport 53 add @ports { udp sport }; }\n}\n`,
    });
    try {
      const names = Array.from({ length: NUMBERED_NAMES }, (_, i) => `n${i}.test.example`);
      const results = (await runQueryFixture({ mode: 'same-id', names, id: 0x4321 })) as ({ address: string | null } | null)[];
      expect(results.filter((result) => result?.address !== null)).toHaveLength(NUMBERED_NAMES);
      const listed = JSON.parse((await net.internet.exec(['nft', '-j', 'list', 'set', 'inet', table.split(' ')[2] ?? '', 'ports'])).stdout) as {
        nftables: { set?: { elem?: unknown[] } }[];
      };
      const ports = listed.nftables.find((entry) => entry.set !== undefined)?.set?.elem ?? [];
      // 32 queries over 64 ports: about 25 distinct on average; one fixed port would give 1.
      expect(ports.length).toBeGreaterThanOrEqual(12);
      const sockets = await net.provider.exec(['ss', '-Hun', 'state', 'established', 'dst', `${UPSTREAM_A}:53`]);
      expect(sockets.stdout.trim().split('\n')).toHaveLength(64);
    } finally {
      await net.internet.exec(['nft', 'delete', ...table.split(' ')]);
    }
  });

  /**
   * Run `body` with a scripted upstream at `address` as the only nameserver: `script` (for
   * `node -e`) binds UDP port 53 there and prints "ready". Upstream A is restored afterwards.
   */
  async function withScriptedUpstream(address: string, script: string, body: (upstream: NetnsProcess) => Promise<void>): Promise<void> {
    const onlyUpstream = async (upstream: string): Promise<void> => {
      await eventually('the reload', async () => JSON.stringify((await forwarder.counters())['upstreams']) === JSON.stringify([`${upstream}:53`]));
    };
    await harness.addAddress(net.internet, 'inet0', `${address}/24`);
    const upstream = net.internet.spawn([process.execPath, '-e', script]);
    try {
      await upstream.waitForOutput(/^ready$/m);
      replaceResolvConf(confDir, `nameserver ${address}\n`);
      await onlyUpstream(address);
      await body(upstream);
    } finally {
      await upstream.kill();
      await net.internet.ip(['address', 'del', `${address}/24`, 'dev', 'inet0']);
      replaceResolvConf(confDir, `nameserver ${UPSTREAM_A}\n`);
      await onlyUpstream(UPSTREAM_A);
    }
  }

  it("takes no answer that arrives on another of the upstream's ports than its query left from", async () => {
    // A forger at the upstream's address that sees our queries (the strongest off-link attacker:
    // it knows the id and the question) answers each one to every port it saw before, not to the
    // port the query came from. Without the port check the first such answer would be taken.
    const forging = '192.0.2.55';
    const script = `const socket = require('node:dgram').createSocket('udp4'); const seen = new Set();
       socket.on('message', (query, from) => {
         const answer = Buffer.from(query); answer[2] |= 0x80;
         const others = [...seen].filter((port) => port !== from.port); seen.add(from.port);
         for (const port of others) socket.send(answer, port, from.address);
         process.stdout.write('forged ' + others.length + '\\n');
       });
       socket.bind(53, '${forging}', () => process.stdout.write('ready\\n'));`;
    await withScriptedUpstream(forging, script, async (forger) => {
      const rejected = await forwarder.counter('upstreamRejected');
      let forged = 0;
      for (let attempt = 0; attempt < 6 && forged < 2; attempt++) {
        const answer = await dig([`n${attempt}.test.example`]);
        expect(answer).toMatch(/status: SERVFAIL/);
        forged = [...forger.stdout.matchAll(/^forged (\d+)$/gm)].reduce((sum, match) => sum + Number(match[1]), 0);
      }
      expect(forged).toBeGreaterThanOrEqual(2);
      expect((await forwarder.counter('upstreamRejected')) - rejected).toBe(forged);
    });
  });

  it('sends a query again when its answer is late, after a few round trips, not the whole timeout', async () => {
    // An upstream that ignores the first copy of every query for lose-*.test.example and answers
    // everything else at once (NOERROR, no records): only a resend gets those answered.
    const lossy = '192.0.2.56';
    const script = `const socket = require('node:dgram').createSocket('udp4'); const seen = new Set();
       socket.on('message', (query, from) => {
         const key = query.toString('hex');
         if (query.includes('lose-') && !seen.has(key)) { seen.add(key); process.stdout.write('ignored\\n'); return; }
         const answer = Buffer.from(query); answer[2] |= 0x80; answer[3] |= 0x80;
         socket.send(answer, from.port, from.address);
       });
       socket.bind(53, '${lossy}', () => process.stdout.write('ready\\n'));`;
    await withScriptedUpstream(lossy, script, async (upstream) => {
      // Round trips to learn from (answered at the first try); then the lost ones.
      for (let i = 0; i < 3; i++) expect(await dig([`warm-${i}.test.example`])).toMatch(/status: NOERROR/);
      const before = await forwarder.counters();
      for (let i = 0; i < 3; i++) {
        const answer = await dig([`lose-${i}.test.example`]);
        expect(answer).toMatch(/status: NOERROR/);
        // Resent after the 100 ms floor, well inside the 500 ms this upstream gets.
        expect(Number(/Query time: (\d+) msec/.exec(answer)?.[1])).toBeLessThan(TIMEOUT_MS - 100);
      }
      const after = await forwarder.counters();
      expect(Number(after['retransmits']) - Number(before['retransmits'])).toBe(3);
      expect(after['failed']).toBe(before['failed']);
      expect(after['upstreamTimeouts']).toBe(before['upstreamTimeouts']);
      expect([...upstream.stdout.matchAll(/^ignored$/gm)]).toHaveLength(3);
    });
  });

  it('reads answers on every upstream port again after the upstream was down (ICMP port unreachable)', async () => {
    // While the upstream is down, its host answers queries with ICMP port unreachable, each for
    // the port the query left from; once it is back, answers must be read on all of them.
    const restarting = '192.0.2.57';
    const script = `const socket = require('node:dgram').createSocket('udp4');
       socket.on('message', (query, from) => {
         const record = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 77]);
         const answer = Buffer.concat([query, record]); answer[2] |= 0x80; answer[3] |= 0x80; answer.writeUInt16BE(1, 6);
         socket.send(answer, from.port, from.address);
       });
       socket.bind(53, '${restarting}', () => process.stdout.write('ready\\n'));`;
    await withScriptedUpstream(restarting, script, async (first) => {
      const names = (prefix: string): string[] => Array.from({ length: 64 }, (_, i) => `${prefix}-${i}.test.example`);
      expect((await runQueryFixture({ mode: 'same-id', names: names('before'), id: 0x2222 })) as unknown[]).toEqual(
        names('before').map((name) => ({ name, id: 0x2222, address: '192.0.2.77' })),
      );
      await first.kill();
      const errors = await forwarder.counter('sendErrors');
      await runQueryFixture({ mode: 'same-id', names: names('down'), id: 0x3333 });
      // The host refused some of them (its ICMP rate limit lets a few through): the case to test.
      expect(await forwarder.counter('sendErrors')).toBeGreaterThan(errors);
      const again = net.internet.spawn([process.execPath, '-e', script]);
      try {
        await again.waitForOutput(/^ready$/m);
        expect((await runQueryFixture({ mode: 'same-id', names: names('after'), id: 0x4444 })) as unknown[]).toEqual(
          names('after').map((name) => ({ name, id: 0x4444, address: '192.0.2.77' })),
        );
      } finally {
        await again.kill();
      }
    });
  });

  it('gives concurrent queries carrying the same client id each their own answer', async () => {
    const names = Array.from({ length: NUMBERED_NAMES }, (_, i) => `n${i}.test.example`);
    const results = (await runQueryFixture({ mode: 'same-id', names, id: 0x1234 })) as ({ name: string; id: number; address: string | null } | null)[];
    expect(results).toEqual(names.map((name, i) => ({ name, id: 0x1234, address: `203.0.113.${100 + i}` })));
  });

  it('relays a truncated UDP answer, and the full answer when the client retries over TCP', async () => {
    const before = await forwarder.counter('tcpQueries');
    const output = await dig(['+noedns', 'big.test.example', 'TXT']);
    expect(output).toMatch(/Truncated, retrying in TCP mode/);
    const texts = output.match(new RegExp(`"${BIG_TXT_CHUNK}"`, 'g')) ?? [];
    expect(texts).toHaveLength(BIG_TXT_CHUNKS);
    expect(await forwarder.counter('tcpQueries')).toBe(before + 1);
  });

  it('ends each upstream TCP connection with a reset once the answer is read: no TIME_WAIT socket on the provider, its conntrack entry in CLOSE', async () => {
    // Conntrack tracks the provider's flows while a table of ours uses it.
    const table = `${harness.prefix.replace(/-/g, '_')}track`;
    await net.provider.exec(['nft', '-f', '-'], { input: `table ip ${table} {\n chain out { type filter hook output priority 0; ct state new counter; }\n}\n` });
    try {
      await net.provider.exec(['conntrack', '-D', '-p', 'tcp', '-d', UPSTREAM_A, '--dport', '53'], { allowFailure: true });
      const answered = await forwarder.counter('answered');
      // An answer of several segments over TCP, read whole before the reset.
      const output = await dig(['+tcp', 'big.test.example', 'TXT']);
      expect(output.match(new RegExp(`"${BIG_TXT_CHUNK}"`, 'g')) ?? []).toHaveLength(BIG_TXT_CHUNKS);
      expect(await forwarder.counter('answered')).toBe(answered + 1);
      // The forwarder's connection upstream, once over: CLOSE after a reset, TIME_WAIT after FINs.
      const states = async (): Promise<string[]> =>
        [...(await net.provider.exec(['conntrack', '-L', '-p', 'tcp', '-d', UPSTREAM_A, '--dport', '53'])).stdout.matchAll(/^tcp\s+6\s+\d+\s+(\S+)\s/gm)].map((match) => match[1] ?? '');
      let seen: string[] = [];
      await eventually('the upstream connection over', async () => {
        seen = await states();
        return seen.length === 1 && (seen[0] === 'CLOSE' || seen[0] === 'TIME_WAIT');
      });
      expect(seen).toEqual(['CLOSE']);
      // No socket of the provider's left toward the upstream's port 53, in TIME_WAIT or any state.
      expect((await net.provider.exec(['ss', '-Htan', 'state', 'time-wait', 'dst', `${UPSTREAM_A}:53`])).stdout.trim()).toBe('');
      expect((await net.provider.exec(['ss', '-Htan', 'dst', `${UPSTREAM_A}:53`])).stdout.trim()).toBe('');
    } finally {
      await net.provider.exec(['nft', 'delete', 'table', 'ip', table]);
    }
  });

  it('answers malformed queries with FORMERR/NOTIMP/REFUSED, drops junk, and survives fuzzing', async () => {
    const pointerName = `${query('www.test.example', 9).slice(0, 24)}c00c00000100 01`.replace(/ /g, '');
    const packets = [
      '0102030405', // shorter than a header: dropped
      query('www.test.example', 1, { flags: 0x8180 }), // a response: dropped
      query('www.test.example', 2, { flags: 0x1100 }), // opcode STATUS: NOTIMP
      query('www.test.example', 3, { qdcount: 2 }), // two questions: FORMERR
      query('www.test.example', 4).slice(0, 40), // name cut short: FORMERR
      pointerName, // compression pointer in the question: FORMERR
      query('test.example', 5, { qtype: 252 }), // AXFR: REFUSED
      query('www.test.example', 6), // still fine
    ];
    const replies = (await runQueryFixture({ mode: 'raw', packets })) as (string | null)[];
    expect(replies.map(rcodeOfHex)).toEqual([null, null, 4, 1, 1, 1, 5, 0]);
    // Our own answers keep the client's id.
    expect(replies.slice(2).map((hex) => (hex === null ? null : Buffer.from(hex, 'hex').readUInt16BE(0)))).toEqual([2, 3, 4, 9, 5, 6]);
    const limitedBefore = await forwarder.counter('rateLimited');
    await runQueryFixture({ mode: 'fuzz', count: 3000, seed: 42, bind: FLOOD_CLIENT_IP });
    const counters = await forwarder.counters();
    // The fuzzing client is rate limited too: only its first few hundred packets are inspected.
    expect(counters['malformed']).toBeGreaterThan(20);
    expect(counters['formErr']).toBeGreaterThan(20);
    expect(Number(counters['rateLimited']) - limitedBefore).toBeGreaterThan(1000);
    expect((await dig(['+short', 'www.test.example'])).trim()).toBe('192.0.2.80');
  });

  it('drops a flood from one client beyond its rate and counts it, while other clients are served', async () => {
    // Let the fuzzing client's bucket refill first.
    await new Promise((resolve) => setTimeout(resolve, (RATE.burst / RATE.perSecond) * 1000));
    const before = await forwarder.counter('rateLimited');
    const flood = (await runQueryFixture({ mode: 'flood', count: 3000, bind: FLOOD_CLIENT_IP })) as { sent: number; answers: number };
    // A full bucket plus a second and a half of refill at most (the fixture listens for ~1 s).
    expect(flood.answers).toBeGreaterThanOrEqual(RATE.burst);
    expect(flood.answers).toBeLessThanOrEqual(RATE.burst + 1.5 * RATE.perSecond);
    expect((await forwarder.counter('rateLimited')) - before).toBe(flood.sent - flood.answers);
    expect((await dig(['+short', 'www.test.example'])).trim()).toBe('192.0.2.80');
  });

  it('follows resolv.conf when it is replaced by rename', async () => {
    const reloads = await forwarder.counter('resolvConfReloads');
    replaceResolvConf(confDir, `nameserver ${UPSTREAM_B}\n`);
    await eventually('the reload', async () => (await forwarder.counter('resolvConfReloads')) > reloads);
    expect((await forwarder.counters())['upstreams']).toEqual([`${UPSTREAM_B}:53`]);
    expect((await dig(['+short', 'www.test.example'])).trim()).toBe('192.0.2.81');
  });

  it('follows what a symlinked resolv.conf resolves to: its target replaced by rename or written in place, the link re-pointed', async () => {
    // /etc/resolv.conf as resolvconf, systemd-resolved or a read-only root leave it: a symlink into
    // /run, here etc/resolv.conf -> ../run/resolv.conf. Only a change to the link was seen.
    const root = mkdtempSync(join(confDir, 'symlinked-'));
    for (const folder of ['etc', 'run/netvm']) mkdirSync(join(root, folder), { recursive: true });
    writeFileSync(join(root, 'run/resolv.conf'), `nameserver ${UPSTREAM_A}\n`);
    symlinkSync('../run/resolv.conf', join(root, 'etc/resolv.conf'));
    const linked = await ForwarderProcess.start(net.provider, { port: 5372, resolvConfPath: join(root, 'etc/resolv.conf'), timeoutMs: TIMEOUT_MS });
    try {
      const using = (upstream: string, how: string): Promise<number> =>
        eventually(how, async () => JSON.stringify((await linked.counters())['upstreams']) === JSON.stringify([`${upstream}:53`]));
      await using(UPSTREAM_A, 'the start');
      replaceResolvConf(join(root, 'run'), `nameserver ${UPSTREAM_B}\n`);
      await using(UPSTREAM_B, 'the target replaced by rename followed');
      expect((await dig(['-p', '5372', '+short', 'www.test.example'])).trim()).toBe('192.0.2.81');
      writeFileSync(join(root, 'run/resolv.conf'), `nameserver ${UPSTREAM_A}\n`);
      await using(UPSTREAM_A, 'the target written in place followed');
      expect((await dig(['-p', '5372', '+short', 'www.test.example'])).trim()).toBe('192.0.2.80');
      // Re-pointed as `ln -sfn` does it, to a file in another folder.
      writeFileSync(join(root, 'run/netvm/resolv.conf'), `nameserver ${UPSTREAM_B}\n`);
      symlinkSync('../run/netvm/resolv.conf', join(root, 'etc/.resolv.conf.new'));
      renameSync(join(root, 'etc/.resolv.conf.new'), join(root, 'etc/resolv.conf'));
      await using(UPSTREAM_B, 'the link re-pointed followed');
      writeFileSync(join(root, 'run/netvm/resolv.conf'), `nameserver ${UPSTREAM_A}\n`);
      await using(UPSTREAM_A, 'the new target written in place followed');
      const said = linked.process.stderr
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as { msg: string; upstreams?: string[] })
        .filter((line) => line.msg === 'upstream resolvers')
        .map((line) => line.upstreams);
      expect(said).toEqual([[`${UPSTREAM_A}:53`], [`${UPSTREAM_B}:53`], [`${UPSTREAM_A}:53`], [`${UPSTREAM_B}:53`], [`${UPSTREAM_A}:53`]]);
    } finally {
      await linked.process.kill();
    }
  });

  it('fails over to the second upstream when the first does not answer, within the timeout', async () => {
    replaceResolvConf(confDir, `nameserver ${DEAD_UPSTREAM}\nnameserver ${UPSTREAM_B}\n`);
    await eventually('the reload', async () => ((await forwarder.counters())['upstreams'] as string[]).length === 2);
    const timeouts = await forwarder.counter('upstreamTimeouts');
    const started = Date.now();
    expect((await dig(['+short', 'www.test.example'])).trim()).toBe('192.0.2.81');
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(TIMEOUT_MS - 50);
    expect(elapsed).toBeLessThan(TIMEOUT_MS + 1500);
    expect(await forwarder.counter('upstreamTimeouts')).toBe(timeouts + 1);
    // The upstream that answered is asked first from now on: no further wait.
    const again = await dig(['n1.test.example']);
    expect(again).toMatch(/198\.51\.100\.101/);
    expect(Number(/Query time: (\d+) msec/.exec(again)?.[1])).toBeLessThan(TIMEOUT_MS);
  });

  it("counts an upstream refusing a TCP connection (Node's 'error' event) as a socket's trouble (sendErrors), not as an upstream timeout", async () => {
    // The internet end's own address, where nothing listens: a TCP connection there is reset
    // (ECONNREFUSED). It was counted in upstreamTimeouts, as an upstream that said nothing.
    replaceResolvConf(confDir, `nameserver 192.0.2.1\nnameserver ${UPSTREAM_B}\n`);
    await eventually('the reload', async () => JSON.stringify((await forwarder.counters())['upstreams']) === JSON.stringify(['192.0.2.1:53', `${UPSTREAM_B}:53`]));
    const before = await forwarder.counters();
    expect((await dig(['+tcp', '+short', 'www.test.example'])).trim()).toBe('192.0.2.81');
    const after = await forwarder.counters();
    const grew = (name: string): number => Number(after[name]) - Number(before[name]);
    expect({ upstreamTimeouts: grew('upstreamTimeouts'), sendErrors: grew('sendErrors'), answered: grew('answered') }).toEqual({ upstreamTimeouts: 0, sendErrors: 1, answered: 1 });
    // The tests after this one find upstream B asked first, as the failover above left it.
    replaceResolvConf(confDir, `nameserver ${UPSTREAM_B}\n`);
    await eventually('the reload', async () => JSON.stringify((await forwarder.counters())['upstreams']) === JSON.stringify([`${UPSTREAM_B}:53`]));
  });

  it('says once why a TCP connection to a plain IPv4 upstream could not be opened, the agent out of file descriptors (EMFILE), not at every query nor at every failure after one opened, and again after a minute without one', async () => {
    const starved = await ForwarderProcess.start(net.provider, { port: 5370, upstreams: [UPSTREAM_A], timeoutMs: TIMEOUT_MS, manualClock: true });
    try {
      // The forwarder's own process (ip netns exec execs it): its limit of open files just above
      // what it holds, one descriptor free below it, which the client's connection takes. Node's
      // connect to the upstream then fails with EMFILE, an 'error' event (it does not throw): it
      // was counted in sendErrors and never said, while one through a zone or a link was.
      const pid = starved.process.pid;
      expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain('fixtures/forwarder');
      const prlimit = (...args: string[]): string => execFileSync('prlimit', ['--pid', String(pid), ...args], { encoding: 'utf8' });
      const limit = /^\s*(\d+)/.exec(prlimit('--nofile', '--noheadings', '--output', 'SOFT'))?.[1];
      if (limit === undefined) throw new Error('cannot read the limit of open files');
      const sendErrors = await starved.counter('sendErrors');
      const open = new Set(readdirSync(`/proc/${pid}/fd`).map(Number));
      let below = 0;
      for (let free = 0; free < 1; below += 1) if (!open.has(below)) free += 1;
      prlimit(`--nofile=${below}:`);
      try {
        for (let query = 0; query < 2; query++) expect(await dig(['-p', '5370', '+tcp', 'www.test.example'])).toMatch(/status: SERVFAIL/);
      } finally {
        prlimit(`--nofile=${limit}:`);
      }
      expect(await starved.counter('sendErrors')).toBe(sendErrors + 2);
      const said = starved.process.stderr.split('\n').filter((line) => line.includes('cannot open a TCP connection'));
      expect(said).toEqual([expect.stringContaining(`"upstream":"${UPSTREAM_A}:53"`)]);
      expect(said[0]).toContain('EMFILE');
      const starve = async (): Promise<void> => {
        prlimit(`--nofile=${below}:`);
        try {
          expect(await dig(['-p', '5370', '+tcp', 'www.test.example'])).toMatch(/status: SERVFAIL/);
        } finally {
          prlimit(`--nofile=${limit}:`);
        }
      };
      const asked = async (): Promise<void> => expect((await dig(['-p', '5370', '+tcp', '+short', 'www.test.example'])).trim()).toBe('192.0.2.80');
      // Its descriptors back, it is asked over TCP again.
      await asked();
      // Out of them again at once, as an agent at its limit is, connections opening and failing
      // in turn: the same episode, not said again (it was, at each failure after one opened).
      for (let round = 0; round < 2; round++) {
        await starve();
        await asked();
      }
      const saidNow = (): string[] => starved.process.stderr.split('\n').filter((line) => line.includes('cannot open a TCP connection'));
      expect(saidNow()).toEqual([expect.stringContaining('EMFILE')]);
      // A minute without a failure to open one, one opened: a new episode, said again (it was
      // said only once ever).
      await starved.advance(UDP_SETTLED_MS);
      await starve();
      expect(saidNow()).toEqual([expect.stringContaining('EMFILE'), expect.stringContaining('EMFILE')]);
    } finally {
      await starved.process.kill();
    }
  });

  it('takes a TCP connection to an upstream as opened when it opens, not when its exchange ends: one opened before failures to open, ending after them, starts no new episode of them', async () => {
    // An upstream on 192.0.2.1 that takes the connection and the query and holds them, unanswered,
    // until told; then it ends them (FIN).
    const script = `const net = require('node:net'); const held = [];
      net.createServer((socket) => {
        socket.on('error', () => undefined);
        held.push(socket);
        socket.once('data', () => process.stdout.write('held\\n'));
      }).listen(5308, '192.0.2.1', () => process.stdout.write('ready\\n'));
      process.stdin.on('data', () => { for (const socket of held) socket.end(); process.stdout.write('ended\\n'); });`;
    const holding = net.internet.spawn([process.execPath, '-e', script], { stdin: 'pipe' });
    await holding.waitForOutput(/^ready$/m);
    const held = await ForwarderProcess.start(net.provider, { port: 5371, upstreams: ['192.0.2.1:5308'], timeoutMs: 8000, manualClock: true });
    try {
      const pid = held.process.pid;
      expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain('fixtures/forwarder');
      const prlimit = (...args: string[]): string => execFileSync('prlimit', ['--pid', String(pid), ...args], { encoding: 'utf8' });
      const limit = /^\s*(\d+)/.exec(prlimit('--nofile', '--noheadings', '--output', 'SOFT'))?.[1];
      if (limit === undefined) throw new Error('cannot read the limit of open files');
      // As in the test above: one descriptor free below the limit, the client's connection's.
      const starve = async (): Promise<void> => {
        const open = new Set(readdirSync(`/proc/${pid}/fd`).map(Number));
        let below = 0;
        for (let free = 0; free < 1; below += 1) if (!open.has(below)) free += 1;
        prlimit(`--nofile=${below}:`);
        try {
          expect(await dig(['-p', '5371', '+tcp', 'www.test.example'])).toMatch(/status: SERVFAIL/);
        } finally {
          prlimit(`--nofile=${limit}:`);
        }
      };
      const said = (): string[] => held.process.stderr.split('\n').filter((line) => line.includes('cannot open a TCP connection'));
      // A connection opened, held; then the agent out of descriptors: said.
      const first = net.client.exec(['dig', '@169.254.0.1', '-p', '5371', '+tcp', '+time=10', '+tries=1', 'www.test.example']);
      await holding.waitForOutput(/^held$/m);
      await starve();
      expect(said()).toEqual([expect.stringContaining('EMFILE')]);
      // The held connection ends after that failure (the upstream's FIN): no connection opened since.
      holding.child.stdin?.write('end\n');
      expect((await first).stdout).toMatch(/status: SERVFAIL/);
      // A minute on, out of descriptors again: the same episode, not said again (it was, the
      // held connection's end taken for a connection opened since).
      await held.advance(UDP_SETTLED_MS);
      await starve();
      expect(said()).toEqual([expect.stringContaining('EMFILE')]);
    } finally {
      await held.process.kill();
      await holding.kill();
    }
  });

  it('moves a TCP query on at once past upstreams that take the connection and end it unanswered (FIN, reset), counting them in upstreamClosed, not as timeouts or send errors', async () => {
    // Two upstreams on 192.0.2.1 that read the query, then one closes (FIN), the other resets.
    // The FIN was counted as a timeout, the reset as a socket's error (sendErrors).
    const script = `const net = require('node:net'); let listening = 0;
      for (const [port, how] of [[5306, 'fin'], [5307, 'reset']]) {
        net.createServer((socket) => {
          socket.on('error', () => undefined);
          socket.once('data', () => { process.stdout.write(how + '\\n'); if (how === 'fin') socket.end(); else socket.resetAndDestroy(); });
        }).listen(port, '192.0.2.1', () => { if (++listening === 2) process.stdout.write('ready\\n'); });
      }`;
    const ending = net.internet.spawn([process.execPath, '-e', script]);
    await ending.waitForOutput(/^ready$/m);
    const timeoutMs = 4000;
    const moving = await ForwarderProcess.start(net.provider, { port: 5366, timeoutMs, upstreams: ['192.0.2.1:5306', '192.0.2.1:5307', UPSTREAM_B] });
    try {
      const before = await moving.counters();
      // dig waits longer than the forwarder's timeout: a wait for it would show in the query time.
      const { stdout } = await net.client.exec(['dig', '@169.254.0.1', '-p', '5366', '+tcp', '+time=10', '+tries=1', 'www.test.example']);
      expect(stdout).toMatch(/^www\.test\.example\.\s+\d+\s+IN\s+A\s+192\.0\.2\.81$/m);
      expect(Number(/Query time: (\d+) msec/.exec(stdout)?.[1])).toBeLessThan(timeoutMs);
      expect([...ending.stdout.matchAll(/^(fin|reset)$/gm)].map((match) => match[1])).toEqual(['fin', 'reset']);
      const after = await moving.counters();
      const grew = (name: string): number => Number(after[name]) - Number(before[name]);
      expect({ upstreamClosed: grew('upstreamClosed'), upstreamTimeouts: grew('upstreamTimeouts'), sendErrors: grew('sendErrors'), answered: grew('answered'), failed: grew('failed') }).toEqual({
        upstreamClosed: 2,
        upstreamTimeouts: 0,
        sendErrors: 0,
        answered: 1,
        failed: 0,
      });
    } finally {
      await moving.process.kill();
      await ending.kill();
    }
  });

  it('serves clients over IPv6 too (a listen address of that family), UDP and TCP, each client rate-limited as one host', async () => {
    // ::1 of the provider namespace: no address outside the namespace is used.
    const v6 = await ForwarderProcess.start(net.provider, { listen: '::1', port: 5354, upstreams: [UPSTREAM_A], ratePerClient: { perSecond: 1, burst: 2 } });
    try {
      const ask = async (tcp: boolean): Promise<string> =>
        (await net.provider.exec(['dig', '@::1', '-p', '5354', '+time=2', '+tries=1', ...(tcp ? ['+tcp'] : []), '+short', 'www.test.example'], { allowFailure: true })).stdout.trim();
      expect(await ask(false)).toBe('192.0.2.80');
      expect(await ask(true)).toBe('192.0.2.80');
      // The burst of 2 is spent by the UDP and the TCP query alike: the third is dropped.
      expect(await ask(false)).toMatch(/timed out/);
      const counters = await v6.counters();
      expect(counters['answered']).toBe(2);
      expect(counters['rateLimited']).toBe(1);
      // Another on the same address and port: what it says of them brackets the IPv6 address.
      const second = await ForwarderProcess.start(net.provider, { listen: '::1', port: 5354, upstreams: [UPSTREAM_A] });
      try {
        expect(String((await second.counters())['lastBindError'])).toMatch(/^EADDRINUSE: cannot bind UDP \[::1\]:5354: .* \(another DNS server already listens on \[::1\]:5354\)$/);
        expect(second.process.stderr).toContain('"listen":"[::1]:5354"');
      } finally {
        await second.process.kill();
      }
    } finally {
      await v6.process.kill();
    }
  });

  it('starts without its listen address, reports it, and serves after rebind() once the address exists', async () => {
    const late = await ForwarderProcess.start(net.provider, { listen: '169.254.0.2', upstreams: [UPSTREAM_A], timeoutMs: TIMEOUT_MS });
    const before = await late.counters();
    expect(before['listening']).toBe(false);
    expect(String(before['lastBindError'])).toMatch(/EADDRNOTAVAIL/);
    // Shown by `spectrum-netd status`: it says what will happen, in the operator's terms, not the API's.
    expect(String(before['lastBindError'])).toMatch(/169\.254\.0\.2 is not on any link yet; the forwarder listens once a provider link carries it/);
    expect(String(before['lastBindError'])).not.toMatch(/rebind/);
    expect((await late.rebind())['listening']).toBe(false);
    await harness.addAddress(net.provider, 'cl0', '169.254.0.2/32');
    const after = await late.rebind();
    expect(after['listening']).toBe(true);
    expect(after['bindFailures']).toBe(2);
    expect(after['lastBindError']).toBeNull();
    expect((await dig(['+short', 'www.test.example'], '169.254.0.2')).trim()).toBe('192.0.2.80');
    await late.process.kill();
  });

  it('closes idle TCP connections and refuses those beyond the cap', async () => {
    const capped = await ForwarderProcess.start(net.provider, { port: 5353, upstreams: [UPSTREAM_A], tcpIdleMs: 400, maxTcpConnections: 2 });
    const closedAfter = (await runQueryFixture({ mode: 'tcp-hold', port: 5353, count: 3 })) as (number | null)[];
    // The first two sit idle until the idle timeout; the third is closed at once.
    expect(closedAfter[0]).toBeGreaterThanOrEqual(350);
    expect(closedAfter[1]).toBeGreaterThanOrEqual(350);
    expect(closedAfter[2]).not.toBeNull();
    expect(closedAfter[2]).toBeLessThan(300);
    const counters = await capped.counters();
    expect(counters['tcpIdleClosed']).toBe(2);
    expect(counters['tcpRejected']).toBe(1);
    // Still serving over TCP afterwards.
    expect((await dig(['+tcp', '-p', '5353', '+short', 'www.test.example'])).trim()).toBe('192.0.2.80');
    await capped.process.kill();
  });

  it('refuses a client TCP connections beyond its own cap, while another client still gets one', async () => {
    const capped = await ForwarderProcess.start(net.provider, { port: 5355, upstreams: [UPSTREAM_A], tcpIdleMs: 1500, maxTcpConnections: 8, maxTcpConnectionsPerClient: 2 });
    try {
      const holding = runQueryFixture({ mode: 'tcp-hold', port: 5355, count: 3 }) as Promise<(number | null)[]>;
      // While the first client holds its two, the other gets its answer over TCP.
      await new Promise((resolve) => setTimeout(resolve, 400));
      expect((await dig(['+tcp', '-p', '5355', '-b', FLOOD_CLIENT_IP, '+short', 'www.test.example'])).trim()).toBe('192.0.2.80');
      const closedAfter = await holding;
      expect(closedAfter[0]).toBeGreaterThanOrEqual(1400);
      expect(closedAfter[1]).toBeGreaterThanOrEqual(1400);
      expect(closedAfter[2]).not.toBeNull();
      expect(closedAfter[2]).toBeLessThan(1000);
      expect(await capped.counter('tcpRejected')).toBe(1);
    } finally {
      await capped.process.kill();
    }
  });

  it('gives a client a TCP connection while a few clients hold them all, closing the oldest idle one of the client holding the most, never one of a client at its fair share', async () => {
    // An upstream over TCP answering every name at once but hang-*, which it never answers.
    const script = tcpUpstreamScript(5304, { neverAnswered: 'hang-' });
    const upstream = net.internet.spawn([process.execPath, '-e', script]);
    await upstream.waitForOutput(/^ready$/m);
    const [holderA, holderB, holderD] = ['100.64.0.21', '100.64.0.22', '100.64.0.24'];
    for (const address of [holderA, holderB, holderD]) {
      await harness.addAddress(net.client, 'eth0', `${address}/32`);
      await net.provider.ip(['route', 'add', `${address}/32`, 'dev', 'cl0']);
    }
    const fair = await ForwarderProcess.start(net.provider, {
      port: 5365,
      upstreams: ['192.0.2.1:5304'],
      timeoutMs: 8000,
      tcpIdleMs: 20_000,
      maxTcpConnections: 4,
      maxTcpConnectionsPerClient: 3,
    });
    try {
      /**
       * Connections from `bind`, opened 50 ms apart, each sending `send` (default half a length
       * prefix: idle); when each was closed, null for open to the end.
       */
      const hold = (bind: string, count: number, send?: string): Promise<(number | null)[]> =>
        runQueryFixture({ mode: 'tcp-hold', port: 5365, bind, count, holdMs: 5000, ...(send !== undefined && { send }) }) as Promise<(number | null)[]>;
      // A's oldest waits for the answer to a query (its other two are idle); then B's.
      const hanging = Buffer.from(query('hang-1.test.example', 0x77), 'hex');
      const framed = Buffer.concat([Buffer.from([hanging.length >> 8, hanging.length & 0xff]), hanging]).toString('hex');
      const busyA = hold(holderA, 1, framed);
      await eventually("A's query waiting upstream", async () => (await fair.counter('tcpQueries')) === 1);
      const idleA = hold(holderA, 2);
      await eventually("A's three open", async () => (await fair.counter('tcpConnections')) === 3);
      const heldB = hold(holderB, 1);
      await eventually('all four open', async () => (await fair.counter('tcpConnections')) === 4);
      // D, holding none: below its fair share (4 among 3 clients: 1), it takes the place of A's
      // oldest idle one (A holds the most). Its second is beyond its share: refused, closing no one's.
      const heldD = hold(holderD, 2);
      await eventually("D's second refused", async () => (await fair.counter('tcpRejected')) >= 1);
      // Another client still gets its answer over TCP (before, refused as all were taken): in
      // place of A's idle one left, A holding 2; B and D, at their share of 1, keep theirs.
      // (No EDNS: the upstream appends its answer to the query as it came.)
      expect((await dig(['+tcp', '+noedns', '-p', '5365', '-b', CLIENT_IP, '+short', 'www.test.example'])).trim()).toBe('192.0.2.77');
      const closed = (times: (number | null)[]): boolean[] => times.map((ms) => ms !== null);
      const [a0, a12, b, d] = await Promise.all([busyA, idleA, heldB, heldD]);
      expect({ a: closed([...a0, ...a12]), b: closed(b), d: closed(d) }).toEqual({ a: [false, true, true], b: [false], d: [false, true] });
      expect(await fair.counters()).toMatchObject({ tcpConnections: 6, tcpEvicted: 2, tcpRejected: 1, tcpIdleClosed: 0, answered: 1 });
    } finally {
      await fair.process.kill();
      await upstream.kill();
      for (const address of [holderA, holderB, holderD]) {
        await net.provider.ip(['route', 'del', `${address}/32`, 'dev', 'cl0']);
        await net.client.ip(['address', 'del', `${address}/32`, 'dev', 'eth0']);
      }
    }
  });

  it('closes no one\'s TCP connection for a connection reset before the forwarder took it, whose peer it cannot tell', async () => {
    const [holderA, holderB] = ['100.64.0.25', '100.64.0.26'];
    for (const address of [holderA, holderB]) {
      await harness.addAddress(net.client, 'eth0', `${address}/32`);
      await net.provider.ip(['route', 'add', `${address}/32`, 'dev', 'cl0']);
    }
    const fair = await ForwarderProcess.start(net.provider, { port: 5366, upstreams: [UPSTREAM_A], tcpIdleMs: 20_000, maxTcpConnections: 4, maxTcpConnectionsPerClient: 3 });
    let stopped = false;
    try {
      const hold = (bind: string): Promise<(number | null)[]> => runQueryFixture({ mode: 'tcp-hold', port: 5366, bind, count: 2, holdMs: 4000 }) as Promise<(number | null)[]>;
      // All four open, two each: A and B at their fair share (4 among 2), neither to lose one to the other.
      const heldA = hold(holderA);
      const heldB = hold(holderB);
      await eventually('all four open', async () => (await fair.counter('tcpConnections')) === 4);
      // While the forwarder is stopped, B opens three more and resets each: the kernel completes
      // the handshakes (the listen queue) and the resets, so the forwarder, let go on, accepts
      // connections already reset, whose peer address it cannot read (getpeername: ENOTCONN).
      // Taken as a client of their own (address ''), holding none, each took the place of one of A's or B's.
      process.kill(fair.process.pid, 'SIGSTOP');
      stopped = true;
      const reset = `const net = require('node:net'); let left = 3;
        for (let i = 0; i < 3; i++) {
          const socket = net.connect({ host: '169.254.0.1', port: 5366, localAddress: '${holderB}' });
          socket.on('error', () => undefined);
          socket.on('connect', () => { socket.resetAndDestroy(); if (--left === 0) setTimeout(() => process.stdout.write('reset\\n'), 200); });
        }`;
      const resetting = await net.client.exec([process.execPath, '-e', reset]);
      expect(resetting.stdout).toBe('reset\n');
      process.kill(fair.process.pid, 'SIGCONT');
      stopped = false;
      const counters = await fair.counters();
      expect({ tcpEvicted: counters['tcpEvicted'] }).toEqual({ tcpEvicted: 0 });
      const [a, b] = await Promise.all([heldA, heldB]);
      expect({ a, b }).toEqual({ a: [null, null], b: [null, null] });
    } finally {
      if (stopped) process.kill(fair.process.pid, 'SIGCONT');
      await fair.process.kill();
      for (const address of [holderA, holderB]) {
        await net.provider.ip(['route', 'del', `${address}/32`, 'dev', 'cl0']);
        await net.client.ip(['address', 'del', `${address}/32`, 'dev', 'eth0']);
      }
    }
  });

  it('closes a TCP connection at its first frame that is no query, freeing its client\'s slot, and keeps a pipelined stream open', async () => {
    const capped = await ForwarderProcess.start(net.provider, { port: 5363, upstreams: [UPSTREAM_A], maxTcpConnectionsPerClient: 2 });
    try {
      // Both of the client's slots taken by connections that each sent a 3-byte frame (shorter
      // than a DNS header) and stay open: without the close they held them for the idle timeout (10 s).
      const junk = runQueryFixture({ mode: 'tcp-hold', port: 5363, bind: CLIENT_IP, count: 2, send: '0003010203' }) as Promise<(number | null)[]>;
      await new Promise((resolve) => setTimeout(resolve, 400));
      expect((await dig(['+tcp', '-p', '5363', '-b', CLIENT_IP, '+short', 'www.test.example'])).trim()).toBe('192.0.2.80');
      const closedAfter = await junk;
      expect(closedAfter.every((ms) => ms !== null && ms < 1000), JSON.stringify(closedAfter)).toBe(true);
      expect(await capped.counters()).toMatchObject({ malformed: 2, tcpRejected: 0, tcpIdleClosed: 0 });
      // Queries pipelined on one connection, one of them a header asking no question (a query
      // with a usable id: answered FORMERR, as over UDP): every one answered, the connection kept
      // until the client's FIN.
      const result = await runTcpClient('half-close', 5363, ['n0.test.example', '', 'n1.test.example']);
      expect(result['end']).toBe('eof');
      expect((result['answers'] as [number, string][]).sort(([a], [b]) => a - b)).toEqual([[0x100, '203.0.113.100'], [0x101, '0.0.0.0'], [0x102, '203.0.113.101']]);
      expect(await capped.counters()).toMatchObject({ malformed: 2, formErr: 1 });
    } finally {
      await capped.process.kill();
    }
  });

  it('stops reading the queries of a TCP client that does not read its answers, and closes it when idle', async () => {
    const [bigUpstream = ''] = compiled(BIG_UPSTREAM_SOURCES);
    const upstream = net.internet.spawn([process.execPath, bigUpstream, JSON.stringify({ address: '192.0.2.1', port: 5300, size: 60_000 })]);
    await upstream.waitForOutput(/^ready$/m);
    const hoarded = await ForwarderProcess.start(net.provider, {
      port: 5356,
      upstreams: ['192.0.2.1:5300'],
      tcpIdleMs: 1000,
      ratePerClient: { perSecond: 100_000, burst: 100_000 },
    });
    try {
      // 2000 answers of 60 kB: 120 MB if the forwarder kept writing what the client never reads.
      await runQueryFixture({ mode: 'tcp-unread', port: 5356, count: 2000, holdMs: 4000 });
      const counters = await hoarded.counters();
      // Nothing moves once the buffers are full, so the idle timeout ends the connection.
      expect(counters['tcpIdleClosed']).toBe(1);
      // What the kernel's socket buffers hold (a few MB), not everything sent.
      expect(counters['tcpQueries']).toBeLessThan(1000);
    } finally {
      await hoarded.process.kill();
      await upstream.kill();
    }
  });

  it('keeps answering other clients while one streams junk frames over TCP as fast as it can', async () => {
    // Each 64 KiB the flooder sends holds 4,681 frames, each answered at once (FORMERR, or
    // nothing past the client's rate): handled all in one go, one chunk after another, frames
    // like these kept the forwarder from everything else for seconds.
    const flooded = await ForwarderProcess.start(net.provider, { port: 5358, upstreams: [UPSTREAM_A] });
    try {
      const result = (await runQueryFixture({
        mode: 'tcp-junk',
        port: 5358,
        bind: FLOOD_CLIENT_IP,
        count: 8,
        holdMs: 3000,
        probeFrom: CLIENT_IP,
        names: ['www.test.example'],
      })) as { writtenBytes: number; probes: (number | null)[] };
      expect(result.writtenBytes).toBeGreaterThan(1_000_000);
      expect(result.probes.length).toBeGreaterThanOrEqual(10);
      // Every probe answered, none after more than a moment (two cores, a test machine).
      expect(result.probes.filter((ms) => ms === null || ms > 500)).toEqual([]);
      // Still attentive afterwards: the counters come back at once.
      const started = Date.now();
      expect(await flooded.counter('tcpQueries')).toBeGreaterThan(100_000);
      expect(Date.now() - started).toBeLessThan(1000);
    } finally {
      await flooded.process.kill();
    }
  });

  it('answers SERVFAIL to a client beyond its share of pending queries, keeping room for the others', async () => {
    const shared = await ForwarderProcess.start(net.provider, {
      port: 5357,
      upstreams: [DEAD_UPSTREAM],
      timeoutMs: 4000,
      maxPending: 32,
      maxPendingPerClient: 16,
      ratePerClient: { perSecond: 100_000, burst: 100_000 },
    });
    try {
      // Names that never resolve (the upstream is dead) keep the first client's queries pending.
      const flood = (await runQueryFixture({ mode: 'flood', port: 5357, count: 40, bind: FLOOD_CLIENT_IP })) as { sent: number; answers: number };
      expect(flood.answers).toBe(40 - 16);
      // The other client's query waits for the upstream too, rather than being refused at once.
      const [reply] = (await runQueryFixture({ mode: 'raw', port: 5357, packets: [query('www.test.example', 0x77)] })) as (string | null)[];
      expect(reply).toBeNull();
      const counters = await shared.counters();
      expect(counters['pending']).toBe(17);
      expect(counters['overloaded']).toBe(24);
    } finally {
      await shared.process.kill();
    }
  });

  it('answers a client below its fair share of the pending table while a few clients fill it with names that never resolve', async () => {
    // An upstream that answers every name at once except hang-*, which it never answers: those
    // queries stay pending for the whole timeout, as names whose servers are down do.
    const hanging = '192.0.2.58';
    const script = `const socket = require('node:dgram').createSocket('udp4');
       socket.on('message', (query, from) => {
         if (query.includes('hang-')) return;
         const record = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 77]);
         const answer = Buffer.concat([query, record]); answer[2] |= 0x80; answer[3] |= 0x80; answer.writeUInt16BE(1, 6);
         socket.send(answer, from.port, from.address);
       });
       socket.bind(53, '${hanging}', () => process.stdout.write('ready\\n'));`;
    const hostile = ['100.64.0.11', '100.64.0.12', '100.64.0.13', '100.64.0.14'];
    for (const address of hostile) {
      await harness.addAddress(net.client, 'eth0', `${address}/32`);
      await net.provider.ip(['route', 'add', `${address}/32`, 'dev', 'cl0']);
    }
    await harness.addAddress(net.internet, 'inet0', `${hanging}/24`);
    const upstream = net.internet.spawn([process.execPath, '-e', script]);
    let fair: ForwarderProcess | undefined;
    try {
      await upstream.waitForOutput(/^ready$/m);
      fair = await ForwarderProcess.start(net.provider, {
        port: 5362,
        upstreams: [hanging],
        timeoutMs: 8000,
        maxPending: 64,
        maxPendingPerClient: 16,
        ratePerClient: { perSecond: 100_000, burst: 100_000 },
      });
      // Four clients take 16 places each, the whole table; their 4 further queries each are
      // beyond their own cap, answered SERVFAIL at once.
      const floods = (await Promise.all(
        hostile.map((bind) => runQueryFixture({ mode: 'flood', port: 5362, count: 20, bind, names: ['hang-1.test.example', 'hang-2.test.example'] })),
      )) as { sent: number; answers: number }[];
      expect(floods.map((flood) => flood.answers)).toEqual([4, 4, 4, 4]);
      expect(await fair.counter('pending')).toBe(64);
      // Another client, holding nothing of the table, is still served.
      const ask = (bind: string, names: readonly string[]): Promise<(string | null)[]> =>
        runQueryFixture({ mode: 'raw', port: 5362, bind, packets: names.map((name, i) => query(name, 0x50 + i)) }) as Promise<(string | null)[]>;
      const addressOf = (hex: string | null): string | null => (hex === null ? null : [...Buffer.from(hex, 'hex').subarray(-4)].join('.'));
      const honest = await ask(CLIENT_IP, ['www.test.example', 'n1.test.example']);
      expect(honest.map(rcodeOfHex)).toEqual([0, 0]);
      expect(honest.map(addressOf)).toEqual(['192.0.2.77', '192.0.2.77']);
      // The first found the table full and took the oldest place of a client holding the most
      // (that query answered SERVFAIL); the second found the place the first left.
      expect(await fair.counter('evicted')).toBe(1);
      // A fifth client asking for names that never resolve gets its fair share, 64 / 5 = 12 places,
      // taken from the four largest holders in turn; beyond it, it is refused, taking no one's place.
      const fifth = (await runQueryFixture({ mode: 'flood', port: 5362, count: 14, bind: FLOOD_CLIENT_IP, names: ['hang-3.test.example'] })) as { answers: number };
      expect(fifth.answers).toBe(2);
      let counters = await fair.counters();
      expect(counters['pending']).toBe(64);
      expect(counters['evicted']).toBe(1 + 11);
      expect(counters['overloaded']).toBe(4 * 4 + 2);
      // The first client is still served: six clients now, its share is 10.
      expect((await ask(CLIENT_IP, ['n2.test.example'])).map(addressOf)).toEqual(['192.0.2.77']);
      counters = await fair.counters();
      expect(counters['evicted']).toBe(13);
      expect(counters['answered']).toBe(3);
      expect(counters['failed']).toBe(0);
    } finally {
      await fair?.process.kill();
      await upstream.kill();
      await net.internet.ip(['address', 'del', `${hanging}/24`, 'dev', 'inet0']);
      for (const address of hostile) {
        await net.provider.ip(['route', 'del', `${address}/32`, 'dev', 'cl0']);
        await net.client.ip(['address', 'del', `${address}/32`, 'dev', 'eth0']);
      }
    }
  });

  async function runTcpClient(mode: 'half-close' | 'trickle' | 'steady' | 'ask-then-wait' | 'slow-read', port: number, names: readonly string[]): Promise<Record<string, unknown>> {
    const { stdout } = await net.client.exec(['python3', '-c', TCP_CLIENT, mode, String(port), names.join(',')], { timeoutMs: 20_000 });
    return JSON.parse(stdout) as Record<string, unknown>;
  }

  it('answers every query of a TCP client that half-closes after sending them, then closes', async () => {
    // `nc -N`, or a script calling shutdown(SHUT_WR) after writing: the FIN reaches us before the
    // answers, which the upstream sends 200 ms later. Once with all three queries relayed at once,
    // once with one at a time (the others still buffered, unread, when the FIN comes).
    const upstream = net.internet.spawn([process.execPath, '-e', tcpUpstreamScript(5302, { delayMs: 200 })]);
    await upstream.waitForOutput(/^ready$/m);
    // One connection per client: the second round is refused unless the first one's slot was freed.
    const options = { upstreams: ['192.0.2.1:5302'], tcpIdleMs: 5000, maxTcpConnectionsPerClient: 1 };
    const forwarders = [
      await ForwarderProcess.start(net.provider, { ...options, port: 5359 }),
      await ForwarderProcess.start(net.provider, { ...options, port: 5360, maxTcpQueriesPerConnection: 1 }),
    ];
    try {
      for (const port of [5359, 5360, 5359, 5360]) {
        const result = await runTcpClient('half-close', port, ['a.test.example', 'b.test.example', 'c.test.example']);
        const answers = (result['answers'] as [number, string][]).sort(([a], [b]) => a - b);
        expect({ port, answers }).toEqual({ port, answers: [0x100, 0x101, 0x102].map((id) => [id, '192.0.2.77']) });
        // Closed once answered (three answers one after another take 600 ms), not at the idle timeout.
        expect(result['end']).toBe('eof');
        expect(result['ms']).toBeLessThan(2500);
      }
      for (const forwarder of forwarders) {
        const counters = await forwarder.counters();
        expect(counters['answered']).toBe(6);
        expect(counters['tcpIdleClosed']).toBe(0);
        expect(counters['tcpRejected']).toBe(0);
      }
    } finally {
      for (const forwarder of forwarders) await forwarder.process.kill();
      await upstream.kill();
    }
  });

  it("ends a TCP connection's upstream exchanges when its client resets it, so that reconnecting gets no more of them than the caps allow", async () => {
    // An upstream that takes TCP connections and never answers (the upstream resolver waiting on
    // a dead authoritative server), saying how many it holds: "open N most M".
    const script = `const net = require('node:net');
      let open = 0, most = 0;
      const say = () => process.stdout.write('open ' + open + ' most ' + most + '\\n');
      net.createServer((socket) => {
        open += 1; most = Math.max(most, open); say();
        socket.on('error', () => undefined);
        socket.on('close', () => { open -= 1; say(); });
        socket.resume();
      }).listen(5303, '192.0.2.1', () => process.stdout.write('ready\\n'));`;
    // A client that opens a connection, sends two queries, and resets it once they are read; ten times.
    const client = `
import socket, struct, sys, time
def framed(name, ident):
    q = struct.pack('>HHHHHH', ident, 0x0100, 1, 0, 0, 0)
    q += b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\\0\\0\\1\\0\\1'
    return struct.pack('>H', len(q)) + q
for round in range(10):
    s = socket.create_connection(('169.254.0.1', int(sys.argv[1])), timeout=5)
    s.sendall(framed('h%da.test.example' % round, 0x100) + framed('h%db.test.example' % round, 0x101))
    time.sleep(0.15)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    s.close()
    time.sleep(0.05)
`;
    const upstream = net.internet.spawn([process.execPath, '-e', script]);
    await upstream.waitForOutput(/^ready$/m);
    // One connection of two queries at a time for the client: two exchanges upstream at most.
    const capped = await ForwarderProcess.start(net.provider, {
      port: 5364,
      upstreams: ['192.0.2.1:5303'],
      timeoutMs: 8000,
      maxTcpConnectionsPerClient: 1,
      maxTcpQueriesPerConnection: 2,
      ratePerClient: { perSecond: 100_000, burst: 100_000 },
    });
    const held = (): { open: number; most: number } => {
      const [, open = '-1', most = '-1'] = /open (\d+) most (\d+)\n(?![^]*open)/.exec(upstream.stdout) ?? [];
      return { open: Number(open), most: Number(most) };
    };
    try {
      await net.client.exec(['python3', '-c', client, '5364'], { timeoutMs: 20_000 });
      // A reset reaches the forwarder as the next connection comes: the old exchanges may still
      // be ending as the new ones start, never more (all twenty, held to their timeout, before).
      expect(held().most).toBeLessThanOrEqual(4);
      // Long before the 8 s timeout, every exchange of the reset connections has ended upstream.
      await eventually('no upstream connection left', async () => held().open === 0, 2000);
      // Unanswered, and no upstream counted as failing for it. (A connection may come before the
      // reset of the one before has reached the forwarder: refused then, its queries never read.)
      const counters = await capped.counters();
      expect(counters).toMatchObject({ answered: 0, upstreamTimeouts: 0, failed: 0 });
      expect(Number(counters['tcpQueries'])).toBeGreaterThanOrEqual(16);
    } finally {
      await capped.process.kill();
      await upstream.kill();
    }
  });

  it('closes a TCP connection whose query trickles in a byte a second once the idle timeout passes, but not one asking steadily', async () => {
    // Every byte is traffic, but no message completes: the connection holds a slot for nothing.
    const slow = await ForwarderProcess.start(net.provider, { port: 5361, upstreams: [UPSTREAM_A], tcpIdleMs: 1500 });
    try {
      const trickled = await runTcpClient('trickle', 5361, ['www.test.example']);
      expect(trickled['closedAfterMs']).not.toBeNull();
      expect(trickled['closedAfterMs']).toBeGreaterThanOrEqual(1400);
      expect(trickled['closedAfterMs']).toBeLessThan(2600);
      expect(await slow.counter('tcpIdleClosed')).toBe(1);
      // A query every half second for 3 s, twice the idle timeout: every one answered, the
      // connection kept.
      const names = Array.from({ length: 6 }, (_, i) => `n${i}.test.example`);
      const steady = await runTcpClient('steady', 5361, names);
      expect(steady['end']).toBe('eof');
      expect(steady['answers']).toEqual(names.map((_, i) => [0x100 + i, `203.0.113.${100 + i}`]));
      expect(await slow.counter('tcpIdleClosed')).toBe(1);
    } finally {
      await slow.process.kill();
    }
  });

  it('ends the TCP connections it refuses, evicts, closes for junk or when idle with a reset, leaving the provider no socket in TIME_WAIT', async () => {
    const port = 5367;
    const third = '100.64.0.27';
    await harness.addAddress(net.client, 'eth0', `${third}/32`);
    await net.provider.ip(['route', 'add', `${third}/32`, 'dev', 'cl0']);
    const capped = await ForwarderProcess.start(net.provider, { port, upstreams: [UPSTREAM_A], tcpIdleMs: 1500, maxTcpConnections: 3, maxTcpConnectionsPerClient: 2 });
    try {
      const hold = (bind: string, count: number, send?: string): Promise<(number | null)[]> =>
        runQueryFixture({ mode: 'tcp-hold', port, bind, count, holdMs: 4000, ...(send !== undefined && { send }) }) as Promise<(number | null)[]>;
      // The client's first two held (idle), its next three refused at once (its cap of 2).
      const heldA = hold(CLIENT_IP, 5);
      await eventually("the client's three refused", async () => (await capped.counter('tcpRejected')) === 3);
      // All three open once another client holds one; a third client, below its fair share of
      // them, takes the place of the first client's oldest.
      const heldF = hold(FLOOD_CLIENT_IP, 1);
      await eventually('all three open', async () => (await capped.counter('tcpConnections')) === 3);
      const heldT = hold(third, 1);
      await eventually('one evicted', async () => (await capped.counter('tcpEvicted')) === 1);
      // The rest closed when idle.
      const closed = await Promise.all([heldA, heldF, heldT]);
      expect(closed.flat().every((ms) => ms !== null), JSON.stringify(closed)).toBe(true);
      // A frame that is no query closes its connection at once.
      expect((await hold(CLIENT_IP, 1, '0003010203'))[0]).not.toBeNull();
      // A client that asked, read its answer and sits idle: answered whole, then reset.
      const asked = await runTcpClient('ask-then-wait', port, ['www.test.example']);
      expect({ answers: asked['answers'], end: asked['end'] }).toEqual({ answers: [[0x100, '192.0.2.80']], end: 'reset' });
      expect(await capped.counters()).toMatchObject({ tcpRejected: 3, tcpEvicted: 1, tcpIdleClosed: 4, malformed: 1 });
      // Closed with a FIN, each connection the forwarder ended (ten) left its end in TIME_WAIT
      // for a minute; reset, none is left.
      const left = async (state: string): Promise<string> => (await net.provider.exec(['ss', '-Htan', 'state', state, 'sport', '=', `:${port}`])).stdout.trim();
      await eventually("the forwarder's connections over", async () => (await left('connected')).split('\n').every((line) => line === '' || line.startsWith('TIME-WAIT')));
      expect(await left('time-wait')).toBe('');
    } finally {
      await capped.process.kill();
      await net.provider.ip(['route', 'del', `${third}/32`, 'dev', 'cl0']);
      await net.client.ip(['address', 'del', `${third}/32`, 'dev', 'eth0']);
    }
  });

  it('closes an idle TCP connection whose answer the client has not read yet without a reset, which would discard it', async () => {
    const [bigUpstream = ''] = compiled(BIG_UPSTREAM_SOURCES);
    const size = 8000;
    const upstream = net.internet.spawn([process.execPath, bigUpstream, JSON.stringify({ address: '192.0.2.1', port: 5305, size })]);
    await upstream.waitForOutput(/^ready$/m);
    const quick = await ForwarderProcess.start(net.provider, { port: 5369, upstreams: ['192.0.2.1:5305'], tcpIdleMs: 300 });
    try {
      // The answer waits, unacknowledged, in the forwarder's kernel (the client's window is a few
      // KB) when the idle timeout closes the connection: the client still reads all of it.
      const result = await runTcpClient('slow-read', 5369, ['www.test.example']);
      expect({ bytes: result['bytes'], end: result['end'] }).toEqual({ bytes: 2 + size, end: 'eof' });
      expect(await quick.counter('tcpIdleClosed')).toBe(1);
    } finally {
      await quick.process.kill();
      await upstream.kill();
    }
  });

  it('is still running after everything above', async () => {
    expect(forwarder.process.exit).toBeUndefined();
    for (const upstream of upstreams) expect(upstream.exit).toBeUndefined();
  });
});
