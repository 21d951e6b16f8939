// How each upstream TCP exchange of the forwarder ends, seen from the upstream: a reset in every
// case (answer read whole over several segments, upstream's FIN, a cut frame, timeout, the
// forwarder closing, the client that asked gone), for connections made by connect() and by
// `open` alike, no socket left tracked; and what each resolves with, the answer or why there is
// none (a refused connection is a socket's error, not a timeout; a connection the upstream took
// and then ended, by FIN or reset, is neither).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createHarness, describeNetns, type Harness } from '../../harness/index.js';
import { compiled } from './dns-topology.js';

describeNetns('upstream TCP exchanges of the DNS forwarder', () => {
  let harness: Harness;
  let report: Record<string, Record<string, unknown>>;

  beforeAll(async () => {
    const [fixture = ''] = compiled(['test/guest/dns/fixtures/tcp-exchange', 'guest/dns/tcp-exchange']);
    harness = createHarness('tcpx');
    const ns = await harness.namespace('exchange');
    const { stdout } = await ns.exec([process.execPath, fixture], { timeoutMs: 20_000 });
    report = JSON.parse(stdout) as typeof report;
  });

  afterAll(async () => {
    await harness?.cleanup();
  });

  it('reads an answer sent in several segments whole, then resets', () => {
    expect(report['answerInPieces']).toEqual({ response: 'answer', upstreamSaw: 'reset', socketsLeft: 0, endedBeforeTimeout: true });
    expect(report['openAnswerInPieces']).toEqual({ response: 'answer', upstreamSaw: 'reset', socketsLeft: 0, endedBeforeTimeout: true });
  });

  it('says the upstream ended it, at once, and resets (no FIN of ours) when the upstream closes first, with or without a cut frame, whoever made the socket', () => {
    for (const name of ['finWithoutAnswer', 'cutFrame', 'openFinWithoutAnswer', 'openCutFrame']) {
      expect({ name, ...report[name] }).toEqual({ name, response: 'upstream-ended', upstreamSaw: 'reset', socketsLeft: 0, endedBeforeTimeout: true });
    }
  });

  it("says the upstream ended it, at once, not a socket's error, when the upstream resets a connection it took, with or without a cut frame", () => {
    // ECONNRESET through Node's 'error' event: it was a socket's error, counted as a send error.
    for (const name of ['resetWithoutAnswer', 'resetCutFrame', 'openResetWithoutAnswer', 'openResetCutFrame']) {
      expect({ name, ...report[name] }).toEqual({ name, response: 'upstream-ended', upstreamSaw: 'reset-by-upstream', socketsLeft: 0, endedBeforeTimeout: true });
    }
  });

  it('resets at its timeout and when the forwarder closes midway', () => {
    expect(report['timeout']).toEqual({ response: 'timed-out', upstreamSaw: 'reset', socketsLeft: 0, endedBeforeTimeout: false });
    expect(report['closing']).toEqual({ response: 'closed', upstreamSaw: 'reset', socketsLeft: 0, endedBeforeTimeout: true });
  });

  it('resets at once, not at its timeout, when the client that asked is gone (its signal aborted)', () => {
    for (const name of ['abandoned', 'openAbandoned']) {
      expect({ name, ...report[name] }).toEqual({ name, response: 'abandoned', upstreamSaw: 'reset', socketsLeft: 0, endedBeforeTimeout: true });
    }
  });

  it("says a connection refused (Node's 'error' event) or never made is a socket's error, at once, not a timeout", () => {
    // Both were undefined, as a timeout is: the forwarder counted them as upstream timeouts.
    for (const name of ['refused', 'openRefused', 'openThrows']) {
      expect({ name, ...report[name] }).toEqual({ name, response: 'socket-error', socketsLeft: 0, endedBeforeTimeout: true });
    }
  });
});
