// spectrum-netd run's bad option values, through the built bin as an operator runs it: each is
// refused in one line (exit 2) before anything is made or asked. Were a check lost, the agent would
// start (firewall, conntrack sweep, reaper and all): so it runs in a namespace of its own, never in
// the test runner's. (Apart from commands.test.ts, which emits signals in its own process.)
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ControlServer } from '../../../guest/netd/control-socket.js';
import { EXIT } from '../../../shared/cli/run-cli.js';
import { type Harness, type Netns, createHarness, describeNetns } from '../../harness/index.js';

const CLI = fileURLToPath(new URL('../../../dist/guest/cli.js', import.meta.url));

describeNetns('spectrum-netd run: a bad option value changes nothing on the system', () => {
  let dir = '';
  let harness: Harness;
  let ns: Netns;
  beforeAll(async () => {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
    dir = mkdtempSync(join(tmpdir(), 'spectrum-netd-options-'));
    harness = createHarness('netdopts');
    ns = await harness.namespace('agent');
  });
  afterAll(async () => {
    await harness?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  async function netd(args: readonly string[]): Promise<{ code: number | null; stderr: string }> {
    const { code, stderr } = await ns.exec([process.execPath, CLI, ...args], { enter: 'nsenter', allowFailure: true, timeoutMs: 15_000 });
    return { code, stderr };
  }

  const badValues = [
    ['--lease-seconds', 'abc'],
    ['--conntrack-reap-threshold', 'abc'],
    ['--client-flow-limit', 'abc'],
    ['--client-new-flow-rate', 'abc'],
    ['--firewall-audit', 'abc'],
    ['--dns-upstream-timeout', 'abc'],
    ['--dns-query-timeout', 'abc'],
  ] as const;

  // Were a value checked only once the agent starts, the socket's folder would be made first (and
  // some, such as --firewall-audit, not checked at all: the agent would run, in `ns`).
  it.each(badValues)('refuses %s %j before making the control socket\'s folder: one line, exit 2', async (option, value) => {
    const folder = join(dir, `never-${option.slice(2)}`);
    const { code, stderr } = await netd(['run', '--control-socket', join(folder, 'control.sock'), option, value]);
    expect(stderr).toMatch(new RegExp(`^spectrum-netd: ${option} "${value}" is not valid: give .+\n$`));
    expect(code).toBe(EXIT.usage);
    expect(existsSync(folder)).toBe(false);
  });

  // Each within its range, but a query would be given up on before its first upstream's time is up.
  it('refuses a --dns-query-timeout below --dns-upstream-timeout before anything is made: one line, exit 2', async () => {
    const folder = join(dir, 'never-dns-times');
    const { code, stderr } = await netd(['run', '--control-socket', join(folder, 'control.sock'), '--dns-upstream-timeout', '2000', '--dns-query-timeout', '1000']);
    expect(stderr).toBe('spectrum-netd: --dns-query-timeout "1000" is not valid: give milliseconds from --dns-upstream-timeout (2000) to 60000\n');
    expect(code).toBe(EXIT.usage);
    expect(existsSync(folder)).toBe(false);
  });

  // Well-formed addresses at which no resolver can be: they were taken, and the agent started.
  const giveIt = "give the resolver's own address";
  it.each([
    ['0.0.0.0', `the unspecified address names no server: ${giveIt} (127.0.0.1 or ::1 for one on this VM)`],
    ['[::]:53', `the unspecified address names no server: ${giveIt} (127.0.0.1 or ::1 for one on this VM)`],
    ['255.255.255.255', `the broadcast address names no one server: ${giveIt}`],
    ['224.0.0.251:5353', `a multicast address (224.0.0.0/4) names no one server: ${giveIt}`],
    // A zone on an IPv4-mapped address picks no link: it was taken and dropped without a word.
    ['[::ffff:192.0.2.54%eth1]', 'an IPv4-mapped address is asked over IPv4, where a zone (%eth1) picks no link (the routes do): give 192.0.2.54'],
    // IPv4-compatible addresses and the rest of 0.0.0.0/8: taken, and asked where no resolver is.
    ['::255.255.255.255', `an IPv4-compatible address (::/96, deprecated) is asked over IPv6, as any IPv6 address, where no resolver is: ${giveIt}`],
    ['[::192.0.2.54]:5353', 'an IPv4-compatible address (::/96, deprecated) is asked over IPv6, as any IPv6 address, where no resolver is: give 192.0.2.54:5353 for the IPv4 address'],
    ['0.0.0.1', `an address in 0.0.0.0/8 ("this network") is no destination: ${giveIt}`],
    // A zone on an address that is not link-local: Linux ignores it.
    ['[2001:db8::53%2]:53', 'a zone (%2) picks a link only for a link-local address (fe80::/10); Linux ignores it on any other, sending where the routes say: give 2001:db8::53'],
  ])('refuses --dns-upstream %s before anything is made: one line saying why, exit 2, no stack trace', async (value, reason) => {
    const folder = join(dir, 'never-dns-upstream');
    const { code, stderr } = await netd(['run', '--control-socket', join(folder, 'control.sock'), '--dns-upstream', '192.0.2.53', '--dns-upstream', value]);
    expect(stderr).toBe(`spectrum-netd: --dns-upstream ${JSON.stringify(value)} is not valid: ${reason}\n`);
    expect(code).toBe(EXIT.usage);
    expect(existsSync(folder)).toBe(false);
  });

  // With another agent on the socket the user was told about it, not about the value; and with
  // --no-firewall the flow options were never checked at all. (Were the check lost, the agent here
  // stops at the one already answering, before anything else.)
  it.each(badValues.flatMap(([option, value]) => [[option, value, []], [option, value, ['--no-firewall']]] as const))(
    'refuses %s %j (with %j) even while another agent answers on the control socket',
    async (option, value, extra) => {
      const socket = join(dir, 'answering.sock');
      const other = await ControlServer.listen(socket, () => Promise.resolve({ error: 'not this one' }));
      try {
        const { code, stderr } = await netd(['run', '--control-socket', socket, ...extra, option, value]);
        expect(stderr).toMatch(new RegExp(`^spectrum-netd: ${option} "${value}" is not valid: give .+\n$`));
        expect(code).toBe(EXIT.usage);
      } finally {
        other.close();
      }
    },
  );
});
