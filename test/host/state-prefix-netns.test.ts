// The device prefix a state dir's links carry, as the built spectrum-link keeps it: the state
// records it, every command given none uses it (unlink takes down the links' own devices, not
// those of another state dir's link of the same pair under the default prefix), and one given
// another (--device-prefix, $SPECTRUM_DEVICE_PREFIX) is refused before anything is done: exit 2,
// one line naming both prefixes, nothing deleted, the state file byte for byte as it was.
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { type Harness, createHarness, describeNetns, trackTempDir } from '../harness/index.js';
import { DEFAULT_DEVICE_PREFIX, devicePrefix, linkDeviceNames } from '../../host/device-names.js';
import { preferredId } from '../../host/link-state.js';
import { vmName } from '../../host/vm-name.js';
import { type LinkWorld, devices, makeConfigDir, makeLinkWorld, oneLineError, runPrinted } from './link-fixture.js';

/** appvm-lynx -> netvm's devices (its preferred id: a state dir's first link of it) under `prefix`. */
const lynxDevices = (prefix: string): string[] => Object.values(linkDeviceNames(devicePrefix(prefix), preferredId({ client: vmName('appvm-lynx'), provider: vmName('netvm') })));
const LYNX_ID = preferredId({ client: vmName('appvm-lynx'), provider: vmName('netvm') });
/** No $SPECTRUM_DEVICE_PREFIX (an empty one is none), whatever the test's environment has. */
const NO_PREFIX_VARIABLE = { SPECTRUM_DEVICE_PREFIX: '' };
const escaped = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

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
      `^spectrum-link: device prefix ${given} \\(${escaped(origin)}\\) is not the one state file ${escaped(stateFile())} records for its links, zz ` +
        '\\(their devices are zzb<id>, zzc<id> and zzp<id>\\), so nothing was done: ',
    );

  it('unlink given another prefix than the state records is refused (exit 2, one line), nothing deleted, the state byte for byte as it was', async () => {
    await linkWithZz();
    const before = await readFile(stateFile(), 'utf8');
    for (const [args, env, origin] of [
      [['--device-prefix', 'sn'], {}, 'from --device-prefix'],
      [['--forget', '--device-prefix', 'sn'], {}, 'from --device-prefix'],
      [['--force'], { SPECTRUM_DEVICE_PREFIX: 'sn' }, 'from environment variable SPECTRUM_DEVICE_PREFIX'],
    ] as const) {
      const result = await run(['unlink', 'appvm-lynx', ...args], env);
      expect([result.code, result.stdout], result.stderr).toEqual([2, '']);
      const line = oneLineError(result.stderr);
      expect(line).toMatch(refusal('sn', origin));
      expect(line).toContain(origin.startsWith('from --') ? 'leave --device-prefix out (the recorded prefix is then used) or give zz' : 'unset SPECTRUM_DEVICE_PREFIX');
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
    expect(line).toContain('so nothing was done: leave --device-prefix out and unset SPECTRUM_DEVICE_PREFIX, which gives another (the recorded prefix is then used), or give zz;');
    // Why: the option left out alone, the variable's prefix is refused; with it unset too, the recorded one is used.
    const alone = await run(['unlink', 'appvm-lynx'], { SPECTRUM_DEVICE_PREFIX: 'sn' });
    expect([alone.code, alone.stdout]).toEqual([2, '']);
    expect(oneLineError(alone.stderr)).toMatch(refusal('sn', 'from environment variable SPECTRUM_DEVICE_PREFIX'));
    expect(await readFile(stateFile(), 'utf8')).toBe(before);
    const unlinked = await run(['unlink', 'appvm-lynx']);
    expect([unlinked.code, unlinked.stderr]).toEqual([0, '']);
    expect(await present(lynxDevices('zz'))).toEqual([]);
    // The variable giving the recorded prefix: leaving the option out is enough, as the line says.
    const same = await run(['unlink', 'appvm-lynx', '--device-prefix', 'yy'], { SPECTRUM_DEVICE_PREFIX: 'zz' });
    expect([same.code, same.stdout]).toEqual([2, '']);
    expect(oneLineError(same.stderr)).toContain('so nothing was done: leave --device-prefix out (the recorded prefix is then used) or give zz;');
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
    // The record is down (no attach modes), its id and the prefix kept.
    expect(JSON.parse(await readFile(stateFile(), 'utf8'))).toEqual({ version: 2, devicePrefix: 'zz', links: [{ client: 'appvm-lynx', provider: 'netvm', id: LYNX_ID }] });
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
        [[], { SPECTRUM_DEVICE_PREFIX: 'sn' }, 'from environment variable SPECTRUM_DEVICE_PREFIX'],
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
      expect(oneLineError(refused.stderr)).toMatch(refusal('sn', 'from environment variable SPECTRUM_DEVICE_PREFIX'));
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
      const warning = all.stderr.split('\n').find((line) => line.includes('release them with'));
      const offered = /release them with: (.*)$/.exec((JSON.parse(warning ?? '{}') as { msg?: string }).msg ?? '')?.[1];
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
      [['link', 'appvm-lynx', '--attach', 'none'], { SPECTRUM_DEVICE_PREFIX: DEFAULT_DEVICE_PREFIX }, 'from environment variable SPECTRUM_DEVICE_PREFIX'],
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
    expect(JSON.parse(await readFile(stateFile(), 'utf8'))).toEqual({ version: 2, devicePrefix: 'zz', links: [{ client: 'appvm-lynx', provider: 'netvm', id: LYNX_ID }] });
    // From then on, given none, that one.
    const relinked = await run(['link', 'appvm-lynx', '--json']);
    expect([relinked.code, relinked.stderr]).toEqual([0, '']);
    expect(await present(lynxDevices('zz'))).toEqual(lynxDevices('zz'));
  });
});
