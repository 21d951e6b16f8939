// The netns prefix recorded, end to end in namespaces: a `link` given another --netns-prefix (or
// $SPECTRUM_NETNS_PREFIX) than the one the state records for its links up in netns mode is refused,
// where a link of the run has a side in netns mode,
// before anything is done, where it moved the VMs' interfaces into the other prefix's namespaces
// with exit 0; one given none uses the recorded one; a file written before the prefix was recorded
// takes the run's.
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { describeNetns } from '../harness/index.js';
import { LINK_BIN, ROOT, type LinkJson, devices, oneLineError } from './link-fixture.js';
import { linkWorldPerSuite } from './link-world-suite.js';

/** The state store's child process (`hold <state dir>`: takes the lock, prints "locked", never lets go). */
const LOCK_FIXTURE = join(ROOT, 'dist', 'test', 'host', 'fixtures', 'allocate.js');

describeNetns('spectrum-link netns prefix recorded', () => {
  const world = linkWorldPerSuite('linknsp');
  beforeEach(async () => {
    // Each test starts with no link up (unlink takes the far ends with the host ends).
    await world().link(['unlink', 'appvm-lynx', '--forget']);
    // Runs given no netns prefix would make these, were the recorded prefix not used (a
    // regression): none may be there before, so that one there after is this test's own.
    guarded = false;
    const before = await unprefixedNamespaces();
    if (before.length > 0) throw new Error(`namespaces ${before.join(', ')} exist on this host: this test's runs given no netns prefix would use them; remove them first`);
    guarded = true;
  });
  afterEach(async () => {
    // Only where none was there before (beforeEach): those there are not this test's.
    if (!guarded) return;
    // The host's namespaces are no test's to leave: removed, and the test failed.
    const made = await unprefixedNamespaces();
    for (const name of made) await world().host.exec(['ip', 'netns', 'delete', name], { enter: 'nsenter', allowFailure: true });
    expect(made, 'namespaces made without the recorded netns prefix').toEqual([]);
  });

  /** Whether beforeEach found none of unprefixedNamespaces there. */
  let guarded = false;
  /** The world's VMs' namespaces under no prefix (its config's VM names). */
  const UNPREFIXED = new Set(['appvm-lynx', 'appvm-catgirl', 'netvm']);
  const unprefixedNamespaces = async (): Promise<string[]> =>
    (await world().host.exec(['ip', 'netns', 'list'], { enter: 'nsenter' })).stdout
      .split('\n')
      .map((line) => line.split(' ')[0] ?? '')
      .filter((name) => UNPREFIXED.has(name));

  const stateFile = (): string => join(world().stateDir, 'links.json');
  /** spectrum-link run as a shell without the variable would: no --netns-prefix, $SPECTRUM_NETNS_PREFIX unset. */
  const linkWithoutPrefix = (args: readonly string[], env: Readonly<Record<string, string>> = {}) => {
    const base = Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== 'SPECTRUM_NETNS_PREFIX'));
    const [command = '', ...rest] = args;
    const config = command === 'list' ? [] : ['--config-dir', world().configDir];
    return world().host.exec(['node', LINK_BIN, command, ...config, '--state-dir', world().stateDir, ...rest], {
      enter: 'nsenter',
      allowFailure: true,
      timeoutMs: 60_000,
      env: { ...base, ...env },
    });
  };
  const namespaces = async (): Promise<string[]> =>
    (await world().host.exec(['ip', 'netns', 'list'], { enter: 'nsenter' })).stdout
      .split('\n')
      .map((line) => line.split(' ')[0] ?? '')
      .filter((name) => name.startsWith(world().netnsPrefix));
  const linkNetns = async (): Promise<LinkJson> => {
    const made = await world().link(['link', 'appvm-lynx', '--attach', 'netns', '--json']);
    expect(made.code, made.stderr).toBe(0);
    return (JSON.parse(made.stdout) as { links: LinkJson[] }).links[0]!;
  };

  it('records the netns prefix with links up in netns mode, and refuses another given by option or variable (exit 2, nothing done)', async () => {
    const link = await linkNetns();
    const recorded = JSON.parse(await readFile(stateFile(), 'utf8')) as { netnsPrefix?: string };
    expect(recorded.netnsPrefix).toBe(world().netnsPrefix);
    const stateBefore = await readFile(stateFile(), 'utf8');
    const spacesBefore = await namespaces();
    const other = `${world().netnsPrefix}o-`;
    const byOption = await world().link(['link', 'appvm-lynx', '--netns-prefix', other]);
    expect(byOption.code).toBe(2);
    expect(oneLineError(byOption.stderr)).toMatch(
      new RegExp(`^spectrum-link: netns prefix "${other}" \\(from --netns-prefix\\) is not "${world().netnsPrefix}", the one state file \\S+ records for its netns links: nothing done; leave --netns-prefix out \\(README: Netns prefix\\)$`),
    );
    const byVariable = await linkWithoutPrefix(['link', 'appvm-lynx'], { SPECTRUM_NETNS_PREFIX: other });
    expect(byVariable.code).toBe(2);
    expect(oneLineError(byVariable.stderr)).toMatch(/\(from \$SPECTRUM_NETNS_PREFIX\) is not .*: nothing done; unset SPECTRUM_NETNS_PREFIX \(README: Netns prefix\)$/);
    // Nothing done: the state as it was, no namespace of the other prefix, the VM's interfaces where they were.
    expect(await readFile(stateFile(), 'utf8')).toBe(stateBefore);
    expect(await namespaces()).toEqual(spacesBefore);
    expect((await devices(world().vmNetns('appvm-lynx'))).has(link.clientDevice)).toBe(true);
    expect((await devices(world().vmNetns('netvm'))).has(link.providerDevice)).toBe(true);
  });

  it('lets a run whose links have no side in netns mode through with another netns prefix (it is not used), the recorded one kept; one that would use it is refused', async () => {
    const link = await linkNetns();
    type State = { netnsPrefix?: string; links: { client: string }[] };
    const lynxBefore = (JSON.parse(await readFile(stateFile(), 'utf8')) as State).links.find((recorded) => recorded.client === 'appvm-lynx');
    const other = `${world().netnsPrefix}o-`;
    try {
      // appvm-catgirl's link, attached in neither side's namespace: no VM interface in any namespace.
      const none = await world().link(['link', 'appvm-catgirl', '--attach', 'none', '--netns-prefix', other]);
      expect(none.code, none.stderr).toBe(0);
      const after = JSON.parse(await readFile(stateFile(), 'utf8')) as State;
      expect(after.netnsPrefix).toBe(world().netnsPrefix);
      expect(after.links.map((recorded) => recorded.client).sort()).toEqual(['appvm-catgirl', 'appvm-lynx']);
      expect(after.links.find((recorded) => recorded.client === 'appvm-lynx')).toEqual(lynxBefore);
      expect((await namespaces()).filter((name) => name.startsWith(other))).toEqual([]);
      expect((await devices(world().vmNetns('appvm-lynx'))).has(link.clientDevice)).toBe(true);
      // Given it where a side of the run's links is in netns mode, made or kept: refused as before, nothing done.
      const stateNow = await readFile(stateFile(), 'utf8');
      for (const args of [['link', 'appvm-catgirl', '--attach', 'netns'], ['link', 'appvm-lynx'], ['link', 'appvm-lynx', '--keep-going']]) {
        const refused = await world().link([...args, '--netns-prefix', other]);
        expect(refused.code, args.join(' ')).toBe(2);
        expect(oneLineError(refused.stderr)).toMatch(new RegExp(`^spectrum-link: netns prefix "${other}" \\(from --netns-prefix\\) is not "${world().netnsPrefix}", the one state file \\S+ records for its netns links: nothing done`));
      }
      expect(await readFile(stateFile(), 'utf8')).toBe(stateNow);
      expect((await namespaces()).filter((name) => name.startsWith(other))).toEqual([]);
    } finally {
      await world().link(['unlink', 'appvm-catgirl', '--forget']);
    }
  });

  it('list and show given another netns prefix than the recorded one say so in one stderr line naming it, not that link makes the pair anew (link given it is refused)', async () => {
    const link = await linkNetns();
    const other = `${world().netnsPrefix}o-`;
    for (const args of [['list'], ['show', 'appvm-lynx'], ['list', '--json']]) {
      const byVariable = await linkWithoutPrefix(args, { SPECTRUM_NETNS_PREFIX: other });
      expect(byVariable.code, byVariable.stderr).toBe(0);
      expect(byVariable.stderr.trim().split('\n')).toEqual([
        expect.stringMatching(
          new RegExp(
            `^spectrum-link: netns prefix "${other}" \\(from \\$SPECTRUM_NETNS_PREFIX\\) is not the one state file \\S+ records for its links attached in netns mode, "${world().netnsPrefix}": ` +
              `their veths' far ends were looked for in network namespaces ${other}<vm>, not in ${world().netnsPrefix}<vm> where link puts them, and link given it is refused; to see them where they are: unset SPECTRUM_NETNS_PREFIX$`,
          ),
        ),
      ]);
      expect(byVariable.stdout).not.toContain('link makes the pair anew');
      if (args.includes('--json')) continue;
      expect(byVariable.stdout).toContain(
        `  ${link.clientDevice} is a veth whose far end is not ${link.clientDevice} in network namespace ${other}appvm-lynx (looked for under netns prefix "${other}", not the one the state records, "${world().netnsPrefix}")`,
      );
    }
    const byOption = await world().link(['list', '--netns-prefix', other]);
    expect(byOption.code, byOption.stderr).toBe(0);
    expect(oneLineError(byOption.stderr)).toMatch(new RegExp(`\\(from --netns-prefix\\) is not the one .*: leave --netns-prefix out$`));
    // Given the recorded one, or none: no such line, and the link is up.
    for (const listed of [await world().link(['list']), await linkWithoutPrefix(['list'])]) {
      expect(listed.code, listed.stderr).toBe(0);
      expect(listed.stderr).toBe('');
      expect(listed.stdout).toMatch(/ {2}up\n/);
    }
  });

  it('uses the recorded netns prefix where given none, and takes another once no link is up in netns mode (one unlinked keeps it recorded)', async () => {
    const link = await linkNetns();
    const lynxBefore = (await devices(world().vmNetns('appvm-lynx'))).get(link.clientDevice)?.ifindex;
    const plain = await linkWithoutPrefix(['link', 'appvm-lynx']);
    expect(plain.code, plain.stderr).toBe(0);
    // The same far end, in the same namespace (not made anew elsewhere).
    expect((await devices(world().vmNetns('appvm-lynx'))).get(link.clientDevice)?.ifindex).toBe(lynxBefore);
    const listed = await linkWithoutPrefix(['list', '--json']);
    expect(listed.code, listed.stderr).toBe(0);
    const [entry] = JSON.parse(listed.stdout) as Record<string, unknown>[];
    expect(entry).toMatchObject({ vm: 'appvm-lynx', present: true });
    expect(entry).not.toHaveProperty('farEndsElsewhere');
    // Unlinked, no link is up in netns mode: the state keeps the prefix for the link taken down
    // (its next link brings it back there), and a link given another takes that one.
    expect((await world().link(['unlink', 'appvm-lynx'])).code).toBe(0);
    expect(JSON.parse(await readFile(stateFile(), 'utf8'))).toHaveProperty('netnsPrefix', world().netnsPrefix);
    const moved = await world().link(['link', 'appvm-lynx', '--attach', 'netns', '--netns-prefix', `${world().netnsPrefix}o-`]);
    expect(moved.code, moved.stderr).toBe(0);
    expect((JSON.parse(await readFile(stateFile(), 'utf8')) as { netnsPrefix?: string }).netnsPrefix).toBe(`${world().netnsPrefix}o-`);
  });

  it('reads a state written before the netns prefix was recorded, taking the run prefix and recording it', async () => {
    await linkNetns();
    const { netnsPrefix: _dropped, ...older } = JSON.parse(await readFile(stateFile(), 'utf8')) as Record<string, unknown>;
    await writeFile(stateFile(), `${JSON.stringify(older)}\n`);
    const run = await world().link(['link', 'appvm-lynx']);
    expect(run.code, run.stderr).toBe(0);
    // A run that changes nothing writes nothing; the next write records the run's prefix (a change of MTU here).
    const changed = await world().link(['link', 'appvm-lynx', '--mtu', '1400']);
    expect(changed.code, changed.stderr).toBe(0);
    expect((JSON.parse(await readFile(stateFile(), 'utf8')) as { netnsPrefix?: string }).netnsPrefix).toBe(world().netnsPrefix);
  });

  it('refuses a run given none that took the prefix the state recorded when it began (read before the lock), where no link is up in netns mode by then and it would otherwise use another (exit 2, nothing made)', async () => {
    // A first `link --netns-prefix <typo>` has recorded its ids, to be attached in netns mode, and
    // holds the lock (it makes their devices next); a run given none reads that prefix, then waits.
    if (!existsSync(LOCK_FIXTURE)) throw new Error(`${LOCK_FIXTURE} is missing: run \`npm run build\` first`);
    const typo = `${world().netnsPrefix}t-`;
    const lynx = '{"client":"appvm-lynx","provider":"netvm","id":64838,"attached":{"client":"netns","provider":"netns"}}';
    await writeFile(stateFile(), `{\n  "version": 2,\n  "devicePrefix": "sn",\n  "netnsPrefix": "${typo}",\n  "links": [\n    ${lynx}\n  ]\n}\n`);
    const holder = world().host.spawn([process.execPath, LOCK_FIXTURE, 'hold', world().stateDir]);
    let undone: string | undefined;
    try {
      await holder.waitForOutput(/locked/);
      const base = Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== 'SPECTRUM_NETNS_PREFIX'));
      const run = world().host.spawn(['node', LINK_BIN, 'link', 'appvm-catgirl', '--attach', 'netns', '--config-dir', world().configDir, '--state-dir', world().stateDir, '--lock-wait', '60'], { enter: 'nsenter', env: base });
      // It waits for the lock (says so once it has waited a while), having read the state.
      for (let waited = 0; !run.stderr.includes('to let go of the state lock'); waited += 50) {
        if (run.exit !== undefined || waited > 20_000) throw new Error(`link did not wait for the lock: ${run.stderr}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      // That first run fails and is undone whole: the state as it was before it, no link.
      undone = '{\n  "version": 2,\n  "devicePrefix": "sn",\n  "links": []\n}\n';
      await writeFile(stateFile(), undone);
      await holder.kill('SIGKILL');
      const exit = await run.wait();
      await run.waitClosed();
      const line = run.stderr.split('\n').filter((text) => text !== '' && !text.includes('to let go of the state lock')).join('\n');
      expect({ code: exit.code, line }).toEqual({
        code: 2,
        line: expect.stringMatching(new RegExp(`^spectrum-link: netns prefix "${typo}" \\(recorded when this run began\\) is no longer recorded in state file .*: nothing done; run this again, which uses "" \\(README: Netns prefix\\)$`)),
      });
    } finally {
      if (holder.exit === undefined) await holder.kill('SIGKILL');
    }
    // Nothing made (no namespace of the typo's, none of its VMs' interfaces), nothing written.
    expect((await namespaces()).filter((name) => name.startsWith(typo))).toEqual([]);
    expect(await readFile(stateFile(), 'utf8')).toBe(undone);
  });
});
