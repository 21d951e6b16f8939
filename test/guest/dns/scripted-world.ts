// Forwarders and scripted upstreams on one DNS topology (dns-topology.ts), each forwarder on its
// own gateway address so that tests do not disturb each other; what they started is stopped by
// stopAll. Shared by the tests that script upstreams' answers by name (see the fixture).
import { expect } from 'vitest';
import type { Harness, NetnsProcess } from '../../harness/index.js';
import { ForwarderProcess, compiled, type DnsTopology } from './dns-topology.js';

export interface ScriptedWorld {
  /** A scripted upstream on `upstream.address` (added to the internet's link), answering each name by its first label (`labels`; else `otherwise`). */
  scriptedUpstream(upstream: { readonly address: string; readonly answer: string }, labels: Record<string, string>, otherwise?: string): Promise<void>;
  /** A forwarder on its own gateway address `listen`, listening. */
  start(listen: string, options: Record<string, unknown>): Promise<ForwarderProcess>;
  /** A process of the test's own to stop with the rest (an upstream it scripts itself). */
  track(process: NetnsProcess): void;
  /** Stops every forwarder and upstream started, those still running. */
  stopAll(): Promise<void>;
}

/** `world`: the suite's harness and topology, once its beforeAll has made them. */
export function scriptedWorld(world: () => { readonly harness: Harness; readonly net: DnsTopology }): ScriptedWorld {
  const started: ForwarderProcess[] = [];
  const upstreams: NetnsProcess[] = [];
  return {
    async scriptedUpstream(upstream, labels, otherwise) {
      const { harness, net } = world();
      const [fixture = ''] = compiled(['test/guest/dns/fixtures/scripted-upstream']);
      await harness.addAddress(net.internet, 'inet0', `${upstream.address}/24`);
      const child = net.internet.spawn([process.execPath, fixture, JSON.stringify({ ...upstream, port: 53, labels, ...(otherwise === undefined ? {} : { otherwise }) })]);
      upstreams.push(child);
      await child.waitForOutput(/^ready$/m);
    },
    async start(listen, options) {
      const { harness, net } = world();
      const forwarder = await ForwarderProcess.start(net.provider, { listen, ...options });
      started.push(forwarder);
      await harness.addAddress(net.provider, 'cl0', `${listen}/32`);
      expect((await forwarder.rebind())['listening']).toBe(true);
      return forwarder;
    },
    track(process) {
      upstreams.push(process);
    },
    async stopAll() {
      for (const forwarder of started) if (forwarder.process.exit === undefined) await forwarder.process.kill();
      for (const upstream of upstreams) if (upstream.exit === undefined) await upstream.kill();
    },
  };
}
