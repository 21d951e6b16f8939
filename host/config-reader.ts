// Adapter: read a config dir into a ConfigSnapshot (config.ts judges it).
// Only entries whose names are valid VM names are read: nothing else can be named as a VM or a
// provider. A VM directory may be a symlink, but only to somewhere inside the config dir: the
// config dir is the trust boundary, so a link out of it is recorded as 'escapes-config-dir'. Nor
// may it be a second name for a directory another VM name reaches (config.ts vmAliases): a VM is
// its name, and one directory under two would be one VM with two identities.
// Files inside a VM directory (vmlinux, images) may be symlinks anywhere, as they are in Spectrum.
import { type BigIntStats, type Dirent, existsSync, lstatSync, readdirSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { type OptionSource, pathFix, shownOrigin } from '../shared/cli/option-source.js';
import { danglingSymlinkOn, symlinkLoopOn } from '../shared/dangling-symlink.js';
import { CONFIG_DIR_ENV, type ConfigSnapshot, ConfigError, type DirEntry, type EntryType, type FileState, type Listing, type MisnamedVmDir, type ProvidersOutside, type ReachedDir, type VmAlias, type VmDir, vmAliases } from './config.js';
import { type VmName, isVmName, shownPath, vmNameProblem } from './vm-name.js';

// Synchronous calls behind the async interface: a config dir of a thousand VMs takes several
// calls per VM, and a thread-pool round trip (or even a promise) per call cost more than the
// calls themselves.

function codeOf(error: unknown): string | undefined {
  if (error instanceof Error && 'code' in error && typeof error.code === 'string') return error.code;
  return undefined;
}

function reasonOf(error: unknown): string {
  return codeOf(error) ?? (error instanceof Error ? error.message : String(error));
}

function typeOf(path: string): EntryType {
  try {
    const info = statSync(path);
    if (info.isFile()) return 'file';
    if (info.isDirectory()) return 'directory';
    if (info.isBlockDevice()) return 'block-device';
    return 'other';
  } catch (error) {
    if (codeOf(error) === 'ENOENT') return 'dangling-symlink';
    if (codeOf(error) === 'ELOOP') return 'symlink-loop';
    return 'other';
  }
}

/**
 * The type of a directory entry after following symlinks: what readdir already knows for
 * anything but a symlink (or a file system that does not say), a stat otherwise.
 */
function entryTypeOf(dir: string, entry: Dirent): EntryType {
  if (entry.isFile()) return 'file';
  if (entry.isDirectory()) return 'directory';
  if (entry.isBlockDevice()) return 'block-device';
  if (entry.isCharacterDevice() || entry.isFIFO() || entry.isSocket()) return 'other';
  return typeOf(join(dir, entry.name));
}

function fileState(path: string): FileState {
  try {
    return statSync(path).isFile() ? 'file' : 'not-a-file';
  } catch (error) {
    const code = codeOf(error);
    if (code === 'ELOOP') return 'symlink-loop';
    return code === 'ENOENT' || code === 'ENOTDIR' ? 'missing' : 'unreadable';
  }
}

const byName = (a: DirEntry, b: DirEntry): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

function listing(path: string): Listing {
  let found: Dirent[];
  try {
    found = readdirSync(path, { withFileTypes: true });
  } catch (error) {
    const code = codeOf(error);
    if (code === 'ENOENT') {
      // Not there because it is, or is under, a symlink to nothing (providers -> a volume not
      // mounted): no directory, not a missing one, which for providers/net would be no providers
      // and take the VM's links down. (The VM directory above it was there: it stops the search.)
      const toNothing = danglingSymlinkOn(path);
      return toNothing === undefined ? { state: 'missing' } : { state: 'not-a-directory', toNothing };
    }
    if (code === 'ENOTDIR') return { state: 'not-a-directory' };
    // No directory there either, said as a loop: not unreadable (its permissions are not why).
    if (code === 'ELOOP') return { state: 'not-a-directory', loops: true };
    return { state: 'unreadable', reason: reasonOf(error) };
  }
  const entries: DirEntry[] = found.map((entry) => ({ name: entry.name, type: entryTypeOf(path, entry), ...(entry.isSymbolicLink() && { symlink: true as const }) })).sort(byName);
  return { state: 'directory', entries };
}

/** Whether path is strictly inside dir (both real paths). */
export function isInside(dir: string, path: string): boolean {
  const base = dir.endsWith(sep) ? dir : `${dir}${sep}`;
  return path.startsWith(base) && path.length > base.length;
}

/** A VM entry resolved: no usable directory (what it is instead), or the directory it is or leads to, at `path`. */
type ResolvedVm = { readonly unusable: VmDir } | { readonly reached: ReachedDir; readonly path: string };

const identityOf = (info: BigIntStats): string => `${info.dev}:${info.ino}`;

function resolveVmEntry(root: string, name: VmName): ResolvedVm {
  const path = join(root, name);
  let link: BigIntStats;
  let real: string;
  try {
    link = lstatSync(path, { bigint: true });
    real = link.isSymbolicLink() ? realpathSync(path) : path;
  } catch (error) {
    const code = codeOf(error);
    if (code === 'ENOENT') return { unusable: { name, location: 'dangling-symlink' } };
    if (code === 'ELOOP') {
      // Said as a loop (the state dir's are so, state-store.ts), not as a symlink to nothing.
      const loop = symlinkLoopOn(path);
      return { unusable: loop === undefined ? { name, location: 'symlink-loop' } : { name, location: 'symlink-loop', reason: loop } };
    }
    return { unusable: { name, location: 'unreadable', reason: reasonOf(error) } };
  }
  if (!isInside(root, real)) return { unusable: { name, location: 'escapes-config-dir', reason: real } };
  if (!link.isSymbolicLink()) {
    // A directory that is no symlink needs no second stat.
    if (!link.isDirectory()) return { unusable: { name, location: 'not-a-directory' } };
    return { reached: { name, to: name, identity: identityOf(link), symlink: false }, path };
  }
  let target: BigIntStats | undefined;
  try {
    target = statSync(real, { bigint: true });
  } catch {
    target = undefined;
  }
  if (target?.isDirectory() !== true) return { unusable: { name, location: 'not-a-directory' } };
  return { reached: { name, to: real.slice(root.length + 1), identity: identityOf(target), symlink: true }, path: real };
}

/**
 * The real path of `path`, or, where it cannot be resolved for a directory on the way that may not
 * be searched (EACCES), as far as it can: a symlink on the way followed where it can be read, the
 * rest joined as it is. Far enough to tell where a symlink leads that leads to an unreadable
 * directory. Throws where that cannot be told either.
 */
function reachedPath(path: string, depth = 0): string {
  try {
    return realpathSync(path);
  } catch (error) {
    if (codeOf(error) !== 'EACCES' || depth > 40) throw error;
  }
  const parent = dirname(path);
  if (parent === path) throw new Error(`${path} cannot be resolved`);
  let link: ReturnType<typeof lstatSync>;
  try {
    link = lstatSync(path, { throwIfNoEntry: false });
  } catch {
    link = undefined; // in a directory that may not be searched: what it is cannot be told, nor needs to be
  }
  if (link?.isSymbolicLink() === true) return reachedPath(resolve(reachedPath(parent, depth + 1), readlinkSync(path)), depth + 1);
  return join(reachedPath(parent, depth + 1), basename(path));
}

/**
 * Where providers/net, or providers, is a symlink whose directory is outside the config dir
 * `root`: which of the two leads out (providers, where it is a symlink out of it; else
 * providers/net) and to where (its real path, as far as it can be resolved: reachedPath, so that
 * one to a directory that cannot be read is said as leading outside, the reason it is refused);
 * else undefined. Like a VM directory, it may not leave the config dir, the trust boundary: its
 * names say which VMs the VM is linked with. (The images and kernel may be anywhere, as in
 * Spectrum.) Two lstats where neither is a symlink.
 */
function providersOutside(root: string, path: string): ProvidersOutside | undefined {
  const providers = join(path, 'providers');
  const net = join(providers, 'net');
  try {
    const providersLink = lstatSync(providers).isSymbolicLink();
    if (!providersLink && !lstatSync(net).isSymbolicLink()) return undefined;
    const real = reachedPath(net);
    if (isInside(root, real)) return undefined;
    if (providersLink) {
      const to = reachedPath(providers);
      if (!isInside(root, to)) return { symlink: 'providers', to };
    }
    return { symlink: 'providers/net', to: real };
  } catch {
    return undefined; // gone meanwhile, or not to be resolved: as listed
  }
}

/** What a VM directory holds (read through `path`, where it is or leads to, in config dir `root`). */
function readVmContents(root: string, name: VmName, path: string): VmDir {
  const kernel = fileState(join(path, 'vmlinux'));
  const blk = listing(join(path, 'blk'));
  const listed = listing(join(path, 'providers', 'net'));
  // One that cannot be read is said as leading outside where it does: the reason it is refused.
  const outside = listed.state === 'directory' || listed.state === 'unreadable' ? providersOutside(root, path) : undefined;
  const providers: Listing = outside === undefined ? listed : { state: 'not-a-directory', outside };
  return { name, location: 'directory', kernel, blk, providers };
}

/** A resolved VM entry of config dir `root` as read: no usable directory, an alias (`aliases`, vmAliases'), or what its directory holds. */
function readResolved(root: string, resolved: ResolvedVm, aliases: ReadonlyMap<VmName, VmAlias>): VmDir {
  if ('unusable' in resolved) return resolved.unusable;
  const { name } = resolved.reached;
  const alias = aliases.get(name);
  return alias === undefined ? readVmContents(root, name, resolved.path) : { name, location: 'alias', alias };
}

/** The names of a config dir (as bytes) that are VM names, as text. */
function vmNamesOf(names: readonly Buffer[]): { valid: VmName[]; others: { bytes: Buffer; text: string; utf8: boolean }[] } {
  const valid: VmName[] = [];
  const others: { bytes: Buffer; text: string; utf8: boolean }[] = [];
  for (const bytes of names) {
    const text = bytes.toString('utf8');
    const utf8 = Buffer.from(text, 'utf8').equals(bytes);
    if (utf8 && isVmName(text)) valid.push(text);
    else others.push({ bytes, text, utf8 });
  }
  return { valid: valid.sort(), others };
}

/**
 * Where a config dir's path came from (--config-dir, $SPECTRUM_CONFIG_DIR, the default), for the
 * messages that say what to check; left out (a caller that does not know), they name none.
 */
export type ConfigDirSource = OptionSource | undefined;

function configRoot(dir: string, list: boolean, source: ConfigDirSource): { root: string; names: Buffer[] } {
  try {
    const root = realpathSync(dir);
    if (!list) {
      if (!statSync(root).isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
      return { root, names: [] };
    }
    // As bytes: a name that is no UTF-8 must not pass for another one (decoded, its bytes become U+FFFD).
    return { root, names: readdirSync(root, { encoding: 'buffer' }) };
  } catch (error) {
    const code = codeOf(error);
    const shown = shownOrigin('config dir', dir, source);
    const fix = pathFix('--config-dir', CONFIG_DIR_ENV, source, 'the directory holding the VM directories');
    if (code === 'ENOENT') {
      // A symlink to nothing is no typo: said as the state dir's is (state-store.ts).
      const dangling = danglingSymlinkOn(dir);
      if (dangling !== undefined) throw new ConfigError('config-dir-symlink-to-nothing', `${shown} cannot be used (${dangling}); ${fix}`);
      const named = source !== undefined && source.from !== 'default';
      throw new ConfigError(named ? 'named-config-dir-missing' : 'config-dir-missing', `${shown} does not exist; ${fix}`);
    }
    if (code === 'ELOOP') {
      // Nor is a loop of symlinks: said as a loop, as the state dir's is (state-store.ts).
      const loop = symlinkLoopOn(dir);
      if (loop !== undefined) throw new ConfigError('config-dir-symlink-loop', `${shown} cannot be used (${loop}); ${fix}`);
    }
    if (code === 'ENOTDIR') throw new ConfigError('config-dir-not-a-directory', `${shown} is not a directory (it must hold one directory per VM); ${fix}`);
    throw new ConfigError('config-dir-unreadable', `${shown} cannot be read (${reasonOf(error)}); check its permissions`);
  }
}

function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** A name read as bytes, for a message: as shownPath shows text, bytes that are no UTF-8 as \xNN. */
function shownBytes(bytes: Buffer): string {
  const text = bytes.toString('utf8');
  if (Buffer.from(text, 'utf8').equals(bytes)) return shownPath(text);
  const escaped = [...bytes].map((byte) => (byte >= 0x20 && byte < 0x7f && byte !== 0x22 && byte !== 0x5c ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, '0')}`));
  return `"${escaped.join('')}"`;
}

/**
 * An entry whose name is no VM name, where it is a directory with a `providers/net` (the rest,
 * e.g. lost+found or .git, would get no links under any name, so nothing is skipped), and not one
 * that an entry with a VM name leads to (`reached`, their identities): that directory is linked,
 * or refused as an alias, under that name, and renamed this would be a second name for it.
 */
function misnamedVmDir(root: string, bytes: Buffer, text: string, utf8: boolean, reached: ReadonlySet<string>): MisnamedVmDir | undefined {
  const path = Buffer.concat([Buffer.from(`${root}/`), bytes]);
  if (!existsSync(Buffer.concat([path, Buffer.from('/providers/net')]))) return undefined;
  const info = statSync(path, { bigint: true, throwIfNoEntry: false });
  if (info !== undefined && reached.has(identityOf(info))) return undefined;
  const reason = utf8 ? (vmNameProblem(text)?.message ?? 'no VM name') : `VM name ${shownBytes(bytes)} is not valid UTF-8`;
  return { name: text, shown: shownBytes(bytes), reason };
}

/**
 * Read every VM directory of a config dir, and note the directories with providers whose names
 * are no VM names. Fails only when the config dir itself is unusable.
 */
export async function readConfigDir(dir: string, source?: ConfigDirSource): Promise<ConfigSnapshot> {
  const { root, names } = configRoot(dir, true, source);
  const { valid, others } = vmNamesOf(names);
  const resolved = valid.map((name) => resolveVmEntry(root, name));
  const reached = resolved.flatMap((entry) => ('reached' in entry ? [entry.reached] : []));
  const aliases = vmAliases(reached);
  const identities = new Set(reached.map((entry) => entry.identity));
  const misnamed: MisnamedVmDir[] = [];
  for (const { bytes, text, utf8 } of others) {
    const found = misnamedVmDir(root, bytes, text, utf8, identities);
    if (found !== undefined) misnamed.push(found);
  }
  const vms = new Map<VmName, VmDir>();
  for (const entry of resolved) {
    const vm = readResolved(root, entry, aliases);
    vms.set(vm.name, vm);
  }
  return { dir: root, vms, misnamed: misnamed.sort((a, b) => (a.shown < b.shown ? -1 : a.shown > b.shown ? 1 : 0)) };
}

/** The VM names of a config dir's entries; none where it cannot be listed. */
function listedVmNames(root: string): VmName[] {
  try {
    return vmNamesOf(readdirSync(root, { encoding: 'buffer' })).valid;
  } catch {
    return [];
  }
}

/**
 * Read only the given VMs and every VM they reach through their providers: all that checking or
 * linking them needs, at a cost independent of how many other VMs the config dir holds (but for a
 * VM that is a symlink to a directory that is no VM's own: whether another name reaches it too
 * takes every entry's).
 */
export async function readConfigVms(dir: string, roots: readonly VmName[], source?: ConfigDirSource): Promise<ConfigSnapshot> {
  const { root } = configRoot(dir, false, source);
  const vms = new Map<VmName, VmDir>();
  let everyEntry: ReachedDir[] | undefined;
  // The dir's VM names, where it was listed (othersThan): a "did you mean" takes them, not a listing of its own.
  let listed: VmName[] | undefined;
  const othersThan = (name: VmName): ReachedDir[] => {
    listed ??= vmNamesOf(configRoot(root, true, source).names).valid;
    everyEntry ??= listed.flatMap((other) => {
      const resolved = resolveVmEntry(root, other);
      return 'reached' in resolved ? [resolved.reached] : [];
    });
    return everyEntry.filter((entry) => entry.name !== name);
  };
  const read = (name: VmName): VmDir => {
    const resolved = resolveVmEntry(root, name);
    if (!('reached' in resolved)) return resolved.unusable;
    // Only a symlink to a directory that is no VM's own can share it with names not read here.
    const { reached } = resolved;
    const shares = reached.symlink && !isVmName(reached.to) ? othersThan(name) : [];
    return readResolved(root, resolved, vmAliases([reached, ...shares]));
  };
  let frontier = [...new Set(roots)];
  // Whether the frontier is of providers (not the roots), and whether one of them has no entry.
  let [providers, missing] = [false, false];
  while (frontier.length > 0) {
    const next = new Set<VmName>();
    for (const vm of frontier.map(read)) {
      if (vm.location === 'dangling-symlink' && vm.reason === undefined && !exists(join(root, vm.name))) {
        // A missing entry resolves as a dangling symlink; a missing VM is simply absent.
        missing ||= providers;
        continue;
      }
      vms.set(vm.name, vm);
      if (vm.location !== 'directory' || vm.providers.state !== 'directory') continue;
      for (const entry of vm.providers.entries) if (isVmName(entry.name) && !vms.has(entry.name)) next.add(entry.name);
    }
    frontier = [...next].filter((name) => !vms.has(name));
    providers = true;
  }
  // A provider named that has no entry (a typo): the dir's VM names, for checkVm's "did you mean"
  // (one listing, only then, the one made above where there was one; a dir that cannot be listed,
  // only traversed, gives none: a hint fails nothing).
  const names = missing ? { names: listed ?? listedVmNames(root) } : {};
  return { dir: root, vms: new Map([...vms].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))), ...names };
}
