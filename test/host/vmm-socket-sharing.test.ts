import { describe, expect, it } from 'vitest';
import { parseAttachChoice } from '../../host/attach-mode.js';
import { keptAttach } from '../../host/kept-attach.js';
import { type VmmSide, sharedSocketFailures, vmmSidesOf } from '../../host/vmm-socket-sharing.js';
import { vmName } from '../../host/vm-name.js';

const [lynx, catgirl, netvm] = [vmName('appvm-lynx'), vmName('appvm-catgirl'), vmName('netvm')];
const qemu = (vm: typeof lynx): VmmSide => ({ kind: 'qemu', vm });
/** A template with {vm}, and one without. */
const perVm = (_kind: string, vm: string): string => `/run/vm/${vm}/qmp.sock`;
const fixed = (): string => '/run/one.sock';

describe('sharedSocketFailures', () => {
  it('refuses a client whose two sides, or whose side and an earlier client\'s, a path gives one VMM: the earlier keeps it', () => {
    expect(sharedSocketFailures([{ client: lynx, sides: [qemu(lynx), qemu(netvm)] }], perVm)).toEqual(new Map());
    const both = sharedSocketFailures([{ client: lynx, sides: [qemu(lynx), qemu(netvm)] }], fixed);
    expect([...both.keys()]).toEqual([lynx]);
    expect(both.get(lynx)).toMatchObject({ name: 'CliError', exitCode: 2, message: expect.stringMatching(/^--qmp-socket gives VMs appvm-lynx and netvm one socket path, \/run\/one\.sock: /) });
    const two = sharedSocketFailures([{ client: catgirl, sides: [qemu(catgirl)] }, { client: lynx, sides: [qemu(lynx)] }], fixed);
    expect([...two.keys()]).toEqual([lynx]);
    expect(two.get(lynx)?.message).toMatch(/^--qmp-socket gives VMs appvm-catgirl and appvm-lynx one socket path/);
    // A refused client claims nothing: the next one through the path is fine.
    const after = sharedSocketFailures([{ client: lynx, sides: [qemu(lynx), qemu(netvm)] }, { client: catgirl, sides: [qemu(catgirl)] }], fixed);
    expect([...after.keys()]).toEqual([lynx]);
  });

  it('lets one VM through a fixed path, however many of its links use it, and passes over a path there is none of', () => {
    expect(sharedSocketFailures([{ client: lynx, sides: [qemu(netvm)] }, { client: catgirl, sides: [qemu(netvm)] }], fixed)).toEqual(new Map());
    expect(sharedSocketFailures([{ client: lynx, sides: [qemu(lynx), qemu(netvm)] }], () => undefined)).toEqual(new Map());
  });

  it('names both options where a path of each meets', () => {
    const failures = sharedSocketFailures([{ client: lynx, sides: [qemu(lynx), { kind: 'cloud-hypervisor', vm: netvm }] }], fixed);
    expect(failures.get(lynx)?.message).toMatch(/^--qmp-socket and --ch-socket give VMs appvm-lynx and netvm one socket path/);
  });
});

describe('vmmSidesOf', () => {
  it('gives the sides of a client\'s links that the run attaches through a VMM', () => {
    const kept = keptAttach(parseAttachChoice(['appvm-lynx=qemu', 'netvm=cloud-hypervisor', 'appvm-catgirl=netns']), []);
    expect(vmmSidesOf(lynx, [netvm, catgirl], kept)).toEqual([qemu(lynx), { kind: 'cloud-hypervisor', vm: netvm }, qemu(lynx)]);
  });
});
