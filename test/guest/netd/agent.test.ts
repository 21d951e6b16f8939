// The agent's loop against a scripted kernel: what status reports about failed operations.
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { NetdAgent } from '../../../guest/netd/agent.js';
import type { KernelEvent } from '../../../guest/netd/kernel-view.js';
import type { Operation } from '../../../guest/netd/plan.js';
import type { KernelListener, NetdKernel } from '../../../guest/netd/rtnetlink.js';

/** A kernel that refuses the operations `refuse` names and otherwise does as asked. */
class ScriptedKernel implements NetdKernel {
  listener: KernelListener | undefined;
  refuse: (operation: Operation) => boolean = () => false;

  constructor(private readonly initial: KernelEvent[]) {}

  subscribe(listener: KernelListener): void {
    this.listener = listener;
  }

  dump(): Promise<KernelEvent[]> {
    return Promise.resolve(this.initial);
  }

  apply(operation: Operation): Promise<void> {
    return this.refuse(operation) ? Promise.reject(new Error('Request rejected: EPERM')) : Promise.resolve();
  }

  readSysctl(): string {
    return '1';
  }

  close(): void {}
}

const CLIENT_1 = { ifindex: 2, name: 'vm1', mac: '0a:b3:ec:80:00:01', up: false, loopback: false };

describe('NetdAgent', () => {
  let agent: NetdAgent | undefined;
  afterEach(() => agent?.stop());

  it("reports a link's failed operation until the plan asks nothing more of that link", async () => {
    const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
    kernel.refuse = (operation) => operation.kind === 'neighbour-set';
    agent = new NetdAgent(kernel, { mode: 'provider', ignored: new Set(), allowedPairs: [] }, pino({ level: 'silent' }), null, null);
    await agent.start({ watch: true });
    const vm1 = async (): Promise<{ state: string; error: string | null } | undefined> => (await agent!.status()).links.find((link) => link.name === 'vm1');
    expect((await vm1())?.error).toMatch(/^neigh replace 100\.64\.0\.1 .*EPERM/);
    // Someone else makes the neighbour entry: the plan now asks nothing of vm1, whose error is history.
    kernel.listener?.events([{ kind: 'neighbour', op: 'new', neighbour: { ifindex: 2, ip: '100.64.0.1', mac: '0a:b3:ec:00:00:01', permanent: true } }]);
    await new Promise((resolve) => setImmediate(resolve));
    await agent.idle();
    expect(await vm1()).toMatchObject({ state: 'configured', error: null });
  });
});
