// The request socket (guest/netd/rtnetlink.ts) against the `netlink` package's own sockets over a
// scripted kernel, whose answers come when the test says: the answer budget (what is in flight
// when a request times out, what the package still waits for then, how long a request waits for
// room), a dump holding an entry that cannot be decoded, dumps the kernel marks interrupted,
// ends with an error, or refuses (NLMSG_ERROR), answers the kernel drops, and receive errors.
import type { NetlinkSocket, RawNetlinkSocket } from 'netlink';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

/** A request the scripted kernel was sent, answered when the test says. */
interface Sent {
  readonly seq: number;
  /** The request's message type. */
  readonly type: number;
  /** Its answer: an ack, or for a dump its end (NLMSG_DONE, with `flags` besides NLM_F_MULTI, carrying `errno`: 0, or a negative one for a failed dump). */
  readonly answer: (flags?: number, errno?: number) => void;
  /** For a dump, one part of its answer before the end: a link (an empty RTM_NEWLINK, NLM_F_MULTI). */
  readonly part: () => void;
  /** For a dump, parts of its answer before the end, in one datagram: these messages (type, payload), with `flags` besides NLM_F_MULTI. */
  readonly parts: (messages: readonly (readonly [number, Buffer])[], flags?: number) => void;
  /** Its answer an NLMSG_ERROR carrying `errno` (negative), as the kernel refuses a dump it cannot start. */
  readonly refuse: (errno: number) => void;
}

const sent: Sent[] = [];
/** Room for three acks' budgets (2 KiB each) and no more. */
const BUFFER_BYTES = 6144;
/** The package's socket under the agent's (the last one made). */
let packageSocket: NetlinkSocket | undefined;

vi.mock('netlink', async (importOriginal) => {
  const original = await importOriginal<typeof import('netlink')>();
  const { EventEmitter } = await import('node:events');
  const { endianness } = await import('node:os');
  const DUMP = 0x300;
  /** An int in host order, as NLMSG_DONE carries its error. */
  const hostInt = (value: number): Buffer => {
    const bytes = Buffer.alloc(4);
    if (endianness() === 'LE') bytes.writeInt32LE(value);
    else bytes.writeInt32BE(value);
    return bytes;
  };
  /** What the package's NetlinkSocket needs of its raw socket; sends are read by the test's kernel. */
  class ScriptedRawSocket extends EventEmitter {
    send(data: Buffer | Buffer[], _options: unknown, callback?: (error?: Error) => void): void {
      const bytes = Buffer.concat(Array.isArray(data) ? data : [data]);
      const [request] = original.parseMessages(bytes);
      if (request === undefined) throw new Error('no message sent');
      const reply = (flags: number, errno: number): Uint8Array[] =>
        (request.flags & DUMP) === DUMP
          ? original.formatMessage({ type: original.MessageType.DONE, flags: original.Flags.MULTI | flags, seq: request.seq, port: 0, data: hostInt(errno) })
          : original.formatMessage({ type: original.MessageType.ERROR, flags: 0, seq: request.seq, port: 0, data: Buffer.concat([Buffer.alloc(4), bytes.subarray(0, 16)]) });
      const part = original.formatMessage({ type: original.rt.MessageType.NEWLINK, flags: original.Flags.MULTI, seq: request.seq, port: 0, data: Buffer.alloc(16) });
      const parts = (messages: readonly (readonly [number, Buffer])[], flags: number): Buffer =>
        Buffer.concat(messages.flatMap(([type, data]) => original.formatMessage({ type, flags: original.Flags.MULTI | flags, seq: request.seq, port: 0, data })));
      sent.push({
        seq: request.seq,
        type: request.type,
        answer: (flags = 0, errno = 0) => this.emit('message', Buffer.concat(reply(flags, errno)), { port: 0, groups: 0 }),
        part: () => this.emit('message', Buffer.concat(part), { port: 0, groups: 0 }),
        parts: (messages, flags = 0) => this.emit('message', parts(messages, flags), { port: 0, groups: 0 }),
        refuse: (errno) =>
          this.emit(
            'message',
            Buffer.concat(original.formatMessage({ type: original.MessageType.ERROR, flags: 0, seq: request.seq, port: 0, data: Buffer.concat([hostInt(errno), bytes.subarray(0, 16)]) })),
            { port: 0, groups: 0 },
          ),
      });
      callback?.();
    }
    address(): { port: number; groups: number } {
      return { port: 4242, groups: 0 };
    }
    getRecvBufferSize(): number {
      return BUFFER_BYTES;
    }
    ref(): void {}
    unref(): void {}
    close(): void {}
  }
  return {
    ...original,
    createRtNetlink: () => {
      packageSocket = new original.NetlinkSocket(new ScriptedRawSocket() as unknown as RawNetlinkSocket);
      return new original.RtNetlinkSocket(packageSocket);
    },
  };
});

/** The ports NETLINK_NO_ENOBUFS was asked for on (the scripted socket has no descriptor to set it on). */
const quieted: number[] = [];
vi.mock('../../../guest/netd/rtnl-events.js', async (importOriginal) => ({
  ...(await importOriginal<typeof import('../../../guest/netd/rtnl-events.js')>()),
  quietOverruns: (port: number) => void quieted.push(port),
}));

/** The package's socket fails to receive (its raw socket's 'error', which it re-emits), with an errno as the package's addon gives it. */
const receiveError = (code: 'ENOBUFS' | 'ENOMEM' = 'ENOBUFS'): void => {
  const error = Object.assign(new Error(`Error when receiving Netlink message: ${code}`), {
    name: 'ErrnoException' as const,
    code,
    errno: code === 'ENOBUFS' ? 105 : 12,
    syscall: 'recvmsg',
  });
  packageSocket?.socket.emit('error', error);
};

/** A log that keeps what it is told. */
function keptLog(): { readonly warned: string[]; readonly debugged: string[]; readonly log: { warn(details: object, message: string): void; debug(details: object, message: string): void } } {
  const warned: string[] = [];
  const debugged: string[] = [];
  return { warned, debugged, log: { warn: (_details, message) => void warned.push(message), debug: (_details, message) => void debugged.push(message) } };
}

/** The sequence numbers the package still waits for answers to (its protected `requests`). */
const awaited = (): number[] => [...(packageSocket as unknown as { requests: Map<number, unknown> }).requests.keys()];

const { RtnetlinkKernel } = await import('../../../guest/netd/rtnetlink.js');
const { emptyView } = await import('../../../guest/netd/kernel-view.js');
const { NetdError } = await import('../../../guest/netd/netd-error.js');

describe('RtnetlinkKernel request budget', () => {
  beforeEach(() => {
    sent.length = 0;
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("keeps a timed-out request's room until its answer comes: a late answer still lands in the socket's buffer", async () => {
    const kernel = new RtnetlinkKernel();
    const view = emptyView();
    const group = (ifindex: number): Promise<void> => kernel.apply({ kind: 'link-group', ifindex, group: 0 }, view);
    const outcomes: string[] = [];
    const note = (name: string, request: Promise<void>): void =>
      void request.then(
        () => outcomes.push(`${name} answered`),
        (error: unknown) => outcomes.push(`${name} ${error instanceof NetdError ? error.kind : 'other'}`),
      );
    for (const ifindex of [1, 2, 3]) note(`#${ifindex}`, group(ifindex));
    await vi.advanceTimersByTimeAsync(4_000);
    expect(sent).toHaveLength(3);
    // The buffer is promised to those three: the fourth, asked for 4 s on, waits (when the three
    // time out it has waited 1 s of the 5 it may wait for room).
    note('#4', group(4));
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toHaveLength(3);
    // No answer within 5 s: the three fail, but their answers may still come (a stalled kernel,
    // a blocked event loop), each taking its room in the buffer.
    await vi.advanceTimersByTimeAsync(1_000);
    expect(outcomes).toEqual(['#1 netlink', '#2 netlink', '#3 netlink']);
    expect(sent).toHaveLength(3);
    // One late answer read: its room goes to the fourth.
    sent[0]?.answer();
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toHaveLength(4);
    sent[3]?.answer();
    await vi.advanceTimersByTimeAsync(0);
    expect(outcomes).toEqual(['#1 netlink', '#2 netlink', '#3 netlink', '#4 answered']);
    kernel.close();
  });

  it('leaves no entry in the netlink package for a request that timed out, whether its answer comes late or never', async () => {
    const kernel = new RtnetlinkKernel();
    const view = emptyView();
    const settled = Promise.allSettled([1, 2, 3].map((ifindex) => kernel.apply({ kind: 'link-group', ifindex, group: 0 }, view)));
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toHaveLength(3);
    expect(awaited()).toEqual(sent.map((request) => request.seq));
    await vi.advanceTimersByTimeAsync(5_000);
    const outcomes = await settled;
    expect(outcomes.map((outcome) => (outcome.status === 'rejected' && outcome.reason instanceof NetdError ? outcome.reason.kind : outcome.status))).toEqual([
      'netlink',
      'netlink',
      'netlink',
    ]);
    // Two answers never come: the package waits for none of the three.
    expect(awaited()).toEqual([]);
    sent[0]?.answer();
    await vi.advanceTimersByTimeAsync(0);
    expect(awaited()).toEqual([]);
    // Its room was kept until then: one more request goes out, and the package waits for it alone.
    const fourth = kernel.apply({ kind: 'link-group', ifindex: 4, group: 0 }, view);
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toHaveLength(4);
    expect(awaited()).toEqual([sent[3]?.seq]);
    sent[3]?.answer();
    await expect(fourth).resolves.toBeUndefined();
    expect(awaited()).toEqual([]);
    kernel.close();
  });

  it("keeps the room of a dump that timed out until its late answer's end (NLMSG_DONE) is read, not its first part", async () => {
    const kernel = new RtnetlinkKernel();
    const view = emptyView();
    const dump = kernel.dump().then(
      () => 'answered',
      (error: unknown) => (error instanceof NetdError ? error.kind : 'other'),
    );
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(await dump).toBe('netlink');
    expect(awaited()).toEqual([]);
    // The dump's room and two acks' fill the buffer: a third waits.
    const groups = [1, 2, 3].map((ifindex) => kernel.apply({ kind: 'link-group', ifindex, group: 0 }, view));
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toHaveLength(3);
    sent[0]?.part();
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toHaveLength(3);
    sent[0]?.answer();
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toHaveLength(4);
    for (const request of sent.slice(1)) request.answer();
    await expect(Promise.all(groups)).resolves.toEqual([undefined, undefined, undefined]);
    expect(awaited()).toEqual([]);
    kernel.close();
  });

  it('gives up on a request that found no room for its answer within 5 s, unsent, and lets those behind it go when it was what they waited behind', async () => {
    const kernel = new RtnetlinkKernel();
    const view = emptyView();
    // A veth (it sits on its peer): its link-up asks for the link after, whose answer needs 6 KiB.
    view.links.set(3, { ifindex: 3, name: 'p3', mac: '0a:b3:ec:80:00:03', up: false, loopback: false, group: 0, lowerIfindex: 4 });
    /** How each request ended, by name, once it has. */
    const outcomes = new Map<string, string>();
    const note = (name: string, request: Promise<void>): void =>
      void request.then(
        () => outcomes.set(name, 'answered'),
        (error: unknown) => outcomes.set(name, error instanceof NetdError ? `${error.kind}: ${error.message}` : 'other'),
      );
    for (const ifindex of [1, 2]) note(`ack ${ifindex}`, kernel.apply({ kind: 'link-group', ifindex, group: 0 }, view));
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toHaveLength(2);
    // Two acks' room taken: the link-up waits, and an ack asked for after it waits behind it.
    note('link-up', kernel.apply({ kind: 'link-up', ifindex: 3 }, view));
    await vi.advanceTimersByTimeAsync(1_000);
    note('behind', kernel.apply({ kind: 'link-group', ifindex: 5, group: 0 }, view));
    // One answer read: the link-up still finds too little room, and the ack waits behind it.
    sent[0]?.answer();
    await vi.advanceTimersByTimeAsync(0);
    expect(outcomes.get('ack 1')).toBe('answered');
    expect(sent).toHaveLength(2);
    // The kernel answers nothing more: the ack in flight times out (its room kept for its late
    // answer), and the link-up, waiting as long, fails unsent rather than wait for ever.
    await vi.advanceTimersByTimeAsync(4_000);
    expect(outcomes.get('ack 2')).toMatch(/^netlink: request timed out/);
    expect(outcomes.get('link-up')).toMatch(/^netlink: request not sent: no room for its answer .* within 5 s \(0 requests in flight, 1 timed out and still unanswered\)/);
    // What waited behind it has room now, and went.
    expect(sent).toHaveLength(3);
    sent[2]?.answer();
    await vi.advanceTimersByTimeAsync(0);
    expect(outcomes.get('behind')).toBe('answered');
    kernel.close();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('reads a dump past an entry it cannot decode, naming it (type, the link its header names, the error), instead of failing the dump', async () => {
    const { rt, AttrStream } = await import('netlink');
    /** A link's RTM_NEWLINK payload, its attributes padded as the kernel's are, and `more` after them. */
    const link = (index: number, ifname: string, more: Buffer = Buffer.alloc(0)): Buffer => {
      const out = new AttrStream();
      rt.formatLinkMessage({ kind: 'link', data: { index, flags: {} }, attrs: { ifname } }, out);
      const bytes = Buffer.concat(out.bufs);
      return Buffer.concat([bytes, Buffer.alloc((4 - (bytes.length % 4)) % 4), more]);
    };
    // IFLA_GROUP (27) given 2 bytes: the agent reads it, and wants 4. IFLA_MTU (4) given 2: not read.
    const shortGroup = Buffer.from([6, 0, 27, 0, 0x01, 0x00, 0, 0]);
    const shortMtu = Buffer.from([6, 0, 4, 0, 0x05, 0xdc, 0, 0]);
    const kernel = new RtnetlinkKernel();
    const dump = kernel.dump();
    await vi.advanceTimersByTimeAsync(0);
    sent[0]?.parts([
      [rt.MessageType.NEWLINK, link(1, 'p1')],
      [rt.MessageType.NEWLINK, link(7, 'p7', shortGroup)],
      [rt.MessageType.NEWLINK, link(8, 'p8', shortMtu)],
    ]);
    sent[0]?.answer();
    await vi.advanceTimersByTimeAsync(0);
    sent[1]?.answer();
    await vi.advanceTimersByTimeAsync(0);
    // A route cut short (an rtmsg is 12 bytes): its header names no link.
    sent[2]?.parts([[rt.MessageType.NEWROUTE, Buffer.alloc(8)]]);
    sent[2]?.answer();
    await vi.advanceTimersByTimeAsync(0);
    sent[3]?.answer();
    const { events, skipped, inconsistent } = await dump;
    expect(events.map((event) => (event.kind === 'link' ? event.link.name : event.kind))).toEqual(['p1', 'p8']);
    expect(skipped).toEqual([
      { messageType: 'NEWLINK', ifindex: 7, error: 'IFLA_GROUP: Unexpected length (got 2, expected 4)', defaultRoute: false },
      { messageType: 'NEWROUTE', ifindex: null, error: 'a route message of 8 bytes, shorter than its fixed header (12)', defaultRoute: false },
    ]);
    expect(inconsistent).toEqual([]);
    kernel.close();
  });

  describe('a dump the kernel marks interrupted (NLM_F_DUMP_INTR: its table changed while it was dumped), or ends with an error', () => {
    const DUMP_INTR = 0x10;
    /** What the scripted kernel answers a dump request with: entries (type, payload), and flags besides NLM_F_MULTI on them and on the end. */
    interface DumpAnswer {
      readonly entries?: readonly (readonly [number, Buffer])[];
      readonly partFlags?: number;
      readonly doneFlags?: number;
      /** What NLMSG_DONE carries: 0, or a negative errno (the dump failed). */
      readonly doneErrno?: number;
      /** A negative errno: the request is answered with an NLMSG_ERROR carrying it, and nothing else. */
      readonly refusedErrno?: number;
    }

    /** kernel.dump(), each of its requests answered as `answer` says (by its type, and how many of that type came before it, this one included); `asked`: what it sent. */
    async function scriptedDump(
      kernel: InstanceType<typeof RtnetlinkKernel>,
      answer: (type: number, tries: number) => DumpAnswer,
    ): Promise<{ readonly result: Awaited<ReturnType<InstanceType<typeof RtnetlinkKernel>['dump']>>; readonly asked: string[] }> {
      const { rt } = await import('netlink');
      const first = sent.length;
      // Handled at once: a dump refused for good fails while the loop below still runs.
      const dump = kernel.dump().then(
        (result) => ({ result }),
        (error: unknown) => ({ error }),
      );
      const tries = new Map<number, number>();
      for (let at = first; ; at++) {
        await vi.advanceTimersByTimeAsync(0);
        const request = sent[at];
        if (request === undefined) break;
        tries.set(request.type, (tries.get(request.type) ?? 0) + 1);
        const { entries = [], partFlags = 0, doneFlags = 0, doneErrno = 0, refusedErrno } = answer(request.type, tries.get(request.type) ?? 0);
        if (refusedErrno !== undefined) {
          request.refuse(refusedErrno);
          continue;
        }
        if (entries.length > 0) request.parts(entries, partFlags);
        request.answer(doneFlags, doneErrno);
      }
      const outcome = await dump;
      if ('error' in outcome) throw outcome.error;
      return { result: outcome.result, asked: sent.slice(first).map((request) => rt.MessageType[request.type] ?? String(request.type)) };
    }

    /** A link's RTM_NEWLINK payload, padded as the kernel pads it (the next message in its datagram starts aligned). */
    const link = async (index: number, ifname: string): Promise<readonly [number, Buffer]> => {
      const { rt, AttrStream } = await import('netlink');
      const out = new AttrStream();
      rt.formatLinkMessage({ kind: 'link', data: { index, flags: {} }, attrs: { ifname } }, out);
      const bytes = Buffer.concat(out.bufs);
      return [rt.MessageType.NEWLINK, Buffer.concat([bytes, Buffer.alloc((4 - (bytes.length % 4)) % 4)])];
    };
    const namesOf = (result: { readonly events: readonly { readonly kind: string; readonly link?: { readonly name: string } }[] }): (string | undefined)[] =>
      result.events.map((event) => event.link?.name);

    it('takes the table again, and uses the dump that was not marked: entries of the marked one, or its end, alike', async () => {
      const { rt } = await import('netlink');
      const [p1, p2] = [await link(1, 'p1'), await link(2, 'p2')];
      for (const marked of [{ partFlags: DUMP_INTR }, { doneFlags: DUMP_INTR }]) {
        sent.length = 0;
        const kernel = new RtnetlinkKernel();
        const { result, asked } = await scriptedDump(kernel, (type, tries) =>
          type !== rt.MessageType.GETLINK ? {} : tries === 1 ? { entries: [p1], ...marked } : { entries: [p1, p2] },
        );
        expect(asked).toEqual(['GETLINK', 'GETLINK', 'GETADDR', 'GETROUTE', 'GETNEIGH']);
        expect(namesOf(result)).toEqual(['p1', 'p2']);
        expect(result.inconsistent).toEqual([]);
        expect(result.failed).toEqual([]);
        kernel.close();
      }
    });

    it('uses the third of three marked dumps in a row as it is, and says which table', async () => {
      const { rt } = await import('netlink');
      const links = [await link(1, 'p1'), await link(2, 'p2'), await link(3, 'p3')];
      const kernel = new RtnetlinkKernel();
      const { result, asked } = await scriptedDump(kernel, (type, tries) =>
        type === rt.MessageType.GETLINK ? { entries: links.slice(0, tries), partFlags: DUMP_INTR } : type === rt.MessageType.GETNEIGH ? { doneFlags: DUMP_INTR } : {},
      );
      expect(asked).toEqual(['GETLINK', 'GETLINK', 'GETLINK', 'GETADDR', 'GETROUTE', 'GETNEIGH', 'GETNEIGH', 'GETNEIGH']);
      expect(namesOf(result)).toEqual(['p1', 'p2', 'p3']);
      expect(result.inconsistent).toEqual(['links', 'neighbours']);
      expect(result.failed).toEqual([]);
      kernel.close();
    });

    it("takes no other flag for the mark, nor a mark on another dump's answer (one that timed out, answered late)", async () => {
      const { rt } = await import('netlink');
      const kernel = new RtnetlinkKernel();
      const timedOut = kernel.dump().then(
        () => 'answered',
        (error: unknown) => (error instanceof NetdError ? error.kind : 'other'),
      );
      await vi.advanceTimersByTimeAsync(5_000);
      expect(await timedOut).toBe('netlink');
      const late = sent[0];
      const p1 = await link(1, 'p1');
      const { result, asked } = await scriptedDump(kernel, (type) => {
        // The late answer, marked, comes while this dump of the links runs.
        if (type === rt.MessageType.GETLINK) {
          late?.parts([p1], DUMP_INTR);
          late?.answer(DUMP_INTR);
        }
        // NLM_F_DUMP_FILTERED (0x20): the kernel filtered the dump as asked, nothing more.
        return { entries: type === rt.MessageType.GETLINK ? [p1] : [], partFlags: 0x20, doneFlags: 0x20 };
      });
      expect(asked).toEqual(['GETLINK', 'GETADDR', 'GETROUTE', 'GETNEIGH']);
      expect(namesOf(result)).toEqual(['p1']);
      expect(result.inconsistent).toEqual([]);
      kernel.close();
    });

    describe('a dump the kernel ends with an error (a negative errno in NLMSG_DONE, which the netlink package drops)', () => {
      const EINVAL = -22;
      const EMSGSIZE = -90;

      it('takes the table again, and uses the dump that ended without one', async () => {
        const { rt } = await import('netlink');
        const [p1, p2] = [await link(1, 'p1'), await link(2, 'p2')];
        const kernel = new RtnetlinkKernel();
        // The first dump fails after p1: the package settles it as whole, with p1 alone.
        const { result, asked } = await scriptedDump(kernel, (type, tries) =>
          type !== rt.MessageType.GETLINK ? {} : tries === 1 ? { entries: [p1], doneErrno: EMSGSIZE } : { entries: [p1, p2] },
        );
        expect(asked).toEqual(['GETLINK', 'GETLINK', 'GETADDR', 'GETROUTE', 'GETNEIGH']);
        expect(namesOf(result)).toEqual(['p1', 'p2']);
        expect(result.failed).toEqual([]);
        expect(result.inconsistent).toEqual([]);
        kernel.close();
      });

      it("uses the third of three failed dumps in a row as it is, and says which table and the last one's error", async () => {
        const { rt } = await import('netlink');
        const p1 = await link(1, 'p1');
        const kernel = new RtnetlinkKernel();
        const { result, asked } = await scriptedDump(kernel, (type, tries) =>
          type === rt.MessageType.GETLINK
            ? { entries: [p1], doneErrno: tries === 3 ? EINVAL : EMSGSIZE }
            : type === rt.MessageType.GETROUTE
              ? { doneErrno: EMSGSIZE, doneFlags: DUMP_INTR }
              : {},
        );
        expect(asked).toEqual(['GETLINK', 'GETLINK', 'GETLINK', 'GETADDR', 'GETROUTE', 'GETROUTE', 'GETROUTE', 'GETNEIGH']);
        expect(namesOf(result)).toEqual(['p1']);
        expect(result.failed).toEqual([
          { table: 'links', error: 'EINVAL' },
          { table: 'routes', error: 'EMSGSIZE' },
        ]);
        expect(result.inconsistent).toEqual(['routes']);
        kernel.close();
      });
    });

    describe('a dump the kernel refuses (an NLMSG_ERROR answering the request, which the netlink package rejects it with)', () => {
      const EBUSY = -16;
      const ENOBUFS = -105;
      /** An errno Node has no name for: a refusal that may pass all the same. */
      const NO_NAME = -4242;

      it('takes the table again, as a dump ended with that error, and uses the dump that was not refused', async () => {
        const { rt } = await import('netlink');
        const [p1, p2] = [await link(1, 'p1'), await link(2, 'p2')];
        const kernel = new RtnetlinkKernel();
        const { result, asked } = await scriptedDump(kernel, (type, tries) =>
          type === rt.MessageType.GETLINK ? { entries: [p1, p2] } : type === rt.MessageType.GETROUTE && tries === 1 ? { refusedErrno: EBUSY } : {},
        );
        expect(asked).toEqual(['GETLINK', 'GETADDR', 'GETROUTE', 'GETROUTE', 'GETNEIGH']);
        expect(namesOf(result)).toEqual(['p1', 'p2']);
        expect(result.failed).toEqual([]);
        expect(result.inconsistent).toEqual([]);
        kernel.close();
      });

      it("uses the third of three refused dumps in a row as it is (none of the table), says which table, the last one's error, and that it was refused", async () => {
        const { rt } = await import('netlink');
        const p1 = await link(1, 'p1');
        const kernel = new RtnetlinkKernel();
        const { result, asked } = await scriptedDump(kernel, (type, tries) =>
          type === rt.MessageType.GETLINK
            ? { entries: [p1] }
            : type === rt.MessageType.GETROUTE
              ? { refusedErrno: [NO_NAME, ENOBUFS, EBUSY][tries - 1] ?? 0 }
              : type === rt.MessageType.GETNEIGH
                ? tries < 3
                  ? { refusedErrno: ENOBUFS }
                  : { doneErrno: -90 }
                : {},
        );
        expect(asked).toEqual(['GETLINK', 'GETADDR', 'GETROUTE', 'GETROUTE', 'GETROUTE', 'GETNEIGH', 'GETNEIGH', 'GETNEIGH']);
        expect(namesOf(result)).toEqual(['p1']);
        // How the last ended counts: the neighbours' third ended in NLMSG_DONE.
        expect(result.failed).toEqual([
          { table: 'routes', error: 'EBUSY', refused: true },
          { table: 'neighbours', error: 'EMSGSIZE' },
        ]);
        expect(result.inconsistent).toEqual([]);
        kernel.close();
      });

      it('fails at once, in one line, on a refusal that says the request itself is wrong (EINVAL, EOPNOTSUPP, EAFNOSUPPORT, EPERM...): no dump is taken again', async () => {
        const { rt } = await import('netlink');
        for (const [errno, name, hint] of [
          [-22, 'EINVAL', /does this kernel check dump requests/],
          [-95, 'ENOTSUP', /IPv4 \(CONFIG_INET\)/],
          [-97, 'EAFNOSUPPORT', /IPv4 \(CONFIG_INET\)/],
          [-1, 'EPERM', /security module/],
          [-13, 'EACCES', /security module/],
        ] as const) {
          sent.length = 0;
          const kernel = new RtnetlinkKernel();
          const outcome = scriptedDump(kernel, (type) => (type === rt.MessageType.GETROUTE ? { refusedErrno: errno } : {})).then(
            () => null,
            (error: unknown) => error,
          );
          const error = await outcome;
          expect(error).toBeInstanceOf(NetdError);
          expect(error).toMatchObject({ kind: 'dump-refused' });
          const message = (error as Error).message;
          expect(message).toContain(`the kernel refused the agent's request to dump its routes (NLMSG_ERROR ${name})`);
          expect(message).toMatch(hint);
          expect(message).not.toContain('\n');
          expect(sent.map((request) => rt.MessageType[request.type])).toEqual(['GETLINK', 'GETADDR', 'GETROUTE']);
          kernel.close();
        }
      });

    });
  });

  describe('answers the kernel dropped (the buffer full: said by no error), and receive errors', () => {
    it('has the kernel drop an answer that finds the buffer full with no socket error (NETLINK_NO_ENOBUFS), on the request socket', () => {
      quieted.length = 0;
      const kernel = new RtnetlinkKernel();
      expect(quieted).toEqual([4242]);
      kernel.close();
    });

    it('fails at once a request whose answer an answer to a later one shows dropped, gives its room back, and warns once while it lasts', async () => {
      const { warned, debugged, log } = keptLog();
      const kernel = new RtnetlinkKernel({ log });
      const view = emptyView();
      const outcomes = new Map<number, string>();
      const group = (ifindex: number): void =>
        void kernel.apply({ kind: 'link-group', ifindex, group: 0 }, view).then(
          () => outcomes.set(ifindex, 'answered'),
          (error: unknown) => outcomes.set(ifindex, error instanceof NetdError ? `${error.kind}: ${error.message}` : 'other'),
        );
      for (const ifindex of [1, 2, 3, 4]) group(ifindex);
      await vi.advanceTimersByTimeAsync(0);
      // Three acks' room: the fourth waits.
      expect(sent).toHaveLength(3);
      // The second's answer comes first: the first's was dropped.
      sent[1]?.answer();
      await vi.advanceTimersByTimeAsync(0);
      expect(outcomes.get(1)).toBe(
        "netlink: no answer will come: the kernel dropped it, the rtnetlink socket's receive buffer full (it answered a later request); the change may have been made",
      );
      expect(outcomes.get(2)).toBe('answered');
      // Both rooms back: the fourth went.
      expect(sent).toHaveLength(4);
      expect(awaited()).toEqual([sent[2]?.seq, sent[3]?.seq]);
      expect(warned).toHaveLength(1);
      expect(warned[0]).toMatch(/^the kernel dropped the answers to 1 rtnetlink requests, the request socket's receive buffer full: each failed\. .*\(said once while it lasts\)$/);
      // Another, 10 s on: the same run, said at debug level only.
      await vi.advanceTimersByTimeAsync(10_000);
      group(5);
      await vi.advanceTimersByTimeAsync(0);
      // (The third and fourth timed out meanwhile, their room kept for their answers.)
      expect(outcomes.get(3)).toMatch(/^netlink: request timed out/);
      sent[4]?.answer();
      await vi.advanceTimersByTimeAsync(0);
      expect(outcomes.get(5)).toBe('answered');
      expect(warned).toHaveLength(1);
      expect(debugged).toEqual([expect.stringMatching(/^the kernel dropped the answers to 2 rtnetlink requests/)]);
      // A minute without: a new run, warned of again.
      await vi.advanceTimersByTimeAsync(60_000);
      for (const ifindex of [6, 7]) group(ifindex);
      await vi.advanceTimersByTimeAsync(0);
      sent[6]?.answer();
      await vi.advanceTimersByTimeAsync(0);
      expect(outcomes.get(6)).toMatch(/^netlink: no answer will come/);
      expect(warned).toHaveLength(2);
      kernel.close();
    });

    it("counts a veth's link-up done where the kernel could not deliver its reply to the link's request after (EAGAIN, the buffer full), and gives its room back", async () => {
      const { rt } = await import('netlink');
      const kernel = new RtnetlinkKernel();
      const view = emptyView();
      view.links.set(3, { ifindex: 3, name: 'p3', mac: '0a:b3:ec:80:00:03', up: false, loopback: false, group: 0, lowerIfindex: 4 });
      const linkUp = kernel.apply({ kind: 'link-up', ifindex: 3 }, view);
      await vi.advanceTimersByTimeAsync(0);
      sent[0]?.answer();
      await vi.advanceTimersByTimeAsync(0);
      expect(sent.map((request) => rt.MessageType[request.type])).toEqual(['SETLINK', 'GETLINK']);
      // The link is up (its SETLINK acked), and its events handled before the reply was made:
      // rtnl_getlink refuses with the error of a unicast that found the buffer full.
      sent[1]?.refuse(-11);
      await expect(linkUp).resolves.toBeUndefined();
      expect(awaited()).toEqual([]);
      // Its 6 KiB back: the buffer's three acks' room all there.
      // Left unanswered: the close below fails them (the agent stopping), which is no concern here.
      const filling = [1, 2, 5].map((ifindex) => kernel.apply({ kind: 'link-group', ifindex, group: 0 }, view).catch(() => undefined));
      await vi.advanceTimersByTimeAsync(0);
      expect(sent).toHaveLength(5);
      kernel.close();
      await Promise.all(filling);
    });

    it('gives back the room of requests that timed out once an answer to a later one shows theirs dropped', async () => {
      const kernel = new RtnetlinkKernel();
      const view = emptyView();
      const timedOut = Promise.allSettled([1, 2, 3].map((ifindex) => kernel.apply({ kind: 'link-group', ifindex, group: 0 }, view)));
      await vi.advanceTimersByTimeAsync(5_000);
      await timedOut;
      // All three rooms kept for their answers: a fourth waits, until the third's answer comes late.
      const fourth = kernel.apply({ kind: 'link-group', ifindex: 4, group: 0 }, view);
      await vi.advanceTimersByTimeAsync(0);
      expect(sent).toHaveLength(3);
      sent[2]?.answer();
      await vi.advanceTimersByTimeAsync(0);
      expect(sent).toHaveLength(4);
      // The first two will never be answered: their room is back too, and two more go at once.
      const more = [5, 6].map((ifindex) => kernel.apply({ kind: 'link-group', ifindex, group: 0 }, view));
      await vi.advanceTimersByTimeAsync(0);
      expect(sent).toHaveLength(6);
      for (const request of sent.slice(3)) request.answer();
      await expect(Promise.all([fourth, ...more])).resolves.toEqual([undefined, undefined, undefined]);
      kernel.close();
    });

    it("keeps the room of a dump that timed out until its end, though answers to later requests come before its later parts", async () => {
      const kernel = new RtnetlinkKernel();
      const view = emptyView();
      void kernel.dump().catch(() => undefined);
      await vi.advanceTimersByTimeAsync(5_000);
      expect(sent).toHaveLength(1);
      // The dump's room and two acks' fill the buffer: two more wait.
      const changes = [1, 2, 3, 4].map((ifindex) => kernel.apply({ kind: 'link-group', ifindex, group: 0 }, view));
      await vi.advanceTimersByTimeAsync(0);
      expect(sent).toHaveLength(3);
      // Its first part was queued as it was asked for; the next come as the socket is read, after
      // the answer to a change sent since: that answer gives back its own room alone.
      sent[0]?.part();
      sent[1]?.answer();
      await vi.advanceTimersByTimeAsync(0);
      expect(sent).toHaveLength(4);
      sent[0]?.part();
      sent[0]?.answer();
      await vi.advanceTimersByTimeAsync(0);
      expect(sent).toHaveLength(5);
      for (const request of sent.slice(2)) request.answer();
      await expect(Promise.all(changes)).resolves.toEqual([undefined, undefined, undefined, undefined]);
      kernel.close();
    });

    it('survives a receive error (the package re-emits it): one warning for a run of them, and the dump it was reading taken again', async () => {
      const { rt } = await import('netlink');
      const { warned, debugged, log } = keptLog();
      const kernel = new RtnetlinkKernel({ log });
      const dump = kernel.dump();
      await vi.advanceTimersByTimeAsync(0);
      expect(() => {
        receiveError();
        receiveError('ENOMEM');
      }).not.toThrow();
      expect(warned).toEqual([
        'the rtnetlink request socket failed to receive (ENOBUFS): the dump it was reading is taken again. Is memory short (ENOBUFS, ENOMEM: the kernel could not make the next part of a dump)? (said once while it lasts)',
      ]);
      expect(debugged).toHaveLength(1);
      // Its end read whole all the same: taken again.
      sent[0]?.part();
      sent[0]?.answer();
      for (let at = 1; at < 5; at++) {
        await vi.advanceTimersByTimeAsync(0);
        sent[at]?.answer();
      }
      const { failed } = await dump;
      expect(sent.map((request) => rt.MessageType[request.type])).toEqual(['GETLINK', 'GETLINK', 'GETADDR', 'GETROUTE', 'GETNEIGH']);
      expect(failed).toEqual([]);
      // Requests in flight are not failed for it: a receive error drops no answer.
      const change = kernel.apply({ kind: 'link-group', ifindex: 1, group: 0 }, emptyView());
      await vi.advanceTimersByTimeAsync(0);
      receiveError();
      sent[5]?.answer();
      await expect(change).resolves.toBeUndefined();
      kernel.close();
    });

    it('uses the third of three dumps of a table in a row that a receive error came during, said to have failed so (receiveFailed)', async () => {
      const { rt } = await import('netlink');
      const kernel = new RtnetlinkKernel();
      const dump = kernel.dump();
      for (let at = 0; at < 6; at++) {
        await vi.advanceTimersByTimeAsync(0);
        const request = sent[at];
        if (request?.type === rt.MessageType.GETLINK) receiveError();
        request?.answer();
      }
      const { failed } = await dump;
      expect(sent.map((request) => rt.MessageType[request.type])).toEqual(['GETLINK', 'GETLINK', 'GETLINK', 'GETADDR', 'GETROUTE', 'GETNEIGH']);
      expect(failed).toEqual([{ table: 'links', error: 'ENOBUFS', receiveFailed: true }]);
      kernel.close();
    });
  });

  it('refuses, unsent, to set a route via an IPv6 next hop (one read from the kernel): its request would carry the address as an IPv4 gateway', async () => {
    const kernel = new RtnetlinkKernel();
    const route = { dst: '100.64.0.1', dstLength: 32, oif: 7, gateway: 'fe80::1', priority: 0, protocol: 3 };
    await expect(kernel.apply({ kind: 'route-set', route }, emptyView())).rejects.toMatchObject({
      kind: 'apply',
      message: 'route 100.64.0.1/32 via fe80::1: the agent sets no route via an IPv6 next hop',
    });
    expect(sent).toEqual([]);
    // Its deletion names no gateway: sent.
    const deletion = kernel.apply({ kind: 'route-del', route }, emptyView());
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toHaveLength(1);
    sent[0]?.answer();
    await expect(deletion).resolves.toBeUndefined();
    kernel.close();
  });

  it('rejects at once, as closed, what waits for room and what is in flight when closed, and sends nothing after', async () => {
    const kernel = new RtnetlinkKernel();
    const view = emptyView();
    const requests = [1, 2, 3, 4].map((ifindex) => kernel.apply({ kind: 'link-group', ifindex, group: 0 }, view));
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toHaveLength(3);
    kernel.close();
    const outcomes = await Promise.allSettled(requests);
    expect(outcomes.map((outcome) => (outcome.status === 'rejected' && outcome.reason instanceof NetdError ? outcome.reason.kind : outcome.status))).toEqual([
      'closed',
      'closed',
      'closed',
      'closed',
    ]);
    await expect(kernel.apply({ kind: 'link-group', ifindex: 5, group: 0 }, view)).rejects.toMatchObject({ kind: 'closed' });
    // No timer of a request is left to run.
    expect(vi.getTimerCount()).toBe(0);
    expect(sent).toHaveLength(3);
  });
});
