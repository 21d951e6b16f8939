// cloud-hypervisor's REST API over its `--api-socket` Unix socket: NIC hot-plug and removal.
// Spec: networking-facts.md section 2; the OpenAPI document is cloud-hypervisor's
// vmm/src/api/openapi/cloud-hypervisor.yaml. Every documented status of the two endpoints has
// its own outcome; anything else is a protocol error. The tap goes to cloud-hypervisor as a
// descriptor, as Spectrum's host hands it over: a queue of the tap is opened here and sent with
// the vm.add-net request (SCM_RIGHTS, host/vmm/tap-fd.ts), so cloud-hypervisor needs neither
// CAP_NET_ADMIN nor /dev/net/tun, and the body names no tap (cloud-hypervisor ignores
// descriptors named in a body and takes those that come with the request).
// The link MTU is not sent: cloud-hypervisor offers the guest the MTU of the tap itself
// (cloud-hypervisor/cloud-hypervisor virtio-devices/src/net.rs: Net::from_tap_fds, then
// Net::new_with_tap reads it with Tap::mtu, net_util/src/tap.rs, an unprivileged SIOCGIFMTU, and
// sets VIRTIO_NET_F_MTU; PR #4676, Sept. 2022). The tap has the link MTU before it is handed over.
// NetConfig `mtu` would only make from_tap_fds set the tap's MTU (SIOCSIFMTU: CAP_NET_ADMIN),
// and config.rs refuses it below 1280. The MTU is read by the tap's name, so cloud-hypervisor
// must run in the taps' network namespace (as Spectrum's does): elsewhere it reads no MTU (the
// guest stays at 1500; before PR #8112, April 2026, the add-net failed) or another device's. So
// before the tap goes, the namespace of the process behind the socket (SO_PEERCRED, held by a
// pidfd: SO_PEERPIDFD) is compared with the taps' (vmm-netns.ts). Where they differ, the tap's
// name is looked up in the VMM's namespace as its SIOCGIFMTU will resolve it (device names and
// altnames; asked by route netlink, which loads no kernel module for a missing name), and the NIC
// is refused unless its guest would learn the link MTU all the same: from a device of that name
// whose MTU is the link's, or, at 1500, from nothing of that name (no MTU offered: the guest's
// default). The MTU is read once, when the NIC is made: a NIC left from a link of another MTU
// keeps the old one (vm.info cannot tell).
import { closeSync } from 'node:fs';
import { request } from 'node:http';
import type { Duplex } from 'node:stream';
import { sameMac } from '../../shared/link-mac.js';
import { quoteName, quoteText, shownSocket, shownText } from '../vm-name.js';
import { deadline } from './deadline.js';
import { DEFAULT_NIC_MTU, type VmmNic, vmmNic } from './nic.js';
import { type RightsConnection, TapFd, connectWithRights, tapOpenProblem } from './tap-fd.js';
import { type NetnsIdentity, type OpenedNetns, type PeerProcess, mtuVerdict, openPeerNetns, shownNetns, tapsNetns, vmmPlace } from './vmm-netns.js';
import { VmmSocket, VmmSocketError, noVmmThere } from './vmm-socket.js';

export type CloudHypervisorErrorKind =
  /** Nothing at the socket path: no cloud-hypervisor runs there (kept apart from 'connect': such a VM holds no NIC). */
  | 'no-socket'
  /** A socket that refuses connections, left by a cloud-hypervisor that exited: none runs there. */
  | 'stale-socket'
  /** The API socket could not be opened for another reason: not a socket (a symlink, a file), permission. */
  | 'connect'
  /** No complete answer within the time given. */
  | 'timeout'
  /** An answer the API does not document: status, body or size. */
  | 'protocol'
  /** 400: cloud-hypervisor found the NIC configuration invalid (e.g. the tap cannot be opened). */
  | 'invalid-config'
  /** 404 (and vm.info 404): there is no VM yet (`vm.create` not done) behind this socket. */
  | 'vm-not-created'
  /** 409 for a device that is not this NIC, or a NIC with this id and another MAC or tap. */
  | 'conflict'
  /** 500, or a removal cloud-hypervisor denies knowing about while still listing the NIC. */
  | 'failed'
  /** The tap to hand over does not exist here, is no tap, or cannot be opened (permissions). */
  | 'tap-unavailable'
  /** cloud-hypervisor runs in another network namespace than the taps, so its guest would not learn the link MTU. */
  | 'other-netns';

export class CloudHypervisorError extends Error {
  override readonly name = 'CloudHypervisorError';
  constructor(
    readonly kind: CloudHypervisorErrorKind,
    message: string,
    /** HTTP status, when the error is an answer. */
    readonly status?: number,
  ) {
    super(message);
  }
}

export interface CloudHypervisorOptions {
  /** Bound on each request, from connecting to the end of the answer. */
  readonly timeoutMs: number;
  /** The network namespace (a /run/netns file) the taps are in; absent: this process's. */
  readonly tapNetnsPath?: string;
  /** Gives up when it aborts (kind 'timeout', the request under way cut off): a bound on a whole series of requests. */
  readonly signal?: AbortSignal;
  /** The VM, for messages. */
  readonly vm?: string;
  /** Told what an attach goes on despite (its VMM's namespace not known, or another one where its guest learns the link MTU all the same). */
  readonly log?: (level: 'info' | 'warn', message: string) => void;
  /**
   * chAttach: bound on taking back, as a whole, a NIC that vm.add-net may have added without
   * saying so (not under `signal`, which may be what gave vm.add-net up); default twice timeoutMs.
   */
  readonly takeBackMs?: number;
  /** The VM's directory in the socket path (its part up to the template's first component with {vm}): no symlink below it is followed (vmm-socket.ts). */
  readonly vmDir?: string | undefined;
}

export type ChAttachResult =
  /** 200: hot-added to the running VM, at this PCI address (segment:bus:device.function). */
  | { readonly outcome: 'hot-added'; readonly bdf: string }
  /** 204: added to the configuration of a VM that is created but not booted. */
  | { readonly outcome: 'cold-added' }
  /** 409, and vm.info shows a NIC with this id, MAC and tap: nothing was changed. */
  | { readonly outcome: 'already-attached' };

export interface ChDetachResult {
  /** True if the VM had no device with this id: nothing was removed. */
  readonly alreadyDetached: boolean;
}

/** Largest answer body accepted; vm.info of a big VM is a few tens of KiB. */
export const CH_MAX_BODY = 1024 * 1024;

const API = '/api/v1';

/** What bounds a request: its own time, and a signal that ends a whole series of them. */
type Bound = Pick<CloudHypervisorOptions, 'timeoutMs' | 'signal' | 'vmDir'>;

interface Answer {
  readonly status: number;
  readonly body: string;
}

type JsonObject = Record<string, unknown>;

const record = (value: unknown): JsonObject | null =>
  typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as JsonObject) : null;

/** cloud-hypervisor's error bodies are plain text; keep one bounded line for a message. */
function excerpt(body: string): string {
  const line = body.replace(/\s+/g, ' ').trim();
  if (line === '') return '(no details given)';
  return quoteText(line, 300);
}

/** What vm.info says a NIC has (a MAC, a tap), for a message: as it is where plain, else quoted. */
const shown = (value: string | undefined): string => (value === undefined ? '(none)' : shownText(value, 32));

/** Why the API socket could not be reached (`cause`: the failure, which says whether cloud-hypervisor runs there). */
function connectError(socketPath: string, problem: string, cause: unknown): CloudHypervisorError {
  return new CloudHypervisorError(noVmmThere(cause) ?? 'connect', `cannot connect to cloud-hypervisor API socket ${shownSocket(socketPath)}: ${problem}`);
}

/** A tap queue to send along with a request, once the process behind the socket is vetted: vet throws to send nothing. */
interface Handover {
  readonly tap: TapFd;
  readonly vet: (peer: PeerProcess) => void;
}

/**
 * One request on its own connection (no keep-alive), bounded in time and size; always closed.
 * With `handover`, a queue of its tap goes along with the request's bytes.
 */
function call(socketPath: string, method: 'GET' | 'PUT', endpoint: string, body: unknown, bound: Bound, handover?: Handover): Promise<Answer> {
  const { timeoutMs, signal } = bound;
  const givenUp = (): CloudHypervisorError => {
    const reason: unknown = signal?.reason;
    const why = reason instanceof Error ? reason.message : 'aborted';
    return new CloudHypervisorError('timeout', `cloud-hypervisor at ${shownSocket(socketPath)}: ${method} ${endpoint} given up: ${why}`);
  };
  if (signal?.aborted === true) return Promise.reject(givenUp());
  // Not through a symlink at the path (vmm-socket.ts); held until the request is settled.
  let found: VmmSocket;
  try {
    found = VmmSocket.find(socketPath, 'is cloud-hypervisor running with --api-socket at this path?', bound.vmDir);
  } catch (error) {
    return Promise.reject(error instanceof VmmSocketError ? connectError(socketPath, error.message, error) : error);
  }
  const payload = body === undefined ? undefined : JSON.stringify(body);
  let connection: Duplex | undefined;
  if (handover !== undefined) {
    let rights: RightsConnection;
    try {
      rights = connectWithRights(found.connectPath, [handover.tap.fd]);
    } catch (error) {
      found.close();
      return Promise.reject(connectError(socketPath, found.connectProblem(error as NodeJS.ErrnoException), error));
    }
    try {
      handover.vet(rights.peer);
    } catch (error) {
      rights.destroy();
      found.close();
      return Promise.reject(error);
    } finally {
      rights.peer.close();
    }
    connection = rights;
  }
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (error: CloudHypervisorError | undefined, answer?: Answer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', abort);
      found.close();
      req.destroy();
      if (error !== undefined) reject(error);
      else if (answer !== undefined) resolve(answer);
    };
    const req = request(
      {
        socketPath: found.connectPath,
        method,
        path: `${API}/${endpoint}`,
        // No agent either way (an agent would make its own connection): a connection per request.
        ...(connection === undefined ? { agent: false } : { createConnection: () => connection }),
        headers: {
          Host: 'localhost',
          Accept: 'application/json',
          ...(payload === undefined
            ? {}
            : { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) }),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > CH_MAX_BODY) {
            settle(new CloudHypervisorError('protocol', `cloud-hypervisor at ${shownSocket(socketPath)}: ${method} ${endpoint} answered more than ${CH_MAX_BODY} bytes: is this a cloud-hypervisor API socket?`));
          } else chunks.push(chunk);
        });
        res.on('end', () => settle(undefined, { status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', (error: Error) =>
          settle(new CloudHypervisorError('protocol', `cloud-hypervisor at ${shownSocket(socketPath)}: ${method} ${endpoint}: answer broken off: ${error.message}`)),
        );
      },
    );
    const timer = setTimeout(
      () =>
        settle(
          new CloudHypervisorError(
            'timeout',
            `cloud-hypervisor at ${shownSocket(socketPath)}: no answer to ${method} ${endpoint} within ${timeoutMs} ms: is the VMM hung, or busy with another request?`,
          ),
        ),
      timeoutMs,
    );
    const abort = (): void => settle(givenUp());
    signal?.addEventListener('abort', abort, { once: true });
    let connected = connection !== undefined;
    if (connection === undefined) req.on('socket', (socket) => socket.once('connect', () => (connected = true)));
    req.on('error', (error: NodeJS.ErrnoException) => {
      if (settled) return;
      settle(
        connected
          ? new CloudHypervisorError('protocol', `cloud-hypervisor at ${shownSocket(socketPath)}: ${method} ${endpoint} failed: ${error.message}: is this a cloud-hypervisor API socket?`)
          : connectError(socketPath, found.connectProblem(error), error),
      );
    });
    req.end(payload);
  });
}

function parseJson(answer: Answer, what: string, socketPath: string): unknown {
  try {
    return JSON.parse(answer.body);
  } catch {
    throw new CloudHypervisorError('protocol', `cloud-hypervisor at ${shownSocket(socketPath)}: ${what} answered ${answer.status} with a body that is not JSON: ${excerpt(answer.body)}`, answer.status);
  }
}

// PciBdf's Display in cloud-hypervisor: "{:04x}:{:02x}:{:02x}.{:01x}".
const BDF = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$/i;

/** What vm.info says about the VM's NICs and devices, or null if no VM is created (404). */
interface VmDevices {
  readonly state: string;
  /** `config.net[]`: NICs as configured, hot-added ones included. */
  readonly nets: ReadonlyArray<{ readonly id: string | undefined; readonly mac: string | undefined; readonly tap: string | undefined }>;
  /** Ids of the device tree, if given. */
  readonly deviceIds: ReadonlySet<string>;
}

async function vmDevices(socketPath: string, bound: Bound): Promise<VmDevices | null> {
  const answer = await call(socketPath, 'GET', 'vm.info', undefined, bound);
  if (answer.status === 404) return null;
  if (answer.status !== 200) {
    throw new CloudHypervisorError('protocol', `cloud-hypervisor at ${shownSocket(socketPath)}: vm.info answered ${answer.status}, which the API does not document: ${excerpt(answer.body)}`, answer.status);
  }
  const info = record(parseJson(answer, 'vm.info', socketPath));
  const config = record(info?.config);
  const state = info?.state;
  if (info === null || config === null || typeof state !== 'string') {
    throw new CloudHypervisorError('protocol', `cloud-hypervisor at ${shownSocket(socketPath)}: vm.info is not a VmInfo (it needs config and state)`);
  }
  const net = config.net ?? [];
  if (!Array.isArray(net)) throw new CloudHypervisorError('protocol', `cloud-hypervisor at ${shownSocket(socketPath)}: vm.info config.net is not a list`);
  const text = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);
  const nets = net.map((entry: unknown) => {
    const nic = record(entry);
    return { id: text(nic?.id), mac: text(nic?.mac), tap: text(nic?.tap) };
  });
  const tree = record(info.device_tree);
  return { state, nets, deviceIds: new Set(tree === null ? [] : Object.keys(tree)) };
}

function notCreated(socketPath: string, what: string, status: number): CloudHypervisorError {
  return new CloudHypervisorError(
    'vm-not-created',
    `cloud-hypervisor at ${shownSocket(socketPath)} has no VM to ${what}: the VM is not created yet (vm.create); is this the right VM's API socket?`,
    status,
  );
}

/** A queue of the NIC's tap to hand over; undefined if the tap is busy (its queue held elsewhere). */
function openTap(socketPath: string, tap: string, options: CloudHypervisorOptions): TapFd | undefined {
  try {
    return TapFd.open(tap, options.tapNetnsPath ?? null);
  } catch (error) {
    const why = tapOpenProblem(error, tap);
    if (why === undefined) return undefined;
    throw new CloudHypervisorError('tap-unavailable', `cloud-hypervisor at ${shownSocket(socketPath)}: ${why}`);
  }
}

/**
 * Before a NIC's tap goes to the cloud-hypervisor process `peerProcess`: throws 'other-netns' where
 * that process runs in another network namespace than the taps and its guest would learn another
 * MTU than the link's; says (options.log) what the attach goes on despite.
 */
function vetNamespace(socketPath: string, nic: VmmNic, options: CloudHypervisorOptions, peerProcess: PeerProcess): void {
  const taps = tapsNetns(options.tapNetnsPath);
  const opened = openPeerNetns(peerProcess);
  try {
    vetOpened(socketPath, nic, options, peerProcess.pid, taps, opened);
  } finally {
    if (opened.kind === 'open') closeSync(opened.fd);
  }
}

function vetOpened(socketPath: string, nic: VmmNic, options: CloudHypervisorOptions, peerPid: number, taps: NetnsIdentity, opened: OpenedNetns): void {
  // In another namespace it reads the MTU of whatever the tap's name resolves to there (a
  // device's name or an altname): vmmPlace asks there the same way.
  const place = vmmPlace(opened, taps, nic.tap);
  const verdict = mtuVerdict(place, nic.mtu);
  if (verdict === 'attach' || place.kind === 'same') return;
  const link = nic.mtu ?? DEFAULT_NIC_MTU;
  const of = options.vm === undefined ? '' : ` of VM ${options.vm}`;
  const tapsAt = `${options.tapNetnsPath ?? "spectrum-link's own"}, ${shownNetns(taps)}`;
  if (place.kind === 'unknown') {
    const message = `cloud-hypervisor${of} at ${shownSocket(socketPath)}: cannot tell whether it runs in the taps' network namespace (${tapsAt}): ${place.why}; attached, but if not, its guest may get another MTU than the link's ${String(link)} on NIC ${nic.id} (README: MTU and stale NICs)`;
    options.log?.('warn', message);
    return;
  }
  // SO_PEERCRED names the process that made the socket listen: cloud-hypervisor itself, unless a
  // launcher handed it a listening socket (`--api-socket fd=`) and still runs (once it has exited,
  // openPeerNetns cannot tell).
  // Its pidfd opens its namespace even where our PID namespace gives it no pid (SO_PEERCRED: 0).
  const who = peerPid > 0 ? `pid ${peerPid}, which made the socket listen` : 'not visible from our PID namespace, the process that made the socket listen';
  const where = `cloud-hypervisor${of} at ${shownSocket(socketPath)} (${who}) runs in network namespace ${shownNetns(place.peer)}, not in the taps' (${tapsAt})`;
  const { named } = place;
  const byName = `it reads tap ${nic.tap}'s MTU by name in its own namespace`;
  switch (named.kind) {
    case 'none':
      if (verdict === 'note') {
        options.log?.('info', `${where}: it cannot read tap ${nic.tap}'s MTU there, so its guest gets the default 1500, the link's (a cloud-hypervisor before PR #8112, April 2026, refuses the NIC there instead)`);
        return;
      }
      throw new CloudHypervisorError(
        'other-netns',
        `${where}: ${byName}, where nothing has that name, so its guest would get the default 1500, not the link MTU ${link}; run cloud-hypervisor in the taps' network namespace, or link with --mtu 1500 (its guest then gets 1500)`,
      );
    case 'device':
      if (verdict === 'note') {
        options.log?.('info', `${where}: it reads tap ${nic.tap}'s MTU by name there, where that name is another device's (its own name or an altname) of MTU ${named.mtu}, so its guest gets ${named.mtu}, the link's`);
        return;
      }
      // Freed, the name gives the guest 1500: a way out only where that is the link's.
      throw new CloudHypervisorError(
        'other-netns',
        `${where}: ${byName}, where that name is a device's (its own name or an altname) of MTU ${named.mtu}, so its guest would learn ${named.mtu}, not the link's ${link}; run cloud-hypervisor in the taps' network namespace, or ${link === DEFAULT_NIC_MTU ? `free the name ${nic.tap} there (rename that device, or delete that altname)` : `give that device MTU ${link} there`}`,
      );
    case 'unknown':
      if (verdict === 'warn') {
        options.log?.('warn', `${where}: cannot tell whether a device there has the name ${nic.tap} (${named.why}); if so, its guest gets that device's MTU, not the link's 1500`);
        return;
      }
      throw new CloudHypervisorError(
        'other-netns',
        `${where}: ${byName}, and what that name is there cannot be told (${named.why}), so its guest may not learn the link MTU ${link}; run cloud-hypervisor in the taps' network namespace, or link with --mtu 1500`,
      );
  }
}

/** Failures of a request that never reached cloud-hypervisor: an add-net failing so added nothing. */
const NOT_SENT: ReadonlySet<CloudHypervisorErrorKind> = new Set(['no-socket', 'stale-socket', 'connect', 'other-netns']);

/**
 * Add the NIC to the VM: `PUT vm.add-net {mac, id}` with a queue of its tap (SCM_RIGHTS).
 * Hot-adds to a running VM (200) or adds to a created one (204). Idempotent: if the tap's one
 * queue is already held (by this VM, having it attached) and vm.info shows a NIC with this id and
 * MAC, the result is 'already-attached'; anything else holding the id or the tap is a conflict,
 * also a NIC with this id and MAC while the tap is free (it is on a tap deleted since). Where vm.add-net gets no answer in time, or one the API does not
 * document, the NIC it may have added is taken back before the error is thrown.
 */
export async function chAttach(socketPath: string, nic: VmmNic, options: CloudHypervisorOptions): Promise<ChAttachResult> {
  const { id, tap, mac } = vmmNic(nic);
  const tapFd = openTap(socketPath, tap, options);
  if (tapFd === undefined) return attachedAlready(socketPath, { id, tap, mac }, options, 'tap-busy');
  let answer: Answer;
  try {
    answer = await call(socketPath, 'PUT', 'vm.add-net', { mac, id }, options, { tap: tapFd, vet: (peer) => vetNamespace(socketPath, nic, options, peer) });
  } catch (error) {
    // Sent, but no (whole) answer: cloud-hypervisor may add the NIC all the same.
    if (error instanceof CloudHypervisorError && !NOT_SENT.has(error.kind)) return takeBack(socketPath, nic, options, error);
    throw error;
  } finally {
    // cloud-hypervisor keeps its own copy of the descriptor.
    tapFd.close();
  }
  switch (answer.status) {
    case 200: {
      let info: JsonObject | null;
      try {
        info = record(parseJson(answer, 'vm.add-net', socketPath));
      } catch (error) {
        return takeBack(socketPath, nic, options, error);
      }
      const bdf = info?.bdf;
      if (info === null || typeof info.id !== 'string' || typeof bdf !== 'string' || !BDF.test(bdf)) {
        return takeBack(socketPath, nic, options, new CloudHypervisorError('protocol', `cloud-hypervisor at ${shownSocket(socketPath)}: vm.add-net answered 200 without a valid PciDeviceInfo {id, bdf}: ${excerpt(answer.body)}`, 200));
      }
      if (info.id !== id) {
        return takeBack(socketPath, nic, options, new CloudHypervisorError('protocol', `cloud-hypervisor at ${shownSocket(socketPath)}: vm.add-net added device ${quoteName(info.id)}, but NIC ${id} was asked for`, 200));
      }
      return { outcome: 'hot-added', bdf };
    }
    case 204:
      return { outcome: 'cold-added' };
    case 400:
      throw new CloudHypervisorError(
        'invalid-config',
        `cloud-hypervisor at ${shownSocket(socketPath)} refused NIC ${id} (tap ${tap}, MAC ${mac}) as invalid: ${excerpt(answer.body)}: see the VMM's log`,
        400,
      );
    case 404:
      throw notCreated(socketPath, `add NIC ${id} to`, 404);
    case 409:
      return attachedAlready(socketPath, { id, tap, mac }, options, 'id-taken');
    case 500:
      throw new CloudHypervisorError('failed', `cloud-hypervisor at ${shownSocket(socketPath)} failed to add NIC ${id} (tap ${tap}): ${excerpt(answer.body)}: see the VMM's log`, 500);
    default:
      return takeBack(
        socketPath,
        nic,
        options,
        new CloudHypervisorError('protocol', `cloud-hypervisor at ${shownSocket(socketPath)}: vm.add-net answered ${answer.status}, which the API does not document: ${excerpt(answer.body)}`, answer.status),
      );
  }
}

/**
 * After vm.add-net got no answer in time, or one that does not say what happened: the VMM may
 * have added the NIC all the same. Left there, it would hold a tap that the linker's rollback
 * then deletes, and the next attach would find a NIC with this id and MAC and take it for
 * attached, on a dead tap. So it is taken back as far as the VMM answers within takeBackMs
 * (chDetach removes only a NIC with this id and MAC); then `error` is thrown.
 */
async function takeBack(socketPath: string, nic: VmmNic, options: CloudHypervisorOptions, error: unknown): Promise<never> {
  const ms = options.takeBackMs ?? 2 * options.timeoutMs;
  const bound = deadline(ms, `taking back NIC ${nic.id}, which vm.add-net may have added, took over ${ms} ms`);
  const { signal: _attach, ...rest } = options;
  await chDetach(socketPath, nic, { ...rest, signal: bound.signal })
    .catch(() => undefined)
    .finally(() => bound.clear());
  throw error;
}

/**
 * After a busy tap (its one queue is held): 'already-attached' if vm.info shows this NIC (same id
 * and MAC; same tap where it names one), else the conflict, saying what holds what. After a 409
 * (the id is taken) the tap was free, so a NIC with this id is on another tap: always a conflict.
 */
async function attachedAlready(socketPath: string, nic: VmmNic, options: CloudHypervisorOptions, why: 'id-taken' | 'tap-busy'): Promise<ChAttachResult> {
  const { id, tap, mac } = nic;
  const devices = await vmDevices(socketPath, options);
  if (devices === null) throw notCreated(socketPath, `add NIC ${id} to`, 404);
  const held = devices.nets.find((net) => net.id === id);
  if (held === undefined) {
    throw new CloudHypervisorError(
      'conflict',
      why === 'id-taken'
        ? `cloud-hypervisor at ${shownSocket(socketPath)}: device id ${id} is taken by a device that is not a NIC: remove it or choose another NIC id`
        : `cloud-hypervisor at ${shownSocket(socketPath)}: tap ${tap} is held by another process, and this VM has no NIC ${id}: is another VMM using the tap? Detach it there first`,
      409,
    );
  }
  if (held.mac === undefined || !sameMac(held.mac, mac) || (held.tap !== undefined && held.tap !== tap)) {
    throw new CloudHypervisorError(
      'conflict',
      `cloud-hypervisor at ${shownSocket(socketPath)} already has NIC ${id} with MAC ${shown(held.mac)} on tap ${shown(held.tap)}, not ${mac} on ${tap}: is the link state stale, or does another link use id ${id}? Detach that NIC first`,
      409,
    );
  }
  if (why === 'id-taken') {
    // The tap's one queue was free (it was opened here to go along): the NIC holds another tap.
    throw new CloudHypervisorError(
      'conflict',
      `cloud-hypervisor at ${shownSocket(socketPath)} has NIC ${id} with MAC ${mac}, but not on tap ${tap}: nobody held that tap, so it was made anew after the NIC's was deleted (README: MTU and stale NICs); take the link down (unlink) and link it again`,
      409,
    );
  }
  return { outcome: 'already-attached' };
}

/**
 * Remove the NIC from the VM: `PUT vm.remove-device {id}`. Checks vm.info first so that a device
 * with this id that is not this NIC (other MAC or tap, or not a NIC) is never removed. A NIC the
 * VM does not have is not an error: `alreadyDetached: true`.
 */
export async function chDetach(socketPath: string, nic: VmmNic, options: CloudHypervisorOptions): Promise<ChDetachResult> {
  const { id, tap, mac } = vmmNic(nic);
  const before = await vmDevices(socketPath, options);
  if (before === null) throw notCreated(socketPath, `remove NIC ${id} from`, 404);
  const held = before.nets.find((net) => net.id === id);
  if (held === undefined) {
    if (before.deviceIds.has(id)) {
      throw new CloudHypervisorError('conflict', `cloud-hypervisor at ${shownSocket(socketPath)}: device ${id} is not a NIC: not removing it; is the NIC id right?`);
    }
    return { alreadyDetached: true };
  }
  if (held.mac === undefined || !sameMac(held.mac, mac) || (held.tap !== undefined && held.tap !== tap)) {
    throw new CloudHypervisorError(
      'conflict',
      `cloud-hypervisor at ${shownSocket(socketPath)}: NIC ${id} has MAC ${shown(held.mac)} on tap ${shown(held.tap)}, not ${mac} on ${tap}: not removing another link's NIC; is the link state stale?`,
    );
  }
  const answer = await call(socketPath, 'PUT', 'vm.remove-device', { id }, options);
  switch (answer.status) {
    case 204:
      return { alreadyDetached: false };
    case 404: {
      // The VM is gone, or the id is unknown (removed in between): ask which.
      const after = await vmDevices(socketPath, options);
      if (after === null) throw notCreated(socketPath, `remove NIC ${id} from`, 404);
      if (after.nets.some((net) => net.id === id)) {
        throw new CloudHypervisorError('failed', `cloud-hypervisor at ${shownSocket(socketPath)} says it has no device ${id}, but vm.info still lists NIC ${id}: see the VMM's log`, 404);
      }
      return { alreadyDetached: true };
    }
    default:
      throw new CloudHypervisorError('protocol', `cloud-hypervisor at ${shownSocket(socketPath)}: vm.remove-device answered ${answer.status}, which the API does not document: ${excerpt(answer.body)}`, answer.status);
  }
}
