// Which upstream the forwarder asks first, and what moves it: a query failing for its name alone
// (no answer in time, SERVFAIL, REFUSED) does not, while an upstream that fails everything is passed
// over; SERVFAIL and REFUSED send that query on to the next upstream, over UDP and TCP; the choice
// outlives the upstream being connected again; upstreams are told apart by address, not by how it
// is written. Scripted upstreams answer each name as its first label says (see their fixture).
// Each forwarder listens on its own gateway address, so the tests do not disturb each other.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { reconnectDelayMs } from '../../../guest/dns/upstream-reachability.js';
import { createHarness, describeNetns, type Harness } from '../../harness/index.js';
import { DEAD_UPSTREAM, type ForwarderProcess, buildTopology, requireDnsTools, type DnsTopology } from './dns-topology.js';
import { scriptedWorld } from './scripted-world.js';

/** Two upstreams that answer most names, each with its own address; and one refusing every name. */
const FIRST = { address: '192.0.2.61', answer: '192.0.2.71' };
const SECOND = { address: '192.0.2.62', answer: '192.0.2.72' };
const REFUSING = { address: '192.0.2.63', answer: '192.0.2.73' };

/**
 * How each upstream answers names by their first label (www and the rest: an A record):
 *   void: neither answers; gone: the first never answers, the second SERVFAIL;
 *   lame: the first never answers (a resolver still trying lame servers), the second does;
 *   bogus: the first SERVFAIL (it cannot validate, say), the second answers;
 *   blocked: the first REFUSED (a policy of its own), the second answers;
 *   unsupported: the first NOTIMP (a kind of query it does not implement), the second answers;
 *   broken: both SERVFAIL.
 */
const FIRST_LABELS = { void: 'silent', gone: 'silent', lame: 'silent', bogus: 'servfail', blocked: 'refused', unsupported: 'notimp', broken: 'servfail' };
const SECOND_LABELS = { void: 'silent', gone: 'servfail', broken: 'servfail' };

/**
 * Asks `name` (a query every `interval` s for `duration` s) from one UDP socket in the client
 * namespace, then reads late answers for 0.5 s; prints {"sent", "answers": {address or "rcodeN": count}}.
 */
const STEADY_CLIENT = `
import json, socket, struct, sys, time
server, name, duration, interval = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
question = b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\\0\\0\\1\\0\\1'
answers, sent, end = {}, 0, time.monotonic() + duration
while (now := time.monotonic()) < end + 0.5:
    if now < end:
        s.sendto(struct.pack('>HHHHHH', sent & 0xffff, 0x0100, 1, 0, 0, 0) + question, (server, 53))
        sent += 1
    due = now + interval
    while (left := due - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            data = s.recv(512)
        except socket.timeout:
            break
        key = '.'.join(str(b) for b in data[-4:]) if struct.unpack('>H', data[6:8])[0] == 1 else 'rcode%d' % (data[3] & 15)
        answers[key] = answers.get(key, 0) + 1
print(json.dumps({'sent': sent, 'answers': answers}))
`;

interface Answer {
  readonly status: string;
  /** The A record's address, or '' for none. */
  readonly address: string;
}

describeNetns('DNS forwarder choosing the upstream it asks first', () => {
  let harness: Harness;
  let net: DnsTopology;
  const { scriptedUpstream, start, stopAll } = scriptedWorld(() => ({ harness, net }));

  async function ask(listen: string, name: string, tcp = false): Promise<Answer> {
    const { stdout } = await net.client.exec(['dig', `@${listen}`, '+time=6', '+tries=1', ...(tcp ? ['+tcp'] : []), `${name}.test.example`], { allowFailure: true });
    return { status: /status: (\w+)/.exec(stdout)?.[1] ?? 'none', address: /^\S+\s+\d+\s+IN\s+A\s+(\S+)$/m.exec(stdout)?.[1] ?? '' };
  }

  const answered = (address: string): Answer => ({ status: 'NOERROR', address });

  /** The upstreams the forwarder's warnings say it asks first from then on, in order (one warning each). */
  function switches(forwarder: ForwarderProcess): string[] {
    return forwarder.process.stderr.split('\n').flatMap((line) => /: asking (\S+) first from now on"/.exec(line)?.[1] ?? []);
  }

  beforeAll(async () => {
    requireDnsTools();
    harness = createHarness('dnspref');
    net = await buildTopology(harness);
    await scriptedUpstream(FIRST, FIRST_LABELS);
    await scriptedUpstream(SECOND, SECOND_LABELS);
    await scriptedUpstream(REFUSING, {}, 'refused');
  });

  afterAll(async () => {
    await stopAll();
    await harness?.cleanup();
  });

  it('keeps asking the first upstream after a name that no upstream answers, in time or at all', async () => {
    const listen = '169.254.0.40';
    // An answer needed in time: long enough for a busy machine (2 cores, other tests beside).
    const forwarder = await start(listen, { upstreams: [FIRST.address, SECOND.address], timeoutMs: 1500 });
    expect(await ask(listen, 'www')).toEqual(answered(FIRST.answer));
    // Neither answers: SERVFAIL once both had their time. Before, the first's timeout moved every
    // query to the second.
    expect(await ask(listen, 'void')).toMatchObject({ status: 'SERVFAIL' });
    expect(await ask(listen, 'www')).toEqual(answered(FIRST.answer));
    // The first does not answer, the second's SERVFAIL is relayed: no better, nothing moves.
    expect(await ask(listen, 'gone')).toMatchObject({ status: 'SERVFAIL' });
    expect(await ask(listen, 'www')).toEqual(answered(FIRST.answer));
    expect(await forwarder.counters()).toMatchObject({ upstreamTimeouts: 3, upstreamErrors: 0, failed: 1, answered: 4 });
    expect(switches(forwarder)).toEqual([]);
  });

  it("keeps asking the first upstream while it answers other clients, when a name only the second answers in time comes: everyone else's queries stay", async () => {
    const listen = '169.254.0.41';
    const timeoutMs = 2000;
    const forwarder = await start(listen, { upstreams: [FIRST.address, SECOND.address], timeoutMs });
    // One client asks www steadily (the first answers each at once) while another asks a name the
    // first never answers: that one goes to the second once the first's time is up.
    const steady = net.client.exec(['python3', '-c', STEADY_CLIENT, listen, 'www.test.example', String((timeoutMs + 2000) / 1000), '0.05'], { timeoutMs: 20_000 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await ask(listen, 'lame')).toEqual(answered(SECOND.answer));
    const { sent, answers } = JSON.parse((await steady).stdout) as { sent: number; answers: Record<string, number> };
    // Every steady query answered by the first, none by the second (before: all after the lame
    // name's timeout, the forwarder asking the second first from then on).
    expect(Object.keys(answers)).toEqual([FIRST.answer]);
    expect(answers[FIRST.answer]).toBeGreaterThan(sent / 2);
    expect(await ask(listen, 'www')).toEqual(answered(FIRST.answer));
    expect(switches(forwarder)).toEqual([]);
  });

  it('asks the next upstream when one answers SERVFAIL or REFUSED, relaying its answer, and keeps asking the first first when it answers the rest', async () => {
    const listen = '169.254.0.42';
    const forwarder = await start(listen, { upstreams: [FIRST.address, SECOND.address], timeoutMs: 5000 });
    expect(await ask(listen, 'www')).toEqual(answered(FIRST.answer));
    // Before: the first's SERVFAIL and REFUSED relayed, the second never asked.
    expect(await ask(listen, 'bogus')).toEqual(answered(SECOND.answer));
    expect(await ask(listen, 'blocked')).toEqual(answered(SECOND.answer));
    // Where the last upstream fails too, its answer is relayed.
    expect(await ask(listen, 'broken')).toMatchObject({ status: 'SERVFAIL' });
    // The first answered www just before: the failures were those names', not the upstream's.
    expect(await ask(listen, 'www')).toEqual(answered(FIRST.answer));
    expect(await forwarder.counters()).toMatchObject({ upstreamErrors: 3, upstreamTimeouts: 0, failed: 0, answered: 5 });
    expect(switches(forwarder)).toEqual([]);
  });

  it('asks the next upstream over TCP too when one answers SERVFAIL, without moving the first', async () => {
    const listen = '169.254.0.43';
    const forwarder = await start(listen, { upstreams: [FIRST.address, SECOND.address], timeoutMs: 5000 });
    expect(await ask(listen, 'bogus', true)).toEqual(answered(SECOND.answer));
    expect(await ask(listen, 'www', true)).toEqual(answered(FIRST.answer));
    // Where the last upstream fails too, its answer is relayed.
    expect(await ask(listen, 'broken', true)).toMatchObject({ status: 'SERVFAIL' });
    expect(await forwarder.counters()).toMatchObject({ tcpQueries: 3, upstreamErrors: 2, failed: 0, answered: 3 });
  });

  it('asks the next upstream when one answers NOTIMP, as a stub resolver given the same list would, over UDP and TCP', async () => {
    const listen = '169.254.0.48';
    const forwarder = await start(listen, { upstreams: [FIRST.address, SECOND.address], timeoutMs: 5000 });
    expect(await ask(listen, 'www')).toEqual(answered(FIRST.answer));
    // Before: the first's NOTIMP relayed, the second never asked (glibc's stub asks its next server
    // after SERVFAIL, NOTIMP or REFUSED alike).
    expect(await ask(listen, 'unsupported')).toEqual(answered(SECOND.answer));
    expect(await ask(listen, 'unsupported', true)).toEqual(answered(SECOND.answer));
    expect(await ask(listen, 'www')).toEqual(answered(FIRST.answer));
    expect(await forwarder.counters()).toMatchObject({ upstreamErrors: 2, upstreamTimeouts: 0, failed: 0, answered: 4 });
    expect(switches(forwarder)).toEqual([]);
  });

  it('passes over an upstream that refuses everything after one query, and says so once', async () => {
    const listen = '169.254.0.44';
    const forwarder = await start(listen, { upstreams: [REFUSING.address, SECOND.address], timeoutMs: 5000 });
    // Before: REFUSED for every query, the second never asked.
    expect(await ask(listen, 'www')).toEqual(answered(SECOND.answer));
    expect(await forwarder.counter('upstreamErrors')).toBe(1);
    // It answered nothing but REFUSED, and the second did better: asked first from now on.
    expect(await ask(listen, 'www')).toEqual(answered(SECOND.answer));
    expect(await ask(listen, 'n1')).toEqual(answered(SECOND.answer));
    expect(await forwarder.counter('upstreamErrors')).toBe(1);
    expect(switches(forwarder)).toEqual([`${SECOND.address}:53`]);
  });

  it('names the upstream it asks first from now on: the one that answered, not the next in the list, where that one failed the query too', async () => {
    const listen = '169.254.0.49';
    const forwarder = await start(listen, { upstreams: [REFUSING.address, FIRST.address, SECOND.address], timeoutMs: 5000 });
    // Refused by the first, SERVFAIL from the next, answered by the third: asked first from now on.
    expect(await ask(listen, 'bogus')).toEqual(answered(SECOND.answer));
    expect(switches(forwarder)).toEqual([`${SECOND.address}:53`]);
    expect(forwarder.process.stderr).toContain(
      `upstream resolver ${REFUSING.address}:53 answered a query REFUSED, and answered no other for that long, while ${SECOND.address}:53 answered it: asking ${SECOND.address}:53 first from now on`,
    );
    // FIRST, next in the list, answers www too: the answer says who was asked first.
    expect(await ask(listen, 'www')).toEqual(answered(SECOND.answer));
    expect(await forwarder.counters()).toMatchObject({ upstreamErrors: 2, upstreamTimeouts: 0, failed: 0, answered: 2 });
  });

  it('keeps asking first the upstream that answered for the one that did not, across that upstream being connected again', async () => {
    const listen = '169.254.0.45';
    const forwarder = await start(listen, { upstreams: [DEAD_UPSTREAM, SECOND.address], timeoutMs: 1500, manualClock: true });
    expect(await ask(listen, 'www')).toEqual(answered(SECOND.answer));
    const before = await forwarder.counters();
    expect(before).toMatchObject({ upstreamTimeouts: 1, answered: 1 });
    expect(switches(forwarder)).toEqual([`${SECOND.address}:53`]);
    // A socket of the second fails: it is connected again after its backoff (64 new sockets).
    await forwarder.fail('upstream-newest');
    const reconnected = await forwarder.advance(reconnectDelayMs(0));
    expect(reconnected['upstreamSockets']).toBeGreaterThanOrEqual(Number(before['upstreamSockets']) + 64);
    expect(reconnected['failingUpstreams']).toEqual([]);
    // Asked first still (before: the first in the list again, the dead one, its timeout waited out).
    expect(await ask(listen, 'www')).toEqual(answered(SECOND.answer));
    expect(await forwarder.counters()).toMatchObject({ upstreamTimeouts: 1, answered: 2 });
  });

  it('asks an upstream written two ways once per query, and knows itself however written', async () => {
    // Nothing listens on ::1 port 5399 of the provider namespace: no answer in time.
    const listen = '169.254.0.46';
    const forwarder = await start(listen, { upstreams: ['[::1]:5399', '[0:0:0::1]:5399'], timeoutMs: 1500 });
    expect(await ask(listen, 'www')).toMatchObject({ status: 'SERVFAIL' });
    // Once, then SERVFAIL (before: a second time, the same server by another name).
    expect(await forwarder.counters()).toMatchObject({ upstreamTimeouts: 1, failed: 1 });
    // Our own address as an IPv4-mapped IPv6 one: left out, as it is when written plainly.
    const self = '169.254.0.47';
    const itself = await start(self, { upstreams: [`::ffff:${self}`, SECOND.address], timeoutMs: 1500 });
    expect((await itself.counters())['upstreams']).toEqual([`${SECOND.address}:53`]);
    expect(itself.process.stderr).toContain(`ignoring ${self}:53 as an upstream`);
    expect(await ask(self, 'www')).toEqual(answered(SECOND.answer));
  });

  it('takes a --dns-upstream given twice, or written two ways, once (the first kept, the order kept), as resolv.conf\'s duplicates: one upstream in status, not one each toward the 8 at most', async () => {
    const listen = '169.254.0.51';
    // SECOND eight times (plainly, IPv4-mapped, with the default port): before, eight upstreams, FIRST cut off by the limit.
    const twice = [SECOND.address, `::ffff:${SECOND.address}`, `${SECOND.address}:53`, `[::ffff:${SECOND.address}]:53`, SECOND.address, SECOND.address, SECOND.address, SECOND.address];
    const forwarder = await start(listen, { upstreams: [...twice, FIRST.address, `${FIRST.address}:53`], timeoutMs: 1500 });
    expect((await forwarder.counters())['upstreams']).toEqual([`${SECOND.address}:53`, `${FIRST.address}:53`]);
    expect(await ask(listen, 'www')).toEqual(answered(SECOND.answer));
  });

  it('asks an upstream given as an IPv4-mapped IPv6 address over IPv4, UDP and TCP', async () => {
    // Its IPv6-only sockets could not be connected to it (ENETUNREACH): "no route to it", SERVFAIL.
    const listen = '169.254.0.50';
    const forwarder = await start(listen, { upstreams: [`[::ffff:${SECOND.address}]:53`], timeoutMs: 1500 });
    expect((await forwarder.counters())['upstreams']).toEqual([`${SECOND.address}:53`]);
    expect(await ask(listen, 'www')).toEqual(answered(SECOND.answer));
    expect(await ask(listen, 'www', true)).toEqual(answered(SECOND.answer));
    expect(forwarder.process.stderr).not.toContain('cannot use upstream resolver');
  });
});
