import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  HEADER_LENGTH,
  MAX_QUERY_LENGTH,
  RCODE,
  answersQuestion,
  errorResponse,
  inspectQuery,
  isFailureAnswer,
  isResponse,
  questionEndOf,
  rcodeOf,
  readId,
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
      fc.property(anyId, anyName, anyQtype, fc.uint8Array({ maxLength: 40 }), (id, labels, qtype, extra) => {
        const query = encodeQuery(id, labels, qtype, 0x0100, Buffer.from(extra), extra.length > 0 ? 1 : 0);
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
