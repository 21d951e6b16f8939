// The agent's queue of rtnetlink requests (guest/netd/rtnetlink.ts, RtnetlinkKernel) over a
// scripted request socket: no kernel. Which requests go as one program, which wait for the next,
// a request that times out while queued, and a close while a program runs.
import { endianness } from 'node:os';
import { rt } from 'netlink';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { emptyView } from '../../../guest/netd/kernel-view.js';
import { NetdError } from '../../../guest/netd/netd-error.js';
import { type RequestSocket, RtnetlinkKernel } from '../../../guest/netd/rtnetlink.js';
import type { MarkedOutcome, Program } from '../../../shared/rtnl-socket.js';
import { messageType, programMessages } from './fixtures/request-programs.js';

const little = endianness() === 'LE';

/** A link request's ifindex (ifinfomsg's, after the 16-byte netlink header). */
const ifindexOf = (message: Buffer): number => (little ? message.readInt32LE(20) : message.readInt32BE(20));

const answered = (): MarkedOutcome => ({ state: 'done', reply: new Uint8Array(), marks: { interrupted: false, failure: null } });

/** A request socket whose programs are answered when the test says: each program run, as the ifindexes of its SETLINKs. */
class ScriptedSocket implements RequestSocket {
  readonly programs: number[][] = [];
  readonly #answers: (() => void)[] = [];
  closed = false;

  runMarked(program: Program): Promise<MarkedOutcome[]> {
    const messages = programMessages(program);
    for (const message of messages) expect(messageType(message)).toBe(rt.MessageType.SETLINK);
    this.programs.push(messages.map(ifindexOf));
    return new Promise((resolve) => this.#answers.push(() => resolve(messages.map(answered))));
  }

  /** Answer the oldest program not yet answered. */
  answer(): void {
    const next = this.#answers.shift();
    if (next === undefined) throw new Error('no program is running');
    next();
  }

  close(): void {
    this.closed = true;
  }
}

const view = emptyView();
const groupOf = (kernel: RtnetlinkKernel, ifindex: number): Promise<void> => kernel.apply({ kind: 'link-group', ifindex, group: 1 }, view);
/** Let every microtask (a queued run, a settled program's) go. */
const settle = async (): Promise<void> => {
  for (let turn = 0; turn < 10; turn++) await Promise.resolve();
};
const outcome = (request: Promise<void>): Promise<string> =>
  request.then(
    () => 'answered',
    (error: unknown) => (error instanceof NetdError ? `${error.kind}: ${error.message}` : String(error)),
  );

afterEach(() => {
  vi.useRealTimers();
});

describe("the agent's rtnetlink request queue", () => {
  it('sends the requests asked in one turn as one program, in the order asked', async () => {
    const socket = new ScriptedSocket();
    const kernel = new RtnetlinkKernel({ requestSocket: socket });
    const requests = [groupOf(kernel, 3), groupOf(kernel, 1), groupOf(kernel, 2)].map(outcome);
    await settle();
    expect(socket.programs).toEqual([[3, 1, 2]]);
    socket.answer();
    expect(await Promise.all(requests)).toEqual(['answered', 'answered', 'answered']);
    kernel.close();
  });

  it('sends what is asked while a program runs as the next program, once that one is answered', async () => {
    const socket = new ScriptedSocket();
    const kernel = new RtnetlinkKernel({ requestSocket: socket });
    const first = outcome(groupOf(kernel, 1));
    await settle();
    const later = [outcome(groupOf(kernel, 2))];
    await settle();
    later.push(outcome(groupOf(kernel, 3)));
    await settle();
    expect(socket.programs).toEqual([[1]]);
    socket.answer();
    expect(await first).toBe('answered');
    await settle();
    expect(socket.programs).toEqual([[1], [2, 3]]);
    socket.answer();
    expect(await Promise.all(later)).toEqual(['answered', 'answered']);
    kernel.close();
  });

  it('fails a request still queued 7 s after it was asked (rtnl.c waits 5 s for an answer), and never sends it', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const socket = new ScriptedSocket();
    const kernel = new RtnetlinkKernel({ requestSocket: socket });
    const running = outcome(groupOf(kernel, 1));
    await settle();
    vi.advanceTimersByTime(1_000);
    const queued = outcome(groupOf(kernel, 2));
    await settle();
    expect(socket.programs).toEqual([[1]]);
    vi.advanceTimersByTime(6_000);
    expect(await running).toBe('netlink: request timed out: no answer within 7 s of asking (its batch still runs: it may yet be made)');
    vi.advanceTimersByTime(999);
    await settle();
    let queuedSettled = false;
    void queued.then(() => (queuedSettled = true));
    await settle();
    expect(queuedSettled).toBe(false);
    vi.advanceTimersByTime(1);
    expect(await queued).toBe('netlink: request timed out: not sent within 7 s of asking (the kernel took that long over the requests before it); it will not be sent');
    // The running program answered late: nothing is left to send.
    socket.answer();
    await settle();
    expect(socket.programs).toEqual([[1]]);
    // The next request goes as a program of its own.
    const next = outcome(groupOf(kernel, 4));
    await settle();
    expect(socket.programs).toEqual([[1], [4]]);
    socket.answer();
    expect(await next).toBe('answered');
    kernel.close();
  });

  it("rejects the requests queued and those of the program running with 'closed' at once when closed, and sends no more", async () => {
    const socket = new ScriptedSocket();
    const kernel = new RtnetlinkKernel({ requestSocket: socket });
    const running = [groupOf(kernel, 1), groupOf(kernel, 2)].map(outcome);
    await settle();
    const queued = [groupOf(kernel, 3)].map(outcome);
    await settle();
    expect(socket.programs).toEqual([[1, 2]]);
    kernel.close();
    expect(socket.closed).toBe(true);
    // Settled before the running program is answered.
    const closed = 'closed: the rtnetlink socket was closed (the agent is stopping)';
    expect(await Promise.all([...running, ...queued])).toEqual([closed, closed, closed]);
    expect(await outcome(groupOf(kernel, 4))).toBe(closed);
    socket.answer();
    await settle();
    expect(socket.programs).toEqual([[1, 2]]);
  });
});
