// Plugs the VMM clients (host/vmm/) into the linker: socket paths from templates, one timeout,
// and the rule that a VM whose VMM socket is gone has nothing left to detach.
import { integerOption } from '../shared/cli/integer-option.js';
import { type Logger, createLogger } from '../shared/log.js';
import type { AttachChoice } from './attach-mode.js';
import type { LinkReport, VmmPort } from './linker.js';
import type { VmmNic } from './vmm/nic.js';
import { cloudHypervisorNetArguments, qemuNetArguments } from './vmm/vmm-arguments.js';

export interface VmmFlags {
  readonly qmpSocket: string;
  readonly chSocket: string;
  readonly vmmTimeout?: string;
  readonly qemuBus?: string;
}

/** A socket path from a template such as /run/vm/{vm}/qmp.sock. */
export function socketPath(template: string, vm: string): string {
  return template.replaceAll('{vm}', vm);
}

export interface SideArguments {
  readonly cloudHypervisor: readonly string[];
  readonly qemu: readonly string[];
}

/** For sides attached by hand (`none`): the arguments that give the VMM its NIC on our tap. */
export function vmmArgumentsFor(report: LinkReport): { client?: SideArguments; provider?: SideArguments } | undefined {
  const sideArguments = (tap: string, mac: string): SideArguments => {
    const nic: VmmNic = { id: tap, tap, mac };
    return { cloudHypervisor: cloudHypervisorNetArguments(nic), qemu: qemuNetArguments(nic) };
  };
  const client = report.clientAttach === 'none' ? sideArguments(report.clientDevice, report.clientMac) : undefined;
  const provider = report.providerAttach === 'none' ? sideArguments(report.providerDevice, report.providerMac) : undefined;
  if (client === undefined && provider === undefined) return undefined;
  return { ...(client === undefined ? {} : { client }), ...(provider === undefined ? {} : { provider }) };
}

// The VMM clients (node:net, node:http) load only when a VMM is actually talked to.
const qmp = (): Promise<typeof import('./vmm/qmp.js')> => import('./vmm/qmp.js');
const cloudHypervisor = (): Promise<typeof import('./vmm/cloud-hypervisor.js')> => import('./vmm/cloud-hypervisor.js');

async function vmmGone(error: unknown): Promise<boolean> {
  const [{ QmpError }, { CloudHypervisorError }] = await Promise.all([qmp(), cloudHypervisor()]);
  return (error instanceof QmpError || error instanceof CloudHypervisorError) && error.kind === 'connect';
}

export function vmmPort(_attach: AttachChoice, flags: VmmFlags): VmmPort {
  const timeoutMs = integerOption('--vmm-timeout', flags.vmmTimeout ?? '5000', 1, 600_000, 'milliseconds');
  let logger: Logger | undefined;
  const log = (): Logger => (logger ??= createLogger('spectrum-link'));
  return {
    async attach(kind, vm, nic) {
      if (kind === 'qemu') {
        await (await qmp()).qemuAttach(socketPath(flags.qmpSocket, vm), nic, { timeoutMs, ...(flags.qemuBus === undefined ? {} : { bus: flags.qemuBus }) });
      } else {
        await (await cloudHypervisor()).chAttach(socketPath(flags.chSocket, vm), nic, { timeoutMs });
      }
    },
    async detach(kind, vm, nic) {
      try {
        if (kind === 'qemu') {
          const result = await (await qmp()).qemuDetach(socketPath(flags.qmpSocket, vm), nic, { timeoutMs });
          if (!result.acknowledged) log().warn({ vm, nic: nic.id }, 'guest did not acknowledge the unplug in time; its netdev was removed anyway');
        } else {
          await (await cloudHypervisor()).chDetach(socketPath(flags.chSocket, vm), nic, { timeoutMs });
        }
      } catch (error) {
        // No VMM socket: the VM is not running, so it holds no NIC of ours.
        if (!(await vmmGone(error))) throw error;
        log().info({ vm, nic: nic.id }, 'VMM not reachable; nothing to detach');
      }
    },
  };
}
