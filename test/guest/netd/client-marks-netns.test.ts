// `spectrum-netd client` across runs, in a namespace: what it configures carries its mark
// (CLIENT_MARK) in the kernel, and a later run (or --watch, on the change) removes what carries
// it and is no longer wanted, and sets back a route of its own replaced by one via an IPv6 next
// hop; an operator's addresses and routes stay.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type Harness, type Netns, type NetnsProcess, createHarness, describeNetns, eventually } from '../../harness/index.js';

const CLI = fileURLToPath(new URL('../../../dist/guest/cli.js', import.meta.url));
const RTNETLINK = fileURLToPath(new URL('../../../dist/guest/netd/rtnetlink.js', import.meta.url));
const MARK = 236;

interface Address {
  readonly ifindex: number;
  readonly ip: string;
  readonly prefixLength: number;
  readonly proto: number;
}

describeNetns('spectrum-netd client removes what it marked and no longer wants', () => {
  let harness: Harness;
  let app: Netns;
  let watch: NetnsProcess | undefined;

  /** The namespace's IPv4 addresses as the agent reads them (iproute2 6.1 shows no IFA_PROTO), by link name. */
  async function addresses(): Promise<Map<string, Address[]>> {
    const script = `
      import { readFileSync, readdirSync } from 'node:fs';
      const { RtnetlinkKernel } = await import(${JSON.stringify(RTNETLINK)});
      const kernel = new RtnetlinkKernel();
      const names = new Map(readdirSync('/sys/class/net').map((name) => [Number(readFileSync('/sys/class/net/' + name + '/ifindex', 'utf8')), name]));
      const { events } = await kernel.dump();
      kernel.close();
      const byName = {};
      for (const event of events) if (event.kind === 'address') (byName[names.get(event.address.ifindex)] ??= []).push(event.address);
      process.stdout.write(JSON.stringify(byName));`;
    const { stdout } = await app.exec(['node', '--input-type=module', '-e', script]);
    return new Map(Object.entries(JSON.parse(stdout) as Record<string, Address[]>));
  }

  /** A link's addresses (ip/prefix, sorted): all of them, and those that carry the mark. */
  const addressesOf = async (name: string, which: 'all' | 'marked' = 'all'): Promise<string[]> =>
    ((await addresses()).get(name) ?? [])
      .filter((a) => which === 'all' || a.proto === MARK)
      .map((a) => `${a.ip}/${a.prefixLength}`)
      .sort();
  const routes = async (): Promise<string> => (await app.ip(['route', 'show', 'table', 'main'])).stdout;
  const client = async (...args: string[]): Promise<{ stdout: string; stderr: string }> => app.exec(['node', CLI, 'client', ...args]);

  beforeAll(async () => {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build`);
    harness = createHarness('cmark');
    app = await harness.namespace('app');
    const far = await harness.namespace('far');
    for (const [name, peer, id] of [['eth0', 'p0', 5], ['eth1', 'p1', 6]] as const) {
      await harness.veth(app, name, far, peer);
      await app.ip(['link', 'set', 'dev', name, 'address', `0a:b3:ec:00:00:0${id}`]);
      await far.ip(['link', 'set', 'dev', peer, 'up']);
    }
    // The operator's own: a static address and a route through it on eth0, and a /32 of the
    // client network (which a run without marks would have taken for one of its own).
    await app.ip(['link', 'set', 'dev', 'eth0', 'up']);
    await harness.addAddress(app, 'eth0', '192.0.2.9/24');
    await harness.addAddress(app, 'eth0', '100.64.0.77/32');
    await app.ip(['route', 'add', '198.51.100.0/24', 'via', '192.0.2.1', 'dev', 'eth0']);
  });

  afterAll(async () => {
    await watch?.kill('SIGTERM', 5000);
    await harness?.cleanup();
  });

  it('marks its addresses and routes', async () => {
    const { stdout } = await client();
    expect(stdout).toBe('eth0 100.64.0.5 configured\neth1 100.64.0.6 configured (not the first client link: address only)\n');
    expect(await addressesOf('eth0')).toEqual(['100.64.0.5/32', '100.64.0.77/32', '192.0.2.9/24']);
    expect(await addressesOf('eth0', 'marked')).toEqual(['100.64.0.5/32']);
    expect(await addressesOf('eth1', 'marked')).toEqual(['100.64.0.6/32']);
    expect((await app.ip(['route', 'show', 'proto', String(MARK)])).stdout).toBe('default via 169.254.0.1 dev eth0 \n169.254.0.1 dev eth0 scope link \n');
    // A second run changes nothing.
    expect((await client()).stdout).toBe('eth0 100.64.0.5 configured\neth1 100.64.0.6 configured (not the first client link: address only)\n');
    // --json: what the text says, as one object.
    const json = await client('--json');
    expect({ stdout: JSON.parse(json.stdout) as unknown, lines: json.stdout.split('\n').length, stderr: json.stderr }).toEqual({
      stdout: {
        links: [
          { name: 'eth0', ip: '100.64.0.5', state: 'configured', note: null },
          { name: 'eth1', ip: '100.64.0.6', state: 'configured', note: 'not the first client link: address only' },
        ],
        kept: [],
      },
      lines: 2,
      stderr: '',
    });
  });

  it("sets its gateway /32 back where a route via an IPv6 next hop on the same link replaced it (RFC 5549), and leaves an operator's default route via one alone", async () => {
    await app.ip(['route', 'replace', '169.254.0.1/32', 'via', 'inet6', 'fe80::1', 'dev', 'eth0']);
    expect(await routes()).toContain('169.254.0.1 via inet6 fe80::1 dev eth0');
    expect((await client()).stdout).toBe('eth0 100.64.0.5 configured\neth1 100.64.0.6 configured (not the first client link: address only)\n');
    expect((await app.ip(['route', 'show', 'proto', String(MARK)])).stdout).toBe('default via 169.254.0.1 dev eth0 \n169.254.0.1 dev eth0 scope link \n');
    expect(await routes()).not.toContain('fe80::1');
    // With --watch: set back as it starts (it has subscribed by then), and again as the kernel tells of it.
    const ours = async (): Promise<boolean> => (await app.ip(['route', 'show', '169.254.0.1/32'])).stdout === '169.254.0.1 dev eth0 proto 236 scope link \n';
    await app.ip(['route', 'replace', '169.254.0.1/32', 'via', 'inet6', 'fe80::1', 'dev', 'eth0']);
    const watching = app.spawn(['node', CLI, 'client', '--watch'], { enter: 'nsenter' });
    try {
      await eventually('the gateway /32 set back as --watch starts', ours, 20_000);
      await app.ip(['route', 'replace', '169.254.0.1/32', 'via', 'inet6', 'fe80::1', 'dev', 'eth0']);
      await eventually('the gateway /32 set back as the kernel tells of its replacement', ours);
    } finally {
      expect((await watching.kill('SIGTERM', 5000)).code).toBe(0);
    }
    // The operator's default route, through the same link via an IPv6 next hop (unmarked): not ours to replace.
    await app.ip(['-4', 'route', 'replace', 'default', 'via', 'inet6', 'fe80::1', 'dev', 'eth0']);
    expect((await client()).stdout).toBe(
      'eth0 100.64.0.5 configured (a default route not ours through this link via fe80::1 exists; left alone)\neth1 100.64.0.6 configured (not the first client link: address only)\n',
    );
    expect(await routes()).toContain('default via inet6 fe80::1 dev eth0');
    // Gone: its own comes back.
    await app.ip(['-4', 'route', 'del', 'default']);
    expect((await client()).stdout).toBe('eth0 100.64.0.5 configured\neth1 100.64.0.6 configured (not the first client link: address only)\n');
    expect((await app.ip(['route', 'show', 'proto', String(MARK)])).stdout).toBe('default via 169.254.0.1 dev eth0 \n169.254.0.1 dev eth0 scope link \n');
  });

  it('takes its address off the primary once it is --ignore\'d, and moves the routes to the next client link; the operator\'s stay', async () => {
    const { stdout } = await client('--ignore', 'eth0');
    expect(await addressesOf('eth0')).toEqual(['100.64.0.77/32', '192.0.2.9/24']);
    expect(await addressesOf('eth1', 'marked')).toEqual(['100.64.0.6/32']);
    // The former primary's default route is its own: no "other" default that eth1 must leave alone.
    expect(stdout).toBe('eth1 100.64.0.6 configured\n');
    const table = await routes();
    expect(table).toContain('default via 169.254.0.1 dev eth1 proto 236');
    expect(table).toContain('169.254.0.1 dev eth1 proto 236 scope link');
    expect(table).not.toMatch(/dev eth0 proto 236/);
    expect(table).toContain('198.51.100.0/24 via 192.0.2.1 dev eth0');
  });

  it("keeps a link's last address while an operator's route goes out of it, says so, and removes it once that route is gone", async () => {
    await app.ip(['route', 'add', '203.0.113.0/24', 'dev', 'eth1']);
    // eth1 becomes a physical NIC: no client link is left.
    await app.ip(['link', 'set', 'dev', 'eth1', 'address', '52:54:00:12:34:56']);
    const kept = await client('--ignore', 'eth0');
    expect(kept.stderr).toBe(
      'spectrum-netd: no client-side link (MAC 0A:B3:EC:00:..:..) found: nothing configured\n' +
        "spectrum-netd: eth1: addressing is left to the network manager; keeps 100.64.0.6/32 of client mode's: deleting its last IPv4 address would take routes not ours with it (203.0.113.0/24)\n",
    );
    expect(await addressesOf('eth1', 'marked')).toEqual(['100.64.0.6/32']);
    // --json: the same, the address kept with its link (stderr's lines as they are).
    const json = await client('--ignore', 'eth0', '--json');
    expect({ stdout: JSON.parse(json.stdout) as unknown, stderr: json.stderr }).toEqual({
      stdout: { links: [], kept: [{ name: 'eth1', addresses: ['100.64.0.6/32'], note: expect.stringMatching(/^addressing is left to the network manager; keeps 100\.64\.0\.6\/32 /) }] },
      stderr: kept.stderr,
    });
    // Its routes went (the default route with them), the operator's stayed.
    expect((await app.ip(['route', 'show', 'proto', String(MARK)])).stdout).toBe('');
    expect(await routes()).toContain('203.0.113.0/24 dev eth1 scope link');
    await app.ip(['route', 'del', '203.0.113.0/24', 'dev', 'eth1']);
    expect((await client('--ignore', 'eth0')).stderr).toBe('spectrum-netd: no client-side link (MAC 0A:B3:EC:00:..:..) found: nothing configured\n');
    expect(await addressesOf('eth1')).toEqual([]);
    expect(await addressesOf('eth0')).toEqual(['100.64.0.77/32', '192.0.2.9/24']);
    expect(await routes()).toBe('192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.9 \n198.51.100.0/24 via 192.0.2.1 dev eth0 \n');
  });

  it('with --watch, cleans up as a MAC changes: the old client address, then all of its own once the link is no client link', async () => {
    watch = app.spawn(['node', CLI, 'client', '--watch'], { enter: 'nsenter' });
    await eventually('eth0 configured', async () => (await routes()).includes('default via 169.254.0.1 dev eth0'), 20_000);
    expect(await addressesOf('eth0')).toEqual(['100.64.0.5/32', '100.64.0.77/32', '192.0.2.9/24']);
    // Another client id: the operator's /32 of the client network stays.
    await app.ip(['link', 'set', 'dev', 'eth0', 'address', '0a:b3:ec:00:00:09']);
    await eventually('100.64.0.9 in place of 100.64.0.5', async () => (await addressesOf('eth0')).join() === '100.64.0.77/32,100.64.0.9/32,192.0.2.9/24');
    expect(await addressesOf('eth0', 'marked')).toEqual(['100.64.0.9/32']);
    // A provider-side MAC: no client link at all.
    await app.ip(['link', 'set', 'dev', 'eth0', 'address', '0a:b3:ec:80:00:09']);
    await eventually('the marked address gone', async () => (await addressesOf('eth0')).join() === '100.64.0.77/32,192.0.2.9/24');
    await eventually('the default route gone', async () => !(await routes()).includes('default'));
    expect(await routes()).not.toContain('169.254.0.1');
    expect(await routes()).toContain('198.51.100.0/24 via 192.0.2.1 dev eth0');
    const exit = await watch.kill('SIGTERM', 5000);
    watch = undefined;
    expect(exit.code).toBe(0);
  });

  it("keeps a link's last address while an operator's permanent neighbour entry is on it (the kernel flushes the link's neighbours with it)", async () => {
    await app.ip(['link', 'set', 'dev', 'eth1', 'address', '0a:b3:ec:00:00:06']);
    expect((await client()).stdout).toBe('eth1 100.64.0.6 configured\n');
    await app.ip(['neigh', 'add', '198.51.100.50', 'lladdr', '02:00:00:00:00:01', 'dev', 'eth1', 'nud', 'permanent']);
    const kept = await client('--ignore', 'eth1');
    expect(kept.stderr).toBe(
      'spectrum-netd: no client-side link (MAC 0A:B3:EC:00:..:..) found: nothing configured\n' +
        "spectrum-netd: eth1: ignored by --ignore; keeps 100.64.0.6/32 of client mode's: deleting its last IPv4 address would take permanent neighbour entries not ours with it (neighbour 198.51.100.50)\n",
    );
    expect(await addressesOf('eth1', 'marked')).toEqual(['100.64.0.6/32']);
    expect((await app.ip(['neigh', 'show', 'dev', 'eth1'])).stdout).toContain('198.51.100.50 lladdr 02:00:00:00:00:01 PERMANENT');
    await app.ip(['neigh', 'del', '198.51.100.50', 'dev', 'eth1']);
    expect((await client('--ignore', 'eth1')).stderr).toBe('spectrum-netd: no client-side link (MAC 0A:B3:EC:00:..:..) found: nothing configured\n');
    expect(await addressesOf('eth1')).toEqual([]);
  });
});
