// What a client gets over UDP of an upstream's answer: never more than it takes (512 bytes without
// EDNS, else the payload size of its OPT record, 512 at least), an answer larger relayed truncated
// (header and question, TC set, its OPT record for an EDNS client) so that it asks again over TCP;
// bytes after a whole message dropped; an answer cut short that does not say so (TC) taken for
// none. Scripted upstreams answer each name as its first label says (see their fixture).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createHarness, describeNetns, type Harness, type NetnsProcess } from '../../harness/index.js';
import { ForwarderProcess, buildTopology, compiled, requireDnsTools, type DnsTopology } from './dns-topology.js';

const UPSTREAM = { address: '192.0.2.61', answer: '192.0.2.71' };
const LISTEN = '169.254.0.70';

/**
 * junk: an A record, then 60,000 bytes of junk. bigN: an A record and TXT records, N bytes in all
 * (an OPT record last where the query had one). short: an A record cut short, TC clear;
 * shorttc: the same with TC set.
 */
const LABELS = { junk: 'junk:60000', big1500: 'big:1500', big600: 'big:600', short: 'short', shorttc: 'short-tc' };

/** A query for `name` (A, IN, recursion desired), with an OPT record of payload size `edns` where given. */
function query(name: string, id: number, edns?: number): Buffer {
  const labels = name.split('.').map((label) => Buffer.concat([Buffer.from([label.length]), Buffer.from(label)]));
  const header = Buffer.from([id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, edns === undefined ? 0 : 1]);
  const opt = edns === undefined ? Buffer.alloc(0) : Buffer.from([0, 0, 41, edns >> 8, edns & 0xff, 0, 0, 0, 0, 0, 0]);
  return Buffer.concat([header, ...labels, Buffer.from([0, 0, 1, 0, 1]), opt]);
}

/** The header's fields of a reply as a client reads them. */
function header(reply: Buffer): { id: number; tc: boolean; rcode: number; qd: number; an: number; ns: number; ar: number } {
  return {
    id: reply.readUInt16BE(0),
    tc: ((reply[2] ?? 0) & 0x02) !== 0,
    rcode: (reply[3] ?? 0) & 0x0f,
    qd: reply.readUInt16BE(4),
    an: reply.readUInt16BE(6),
    ns: reply.readUInt16BE(8),
    ar: reply.readUInt16BE(10),
  };
}

describeNetns('DNS forwarder fitting UDP answers to what the client takes', () => {
  let harness: Harness;
  let net: DnsTopology;
  let forwarder: ForwarderProcess;
  let queryFixture = '';
  let upstream: NetnsProcess;

  /** Each packet sent from one client socket, its reply (null: none within 700 ms). */
  async function exchange(packets: readonly Buffer[]): Promise<(Buffer | null)[]> {
    const request = { mode: 'raw', server: LISTEN, port: 53, packets: packets.map((packet) => packet.toString('hex')) };
    const { stdout } = await net.client.exec([process.execPath, queryFixture, JSON.stringify(request)]);
    return (JSON.parse(stdout) as (string | null)[]).map((hex) => (hex === null ? null : Buffer.from(hex, 'hex')));
  }

  async function one(packet: Buffer): Promise<Buffer> {
    const [reply] = await exchange([packet]);
    if (reply === null || reply === undefined) throw new Error('no reply from the forwarder');
    return reply;
  }

  beforeAll(async () => {
    requireDnsTools();
    [queryFixture = ''] = compiled(['test/guest/dns/fixtures/query']);
    const [scripted = ''] = compiled(['test/guest/dns/fixtures/scripted-upstream']);
    harness = createHarness('dnssize');
    net = await buildTopology(harness);
    await harness.addAddress(net.internet, 'inet0', `${UPSTREAM.address}/24`);
    upstream = net.internet.spawn([process.execPath, scripted, JSON.stringify({ ...UPSTREAM, port: 53, labels: LABELS, sizes: true })]);
    await upstream.waitForOutput(/^ready$/m);
    // A malformed answer is none: the query gets SERVFAIL at its time, kept short here.
    forwarder = await ForwarderProcess.start(net.provider, { listen: LISTEN, upstreams: [UPSTREAM.address], timeoutMs: 300, queryTimeoutMs: 600 });
    await harness.addAddress(net.provider, 'cl0', `${LISTEN}/32`);
    expect((await forwarder.rebind())['listening']).toBe(true);
  });

  afterAll(async () => {
    if (forwarder !== undefined && forwarder.process.exit === undefined) await forwarder.process.kill();
    if (upstream !== undefined && upstream.exit === undefined) await upstream.kill();
    await harness?.cleanup();
  });

  it('drops the bytes after a whole answer: a client without EDNS got 60,050 bytes of a 60-byte answer', async () => {
    const sent = query('junk.test.example', 0x1111);
    const reply = await one(sent);
    // The header, the question as asked, and the A record (a pointer to the name, 16 bytes).
    expect(reply.length).toBe(sent.length + 16);
    expect(header(reply)).toEqual({ id: 0x1111, tc: false, rcode: 0, qd: 1, an: 1, ns: 0, ar: 0 });
    expect([...reply.subarray(-4)].join('.')).toBe(UPSTREAM.answer);
  });

  it('relays a query with bytes after its message cut to the message, as answers are, over UDP and TCP: the client gets its answer', async () => {
    // 4000 bytes of junk after a 12-byte question went upstream as they came, at each resend:
    // an upstream that ignores such a query (dnsmasq did) left the client SERVFAIL after the query time.
    const lines = (): string[] => upstream.stdout.split('\n').filter((line) => line.startsWith('query padded '));
    for (const [id, edns] of [[0x5555, undefined], [0x5556, 1232]] as const) {
      const sent = query('padded.test.example', id, edns);
      const reply = await one(Buffer.concat([sent, Buffer.alloc(4000, 0xee)]));
      expect(header(reply)).toMatchObject({ id, tc: false, rcode: 0, an: 1 });
      // What went upstream: the message alone (header, question, its OPT record), with the forwarder's own id.
      expect(lines().at(-1)).toBe(`query padded udp ${sent.length}`);
    }
    const padded = Buffer.concat([query('padded.test.example', 0x5557), Buffer.alloc(300, 0xee)]);
    const framed = Buffer.concat([Buffer.from([padded.length >> 8, padded.length & 0xff]), padded]);
    const script = `import socket,sys\ns=socket.create_connection(('${LISTEN}',53),timeout=3)\ns.sendall(bytes.fromhex(sys.argv[1]))\nb=b''\nwhile len(b)<2 or len(b)<2+int.from_bytes(b[:2],'big'):\n  c=s.recv(65535)\n  if not c: break\n  b+=c\nprint(b[2:].hex())`;
    const { stdout } = await net.client.exec(['python3', '-c', script, framed.toString('hex')]);
    expect(header(Buffer.from(stdout.trim(), 'hex'))).toMatchObject({ id: 0x5557, tc: false, rcode: 0, an: 1 });
    expect(lines().at(-1)).toBe(`query padded tcp ${padded.length - 300}`);
  });

  it('relays an answer larger than 512 bytes to a client without EDNS truncated: header and question, TC set, so that it asks over TCP', async () => {
    const sent = query('big1500.test.example', 0x2222);
    const before = await forwarder.counter('truncated');
    const reply = await one(sent);
    expect(reply.length).toBe(sent.length);
    expect(header(reply)).toEqual({ id: 0x2222, tc: true, rcode: 0, qd: 1, an: 0, ns: 0, ar: 0 });
    expect(reply.subarray(12)).toEqual(sent.subarray(12));
    // An EDNS payload size below 512 counts as 512 (RFC 6891 6.2.5): truncated too, with the OPT record.
    const small = await one(query('big1500.test.example', 0x2223, 300));
    expect(header(small)).toMatchObject({ id: 0x2223, tc: true, an: 0, ar: 1 });
    expect(await forwarder.counter('truncated')).toBe(before + 2);
  });

  it("relays an answer within an EDNS client's payload size whole, and one beyond it truncated with the upstream's OPT record", async () => {
    const whole = await one(query('big1500.test.example', 0x3333, 4096));
    expect(whole.length).toBe(1500);
    expect(header(whole)).toMatchObject({ id: 0x3333, tc: false, ar: 1 });
    // 600 bytes: more than 512, within what this client takes.
    expect((await one(query('big600.test.example', 0x3334, 1232))).length).toBe(600);
    const sent = query('big1500.test.example', 0x3335, 1232);
    const truncated = await one(sent);
    expect(header(truncated)).toEqual({ id: 0x3335, tc: true, rcode: 0, qd: 1, an: 0, ns: 0, ar: 1 });
    // The question, then the upstream's OPT record (payload size 1232), as an EDNS client expects (RFC 6891 7).
    expect(truncated.length).toBe(sent.length);
    expect(truncated.subarray(-11)).toEqual(Buffer.from([0, 0, 41, 1232 >> 8, 1232 & 0xff, 0, 0, 0, 0, 0, 0]));
  });

  it('gets a client that sent no EDNS the whole answer over TCP, after the truncated one (dig retries by itself)', async () => {
    const { stdout } = await net.client.exec(['dig', `@${LISTEN}`, '+noedns', '+time=3', '+tries=1', 'big1500.test.example', 'A']);
    expect(stdout).toContain('Truncated, retrying in TCP mode');
    expect(stdout).toMatch(/status: NOERROR/);
    expect(stdout).toMatch(/MSG SIZE {2}rcvd: 1500$/m);
  });

  it('takes an answer cut short for none unless it says so (TC): a truncated answer then, SERVFAIL at the query time otherwise', async () => {
    const sent = query('shorttc.test.example', 0x4444);
    const cut = await one(sent);
    expect(cut.length).toBe(sent.length);
    expect(header(cut)).toEqual({ id: 0x4444, tc: true, rcode: 0, qd: 1, an: 0, ns: 0, ar: 0 });
    const rejected = await forwarder.counter('upstreamRejected');
    const { stdout } = await net.client.exec(['dig', `@${LISTEN}`, '+noedns', '+time=3', '+tries=1', '+notcp', '+ignore', 'short.test.example'], { allowFailure: true });
    // Before: relayed as it came, records running past its end.
    expect(stdout).toMatch(/status: SERVFAIL/);
    expect(await forwarder.counter('upstreamRejected')).toBeGreaterThan(rejected);
  });
});
