// The forwarder only ever touches the 12-byte header and walks the question section: it never
// decodes or re-encodes records, so what upstream says reaches the client byte for byte.
// RFC 1035 section 4.1.

export const HEADER_LENGTH = 12;
/** Largest DNS message (TCP length prefix is 16 bits; UDP payloads are bounded the same way). */
export const MAX_MESSAGE_LENGTH = 65_535;
/**
 * Longest query forwarded. A stub's query is a question and an EDNS record, a few hundred bytes;
 * a query waiting for its answer is kept whole, so 64 KiB ones would make the pending table
 * (4,096 of them) hold 256 MiB for a few hostile clients. dnsmasq reads no more than its
 * 4,096-byte packet size either.
 */
export const MAX_QUERY_LENGTH = 4096;
const MAX_NAME_LENGTH = 255;
const MAX_LABEL_LENGTH = 63;

export const RCODE = {
  noError: 0,
  formErr: 1,
  servFail: 2,
  nxDomain: 3,
  notImp: 4,
  refused: 5,
} as const;
export type Rcode = (typeof RCODE)[keyof typeof RCODE];

const OPCODE_QUERY = 0;
const QTYPE_IXFR = 251;
const QTYPE_AXFR = 252;

export type DropReason = 'short' | 'response';

/**
 * What to do with a message a client sent:
 * - forward it (the question ends at `questionEnd`),
 * - answer it ourselves with `rcode` (echoing the question when it could be parsed), or
 * - drop it silently (too short to answer, or a response: answering those makes reflection loops).
 */
export type QueryVerdict =
  | { readonly kind: 'forward'; readonly questionEnd: number }
  | { readonly kind: 'answer'; readonly rcode: Rcode; readonly questionEnd: number }
  | { readonly kind: 'drop'; readonly reason: DropReason };

export function readId(message: Uint8Array): number {
  return ((message[0] ?? 0) << 8) | (message[1] ?? 0);
}

/** Overwrite the id in place (the forwarder owns each received buffer). */
export function writeId(message: Uint8Array, id: number): void {
  message[0] = (id >>> 8) & 0xff;
  message[1] = id & 0xff;
}

function u16(message: Uint8Array, offset: number): number {
  return ((message[offset] ?? 0) << 8) | (message[offset + 1] ?? 0);
}

export function isResponse(message: Uint8Array): boolean {
  return ((message[2] ?? 0) & 0x80) !== 0;
}

export function isTruncated(message: Uint8Array): boolean {
  return ((message[2] ?? 0) & 0x02) !== 0;
}

export function rcodeOf(message: Uint8Array): number {
  return (message[3] ?? 0) & 0x0f;
}

/**
 * Whether a response is SERVFAIL, REFUSED or NOTIMP: the server did not answer the question, where
 * another server may (RFC 1034 4.3.1: SERVFAIL is a temporary error; REFUSED, a policy of that
 * server; NOTIMP, a kind of query that server does not support, RFC 1035 4.1.1). The three a stub
 * resolver (glibc's res_send) takes as its server rejecting the query, to ask its next one.
 * Every other rcode (NXDOMAIN included) is an answer.
 */
export function isFailureAnswer(message: Uint8Array): boolean {
  const rcode = rcodeOf(message);
  return rcode === RCODE.servFail || rcode === RCODE.refused || rcode === RCODE.notImp;
}

export function questionCount(message: Uint8Array): number {
  return u16(message, 4);
}

/**
 * End offset of the single question starting at byte 12, or undefined when the name is
 * malformed (bad label type, over-long, compression pointer, or cut short) or qtype/qclass are
 * missing. Queries carry no compression in their only name, so pointers are refused.
 */
export function questionEndOf(message: Uint8Array): number | undefined {
  let offset = HEADER_LENGTH;
  let nameLength = 0;
  for (;;) {
    const length = message[offset];
    if (length === undefined) return undefined;
    offset += 1;
    if (length === 0) break;
    if (length > MAX_LABEL_LENGTH) return undefined; // 0x40/0x80 label types and 0xC0 pointers
    nameLength += length + 1;
    if (nameLength + 1 > MAX_NAME_LENGTH) return undefined;
    offset += length;
  }
  const end = offset + 4;
  return end <= message.length ? end : undefined;
}

/** Classify a message received from a client. Total: any byte string gets a verdict. */
export function inspectQuery(message: Uint8Array): QueryVerdict {
  if (message.length < HEADER_LENGTH) return { kind: 'drop', reason: 'short' };
  if (isResponse(message)) return { kind: 'drop', reason: 'response' };
  const opcode = ((message[2] ?? 0) >>> 3) & 0x0f;
  if (opcode !== OPCODE_QUERY) return { kind: 'answer', rcode: RCODE.notImp, questionEnd: HEADER_LENGTH };
  if (questionCount(message) !== 1) return { kind: 'answer', rcode: RCODE.formErr, questionEnd: HEADER_LENGTH };
  const questionEnd = questionEndOf(message);
  if (questionEnd === undefined) return { kind: 'answer', rcode: RCODE.formErr, questionEnd: HEADER_LENGTH };
  // A query has nothing in its answer and authority sections.
  if (u16(message, 6) !== 0 || u16(message, 8) !== 0) return { kind: 'answer', rcode: RCODE.formErr, questionEnd };
  if (message.length > MAX_QUERY_LENGTH) return { kind: 'answer', rcode: RCODE.formErr, questionEnd };
  const qtype = u16(message, questionEnd - 4);
  // Zone transfers are for secondaries, not for clients behind a provider; our TCP relay also
  // expects one response per query.
  if (qtype === QTYPE_AXFR || qtype === QTYPE_IXFR) return { kind: 'answer', rcode: RCODE.refused, questionEnd };
  return { kind: 'forward', questionEnd };
}

/**
 * The answer we give ourselves: the query's header and (when parsed) question, flagged as a
 * response with `rcode`, recursion available, no records.
 */
export function errorResponse(query: Uint8Array, questionEnd: number, rcode: Rcode): Buffer {
  const end = Math.min(Math.max(questionEnd, HEADER_LENGTH), query.length);
  const response = Buffer.alloc(end);
  response.set(query.subarray(0, end));
  // QR=1, keep opcode and RD, clear AA and TC.
  response[2] = 0x80 | ((query[2] ?? 0) & 0x79);
  response[3] = 0x80 | rcode; // RA=1, Z/AD/CD cleared
  const questions = end > HEADER_LENGTH ? 1 : 0;
  response.writeUInt16BE(questions, 4);
  response.writeUInt16BE(0, 6);
  response.writeUInt16BE(0, 8);
  response.writeUInt16BE(0, 10);
  return response;
}

/**
 * Whether `response` answers the question `question` (the bytes 12..questionEnd of the query we
 * sent). Upstreams echo the question; an error answer may leave it out.
 */
export function answersQuestion(response: Uint8Array, question: Uint8Array): boolean {
  if (response.length < HEADER_LENGTH || !isResponse(response)) return false;
  const count = questionCount(response);
  if (count === 0) return rcodeOf(response) !== RCODE.noError;
  if (count !== 1) return false;
  const end = HEADER_LENGTH + question.length;
  if (response.length < end) return false;
  return Buffer.compare(response.subarray(HEADER_LENGTH, end), question) === 0;
}
