// Adapter: read a config dir into a ConfigSnapshot (config.ts judges it).
// Only entries whose names are valid VM names are read: nothing else can be named as a VM or a
// provider. A VM directory may be a symlink, but only to somewhere inside the config dir: the
// config dir is the trust boundary, so a link out of it is recorded as 'escapes-config-dir'.
// Files inside a VM directory (vmlinux, images) may be symlinks anywhere, as they are in Spectrum.
import { lstatSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { join, sep } from 'node:path';
import { type ConfigSnapshot, ConfigError, type DirEntry, type EntryType, type FileState, type Listing, type VmDir } from './config.js';
import { type VmName, isVmName } from './vm-name.js';

// Synchronous calls behind the async interface: a config dir of a thousand VMs takes several
// calls per VM, and the thread pool's round trip per call cost more than the calls themselves.
const stat = async (path: string) => statSync(path);
const lstat = async (path: string) => lstatSync(path);
const realpath = async (path: string) => realpathSync(path);
const readdir = async (path: string) => readdirSync(path);

function codeOf(error: unknown): string | undefined {
  if (error instanceof Error && 'code' in error && typeof error.code === 'string') return error.code;
  return undefined;
}

function reasonOf(error: unknown): string {
  return codeOf(error) ?? (error instanceof Error ? error.message : String(error));
}

async function typeOf(path: string): Promise<EntryType> {
  try {
    const info = await stat(path);
    if (info.isFile()) return 'file';
    if (info.isDirectory()) return 'directory';
    if (info.isBlockDevice()) return 'block-device';
    return 'other';
  } catch (error) {
    if (codeOf(error) === 'ENOENT' || codeOf(error) === 'ELOOP') return 'dangling-symlink';
    return 'other';
  }
}

async function fileState(path: string): Promise<FileState> {
  try {
    return (await stat(path)).isFile() ? 'file' : 'not-a-file';
  } catch (error) {
    const code = codeOf(error);
    return code === 'ENOENT' || code === 'ENOTDIR' ? 'missing' : 'unreadable';
  }
}

async function listing(path: string): Promise<Listing> {
  let names: string[];
  try {
    names = await readdir(path);
  } catch (error) {
    const code = codeOf(error);
    if (code === 'ENOENT') return { state: 'missing' };
    if (code === 'ENOTDIR') return { state: 'not-a-directory' };
    return { state: 'unreadable', reason: reasonOf(error) };
  }
  const entries: DirEntry[] = await Promise.all(names.sort().map(async (name) => ({ name, type: await typeOf(join(path, name)) })));
  return { state: 'directory', entries };
}

/** Whether path is strictly inside dir (both real paths). */
export function isInside(dir: string, path: string): boolean {
  const base = dir.endsWith(sep) ? dir : `${dir}${sep}`;
  return path.startsWith(base) && path.length > base.length;
}

async function readVmDir(root: string, name: VmName): Promise<VmDir> {
  const path = join(root, name);
  let real: string;
  try {
    const link = await lstat(path);
    real = link.isSymbolicLink() ? await realpath(path) : path;
  } catch (error) {
    const code = codeOf(error);
    if (code === 'ENOENT' || code === 'ELOOP') return { name, location: 'dangling-symlink' };
    return { name, location: 'unreadable', reason: reasonOf(error) };
  }
  if (!isInside(root, real)) return { name, location: 'escapes-config-dir', reason: real };
  if ((await typeOf(real)) !== 'directory') return { name, location: 'not-a-directory' };
  const [kernel, blk, providers] = await Promise.all([
    fileState(join(real, 'vmlinux')),
    listing(join(real, 'blk')),
    listing(join(real, 'providers', 'net')),
  ]);
  return { name, location: 'directory', kernel, blk, providers };
}

async function configRoot(dir: string, list: boolean): Promise<{ root: string; names: string[] }> {
  try {
    const root = await realpath(dir);
    if (!list) {
      if (!(await stat(root)).isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
      return { root, names: [] };
    }
    return { root, names: await readdir(root) };
  } catch (error) {
    const code = codeOf(error);
    if (code === 'ENOENT') {
      throw new ConfigError('config-dir-missing', `config dir ${dir} does not exist; pass --config-dir or set SPECTRUM_CONFIG_DIR to the directory holding the VM directories`);
    }
    if (code === 'ENOTDIR') throw new ConfigError('config-dir-not-a-directory', `config dir ${dir} is not a directory; it must hold one directory per VM`);
    throw new ConfigError('config-dir-unreadable', `config dir ${dir} cannot be read (${reasonOf(error)}); check its permissions`);
  }
}

/** Read every VM directory of a config dir. Fails only when the config dir itself is unusable. */
export async function readConfigDir(dir: string): Promise<ConfigSnapshot> {
  const { root, names } = await configRoot(dir, true);
  const vms = new Map<VmName, VmDir>();
  for (const vm of await Promise.all(names.filter(isVmName).sort().map((name) => readVmDir(root, name)))) {
    vms.set(vm.name, vm);
  }
  return { dir: root, vms };
}

/**
 * Read only the given VMs and every VM they reach through their providers: all that checking or
 * linking them needs, at a cost independent of how many other VMs the config dir holds.
 */
export async function readConfigVms(dir: string, roots: readonly VmName[]): Promise<ConfigSnapshot> {
  const { root } = await configRoot(dir, false);
  const vms = new Map<VmName, VmDir>();
  let frontier = [...new Set(roots)];
  while (frontier.length > 0) {
    const read = await Promise.all(frontier.map((name) => readVmDir(root, name)));
    const next = new Set<VmName>();
    for (const vm of read) {
      if (vm.location === 'dangling-symlink' && vm.reason === undefined) {
        // readVmDir reports a missing entry as a dangling symlink; a missing VM is simply absent.
        const exists = await lstat(join(root, vm.name)).then(() => true, () => false);
        if (!exists) continue;
      }
      vms.set(vm.name, vm);
      if (vm.location !== 'directory' || vm.providers.state !== 'directory') continue;
      for (const entry of vm.providers.entries) if (isVmName(entry.name) && !vms.has(entry.name)) next.add(entry.name);
    }
    frontier = [...next].filter((name) => !vms.has(name));
  }
  return { dir: root, vms: new Map([...vms].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) };
}
