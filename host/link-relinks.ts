// The commands a line prints to bring links back after an `unlink` it offers as the way past a
// refusal (a VMM that did not give a NIC back): the --attach values that pin the modes the unlink
// would not bring back as they were (relinkModes), the clients of the links the VM provides, which that unlink takes down
// too, and each one's own link (relinkClients, clientRelinks), and the words that say them
// (relinkedText). Shared by the refusals of mode switches (link-switch.ts), the take-down of links
// to providers dropped (link-take-down.ts) and the CLI's lines (link-commands.ts).
import { type AttachChoice, type AttachMode, chosenAttachMode } from './attach-mode.js';
import { readConfigVms } from './config-reader.js';
import { checkVm, requireValidVm } from './config.js';
import { linkDeviceNames } from './device-names.js';
import { linksOfVm, seenOf } from './link-listing.js';
import { type Link, type LinkState, linksOfProvider, recordedSocket } from './link-state.js';
import { BOTH_SIDES, type ClientRelink, type LinkerOptions, type PrintedCommands, type VmmDetachFailure } from './linker-types.js';
import { observeDevices } from './netlink-devices.js';
import type { VmName } from './vm-name.js';
import { vmName } from './vm-name.js';

/** For each of `clients`, of `state` (not the links `released`, by id): the link that brings its link to `vm` back as it was (ClientRelink). */
export function clientRelinks(state: LinkState, vm: VmName, clients: readonly VmName[], released: ReadonlySet<number>): ClientRelink[] {
  return clients.map((client) => {
    const links = state.links.filter((link) => link.client === client && !released.has(link.id));
    const toVm = links.find((link) => link.provider === vm)?.attached;
    if (toVm === undefined) return { client, attach: [] };
    const own = toVm.client;
    const others = links.filter((link) => link.provider !== vm && link.attached !== undefined);
    const pinOwn = others.every((link) => link.attached?.client === own);
    return { client, attach: [...(pinOwn ? [`${client}=${own}`] : []), `${vm}=${toVm.provider}`] };
  });
}

/**
 * Of `pins` (VM=MODE), those a link of all of `links` can carry: each of them recorded attached
 * (or, recorded before the state kept modes, given those the run keeps: switchedSides)
 * has that mode on every side of the VM (a pin applies to every link of the run; one with another
 * mode there, which that run keeps, would be switched). A VM left out gets its mode as a link
 * not up does (kept-attach.ts).
 */
export function agreedPins(pins: readonly string[], links: readonly Link[]): string[] {
  return pins.filter((pin) => {
    const at = pin.indexOf('=');
    const vm = pin.slice(0, at);
    const mode = pin.slice(at + 1);
    return links.every(({ client, provider, attached }) => attached === undefined || ((client !== vm || attached.client === mode) && (provider !== vm || attached.provider === mode)));
  });
}

/** A client of a link a VM provides and the command (`run ...`) that brings that link back after an unlink of the VM; undefined: the link of the VM again names it (--all). */
export interface RelinkCommand {
  readonly client: string;
  readonly command: string | undefined;
}

/**
 * What a line that prints `unlink <vm>` then a link of `vm` (`link`) says: what that link brings
 * back, and for each client of the links `vm` provides (which that unlink takes down too) the
 * command that brings its link back as it was (`relinks`).
 */
export function relinkedText(vm: string, link: string, relinks: readonly RelinkCommand[]): string {
  if (relinks.length === 0) return link;
  // Those that link names (--all, or by name) it brings back itself, as that run asks.
  const named = relinks.filter(({ command }) => command === undefined).map(({ client }) => client);
  const own = relinks.filter(({ command }) => command !== undefined);
  if (own.length === 0) return `${link} (that unlink takes down the links ${vm} provides too, to ${named.join(', ')}: that link brings them back too, naming their clients)`;
  const alsoNamed = named.length === 0 ? '' : ` and those it provides to ${named.join(', ')}, naming those clients`;
  return `${link}, which brings back ${vm}'s own links${alsoNamed}; ${providedRelinksText(vm, own)}`;
}

/**
 * What relinkedText says of the links `vm` provides: that the unlink takes them down, and each
 * client's command (`relinks`) that brings its link back as it was; of a client without one (the
 * link printed before names it), that that link brings it back, as the run asks (not as it was).
 */
export function providedRelinksText(vm: string, relinks: readonly RelinkCommand[]): string {
  // Those that link brings back first, next to it: after another's command, "that link" would be that one.
  const named = relinks.filter(({ command }) => command === undefined).map(({ client }) => `that link brings back ${client} -> ${vm} too, naming ${client}`);
  const own = relinks.flatMap(({ client, command }) => (command === undefined ? [] : [`to bring back ${client} -> ${vm} as it was, ${command}`]));
  return `that unlink takes down the links ${vm} provides too, to ${relinks.map(({ client }) => client).join(', ')}: ${[...named, ...own].join('; ')}`;
}

/** The command of each ClientRelink, as `commands` says it. */
export function relinkCommands(relinks: readonly ClientRelink[], commands: PrintedCommands): RelinkCommand[] {
  return relinks.map(({ client, attach }) => {
    const command = commands.relink(client, attach);
    return { client, command: command === undefined ? undefined : `run ${command}` };
  });
}

/**
 * `failures` of a take-down of the links `ids` with what a line needs to say the link after an
 * unlink of their client, of `state`: the modes of its own links to pin (relinkModes) and the
 * link of each client of the links it provides (relinkClients, clientRelinks).
 */
export async function relinked(failures: readonly VmmDetachFailure[], state: LinkState, ids: ReadonlySet<number>, options: LinkerOptions): Promise<VmmDetachFailure[]> {
  const byClient = new Map<VmName, Promise<VmName[]>>();
  const clientsOf = (vm: VmName): Promise<VmName[]> => {
    let clients = byClient.get(vm);
    if (clients === undefined) byClient.set(vm, (clients = relinkClients(state, vm, options)));
    return clients;
  };
  return Promise.all(
    failures.map(async (failure) => {
      const client = vmName(failure.link.vm);
      const clients = await clientsOf(client);
      return { ...failure, throughTemplate: reachedThroughTemplate(state, failure, ids), relinkAttach: relinkModes(state, client, ids, options.attach), relinkClients: clientRelinks(state, client, clients, ids) };
    }),
  );
}

/**
 * The clients of the links `vm` provides that an `unlink <vm>` takes down and a link of the
 * client brings back: of those links, each up (attach modes recorded, or a record without them
 * whose devices exist, as unlink takes it), of a client whose VM dir is valid and names `vm` among
 * its providers. A link already down (its client unlinked on purpose) is left out, as the unlink
 * leaves it down: a link naming its client would bring it up. So is a client whose dir is gone or
 * no longer names `vm`: a link naming it would fail, or not bring that link back. Where the
 * devices or the config dir cannot be read, a client is named as the state records it.
 */
export async function relinkClients(state: LinkState, vm: VmName, options: LinkerOptions): Promise<VmName[]> {
  const provided = linksOfProvider(state, vm);
  const unrecorded = provided.filter((link) => link.attached === undefined);
  const devicesOf = (link: Link): string[] => Object.values(linkDeviceNames(options.devicePrefix, link.id));
  const host = unrecorded.length === 0 ? undefined : (await observeDevices([], unrecorded.flatMap(devicesOf)).catch(() => undefined))?.host;
  const up = provided.filter((link) => link.attached !== undefined || host === undefined || seenOf(link, host, options).own.length > 0);
  const clients = [...new Set(up.map((link) => link.client))];
  if (clients.length === 0) return [];
  const snapshot = await readConfigVms(options.configDir, clients, options.configDirSource).catch(() => undefined);
  if (snapshot === undefined) return clients;
  return clients.filter((client) => checkVm(snapshot, client).length === 0 && requireValidVm(snapshot, client).providers.includes(vm));
}

/**
 * For `link <client>` run after an unlink of the client (which takes every link of the client
 * down: their modes kept, but a `qemu` or `cloud-hypervisor` side not up gets the VM's mode, as
 * after a reboot, and another mode may be asked meanwhile): VM=MODE for each VM of the client's own links attached
 * in `state` (not those `released`, by id; only those to `providers` where given, the ones that
 * link makes: as recorded) whose sides there have one mode, `none` too (a link not up gets the
 * VM's mode, that of its links up, which may be another), and that `attach` (this run's --attach,
 * which that link carries) does not choose. Each provider is in one such link; the client, where its sides disagree, is left out: no
 * one mode says them (the links it provides are brought back by links of their own: clientRelinks).
 */
export function relinkModes(state: LinkState, client: VmName, released: ReadonlySet<number>, attach: AttachChoice, providers?: readonly VmName[]): string[] {
  const modes = new Map<VmName, Set<AttachMode>>();
  for (const link of state.links.filter((recorded) => recorded.client === client)) {
    const { attached } = link;
    if (released.has(link.id) || attached === undefined || (providers !== undefined && !providers.includes(link.provider))) continue;
    for (const side of BOTH_SIDES) {
      const vm = side === 'client' ? link.client : link.provider;
      modes.set(vm, (modes.get(vm) ?? new Set<AttachMode>()).add(attached[side]));
    }
  }
  return [...modes].flatMap(([vm, found]) => {
    const [only] = found;
    return chosenAttachMode(attach, vm) === undefined && found.size === 1 && only !== undefined ? [`${vm}=${only}`] : [];
  });
}

/**
 * The VMs whose NICs of `failure`'s kind `unlink <client> --attach <VM>=<kind>` (the client of the
 * failure's link, its VM) would detach through the socket template, run on `state`: each side
 * recorded in that mode without a socket, and each side of that VM in a link recorded without
 * modes (to which that --attach gives the mode); not those of the links `released` (by id), taken
 * down by the run that failed, whose NICs it detached (or said, each, where a VMM did not).
 */
function reachedThroughTemplate(state: LinkState, failure: VmmDetachFailure, released: ReadonlySet<number>): VmName[] {
  const reached = new Set<VmName>();
  for (const link of linksOfVm(state, vmName(failure.link.vm))) {
    if (released.has(link.id)) continue;
    for (const side of BOTH_SIDES) {
      const vm = side === 'client' ? link.client : link.provider;
      const { attached } = link;
      if (attached === undefined ? vm === failure.vm : attached[side] === failure.vmm && recordedSocket(attached, side) === undefined) reached.add(vm);
    }
  }
  return [...reached];
}
