// The VM configuration directory as a typed model, and its pure validation.
// Spec: creating-vms.adoc "Configuration". Reading the directory is config-reader.ts's job; this
// module only judges what was read, so every rule is tested without touching a file system.
//
// Rules checked for a VM and every VM it reaches through providers/net:
//   - its directory exists under the config dir, is a directory and does not leave the config dir;
//   - its entry is no second name for a directory another VM name reaches (an alias, vmAliases);
//   - vmlinux is present and a file;
//   - blk/ holds at least one "*.img" file (or block device), and every "*.img" entry is one;
//   - every providers/net/<name> names a valid VM name, not the VM itself, that is a VM directory;
//   - no provider cycles (netvm -> vpnvm -> appvm chains are fine, loops are not).
import { didYouMean } from '../shared/cli/similar-name.js';
import { type VmName, entryPath, isVmName, quoteName, shownPath, vmNameProblem } from './vm-name.js';

/** Spectrum's config location: svc/data on the user partition, mounted at /ext. */
export const DEFAULT_CONFIG_DIR = '/ext/svc/data';
export const CONFIG_DIR_ENV = 'SPECTRUM_CONFIG_DIR';

export type EntryType = 'file' | 'directory' | 'block-device' | 'other' | 'dangling-symlink' | 'symlink-loop';

export interface DirEntry {
  readonly name: string;
  /** The type after following symlinks. */
  readonly type: EntryType;
  /** The entry itself is a symlink (`type` is what it leads to). */
  readonly symlink?: true;
}

/**
 * What was found at a directory path (`loops`: a symlink that leads round a loop of symlinks;
 * `toNothing`: it is, or goes through, a symlink to nothing, that symlink in words: no directory,
 * not one missing, which for providers/net would be a VM with no providers; `outside`: a symlink
 * (`symlink`: the VM directory's path of it, providers or providers/net) led it to this directory
 * outside the config dir (`to`), not read).
 */
export type Listing =
  | { readonly state: 'missing' }
  | { readonly state: 'not-a-directory'; readonly loops?: true; readonly toNothing?: string; readonly outside?: ProvidersOutside }
  | { readonly state: 'unreadable'; readonly reason: string }
  | { readonly state: 'directory'; readonly entries: readonly DirEntry[] };

/** A symlink of a VM directory (`symlink`: `providers` or `providers/net`) that leads outside the config dir, to `to` (as far as it can be resolved). */
export interface ProvidersOutside {
  readonly symlink: 'providers' | 'providers/net';
  readonly to: string;
}

/** What was found at a file's path ('symlink-loop': a symlink that leads round a loop of symlinks). */
export type FileState = 'file' | 'missing' | 'not-a-file' | 'symlink-loop' | 'unreadable';

/** A symlink that leads round a loop, in words (as ENTRY_TEXT's, after the path). */
const LOOPS = 'is a symlink that loops (ELOOP: too many levels of symbolic links)';

/** What a directory path that is no directory is, in words after the path. */
function notADirectory(listing: Listing & { state: 'not-a-directory' }): string {
  if (listing.loops === true) return LOOPS;
  return listing.toNothing === undefined ? 'is not a directory' : `is not a directory (${listing.toNothing})`;
}

/** What to check of a directory that is a symlink to nothing (a file system not mounted, a target moved). */
const TO_NOTHING_FIX = ': check where that symlink should lead (a file system not mounted?)';

/**
 * Why a config dir entry is not a usable VM directory. A 'symlink-loop' (a symlink that leads round
 * a loop of symlinks) is of a class with a 'dangling-symlink': no typo, and nothing there.
 */
export type BadLocation = 'not-a-directory' | 'escapes-config-dir' | 'dangling-symlink' | 'symlink-loop' | 'unreadable';

/**
 * A VM entry that is a symlink to a directory of the config dir that another VM name reaches too.
 * A VM is its name (its VMM socket dir, its namespace here, its link ids go by it): one directory
 * under two names would be one VM with two identities, which nothing on the host can keep apart.
 */
export type VmAlias =
  /** The directory is VM `owner`'s own (the config dir's directory of that name): that name is the VM. */
  | { readonly to: string; readonly owner: VmName }
  /** The directory is no VM's own, and these other VM entries reach it too (sorted): none of them is the VM. */
  | { readonly to: string; readonly sharedWith: readonly VmName[] };

export type VmDir =
  | {
      readonly name: VmName;
      readonly location: 'directory';
      readonly kernel: FileState;
      readonly blk: Listing;
      readonly providers: Listing;
    }
  | { readonly name: VmName; readonly location: BadLocation; readonly reason?: string }
  | { readonly name: VmName; readonly location: 'alias'; readonly alias: VmAlias };

/** A config dir entry that is no usable VM directory. */
export type UnusableVmEntry = Exclude<VmDir, { readonly location: 'directory' }>;

/** A config dir entry with a VM name that is, or leads to, a directory inside the config dir. */
export interface ReachedDir {
  readonly name: VmName;
  /** That directory's real path, relative to the config dir (an entry that is no symlink: its name). */
  readonly to: string;
  /** What tells directories apart (device and inode): entries with the same one reach one directory. */
  readonly identity: string;
  /** The entry is a symlink. */
  readonly symlink: boolean;
}

/**
 * The entries that are aliases, each with what it is one of (pure). An entry that is no symlink
 * never is: its name is the VM. A symlink is one where it leads to a VM's own directory (`to`, a
 * real path, is a VM name only for a directory of the config dir under that name) or to one that
 * another entry reaches too: then none of those is the VM (no name is more its own than another).
 * A symlink to a directory that no other name reaches is the VM's only name, as Spectrum allows.
 */
export function vmAliases(entries: readonly ReachedDir[]): Map<VmName, VmAlias> {
  const byIdentity = new Map<string, VmName[]>();
  for (const entry of entries) {
    const names = byIdentity.get(entry.identity);
    if (names === undefined) byIdentity.set(entry.identity, [entry.name]);
    else names.push(entry.name);
  }
  const aliases = new Map<VmName, VmAlias>();
  for (const entry of entries) {
    if (!entry.symlink) continue;
    if (isVmName(entry.to)) {
      aliases.set(entry.name, { to: entry.to, owner: entry.to });
      continue;
    }
    const sharedWith = (byIdentity.get(entry.identity) ?? []).filter((name) => name !== entry.name).sort(byName);
    if (sharedWith.length > 0) aliases.set(entry.name, { to: entry.to, sharedWith });
  }
  return aliases;
}

/**
 * Whether a config dir entry looks like a VM's directory: a directory with a kernel, a `blk` or a
 * `providers/net`, whatever state they are in. A config dir named one level too high (its entries
 * the config dir itself, a state dir), an empty mount or one not populated yet has none (pure).
 */
export function looksLikeVmDir(vm: VmDir): boolean {
  return vm.location === 'directory' && (vm.kernel !== 'missing' || vm.blk.state !== 'missing' || vm.providers.state !== 'missing');
}

/** Whether a config dir entry is a symlink that leads nowhere: to nothing, or round a loop. */
export function leadsNowhere(vm: VmDir): boolean {
  return vm.location === 'dangling-symlink' || vm.location === 'symlink-loop';
}

/**
 * A directory of the config dir that a valid name would make a VM with providers (it has a
 * `providers/net`), but whose name is no VM name: no VM can be linked under it.
 */
export interface MisnamedVmDir {
  /** The name as UTF-8 (bytes that are none replaced by U+FFFD): for JSON. */
  readonly name: string;
  /** The name for a message: as it is, or quoted with escapes (\xNN for bytes that are no UTF-8). */
  readonly shown: string;
  /** Why it is no VM name. */
  readonly reason: string;
}

/** Everything read from a config dir: its (real) path and each entry that has a valid VM name. */
export interface ConfigSnapshot {
  readonly dir: string;
  readonly vms: ReadonlyMap<VmName, VmDir>;
  /** Where the whole dir was listed (readConfigDir): its directories with providers that have no VM name. */
  readonly misnamed?: readonly MisnamedVmDir[];
  /**
   * The config dir's VM names, where a VM read names a provider that has none (readConfigVms
   * lists the dir then, for a "did you mean"); readConfigDir's `vms` are them all.
   */
  readonly names?: readonly VmName[];
}

export type ConfigProblemKind =
  | 'vm-missing'
  | 'vm-not-a-directory'
  | 'vm-escapes-config-dir'
  | 'vm-dangling-symlink'
  | 'vm-symlink-loop'
  | 'vm-unreadable'
  | 'vm-alias'
  | 'kernel-missing'
  | 'kernel-not-a-file'
  | 'kernel-unreadable'
  | 'blk-missing'
  | 'blk-not-a-directory'
  | 'blk-unreadable'
  | 'no-disk-image'
  | 'image-not-a-file'
  | 'providers-not-a-directory'
  /** providers/net (or providers) is a symlink that leads outside the config dir, as a VM directory may not. */
  | 'providers-escapes-config-dir'
  | 'providers-unreadable'
  | 'provider-name-invalid'
  | 'self-provider'
  | 'provider-missing'
  | 'provider-not-a-vm'
  | 'provider-cycle';

/** One thing wrong with one VM's configuration. The message names the VM and says what to fix. */
export interface ConfigProblem {
  readonly vm: string;
  readonly kind: ConfigProblemKind;
  readonly message: string;
}

export type ConfigErrorKind =
  /** The config dir does not exist: the default one (or one whose source is not known), a host without it. */
  | 'config-dir-missing'
  /** A config dir named by --config-dir or its variable does not exist: a typo, bad input (exit 2, cli.ts). */
  | 'named-config-dir-missing'
  /** The config dir is, or is under, a symlink to nothing: no typo, and nothing there to read. */
  | 'config-dir-symlink-to-nothing'
  /** The config dir is, or is under, a symlink that loops: of a class with one to nothing. */
  | 'config-dir-symlink-loop'
  | 'config-dir-not-a-directory'
  | 'config-dir-unreadable'
  | 'invalid-vm';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly kind: ConfigErrorKind,
    message: string,
    /** For 'invalid-vm': every problem found. */
    readonly problems: readonly ConfigProblem[] = [],
  ) {
    super(message);
  }
}

/** A VM that passed checkVm, with its providers (sorted, all valid VMs). */
export interface ValidVm {
  readonly name: VmName;
  readonly providers: readonly VmName[];
}

export const IMAGE_SUFFIX = '.img';

function problem(vm: string, kind: ConfigProblemKind, message: string): ConfigProblem {
  return { vm, kind, message: `${vm}: ${message}` };
}

function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

const LOCATION_PROBLEM: Record<BadLocation, ConfigProblemKind> = {
  'not-a-directory': 'vm-not-a-directory',
  'escapes-config-dir': 'vm-escapes-config-dir',
  'dangling-symlink': 'vm-dangling-symlink',
  'symlink-loop': 'vm-symlink-loop',
  unreadable: 'vm-unreadable',
};

function describeLocation(location: BadLocation, path: string, reason: string | undefined, dir: string): string {
  switch (location) {
    case 'not-a-directory':
      return `${path} is not a directory`;
    case 'escapes-config-dir':
      // The config dir itself is not inside it either: said as what it is (as a providers/net there is, checkVm).
      if (reason === dir) return `${path} is a symlink that leads to the config dir itself (${shownPath(dir)}), not to a directory in it; VM directories must stay inside it`;
      return `${path} is a symlink that leads outside the config dir${reason === undefined ? '' : ` (to ${shownPath(reason)})`}; VM directories must stay inside it`;
    case 'dangling-symlink':
      return `${path} is a symlink to nothing`;
    case 'symlink-loop':
      // The reason, where read, is the symlink and its target in words (shared/dangling-symlink.ts).
      return reason ?? `${path} ${LOOPS}`;
    case 'unreadable':
      return `${path} cannot be read${reason === undefined ? '' : ` (${reason})`}; check its permissions`;
  }
}

/** Where an alias's message sends the operator for the rest (why a VM has one name; a directory to move to a VM name). */
const VM_DIRECTORIES_README = 'README: VM directories';

function describeAlias(dir: string, name: VmName, alias: VmAlias): string {
  const path = entryPath(dir, name);
  if ('owner' in alias) {
    return `${path} is a symlink that leads to VM ${alias.owner}'s directory ${entryPath(dir, alias.owner)}: one directory, two VM names; remove the symlink and name ${alias.owner}, not ${name}, in providers/net (${VM_DIRECTORIES_README})`;
  }
  const target = entryPath(dir, alias.to);
  const all = [name, ...alias.sharedWith].sort(byName).join(', ');
  return (
    `${path} is a symlink that leads to ${target}, as ${alias.sharedWith.join(', ')} ${alias.sharedWith.length === 1 ? 'does' : 'do'} too: one directory, several VM names; ` +
    `keep one of ${all}, remove the others, and name it in providers/net (${VM_DIRECTORIES_README})`
  );
}

/** What a VM entry that is no usable VM directory is instead, in words. */
function describeEntry(dir: string, vm: UnusableVmEntry): string {
  return vm.location === 'alias' ? describeAlias(dir, vm.name, vm.alias) : describeLocation(vm.location, entryPath(dir, vm.name), vm.reason, dir);
}

const entryProblemKind = (vm: UnusableVmEntry): ConfigProblemKind => (vm.location === 'alias' ? 'vm-alias' : LOCATION_PROBLEM[vm.location]);

/**
 * Why `name` is no VM directory of the config dir (no entry, or one that is no usable directory),
 * or undefined where it is one. Says nothing of what the directory holds (checkVm does).
 */
export function vmDirProblem(snapshot: ConfigSnapshot, name: VmName): string | undefined {
  const vm = snapshot.vms.get(name);
  if (vm === undefined) return `no directory ${entryPath(snapshot.dir, name)}`;
  return vm.location === 'directory' ? undefined : describeEntry(snapshot.dir, vm);
}

/** What a directory entry is, in a sentence. */
const ENTRY_TEXT: Record<EntryType, string> = {
  file: 'a file',
  directory: 'a directory',
  'block-device': 'a block device',
  other: 'a special file (a FIFO, socket or character device)',
  'dangling-symlink': 'a symlink to nothing',
  'symlink-loop': 'a symlink that loops (ELOOP: too many levels of symbolic links)',
};

/** Problems with one VM directory's own files (not following providers). */
function ownProblems(dir: string, vm: VmDir & { location: 'directory' }): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const base = entryPath(dir, vm.name);
  switch (vm.kernel) {
    case 'missing':
      problems.push(problem(vm.name, 'kernel-missing', `no kernel: ${base}/vmlinux is missing; put the uncompressed Linux kernel image for the VM there`));
      break;
    case 'not-a-file':
      problems.push(problem(vm.name, 'kernel-not-a-file', `${base}/vmlinux is not a file; it must be the uncompressed Linux kernel image`));
      break;
    case 'symlink-loop':
      // No file there, as for a directory: not unreadable (its permissions are not why).
      problems.push(problem(vm.name, 'kernel-not-a-file', `${base}/vmlinux ${LOOPS}; it must be the uncompressed Linux kernel image`));
      break;
    case 'unreadable':
      problems.push(problem(vm.name, 'kernel-unreadable', `${base}/vmlinux cannot be read; check its permissions`));
      break;
    case 'file':
      break;
  }
  const blk = vm.blk;
  switch (blk.state) {
    case 'missing':
      problems.push(problem(vm.name, 'blk-missing', `no disk image: ${base}/blk/ is missing; create it with at least one *${IMAGE_SUFFIX} image`));
      break;
    case 'not-a-directory':
      problems.push(problem(vm.name, 'blk-not-a-directory', `${base}/blk ${notADirectory(blk)}; it must be a directory of *${IMAGE_SUFFIX} disk images${blk.toNothing === undefined ? '' : TO_NOTHING_FIX}`));
      break;
    case 'unreadable':
      problems.push(problem(vm.name, 'blk-unreadable', `${base}/blk/ cannot be read (${blk.reason}); check its permissions`));
      break;
    case 'directory': {
      const images = blk.entries.filter((entry) => entry.name.endsWith(IMAGE_SUFFIX));
      const good = images.filter((entry) => entry.type === 'file' || entry.type === 'block-device');
      for (const entry of images.filter((e) => !good.includes(e)).sort((a, b) => byName(a.name, b.name))) {
        problems.push(problem(vm.name, 'image-not-a-file', `${entryPath(`${base}/blk`, entry.name)} is ${ENTRY_TEXT[entry.type]}; disk images must be files or block devices`));
      }
      if (good.length === 0) {
        // Where it holds *.img entries of other types (said above), "holds no *.img" would contradict those lines.
        const held = images.length === 0 ? `no *${IMAGE_SUFFIX} file` : `no *${IMAGE_SUFFIX} that is a file or block device`;
        problems.push(problem(vm.name, 'no-disk-image', `no disk image: ${base}/blk/ holds ${held}; at least one is required`));
      }
      break;
    }
  }
  return problems;
}

/** The provider entries a VM directory lists (raw names, sorted); none when providers/net is absent. */
function listedProviders(vm: VmDir): readonly DirEntry[] {
  if (vm.location !== 'directory' || vm.providers.state !== 'directory') return [];
  return [...vm.providers.entries].sort((a, b) => byName(a.name, b.name));
}

/**
 * What a line that says to remove a providers/net entry calls it: a symlink (not what it leads to:
 * `rm -r` of one called a directory, given as `app/`, empties the directory it leads to, the VM's
 * own maybe), a file (as they are made), a directory, or else an entry.
 */
const providerEntryNoun = ({ type, symlink }: DirEntry): string => (symlink === true ? 'symlink' : type === 'file' || type === 'directory' ? type : 'entry');

/**
 * Every cycle through the provider edges reachable from root, one per back edge found by a
 * depth-first search, written from its smallest name (so each appears once).
 */
export function providerCycles(edges: ReadonlyMap<string, readonly string[]>, root: string): string[][] {
  const cycles = new Map<string, string[]>();
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (node: string): void => {
    state.set(node, 'open');
    stack.push(node);
    for (const next of edges.get(node) ?? []) {
      const seen = state.get(next);
      if (seen === 'open') {
        const cycle = stack.slice(stack.indexOf(next));
        const start = cycle.indexOf([...cycle].sort(byName)[0] ?? next);
        const canonical = [...cycle.slice(start), ...cycle.slice(0, start)];
        cycles.set(canonical.join('\0'), canonical);
      } else if (seen === undefined) {
        visit(next);
      }
    }
    stack.pop();
    state.set(node, 'done');
  };
  visit(root);
  return [...cycles.values()];
}

/**
 * Check a VM and every VM its providers reach. Returns every problem (empty when valid), in a
 * stable order: the VM's own, then its providers' in breadth-first order, then cycles.
 */
export function checkVm(snapshot: ConfigSnapshot, name: VmName): ConfigProblem[] {
  const { dir } = snapshot;
  const root = snapshot.vms.get(name);
  if (root === undefined) {
    return [problem(name, 'vm-missing', `no VM directory ${entryPath(dir, name)}; VMs are the directories of ${dir}`)];
  }
  if (root.location !== 'directory') {
    return [problem(name, entryProblemKind(root), describeEntry(dir, root))];
  }
  const problems: ConfigProblem[] = [];
  const edges = new Map<string, string[]>();
  const queue: VmName[] = [name];
  const queued = new Set<string>([name]);
  for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
    const vm = snapshot.vms.get(next);
    if (vm === undefined || vm.location !== 'directory') continue; // reported by whoever names it
    problems.push(...ownProblems(dir, vm));
    const base = entryPath(dir, vm.name);
    if (vm.providers.state === 'not-a-directory' && vm.providers.outside !== undefined) {
      // The config dir itself is not inside it either (its names are every VM's): said as what it is.
      const { symlink, to } = vm.providers.outside;
      const where = to === dir ? `leads to the config dir itself (${shownPath(dir)}), not to a directory in it` : `leads outside the config dir (to ${shownPath(to)})`;
      problems.push(
        problem(
          vm.name,
          'providers-escapes-config-dir',
          `${base}/${symlink} is a symlink that ${where}; it must stay inside it, as VM directories must: which VMs a VM is linked with is the config dir's to say; make it a directory there`,
        ),
      );
    } else if (vm.providers.state === 'not-a-directory') {
      const fix = vm.providers.toNothing === undefined ? '' : `${TO_NOTHING_FIX}, or remove it for no providers`;
      problems.push(problem(vm.name, 'providers-not-a-directory', `${base}/providers/net ${notADirectory(vm.providers)}; it must hold one file named for each provider VM${fix}`));
    } else if (vm.providers.state === 'unreadable') {
      problems.push(problem(vm.name, 'providers-unreadable', `${base}/providers/net/ cannot be read (${vm.providers.reason}); check its permissions`));
    }
    const out: string[] = [];
    for (const entry of listedProviders(vm)) {
      const provider = entry.name;
      const where = entryPath(`${base}/providers/net`, provider);
      if (!isVmName(provider)) {
        problems.push(problem(vm.name, 'provider-name-invalid', `${where} does not name a VM: ${vmNameProblem(provider)?.message ?? 'invalid name'}`));
        continue;
      }
      if (provider === vm.name) {
        problems.push(problem(vm.name, 'self-provider', `${where}: a VM cannot provide networking to itself; remove that ${providerEntryNoun(entry)}`));
        continue;
      }
      const target = snapshot.vms.get(provider);
      if (target === undefined) {
        // A typo (netvmm) is said with the VM names it is close to, as commander says a mistyped command's.
        const near = didYouMean(provider, (snapshot.names ?? [...snapshot.vms.keys()]).filter((name) => name !== vm.name));
        problems.push(problem(vm.name, 'provider-missing', `provider ${quoteName(provider)} (${where}) has no VM directory ${entryPath(dir, provider)}${near}; create that VM or remove the ${providerEntryNoun(entry)}`));
        continue;
      }
      if (target.location !== 'directory') {
        problems.push(
          problem(vm.name, 'provider-not-a-vm', `provider ${quoteName(provider)} (${where}) is not a VM directory: ${describeEntry(dir, target)}`),
        );
        continue;
      }
      out.push(provider);
      if (!queued.has(provider)) {
        queued.add(provider);
        queue.push(provider);
      }
    }
    edges.set(vm.name, out);
  }
  for (const cycle of providerCycles(edges, name)) {
    const first = cycle[0] ?? name;
    problems.push(
      problem(first, 'provider-cycle', `provider cycle ${[...cycle, first].join(' -> ')} (each VM lists the next as its provider); a VM cannot get networking through itself, so remove one of these providers/net entries`),
    );
  }
  return problems;
}

/** The error of a VM that checkVm found these problems with (at least one). */
function invalidVm(snapshot: ConfigSnapshot, name: VmName, problems: readonly ConfigProblem[]): ConfigError {
  return new ConfigError(
    'invalid-vm',
    `VM ${name} in ${snapshot.dir} is not valid (${problems.length} problem${problems.length === 1 ? '' : 's'}): ${problems.map((p) => p.message).join('; ')}`,
    problems,
  );
}

/** The VM and its providers when it is valid; otherwise a ConfigError listing every problem. */
export function requireValidVm(snapshot: ConfigSnapshot, name: VmName): ValidVm {
  const problems = checkVm(snapshot, name);
  if (problems.length > 0) throw invalidVm(snapshot, name, problems);
  const vm = snapshot.vms.get(name);
  const providers = vm === undefined ? [] : listedProviders(vm).map((entry) => entry.name).filter(isVmName);
  return { name, providers };
}

/** A VM that did not pass checkVm, with the error requireValidVm throws for it. */
export interface InvalidVm {
  readonly name: VmName;
  readonly error: ConfigError;
}

/**
 * The VMs that pass checkVm and those that do not (`link --keep-going` links the first and
 * reports the others), each in the order given.
 */
export function partitionValidVms(snapshot: ConfigSnapshot, names: readonly VmName[]): { valid: VmName[]; invalid: InvalidVm[] } {
  const valid: VmName[] = [];
  const invalid: InvalidVm[] = [];
  for (const name of names) {
    const problems = checkVm(snapshot, name);
    if (problems.length === 0) valid.push(name);
    else invalid.push({ name, error: invalidVm(snapshot, name, problems) });
  }
  return { valid, invalid };
}

/** The config dir to use: --config-dir, else $SPECTRUM_CONFIG_DIR (when not empty), else Spectrum's. */
export function configDirFrom(flag: string | undefined, env: Readonly<Record<string, string | undefined>>): string {
  return flag ?? (env[CONFIG_DIR_ENV] || undefined) ?? DEFAULT_CONFIG_DIR;
}
