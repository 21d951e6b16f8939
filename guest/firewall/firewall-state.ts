/**
 * A validated model with the indexes that let the next model be checked and diffed against it
 * in time proportional to what changed: a hot-plug adds one link to a thousand, and the firewall
 * step sits in its latency. Pure; the reconciler (nft.ts) keeps one of these per table.
 */
import { FirewallError } from './firewall-error.js';
import { type FirewallModel, type ValidFirewallModel, canonicalClientIp, isUsableInterfaceName, sameStrings, validateFirewallModel } from './model.js';
import { type ElementDiff, type FirewallElements, desiredElements, diffElements, emptyElements } from './ruleset.js';

export interface FirewallState {
  readonly model: ValidFirewallModel;
  /** Provider link name -> its canonical client address. */
  readonly clientIpOf: ReadonlyMap<string, string>;
  /** Canonical client address -> the provider link it belongs to (unique in a valid model). */
  readonly linkOf: ReadonlyMap<string, string>;
}

export function firewallStateOf(model: ValidFirewallModel): FirewallState {
  const clientIpOf = new Map<string, string>();
  const linkOf = new Map<string, string>();
  for (const link of model.providerLinks) {
    clientIpOf.set(link.ifname, link.clientIp);
    linkOf.set(link.clientIp, link.ifname);
  }
  return { model, clientIpOf, linkOf };
}

export interface FirewallStep {
  readonly state: FirewallState;
  /** Exactly diffElements(desiredElements(previous model), desiredElements(new model)). */
  readonly diff: ElementDiff;
}

/** The whole path, for whatever the incremental one does not handle: errors come from validateFirewallModel. */
function fullStep(previous: FirewallState, next: FirewallModel): FirewallStep {
  const model = validateFirewallModel(next);
  return { state: firewallStateOf(model), diff: diffElements(desiredElements(previous.model), desiredElements(model)) };
}

function samePairs(a: FirewallModel['allowedPairs'], b: FirewallModel['allowedPairs']): boolean {
  return a.length === b.length && a.every((pair, index) => pair.from === b[index]?.from && pair.to === b[index]?.to);
}

const ifnameElement = (name: string): string => `"${name}"`;
const sourceElement = (name: string, clientIp: string): string => `${ifnameElement(name)} . ${clientIp}`;

/**
 * Validate `next` and diff it against `previous`, as validateFirewallModel + desiredElements +
 * diffElements would (same model, same diff, same FirewallError), checking only links that are
 * new or whose address text changed. Anything else — changed uplinks, isolated links or pairs,
 * anything that looks wrong — goes the whole way, so errors are validateFirewallModel's own.
 */
export function advanceFirewallState(previous: FirewallState, next: FirewallModel): FirewallStep {
  const before = previous.model;
  // Uplinks, isolated links and pairs unchanged (as text): their validated form is the previous one.
  if (!sameStrings(next.uplinks, before.uplinks) || !sameStrings(next.isolatedLinks ?? [], before.isolatedLinks ?? []) || !samePairs(next.allowedPairs, before.allowedPairs)) {
    return fullStep(previous, next);
  }
  const clientIpOf = new Map<string, string>();
  const links: { ifname: string; clientIp: string }[] = [];
  /** New links and links whose address changed, with their canonical address. */
  const changed: { ifname: string; clientIp: string }[] = [];
  for (const link of next.providerLinks) {
    const { ifname } = link;
    let clientIp = link.clientIp;
    const was = previous.clientIpOf.get(ifname);
    if (was !== clientIp) {
      if (!isUsableInterfaceName(ifname)) return fullStep(previous, next);
      try {
        clientIp = canonicalClientIp(clientIp, ifname);
      } catch (error) {
        if (error instanceof FirewallError) return fullStep(previous, next);
        throw error;
      }
      // Another spelling of the same address changes nothing.
      if (clientIp !== was) changed.push({ ifname, clientIp });
    }
    if (clientIpOf.has(ifname)) return fullStep(previous, next);
    clientIpOf.set(ifname, clientIp);
    links.push({ ifname, clientIp });
  }
  // Unchanged links keep the previous model's distinct addresses: a repeat involves a changed one.
  const changedIps = new Set<string>();
  for (const { ifname, clientIp } of changed) {
    const owner = previous.linkOf.get(clientIp);
    if (changedIps.has(clientIp) || (owner !== undefined && owner !== ifname && clientIpOf.get(owner) === clientIp)) return fullStep(previous, next);
    changedIps.add(clientIp);
  }
  for (const uplink of before.uplinks) if (clientIpOf.has(uplink)) return fullStep(previous, next);
  for (const name of before.isolatedLinks ?? []) if (clientIpOf.has(name)) return fullStep(previous, next);

  /** Links gone, and the old address of links whose address changed. */
  const dropped: { ifname: string; clientIp: string }[] = [];
  for (const [ifname, clientIp] of previous.clientIpOf) {
    const now = clientIpOf.get(ifname);
    if (now !== clientIp) dropped.push({ ifname, clientIp });
  }
  const droppedIps = new Set(dropped.map((link) => link.clientIp));
  // Set differences: an address handed from one link to another stays in client_ips.
  const add: Record<keyof FirewallElements, readonly string[]> = { ...emptyElements() };
  const remove: Record<keyof FirewallElements, readonly string[]> = { ...emptyElements() };
  add.client_links = changed.filter((link) => !previous.clientIpOf.has(link.ifname)).map((link) => ifnameElement(link.ifname)).sort();
  remove.client_links = dropped.filter((link) => !clientIpOf.has(link.ifname)).map((link) => ifnameElement(link.ifname)).sort();
  add.client_sources = changed.map((link) => sourceElement(link.ifname, link.clientIp)).sort();
  remove.client_sources = dropped.map((link) => sourceElement(link.ifname, link.clientIp)).sort();
  add.client_ips = [...changedIps].filter((ip) => !droppedIps.has(ip)).sort();
  remove.client_ips = [...droppedIps].filter((ip) => !changedIps.has(ip)).sort();

  let linkOf: ReadonlyMap<string, string> = previous.linkOf;
  if (changed.length > 0 || dropped.length > 0) {
    const updated = new Map(previous.linkOf);
    for (const link of dropped) updated.delete(link.clientIp);
    for (const link of changed) updated.set(link.clientIp, link.ifname);
    linkOf = updated;
  }
  const model: FirewallModel = {
    providerLinks: links,
    uplinks: before.uplinks,
    allowedPairs: before.allowedPairs,
    ...(before.isolatedLinks !== undefined && { isolatedLinks: before.isolatedLinks }),
  };
  return { state: { model: model as ValidFirewallModel, clientIpOf, linkOf }, diff: { add, delete: remove } };
}
