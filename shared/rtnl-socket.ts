// Adapter over the rtnl addon (shared/native/rtnl.c): a route netlink socket in one network
// namespace that runs programs of requests on a worker thread, each answered before the next is
// sent. spectrum-link runs its link programs on it, spectrum-netd its requests. The handle owns
// the socket.
import { constants } from 'node:os';
import { loadNativeAddon } from './native-addon.js';
import { selfHoldsNetAdmin } from './net-admin.js';

/** Records for rtnl.c (see there): u32 kind (with its flags), u32 payload length, payload padded to 4 bytes. */
export interface Program {
  readonly bytes: Uint8Array;
  readonly records: number;
}

/** Record kind of one netlink message sent as it is (rtnl.c's REQUEST). */
const KIND_REQUEST = 1;

/** A program of one REQUEST record for each message (a whole netlink message each, in host order: its seq is set as it is sent). */
export function requestProgram(messages: readonly Uint8Array[]): Program {
  const length = messages.reduce((sum, message) => sum + 8 + ((message.length + 3) & ~3), 0);
  const bytes = new Uint8Array(length);
  const view = new DataView(bytes.buffer);
  const little = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  let at = 0;
  for (const message of messages) {
    view.setUint32(at, KIND_REQUEST, little);
    view.setUint32(at + 4, message.length, little);
    bytes.set(message, at + 8);
    at += 8 + ((message.length + 3) & ~3);
  }
  return { bytes, records: messages.length };
}

export type RtnlErrorKind = 'addon-missing' | 'addon-stale' | 'socket';

export class RtnlError extends Error {
  override readonly name = 'RtnlError';
  constructor(
    readonly kind: RtnlErrorKind,
    /** The errno name (ENOENT, EPERM, ...). */
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** What a run reports, per record (see rtnl.c). */
interface RawOutcome {
  readonly errors: Int32Array;
  readonly texts: readonly (string | undefined)[];
  readonly replies: Buffer;
  readonly spans: Int32Array;
  readonly marks: Int32Array;
}

/**
 * Which network namespace a namespace file holds: the device and inode number of its nsfs file
 * (one inode per living namespace), and the namespace's cookie. The inode number of one deleted is
 * given to the next one made (one deleted and made anew under its name often has it): the cookie,
 * never given twice, tells them apart. Null before Linux 5.14 (no SO_NETNS_COOKIE): the inode alone.
 */
export interface NamespaceIdentity {
  readonly dev: number;
  readonly ino: number;
  readonly cookie: number | null;
}

interface Addon {
  /** The program format its runner reads (absent before there was one). */
  readonly programFormat?: number;
  open(netnsPath: string | null): object;
  namespace(handle: object): NamespaceIdentity | null;
  run(handle: object, program: Uint8Array, keepGoing: boolean): Promise<RawOutcome>;
  close(handle: object): void;
}

/** How one record of a program went. */
export type RecordOutcome =
  | { readonly state: 'done'; readonly reply: Uint8Array }
  | { readonly state: 'failed'; readonly errno: number; readonly code: string; readonly text: string }
  | { readonly state: 'not-run' };

/** How a record's answer went, besides its outcome (rtnl.c's MARK_*). */
export interface RecordMarks {
  /** A part of its dump came marked NLM_F_DUMP_INTR: the table changed while it was dumped. */
  readonly interrupted: boolean;
  /** It failed how: the kernel's NLMSG_ERROR ('refused'), an error in its dump's NLMSG_DONE ('dump-failed'), a receive error under its dump, read whole all the same ('receive'), no answer within 5 s ('timed-out'), unsent after an earlier record timed out ('not-sent'); null for anything else. */
  readonly failure: 'refused' | 'dump-failed' | 'receive' | 'timed-out' | 'not-sent' | null;
}

function marksOf(bits: number): RecordMarks {
  const failure = (bits & 2) !== 0 ? 'refused' : (bits & 4) !== 0 ? 'dump-failed' : (bits & 8) !== 0 ? 'receive' : (bits & 16) !== 0 ? 'timed-out' : (bits & 32) !== 0 ? 'not-sent' : null;
  return { interrupted: (bits & 1) !== 0, failure };
}

/** A record's outcome with its marks, and the messages it was answered with (a failed dump's too: those before its error). */
export type MarkedOutcome = RecordOutcome & { readonly marks: RecordMarks; readonly reply: Uint8Array };

const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, number]) => [number, name]));

/** The program format this code writes (link-message.ts, netd's programs): rtnl.c's PROGRAM_FORMAT. */
export const PROGRAM_FORMAT = 4;

/**
 * Refuse an addon whose runner reads another program format than this code writes (one built
 * from other sources: a partial build), which would refuse or misread records.
 */
export function assertProgramFormat(format: number | undefined): void {
  if (format === PROGRAM_FORMAT) return;
  const its = format === undefined ? 'an older format' : `format ${format}`;
  throw new RtnlError('addon-stale', 'ELIBBAD', `the rtnl addon (build/Release/rtnl.node) was built from other sources than this code (it reads ${its}, this code writes format ${PROGRAM_FORMAT}): run npm run build`);
}

let addon: Addon | undefined;

function loaded(): Addon {
  if (addon !== undefined) return addon;
  const found = loadNativeAddon<Addon>(import.meta.url, 'rtnl.node');
  if (found === undefined) throw new RtnlError('addon-missing', 'ENOENT', 'the rtnl addon (build/Release/rtnl.node) is missing: run npm run build (it needs make, g++ and python3)');
  assertProgramFormat(found.programFormat);
  addon = found;
  return addon;
}

function codeOf(error: unknown): string {
  return error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : 'EIO';
}

export class RtnlSocket {
  private handle: object | undefined;

  private constructor(
    private readonly native: Addon,
    handle: object,
  ) {
    this.handle = handle;
  }

  /** A socket in the namespace at `netnsPath` (a /run/netns file), or in ours (null). */
  static open(netnsPath: string | null): RtnlSocket {
    const native = loaded();
    try {
      return new RtnlSocket(native, native.open(netnsPath));
    } catch (error) {
      const where = netnsPath === null ? 'this network namespace' : netnsPath;
      throw new RtnlError('socket', codeOf(error), `cannot open a route netlink socket in ${where}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  /**
   * The namespace this socket is in, as the descriptor of the namespace file it was opened by says
   * (fstat), with its cookie (getsockopt): no request; null for one opened in ours.
   */
  namespace(): NamespaceIdentity | null {
    if (this.handle === undefined) throw new RtnlError('socket', 'EBADF', 'route netlink socket used after close');
    try {
      return this.native.namespace(this.handle);
    } catch (error) {
      throw new RtnlError('socket', codeOf(error), `cannot tell which network namespace a route netlink socket is in: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  /**
   * Run the records in order, each answered before the next is sent. After a failure the rest
   * are not run, unless keepGoing, or it is one its record's kind lets the program go on after
   * (rtnl.c's GONE_GOES_ON: the kernel's ENODEV).
   */
  async run(program: Program, keepGoing = false): Promise<RecordOutcome[]> {
    const raw = await this.#runRaw(program, keepGoing);
    return raw === null ? [] : outcomesOf(raw);
  }

  /** As run, each outcome with its marks. */
  async runMarked(program: Program, keepGoing = false): Promise<MarkedOutcome[]> {
    const raw = await this.#runRaw(program, keepGoing);
    if (raw === null) return [];
    return outcomesOf(raw).map((outcome, index) => {
      const start = raw.spans[2 * index] ?? 0;
      return { ...outcome, marks: marksOf(raw.marks[index] ?? 0), reply: raw.replies.subarray(start, start + (raw.spans[2 * index + 1] ?? 0)) };
    });
  }

  async #runRaw(program: Program, keepGoing: boolean): Promise<RawOutcome | null> {
    if (this.handle === undefined) throw new RtnlError('socket', 'EBADF', 'route netlink socket used after close');
    if (program.records === 0) return null;
    return this.native.run(this.handle, program.bytes, keepGoing);
  }

  /** Closed at once where no program runs; else its descriptor is closed when the running one ends (its records not yet begun are not run). */
  close(): void {
    if (this.handle === undefined) return;
    this.native.close(this.handle);
    this.handle = undefined;
  }
}

/**
 * What a refusal for want of privilege (EPERM, EACCES: the kernel checks CAP_NET_ADMIN in the
 * socket's namespace) says after the kernel's text: "Operation not permitted" alone names no cause.
 * Only where this process holds no CAP_NET_ADMIN (or that cannot be known): one that holds it is
 * refused for another reason (a security module, /dev/net/tun on a nodev mount, IPv6 off on a
 * link), which the hint would hide behind a privilege it has.
 */
export const PRIVILEGE_HINT = 'needs root or CAP_NET_ADMIN';

const privilegeHinted = (code: string, text: string): string =>
  (code === 'EPERM' || code === 'EACCES') && selfHoldsNetAdmin() !== true ? `${text} (${PRIVILEGE_HINT})` : text;

function outcomesOf(raw: RawOutcome): RecordOutcome[] {
    return Array.from(raw.errors, (errno, index): RecordOutcome => {
      if (errno === 0) {
        const start = raw.spans[2 * index] ?? 0;
        return { state: 'done', reply: raw.replies.subarray(start, start + (raw.spans[2 * index + 1] ?? 0)) };
      }
      if (errno < 0) return { state: 'not-run' };
      const code = ERRNO_NAMES.get(errno) ?? `E${String(errno)}`;
      const text = raw.texts[index] ?? `errno ${String(errno)}`;
      return { state: 'failed', errno, code, text: privilegeHinted(code, text) };
    });
}

/** Open a socket, use it, close it. */
export async function withRtnlSocket<T>(netnsPath: string | null, use: (socket: RtnlSocket) => Promise<T>): Promise<T> {
  const socket = RtnlSocket.open(netnsPath);
  try {
    return await use(socket);
  } finally {
    socket.close();
  }
}
