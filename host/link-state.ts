// The linker's persistent state: which (client, provider) connection holds which client id.
// Pure: state in, state out. state-store.ts loads, locks and saves it.
//
// Id policy: a connection's preferred id is a hash of its pair (FNV-1a of "client\nprovider",
// mapped onto 1..65534); when taken, the next free id above it (wrapping) is used. Why not the
// lowest free id: an id is also the client's IP and both link MACs, so handing a forgotten id to
// the very next new connection makes stale ARP/neighbour/conntrack entries in providers (and
// logs) point at the wrong VM. Hashing spreads ids out so reuse is rare, and a pair usually gets
// the same id back even after its record was forgotten or the state was lost. Records are kept
// until forgotten, so a recorded pair always gets exactly its id back.
//
// File format (version 2), links sorted by id:
//   {"version":2,"devicePrefix":"sn","links":[{"client":"appvm-lynx","provider":"netvm","id":42310,
//     "attached":{"client":"qemu","provider":"netns","clientSocket":"/run/vm/appvm-lynx/qmp.sock"}}]}
// ("attached" only while linked; a side's socket only where it is qemu or cloud-hypervisor, and
// recorded: files written before sockets were recorded have none, and are read as before; its
// "mtu", the link MTU, only where not 1500, as in `"attached":{...,"mtu":9000}`: files written
// before the MTU was recorded have none, and are read as 1500, as they were linked before)
// "unlinked" (version 3) in place of "attached" where `unlink` took the link down: its modes and
// MTU as they were, so that a later `link` brings it back so (kept-attach.ts's goneLink, as of a
// record whose devices are gone after a reboot): `{"client":"netns","provider":"none"[,"mtu":N]}`.
// Written only while a link has one: files without any stay version 2, and those written before it
// read as before (a link down with no modes kept). An older spectrum-link, which would take the
// new key for a malformed file, says instead that a newer one wrote it.
// "devicePrefix": the prefix the links' devices are named with (device-names.ts), one per state,
// written with the state's first links (an undo of them all takes it back too: restorePairs), and
// kept when every link is forgotten: a command given another is
// refused (state-prefix.ts), as it would look for the links' devices under names that are not
// theirs, and delete whatever holds those (gc, every device of the other prefix); and a state that
// records it owns the devices named with it that it does not record (a crash's leftovers: `link`
// converges on them, gc deletes them), where one that records neither it nor links refuses to
// take such devices over (state-prefix.ts's assertNoUnrecordedDevices). Version 1 files (written
// before the prefix was recorded) have none, and are read as before; the next write records the
// prefix the run used. (Files written before the prefix was kept without links have none there
// either, and are read so.)
// The version went up with it so that an older spectrum-link, which would take the new key for a
// malformed file (and say to move it aside, forgetting every id), says instead that a newer one
// wrote it.
import { type ClientId, isClientId } from '../shared/client-id.js';
import { CLIENT_ID_MAX, CLIENT_ID_MIN } from '../shared/scheme.js';
import { UNIX_SOCKET_PATH_MAX } from '../shared/unix-socket-path.js';
import { ATTACH_MODES, type AttachMode } from './attach-mode.js';
import { DEVICE_PREFIX_MAX, DeviceNameError, type DevicePrefix, devicePrefix } from './device-names.js';
import { type VmName, isVmName, quoteName, shownText } from './vm-name.js';

export const STATE_VERSION = 2;
/** The version of files where a link records the modes unlink took it down in ("unlinked"): written only then. */
const STATE_VERSION_UNLINKED = 3;
/** The version of files written before the device prefix was recorded: read, never written. */
const STATE_VERSION_UNPREFIXED = 1;

export interface LinkPair {
  readonly client: VmName;
  readonly provider: VmName;
}

/** How each side of a link was attached when its devices were made: what unlink must undo. */
export interface LinkAttachment {
  readonly client: AttachMode;
  readonly provider: AttachMode;
  /**
   * The VMM socket a qemu or cloud-hypervisor client side was hot-plugged through (absolute, as
   * isRecordedSocket takes it), where recorded: where its NIC is taken out. Absent (a record
   * written before sockets were recorded, or a path the state cannot hold): the run's template's.
   */
  readonly clientSocket?: string;
  /** The same of the provider side. */
  readonly providerSocket?: string;
  /**
   * The link MTU its devices were made with (`--mtu`), where not the default 1500: a `link` given
   * no --mtu keeps it. Absent: 1500 (also in files written before the MTU was recorded).
   */
  readonly mtu?: number;
}

/** The MTU a link gets where nothing says otherwise (virtio-net's and Ethernet's). */
export const DEFAULT_LINK_MTU = 1500;
/** The MTUs the state records: IPv4's least (RFC 791) to the most a device takes (--mtu's range). */
export const [LINK_MTU_MIN, LINK_MTU_MAX] = [68, 65535] as const;

/** A link's MTU as recorded (`attached`), the default where none is. */
export function recordedMtu(attached: LinkAttachment | undefined): number {
  return attached?.mtu ?? DEFAULT_LINK_MTU;
}

/** The `mtu` field an attachment records for a link MTU: none at the default. */
export function mtuField(mtu: number): { mtu?: number } {
  return mtu === DEFAULT_LINK_MTU ? {} : { mtu };
}

/** A side's recorded socket (LinkAttachment's clientSocket or providerSocket). */
export function recordedSocket(attached: LinkAttachment | undefined, side: 'client' | 'provider'): string | undefined {
  return side === 'client' ? attached?.clientSocket : attached?.providerSocket;
}

/** Whether two attachments (or their absence) are the same: modes and recorded sockets alike. */
export function sameAttachment(a: LinkAttachment | undefined, b: LinkAttachment | undefined): boolean {
  return a?.client === b?.client && a?.provider === b?.provider && a?.clientSocket === b?.clientSocket && a?.providerSocket === b?.providerSocket && a?.mtu === b?.mtu;
}

// What JSON writes escaped (control characters, '"', a backslash), and lone surrogates, which a
// path cannot carry as written: a path with any of these is not recorded. Without escapes a
// socket takes at most 107 bytes of a line, which keeps the largest state within its bound
// (state-store.ts).
const UNRECORDABLE = /[\u0000-\u001f"\\]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Whether a VMM socket path is one the state records: absolute (a relative one would lead
 * elsewhere from another working directory), at most a Unix socket path's 107 bytes, and written
 * in JSON as it is (UNRECORDABLE). The linker records only such paths, the parser takes only
 * such, and the VMM port checks one again before it connects to it.
 */
export function isRecordedSocket(value: unknown): value is string {
  return typeof value === 'string' && value.startsWith('/') && Buffer.byteLength(value) <= UNIX_SOCKET_PATH_MAX && !UNRECORDABLE.test(value);
}

/** Why the state does not record a socket path (isRecordedSocket), in words; undefined where it does. */
export function unrecordedSocketReason(path: string): string | undefined {
  if (!path.startsWith('/')) return 'it is not absolute';
  const bytes = Buffer.byteLength(path);
  if (bytes > UNIX_SOCKET_PATH_MAX) return `it is ${bytes} bytes long, and a Unix socket path at most ${UNIX_SOCKET_PATH_MAX}`;
  return UNRECORDABLE.test(path) ? `it holds a control character, '"' or '\\'` : undefined;
}

export interface Link extends LinkPair {
  readonly id: ClientId;
  /**
   * Present while the link's devices exist: set by link (recorded just before it makes them, and
   * taken back if that fails), cleared by unlink.
   */
  readonly attached?: LinkAttachment;
  /**
   * Where unlink took the link down (attached absent): its modes and MTU as they were (no
   * sockets), so that a later link gives each side its mode as after a reboot (goneLink). Dropped
   * when it is attached again, or forgotten; absent in files written before it was kept.
   */
  readonly unlinked?: LinkAttachment;
}

export interface LinkState {
  readonly version: typeof STATE_VERSION;
  /**
   * The prefix its links' devices are named with; absent in a file written before it was recorded
   * (or before it was kept without links), or a state no command has given one. Kept by every
   * change below (forgetting every link too), set by withDevicePrefix; written, and told apart by
   * sameState, wherever it is set.
   */
  readonly devicePrefix?: DevicePrefix;
  /**
   * The netns prefix of its links attached in netns mode (`--netns-prefix`: their VMs' interfaces
   * are in `<netnsPrefix><vm>`), set by a link run (withNetnsPrefix) and kept by every change
   * below; written, and told apart by sameState, only while a link is up in netns mode
   * (recordedNetnsPrefix). Absent in a file written before it was recorded.
   */
  readonly netnsPrefix?: string;
  /** Sorted by id; ids and pairs are unique. */
  readonly links: readonly Link[];
}

export type StateErrorKind = 'not-json' | 'bad-schema' | 'unsupported-version' | 'conflict' | 'self-link' | 'exhausted';

export class StateError extends Error {
  override readonly name = 'StateError';
  constructor(
    readonly kind: StateErrorKind,
    message: string,
  ) {
    super(message);
  }
}

export const ID_COUNT = CLIENT_ID_MAX - CLIENT_ID_MIN + 1;

export function emptyState(): LinkState {
  return { version: STATE_VERSION, links: [] };
}

function samePair(a: LinkPair, b: LinkPair): boolean {
  return a.client === b.client && a.provider === b.provider;
}

function pairText(pair: LinkPair): string {
  return `${pair.client} -> ${pair.provider}`;
}

/** FNV-1a, 32 bits, over the UTF-16 code units (VM names are ASCII). */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

/** The id a pair gets when it is free: a pure function of the pair. */
export function preferredId(pair: LinkPair): ClientId {
  return ((fnv1a(`${pair.client}\n${pair.provider}`) % ID_COUNT) + CLIENT_ID_MIN) as ClientId;
}

export function lookupLink(state: LinkState, pair: LinkPair): Link | undefined {
  return state.links.find((link) => samePair(link, pair));
}

export function linkById(state: LinkState, id: ClientId): Link | undefined {
  return state.links.find((link) => link.id === id);
}

export function linksOfClient(state: LinkState, client: VmName): Link[] {
  return state.links.filter((link) => link.client === client);
}

/** A client's links to providers its config no longer names, whether up or not. */
export function linksToUnlisted(state: LinkState, client: VmName, providers: readonly VmName[]): Link[] {
  const listed = new Set(providers);
  return linksOfClient(state, client).filter((link) => !listed.has(link.provider));
}

/**
 * A client's links that are up (attachments recorded) to providers its config no longer names:
 * `link` takes them down (the config is what the client may reach), keeping their ids as
 * `unlink` does. (So are those recorded before the state kept attach modes whose devices exist:
 * the state alone cannot tell them, see the linker's takeDownUnlisted.)
 */
export function unlistedLinks(state: LinkState, client: VmName, providers: readonly VmName[]): Link[] {
  return linksToUnlisted(state, client, providers).filter((link) => link.attached !== undefined);
}

export function linksOfProvider(state: LinkState, provider: VmName): Link[] {
  return state.links.filter((link) => link.provider === provider);
}

/** A state of `links`, sorted, with the device and netns prefixes `prefixes` gives (a change's: those of the state it changes, which keeps its own). */
function withLinks(links: readonly Link[], prefixes: { readonly devicePrefix?: DevicePrefix | undefined; readonly netnsPrefix?: string | undefined }): LinkState {
  const { devicePrefix, netnsPrefix } = prefixes;
  return {
    version: STATE_VERSION,
    ...(devicePrefix === undefined ? {} : { devicePrefix }),
    ...(netnsPrefix === undefined ? {} : { netnsPrefix }),
    links: [...links].sort((a, b) => a.id - b.id),
  };
}

/** The netns prefixes the state records (--netns-prefix's: up to 32 of A-Z a-z 0-9 . _ -, none too). */
const NETNS_PREFIX = /^[A-Za-z0-9._-]{0,32}$/;

/** Whether `value` is a netns prefix as --netns-prefix takes it and the state records it. */
export function isNetnsPrefix(value: unknown): value is string {
  return typeof value === 'string' && NETNS_PREFIX.test(value);
}

/** Whether any link of `state` is up with a side attached in netns mode: its VM's interface is in `<netnsPrefix><vm>`. */
export function hasNetnsLinks(state: LinkState): boolean {
  return state.links.some(({ attached }) => isNetnsAttachment(attached));
}

const isNetnsAttachment = (attached: LinkAttachment | undefined): boolean => attached !== undefined && (attached.client === 'netns' || attached.provider === 'netns');

/**
 * Whether the state keeps its netns prefix: a link up in netns mode (hasNetnsLinks), or one
 * unlink took down in it (`unlinked`), which a later link brings back into `<prefix><vm>`.
 */
function keepsNetnsPrefix(state: LinkState): boolean {
  return state.links.some(({ attached, unlinked }) => isNetnsAttachment(attached) || isNetnsAttachment(unlinked));
}

/**
 * The netns prefix `state` records: where its netns links' VMs live (their interfaces are in
 * `<prefix><vm>`). Only while a link is up in netns mode (hasNetnsLinks), or was when unlink took
 * it down (keepsNetnsPrefix: its next link makes its namespace there): with none, no interface is,
 * or is to be, in any VM namespace, and a run may take any. Undefined too where the file was
 * written before the prefix was recorded.
 */
export function recordedNetnsPrefix(state: LinkState): string | undefined {
  return keepsNetnsPrefix(state) ? state.netnsPrefix : undefined;
}

/** `state` with `prefix` as the netns prefix of its netns links, those it has and those a change makes (the same object where it has it already). */
export function withNetnsPrefix(state: LinkState, prefix: string): LinkState {
  return state.netnsPrefix === prefix ? state : { ...state, netnsPrefix: prefix };
}

/**
 * The netns prefix `state` records where it is not `prefix` (recordedNetnsPrefix) while a link is
 * up in netns mode: its interfaces are in namespaces named with the recorded one; undefined where
 * `prefix` is the one to use: the same, or none recorded (no netns link up: one unlink took down
 * is brought back under the run's, or a file written before it was).
 */
export function conflictingNetnsPrefix(state: LinkState, prefix: string): string | undefined {
  const recorded = hasNetnsLinks(state) ? state.netnsPrefix : undefined;
  return recorded !== undefined && recorded !== prefix ? recorded : undefined;
}

/** `state` recording `prefix` as its links' device prefix (the same object where it does already). */
export function withDevicePrefix(state: LinkState, prefix: DevicePrefix): LinkState {
  return state.devicePrefix === prefix ? state : { ...state, devicePrefix: prefix };
}

/**
 * The device prefix `state` records where it is not `prefix`: its links' devices carry the
 * recorded one, and so will those of links it makes (a state whose links are all forgotten keeps
 * it); undefined where `prefix` is the one to use: the same, or none recorded (a file written
 * before it was, or a state never given one).
 */
export function conflictingDevicePrefix(state: LinkState, prefix: DevicePrefix): DevicePrefix | undefined {
  const recorded = state.devicePrefix;
  return recorded !== undefined && recorded !== prefix ? recorded : undefined;
}

/**
 * Whether `state` (as read from its file) owns the devices named with its device prefix that it
 * does not record: it records links, or the prefix (written once a run used it, and kept when
 * every link is forgotten), so those are its own leftovers (a crash's, an undo's), which `link`
 * converges on and gc deletes. A state recording neither (no file, a file written before the
 * prefix was kept without links, one written by hand) claims none: such devices are another state
 * dir's (a --state-dir mistyped) as likely as a lost state's: `link` does not take them over, nor
 * does gc delete them.
 */
export function claimsDevicePrefix(state: LinkState): boolean {
  return state.links.length > 0 || state.devicePrefix !== undefined;
}

export interface Allocation {
  readonly state: LinkState;
  readonly link: Link;
  /** False when the pair already had this id. */
  readonly created: boolean;
}

/** The pair's recorded id, or a new one recorded for it. */
export function allocateLink(state: LinkState, pair: LinkPair): Allocation {
  if (pair.client === pair.provider) {
    throw new StateError('self-link', `cannot link ${pair.client} to itself: a VM cannot be its own network provider`);
  }
  const existing = lookupLink(state, pair);
  if (existing !== undefined) return { state, link: existing, created: false };
  if (state.links.length >= ID_COUNT) {
    throw new StateError(
      'exhausted',
      `no free client id for ${pairText(pair)}: all ${ID_COUNT} ids (${CLIENT_ID_MIN}..${CLIENT_ID_MAX}) are held by recorded links; forget links of VMs that no longer exist`,
    );
  }
  const used = new Set<number>(state.links.map((link) => link.id));
  let id = preferredId(pair) as number;
  while (used.has(id)) id = id === CLIENT_ID_MAX ? CLIENT_ID_MIN : id + 1;
  const link: Link = { client: pair.client, provider: pair.provider, id: id as ClientId };
  return { state: withLinks([...state.links, link], state), link, created: true };
}

/** Allocate (or find) the id of each connection of a client, in the order of providers. */
export function allocateLinks(state: LinkState, client: VmName, providers: readonly VmName[]): { state: LinkState; links: Link[] } {
  const { state: next, links } = allocateMany(state, providers.map((provider) => ({ client, provider })));
  return { state: next, links };
}

/**
 * allocateLink for many pairs at once, in one pass: the same ids as allocating them one by one,
 * at a cost linear in the state (linking a thousand VMs in one call stays fast).
 */
export function allocateMany(state: LinkState, pairs: readonly LinkPair[]): { state: LinkState; links: Link[] } {
  const byPair = new Map(state.links.map((link) => [`${link.client}\n${link.provider}`, link]));
  const used = new Set<number>(state.links.map((link) => link.id));
  const added: Link[] = [];
  const links = pairs.map((pair) => {
    if (pair.client === pair.provider) {
      throw new StateError('self-link', `cannot link ${pair.client} to itself: a VM cannot be its own network provider`);
    }
    const key = `${pair.client}\n${pair.provider}`;
    const existing = byPair.get(key);
    if (existing !== undefined) return existing;
    if (used.size >= ID_COUNT) {
      throw new StateError(
        'exhausted',
        `no free client id for ${pairText(pair)}: all ${ID_COUNT} ids (${CLIENT_ID_MIN}..${CLIENT_ID_MAX}) are held by recorded links; forget links of VMs that no longer exist`,
      );
    }
    let id = preferredId(pair) as number;
    while (used.has(id)) id = id === CLIENT_ID_MAX ? CLIENT_ID_MIN : id + 1;
    const link: Link = { client: pair.client, provider: pair.provider, id: id as ClientId };
    used.add(id);
    byPair.set(key, link);
    added.push(link);
    return link;
  });
  return { state: added.length === 0 ? state : withLinks([...state.links, ...added], state), links };
}

/** Drop a pair's record, releasing its id. */
export function forgetLink(state: LinkState, pair: LinkPair): { state: LinkState; forgotten: Link | undefined } {
  const forgotten = lookupLink(state, pair);
  if (forgotten === undefined) return { state, forgotten };
  return { state: withLinks(state.links.filter((link) => link !== forgotten), state), forgotten };
}

/** Drop every record a VM takes part in, as client or provider (e.g. when its directory is gone). */
export function forgetVm(state: LinkState, vm: VmName): { state: LinkState; forgotten: Link[] } {
  const forgotten = state.links.filter((link) => link.client === vm || link.provider === vm);
  if (forgotten.length === 0) return { state, forgotten };
  return { state: withLinks(state.links.filter((link) => !forgotten.includes(link)), state), forgotten };
}

const isAttachMode = (value: unknown): value is AttachMode => ATTACH_MODES.some((mode) => mode === value);

const isVmmMode = (mode: AttachMode): boolean => mode === 'qemu' || mode === 'cloud-hypervisor';

/**
 * undefined when absent, null when malformed. A side's socket is optional (files written before
 * sockets were recorded have none), but where present it must be a side's in a VMM mode, and a
 * path the state records (isRecordedSocket).
 */
function parseAttachment(value: unknown): LinkAttachment | undefined | null {
  if (value === undefined) return undefined;
  if (!isRecord(value)) return null;
  for (const key in value) {
    if (key !== 'client' && key !== 'provider' && key !== 'clientSocket' && key !== 'providerSocket' && key !== 'mtu') return null;
  }
  const { client, provider, clientSocket, providerSocket, mtu } = value;
  if (!isAttachMode(client) || !isAttachMode(provider)) return null;
  const socketOk = (socket: unknown, mode: AttachMode): boolean => socket === undefined || (isVmmMode(mode) && isRecordedSocket(socket));
  if (!socketOk(clientSocket, client) || !socketOk(providerSocket, provider)) return null;
  if (mtu !== undefined && !(typeof mtu === 'number' && Number.isInteger(mtu) && mtu >= LINK_MTU_MIN && mtu <= LINK_MTU_MAX)) return null;
  return {
    client,
    provider,
    ...(clientSocket === undefined ? {} : { clientSocket: clientSocket as string }),
    ...(providerSocket === undefined ? {} : { providerSocket: providerSocket as string }),
    // 1500 written by hand reads as none, as it is written (mtuField): the default, said nowhere.
    ...(mtu === undefined ? {} : mtuField(mtu as number)),
  };
}

/** A link's "unlinked" (parseAttachment's, without sockets): undefined where absent, null where malformed. */
function parseUnlinked(value: unknown): LinkAttachment | undefined | null {
  if (isRecord(value) && ('clientSocket' in value || 'providerSocket' in value)) return null;
  return parseAttachment(value);
}

/** Record how a recorded link is attached now (undefined: its devices are gone). */
export function setAttachment(state: LinkState, pair: LinkPair, attached: LinkAttachment | undefined): LinkState {
  return setAttachments(state, [{ pair, attached }]);
}

/** setAttachment for many links in one pass (bulk linking of a thousand VMs stays linear). */
export function setAttachments(state: LinkState, changes: readonly { pair: LinkPair; attached: LinkAttachment | undefined }[]): LinkState {
  const byPair = new Map(changes.map((change) => [`${change.pair.client}\n${change.pair.provider}`, change.attached]));
  return withLinks(
    state.links.map((link) => {
      const key = `${link.client}\n${link.provider}`;
      if (!byPair.has(key)) return link;
      const attached = byPair.get(key);
      const { attached: previous, unlinked, ...rest } = link;
      if (attached !== undefined) return { ...rest, attached };
      // Taken down: the modes and MTU it had are kept (its sockets are no use: a VMM side comes
      // back as not up), as are those of one down already.
      const kept = previous === undefined ? unlinked : { client: previous.client, provider: previous.provider, ...(previous.mtu === undefined ? {} : { mtu: previous.mtu }) };
      return kept === undefined ? rest : { ...rest, unlinked: kept };
    }),
    state,
  );
}

/**
 * `state` with these pairs' records as `before` has them (for undoing one VM of a run alone): a
 * pair that `before` records gets its id and attachment back, one it does not is dropped (its id
 * released); every other record stays as in `state`. `state` must have grown from `before` by
 * allocation and attachment changes (allocateMany, setAttachments), which keep the ids `before`
 * gave, so that no id is held twice. Where no record is left, the device prefix is `before`'s
 * too: a state that recorded none before its first links (state-prefix.ts's loadRunState) records
 * none once they are all undone, as it was; so is the netns prefix where no link is left up in
 * netns mode (kept for those unlink took down: recordedNetnsPrefix).
 */
export function restorePairs(state: LinkState, before: LinkState, pairs: readonly LinkPair[]): LinkState {
  if (pairs.length === 0) return state;
  const keys = new Set(pairs.map((pair) => `${pair.client}\n${pair.provider}`));
  const restored = (link: Link): boolean => keys.has(`${link.client}\n${link.provider}`);
  const links = [...state.links.filter((link) => !restored(link)), ...before.links.filter(restored)];
  // The run's netns prefix only where a link is left up in netns mode: one given another (no
  // netns link up) and undone leaves `before`'s for the links unlink took down in netns mode.
  const netnsUp = links.some(({ attached }) => isNetnsAttachment(attached));
  return withLinks(links, { devicePrefix: links.length === 0 ? before.devicePrefix : state.devicePrefix, netnsPrefix: netnsUp ? (state.netnsPrefix ?? before.netnsPrefix) : (before.netnsPrefix ?? state.netnsPrefix) });
}

/** Whether two states hold the same links and device prefix (and so the same file text), without serialising. */
export function sameState(a: LinkState, b: LinkState): boolean {
  if (a === b) return true;
  if (a.links.length !== b.links.length || a.devicePrefix !== b.devicePrefix || recordedNetnsPrefix(a) !== recordedNetnsPrefix(b)) return false;
  const left = withLinks(a.links, {}).links;
  const right = withLinks(b.links, {}).links;
  return left.every((link, index) => {
    const other = right[index];
    return (
      other !== undefined &&
      link.id === other.id &&
      link.client === other.client &&
      link.provider === other.provider &&
      sameAttachment(link.attached, other.attached) &&
      sameAttachment(link.unlinked, other.unlinked)
    );
  });
}

/** One link as a line of the file: the JSON of {client, provider, id[, attached | unlinked]}. */
function linkLine({ client, provider, id, attached, unlinked }: Link): string {
  // VM names and attach modes never need JSON escapes (their characters are [A-Za-z0-9._-]), nor
  // do recorded sockets (isRecordedSocket), so the text is built directly: a thousand
  // JSON.stringify calls are a good part of a link run.
  const head = `    {"client":"${client}","provider":"${provider}","id":${id}`;
  if (attached === undefined) {
    if (unlinked === undefined) return `${head}}`;
    const mtu = unlinked.mtu === undefined ? '' : `,"mtu":${unlinked.mtu}`;
    return `${head},"unlinked":{"client":"${unlinked.client}","provider":"${unlinked.provider}"${mtu}}}`;
  }
  const { clientSocket, providerSocket } = attached;
  const sockets = `${clientSocket === undefined ? '' : `,"clientSocket":"${clientSocket}"`}${providerSocket === undefined ? '' : `,"providerSocket":"${providerSocket}"`}`;
  const mtu = attached.mtu === undefined ? '' : `,"mtu":${attached.mtu}`;
  return `${head},"attached":{"client":"${attached.client}","provider":"${attached.provider}"${sockets}${mtu}}}`;
}

/** The file text for a state: stable (sorted by id, fixed key order), one link per line. */
export function serializeState(state: LinkState): string {
  const links = withLinks(state.links, {}).links.map(linkLine);
  // A prefix needs no JSON escapes either (device-names.ts: [a-z0-9_-]). Written without links too: the state keeps it.
  const prefix = state.devicePrefix === undefined ? '' : `\n  "devicePrefix": "${state.devicePrefix}",`;
  // Nor does a netns prefix (isNetnsPrefix); written only while a link is up in netns mode.
  const netns = recordedNetnsPrefix(state);
  const netnsPrefix = netns === undefined ? '' : `\n  "netnsPrefix": "${netns}",`;
  const version = state.links.some((link) => link.unlinked !== undefined) ? STATE_VERSION_UNLINKED : STATE_VERSION;
  return `{\n  "version": ${version},${prefix}${netnsPrefix}\n  "links": [${links.length === 0 ? '' : `\n${links.join(',\n')}\n  `}]\n}\n`;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * An entry that is a well-formed link, checked the quick way (the file holds a thousand of them);
 * undefined for anything else, which parseState then examines for its messages.
 */
function wellFormedLink(entry: unknown, unlinkedKept: boolean): Link | undefined {
  if (!isRecord(entry)) return undefined;
  for (const key in entry) {
    if (key !== 'client' && key !== 'provider' && key !== 'id' && key !== 'attached' && !(key === 'unlinked' && unlinkedKept)) return undefined;
  }
  const { client, provider, id, attached, unlinked } = entry;
  if (typeof client !== 'string' || typeof provider !== 'string' || client === provider || !isVmName(client) || !isVmName(provider)) return undefined;
  if (typeof id !== 'number' || !isClientId(id)) return undefined;
  if (unlinked !== undefined) {
    const kept = attached === undefined ? parseUnlinked(unlinked) : null;
    return kept === undefined || kept === null ? undefined : { client, provider, id, unlinked: kept };
  }
  if (attached === undefined) return { client, provider, id };
  const parsed = parseAttachment(attached);
  return parsed === undefined || parsed === null ? undefined : { client, provider, id, attached: parsed };
}

const PROBLEMS_SHOWN = 5;

/** How much of a value of the file a message shows (as a name: vm-name.ts's quoteName). */
const VALUE_SHOWN_MAX = 70;

/**
 * A value of the file for a message: its JSON, bounded and with nothing a terminal acts on (a
 * string as a name is quoted); `absent` where there is none. One nested too deeply for
 * JSON.stringify (which recurses, where JSON.parse does not) is said so, not a RangeError.
 */
function shownValue(value: unknown, absent: string): string {
  if (value === undefined) return absent;
  if (typeof value === 'string') return quoteName(value);
  let text: string;
  try {
    text = JSON.stringify(value);
  } catch {
    return 'a value nested too deeply to show';
  }
  return shownText(text, VALUE_SHOWN_MAX);
}

/**
 * The problems of a file, found one by one: only the first few are kept to be named, the rest
 * counted (a malformed file of the largest size read holds tens of millions of entries, and a
 * message kept for each would take gigabytes).
 */
class Problems {
  readonly shown: string[] = [];
  count = 0;

  add(problem: string): void {
    this.count += 1;
    if (this.shown.length < PROBLEMS_SHOWN) this.shown.push(problem);
  }

  /** `what` (`malformed`, `inconsistent`): the first few named, and how many more. */
  text(what: string): string {
    const more = this.count > PROBLEMS_SHOWN ? `; and ${this.count - PROBLEMS_SHOWN} more` : '';
    return `${what}: ${this.shown.join('; ')}${more}`;
  }
}
const KEEP = 'The file was left untouched: fix it, or move it aside to start over (every recorded id is then forgotten)';

/**
 * Parse and validate a state file's text. Every schema problem is found, and the first few named;
 * source (the file path) goes in the messages.
 */
export function parseState(text: string, source: string): LinkState {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new StateError('not-json', `state file ${source} is not valid JSON (${reason}). ${KEEP}`);
  }
  if (!isRecord(data)) throw new StateError('bad-schema', `state file ${source} does not hold a JSON object. ${KEEP}`);
  const version = data['version'];
  if (typeof version === 'number' && Number.isInteger(version) && version > STATE_VERSION_UNLINKED) {
    throw new StateError(
      'unsupported-version',
      `state file ${source} has version ${version}, written by a newer spectrum-link; this one reads up to version ${STATE_VERSION_UNLINKED}. Use the newer spectrum-link`,
    );
  }
  const problems = new Problems();
  // Version 3 is version 2 with links that unlink took down keeping their modes ("unlinked").
  const unlinkedKept = version === STATE_VERSION_UNLINKED;
  if (version !== STATE_VERSION && version !== STATE_VERSION_UNPREFIXED && !unlinkedKept) {
    problems.add(
      `"version" must be ${STATE_VERSION} or ${STATE_VERSION_UNLINKED} (or ${STATE_VERSION_UNPREFIXED}, of a file written before the device prefix was recorded), found ${shownValue(version, 'nothing')}`,
    );
  }
  for (const key of Object.keys(data)) {
    // (A version 1 file never had a device prefix: one there was not written by spectrum-link.)
    const known = key === 'version' || key === 'links' || ((key === 'devicePrefix' || key === 'netnsPrefix') && (version === STATE_VERSION || unlinkedKept));
    if (!known) problems.add(`unknown key ${quoteName(key)}`);
  }
  const prefix = parsedDevicePrefix(data['devicePrefix'], problems);
  const netnsPrefix = data['netnsPrefix'];
  if (netnsPrefix !== undefined && !isNetnsPrefix(netnsPrefix)) {
    problems.add(`"netnsPrefix" must be a netns prefix as --netns-prefix takes it (up to 32 of A-Z a-z 0-9 . _ -), found ${shownValue(netnsPrefix, 'nothing')}`);
  }
  const raw = data['links'];
  const links: Link[] = [];
  if (!Array.isArray(raw)) {
    problems.add(`"links" must be an array`);
  } else {
    raw.forEach((entry: unknown, index) => {
      const wellFormed = wellFormedLink(entry, unlinkedKept);
      if (wellFormed !== undefined) {
        links.push(wellFormed);
        return;
      }
      const at = `links[${index}]`;
      if (!isRecord(entry)) {
        problems.add(`${at} is not an object`);
        return;
      }
      const extra = Object.keys(entry).filter((key) => key !== 'client' && key !== 'provider' && key !== 'id' && key !== 'attached' && !(key === 'unlinked' && unlinkedKept));
      if (extra.length > 0) problems.add(`${at} has unknown key${extra.length === 1 ? '' : 's'} ${extra.map(quoteName).join(', ')}`);
      const { client, provider, id } = entry;
      let ok = true;
      const attached = parseAttachment(entry['attached']);
      if (attached === null) {
        problems.add(
          `${at}.attached must be {"client": MODE, "provider": MODE} with MODE one of ${ATTACH_MODES.join(', ')}, and "clientSocket" or "providerSocket" only of a qemu or cloud-hypervisor side: an absolute path of at most ${UNIX_SOCKET_PATH_MAX} bytes, without control characters, '"' or '\\'; "mtu", where there, an integer from ${LINK_MTU_MIN} to ${LINK_MTU_MAX}`,
        );
        ok = false;
      }
      const unlinked = unlinkedKept ? parseUnlinked(entry['unlinked']) : undefined;
      if (unlinked === null) {
        problems.add(`${at}.unlinked must be {"client": MODE, "provider": MODE} with MODE one of ${ATTACH_MODES.join(', ')}; "mtu", where there, an integer from ${LINK_MTU_MIN} to ${LINK_MTU_MAX}`);
        ok = false;
      }
      if (unlinked !== undefined && unlinked !== null && attached !== undefined && attached !== null) {
        problems.add(`${at} has both "attached" and "unlinked"`);
        ok = false;
      }
      for (const [key, value] of [['client', client], ['provider', provider]] as const) {
        if (typeof value !== 'string' || !isVmName(value)) {
          problems.add(`${at}.${key} is not a VM name: ${shownValue(value, 'missing')}`);
          ok = false;
        }
      }
      if (typeof id !== 'number' || !isClientId(id)) {
        problems.add(`${at}.id must be an integer from ${CLIENT_ID_MIN} to ${CLIENT_ID_MAX}, found ${shownValue(id, 'nothing')}`);
        ok = false;
      }
      if (ok && client === provider) {
        problems.add(`${at} links ${String(client)} to itself`);
        ok = false;
      }
      if (ok) {
        const link: Link = { client: client as VmName, provider: provider as VmName, id: id as ClientId };
        links.push(attached === undefined || attached === null ? (unlinked === undefined || unlinked === null ? link : { ...link, unlinked }) : { ...link, attached });
      }
    });
  }
  if (problems.count > 0) throw new StateError('bad-schema', `state file ${source} is ${problems.text('malformed')}. ${KEEP}`);
  const conflicts = new Problems();
  const byId = new Map<number, Link>();
  const byPair = new Map<string, Link>();
  for (const link of links) {
    const sameId = byId.get(link.id);
    if (sameId !== undefined) conflicts.add(`id ${link.id} is held by both ${pairText(sameId)} and ${pairText(link)}`);
    const key = `${link.client}\n${link.provider}`;
    const samePairLink = byPair.get(key);
    if (samePairLink !== undefined) conflicts.add(`${pairText(link)} has two ids, ${samePairLink.id} and ${link.id}`);
    byId.set(link.id, link);
    byPair.set(key, link);
  }
  if (conflicts.count > 0) throw new StateError('conflict', `state file ${source} is ${conflicts.text('inconsistent')}. ${KEEP}`);
  return withLinks(links, { devicePrefix: prefix, netnsPrefix: isNetnsPrefix(netnsPrefix) ? netnsPrefix : undefined });
}

/**
 * A file's device prefix, checked as --device-prefix is (device-names.ts's devicePrefix): a name
 * the file gives is one a command would look for and delete devices under. Undefined where there
 * is none, or (said to `problems`) where it is not one.
 */
function parsedDevicePrefix(value: unknown, problems: Problems): DevicePrefix | undefined {
  if (value === undefined) return undefined;
  try {
    if (typeof value === 'string') return devicePrefix(value);
  } catch (error) {
    if (!(error instanceof DeviceNameError)) throw error;
  }
  problems.add(
    `"devicePrefix" must be a device prefix as --device-prefix takes it (1 to ${DEVICE_PREFIX_MAX} characters: lower-case letters, digits, '_' and '-', starting with a letter), found ${shownValue(value, 'nothing')}`,
  );
  return undefined;
}
