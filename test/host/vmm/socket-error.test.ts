import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { unixSocketProblem } from '../../../host/vmm/socket-error.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'spectrum-socket-error-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });

describe('unixSocketProblem', () => {
  it('says what is there instead of a socket: Linux answers ECONNREFUSED for any file', () => {
    const file = join(dir, 'file');
    writeFileSync(file, '');
    mkdirSync(join(dir, 'dir'));
    symlinkSync(file, join(dir, 'link'));
    expect(unixSocketProblem(refused, file, 'hint')).toBe('not a socket but a regular file: check the path');
    expect(unixSocketProblem(refused, join(dir, 'dir'), 'hint')).toBe('not a socket but a directory: check the path');
    expect(unixSocketProblem(refused, join(dir, 'link'), 'hint')).toBe('not a socket but a regular file: check the path');
  });

  it('calls a refusing socket one nobody listens on (a VMM that exited and left it)', async () => {
    const path = join(dir, 'vmm.sock');
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(path, resolve));
    try {
      expect(unixSocketProblem(refused, path, 'hint')).toMatch(/^connection refused: nothing listens there; the VMM may have exited/);
    } finally {
      server.close();
    }
  });

  it('gives the hint for a missing socket', () => {
    expect(unixSocketProblem(Object.assign(new Error('x'), { code: 'ENOENT' }), join(dir, 'none'), 'start the VMM')).toBe('no such socket: start the VMM');
  });
});
