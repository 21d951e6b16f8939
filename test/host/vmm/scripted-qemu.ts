// A scripted QEMU QMP server on a Unix socket: enough of QEMU's NIC hot-plug for qemuAttach and
// qemuDetach (qom-list, qom-get, getfd, netdev_add/del, device_add/del and DEVICE_DELETED), with
// the devices and netdevs it was given kept, and switches that make it hostile: refuse device_add,
// refuse device_del or never answer it, answer every command (or every hot-plug step) only after a
// delay. The descriptors getfd sends are
// not kept (Node's server cannot receive them; the kernel closes them), so this QEMU holds no
// tap. Real QEMU is in qemu-attach.test.ts and link-vmm.test.ts.
import { type Server, type Socket, createServer } from 'node:net';

const GREETING = '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}\r\n';
const PERIPHERAL = '/machine/peripheral/';

interface Message {
  readonly execute?: unknown;
  readonly id?: unknown;
  readonly arguments?: Record<string, unknown>;
}

export class ScriptedQemu {
  /** NICs by id: their MAC (lower case, as QEMU prints it) and netdev. */
  readonly devices = new Map<string, { mac: string; netdev: string }>();
  readonly netdevs = new Set<string>();
  /** Every command received, in order. */
  readonly commands: string[] = [];
  /** Connections accepted so far. */
  connections = 0;
  /**
   * How device_del goes: as QEMU's (the unplug acknowledged at once), refused, never answered, or
   * answered while the guest never releases the NIC (no DEVICE_DELETED, the device stays, a
   * booting or uncooperative guest).
   */
  deviceDel: 'ok' | 'refuse' | 'silent' | 'unacked' = 'ok';
  /** How device_add goes: as QEMU's, or refused (as a bus without a free slot refuses it). */
  deviceAdd: 'ok' | 'refuse' = 'ok';
  /** Devices whose unplug the guest has not acknowledged ('unacked'). */
  readonly unplugPending = new Set<string>();
  /** Every answer (the greeting too) comes this late. */
  delayMs = 0;
  /** DEVICE_DELETED comes this much later than device_del's answer (the guest taking its time). */
  eventDelayMs = 0;
  /**
   * The answer to every command after qmp_capabilities comes this much later too (a QEMU that
   * answers each hot-plug step just within its bound, the greeting and capabilities in time).
   */
  stepDelayMs = 0;
  private readonly sockets = new Set<Socket>();
  private readonly timers = new Set<NodeJS.Timeout>();

  private constructor(
    readonly path: string,
    private readonly server: Server,
  ) {}

  static async start(path: string): Promise<ScriptedQemu> {
    let scripted: ScriptedQemu | undefined;
    const server = createServer((socket) => scripted?.serve(socket));
    scripted = new ScriptedQemu(path, server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, resolve);
    });
    return scripted;
  }

  async close(): Promise<void> {
    for (const timer of this.timers) clearTimeout(timer);
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private serve(socket: Socket): void {
    this.connections += 1;
    this.sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => this.sockets.delete(socket));
    const send = (line: string, later = 0): void => {
      const delay = this.delayMs + later;
      if (delay === 0) {
        socket.write(line);
        return;
      }
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        if (!socket.destroyed) socket.write(line);
      }, delay);
      this.timers.add(timer);
    };
    send(GREETING);
    let buffer = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => {
      buffer += chunk;
      for (let newline = buffer.indexOf('\n'); newline !== -1; newline = buffer.indexOf('\n')) {
        const message = JSON.parse(buffer.slice(0, newline)) as Message;
        buffer = buffer.slice(newline + 1);
        const step = message.execute === 'qmp_capabilities' ? 0 : this.stepDelayMs;
        for (const line of this.answer(message)) send(`${line}\r\n`, step + (line.startsWith('{"event"') ? this.eventDelayMs : 0));
      }
    });
  }

  /** The lines that answer a command: its reply, and an event where QEMU sends one. */
  private answer(message: Message): string[] {
    const command = String(message.execute);
    const args = message.arguments ?? {};
    this.commands.push(command);
    const reply = (body: object): string => JSON.stringify({ ...body, id: message.id });
    const error = (qmpClass: string, desc: string): string => reply({ error: { class: qmpClass, desc } });
    const id = String(args.id ?? '');
    switch (command) {
      case 'qmp_capabilities':
      case 'getfd':
      case 'closefd':
        return [reply({ return: {} })];
      case 'qom-list':
        return [reply({ return: [...this.devices.keys()].map((name) => ({ name, type: 'child<virtio-net-pci>' })) })];
      case 'qom-get': {
        const device = this.devices.get(String(args.path ?? '').slice(PERIPHERAL.length));
        if (device === undefined) return [error('DeviceNotFound', `Device '${String(args.path)}' not found`)];
        const value = { type: 'virtio-net-pci', mac: device.mac, netdev: device.netdev, host_mtu: 0 }[String(args.property)];
        return [value === undefined ? error('GenericError', `Property '${String(args.property)}' not found`) : reply({ return: value })];
      }
      case 'netdev_add':
        if (this.netdevs.has(id)) return [error('GenericError', `Duplicate ID '${id}' for netdev`)];
        // A descriptor name getfd did not give (the linker's probe) is not found.
        if (args.fd !== id) return [error('GenericError', `File descriptor named '${String(args.fd)}' has not been found`)];
        this.netdevs.add(id);
        return [reply({ return: {} })];
      case 'netdev_del':
        if (!this.netdevs.delete(id)) return [error('DeviceNotFound', `Device '${id}' not found`)];
        return [reply({ return: {} })];
      case 'device_add':
        if (this.deviceAdd === 'refuse') return [error('GenericError', 'No free slot on bus pcie.0')];
        if (this.devices.has(id)) return [error('GenericError', `Duplicate device ID '${id}' for device`)];
        this.devices.set(id, { mac: String(args.mac).toLowerCase(), netdev: String(args.netdev) });
        return [reply({ return: {} })];
      case 'device_del':
        if (this.deviceDel === 'silent') return [];
        if (this.deviceDel === 'refuse') return [error('GenericError', "Bus 'pci.0' does not support hotplugging")];
        if (this.deviceDel === 'unacked' && this.devices.has(id)) {
          if (this.unplugPending.has(id)) return [error('GenericError', `Device ${id} is already in the process of unplug`)];
          this.unplugPending.add(id);
          return [reply({ return: {} })];
        }
        if (!this.devices.delete(id)) return [error('DeviceNotFound', `Device '${id}' not found`)];
        return [reply({ return: {} }), JSON.stringify({ event: 'DEVICE_DELETED', data: { device: id, path: `${PERIPHERAL}${id}` }, timestamp: { seconds: 0, microseconds: 0 } })];
      default:
        return [error('CommandNotFound', `The command ${command} has not been found`)];
    }
  }
}
