// spectrum-link against hostile or mistaken input, found by an outside review: each bad input must
// end in one line and a non-zero exit (2 for bad usage or input), in bounded time, with nothing
// already configured or stored lost.
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { type ExecResult, describeNetns, trackTempDir } from '../harness/index.js';
import { LINK_BIN, type LinkJson, devices, oneLineError, withWorldOptions } from './link-fixture.js';
import { linkWorldPerSuite } from './link-world-suite.js';

describeNetns('spectrum-link and hostile input', () => {
  const world = linkWorldPerSuite('hostile');
  const statePath = (): string => join(world().stateDir, 'links.json');

  /** spectrum-link in the world's host namespace, given `timeoutMs` to end (the harness SIGKILLs it then, and the call throws). */
  const linkWithin = (timeoutMs: number, args: readonly string[], prefix: readonly string[] = []): Promise<ExecResult> =>
    world().host.exec([...prefix, 'node', LINK_BIN, ...withWorldOptions(args, world())], { enter: 'nsenter', allowFailure: true, timeoutMs });

  /** The state dir bind-mounted read-only over itself, in a mount namespace of its own. */
  const readOnlyStateDir = (): string[] => ['unshare', '-m', 'sh', '-c', 'mount --bind -o ro "$0" "$0" && exec "$@"', world().stateDir];
  /**
   * The state dir as a tmpfs of one page holding a copy of what it holds (the state file fills
   * it: a full disk), in a mount namespace of its own.
   */
  const fullStateDir = (): string[] => [
    'unshare',
    '-m',
    'sh',
    '-c',
    't=$(mktemp -d) && cp -a "$0"/. "$t" && mount -t tmpfs -o size=4k tmpfs "$0" && cp -a "$t"/. "$0" && rm -rf "$t" && exec "$@"',
    world().stateDir,
  ];

  afterEach(async () => {
    // Every test starts with no links: what is left is taken down as of VMs not running.
    const nowhere = ['--qmp-socket', join(world().stateDir, 'none-{vm}'), '--ch-socket', join(world().stateDir, 'none-{vm}')];
    for (const vm of ['appvm-lynx', 'appvm-catgirl']) await world().link(['unlink', vm, '--forget', ...nowhere]);
  });

  /** Link appvm-lynx (attach none): its links, their devices present. */
  async function linkLynx(): Promise<LinkJson[]> {
    const linked = await world().link(['link', 'appvm-lynx', '--attach', 'none', '--json']);
    expect(linked.code, linked.stderr).toBe(0);
    const links = (JSON.parse(linked.stdout) as { links: LinkJson[] }).links;
    await expectDevices(links);
    return links;
  }

  /** Each of these links' devices exists. */
  async function expectDevices(links: readonly LinkJson[]): Promise<void> {
    const host = await devices(world().host);
    for (const link of links) for (const device of [link.bridge, link.clientDevice, link.providerDevice]) expect(host.has(device), `${device} deleted`).toBe(true);
  }

  /** The state file with appvm-lynx's link recorded as attached to `vmm` on its client side (as link --attach appvm-lynx=VMM records it; its devices are taps either way). */
  async function recordLynxAttached(vmm: 'qemu' | 'cloud-hypervisor'): Promise<string> {
    const state = (await readFile(statePath(), 'utf8')).replace('"attached":{"client":"none"', `"attached":{"client":"${vmm}"`);
    expect(state).toContain(`"attached":{"client":"${vmm}","provider":"none"}`);
    await writeFile(statePath(), state);
    return state;
  }

  /** A scratch directory for VMM socket paths, removed after `fn`. */
  async function withSocketDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
    const dir = await mkdtemp(join(tmpdir(), 'spectrum-review-vmm-'));
    trackTempDir(dir);
    try {
      return await fn(dir);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  // Node's mkdirSync({ recursive: true }) retries such a path forever (state-store.ts): the run
  // spun at full CPU, and `link`, whose signal handler the busy loop never lets run, ignored SIGTERM.
  // `unlink` does not make a state dir named that does not exist: it refuses it before its lock would.
  const procStateDir = '/proc/self/spectrum-review-no-such-dir/state';
  it.each([
    [['link', 'appvm-lynx'], 1, `state dir ${procStateDir} (from --state-dir) cannot be used`],
    [['unlink', 'appvm-lynx'], 2, `state dir ${procStateDir} (from --state-dir) does not exist`],
  ] as const)('%j with a --state-dir that cannot be made because mkdir there says ENOENT (under /proc) fails with one line, exit %d, in seconds', async (args, code, said) => {
    const result = await linkWithin(15_000, [...args, '--state-dir', procStateDir]);
    expect(result.code, result.stderr).toBe(code);
    expect(oneLineError(result.stderr)).toContain(said);
  });

  it('unlink whose state file cannot be written (a read-only mount) fails with one line and takes nothing down', async () => {
    const links = await linkLynx();
    const before = await readFile(statePath(), 'utf8');
    const result = await linkWithin(30_000, ['unlink', 'appvm-lynx'], readOnlyStateDir());
    expect(result.code).toBe(1);
    const line = oneLineError(result.stderr);
    expect(line).toContain('cannot write state file');
    expect(line).toContain('EROFS');
    expect(line).toContain('so nothing was taken down (no NIC detached, no device deleted)');
    expect(await readFile(statePath(), 'utf8')).toBe(before);
    // The failed unlink must not have cut the VM off: its devices are there still.
    await expectDevices(links);
  });

  it('unlink --forget whose state dir is full (a tmpfs with no room left) fails with one line and takes nothing down, its ids kept', async () => {
    const links = await linkLynx();
    const before = await readFile(statePath(), 'utf8');
    const result = await linkWithin(30_000, ['unlink', 'appvm-lynx', '--forget'], fullStateDir());
    expect(result.code).toBe(1);
    const line = oneLineError(result.stderr);
    expect(line).toMatch(/^spectrum-link: unlink appvm-lynx: cannot write state file .*links\.json \(ENOSPC\).*; so nothing was taken down/);
    expect(await readFile(statePath(), 'utf8')).toBe(before);
    await expectDevices(links);
    const listed = JSON.parse((await world().link(['list', '--json'])).stdout) as (LinkJson & { present: boolean; linked: boolean })[];
    expect(listed.map(({ id, present, linked }) => ({ id, present, linked }))).toEqual(links.map(({ id }) => ({ id, present: true, linked: true })));
  });

  it('link taking down a link to a provider dropped from the config, its state file not writable (a read-only mount): one line, nothing taken down', async () => {
    // appvm-lynx gets a second provider, appvm-catgirl, which is then dropped again.
    const second = join(world().configDir, 'appvm-lynx', 'providers', 'net', 'appvm-catgirl');
    await writeFile(second, '');
    let links: LinkJson[];
    try {
      links = await linkLynx();
      expect(links.map((link) => link.provider).sort()).toEqual(['appvm-catgirl', 'netvm']);
    } finally {
      await rm(second);
    }
    const before = await readFile(statePath(), 'utf8');
    const result = await linkWithin(30_000, ['link', 'appvm-lynx', '--attach', 'none'], readOnlyStateDir());
    expect(result.code).toBe(1);
    const line = oneLineError(result.stderr);
    expect(line).toMatch(/^spectrum-link: linked, but taking down appvm-lynx -> appvm-catgirl \(no longer among the providers\) was not begun: cannot write state file .*\(EROFS\)/);
    expect(line).toContain('none of them was taken down');
    expect(await readFile(statePath(), 'utf8')).toBe(before);
    await expectDevices(links);
    // Writable again, the same link takes it down.
    const again = await world().link(['link', 'appvm-lynx', '--attach', 'none', '--json']);
    expect(again.code, again.stderr).toBe(0);
    expect((JSON.parse(again.stdout) as { unlinked?: LinkJson[] }).unlinked?.map((link) => link.provider)).toEqual(['appvm-catgirl']);
  });

  it.each([
    ['qemu', 'a regular file', '--qmp-socket'],
    ['qemu', 'a directory', '--qmp-socket'],
    ['qemu', 'a symlink', '--qmp-socket'],
    ['cloud-hypervisor', 'a regular file', '--ch-socket'],
  ] as const)(
    'unlink of a %s-attached link whose VMM socket path holds %s, not a socket, does not pass it over as a VM that is not running: exit 1, one line, nothing taken down',
    async (vmm, what, option) => {
      const links = await linkLynx();
      const state = await recordLynxAttached(vmm);
      await withSocketDir(async (sockets) => {
        const path = join(sockets, 'appvm-lynx.sock');
        if (what === 'a regular file') await writeFile(path, 'not a socket');
        else if (what === 'a directory') await mkdir(path);
        // A symlink is refused whatever it leads to (link refuses it too): here, to a socket nobody listens on.
        else {
          execFileSync(process.execPath, ['-e', "require('node:net').createServer().listen(process.argv[1], () => process.exit(0))", join(sockets, 'other.sock')]);
          await symlink(join(sockets, 'other.sock'), path);
        }
        const result = await linkWithin(30_000, ['unlink', 'appvm-lynx', option, join(sockets, '{vm}.sock')]);
        // Something is at the path, and it is no VMM socket: nothing says the VMM is gone, so its NIC
        // may be in use. As with a VMM that refuses: exit 1, one line, nothing taken down (--force).
        expect(result.code, `${result.stdout}${result.stderr}`).toBe(1);
        expect(result.stdout).toBe('');
        const line = oneLineError(result.stderr);
        expect(line).toContain(`not a socket but ${what}`);
        expect(line).toContain('no host device was deleted');
        expect(line).toContain('spectrum-link unlink appvm-lynx --force');
        await expectDevices(links);
        expect(await readFile(statePath(), 'utf8')).toBe(state);
      });
    },
  );

  it('unlink of a QEMU-attached link with nothing at its QMP socket path: the NIC is passed over as of a VM not running (its VMM exited and removed the socket), quietly as for any VM stopped before its unlink; at log level info one line names the path and what to give; exit 0', async () => {
    const links = await linkLynx();
    await recordLynxAttached('qemu');
    await withSocketDir(async (sockets) => {
      const result = await world().link(['unlink', 'appvm-lynx', '--qmp-socket', join(sockets, '{vm}.qmp')]);
      expect([result.code, result.stderr]).toEqual([0, '']);
      expect(result.stdout).toBe(links.map((link) => `unlinked appvm-lynx -> ${link.provider} (id ${link.id}, kept)\n`).join(''));
      const host = await devices(world().host);
      for (const link of links) expect(host.has(link.bridge)).toBe(false);
    });
    await linkLynx();
    await recordLynxAttached('qemu');
    await withSocketDir(async (sockets) => {
      const result = await world().link(['unlink', 'appvm-lynx', '--qmp-socket', join(sockets, '{vm}.qmp')], { SPECTRUM_LOG_LEVEL: 'info' });
      expect(result.code, result.stderr).toBe(0);
      const line = result.stderr.split('\n').find((entry) => entry.includes('no QEMU socket at')) ?? '';
      expect(line).toContain(`no QEMU socket at ${join(sockets, 'appvm-lynx.qmp')}`);
      expect(line).toContain(`its NIC ${links[0]!.clientDevice} as gone with it (not detached)`);
      expect(line).toContain('--qmp-socket');
      expect(line).toContain('--attach appvm-lynx=qemu');
    });
  });

  it('unlink of a QEMU-attached link whose QMP socket refuses connections (left by a QEMU that exited): passed over, as of a VM not running, without a word; exit 0', async () => {
    const links = await linkLynx();
    await recordLynxAttached('qemu');
    await withSocketDir(async (sockets) => {
      execFileSync(process.execPath, ['-e', "require('node:net').createServer().listen(process.argv[1], () => process.exit(0))", join(sockets, 'appvm-lynx.qmp')]);
      const result = await world().link(['unlink', 'appvm-lynx', '--qmp-socket', join(sockets, '{vm}.qmp')]);
      expect([result.code, result.stderr]).toEqual([0, '']);
      const host = await devices(world().host);
      for (const link of links) expect(host.has(link.bridge)).toBe(false);
    });
  });

  it('list and show print a socket of a hand-edited state file holding what a terminal acts on (a bidi override, a C1 control, DEL) quoted whole, those escaped; --json gives it as recorded', async () => {
    const [link] = await linkLynx();
    // Under the state dir: the afterEach's unlink looks for a VMM there, and finds none.
    const hostile = `${world().stateDir}/\u202eevil\u0085\u007f.qmp`;
    const state = (await readFile(statePath(), 'utf8')).replace('"attached":{"client":"none","provider":"none"}', `"attached":{"client":"qemu","provider":"none","clientSocket":${JSON.stringify(hostile)}}`);
    expect(state).toContain('"clientSocket"');
    await writeFile(statePath(), state);
    const shown = `"${world().stateDir}/\\u202eevil\\u0085\\u007f.qmp"`;
    for (const args of [['list'], ['show', 'appvm-lynx']]) {
      const text = await world().link(args);
      expect(text.code, text.stderr).toBe(0);
      expect(text.stdout).not.toMatch(/[\u007f-\u009f\u202e]/);
      expect(text.stdout).toContain(`client ${link!.clientDevice} `);
      expect(text.stdout).toContain(`(qemu, socket ${shown})`);
      const json = await world().link([...args, '--json']);
      expect(JSON.parse(json.stdout)).toMatchObject([{ id: link!.id, clientSocket: hostile }]);
    }
  });

  it('a --qmp-socket with a newline in it: the one line of the failure shows the path escaped, not with a space (which names another path); nothing made', async () => {
    await withSocketDir(async (sockets) => {
      const before = [...(await devices(world().host)).keys()].sort();
      const template = `${sockets}/a\nb/{vm}`;
      const result = await world().link(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=netns', '--qmp-socket', template]);
      expect(result.code).toBe(1);
      const path = `${sockets}/a\\nb/appvm-lynx`;
      expect(oneLineError(result.stderr)).toContain(`spectrum-link: cannot connect to QMP socket "${path}": no such socket`);
      expect([...(await devices(world().host)).keys()].sort()).toEqual(before);
    });
  });

  it('an --mtu above what a tap takes (65521) is refused as bad input: exit 2, one line, no device made', async () => {
    const before = [...(await devices(world().host)).keys()].sort();
    // 68 to 65535 passes the option check; the kernel then refuses `ip link set dev snc... mtu 65535` (exit 1).
    const result = await world().link(['link', 'appvm-catgirl', '--attach', 'none', '--mtu', '65535']);
    expect(result.code, result.stderr).toBe(2);
    expect(oneLineError(result.stderr)).toContain('--mtu 65535 is more than a tap takes (65521');
    expect([...(await devices(world().host)).keys()].sort()).toEqual(before);
  });

  it.each([[[]], [['--keep-going']]])(
    'a VMM socket path too long for a VM whose link is up another way is refused before its devices are replaced (link %j): exit 2, the link left up as it was',
    async (extra) => {
      const linked = await world().link(['link', 'appvm-lynx', '--attach', 'netns', '--json']);
      expect(linked.code, linked.stderr).toBe(0);
      const [link] = (JSON.parse(linked.stdout) as { links: LinkJson[] }).links;
      const before = await devices(world().host);
      const client = before.get(link!.clientDevice);
      expect(client?.linkinfo?.info_kind).toBe('veth');
      // 116 bytes for appvm-lynx: found only at the hot-plug, after the veth had been replaced by a
      // tap (and the undo deleted the tap), the link was left down for a typo.
      const tooLong = `/tmp/${'x'.repeat(100)}/{vm}`;
      const result = await world().link(['link', 'appvm-lynx', '--attach', 'netns', '--attach', 'appvm-lynx=qemu', '--qmp-socket', tooLong, ...extra]);
      expect(result.code, result.stderr).toBe(2);
      const line = extra.length === 0 ? oneLineError(result.stderr) : result.stderr;
      expect(line).toContain('a Unix socket path has at most 107');
      expect(result.stderr).not.toContain('is down');
      const after = await devices(world().host);
      for (const device of [link!.bridge, link!.clientDevice, link!.providerDevice]) expect(after.get(device)?.ifindex, device).toBe(before.get(device)?.ifindex);
      const listed = JSON.parse((await world().link(['list', '--json'])).stdout) as (LinkJson & { present: boolean })[];
      expect(listed.find((entry) => entry.vm === 'appvm-lynx')).toMatchObject({ clientAttach: 'netns', present: true });
    },
  );

  it('link --all says so where it passes over a VM directory with providers that leads out of the config dir', async () => {
    // `link appvm-outside` fails saying the symlink leads outside; --all said nothing and exited 0.
    const outside = await mkdtemp(join(tmpdir(), 'spectrum-review-outside-'));
    trackTempDir(outside);
    const entry = join(world().configDir, 'appvm-outside');
    try {
      await mkdir(join(outside, 'providers', 'net'), { recursive: true });
      await mkdir(join(outside, 'blk'));
      await writeFile(join(outside, 'vmlinux'), '');
      await writeFile(join(outside, 'blk', 'root.img'), '');
      await writeFile(join(outside, 'providers', 'net', 'netvm'), '');
      await symlink(outside, entry);
      const single = await world().link(['link', 'appvm-outside']);
      expect(single.code).toBe(1);
      expect(oneLineError(single.stderr)).toContain('leads outside the config dir');
      const all = await world().link(['link', '--all', '--attach', 'none']);
      expect(all.code, all.stderr).toBe(0);
      expect(oneLineError(all.stderr)).toContain(`appvm-outside is not linked: ${entry} is a symlink that leads outside the config dir`);
    } finally {
      await rm(entry, { force: true });
      await rm(outside, { recursive: true, force: true });
    }
  });

  it("refuses a symlink to another VM's directory as a VM: link --attach netns of a client naming it as provider fails with one line and makes nothing (no namespace under its name); link --all passes over it with a warning and an unusableDir line", async () => {
    // It made a namespace <prefix>netalias for netvm's side, which netvm's VM never joins.
    const alias = join(world().configDir, 'netalias');
    const client = join(world().configDir, 'appvm-alias');
    const namespaces = async (): Promise<string[]> =>
      (await world().host.exec(['ip', 'netns', 'list'], { enter: 'nsenter' })).stdout.split('\n').map((line) => line.split(' ')[0] ?? '').filter((name) => name.startsWith(world().netnsPrefix)).sort();
    const said = `${alias} is a symlink that leads to VM netvm's directory ${world().configDir}/netvm`;
    await symlink('netvm', alias);
    try {
      await mkdir(join(client, 'blk'), { recursive: true });
      await mkdir(join(client, 'providers', 'net'), { recursive: true });
      await writeFile(join(client, 'vmlinux'), '');
      await writeFile(join(client, 'blk', 'root.img'), '');
      await writeFile(join(client, 'providers', 'net', 'netalias'), '');
      const namespacesBefore = await namespaces();
      const devicesBefore = [...(await devices(world().host)).keys()].sort();
      const stateBefore = await readFile(statePath(), 'utf8').catch(() => 'no state file');
      const refused = await world().link(['link', 'appvm-alias', '--attach', 'netns']);
      expect(refused.code, refused.stderr).toBe(1);
      expect(refused.stdout).toBe('');
      expect(oneLineError(refused.stderr)).toContain(`provider "netalias" (${client}/providers/net/netalias) is not a VM directory: ${said}`);
      expect(await namespaces()).toEqual(namespacesBefore);
      expect(namespacesBefore).not.toContain(`${world().netnsPrefix}netalias`);
      expect([...(await devices(world().host)).keys()].sort()).toEqual(devicesBefore);
      expect(await readFile(statePath(), 'utf8').catch(() => 'no state file')).toBe(stateBefore);
      // Without the client, whose invalid config would fail the run as any does.
      await rm(client, { recursive: true, force: true });
      const all = await world().link(['link', '--all', '--attach', 'none', '--json']);
      expect(all.code, all.stderr).toBe(0);
      expect(all.stderr).toContain(`netalias is not linked: ${said}`);
      const outputs = all.stdout.trim().split('\n').map((line) => JSON.parse(line) as { vm: string; unusableDir?: string });
      expect(outputs.filter((output) => output.unusableDir !== undefined)).toEqual([{ vm: 'netalias', links: [], unusableDir: expect.stringContaining(said) }]);
    } finally {
      await rm(alias, { force: true });
      await rm(client, { recursive: true, force: true });
    }
  });

  it('link --all: a line per entry it cannot use as a VM directory (out of the config dir with links up, to nothing, round a loop), which say its links stay, and a --json line each; a stray file without links passed over quietly; exit 0, those links left up', async () => {
    const [catgirl] = (JSON.parse((await world().link(['link', 'appvm-catgirl', '--attach', 'none', '--json'])).stdout) as { links: LinkJson[] }).links;
    // appvm-catgirl's directory moves out of the config dir, a symlink to it left in its place.
    const dir = join(world().configDir, 'appvm-catgirl');
    const outside = `${world().configDir}-appvm-catgirl`;
    trackTempDir(outside);
    const dangling = join(world().configDir, 'appvm-gone');
    const file = join(world().configDir, 'appvm-file');
    const loop = join(world().configDir, 'appvm-loop');
    const loopSaid = `${loop} is a symlink to appvm-loop, which loops (ELOOP: too many levels of symbolic links)`;
    await rename(dir, outside);
    try {
      await symlink(outside, dir);
      await symlink(join(world().configDir, 'nowhere'), dangling);
      await symlink('appvm-loop', loop);
      await writeFile(file, '');
      const text = await world().link(['link', '--all', '--attach', 'none']);
      expect(text.code, text.stderr).toBe(0);
      const lines = text.stderr.split('\n').filter((line) => line !== '');
      expect(lines).toEqual([
        expect.stringContaining(`appvm-catgirl is not linked: ${dir} is a symlink that leads outside the config dir (to ${outside}); VM directories must stay inside it; its 1 recorded link is left as it is (devices too)`),
        expect.stringContaining(`appvm-gone is not linked: ${dangling} is a symlink to nothing; no links are recorded for it`),
        expect.stringContaining(`appvm-loop is not linked: ${loopSaid}; no links are recorded for it`),
      ]);
      await expectDevices([catgirl!]);
      const json = await world().link(['link', '--all', '--attach', 'none', '--json']);
      expect(json.code, json.stderr).toBe(0);
      const outputs = json.stdout.trim().split('\n').map((line) => JSON.parse(line) as { vm: string; links: unknown[]; unusableDir?: string; recorded?: LinkJson[] });
      expect(outputs.filter((output) => output.unusableDir !== undefined)).toEqual([
        { vm: 'appvm-catgirl', links: [], unusableDir: expect.stringContaining('leads outside the config dir'), recorded: [expect.objectContaining({ vm: 'appvm-catgirl', id: catgirl!.id, bridge: catgirl!.bridge })] },
        { vm: 'appvm-gone', links: [], unusableDir: `${dangling} is a symlink to nothing` },
        { vm: 'appvm-loop', links: [], unusableDir: loopSaid },
      ]);
      await expectDevices([catgirl!]);
    } finally {
      await rm(dir, { force: true });
      await rm(dangling, { force: true });
      await rm(loop, { force: true });
      await rm(file, { force: true });
      await rename(outside, dir);
    }
  });
});
