// Mode switches of recorded links: the sides that a `link` run attaches another way than a VMM has
// them now (another mode, or the same through another socket: switchedSides), refused as bad input
// where the new socket cannot be recorded or no VMM can be reached there, their NICs then taken
// out of their VMMs before anything is made (takeBackSwitched), as unlink takes them out; and the
// sockets a run records for its VMM sides (withSockets). Used by the plain run (linker.ts) and by
// --keep-going (link-keep-going.ts), each before its transaction.
import { CliError } from '../shared/cli/run-cli.js';
import { type AttachMode, chosenAttachMode } from './attach-mode.js';
import { type ConfigSnapshot, requireValidVm } from './config.js';
import type { ObservedDevice } from './device-plan.js';
import { type KeptAttach, type LinkSide, type SameSocket, linkAttachModes, isVmmMode, movedVmmSocket, sameSocketBy, sideMode, switchedVmmSides } from './kept-attach.js';
import { seenOf } from './link-listing.js';
import { agreedPins, clientRelinks, providedRelinksText, relinkClients, relinkCommands, relinkModes, relinkedText } from './link-relinks.js';
import { type Link, type LinkAttachment, type LinkPair, type LinkState, recordedSocket, unrecordedSocketReason } from './link-state.js';
import { stateWriteProblem } from './link-take-down.js';
import { LinkerError, reasonOf, stopIfInterrupted } from './linker-error.js';
import {
  BOTH_SIDES,
  type ClientRelink,
  DEFAULT_COMMANDS,
  type LinkReport,
  type LinkerOptions,
  type PrintedCommands,
  type RunDevices,
  VMM_NAMES,
  VMM_SOCKET_OPTIONS,
  type VmmKind,
  type VmmPort,
  type VmmPresence,
  keyOf,
  linkDevicesOf,
  linkReport,
  vmmNics,
} from './linker-types.js';
import { observeDevices } from './netlink-devices.js';
import type { VmName } from './vm-name.js';
import { shownSocket, vmName } from './vm-name.js';

/** Whether two socket paths are one socket to the port: one key (VmmPort.socketKey), as the socket sharing check takes them (sameSocketBy). */
function sameSocketOf(vmm: VmmPort): SameSocket {
  return sameSocketBy(vmm.socketKey === undefined ? undefined : (path) => vmm.socketKey?.(path) ?? path);
}

/**
 * The attachment a run gives a link (`modes`), with the socket the run attaches each VMM side
 * through (VmmPort.socketOf), recorded with it: where a later run takes that NIC out. Where the
 * state cannot hold that path (too long once made absolute, say), a side kept in its mode keeps the
 * socket `recorded` for it if the path names that socket too (sameSocketOf), as a side
 * whose socket is spelled otherwise keeps its NIC; else it gets none (a side up that would so
 * move is refused before: switchedSides).
 */
export function withSockets(modes: LinkAttachment, pair: LinkPair, vmm: VmmPort, recorded?: LinkAttachment): LinkAttachment {
  const socketOf = (side: LinkSide, mode: AttachMode, vm: VmName): string | undefined => {
    if (!isVmmMode(mode)) return undefined;
    const socket = vmm.socketOf?.(mode, vm);
    if (socket !== undefined) return socket;
    const kept = recorded?.[side] === mode ? recordedSocket(recorded, side) : undefined;
    const path = kept === undefined ? undefined : vmm.templateSocket?.(mode, vm);
    return kept !== undefined && path !== undefined && sameSocketOf(vmm)(kept, path) ? kept : undefined;
  };
  const clientSocket = socketOf('client', modes.client, pair.client);
  const providerSocket = socketOf('provider', modes.provider, pair.provider);
  return {
    client: modes.client,
    provider: modes.provider,
    ...(clientSocket === undefined ? {} : { clientSocket }),
    ...(providerSocket === undefined ? {} : { providerSocket }),
  };
}

/** A side of a link up as a VMM attached it, which a run attaches another way (switchedVmmSides). */
export interface SwitchedSide {
  /** The link as recorded before the run. */
  readonly link: LinkReport;
  readonly side: LinkSide;
  /** The mode the run gives that side. */
  readonly to: AttachMode;
  /** Where it keeps its mode through another socket (movedVmmSocket): the socket the run attaches it through. */
  readonly toSocket?: string;
  /**
   * Where it keeps its mode through another socket whose path the state cannot record (too long
   * once made absolute, say: VmmPort.templateSocket): that path. Moved, its NIC would be where no
   * record says, and the socket recorded lost: refused before any NIC comes out (assertMovesRecordable).
   */
  readonly unrecordable?: string;
  /**
   * The --attach values (VM=MODE) that give the sides of the client's own links the modes they
   * have where this run's --attach does not choose them (relinkModes): what this link again after
   * an unlink of the client needs to attach them as this run would (the unlink takes the modes away);
   * with --all, of the links it provides too (clientRelinks); each only where every link of the run
   * agrees (agreedPins).
   */
  readonly relinkAttach: readonly string[];
  /** The link, after that unlink, of each client of the links the client provides, which that unlink takes down too (ClientRelink). */
  readonly relinkClients: readonly ClientRelink[];
}

/**
 * The sides of a link attached as `recorded`, kept in their VMM mode in `wanted`, whose socket is
 * recorded and would go unrecorded: the run's path for them (VmmPort.templateSocket) is not one
 * the state can hold, nor the socket recorded (withSockets keeps that one).
 */
function unrecordableMoves(recorded: LinkAttachment, wanted: LinkAttachment, pair: LinkPair, vmm: VmmPort): Map<LinkSide, string> {
  const moves = new Map<LinkSide, string>();
  for (const side of BOTH_SIDES) {
    const mode = recorded[side];
    if (!isVmmMode(mode) || wanted[side] !== mode || recordedSocket(recorded, side) === undefined || recordedSocket(wanted, side) !== undefined) continue;
    const path = vmm.templateSocket?.(mode, side === 'client' ? pair.client : pair.provider);
    if (path !== undefined) moves.set(side, path);
  }
  return moves;
}

/**
 * The sides of a run's links (each client's of `vms`, every one valid, to the providers its config
 * names) that are up as a VMM attached them, recorded so, and that the run attaches another way:
 * their NICs come out of those VMMs before anything is made (takeBackSwitched). (The callers
 * check the VMs first: a run failing at an invalid one would fail with those NICs out.) A link
 * whose devices are all gone (after a reboot; devices of other kinds under its names are none of
 * its, as standingLinks takes them) is not up, and passed: a VMM started since holds no
 * NIC of it (one that kept running holds it on a deleted tap, which reaches nothing, and the next
 * attach there says so). Costs one pass over the state; the devices are listed only where a
 * record would switch.
 */
export async function switchedSides(vms: readonly VmName[], snapshot: ConfigSnapshot, before: LinkState, kept: KeptAttach, options: LinkerOptions): Promise<SwitchedSide[]> {
  const order = new Map(vms.map((vm, index) => [vm, index]));
  const same = sameSocketOf(options.vmm);
  const candidates = before.links.flatMap((link) => {
    if (link.attached === undefined || !order.has(link.client)) return [];
    // With the sockets the run attaches through: a side kept in its VMM mode through another one
    // moves (the same socket spelled otherwise does not: sameSocketOf); one that would move
    // to a path the state cannot record is taken too, to be refused.
    const wanted = withSockets(linkAttachModes(kept, link), link, options.vmm, link.attached);
    const unrecordable = unrecordableMoves(link.attached, wanted, link, options.vmm);
    const sides = [...switchedVmmSides(link.attached, wanted, same), ...unrecordable.keys()];
    return sides.length > 0 ? [{ link, wanted, sides, unrecordable }] : [];
  });
  if (candidates.length === 0) return [];
  // A link to a provider the config no longer names is taken down after the run, as unlink --force does.
  const named = candidates.filter(({ link }) => requireValidVm(snapshot, link.client).providers.includes(link.provider));
  const recorded = named.map((candidate) => ({ ...candidate, report: linkReport(candidate.link, options) }));
  const host = recorded.length === 0 ? new Map<string, ObservedDevice>() : (await observeDevices([], recorded.flatMap(({ report }) => linkDevicesOf(report)))).host;
  const up = recorded.filter(({ link }) => seenOf(link, host, options).own.length > 0);
  const relink = new Map<VmName, { relinkAttach: string[]; relinkClients: ClientRelink[] }>();
  const none = new Set<number>();
  // The link printed after that unlink names the run's VMs (or --all): a pin applies to each of their links.
  // One recorded before the state kept modes has the modes the run keeps for it where it is up (as its devices show them).
  const withKeptModes = (link: Link): Link => {
    if (link.attached !== undefined) return link;
    const [client, provider] = [sideMode(kept, link, 'client'), sideMode(kept, link, 'provider')];
    const up = [client, provider].some(({ from }) => from === 'link' || from === 'unshown');
    return up ? { ...link, attached: { client: client.mode, provider: provider.mode } } : link;
  };
  const runLinks = before.links.filter((link) => order.has(link.client) && requireValidVm(snapshot, link.client).providers.includes(link.provider)).map(withKeptModes);
  for (const client of new Set(up.map(({ link }) => link.client))) {
    const clients = await relinkClients(before, client, options);
    const { providers } = requireValidVm(snapshot, client);
    const relinks = clientRelinks(before, client, clients, none);
    // Those clients the printed link names too (--all): their links' pins with it, as recorded.
    const named = relinks.filter((other) => order.has(other.client)).flatMap(({ attach }) => attach);
    const unchosen = named.filter((pin) => chosenAttachMode(kept.choice, vmName(pin.slice(0, pin.indexOf('=')))) === undefined);
    relink.set(client, { relinkAttach: agreedPins([...new Set([...relinkModes(before, client, none, kept.choice, providers), ...unchosen])], runLinks), relinkClients: relinks });
  }
  const relinkOf = (client: VmName): { relinkAttach: string[]; relinkClients: ClientRelink[] } => relink.get(client) ?? { relinkAttach: [], relinkClients: [] };
  return up
    .sort((a, b) => (order.get(a.link.client) ?? 0) - (order.get(b.link.client) ?? 0))
    .flatMap(({ link, report, wanted, sides, unrecordable }) =>
      sides.map((side): SwitchedSide => {
        const toSocket = link.attached !== undefined && movedVmmSocket(link.attached, wanted, side, same) ? recordedSocket(wanted, side) : undefined;
        const path = unrecordable.get(side);
        const moved = { ...(toSocket === undefined ? {} : { toSocket }), ...(path === undefined ? {} : { unrecordable: path }) };
        return { link: report, side, to: wanted[side], ...moved, ...relinkOf(link.client) };
      }),
    );
}

/**
 * The error of a VMM that did not give back the NIC of a switched side (it refused, or did not
 * answer in time), which stops the run before anything is made for that link, as a plain unlink
 * stops: its devices and record stay as they are, and so does the NIC, as far as the VMM did not
 * carry out its removal. Usage errors (a socket path that cannot be) stay as they are. The way
 * past it, an unlink --force of the client then this link again, is said as commands to run
 * (`commands`), the link with the modes the unlink takes away (relinkAttach).
 */
function switchRefused({ link, side, to, toSocket, relinkAttach: pinned, relinkClients: clients }: SwitchedSide, error: unknown, commands: PrintedCommands = DEFAULT_COMMANDS): unknown {
  if (error instanceof CliError) return error;
  const vm = side === 'client' ? link.vm : link.provider;
  const from = side === 'client' ? link.clientAttach : link.providerAttach;
  const nic = side === 'client' ? link.clientDevice : link.providerDevice;
  const vmm = isVmmMode(from) ? VMM_NAMES[from] : from;
  // A socket moved (movedVmmSocket): the mode is the same, the sockets say what changes.
  const toWhat = toSocket === undefined ? to : `${to} through socket ${shownSocket(toSocket)}`;
  const at = toSocket === undefined ? '' : ` at ${shownSocket((side === 'client' ? link.clientSocket : link.providerSocket) ?? '')} (recorded)`;
  return new LinkerError(
    'vmm-detach-failed',
    `${vm}'s side of ${link.vm} -> ${link.provider} was not attached as ${toWhat}: the ${vmm} of ${vm}${at} did not take out NIC ${nic}: ${reasonOf(error)}; ` +
      `nothing was made, the link is as it was (README: Modes kept and switched): to attach it anyway, run ${commands.unlink(link.vm, ['--force'])}, then ${relinkedText(link.vm, commands.link(pinned), relinkCommands(clients, commands))}`,
  );
}

/**
 * Take the NICs of switched sides out of their VMMs (switchedSides), one after another, as unlink
 * does (detachFromVmms): a VMM that no longer runs (nothing at its socket, or a socket that
 * refuses connections: the VM stopped) holds none, and is passed (its NIC recorded as not taken
 * out: an undo does not say its link down for it); one that runs without that NIC is passed too
 * (recorded as absent: not taken out by this run); one that refuses or does not
 * answer in time throws (switchRefused), and so does one that did not answer a detach in time
 * earlier in the run (not asked again). Every socket path, and every VMM's earlier stall, is
 * checked before the first NIC (within one call, a stall throws at once: no NIC is asked after
 * it). Each NIC taken out is added to `made`, so that an undo of the run says its link is left
 * down (linksLeftDown). A signal stops it before a NIC.
 */
export async function takeBackSwitched(switched: readonly SwitchedSide[], options: LinkerOptions, made: RunDevices): Promise<void> {
  // (The callers check this first; again here, as nothing may come out before it.)
  assertSwitchedInputUsable(switched, options);
  // Each NIC at the socket recorded for it, where there is one (vmmNics).
  const nicsOf = (target: SwitchedSide): ReturnType<typeof vmmNics> => vmmNics(target.link, undefined, [target.side]);
  // And every VMM that stalled a detach earlier in the run (--keep-going: a provider's, for a
  // client before): found only at its own NIC, it would come after the client's NICs before it
  // (its own side of the link) had been taken out, leaving that link down for nothing.
  for (const target of switched) {
    for (const { kind, vm, nic, socket } of nicsOf(target)) {
      const earlier = options.vmm.unansweredDetach?.(kind, vm, socket);
      if (earlier !== undefined) {
        throw switchRefused(target, new Error(`the ${VMM_NAMES[kind]} of ${vm} did not answer a detach in time earlier in this run (${earlier}), so it was not asked to remove NIC ${nic.id}: check that VMM`), options.commands);
      }
    }
  }
  await assertMovesReachable(switched, options);
  for (const target of switched) {
    stopIfInterrupted(options);
    const key = keyOf(target.link);
    for (const { kind, vm, nic, socket } of nicsOf(target)) {
      const found = await options.vmm.detach(kind, vm, nic, socket).catch((error: unknown) => {
        throw switchRefused(target, error, options.commands);
      });
      const taken = made.takenBack.get(key) ?? { link: target.link, nics: [] };
      made.takenBack.set(key, taken);
      const sockets = { ...(target.toSocket === undefined ? {} : { toSocket: target.toSocket }), ...(socket === undefined ? {} : { socket }) };
      taken.nics.push({ vmm: kind, vm, nic: nic.id, to: target.to, ...sockets, outcome: found ?? 'taken' });
    }
  }
}

/**
 * Refuse the bad input of switched sides before any NIC comes out (takeBackSwitched), and before
 * what fails a run for other reasons (ids, a device listing, a state dir that cannot be written),
 * as plain link and --keep-going (for that VM alone) alike find bad input first: a side that would
 * move to a socket the state cannot record (assertMovesRecordable), and a socket path that cannot
 * be (VmmPort.checkSocket: too long under this run's --qmp-socket or --ch-socket), which found only
 * at its detach would come after NICs before it were taken out.
 */
export function assertSwitchedInputUsable(switched: readonly SwitchedSide[], options: LinkerOptions): void {
  assertMovesRecordable(switched, options.commands);
  for (const target of switched) for (const { kind, vm, socket } of vmmNics(target.link, undefined, [target.side])) options.vmm.checkSocket?.(kind, vm, socket);
}

/**
 * Refuse, as bad input and before any NIC comes out (takeBackSwitched), a side kept in its VMM
 * mode that would move to a socket whose path the state cannot record (`unrecordable`): its NIC
 * would then be attached where no record says (a later unlink under another template would not
 * find it), and the socket recorded, where it is now, lost. Where that path names the socket
 * recorded, nothing moves and that socket stays recorded (withSockets): no refusal. For a VM that
 * does run at the new path, the line says the way there: an unlink of the client (at the socket
 * recorded no VMM runs then, so nothing holds it back), then the link again, the side's mode and
 * those the unlink takes away given (relinkAttach), its socket then not recorded.
 */
function assertMovesRecordable(switched: readonly SwitchedSide[], commands: PrintedCommands = DEFAULT_COMMANDS): void {
  for (const { link, side, unrecordable, relinkAttach: pinned, relinkClients: clients } of switched) {
    if (unrecordable === undefined) continue;
    const [vm, mode, nic, recorded] =
      side === 'client' ? [link.vm, link.clientAttach, link.clientDevice, link.clientSocket] : [link.provider, link.providerAttach, link.providerDevice, link.providerSocket];
    const option = isVmmMode(mode) ? VMM_SOCKET_OPTIONS[mode] : VMM_SOCKET_OPTIONS['cloud-hypervisor'];
    const reason = unrecordedSocketReason(unrecordable) ?? 'the state does not record it';
    throw new LinkerError(
      'vmm-socket-unrecordable',
      `${vm}'s NIC ${nic} (link ${link.vm} -> ${link.provider}) was not moved to socket ${shownSocket(unrecordable)}, a path the state cannot record (${reason}); ` +
        `it stays at ${shownSocket(recorded ?? '')} (README: Modes kept and switched): give a ${option} the state can record, or if ${vm} runs there, run ${commands.unlink(link.vm, [])}, then ${commands.link([...new Set([`${vm}=${mode}`, ...pinned])])}${clients.length === 0 ? '' : `; ${providedRelinksText(link.vm, relinkCommands(clients, commands))}`}`,
    );
  }
}

/**
 * Refuse, before any NIC comes out (takeBackSwitched), a side kept in its VMM mode whose socket
 * moved (toSocket) where a VMM runs at the socket recorded and none can be reached at the new one
 * (VmmPort.vmmAt): most likely the run's --qmp-socket or --ch-socket is not the one the VM runs
 * with (a plain `link` after one with its own), and taking the working NIC out for an attach that
 * then fails would leave the link down. Where none runs at the socket recorded (the VM restarted
 * with its socket elsewhere), the NIC went with that VMM: the side moves. Each socket is asked once.
 */
async function assertMovesReachable(switched: readonly SwitchedSide[], options: LinkerOptions): Promise<void> {
  const { vmm } = options;
  const probe = vmm.vmmAt;
  if (probe === undefined) return;
  const asked = new Map<string, Promise<VmmPresence>>();
  const at = (kind: VmmKind, vm: VmName, socket: string): Promise<VmmPresence> => {
    const key = `${kind}\n${vm}\n${socket}`;
    const known = asked.get(key);
    if (known !== undefined) return known;
    const presence = probe.call(vmm, kind, vm, socket);
    asked.set(key, presence);
    return presence;
  };
  for (const target of switched) {
    const { toSocket } = target;
    if (toSocket === undefined) continue;
    for (const { kind, vm, nic, socket } of vmmNics(target.link, undefined, [target.side])) {
      if (socket === undefined || !(await at(kind, vm, socket)).running) continue;
      const there = await at(kind, vm, toSocket);
      if (there.running) continue;
      const { link } = target;
      const option = VMM_SOCKET_OPTIONS[kind];
      const name = VMM_NAMES[kind];
      throw new LinkerError(
        'vmm-socket-moved',
        `${vm}'s NIC ${nic.id} (link ${link.vm} -> ${link.provider}) was not moved to socket ${shownSocket(toSocket)}: no ${name} answers there (${there.why}), ` +
          `and the one at ${shownSocket(socket)} holds it; nothing changed (README: Modes kept and switched): give the ${option} ${vm} runs with`,
      );
    }
  }
}

/**
 * Refuse a run with NICs to take out of their VMMs for other modes (switchedSides) where the state
 * file cannot be written (stateWriteProblem, as unlink refuses), before the first comes out: found
 * at the run's first save, the failure would come with those NICs out, their links left down.
 */
export async function assertStateWritableForTakeOut(switched: readonly SwitchedSide[], options: LinkerOptions): Promise<void> {
  if (switched.length === 0) return;
  const problem = await stateWriteProblem(options.stateDir);
  if (problem !== undefined) {
    throw new LinkerError(
      'state-not-writable',
      `link: ${problem.message}; so no NIC was taken out of its VMM and nothing was made (sides up as a VMM attached them were to be attached another way, which the state could not record): link again once the state dir can be written`,
      problem,
    );
  }
}
