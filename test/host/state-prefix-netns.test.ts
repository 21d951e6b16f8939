// The device prefix a state dir's links carry, as the built spectrum-link keeps it: the state
// records it, every command given none uses it (unlink takes down the links' own devices, not
// those of another state dir's link of the same pair under the default prefix), and one given
// another (--device-prefix, $SPECTRUM_DEVICE_PREFIX) is refused before anything is done: exit 2,
// one line naming both prefixes, nothing deleted, the state file byte for byte as it was. A state
// dir that claims no prefix (no links, no prefix recorded) does not take over devices named as
// links with the run's: its `link` is refused, nothing made, where the namespace has any (another
// state dir's live links, most likely: a --state-dir mistyped); one that claims it converges on
// them (its own leftovers).
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Harness, createHarness, describeNetns, jsonErrorOf, splitJsonError, trackTempDir } from '../harness/index.js';
import { DEFAULT_DEVICE_PREFIX, devicePrefix, linkDeviceNames } from '../../host/device-names.js';
import { preferredId } from '../../host/link-state.js';
import { vmName } from '../../host/vm-name.js';
import { type DeviceInfo, type LinkWorld, devices, makeConfigDir, makeLinkWorld, oneLineError, runPrinted } from './link-fixture.js';

/** appvm-lynx -> netvm's devices (its preferred id: a state dir's first link of it) under `prefix`. */
const lynxDevices = (prefix: string): string[] => Object.values(linkDeviceNames(devicePrefix(prefix), preferredId({ client: vmName('appvm-lynx'), provider: vmName('netvm') })));
const LYNX_ID = preferredId({ client: vmName('appvm-lynx'), provider: vmName('netvm') });
/** appvm-catgirl -> netvm's devices (its preferred id) under `prefix`. */
const catgirlDevices = (prefix: string): string[] => Object.values(linkDeviceNames(devicePrefix(prefix), preferredId({ client: vmName('appvm-catgirl'), provider: vmName('netvm') })));
/** No $SPECTRUM_DEVICE_PREFIX (an empty one is none), whatever the test's environment has. */
const NO_PREFIX_VARIABLE = { SPECTRUM_DEVICE_PREFIX: '' };
const escaped = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
/**
 * The empty state the README says to write where a state is really lost (its Unrecorded devices
 * section, where the refusals send the operator): what the refusals leave out, the README holds.
 */
const readmeLostState = async (): Promise<string> => {
  const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
  const state = /write\s+an empty state there first, `(\{"version":2,"devicePrefix":"sn","links":\[\]\})`/.exec(readme)?.[1];
  expect(state, 'README: the empty state to write where the state is lost').toBeDefined();
  expect(readme).toMatch(/^#### Unrecorded devices$/m);
  return state ?? '';
};

describeNetns('spectrum-link: the device prefix a state records', () => {
  let harness: Harness;
  let world: LinkWorld;
  /** A state dir of the test's own, beside the world's. */
  let stateDir: string;
  beforeEach(async () => {
    harness = createHarness('stprefix');
    world = await makeLinkWorld(harness);
    stateDir = await mkdtemp(join(tmpdir(), 'spectrum-state-prefix-'));
    trackTempDir(stateDir);
  });
  afterEach(async () => {
    await rm(stateDir, { recursive: true, force: true });
    await world?.dispose();
    await harness?.cleanup();
  });

  const stateFile = (): string => join(stateDir, 'links.json');
  /** Which of `names` exist in the world's host namespace. */
  const present = async (names: readonly string[]): Promise<string[]> => {
    const host = await devices(world.host);
    return names.filter((name) => host.has(name));
  };
  /** spectrum-link in the world, on the test's state dir, without $SPECTRUM_DEVICE_PREFIX unless `env` sets it. */
  const run = (args: readonly string[], env: Record<string, string> = {}) => world.link([...args, '--state-dir', stateDir], { ...NO_PREFIX_VARIABLE, ...env });
  /** Link appvm-lynx by hand (taps) with device prefix zz, recorded in the test's state dir. */
  const linkWithZz = async (): Promise<void> => {
    const linked = await run(['link', 'appvm-lynx', '--attach', 'none', '--device-prefix', 'zz']);
    expect(linked.code, linked.stderr).toBe(0);
    expect(await present(lynxDevices('zz'))).toEqual(lynxDevices('zz'));
    expect(await readFile(stateFile(), 'utf8')).toContain('"devicePrefix": "zz"');
  };
  /** The refusal of `given` (from `origin`) for the test's state dir, which records zz. */
  const refusal = (given: string, origin: string): RegExp =>
    new RegExp(
      `^spectrum-link: device prefix ${given} \\(${escaped(origin)}\\) is not zz, the one state file ${escaped(stateFile())} records: nothing done; .* \\(README: Device prefix\\)$`,
    );

  it('unlink given another prefix than the state records is refused (exit 2, one line), nothing deleted, the state byte for byte as it was', async () => {
    await linkWithZz();
    const before = await readFile(stateFile(), 'utf8');
    for (const [args, env, origin] of [
      [['--device-prefix', 'sn'], {}, 'from --device-prefix'],
      [['--forget', '--device-prefix', 'sn'], {}, 'from --device-prefix'],
      [['--force'], { SPECTRUM_DEVICE_PREFIX: 'sn' }, 'from $SPECTRUM_DEVICE_PREFIX'],
    ] as const) {
      const result = await run(['unlink', 'appvm-lynx', ...args], env);
      expect([result.code, result.stdout], result.stderr).toEqual([2, '']);
      const line = oneLineError(result.stderr);
      expect(line).toMatch(refusal('sn', origin));
      expect(line.length - stateFile().length).toBeLessThanOrEqual(200);
      expect(line).toContain(origin.startsWith('from --') ? 'nothing done; leave --device-prefix out (' : 'unset SPECTRUM_DEVICE_PREFIX');
      expect(await present(lynxDevices('zz'))).toEqual(lynxDevices('zz'));
      expect(await readFile(stateFile(), 'utf8')).toBe(before);
    }
  });

  it('the refusal of --device-prefix where $SPECTRUM_DEVICE_PREFIX gives another prefix too says to unset that as well: with the option left out alone, the variable is refused', async () => {
    await linkWithZz();
    const before = await readFile(stateFile(), 'utf8');
    const refused = await run(['unlink', 'appvm-lynx', '--device-prefix', 'yy'], { SPECTRUM_DEVICE_PREFIX: 'sn' });
    expect([refused.code, refused.stdout]).toEqual([2, '']);
    const line = oneLineError(refused.stderr);
    expect(line).toMatch(refusal('yy', 'from --device-prefix'));
    expect(line).toContain('nothing done; leave --device-prefix out and unset SPECTRUM_DEVICE_PREFIX (');
    // Why: the option left out alone, the variable's prefix is refused; with it unset too, the recorded one is used.
    const alone = await run(['unlink', 'appvm-lynx'], { SPECTRUM_DEVICE_PREFIX: 'sn' });
    expect([alone.code, alone.stdout]).toEqual([2, '']);
    expect(oneLineError(alone.stderr)).toMatch(refusal('sn', 'from $SPECTRUM_DEVICE_PREFIX'));
    expect(await readFile(stateFile(), 'utf8')).toBe(before);
    const unlinked = await run(['unlink', 'appvm-lynx']);
    expect([unlinked.code, unlinked.stderr]).toEqual([0, '']);
    expect(await present(lynxDevices('zz'))).toEqual([]);
    // The variable giving the recorded prefix: leaving the option out is enough, as the line says.
    const same = await run(['unlink', 'appvm-lynx', '--device-prefix', 'yy'], { SPECTRUM_DEVICE_PREFIX: 'zz' });
    expect([same.code, same.stdout]).toEqual([2, '']);
    expect(oneLineError(same.stderr)).toContain('nothing done; leave --device-prefix out (');
  });

  it("unlink given no prefix takes down the links' own devices, under the prefix recorded, and leaves another state dir's link of the same pair under the default prefix", async () => {
    await linkWithZz();
    // The same pair linked in the world's own state dir, with the default prefix: the same id, other devices.
    const other = await world.link(['link', 'appvm-lynx', '--attach', 'none'], NO_PREFIX_VARIABLE);
    expect(other.code, other.stderr).toBe(0);
    expect(await present(lynxDevices(DEFAULT_DEVICE_PREFIX))).toEqual(lynxDevices(DEFAULT_DEVICE_PREFIX));
    const result = await run(['unlink', 'appvm-lynx']);
    expect([result.code, result.stderr]).toEqual([0, '']);
    expect(result.stdout).toBe(`unlinked appvm-lynx -> netvm (id ${LYNX_ID}, kept)\n`);
    expect(await present(lynxDevices('zz'))).toEqual([]);
    expect(await present(lynxDevices(DEFAULT_DEVICE_PREFIX))).toEqual(lynxDevices(DEFAULT_DEVICE_PREFIX));
    // The record is down (its modes kept for the next link), its id and the prefix kept.
    expect(JSON.parse(await readFile(stateFile(), 'utf8'))).toEqual({ version: 3, devicePrefix: 'zz', links: [{ client: 'appvm-lynx', provider: 'netvm', id: LYNX_ID, unlinked: { client: 'none', provider: 'none' } }] });
    // The same with --forget and the prefix given as recorded, from the variable.
    await linkWithZz();
    const forgotten = await run(['unlink', 'appvm-lynx', '--forget'], { SPECTRUM_DEVICE_PREFIX: 'zz' });
    expect([forgotten.code, forgotten.stderr, forgotten.stdout]).toEqual([0, '', `unlinked appvm-lynx -> netvm (id ${LYNX_ID}, forgotten)\n`]);
    expect(await present(lynxDevices('zz'))).toEqual([]);
    expect(await present(lynxDevices(DEFAULT_DEVICE_PREFIX))).toEqual(lynxDevices(DEFAULT_DEVICE_PREFIX));
  });

  it('list and show given no prefix see the links as up under the prefix recorded, and refuse another', async () => {
    await linkWithZz();
    const before = await readFile(stateFile(), 'utf8');
    for (const command of [['list'], ['show', 'appvm-lynx']]) {
      const listed = await run([...command, '--json']);
      expect([listed.code, listed.stderr]).toEqual([0, '']);
      expect(JSON.parse(listed.stdout)).toEqual([
        expect.objectContaining({ vm: 'appvm-lynx', provider: 'netvm', bridge: `zzb${LYNX_ID}`, clientAttach: 'none', providerAttach: 'none', attachRecorded: true, present: true, linked: true }),
      ]);
      const text = await run(command);
      expect(text.stdout.split('\n')[0]).toMatch(/ {2}up$/);
      for (const [args, env, origin] of [
        [['--device-prefix', 'sn'], {}, 'from --device-prefix'],
        [[], { SPECTRUM_DEVICE_PREFIX: 'sn' }, 'from $SPECTRUM_DEVICE_PREFIX'],
      ] as const) {
        const refused = await run([...command, ...args], env);
        expect([refused.code, refused.stdout]).toEqual([2, '']);
        expect(oneLineError(refused.stderr)).toMatch(refusal('sn', origin));
      }
    }
    expect(await readFile(stateFile(), 'utf8')).toBe(before);
  });

  it("gc given no prefix collects under the prefix recorded (not another state dir's devices), and refuses another, deleting nothing", async () => {
    await linkWithZz();
    // An orphan of this state dir's prefix, and a device of the default prefix (another state dir's, say).
    const orphan = 'zzb7';
    const elsewhere = `${DEFAULT_DEVICE_PREFIX}b7`;
    for (const name of [orphan, elsewhere]) await world.host.ip(['link', 'add', name, 'type', 'bridge']);
    const before = await readFile(stateFile(), 'utf8');
    const refused = await run(['gc', '--device-prefix', DEFAULT_DEVICE_PREFIX]);
    expect([refused.code, refused.stdout]).toEqual([2, '']);
    expect(oneLineError(refused.stderr)).toMatch(refusal(DEFAULT_DEVICE_PREFIX, 'from --device-prefix'));
    expect(await present([orphan, elsewhere, ...lynxDevices('zz')])).toEqual([orphan, elsewhere, ...lynxDevices('zz')]);
    const collected = await run(['gc', '--json']);
    expect([collected.code, collected.stderr]).toEqual([0, '']);
    expect(JSON.parse(collected.stdout)).toEqual({ removed: [orphan] });
    expect(await present([orphan, elsewhere, ...lynxDevices('zz')])).toEqual([elsewhere, ...lynxDevices('zz')]);
    expect(await readFile(stateFile(), 'utf8')).toBe(before);
  });

  it('link given no prefix converges under the prefix recorded; given another it is refused with nothing made (--keep-going too)', async () => {
    await linkWithZz();
    const before = await readFile(stateFile(), 'utf8');
    for (const extra of [[], ['--keep-going']]) {
      const refused = await run(['link', 'appvm-lynx', '--attach', 'none', ...extra], { SPECTRUM_DEVICE_PREFIX: 'sn' });
      expect([refused.code, refused.stdout]).toEqual([2, '']);
      expect(oneLineError(refused.stderr)).toMatch(refusal('sn', 'from $SPECTRUM_DEVICE_PREFIX'));
      expect(await present(lynxDevices(DEFAULT_DEVICE_PREFIX))).toEqual([]);
      expect(await readFile(stateFile(), 'utf8')).toBe(before);
    }
    // A device of the link gone: link again, given no prefix, makes it anew under the recorded one.
    await world.host.ip(['link', 'del', `zzc${LYNX_ID}`]);
    const again = await run(['link', 'appvm-lynx', '--json']);
    expect([again.code, again.stderr]).toEqual([0, '']);
    expect(JSON.parse(again.stdout)).toEqual({ vm: 'appvm-lynx', links: [expect.objectContaining({ bridge: `zzb${LYNX_ID}`, clientDevice: `zzc${LYNX_ID}`, providerDevice: `zzp${LYNX_ID}` })] });
    expect(await present(lynxDevices('zz'))).toEqual(lynxDevices('zz'));
    expect(await present(lynxDevices(DEFAULT_DEVICE_PREFIX))).toEqual([]);
  });

  it('the commands a line prints carry the prefix recorded, and work as printed from another shell', async () => {
    // A config dir of the test's, whose appvm-lynx goes once linked: `link --all` then offers the unlink that releases its links.
    const configDir = await makeConfigDir();
    try {
      const linked = await run(['link', 'appvm-lynx', '--config-dir', configDir, '--attach', 'none', '--device-prefix', 'zz']);
      expect(linked.code, linked.stderr).toBe(0);
      await rm(join(configDir, 'appvm-lynx'), { recursive: true });
      const all = await run(['link', '--all', '--config-dir', configDir]);
      expect(all.code, all.stderr).toBe(0);
      // The warning: pino's JSON line (stderr is no terminal), its message the line.
      const warning = all.stderr.split('\n').find((line) => line.includes('release it with'));
      const offered = /release it with: (.*)$/.exec((JSON.parse(warning ?? '{}') as { msg?: string }).msg ?? '')?.[1];
      expect(offered).toBe(`spectrum-link unlink appvm-lynx --forget --state-dir ${stateDir} --device-prefix zz`);
      // Run from a shell whose $SPECTRUM_DEVICE_PREFIX leads elsewhere: the line carries its own.
      const released = await runPrinted(world.host, offered ?? '');
      expect([released.code, released.stderr]).toEqual([0, '']);
      expect(await present(lynxDevices('zz'))).toEqual([]);
    } finally {
      await rm(configDir, { recursive: true, force: true });
    }
  });

  it('a state whose links are all forgotten keeps its prefix: given none, the next link and gc use it; given another, they are refused, nothing made or deleted', async () => {
    await linkWithZz();
    const forgotten = await run(['unlink', 'appvm-lynx', '--forget']);
    expect([forgotten.code, forgotten.stderr]).toEqual([0, '']);
    const emptied = await readFile(stateFile(), 'utf8');
    expect(JSON.parse(emptied)).toEqual({ version: 2, devicePrefix: 'zz', links: [] });
    // Devices of the default prefix (another state dir's, say): a gc or link given it would delete or take them.
    const elsewhere = lynxDevices(DEFAULT_DEVICE_PREFIX);
    for (const name of elsewhere) await world.host.ip(['link', 'add', name, 'type', 'bridge']);
    for (const [args, env, origin] of [
      [['gc', '--device-prefix', DEFAULT_DEVICE_PREFIX], {}, 'from --device-prefix'],
      [['link', 'appvm-lynx', '--attach', 'none'], { SPECTRUM_DEVICE_PREFIX: DEFAULT_DEVICE_PREFIX }, 'from $SPECTRUM_DEVICE_PREFIX'],
      [['link', 'appvm-lynx', '--attach', 'none', '--keep-going', '--device-prefix', DEFAULT_DEVICE_PREFIX], {}, 'from --device-prefix'],
    ] as const) {
      const refused = await run(args, env);
      expect([refused.code, refused.stdout], refused.stderr).toEqual([2, '']);
      expect(oneLineError(refused.stderr)).toMatch(refusal(DEFAULT_DEVICE_PREFIX, origin));
      expect(await present(elsewhere)).toEqual(elsewhere);
      expect(await readFile(stateFile(), 'utf8')).toBe(emptied);
    }
    // Given none: the recorded one. gc deletes an orphan of it, and leaves the default prefix's devices be.
    await world.host.ip(['link', 'add', 'zzb7', 'type', 'bridge']);
    const collected = await run(['gc', '--json']);
    expect([collected.code, collected.stderr]).toEqual([0, '']);
    expect(JSON.parse(collected.stdout)).toEqual({ removed: ['zzb7'] });
    expect(await present(elsewhere)).toEqual(elsewhere);
    const linked = await run(['link', 'appvm-lynx', '--attach', 'none', '--json']);
    expect([linked.code, linked.stderr]).toEqual([0, '']);
    expect(await present(lynxDevices('zz'))).toEqual(lynxDevices('zz'));
    expect(await present(elsewhere)).toEqual(elsewhere);
    expect(JSON.parse(await readFile(stateFile(), 'utf8'))).toEqual(expect.objectContaining({ version: 2, devicePrefix: 'zz' }));
  });

  it('a state file written before the prefix was kept without links (version 2, no links, no prefix) takes the one given, or the default, and records it', async () => {
    await mkdir(stateDir, { recursive: true });
    await writeFile(stateFile(), '{\n  "version": 2,\n  "links": []\n}\n');
    const listed = await run(['list', '--device-prefix', 'yy']);
    expect([listed.code, listed.stderr]).toEqual([0, '']);
    const linked = await run(['link', 'appvm-lynx', '--attach', 'none', '--device-prefix', 'yy']);
    expect([linked.code, linked.stderr]).toEqual([0, '']);
    expect(await present(lynxDevices('yy'))).toEqual(lynxDevices('yy'));
    expect(JSON.parse(await readFile(stateFile(), 'utf8'))).toEqual(expect.objectContaining({ version: 2, devicePrefix: 'yy' }));
  });

  it('a state file written before the prefix was recorded is read with the prefix given (or the default), as before, and records it at its next write', async () => {
    await linkWithZz();
    // As an older spectrum-link wrote it: version 1, no prefix.
    const old = (await readFile(stateFile(), 'utf8')).replace('"version": 2,\n  "devicePrefix": "zz",', '"version": 1,');
    expect(old).toMatch(/^\{\n {2}"version": 1,\n {2}"links": \[/);
    await writeFile(stateFile(), old);
    // Given none, the default: found down (its devices are not under sn), nothing written.
    const listed = await run(['list', '--json']);
    expect([listed.code, listed.stderr]).toEqual([0, '']);
    expect(JSON.parse(listed.stdout)).toEqual([expect.objectContaining({ bridge: `snb${LYNX_ID}`, present: false })]);
    expect(await readFile(stateFile(), 'utf8')).toBe(old);
    // Given the one it was linked with: taken down, and recorded.
    const result = await run(['unlink', 'appvm-lynx', '--device-prefix', 'zz']);
    expect([result.code, result.stderr]).toEqual([0, '']);
    expect(await present(lynxDevices('zz'))).toEqual([]);
    expect(JSON.parse(await readFile(stateFile(), 'utf8'))).toEqual({ version: 3, devicePrefix: 'zz', links: [{ client: 'appvm-lynx', provider: 'netvm', id: LYNX_ID, unlinked: { client: 'none', provider: 'none' } }] });
    // From then on, given none, that one.
    const relinked = await run(['link', 'appvm-lynx', '--json']);
    expect([relinked.code, relinked.stderr]).toEqual([0, '']);
    expect(await present(lynxDevices('zz'))).toEqual(lynxDevices('zz'));
  });

  describe('a state dir that claims no prefix, where devices named as links with it exist', () => {
    /** What a device is as the kernel has it (which device, its MTU, address, master, state): unchanged means not taken over. */
    const shape = ({ ifindex, mtu, address, master, flags, linkinfo }: DeviceInfo) => ({ ifindex, mtu, address, master, up: flags.includes('UP'), kind: linkinfo?.info_kind });
    const shapes = async (names: readonly string[]) => {
      const host = await devices(world.host);
      return names.map((name) => {
        const device = host.get(name);
        return device === undefined ? undefined : shape(device);
      });
    };
    /** The refusal's line for the test's state dir, `count` devices of the default prefix (from `origin`). */
    const claimRefusal = (dir: string, count: number, origin = 'the default'): RegExp =>
      new RegExp(
        `^spectrum-link: state dir ${escaped(dir)} \\(from --state-dir\\) records no link, yet ${count} link devices ` +
          `with prefix sn \\(${escaped(origin)}\\) are here: .*: nothing made; check --state-dir \\(README: Unrecorded devices\\)$`,
      );
    /** appvm-lynx linked in the world's own state dir, under the default prefix: another state dir's live link. */
    const linkInWorld = async (): Promise<void> => {
      const linked = await world.link(['link', 'appvm-lynx', '--attach', 'none'], NO_PREFIX_VARIABLE);
      expect(linked.code, linked.stderr).toBe(0);
    };

    it("link is refused (exit 2, one line), making nothing: not another state dir's live link's devices taken over (MTU), nor a state dir or file made", async () => {
      await linkInWorld();
      const theirs = lynxDevices(DEFAULT_DEVICE_PREFIX);
      const before = await shapes(theirs);
      expect(before.every((device) => device !== undefined)).toBe(true);
      const missing = join(stateDir, 'mistyped');
      // The same pair (its devices, under the same id, would be reconfigured: another MTU) and another (its own id): either, in a
      // state dir that does not exist, one that holds no state file, and a state file with no link and no prefix (v1, or v2 as
      // written before the prefix was kept), with --keep-going and --all too.
      const cases: [string, readonly string[], string | undefined][] = [
        [missing, ['link', 'appvm-lynx', '--attach', 'none', '--mtu', '1400'], undefined],
        [missing, ['link', 'appvm-catgirl', '--attach', 'none', '--keep-going'], undefined],
        [missing, ['link', '--all', '--attach', 'none'], undefined],
        [missing, ['link', '--all', '--attach', 'none', '--keep-going'], undefined],
        [stateDir, ['link', 'appvm-lynx', '--attach', 'none', '--mtu', '1400'], undefined],
        [stateDir, ['link', 'appvm-lynx', '--attach', 'none', '--mtu', '1400', '--keep-going'], undefined],
        [stateDir, ['link', 'appvm-lynx', '--attach', 'none', '--mtu', '1400'], '{"version":1,"links":[]}'],
        [stateDir, ['link', 'appvm-catgirl', '--attach', 'none'], '{\n  "version": 2,\n  "links": []\n}\n'],
      ];
      for (const [dir, args, file] of cases) {
        if (file !== undefined) await writeFile(join(dir, 'links.json'), file);
        const refused = await world.link([...args, '--state-dir', dir], NO_PREFIX_VARIABLE);
        expect([refused.code, refused.stdout], `${args.join(' ')}: ${refused.stderr}`).toEqual([2, '']);
        expect(oneLineError(refused.stderr)).toMatch(claimRefusal(dir, 3));
        expect(oneLineError(refused.stderr)).toContain(`: ${theirs.join(' ')}: nothing made`);
        // What is wrong and what to check, in about 200 characters besides the state dir's path (the README says the rest).
        expect(oneLineError(refused.stderr).length - dir.length).toBeLessThanOrEqual(210);
        expect(await shapes(theirs)).toEqual(before);
        expect(await present(catgirlDevices(DEFAULT_DEVICE_PREFIX))).toEqual([]);
        if (dir === missing) await expect(readFile(join(missing, 'links.json'))).rejects.toMatchObject({ code: 'ENOENT' });
        else if (file === undefined) await expect(readFile(stateFile())).rejects.toMatchObject({ code: 'ENOENT' });
        else expect(await readFile(stateFile(), 'utf8')).toBe(file);
      }
      await expect(readFile(missing)).rejects.toMatchObject({ code: 'ENOENT' });
      // Another prefix is none of theirs: linked, theirs left as they are.
      await rm(stateFile(), { force: true });
      const elsewhere = await run(['link', 'appvm-lynx', '--attach', 'none', '--mtu', '1400', '--device-prefix', 'zz']);
      expect([elsewhere.code, elsewhere.stderr]).toEqual([0, '']);
      expect(await present(lynxDevices('zz'))).toEqual(lynxDevices('zz'));
      expect(await shapes(theirs)).toEqual(before);
    });

    it("gc of a state file that records no link and no prefix (v1, or v2 as written by hand) is refused (exit 2, one line), deleting none of another state dir's live link's devices; with the file the line gives written, it deletes them", async () => {
      await linkInWorld();
      const theirs = lynxDevices(DEFAULT_DEVICE_PREFIX);
      const before = await shapes(theirs);
      for (const file of ['{"version":1,"links":[]}', '{\n  "version": 2,\n  "links": []\n}\n']) {
        await writeFile(stateFile(), file);
        for (const args of [['gc'], ['gc', '--json']]) {
          const refused = await run(args);
          // stdout: nothing, but with --json the error object.
          const error = args.includes('--json') ? jsonErrorOf(oneLineError(refused.stderr), 'unrecorded-devices', 2) : undefined;
          expect([refused.code, splitJsonError(refused.stdout)], `${args.join(' ')}: ${refused.stderr}`).toEqual([2, { printed: '', error }]);
          expect(oneLineError(refused.stderr)).toMatch(
            new RegExp(
              `^spectrum-link: gc: state dir ${escaped(stateDir)} \\(from --state-dir\\) records no link, yet 3 link devices ` +
                `with prefix sn \\(the default\\) are here: ${theirs.join(' ')}: nothing deleted; check --state-dir \\(README: Unrecorded devices\\)$`,
            ),
          );
          expect(await shapes(theirs)).toEqual(before);
          expect(await readFile(stateFile(), 'utf8')).toBe(file);
        }
      }
      // The state the README gives (the state really lost): they go.
      await writeFile(stateFile(), await readmeLostState());
      const collected = await run(['gc', '--json']);
      expect([collected.code, collected.stderr]).toEqual([0, '']);
      expect(JSON.parse(collected.stdout)).toEqual({ removed: theirs });
      expect(await present(theirs)).toEqual([]);
    });

    it('gc of a state file that records no link and no prefix, with no device named as a link with it there, has nothing to collect', async () => {
      await world.host.ip(['link', 'add', 'zzb4', 'type', 'bridge']);
      await writeFile(stateFile(), '{"version":1,"links":[]}');
      const collected = await run(['gc']);
      expect([collected.code, collected.stdout, collected.stderr]).toEqual([0, 'nothing to collect\n', '']);
      expect(await present(['zzb4'])).toEqual(['zzb4']);
    });

    it('the line names the first three devices and how many more, of every kind under those names; devices of no link name (another prefix, no id) do not count', async () => {
      for (const name of ['snb1', 'snc1', 'snp1', 'snb2', 'snc2', 'snp2', 'snb10', 'snbx', 'sn7', 'snb0', 'sn-b3', 'snb03', 'zzb4']) await world.host.ip(['link', 'add', name, 'type', 'bridge']);
      const refused = await run(['link', 'appvm-lynx', '--attach', 'none', '--device-prefix', 'sn']);
      expect([refused.code, refused.stdout]).toEqual([2, '']);
      expect(oneLineError(refused.stderr)).toMatch(claimRefusal(stateDir, 7, 'from --device-prefix'));
      expect(oneLineError(refused.stderr)).toContain('7 link devices with prefix sn (from --device-prefix) are here: snb1 snc1 snp1 +4: nothing made');
      await expect(readFile(stateFile())).rejects.toMatchObject({ code: 'ENOENT' });
      expect(await present(lynxDevices(DEFAULT_DEVICE_PREFIX))).toEqual([]);
    });

    it('a state lost from its state dir: link refused, then, with the empty state the line gives written, takes its live link back as it is, and gc deletes the others', async () => {
      const first = await run(['link', 'appvm-lynx', 'appvm-catgirl', '--attach', 'none']);
      expect([first.code, first.stderr]).toEqual([0, '']);
      const lynx = await shapes(lynxDevices(DEFAULT_DEVICE_PREFIX));
      await rm(stateFile());
      const refused = await run(['link', 'appvm-lynx']);
      expect([refused.code, refused.stdout]).toEqual([2, '']);
      const line = oneLineError(refused.stderr);
      expect(line).toMatch(claimRefusal(stateDir, 6));
      const state = await readmeLostState();
      // gc, which refuses a state dir without a state file (bad input too), sends to the README as well.
      const gcRefused = await run(['gc']);
      expect([gcRefused.code, gcRefused.stdout]).toEqual([2, '']);
      expect(oneLineError(gcRefused.stderr)).toMatch(/nothing deleted; check --state-dir \(README: Unrecorded devices\)$/);
      await writeFile(stateFile(), state);
      const adopted = await run(['link', 'appvm-lynx', '--attach', 'none']);
      expect([adopted.code, adopted.stderr]).toEqual([0, '']);
      expect(await shapes(lynxDevices(DEFAULT_DEVICE_PREFIX))).toEqual(lynx);
      const collected = await run(['gc', '--json']);
      expect([collected.code, collected.stderr]).toEqual([0, '']);
      expect(JSON.parse(collected.stdout)).toEqual({ removed: catgirlDevices(DEFAULT_DEVICE_PREFIX) });
      expect(await present([...lynxDevices(DEFAULT_DEVICE_PREFIX), ...catgirlDevices(DEFAULT_DEVICE_PREFIX)])).toEqual(lynxDevices(DEFAULT_DEVICE_PREFIX));
    });

    it("a state that claims the prefix (links recorded, or every one forgotten) converges on devices under a new link's names, its own leftovers, as before", async () => {
      const first = await run(['link', 'appvm-lynx', '--attach', 'none']);
      expect([first.code, first.stderr]).toEqual([0, '']);
      // A leftover bridge of appvm-catgirl's link (an id this state does not record): taken as the link's own, not made anew.
      const [bridge] = catgirlDevices(DEFAULT_DEVICE_PREFIX);
      await world.host.ip(['link', 'add', bridge ?? '', 'type', 'bridge']);
      const [leftover] = await shapes([bridge ?? '']);
      const linked = await run(['link', 'appvm-catgirl', '--attach', 'none']);
      expect([linked.code, linked.stderr]).toEqual([0, '']);
      expect(await present(catgirlDevices(DEFAULT_DEVICE_PREFIX))).toEqual(catgirlDevices(DEFAULT_DEVICE_PREFIX));
      expect((await shapes([bridge ?? '']))[0]?.ifindex).toBe(leftover?.ifindex);
      // Every link forgotten: the state keeps its prefix, and claims it still.
      for (const vm of ['appvm-lynx', 'appvm-catgirl']) expect((await run(['unlink', vm, '--forget'])).code).toBe(0);
      expect(JSON.parse(await readFile(stateFile(), 'utf8'))).toEqual({ version: 2, devicePrefix: DEFAULT_DEVICE_PREFIX, links: [] });
      await world.host.ip(['link', 'add', bridge ?? '', 'type', 'bridge']);
      const [again] = await shapes([bridge ?? '']);
      const relinked = await run(['link', 'appvm-catgirl', '--attach', 'none']);
      expect([relinked.code, relinked.stderr]).toEqual([0, '']);
      expect((await shapes([bridge ?? '']))[0]?.ifindex).toBe(again?.ifindex);
    });
  });
});
