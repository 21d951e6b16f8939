// Whether a VMM runs in the taps' network namespace: the verdict (a property over all cases), and
// the namespace of real processes, in this namespace, in one of the test's own, and gone; what a
// name resolves to there, asked without a device ioctl.
import { execFile, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_NIC_MTU, NIC_MTU_MAX, NIC_MTU_MIN } from '../../../host/vmm/nic.js';
import { type NamedDevice, type PeerProcess, type VmmPlace, guestMtu, mtuVerdict, namedDevice, openPeerNetns, peerNetns, tapsNetns } from '../../../host/vmm/vmm-netns.js';
import { createHarness, describeNetns, type Harness, type Netns } from '../../harness/index.js';
import { compiledFixture } from './fake-cloud-hypervisor-process.js';

const identity = fc.record({ dev: fc.bigInt({ min: 1n, max: 1n << 32n }), ino: fc.bigInt({ min: 1n, max: 1n << 32n }) });
const anyMtu = fc.integer({ min: NIC_MTU_MIN, max: NIC_MTU_MAX });
/** A link MTU (absent: the default), and where its VMM runs: a device there often has the link's MTU, or 1500. */
const linkAndPlace: fc.Arbitrary<[number | undefined, VmmPlace]> = fc.option(anyMtu, { nil: undefined }).chain((mtu) => {
  const named: fc.Arbitrary<NamedDevice> = fc.oneof(
    fc.constant({ kind: 'none' as const }),
    fc.record({ kind: fc.constant('device' as const), mtu: fc.oneof(fc.constant(mtu ?? DEFAULT_NIC_MTU), fc.constant(DEFAULT_NIC_MTU), anyMtu) }),
    fc.record({ kind: fc.constant('unknown' as const), why: fc.string() }),
  );
  const place: fc.Arbitrary<VmmPlace> = fc.oneof(
    fc.constant({ kind: 'same' as const }),
    fc.record({ kind: fc.constant('unknown' as const), why: fc.string() }),
    fc.record({ kind: fc.constant('other' as const), peer: identity, named }),
  );
  return fc.tuple(fc.constant(mtu), place);
});

/** A process known by its pid only (a kernel without SO_PEERPIDFD): nothing says whether it still runs. */
const byPid = (pid: number): PeerProcess => ({ pid, running: () => undefined });
/** A process whose pidfd says it has exited by the time it is asked, however /proc/PID reads. */
const exitedSince = (pid: number): PeerProcess => ({ pid, running: () => false });

describe('mtuVerdict', () => {
  it('in another namespace attaches (with a note) where the name resolves to a device of the link MTU, or to nothing at 1500; refuses another MTU; warns only where it cannot tell and the MTU is 1500', () => {
    fc.assert(
      fc.property(linkAndPlace, ([mtu, place]) => {
        const link = mtu ?? DEFAULT_NIC_MTU;
        const atDefault = link === DEFAULT_NIC_MTU;
        let expected: string;
        if (place.kind === 'same') expected = 'attach';
        else if (place.kind === 'unknown') expected = atDefault ? 'attach' : 'warn';
        else if (place.named.kind === 'device') expected = place.named.mtu === link ? 'note' : 'refuse';
        else if (place.named.kind === 'none') expected = atDefault ? 'note' : 'refuse';
        else expected = atDefault ? 'warn' : 'refuse';
        expect(mtuVerdict(place, mtu)).toBe(expected);
      }),
    );
  });

  it('never lets a VMM in another namespace give its guest another MTU than the link\'s: it attaches there only where the guest learns the link MTU, or, at 1500, cannot be told to', () => {
    fc.assert(
      fc.property(linkAndPlace, ([mtu, place]) => {
        if (place.kind !== 'other') return;
        const link = mtu ?? DEFAULT_NIC_MTU;
        const guest = guestMtu(place.named);
        const attaches = mtuVerdict(place, mtu) !== 'refuse';
        expect(attaches).toBe(guest === link || (guest === undefined && link === DEFAULT_NIC_MTU));
      }),
    );
  });

  it('guestMtu: the device\'s MTU; 1500 where nothing has the name (none is offered); undefined where that cannot be told', () => {
    fc.assert(
      fc.property(anyMtu, (mtu) => {
        expect(guestMtu({ kind: 'device', mtu })).toBe(mtu);
      }),
    );
    expect(guestMtu({ kind: 'none' })).toBe(DEFAULT_NIC_MTU);
    expect(guestMtu({ kind: 'unknown', why: 'x' })).toBeUndefined();
  });
});

describe('namedDevice and openPeerNetns, no namespace of our own', () => {
  it('resolves a name in a namespace held open: its device\'s MTU, or none; a descriptor that is no network namespace cannot be told', () => {
    const own = openSync('/proc/thread-self/ns/net', 'r');
    const notNetns = openSync('/dev/null', 'r');
    try {
      expect(namedDevice(own, 'lo')).toEqual({ kind: 'device', mtu: 65536 });
      expect(namedDevice(own, 'snp-none')).toEqual({ kind: 'none' });
      expect(namedDevice(notNetns, 'lo')).toMatchObject({ kind: 'unknown', why: expect.stringMatching(/^setns: /) });
    } finally {
      closeSync(own);
      closeSync(notNetns);
    }
  });

  it('a namespace given by the pidfd is taken without /proc; one whose process has exited (ESRCH) cannot be told', () => {
    const ours = tapsNetns(undefined);
    let asked = 0;
    const byPidfd: PeerProcess = { pid: 0, running: () => (asked++, true), netnsFd: () => openSync('/proc/thread-self/ns/net', 'r') };
    const opened = openPeerNetns(byPidfd);
    if (opened.kind === 'open') closeSync(opened.fd);
    expect(opened).toMatchObject({ kind: 'open', identity: ours });
    expect(asked).toBe(0);
    const gone: PeerProcess = { pid: 4242, running: () => true, netnsFd: () => { throw Object.assign(new Error('gone'), { code: 'ESRCH' }); } };
    expect(peerNetns(gone, ours)).toEqual({ kind: 'unknown', why: 'its process 4242 has exited' });
    // No pidfd to ask (before Linux 6.11): /proc/PID, as byPid.
    expect(peerNetns({ pid: process.pid, running: () => true, netnsFd: () => undefined }, ours)).toEqual({ kind: 'same' });
  });
});

describe('peerNetns, no namespace of our own', () => {
  it('this process is in its own namespace; pid 0 and an exited process cannot be told', () => {
    const ours = tapsNetns(undefined);
    expect(peerNetns(byPid(process.pid), ours)).toEqual({ kind: 'same' });
    expect(peerNetns(byPid(0), ours)).toMatchObject({ kind: 'unknown', why: expect.stringMatching(/not visible from our PID namespace/) });
    const exited = spawnSync('true').pid;
    expect(exited).toBeGreaterThan(0);
    expect(peerNetns(byPid(exited ?? 0), ours)).toMatchObject({ kind: 'unknown', why: `its process ${String(exited)} has exited` });
  });

  it('a process that has exited by the time /proc/PID/ns/net was read cannot be told, whatever that showed: the pid may name another by then', () => {
    const ours = tapsNetns(undefined);
    let asked = 0;
    const peer: PeerProcess = { pid: process.pid, running: () => (asked++, false) };
    expect(peerNetns(peer, ours)).toEqual({ kind: 'unknown', why: `its process ${process.pid} has exited` });
    expect(asked).toBe(1);
    expect(peerNetns({ pid: process.pid, running: () => true }, ours)).toEqual({ kind: 'same' });
  });
});

describeNetns('peerNetns with a namespace of the test', () => {
  let harness: Harness;
  let ns: Netns;

  beforeAll(async () => {
    harness = createHarness('vmmns');
    ns = await harness.namespace('taps');
  });

  afterAll(async () => {
    await harness?.cleanup();
  });

  it('resolves an altname there to its device, as SIOCGIFMTU does: only there, and without changing anything', async () => {
    await ns.ip(['tuntap', 'add', 'dev', 'snd7', 'mode', 'tap']);
    await ns.ip(['link', 'set', 'snd7', 'mtu', '9000']);
    await ns.ip(['link', 'property', 'add', 'dev', 'snd7', 'altname', 'snp7007']);
    const there = openSync(`/run/netns/${ns.name}`, 'r');
    const here = openSync('/proc/thread-self/ns/net', 'r');
    try {
      const before = (await ns.ip(['-d', 'link', 'show'])).stdout;
      expect(namedDevice(there, 'snp7007')).toEqual({ kind: 'device', mtu: 9000 });
      expect(namedDevice(there, 'snd7')).toEqual({ kind: 'device', mtu: 9000 });
      expect(namedDevice(here, 'snp7007')).toEqual({ kind: 'none' });
      expect((await ns.ip(['-d', 'link', 'show'])).stdout).toBe(before);
    } finally {
      closeSync(there);
      closeSync(here);
    }
  });

  it("resolves the same names as an unprivileged SIOCGIFMTU there (cloud-hypervisor's): 15-byte names and altnames, not a prefix of a longer altname", async () => {
    await ns.ip(['link', 'add', 'sndabcdefghijkl', 'type', 'veth', 'peer', 'name', 'snd10']);
    await ns.ip(['link', 'set', 'sndabcdefghijkl', 'mtu', '9000']);
    await ns.ip(['link', 'set', 'snd10', 'mtu', '7000']);
    await ns.ip(['link', 'property', 'add', 'dev', 'snd10', 'altname', 'snpzyxwvutsrqpo']);
    await ns.ip(['link', 'property', 'add', 'dev', 'snd10', 'altname', 'snplongaltname0123456789']);
    const names = ['sndabcdefghijkl', 'sndabcdefghijk', 'snd10', 'snpzyxwvutsrqpo', 'snplongaltname0', 'snp-absent'];
    // No capabilities (an empty bounding set): the kernel then tries no module load for a
    // missing name (dev_load asks capable()), and the ioctl is asked as cloud-hypervisor asks it.
    const ioctl = `
import fcntl, socket, struct, sys
probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for name in sys.argv[1:]:
    try:
        print(struct.unpack('16si12x', fcntl.ioctl(probe, 0x8921, struct.pack('16si12x', name.encode(), 0)))[1])
    except OSError as error:
        print(error.strerror if error.errno != 19 else 'none')`;
    const asked = await ns.exec(['setpriv', '--bounding-set=-all', '--inh-caps=-all', 'python3', '-c', ioctl, ...names]);
    const byIoctl = asked.stdout.trim().split('\n').map((line) => (line === 'none' ? { kind: 'none' } : { kind: 'device', mtu: Number(line) }));
    expect(byIoctl).toEqual([
      { kind: 'device', mtu: 9000 },
      { kind: 'none' },
      { kind: 'device', mtu: 7000 },
      { kind: 'device', mtu: 7000 },
      { kind: 'none' },
      { kind: 'none' },
    ]);
    const there = openSync(`/run/netns/${ns.name}`, 'r');
    try {
      expect(names.map((name) => namedDevice(there, name))).toEqual(byIoctl);
    } finally {
      closeSync(there);
    }
  });

  it("resolves a name whose device's answer is large (hundreds of long altnames, up to the kernel's 64 KiB property list), as SIOCGIFMTU does", async () => {
    await ns.ip(['tuntap', 'add', 'dev', 'snd9', 'mode', 'tap']);
    await ns.ip(['link', 'set', 'snd9', 'mtu', '9000']);
    // 400 altnames of 127 bytes: about 53 KiB of them in the device's RTM_NEWLINK.
    const altnames = Array.from({ length: 400 }, (_, index) => `snp${String(index).padStart(3, '0')}${'x'.repeat(121)}`);
    await ns.exec(['ip', '-batch', '-'], { input: altnames.map((altname) => `link property add dev snd9 altname ${altname}\n`).join('') });
    await ns.ip(['link', 'property', 'add', 'dev', 'snd9', 'altname', 'snp7009']);
    const shown = JSON.parse((await ns.ip(['-j', 'link', 'show', 'dev', 'snd9'])).stdout) as { altnames?: string[] }[];
    expect(shown[0]?.altnames?.length).toBe(401);
    const there = openSync(`/run/netns/${ns.name}`, 'r');
    try {
      expect(namedDevice(there, 'snd9')).toEqual({ kind: 'device', mtu: 9000 });
      expect(namedDevice(there, 'snp7009')).toEqual({ kind: 'device', mtu: 9000 });
    } finally {
      closeSync(there);
    }
  });

  it('asks without a device ioctl (SIOCGIF*, for which the kernel first tries to load a module named after a missing name: dev_load runs modprobe), as strace shows', async () => {
    // The kernel here may have no modules at all (no /proc/sys/kernel/modprobe), and pointing
    // modprobe elsewhere would change the whole machine: what is observed is the call itself.
    // Run from dist, in a process of its own under strace (ptrace: nothing outside it changes).
    const compiled = compiledFixture('host/vmm/vmm-netns', ['host/vmm/tap-fd']);
    await ns.ip(['tuntap', 'add', 'dev', 'snd8', 'mode', 'tap']);
    await ns.ip(['link', 'set', 'snd8', 'mtu', '8000']);
    await ns.ip(['link', 'property', 'add', 'dev', 'snd8', 'altname', 'snp7008']);
    const dir = mkdtempSync(join(tmpdir(), 'sn-vmmns-strace-'));
    try {
      const trace = join(dir, 'trace');
      const lookups = `
        import { closeSync, openSync } from 'node:fs';
        import { namedDevice } from ${JSON.stringify(compiled)};
        const there = openSync(${JSON.stringify(`/run/netns/${ns.name}`)}, 'r');
        console.log(JSON.stringify(['snp-absent', 'snd8', 'snp7008'].map((name) => namedDevice(there, name))));
        closeSync(there);`;
      const { stdout } = await promisify(execFile)('strace', ['-f', '-qq', '-e', 'trace=ioctl,setns', '-o', trace, process.execPath, '--input-type=module', '-e', lookups]);
      expect(JSON.parse(stdout)).toEqual([{ kind: 'none' }, { kind: 'device', mtu: 8000 }, { kind: 'device', mtu: 8000 }]);
      const calls = readFileSync(trace, 'utf8').split('\n');
      // The trace saw the lookups (each enters the namespace and comes back) ...
      expect(calls.filter((line) => /\bsetns\(\d+, CLONE_NEWNET\) += 0/.test(line)).length).toBeGreaterThanOrEqual(6);
      // ... and no socket device ioctl (SIOC*, or the 0x89xx range where strace has no name).
      expect(calls.filter((line) => /\bioctl\(\d+, (SIOC|0x89[0-9a-f]{2}\b)/i.test(line))).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('tells a process in the taps namespace from one elsewhere', async () => {
    const inside = ns.spawn(['sh', '-c', 'echo ready; exec sleep 30'], { enter: 'nsenter' });
    try {
      await inside.waitForOutput(/^ready$/m);
      const taps = tapsNetns(`/run/netns/${ns.name}`);
      expect(peerNetns(byPid(inside.pid), taps)).toEqual({ kind: 'same' });
      const here = peerNetns(byPid(process.pid), taps);
      expect(here).toMatchObject({ kind: 'other', taps });
      expect(here.kind === 'other' && here.peer).toEqual(tapsNetns(undefined));
    } finally {
      await inside.kill('SIGKILL');
    }
  });
});
