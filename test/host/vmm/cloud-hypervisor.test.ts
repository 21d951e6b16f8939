// chAttach/chDetach against the fake cloud-hypervisor API (fake-cloud-hypervisor.ts): every
// documented status, idempotence, the tap handed over as a descriptor, and the bounds on time and
// size. The taps are real, in a namespace of the test's own (chAttach opens them there).
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { type Server, type Socket, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CH_MAX_BODY, type CloudHypervisorOptions, chAttach, chDetach } from '../../../host/vmm/cloud-hypervisor.js';
import type { VmmNic } from '../../../host/vmm/nic.js';
import { TapFd } from '../../../host/vmm/tap-fd.js';
import { shownNetns, tapsNetns } from '../../../host/vmm/vmm-netns.js';
import { createHarness, describeNetns, eventually, type Harness, type Netns } from '../../harness/index.js';
import { FakeCloudHypervisor, type FakeVmState } from './fake-cloud-hypervisor.js';
import { FakeCloudHypervisorProcess, compiledFixture } from './fake-cloud-hypervisor-process.js';
import { orphanedListener } from './orphaned-listener.js';
import { chError } from './rejection.js';

const nic: VmmNic = { id: 'snp42310', tap: 'snp42310', mac: '0A:B3:EC:80:A5:46' };
// What a terminal could act on: C0 and C1 controls, DEL, and format characters such as bidi overrides.
const TERMINAL_ACTIVE = /[\p{Cc}\p{Cf}]/u;
/** Text a hostile VMM puts where a MAC, a tap or an error description goes. */
const HOSTILE = `\u001b]0;owned\u0007\u001b[2J\u009b2K\u202e${'x'.repeat(100_000)}`;
let options: CloudHypervisorOptions = { timeoutMs: 2000 };
/** The options with another time bound (read when called: beforeAll sets the taps' namespace). */
const within = (timeoutMs: number): CloudHypervisorOptions => ({ ...options, timeoutMs });

let fakes: FakeCloudHypervisor[] = [];
const cleanups: Array<() => Promise<void> | void> = [];
let harness: Harness | undefined;
/** The namespace the taps are in. */
let tapsNs: Netns | undefined;

afterEach(async () => {
  await Promise.all(fakes.map((fake) => fake.close()));
  fakes = [];
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

async function fake(state?: FakeVmState): Promise<FakeCloudHypervisor> {
  const started = await FakeCloudHypervisor.start(state);
  fakes.push(started);
  return started;
}

describeNetns('cloud-hypervisor API client, taps in a namespace', () => {
  beforeAll(async () => {
    harness = createHarness('chapi');
    const ns = await harness.namespace('vmm');
    tapsNs = ns;
    for (const tap of ['snp42310', 'snp1']) await ns.ip(['tuntap', 'add', 'dev', tap, 'mode', 'tap', 'vnet_hdr']);
    await ns.ip(['link', 'add', 'snb1', 'type', 'bridge']);
    options = { timeoutMs: 2000, tapNetnsPath: `/run/netns/${ns.name}` };
  });

  afterAll(async () => {
    await harness?.cleanup();
  });

  describe('chAttach', () => {
    it('200: hot-adds to a running VM with mac and id and a queue of the tap sent along, and returns the PCI address', async () => {
      const ch = await fake('Running');
      expect(await chAttach(ch.socketPath, nic, options)).toEqual({ outcome: 'hot-added', bdf: '0000:00:03.0' });
      expect(ch.requests).toEqual([{ method: 'PUT', path: '/api/v1/vm.add-net', body: { mac: '0A:B3:EC:80:A5:46', id: 'snp42310' }, taps: ['snp42310'] }]);
      expect(ch.nets.map((net) => net.id)).toEqual(['snp42310']);
      expect(ch.heldTapQueues()).toBe(1);
      // The VMM holds the tap's one queue now: nobody else can open it.
      expect(() => TapFd.open('snp42310', options.tapNetnsPath)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    });

    it('204: cold-adds to a created VM', async () => {
      const ch = await fake('Created');
      expect(await chAttach(ch.socketPath, nic, options)).toEqual({ outcome: 'cold-added' });
    });

    it('attached already (the VMM holds the tap, vm.info: same id, MAC in any case): already attached, nothing sent', async () => {
      const ch = await fake('Running');
      await chAttach(ch.socketPath, nic, options);
      expect(await chAttach(ch.socketPath, nic, options)).toEqual({ outcome: 'already-attached' });
      expect(ch.requests.map((r) => `${r.method} ${r.path}`)).toEqual(['PUT /api/v1/vm.add-net', 'GET /api/v1/vm.info']);
      expect(ch.nets).toHaveLength(1);
    });

    it('409 with the same NIC while its tap is free: not on this tap (made anew since), a conflict saying what to do, nothing changed', async () => {
      // The VMM would hold the tap's one queue if its NIC were on it: a free tap of that name was
      // made anew after the NIC's was deleted (a rollback, an unlink while the VMM was unreachable).
      const ch = await fake('Running');
      ch.nets.push({ id: nic.id, mac: '0a:b3:ec:80:a5:46', bdf: '0000:00:03.0' });
      const error = await chError(chAttach(ch.socketPath, nic, options));
      expect(error).toMatchObject({ kind: 'conflict', status: 409 });
      expect(error.message).toMatch(/NIC snp42310 .* not on tap snp42310: .*made anew.*unlink.*link it again/);
      expect(ch.requests.map((r) => `${r.method} ${r.path}`)).toEqual(['PUT /api/v1/vm.add-net', 'GET /api/v1/vm.info']);
      expect(ch.nets).toHaveLength(1);
      expect(ch.heldTapQueues()).toBe(0);
    });

    it('409 with another MAC, or another tap named, under the id: conflict', async () => {
      const ch = await fake('Running');
      await chAttach(ch.socketPath, nic, options);
      const otherMac = await chError(chAttach(ch.socketPath, { ...nic, mac: '0A:B3:EC:80:A5:47' }, options));
      expect(otherMac).toMatchObject({ kind: 'conflict', status: 409 });
      expect(otherMac.message).toMatch(/already has NIC snp42310 with MAC 0a:b3:ec:80:a5:46 on tap \(none\), not 0A:B3:EC:80:A5:47 on snp42310/);
      ch.nets.push({ id: 'snp1', mac: '0a:b3:ec:80:00:01', tap: 'snp99', bdf: '0000:00:04.0' });
      expect((await chError(chAttach(ch.socketPath, { id: 'snp1', tap: 'snp1', mac: '0A:B3:EC:80:00:01' }, options))).message).toMatch(/on tap snp99, not .* on snp1/);
    });

    it('a tap another process holds, for a NIC this VM does not have: conflict, nothing sent', async () => {
      const ch = await fake('Running');
      const held = TapFd.open(nic.tap, options.tapNetnsPath);
      cleanups.push(() => held.close());
      const error = await chError(chAttach(ch.socketPath, nic, options));
      expect(error.kind).toBe('conflict');
      expect(error.message).toMatch(/tap snp42310 is held by another process, and this VM has no NIC snp42310/);
      expect(ch.requests.map((r) => r.path)).toEqual(['/api/v1/vm.info']);
    });

    it('a tap that does not exist, or a device that is no tap: tap-unavailable before anything is sent', async () => {
      const ch = await fake('Running');
      const missing = await chError(chAttach(ch.socketPath, { ...nic, tap: 'snp9' }, options));
      expect(missing.kind).toBe('tap-unavailable');
      expect(missing.message).toMatch(/tap snp9 does not exist in this network namespace/);
      const bridge = await chError(chAttach(ch.socketPath, { ...nic, tap: 'snb1' }, options));
      expect(bridge.kind).toBe('tap-unavailable');
      expect(bridge.message).toMatch(/snb1 is not a tap/);
      expect(ch.requests).toEqual([]);
    });

    it("a tap's name that is only another tap's altname: tap-unavailable saying so, nothing sent and that tap not handed over", async () => {
      await tapsNs!.ip(['tuntap', 'add', 'dev', 'snd5', 'mode', 'tap', 'vnet_hdr']);
      await tapsNs!.ip(['link', 'property', 'add', 'dev', 'snd5', 'altname', 'snp5']);
      cleanups.push(async () => void (await tapsNs!.ip(['link', 'del', 'dev', 'snd5'])));
      const ch = await fake('Running');
      const error = await chError(chAttach(ch.socketPath, { ...nic, id: 'snp5', tap: 'snp5' }, options));
      expect(error.kind).toBe('tap-unavailable');
      expect(error.message).toBe(
        `cloud-hypervisor at ${ch.socketPath}: tap snp5 does not exist in this network namespace: snp5 is an altname of device snd5, which was left alone; delete that altname (ip link property del dev snd5 altname snp5) and link again`,
      );
      expect(ch.requests).toEqual([]);
      expect(ch.heldTapQueues()).toBe(0);
    });

    it('409 for a device that is not a NIC: conflict', async () => {
      const ch = await fake('Running');
      ch.otherDevices.add('snp42310');
      const error = await chError(chAttach(ch.socketPath, nic, options));
      expect(error.kind).toBe('conflict');
      expect(error.message).toMatch(/not a NIC/);
    });

    it('400: invalid config, with cloud-hypervisor\'s reason and what to check', async () => {
      const ch = await fake('Running');
      ch.inject('vm.add-net', { status: 400, body: 'Error adding device to the VM: Open tap device failed: No such device' });
      const error = await chError(chAttach(ch.socketPath, nic, options));
      expect(error).toMatchObject({ kind: 'invalid-config', status: 400 });
      expect(error.message).toMatch(/Open tap device failed.*see the VMM's log/);
    });

    it('the fake itself answers 400 for bodies that are not a valid NetConfig', async () => {
      const ch = await fake('Running');
      const { request } = await import('node:http');
      const put = (body: string): Promise<number> =>
        new Promise((resolve, reject) => {
          const req = request({ socketPath: ch.socketPath, method: 'PUT', path: '/api/v1/vm.add-net', agent: false }, (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          });
          req.on('error', reject);
          req.end(body);
        });
      expect(await put('{"tap": 1}')).toBe(400);
      expect(await put('{"mac": "not-a-mac"}')).toBe(400);
      expect(await put('{"num_queues": "two"}')).toBe(400);
      expect(await put('[')).toBe(400);
      expect(await put('{"tap": "t", "mac": "0a:b3:ec:80:a5:46", "id": "x"}')).toBe(200);
    });

    it('404: no VM created', async () => {
      const ch = await fake(undefined);
      const error = await chError(chAttach(ch.socketPath, nic, options));
      expect(error).toMatchObject({ kind: 'vm-not-created', status: 404 });
      expect(error.message).toMatch(/not created yet.*right VM's API socket/);
    });

    it('500: failed, pointing at the VMM log', async () => {
      const ch = await fake('Running');
      ch.inject('vm.add-net', { status: 500, body: 'Error adding device to the VM: internal' });
      const error = await chError(chAttach(ch.socketPath, nic, options));
      expect(error).toMatchObject({ kind: 'failed', status: 500 });
      expect(error.message).toMatch(/internal.*VMM's log/);
    });

    it('undocumented statuses and bodies are protocol errors', async () => {
      const ch = await fake('Running');
      ch.inject('vm.add-net', { status: 418, body: 'teapot' });
      expect(await chError(chAttach(ch.socketPath, nic, options))).toMatchObject({ kind: 'protocol', status: 418 });
      ch.inject('vm.add-net', { status: 200, body: 'not json' });
      expect((await chError(chAttach(ch.socketPath, nic, options))).kind).toBe('protocol');
      ch.inject('vm.add-net', { status: 200, body: '{"id": "snp42310"}' }); // bdf is required
      expect((await chError(chAttach(ch.socketPath, nic, options))).message).toMatch(/PciDeviceInfo/);
      ch.inject('vm.add-net', { status: 200, body: '{"id": "snp42310", "bdf": "zz"}' });
      expect((await chError(chAttach(ch.socketPath, nic, options))).kind).toBe('protocol');
      ch.inject('vm.add-net', { status: 200, body: '{"id": "other", "bdf": "0000:00:03.0"}' });
      expect((await chError(chAttach(ch.socketPath, nic, options))).message).toMatch(/added device "other"/);
      ch.inject('vm.add-net', { status: 409 });
      ch.inject('vm.info', { status: 200, body: '{"state": "Running"}' }); // config is required
      expect((await chError(chAttach(ch.socketPath, nic, options))).message).toMatch(/not a VmInfo/);
    });

    it("quotes and bounds the device id a 200 names: a VMM cannot write to the operator's terminal", async () => {
      const ch = await fake('Running');
      ch.inject('vm.add-net', { status: 200, body: JSON.stringify({ id: HOSTILE, bdf: '0000:00:03.0' }) });
      const error = await chError(chAttach(ch.socketPath, nic, options));
      expect(error.message).toMatch(/added device "\\u001b\]0;owned/);
      expect(error.message).not.toMatch(TERMINAL_ACTIVE);
      expect(error.message.length).toBeLessThan(1000);
    });

    it('vm.add-net answered too late, or with a 200 that is no PciDeviceInfo: the NIC cloud-hypervisor made anyway is taken back', async () => {
      // Left there, it would hold a tap that the linker's rollback then deletes, and the next link
      // would find "NIC with this id and MAC" and call it attached: a NIC on a dead tap.
      for (const answer of [null, { status: 200, body: '{"id": "snp42310"}' }]) {
        const ch = await fake('Running');
        ch.answerAfterWork.set('vm.add-net', answer);
        const error = await chError(chAttach(ch.socketPath, nic, within(300)));
        expect(error.kind).toBe(answer === null ? 'timeout' : 'protocol');
        expect(ch.requests.map((r) => `${r.method} ${r.path}`)).toEqual(['PUT /api/v1/vm.add-net', 'GET /api/v1/vm.info', 'PUT /api/v1/vm.remove-device']);
        expect(ch.nets).toEqual([]);
        expect(ch.heldTapQueues()).toBe(0);
      }
    });

    it('a refusal, or an id taken by another NIC, takes nothing back', async () => {
      const ch = await fake('Running');
      ch.inject('vm.add-net', { status: 500, body: 'Error adding device to the VM: internal' });
      await chError(chAttach(ch.socketPath, nic, options));
      ch.nets.push({ id: nic.id, mac: '0a:b3:ec:80:a5:47', bdf: '0000:00:04.0' });
      expect((await chError(chAttach(ch.socketPath, nic, options))).kind).toBe('conflict');
      expect(ch.requests.some((r) => r.path === '/api/v1/vm.remove-device')).toBe(false);
      expect(ch.nets).toHaveLength(1);
    });

    it('refuses an answer over the size limit', async () => {
      const ch = await fake('Running');
      ch.inject('vm.add-net', { status: 200, body: 'x'.repeat(CH_MAX_BODY + 1) });
      expect((await chError(chAttach(ch.socketPath, nic, options))).message).toMatch(/more than 1048576 bytes/);
    });

    it('refuses a bad NIC before sending anything', async () => {
      const ch = await fake('Running');
      await expect(chAttach(ch.socketPath, { ...nic, id: 'a,b' }, options)).rejects.toThrow(/VMM device id/);
      expect(ch.requests).toEqual([]);
    });
  });

  describe('chAttach: the VMM in the taps\' network namespace or not (cloud-hypervisor reads the tap\'s MTU by name in its own)', () => {
    let heard: { level: string; message: string }[] = [];
    const logged = (extra: Partial<CloudHypervisorOptions> = {}): CloudHypervisorOptions => {
      heard = [];
      return { ...options, vm: 'appvm-lynx', log: (level, message) => heard.push({ level, message }), ...extra };
    };
    /** The info note of an attach to a cloud-hypervisor (pid) in another namespace where the tap's name is a device of the link's MTU. */
    const deviceNote = (pid: number | undefined, mtu: number): { level: string; message: unknown } => ({
      level: 'info',
      message: expect.stringMatching(
        new RegExp(
          `^cloud-hypervisor of VM appvm-lynx at .*api\\.sock \\(pid ${String(pid)}, which made the socket listen\\) runs in network namespace net:\\[\\d+\\], not in the taps' .*: it reads tap snp42310's MTU by name there, where that name is another device's \\(its own name or an altname\\) of MTU ${mtu}, so its guest gets ${mtu}, the link's$`,
        ),
      ),
    });

    it('another namespace with nothing of the tap\'s name and a link MTU other than 1500: other-netns in one line saying what to do, before anything is sent', async () => {
      // The fake runs in this process, not in the taps' namespace; nothing here has the tap's name.
      const ch = await fake('Running');
      const fds = readdirSync('/proc/self/fd').length;
      const error = await chError(chAttach(ch.socketPath, { ...nic, mtu: 9000 }, logged()));
      expect(error.kind).toBe('other-netns');
      expect(error.message).not.toContain('\n');
      expect(error.message).toMatch(
        new RegExp(
          `^cloud-hypervisor of VM appvm-lynx at .*api\\.sock \\(pid ${process.pid}, which made the socket listen\\) runs in network namespace net:\\[\\d+\\], not in the taps' \\(${options.tapNetnsPath ?? ''}, net:\\[\\d+\\]\\): it reads tap snp42310's MTU by name in its own namespace, where nothing has that name, so its guest would get the default 1500, not the link MTU 9000; run cloud-hypervisor in the taps' network namespace, or link with --mtu 1500 \\(its guest then gets 1500\\)$`,
        ),
      );
      expect(ch.requests).toEqual([]);
      expect(heard).toEqual([]);
      // The queue opened to go along was closed: the tap is free.
      TapFd.open(nic.tap, options.tapNetnsPath).close();
      // And the connection made to vet the VMM: no descriptor is left on either side (the fake
      // shares this process; until it has seen the connection close, it holds one too).
      await eventually('the refused connection closed', async () => readdirSync('/proc/self/fd').length === fds, 2000);
      expect(await ch.openConnections()).toBe(0);
    });

    it('another namespace at MTU 1500 (or none given): attached, with an info note', async () => {
      const ch = await fake('Running');
      expect(await chAttach(ch.socketPath, { ...nic, mtu: 1500 }, logged())).toMatchObject({ outcome: 'hot-added' });
      expect(heard).toEqual([{ level: 'info', message: expect.stringMatching(/runs in network namespace .* so its guest gets the default 1500, the link's \(a cloud-hypervisor before PR #8112, April 2026, refuses the NIC there instead\)$/) }]);
      expect(await chAttach(ch.socketPath, { ...nic, id: 'snp1', tap: 'snp1', mac: '0A:B3:EC:80:00:01' }, logged())).toMatchObject({ outcome: 'hot-added' });
      expect(heard.map((line) => line.level)).toEqual(['info']);
    });

    /** A fake cloud-hypervisor in a namespace of the test's own, made ready by `prepare` first. */
    async function fakeElsewhere(name: string, prepare: (ns: Netns) => Promise<void>): Promise<{ ns: Netns; ch: FakeCloudHypervisorProcess }> {
      if (harness === undefined) throw new Error('no harness');
      const ns = await harness.namespace(name);
      await prepare(ns);
      const ch = await FakeCloudHypervisorProcess.start(ns, 'Running');
      cleanups.push(() => ch.close());
      return { ns, ch };
    }
    const refusedForMtu = (pid: number, mtu: number): RegExp =>
      new RegExp(
        `^cloud-hypervisor of VM appvm-lynx at .*api\\.sock \\(pid ${pid}, which made the socket listen\\) runs in network namespace net:\\[\\d+\\], not in the taps' .*: it reads tap snp42310's MTU by name in its own namespace, where that name is a device's \\(its own name or an altname\\) of MTU ${mtu}, so its guest would learn ${mtu}, not the link's 1500; run cloud-hypervisor in the taps' network namespace, or free the name snp42310 there \\(rename that device, or delete that altname\\)$`,
      );

    it('another namespace at MTU 1500 that has a device of the tap\'s name at MTU 9000: other-netns saying that MTU, before anything is sent; without that device, attached with the note', async () => {
      // A tap of the same name there, MTU 9000 (as another link's of the same device prefix could be).
      const { ns: elsewhere, ch } = await fakeElsewhere('other', async (ns) => {
        await ns.ip(['tuntap', 'add', 'dev', nic.tap, 'mode', 'tap']);
        await ns.ip(['link', 'set', nic.tap, 'mtu', '9000']);
      });
      const error = await chError(chAttach(ch.socketPath, { ...nic, mtu: 1500 }, logged()));
      expect(error.kind).toBe('other-netns');
      expect(error.message).toMatch(refusedForMtu(ch.pid, 9000));
      expect(heard).toEqual([]);
      expect(await ch.report()).toMatchObject({ requests: [], heldTapQueues: 0 });
      // Without that device there, the same attach goes on, with the note.
      await elsewhere.ip(['link', 'del', nic.tap]);
      expect(await chAttach(ch.socketPath, { ...nic, mtu: 1500 }, logged())).toMatchObject({ outcome: 'hot-added' });
      expect(heard).toEqual([{ level: 'info', message: expect.stringMatching(/: it cannot read tap snp42310's MTU there, so its guest gets the default 1500, the link's/) }]);
      await chDetach(ch.socketPath, nic, options);
    });

    it("another namespace at MTU 1500 where the tap's name is an altname of a device at MTU 9000 (not in /proc/PID/net/dev): other-netns saying 9000", async () => {
      // SIOCGIFMTU resolves an altname to its device, as cloud-hypervisor's read there would.
      const { ch } = await fakeElsewhere('altname', async (ns) => {
        await ns.ip(['tuntap', 'add', 'dev', 'snd9', 'mode', 'tap']);
        await ns.ip(['link', 'set', 'snd9', 'mtu', '9000']);
        await ns.ip(['link', 'property', 'add', 'dev', 'snd9', 'altname', nic.tap]);
      });
      const error = await chError(chAttach(ch.socketPath, { ...nic, mtu: 1500 }, logged()));
      expect(error.kind).toBe('other-netns');
      expect(error.message).toMatch(refusedForMtu(ch.pid, 9000));
      expect(heard).toEqual([]);
      expect(await ch.report()).toMatchObject({ requests: [], heldTapQueues: 0 });
      // A link of MTU 9000: that altname's device gives its guest 9000, the link's.
      expect(await chAttach(ch.socketPath, { ...nic, mtu: 9000 }, logged())).toMatchObject({ outcome: 'hot-added' });
      expect(heard).toEqual([{ level: 'info', message: expect.stringMatching(/: it reads tap snp42310's MTU by name there, where that name is another device's \(its own name or an altname\) of MTU 9000, so its guest gets 9000, the link's$/) }]);
      await chDetach(ch.socketPath, nic, options);
    });

    it("another namespace at a link MTU of 9000 where the tap's name is a device's of MTU 9000: attached, saying so at info level; of another MTU: other-netns saying which, before anything is sent", async () => {
      // cloud-hypervisor there reads 9000 by the tap's name, and offers its guest that: the link's.
      const { ns: elsewhere, ch } = await fakeElsewhere('same9000', async (ns) => {
        await ns.ip(['tuntap', 'add', 'dev', nic.tap, 'mode', 'tap']);
        await ns.ip(['link', 'set', nic.tap, 'mtu', '8000']);
      });
      const error = await chError(chAttach(ch.socketPath, { ...nic, mtu: 9000 }, logged()));
      expect(error.kind).toBe('other-netns');
      expect(error.message).not.toContain('\n');
      expect(error.message).toMatch(
        new RegExp(
          `^cloud-hypervisor of VM appvm-lynx at .*api\\.sock \\(pid ${ch.pid}, which made the socket listen\\) runs in network namespace net:\\[\\d+\\], not in the taps' .*: it reads tap snp42310's MTU by name in its own namespace, where that name is a device's \\(its own name or an altname\\) of MTU 8000, so its guest would learn 8000, not the link's 9000; run cloud-hypervisor in the taps' network namespace, or give that device MTU 9000 there$`,
        ),
      );
      expect(heard).toEqual([]);
      expect(await ch.report()).toMatchObject({ requests: [], heldTapQueues: 0 });
      await elsewhere.ip(['link', 'set', nic.tap, 'mtu', '9000']);
      expect(await chAttach(ch.socketPath, { ...nic, mtu: 9000 }, logged())).toMatchObject({ outcome: 'hot-added' });
      expect(heard).toEqual([deviceNote(ch.pid, 9000)]);
      expect(await ch.report()).toMatchObject({ requests: [{ path: '/api/v1/vm.add-net', taps: ['snp42310'] }], heldTapQueues: 1 });
      await chDetach(ch.socketPath, nic, options);
    });

    it("another namespace at MTU 1500 that has a device of the tap's name at MTU 1500: attached (its guest gets 1500 all the same), saying so at info level", async () => {
      const { ch } = await fakeElsewhere('same1500', async (ns) => {
        await ns.ip(['tuntap', 'add', 'dev', nic.tap, 'mode', 'tap']);
        await ns.ip(['link', 'set', nic.tap, 'mtu', '1500']);
      });
      expect(await chAttach(ch.socketPath, { ...nic, mtu: 1500 }, logged())).toMatchObject({ outcome: 'hot-added' });
      expect(heard).toEqual([deviceNote(ch.pid, 1500)]);
      expect(await ch.report()).toMatchObject({ requests: [{ path: '/api/v1/vm.add-net', taps: ['snp42310'] }], heldTapQueues: 1 });
      await chDetach(ch.socketPath, nic, options);
    });

    it('another namespace at MTU 1500 with nothing of the tap\'s name: attached with the note', async () => {
      const { ch } = await fakeElsewhere('noname', async () => undefined);
      expect(await chAttach(ch.socketPath, { ...nic, mtu: 1500 }, logged())).toMatchObject({ outcome: 'hot-added' });
      expect(heard).toEqual([
        {
          level: 'info',
          message: expect.stringMatching(
            new RegExp(
              `\\(pid ${ch.pid}, which made the socket listen\\) runs in network namespace net:\\[\\d+\\], not in the taps' .*: it cannot read tap snp42310's MTU there, so its guest gets the default 1500, the link's \\(a cloud-hypervisor before PR #8112, April 2026, refuses the NIC there instead\\)$`,
            ),
          ),
        },
      ]);
      expect(await ch.report()).toMatchObject({ requests: [{ path: '/api/v1/vm.add-net', taps: ['snp42310'] }], heldTapQueues: 1 });
      await chDetach(ch.socketPath, nic, options);
    });

    it('the VMM in the taps\' namespace: a link MTU of 9000 attaches, nothing said', async () => {
      if (tapsNs === undefined) throw new Error('no taps namespace');
      const ch = await FakeCloudHypervisorProcess.start(tapsNs, 'Running');
      cleanups.push(() => ch.close());
      expect(await chAttach(ch.socketPath, { ...nic, mtu: 9000 }, logged())).toMatchObject({ outcome: 'hot-added' });
      expect(heard).toEqual([]);
      expect(await ch.report()).toMatchObject({ requests: [{ path: '/api/v1/vm.add-net', taps: ['snp42310'] }], heldTapQueues: 1 });
      await chDetach(ch.socketPath, nic, options);
    });

    it('a VMM whose namespace cannot be read (the process that made its socket listen has exited): attached, with a warning naming the MTU', async () => {
      // A listener made by a process that exits, served by its child: SO_PEERCRED names the one gone.
      const dir = mkdtempSync(join(tmpdir(), 'sn-ch-orphan-'));
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      const socketPath = join(dir, 'api.sock');
      const listener = await orphanedListener(socketPath);
      expect(await chAttach(socketPath, { ...nic, mtu: 9000 }, logged())).toEqual({ outcome: 'cold-added' });
      expect(heard).toEqual([
        {
          level: 'warn',
          message: `cloud-hypervisor of VM appvm-lynx at ${socketPath}: cannot tell whether it runs in the taps' network namespace (${options.tapNetnsPath ?? ''}, ${shownNetns(tapsNetns(options.tapNetnsPath))}): its process ${listener} has exited; attached, but if not, its guest may get another MTU than the link's 9000 on NIC snp42310 (README: MTU and stale NICs)`,
        },
      ]);
    });

    it("the process that made the socket listen has exited and its pid now names one in the taps' namespace: cannot tell (a warning), not a verdict about that one", async () => {
      if (harness === undefined || options.tapNetnsPath === undefined) throw new Error('no harness');
      // In a PID namespace of the test's own, the launcher's pid is handed on to a process in
      // the taps' namespace (ns_last_pid); the socket's server runs elsewhere.
      const launchedIn = await harness.namespace('launch');
      const fixture = compiledFixture('test/host/vmm/fixtures/attach-after-pid-reuse', [
        'test/host/vmm/fixtures/attach-heard',
        'test/host/vmm/orphaned-listener',
        'host/vmm/cloud-hypervisor',
        'host/vmm/vmm-netns',
        'host/vmm/tap-fd',
      ]);
      const driver = launchedIn.spawn(['node', fixture, options.tapNetnsPath, nic.tap], { enter: 'nsenter', pidns: true });
      const exit = await Promise.race([driver.wait(), new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 20_000))]);
      if (exit === 'timeout') await driver.kill('SIGKILL');
      const line = driver.stdout.split('\n').find((text) => text.startsWith('result '));
      if (line === undefined) throw new Error(`the fixture gave no result (${JSON.stringify(exit)}); stderr: ${driver.stderr}`);
      const result = JSON.parse(line.slice('result '.length)) as { launcher: number; reuser: number; reuserNetns: string; outcome: unknown; heard: unknown[] };
      const taps = shownNetns(tapsNetns(options.tapNetnsPath));
      // The pid was handed on, to a process in the taps' namespace: /proc/PID says "same".
      expect(result.reuser).toBe(result.launcher);
      expect(result.reuserNetns).toBe(taps);
      expect(result.outcome).toEqual({ outcome: 'cold-added' });
      expect(result.heard).toEqual([
        {
          level: 'warn',
          message: expect.stringMatching(
            new RegExp(
              `^cloud-hypervisor of VM appvm-lynx at /\\S+/api\\.sock: cannot tell whether it runs in the taps' network namespace \\(${options.tapNetnsPath}, ${taps.replace(/[[\]]/g, '\\$&')}\\): its process ${result.launcher} has exited; attached, but if not, its guest may get another MTU than the link's 9000 on NIC snp42310 \\(README: MTU and stale NICs\\)$`,
            ),
          ),
        },
      ]);
    });
    it('a VMM not visible from our PID namespace (SO_PEERCRED gives no pid), in another network namespace: the refusal does not name a pid 0', async () => {
      if (harness === undefined || options.tapNetnsPath === undefined) throw new Error('no harness');
      const { ch } = await fakeElsewhere('unseen', async () => undefined);
      const launchedIn = await harness.namespace('unseenby');
      const fixture = compiledFixture('test/host/vmm/fixtures/attach-from-pid-namespace', ['test/host/vmm/fixtures/attach-heard', 'host/vmm/cloud-hypervisor', 'host/vmm/vmm-netns', 'host/vmm/tap-fd']);
      const driver = launchedIn.spawn(['node', fixture, ch.socketPath, options.tapNetnsPath, nic.tap, '9000'], { enter: 'nsenter', pidns: true });
      const exit = await Promise.race([driver.wait(), new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 20_000))]);
      if (exit === 'timeout') await driver.kill('SIGKILL');
      const line = driver.stdout.split('\n').find((text) => text.startsWith('result '));
      if (line === undefined) throw new Error(`the fixture gave no result (${JSON.stringify(exit)}); stderr: ${driver.stderr}`);
      const result = JSON.parse(line.slice('result '.length)) as { outcome: { error?: string }; heard: unknown[] };
      // Its namespace is known by its pidfd (Linux 6.11), its pid is not.
      expect(result.heard).toEqual([]);
      expect(result.outcome.error).toMatch(
        /^cloud-hypervisor of VM appvm-lynx at \S+api\.sock \(not visible from our PID namespace, the process that made the socket listen\) runs in network namespace net:\[\d+\], not in the taps' .*: it reads tap snp42310's MTU by name in its own namespace, where nothing has that name, so its guest would get the default 1500, not the link MTU 9000;/,
      );
      expect(await ch.report()).toMatchObject({ requests: [], heldTapQueues: 0 });
    });
  });

  describe('chDetach', () => {
    it('removes an attached NIC (204), then finds it gone: already detached, no second removal', async () => {
      const ch = await fake('Running');
      await chAttach(ch.socketPath, nic, options);
      expect(await chDetach(ch.socketPath, nic, options)).toEqual({ alreadyDetached: false });
      expect(ch.nets).toEqual([]);
      expect(await chDetach(ch.socketPath, nic, options)).toEqual({ alreadyDetached: true });
      expect(ch.requests.filter((r) => r.path === '/api/v1/vm.remove-device').map((r) => r.body)).toEqual([{ id: 'snp42310' }]);
    });

    it('attach, detach, attach again works (cold, on a created VM)', async () => {
      const ch = await fake('Created');
      expect((await chAttach(ch.socketPath, nic, options)).outcome).toBe('cold-added');
      await chDetach(ch.socketPath, nic, options);
      expect((await chAttach(ch.socketPath, nic, options)).outcome).toBe('cold-added');
    });

    it('404 from remove-device for an id that vm.info no longer lists: already detached', async () => {
      const ch = await fake('Running');
      await chAttach(ch.socketPath, nic, options);
      // Gone between the check and the removal (e.g. removed by someone else).
      ch.inject('vm.remove-device', { status: 404 });
      ch.nets.length = 0;
      ch.inject('vm.info', {
        status: 200,
        body: JSON.stringify({ config: { payload: {}, net: [{ id: nic.id, mac: '0a:b3:ec:80:a5:46', tap: nic.tap }] }, state: 'Running' }),
      });
      expect(await chDetach(ch.socketPath, nic, options)).toEqual({ alreadyDetached: true });
    });

    it('404 from remove-device while vm.info still lists the NIC: failed', async () => {
      const ch = await fake('Running');
      await chAttach(ch.socketPath, nic, options);
      ch.inject('vm.remove-device', { status: 404 });
      expect((await chError(chDetach(ch.socketPath, nic, options))).kind).toBe('failed');
    });

    it('no VM created: vm-not-created', async () => {
      const ch = await fake(undefined);
      expect((await chError(chDetach(ch.socketPath, nic, options))).kind).toBe('vm-not-created');
    });

    it('never removes a device under the id that is not this NIC', async () => {
      const ch = await fake('Running');
      await chAttach(ch.socketPath, nic, options);
      expect((await chError(chDetach(ch.socketPath, { ...nic, mac: '0A:B3:EC:80:A5:47' }, options))).kind).toBe('conflict');
      ch.otherDevices.add('snp1');
      expect((await chError(chDetach(ch.socketPath, { id: 'snp1', tap: 'snp1', mac: '0A:B3:EC:80:00:01' }, options))).kind).toBe('conflict');
      expect(ch.requests.some((r) => r.path === '/api/v1/vm.remove-device')).toBe(false);
      expect(ch.nets).toHaveLength(1);
    });

    it('an undocumented status from remove-device is a protocol error', async () => {
      const ch = await fake('Running');
      await chAttach(ch.socketPath, nic, options);
      ch.inject('vm.remove-device', { status: 200, body: '{}' });
      expect((await chError(chDetach(ch.socketPath, nic, options))).kind).toBe('protocol');
    });
  });

  describe('connection failures and bounds', () => {
    it('a missing socket is kind no-socket (no cloud-hypervisor runs there), saying what to check', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'sn-vmm-ch-'));
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      const error = await chError(chAttach(join(dir, 'api.sock'), nic, options));
      expect(error.kind).toBe('no-socket');
      expect(error.message).toMatch(/api\.sock: no such socket.*--api-socket/);
      expect((await chError(chDetach(join(dir, 'api.sock'), nic, options))).kind).toBe('no-socket');
      // A path with a newline is shown escaped: the one line names that very path (not one with a space).
      const odd = join(dir, 'a\nb.sock');
      expect((await chError(chAttach(odd, nic, options))).message).toContain(`cannot connect to cloud-hypervisor API socket ${JSON.stringify(odd)}: no such socket`);
    });

    it('a socket nobody listens on (left by a cloud-hypervisor that exited) is kind stale-socket; a regular file there is kind connect', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'sn-vmm-ch-'));
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      const stale = join(dir, 'api.sock');
      // A server in a process that exits without closing it leaves its socket file behind.
      execFileSync(process.execPath, ['-e', "require('node:net').createServer().listen(process.argv[1], () => process.exit(0))", stale]);
      const error = await chError(chDetach(stale, nic, options));
      expect(error.kind).toBe('stale-socket');
      expect(error.message).toMatch(/api\.sock: connection refused: nothing listens there/);
      expect((await chError(chAttach(stale, nic, options))).kind).toBe('stale-socket');
      writeFileSync(join(dir, 'file'), '');
      expect(await chError(chDetach(join(dir, 'file'), nic, options))).toMatchObject({ kind: 'connect', message: expect.stringMatching(/file: not a socket but a regular file/) });
    });

    it("a symlink at the socket path is not followed, even to an API socket: kind connect, saying so; nothing reaches the target, no tap is sent (another VM's VMM would get it)", async () => {
      const ch = await fake('Running');
      const dir = mkdtempSync(join(tmpdir(), 'sn-vmm-ch-'));
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      const link = join(dir, 'vmm');
      symlinkSync(ch.socketPath, link);
      const fds = readdirSync('/proc/self/fd').length;
      const error = await chError(chAttach(link, nic, options));
      expect(error.kind).toBe('connect');
      expect(error.message).toBe(
        `cannot connect to cloud-hypervisor API socket ${link}: not a socket but a symlink, which spectrum-link does not follow for VMM sockets (whoever may write the VM's directory could point it at another VM's socket): give the path of the socket itself`,
      );
      expect((await chError(chDetach(link, nic, options))).kind).toBe('connect');
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(ch.requests).toEqual([]);
      expect(await ch.openConnections()).toBe(0);
      expect(ch.heldTapQueues()).toBe(0);
      // The tap was opened to go along and closed again: no descriptor is left, the tap is free.
      expect(readdirSync('/proc/self/fd').length).toBe(fds);
      TapFd.open(nic.tap, options.tapNetnsPath).close();
    });

    it('a VMM that never answers: kind timeout within the bound, connection closed', async () => {
      const ch = await fake('Running');
      ch.silent = true;
      const started = Date.now();
      const error = await chError(chAttach(ch.socketPath, nic, within(200)));
      expect(error.kind).toBe('timeout');
      expect(error.message).toMatch(/no answer to PUT vm.add-net within 200 ms/);
      expect(Date.now() - started).toBeLessThan(2000);
      expect((await chError(chDetach(ch.socketPath, nic, within(200)))).kind).toBe('timeout');
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(await ch.openConnections()).toBe(0);
    });

    it('a signal bounds a whole detach: when it aborts, the request under way is cut off (kind timeout, its reason said), the connection closed', async () => {
      const ch = await fake('Running');
      await chAttach(ch.socketPath, nic, options);
      // Answers vm.info, then never vm.remove-device: each request within its own bound of 5 s.
      ch.answerAfterWork.set('vm.remove-device', null);
      const controller = new AbortController();
      setTimeout(() => controller.abort(new Error('the whole detach took too long')), 300);
      const started = Date.now();
      const error = await chError(chDetach(ch.socketPath, nic, { ...within(5000), signal: controller.signal }));
      expect(error.kind).toBe('timeout');
      expect(error.message).toMatch(/PUT vm\.remove-device given up: the whole detach took too long$/);
      expect(Date.now() - started).toBeLessThan(2000);
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(await ch.openConnections()).toBe(0);
      // Aborted already: nothing is sent.
      const sent = ch.requests.length;
      expect((await chError(chDetach(ch.socketPath, nic, { ...options, signal: controller.signal }))).kind).toBe('timeout');
      expect(ch.requests).toHaveLength(sent);
    });

    it('a signal bounds a whole attach: a NIC vm.add-net adds without answering before it aborts is taken back all the same, under a bound of its own', async () => {
      const ch = await fake('Running');
      // Adds the NIC, and never answers: each request within its own bound of 5 s.
      ch.answerAfterWork.set('vm.add-net', null);
      const controller = new AbortController();
      setTimeout(() => controller.abort(new Error('the whole attach took too long')), 300);
      const started = Date.now();
      const error = await chError(chAttach(ch.socketPath, nic, { ...within(5000), signal: controller.signal, takeBackMs: 2000 }));
      expect(error.kind).toBe('timeout');
      expect(error.message).toMatch(/PUT vm\.add-net given up: the whole attach took too long$/);
      expect(Date.now() - started).toBeLessThan(2500);
      // Taken back (the aborted signal gave vm.add-net up, not the take-back): the VMM has no NIC, holds no tap.
      expect(ch.requests.map((request) => request.path)).toEqual(['/api/v1/vm.add-net', '/api/v1/vm.info', '/api/v1/vm.remove-device']);
      expect(ch.nets).toEqual([]);
      expect(ch.heldTapQueues()).toBe(0);
    });

    it('every request uses its own connection and closes it', async () => {
      const ch = await fake('Running');
      await chAttach(ch.socketPath, nic, options);
      await chAttach(ch.socketPath, nic, options);
      await chDetach(ch.socketPath, nic, options);
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(await ch.openConnections()).toBe(0);
    });

    it('a socket that accepts and says nothing, or closes: timeout or protocol, never a hang', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'sn-vmm-ch-'));
      const open: Socket[] = [];
      let mode: 'silent' | 'close' | 'garbage' = 'silent';
      const server: Server = createServer((socket) => {
        open.push(socket);
        socket.on('error', () => undefined);
        if (mode === 'close') socket.destroy();
        if (mode === 'garbage') socket.end('not http at all\r\n\r\n');
      });
      cleanups.push(async () => {
        for (const socket of open) socket.destroy();
        await new Promise((resolve) => server.close(resolve));
        rmSync(dir, { recursive: true, force: true });
      });
      const path = join(dir, 'api.sock');
      await new Promise<void>((resolve) => server.listen(path, resolve));
      expect((await chError(chAttach(path, nic, within(200)))).kind).toBe('timeout');
      mode = 'close';
      expect((await chError(chAttach(path, nic, within(2000)))).kind).toBe('protocol');
      mode = 'garbage';
      expect((await chError(chAttach(path, nic, within(2000)))).kind).toBe('protocol');
    });
  });
});

describe('cloud-hypervisor text in messages (no taps needed)', () => {
  it("quotes and bounds what vm.info and error bodies say: a VMM cannot write to the operator's terminal", async () => {
    const ch = await fake('Running');
    ch.nets.push({ id: nic.id, mac: HOSTILE, tap: HOSTILE });
    const conflict = await chError(chDetach(ch.socketPath, nic, options));
    expect(conflict.kind).toBe('conflict');
    expect(conflict.message).not.toMatch(TERMINAL_ACTIVE);
    expect(conflict.message.length).toBeLessThan(1000);
    ch.nets.length = 0;
    ch.nets.push({ id: nic.id, mac: '0a:b3:ec:80:a5:46' });
    ch.inject('vm.remove-device', { status: 418, body: HOSTILE });
    const odd = await chError(chDetach(ch.socketPath, nic, options));
    expect(odd).toMatchObject({ kind: 'protocol', status: 418 });
    expect(odd.message).not.toMatch(TERMINAL_ACTIVE);
    expect(odd.message.length).toBeLessThan(1000);
  });
});
