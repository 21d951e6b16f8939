import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type ConfigSnapshot,
  ConfigError,
  type VmDir,
  checkVm,
  type ReachedDir,
  configDirFrom,
  partitionValidVms,
  providerCycles,
  requireValidVm,
  vmAliases,
  vmDirProblem,
} from '../../host/config.js';
import { vmName } from '../../host/vm-name.js';

const DIR = '/cfg';

/** A valid VM directory with these providers; override any part. */
function vm(name: string, providers: readonly string[] = [], parts: Partial<Omit<VmDir & { location: 'directory' }, 'name' | 'location'>> = {}): VmDir {
  return {
    name: vmName(name),
    location: 'directory',
    kernel: 'file',
    blk: { state: 'directory', entries: [{ name: 'root.img', type: 'file' }] },
    providers: { state: 'directory', entries: providers.map((p) => ({ name: p, type: 'file' as const })) },
    ...parts,
  };
}

function snapshot(...vms: VmDir[]): ConfigSnapshot {
  return { dir: DIR, vms: new Map(vms.map((v) => [v.name, v])) };
}

const kinds = (s: ConfigSnapshot, name: string): string[] => checkVm(s, vmName(name)).map((p) => p.kind);

describe('checkVm', () => {
  it('accepts the spec example', () => {
    const s = snapshot(vm('netvm'), vm('appvm-lynx', ['netvm']), vm('appvm-catgirl', ['netvm']));
    expect(checkVm(s, vmName('appvm-lynx'))).toEqual([]);
    expect(requireValidVm(s, vmName('appvm-lynx'))).toEqual({ name: 'appvm-lynx', providers: ['netvm'] });
    expect(requireValidVm(s, vmName('netvm'))).toEqual({ name: 'netvm', providers: [] });
  });

  it('accepts provider chains and several providers', () => {
    const s = snapshot(vm('netvm'), vm('vpnvm', ['netvm']), vm('torvm', ['netvm']), vm('appvm', ['vpnvm', 'torvm']));
    expect(checkVm(s, vmName('appvm'))).toEqual([]);
    expect(requireValidVm(s, vmName('appvm')).providers).toEqual(['torvm', 'vpnvm']);
  });

  it('accepts a VM without providers/net', () => {
    expect(kinds(snapshot(vm('solo', [], { providers: { state: 'missing' } })), 'solo')).toEqual([]);
  });

  it('reports a missing or unusable VM directory', () => {
    expect(kinds(snapshot(), 'ghost')).toEqual(['vm-missing']);
    expect(kinds(snapshot({ name: vmName('f'), location: 'not-a-directory' }), 'f')).toEqual(['vm-not-a-directory']);
    expect(kinds(snapshot({ name: vmName('out'), location: 'escapes-config-dir', reason: '/etc' }), 'out')).toEqual(['vm-escapes-config-dir']);
    expect(kinds(snapshot({ name: vmName('dl'), location: 'dangling-symlink' }), 'dl')).toEqual(['vm-dangling-symlink']);
  });

  it('reports kernel and disk problems', () => {
    expect(kinds(snapshot(vm('a', [], { kernel: 'missing' })), 'a')).toEqual(['kernel-missing']);
    expect(kinds(snapshot(vm('a', [], { kernel: 'not-a-file' })), 'a')).toEqual(['kernel-not-a-file']);
    expect(kinds(snapshot(vm('a', [], { blk: { state: 'missing' } })), 'a')).toEqual(['blk-missing']);
    expect(kinds(snapshot(vm('a', [], { blk: { state: 'not-a-directory' } })), 'a')).toEqual(['blk-not-a-directory']);
    expect(kinds(snapshot(vm('a', [], { blk: { state: 'directory', entries: [{ name: 'root.qcow2', type: 'file' }] } })), 'a')).toEqual(['no-disk-image']);
    expect(
      kinds(snapshot(vm('a', [], { blk: { state: 'directory', entries: [{ name: 'd.img', type: 'directory' }, { name: 'x.img', type: 'dangling-symlink' }] } })), 'a'),
    ).toEqual(['image-not-a-file', 'image-not-a-file', 'no-disk-image']);
    expect(kinds(snapshot(vm('a', [], { blk: { state: 'directory', entries: [{ name: 'sda.img', type: 'block-device' }] } })), 'a')).toEqual([]);
  });

  it('says what an image that is no file or block device is instead', () => {
    const messages = checkVm(
      snapshot(vm('a', [], { blk: { state: 'directory', entries: [{ name: 'd.img', type: 'directory' }, { name: 'p.img', type: 'other' }, { name: 'x.img', type: 'dangling-symlink' }, { name: 'r.img', type: 'file' }] } })),
      vmName('a'),
    ).map((p) => p.message);
    expect(messages).toEqual([
      'a: /cfg/a/blk/d.img is a directory; disk images must be files or block devices',
      'a: /cfg/a/blk/p.img is a special file (a FIFO, socket or character device); disk images must be files or block devices',
      'a: /cfg/a/blk/x.img is a symlink to nothing; disk images must be files or block devices',
    ]);
  });

  it('says of a blk/ whose *.img entries are all of other types that none is a file or block device, not that it holds none', () => {
    const messages = (entries: { name: string; type: 'file' | 'directory' | 'other' }[]): string[] =>
      checkVm(snapshot(vm('a', [], { blk: { state: 'directory', entries } })), vmName('a')).map((p) => p.message);
    expect(messages([{ name: 'p.img', type: 'other' }])).toEqual([
      'a: /cfg/a/blk/p.img is a special file (a FIFO, socket or character device); disk images must be files or block devices',
      'a: no disk image: /cfg/a/blk/ holds no *.img that is a file or block device; at least one is required',
    ]);
    expect(messages([{ name: 'root.qcow2', type: 'file' }])).toEqual(['a: no disk image: /cfg/a/blk/ holds no *.img file; at least one is required']);
  });

  it('reports provider problems: bad name, self, missing, not a VM, providers/net not a directory', () => {
    const s = snapshot(
      vm('app', ['.hidden', 'app', 'ghost', 'file', 'netvm']),
      { name: vmName('file'), location: 'not-a-directory' },
      vm('netvm'),
      vm('odd', [], { providers: { state: 'not-a-directory' } }),
    );
    expect(kinds(s, 'app')).toEqual(['provider-name-invalid', 'self-provider', 'provider-not-a-vm', 'provider-missing']);
    expect(kinds(s, 'odd')).toEqual(['providers-not-a-directory']);
  });

  it('says to remove a providers/net entry as what it is: a file, a directory, else an entry', () => {
    const entries = [
      { name: 'app', type: 'directory' },
      { name: 'ghost', type: 'file' },
      { name: 'ghostdir', type: 'directory' },
      { name: 'ghostlink', type: 'dangling-symlink' },
      { name: 'ghostpipe', type: 'other' },
    ] as const;
    const messages = checkVm(snapshot(vm('app', [], { providers: { state: 'directory', entries } })), vmName('app')).map((p) => p.message.replace(/^.*; /, ''));
    expect(messages).toEqual(['remove that directory', 'create that VM or remove the file', 'create that VM or remove the directory', 'create that VM or remove the entry', 'create that VM or remove the entry']);
  });

  it('names a provider or image entry whose name holds control characters quoted, so it cannot rewrite the terminal line', () => {
    const s = snapshot(vm('app', ['netvm', 'x\r\u001b[2Kok'], { blk: { state: 'directory', entries: [{ name: '\u009b2J.img', type: 'other' }] } }), vm('netvm'));
    const messages = checkVm(s, vmName('app')).map((p) => p.message);
    expect(messages).toHaveLength(3);
    for (const message of messages) expect(message).not.toMatch(/[\p{Cc}\p{Cf}]/u);
    expect(messages).toContainEqual(expect.stringContaining('/cfg/app/providers/net/"x\\r\\u001b[2Kok" does not name a VM'));
    expect(messages).toContainEqual(expect.stringContaining('/cfg/app/blk/"\\u009b2J.img" is a special file'));
  });

  it("quotes the target of a VM symlink that leads out of the config dir where it holds control characters", () => {
    const s = snapshot({ name: vmName('out'), location: 'escapes-config-dir', reason: '/tmp/x\r\u001b[2K\u009b2J' });
    const [message] = checkVm(s, vmName('out')).map((p) => p.message);
    expect(message).not.toMatch(/[\p{Cc}\p{Cf}]/u);
    expect(message).toContain('(to "/tmp/x\\r\\u001b[2K\\u009b2J")');
    expect(checkVm(snapshot({ name: vmName('out'), location: 'escapes-config-dir', reason: '/etc' }), vmName('out'))[0]?.message).toContain('(to /etc)');
  });

  it('reports every problem at once, including those of providers down the chain, each naming its VM', () => {
    const s = snapshot(vm('app', ['vpn'], { kernel: 'missing', blk: { state: 'missing' } }), vm('vpn', ['net']), vm('net', [], { kernel: 'missing' }));
    const problems = checkVm(s, vmName('app'));
    expect(problems.map((p) => [p.vm, p.kind])).toEqual([
      ['app', 'kernel-missing'],
      ['app', 'blk-missing'],
      ['net', 'kernel-missing'],
    ]);
    for (const p of problems) expect(p.message.startsWith(`${p.vm}: `)).toBe(true);
    expect(() => requireValidVm(s, vmName('app'))).toThrow(ConfigError);
    try {
      requireValidVm(s, vmName('app'));
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).kind).toBe('invalid-vm');
      expect((error as ConfigError).problems).toHaveLength(3);
    }
  });

  it('reports cycles, once each', () => {
    const s = snapshot(vm('a', ['b']), vm('b', ['c']), vm('c', ['a']));
    const problems = checkVm(s, vmName('a'));
    expect(problems.map((p) => p.kind)).toEqual(['provider-cycle']);
    expect(problems[0]?.message).toContain('a -> b -> c -> a');
    expect(kinds(s, 'b')).toEqual(['provider-cycle']);
    expect(kinds(snapshot(vm('x', ['a']), vm('a', ['b']), vm('b', ['a'])), 'x')).toEqual(['provider-cycle']);
  });

  it('ignores VMs that the checked VM does not reach', () => {
    expect(kinds(snapshot(vm('a'), vm('broken', ['broken'], { kernel: 'missing' })), 'a')).toEqual([]);
  });
});

describe('aliases: a VM entry that is a second name for a directory', () => {
  const netalias: VmDir = { name: vmName('netalias'), location: 'alias', alias: { to: 'netvm', owner: vmName('netvm') } };
  const aliasSaid = `/cfg/netalias is a symlink that leads to VM netvm's directory /cfg/netvm: one directory, two VM names; remove the symlink and name netvm, not netalias, in providers/net (README: VM directories)`;

  it("is refused as a VM, naming the VM whose directory it leads to and saying what to do; as a provider, on the client, not followed", () => {
    const s = snapshot(vm('netvm'), netalias, vm('app', ['netalias']));
    expect(checkVm(s, vmName('netalias'))).toEqual([{ vm: 'netalias', kind: 'vm-alias', message: `netalias: ${aliasSaid}` }]);
    expect(checkVm(s, vmName('app'))).toEqual([
      { vm: 'app', kind: 'provider-not-a-vm', message: `app: provider "netalias" (/cfg/app/providers/net/netalias) is not a VM directory: ${aliasSaid}` },
    ]);
    expect(vmDirProblem(s, vmName('netalias'))).toBe(aliasSaid);
    expect(() => requireValidVm(s, vmName('app'))).toThrow(expect.objectContaining({ kind: 'invalid-vm', message: expect.stringContaining(aliasSaid) }));
    expect(partitionValidVms(s, [vmName('netvm'), vmName('netalias'), vmName('app')]).valid).toEqual(['netvm']);
  });

  it('of a directory that is no VM\'s own, names the others that lead there and says none is more the VM than another', () => {
    const shared = (name: string, sharedWith: string[]): VmDir => ({ name: vmName(name), location: 'alias', alias: { to: 'store/net\u001b', sharedWith: sharedWith.map(vmName) } });
    const s = snapshot(shared('b', ['a']), shared('c', ['a', 'd']));
    expect(vmDirProblem(s, vmName('b'))).toBe(
      `/cfg/b is a symlink that leads to /cfg/"store/net\\u001b", as a does too: one directory, several VM names; keep one of a, b, remove the others, and name it in providers/net (README: VM directories)`,
    );
    expect(checkVm(s, vmName('c'))).toEqual([
      {
        vm: 'c',
        kind: 'vm-alias',
        message: `c: /cfg/c is a symlink that leads to /cfg/"store/net\\u001b", as a, d do too: one directory, several VM names; keep one of a, c, d, remove the others, and name it in providers/net (README: VM directories)`,
      },
    ]);
  });

  const plain = (name: string): ReachedDir => ({ name: vmName(name), to: name, identity: name, symlink: false });
  const link = (name: string, to: string): ReachedDir => ({ name: vmName(name), to, identity: to, symlink: true });

  it('vmAliases: a symlink to a VM\'s own directory is an alias of that VM; symlinks to one other directory are all aliases, of none; a symlink no other name shares, or a directory, none', () => {
    const aliases = vmAliases([plain('netvm'), link('netalias', 'netvm'), link('a', '.store'), link('b', '.store'), link('lone', 'vms/lone'), link('nested', 'netvm/sub')]);
    expect(aliases).toEqual(
      new Map([
        ['netalias', { to: 'netvm', owner: 'netvm' }],
        ['a', { to: '.store', sharedWith: ['b'] }],
        ['b', { to: '.store', sharedWith: ['a'] }],
      ]),
    );
    // The VM's own entry need not have been read: a real path that is a VM name is its directory.
    expect(vmAliases([link('netalias', 'netvm')])).toEqual(new Map([['netalias', { to: 'netvm', owner: 'netvm' }]]));
    // Identity, not the path: a bind mount reached under another path is the same directory.
    expect(vmAliases([{ ...link('a', '.m1'), identity: '1:2' }, { ...link('b', '.m2'), identity: '1:2' }]).get(vmName('a'))).toEqual({ to: '.m1', sharedWith: ['b'] });
  });

  it('vmAliases (property): no two names it leaves reach one directory; it refuses no directory, and a symlink only where another name reaches its directory too', () => {
    const vmNames = ['v0', 'v1', 'v2', 'v3', 'v4', 'v5'];
    const elsewhere = ['.s0', '.s1', 'store/x'];
    const entries = fc.uniqueArray(fc.tuple(fc.constantFrom(...vmNames), fc.option(fc.constantFrom(...vmNames, ...elsewhere), { nil: undefined })), { selector: ([name]) => name, maxLength: 6 }).map((pairs) => {
      // A symlink leads to a VM name's directory only where that name is a directory (a real path names no symlink).
      const dirs = new Set(pairs.filter(([, to]) => to === undefined).map(([name]) => name));
      return pairs.flatMap(([name, to]) => (to === undefined ? [plain(name)] : vmNames.includes(to) && !dirs.has(to) ? [] : [link(name, to)]));
    });
    fc.assert(
      fc.property(entries, (reached) => {
        const aliases = vmAliases(reached);
        const kept = reached.filter((entry) => !aliases.has(entry.name));
        expect(new Set(kept.map((entry) => entry.identity)).size).toBe(kept.length);
        for (const entry of reached) {
          const shared = reached.some((other) => other.name !== entry.name && other.identity === entry.identity);
          expect(aliases.has(entry.name)).toBe(entry.symlink && (shared || vmNames.includes(entry.to)));
        }
      }),
    );
  });
});

/** Whether any cycle is reachable from root (Kahn's algorithm on the reachable subgraph). */
function hasReachableCycle(edges: Map<string, string[]>, root: string): boolean {
  const reach = new Set([root]);
  const todo = [root];
  for (let n = todo.pop(); n !== undefined; n = todo.pop()) for (const m of edges.get(n) ?? []) if (!reach.has(m)) (reach.add(m), todo.push(m));
  const indegree = new Map([...reach].map((n) => [n, 0]));
  for (const n of reach) for (const m of edges.get(n) ?? []) indegree.set(m, (indegree.get(m) ?? 0) + 1);
  const ready = [...reach].filter((n) => indegree.get(n) === 0);
  let removed = 0;
  for (let n = ready.pop(); n !== undefined; n = ready.pop()) {
    removed++;
    for (const m of edges.get(n) ?? []) {
      const d = (indegree.get(m) ?? 0) - 1;
      indegree.set(m, d);
      if (d === 0) ready.push(m);
    }
  }
  return removed < reach.size;
}

describe('provider graphs (property)', () => {
  const names = ['v0', 'v1', 'v2', 'v3', 'v4', 'v5'];
  const graphs = fc.array(fc.tuple(fc.constantFrom(...names), fc.constantFrom(...names)), { maxLength: 14 });

  it('a cycle is reported exactly when one is reachable; self-providers separately; every reported cycle is real', () => {
    fc.assert(
      fc.property(graphs, fc.constantFrom(...names), (pairs, root) => {
        const listed = new Map<string, Set<string>>(names.map((n) => [n, new Set<string>()]));
        for (const [from, to] of pairs) listed.get(from)?.add(to);
        const s = snapshot(...names.map((n) => vm(n, [...(listed.get(n) ?? [])])));
        const edges = new Map(names.map((n) => [n, [...(listed.get(n) ?? [])].filter((m) => m !== n)]));
        const problems = checkVm(s, vmName(root));
        expect(problems.some((p) => p.kind === 'provider-cycle')).toBe(hasReachableCycle(edges, root));
        const reached = new Set([root]);
        for (let grew = true; grew; ) {
          grew = false;
          for (const n of [...reached]) for (const m of edges.get(n) ?? []) if (!reached.has(m)) (reached.add(m), (grew = true));
        }
        const selfs = names.filter((n) => reached.has(n) && listed.get(n)?.has(n));
        expect(problems.filter((p) => p.kind === 'self-provider').map((p) => p.vm).sort()).toEqual(selfs.sort());
        expect(problems.every((p) => p.kind === 'provider-cycle' || p.kind === 'self-provider')).toBe(true);
        for (const cycle of providerCycles(edges, root)) {
          cycle.forEach((n, i) => expect(edges.get(n)).toContain(cycle[(i + 1) % cycle.length]));
          expect(new Set(cycle).size).toBe(cycle.length);
        }
      }),
    );
  });
});

describe('partitionValidVms (property)', () => {
  const names = ['v0', 'v1', 'v2', 'v3', 'v4'];
  const vmsOf = fc.array(fc.tuple(fc.constantFrom(...names, 'gone'), fc.constantFrom(...names, 'gone'), fc.boolean()), { maxLength: 10 });

  it('splits the names given, in their order, exactly as requireValidVm judges each one', () => {
    fc.assert(
      fc.property(vmsOf, fc.array(fc.constantFrom(...names, 'gone'), { maxLength: 8 }), (pairs, asked) => {
        const listed = new Map<string, Set<string>>(names.map((n) => [n, new Set<string>()]));
        const noKernel = new Set<string>();
        for (const [from, to, broken] of pairs) {
          listed.get(from)?.add(to);
          if (broken) noKernel.add(to);
        }
        const s = snapshot(...names.map((n) => vm(n, [...(listed.get(n) ?? [])], noKernel.has(n) ? { kernel: 'missing' } : {})));
        const { valid, invalid } = partitionValidVms(s, asked.map(vmName));
        const judged = asked.map((name) => {
          try {
            requireValidVm(s, vmName(name));
            return { name, valid: true, message: '' };
          } catch (error) {
            return { name, valid: false, message: (error as ConfigError).message };
          }
        });
        expect(valid).toEqual(judged.filter((j) => j.valid).map((j) => j.name));
        expect(invalid.map((entry) => ({ name: entry.name, valid: false, message: entry.error.message }))).toEqual(judged.filter((j) => !j.valid));
        for (const entry of invalid) expect(entry.error.kind).toBe('invalid-vm');
      }),
    );
  });
});

describe('vmDirProblem', () => {
  it('is nothing for a VM directory, however invalid its contents; says why for anything else', () => {
    const s = snapshot(vm('netvm', [], { kernel: 'missing', blk: { state: 'missing' } }), { name: vmName('notes'), location: 'not-a-directory' }, {
      name: vmName('away'),
      location: 'escapes-config-dir',
      reason: '/etc',
    });
    expect(vmDirProblem(s, vmName('netvm'))).toBeUndefined();
    expect(vmDirProblem(s, vmName('netvmm'))).toBe('no directory /cfg/netvmm');
    expect(vmDirProblem(s, vmName('notes'))).toBe('/cfg/notes is not a directory');
    expect(vmDirProblem(s, vmName('away'))).toMatch(/^\/cfg\/away is a symlink that leads outside the config dir \(to \/etc\)/);
  });
});

describe('configDirFrom', () => {
  it('prefers the flag, then a non-empty env var, then Spectrum default', () => {
    expect(configDirFrom('/flag', { SPECTRUM_CONFIG_DIR: '/env' })).toBe('/flag');
    expect(configDirFrom(undefined, { SPECTRUM_CONFIG_DIR: '/env' })).toBe('/env');
    expect(configDirFrom(undefined, { SPECTRUM_CONFIG_DIR: '' })).toBe('/ext/svc/data');
    expect(configDirFrom(undefined, {})).toBe('/ext/svc/data');
  });
});


describe('a config dir that is the root', () => {
  it('gives its paths one slash (/appvm-lynx, not //appvm-lynx)', () => {
    const root: ConfigSnapshot = { dir: '/', vms: new Map([[vmName('app'), vm('app', ['netvm', 'gone'], { kernel: 'missing' })], [vmName('netvm'), vm('netvm')]]) };
    expect(checkVm(root, vmName('ghost')).map((p) => p.message)).toEqual(['ghost: no VM directory /ghost; VMs are the directories of /']);
    expect(vmDirProblem(root, vmName('ghost'))).toBe('no directory /ghost');
    expect(checkVm(root, vmName('app')).map((p) => p.message)).toEqual([
      'app: no kernel: /app/vmlinux is missing; put the uncompressed Linux kernel image for the VM there',
      'app: provider "gone" (/app/providers/net/gone) has no VM directory /gone; create that VM or remove the file',
    ]);
    const dangling: ConfigSnapshot = { dir: '/', vms: new Map([[vmName('dl'), { name: vmName('dl'), location: 'dangling-symlink' }]]) };
    expect(checkVm(dangling, vmName('dl')).map((p) => p.message)).toEqual(['dl: /dl is a symlink to nothing']);
  });
});
