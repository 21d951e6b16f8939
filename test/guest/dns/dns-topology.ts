// The namespace topology shared by the DNS forwarder tests and benchmark:
//   client (100.64.0.5, .6 /32) --- provider (169.254.0.1/32 on the client link; 192.0.2.2/24) --- internet
// The internet namespace runs dnsmasq upstreams on 192.0.2.53 and 192.0.2.54 serving a test zone;
// 192.0.2.99 is on no host (a dead upstream).
import { existsSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Harness, Netns, NetnsProcess } from '../../harness/index.js';

const HERE_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
/** The repository, whether this module runs from source (vitest) or from dist/ (benchmarks). */
export const REPO_ROOT = HERE_ROOT.endsWith('/dist/') ? HERE_ROOT.slice(0, -'dist/'.length) : HERE_ROOT;
/** dnsmasq in the foreground, configured by its arguments alone, by root, without a pid file. */
export const DNSMASQ_BASE = ['dnsmasq', '--no-daemon', '--keep-in-foreground', '--no-resolv', '--no-hosts', '--conf-file=/dev/null', '--user=root', '--pid-file='];
export const UPSTREAM_A = '192.0.2.53';
export const UPSTREAM_B = '192.0.2.54';
export const DEAD_UPSTREAM = '192.0.2.99';
export const CLIENT_IP = '100.64.0.5';
export const FLOOD_CLIENT_IP = '100.64.0.6';
export const PROVIDER_UPLINK_IP = '192.0.2.2';
/** Every name upstream A answers: www, n0..n(NAMES-1), and a TXT record too big for 512 bytes. */
export const NUMBERED_NAMES = 32;
export const BIG_TXT_CHUNK = 'x'.repeat(200);

/** The Debian tools these tests run; missing, they fail saying which package brings them. */
export function requireDnsTools(): void {
  for (const tool of ['/usr/bin/dig', '/usr/sbin/dnsmasq']) {
    if (!existsSync(tool)) throw new Error(`${tool} is missing: run scripts/setup (Debian packages dnsutils, dnsmasq-base)`);
  }
}

/** Replace `dir`/resolv.conf the way connman does: write a new file, rename it over the old one. */
export function replaceResolvConf(dir: string, text: string): void {
  const staging = join(dir, '.resolv.conf.new');
  writeFileSync(staging, text);
  renameSync(staging, join(dir, 'resolv.conf'));
}
export const BIG_TXT_CHUNKS = 8;

/** Compiled fixtures run from dist/: they must exist and be as new as their sources. */
export function compiled(sources: readonly string[]): string[] {
  return sources.map((source) => {
    const js = `${REPO_ROOT}dist/${source}.js`;
    if (!existsSync(js)) throw new Error(`${js} is missing: run \`npm run build\` before the tests`);
    if (statSync(js).mtimeMs < statSync(`${REPO_ROOT}${source}.ts`).mtimeMs) {
      throw new Error(`${js} is older than ${source}.ts: run \`npm run build\` before the tests`);
    }
    return js;
  });
}

export const FORWARDER_SOURCES = [
  'test/guest/dns/fixtures/forwarder',
  'guest/backoff',
  'guest/interface-name',
  'guest/token-bucket',
  'guest/dns/fair-share',
  'guest/dns/forwarder',
  'guest/dns/header',
  'guest/dns/pending-shares',
  'guest/dns/pending-table',
  'guest/dns/query-times',
  'guest/dns/rate-limiter',
  'guest/dns/resolv-conf',
  'guest/dns/resolv-conf-watcher',
  'guest/dns/rtt-estimator',
  'guest/dns/tcp-exchange',
  'guest/dns/tcp-frames',
  'guest/dns/udp-socket',
  'guest/dns/upstream',
  'guest/dns/upstream-reachability',
];

export interface DnsTopology {
  readonly internet: Netns;
  readonly provider: Netns;
  readonly client: Netns;
}

export async function buildTopology(harness: Harness): Promise<DnsTopology> {
  const internet = await harness.namespace('inet');
  const provider = await harness.namespace('prov');
  const client = await harness.namespace('client');
  await harness.veth(provider, 'up0', internet, 'inet0');
  await harness.veth(provider, 'cl0', client, 'eth0');
  await harness.addAddress(internet, 'inet0', '192.0.2.1/24');
  await harness.addAddress(internet, 'inet0', `${UPSTREAM_A}/24`);
  await harness.addAddress(internet, 'inet0', `${UPSTREAM_B}/24`);
  await harness.addAddress(provider, 'up0', `${PROVIDER_UPLINK_IP}/24`);
  await harness.addAddress(provider, 'cl0', '169.254.0.1/32');
  await harness.addAddress(client, 'eth0', `${CLIENT_IP}/32`);
  await harness.addAddress(client, 'eth0', `${FLOOD_CLIENT_IP}/32`);
  for (const [ns, dev] of [
    [internet, 'inet0'],
    [provider, 'up0'],
    [provider, 'cl0'],
    [client, 'eth0'],
  ] as const) {
    await harness.up(ns, dev);
  }
  // The end of each veth raised first gets its carrier when its peer comes up, but the kernel's
  // linkwatch activates it some time after (seconds on a loaded machine), dropping what it sends
  // meanwhile: the first queries, or their answers.
  await Promise.all([internet.linkActive('inet0'), provider.linkActive('up0'), provider.linkActive('cl0'), client.linkActive('eth0')]);
  // As Spectrum's DHCP lease sets it up: the gateway is on-link, everything else behind it.
  await client.ip(['route', 'add', '169.254.0.0/16', 'dev', 'eth0', 'scope', 'link', 'src', CLIENT_IP]);
  await provider.ip(['route', 'add', `${CLIENT_IP}/32`, 'dev', 'cl0']);
  await provider.ip(['route', 'add', `${FLOOD_CLIENT_IP}/32`, 'dev', 'cl0']);
  return { internet, provider, client };
}

/** dnsmasq answering the test zone from `address`; `tag` picks the answers (A: .80/.100+, B: .81/198.51.100.x). */
export function startUpstream(internet: Netns, address: string, tag: 'A' | 'B'): NetnsProcess {
  const www = tag === 'A' ? '192.0.2.80' : '192.0.2.81';
  const numbered = Array.from({ length: NUMBERED_NAMES }, (_, i) =>
    `--address=/n${i}.test.example/${tag === 'A' ? `203.0.113.${100 + i}` : `198.51.100.${100 + i}`}`,
  );
  const txt = Array.from({ length: BIG_TXT_CHUNKS }, () => BIG_TXT_CHUNK).join(',');
  return internet.spawn(
    [
      ...DNSMASQ_BASE,
      `--listen-address=${address}`,
      '--bind-interfaces',
      '--log-facility=-',
      `--address=/www.test.example/${www}`,
      `--txt-record=big.test.example,${txt}`,
      '--dns-forward-max=10000',
      ...numbered,
    ],
    { pidns: true },
  );
}

export { eventually } from '../../harness/index.js';

/** The forwarder fixture running in a namespace, driven over its stdin. */
export class ForwarderProcess {
  #tag = 0;

  private constructor(readonly process: NetnsProcess) {}

  static async start(
    ns: Netns,
    options: Record<string, unknown>,
    env: NodeJS.ProcessEnv = process.env,
    nodeArgs: readonly string[] = [],
  ): Promise<ForwarderProcess> {
    const [fixture] = compiled(FORWARDER_SOURCES);
    const child = ns.spawn([process.execPath, ...nodeArgs, fixture ?? '', JSON.stringify(options)], { stdin: 'pipe', env });
    await child.waitForOutput(/^ready /m);
    return new ForwarderProcess(child);
  }

  async #command(command: 'counters' | 'rebind' | 'via' | 'routes' | 'fail' | 'rebind-failing' | 'close-failing' | 'advance', argument?: string): Promise<Record<string, unknown>> {
    this.#tag += 1;
    this.process.child.stdin?.write(`${command} ${this.#tag}${argument === undefined ? '' : ` ${argument}`}\n`);
    // Up to the newline: with 'm' alone, `$` also matches the end of a line still arriving.
    const match = await this.process.waitForOutput(new RegExp(`^${command} ${this.#tag} (.*)\n`, 'm'));
    return JSON.parse(match[1] ?? '{}') as Record<string, unknown>;
  }

  counters(): Promise<Record<string, unknown>> {
    return this.#command('counters');
  }

  rebind(): Promise<Record<string, unknown>> {
    return this.#command('rebind');
  }

  /** routesChanged(): links, addresses or routes changed (the agent's call). */
  routesChanged(): Promise<Record<string, unknown>> {
    return this.#command('routes');
  }

  /** setUpstreamLink(route): the link to an upstream provider at our own address. */
  setUpstreamLink(route: { readonly device: string; readonly ifindex: number; readonly source: string } | null): Promise<Record<string, unknown>> {
    return this.#command('via', JSON.stringify(route));
  }

  /**
   * A poll failure of one of its sockets (see the fixture), which nothing outside can cause; or
   * (upstreams-at-send) its upstream sockets destroyed under the send of a query.
   */
  fail(which: 'listening' | 'listening-at-once' | 'none-at-once' | 'upstream' | 'upstream-newest' | 'upstreams-at-once' | 'upstreams-at-send'): Promise<Record<string, unknown>> {
    return this.#command('fail', which);
  }

  /** rebind(), whose new listening UDP socket fails while the TCP listener is bound; `again`: rebind() once more meanwhile. */
  rebindFailing(again: boolean): Promise<Record<string, unknown>> {
    return this.#command('rebind-failing', again ? 'again' : undefined);
  }

  /** Move the forwarder's recovery clock on by `ms` (started with "manualClock": true). */
  advance(ms: number): Promise<Record<string, unknown>> {
    return this.#command('advance', String(ms));
  }

  /** close(), the listening UDP socket failing while it closes; the fixture exits after. */
  closeFailing(): Promise<Record<string, unknown>> {
    return this.#command('close-failing');
  }

  async counter(name: string): Promise<number> {
    return Number((await this.counters())[name]);
  }
}
