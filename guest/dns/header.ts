// The forwarder only ever touches the 12-byte header and walks the question section: it never
// decodes or re-encodes records, so what upstream says reaches the client byte for byte. It walks
// the records only to find where a message ends and its OPT record (fitUdpAnswer): an answer over
// UDP must fit what its client takes. RFC 1035 section 4.1.

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
/**
 * The largest UDP answer a client that sent no OPT record takes (RFC 1035 4.2.1), and the least
 * one that did is taken to (RFC 6891 6.2.5: a smaller payload size counts as 512).
 */
export const MIN_UDP_PAYLOAD = 512;
const TYPE_OPT = 41;
/** An OPT record's fixed part: the root name, type, class (payload size), TTL (flags), rdlength. */
const OPT_FIXED_LENGTH = 11;

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
  // Its records run past its bytes (cut short, or an additional count that lies): relayed whole,
  // a question padded with junk under an ARCOUNT of 1 went upstream as it came, at each resend.
  if (messageEnd(message) === undefined) return { kind: 'answer', rcode: RCODE.formErr, questionEnd };
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

/**
 * Where the name that starts at `offset` ends (past its zero length or its compression pointer;
 * pointers are not followed), or undefined where it runs past the message or uses a label type
 * other than a plain label or a pointer (0x40 and 0x80, retired by RFC 6891).
 */
function nameEnd(message: Uint8Array, start: number): number | undefined {
  let offset = start;
  for (;;) {
    const length = message[offset];
    if (length === undefined) return undefined;
    if (length === 0) return offset + 1;
    if ((length & 0xc0) === 0xc0) return offset + 2 <= message.length ? offset + 2 : undefined;
    if (length > MAX_LABEL_LENGTH) return undefined;
    offset += 1 + length;
  }
}

/** Where a record that starts at `offset` ends, and its type; undefined where it runs past the message. */
function recordAt(message: Uint8Array, offset: number): { readonly type: number; readonly end: number; readonly typeAt: number } | undefined {
  const name = nameEnd(message, offset);
  if (name === undefined || name + 10 > message.length) return undefined;
  const end = name + 10 + u16(message, name + 8);
  return end <= message.length ? { type: u16(message, name), end, typeAt: name } : undefined;
}

/**
 * Where a message ends: past its questions and the records its header counts (RFC 1035 4.1), or
 * undefined where they run past its bytes (cut short, or counts that lie). Bytes after that end
 * belong to no section: no resolver reads them.
 */
export function messageEnd(message: Uint8Array): number | undefined {
  if (message.length < HEADER_LENGTH) return undefined;
  let offset = HEADER_LENGTH;
  for (let left = questionCount(message); left > 0; left--) {
    const name = nameEnd(message, offset);
    if (name === undefined || name + 4 > message.length) return undefined;
    offset = name + 4;
  }
  // Each record takes 11 bytes at least: a lying count ends the walk at the message's end.
  // (As recordAt, without making an object per record: this runs for every answer relayed.)
  for (let left = u16(message, 6) + u16(message, 8) + u16(message, 10); left > 0; left--) {
    const name = nameEnd(message, offset);
    if (name === undefined || name + 10 > message.length) return undefined;
    offset = name + 10 + u16(message, name + 8);
    if (offset > message.length) return undefined;
  }
  return offset;
}

/** What a client takes over UDP (see udpRoomOf). */
export interface UdpRoom {
  /** The largest answer it takes, in bytes: 512 at least. */
  readonly bytes: number;
  /** Whether it sent an OPT record (EDNS): only then may its answer carry one (RFC 6891 7). */
  readonly edns: boolean;
}

/**
 * What the sender of `query` (a query inspectQuery forwards, its question ending at
 * `questionEnd`) takes over UDP: the UDP payload size of its OPT record (RFC 6891 6.2.3), 512 at
 * least; 512 where it sent none (RFC 1035 4.2.1), or where its additional section cannot be read.
 * The forwarder relays the query's OPT record as it is, so the upstream is told the same size.
 */
export function udpRoomOf(query: Uint8Array, questionEnd: number): UdpRoom {
  let offset = questionEnd;
  for (let left = u16(query, 10); left > 0; left--) {
    const record = recordAt(query, offset);
    if (record === undefined) break;
    if (record.type === TYPE_OPT) return { bytes: Math.max(MIN_UDP_PAYLOAD, u16(query, record.typeAt + 2)), edns: true };
    offset = record.end;
  }
  return { bytes: MIN_UDP_PAYLOAD, edns: false };
}

/** The OPT record of a message that ends at `end` (messageEnd), as its bytes, or undefined where it has none. */
function optRecordOf(message: Uint8Array, end: number): Uint8Array | undefined {
  let offset = HEADER_LENGTH;
  for (let left = questionCount(message); left > 0; left--) offset = (nameEnd(message, offset) ?? end) + 4;
  const records = u16(message, 6) + u16(message, 8) + u16(message, 10);
  for (let index = 0; index < records && offset < end; index++) {
    const record = recordAt(message, offset);
    if (record === undefined) return undefined;
    // In the additional section, owned by the root (RFC 6891 6.1.2): else no OPT record.
    if (index >= records - u16(message, 10) && record.type === TYPE_OPT && record.typeAt === offset + 1) return message.subarray(offset, record.end);
    offset = record.end;
  }
  return undefined;
}

/** An upstream's answer as a client gets it over UDP (fitUdpAnswer). */
export interface FittedAnswer {
  /** The answer (a view into the upstream's where it is relayed as it came, up to its end), or a truncated one made for it. */
  readonly message: Buffer;
  /** Whether it is a truncated answer made for it (the upstream's did not fit, or was cut short with TC set). */
  readonly truncated: boolean;
}

/**
 * What a client that takes `room` gets over UDP of an upstream's `answer` (one that answers its
 * question, whose bytes after the header are `questionLength` long: answersQuestion):
 * - the answer up to its end (messageEnd), where that fits: bytes after a whole message belong to
 *   no section, so they are dropped, not relayed (nor is the answer refused for them: no resolver
 *   reads them, and the records are whole);
 * - where it does not fit, a truncated answer (RFC 1035 4.1.1's TC, RFC 2181 9): the answer's
 *   header with TC set, its question and, for a client that sent EDNS, its OPT record (RFC 6891
 *   7: its fixed part alone where the whole does not fit), no other record: the client asks
 *   again over TCP, where the whole answer goes;
 * - likewise a truncated answer for one cut short that says so itself (TC set: an old server
 *   cutting its answer at what the client takes), which the client asks for again over TCP;
 * - undefined for one cut short that does not say so (records that run past its bytes): malformed,
 *   no answer to relay.
 */
export function fitUdpAnswer(answer: Buffer, questionLength: number, room: UdpRoom): FittedAnswer | undefined {
  const end = messageEnd(answer);
  if (end === undefined && !isTruncated(answer)) return undefined;
  if (end !== undefined && end <= room.bytes) return { message: end === answer.length ? answer : answer.subarray(0, end), truncated: false };
  const question = questionCount(answer) === 1 ? answer.subarray(HEADER_LENGTH, HEADER_LENGTH + questionLength) : new Uint8Array(0);
  const opt = room.edns && end !== undefined ? optRecordOf(answer, end) : undefined;
  const base = HEADER_LENGTH + question.length;
  const optBytes = opt === undefined ? undefined : base + opt.length <= room.bytes ? opt : opt.subarray(0, OPT_FIXED_LENGTH);
  const truncated = Buffer.alloc(base + (optBytes?.length ?? 0));
  truncated.set(answer.subarray(0, HEADER_LENGTH));
  truncated[2] = (answer[2] ?? 0) | 0x02;
  truncated.writeUInt16BE(question.length === 0 ? 0 : 1, 4);
  truncated.writeUInt16BE(0, 6);
  truncated.writeUInt16BE(0, 8);
  truncated.writeUInt16BE(optBytes === undefined ? 0 : 1, 10);
  truncated.set(question, HEADER_LENGTH);
  if (optBytes !== undefined) {
    truncated.set(optBytes, base);
    // Its options left out: no data.
    if (optBytes.length === OPT_FIXED_LENGTH) truncated.writeUInt16BE(0, base + OPT_FIXED_LENGTH - 2);
  }
  return { message: truncated, truncated: true };
}

/**
 * Most bytes of a failure answer held for a UDP query (see heldAnswer): as many as a query's
 * (MAX_QUERY_LENGTH), so that the pending table's 4,096 queries hold 16 MiB of them at most, not
 * 256 MiB of answers fitted to clients that take 64 KiB.
 */
export const MAX_HELD_ANSWER = MAX_QUERY_LENGTH;

/**
 * A SERVFAIL, REFUSED or NOTIMP answer as held for a UDP query until an upstream asked before it
 * may no longer answer better: fitted (fitUdpAnswer) to what the client takes, MAX_HELD_ANSWER
 * bytes at most (a larger one is held as the truncated answer, and the client asks over TCP), and
 * a copy, as `answer` may be a view into a socket's arena. Undefined where fitUdpAnswer gives none.
 */
export function heldAnswer(answer: Buffer, questionLength: number, room: UdpRoom): FittedAnswer | undefined {
  const fitted = fitUdpAnswer(answer, questionLength, { bytes: Math.min(room.bytes, MAX_HELD_ANSWER), edns: room.edns });
  if (fitted === undefined || fitted.truncated) return fitted;
  return { message: Buffer.from(fitted.message), truncated: false };
}
