import { afterAll, beforeAll, expect, it } from 'vitest';
import { createHarness, describeNetns, eventually, type Harness, type Netns, type NetnsProcess } from '../../harness/index.js';
import { READER_FIXTURE, requireBuild } from './dhcp-server-fixture.js';

// The DHCP server's raw socket on a link, against the kernel: what it reads.
describeNetns('DHCP link socket', () => {
  let harness: Harness;
  let provider: Netns;
  let client: Netns;
  let reader: NetnsProcess;
  /** link0's index, which the socket is bound by. */
  let ifindex: string;

  beforeAll(async () => {
    requireBuild();
    harness = createHarness('dhcpsock');
    provider = await harness.namespace('provider');
    client = await harness.namespace('client');
    await harness.veth(provider, 'link0', client, 'eth0');
    await harness.addAddress(provider, 'link0', '169.254.0.1/16');
    await harness.addAddress(client, 'eth0', '169.254.7.2/16');
    await harness.up(provider, 'link0');
    await harness.up(client, 'eth0');
    // link0, raised first, is activated by the kernel's linkwatch some time after eth0 comes up
    // (seconds on a loaded machine): until then the answers to the client's ARP are dropped.
    await Promise.all([provider.linkActive('link0'), client.linkActive('eth0')]);
    ifindex = /^(\d+):/.exec((await provider.ip(['-o', 'link', 'show', 'dev', 'link0'])).stdout)?.[1] ?? '';
    expect(ifindex).not.toBe('');
    reader = provider.spawn([process.execPath, READER_FIXTURE, 'link0', ifindex], { stdin: 'pipe' });
    await reader.waitForOutput(/^ready$/m);
  });

  afterAll(async () => {
    reader?.child.stdin?.end();
    await harness?.cleanup();
  });

  /** One UDP datagram from the client to the provider's port, from a socket of its own. */
  async function send(port: number): Promise<void> {
    const script = `const s = require('node:dgram').createSocket('udp4'); s.send(Buffer.from('probe'), ${port}, '169.254.0.1', (e) => { if (e) throw e; s.close(); });`;
    await client.exec([process.execPath, '-e', script]);
  }

  it('reads datagrams to port 67 only: the client\'s DNS queries and other UDP never reach it', async () => {
    for (const port of [53, 5353, 68, 67]) await send(port);
    await eventually('the datagram to port 67', async () => /^port 67$/m.test(reader.stdout));
    // Datagrams arrive in order on one link: the others, sent first, would have been read first.
    expect(reader.stdout.match(/^port \d+$/gm)).toEqual(['port 67']);
    expect(reader.stderr).toBe('');
  });

  it("never reads what reached it from another link before it was bound to its own", async () => {
    // A raw socket reads every link's datagrams until it is bound to its link: one another link's client
    // sent to port 67 in that moment (with this link's client MAC in chaddr) would be served as
    // this link's. The fixture sends one over lo just before the bind.
    const early = provider.spawn([process.execPath, READER_FIXTURE, 'link0', ifindex, '169.254.0.1'], { stdin: 'pipe' });
    try {
      await early.waitForOutput(/^ready$/m);
      await send(67);
      await eventually('the client\'s datagram to port 67', async () => /^port 67$/m.test(early.stdout));
      // The other link's datagram, queued first, would have been read first.
      expect(early.stdout.match(/^port \d+$/gm)).toEqual(['port 67']);
      expect(early.stderr).toBe('');
    } finally {
      early.child.stdin?.end();
      await early.wait();
    }
  });
});
