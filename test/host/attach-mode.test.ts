import { describe, expect, it } from 'vitest';
import { TAP_MTU_MAX, assertSideMtu, attachModeOf, chosenAttachMode, parseAttachChoice } from '../../host/attach-mode.js';
import { vmName } from '../../host/vm-name.js';

describe('parseAttachChoice', () => {
  it('takes a default and per-VM modes, the default applying to the other VMs', () => {
    const choice = parseAttachChoice(['qemu', 'netvm=netns']);
    expect(attachModeOf(choice, vmName('netvm'))).toBe('netns');
    expect(attachModeOf(choice, vmName('appvm-lynx'))).toBe('qemu');
    expect(attachModeOf(parseAttachChoice([]), vmName('appvm-lynx'))).toBe('none');
  });

  it('tells a mode --attach asks for (MODE, VM=MODE) from the default, which it does not', () => {
    const lynx = vmName('appvm-lynx');
    const netvm = vmName('netvm');
    expect(chosenAttachMode(parseAttachChoice([]), lynx)).toBeUndefined();
    expect(chosenAttachMode(parseAttachChoice(['netvm=netns']), lynx)).toBeUndefined();
    expect(chosenAttachMode(parseAttachChoice(['netvm=netns']), netvm)).toBe('netns');
    // `--attach none` is a request too, not the default.
    expect(chosenAttachMode(parseAttachChoice(['none', 'netvm=netns']), lynx)).toBe('none');
    expect(chosenAttachMode(parseAttachChoice(['none', 'netvm=netns']), netvm)).toBe('netns');
  });

  it('accepts the same mode given twice for one scope', () => {
    const choice = parseAttachChoice(['qemu', 'qemu', 'netvm=netns', 'netvm=netns']);
    expect(choice.fallback).toBe('qemu');
    expect([...choice.perVm]).toEqual([['netvm', 'netns']]);
  });

  it.each([
    [['qemu', 'netns'], '--attach "qemu" and --attach "netns" give every VM two attach modes: keep one'],
    [['netvm=qemu', 'none', 'netvm=netns'], '--attach "netvm=qemu" and --attach "netvm=netns" give netvm two attach modes: keep one'],
    // Values as every --attach message shows its value: quoted, bounded (a 64-character VM name: cut at 70 characters where the mode takes it past).
    [[`${'v'.repeat(64)}=cloud-hypervisor`, `${'v'.repeat(64)}=netns`], `--attach "${'v'.repeat(64)}=cloud…" and --attach "${'v'.repeat(64)}=netns" give ${'v'.repeat(64)} two attach modes: keep one`],
  ])('refuses two modes for one scope (%j) instead of letting the last win, its values shown as other --attach messages show them', (values, message) => {
    expect(() => parseAttachChoice(values)).toThrow(expect.objectContaining({ name: 'AttachModeError', kind: 'conflict', message }));
  });

  it('refuses unknown modes and VM=MODE without a VM', () => {
    expect(() => parseAttachChoice(['kvm'])).toThrow(expect.objectContaining({ kind: 'unknown-mode' }));
    expect(() => parseAttachChoice(['=qemu'])).toThrow(expect.objectContaining({ kind: 'syntax' }));
  });

  it.each([
    ['kvm', ['kvm'], 'unknown-mode', '--attach "kvm": unknown attach mode "kvm": use one of none, cloud-hypervisor, qemu, netns'],
    ['netvm=kvm', ['netvm=kvm'], 'unknown-mode', '--attach "netvm=kvm": unknown attach mode "kvm": use one of none, cloud-hypervisor, qemu, netns'],
    ['net/vm=qemu', ['net/vm=qemu'], 'vm-name', `--attach "net/vm=qemu": VM name "net/vm" contains "/": VM names are 1 to 64 characters`],
    ['..x=netns after qemu', ['qemu', '..x=netns'], 'vm-name', '--attach "..x=netns": VM name "..x" starts with "."'],
    // A value of any length gives a line of bounded length, saying how long the name is.
    ['a 64 KiB VM name', [`${'a'.repeat(65536)}=qemu`], 'vm-name', `--attach "${'a'.repeat(70)}…": VM name "${'a'.repeat(70)}…" is 65536 characters long`],
  ] as const)('says that a bad mode or VM name came from --attach (%s), as a bad value of another option', (_label, values, kind, start) => {
    let thrown: unknown;
    try {
      parseAttachChoice(values);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toMatchObject({ name: 'AttachModeError', kind });
    expect((thrown as Error).message.startsWith(start)).toBe(true);
    expect((thrown as Error).message.length).toBeLessThan(400);
  });

  it.each([
    ['app=', '--attach "app=" gives no mode after "app=": write VM=MODE, MODE one of none, cloud-hypervisor, qemu, netns'],
    ['app==netns', `--attach "app==netns" has more than one '=': write VM=MODE, MODE one of none, cloud-hypervisor, qemu, netns`],
    ['=netns', '--attach "=netns" names no VM: write VM=MODE or MODE'],
    ['', '--attach "" gives no mode: write MODE or VM=MODE, MODE one of none, cloud-hypervisor, qemu, netns'],
  ])('says what is wrong with --attach %j (no mode, no VM, a second =), not that a mode is unknown', (value, message) => {
    expect(() => parseAttachChoice([value])).toThrow(expect.objectContaining({ name: 'AttachModeError', kind: 'syntax', message }));
  });
});

describe('assertSideMtu', () => {
  it('refuses an MTU above what a tap takes for every mode that gives the side a tap, and lets netns (veth) take up to 65535', () => {
    for (const mode of ['none', 'qemu', 'cloud-hypervisor'] as const) {
      expect(() => assertSideMtu(TAP_MTU_MAX, mode, 'appvm-lynx')).not.toThrow();
      expect(() => assertSideMtu(TAP_MTU_MAX + 1, mode, 'appvm-lynx')).toThrow(
        expect.objectContaining({ name: 'AttachModeError', kind: 'mtu', message: expect.stringMatching(/^--mtu 65522 is more than a tap takes \(65521, .*appvm-lynx is attached with/) }),
      );
    }
    expect(() => assertSideMtu(65535, 'netns', 'appvm-lynx')).not.toThrow();
    expect(TAP_MTU_MAX).toBe(65521);
  });
});
