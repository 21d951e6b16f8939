import fc from 'fast-check';
import { execFileSync } from 'node:child_process';
import { link, mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAttachChoice } from '../../host/attach-mode.js';
import { UNIX_SOCKET_PATH_MAX, qemuBus, recordedVmDir, sameSocketPath, shownSocket, socketPath, socketTemplate, templateVmDir, vmmPort } from '../../host/vmm-port.js';
import { vmName } from '../../host/vm-name.js';
import { EXIT } from '../../shared/cli/run-cli.js';
import { FakeCloudHypervisor } from './vmm/fake-cloud-hypervisor.js';
import { ScriptedQemu } from './vmm/scripted-qemu.js';

const flags = { qmpSocket: '/run/vm/{vm}/qmp.sock', chSocket: '/run/vm/{vm}/vmm' };

describe('socket templates', () => {
  it('puts the VM name in for every {vm}', () => {
    expect(socketPath('/run/vm/{vm}/{vm}.sock', 'netvm')).toBe('/run/vm/netvm/netvm.sock');
  });

  it('refuses an empty template as bad usage: Node would take an empty path for TCP to localhost', () => {
    expect(() => socketTemplate('--ch-socket', '')).toThrow(expect.objectContaining({ name: 'CliError', exitCode: EXIT.usage, message: expect.stringContaining('--ch-socket ""') }));
    for (const bad of [{ ...flags, chSocket: '' }, { ...flags, qmpSocket: '' }]) {
      expect(() => vmmPort(parseAttachChoice([]), bad)).toThrow(expect.objectContaining({ name: 'CliError', exitCode: EXIT.usage }));
    }
  });

  it('refuses a path longer than a Unix socket path can be, naming the VM and the limit', () => {
    const dir = `/${'d'.repeat(UNIX_SOCKET_PATH_MAX - '/netvm.sock'.length - 1)}`;
    expect(socketPath(`${dir}/{vm}.sock`, 'netvm')).toHaveLength(UNIX_SOCKET_PATH_MAX);
    expect(() => socketPath(`${dir}/{vm}.sock`, 'netvm1', '--qmp-socket')).toThrow(
      expect.objectContaining({ name: 'CliError', exitCode: EXIT.usage, message: expect.stringMatching(/--qmp-socket .* VM netvm1 .*108 bytes: a Unix socket path has at most 107/) }),
    );
  });

  it('shows a template (and its path) somewhat over the limit whole, and a far longer one cut, saying its length: a 64 KiB --qmp-socket gives a short line', () => {
    const dir = `/${'d'.repeat(UNIX_SOCKET_PATH_MAX - '/netvm.sock'.length - 1)}`;
    expect(() => socketPath(`${dir}/{vm}.sock`, 'netvm1', '--qmp-socket')).toThrow(
      expect.objectContaining({ message: `--qmp-socket "${dir}/{vm}.sock" gives VM netvm1 the socket path "${dir}/netvm1.sock", 108 bytes: a Unix socket path has at most 107; use a shorter path` }),
    );
    const long = `/${'x'.repeat(65536)}/{vm}.qmp`;
    let message = '';
    try {
      socketPath(long, 'netvm', '--qmp-socket');
    } catch (error) {
      message = (error as Error).message;
    }
    const shown = `"/${'x'.repeat(199)}…"`;
    expect(message).toBe(`--qmp-socket ${shown} (${long.length} characters) gives VM netvm the socket path ${shown}, ${65536 + '//netvm.qmp'.length} bytes: a Unix socket path has at most 107; use a shorter path`);
  });

  it('cuts a template of characters beyond the BMP (emoji) between characters, never in one, and says its length in characters, not UTF-16 units', () => {
    // 150 emoji (300 UTF-16 units) and 11 more: 161 characters, shown whole (cut by units, its 200th was half an emoji).
    const template = `/${'\u{1F600}'.repeat(150)}/{vm}.sock`;
    let message = '';
    try {
      socketPath(template, 'netvm', '--qmp-socket');
    } catch (error) {
      message = (error as Error).message;
    }
    const path = template.replace('{vm}', 'netvm');
    expect(message).toBe(`--qmp-socket "${template}" gives VM netvm the socket path "${path}", ${Buffer.byteLength(path)} bytes: a Unix socket path has at most 107; use a shorter path`);
    const long = `/${'\u{1F600}'.repeat(300)}/{vm}.sock`;
    expect(() => socketPath(long, 'netvm', '--qmp-socket')).toThrow(expect.objectContaining({ message: expect.stringContaining(`--qmp-socket "/${'\u{1F600}'.repeat(199)}…" (311 characters) gives`) }));
  });

  it('refuses a too long path before talking to any VMM', async () => {
    const port = vmmPort(parseAttachChoice([]), { ...flags, chSocket: `/${'x'.repeat(200)}/{vm}` });
    const nic = { id: 'snc7', tap: 'snc7', mac: '0A:B3:EC:00:00:07' };
    await expect(port.attach('cloud-hypervisor', vmName('netvm'), nic)).rejects.toMatchObject({ name: 'CliError', exitCode: EXIT.usage });
    await expect(port.detach('cloud-hypervisor', vmName('netvm'), nic)).rejects.toMatchObject({ name: 'CliError', exitCode: EXIT.usage });
  });
});

describe('--qemu-bus', () => {
  it.each(['pcie.0', 'rp1', 'pci-bridge_2'])('takes the QEMU id %j', (bus) => {
    expect(qemuBus(bus)).toBe(bus);
  });

  it.each(['', '1rp', 'rp 1', 'rp/1', 'bus,id=x'])('refuses %j as bad usage before talking to any VMM', (bus) => {
    expect(() => vmmPort(parseAttachChoice([]), { ...flags, qemuBus: bus })).toThrow(
      expect.objectContaining({ name: 'CliError', exitCode: EXIT.usage, message: expect.stringContaining(`--qemu-bus ${JSON.stringify(bus)} is not valid`) }),
    );
  });
});

describe('a VMM that does not answer an attach in time', () => {
  it('is not asked again by the same port (one run): the next attach to it fails at once, saying why; another VMM is asked as usual', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sn-vmm-port-'));
    // Its greeting comes far too late: the attach times out before any command.
    const stalled = await ScriptedQemu.start(join(dir, 'netvm.qmp'));
    stalled.delayMs = 60_000;
    const other = await ScriptedQemu.start(join(dir, 'appvm-lynx.qmp'));
    other.delayMs = 60_000;
    try {
      const port = vmmPort(parseAttachChoice([]), { ...flags, qmpSocket: join(dir, '{vm}.qmp'), vmmTimeout: '100' });
      const nic = (id: number): { id: string; tap: string; mac: string } => ({ id: `snp${id}`, tap: `snp${id}`, mac: `0A:B3:EC:80:00:0${id}` });
      await expect(port.attach('qemu', vmName('netvm'), nic(1))).rejects.toMatchObject({ name: 'QmpError', kind: 'timeout' });
      expect(stalled.connections).toBe(1);
      await expect(port.attach('qemu', vmName('netvm'), nic(2))).rejects.toMatchObject({
        name: 'VmmPortError',
        kind: 'unanswered-earlier',
        message: expect.stringMatching(/^the QEMU of netvm did not answer in time earlier in this run \(QMP socket .*netvm\.qmp: .+\), so it was not asked to add NIC snp2: check that VMM, then run link again$/),
      });
      expect(stalled.connections).toBe(1);
      // Another VMM is its own matter.
      await expect(port.attach('qemu', vmName('appvm-lynx'), nic(3))).rejects.toMatchObject({ name: 'QmpError', kind: 'timeout' });
      expect(other.connections).toBe(1);
      // A fresh port (the next run) asks again.
      const next = vmmPort(parseAttachChoice([]), { ...flags, qmpSocket: join(dir, '{vm}.qmp'), vmmTimeout: '100' });
      await expect(next.attach('qemu', vmName('netvm'), nic(1))).rejects.toMatchObject({ name: 'QmpError', kind: 'timeout' });
      expect(stalled.connections).toBe(2);
    } finally {
      await stalled.close();
      await other.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('a VMM that does not answer an attach in time, its socket spelled two ways', () => {
  it('is not asked again however the socket is spelled: another VM\'s path through `..`, relative, the other kind\'s template through a symlinked directory, absolute', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sn-vmm-port-'));
    for (const sub of ['qmp', 'qmp/netvm', 'qmp/appvm-lynx', 'other']) await mkdir(join(dir, sub));
    await symlink(join(dir, 'qmp'), join(dir, 'alias'));
    // Its greeting comes far too late: the attach times out before any command.
    const stalled = await ScriptedQemu.start(join(dir, 'qmp', 'shared.qmp'));
    stalled.delayMs = 60_000;
    const cwd = process.cwd();
    try {
      // Relative to the working directory (a short path), each VM's socket through its own
      // directory and `..`: one socket for both VMs. The cloud-hypervisor template leads to it
      // through a symlinked directory, absolute.
      process.chdir(join(dir, 'other'));
      const port = vmmPort(parseAttachChoice([]), { qmpSocket: '../qmp/{vm}/../shared.qmp', chSocket: `${dir}/alias/shared.qmp`, vmmTimeout: '100' });
      const nic = (id: number): { id: string; tap: string; mac: string } => ({ id: `snp${id}`, tap: `snp${id}`, mac: `0A:B3:EC:80:00:0${id}` });
      await expect(port.attach('qemu', vmName('netvm'), nic(1))).rejects.toMatchObject({ name: 'QmpError', kind: 'timeout' });
      expect(stalled.connections).toBe(1);
      const notAsked = { name: 'VmmPortError', kind: 'unanswered-earlier', message: expect.stringMatching(/did not answer in time earlier in this run \(QMP socket .*shared\.qmp: .+\)/) };
      await expect(port.attach('qemu', vmName('appvm-lynx'), nic(2))).rejects.toMatchObject(notAsked);
      await expect(port.attach('cloud-hypervisor', vmName('appvm-catgirl'), nic(3))).rejects.toMatchObject(notAsked);
      expect(stalled.connections).toBe(1);
    } finally {
      process.chdir(cwd);
      await stalled.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('a VMM that does not answer an attach in time, at a hard link of its socket', () => {
  it('is not asked again at the other name (one socket, as sameSocketPath and the socket sharing check take it): one connection only', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sn-vmm-port-'));
    await mkdir(join(dir, 'other'));
    const stalled = await ScriptedQemu.start(join(dir, 'netvm.qmp'));
    stalled.delayMs = 60_000;
    await link(join(dir, 'netvm.qmp'), join(dir, 'other', 'netvm.ch'));
    try {
      expect(sameSocketPath(join(dir, 'netvm.qmp'), join(dir, 'other', 'netvm.ch'))).toBe(true);
      const port = vmmPort(parseAttachChoice([]), { qmpSocket: join(dir, '{vm}.qmp'), chSocket: join(dir, 'other', '{vm}.ch'), vmmTimeout: '100' });
      const nic = (id: number): { id: string; tap: string; mac: string } => ({ id: `snp${id}`, tap: `snp${id}`, mac: `0A:B3:EC:80:00:0${id}` });
      await expect(port.attach('qemu', vmName('netvm'), nic(1))).rejects.toMatchObject({ name: 'QmpError', kind: 'timeout' });
      expect(stalled.connections).toBe(1);
      await expect(port.attach('cloud-hypervisor', vmName('netvm'), nic(2))).rejects.toMatchObject({
        name: 'VmmPortError',
        kind: 'unanswered-earlier',
        message: expect.stringMatching(/did not answer in time earlier in this run \(QMP socket .*netvm\.qmp: .+\)/),
      });
      expect(stalled.connections).toBe(1);
    } finally {
      await stalled.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('a detach of a NIC of a VMM that no longer runs', () => {
  it("says 'not-running' (it held no NIC: nothing was taken out), at no socket or one that refuses connections; a VMM that runs gives it back and says nothing of that", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sn-vmm-port-'));
    // A socket nobody listens on: what a VMM that exited leaves (the process exits without closing its server).
    execFileSync(process.execPath, ['-e', "require('node:net').createServer().listen(process.argv[1], () => process.exit(0))", join(dir, 'appvm-catgirl.qmp')]);
    const running = await ScriptedQemu.start(join(dir, 'netvm.qmp'));
    try {
      const port = vmmPort(parseAttachChoice([]), { ...flags, qmpSocket: join(dir, '{vm}.qmp'), chSocket: join(dir, '{vm}.ch'), vmmTimeout: '1000' });
      const nic = { id: 'snc7', tap: 'snc7', mac: '0A:B3:EC:00:00:07' };
      expect(await port.detach('qemu', vmName('appvm-lynx'), nic)).toBe('not-running');
      expect(await port.detach('cloud-hypervisor', vmName('appvm-lynx'), nic)).toBe('not-running');
      expect(await port.detach('qemu', vmName('appvm-catgirl'), nic)).toBe('not-running');
      running.devices.set('snc7', { mac: '0a:b3:ec:00:00:07', netdev: 'net-snc7' });
      running.netdevs.add('net-snc7');
      expect(await port.detach('qemu', vmName('netvm'), nic)).toBeUndefined();
      expect(running.commands).toContain('device_del');
    } finally {
      await running.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('a detach of a NIC that a running VMM does not hold', () => {
  it("says 'absent' (an earlier detach took it out, or the VM restarted without it: nothing was taken out now), QEMU and cloud-hypervisor alike; one it held, undefined", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sn-vmm-port-'));
    const qemu = await ScriptedQemu.start(join(dir, 'netvm.qmp'));
    const ch = await FakeCloudHypervisor.start('Running');
    try {
      const port = vmmPort(parseAttachChoice([]), { ...flags, qmpSocket: join(dir, '{vm}.qmp'), chSocket: ch.socketPath, vmmTimeout: '1000' });
      const nic = { id: 'snp7', tap: 'snp7', mac: '0A:B3:EC:80:00:07' };
      qemu.devices.set('snp7', { mac: '0a:b3:ec:80:00:07', netdev: 'net-snp7' });
      qemu.netdevs.add('net-snp7');
      ch.nets.push({ id: 'snp7', tap: 'snp7', mac: '0a:b3:ec:80:00:07' });
      for (const kind of ['qemu', 'cloud-hypervisor'] as const) {
        expect(await port.detach(kind, vmName('netvm'), nic)).toBeUndefined();
        expect(await port.detach(kind, vmName('netvm'), nic)).toBe('absent');
      }
      expect([qemu.devices.has('snp7'), ch.nets.length]).toEqual([false, 0]);
    } finally {
      await qemu.close();
      await ch.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('a VMM that does not answer a detach in time', () => {
  it('is told of by the same port (one run), with what was said, so that link does not ask it again to take out a NIC for another mode; not of another VMM, nor by the next port', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sn-vmm-port-'));
    // Its greeting comes far too late: the detach times out before any command.
    const stalled = await ScriptedQemu.start(join(dir, 'netvm.qmp'));
    stalled.delayMs = 60_000;
    try {
      const port = vmmPort(parseAttachChoice([]), { ...flags, qmpSocket: join(dir, '{vm}.qmp'), vmmTimeout: '100' });
      const nic = { id: 'snp1', tap: 'snp1', mac: '0A:B3:EC:80:00:01' };
      expect(port.unansweredDetach?.('qemu', vmName('netvm'))).toBeUndefined();
      const failure: unknown = await port.detach('qemu', vmName('netvm'), nic).then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(failure).toMatchObject({ name: 'QmpError', kind: 'timeout' });
      expect(port.unansweredDetach?.('qemu', vmName('netvm'))).toBe((failure as Error).message);
      // A VMM that runs no more (nothing at its socket) holds no NIC: nothing to tell of it.
      await port.detach('qemu', vmName('appvm-lynx'), nic);
      expect(port.unansweredDetach?.('qemu', vmName('appvm-lynx'))).toBeUndefined();
      expect(port.unansweredDetach?.('cloud-hypervisor', vmName('netvm'))).toBeUndefined();
      const next = vmmPort(parseAttachChoice([]), { ...flags, qmpSocket: join(dir, '{vm}.qmp'), vmmTimeout: '100' });
      expect(next.unansweredDetach?.('qemu', vmName('netvm'))).toBeUndefined();
    } finally {
      await stalled.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('the socket recorded for a NIC', () => {
  it('socketOf: the path a NIC is attached through, absolute (a relative one joined to the working directory, not normalized); none where the state cannot hold it', () => {
    const port = vmmPort(parseAttachChoice([]), { qmpSocket: '/run/vm/{vm}/../{vm}.qmp', chSocket: 'vms/{vm}/api' });
    expect(port.socketOf?.('qemu', vmName('netvm'))).toBe('/run/vm/netvm/../netvm.qmp');
    // From a working directory of a short path: one of the checkout's could make it longer than the state records.
    const cwd = process.cwd();
    try {
      process.chdir(tmpdir());
      expect(port.socketOf?.('cloud-hypervisor', vmName('netvm'))).toBe(`${process.cwd()}/vms/netvm/api`);
    } finally {
      process.chdir(cwd);
    }
    // Too long (checkSocket refuses it), or with what JSON would escape: not recorded.
    expect(vmmPort(parseAttachChoice([]), { ...flags, qmpSocket: `/${'x'.repeat(UNIX_SOCKET_PATH_MAX)}/{vm}` }).socketOf?.('qemu', vmName('netvm'))).toBeUndefined();
    expect(vmmPort(parseAttachChoice([]), { ...flags, qmpSocket: '/run/"vm"/{vm}' }).socketOf?.('qemu', vmName('netvm'))).toBeUndefined();
  });

  it('templateSocket: the same path made absolute, also where the state cannot record it (too long once absolute, a \'"\'); none where the template\'s is too long for a socket', () => {
    const deep = `/${'d'.repeat(60)}/${'e'.repeat(60)}`;
    const cwd = process.cwd();
    try {
      process.chdir(tmpdir());
      const port = vmmPort(parseAttachChoice([]), { ...flags, qmpSocket: '../q/{vm}.qmp' });
      expect(port.templateSocket?.('qemu', vmName('netvm'))).toBe(`${process.cwd()}/../q/netvm.qmp`);
      expect(port.templateSocket?.('cloud-hypervisor', vmName('netvm'))).toBe('/run/vm/netvm/vmm');
    } finally {
      process.chdir(cwd);
    }
    const long = vmmPort(parseAttachChoice([]), { ...flags, qmpSocket: `${deep}/{vm}.qmp`, chSocket: '/run/"vm"/{vm}' });
    // Over 107 bytes: socketPath refuses it (checkSocket), so there is none.
    expect(long.templateSocket?.('qemu', vmName('netvm'))).toBeUndefined();
    expect(long.templateSocket?.('cloud-hypervisor', vmName('netvm'))).toBe('/run/"vm"/netvm');
    expect(long.socketOf?.('cloud-hypervisor', vmName('netvm'))).toBeUndefined();
  });

  it('shownSocket: a socket path as it is, or quoted whole with control and format characters escaped', () => {
    expect(shownSocket('/run/vm/appvm-lynx/qmp.sock')).toBe('/run/vm/appvm-lynx/qmp.sock');
    const hostile = `/run/${'v'.repeat(80)}/\u202e\u0085\u007f.sock`;
    expect(shownSocket(hostile)).toBe(`"/run/${'v'.repeat(80)}/\\u202e\\u0085\\u007f.sock"`);
  });

  it("shownSocket: a path that begins with '\"' is quoted too, so it cannot be taken for the quoted form of another (a template given with its quotes kept)", () => {
    // As it is, '"/run/vm/a\\nb"' (a backslash and an n) read as the quoted form of '/run/vm/a<newline>b'.
    expect(shownSocket('"/run/vm/a\\nb"')).toBe('"\\"/run/vm/a\\\\nb\\""');
    expect(shownSocket('"/run/vm/a\\nb"')).not.toBe(shownSocket('/run/vm/a\nb'));
    expect(shownSocket('"/run/vm/appvm-lynx/qmp.sock"')).toBe(JSON.stringify('"/run/vm/appvm-lynx/qmp.sock"'));
    // Whatever follows the '"', the path is shown quoted, its own '"' escaped.
    fc.assert(fc.property(fc.string(), (rest) => shownSocket(`"${rest}`).startsWith('"\\"')));
    expect(shownSocket('run/"vm".sock')).toBe('run/"vm".sock');
  });

  it('a detach goes to the socket recorded, whatever the template gives now; one not given goes to the template\'s', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sn-vmm-port-'));
    const recorded = await ScriptedQemu.start(join(dir, 'old-netvm.qmp'));
    const now = await ScriptedQemu.start(join(dir, 'netvm.qmp'));
    try {
      const port = vmmPort(parseAttachChoice([]), { ...flags, qmpSocket: join(dir, '{vm}.qmp'), vmmTimeout: '1000' });
      const nic = { id: 'snp7', tap: 'snp7', mac: '0A:B3:EC:80:00:07' };
      for (const qemu of [recorded, now]) {
        qemu.devices.set('snp7', { mac: '0a:b3:ec:80:00:07', netdev: 'net-snp7' });
        qemu.netdevs.add('net-snp7');
      }
      expect(await port.detach('qemu', vmName('netvm'), nic, recorded.path)).toBeUndefined();
      expect([recorded.devices.has('snp7'), now.devices.has('snp7'), now.connections]).toEqual([false, true, 0]);
      expect(await port.detach('qemu', vmName('netvm'), nic)).toBeUndefined();
      expect(now.devices.has('snp7')).toBe(false);
    } finally {
      await recorded.close();
      await now.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('is checked again before use: one the state would not record is refused, nothing connected to; a symlink there is not followed', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sn-vmm-port-'));
    const real = await ScriptedQemu.start(join(dir, 'real.qmp'));
    try {
      const port = vmmPort(parseAttachChoice([]), { ...flags, qmpSocket: join(dir, '{vm}.qmp'), vmmTimeout: '1000' });
      const nic = { id: 'snp7', tap: 'snp7', mac: '0A:B3:EC:80:00:07' };
      for (const bad of ['relative.qmp', `/${'x'.repeat(UNIX_SOCKET_PATH_MAX)}`, '/run/a\nb']) {
        const refused = { name: 'VmmPortError', kind: 'recorded-socket', message: expect.stringContaining(`the state records ${JSON.stringify(bad)} as the socket of the QEMU of netvm`) };
        expect(() => port.checkSocket?.('qemu', vmName('netvm'), bad)).toThrow(expect.objectContaining(refused));
        await expect(port.detach('qemu', vmName('netvm'), nic, bad)).rejects.toMatchObject(refused);
      }
      execFileSync('ln', ['-s', real.path, join(dir, 'link.qmp')]);
      await expect(port.detach('qemu', vmName('netvm'), nic, join(dir, 'link.qmp'))).rejects.toMatchObject({ message: expect.stringContaining('symlink') });
      expect(real.connections).toBe(0);
    } finally {
      await real.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a VMM that did not answer a detach in time is told of by its socket however spelled (relative or absolute, ./, .., //, a symlinked directory), at the template\'s path or the one recorded; not another socket', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sn-vmm-port-'));
    await mkdir(join(dir, 'qmp'));
    await mkdir(join(dir, 'other'));
    await symlink(join(dir, 'qmp'), join(dir, 'alias'));
    const stalled = await ScriptedQemu.start(join(dir, 'qmp', 'netvm.qmp'));
    stalled.delayMs = 60_000;
    const cwd = process.cwd();
    try {
      // The template relative to the working directory (a short path: the state records at most 107 bytes).
      process.chdir(join(dir, 'other'));
      const port = vmmPort(parseAttachChoice([]), { ...flags, qmpSocket: '../qmp/{vm}.qmp', vmmTimeout: '100' });
      const nic = { id: 'snp1', tap: 'snp1', mac: '0A:B3:EC:80:00:01' };
      await expect(port.detach('qemu', vmName('netvm'), nic)).rejects.toMatchObject({ name: 'QmpError', kind: 'timeout' });
      const said = port.unansweredDetach?.('qemu', vmName('netvm'));
      expect(said).toMatch(/no answer|within/);
      for (const spelled of [join(dir, 'qmp', 'netvm.qmp'), `${dir}/./qmp/netvm.qmp`, `${dir}//qmp/netvm.qmp`, `${dir}/other/../qmp/netvm.qmp`, `${dir}/alias/netvm.qmp`]) {
        expect(port.unansweredDetach?.('qemu', vmName('netvm'), spelled), spelled).toBe(said);
      }
      for (const other of [join(dir, 'qmp', 'appvm-lynx.qmp'), join(dir, 'other', 'netvm.qmp')]) expect(port.unansweredDetach?.('qemu', vmName('netvm'), other), other).toBeUndefined();
      // And the other way round: stalled at a spelling the state records, known at the template's.
      const next = vmmPort(parseAttachChoice([]), { ...flags, qmpSocket: '../qmp/{vm}.qmp', vmmTimeout: '100' });
      await expect(next.detach('qemu', vmName('netvm'), nic, `${dir}/alias/netvm.qmp`)).rejects.toMatchObject({ name: 'QmpError', kind: 'timeout' });
      expect(next.unansweredDetach?.('qemu', vmName('netvm'))).toMatch(/no answer|within/);
      expect(next.unansweredDetach?.('qemu', vmName('appvm-lynx'))).toBeUndefined();
    } finally {
      process.chdir(cwd);
      await stalled.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a VMM that did not answer a detach in time at a recorded socket is told of by that socket', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sn-vmm-port-'));
    const stalled = await ScriptedQemu.start(join(dir, 'old-netvm.qmp'));
    stalled.delayMs = 60_000;
    try {
      const port = vmmPort(parseAttachChoice([]), { ...flags, qmpSocket: join(dir, '{vm}.qmp'), vmmTimeout: '100' });
      const nic = { id: 'snp1', tap: 'snp1', mac: '0A:B3:EC:80:00:01' };
      await expect(port.detach('qemu', vmName('netvm'), nic, stalled.path)).rejects.toMatchObject({ name: 'QmpError', kind: 'timeout' });
      expect(port.unansweredDetach?.('qemu', vmName('netvm'), stalled.path)).toMatch(/./);
      expect(port.unansweredDetach?.('qemu', vmName('netvm'))).toBeUndefined();
    } finally {
      await stalled.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('where a moved socket leads', () => {
  it('sameSocketPath: the same socket however its directory is spelled (relative joined to the working directory, ./, .., //, a symlinked directory); another name, or one in another directory, is another', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sn-vmm-same-'));
    try {
      await mkdir(join(dir, 'qmp'));
      await symlink(join(dir, 'qmp'), join(dir, 'alias'));
      await mkdir(join(dir, 'other'));
      const socket = join(dir, 'qmp', 'netvm.sock');
      // Relative, from a working directory of a short path (the state records at most 107 bytes).
      const cwd = process.cwd();
      let fromCwd: string | undefined;
      try {
        process.chdir(join(dir, 'other'));
        fromCwd = vmmPort(parseAttachChoice([]), { ...flags, qmpSocket: '../qmp/{vm}.sock' }).socketOf?.('qemu', vmName('netvm'));
      } finally {
        process.chdir(cwd);
      }
      expect(fromCwd).toBe(`${dir}/other/../qmp/netvm.sock`);
      for (const spelled of [socket, `${dir}/./qmp/netvm.sock`, `${dir}//qmp/netvm.sock`, `${dir}/other/../qmp/netvm.sock`, `${dir}/alias/netvm.sock`, fromCwd ?? '']) {
        expect(sameSocketPath(socket, spelled), spelled).toBe(true);
      }
      // The socket itself is not followed: a symlink to it is another path (and refused at connect).
      await symlink(socket, join(dir, 'qmp', 'link.sock'));
      for (const other of [join(dir, 'qmp', 'link.sock'), join(dir, 'other', 'netvm.sock'), `${dir}/qmp/netvm.sock/`, `${dir}/qmp/.`, `${dir}/gone/../qmp/netvm.sock`]) {
        expect(sameSocketPath(socket, other), other).toBe(false);
      }
      // A directory that cannot be resolved (gone): only the same text is the same.
      expect(sameSocketPath('/nonexistent-sn/a.sock', '/nonexistent-sn/./a.sock')).toBe(false);
      expect(sameSocketPath('/nonexistent-sn/a.sock', '/nonexistent-sn/a.sock')).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('vmmAt: running where a VMM takes connections, none where nothing is there; a socket the state would not record is refused, nothing connected to', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sn-vmm-at-'));
    const qemu = await ScriptedQemu.start(join(dir, 'netvm.qmp'));
    try {
      const port = vmmPort(parseAttachChoice([]), { ...flags, vmmTimeout: '1000' });
      expect(await port.vmmAt?.('qemu', vmName('netvm'), qemu.path)).toEqual({ running: true });
      expect(await port.vmmAt?.('qemu', vmName('netvm'), join(dir, 'none.qmp'))).toMatchObject({ running: false, none: true });
      await expect(port.vmmAt?.('qemu', vmName('netvm'), 'relative.qmp')).rejects.toMatchObject({ name: 'VmmPortError', kind: 'recorded-socket' });
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(qemu.connections).toBe(1);
    } finally {
      await qemu.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("the VM's directory in a socket path (below it, no symlink is followed)", () => {
  it("is the path up to the template's first component with {vm}; none where only the socket's own name has it, or no {vm} at all", () => {
    expect(templateVmDir('/run/vm/{vm}/qmp.sock', 'netvm')).toBe('/run/vm/netvm');
    expect(templateVmDir('/run/vm/{vm}/sub/qmp.sock', 'netvm')).toBe('/run/vm/netvm');
    expect(templateVmDir('/run/vm-{vm}.d/x/{vm}.sock', 'netvm')).toBe('/run/vm-netvm.d');
    expect(templateVmDir('run/{vm}/qmp.sock', 'netvm')).toBe('run/netvm');
    expect(templateVmDir('/run/vm/{vm}.sock', 'netvm')).toBeUndefined();
    expect(templateVmDir('/run/vm/qmp.sock', 'netvm')).toBeUndefined();
  });

  it("of a recorded socket: the template's where this run's gives that path; else from its first component with the VM's name in it (never fewer components checked than the template's)", () => {
    expect(recordedVmDir('/run/vm/netvm/sub/qmp.sock', 'netvm', '/run/vm/{vm}/sub/qmp.sock')).toBe('/run/vm/netvm');
    // Another template this run (the default): the state records none.
    expect(recordedVmDir('/srv/vms/netvm/sub/qmp.sock', 'netvm', '/run/vm/{vm}/qmp.sock')).toBe('/srv/vms/netvm');
    // A VM named `vm`: this run's template says which `vm` is the VM's; without it, the first.
    expect(recordedVmDir('/run/vm/vm/qmp.sock', 'vm', '/run/vm/{vm}/qmp.sock')).toBe('/run/vm/vm');
    expect(recordedVmDir('/run/vm/vm/qmp.sock', 'vm', '/x/{vm}')).toBe('/run/vm');
    expect(recordedVmDir('/run/vm/netvm.sock', 'netvm', '/x/{vm}')).toBeUndefined();
    expect(recordedVmDir('/run/qmp.sock', 'netvm', '/x/{vm}')).toBeUndefined();
    // A relative template, made absolute as the state records it.
    const cwd = process.cwd();
    expect(recordedVmDir(`${cwd}/vms/vm7/sub/qmp.sock`, 'vm7', 'vms/{vm}/sub/qmp.sock')).toBe(`${cwd}/vms/vm7`);
  });

  it("refuses a socket reached through a symlink below it, at the template's path and at the one recorded, QEMU and cloud-hypervisor alike: the other VM's VMM gets nothing; the VM's directory itself may be a symlink", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sn-vmm-port-'));
    // netvm's VMMs (sockets in its `sub`), and appvm-lynx's `sub` made a symlink to netvm's by its user.
    await mkdir(join(dir, 'by-id', '3', 'sub'), { recursive: true });
    await symlink(join(dir, 'by-id', '3'), join(dir, 'netvm'));
    const qemu = await ScriptedQemu.start(join(dir, 'netvm', 'sub', 'qmp.sock'));
    const ch = await FakeCloudHypervisor.start('Running');
    try {
      await link(ch.socketPath, join(dir, 'netvm', 'sub', 'vmm'));
      await mkdir(join(dir, 'appvm-lynx'));
      await symlink(join(dir, 'netvm', 'sub'), join(dir, 'appvm-lynx', 'sub'));
      const port = vmmPort(parseAttachChoice([]), { qmpSocket: join(dir, '{vm}', 'sub', 'qmp.sock'), chSocket: join(dir, '{vm}', 'sub', 'vmm'), vmmTimeout: '1000' });
      const other = vmmPort(parseAttachChoice([]), { ...flags, vmmTimeout: '1000' });
      const nic = { id: 'snc7', tap: 'snc7', mac: '0A:B3:EC:00:00:07' };
      const said = `${join(dir, 'appvm-lynx', 'sub')} is a symlink (to ${join(dir, 'netvm', 'sub')}) below the VM's directory ${join(dir, 'appvm-lynx')}`;
      for (const [kind, name] of [['qemu', 'qmp.sock'], ['cloud-hypervisor', 'vmm']] as const) {
        const recorded = join(dir, 'appvm-lynx', 'sub', name);
        const asked = qemu.commands.length + ch.requests.length;
        await expect(port.detach(kind, vmName('appvm-lynx'), nic)).rejects.toMatchObject({ message: expect.stringContaining(said) });
        await expect(port.detach(kind, vmName('appvm-lynx'), nic, recorded)).rejects.toMatchObject({ message: expect.stringContaining(said) });
        // Recorded, with another template this run.
        await expect(other.detach(kind, vmName('appvm-lynx'), nic, recorded)).rejects.toMatchObject({ message: expect.stringContaining(said) });
        expect(await other.vmmAt?.(kind, vmName('appvm-lynx'), recorded)).toEqual({ running: false, none: false, why: expect.stringContaining(said) });
        expect(qemu.commands.length + ch.requests.length).toBe(asked);
        // netvm's own, through its directory that is a symlink: reached.
        expect(await other.vmmAt?.(kind, vmName('netvm'), join(dir, 'netvm', 'sub', name))).toEqual({ running: true });
        expect(await port.detach(kind, vmName('netvm'), nic)).toBe('absent');
      }
      // Only netvm's own detaches asked anything.
      expect(qemu.commands.length * ch.requests.length).toBeGreaterThan(0);
    } finally {
      await qemu.close();
      await ch.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
