/**
 * A provider namespace with one provider-side link per client id, set up as the agent core sets
 * it: provider MAC 0a:b3:ec:80:hi:lo, 169.254.0.1/32, a /32 route to 100.64.hi.lo and a permanent
 * neighbour entry for the client MAC. Each client has its own namespace with eth0 carrying
 * 0a:b3:ec:00:hi:lo (or another MAC, to test refusals). Built with `ip -batch` so a thousand
 * links take seconds, not minutes.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clientIpTextOf } from '../../../shared/client-ip.js';
import { clientMacOf, providerMacOf } from '../../../shared/link-mac.js';
import type { ClientId } from '../../../shared/client-id.js';
import type { DhcpLink } from '../../../guest/dhcp/dhcp-server.js';
import { type Harness, type Netns, writeResolvConf } from '../../harness/index.js';

export interface DhcpTopology {
  readonly provider: Netns;
  readonly clients: ReadonlyMap<ClientId, Netns>;
  readonly links: readonly DhcpLink[];
}

export interface TopologyOptions {
  /** Client-side MAC per id where it must differ from the scheme's (a wrong-MAC client). */
  readonly clientMacs?: ReadonlyMap<ClientId, string>;
  /** Parallel `ip` processes for per-client steps. */
  readonly concurrency?: number;
}

/** The namespace of client `id` in `topology`; an error for an id it was not built with. */
export function clientNetns(topology: DhcpTopology, id: ClientId): Netns {
  const ns = topology.clients.get(id);
  if (ns === undefined) throw new Error(`no client namespace for ${id}`);
  return ns;
}

/** The provider-side link of client `id` in `topology`; an error for an id it was not built with. */
export function clientLink(topology: DhcpTopology, id: ClientId): DhcpLink {
  const link = topology.links.find((entry) => entry.id === id);
  if (link === undefined) throw new Error(`no link for ${id}`);
  return link;
}

export function providerIfname(id: ClientId): string {
  return `p${id}`;
}

async function runBatch(ns: Netns, lines: readonly string[], label: string): Promise<void> {
  const file = join(tmpdir(), `${ns.name}-${label}.batch`);
  writeFileSync(file, `${lines.join('\n')}\n`);
  try {
    await ns.ip(['-batch', file], { timeoutMs: 300_000 });
  } finally {
    rmSync(file, { force: true });
  }
}

async function inParallel<T>(items: readonly T[], limit: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next];
      next += 1;
      if (item !== undefined) await task(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** Create namespaces in one `ip -batch` and hand them to the harness, which removes them. */
async function batchNamespaces(harness: Harness, root: Netns, names: readonly string[]): Promise<Netns[]> {
  const fullNames = names.map((name) => harness.prefix + name);
  for (const name of fullNames) writeResolvConf(name);
  // `ip netns add` from the root mount namespace (not via `ip -n`, whose view is the provider's).
  const file = join(tmpdir(), `${harness.prefix}netns.batch`);
  writeFileSync(file, `${fullNames.map((name) => `netns add ${name}`).join('\n')}\n`);
  // Run through the provider namespace's exec with nsenter: same mount namespace as ours.
  try {
    await root.exec(['ip', '-batch', file], { enter: 'nsenter', timeoutMs: 300_000 });
  } finally {
    rmSync(file, { force: true });
  }
  return fullNames.map((name) => harness.adopt(name));
}

export async function buildTopology(harness: Harness, ids: readonly ClientId[], options: TopologyOptions = {}): Promise<DhcpTopology> {
  const provider = await harness.namespace('provider');
  const clientNamespaces = ids.length <= 8 ? await Promise.all(ids.map((id) => harness.namespace(`c${id}`))) : await batchNamespaces(harness, provider, ids.map((id) => `c${id}`));
  const clients = new Map<ClientId, Netns>(ids.map((id, index) => [id, clientNamespaces[index] as Netns]));
  const lines: string[] = [];
  for (const id of ids) lines.push(...linkLines(id, clients.get(id) as Netns, options.clientMacs?.get(id) ?? clientMacOf(id)));
  await runBatch(provider, lines, 'links');
  await inParallel(ids, options.concurrency ?? 16, async (id) => {
    const client = clients.get(id) as Netns;
    // lo too: harness.namespace() does it, batch-made namespaces need it.
    await client.ip(['link', 'set', 'dev', 'lo', 'up']);
    await client.ip(['link', 'set', 'dev', 'eth0', 'up']);
  });
  const links = await linksOf(provider, ids);
  return { provider, clients, links };
}

/** The `ip -batch` lines that make client `id`'s provider-side link, its peer eth0 in `client`. */
function linkLines(id: ClientId, client: Netns, clientMac: string): string[] {
  const ifname = providerIfname(id);
  return [
    `link add ${ifname} address ${providerMacOf(id)} type veth peer name eth0 address ${clientMac} netns ${client.name}`,
    `address add 169.254.0.1/32 dev ${ifname}`,
    `link set ${ifname} up`,
    `route add ${clientIpTextOf(id)}/32 dev ${ifname} scope link src 169.254.0.1`,
    `neigh replace ${clientIpTextOf(id)} lladdr ${clientMacOf(id)} dev ${ifname} nud permanent`,
  ];
}

/**
 * Make client `id`'s provider-side link anew as buildTopology makes it: a new device (a new
 * index) of the same name and MACs. With `deleteFirst` the old one is deleted in the same
 * `ip -batch`, so the name is taken again within milliseconds.
 */
export async function remakeLink(topology: DhcpTopology, id: ClientId, deleteFirst: boolean): Promise<void> {
  const client = clientNetns(topology, id);
  const lines = linkLines(id, client, clientMacOf(id));
  await runBatch(topology.provider, deleteFirst ? [`link del ${providerIfname(id)}`, ...lines] : lines, `remake-${id}`);
  await client.ip(['link', 'set', 'dev', 'eth0', 'up']);
}

/**
 * Wait until the kernel has activated both ends of the links of `ids` (see Netns.linkActive):
 * the later `up` gives both their carrier, but the kernel's linkwatch activates the other end
 * some time after (seconds on a loaded machine), dropping what it sends meanwhile.
 */
export async function linksActive(topology: DhcpTopology, ids: readonly ClientId[]): Promise<void> {
  await Promise.all(ids.flatMap((id) => [topology.provider.linkActive(providerIfname(id)), clientNetns(topology, id).linkActive('eth0')]));
}

/** The DhcpLinks of the provider namespace, ifindex read back from the kernel. */
export async function linksOf(provider: Netns, ids: readonly ClientId[]): Promise<DhcpLink[]> {
  const { stdout } = await provider.ip(['-o', 'link', 'show']);
  const indexes = new Map<string, number>();
  for (const line of stdout.split('\n')) {
    const match = /^(\d+): ([^:@]+)[:@]/.exec(line);
    if (match !== null) indexes.set(match[2] ?? '', Number(match[1]));
  }
  return ids.map((id) => ({ ifname: providerIfname(id), ifindex: indexes.get(providerIfname(id)) ?? 0, id }));
}
