// Reading --resolv-conf: a regular file (or a symlink to one, as /etc/resolv.conf often is) gives
// its nameservers; anything else gives none, with the reason for the warning, and never blocks.
import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdirSync, mkdtempSync, openSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readResolvConf } from '../../../guest/dns/resolv-conf-watcher.js';

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
