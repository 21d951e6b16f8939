// spectrum-netd against mistaken options, found by an outside review: a bad value is refused with
// one line and exit 2 whatever else is switched off, a resolver configuration that is no regular
// file does not keep the agent from starting, a signal while it starts stops it cleanly, and
// `status` says in one line what is wrong with a control socket whose peer is no (or another)
// spectrum-netd, and shows a client's hostname as one cell of its lease table.
import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { type Server, type Socket, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type Harness, type Netns, createHarness, describeNetns, eventually, jsonErrorOf, splitJsonError, trackTempDir } from '../../harness/index.js';

const CLI = fileURLToPath(new URL('../../../dist/guest/cli.js', import.meta.url));

describeNetns('spectrum-netd run and mistaken options', () => {
  let harness: Harness;
  let provider: Netns;
  let dir: string;

  beforeAll(async () => {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build`);
    dir = mkdtempSync(join(tmpdir(), 'netd-review-'));
    harness = createHarness('netdrev');
    provider = await harness.namespace('prov');
  });

  afterAll(async () => {
    await harness?.cleanup();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  /**
   * Send `signal` to `child`, which the wait for `awaited` ended on (that, or the child's exit):
   * one that exited first fails the test with its stderr, and is not signalled (its PID may be
   * another process's by now). Checked and sent in one tick: Node reaps a child, and sets its
   * exit, only between ticks.
   */
  function signalStillRunning(child: ReturnType<Netns['spawn']>, signal: NodeJS.Signals, awaited: string): void {
    if (child.exit !== undefined) throw new Error(`${child.argv.join(' ')} exited (${JSON.stringify(child.exit)}) before ${awaited}: ${child.stderr}`);
    process.kill(child.pid, signal);
  }

  it.each([
    ['--client-flow-limit', 'x'],
    ['--client-flow-limit', '-1'],
    ['--client-new-flow-rate', '1.5'],
  ])('%s %s is refused (one line, exit 2) also with --no-firewall, not taken and ignored', async (option, value) => {
    // With the firewall on these are refused; with --no-firewall the agent started and ran.
    const result = await provider.exec(
      ['node', CLI, 'run', '--no-firewall', '--no-dhcp', '--no-dns', '--control-socket', join(dir, `${option.slice(2)}.sock`), option, value],
      { enter: 'nsenter', allowFailure: true, timeoutMs: 15_000 },
    );
    expect(result.code, result.stderr).toBe(2);
    expect(result.stderr).toBe(`spectrum-netd: ${option} ${JSON.stringify(value)} is not valid: give auto or ${option === '--client-flow-limit' ? 'a number of flows from 0 to 4294967295' : 'new flows per second from 0 to 1000000'}\n`);
  });

  it.each([
    ['a FIFO', 'a FIFO'],
    ['/dev/zero', 'a character device'],
  ])('an agent whose --resolv-conf is %s starts, warns that it is no regular file, and has no upstreams from it', async (what, kind) => {
    // A FIFO: the agent opened it for reading at start and blocked there, `status` said "still
    // starting" for good. /dev/zero: read as text, zero upstreams and not a word.
    const path = what === 'a FIFO' ? join(dir, 'resolv.fifo') : what;
    if (what === 'a FIFO') execFileSync('mkfifo', [path]);
    const socket = join(dir, `resolv-${kind.replace(/ /g, '-')}.sock`);
    const agent = provider.spawn(['node', CLI, 'run', '--no-firewall', '--no-dhcp', '--control-socket', socket, '--resolv-conf', path], { enter: 'nsenter' });
    try {
      const status = await provider.exec(['node', CLI, 'status', '--json', '--wait', '10', '--control-socket', socket], { enter: 'nsenter', allowFailure: true, timeoutMs: 20_000 });
      expect(status.code, status.stderr).toBe(0);
      const reply = JSON.parse(status.stdout) as { links: unknown[]; services: { dns: { upstreams: string[]; unreachableUpstreams: string[] } } };
      expect(reply.links).toBeInstanceOf(Array);
      expect([reply.services.dns.upstreams, reply.services.dns.unreachableUpstreams]).toEqual([[], []]);
      const warnings = agent.stderr.split('\n').filter((line) => line.includes('cannot read resolv.conf'));
      expect(warnings).toHaveLength(1);
      expect(JSON.parse(warnings[0] ?? '{}')).toMatchObject({ path, err: `${path} is not a regular file but ${kind}` });
    } finally {
      await agent.kill('SIGKILL');
    }
  });

  // Without privilege: the hint named CAP_NET_BIND_SERVICE alone, and given that alone the agent
  // failed at its next step (nftables, links): it names every capability the agent needs. Without
  // CAP_NET_ADMIN it can do nothing: given CAP_NET_BIND_SERVICE alone it kept running, retrying
  // the firewall (nft's "Operation not permitted" its only word); it is refused at start.
  const NO_NET_ADMIN = 'spectrum-netd: the agent has no CAP_NET_ADMIN (links, addresses, routes, nftables, conntrack: it can do nothing without it): run it as root, or with CAP_NET_ADMIN, CAP_NET_RAW and CAP_NET_BIND_SERVICE\n';
  const NO_NET_RAW = "spectrum-netd: the agent has no CAP_NET_RAW (DHCP's link sockets: it would serve no client an address; --no-dhcp needs none): run it as root, or with CAP_NET_ADMIN, CAP_NET_RAW and CAP_NET_BIND_SERVICE\n";
  it.each([
    ['no capability', [], NO_NET_ADMIN],
    ['CAP_NET_BIND_SERVICE alone', ['net_bind_service'], NO_NET_ADMIN],
    // It ran, serving no client an address: every link "configured", a log line with a JS stack its only word.
    ['CAP_NET_ADMIN and CAP_NET_BIND_SERVICE (no CAP_NET_RAW)', ['net_admin', 'net_bind_service'], NO_NET_RAW],
    [
      'CAP_NET_ADMIN and CAP_NET_RAW (no CAP_NET_BIND_SERVICE)',
      ['net_admin', 'net_raw'],
      expect.stringMatching(/^spectrum-netd: [^\n]*: Permission denied \(binding port 67 needs CAP_NET_BIND_SERVICE, and the agent needs CAP_NET_ADMIN and CAP_NET_RAW as well: run it as root, or with all three\)\n$/),
    ],
  ])('run as nobody with %s fails at once in one line, exit 1, naming every capability the agent needs', async (_case, capabilities: readonly string[], line: unknown) => {
    // A folder nobody may write in, for its control socket.
    const own = mkdtempSync(join(tmpdir(), 'netd-nobody-'));
    trackTempDir(own);
    chownSync(own, 65534, 65534);
    const given = capabilities.map((name) => `+${name}`).join(',');
    const caps = given === '' ? [] : [`--inh-caps=${given}`, `--ambient-caps=${given}`];
    const result = await provider
      .exec(['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', ...caps, 'node', CLI, 'run', '--control-socket', join(own, 'control.sock')], {
        enter: 'nsenter',
        allowFailure: true,
        timeoutMs: 15_000,
      })
      .finally(() => rmSync(own, { recursive: true, force: true }));
    expect(result.code, result.stderr).toBe(1);
    expect(result.stderr).toEqual(line);
  });

  it('refuses a second agent in the same network namespace in one line, whatever its control socket and services; once the first stops, one starts', async () => {
    // With --no-dhcp and another control socket it ran beside the first: each took the other's
    // firewall for tampering and "restored" it at its audits.
    const ns = await harness.namespace('twoagents');
    const args = (name: string): string[] => ['node', CLI, 'run', '--no-dhcp', '--no-dns', '--control-socket', join(dir, `${name}.sock`)];
    const first = ns.spawn(args('first'), { enter: 'nsenter' });
    try {
      const status = await ns.exec(['node', CLI, 'status', '--wait', '10', '--control-socket', join(dir, 'first.sock')], { enter: 'nsenter', allowFailure: true, timeoutMs: 20_000 });
      expect(status.code, status.stderr).toBe(0);
      const second = await ns.exec([...args('second'), '--no-firewall'], { enter: 'nsenter', allowFailure: true, timeoutMs: 15_000 });
      expect(second.code, second.stderr).toBe(1);
      expect(second.stderr).toBe('spectrum-netd: another spectrum-netd run is running in this network namespace (it holds @spectrum-netd-agent): one agent per provider; stop it first\n');
      // It touched nothing: the first agent's table stands, and the second left no control socket.
      expect((await ns.exec(['nft', 'list', 'tables'])).stdout).toContain('inet spectrum_netd');
      expect(existsSync(join(dir, 'second.sock'))).toBe(false);
      // Another namespace's agent is none of its business.
      const other = await harness.namespace('otheragent');
      const elsewhere = other.spawn(args('elsewhere'), { enter: 'nsenter' });
      try {
        const answered = await other.exec(['node', CLI, 'status', '--wait', '10', '--control-socket', join(dir, 'elsewhere.sock')], { enter: 'nsenter', allowFailure: true, timeoutMs: 20_000 });
        expect(answered.code, answered.stderr).toBe(0);
      } finally {
        await elsewhere.kill('SIGTERM', 3000);
      }
    } finally {
      await first.kill('SIGTERM', 3000);
    }
    const next = ns.spawn(args('second'), { enter: 'nsenter' });
    try {
      const status = await ns.exec(['node', CLI, 'status', '--wait', '10', '--control-socket', join(dir, 'second.sock')], { enter: 'nsenter', allowFailure: true, timeoutMs: 20_000 });
      expect(status.code, status.stderr).toBe(0);
    } finally {
      await next.kill('SIGTERM', 3000);
    }
  });

  it('`client` without CAP_NET_ADMIN fails at once in one line naming it, exit 1, with or without --json', async () => {
    // It tried, and said two log lines and two error lines ending "Request rejected: EPERM", no
    // word of the capability (and, where nothing needed changing, "configured", exit 0).
    const ns = await harness.namespace('clientcap');
    await ns.exec(['ip', 'link', 'add', 'eth0', 'address', '0a:b3:ec:00:a5:47', 'type', 'veth', 'peer', 'name', 'xb']);
    const drop = ['setpriv', '--bounding-set', '-net_admin', '--inh-caps', '-net_admin'];
    const plain = await ns.exec([...drop, 'node', CLI, 'client'], { enter: 'nsenter', allowFailure: true, timeoutMs: 15_000 });
    expect(plain.code, plain.stderr).toBe(1);
    expect(plain.stderr).toBe('spectrum-netd: client has no CAP_NET_ADMIN (addresses and routes of the client links: the kernel refuses every change without it): run it as root, or with CAP_NET_ADMIN\n');
    expect(plain.stdout).toBe('');
    const json = await ns.exec([...drop, 'node', CLI, 'client', '--json'], { enter: 'nsenter', allowFailure: true, timeoutMs: 15_000 });
    expect(json.code, json.stderr).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({ error: { kind: 'privilege', message: expect.stringMatching(/^client has no CAP_NET_ADMIN /) } });
    // Nothing was changed: the link has no address.
    expect((await ns.ip(['-4', '-o', 'addr', 'show', 'dev', 'eth0'])).stdout).toBe('');
  });

  it('a SIGTERM while the agent starts (its first reconcile under way) stops it: one line, exit 143, its control socket removed', async () => {
    // It was killed without a line and left its control socket behind.
    const ns = await harness.namespace('starting');
    // Enough provider links that the first reconcile takes a while (~0.6 s for 1000 on a quiet
    // machine): the signal comes as soon as the control socket is there.
    const LINKS = 1500;
    const hex = (byte: number): string => byte.toString(16).padStart(2, '0');
    const batch = Array.from({ length: LINKS }, (_, index) => `link add p${index + 1} address 0a:b3:ec:80:${hex((index + 1) >> 8)}:${hex((index + 1) & 0xff)} type veth peer name q${index + 1}\n`);
    await ns.exec(['ip', '-batch', '-'], { input: batch.join('') });
    const socket = join(dir, 'starting.sock');
    const agent = ns.spawn(['node', CLI, 'run', '--no-dhcp', '--no-dns', '--control-socket', socket], { enter: 'nsenter' });
    try {
      await eventually('the control socket', () => Promise.resolve(existsSync(socket) || agent.exit !== undefined), 20_000);
      // As a service manager stops it: the agent alone.
      signalStillRunning(agent, 'SIGTERM', 'the control socket');
      const exit = await agent.wait();
      expect(agent.stderr).not.toContain('initial reconcile done');
      expect(exit.code, agent.stderr).toBe(143);
      const lines = agent.stderr.split('\n').filter((line) => line !== '' && !line.startsWith('{'));
      expect(lines).toEqual(['spectrum-netd: stopped by SIGTERM while starting (before its first reconcile was done); its control socket is removed']);
      expect(existsSync(socket)).toBe(false);
    } finally {
      await agent.kill('SIGKILL');
    }
  });

  /**
   * Once the agent is held at a gate (`called` made), SIGTERM it, then release the gate: it exits
   * 143 with the stopped-while-starting line last, no warning logged before it (no service was
   * started only to be closed), and its control socket removed.
   */
  async function expectStoppedAtGate(agent: ReturnType<Netns['spawn']>, gate: { what: string; called: string; released: string; socket: string }): Promise<void> {
    try {
      await eventually(gate.what, () => Promise.resolve(existsSync(gate.called) || agent.exit !== undefined), 20_000);
      signalStillRunning(agent, 'SIGTERM', gate.what);
      writeFileSync(gate.released, '');
      const exit = await agent.wait();
      await agent.waitClosed();
      expect(exit.code, agent.stderr).toBe(143);
      const lines = agent.stderr.split('\n').filter((line) => line !== '');
      expect(lines.at(-1)).toBe('spectrum-netd: stopped by SIGTERM while starting (before its first reconcile was done); its control socket is removed');
      const logged = lines.filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as { level: number; msg: string });
      expect(logged.filter((entry) => entry.level >= 40).map((entry) => entry.msg)).toEqual([]);
      expect(existsSync(gate.socket)).toBe(false);
    } finally {
      await agent.kill('SIGKILL');
    }
  }

  it('a SIGTERM while its services are being made stops it with nothing logged after its one line: no service is started only to warn and be closed', async () => {
    // The DNS forwarder was started after the line, and warned then that its upstream had no route.
    const ns = await harness.namespace('makingports');
    // --no-firewall's check for tables an earlier run left runs nft first, before any service: a
    // wrapper nft first in PATH (the agent runs nft from PATH with SPECTRUM_NETD_SPAWN_NFT=1)
    // holds it there until the test releases it, then runs the real one.
    const real = execFileSync('sh', ['-c', 'command -v nft'], { encoding: 'utf8' }).trim();
    const gate = mkdtempSync(join(dir, 'nft-gate-'));
    const [called, released] = [join(gate, 'called'), join(gate, 'released')];
    writeFileSync(join(gate, 'nft'), `#!/bin/sh\ntouch '${called}'\nwhile [ ! -e '${released}' ]; do sleep 0.05; done\nexec '${real}' "$@"\n`, { mode: 0o755 });
    const socket = join(dir, 'makingports.sock');
    // 192.0.2.53: no route to it in this namespace, which the forwarder warns about as it starts.
    const agent = ns.spawn(['node', CLI, 'run', '--no-firewall', '--no-dhcp', '--dns-upstream', '192.0.2.53', '--control-socket', socket], {
      enter: 'nsenter',
      env: { ...process.env, PATH: `${gate}:${process.env['PATH'] ?? ''}`, SPECTRUM_NETD_SPAWN_NFT: '1', SPECTRUM_LOG_LEVEL: 'info' },
    });
    // Queued in the agent before nft can go on (the wrapper sees the release within 50 ms, then
    // execs nft): the signal comes first.
    await expectStoppedAtGate(agent, { what: 'nft called while the services are being made', called, released, socket });
  });

  it('a SIGTERM while the DNS forwarder\'s module is being loaded stops it with no forwarder started: nothing logged but its one line', async () => {
    // Checked only before the module was loaded (tens of ms on first use): the forwarder was then
    // started all the same, warned that its upstream had no route, and was closed.
    const ns = await harness.namespace('loadingdns');
    // A module-load hook holds the forwarder's module until the test releases it (then loads it as
    // usual): the agent runs as it does, its import of the module under way.
    const gate = mkdtempSync(join(dir, 'import-gate-'));
    const [called, released, hook, register] = ['called', 'released', 'hook.mjs', 'register.mjs'].map((name) => join(gate, name)) as [string, string, string, string];
    writeFileSync(
      hook,
      [
        "import { existsSync, writeFileSync } from 'node:fs';",
        "import { setTimeout as sleep } from 'node:timers/promises';",
        'export async function load(url, context, nextLoad) {',
        "  if (url.endsWith('/dist/guest/dns/forwarder.js')) {",
        `    writeFileSync(${JSON.stringify(called)}, '');`,
        `    while (!existsSync(${JSON.stringify(released)})) await sleep(50);`,
        '  }',
        '  return nextLoad(url, context);',
        '}',
      ].join('\n'),
    );
    writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hook).href)});\n`);
    const socket = join(dir, 'loadingdns.sock');
    // 192.0.2.53: no route to it in this namespace, which the forwarder warns about as it starts.
    const agent = ns.spawn(['node', '--import', pathToFileURL(register).href, CLI, 'run', '--no-firewall', '--no-dhcp', '--dns-upstream', '192.0.2.53', '--control-socket', socket], {
      enter: 'nsenter',
      env: { ...process.env, SPECTRUM_LOG_LEVEL: 'info' },
    });
    // Taken by the agent before the module can load (the hook sees the release within 50 ms).
    await expectStoppedAtGate(agent, { what: "the forwarder's module loading", called, released, socket });
  });

  /** Whether process `pid` has a socket open past stdio (socket pairs): `client` opens its rtnetlink sockets first, Node none of its own. */
  function hasSocket(pid: number): boolean {
    return readdirSync(`/proc/${pid}/fd`).some((fd) => {
      if (Number(fd) <= 2) return false;
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:');
      } catch {
        return false; // closed meanwhile
      }
    });
  }

  it.each([
    ['SIGTERM', 143],
    ['SIGINT', 130],
  ] as const)('`client --watch`: a %s while it starts stops it (one line, exit %i); once running, a clean stop (exit 0)', async (signal, code) => {
    // It was killed without a line: its handling of the signal came only once it was running.
    const ns = await harness.namespace(`client${code}`);
    // Enough client-side links that the first reconcile takes a while.
    const LINKS = 1500;
    const hex = (byte: number): string => byte.toString(16).padStart(2, '0');
    const batch = Array.from({ length: LINKS }, (_, index) => `link add p${index + 1} address 0a:b3:ec:00:${hex((index + 1) >> 8)}:${hex((index + 1) & 0xff)} type veth peer name q${index + 1}\n`);
    await ns.exec(['ip', '-batch', '-'], { input: batch.join('') });
    const starting = ns.spawn(['node', CLI, 'client', '--watch'], { enter: 'nsenter' });
    try {
      // As soon as it has its rtnetlink sockets: the start under way.
      await eventually('the rtnetlink sockets of spectrum-netd client', () => Promise.resolve(starting.exit !== undefined || hasSocket(starting.pid)), 20_000);
      signalStillRunning(starting, signal, 'its rtnetlink sockets');
      const exit = await starting.wait();
      expect(starting.stderr).not.toContain('reconciled');
      expect(exit.code, starting.stderr).toBe(code);
      const lines = starting.stderr.split('\n').filter((line) => line !== '' && !line.startsWith('{'));
      expect(lines).toEqual([`spectrum-netd: stopped by ${signal} while starting (before its first reconcile was done); what it configured stays`]);
    } finally {
      await starting.kill('SIGKILL');
    }
    const running = ns.spawn(['node', CLI, 'client', '--watch'], { enter: 'nsenter', env: { ...process.env, SPECTRUM_LOG_LEVEL: 'info' } });
    try {
      await eventually('its first reconcile', () => Promise.resolve(running.exit !== undefined || /"msg":"reconciled/.test(running.stderr + running.stdout)), 30_000);
      signalStillRunning(running, signal, 'its first reconcile');
      const exit = await running.wait();
      expect(exit.code, running.stderr).toBe(0);
      expect((running.stderr + running.stdout).split('\n').filter((line) => line.includes('"msg":"stopping"')).map((line) => (JSON.parse(line) as { signal: string }).signal)).toEqual([signal]);
      expect(running.stderr.split('\n').filter((line) => line !== '' && !line.startsWith('{'))).toEqual([]);
    } finally {
      await running.kill('SIGKILL');
    }
  }, 90_000);

  it.each([
    ['run', ['run', '--no-dhcp', '--no-dns'], '0a:b3:ec:80', 'its control socket is removed'],
    ['client --watch', ['client', '--watch'], '0a:b3:ec:00', 'what it configured stays'],
  ] as const)('`%s`: a SIGTERM while its first reconcile has kernel requests under way stops it at once: one line, exit 143, no request left to time out or logged as failed', async (name, args, macPrefix, after) => {
    // The kernel's sockets were closed under the reconcile's requests: those in flight waited out
    // their 5 s timeout, those waiting for room in the socket's buffer went on, and each then
    // failed with a warning per link ("Timeout has been reached") before the process could exit.
    const ns = await harness.namespace(name === 'run' ? 'midrun' : 'midclient');
    const LINKS = 1500;
    const hex = (byte: number): string => byte.toString(16).padStart(2, '0');
    const batch = Array.from({ length: LINKS }, (_, index) => `link add p${index + 1} address ${macPrefix}:${hex((index + 1) >> 8)}:${hex((index + 1) & 0xff)} type veth peer name q${index + 1}\n`);
    await ns.exec(['ip', '-batch', '-'], { input: batch.join('') });
    // The first link the agent brings up: its requests are under way.
    const monitor = ns.spawn(['ip', 'monitor', 'link'], { enter: 'nsenter' });
    const socket = join(dir, `mid-${name === 'run' ? 'run' : 'client'}.sock`);
    const agent = ns.spawn(['node', CLI, ...args, ...(name === 'run' ? ['--control-socket', socket] : [])], {
      enter: 'nsenter',
      env: { ...process.env, SPECTRUM_LOG_LEVEL: 'info' },
    });
    try {
      await eventually('a link brought up by the agent', () => Promise.resolve(agent.exit !== undefined || /^\d+: p\d+@q\d+: <[^>]*\bUP\b/m.test(monitor.stdout)), 30_000);
      signalStillRunning(agent, 'SIGTERM', 'a link brought up by the agent');
      const exit = await agent.wait();
      await agent.waitClosed();
      expect(exit.code, agent.stderr).toBe(143);
      const lines = agent.stderr.split('\n').filter((line) => line !== '' && !line.startsWith('{'));
      expect(lines).toEqual([`spectrum-netd: stopped by SIGTERM while starting (before its first reconcile was done); ${after}`]);
      // Nothing was logged as failed after the stop: no request waited out its timeout, none was
      // sent on the closed socket.
      const logged = (agent.stderr + agent.stdout).split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as { level: number; msg: string });
      expect(logged.filter((entry) => entry.level >= 40).map((entry) => entry.msg)).toEqual([]);
      expect(logged.map((entry) => entry.msg)).not.toContain('initial reconcile done');
    } finally {
      await agent.kill('SIGKILL');
      await monitor.kill('SIGKILL');
    }
  }, 90_000);

  /** A Unix socket at `path` whose peer answers each connection with `answer`; closed by the returned function. */
  async function fakeControlSocket(path: string, answer: (socket: Socket) => void): Promise<() => Promise<void>> {
    const sockets = new Set<Socket>();
    const server: Server = createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => undefined);
      socket.on('close', () => sockets.delete(socket));
      answer(socket);
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
    return async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    };
  }

  const status = (socket: string) =>
    provider.exec(['node', CLI, 'status', '--control-socket', socket], { enter: 'nsenter', allowFailure: true, timeoutMs: 20_000 });

  it('status of a peer whose reply does not end (no spectrum-netd: another service) fails with one line, no stack trace', async () => {
    // The client gathered the reply without bound: "RangeError: Invalid string length" and a stack trace, exit 1.
    const path = join(dir, 'flood.sock');
    const close = await fakeControlSocket(path, (socket) => {
      const chunk = Buffer.alloc(1 << 20, 'x');
      const flood = (): void => {
        while (!socket.destroyed && socket.write(chunk));
        if (!socket.destroyed) socket.once('drain', flood);
      };
      flood();
    });
    try {
      const result = await status(path);
      expect(result.code).toBe(1);
      expect(result.stderr).toBe(`spectrum-netd: the answer on ${path} is not a spectrum-netd reply: it is longer than 128 MiB; is --control-socket the agent's socket?\n`);
    } finally {
      await close();
    }
  });

  it.each([[[]], [['--json']]])('status %j of a reply shaped like a status but with fields of other types is an answer it cannot show (exit 1), not an internal error', async (extra) => {
    // formatStatus took every field as typed: "internal error: cell.padEnd is not a function", exit
    // 70; --json printed it as if it were a status.
    const path = join(dir, `shape${extra.length}.sock`);
    const close = await fakeControlSocket(path, (socket) => socket.end(`${JSON.stringify({ links: [{ name: 'eth0', role: 5 }], counters: {} })}\n`));
    try {
      const result = await provider.exec(['node', CLI, 'status', ...extra, '--control-socket', path], { enter: 'nsenter', allowFailure: true, timeoutMs: 20_000 });
      expect(result.stderr).toBe(`spectrum-netd: the answer on ${path} is not a spectrum-netd status: status.links[0].role: Invalid input: expected string, received number; is --control-socket the agent's socket?\n`);
      expect(result.code, result.stderr).toBe(1);
      // Not printed as a status: stdout has nothing, but with --json the error object.
      expect(splitJsonError(result.stdout)).toEqual({ printed: '', error: extra.length === 0 ? undefined : jsonErrorOf(result.stderr, 'control-socket', 1) });
    } finally {
      await close();
    }
  });

  it("status shows a client's hostname with blanks quoted in its one cell, an empty one as '-', and --json gives both as they are", async () => {
    // `evil host  pl1    100.64.0.1  bound` was printed as it is, faking a row's columns.
    const evil = 'evil host  pl1    100.64.0.1  bound';
    const leases = [
      { ifname: 'snp1', clientIp: '100.64.0.1', state: 'bound', hostname: evil },
      { ifname: 'snp2', clientIp: '100.64.0.2', state: 'bound', hostname: '' },
    ];
    const reply = { links: [], counters: {}, firewall: null, flowLimits: null, firewallError: null, model: null, conntrack: null, services: { leases, dhcp: null, dns: null } };
    const path = join(dir, 'hostname.sock');
    const close = await fakeControlSocket(path, (socket) => socket.end(`${JSON.stringify(reply)}\n`));
    try {
      const text = await status(path);
      expect(text.code, text.stderr).toBe(0);
      const rows = text.stdout.split('\n').filter((line) => line.startsWith('snp'));
      expect(rows).toEqual([`snp1   100.64.0.1  bound  -           ${JSON.stringify(evil)}`, 'snp2   100.64.0.2  bound  -           -']);
      const json = await provider.exec(['node', CLI, 'status', '--json', '--control-socket', path], { enter: 'nsenter', allowFailure: true, timeoutMs: 20_000 });
      expect(json.code, json.stderr).toBe(0);
      expect((JSON.parse(json.stdout) as typeof reply).services.leases.map((lease) => lease.hostname)).toEqual([evil, '']);
    } finally {
      await close();
    }
  });
});
