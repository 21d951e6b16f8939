// The boot services of host/service/ (README, "Running at boot"): the systemd unit passes
// `systemd-analyze verify`; the s6-rc `up` is execline that runs the README's command with the
// config dir it names, succeeds on --keep-going's exit codes of failed VMs (1, 2, 70) and fails on
// any other; run in a test namespace (against a scratch config and state dir) it links a world;
// and the README's commands and the files name the same options.
import { execFile } from 'node:child_process';
import { chmod, link, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Harness, type Netns, createHarness, describeNetns, trackTempDir } from '../harness/index.js';
import { type LinkJson, LINK_BIN, ROOT, makeConfigDir, requireBuild, warningMessages } from './link-fixture.js';
import { FakeCloudHypervisorProcess } from './vmm/fake-cloud-hypervisor-process.js';

const S6_DIR = join(ROOT, 'host', 'service', 's6-rc', 'spectrum-link-boot');
const UP = join(S6_DIR, 'up');
const UNIT = join(ROOT, 'host', 'service', 'systemd', 'spectrum-link-boot.service');
/** Spectrum's config dir, which both services name. */
const SPECTRUM_CONFIG_DIR = '/ext/svc/data';

type Run = { code: number; stdout: string; stderr: string };

async function run(file: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  try {
    const { stdout, stderr } = await promisify(execFile)(file, args, { timeout: 60_000, env });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: unknown; stdout?: string; stderr?: string };
    return { code: typeof failed.code === 'number' ? failed.code : -1, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' };
  }
}

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});
async function tempDir(name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), name));
  trackTempDir(dir);
  dirs.push(dir);
  return dir;
}

/** The words of a command line (no quoting in these files). */
const words = (line: string): string[] => line.trim().split(/\s+/);

/** The systemd unit's ExecStart command and Environment= assignments. */
async function unitCommand(): Promise<{ command: string[]; env: Record<string, string> }> {
  const text = await readFile(UNIT, 'utf8');
  const exec = /^ExecStart=(.+)$/m.exec(text)?.[1];
  if (exec === undefined) throw new Error(`${UNIT} has no ExecStart=`);
  const env = Object.fromEntries([...text.matchAll(/^Environment=(\w+)=(\S+)$/gm)].map((match) => [match[1] ?? '', match[2] ?? '']));
  return { command: words(exec), env };
}

/** The `up`'s spectrum-link command (in its `foreground` block) and its `export`s. */
async function upCommand(): Promise<{ command: string[]; env: Record<string, string> }> {
  const text = await readFile(UP, 'utf8');
  const foreground = /^foreground \{ (spectrum-link [^}]+) \}$/m.exec(text)?.[1];
  if (foreground === undefined) throw new Error(`${UP} runs no spectrum-link in a foreground block`);
  const env = Object.fromEntries([...text.matchAll(/^export (\w+) (\S+)$/gm)].map((match) => [match[1] ?? '', match[2] ?? '']));
  return { command: words(foreground), env };
}

/** The README's "Running at boot" section. */
async function bootSection(): Promise<string> {
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf('\n### Running at boot\n');
  expect(start).toBeGreaterThan(0);
  const end = readme.indexOf('\n#', start + 2);
  return readme.slice(start, end === -1 ? undefined : end);
}

/**
 * A dir holding a `spectrum-link` for the `up` to find first on PATH: it records its arguments,
 * its SPECTRUM_CONFIG_DIR and the code it exits with in `record`, then runs `body` (sh).
 */
async function stubDir(record: string, body: string): Promise<string> {
  const dir = await tempDir('sn-boot-stub-');
  const stub = join(dir, 'spectrum-link');
  await writeFile(
    stub,
    `#!/bin/sh\nprintf '%s\\n' "$SPECTRUM_CONFIG_DIR" "$*" > '${record}'\n${body}\ncode=$?\necho "$code" >> '${record}'\nexit "$code"\n`,
  );
  await chmod(stub, 0o755);
  return dir;
}

describe('systemd unit', () => {
  it('passes systemd-analyze verify (a copy whose ExecStart is the built bin), with nothing said', async () => {
    requireBuild();
    const unit = await readFile(UNIT, 'utf8');
    const { command } = await unitCommand();
    expect(command[0]).toBe('/usr/bin/spectrum-link');
    const dir = await tempDir('sn-boot-unit-');
    const copy = join(dir, 'spectrum-link-boot.service');
    await writeFile(copy, unit.replace('ExecStart=/usr/bin/spectrum-link ', `ExecStart=${LINK_BIN} `));
    expect(await run('systemd-analyze', ['verify', copy])).toEqual({ code: 0, stdout: '', stderr: '' });
    // The check sees a broken copy (no such ExecStart file).
    await writeFile(copy, unit.replace('ExecStart=/usr/bin/spectrum-link ', `ExecStart=${join(dir, 'missing')} `));
    expect((await run('systemd-analyze', ['verify', copy])).code).not.toBe(0);
  });

  it('is a oneshot that stays active once done, ordered as a network setup unit', async () => {
    const unit = await readFile(UNIT, 'utf8');
    for (const line of ['Type=oneshot', 'RemainAfterExit=yes', 'Before=network-pre.target shutdown.target', 'Wants=network-pre.target', 'DefaultDependencies=no', 'Conflicts=shutdown.target']) {
      expect(unit.split('\n')).toContain(line);
    }
  });
});

describe('s6-rc oneshot', () => {
  it('is a oneshot depending on ext (the config dir mounted), with an up and no run', async () => {
    expect(await readFile(join(S6_DIR, 'type'), 'utf8')).toBe('oneshot\n');
    expect(await readFile(join(S6_DIR, 'dependencies'), 'utf8')).toBe('ext\n');
  });

  it.each([
    [0, 0],
    [1, 0],
    [2, 0],
    [70, 0],
    [3, 3],
    [129, 129],
    [130, 130],
    [143, 143],
  ])('up (execlineb) runs link --all --keep-going with the config dir set: spectrum-link exiting %i, it exits %i', async (code, expected) => {
    const record = join(await tempDir('sn-boot-record-'), 'record');
    const stubs = await stubDir(record, `(exit ${code})`);
    const result = await run('execlineb', ['-P', UP], { ...process.env, SPECTRUM_CONFIG_DIR: '/elsewhere', PATH: `${stubs}:${process.env.PATH ?? ''}` });
    expect(result).toEqual({ code: expected, stdout: '', stderr: '' });
    expect(await readFile(record, 'utf8')).toBe(`${SPECTRUM_CONFIG_DIR}\nlink --all --keep-going\n${code}\n`);
  });

  it('up fails with no spectrum-link on PATH', async () => {
    const empty = await tempDir('sn-boot-path-');
    const result = await run('execlineb', ['-P', UP], { ...process.env, PATH: `${empty}:/usr/bin:/bin` });
    expect(result.code).toBe(127);
    expect(result.stderr).toEqual(expect.stringMatching(/unable to spawn spectrum-link/));
  });
});

describe('the README and the files', () => {
  it('name the same boot command, config dir and files', async () => {
    const section = await bootSection();
    const up = await upCommand();
    const unit = await unitCommand();
    const readmeCommand = /`(spectrum-link link --all[^`]*)`/.exec(section)?.[1];
    expect(readmeCommand).toBeDefined();
    const options = words(readmeCommand ?? '').slice(1);
    expect(up.command.slice(1)).toEqual(options);
    expect(unit.command.slice(1)).toEqual(options);
    expect(section).toContain(`\`SPECTRUM_CONFIG_DIR=${SPECTRUM_CONFIG_DIR}\``);
    expect(up.env).toEqual({ SPECTRUM_CONFIG_DIR });
    expect(unit.env).toEqual({ SPECTRUM_CONFIG_DIR });
    for (const path of ['host/service/s6-rc/spectrum-link-boot/', 'host/service/systemd/spectrum-link-boot.service']) expect(section).toContain(`\`${path}\``);
    for (const file of ['type', 'up', 'dependencies']) expect(section).toContain(`\`${file}\``);
    expect(section.replace(/\s+/g, ' ')).toContain(`\`dependencies\`: \`${(await readFile(join(S6_DIR, 'dependencies'), 'utf8')).trim()}\``);
    for (const line of ['Type=oneshot', 'RemainAfterExit=yes']) {
      expect(section).toContain(`\`${line}\``);
      expect((await readFile(UNIT, 'utf8')).split('\n')).toContain(line);
    }
    // The exit codes the README says the up takes as done are those its eltest names.
    expect(section.replace(/\s+/g, ' ')).toContain('Its exit code is 1, 2 or 70 there (said in the log), but also where the run failed as a whole and linked nothing');
    expect(await readFile(UP, 'utf8')).toContain('eltest ${code} = 1 -o ${code} = 2 -o ${code} = 70');
  });
});

describeNetns('the s6-rc up, run in a test namespace', () => {
  let harness: Harness;
  let hosts = 0;

  beforeAll(() => {
    requireBuild();
    harness = createHarness('bootsvc');
  });
  afterAll(async () => {
    await harness?.cleanup();
  });

  /**
   * The `up` run by execlineb in `host` (a namespace of the test's), its spectrum-link the built bin with the
   * config dir it sets (Spectrum's) read as `configDir`, and $SPECTRUM_STATE_DIR `stateDir`.
   */
  async function runUp(host: Netns, configDir: string, stateDir: string): Promise<{ result: Run; record: string[] }> {
    const record = join(await tempDir('sn-boot-record-'), 'record');
    const stubs = await stubDir(
      record,
      `[ "$SPECTRUM_CONFIG_DIR" = '${SPECTRUM_CONFIG_DIR}' ] && SPECTRUM_CONFIG_DIR='${configDir}'\n'${process.execPath}' '${LINK_BIN}' "$@"`,
    );
    const env = { ...process.env, SPECTRUM_STATE_DIR: stateDir, PATH: `${stubs}:${process.env.PATH ?? ''}` };
    const exec = await host.exec(['execlineb', '-P', UP], { enter: 'nsenter', allowFailure: true, timeoutMs: 60_000, env });
    return { result: { code: exec.code ?? -1, stdout: exec.stdout, stderr: exec.stderr }, record: (await readFile(record, 'utf8')).trimEnd().split('\n') };
  }

  async function list(host: Netns, stateDir: string): Promise<(LinkJson & { present: boolean })[]> {
    const listed = await host.exec(['node', LINK_BIN, 'list', '--json', '--state-dir', stateDir], { enter: 'nsenter' });
    return JSON.parse(listed.stdout) as (LinkJson & { present: boolean })[];
  }

  /** A config dir (the examples) and a state dir of their own, for one test. */
  async function bootWorld(): Promise<{ configDir: string; stateDir: string }> {
    const configDir = await makeConfigDir();
    dirs.push(configDir);
    return { configDir, stateDir: join(await tempDir('sn-boot-state-'), 'state') };
  }

  /** The fake cloud-hypervisors of netvm and appvm-lynx, each created (vm.create) at <run>/<vm>/vmm. */
  interface CreatedVmms {
    readonly runDir: string;
    readonly fakes: ReadonlyMap<string, FakeCloudHypervisorProcess>;
    /** spectrum-link with `args` in `host` (their sockets through --ch-socket for a link), asserted to exit 0 saying nothing. */
    perVm(args: readonly string[]): Promise<void>;
  }

  /** `body` with the VMMs of netvm and appvm-lynx running in `host` (CreatedVmms), closed after it. */
  async function withCreatedVmms(host: Netns, world: { configDir: string; stateDir: string }, body: (vmms: CreatedVmms) => Promise<void>): Promise<void> {
    const runDir = await tempDir('sn-boot-run-');
    const fakes = new Map<string, FakeCloudHypervisorProcess>();
    const env = { ...process.env, SPECTRUM_CONFIG_DIR: world.configDir, SPECTRUM_STATE_DIR: world.stateDir };
    const perVm = async (args: readonly string[]): Promise<void> => {
      const extra = args[0] === 'link' ? ['--ch-socket', join(runDir, '{vm}', 'vmm')] : [];
      const result = await host.exec(['node', LINK_BIN, ...args, ...extra], { enter: 'nsenter', allowFailure: true, timeoutMs: 60_000, env });
      expect({ args, code: result.code, stderr: result.stderr }).toEqual({ args, code: 0, stderr: '' });
    };
    try {
      for (const vm of ['netvm', 'appvm-lynx']) {
        const fake = await FakeCloudHypervisorProcess.start(host, 'Created');
        fakes.set(vm, fake);
        await mkdir(join(runDir, vm));
        await link(fake.socketPath, join(runDir, vm, 'vmm'));
      }
      await body({ runDir, fakes, perVm });
    } finally {
      for (const fake of fakes.values()) await fake.close();
    }
  }

  it('links every VM of the config dir, both sides none, exit 0', async () => {
    const configDir = await makeConfigDir();
    dirs.push(configDir);
    const stateDir = join(await tempDir('sn-boot-state-'), 'state');
    hosts += 1;
    const host = await harness.namespace(`host${hosts}`);
    const { result, record } = await runUp(host, configDir, stateDir);
    expect(record).toEqual([SPECTRUM_CONFIG_DIR, 'link --all --keep-going', '0']);
    expect(result.code).toBe(0);
    const links = await list(host, stateDir);
    expect(links.map((link) => ({ vm: link.vm, provider: link.provider, clientAttach: link.clientAttach, providerAttach: link.providerAttach, present: link.present })).sort((a, b) => a.vm.localeCompare(b.vm))).toEqual(
      ['appvm-catgirl', 'appvm-lynx'].map((vm) => ({ vm, provider: 'netvm', clientAttach: 'none', providerAttach: 'none', present: true })),
    );
  });

  it('with a VM that fails (a provider with no VM directory) links the others and succeeds: spectrum-link exits 1', async () => {
    const configDir = await makeConfigDir();
    dirs.push(configDir);
    await mkdir(join(configDir, 'appvm-broken', 'providers', 'net'), { recursive: true });
    await writeFile(join(configDir, 'appvm-broken', 'vmlinux'), '');
    await writeFile(join(configDir, 'appvm-broken', 'providers', 'net', 'netvmm'), '');
    const stateDir = join(await tempDir('sn-boot-state-'), 'state');
    hosts += 1;
    const host = await harness.namespace(`host${hosts}`);
    const { result, record } = await runUp(host, configDir, stateDir);
    expect(record).toEqual([SPECTRUM_CONFIG_DIR, 'link --all --keep-going', '1']);
    expect(result.code).toBe(0);
    expect(result.stderr).toEqual(expect.stringMatching(/link appvm-broken failed: .*netvmm/));
    expect((await list(host, stateDir)).map((link) => link.vm).sort()).toEqual(['appvm-catgirl', 'appvm-lynx']);
  });

  it('run again while VMs run (a restart, or a failed systemd unit that a VM unit Wants= starts again), takes no NIC out of their VMMs: their links stay as the per-VM step attached them', async () => {
    const world = await bootWorld();
    hosts += 1;
    const host = await harness.namespace(`host${hosts}`);
    expect((await runUp(host, world.configDir, world.stateDir)).result.code).toBe(0);
    await withCreatedVmms(host, world, async ({ fakes, perVm }) => {
      await perVm(['link', 'appvm-lynx', '--attach', 'cloud-hypervisor']);
      const before = await list(host, world.stateDir);
      const again = await runUp(host, world.configDir, world.stateDir);
      expect(again.result.code).toBe(0);
      expect(await list(host, world.stateDir)).toEqual(before);
      expect(before.find((entry) => entry.vm === 'appvm-lynx')).toMatchObject({ clientAttach: 'cloud-hypervisor', providerAttach: 'cloud-hypervisor', present: true });
      for (const vm of ['netvm', 'appvm-lynx']) {
        const paths = ((await fakes.get(vm)?.report())?.requests ?? []).map((request) => request.path.replace(/^.*\//, ''));
        expect({ vm, paths }).toEqual({ vm, paths: paths.filter((path) => path !== 'vm.remove-device') });
        expect({ vm, added: paths.filter((path) => path === 'vm.add-net').length }).toEqual({ vm, added: 1 });
      }
    });
  });

  it('after a reboot (the state kept, its devices gone) brings the sides the per-VM step attached back as none, saying so, exit 0', async () => {
    const world = await bootWorld();
    const { configDir, stateDir } = world;
    hosts += 1;
    const before = await harness.namespace(`host${hosts}`);
    expect((await runUp(before, configDir, stateDir)).result.code).toBe(0);
    await withCreatedVmms(before, world, async ({ perVm }) => perVm(['link', 'appvm-lynx', '--attach', 'cloud-hypervisor']));
    // The reboot: another host namespace, none of the devices there, the VMMs gone.
    hosts += 1;
    const after = await harness.namespace(`host${hosts}`);
    const { result } = await runUp(after, configDir, stateDir);
    expect(result.code).toBe(0);
    const links = await list(after, stateDir);
    expect(links.map((entry) => ({ vm: entry.vm, clientAttach: entry.clientAttach, providerAttach: entry.providerAttach, present: entry.present })).sort((a, b) => a.vm.localeCompare(b.vm))).toEqual(
      ['appvm-catgirl', 'appvm-lynx'].map((vm) => ({ vm, clientAttach: 'none', providerAttach: 'none', present: true })),
    );
    // One warning per side the per-VM step attached, saying what that step gives it back with.
    expect(warningMessages(result.stderr).sort()).toEqual(
      ['appvm-lynx', 'netvm'].map((vm) => expect.stringMatching(new RegExp(`^${vm}'s side of appvm-lynx -> netvm was cloud-hypervisor and is none now .*--attach ${vm}=cloud-hypervisor$`))),
    );
  });

  it("then the README's per-VM step hot-plugs both ends of a VM's link into their cloud-hypervisors, and unlink takes the provider's out", async () => {
    const section = await bootSection();
    const block = /\n```\n([^`]+)```\n/.exec(section)?.[1] ?? '';
    const commands = block.split('\n').map((line) => line.replace(/#.*$/, '').trim()).filter((line) => line !== '');
    expect(commands).toEqual([expect.stringMatching(/^spectrum-link link appvm-lynx /), 'spectrum-link unlink appvm-lynx']);
    const world = await bootWorld();
    const { configDir, stateDir } = world;
    hosts += 1;
    const host = await harness.namespace(`host${hosts}`);
    expect((await runUp(host, configDir, stateDir)).result.code).toBe(0);
    await withCreatedVmms(host, world, async ({ runDir, fakes, perVm }) => {
      const readme = (command: string): string[] => words(command).slice(1);
      await perVm(readme(commands[0] ?? ''));
      const lynx = (await list(host, stateDir)).find((entry) => entry.vm === 'appvm-lynx');
      expect(lynx).toMatchObject({ provider: 'netvm', clientAttach: 'cloud-hypervisor', providerAttach: 'cloud-hypervisor', present: true });
      const addNets = async (vm: string): Promise<unknown[]> => ((await fakes.get(vm)?.report())?.requests ?? []).filter((request) => request.path.endsWith('/vm.add-net')).map((request) => request.taps);
      expect(await addNets('appvm-lynx')).toEqual([[lynx?.clientDevice]]);
      expect(await addNets('netvm')).toEqual([[lynx?.providerDevice]]);
      // appvm-catgirl's link, which this VM's start does not touch, stays as the boot made it.
      expect((await list(host, stateDir)).find((entry) => entry.vm === 'appvm-catgirl')).toMatchObject({ clientAttach: 'none', providerAttach: 'none' });
      // The VM stopped: its VMM gone (its socket with it), unlink takes the provider's NIC out.
      await fakes.get('appvm-lynx')?.close();
      await rm(join(runDir, 'appvm-lynx', 'vmm'));
      await perVm(readme(commands[1] ?? ''));
      const removed = ((await fakes.get('netvm')?.report())?.requests ?? []).filter((request) => request.path.endsWith('/vm.remove-device')).map((request) => request.body);
      expect(removed).toEqual([{ id: lynx?.providerDevice }]);
    });
  });
});
