// The state lock across network namespaces: spectrum-link processes entered into different
// network namespaces (nsenter --net, unshare -n) with one --state-dir must still exclude each other.
// And a state dir on a read-only mount (made in a mount namespace of its own) is said to be one.
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, expect, it } from 'vitest';
import { loadState } from '../../host/state-store.js';
import { createHarness, describeNetns, type Harness, type Netns } from '../harness/index.js';
import { devices } from './link-fixture.js';
import { linkWorldPerSuite } from './link-world-suite.js';

const FIXTURE = join(import.meta.dirname, '..', '..', 'dist', 'test', 'host', 'fixtures', 'allocate.js');

describeNetns('state lock across network namespaces', () => {
  let harness: Harness;
  let left: Netns;
  let right: Netns;
  let dir: string;

  beforeAll(async () => {
    if (!existsSync(FIXTURE)) throw new Error(`${FIXTURE} is missing: run \`npm run build\` first`);
    harness = createHarness('lock');
    left = await harness.namespace('left');
    right = await harness.namespace('right');
  });
  afterAll(async () => {
    await harness?.cleanup();
  });
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'spectrum-state-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a holder in one namespace makes a waiter in another time out (naming its PID) until it is SIGKILLed', async () => {
    const holder = left.spawn([process.execPath, FIXTURE, 'hold', dir]);
    await holder.waitForOutput(/locked/);
    const waiting = await right.exec([process.execPath, FIXTURE, 'try', dir, '300'], { allowFailure: true });
    expect(waiting.stdout).toMatch(new RegExp(`^lock-timeout: .*another spectrum-link \\(PID ${holder.pid}\\) holds it`));
    expect(waiting.code).toBe(1);
    expect((await holder.kill('SIGKILL')).signal).toBe('SIGKILL');
    const after = await right.exec([process.execPath, FIXTURE, 'try', dir, '2000']);
    expect(after.stdout).toBe('locked\n');
  });

  it('allocations racing from two namespaces get distinct ids, all recorded', async () => {
    const clients = Array.from({ length: 24 }, (_, i) => `appvm-${i}`);
    const results = await Promise.all(
      clients.map((client, i) => (i % 2 === 0 ? left : right).exec([process.execPath, FIXTURE, 'allocate', dir, client, 'netvm'])),
    );
    const ids = results.map((result) => Number(result.stdout.trim()));
    expect(new Set(ids).size).toBe(clients.length);
    const state = await loadState(dir);
    expect(state.links.map((link) => link.client).sort()).toEqual([...clients].sort());
    expect(new Set(state.links.map((link) => link.id))).toEqual(new Set(ids));
    expect(await readdir(dir)).toEqual(['links.json']);
  });
});

describeNetns('a state dir on a read-only file system', () => {
  let harness: Harness;
  let ns: Netns;
  let mountPoint: string;

  beforeAll(async () => {
    if (!existsSync(FIXTURE)) throw new Error(`${FIXTURE} is missing: run \`npm run build\` first`);
    harness = createHarness('rostate');
    ns = await harness.namespace('ro');
    mountPoint = await mkdtemp(join(tmpdir(), 'spectrum-ro-'));
  });
  afterAll(async () => {
    await harness?.cleanup();
    if (mountPoint !== undefined) await rm(mountPoint, { recursive: true, force: true });
  });

  /**
   * Run the fixture with a tmpfs at the mount point, read-only (after `prepare` ran on it
   * writable), in a mount namespace of its own: unshare makes its mounts private, so the tmpfs is
   * never seen outside it, and goes with it.
   */
  const onReadOnlyTmpfs = (prepare: string, args: readonly string[]) =>
    ns.exec(['unshare', '-m', 'sh', '-c', `mount -t tmpfs -o size=1m tmpfs "$0" && ${prepare} && mount -o remount,ro "$0" && exec "$@"`, mountPoint, process.execPath, FIXTURE, ...args], {
      allowFailure: true,
    });

  it('that cannot be made says so (where mkdir -p says ENOENT), and one that exists fails its first save saying so; the host sees no mount', async () => {
    const missing = await onReadOnlyTmpfs('true', ['allocate', join(mountPoint, 'state', 'sub'), 'appvm-lynx', 'netvm']);
    expect(missing.code).toBe(1);
    expect(missing.stdout).toContain(
      `state-dir-unusable: state dir ${join(mountPoint, 'state', 'sub')} cannot be used (cannot make ${join(mountPoint, 'state')}: EROFS, a read-only file system; check how it is mounted)`,
    );
    const present = await onReadOnlyTmpfs(`mkdir "$0/state"`, ['allocate', join(mountPoint, 'state'), 'appvm-lynx', 'netvm']);
    expect(present.code).toBe(1);
    expect(present.stdout).toMatch(/^write-failed: cannot write state file .*\/state\/links\.json \(EROFS\); a read-only file system: check how the state dir is mounted/);
    // The probe before a take-down says the same, and leaves the dir as it was.
    const probed = await onReadOnlyTmpfs(`mkdir "$0/state" && echo '{"version":1,"links":[]}' > "$0/state/links.json"`, ['probe', join(mountPoint, 'state')]);
    expect(probed.code).toBe(1);
    expect(probed.stdout).toMatch(/^write-failed EROFS: cannot write state file .*\/state\/links\.json \(EROFS\); a read-only file system: check how the state dir is mounted/);
    // The tmpfs stayed in those mount namespaces.
    expect(await readdir(mountPoint)).toEqual([]);
    expect(await readFile('/proc/self/mountinfo', 'utf8')).not.toContain(mountPoint);
  });

  it('that is full (a tmpfs of one page, the state file in it) fails the probe of a write with ENOSPC, the state file left as it was', async () => {
    const state = '{"version":1,"links":[]}';
    const full = await ns.exec(
      [
        'unshare',
        '-m',
        'sh',
        '-c',
        `mount -t tmpfs -o size=4k tmpfs "$0" && echo '${state}' > "$0/links.json" && "$@"; code=$?; cat "$0/links.json"; ls -A "$0"; exit $code`,
        mountPoint,
        process.execPath,
        FIXTURE,
        'probe',
        mountPoint,
      ],
      { allowFailure: true },
    );
    expect(full.code).toBe(1);
    expect(full.stdout).toBe(`write-failed ENOSPC: cannot write state file ${join(mountPoint, 'links.json')} (ENOSPC); check the state dir's permissions and free space\n${state}\nlinks.json\n`);
    expect(await readdir(mountPoint)).toEqual([]);
  });
});

describeNetns('spectrum-link --lock-wait', () => {
  const world = linkWorldPerSuite('lockwait');

  /** A process holding the world's state lock (as a run of another spectrum-link would) until killed. */
  async function holdLock(): Promise<ReturnType<Netns['spawn']>> {
    if (!existsSync(FIXTURE)) throw new Error(`${FIXTURE} is missing: run \`npm run build\` first`);
    const holder = world().host.spawn([process.execPath, FIXTURE, 'hold', world().stateDir]);
    await holder.waitForOutput(/locked/);
    return holder;
  }

  /** The host's devices with the linker's prefix: none, where nothing was made. */
  const linkDevices = async (): Promise<string[]> => [...(await devices(world().host)).keys()].filter((name) => /^sn[bcp][0-9]/.test(name));

  /** The start of a line of `args`' failure: `unlink <vm>: ` and `gc: ` as their other lines; none for link's. */
  const commandSaid = (args: readonly string[]): string => (args[0] === 'unlink' ? `unlink ${args[1] ?? ''}: ` : args[0] === 'gc' ? 'gc: ' : '');

  it.each([
    [['link', 'appvm-lynx', '--attach', 'netns', '--lock-wait', '1'], {}, 'after waiting 1 s'],
    [['unlink', 'appvm-lynx', '--lock-wait', '0'], {}, 'without waiting (a wait of 0 s)'],
    [['gc'], { SPECTRUM_LOCK_WAIT: '1' }, 'after waiting 1 s'],
    [['link', 'appvm-lynx', '--attach', 'netns', '--lock-wait', '0'], { SPECTRUM_LOCK_WAIT: '3600' }, 'without waiting (a wait of 0 s)'],
    // A wait longer than a second says first that it waits, once.
    [['link', 'appvm-lynx', '--attach', 'netns', '--lock-wait', '2'], {}, 'after waiting 2 s', 'set by --lock-wait'],
    [['unlink', 'appvm-lynx'], { SPECTRUM_LOCK_WAIT: '2' }, 'after waiting 2 s', 'set by environment variable SPECTRUM_LOCK_WAIT'],
  ] as const)(
    '%j (env %j) gives up on a lock held all through its wait: one line (unlink\'s and gc\'s starting as their others) saying how long it waited, the holder and the option; exit 1, nothing made',
    async (args, env, waited, set?: string) => {
      // gc refuses a state dir without a state file before it takes the lock.
      await writeFile(join(world().stateDir, 'links.json'), '{"version":1,"links":[]}\n');
      const holder = await holdLock();
      try {
        const result = await world().link(args, env);
        const line =
          `spectrum-link: ${commandSaid(args)}gave up on the lock of state dir ${world().stateDir} ${waited}: another spectrum-link (PID ${holder.pid}) holds it; ` +
          'check it is not stuck, or wait longer with --lock-wait SECONDS (README: Ids)\n';
        // A wait long enough says first that it waits, once: a log record (JSON off a terminal).
        const lines = result.stderr.split('\n');
        const said = set === undefined ? [] : lines.slice(0, 1).map((record) => (JSON.parse(record) as { level: number; msg: string }));
        expect(said).toEqual(set === undefined ? [] : [expect.objectContaining({ level: 40, msg: `waiting for another spectrum-link (PID ${holder.pid}) to let go of the state lock: giving up after 2 s (${set})` })]);
        expect({ code: result.code, stdout: result.stdout, stderr: lines.slice(said.length).join('\n') }).toEqual({ code: 1, stdout: '', stderr: line });
      } finally {
        await holder.kill('SIGKILL');
      }
      expect(await linkDevices()).toEqual([]);
      expect(await readFile(join(world().stateDir, 'links.json'), 'utf8')).toBe('{"version":1,"links":[]}\n');
    },
  );

  it.each([
    ['corrupt', '{"version": 1, "links": [', 'state file \\S+/links\\.json is not valid JSON'],
    ['that cannot be read (a directory there)', undefined, 'cannot read state file \\S+/links\\.json \\(not a regular file\\)'],
  ] as const)(
    "a state file %s: unlink's and gc's line starts as their other lines (unlink <vm>:, gc:), list's, show's and link's as theirs (no command); exit 1, nothing made or deleted, the file as it was",
    async (_what, file, said) => {
      const path = join(world().stateDir, 'links.json');
      const saved = await readFile(path, 'utf8').catch(() => undefined);
      await rm(path, { force: true });
      if (file === undefined) await mkdir(path);
      else await writeFile(path, file);
      // An orphan gc would delete, were the state read.
      await world().host.ip(['link', 'add', 'snb9', 'type', 'bridge']);
      try {
        const runs: [readonly string[], string][] = [
          [['unlink', 'appvm-lynx'], 'unlink appvm-lynx: '],
          [['gc'], 'gc: '],
          [['list'], ''],
          [['show', 'appvm-lynx'], ''],
          [['link', 'appvm-lynx', '--attach', 'netns'], ''],
        ];
        for (const [args, start] of runs) {
          const result = await world().link(args);
          expect({ code: result.code, stdout: result.stdout, stderr: result.stderr }, `${args.join(' ')}: ${result.stderr}`).toEqual({
            code: 1,
            stdout: '',
            stderr: expect.stringMatching(new RegExp(`^spectrum-link: ${start}${said}`)),
          });
          expect(result.stderr.split('\n').filter((line) => line !== '')).toHaveLength(1);
        }
        expect(await linkDevices()).toEqual(['snb9']);
        if (file !== undefined) expect(await readFile(path, 'utf8')).toBe(file);
      } finally {
        await world().host.ip(['link', 'del', 'snb9']);
        await rm(path, { recursive: true, force: true });
        if (saved !== undefined) await writeFile(path, saved);
      }
    },
  );

  it('a run waits out a holder that lets go within --lock-wait, then does its work', async () => {
    const holder = await holdLock();
    let waiting: Promise<Awaited<ReturnType<ReturnType<typeof world>['link']>>>;
    try {
      waiting = world().link(['link', 'appvm-lynx', '--attach', 'netns', '--lock-wait', '60', '--json']);
      // Let it start and find the lock taken; then the holder goes (the kernel releases its lock).
      await new Promise((resolve) => setTimeout(resolve, 1000));
    } finally {
      await holder.kill('SIGKILL');
    }
    const result = await waiting;
    // At most the one record saying that it waits (a second after its first try: a slow start may not get there).
    const records = result.stderr.split('\n').filter((line) => line !== '').map((line) => (JSON.parse(line) as { msg: string }).msg);
    expect([result.code, records.filter((msg) => !msg.startsWith('waiting for another spectrum-link'))]).toEqual([0, []]);
    expect(records.length).toBeLessThanOrEqual(1);
    const { links } = JSON.parse(result.stdout) as { links: { bridge: string }[] };
    expect(links).toHaveLength(1);
    expect(await linkDevices()).toContain(links[0]?.bridge);
    const unlinked = await world().link(['unlink', 'appvm-lynx', '--forget']);
    expect(unlinked.code, unlinked.stderr).toBe(0);
  });
});
