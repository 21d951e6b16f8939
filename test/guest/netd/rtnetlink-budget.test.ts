// The request socket's answer budget (guest/netd/rtnetlink.ts) against a scripted `netlink`
// socket whose answers come when the test says: what is in flight when a request times out.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

/** A request the scripted socket was sent, answered (or refused) when the test says. */
interface Sent {
  readonly answer: () => void;
}

const sent: Sent[] = [];
/** Room for three acks' budgets (2 KiB each) and no more. */
const BUFFER_BYTES = 6144;

vi.mock('netlink', async (importOriginal) => {
  const original = await importOriginal<typeof import('netlink')>();
  const request = (): Promise<[]> =>
    new Promise((resolve) => {
      sent.push({ answer: () => resolve([]) });
    });
  return {
    ...original,
    createRtNetlink: () => ({
      socket: { getRecvBufferSize: () => BUFFER_BYTES, close: () => undefined },
      setLink: request,
      getLink: request,
    }),
  };
});

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
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toHaveLength(3);
    // The buffer is promised to those three: the fourth waits.
    note('#4', group(4));
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toHaveLength(3);
    // No answer within 5 s: the three fail, but their answers may still come (a stalled kernel,
    // a blocked event loop), each taking its room in the buffer.
    await vi.advanceTimersByTimeAsync(5_000);
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
