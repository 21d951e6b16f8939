// --no-firewall's deletion of the tables an earlier run left (removeOwnFirewall), where nft cannot
// run at all: libnftables does not load (in-process), or there is no nft binary (spawned, as
// SPECTRUM_NETD_SPAWN_NFT=1 has it). A debugging run may lack nft: one info line says nothing could
// be checked, no error. A failure of nft itself stays an error. Nothing here reaches a kernel: the
// library's load fails, and the nft on PATH is none, or a script.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, expect, it, vi } from 'vitest';
import { removeOwnFirewall } from '../../../guest/netd/provider-ports.js';

// The addon's load as it fails where libnftables is not installed (the dynamic linker's error).
vi.mock('../../../shared/native-addon.js', () => ({
  loadNativeAddon: (_fromUrl: string, file: string): never => {
    throw new Error(`${file}: libnftables.so.1: cannot open shared object file: No such file or directory`);
  },
}));

interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly reason?: string;
}

/** A logger at debug level, and every line it wrote. */
function capture() {
  const lines: LogLine[] = [];
  const log = pino({ level: 'debug' }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(JSON.parse(chunk.toString()) as LogLine), done()) }));
  return { log, lines };
}

const INFO = 30;
const ERROR = 50;
const NOTHING_CHECKED = '--no-firewall: nft is not available here, so whether an earlier run left its firewall tables (inet spectrum_netd, arp spectrum_netd) could not be checked; none deleted';

let dir = '';
const path = process.env['PATH'];
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'netd-nofw-'));
});
afterEach(() => {
  process.env['PATH'] = path;
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

it('says in one info line, no error, that nothing could be checked where libnftables does not load', async () => {
  const { log, lines } = capture();
  await removeOwnFirewall(log);
  expect(lines.map(({ level, msg }) => [level, msg])).toEqual([[INFO, NOTHING_CHECKED]]);
  expect(lines[0]?.reason).toMatch(/libnftables\.so\.1: cannot open shared object file.*is libnftables1 installed/);
});

it('says the same where nft is spawned and there is no nft binary', async () => {
  const empty = join(dir, 'empty');
  mkdirSync(empty);
  process.env['PATH'] = empty;
  const { log, lines } = capture();
  await removeOwnFirewall(log, { spawn: true });
  expect(lines.map(({ level, msg }) => [level, msg])).toEqual([[INFO, NOTHING_CHECKED]]);
  expect(lines[0]?.reason).toMatch(/^nft is not installed/);
});

it('logs an error, with what to do, where nft runs and fails', async () => {
  const failing = join(dir, 'failing');
  mkdirSync(failing);
  writeFileSync(join(failing, 'nft'), '#!/bin/sh\necho "Error: Could not process rule: Operation not permitted" >&2\nexit 1\n');
  chmodSync(join(failing, 'nft'), 0o755);
  process.env['PATH'] = failing;
  const { log, lines } = capture();
  await removeOwnFirewall(log, { spawn: true });
  expect(lines.map(({ level, msg }) => [level, msg])).toEqual([
    [
      ERROR,
      '--no-firewall: cannot delete the firewall tables an earlier run may have left (inet spectrum_netd, arp spectrum_netd); while they stand they drop the traffic of provider links plugged from now on: delete them with nft delete table',
    ],
  ]);
});
