import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  HEADER_LENGTH,
  MAX_HELD_ANSWER,
  MAX_QUERY_LENGTH,
  RCODE,
  answersQuestion,
  MIN_UDP_PAYLOAD,
  errorResponse,
  fitUdpAnswer,
  heldAnswer,
  inspectQuery,
  isFailureAnswer,
  isResponse,
  messageEnd,
  questionEndOf,
  rcodeOf,
  readId,
  udpRoomOf,
  writeId,
} from '../../../guest/dns/header.js';

const anyLabel = fc.uint8Array({ minLength: 1, maxLength: 63 }).map((bytes) => Buffer.from(bytes.map((b) => 0x61 + (b % 26))));
/** Names of at most 255 bytes on the wire. */
const anyName = fc.array(anyLabel, { minLength: 0, maxLength: 6 }).filter((labels) => labels.reduce((n, l) => n + l.length + 1, 1) <= 255);

function encodeQuery(id: number, labels: readonly Buffer[], qtype = 1, flags = 0x0100, extra: Buffer = Buffer.alloc(0), arcount = 0): Buffer {
  const header = Buffer.alloc(HEADER_LENGTH);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(flags, 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(arcount, 10);
  const name = Buffer.concat([...labels.flatMap((label) => [Buffer.from([label.length]), label]), Buffer.from([0])]);
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(qtype, 0);
  tail.writeUInt16BE(1, 2);
  return Buffer.concat([header, name, tail, extra]);
}

const anyQtype = fc.integer({ min: 0, max: 0xffff }).filter((t) => t !== 251 && t !== 252);
const anyId = fc.integer({ min: 0, max: 0xffff });

describe('DNS header', () => {
  it('writeId then readId gives the id back and leaves every other byte alone', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 12, maxLength: 600, size: 'max' }), anyId, (bytes, id) => {
        const message = Buffer.from(bytes);
        writeId(message, id);
        expect(readId(message)).toBe(id);
        expect(message.subarray(2)).toEqual(Buffer.from(bytes).subarray(2));
      }),
    );
  });

  it('forwards every well-formed query, with the question ending where it was encoded', () => {
    fc.assert(
      fc.property(anyId, anyName, anyQtype, fc.option(fc.integer({ min: 0, max: 65_535 })), fc.uint8Array({ maxLength: 40 }), (id, labels, qtype, edns, trailing) => {
        // An OPT record where given, and bytes after the message (cut before it goes upstream).
        const opt = edns === null ? Buffer.alloc(0) : Buffer.from([0, 0, 41, edns >> 8, edns & 0xff, 0, 0, 0, 0, 0, 0]);
        const query = encodeQuery(id, labels, qtype, 0x0100, Buffer.concat([opt, Buffer.from(trailing)]), edns === null ? 0 : 1);
        const end = encodeQuery(id, labels, qtype).length;
        expect(inspectQuery(query)).toEqual({ kind: 'forward', questionEnd: end });
      }),
    );
  });

  it('gives every byte string a verdict without throwing, and never forwards a response or a short message', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 700, size: 'max' }), (bytes) => {
        const verdict = inspectQuery(bytes);
        if (bytes.length < HEADER_LENGTH) expect(verdict).toEqual({ kind: 'drop', reason: 'short' });
        else if (isResponse(bytes)) expect(verdict).toEqual({ kind: 'drop', reason: 'response' });
        if (verdict.kind !== 'drop') expect(verdict.questionEnd).toBeLessThanOrEqual(bytes.length);
      }),
      { numRuns: 5000 },
    );
  });

  it('answers what it will not forward: NOTIMP, FORMERR, REFUSED', () => {
    const www = [Buffer.from('www'), Buffer.from('example')];
    expect(inspectQuery(encodeQuery(1, www, 1, 0x2100))).toMatchObject({ kind: 'answer', rcode: RCODE.notImp });
    const twoQuestions = encodeQuery(1, www);
    twoQuestions.writeUInt16BE(2, 4);
    expect(inspectQuery(twoQuestions)).toMatchObject({ kind: 'answer', rcode: RCODE.formErr });
    const withAnswer = encodeQuery(1, www);
    withAnswer.writeUInt16BE(1, 6);
    expect(inspectQuery(withAnswer)).toMatchObject({ kind: 'answer', rcode: RCODE.formErr });
    const pointer = Buffer.concat([encodeQuery(1, []).subarray(0, 12), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1])]);
    expect(inspectQuery(pointer)).toMatchObject({ kind: 'answer', rcode: RCODE.formErr });
    expect(inspectQuery(encodeQuery(1, www).subarray(0, 20))).toMatchObject({ kind: 'answer', rcode: RCODE.formErr });
    expect(inspectQuery(encodeQuery(1, www, 252))).toMatchObject({ kind: 'answer', rcode: RCODE.refused });
    expect(inspectQuery(encodeQuery(1, www, 251))).toMatchObject({ kind: 'answer', rcode: RCODE.refused });
  });

  it('answers FORMERR a query whose records run past its bytes (cut short, or counts that lie), rather than relaying it whole', () => {
    // ARCOUNT 1 over 4000 bytes that are no record: messageEnd finds no end, and the query went
    // upstream as it came, junk and all, at each resend (what the cut of bytes after a message was to stop).
    const www = [Buffer.from('www'), Buffer.from('example')];
    const bare = encodeQuery(1, www);
    const junk = encodeQuery(1, www, 1, 0x0100, Buffer.alloc(4000, 0xee), 1);
    expect(inspectQuery(junk)).toEqual({ kind: 'answer', rcode: RCODE.formErr, questionEnd: bare.length });
    const opt = Buffer.from([0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    expect(inspectQuery(encodeQuery(1, www, 1, 0x0100, opt, 2))).toEqual({ kind: 'answer', rcode: RCODE.formErr, questionEnd: bare.length });
    expect(inspectQuery(encodeQuery(1, www, 1, 0x0100, opt.subarray(0, 10), 1))).toEqual({ kind: 'answer', rcode: RCODE.formErr, questionEnd: bare.length });
    // Counted right, with bytes after it: forwarded (the forwarder cuts them).
    expect(inspectQuery(encodeQuery(1, www, 1, 0x0100, Buffer.concat([opt, Buffer.alloc(4000, 0xee)]), 1))).toEqual({ kind: 'forward', questionEnd: bare.length });
  });

  it('forwards no query longer than MAX_QUERY_LENGTH (it would be kept whole while pending): FORMERR, question kept', () => {
    fc.assert(
      fc.property(anyId, anyName, anyQtype, fc.integer({ min: 1, max: 65_535 - MAX_QUERY_LENGTH }), (id, labels, qtype, over) => {
        const bare = encodeQuery(id, labels, qtype);
        const query = encodeQuery(id, labels, qtype, 0x0100, Buffer.alloc(MAX_QUERY_LENGTH - bare.length + over), 1);
        expect(inspectQuery(query)).toEqual({ kind: 'answer', rcode: RCODE.formErr, questionEnd: bare.length });
        const fits = encodeQuery(id, labels, qtype, 0x0100, Buffer.alloc(MAX_QUERY_LENGTH - bare.length), 1);
        expect(inspectQuery(fits)).toEqual({ kind: 'forward', questionEnd: bare.length });
      }),
    );
  });

  it('refuses names longer than 255 bytes', () => {
    const labels = Array.from({ length: 5 }, () => Buffer.alloc(63, 0x61));
    expect(questionEndOf(encodeQuery(1, labels))).toBeUndefined();
    expect(questionEndOf(encodeQuery(1, labels.slice(0, 3)))).toBeDefined();
  });

  it('builds error answers that keep the id and question, flag a response and carry the rcode', () => {
    fc.assert(
      fc.property(anyId, anyName, fc.constantFrom(RCODE.formErr, RCODE.servFail, RCODE.notImp, RCODE.refused), (id, labels, rcode) => {
        const query = encodeQuery(id, labels);
        const verdict = inspectQuery(query);
        if (verdict.kind !== 'forward') throw new Error('expected a forwardable query');
        const response = errorResponse(query, verdict.questionEnd, rcode);
        expect(readId(response)).toBe(id);
        expect(isResponse(response)).toBe(true);
        expect(rcodeOf(response)).toBe(rcode);
        expect(response.subarray(HEADER_LENGTH)).toEqual(query.subarray(HEADER_LENGTH, verdict.questionEnd));
        expect(answersQuestion(response, query.subarray(HEADER_LENGTH, verdict.questionEnd))).toBe(true);
        // Header-only error answers (question not parsed) have no question.
        expect(errorResponse(query, HEADER_LENGTH, rcode).readUInt16BE(4)).toBe(0);
      }),
    );
  });

  it('accepts an answer only for the question that was asked', () => {
    fc.assert(
      fc.property(anyId, anyName, anyName, (id, asked, other) => {
        const query = encodeQuery(id, asked);
        const question = query.subarray(HEADER_LENGTH);
        const reply = Buffer.from(encodeQuery(id, other));
        reply[2] = 0x81;
        reply[3] = 0x80;
        const same = Buffer.compare(encodeQuery(id, other).subarray(HEADER_LENGTH), question) === 0;
        expect(answersQuestion(reply, question)).toBe(same);
        expect(answersQuestion(query, question)).toBe(false); // not a response
      }),
    );
  });

  it('tells SERVFAIL, REFUSED and NOTIMP (the server did not answer) from every other rcode, whatever the other header bits', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 15 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 15 }), (rcode, flags, z) => {
        const response = Buffer.alloc(HEADER_LENGTH);
        response[2] = flags;
        response[3] = (z << 4) | rcode;
        // The three glibc's stub takes as its server rejecting the query, to ask its next one.
        expect(isFailureAnswer(response)).toBe(rcode === RCODE.servFail || rcode === RCODE.refused || rcode === RCODE.notImp);
      }),
    );
  });
});

/** A record owned by the name at offset 12 (a pointer), of `type`, with `data` as its rdata. */
function record(type: number, data: Uint8Array): Buffer {
  const fixed = Buffer.from([0xc0, 12, type >> 8, type & 0xff, 0, 1, 0, 0, 0, 60, data.length >> 8, data.length & 0xff]);
  return Buffer.concat([fixed, data]);
}

/** An OPT record: the root, payload size `size`, TTL 0, options `data`. */
function opt(size: number, data: Uint8Array = new Uint8Array(0)): Buffer {
  return Buffer.concat([Buffer.from([0, 0, 41, size >> 8, size & 0xff, 0, 0, 0, 0, data.length >> 8, data.length & 0xff]), data]);
}

/** An answer to encodeQuery(id, labels): `answers` in the answer section, an OPT record after them where given. */
function encodeAnswer(id: number, labels: readonly Buffer[], answers: readonly Buffer[], optRecord?: Buffer, flags = 0x8180): Buffer {
  const answer = Buffer.concat([encodeQuery(id, labels, 1, flags), ...answers, optRecord ?? Buffer.alloc(0)]);
  answer.writeUInt16BE(answers.length, 6);
  answer.writeUInt16BE(optRecord === undefined ? 0 : 1, 10);
  return answer;
}

const anyRecords = fc.array(fc.uint8Array({ maxLength: 300 }).map((data) => record(16, data)), { maxLength: 12 });
const anyRoom = fc.record({ bytes: fc.integer({ min: MIN_UDP_PAYLOAD, max: 65_535 }), edns: fc.boolean() });

describe('DNS answers over UDP', () => {
  it('finds where a message ends by its counts, whatever follows it', () => {
    fc.assert(
      fc.property(anyId, anyName, anyRecords, fc.boolean(), fc.uint8Array({ maxLength: 200 }), (id, labels, answers, withOpt, junk) => {
        const answer = encodeAnswer(id, labels, answers, withOpt ? opt(1232) : undefined);
        expect(messageEnd(Buffer.concat([answer, junk]))).toBe(answer.length);
        // Cut anywhere inside: records run past its end.
        if (answer.length > HEADER_LENGTH) expect(messageEnd(answer.subarray(0, answer.length - 1))).toBeUndefined();
      }),
    );
  });

  it('takes what a client takes from its OPT record: its payload size, 512 at least; 512 without one', () => {
    const www = [Buffer.from('www'), Buffer.from('example')];
    const bare = encodeQuery(1, www);
    expect(udpRoomOf(bare, bare.length)).toEqual({ bytes: 512, edns: false });
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 65_535 }), (size) => {
        const query = encodeQuery(1, www, 1, 0x0100, opt(size), 1);
        expect(udpRoomOf(query, bare.length)).toEqual({ bytes: Math.max(512, size), edns: true });
      }),
    );
    // An additional section that cannot be read: 512, as without.
    const broken = encodeQuery(1, www, 1, 0x0100, Buffer.from([0, 0, 41]), 1);
    expect(udpRoomOf(broken, bare.length)).toEqual({ bytes: 512, edns: false });
  });

  it('never gives a client more than it takes: the answer up to its end where that fits, else a truncated one (header, question, its OPT record for an EDNS client, TC set)', () => {
    fc.assert(
      fc.property(anyId, anyName, anyRecords, fc.boolean(), fc.uint8Array({ maxLength: 2000 }), anyRoom, (id, labels, answers, withOpt, junk, room) => {
        const optRecord = withOpt ? opt(1232, Buffer.alloc(40, 1)) : undefined;
        const answer = encodeAnswer(id, labels, answers, optRecord);
        const questionLength = encodeQuery(id, labels).length - HEADER_LENGTH;
        const fitted = fitUdpAnswer(Buffer.concat([answer, junk]), questionLength, room);
        if (fitted === undefined) throw new Error('a whole answer is never refused');
        expect(fitted.message.length).toBeLessThanOrEqual(room.bytes);
        if (answer.length <= room.bytes) {
          expect(fitted).toEqual({ message: answer, truncated: false });
          return;
        }
        expect(fitted.truncated).toBe(true);
        const base = HEADER_LENGTH + questionLength;
        const withRecord = room.edns && optRecord !== undefined;
        expect(fitted.message.subarray(0, base)).toEqual(
          Buffer.concat([Buffer.from([id >> 8, id & 0xff, 0x83, 0x80, 0, 1, 0, 0, 0, 0, 0, withRecord ? 1 : 0]), answer.subarray(HEADER_LENGTH, base)]),
        );
        expect(fitted.message.subarray(base)).toEqual(withRecord ? optRecord : Buffer.alloc(0));
        expect(messageEnd(fitted.message)).toBe(fitted.message.length);
      }),
    );
  });

  it("keeps an OPT record's fixed part alone where its options do not fit, and sends none to a client that sent none", () => {
    const www = [Buffer.from('www'), Buffer.from('example')];
    const questionLength = encodeQuery(7, www).length - HEADER_LENGTH;
    const padded = encodeAnswer(7, www, [record(16, Buffer.alloc(600))], opt(4096, Buffer.alloc(600, 9)));
    const fitted = fitUdpAnswer(padded, questionLength, { bytes: 512, edns: true });
    expect(fitted?.message.subarray(HEADER_LENGTH + questionLength)).toEqual(opt(4096));
    expect(fitted?.message.readUInt16BE(10)).toBe(1);
    const plain = fitUdpAnswer(padded, questionLength, { bytes: 512, edns: false });
    expect(plain?.message.length).toBe(HEADER_LENGTH + questionLength);
    expect(plain?.message.readUInt16BE(10)).toBe(0);
  });

  it('takes an answer cut short for none, unless it says so with TC: then a truncated one', () => {
    const www = [Buffer.from('www'), Buffer.from('example')];
    const questionLength = encodeQuery(7, www).length - HEADER_LENGTH;
    const whole = encodeAnswer(7, www, [record(1, Buffer.from([192, 0, 2, 1]))]);
    const cut = whole.subarray(0, whole.length - 3);
    expect(fitUdpAnswer(cut, questionLength, { bytes: 512, edns: false })).toBeUndefined();
    const saysSo = encodeAnswer(7, www, [record(1, Buffer.from([192, 0, 2, 1]))], undefined, 0x8380).subarray(0, whole.length - 3);
    const fitted = fitUdpAnswer(saysSo, questionLength, { bytes: 512, edns: true });
    expect(fitted?.truncated).toBe(true);
    expect(fitted?.message).toEqual(Buffer.concat([Buffer.from([0, 7, 0x83, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]), whole.subarray(HEADER_LENGTH, HEADER_LENGTH + questionLength)]));
  });
});

describe('DNS failure answers held for a UDP query', () => {
  const bigRecords = fc.array(fc.uint8Array({ maxLength: 1500 }).map((data) => record(16, data)), { maxLength: 40 });

  it("holds one fitted to its client and to 4,096 bytes at most, as a copy: a larger one as the truncated answer, whatever the client takes", () => {
    expect(MAX_HELD_ANSWER).toBe(MAX_QUERY_LENGTH);
    fc.assert(
      fc.property(anyId, anyName, bigRecords, fc.boolean(), anyRoom, (id, labels, answers, withOpt, room) => {
        const answer = encodeAnswer(id, labels, answers, withOpt ? opt(1232, Buffer.alloc(40, 1)) : undefined, 0x8182);
        const questionLength = encodeQuery(id, labels).length - HEADER_LENGTH;
        const held = heldAnswer(answer, questionLength, room);
        if (held === undefined) throw new Error('a whole answer is never refused');
        const limit = Math.min(room.bytes, MAX_HELD_ANSWER);
        expect(held.message.length).toBeLessThanOrEqual(limit);
        const expected = fitUdpAnswer(Buffer.from(answer), questionLength, { bytes: limit, edns: room.edns });
        // Its own bytes: the answer's buffer (a socket's arena) is reused once this returns.
        answer.fill(0xff);
        expect(held).toEqual(expected);
        expect(held.truncated).toBe(answer.length > limit);
        expect(rcodeOf(held.message)).toBe(RCODE.servFail);
      }),
    );
  });
});
