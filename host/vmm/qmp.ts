// QEMU Machine Protocol client over QEMU's Unix socket (`-qmp unix:PATH,server=on,wait=off`),
// and NIC hot-plug on top of it. Spec: networking-facts.md section 3; measured-facts.md
// "QEMU QMP hot-plug".
//
// Wire format: one JSON object per line, lines end CRLF (QEMU accepts LF). Replies carry the id
// of their command; events carry no id and may arrive at any time, also between a command and
// its reply. QEMU serves one QMP client at a time: while another client is connected, the
// greeting does not come, which the connect timeout turns into a clear error.
import { type Socket, createConnection } from 'node:net';
import { sameMac } from '../../shared/link-mac.js';
import { quoteText, shownSocket, shownText } from '../vm-name.js';
import { deadline } from './deadline.js';
import { DEFAULT_NIC_MTU, type VmmNic, qemuHostMtu, qemuNetdevId, vmmNic } from './nic.js';
import { TapFd, tapOpenProblem, writeWithRights } from './tap-fd.js';
import { VmmSocket, VmmSocketError, noVmmThere } from './vmm-socket.js';

export type QmpErrorKind =
  /** Nothing at the socket path: no QEMU runs there (kept apart from 'connect': such a VM holds no NIC). */
  | 'no-socket'
  /** A socket that refuses connections, left by a QEMU that exited: none runs there. */
  | 'stale-socket'
  /** The socket could not be opened for another reason: not a socket (a symlink, a file), permission. */
  | 'connect'
  /** No greeting, reply or event within the time given. */
  | 'timeout'
  /** The peer does not speak QMP: not JSON, not an object, a line over the limit, no greeting. */
  | 'protocol'
  /** QEMU refused a command; `qmpClass` and `desc` are QEMU's. */
  | 'command'
  /** The connection was closed (by us or by QEMU) before the answer came. */
  | 'closed'
  /** A device with the NIC's id exists but is not this NIC (other MAC, driver or netdev). */
  | 'conflict'
  /** A device with the NIC's id exists but lost its netdev: an unplug the guest never acknowledged. */
  | 'unplug-pending'
  /** The NIC is attached, but its guest was told another MTU than the link's (the MTU changed since). */
  | 'mtu-mismatch'
  /** The NIC's tap cannot be handed over: missing, not a tap, held by another process, no permission. */
  | 'tap-unavailable';

export class QmpError extends Error {
  override readonly name = 'QmpError';
  constructor(
    readonly kind: QmpErrorKind,
    message: string,
    /** For kind 'command': QEMU's error class (e.g. GenericError, DeviceNotFound) and description. */
    readonly qmpClass?: string,
    readonly desc?: string,
  ) {
    super(message);
  }
}

/** Longest line accepted from QEMU, in bytes; a peer that sends more is not QMP. */
export const QMP_MAX_LINE = 1024 * 1024;
/** Events kept for waitForEvent; the oldest are dropped beyond this. */
export const QMP_MAX_BUFFERED_EVENTS = 1000;
/**
 * Total length of the events (their lines as received) kept for waitForEvent; the oldest are
 * dropped beyond this. A line parses into up to some 20 times its size in objects: a peer that
 * floods big events must not fill the heap with them.
 */
export const QMP_MAX_BUFFERED_EVENT_BYTES = QMP_MAX_LINE;

export interface QmpGreeting {
  readonly version: unknown;
  readonly capabilities: readonly string[];
}

export interface QmpEvent {
  readonly event: string;
  readonly data: Readonly<Record<string, unknown>>;
  readonly timestamp?: { readonly seconds: number; readonly microseconds: number };
}

export interface QmpConnectOptions {
  /** Bound on connecting, the greeting and capability negotiation together. */
  readonly timeoutMs: number;
  /** Bound on each later command unless execute() is given its own; default timeoutMs. */
  readonly commandTimeoutMs?: number;
  /**
   * Ends the session when it aborts (kind 'timeout', the abort reason's message saying why):
   * everything waiting fails at once. A bound on a whole series of commands.
   */
  readonly signal?: AbortSignal;
  /** The VM's directory in the socket path (its part up to the template's first component with {vm}): no symlink below it is followed (vmm-socket.ts). */
  readonly vmDir?: string | undefined;
}

type JsonObject = Record<string, unknown>;

const record = (value: unknown): JsonObject | null =>
  typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as JsonObject) : null;

/** Quote text from the peer for a message: bounded, control and format characters escaped. */
function quote(text: string, max = 120): string {
  return quoteText(text, max);
}

/** QEMU's error class and description for a message: as QEMU wrote them where plain, else quoted. */
function refusal(qmpClass: string | undefined, desc: string | undefined): { readonly qmpClass: string; readonly desc: string } {
  return { qmpClass: shownText(qmpClass ?? '', 60), desc: shownText(desc ?? '', 300) };
}

interface Pending {
  readonly command: string;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: QmpError) => void;
  readonly timer: NodeJS.Timeout;
}

interface EventWaiter {
  readonly name: string;
  readonly predicate: (event: QmpEvent) => boolean;
  readonly resolve: (event: QmpEvent) => void;
  readonly reject: (error: QmpError) => void;
  readonly timer: NodeJS.Timeout;
}

/**
 * One QMP session. Owns its socket: close() it when done (also after errors). Any protocol
 * violation or socket failure ends the session and fails everything waiting on it.
 */
export class QmpClient {
  private readonly chunks: Buffer[] = [];
  private chunkBytes = 0;
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private readonly waiters = new Set<EventWaiter>();
  private readonly buffered: QmpEvent[] = [];
  /** The size of each buffered event's line, in the same order, and their sum. */
  private readonly bufferedSizes: number[] = [];
  private bufferedBytes = 0;
  private readonly listeners = new Set<(event: QmpEvent) => void>();
  private failure: QmpError | undefined;
  private greetingWaiter: { resolve: (greeting: QmpGreeting) => void; reject: (error: QmpError) => void } | undefined;
  private greetingValue: QmpGreeting | undefined;
  private readonly connected: Promise<void>;
  private connectWaiter: ((error: QmpError) => void) | undefined;
  private everConnected = false;
  private readonly greeting: Promise<QmpGreeting>;
  /** Stops observing the abort signal the session ends on, if any. */
  private stopObserving: (() => void) | undefined;

  private constructor(
    private readonly socket: Socket,
    private readonly path: string,
    private readonly commandTimeoutMs: number,
    connectProblem: (error: NodeJS.ErrnoException) => string,
  ) {
    this.greeting = new Promise((resolve, reject) => {
      this.greetingWaiter = { resolve, reject };
    });
    this.connected = new Promise((resolve, reject) => {
      socket.once('connect', () => {
        this.everConnected = true;
        resolve();
      });
      this.connectWaiter = reject;
    });
    // Both are awaited by connect() only when it gets there; until then, no unhandled rejection.
    this.greeting.catch(() => undefined);
    this.connected.catch(() => undefined);
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', (error: NodeJS.ErrnoException) =>
      this.fail(
        this.everConnected
          ? new QmpError('closed', `QMP socket ${shownSocket(path)}: connection failed: ${error.message}`)
          : connectError(path, connectProblem(error), error),
      ),
    );
    socket.on('close', () => this.fail(new QmpError('closed', `QMP socket ${shownSocket(path)}: QEMU closed the connection: did it exit?`)));
  }

  /**
   * Connect, read the greeting and leave capability negotiation mode; bounded by timeoutMs. A
   * symlink at `path` is not followed (vmm-socket.ts).
   */
  static async connect(path: string, options: QmpConnectOptions): Promise<QmpClient> {
    const { timeoutMs } = options;
    let found: VmmSocket;
    try {
      found = VmmSocket.find(path, QMP_SOCKET_MISSING, options.vmDir);
    } catch (error) {
      if (error instanceof VmmSocketError) throw connectError(path, error.message, error);
      throw error;
    }
    const client = new QmpClient(createConnection({ path: found.connectPath }), path, options.commandTimeoutMs ?? timeoutMs, (error) => found.connectProblem(error));
    if (options.signal !== undefined) client.endOn(options.signal);
    let phase = 'connecting to';
    const timer = setTimeout(() => {
      const hint =
        phase === 'connecting to'
          ? 'is QEMU running and is its -qmp socket at this path?'
          : 'QEMU serves one QMP client at a time: is another client (e.g. a management tool) connected to this socket?';
      client.fail(new QmpError('timeout', `QMP socket ${shownSocket(path)}: no answer within ${timeoutMs} ms while ${phase} it: ${hint}`));
    }, timeoutMs);
    try {
      // Connected (or not), the socket needs finding no more.
      await client.connected.finally(() => found.close());
      phase = 'waiting for the greeting from';
      client.greetingValue = await client.greeting;
      phase = 'negotiating capabilities with';
      await client.execute('qmp_capabilities', undefined, { timeoutMs });
      return client;
    } catch (error) {
      client.close();
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** End the session when `signal` aborts (at once if it has). */
  private endOn(signal: AbortSignal): void {
    const end = (): void => {
      const reason: unknown = signal.reason;
      const why = reason instanceof Error ? reason.message : 'aborted';
      this.fail(new QmpError('timeout', `QMP socket ${shownSocket(this.path)}: given up: ${why}`));
    };
    if (signal.aborted) return end();
    signal.addEventListener('abort', end, { once: true });
    this.stopObserving = () => signal.removeEventListener('abort', end);
  }

  /** The server's greeting, as received. */
  get serverGreeting(): QmpGreeting | undefined {
    return this.greetingValue;
  }

  /**
   * Run one command; resolves with its `return` value, rejects with kind 'command' on an error
   * reply. `fds`: descriptors sent with the command (SCM_RIGHTS), as `getfd` and `add-fd` take them.
   */
  execute(command: string, args?: JsonObject, options: { timeoutMs?: number; fds?: readonly number[] } = {}): Promise<unknown> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const id = `sn-${this.nextId++}`;
    const timeoutMs = options.timeoutMs ?? this.commandTimeoutMs;
    const message: JsonObject = { execute: command, id };
    if (args !== undefined) message.arguments = args;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QmpError('timeout', `QMP socket ${shownSocket(this.path)}: no reply to ${command} within ${timeoutMs} ms: is QEMU hung or overloaded?`));
      }, timeoutMs);
      this.pending.set(id, { command, resolve, reject, timer });
      const line = `${JSON.stringify(message)}\r\n`;
      if (options.fds === undefined) {
        this.socket.write(line);
        return;
      }
      try {
        writeWithRights(this.socket, Buffer.from(line), options.fds);
      } catch (error) {
        clearTimeout(timer);
        this.pending.delete(id);
        const reason = error instanceof Error ? error.message : String(error);
        reject(new QmpError('closed', `QMP socket ${shownSocket(this.path)}: could not send ${command} with its descriptors: ${reason}`));
      }
    });
  }

  /** Events received and not yet taken by waitForEvent, oldest first. */
  get events(): readonly QmpEvent[] {
    return this.buffered;
  }

  /** Observe every event as it arrives; returns the function that stops observing. */
  onEvent(listener: (event: QmpEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * The first event with this name that satisfies predicate: taken from the buffer if it already
   * came, else awaited for at most timeoutMs (then kind 'timeout').
   */
  waitForEvent(name: string, predicate: (event: QmpEvent) => boolean, timeoutMs: number): Promise<QmpEvent> {
    const index = this.buffered.findIndex((event) => event.event === name && predicate(event));
    const found = this.buffered[index];
    if (found !== undefined) {
      this.buffered.splice(index, 1);
      this.bufferedBytes -= this.bufferedSizes.splice(index, 1)[0] ?? 0;
      return Promise.resolve(found);
    }
    if (this.failure !== undefined) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const waiter: EventWaiter = {
        name,
        predicate,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(waiter);
          reject(new QmpError('timeout', `QMP socket ${shownSocket(this.path)}: no ${name} event within ${timeoutMs} ms`));
        }, timeoutMs),
      };
      this.waiters.add(waiter);
    });
  }

  /** End the session and release the socket; everything still waiting fails with kind 'closed'. */
  close(): void {
    this.fail(new QmpError('closed', `QMP socket ${shownSocket(this.path)}: the connection was closed before QEMU answered`));
  }

  private receive(chunk: Buffer): void {
    let start = 0;
    for (let newline = chunk.indexOf(0x0a); newline !== -1; newline = chunk.indexOf(0x0a, start)) {
      const part = chunk.subarray(start, newline);
      const line = this.chunkBytes === 0 ? part : Buffer.concat([...this.chunks, part]);
      this.chunks.length = 0;
      this.chunkBytes = 0;
      start = newline + 1;
      if (line.length > QMP_MAX_LINE) return this.tooLong();
      this.handleLine(line.toString('utf8').replace(/\r$/, ''));
      if (this.failure !== undefined) return;
    }
    if (start < chunk.length) {
      this.chunks.push(chunk.subarray(start));
      this.chunkBytes += chunk.length - start;
      if (this.chunkBytes > QMP_MAX_LINE) this.tooLong();
    }
  }

  private tooLong(): void {
    this.fail(new QmpError('protocol', `QMP socket ${shownSocket(this.path)}: the peer sent a line over ${QMP_MAX_LINE} bytes: is this a QEMU QMP socket?`));
  }

  private handleLine(line: string): void {
    if (line.trim() === '') return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      return this.fail(new QmpError('protocol', `QMP socket ${shownSocket(this.path)}: the peer sent a line that is not JSON (${quote(line)}): is this a QEMU QMP socket?`));
    }
    const message = record(parsed);
    if (message === null) {
      return this.fail(new QmpError('protocol', `QMP socket ${shownSocket(this.path)}: the peer sent JSON that is not an object (${quote(line)})`));
    }
    if (this.greetingWaiter !== undefined) return this.handleGreeting(message, line);
    if (typeof message.event === 'string') return this.handleEvent(message, line.length);
    if ('return' in message || 'error' in message) return this.handleReply(message, line);
    this.fail(new QmpError('protocol', `QMP socket ${shownSocket(this.path)}: unexpected message ${quote(line)}`));
  }

  private handleGreeting(message: JsonObject, line: string): void {
    const qmp = record(message.QMP);
    const capabilities = qmp === null ? null : qmp.capabilities;
    if (qmp === null || !Array.isArray(capabilities) || !capabilities.every((c): c is string => typeof c === 'string')) {
      // fail() rejects the greeting waiter, so connect() ends at once.
      return this.fail(new QmpError('protocol', `QMP socket ${shownSocket(this.path)}: expected the QMP greeting, got ${quote(line)}: is this a QEMU QMP socket?`));
    }
    const waiter = this.greetingWaiter;
    this.greetingWaiter = undefined;
    waiter?.resolve({ version: qmp.version, capabilities });
  }

  private handleEvent(message: JsonObject, size: number): void {
    const timestamp = record(message.timestamp);
    const seconds = timestamp?.seconds;
    const microseconds = timestamp?.microseconds;
    const event: QmpEvent = {
      event: message.event as string,
      data: record(message.data) ?? {},
      ...(typeof seconds === 'number' && typeof microseconds === 'number' ? { timestamp: { seconds, microseconds } } : {}),
    };
    for (const listener of this.listeners) listener(event);
    for (const waiter of this.waiters) {
      if (waiter.name === event.event && waiter.predicate(event)) {
        this.waiters.delete(waiter);
        clearTimeout(waiter.timer);
        waiter.resolve(event);
        return;
      }
    }
    this.buffered.push(event);
    this.bufferedSizes.push(size);
    this.bufferedBytes += size;
    while (this.buffered.length > QMP_MAX_BUFFERED_EVENTS || this.bufferedBytes > QMP_MAX_BUFFERED_EVENT_BYTES) {
      this.buffered.shift();
      this.bufferedBytes -= this.bufferedSizes.shift() ?? 0;
    }
  }

  private handleReply(message: JsonObject, line: string): void {
    const id = message.id;
    const pending = typeof id === 'string' ? this.pending.get(id) : undefined;
    if (pending === undefined) {
      // A reply to a command that timed out is harmless; one without an id means QEMU could not
      // parse what we sent, which is a bug on our side or not QEMU at all.
      if (typeof id === 'string' && id.startsWith('sn-')) return;
      return this.fail(new QmpError('protocol', `QMP socket ${shownSocket(this.path)}: reply that matches no command: ${quote(line)}`));
    }
    this.pending.delete(id as string);
    clearTimeout(pending.timer);
    if ('return' in message) return pending.resolve(message.return);
    const error = record(message.error);
    const qmpClass = typeof error?.class === 'string' ? error.class : 'unknown';
    const desc = typeof error?.desc === 'string' ? error.desc : quote(line);
    const shown = refusal(qmpClass, desc);
    pending.reject(new QmpError('command', `QEMU refused ${pending.command}: ${shown.desc} (${shown.qmpClass})`, qmpClass, desc));
  }

  private fail(error: QmpError): void {
    if (this.failure !== undefined) return;
    this.failure = error;
    this.stopObserving?.();
    this.socket.destroy();
    this.connectWaiter?.(error);
    this.greetingWaiter?.reject(error);
    this.greetingWaiter = undefined;
    for (const pending of this.pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
    this.pending.clear();
    for (const waiter of this.waiters) {
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
    this.waiters.clear();
    this.chunks.length = 0;
  }
}

const QMP_SOCKET_MISSING = 'is QEMU running with -qmp unix:PATH,server=on, and is the path right?';

/** Why the socket at `path` could not be reached (`cause`: the failure, which says whether QEMU runs there). */
function connectError(path: string, problem: string, cause: unknown): QmpError {
  return new QmpError(noVmmThere(cause) ?? 'connect', `cannot connect to QMP socket ${shownSocket(path)}: ${problem}`);
}

/** Open a session, run fn, and always close the session. */
export async function withQmp<T>(path: string, options: QmpConnectOptions, fn: (client: QmpClient) => Promise<T>): Promise<T> {
  const client = await QmpClient.connect(path, options);
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

// ---------------------------------------------------------------------------------------------
// NIC hot-plug

export interface QemuAttachOptions {
  /** Bound on connecting and on each command. */
  readonly timeoutMs: number;
  /**
   * Gives the attach up when it aborts (kind 'timeout'): a bound on the whole of it, however many
   * steps QEMU answers just in time. What it had asked QEMU to add by then (the tap's descriptor,
   * the netdev, the NIC) is taken back on a new session, bounded as a whole by takeBackMs.
   */
  readonly signal?: AbortSignal;
  /** Bound on that take-back as a whole; default twice timeoutMs. */
  readonly takeBackMs?: number;
  /** Bus to plug into; q35 needs a free `pcie-root-port` (its id) since pcie.0 is not hot-pluggable. */
  readonly bus?: string;
  /** The network namespace (a /run/netns file) the taps are in, where not ours. */
  readonly tapNetnsPath?: string;
  /** The VM's directory in the socket path (its part up to the template's first component with {vm}): no symlink below it is followed (vmm-socket.ts). */
  readonly vmDir?: string | undefined;
}

export interface QemuAttachResult {
  /** True if the NIC was already there with this MAC and netdev: nothing was changed. */
  readonly alreadyAttached: boolean;
}

export interface QemuDetachOptions {
  /** Bound on connecting, on each command, and on the wait for the guest to release the device. */
  readonly timeoutMs: number;
  /** Gives the detach up when it aborts (kind 'timeout'): a bound on the whole of it. */
  readonly signal?: AbortSignal;
  /**
   * When that bound ends (performance.now()): the wait for the guest is cut short so that
   * netdev_del still has timeoutMs before it. Else a VMM slow at every step would have the NIC
   * unplugged and the bound end before its netdev went, the detach failed halfway.
   */
  readonly finishBy?: number;
  /** The VM's directory in the socket path (its part up to the template's first component with {vm}): no symlink below it is followed (vmm-socket.ts). */
  readonly vmDir?: string | undefined;
}

export interface QemuDetachResult {
  /** True if the guest acknowledged the unplug (DEVICE_DELETED) or there was nothing to unplug. */
  readonly acknowledged: boolean;
  /** True if no device had the NIC's id: nothing was unplugged. */
  readonly alreadyDetached: boolean;
}

const PERIPHERAL = '/machine/peripheral';
const NIC_DRIVER = 'virtio-net-pci';

function isCommandError(error: unknown, qmpClass?: string, desc?: RegExp): error is QmpError {
  return (
    error instanceof QmpError &&
    error.kind === 'command' &&
    (qmpClass === undefined || error.qmpClass === qmpClass) &&
    (desc === undefined || desc.test(error.desc ?? ''))
  );
}

const DUPLICATE = /duplicate/i;

/** Whether a user-created device with this id exists (children of /machine/peripheral). */
async function deviceExists(client: QmpClient, id: string): Promise<boolean> {
  const children = await client.execute('qom-list', { path: PERIPHERAL });
  if (!Array.isArray(children)) throw new QmpError('protocol', `qom-list ${PERIPHERAL} did not return a list`);
  return children.some((child) => record(child)?.name === id);
}

async function qomString(client: QmpClient, id: string, property: string): Promise<string> {
  const value = await client.execute('qom-get', { path: `${PERIPHERAL}/${id}`, property });
  if (typeof value !== 'string') throw new QmpError('protocol', `qom-get ${PERIPHERAL}/${id} ${property} did not return a string`);
  return value;
}

async function qomNumber(client: QmpClient, id: string, property: string): Promise<number> {
  const value = await client.execute('qom-get', { path: `${PERIPHERAL}/${id}`, property });
  if (typeof value !== 'number') throw new QmpError('protocol', `qom-get ${PERIPHERAL}/${id} ${property} did not return a number`);
  return value;
}

/**
 * Refuse an attached NIC whose guest was told another MTU than the link's: a guest reads its
 * MTU (host_mtu, 0 when none was offered: then 1500) once, when the NIC comes, so a NIC left from
 * a link made with another --mtu keeps the old one, and frames over the smaller MTU vanish.
 * Re-plugging it here would need the guest's cooperation, so the user is told what to do instead.
 */
async function checkSameMtu(client: QmpClient, nic: VmmNic, socketPath: string): Promise<void> {
  const offered = await qomNumber(client, nic.id, 'host_mtu');
  const told = offered === 0 ? DEFAULT_NIC_MTU : offered;
  const wanted = nic.mtu ?? DEFAULT_NIC_MTU;
  if (told === wanted) return;
  throw new QmpError(
    'mtu-mismatch',
    `QEMU at ${shownSocket(socketPath)} has NIC ${nic.id} with MTU ${told}, but the link's MTU is now ${wanted}: the guest learns its MTU only when the NIC is added, so take the link down (unlink) and link it again, or restart the VM`,
  );
}

/**
 * Refuse, before anything of the link is changed, a NIC QEMU holds already whose guest was told
 * another MTU than `nic.mtu` (checkSameMtu: 'mtu-mismatch'), as the attach would refuse it once
 * the link's devices had the new MTU. A QEMU without that NIC is nothing to refuse: the attach
 * adds it with the link's MTU.
 */
export async function qemuCheckMtu(socketPath: string, nic: VmmNic, options: QmpConnectOptions): Promise<void> {
  vmmNic(nic);
  await withQmp(socketPath, options, async (client) => {
    if (await deviceExists(client, nic.id)) await checkSameMtu(client, nic, socketPath);
  });
}

/** Refuse to touch a device with the NIC's id that is not the NIC: another driver or MAC. */
async function checkSameNic(client: QmpClient, nic: VmmNic, socketPath: string): Promise<void> {
  const type = await qomString(client, nic.id, 'type');
  if (type !== NIC_DRIVER) {
    throw new QmpError(
      'conflict',
      `QEMU at ${shownSocket(socketPath)} already has a device with id ${nic.id}, but it is a ${quote(type)}, not a ${NIC_DRIVER}: another device uses this id; remove it or choose another NIC id`,
    );
  }
  const mac = await qomString(client, nic.id, 'mac');
  if (!sameMac(mac, nic.mac)) {
    throw new QmpError(
      'conflict',
      `QEMU at ${shownSocket(socketPath)} already has NIC ${nic.id} with MAC ${shownText(mac.toUpperCase(), 32)}, not ${nic.mac}: is the link state stale, or does another link use id ${nic.id}? Detach that NIC first`,
    );
  }
}

/**
 * Whether QEMU has a netdev with this id, asked without changing anything: netdev_add checks for
 * a duplicate id before it looks up the descriptor it is given, and none has this name.
 */
async function netdevExists(client: QmpClient, netdev: string): Promise<boolean> {
  try {
    await client.execute('netdev_add', { type: 'tap', id: netdev, fd: NO_SUCH_FD });
  } catch (error) {
    if (isCommandError(error, 'GenericError', DUPLICATE)) return true;
    if (isCommandError(error, 'GenericError', /not been found|not found/i)) return false;
    throw error;
  }
  // Someone registered a descriptor under that name: the probe made a netdev; take it back.
  await client.execute('netdev_del', { id: netdev });
  return false;
}

const NO_SUCH_FD = 'spectrum-link-no-such-fd';

/**
 * Whether the NIC's tap is held: its one queue (no multi_queue) open elsewhere, as it is while a
 * netdev of QEMU's is on it. One that opens is held by nobody: a netdev or NIC of ours is then on
 * another tap of that name, deleted since (by a rollback, or by an unlink while QEMU could not be
 * reached) before this one was made.
 */
function tapHeld(socketPath: string, nic: VmmNic, options: QemuAttachOptions): boolean {
  let tap: TapFd;
  try {
    tap = TapFd.open(nic.tap, options.tapNetnsPath ?? null);
  } catch (error) {
    const why = tapOpenProblem(error, nic.tap);
    if (why === undefined) return true;
    throw new QmpError('tap-unavailable', `QEMU at ${shownSocket(socketPath)}: ${why}`);
  }
  tap.close();
  return false;
}

/**
 * Hand QEMU a queue of the NIC's tap and make the netdev `net-<id>` on it: getfd (the descriptor
 * goes with the command, SCM_RIGHTS), then netdev_add tap with fd=. QEMU never opens the tap by
 * name, so it needs no CAP_NET_ADMIN, and a QEMU in another network namespace gets this tap, not
 * a new one of the same name in its own namespace.
 */
async function addTapNetdev(client: QmpClient, socketPath: string, nic: VmmNic, netdev: string, options: QemuAttachOptions, asked: AskedToAdd): Promise<void> {
  let tap: TapFd;
  try {
    tap = TapFd.open(nic.tap, options.tapNetnsPath ?? null);
  } catch (error) {
    const why = tapOpenProblem(error, nic.tap) ?? `tap ${nic.tap} is held by another process (another VM's VMM?): one tap serves one NIC`;
    throw new QmpError('tap-unavailable', `QEMU at ${shownSocket(socketPath)}: ${why}`);
  }
  try {
    // QEMU keeps its own copy of the descriptor.
    asked.fd = true;
    await client.execute('getfd', { fdname: netdev }, { fds: [tap.fd] });
  } finally {
    tap.close();
  }
  try {
    asked.netdev = true;
    await client.execute('netdev_add', { type: 'tap', id: netdev, fd: netdev });
    // netdev_add took the descriptor out of QEMU's list.
    asked.fd = false;
  } catch (error) {
    // No answer in time: QEMU may make the netdev all the same; none of ours may stay behind.
    if (!isCommandError(error)) await client.execute('netdev_del', { id: netdev }).catch(() => undefined);
    // netdev_add takes the descriptor out of QEMU's list only when it uses it.
    await client.execute('closefd', { fdname: netdev }).catch(() => undefined);
    throw explainNetdevAdd(error, nic);
  }
}

/**
 * Give a running (or paused) QEMU VM a virtio-net-pci NIC on the existing tap nic.tap, with id
 * nic.id and MAC nic.mac; the netdev is `net-<id>`, made on a descriptor of the tap (see
 * addTapNetdev). QEMU does not read the tap's MTU: a link MTU other than 1500 is offered to the
 * guest as `host_mtu` (VIRTIO_NET_F_MTU). Idempotent: a NIC already there with the same MAC, a
 * live netdev on the tap and the same MTU is left alone; one with another MTU is an
 * 'mtu-mismatch', one on a tap deleted since a 'conflict'. A netdev left by an earlier half-done
 * attach is reused where it holds the tap (else replaced); if device_add fails, a netdev added by this call
 * is removed again (and the NIC asked back where QEMU did not answer in time). Given up as a whole
 * (options.signal), what it had asked QEMU to add is taken back on a new session.
 */
export async function qemuAttach(socketPath: string, nic: VmmNic, options: QemuAttachOptions): Promise<QemuAttachResult> {
  vmmNic(nic);
  const netdev = qemuNetdevId(nic);
  const asked: AskedToAdd = { fd: false, netdev: false, device: false };
  try {
    return await withQmp(socketPath, options, (client) => attachOn(client, socketPath, nic, netdev, options, asked));
  } catch (error) {
    // Given up as a whole (options.signal): the session is gone with whatever it was taking back.
    if (options.signal?.aborted === true && (asked.fd || asked.netdev || asked.device)) await takeBackOnNewSession(socketPath, nic, netdev, asked, options);
    throw error;
  }
}

/** What an attach asked QEMU to add (and did not see through): taken back where it gives up. */
interface AskedToAdd {
  /** The tap's descriptor (getfd), until netdev_add took it. */
  fd: boolean;
  /** The netdev net-<id>, made by this attach (not one left by an earlier one, which it reuses). */
  netdev: boolean;
  device: boolean;
}

/**
 * After an attach was given up as a whole while a step was under way: QEMU may carry out what it
 * had been asked all the same. Left there, a NIC or netdev would hold a tap that the linker's undo
 * then deletes (and the next attach take it for attached, on a dead tap), a descriptor would hold
 * the tap's queue. So it is taken back on a new session (QEMU serves one client at a time: the old
 * one is closed), as far as QEMU answers within takeBackMs.
 */
async function takeBackOnNewSession(socketPath: string, nic: VmmNic, netdev: string, asked: AskedToAdd, options: QemuAttachOptions): Promise<void> {
  const ms = options.takeBackMs ?? 2 * options.timeoutMs;
  const bound = deadline(ms, `taking back what an attach of NIC ${nic.id} given up had asked for took over ${ms} ms`);
  try {
    await withQmp(socketPath, { timeoutMs: options.timeoutMs, signal: bound.signal, vmDir: options.vmDir }, async (client) => {
      const quietly = (command: string, args: JsonObject): Promise<unknown> => client.execute(command, args).catch(() => undefined);
      // The device first: its netdev goes after it (as where device_add fails in the session).
      if (asked.device) await quietly('device_del', { id: nic.id });
      if (asked.netdev) await quietly('netdev_del', { id: netdev });
      if (asked.fd) await quietly('closefd', { fdname: netdev });
    });
  } catch {
    // As far as QEMU answers: the attach's own error is what is said.
  } finally {
    bound.clear();
  }
}

async function attachOn(client: QmpClient, socketPath: string, nic: VmmNic, netdev: string, options: QemuAttachOptions, asked: AskedToAdd): Promise<QemuAttachResult> {
  if (await deviceExists(client, nic.id)) {
    await checkSameNic(client, nic, socketPath);
    const backend = await qomString(client, nic.id, 'netdev');
    if (backend !== netdev) {
      throw new QmpError(
        'conflict',
        `QEMU at ${shownSocket(socketPath)} already has NIC ${nic.id}, but on netdev ${quote(backend)}, not ${netdev}: it was not attached by spectrum-link; detach it first`,
      );
    }
    // The NIC's netdev must still exist: after a detach the guest never acknowledged, the
    // device stays while its netdev is gone.
    if (await netdevExists(client, netdev)) {
      if (!tapHeld(socketPath, nic, options)) {
        throw new QmpError(
          'conflict',
          `QEMU at ${shownSocket(socketPath)} has NIC ${nic.id} with MAC ${nic.mac}, but not on tap ${nic.tap}: nobody holds that tap, so it was made anew after the NIC's was deleted (README: MTU and stale NICs); take the link down (unlink) and link it again, or restart the VM`,
        );
      }
      await checkSameMtu(client, nic, socketPath);
      return { alreadyAttached: true };
    }
    throw new QmpError(
      'unplug-pending',
      `QEMU at ${shownSocket(socketPath)} still has NIC ${nic.id}, but its netdev ${netdev} was removed: an earlier detach is waiting for the guest to release the device. Wait for the guest (DEVICE_DELETED), or reset or restart the VM, then attach again`,
    );
  }

  // A netdev with this id may be left by an earlier attach that stopped before device_add: it is
  // reused where it holds the tap, and replaced where the tap was made anew since.
  let addedNetdev = !(await netdevExists(client, netdev));
  if (!addedNetdev && !tapHeld(socketPath, nic, options)) {
    await client.execute('netdev_del', { id: netdev });
    addedNetdev = true;
  }
  if (addedNetdev) await addTapNetdev(client, socketPath, nic, netdev, options, asked);
  const hostMtu = qemuHostMtu(nic);
  try {
    asked.device = true;
    await client.execute('device_add', {
      driver: NIC_DRIVER,
      netdev,
      mac: nic.mac,
      id: nic.id,
      ...(hostMtu !== undefined ? { host_mtu: hostMtu } : {}),
      ...(options.bus !== undefined ? { bus: options.bus } : {}),
    });
  } catch (error) {
    // No answer in time: QEMU may add the NIC all the same; ask for it back (the guest still has
    // to acknowledge the unplug) before its netdev goes, so that it is not left in the VM for
    // good, on no netdev.
    if (!isCommandError(error)) await client.execute('device_del', { id: nic.id }).catch(() => undefined);
    if (addedNetdev) await client.execute('netdev_del', { id: netdev }).catch(() => undefined);
    throw explainDeviceAdd(error, nic, options.bus);
  }
  return { alreadyAttached: false };
}

function explainNetdevAdd(error: unknown, nic: VmmNic): unknown {
  if (!isCommandError(error)) return error;
  const shown = refusal(error.qmpClass, error.desc);
  return new QmpError(
    'command',
    `QEMU refused the descriptor of tap ${nic.tap} for NIC ${nic.id}: ${shown.desc} (${shown.qmpClass}): was the tap made with vnet_hdr?`,
    error.qmpClass,
    error.desc,
  );
}

function explainDeviceAdd(error: unknown, nic: VmmNic, bus: string | undefined): unknown {
  if (!isCommandError(error)) return error;
  const hint = /does not support hotplugging|no hotplug/i.test(error.desc ?? '')
    ? bus === undefined
      ? ': the root bus is not hot-pluggable (q35): start the VM with a free pcie-root-port and pass its id as bus'
      : `: bus ${bus} is not hot-pluggable: pass the id of a free pcie-root-port`
    : /bus|slot|no free/i.test(error.desc ?? '')
      ? ': check that the bus exists and has a free slot'
      : '';
  const shown = refusal(error.qmpClass, error.desc);
  return new QmpError(
    'command',
    `QEMU refused to add NIC ${nic.id} (${nic.mac} on tap ${nic.tap}): ${shown.desc} (${shown.qmpClass})${hint}`,
    error.qmpClass,
    error.desc,
  );
}

/**
 * Unplug the NIC: device_del, then wait (at most timeoutMs) for the guest to release it
 * (DEVICE_DELETED for nic.id), then remove the netdev `net-<id>`. Without a cooperating guest the
 * event never comes: the netdev is removed all the same (QEMU closes the tap, the NIC loses its
 * link) and the result says `acknowledged: false`; the device itself stays until the guest
 * releases it or the VM is reset. A NIC that is not there is not an error.
 */
export async function qemuDetach(socketPath: string, nic: VmmNic, options: QemuDetachOptions): Promise<QemuDetachResult> {
  vmmNic(nic);
  const netdev = qemuNetdevId(nic);
  return withQmp(socketPath, options, async (client) => {
    const removeNetdev = (): Promise<unknown> =>
      client.execute('netdev_del', { id: netdev }).catch((error: unknown) => {
        if (!isCommandError(error, 'DeviceNotFound')) throw error;
      });
    if (!(await deviceExists(client, nic.id))) {
      await removeNetdev(); // left by a half-done attach, if any
      return { acknowledged: true, alreadyDetached: true };
    }
    await checkSameNic(client, nic, socketPath);
    try {
      await client.execute('device_del', { id: nic.id });
    } catch (error) {
      if (isCommandError(error, 'DeviceNotFound')) {
        await removeNetdev();
        return { acknowledged: true, alreadyDetached: true };
      }
      // "Device X is already in the process of unplug": an earlier detach asked; wait again.
      if (!isCommandError(error, 'GenericError', /unplug/i)) throw error;
    }
    let acknowledged = true;
    try {
      const left = options.finishBy === undefined ? options.timeoutMs : options.finishBy - performance.now() - options.timeoutMs;
      await client.waitForEvent('DEVICE_DELETED', (event) => event.data.device === nic.id, Math.max(0, Math.min(options.timeoutMs, left)));
    } catch (error) {
      if (!(error instanceof QmpError && error.kind === 'timeout')) throw error;
      acknowledged = false;
    }
    await removeNetdev();
    return { acknowledged, alreadyDetached: false };
  });
}
