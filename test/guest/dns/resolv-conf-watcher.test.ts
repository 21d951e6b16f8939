// Reading --resolv-conf: a regular file (or a symlink to one, as /etc/resolv.conf often is) gives
// its nameservers; anything else gives none, with the reason for the warning, and never blocks.
// Following it: a change to what the path resolves to (the file, a symlink's target however far
// along a chain, a folder on the way) is seen, with real files and inotify; watches are as many
// as the way has folders, however often it changes.
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, closeSync, constants, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ResolvConfWatcher, readResolvConf } from '../../../guest/dns/resolv-conf-watcher.js';
import { eventually } from '../../harness/eventually.js';
import { compiled } from './dns-topology.js';

describe('reading resolv.conf', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'resolv-conf-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('reads the nameservers of a regular file, also through a symlink', async () => {
    writeFileSync(join(dir, 'real.conf'), 'nameserver 192.0.2.53\n');
    symlinkSync(join(dir, 'real.conf'), join(dir, 'resolv.conf'));
    const conf = await readResolvConf(join(dir, 'resolv.conf'));
    expect(conf.error).toBeUndefined();
    expect(conf.upstreams.map((upstream) => upstream.address)).toEqual(['192.0.2.53']);
  });

  it('gives no nameservers, and says why, for a FIFO: at once, not once a writer comes', async () => {
    // Opened for reading as a file, a FIFO waits for a writer: the agent never finished starting.
    const fifo = join(dir, 'resolv.fifo');
    execFileSync('mkfifo', [fifo]);
    let timer: NodeJS.Timeout | undefined;
    try {
      const conf = await Promise.race([
        readResolvConf(fifo),
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('readResolvConf still waits on the FIFO after 5 s')), 5000))),
      ]);
      expect(conf).toEqual({ upstreams: [], skipped: [], legacyIpv4: [], withoutZone: [], indented: [], error: `${fifo} is not a regular file but a FIFO` });
    } finally {
      clearTimeout(timer);
      // A read still blocked in open(2) (the bug) is let go: a writer came.
      try {
        closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
      } catch {
        // no reader waiting: ENXIO
      }
    }
  });

  it.each([
    ['/dev/zero', 'a character device'],
    ['/dev/null', 'a character device'],
  ])('gives no nameservers, and says why, for %s (%s), rather than reading it as text', async (path, kind) => {
    // /dev/zero read as a file of NUL bytes: no nameserver line, zero upstreams and no warning.
    expect(await readResolvConf(path)).toEqual({ upstreams: [], skipped: [], legacyIpv4: [], withoutZone: [], indented: [], error: `${path} is not a regular file but ${kind}` });
  });

  it('does not open a device to find out: one whose open fails is still said to be a device', async () => {
    // Opening a device acts (a watchdog's open arms it): the kind is read before any open. A
    // character device of a major no driver has: its open fails (ENXIO, or EACCES on a nodev
    // mount), and that failure was the warning.
    const device = join(dir, 'no-driver');
    execFileSync('mknod', [device, 'c', '4000', '0']);
    expect(await readResolvConf(device)).toEqual({ upstreams: [], skipped: [], legacyIpv4: [], withoutZone: [], indented: [], error: `${device} is not a regular file but a character device` });
  });

  it('gives no nameservers, and says why, for a directory', async () => {
    mkdirSync(join(dir, 'resolv.conf'));
    expect(await readResolvConf(join(dir, 'resolv.conf'))).toEqual({ upstreams: [], skipped: [], legacyIpv4: [], withoutZone: [], indented: [], error: `${join(dir, 'resolv.conf')} is not a regular file but a directory` });
  });

  it('gives no nameservers, and says why, for a missing file', async () => {
    const conf = await readResolvConf(join(dir, 'missing.conf'));
    expect(conf.upstreams).toEqual([]);
    expect(conf.error).toMatch(/ENOENT/);
  });
});

/** Replace `path` by rename, as connman and resolvconf do (and `ln -sfn` a link): made aside, renamed over. */
function replaceByRename(path: string, make: (aside: string) => void): void {
  const aside = `${path}.new`;
  make(aside);
  renameSync(aside, path);
}

const nameservers = (...addresses: string[]): string => addresses.map((address) => `nameserver ${address}\n`).join('');

/** inotify watches this process holds (vitest runs each test file in a process of its own). */
function inotifyWatches(): number {
  let count = 0;
  for (const fd of readdirSync('/proc/self/fdinfo')) {
    try {
      count += readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').split('\n').filter((line) => line.startsWith('inotify wd:')).length;
    } catch {
      // closed meanwhile (readdir's own fd)
    }
  }
  return count;
}

describe('following resolv.conf where it resolves to', () => {
  let dir: string;
  const watchers: ResolvConfWatcher[] = [];
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'resolv-follow-'));
  });
  afterEach(() => {
    for (const watcher of watchers.splice(0)) watcher.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /**
   * Follows `path` as the forwarder does: at each change, the file read again (reads one after
   * another). What was read last, and how many changes were said. `checkMs`: the watcher's
   * look at the path for a change its watches missed (its default unless given).
   */
  function follow(path: string, checkMs?: number): { changes: number; read: readonly string[] | string; errors: string[] } {
    const seen: { changes: number; read: readonly string[] | string; errors: string[] } = { changes: 0, read: 'nothing read yet', errors: [] };
    let reading = Promise.resolve();
    watchers.push(
      new ResolvConfWatcher(
        path,
        () => {
          seen.changes += 1;
          reading = reading.then(async () => {
            const conf = await readResolvConf(path);
            seen.read = conf.error ?? conf.upstreams.map((upstream) => upstream.address);
          });
        },
        (error) => seen.errors.push(error.message),
        10,
        checkMs,
      ),
    );
    return seen;
  }

  /** Waits for a change said, read as `addresses`. */
  async function followed(seen: { read: readonly string[] | string }, addresses: readonly string[]): Promise<void> {
    await eventually(`a change read as ${addresses.join(', ')} (last read: ${JSON.stringify(seen.read)})`, async () => JSON.stringify(seen.read) === JSON.stringify(addresses), 5000);
    expect(seen.read).toEqual(addresses);
  }

  /** No change said for a while: nothing seen, and no loop. */
  async function quiet(seen: { changes: number }): Promise<void> {
    const changes = seen.changes;
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(seen.changes).toBe(changes);
  }

  it("sees a symlink's target in the same folder replaced by rename, and written in place", async () => {
    writeFileSync(join(dir, 'resolv.real'), nameservers('192.0.2.1'));
    symlinkSync('resolv.real', join(dir, 'resolv.conf'));
    const seen = follow(join(dir, 'resolv.conf'));
    replaceByRename(join(dir, 'resolv.real'), (aside) => writeFileSync(aside, nameservers('192.0.2.2')));
    await followed(seen, ['192.0.2.2']);
    writeFileSync(join(dir, 'resolv.real'), nameservers('192.0.2.3'));
    await followed(seen, ['192.0.2.3']);
    expect(seen.errors).toEqual([]);
  });

  it('follows a chain of relative symlinks through other folders, and a link of it re-pointed', async () => {
    // etc/resolv.conf -> ../run/resolv.conf -> resolvconf/resolv.conf (a file in run/resolvconf)
    for (const folder of ['etc', 'run/resolvconf', 'other']) mkdirSync(join(dir, folder), { recursive: true });
    writeFileSync(join(dir, 'run/resolvconf/resolv.conf'), nameservers('192.0.2.1'));
    symlinkSync('resolvconf/resolv.conf', join(dir, 'run/resolv.conf'));
    symlinkSync('../run/resolv.conf', join(dir, 'etc/resolv.conf'));
    const seen = follow(join(dir, 'etc/resolv.conf'));
    replaceByRename(join(dir, 'run/resolvconf/resolv.conf'), (aside) => writeFileSync(aside, nameservers('192.0.2.2')));
    await followed(seen, ['192.0.2.2']);
    writeFileSync(join(dir, 'run/resolvconf/resolv.conf'), nameservers('192.0.2.3'));
    await followed(seen, ['192.0.2.3']);
    // The middle link re-pointed elsewhere, as `ln -sfn` does it: the new target followed...
    writeFileSync(join(dir, 'other/resolv.conf'), nameservers('192.0.2.4'));
    replaceByRename(join(dir, 'run/resolv.conf'), (aside) => symlinkSync('../other/resolv.conf', aside));
    await followed(seen, ['192.0.2.4']);
    writeFileSync(join(dir, 'other/resolv.conf'), nameservers('192.0.2.5'));
    await followed(seen, ['192.0.2.5']);
    // ...and the old one, no longer on the way, no longer watched.
    writeFileSync(join(dir, 'run/resolvconf/resolv.conf'), nameservers('192.0.2.6'));
    await quiet(seen);
    expect(seen.read).toEqual(['192.0.2.5']);
  });

  it("follows the target's folder removed or moved away, and made again", async () => {
    mkdirSync(join(dir, 'run/resolvconf'), { recursive: true });
    writeFileSync(join(dir, 'run/resolvconf/resolv.conf'), nameservers('192.0.2.1'));
    // An absolute target, as /etc/resolv.conf -> /run/resolvconf/resolv.conf.
    symlinkSync(join(dir, 'run/resolvconf/resolv.conf'), join(dir, 'resolv.conf'));
    const seen = follow(join(dir, 'resolv.conf'));
    rmSync(join(dir, 'run/resolvconf'), { recursive: true });
    await eventually('the folder gone seen', async () => typeof seen.read === 'string' && /ENOENT/.test(seen.read), 5000);
    mkdirSync(join(dir, 'run/resolvconf'));
    writeFileSync(join(dir, 'run/resolvconf/resolv.conf'), nameservers('192.0.2.2'));
    await followed(seen, ['192.0.2.2']);
    // The new folder is the one watched now.
    writeFileSync(join(dir, 'run/resolvconf/resolv.conf'), nameservers('192.0.2.3'));
    await followed(seen, ['192.0.2.3']);
    // Moved away, its watch would go on seeing it where it went: one made in its place is watched.
    renameSync(join(dir, 'run/resolvconf'), join(dir, 'run/old'));
    await eventually('the folder moved seen', async () => typeof seen.read === 'string' && /ENOENT/.test(seen.read), 5000);
    mkdirSync(join(dir, 'run/resolvconf'));
    writeFileSync(join(dir, 'run/resolvconf/resolv.conf'), nameservers('192.0.2.4'));
    await followed(seen, ['192.0.2.4']);
    writeFileSync(join(dir, 'run/resolvconf/resolv.conf'), nameservers('192.0.2.5'));
    await followed(seen, ['192.0.2.5']);
    // Both at once, before the watcher looks again: the folder there then is another one.
    rmSync(join(dir, 'run/resolvconf'), { recursive: true });
    mkdirSync(join(dir, 'run/resolvconf'));
    writeFileSync(join(dir, 'run/resolvconf/resolv.conf'), nameservers('192.0.2.6'));
    await followed(seen, ['192.0.2.6']);
    writeFileSync(join(dir, 'run/resolvconf/resolv.conf'), nameservers('192.0.2.7'));
    await followed(seen, ['192.0.2.7']);
    renameSync(join(dir, 'run/resolvconf'), join(dir, 'run/older'));
    mkdirSync(join(dir, 'run/resolvconf'));
    writeFileSync(join(dir, 'run/resolvconf/resolv.conf'), nameservers('192.0.2.8'));
    await followed(seen, ['192.0.2.8']);
    writeFileSync(join(dir, 'run/resolvconf/resolv.conf'), nameservers('192.0.2.9'));
    await followed(seen, ['192.0.2.9']);
    expect(seen.errors).toEqual([]);
  });

  it('follows a symlink to nothing once its target comes, folders and all', async () => {
    mkdirSync(join(dir, 'etc'));
    symlinkSync('../run/netvm/resolv.conf', join(dir, 'etc/resolv.conf'));
    expect((await readResolvConf(join(dir, 'etc/resolv.conf'))).error).toMatch(/ENOENT/);
    const seen = follow(join(dir, 'etc/resolv.conf'));
    mkdirSync(join(dir, 'run'));
    mkdirSync(join(dir, 'run/netvm'));
    replaceByRename(join(dir, 'run/netvm/resolv.conf'), (aside) => writeFileSync(aside, nameservers('192.0.2.1')));
    await followed(seen, ['192.0.2.1']);
    writeFileSync(join(dir, 'run/netvm/resolv.conf'), nameservers('192.0.2.2'));
    await followed(seen, ['192.0.2.2']);
  });

  it("resolves a link's `..` from the folder the link is in, not along the path: through a symlinked folder", async () => {
    // etc -> real/etc; real/etc/resolv.conf -> ../run/resolv.conf is real/run/resolv.conf, as
    // the kernel goes, not run/resolv.conf (there as a decoy).
    for (const folder of ['real/etc', 'real/run', 'run', 'real2/etc']) mkdirSync(join(dir, folder), { recursive: true });
    writeFileSync(join(dir, 'run/resolv.conf'), nameservers('192.0.2.99'));
    writeFileSync(join(dir, 'real/run/resolv.conf'), nameservers('192.0.2.1'));
    symlinkSync('../run/resolv.conf', join(dir, 'real/etc/resolv.conf'));
    symlinkSync('real/etc', join(dir, 'etc'));
    const seen = follow(join(dir, 'etc/resolv.conf'));
    writeFileSync(join(dir, 'real/run/resolv.conf'), nameservers('192.0.2.2'));
    await followed(seen, ['192.0.2.2']);
    // The symlinked folder re-pointed: what the path resolves to changes with it.
    writeFileSync(join(dir, 'real2/etc/resolv.conf'), nameservers('192.0.2.3'));
    replaceByRename(join(dir, 'etc'), (aside) => symlinkSync('real2/etc', aside));
    await followed(seen, ['192.0.2.3']);
  });

  it("reads a `..` in the path given after a symlinked folder as the kernel does: the parent of where the link leads, not the path's", async () => {
    // etc/netvm -> ../run/netvm: etc/netvm/../resolv.conf is run/resolv.conf to the kernel (and so
    // to the reads), etc/resolv.conf (a decoy) only to a path tidied up as text.
    for (const folder of ['etc', 'run/netvm']) mkdirSync(join(dir, folder), { recursive: true });
    symlinkSync('../run/netvm', join(dir, 'etc/netvm'));
    writeFileSync(join(dir, 'etc/resolv.conf'), nameservers('192.0.2.99'));
    writeFileSync(join(dir, 'run/resolv.conf'), nameservers('192.0.2.1'));
    const path = `${join(dir, 'etc/netvm')}/../resolv.conf`;
    expect((await readResolvConf(path)).upstreams.map((upstream) => upstream.address)).toEqual(['192.0.2.1']);
    const seen = follow(path);
    replaceByRename(join(dir, 'run/resolv.conf'), (aside) => writeFileSync(aside, nameservers('192.0.2.2')));
    await followed(seen, ['192.0.2.2']);
    writeFileSync(join(dir, 'run/resolv.conf'), nameservers('192.0.2.3'));
    await followed(seen, ['192.0.2.3']);
  });

  it('follows a relative path from the working directory, its `..` after a symlinked folder as the kernel reads it', async () => {
    // --resolv-conf netvm/../resolv.conf given in etc, netvm -> ../run/netvm: run/resolv.conf.
    for (const folder of ['etc', 'run/netvm']) mkdirSync(join(dir, folder), { recursive: true });
    symlinkSync('../run/netvm', join(dir, 'etc/netvm'));
    writeFileSync(join(dir, 'etc/resolv.conf'), nameservers('192.0.2.99'));
    writeFileSync(join(dir, 'run/resolv.conf'), nameservers('192.0.2.1'));
    const cwd = process.cwd();
    process.chdir(join(dir, 'etc'));
    try {
      const seen = follow('netvm/../resolv.conf');
      writeFileSync(join(dir, 'run/resolv.conf'), nameservers('192.0.2.2'));
      await followed(seen, ['192.0.2.2']);
    } finally {
      process.chdir(cwd);
    }
  });

  it('does not loop on a loop of symlinks, and follows it once mended', async () => {
    symlinkSync('b', join(dir, 'a'));
    symlinkSync('a', join(dir, 'b'));
    const seen = follow(join(dir, 'a'));
    await quiet(seen);
    expect(seen.changes).toBe(0);
    writeFileSync(join(dir, 'real'), nameservers('192.0.2.1'));
    replaceByRename(join(dir, 'b'), (aside) => symlinkSync('real', aside));
    await followed(seen, ['192.0.2.1']);
  });

  it('watches a chain as long as the kernel follows (40 links) to its end: one link more mended there is seen', async () => {
    // link 0 in folder 0 -> ../1/l -> ... -> link 40 in folder 40 -> ../real: one link more than
    // the kernel follows (MAXSYMLINKS: ELOOP), until the last becomes the file itself.
    const links = 41;
    for (let link = 0; link < links; link++) {
      mkdirSync(join(dir, String(link)));
      symlinkSync(link === links - 1 ? '../real' : `../${link + 1}/l`, join(dir, String(link), 'l'));
    }
    writeFileSync(join(dir, 'real'), nameservers('192.0.2.1'));
    expect((await readResolvConf(join(dir, '0/l'))).error).toMatch(/ELOOP/);
    const seen = follow(join(dir, '0/l'));
    replaceByRename(join(dir, String(links - 1), 'l'), (aside) => writeFileSync(aside, nameservers('192.0.2.2')));
    await followed(seen, ['192.0.2.2']);
  });

  it('says once which folder on the way cannot be watched, and why, and watches the others all the same', () => {
    // Run as nobody (a folder it may search but not read: inotify needs read), from dist.
    const [watcherModule] = compiled(['guest/dns/resolv-conf-watcher']);
    const nobody = 65534;
    chmodSync(dir, 0o755);
    chownSync(dir, nobody, nobody);
    mkdirSync(join(dir, 'locked'), 0o711);
    chmodSync(join(dir, 'locked'), 0o711);
    writeFileSync(join(dir, 'locked/a.conf'), nameservers('192.0.2.1'));
    symlinkSync('locked/a.conf', join(dir, 'resolv.conf'));
    writeFileSync(
      join(dir, 'follow.mjs'),
      `import { renameSync, symlinkSync } from 'node:fs';
      const { ResolvConfWatcher } = await import(${JSON.stringify(watcherModule)});
      const link = ${JSON.stringify(join(dir, 'resolv.conf'))};
      const seen = { changes: 0, errors: [] };
      const watcher = new ResolvConfWatcher(link, () => (seen.changes += 1), (error) => seen.errors.push(error.message), 10);
      // The link re-pointed, twice: looked at again each time, the locked folder still on the way.
      for (const target of ['locked/b.conf', 'locked/a.conf']) {
        symlinkSync(target, link + '.new');
        renameSync(link + '.new', link);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      watcher.close();
      process.stdout.write(JSON.stringify(seen));`,
    );
    const seen = JSON.parse(execFileSync(process.execPath, [join(dir, 'follow.mjs')], { uid: nobody, gid: nobody, encoding: 'utf8' })) as { changes: number; errors: string[] };
    expect(seen.errors).toEqual([
      `cannot watch ${join(dir, 'locked')} (EACCES: permission denied, watch '${join(dir, 'locked')}'): a change there to ${join(dir, 'locked/a.conf')} is not followed`,
    ]);
    expect(seen.changes).toBe(2);
  });

  it("takes a file named as its folder for no change of the folder: written, removed, renamed over and over (as anyone may in /tmp), nothing is read again, the watches the same", async () => {
    // box/resolv.conf, and box/box: inotify names an event of the folder itself (removed, moved)
    // by the folder's name, as it names one of box/box. Each of those closed the folder's watch
    // and read resolv.conf again, a moment later.
    mkdirSync(join(dir, 'box'));
    writeFileSync(join(dir, 'box/resolv.conf'), nameservers('192.0.2.1'));
    const before = inotifyWatches();
    const seen = follow(join(dir, 'box/resolv.conf'));
    const watching = inotifyWatches() - before;
    for (let round = 0; round < 20; round++) {
      writeFileSync(join(dir, 'box/box'), String(round));
      writeFileSync(join(dir, 'box/box'), 'in place');
      rmSync(join(dir, 'box/box'));
      writeFileSync(join(dir, 'box/other'), String(round));
      renameSync(join(dir, 'box/other'), join(dir, 'box/box'));
      rmSync(join(dir, 'box/box'));
      await new Promise((resolve) => setTimeout(resolve, 15));
    }
    await quiet(seen);
    expect(seen.changes).toBe(0);
    expect(inotifyWatches() - before).toBe(watching);
    // The folder's watch is still there, and sees what matters.
    writeFileSync(join(dir, 'box/resolv.conf'), nameservers('192.0.2.2'));
    await followed(seen, ['192.0.2.2']);
  });

  it('follows a resolv.conf named as its folder (box/box): written in place, replaced by rename, the folder removed and made again', async () => {
    mkdirSync(join(dir, 'box'));
    writeFileSync(join(dir, 'box/box'), nameservers('192.0.2.1'));
    const seen = follow(join(dir, 'box/box'));
    writeFileSync(join(dir, 'box/box'), nameservers('192.0.2.2'));
    await followed(seen, ['192.0.2.2']);
    replaceByRename(join(dir, 'box/box'), (aside) => writeFileSync(aside, nameservers('192.0.2.3')));
    await followed(seen, ['192.0.2.3']);
    // Removed and made again at once: on ext4 the new folder often has the old one's inode number.
    rmSync(join(dir, 'box'), { recursive: true });
    mkdirSync(join(dir, 'box'));
    writeFileSync(join(dir, 'box/box'), nameservers('192.0.2.4'));
    await followed(seen, ['192.0.2.4']);
    writeFileSync(join(dir, 'box/box'), nameservers('192.0.2.5'));
    await followed(seen, ['192.0.2.5']);
    expect(seen.errors).toEqual([]);
  });

  // inotify holds max_queued_events events (16384 by default) until they are read; past that it
  // drops them, saying so in one IN_Q_OVERFLOW, which libuv drops too (an event of no watch):
  // Node says nothing. A busy folder on the way, the agent's loop held up meanwhile (a reconcile
  // of a thousand links), and a change to resolv.conf was never read.
  const queuedEvents = Number(readFileSync('/proc/sys/fs/inotify/max_queued_events', 'utf8'));
  it.skipIf(queuedEvents > 200_000)("reads resolv.conf again after inotify's queue overflowed, its change lost with the events past the bound, and nothing more while nothing changes", async () => {
    writeFileSync(join(dir, 'resolv.conf'), nameservers('192.0.2.1'));
    const seen = follow(join(dir, 'resolv.conf'), 100);
    writeFileSync(join(dir, 'resolv.conf'), nameservers('192.0.2.2'));
    await followed(seen, ['192.0.2.2']);
    // All before the loop reads one event, one more than the queue holds: a mode changed (an
    // IN_ATTRIB each, cheap), two names in turn (inotify merges an event with the one queued last
    // where they are the same).
    for (const name of ['busy0', 'busy1']) writeFileSync(join(dir, name), '');
    for (let n = 0; n <= queuedEvents; n++) chmodSync(join(dir, `busy${n % 2}`), n % 4 < 2 ? 0o600 : 0o644);
    writeFileSync(join(dir, 'resolv.conf'), nameservers('192.0.2.3'));
    await followed(seen, ['192.0.2.3']);
    const changes = seen.changes;
    await quiet(seen);
    expect(seen.changes).toBe(changes);
    expect(seen.errors).toEqual([]);
  });

  it('reads nothing again while nothing changes where resolv.conf is a symlink to a file of /proc/net (/proc/net/pnp, of ip= autoconfiguration)', async () => {
    // procfs makes a /proc/net file's inode anew at each lookup, its times those of the lookup:
    // each look at the path differed from the last, and it was read again at every one.
    symlinkSync('/proc/net/dev', join(dir, 'resolv.conf'));
    const seen = follow(join(dir, 'resolv.conf'), 20);
    await quiet(seen);
    expect(seen.changes).toBe(0);
    expect(seen.errors).toEqual([]);
  });

  it('holds as many watches as the way has folders however often the link is re-pointed, and none once closed', async () => {
    mkdirSync(join(dir, 'targets'));
    const target = (n: number): string => {
      mkdirSync(join(dir, 'targets', String(n)));
      writeFileSync(join(dir, 'targets', String(n), 'resolv.conf'), nameservers(`192.0.2.${n}`));
      return `targets/${n}/resolv.conf`;
    };
    symlinkSync(target(1), join(dir, 'resolv.conf'));
    const before = inotifyWatches();
    const seen = follow(join(dir, 'resolv.conf'));
    const watching = inotifyWatches() - before;
    // /, the folders down to this one, targets and targets/1.
    expect(watching).toBe(join(dir, 'targets/1').split('/').length);
    for (let n = 2; n <= 40; n++) {
      replaceByRename(join(dir, 'resolv.conf'), (aside) => symlinkSync(target(n), aside));
      await followed(seen, [`192.0.2.${n}`]);
    }
    expect(inotifyWatches() - before).toBe(watching);
    for (const watcher of watchers.splice(0)) watcher.close();
    expect(inotifyWatches()).toBe(before);
  });
});
