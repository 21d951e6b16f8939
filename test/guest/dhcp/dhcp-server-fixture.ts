import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { DhcpLink, LeaseInfo } from '../../../guest/dhcp/dhcp-server.js';
import type { Netns, NetnsProcess } from '../../harness/index.js';

/** The compiled server fixture; tests never build it themselves. */
// From the sources (vitest) the compiled fixtures are under dist/; compiled (the bench), beside us.
const FIXTURES = import.meta.url.includes('/dist/test/') ? './fixtures/' : '../../../dist/test/guest/dhcp/fixtures/';
export const SERVER_FIXTURE = fileURLToPath(new URL(`${FIXTURES}dhcp-server.js`, import.meta.url));
export const PROBE_FIXTURE = fileURLToPath(new URL(`${FIXTURES}dhcp-probe.js`, import.meta.url));
export const READER_FIXTURE = fileURLToPath(new URL(`${FIXTURES}link-socket-reader.js`, import.meta.url));

export function requireBuild(): void {
  for (const file of [SERVER_FIXTURE, PROBE_FIXTURE, READER_FIXTURE]) {
    if (!existsSync(file)) throw new Error(`${file} is missing: run npm run build`);
  }
}

export interface ServerStats {
  readonly leases: LeaseInfo[];
  readonly counters: Record<string, number>;
  readonly maxRssKiB: number;
}

/** The DHCP server fixture running in the provider namespace, driven over stdin. */
export class ServerFixture {
  #answers = 0;
  private constructor(readonly process: NetnsProcess) {}

  static async start(provider: Netns, links: readonly DhcpLink[], leaseSeconds?: number, nodeFlags: readonly string[] = []): Promise<ServerFixture> {
    requireBuild();
    const config = JSON.stringify({ links, ...(leaseSeconds !== undefined && { leaseSeconds }) });
    const child = provider.spawn([process.execPath, ...nodeFlags, SERVER_FIXTURE, config], { enter: 'nsenter', stdin: 'pipe' });
    await child.waitForOutput(/^ready$/m, 30_000);
    return new ServerFixture(child);
  }

  async #ask(command: string): Promise<string> {
    const before = this.process.stdout.split('\n').length;
    this.process.child.stdin?.write(`${command}\n`);
    for (let waited = 0; waited < 10_000; waited += 10) {
      const lines = this.process.stdout.split('\n');
      if (lines.length > before) return lines[before - 1] ?? '';
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    throw new Error(`DHCP fixture did not answer ${command}; stderr: ${this.process.stderr}`);
  }

  async stats(): Promise<ServerStats> {
    this.#answers += 1;
    return JSON.parse(await this.#ask('stats')) as ServerStats;
  }

  async setLinks(links: readonly DhcpLink[]): Promise<void> {
    await this.#ask(`links ${JSON.stringify(links)}`);
  }

  async stop(): Promise<void> {
    this.process.child.stdin?.write('quit\n');
    await Promise.race([this.process.wait(), new Promise((resolve) => setTimeout(resolve, 3000))]);
    await this.process.kill('SIGKILL', 0);
  }
}
