import { describe, expect, it } from 'vitest';
import { parseAttachChoice } from '../../host/attach-mode.js';
import { UNIX_SOCKET_PATH_MAX, qemuBus, socketPath, socketTemplate, vmmPort } from '../../host/vmm-port.js';
import { vmName } from '../../host/vm-name.js';
import { EXIT } from '../../shared/cli/run-cli.js';

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
