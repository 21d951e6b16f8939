// Queries waiting for an upstream answer, keyed by the random id we gave them upstream.
// Collision-free by construction: an id is handed out only when it is not in the table.

export const ID_SPACE = 0x1_0000;

/** A source of uniformly random 16-bit ids. */
export type RandomId = () => number;

interface Slot<T> {
  readonly id: number;
  readonly value: T;
  deadline: number;
  /** Insertion order: equal deadlines fall due first in, first out. */
  order: number;
  /** Position in the heap. */
  index: number;
}

/**
 * A bounded table of pending queries, each with a deadline on a monotonic clock. Deadlines
 * differ per entry (a retransmission waits longer than a first attempt, upstreams have their own
 * round-trip times), so entries are also kept in a binary min-heap by deadline: the next to fall
 * due is at its top, and insert, take and reschedule cost O(log n).
 */
export class PendingTable<T> {
  readonly #slots = new Map<number, Slot<T>>();
  readonly #heap: Slot<T>[] = [];
  readonly #capacity: number;
  readonly #randomId: RandomId;
  #order = 0;

  constructor(capacity: number, randomId: RandomId) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > ID_SPACE) {
      throw new RangeError(`pending table capacity must be 1..${ID_SPACE}, got ${capacity}`);
    }
    this.#capacity = capacity;
    this.#randomId = randomId;
  }

  get size(): number {
    return this.#slots.size;
  }

  get capacity(): number {
    return this.#capacity;
  }

  /** Store `value` under a fresh id, or return undefined when the table is full. */
  insert(value: T, deadline: number): number | undefined {
    if (this.#slots.size >= this.#capacity) return undefined;
    let id = this.#randomId() & 0xffff;
    // A few random draws almost always succeed; when the table is dense, probe onwards from the
    // last draw, which still finds a free id because size < capacity <= 65536.
    for (let tries = 0; this.#slots.has(id) && tries < 4; tries++) id = this.#randomId() & 0xffff;
    while (this.#slots.has(id)) id = (id + 1) & 0xffff;
    const slot: Slot<T> = { id, value, deadline, order: this.#order++, index: this.#heap.length };
    this.#slots.set(id, slot);
    this.#heap.push(slot);
    this.#siftUp(slot.index);
    return id;
  }

  peek(id: number): T | undefined {
    return this.#slots.get(id)?.value;
  }

  /** Remove and return the entry for `id`. */
  take(id: number): T | undefined {
    const slot = this.#slots.get(id);
    if (slot === undefined) return undefined;
    this.#slots.delete(id);
    this.#removeAt(slot.index);
    return slot.value;
  }

  /** Give a pending entry a new deadline (it keeps its id); false when `id` is not pending. */
  reschedule(id: number, deadline: number): boolean {
    const slot = this.#slots.get(id);
    if (slot === undefined) return false;
    slot.deadline = deadline;
    slot.order = this.#order++;
    this.#siftDown(slot.index);
    this.#siftUp(slot.index);
    return true;
  }

  /** The earliest deadline: the next expiry. */
  nextDeadline(): number | undefined {
    return this.#heap[0]?.deadline;
  }

  /** Ids of the entries whose deadline is <= now, earliest first; they stay pending. */
  due(now: number): number[] {
    // The heap is not sorted beyond its top: collect by walking it, then order.
    const found: Slot<T>[] = [];
    const visit = (index: number): void => {
      const slot = this.#heap[index];
      if (slot === undefined || slot.deadline > now) return;
      found.push(slot);
      visit(2 * index + 1);
      visit(2 * index + 2);
    };
    visit(0);
    return found.sort(earlier).map((slot) => slot.id);
  }

  /** Remove and return, earliest first, every entry whose deadline is <= now. */
  expire(now: number): T[] {
    const expired: T[] = [];
    for (const id of this.due(now)) {
      const value = this.take(id);
      if (value !== undefined) expired.push(value);
    }
    return expired;
  }

  /** Remove and return everything (on close). */
  drain(): T[] {
    const all = [...this.#slots.values()].map((slot) => slot.value);
    this.#slots.clear();
    this.#heap.length = 0;
    return all;
  }

  #removeAt(index: number): void {
    const last = this.#heap.pop();
    if (last === undefined || index >= this.#heap.length) return;
    this.#heap[index] = last;
    last.index = index;
    this.#siftDown(index);
    this.#siftUp(index);
  }

  #swap(i: number, j: number): void {
    const heap = this.#heap;
    const a = heap[i] as Slot<T>;
    const b = heap[j] as Slot<T>;
    heap[i] = b;
    b.index = i;
    heap[j] = a;
    a.index = j;
  }

  #siftUp(start: number): void {
    const heap = this.#heap;
    let index = start;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (earlier(heap[parent] as Slot<T>, heap[index] as Slot<T>) <= 0) return;
      this.#swap(index, parent);
      index = parent;
    }
  }

  #siftDown(start: number): void {
    const heap = this.#heap;
    let index = start;
    for (;;) {
      const left = 2 * index + 1;
      if (left >= heap.length) return;
      const right = left + 1;
      const smaller = right < heap.length && earlier(heap[right] as Slot<T>, heap[left] as Slot<T>) < 0 ? right : left;
      if (earlier(heap[index] as Slot<T>, heap[smaller] as Slot<T>) <= 0) return;
      this.#swap(index, smaller);
      index = smaller;
    }
  }
}

function earlier<T>(a: Slot<T>, b: Slot<T>): number {
  return a.deadline - b.deadline || a.order - b.order;
}
