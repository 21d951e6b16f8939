// Which recorded links' devices a `link` run looks at to keep attach modes (standingLinks): only
// those of links it takes a mode from, so that a single `link <vm>` costs the same on a host with
// thousands of links it shares nothing with (one RTM_GETLINK per name looked at). The kernel
// adapter is replaced by one that records the names it is asked for; the state and config are real.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { AttachMode } from '../../host/attach-mode.js';
import { parseAttachChoice } from '../../host/attach-mode.js';
import { devicePrefix, linkDeviceNames } from '../../host/device-names.js';
import type { ObservedDevice } from '../../host/device-plan.js';
import { type LinkState, allocateMany, emptyState, setAttachments, withDevicePrefix } from '../../host/link-state.js';
import { linkVmsKeepGoing } from '../../host/link-keep-going.js';
import { linkVms } from '../../host/linker.js';
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
