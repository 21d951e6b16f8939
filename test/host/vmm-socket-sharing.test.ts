import { link, mkdir, mkdtemp, readFile, realpath, rm, symlink } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAttachChoice } from '../../host/attach-mode.js';
import type { ConfigSnapshot, VmDir } from '../../host/config.js';
import { keptAttach, switchedVmmSides } from '../../host/kept-attach.js';
import { type Link, type LinkState, emptyState } from '../../host/link-state.js';
import type { ClientId } from '../../shared/client-id.js';
import { runSocketSharing } from '../../host/linker.js';
import { sameSocketPath, socketKey, vmmPort } from '../../host/vmm-port.js';
import { type VmmSide, recordedSides, sharedSocketFailures, vmmSidesOf } from '../../host/vmm-socket-sharing.js';
import { vmName } from '../../host/vm-name.js';

const [lynx, catgirl, netvm] = [vmName('appvm-lynx'), vmName('appvm-catgirl'), vmName('netvm')];
const qemu = (vm: typeof lynx): VmmSide => ({ kind: 'qemu', vm });
/** A template with {vm}, and one without. */
const perVm = (_kind: string, vm: string): string => `/run/vm/${vm}/qmp.sock`;
const fixed = (): string => '/run/one.sock';

/** A VM directory with a kernel, a disk and `providers`, as the config reader gives one. */
const vmDir = (name: string, providers: readonly string[] = []): VmDir => ({
  name: vmName(name),
  location: 'directory',
  kernel: 'file',
  blk: { state: 'directory', entries: [{ name: 'root.img', type: 'file' }] },
  providers: { state: 'directory', entries: providers.map((provider) => ({ name: provider, type: 'file' as const })) },
});
/** lynx and catgirl, each with netvm for provider. */
const config: ConfigSnapshot = { dir: '/cfg', vms: new Map([lynx, catgirl, netvm].map((name) => [name, vmDir(name, name === netvm ? [] : [netvm])])) };

describe('sharedSocketFailures', () => {
  it('refuses a client whose two sides, or whose side and an earlier client\'s, a path gives one VMM: the earlier keeps it', () => {
    expect(sharedSocketFailures([{ client: lynx, sides: [qemu(lynx), qemu(netvm)] }], perVm)).toEqual(new Map());
    const both = sharedSocketFailures([{ client: lynx, sides: [qemu(lynx), qemu(netvm)] }], fixed);
    expect([...both.keys()]).toEqual([lynx]);
    expect(both.get(lynx)).toMatchObject({ name: 'CliError', exitCode: 2, message: expect.stringMatching(/^--qmp-socket gives VMs appvm-lynx and netvm one socket path, \/run\/one\.sock: /) });
    const two = sharedSocketFailures([{ client: catgirl, sides: [qemu(catgirl)] }, { client: lynx, sides: [qemu(lynx)] }], fixed);
    expect([...two.keys()]).toEqual([lynx]);
    expect(two.get(lynx)?.message).toMatch(/^--qmp-socket gives VMs appvm-catgirl and appvm-lynx one socket path/);
    // A refused client claims nothing: the next one through the path is fine.
    const after = sharedSocketFailures([{ client: lynx, sides: [qemu(lynx), qemu(netvm)] }, { client: catgirl, sides: [qemu(catgirl)] }], fixed);
    expect([...after.keys()]).toEqual([lynx]);
  });

  it('lets one VM through a fixed path, however many of its links use it, and passes over a path there is none of', () => {
    expect(sharedSocketFailures([{ client: lynx, sides: [qemu(netvm)] }, { client: catgirl, sides: [qemu(netvm)] }], fixed)).toEqual(new Map());
    expect(sharedSocketFailures([{ client: lynx, sides: [qemu(lynx), qemu(netvm)] }], () => undefined)).toEqual(new Map());
  });

  it('names both options where a path of each meets', () => {
    const failures = sharedSocketFailures([{ client: lynx, sides: [qemu(lynx), { kind: 'cloud-hypervisor', vm: netvm }] }], fixed);
    expect(failures.get(lynx)?.message).toMatch(/^--qmp-socket and --ch-socket give VMs appvm-lynx and netvm one socket path/);
  });
});

describe('the socket the state records for another VM', () => {
  /** lynx -> netvm as the state records it: lynx's client side by QEMU at its own socket, netvm's by cloud-hypervisor. */
  const lynxLink: Link = {
    client: lynx,
    provider: netvm,
    id: 64838 as ClientId,
    attached: { client: 'qemu', provider: 'cloud-hypervisor', clientSocket: '/run/vm/appvm-lynx/qmp.sock', providerSocket: '/run/vm/netvm/ch.sock' },
  };
  const catgirlLink: Link = { client: catgirl, provider: netvm, id: 38997 as ClientId, attached: { client: 'qemu', provider: 'cloud-hypervisor', providerSocket: '/run/vm/netvm/ch.sock' } };

  it('gives each VM side recorded with a socket once (a provider\'s, recorded with each of its links, too)', () => {
    expect(recordedSides([lynxLink, catgirlLink, { client: catgirl, provider: lynx, id: 1 as ClientId }]).map(({ side, path }) => ({ side, path }))).toEqual([
      { side: qemu(lynx), path: '/run/vm/appvm-lynx/qmp.sock' },
      { side: { kind: 'cloud-hypervisor', vm: netvm }, path: '/run/vm/netvm/ch.sock' },
    ]);
  });

  it('refuses a client whose side a path gives the socket recorded for another VM\'s side, naming both; its own recorded socket passes', () => {
    const recorded = recordedSides([lynxLink]);
    const atLynx = (): string => '/run/vm/appvm-lynx/qmp.sock';
    const failures = sharedSocketFailures([{ client: catgirl, sides: [qemu(catgirl)] }], atLynx, undefined, recorded);
    expect([...failures.keys()]).toEqual([catgirl]);
    expect(failures.get(catgirl)).toMatchObject({
      name: 'CliError',
      exitCode: 2,
      message: expect.stringMatching(
        /^--qmp-socket gives VM appvm-catgirl the socket path \/run\/vm\/appvm-lynx\/qmp\.sock, which the state records for appvm-lynx \(link appvm-lynx -> netvm\): give appvm-catgirl its own \(\{vm\} in the template\) \(README: VMM socket paths\)$/,
      ),
    });
    expect(failures.get(catgirl)?.message).not.toContain('\n');
    // lynx itself at its recorded socket, and catgirl at its own: fine.
    expect(sharedSocketFailures([{ client: lynx, sides: [qemu(lynx)] }], atLynx, undefined, recorded)).toEqual(new Map());
    expect(sharedSocketFailures([{ client: catgirl, sides: [qemu(catgirl)] }], perVm, undefined, recorded)).toEqual(new Map());
    // A provider's recorded socket counts as well, and one spelled otherwise that keyOf makes one.
    const atNetvm = sharedSocketFailures([{ client: catgirl, sides: [qemu(catgirl)] }], () => '/run/vm//netvm/ch.sock', (path) => path.replaceAll('//', '/'), recorded);
    expect(atNetvm.get(catgirl)?.message).toMatch(/^--qmp-socket gives VM appvm-catgirl the socket path \/run\/vm\/\/netvm\/ch\.sock, which leads to \/run\/vm\/netvm\/ch\.sock, which the state records for netvm /);
  });

  it('says what is wrong and the one thing to do in about 200 characters besides its paths, sending to the README section that says how to take a stale record off the socket', async () => {
    const atLynx = (): string => '/run/vm/appvm-lynx/qmp.sock';
    const byClient = sharedSocketFailures([{ client: catgirl, sides: [qemu(catgirl)] }], atLynx, undefined, recordedSides([lynxLink]));
    const message = byClient.get(catgirl)?.message ?? '';
    expect(message.length - atLynx().length).toBeLessThanOrEqual(200);
    const two = sharedSocketFailures([{ client: catgirl, sides: [qemu(catgirl)] }, { client: lynx, sides: [qemu(lynx)] }], () => '/run/one.sock').get(lynx)?.message ?? '';
    expect(two).toMatch(/: give each its own \({vm} in the template\) \(README: VMM socket paths\)$/);
    expect(two.length - '/run/one.sock'.length).toBeLessThanOrEqual(200);
    // What the line leaves out (the VM it records stopped or moved: unlink it, or link its record's client where it runs now), the README says there.
    const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
    const section = readme.split(/^#### VMM socket paths$/m)[1]?.split(/^#/m)[0] ?? '';
    expect(section).toContain('take its record off that socket first: `unlink` that VM (it stopped)');
    expect(section).toContain('through that path (`--attach VM=MODE`)');
  });

  it('refuses a VM at its own recorded socket that the state records for another VM too (written before the check) without telling it to take its own path: it says which record to set right', () => {
    // catgirl hot-plugged into lynx's QEMU by a run before the check: both recorded at lynx's socket.
    const wrong: Link = { client: catgirl, provider: netvm, id: 38997 as ClientId, attached: { client: 'qemu', provider: 'none', clientSocket: '/run/vm/appvm-lynx/qmp.sock' } };
    const recorded = recordedSides([wrong, lynxLink]);
    const failures = sharedSocketFailures([{ client: lynx, sides: [qemu(lynx)] }], perVm, undefined, recorded);
    expect([...failures.keys()]).toEqual([lynx]);
    const message = failures.get(lynx)?.message ?? '';
    expect(message).toMatch(
      /^--qmp-socket gives VM appvm-lynx the socket path \/run\/vm\/appvm-lynx\/qmp\.sock, which the state records for VMs appvm-lynx and appvm-catgirl \(link appvm-catgirl -> netvm\): one record is wrong; link appvm-catgirl first at its own socket path, then this one \(README: VMM socket paths\)$/,
    );
    expect(message).not.toContain('give appvm-lynx its own');
    expect(message).not.toContain('\n');
    // A provider's side recorded there: the link to run again is its client's.
    const providerWrong: Link = { client: catgirl, provider: netvm, id: 38997 as ClientId, attached: { client: 'none', provider: 'qemu', providerSocket: '/run/vm/appvm-lynx/qmp.sock' } };
    const byProvider = sharedSocketFailures([{ client: lynx, sides: [qemu(lynx)] }], perVm, undefined, recordedSides([providerWrong, lynxLink]));
    expect(byProvider.get(lynx)?.message).toContain('link appvm-catgirl first with netvm at its own socket path');
  });

  it('refuses it in a run (runSocketSharing given the state before it): a later run pinning a VM at a fixed path of another VM\'s socket', () => {
    const attach = ['appvm-catgirl=qemu', 'netvm=none'];
    const vmm = vmmPort(parseAttachChoice(attach), { qmpSocket: '/run/vm/appvm-lynx/qmp.sock', chSocket: '/run/vm/{vm}/ch.sock' });
    const before: LinkState = { ...emptyState(), links: [lynxLink] };
    const kept = keptAttach(parseAttachChoice(attach), []);
    const failures = runSocketSharing([catgirl], config, kept, { vmm }, before);
    expect([...failures].map(([vm, error]) => [vm, error.exitCode])).toEqual([[catgirl, 2]]);
    expect(failures.get(catgirl)?.message).toContain('which the state records for appvm-lynx');
    // Without the state's links, the one VM through the fixed path is fine (as before).
    expect(runSocketSharing([catgirl], config, kept, { vmm }, emptyState())).toEqual(new Map());
  });
});

describe('vmmSidesOf', () => {
  it('gives the sides of a client\'s links that the run attaches through a VMM', () => {
    const kept = keptAttach(parseAttachChoice(['appvm-lynx=qemu', 'netvm=cloud-hypervisor', 'appvm-catgirl=netns']), []);
    expect(vmmSidesOf(lynx, [netvm, catgirl], kept)).toEqual([qemu(lynx), { kind: 'cloud-hypervisor', vm: netvm }, qemu(lynx)]);
  });
});

describe('two VMs at one socket however their paths spell it', () => {
  /** The run's refusals (runSocketSharing) with the real port's templates, --attach as given. */
  const refused = (qmpSocket: string, chSocket: string, attach: readonly string[], vms = [lynx]): Map<string, string> => {
    const vmm = vmmPort(parseAttachChoice([...attach]), { qmpSocket, chSocket });
    const failures = runSocketSharing(vms, config, keptAttach(parseAttachChoice([...attach]), []), { vmm });
    return new Map([...failures].map(([vm, error]) => [vm, error.message]));
  };

  it('refuses paths that lead to one socket (`//`, `./`, a relative one, a symlinked directory), as the same text is; distinct sockets pass', async () => {
    const dir = await realpath(await mkdtemp(join(tmpdir(), 'socket-sharing-')));
    try {
      await mkdir(join(dir, 'shared'));
      await symlink('shared', join(dir, lynx));
      await symlink('shared', join(dir, catgirl));
      await mkdir(join(dir, netvm));
      const ends = ['appvm-lynx=qemu', 'netvm=cloud-hypervisor'];
      // Both ends of lynx's link: --qmp-socket and --ch-socket spelling one path otherwise.
      expect(refused(`${dir}/one.sock`, `${dir}//one.sock`, ends)).toEqual(
        new Map([[lynx, expect.stringMatching(new RegExp(`^--qmp-socket and --ch-socket give VMs appvm-lynx and netvm one socket path, ${dir}/one\\.sock and ${dir}//one\\.sock, which lead to one socket: give each its own`))]]),
      );
      expect([...refused(`${dir}/one.sock`, `${dir}/./one.sock`, ends).keys()]).toEqual([lynx]);
      const cwd = process.cwd();
      process.chdir(dir);
      try {
        expect([...refused('one.sock', `${dir}/one.sock`, ends).keys()]).toEqual([lynx]);
      } finally {
        process.chdir(cwd);
      }
      // Two clients whose {vm} directories are one: the later refused, the path each has said, and the one socket.
      const twoClients = refused(`${dir}/{vm}/qmp.sock`, `${dir}/{vm}/ch.sock`, ['qemu', 'netvm=netns'], [lynx, catgirl]);
      expect(twoClients).toEqual(
        new Map([[catgirl, expect.stringMatching(new RegExp(`^--qmp-socket gives VMs appvm-lynx and appvm-catgirl one socket path, ${dir}/appvm-lynx/qmp\\.sock and ${dir}/appvm-catgirl/qmp\\.sock, which lead to one socket, ${dir}/shared/qmp\\.sock: `))]]),
      );
      // Distinct sockets: netvm's own directory, and another name in one directory.
      expect(refused(`${dir}/{vm}/qmp.sock`, `${dir}/{vm}/ch.sock`, ends)).toEqual(new Map());
      expect(refused(`${dir}/shared/one.sock`, `${dir}/shared/two.sock`, ends)).toEqual(new Map());
      // A directory not there: the text alone says (distinct texts pass; the attach says what it finds).
      expect(refused(`${dir}/none/{vm}/../qmp.sock`, `${dir}/none/{vm}/../ch.sock`, ['qemu'], [lynx, catgirl])).toEqual(new Map());
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses two paths that are hard links of one socket (a connect through either reaches its one listener), by its device and inode; another socket passes', async () => {
    const dir = await realpath(await mkdtemp(join(tmpdir(), 'socket-sharing-')));
    const server = createServer();
    const other = createServer();
    try {
      await Promise.all([lynx, netvm, catgirl].map((vm) => mkdir(join(dir, vm))));
      // netvm's socket, hard-linked into appvm-lynx's directory too; appvm-catgirl's a socket of its own.
      await new Promise<void>((resolve) => server.listen(join(dir, netvm, 'qmp.sock'), resolve));
      await new Promise<void>((resolve) => other.listen(join(dir, catgirl, 'qmp.sock'), resolve));
      await link(join(dir, netvm, 'qmp.sock'), join(dir, lynx, 'qmp.sock'));
      expect(socketKey(join(dir, lynx, 'qmp.sock'))).toBe(socketKey(join(dir, `${netvm}//qmp.sock`)));
      expect(socketKey(join(dir, catgirl, 'qmp.sock'))).not.toBe(socketKey(join(dir, netvm, 'qmp.sock')));
      // Nothing there yet: the path with its directory resolved, as before.
      expect(socketKey(`${dir}/${netvm}/./none.sock`)).toBe(`${dir}/${netvm}/none.sock`);
      expect(refused(`${dir}/{vm}/qmp.sock`, `${dir}/{vm}/ch.sock`, ['qemu'])).toEqual(
        new Map([[lynx, expect.stringMatching(new RegExp(`^--qmp-socket gives VMs appvm-lynx and netvm one socket path, ${dir}/appvm-lynx/qmp\\.sock and ${dir}/netvm/qmp\\.sock, which lead to one socket: give each its own`))]]),
      );
      expect(refused(`${dir}/{vm}/qmp.sock`, `${dir}/{vm}/ch.sock`, ['appvm-catgirl=qemu', 'netvm=qemu'], [catgirl])).toEqual(new Map());
    } finally {
      server.close();
      other.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('takes two paths for one socket in the kept-socket check (sameSocketPath, a side not moved) exactly where the sharing check does (socketKey): a hard link of the socket, too, which the two took otherwise', async () => {
    const dir = await realpath(await mkdtemp(join(tmpdir(), 'socket-sharing-')));
    const server = createServer();
    const other = createServer();
    try {
      await Promise.all([lynx, netvm, catgirl, 'shared'].map((name) => mkdir(join(dir, name))));
      await new Promise<void>((resolve) => server.listen(join(dir, lynx, 'qmp.sock'), resolve));
      await new Promise<void>((resolve) => other.listen(join(dir, catgirl, 'qmp.sock'), resolve));
      await link(join(dir, lynx, 'qmp.sock'), join(dir, netvm, 'qmp.sock'));
      await symlink(join(dir, lynx), join(dir, 'to-lynx'));
      const recorded = join(dir, lynx, 'qmp.sock');
      /** lynx's client side recorded at `recorded`, as qemu. */
      const at = (socket: string): { client: 'qemu'; provider: 'netns'; clientSocket: string } => ({ client: 'qemu', provider: 'netns', clientSocket: socket });
      const cases = [
        { path: join(dir, netvm, 'qmp.sock'), one: true }, // a hard link of lynx's socket
        { path: `${dir}/${lynx}/./qmp.sock`, one: true },
        { path: join(dir, 'to-lynx', 'qmp.sock'), one: true },
        { path: join(dir, catgirl, 'qmp.sock'), one: false }, // another socket
        { path: join(dir, 'shared', 'none.sock'), one: false }, // nothing there
      ];
      for (const { path, one } of cases) {
        // The sharing check: catgirl given `path` while the state records lynx's side at `recorded`.
        const shared = sharedSocketFailures([{ client: catgirl, sides: [qemu(catgirl)] }], () => path, socketKey, [{ side: qemu(lynx), path: recorded, link: { client: lynx, provider: netvm, id: 1 as ClientId } }]);
        expect(shared.has(catgirl), path).toBe(one);
        // The kept-socket check: lynx's side kept in qemu, its template now giving `path`: moved where it is another socket.
        expect(sameSocketPath(recorded, path), path).toBe(one);
        expect(switchedVmmSides(at(recorded), at(path), sameSocketPath), path).toEqual(one ? [] : ['client']);
      }
    } finally {
      server.close();
      other.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
