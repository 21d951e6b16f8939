import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ATTACH_MODES, type AttachMode, parseAttachChoice } from '../../host/attach-mode.js';
import { type StandingLink, ambiguousAttach, goneLink, keptAttach, linkAttachModes, modeChanges, movedVmmSocket, newLinkMode, shownAttachMode, sideMode, switchedVmmSides } from '../../host/kept-attach.js';
import type { LinkAttachment, LinkPair } from '../../host/link-state.js';
import { type VmName, vmName } from '../../host/vm-name.js';

const VMS = ['appvm-a', 'appvm-b', 'netvm', 'wanvm'].map(vmName);
const mode = fc.constantFrom(...ATTACH_MODES);
const vm = fc.constantFrom(...VMS);
const pairOf = (client: string, provider: string): LinkPair => ({ client: vmName(client), provider: vmName(provider) });

/** Links up (distinct pairs, no self-links), each side's mode known or not. */
const standing = fc
  .uniqueArray(
    fc.record({ client: vm, provider: vm, clientMode: fc.option(mode, { nil: undefined }), providerMode: fc.option(mode, { nil: undefined }) }),
    { selector: (link) => `${link.client}\n${link.provider}`, maxLength: 8 },
  )
  .map((links) =>
    links
      .filter((link) => link.client !== link.provider)
      .map((link): StandingLink => ({ pair: { client: link.client, provider: link.provider }, modes: { client: link.clientMode, provider: link.providerMode } })),
  );

/** `--attach` values: maybe a mode for all, maybe some VM=MODE. */
const attachValues = fc.tuple(fc.option(mode, { nil: undefined }), fc.dictionary(vm, mode, { maxKeys: 2 })).map(([all, perVm]) => [
  ...(all === undefined ? [] : [all]),
  ...Object.entries(perVm).map(([name, chosen]) => `${name}=${chosen}`),
]);

/** The modes the up links of `of` know on its side. */
function knownModes(links: readonly StandingLink[], of: VmName): Set<AttachMode> {
  const modes = new Set<AttachMode>();
  for (const { pair, modes: sides } of links) {
    if (pair.client === of && sides.client !== undefined && sides.client !== 'not-up') modes.add(sides.client);
    if (pair.provider === of && sides.provider !== undefined && sides.provider !== 'not-up') modes.add(sides.provider);
  }
  return modes;
}

describe('kept attach modes', () => {
  it('keep each up link as it is where --attach names neither VM: a re-run converges (a side whose mode is unknown is none)', () => {
    fc.assert(
      fc.property(standing, (links) => {
        const kept = keptAttach(parseAttachChoice([]), links);
        for (const { pair, modes } of links) {
          expect(linkAttachModes(kept, pair)).toEqual({ client: modes.client ?? 'none', provider: modes.provider ?? 'none' });
        }
      }),
    );
  });

  it('give a side --attach names its mode, whatever is recorded (`--attach none` too), and keep the others', () => {
    fc.assert(
      fc.property(standing, attachValues, (links, values) => {
        const choice = parseAttachChoice(values);
        const kept = keptAttach(choice, links);
        for (const { pair, modes } of links) {
          for (const side of ['client', 'provider'] as const) {
            const chosen = choice.perVm.get(pair[side]) ?? choice.forAll;
            expect(sideMode(kept, pair, side)).toEqual(chosen === undefined ? expect.objectContaining({ mode: modes[side] ?? 'none' }) : { mode: chosen, from: 'attach' });
          }
        }
      }),
    );
  });

  it("give a link that is not up the VM's mode where its up links agree on it, else none (ambiguous where they disagree)", () => {
    fc.assert(
      fc.property(standing, vm, vm, (links, client, provider) => {
        fc.pre(client !== provider && !links.some((link) => link.pair.client === client && link.pair.provider === provider));
        const kept = keptAttach(parseAttachChoice([]), links);
        const pair = { client, provider };
        for (const side of ['client', 'provider'] as const) {
          const modes = [...knownModes(links, pair[side])];
          const expected = modes.length === 0 ? { mode: 'none', from: 'unrecorded' } : modes.length === 1 ? { mode: modes[0], from: 'vm' } : { mode: 'none', from: 'ambiguous' };
          expect(sideMode(kept, pair, side)).toEqual(expected);
          expect(newLinkMode(kept, pair[side])).toEqual(expected);
        }
        const ambiguous = ambiguousAttach(kept, [pair, ...links.map((link) => link.pair)]);
        const expectedVms = (['client', 'provider'] as const).map((side) => pair[side]).filter((of) => knownModes(links, of).size > 1);
        expect(ambiguous.map((entry) => entry.vm)).toEqual(expectedVms);
        for (const entry of ambiguous) {
          // Only the link that was not up: the up ones kept their own modes.
          expect(entry.links).toEqual([pair]);
          expect(entry.modes).toEqual(ATTACH_MODES.filter((known) => knownModes(links, entry.vm).has(known)));
        }
      }),
    );
  });

  it('a provider up as netns for one client gives a new client netns on its side, the client none where nothing is recorded of it', () => {
    const kept = keptAttach(parseAttachChoice([]), [{ pair: pairOf('appvm-a', 'netvm'), modes: { client: 'qemu', provider: 'netns' } }]);
    expect(linkAttachModes(kept, pairOf('appvm-b', 'netvm'))).toEqual({ client: 'none', provider: 'netns' });
    // The client of it, linked to another provider: its qemu is kept for the new link too.
    expect(linkAttachModes(kept, pairOf('appvm-a', 'wanvm'))).toEqual({ client: 'qemu', provider: 'none' });
    expect(ambiguousAttach(kept, [pairOf('appvm-b', 'netvm'), pairOf('appvm-a', 'wanvm')])).toEqual([]);
  });

  it('a provider up as netns for one client and none for another: each keeps its own, a new client gets none on its side, said as ambiguous', () => {
    const links: StandingLink[] = [
      { pair: pairOf('appvm-a', 'netvm'), modes: { client: 'netns', provider: 'netns' } },
      { pair: pairOf('appvm-b', 'netvm'), modes: { client: 'none', provider: 'none' } },
    ];
    const kept = keptAttach(parseAttachChoice([]), links);
    expect(linkAttachModes(kept, pairOf('appvm-a', 'netvm'))).toEqual({ client: 'netns', provider: 'netns' });
    expect(linkAttachModes(kept, pairOf('appvm-b', 'netvm'))).toEqual({ client: 'none', provider: 'none' });
    expect(sideMode(kept, pairOf('wanvm', 'netvm'), 'provider')).toEqual({ mode: 'none', from: 'ambiguous' });
    const run = [pairOf('appvm-a', 'netvm'), pairOf('appvm-b', 'netvm'), pairOf('wanvm', 'netvm')];
    expect(ambiguousAttach(kept, run)).toEqual([{ vm: 'netvm', modes: ['none', 'netns'], links: [pairOf('wanvm', 'netvm')] }]);
    // Named, it is no longer ambiguous.
    expect(ambiguousAttach(keptAttach(parseAttachChoice(['netvm=netns']), links), run)).toEqual([]);
  });

  it("a recorded link whose devices are all gone: a netns or none side keeps its mode, a qemu or cloud-hypervisor side gets the VM's (none after a reboot, the VM's mode where its VMM runs its other links)", () => {
    const gone = goneLink(pairOf('appvm-a', 'netvm'), { client: 'qemu', provider: 'netns' });
    // After a reboot, nothing of appvm-a up: its side none (its VMM may not run yet), netvm's netns.
    const rebooted = keptAttach(parseAttachChoice([]), [gone]);
    expect(sideMode(rebooted, gone.pair, 'client')).toEqual({ mode: 'none', from: 'unrecorded' });
    expect(sideMode(rebooted, gone.pair, 'provider')).toEqual({ mode: 'netns', from: 'link' });
    // A kept netns side counts for its VM: a new client of netvm gets netns there.
    expect(newLinkMode(rebooted, vmName('netvm'))).toEqual({ mode: 'netns', from: 'vm' });
    // appvm-a's other link up as qemu (its QEMU runs): the gone link's side is qemu again.
    const running = keptAttach(parseAttachChoice([]), [gone, { pair: pairOf('appvm-a', 'wanvm'), modes: { client: 'qemu', provider: 'none' } }]);
    expect(sideMode(running, gone.pair, 'client')).toEqual({ mode: 'qemu', from: 'vm' });
    // Its up links disagreeing, the gone side gets none said as ambiguous, as a new link's would.
    const disagree = keptAttach(parseAttachChoice([]), [
      goneLink(pairOf('appvm-a', 'netvm'), { client: 'cloud-hypervisor', provider: 'none' }),
      { pair: pairOf('appvm-a', 'wanvm'), modes: { client: 'qemu', provider: 'none' } },
      { pair: pairOf('appvm-a', 'appvm-b'), modes: { client: 'netns', provider: 'netns' } },
    ]);
    expect(ambiguousAttach(disagree, [pairOf('appvm-a', 'netvm')])).toEqual([{ vm: 'appvm-a', modes: ['qemu', 'netns'], links: [pairOf('appvm-a', 'netvm')] }]);
    // A none side keeps none, whatever the VM's other links.
    const keptNone = keptAttach(parseAttachChoice([]), [goneLink(pairOf('appvm-a', 'netvm'), { client: 'none', provider: 'none' }), { pair: pairOf('appvm-a', 'wanvm'), modes: { client: 'qemu', provider: 'none' } }]);
    expect(sideMode(keptNone, pairOf('appvm-a', 'netvm'), 'client')).toEqual({ mode: 'none', from: 'link' });
  });

  it('reads a veth as netns and a tap (none, qemu or cloud-hypervisor alike) or no device as unknown', () => {
    expect(shownAttachMode('veth')).toBe('netns');
    for (const kind of ['tun', 'bridge', null, undefined]) expect(shownAttachMode(kind)).toBeUndefined();
    // An up link recorded without modes, a veth client and a tap provider: netns kept, the tap none.
    const kept = keptAttach(parseAttachChoice([]), [{ pair: pairOf('appvm-a', 'netvm'), modes: { client: 'netns', provider: undefined } }]);
    expect(sideMode(kept, pairOf('appvm-a', 'netvm'), 'client')).toEqual({ mode: 'netns', from: 'link' });
    expect(sideMode(kept, pairOf('appvm-a', 'netvm'), 'provider')).toEqual({ mode: 'none', from: 'unshown' });
  });
});

describe('switched VMM sides', () => {
  it("are the sides recorded as qemu or cloud-hypervisor that get another mode (the other VMM's too): their NICs come out first; a side that keeps its VMM mode, or was none or netns, is none of them", () => {
    const attachment = fc.record({ client: mode, provider: mode });
    fc.assert(
      fc.property(attachment, attachment, (recorded, wanted) => {
        const switched = switchedVmmSides(recorded, wanted);
        for (const side of ['client', 'provider'] as const) {
          const byVmm = recorded[side] === 'qemu' || recorded[side] === 'cloud-hypervisor';
          expect(switched.includes(side)).toBe(byVmm && wanted[side] !== recorded[side]);
        }
      }),
    );
    expect(switchedVmmSides({ client: 'qemu', provider: 'cloud-hypervisor' }, { client: 'cloud-hypervisor', provider: 'cloud-hypervisor' })).toEqual(['client']);
    expect(switchedVmmSides({ client: 'netns', provider: 'qemu' }, { client: 'none', provider: 'none' })).toEqual(['provider']);
  });

  it('are also the sides that keep their VMM mode through another socket, both sockets known; a record without one is taken as at the run\'s (not moved)', () => {
    const socket = fc.option(fc.constantFrom('/run/vm/a/qmp.sock', '/run/vm/b/qmp.sock', '/srv/vm/a.sock'), { nil: undefined });
    const attachment = fc
      .record({ client: mode, provider: mode, clientSocket: socket, providerSocket: socket })
      .map(({ client, provider, clientSocket, providerSocket }): LinkAttachment => ({
        client,
        provider,
        ...(clientSocket === undefined ? {} : { clientSocket }),
        ...(providerSocket === undefined ? {} : { providerSocket }),
      }));
    fc.assert(
      fc.property(attachment, attachment, (recorded, wanted) => {
        const switched = switchedVmmSides(recorded, wanted);
        for (const side of ['client', 'provider'] as const) {
          const byVmm = recorded[side] === 'qemu' || recorded[side] === 'cloud-hypervisor';
          const [from, to] = side === 'client' ? [recorded.clientSocket, wanted.clientSocket] : [recorded.providerSocket, wanted.providerSocket];
          const moved = byVmm && wanted[side] === recorded[side] && from !== undefined && to !== undefined && from !== to;
          expect(movedVmmSocket(recorded, wanted, side)).toBe(moved);
          expect(switched.includes(side)).toBe(byVmm && (wanted[side] !== recorded[side] || moved));
        }
      }),
    );
    const at = (path: string): LinkAttachment => ({ client: 'qemu', provider: 'netns', clientSocket: path });
    expect(switchedVmmSides(at('/run/vm/a/qmp.sock'), at('/srv/vm/a.sock'))).toEqual(['client']);
    expect(switchedVmmSides(at('/run/vm/a/qmp.sock'), at('/run/vm/a/qmp.sock'))).toEqual([]);
    // Recorded before sockets were: taken as at the run's template's.
    expect(switchedVmmSides({ client: 'qemu', provider: 'netns' }, at('/srv/vm/a.sock'))).toEqual([]);
  });

  it('a socket the port finds the same as the one recorded (spelled otherwise) is not moved; only a socket not the same is', () => {
    const at = (path: string): LinkAttachment => ({ client: 'qemu', provider: 'netns', clientSocket: path });
    const same = (recorded: string, wanted: string): boolean => recorded.replaceAll('/./', '/') === wanted.replaceAll('/./', '/');
    expect(switchedVmmSides(at('/run/vm/a/qmp.sock'), at('/run/vm/./a/qmp.sock'), same)).toEqual([]);
    expect(movedVmmSocket(at('/run/vm/a/qmp.sock'), at('/run/vm/./a/qmp.sock'), 'client', same)).toBe(false);
    expect(switchedVmmSides(at('/run/vm/a/qmp.sock'), at('/run/vm/./b/qmp.sock'), same)).toEqual(['client']);
    // Without the port's word, only the same text is the same socket.
    expect(switchedVmmSides(at('/run/vm/a/qmp.sock'), at('/run/vm/./a/qmp.sock'))).toEqual(['client']);
  });
});

describe('modeChanges', () => {
  it('names each side a run gives another mode than last recorded, --attach not naming its VM, grouped by VM and modes; never one kept or chosen', () => {
    const lynx = pairOf('appvm-a', 'netvm');
    const other = pairOf('appvm-b', 'netvm');
    const recorded: LinkAttachment = { client: 'cloud-hypervisor', provider: 'netns' };
    // Both taken down (unlink) or gone (a reboot): their VMM sides are not up, the netns sides kept.
    const standing = [goneLink(lynx, recorded), goneLink(other, { client: 'qemu', provider: 'netns' })];
    const kept = keptAttach(parseAttachChoice([]), standing);
    expect(modeChanges(kept, [{ pair: lynx, recorded }, { pair: other, recorded: { client: 'qemu', provider: 'netns' } }])).toEqual([
      { vm: 'appvm-a', was: 'cloud-hypervisor', now: 'none', links: [lynx] },
      { vm: 'appvm-b', was: 'qemu', now: 'none', links: [other] },
    ]);
    // Named by --attach (any mode), or never recorded: nothing said.
    expect(modeChanges(keptAttach(parseAttachChoice(['appvm-a=none', 'appvm-b=netns']), standing), [{ pair: lynx, recorded }, { pair: other, recorded: { client: 'qemu', provider: 'netns' } }])).toEqual([]);
    expect(modeChanges(kept, [{ pair: lynx, recorded: undefined }])).toEqual([]);
    // The VM's mode from its links up where it has one: that mode, said too.
    const upAsNetns = keptAttach(parseAttachChoice([]), [goneLink(lynx, recorded), { pair: pairOf('appvm-a', 'wanvm'), modes: { client: 'netns', provider: 'netns' } }]);
    expect(modeChanges(upAsNetns, [{ pair: lynx, recorded }])).toEqual([{ vm: 'appvm-a', was: 'cloud-hypervisor', now: 'netns', links: [lynx] }]);
  });

  it('says no side whose mode the run keeps (property)', () => {
    fc.assert(
      fc.property(standing, attachValues, (links, values) => {
        const kept = keptAttach(parseAttachChoice(values), links);
        const recordedOf = (link: StandingLink): LinkAttachment => linkAttachModes(kept, link.pair);
        expect(modeChanges(kept, links.map((link) => ({ pair: link.pair, recorded: recordedOf(link) })))).toEqual([]);
      }),
    );
  });
});
