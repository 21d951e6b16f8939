// Queries waiting for an upstream answer, keyed by the random id we gave them upstream.
// Collision-free by construction: an id is handed out only when it is not in the table.

export const ID_SPACE = 0x1_0000;

/** A source of uniformly random 16-bit ids. */
export type RandomId = () => number;

interface Slot<T> {
  readonly value: T;
  readonly deadline: number;
}

/**
 * A bounded table of pending queries. Entries expire in insertion order: callers give each a
 * deadline of `now + timeout` with a monotonic clock and one timeout, so the oldest entry is
 * always the next to expire and expiry costs only the entries that did expire.
 */
export class PendingTable<T> {
  readonly #slots = new Map<number, Slot<T>>();
  readonly #capacity: number;
  readonly #randomId: RandomId;

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
    this.#slots.set(id, { value, deadline });
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
    return slot.value;
  }

  /** Deadline of the oldest entry: the next expiry. */
  nextDeadline(): number | undefined {
    for (const slot of this.#slots.values()) return slot.deadline;
    return undefined;
  }

  /** Remove and return, oldest first, every entry from the front whose deadline is <= now. */
  expire(now: number): T[] {
    const expired: T[] = [];
    for (const [id, slot] of this.#slots) {
      if (slot.deadline > now) break;
      this.#slots.delete(id);
      expired.push(slot.value);
    }
    return expired;
  }

  /** Remove and return everything (on close). */
  drain(): T[] {
    const all = [...this.#slots.values()].map((slot) => slot.value);
    this.#slots.clear();
    return all;
  }
}
