// Which recorded links' devices a `link` run looks at to keep attach modes (standingLinks): only
// those of links it takes a mode from, so that a single `link <vm>` costs the same on a host with
// thousands of links it shares nothing with (one RTM_GETLINK per name looked at). The kernel
// adapter is replaced by one that records the names it is asked for; the state and config are real.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ATTACH_MODES, type AttachChoice, type AttachMode, chosenAttachMode, parseAttachChoice } from '../../host/attach-mode.js';
import type { ConfigSnapshot, VmDir } from '../../host/config.js';
import { devicePrefix, linkDeviceNames } from '../../host/device-names.js';
import type { ObservedDevice } from '../../host/device-plan.js';
import { type StandingLink, ambiguousAttach, goneLink, keptAttach, newLinkMode, shownAttachMode, sideMode } from '../../host/kept-attach.js';
import { expectedLinkDevices, linkDevicesSeen } from '../../host/link-device-kinds.js';
import { type Link, type LinkPair, type LinkState, allocateMany, emptyState, setAttachments, withDevicePrefix } from '../../host/link-state.js';
import { linkVmsKeepGoing } from '../../host/link-keep-going.js';
import { linkVms, linksOfVms, runKeptAttach, standingLinks } from '../../host/linker.js';
import type { LinkerOptions, VmmPort } from '../../host/linker-types.js';
import { loadState, saveState } from '../../host/state-store.js';
import { type VmName, vmName } from '../../host/vm-name.js';

/** The host devices the scripted kernel reports, and every name it was asked for, in order. */
const kernel = vi.hoisted(() => ({ host: new Map<string, { name: string; kind: string }>(), lookedUp: [] as string[] }));

vi.mock('../../host/netlink-devices.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../host/netlink-devices.js')>();
  return {
    ...real,
    observeDevices: async (_netns: Iterable<string>, only?: readonly string[]) => {
      kernel.lookedUp.push(...(only ?? ['(every device)']));
      const host = new Map([...kernel.host].filter(([name]) => only === undefined || only.includes(name)));
      return { ipv6: false, ipv6Forwarding: false, host, netns: new Map(), netnsIds: new Map() };
    },
    applyDevicePlan: async () => undefined,
  };
});

const PREFIX = devicePrefix('sn');
const NO_VMM: VmmPort = { attach: async () => true, detach: async () => undefined };
const [NETVM, C1, C2, C3, U1, UPROV, SOLO, SOLOPROV] = ['netvm', 'c1', 'c2', 'c3', 'u1', 'uprov', 'solo', 'soloprov'].map(vmName) as [VmName, VmName, VmName, VmName, VmName, VmName, VmName, VmName];

let configDir: string;
let stateDir: string;

async function addVm(vm: VmName, providers: readonly VmName[] = []): Promise<void> {
  await mkdir(join(configDir, vm, 'blk'), { recursive: true });
  await writeFile(join(configDir, vm, 'vmlinux'), '');
  await writeFile(join(configDir, vm, 'blk', 'root.img'), '');
  if (providers.length > 0) await mkdir(join(configDir, vm, 'providers', 'net'), { recursive: true });
  for (const provider of providers) await writeFile(join(configDir, vm, 'providers', 'net', provider), '');
}

beforeEach(async () => {
  configDir = await mkdtemp(join(tmpdir(), 'spectrum-config-'));
  stateDir = await mkdtemp(join(tmpdir(), 'spectrum-state-'));
  for (const vm of [NETVM, UPROV, SOLOPROV]) await addVm(vm);
  for (const vm of [C1, C2, C3]) await addVm(vm, [NETVM]);
  await addVm(U1, [UPROV]);
  await addVm(SOLO, [SOLOPROV]);
  kernel.host.clear();
  kernel.lookedUp = [];
});
afterEach(async () => {
  await rm(configDir, { recursive: true, force: true });
  await rm(stateDir, { recursive: true, force: true });
});

/** No --attach: every side's mode kept (kept-attach.ts). */
const options = (): LinkerOptions => ({ configDir, stateDir, devicePrefix: PREFIX, netnsPrefix: '', mtu: 1500, attach: parseAttachChoice([]), vmm: NO_VMM });

/**
 * A state with these links recorded up in `modes` (client, provider), saved; where `up`, their
 * devices are there (a bridge, and a tap or a veth a side as its mode makes it).
 */
async function recorded(pairs: readonly [VmName, VmName][], modes: [AttachMode, AttachMode], up = true): Promise<LinkState> {
  const { state } = allocateMany(withDevicePrefix(emptyState(), PREFIX), pairs.map(([client, provider]) => ({ client, provider })));
  const next = setAttachments(state, pairs.map(([client, provider]) => ({ pair: { client, provider }, attached: { client: modes[0], provider: modes[1] } })));
  await saveState(stateDir, next);
  const kind = (mode: AttachMode): string => (mode === 'netns' ? 'veth' : 'tun');
  for (const link of next.links) {
    const names = linkDeviceNames(PREFIX, link.id);
    if (!up) continue;
    for (const [name, deviceKind] of [[names.bridge, 'bridge'], [names.client, kind(modes[0])], [names.provider, kind(modes[1])]] as const) kernel.host.set(name, { name, kind: deviceKind });
  }
  return next;
}

/** The device names of the links of `state` between these pairs. */
function namesOf(state: LinkState, ...pairs: [VmName, VmName][]): string[] {
  return state.links.filter((link) => pairs.some(([client, provider]) => link.client === client && link.provider === provider)).flatMap((link) => Object.values(linkDeviceNames(PREFIX, link.id)));
}

const attachedOf = async (client: VmName): Promise<unknown> => (await loadState(stateDir)).links.filter((link) => link.client === client).map((link) => link.attached);

describe('link looks at the devices of the recorded links it takes a mode from, and of no other', () => {
  it('a VM sharing nothing with the links recorded: none of theirs is looked at (they are up, attached by a VMM)', async () => {
    const state = await recorded([[C1, NETVM], [C2, NETVM], [U1, UPROV]], ['qemu', 'qemu']);
    await linkVms([SOLO], options());
    const others = namesOf(state, [C1, NETVM], [C2, NETVM], [U1, UPROV]);
    expect(others.filter((name) => kernel.lookedUp.includes(name))).toEqual([]);
    expect(kernel.lookedUp).not.toContain('(every device)');
    expect(await attachedOf(SOLO)).toEqual([{ client: 'none', provider: 'none' }]);
  });

  it('the same with --keep-going', async () => {
    const state = await recorded([[C1, NETVM], [U1, UPROV]], ['qemu', 'qemu']);
    const outcome = await linkVmsKeepGoing([SOLO], options());
    expect(outcome.failed).toEqual([]);
    expect(namesOf(state, [C1, NETVM], [U1, UPROV]).filter((name) => kernel.lookedUp.includes(name))).toEqual([]);
  });

  it("a new client of a provider takes the provider's mode from its up links, looked at; the links of VMs it shares nothing with are not", async () => {
    const state = await recorded([[C1, NETVM], [C2, NETVM], [U1, UPROV]], ['qemu', 'qemu']);
    await linkVms([C3], options());
    expect(await attachedOf(C3)).toEqual([{ client: 'none', provider: 'qemu' }]);
    expect(kernel.lookedUp).toEqual(expect.arrayContaining(namesOf(state, [C1, NETVM], [C2, NETVM])));
    expect(namesOf(state, [U1, UPROV]).filter((name) => kernel.lookedUp.includes(name))).toEqual([]);
  });

  it("a new client of a provider whose links are gone (after a reboot): their qemu side is not up, and the provider's mode is none", async () => {
    await recorded([[C1, NETVM], [C2, NETVM]], ['qemu', 'qemu'], false);
    await linkVms([C3], options());
    expect(await attachedOf(C3)).toEqual([{ client: 'none', provider: 'none' }]);
  });

  it("a client linked again, its link up: its own link says its modes; the provider's other links are not looked at", async () => {
    const state = await recorded([[C1, NETVM], [C2, NETVM]], ['qemu', 'qemu']);
    await linkVms([C1], options());
    expect(await attachedOf(C1)).toEqual([expect.objectContaining({ client: 'qemu', provider: 'qemu' })]);
    expect(namesOf(state, [C2, NETVM]).filter((name) => kernel.lookedUp.includes(name))).toEqual([]);
  });

  it.each([
    ['up', true],
    ['gone', false],
  ] as const)('links recorded with no side attached by a VMM (%s) stand in their recorded modes unlooked at: a new client of their provider takes its mode from them', async (_, up) => {
    const state = await recorded([[C1, NETVM], [C2, NETVM]], ['none', 'netns'], up);
    await linkVms([C3], options());
    expect(await attachedOf(C3)).toEqual([{ client: 'none', provider: 'netns' }]);
    expect(namesOf(state, [C1, NETVM], [C2, NETVM]).filter((name) => kernel.lookedUp.includes(name))).toEqual([]);
  });
});

describe('a provider that is a client too (netvm -> vpnvm -> appvm)', () => {
  const [VPN, APP] = ['vpnvm', 'appvm'].map(vmName) as [VmName, VmName];

  it.each([
    ['link', (vms: readonly VmName[]) => linkVms(vms, options())],
    ['link --keep-going', (vms: readonly VmName[]) => linkVmsKeepGoing(vms, options())],
  ] as const)("%s of a new client of vpnvm gives vpnvm's side the mode of its one up link, where it is the client", async (_, link) => {
    await addVm(VPN, [NETVM]);
    await addVm(APP, [VPN]);
    const state = await recorded([[VPN, NETVM], [C1, NETVM]], ['qemu', 'netns']);
    await link([APP]);
    expect(await attachedOf(APP)).toEqual([{ client: 'none', provider: 'qemu' }]);
    // netvm's other client tells nothing of vpnvm's mode: not looked at.
    expect(namesOf(state, [C1, NETVM]).filter((name) => kernel.lookedUp.includes(name))).toEqual([]);
  });
});

describe('the links a run takes modes from give every side of its links the mode all recorded links give it', () => {
  const VMS = ['v0', 'v1', 'v2', 'v3', 'v4', 'v5'].map(vmName);
  const vm = fc.constantFrom(...VMS);
  const mode = fc.constantFrom(...ATTACH_MODES);
  /** What the kernel has under one of a link's names: nothing, or a device of some kind (its own or another's). */
  const device = fc.constantFrom(undefined, 'bridge', 'tun', 'veth', 'dummy');
  const recordedLink = fc.record({ client: vm, provider: vm, attached: fc.option(fc.tuple(mode, mode), { nil: undefined }), devices: fc.tuple(device, device, device) });
  const world = fc.record({
    links: fc.uniqueArray(recordedLink, { maxLength: 14, selector: (link) => `${link.client} ${link.provider}` }),
    /** `--attach`: maybe a mode for all, maybe some VM=MODE. */
    attach: fc.tuple(fc.option(mode, { nil: undefined }), fc.dictionary(vm, mode, { maxKeys: 3 })),
    run: fc.uniqueArray(vm, { minLength: 1, maxLength: 4 }),
    /** Each VM's providers/net (a run's clients' are its new links). */
    providers: fc.tuple(...VMS.map(() => fc.subarray(VMS, { maxLength: 3 }))),
  });

  /**
   * The links up before a run as it took them when it looked at every recorded link's devices:
   * each not settled whole by --attach, in its recorded modes where a device of its is there (or,
   * recorded without modes, as its devices show them), else as goneLink takes it.
   */
  const everyLinkLookedAt = (state: LinkState, choice: AttachChoice): StandingLink[] =>
    state.links.flatMap((link): StandingLink[] => {
      if (chosenAttachMode(choice, link.client) !== undefined && chosenAttachMode(choice, link.provider) !== undefined) return [];
      const names = linkDeviceNames(PREFIX, link.id);
      if (linkDevicesSeen(expectedLinkDevices(names, link.attached), kernel.host).own.length === 0) return link.attached === undefined ? [] : [goneLink(link, link.attached)];
      return [{ pair: link, modes: link.attached ?? { client: shownAttachMode(kernel.host.get(names.client)?.kind), provider: shownAttachMode(kernel.host.get(names.provider)?.kind) } }];
    });

  const dir = (name: VmName, providers: readonly VmName[]): VmDir => ({
    name,
    location: 'directory',
    kernel: 'file',
    blk: { state: 'directory', entries: [{ name: 'root.img', type: 'file' }] },
    providers: { state: 'directory', entries: providers.filter((provider) => provider !== name).map((provider) => ({ name: provider, type: 'directory' as const })) },
  });

  it('sideMode of each side (as every link looked at gives it), newLinkMode of each VM of the run (before the config is read too), and the ambiguous-attach warning are those of the whole state', async () => {
    await fc.assert(
      fc.asyncProperty(world, async ({ links, attach, run, providers }) => {
        kernel.host.clear();
        kernel.lookedUp = [];
        const pairs = links.filter((link) => link.client !== link.provider);
        const { state: allocated } = allocateMany(withDevicePrefix(emptyState(), PREFIX), pairs);
        const byPair = new Map(pairs.map((link) => [`${link.client} ${link.provider}`, link]));
        const withModes = allocated.links.map((link): Link => {
          const drawn = byPair.get(`${link.client} ${link.provider}`);
          const names = linkDeviceNames(PREFIX, link.id);
          for (const [name, kind] of [[names.bridge, drawn?.devices[0]], [names.client, drawn?.devices[1]], [names.provider, drawn?.devices[2]]] as const) {
            if (kind !== undefined) kernel.host.set(name, { name, kind });
          }
          return drawn?.attached === undefined ? link : { ...link, attached: { client: drawn.attached[0], provider: drawn.attached[1] } };
        });
        const before: LinkState = { ...allocated, links: withModes };
        const [all, perVm] = attach;
        const opts = { ...options(), attach: parseAttachChoice([...(all === undefined ? [] : [all]), ...Object.entries(perVm).map(([name, chosen]) => `${name}=${chosen}`)]) };
        const snapshot: ConfigSnapshot = { dir: configDir, vms: new Map(VMS.map((name, index) => [name, dir(name, providers[index] ?? [])])) };

        const whole = keptAttach(opts.attach, everyLinkLookedAt(before, opts.attach));
        expect(keptAttach(opts.attach, await standingLinks(before, opts))).toEqual(whole);
        const own = keptAttach(opts.attach, await standingLinks(linksOfVms(before, new Set(run)), opts));
        const selected = await runKeptAttach(run, snapshot, before, opts);

        // The run's links: to each provider its config names, and those recorded (a mode switch, a take-down).
        const named = run.flatMap((client) => (providers[VMS.indexOf(client)] ?? []).filter((provider) => provider !== client).map((provider): LinkPair => ({ client, provider })));
        const runPairs = [...named, ...before.links.filter((link) => run.includes(link.client)).map(({ client, provider }): LinkPair => ({ client, provider }))];
        for (const pair of runPairs) {
          for (const side of ['client', 'provider'] as const) expect(sideMode(selected, pair, side)).toEqual(sideMode(whole, pair, side));
        }
        for (const client of run) {
          expect(newLinkMode(selected, client)).toEqual(newLinkMode(whole, client));
          expect(newLinkMode(own, client)).toEqual(newLinkMode(whole, client));
        }
        expect(ambiguousAttach(selected, named)).toEqual(ambiguousAttach(whole, named));
      }),
      { numRuns: 400 },
    );
  });
});
