// Pure planning of the host devices for client/provider connections: given what should exist
// and what the kernel reports, the `ip` commands that make it so. Reconcile, never append:
// running the plan on its own result yields no steps.

/** How one side of a connection reaches its VM. */
export type SideDevice =
  /** A tap the VMM opens (cloud-hypervisor, QEMU, or arguments printed for the user). */
  | { readonly kind: 'tap' }
  /** A veth whose far end, named like the host end, sits in the VM's network namespace. */
  | { readonly kind: 'veth'; readonly netns: string };

export interface DesiredSide {
  readonly device: string;
  /** The link MAC the VM's interface carries (set on the far end of a veth; the VMM sets it for a tap). */
  readonly mac: string;
  readonly attach: SideDevice;
}

export interface DesiredConnection {
  readonly bridge: string;
  readonly mtu: number;
  readonly client: DesiredSide;
  readonly provider: DesiredSide;
}

/** A network device as `ip -d -j link show` reports it, reduced to what the plan compares. */
export interface ObservedDevice {
  readonly name: string;
  /** `bridge`, `tun`, `veth`, ... or null for a device without link info (loopback, ethernet). */
  readonly kind: string | null;
  readonly master: string | null;
  readonly mtu: number;
  readonly up: boolean;
  /** Lower-case colon form. */
  readonly mac: string;
}

/** What the kernel has: the current namespace's devices and those of each VM namespace. */
export interface ObservedDevices {
  readonly host: ReadonlyMap<string, ObservedDevice>;
  /** null: the namespace does not exist. */
  readonly netns: ReadonlyMap<string, ReadonlyMap<string, ObservedDevice> | null>;
}

/** One `ip` command, run in the current namespace (netns null) or in a VM namespace. */
export interface IpStep {
  readonly netns: string | null;
  readonly args: readonly string[];
}

/**
 * Steps come in three phases so that each runs as few `ip -batch` processes as possible:
 * clearing stale far ends in VM namespaces, everything in the current namespace (which also
 * creates veth far ends), then configuring those far ends.
 */
export interface DevicePlan {
  /** VM namespaces to create before any step runs. */
  readonly createNamespaces: readonly string[];
  readonly clearFarEnds: readonly IpStep[];
  /**
   * One list per connection, in plan order (empty where nothing changes). Each connection's
   * devices are its own, so the lists are independent: they may run in parallel (splitSteps).
   */
  readonly hostSteps: readonly (readonly IpStep[])[];
  readonly configureFarEnds: readonly IpStep[];
  /** Host devices this plan creates: deleting them undoes a failed run. */
  readonly creates: readonly string[];
}

const host = (...args: string[]): IpStep => ({ netns: null, args });
const inNetns = (netns: string, ...args: string[]): IpStep => ({ netns, args });

/** Steps that bring an existing device's master, MTU and state to what is wanted. */
function fixDevice(netns: string | null, wanted: { name: string; master: string | null; mtu: number; mac?: string }, seen: ObservedDevice | undefined): IpStep[] {
  const changes: string[] = [];
  if (wanted.mac !== undefined && seen?.mac !== wanted.mac.toLowerCase()) changes.push('address', wanted.mac.toLowerCase());
  if (seen?.mtu !== wanted.mtu) changes.push('mtu', String(wanted.mtu));
  if (wanted.master !== null && seen?.master !== wanted.master) changes.push('master', wanted.master);
  if (seen?.up !== true) changes.push('up');
  if (changes.length === 0) return [];
  return [{ netns, args: ['link', 'set', 'dev', wanted.name, ...changes] }];
}

interface PlanBuilder {
  readonly missingNamespaces: Set<string>;
  readonly clearFarEnds: IpStep[];
  /** The current connection's host steps. */
  hostSteps: IpStep[];
  readonly configureFarEnds: IpStep[];
  readonly creates: string[];
}

function planSide(side: DesiredSide, connection: DesiredConnection, observed: ObservedDevices, plan: PlanBuilder, bridgeReplaced: boolean): void {
  const { hostSteps: steps, creates } = plan;
  const found = observed.host.get(side.device);
  // A port of a device that is deleted to make way for our bridge (a bond by that name, say) is
  // released with it: whatever master it reports now, it has none by the time it is set.
  const seen = bridgeReplaced && found?.master === connection.bridge ? { ...found, master: null } : found;
  const attach = side.attach;

  if (attach.kind === 'tap') {
    const isTap = seen?.kind === 'tun';
    if (seen !== undefined && !isTap) steps.push(host('link', 'del', 'dev', side.device));
    if (!isTap) {
      steps.push(host('tuntap', 'add', 'dev', side.device, 'mode', 'tap', 'vnet_hdr'));
      creates.push(side.device);
    }
    steps.push(...fixDevice(null, { name: side.device, master: connection.bridge, mtu: connection.mtu }, isTap ? seen : undefined));
    return;
  }

  const farDevices = observed.netns.get(attach.netns) ?? null;
  if (farDevices === null) plan.missingNamespaces.add(attach.netns);
  const far = farDevices?.get(side.device);
  // A veth pair lives and dies together: both ends present means the pair is ours and whole.
  const pairWhole = seen?.kind === 'veth' && far?.kind === 'veth';
  if (!pairWhole) {
    if (seen !== undefined) steps.push(host('link', 'del', 'dev', side.device));
    if (far !== undefined) plan.clearFarEnds.push(inNetns(attach.netns, 'link', 'del', 'dev', side.device));
    steps.push(host('link', 'add', side.device, 'type', 'veth', 'peer', 'name', side.device, 'netns', attach.netns));
    creates.push(side.device);
  }
  steps.push(...fixDevice(null, { name: side.device, master: connection.bridge, mtu: connection.mtu }, pairWhole ? seen : undefined));
  plan.configureFarEnds.push(
    ...fixDevice(attach.netns, { name: side.device, master: null, mtu: connection.mtu, mac: side.mac }, pairWhole ? far : undefined),
  );
}

/** Whether a plan changes nothing: the kernel already has what is desired. */
export function isEmptyPlan(plan: DevicePlan): boolean {
  return plan.createNamespaces.length + plan.clearFarEnds.length + plan.hostSteps.flat().length + plan.configureFarEnds.length === 0;
}

/** The steps that make every connection's devices exist exactly as desired. */
export function planDevices(connections: readonly DesiredConnection[], observed: ObservedDevices): DevicePlan {
  const plan: PlanBuilder = { missingNamespaces: new Set(), clearFarEnds: [], hostSteps: [], configureFarEnds: [], creates: [] };
  const { creates } = plan;
  const hostSteps: IpStep[][] = [];
  for (const connection of connections) {
    const steps: IpStep[] = [];
    plan.hostSteps = steps;
    hostSteps.push(steps);
    const bridge = observed.host.get(connection.bridge);
    const isBridge = bridge?.kind === 'bridge';
    if (bridge !== undefined && !isBridge) steps.push(host('link', 'del', 'dev', connection.bridge));
    if (!isBridge) {
      steps.push(host('link', 'add', connection.bridge, 'type', 'bridge'));
      creates.push(connection.bridge);
    }
    const bridgeReplaced = bridge !== undefined && !isBridge;
    planSide(connection.client, connection, observed, plan, bridgeReplaced);
    planSide(connection.provider, connection, observed, plan, bridgeReplaced);
    // The bridge comes up after its ports joined, as in a hand-written batch.
    steps.push(...fixDevice(null, { name: connection.bridge, master: null, mtu: connection.mtu }, isBridge ? bridge : undefined));
  }
  const { missingNamespaces, clearFarEnds, configureFarEnds } = plan;
  return { createNamespaces: [...missingNamespaces], clearFarEnds, hostSteps, configureFarEnds, creates };
}

/**
 * Deal per-connection step lists into at most `parts` batches of about equal length, each a run
 * of whole connections in plan order; empty batches are left out.
 */
export function splitSteps(groups: readonly (readonly IpStep[])[], parts: number): IpStep[][] {
  const total = groups.reduce((sum, group) => sum + group.length, 0);
  const batches: IpStep[][] = [];
  let batch: IpStep[] = [];
  let done = 0;
  for (const group of groups) {
    batch.push(...group);
    done += group.length;
    // Close this batch once it holds its share of all steps so far.
    if (batches.length < parts - 1 && done * parts >= total * (batches.length + 1) && batch.length > 0) {
      batches.push(batch);
      batch = [];
    }
  }
  if (batch.length > 0) batches.push(batch);
  return batches;
}

/** The steps that remove a connection's host devices (veth far ends go with them). */
export function planRemoval(devices: readonly string[], observed: ObservedDevices): IpStep[] {
  return devices.filter((name) => observed.host.has(name)).map((name) => host('link', 'del', 'dev', name));
}
