// Adapter over the rtnl addon (host/native/rtnl.c): a route netlink socket in one network
// namespace that runs programs of link requests on a worker thread. The handle owns the socket.
import { constants } from 'node:os';
import { loadNativeAddon } from '../shared/native-addon.js';
import type { Program } from './link-message.js';

export type RtnlErrorKind = 'addon-missing' | 'socket';

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
}

interface Addon {
  open(netnsPath: string | null): object;
  run(handle: object, program: Uint8Array, keepGoing: boolean): Promise<RawOutcome>;
  close(handle: object): void;
}

/** How one record of a program went. */
export type RecordOutcome =
  | { readonly state: 'done'; readonly reply: Uint8Array }
  | { readonly state: 'failed'; readonly errno: number; readonly code: string; readonly text: string }
  | { readonly state: 'not-run' };

const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, number]) => [number, name]));

let addon: Addon | undefined;

function loaded(): Addon {
  if (addon !== undefined) return addon;
  const found = loadNativeAddon<Addon>(import.meta.url, 'rtnl.node');
  if (found === undefined) throw new RtnlError('addon-missing', 'ENOENT', 'the rtnl addon (build/Release/rtnl.node) is missing: run npm run build (it needs make, g++ and python3)');
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
   * Run the records in order, each answered before the next is sent. After a failure the rest
   * are not run, unless keepGoing.
   */
  async run(program: Program, keepGoing = false): Promise<RecordOutcome[]> {
    if (this.handle === undefined) throw new RtnlError('socket', 'EBADF', 'route netlink socket used after close');
    if (program.records === 0) return [];
    const raw = await this.native.run(this.handle, program.bytes, keepGoing);
    return Array.from(raw.errors, (errno, index): RecordOutcome => {
      if (errno === 0) {
        const start = raw.spans[2 * index] ?? 0;
        return { state: 'done', reply: raw.replies.subarray(start, start + (raw.spans[2 * index + 1] ?? 0)) };
      }
      if (errno < 0) return { state: 'not-run' };
      return { state: 'failed', errno, code: ERRNO_NAMES.get(errno) ?? `E${String(errno)}`, text: raw.texts[index] ?? `errno ${String(errno)}` };
    });
  }

  close(): void {
    if (this.handle === undefined) return;
    this.native.close(this.handle);
    this.handle = undefined;
  }
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
