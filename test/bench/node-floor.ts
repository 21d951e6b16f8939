// The floor under any one-shot Node tool that links connections: a Node process that does only
// spectrum-link's kernel part (its planner and its route netlink program for N fresh
// connections: bridge + 2 taps, link MACs, MTU, enslaved, up), without reading a config dir,
// allocating ids or writing state. The link bench runs it as a process, like spectrum-link, so
// that its wall time holds Node's start-up too, and bundled like spectrum-link's bin (one
// CommonJS file: scripts/bundle.mjs) so that it loads as fast. Usage: node node-floor.cjs N
import { clientId } from '../../shared/client-id.js';
import { clientMacOf, providerMacOf } from '../../shared/link-mac.js';
import { type DesiredConnection, planDevices } from '../../host/device-plan.js';
import { DEFAULT_DEVICE_PREFIX, devicePrefix, linkDeviceNames } from '../../host/device-names.js';
import { applyDevicePlan, namespaceIpv6 } from '../../host/netlink-devices.js';

const count = Number(process.argv[2]);
if (!Number.isInteger(count) || count < 1 || count > 65534) {
  console.error('usage: node-floor.cjs N (1..65534 connections)');
  process.exit(2);
}
const prefix = devicePrefix(DEFAULT_DEVICE_PREFIX);
const connections: DesiredConnection[] = Array.from({ length: count }, (_, index) => {
  const id = clientId(index + 1);
  const names = linkDeviceNames(prefix, id);
  return {
    bridge: names.bridge,
    mtu: 1500,
    client: { device: names.client, mac: clientMacOf(id), attach: { kind: 'tap' } },
    provider: { device: names.provider, mac: providerMacOf(id), attach: { kind: 'tap' } },
  };
});
applyDevicePlan(planDevices(connections, { ...namespaceIpv6(), host: new Map(), netns: new Map(), netnsIds: new Map() })).catch((error: unknown) => {
  console.error(`node-floor: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
