import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { checkVm } from '../../host/config.js';
import { isInside, readConfigDir, readConfigVms } from '../../host/config-reader.js';
import { allVmsOf } from '../../host/linker.js';
import { vmName } from '../../host/vm-name.js';

/** The built CLI (npm run build), run as another user where a directory must be unreadable. */
const CLI = join(import.meta.dirname, '..', '..', 'dist', 'host', 'cli.js');
const run = promisify(execFile);

let base: string;
let cfg: string;

beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), 'spectrum-config-'));
  cfg = join(base, 'svc', 'data');
  await mkdir(cfg, { recursive: true });
});
afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

/** Make a VM directory; each part can be left out. */
async function makeVm(name: string, parts: { kernel?: boolean; images?: string[]; providers?: string[] } = {}, root = cfg): Promise<string> {
  const dir = join(root, name);
  await mkdir(dir, { recursive: true });
  if (parts.kernel ?? true) await writeFile(join(dir, 'vmlinux'), '');
  const images = parts.images ?? ['root.img'];
  if (images.length > 0) await mkdir(join(dir, 'blk'));
  for (const image of images) await writeFile(join(dir, 'blk', image), '');
  if (parts.providers !== undefined) {
    await mkdir(join(dir, 'providers', 'net'), { recursive: true });
    for (const p of parts.providers) await writeFile(join(dir, 'providers', 'net', p), 'contents are ignored');
  }
  return dir;
}

async function kinds(name: string): Promise<string[]> {
  return checkVm(await readConfigDir(cfg), vmName(name)).map((p) => p.kind);
}

describe('readConfigDir', () => {
  it('reads the spec example as valid', async () => {
    await makeVm('netvm');
    await makeVm('appvm-lynx', { providers: ['netvm'] });
    expect(await kinds('appvm-lynx')).toEqual([]);
    expect(await kinds('netvm')).toEqual([]);
  });

  it('reports a missing vmlinux and missing or empty blk', async () => {
    await makeVm('nokernel', { kernel: false });
    await makeVm('noblk', { images: [] });
    await makeVm('noimg', { images: [] });
    await mkdir(join(cfg, 'noimg', 'blk'));
    await writeFile(join(cfg, 'noimg', 'blk', 'root.raw'), '');
    expect(await kinds('nokernel')).toEqual(['kernel-missing']);
    expect(await kinds('noblk')).toEqual(['blk-missing']);
    expect(await kinds('noimg')).toEqual(['no-disk-image']);
  });

  it('reports providers that are not VMs, self-providers and cycles', async () => {
    await writeFile(join(cfg, 'plainfile'), '');
    await makeVm('app', { providers: ['plainfile', 'nosuchvm', 'app'] });
    expect(await kinds('app')).toEqual(['self-provider', 'provider-missing', 'provider-not-a-vm']);
    await makeVm('a', { providers: ['b'] });
    await makeVm('b', { providers: ['a'] });
    expect(await kinds('a')).toEqual(['provider-cycle']);
  });

  it('calls a providers/net entry that is a directory a directory where it says to remove it, not a file', async () => {
    await makeVm('app', { providers: ['netvm'] });
    await mkdir(join(cfg, 'app', 'providers', 'net', 'nosuchvm'));
    await mkdir(join(cfg, 'app', 'providers', 'net', 'app'));
    const messages = checkVm(await readConfigDir(cfg), vmName('app')).map((p) => p.message);
    expect(messages).toEqual([
      `app: ${cfg}/app/providers/net/app: a VM cannot provide networking to itself; remove that directory`,
      `app: provider "netvm" (${cfg}/app/providers/net/netvm) has no VM directory ${cfg}/netvm; create that VM or remove the file`,
      `app: provider "nosuchvm" (${cfg}/app/providers/net/nosuchvm) has no VM directory ${cfg}/nosuchvm; create that VM or remove the directory`,
    ]);
  });

  it('calls a providers/net entry that is a symlink a symlink, not what it leads to: "remove that directory" of a symlink to the VM itself would have its own directory emptied (rm -r app/)', async () => {
    await makeVm('app', { providers: [] });
    await makeVm('netvm');
    await symlink('../..', join(cfg, 'app', 'providers', 'net', 'app'));
    await symlink('../../../netvm/blk', join(cfg, 'app', 'providers', 'net', 'ghost'));
    await symlink('../../vmlinux', join(cfg, 'app', 'providers', 'net', 'ghostfile'));
    await symlink('nowhere', join(cfg, 'app', 'providers', 'net', 'gone'));
    const messages = checkVm(await readConfigDir(cfg), vmName('app')).map((p) => p.message);
    expect(messages).toEqual([
      `app: ${cfg}/app/providers/net/app: a VM cannot provide networking to itself; remove that symlink`,
      `app: provider "ghost" (${cfg}/app/providers/net/ghost) has no VM directory ${cfg}/ghost; create that VM or remove the symlink`,
      `app: provider "ghostfile" (${cfg}/app/providers/net/ghostfile) has no VM directory ${cfg}/ghostfile; create that VM or remove the symlink`,
      `app: provider "gone" (${cfg}/app/providers/net/gone) has no VM directory ${cfg}/gone; create that VM or remove the symlink`,
    ]);
  });

  it('says of a provider with no VM directory the VM names it is close to (a typo: netvmm), as commander says a mistyped command\'s, and none where none is close', async () => {
    await makeVm('netvm');
    await makeVm('app', { providers: ['netvmm', 'zzzz', 'ap'] });
    const want = [
      `app: provider "ap" (${cfg}/app/providers/net/ap) has no VM directory ${cfg}/ap; create that VM or remove the file`,
      `app: provider "netvmm" (${cfg}/app/providers/net/netvmm) has no VM directory ${cfg}/netvmm (did you mean netvm?); create that VM or remove the file`,
      `app: provider "zzzz" (${cfg}/app/providers/net/zzzz) has no VM directory ${cfg}/zzzz; create that VM or remove the file`,
    ];
    // Reading only what app reaches (link, check app) as reading the whole dir (link --all, check).
    expect(checkVm(await readConfigVms(cfg, [vmName('app')]), vmName('app')).map((p) => p.message)).toEqual(want);
    expect(checkVm(await readConfigDir(cfg), vmName('app')).map((p) => p.message)).toEqual(want);
  });

  // Reading app, a symlink to a directory that is no VM's own, lists the dir (whether another name
  // shares it); its "did you mean" listed it a second time.
  it('lists the config dir once for a VM symlinked to a directory that is no VM\'s own and its mistyped provider (did you mean netvm?), as strace shows', async () => {
    await makeVm('netvm');
    await makeVm('.store-app', { providers: ['netvmm'] });
    await symlink('.store-app', join(cfg, 'app'));
    const trace = join(base, 'trace');
    const result = await run('strace', ['-f', '-qq', '-e', 'trace=openat', '-o', trace, process.execPath, CLI, 'check', 'app', '--config-dir', cfg]).catch((error: { code: number; stderr: string }) => error);
    expect(result.stderr).toContain(`app: provider "netvmm" (${cfg}/app/providers/net/netvmm) has no VM directory ${cfg}/netvmm (did you mean netvm?)`);
    const listings = (await readFile(trace, 'utf8')).split('\n').filter((line) => line.includes(`openat(AT_FDCWD, "${cfg}", `) && line.includes('O_DIRECTORY'));
    expect(listings).toHaveLength(1);
  });

  it('reports everything wrong at once', async () => {
    await makeVm('bad', { kernel: false, images: [], providers: ['bad', 'ghost'] });
    expect(await kinds('bad')).toEqual(['kernel-missing', 'blk-missing', 'self-provider', 'provider-missing']);
  });

  it('refuses a VM directory symlinked outside the config dir, also as a provider', async () => {
    const outside = await makeVm('elsewhere', {}, base);
    await symlink(outside, join(cfg, 'escapee'));
    await symlink('../../elsewhere', join(cfg, 'relative'));
    await makeVm('app', { providers: ['escapee'] });
    expect(await kinds('escapee')).toEqual(['vm-escapes-config-dir']);
    expect(await kinds('relative')).toEqual(['vm-escapes-config-dir']);
    expect(await kinds('app')).toEqual(['provider-not-a-vm']);
    await symlink('.', join(cfg, 'self'));
    expect(await kinds('self')).toEqual(['vm-escapes-config-dir']);
  });

  it('says a VM directory symlinked to the config dir itself as leading there, not outside it (to the config dir), by check and as a provider', async () => {
    await symlink('.', join(cfg, 'self'));
    await symlink('..', join(cfg, 'up'));
    await makeVm('app', { providers: ['self'] });
    for (const snapshot of [await readConfigDir(cfg), await readConfigVms(cfg, [vmName('self'), vmName('up'), vmName('app')])]) {
      const at = snapshot.dir;
      const itself = `${at}/self is a symlink that leads to the config dir itself (${at}), not to a directory in it; VM directories must stay inside it`;
      expect(checkVm(snapshot, vmName('self'))).toEqual([{ vm: 'self', kind: 'vm-escapes-config-dir', message: `self: ${itself}` }]);
      expect(checkVm(snapshot, vmName('app')).map((p) => p.message)).toEqual([`app: provider "self" (${at}/app/providers/net/self) is not a VM directory: ${itself}`]);
      // Its parent is outside, as before.
      expect(checkVm(snapshot, vmName('up')).map((p) => p.message)).toEqual([`up: ${at}/up is a symlink that leads outside the config dir (to ${join(at, '..')}); VM directories must stay inside it`]);
    }
  });

  it('accepts a VM directory symlinked inside the config dir where no other name reaches it, and reports dangling links', async () => {
    await makeVm('lone', {}, join(cfg, '.vms'));
    await makeVm('nested', {}, join(cfg, 'store', 'deeper'));
    await symlink('.vms/lone', join(cfg, 'lone'));
    await symlink('store/deeper/nested', join(cfg, 'nested'));
    await symlink('nowhere', join(cfg, 'dangling'));
    await makeVm('app', { providers: ['lone', 'nested'] });
    expect(await kinds('lone')).toEqual([]);
    expect(await kinds('nested')).toEqual([]);
    expect(await kinds('app')).toEqual([]);
    expect(checkVm(await readConfigVms(cfg, [vmName('app')]), vmName('app'))).toEqual([]);
    expect(await kinds('dangling')).toEqual(['vm-dangling-symlink']);
  });

  it('ignores entries that are not VM names', async () => {
    await makeVm('netvm');
    await mkdir(join(cfg, '.hidden'));
    await mkdir(join(cfg, 'with space'));
    const snapshot = await readConfigDir(cfg);
    expect([...snapshot.vms.keys()]).toEqual(['netvm']);
    expect(snapshot.misnamed).toEqual([]);
  });

  it('notes the directories with a providers/net whose names are no VM names (not valid UTF-8 too), and only those', async () => {
    await makeVm('netvm');
    await makeVm('appvm+lynx', { providers: ['netvm'] });
    await makeVm('.appvm-old', { providers: ['netvm'] });
    await makeVm('lost+found');
    await writeFile(join(cfg, 'notes+todo'), '');
    const latin1 = Buffer.concat([Buffer.from(`${cfg}/appvm-caf`), Buffer.from([0xe9])]);
    await mkdir(Buffer.concat([latin1, Buffer.from('/providers/net')]), { recursive: true });
    const snapshot = await readConfigDir(cfg);
    expect([...snapshot.vms.keys()]).toEqual(['netvm']);
    expect(snapshot.misnamed).toEqual([
      { name: 'appvm-caf\ufffd', shown: '"appvm-caf\\xe9"', reason: 'VM name "appvm-caf\\xe9" is not valid UTF-8' },
      { name: '.appvm-old', shown: '.appvm-old', reason: expect.stringContaining('VM name ".appvm-old" starts with "."') },
      { name: 'appvm+lynx', shown: 'appvm+lynx', reason: expect.stringContaining('VM name "appvm+lynx" contains "+"') },
    ]);
  });

  it('notes no directory with a providers/net that a VM name leads to, under a name that is no VM name: it is linked, or refused, under that one (renamed, it would be a second name)', async () => {
    await makeVm('netvm');
    // A VM whose directory is kept under a dotted name (swapped by its symlink), and a dotted symlink to a VM's own directory.
    await makeVm('.appvm-lynx.v2', { providers: ['netvm'] });
    await symlink('.appvm-lynx.v2', join(cfg, 'appvm-lynx'));
    await makeVm('appvm-cat', { providers: ['netvm'] });
    await symlink('appvm-cat', join(cfg, '.appvm-cat-old'));
    // Reached by two VM names (refused there, as aliases): said there, not here.
    await makeVm('.shared', { providers: ['netvm'] });
    await symlink('.shared', join(cfg, 'a'));
    await symlink('.shared', join(cfg, 'b'));
    // A directory no VM name leads to, and a symlink to one, are noted as before.
    await makeVm('.appvm-old', { providers: ['netvm'] });
    await makeVm('.store/x', { providers: ['netvm'] });
    await symlink('.store/x', join(cfg, 'appvm+x'));
    const snapshot = await readConfigDir(cfg);
    expect(checkVm(snapshot, vmName('appvm-lynx'))).toEqual([]);
    expect(snapshot.misnamed?.map((dir) => dir.shown)).toEqual(['.appvm-old', 'appvm+x']);
  });

  it('fails clearly when the config dir is unusable', async () => {
    await expect(readConfigDir(join(base, 'none'))).rejects.toMatchObject({ name: 'ConfigError', kind: 'config-dir-missing' });
    await writeFile(join(base, 'file'), '');
    await expect(readConfigDir(join(base, 'file'))).rejects.toMatchObject({ kind: 'config-dir-not-a-directory' });
  });

  it('says where an unusable config dir came from, where it is told, and what to check of it', async () => {
    const none = join(base, 'none');
    const want = 'the directory holding the VM directories';
    await expect(readConfigDir(none)).rejects.toMatchObject({ message: `config dir ${none} does not exist; pass --config-dir or set SPECTRUM_CONFIG_DIR to ${want}` });
    // Named (by the option or the variable): a typo, its own kind (bad input); the default or a dir of no known source: the host's.
    await expect(readConfigVms(none, [vmName('netvm')], { from: 'option', flag: '--config-dir' })).rejects.toMatchObject({
      kind: 'named-config-dir-missing',
      message: `config dir ${none} (from --config-dir) does not exist; check --config-dir: it must be ${want}`,
    });
    await expect(readConfigDir(none, { from: 'environment', variable: 'SPECTRUM_CONFIG_DIR' })).rejects.toMatchObject({ kind: 'named-config-dir-missing' });
    await writeFile(join(base, 'file'), '');
    await expect(readConfigDir(join(base, 'file'), { from: 'environment', variable: 'SPECTRUM_CONFIG_DIR' })).rejects.toMatchObject({
      kind: 'config-dir-not-a-directory',
      message: `config dir ${join(base, 'file')} (from environment variable SPECTRUM_CONFIG_DIR) is not a directory (it must hold one directory per VM); check SPECTRUM_CONFIG_DIR: it must be ${want} (or pass --config-dir, which overrides it)`,
    });
    await expect(readConfigDir(none, { from: 'default' })).rejects.toMatchObject({
      kind: 'config-dir-missing',
      message: `config dir ${none} (the default) does not exist; pass --config-dir or set SPECTRUM_CONFIG_DIR to ${want}`,
    });
  });

  it('says a config dir that is, or is under, a symlink to nothing cannot be used, naming the symlink and its target: no typo, whatever its source', async () => {
    const link = join(base, 'link');
    await symlink(join(base, 'gone'), link);
    const said = `${link} is a symlink to ${join(base, 'gone')}, which does not exist`;
    const want = 'the directory holding the VM directories';
    for (const [dir, source, message] of [
      [link, { from: 'option', flag: '--config-dir' }, `config dir ${link} (from --config-dir) cannot be used (${said}); check --config-dir: it must be ${want}`],
      [join(link, 'vms'), { from: 'default' }, `config dir ${join(link, 'vms')} (the default) cannot be used (${said}); pass --config-dir or set SPECTRUM_CONFIG_DIR to ${want}`],
    ] as const) {
      for (const read of [() => readConfigDir(dir, source), () => readConfigVms(dir, [vmName('netvm')], source)]) {
        await expect(read()).rejects.toMatchObject({ kind: 'config-dir-symlink-to-nothing', message });
      }
    }
  });
});

describe('aliases: a VM entry that is a second name for a directory', () => {
  /** The problems of each VM, read whole and by name (each VM alone: what check and link read). */
  async function problemsOf(...names: string[]): Promise<{ whole: Record<string, [string, string][]>; byName: Record<string, [string, string][]> }> {
    const whole = await readConfigDir(cfg);
    const of = (snapshot: Awaited<ReturnType<typeof readConfigDir>>, name: string): [string, string][] => checkVm(snapshot, vmName(name)).map((p) => [p.kind, p.message]);
    const byName: Record<string, [string, string][]> = {};
    for (const name of names) byName[name] = of(await readConfigVms(cfg, [vmName(name)]), name);
    return { whole: Object.fromEntries(names.map((name) => [name, of(whole, name)])), byName };
  }

  it('refuses a symlink to another VM\'s directory, and a chain of them, naming that VM, itself and as a provider; that VM stays valid', async () => {
    await makeVm('netvm');
    await symlink('netvm', join(cfg, 'netalias'));
    await symlink(join(cfg, 'netalias'), join(cfg, 'chained'));
    await symlink('./netvm/', join(cfg, 'dotted'));
    await makeVm('app', { providers: ['netalias'] });
    const { whole, byName } = await problemsOf('netvm', 'netalias', 'chained', 'dotted', 'app');
    expect(byName).toEqual(whole);
    const dir = (await readConfigDir(cfg)).dir;
    const said = (name: string): string =>
      `${dir}/${name} is a symlink that leads to VM netvm's directory ${dir}/netvm: a VM is its name (its namespace, VMM socket dir and link ids go by it), so one directory under two names would be one VM with two identities; give the VM one name: remove the symlink ${dir}/${name} and name netvm, not ${name}, in providers/net`;
    expect(whole).toEqual({
      netvm: [],
      netalias: [['vm-alias', `netalias: ${said('netalias')}`]],
      chained: [['vm-alias', `chained: ${said('chained')}`]],
      dotted: [['vm-alias', `dotted: ${said('dotted')}`]],
      app: [['provider-not-a-vm', `app: provider "netalias" (${dir}/app/providers/net/netalias) is not a VM directory: ${said('netalias')}`]],
    });
  });

  it('refuses every symlink of two or more to one directory that is no VM\'s own (none is the VM), read whole, by name or as a provider; one to a directory of its own stays', async () => {
    await makeVm('shared', {}, join(cfg, '.store'));
    await makeVm('nested', {}, join(cfg, 'netvm'));
    await makeVm('lone', {}, join(cfg, '.lone'));
    await symlink('.store/shared', join(cfg, 'a'));
    await symlink(join(cfg, '.store', 'shared'), join(cfg, 'b'));
    await symlink('a', join(cfg, 'c'));
    await symlink('netvm/nested', join(cfg, 'n1'));
    await symlink('netvm/nested', join(cfg, 'n2'));
    await symlink('.lone/lone', join(cfg, 'lone'));
    // A name that is no VM name is no second name: nothing can be linked under it.
    await symlink('.lone/lone', join(cfg, '.also-lone'));
    await makeVm('app', { providers: ['b', 'lone'] });
    const { whole, byName } = await problemsOf('a', 'b', 'c', 'n1', 'n2', 'lone', 'app');
    expect(byName).toEqual(whole);
    const dir = (await readConfigDir(cfg)).dir;
    const said = (name: string, to: string, others: string, all: string): string =>
      `${dir}/${name} is a symlink that leads to ${dir}/${to}, as ${others} too: a VM is its name (its namespace, VMM socket dir and link ids go by it), so one directory under two names would be one VM with two identities, and no name is more its own than another; give the VM one name: keep one of ${all} (or move ${dir}/${to} to a VM name), remove the others, and name the one kept in providers/net`;
    expect(whole).toEqual({
      a: [['vm-alias', `a: ${said('a', '.store/shared', 'b, c do', 'a, b, c')}`]],
      b: [['vm-alias', `b: ${said('b', '.store/shared', 'a, c do', 'a, b, c')}`]],
      c: [['vm-alias', `c: ${said('c', '.store/shared', 'a, b do', 'a, b, c')}`]],
      n1: [['vm-alias', `n1: ${said('n1', 'netvm/nested', 'n2 does', 'n1, n2')}`]],
      n2: [['vm-alias', `n2: ${said('n2', 'netvm/nested', 'n1 does', 'n1, n2')}`]],
      lone: [],
      app: [['provider-not-a-vm', `app: provider "b" (${dir}/app/providers/net/b) is not a VM directory: ${said('b', '.store/shared', 'a, c do', 'a, b, c')}`]],
    });
  });
});

describe('symlink loops', () => {
  const want = 'the directory holding the VM directories';
  const loopsText = 'which loops (ELOOP: too many levels of symbolic links)';

  it.each([
    ['to itself', ['loop', 'loop']],
    ['round two symlinks', ['loop', 'other', 'other', 'loop']],
  ])('%s: a config dir that is, or is under, one is said as a loop (the symlink, its target), not as unreadable, whatever its source', async (_how, links) => {
    for (let index = 0; index < links.length; index += 2) await symlink(join(base, links[index + 1]!), join(base, links[index]!));
    const said = `${join(base, 'loop')} is a symlink to ${join(base, links[1]!)}, ${loopsText}`;
    const loop = join(base, 'loop');
    for (const [dir, source, message] of [
      [loop, { from: 'option', flag: '--config-dir' }, `config dir ${loop} (from --config-dir) cannot be used (${said}); check --config-dir: it must be ${want}`],
      [join(loop, 'vms'), { from: 'default' }, `config dir ${join(loop, 'vms')} (the default) cannot be used (${said}); pass --config-dir or set SPECTRUM_CONFIG_DIR to ${want}`],
    ] as const) {
      for (const read of [() => readConfigDir(dir, source), () => readConfigVms(dir, [vmName('netvm')], source)]) {
        await expect(read()).rejects.toMatchObject({ name: 'ConfigError', kind: 'config-dir-symlink-loop', message });
      }
    }
  });

  it.each([
    ['to itself', ['looping', 'looping']],
    ['round two symlinks', ['looping', 'other', 'other', 'looping']],
  ])('%s: a VM entry that is one is said as a loop (not as a symlink to nothing), itself and as a provider, read whole or by name', async (_how, links) => {
    for (let index = 0; index < links.length; index += 2) await symlink(links[index + 1]!, join(cfg, links[index]!));
    await makeVm('app', { providers: ['looping'] });
    for (const snapshot of [await readConfigDir(cfg), await readConfigVms(cfg, [vmName('app'), vmName('looping')])]) {
      const said = `${snapshot.dir}/looping is a symlink to ${links[1]!}, ${loopsText}`;
      expect(checkVm(snapshot, vmName('looping'))).toEqual([{ vm: 'looping', kind: 'vm-symlink-loop', message: `looping: ${said}` }]);
      expect(checkVm(snapshot, vmName('app'))).toEqual([
        { vm: 'app', kind: 'provider-not-a-vm', message: `app: provider "looping" (${snapshot.dir}/app/providers/net/looping) is not a VM directory: ${said}` },
      ]);
    }
  });

  it('a disk image that is one is said as a loop', async () => {
    await makeVm('app', { images: ['root.img'] });
    await symlink('loop.img', join(cfg, 'app', 'blk', 'loop.img'));
    const snapshot = await readConfigDir(cfg);
    expect(checkVm(snapshot, vmName('app'))).toEqual([
      { vm: 'app', kind: 'image-not-a-file', message: `app: ${snapshot.dir}/app/blk/loop.img is a symlink that loops (ELOOP: too many levels of symbolic links); disk images must be files or block devices` },
    ]);
  });
});

describe('symlink loops within a VM directory', () => {
  const loops = 'is a symlink that loops (ELOOP: too many levels of symbolic links)';

  it('a vmlinux, blk or providers/net that is one is said as a loop, not as unreadable (nor to check its permissions)', async () => {
    await makeVm('netvm');
    const app = await makeVm('app', { kernel: false, images: [] });
    await symlink('vmlinux', join(app, 'vmlinux'));
    await symlink('blk', join(app, 'blk'));
    await mkdir(join(app, 'providers'));
    await symlink('../providers/net', join(app, 'providers', 'net'));
    for (const snapshot of [await readConfigDir(cfg), await readConfigVms(cfg, [vmName('app')])]) {
      const at = `${snapshot.dir}/app`;
      expect(checkVm(snapshot, vmName('app'))).toEqual([
        { vm: 'app', kind: 'kernel-not-a-file', message: `app: ${at}/vmlinux ${loops}; it must be the uncompressed Linux kernel image` },
        { vm: 'app', kind: 'blk-not-a-directory', message: `app: ${at}/blk ${loops}; it must be a directory of *.img disk images` },
        { vm: 'app', kind: 'providers-not-a-directory', message: `app: ${at}/providers/net ${loops}; it must hold one file named for each provider VM` },
      ]);
    }
  });
});

describe('isInside', () => {
  it('is strict and component-wise', () => {
    expect(isInside('/a/b', '/a/b/c')).toBe(true);
    expect(isInside('/a/b', '/a/b')).toBe(false);
    expect(isInside('/a/b', '/a/bc')).toBe(false);
    expect(isInside('/a/b', '/a')).toBe(false);
  });
});

describe('a providers/net that is, or is under, a symlink to nothing', () => {
  it('is no directory (not "no providers", which would take the VM\'s links down): check says the symlink and what to check, and link --all checks the VM', async () => {
    await makeVm('netvm');
    const app = await makeVm('app', { providers: ['netvm'] });
    const under = await makeVm('under', { providers: ['netvm'] });
    await makeVm('empty');
    // providers/net leads to a volume not mounted yet; `under`'s providers does; `empty` has none.
    await rm(join(app, 'providers', 'net'), { recursive: true });
    await symlink(join(base, 'not-mounted', 'net'), join(app, 'providers', 'net'));
    await rm(join(under, 'providers'), { recursive: true });
    await symlink(join(base, 'not-mounted'), join(under, 'providers'));
    for (const snapshot of [await readConfigDir(cfg), await readConfigVms(cfg, [vmName('app'), vmName('under'), vmName('empty')])]) {
      const at = snapshot.dir;
      const fix = 'it must hold one file named for each provider VM: check where that symlink should lead (a file system not mounted?), or remove it for no providers';
      expect(checkVm(snapshot, vmName('app'))).toEqual([
        {
          vm: 'app',
          kind: 'providers-not-a-directory',
          message: `app: ${at}/app/providers/net is not a directory (${at}/app/providers/net is a symlink to ${base}/not-mounted/net, which does not exist); ${fix}`,
        },
      ]);
      expect(checkVm(snapshot, vmName('under'))).toEqual([
        {
          vm: 'under',
          kind: 'providers-not-a-directory',
          message: `under: ${at}/under/providers/net is not a directory (${at}/under/providers is a symlink to ${base}/not-mounted, which does not exist); ${fix}`,
        },
      ]);
      expect(checkVm(snapshot, vmName('empty'))).toEqual([]);
    }
    // link --all links (and so checks, failing the run) both, and takes down only what `empty` had.
    const all = allVmsOf(await readConfigDir(cfg));
    expect(all.vms).toEqual(['app', 'under']);
    expect(all.wholeDir.withoutProviders).toEqual(expect.arrayContaining(['empty', 'netvm']));
    expect(all.wholeDir.withoutProviders).not.toEqual(expect.arrayContaining(['app']));
    expect(all.wholeDir.withoutProviders).not.toEqual(expect.arrayContaining(['under']));
  });

  it('a dangling blk symlink is said as one too, not as a blk/ missing', async () => {
    const app = await makeVm('app', { images: [] });
    await symlink(join(base, 'images'), join(app, 'blk'));
    const snapshot = await readConfigDir(cfg);
    expect(checkVm(snapshot, vmName('app'))).toEqual([
      {
        vm: 'app',
        kind: 'blk-not-a-directory',
        message: `app: ${snapshot.dir}/app/blk is not a directory (${snapshot.dir}/app/blk is a symlink to ${base}/images, which does not exist); it must be a directory of *.img disk images: check where that symlink should lead (a file system not mounted?)`,
      },
    ]);
  });
});

describe('a providers/net that leads outside the config dir', () => {
  it('is refused as a VM directory that leads outside is (the config dir says which VMs a VM is linked with), by check and link --all; one that leads to a directory inside it is read', async () => {
    await makeVm('netvm');
    const app = await makeVm('app');
    const viaProviders = await makeVm('via');
    const inside = await makeVm('inside');
    await mkdir(join(base, 'elsewhere', 'net'), { recursive: true });
    await writeFile(join(base, 'elsewhere', 'net', 'netvm'), '');
    await mkdir(join(app, 'providers'));
    await symlink(join(base, 'elsewhere', 'net'), join(app, 'providers', 'net'));
    await symlink(join(base, 'elsewhere'), join(viaProviders, 'providers'));
    await mkdir(join(cfg, '.shared', 'net'), { recursive: true });
    await writeFile(join(cfg, '.shared', 'net', 'netvm'), '');
    await symlink('../.shared', join(inside, 'providers'));
    for (const snapshot of [await readConfigDir(cfg), await readConfigVms(cfg, [vmName('app'), vmName('via'), vmName('inside')])]) {
      const at = snapshot.dir;
      const said = (vm: string, symlink: string, to: string): string =>
        `${vm}: ${at}/${vm}/${symlink} is a symlink that leads outside the config dir (to ${to}); it must stay inside it, as VM directories must: which VMs a VM is linked with is the config dir's to say; make it a directory there`;
      expect(checkVm(snapshot, vmName('app'))).toEqual([{ vm: 'app', kind: 'providers-escapes-config-dir', message: said('app', 'providers/net', `${base}/elsewhere/net`) }]);
      // The symlink is providers (net is a directory it leads to): said as such, with where it leads.
      expect(checkVm(snapshot, vmName('via'))).toEqual([{ vm: 'via', kind: 'providers-escapes-config-dir', message: said('via', 'providers', `${base}/elsewhere`) }]);
      expect(checkVm(snapshot, vmName('inside'))).toEqual([]);
    }
    expect(allVmsOf(await readConfigDir(cfg)).vms).toEqual(['app', 'inside', 'via']);
  });

  it('one that leads to a directory that cannot be read is said as leading outside (why it is refused), not as unreadable; so is providers/net through a providers that leads inside', async () => {
    expect(process.getuid?.(), 'this test runs check as another user: run it as root').toBe(0);
    await chmod(base, 0o755);
    await makeVm('netvm');
    const app = await makeVm('app');
    const via = await makeVm('via');
    const inner = await makeVm('inner');
    await mkdir(join(base, 'closed', 'net'), { recursive: true });
    await writeFile(join(base, 'closed', 'net', 'netvm'), '');
    await chmod(join(base, 'closed'), 0o700);
    await mkdir(join(app, 'providers'));
    await symlink(join(base, 'closed', 'net'), join(app, 'providers', 'net'));
    await symlink(join(base, 'closed'), join(via, 'providers'));
    // providers leads inside the config dir; the net there is the symlink out.
    await mkdir(join(cfg, '.shared'));
    await symlink(join(base, 'closed', 'net'), join(cfg, '.shared', 'net'));
    await symlink('../.shared', join(inner, 'providers'));
    const said = (vm: string, symlink: string, to: string): string =>
      `spectrum-link:   ${vm}: ${cfg}/${vm}/${symlink} is a symlink that leads outside the config dir (to ${to}); it must stay inside it, as VM directories must: which VMs a VM is linked with is the config dir's to say; make it a directory there`;
    for (const [vm, symlink, to] of [
      ['app', 'providers/net', `${base}/closed/net`],
      ['via', 'providers', `${base}/closed`],
      ['inner', 'providers/net', `${base}/closed/net`],
    ] as const) {
      // As nobody, for whom the directory cannot be read (root reads any).
      const result = await run(process.execPath, [CLI, 'check', vm, '--config-dir', cfg], { uid: 65534, gid: 65534 }).catch((error: { code: number; stderr: string }) => error);
      expect(result).toMatchObject({ code: 1, stderr: expect.stringContaining(`${said(vm, symlink, to)}\n`) });
      expect((result as { stderr: string }).stderr).not.toContain('cannot be read');
    }
  });

  it('one that leads to the config dir itself is refused as not inside it, said as the config dir, not as somewhere outside', async () => {
    await makeVm('netvm');
    const app = await makeVm('app');
    await mkdir(join(app, 'providers'));
    await symlink('../..', join(app, 'providers', 'net'));
    for (const snapshot of [await readConfigDir(cfg), await readConfigVms(cfg, [vmName('app')])]) {
      const at = snapshot.dir;
      expect(checkVm(snapshot, vmName('app'))).toEqual([
        {
          vm: 'app',
          kind: 'providers-escapes-config-dir',
          message: `app: ${at}/app/providers/net is a symlink that leads to the config dir itself (${at}), not to a directory in it; it must stay inside it, as VM directories must: which VMs a VM is linked with is the config dir's to say; make it a directory there`,
        },
      ]);
    }
  });
});
