// Which client holds which pending queries: each client's in arrival order, and the client
// holding the most, kept up to date in O(1) per change, so that a full pending table can give a
// place of its largest holder to a client below its fair share (see fair-share.ts) at no search.
// The forwarder keeps its clients' TCP connections in one too, for the same fairness.

/** A value in its client's queue: what add() returns and remove() takes. */
export interface Share<K, V> {
  readonly key: K;
  readonly value: V;
}

/** A client holding at least one value; in the list of the holders of as many. */
class Holder<K, V> {
  count = 0;
  /** Its values, oldest first. */
  oldest: Node<K, V> | undefined;
  newest: Node<K, V> | undefined;
  /** Neighbours among the holders of `count` values. */
  previous: Holder<K, V> | undefined;
  next: Holder<K, V> | undefined;

  constructor(readonly key: K) {}
}

class Node<K, V> implements Share<K, V> {
  previous: Node<K, V> | undefined;
  next: Node<K, V> | undefined;
  /** Cleared once removed: a second remove() is a no-op. */
  holder: Holder<K, V> | undefined;

  constructor(
    holder: Holder<K, V>,
    readonly key: K,
    readonly value: V,
  ) {
    this.holder = holder;
  }
}

/**
 * Values (pending queries) grouped by key (client), counted. Holders are kept in buckets by
 * count: a count only ever moves by one, so the largest count is found again in O(1) when its
 * last holder leaves (the next lower bucket then holds it), the way O(1) LFU caches do.
 */
export class PendingShares<K, V> {
  readonly #holders = new Map<K, Holder<K, V>>();
  /** #byCount[c]: the first of the holders holding exactly c values (c >= 1). */
  readonly #byCount: (Holder<K, V> | undefined)[] = [undefined];
  #most = 0;
  #size = 0;

  /** Values held, all clients together. */
  get size(): number {
    return this.#size;
  }

  /** Clients holding at least one value. */
  get clients(): number {
    return this.#holders.size;
  }

  /** The largest number of values one client holds (0 when empty; tests check the bookkeeping with it). */
  get most(): number {
    return this.#most;
  }

  countOf(key: K): number {
    return this.#holders.get(key)?.count ?? 0;
  }

  /** Append `value` to the queue of `key`. */
  add(key: K, value: V): Share<K, V> {
    let holder = this.#holders.get(key);
    if (holder === undefined) {
      holder = new Holder(key);
      this.#holders.set(key, holder);
    } else {
      this.#unlist(holder);
    }
    const node = new Node(holder, key, value);
    node.previous = holder.newest;
    if (holder.newest === undefined) holder.oldest = node;
    else holder.newest.next = node;
    holder.newest = node;
    holder.count += 1;
    this.#list(holder);
    if (holder.count > this.#most) this.#most = holder.count;
    this.#size += 1;
    return node;
  }

  /** Take `share` out of its client's queue; false when it was removed already. */
  remove(share: Share<K, V>): boolean {
    const node = share as Node<K, V>;
    const holder = node.holder;
    if (holder === undefined) return false;
    node.holder = undefined;
    if (node.previous === undefined) holder.oldest = node.next;
    else node.previous.next = node.next;
    if (node.next === undefined) holder.newest = node.previous;
    else node.next.previous = node.previous;
    node.previous = undefined;
    node.next = undefined;
    this.#unlist(holder);
    holder.count -= 1;
    if (holder.count > 0) this.#list(holder);
    else this.#holders.delete(holder.key);
    // Only a holder of the largest count leaving its bucket can lower it, and by one.
    if (this.#byCount[this.#most] === undefined) this.#most -= 1;
    this.#size -= 1;
    return true;
  }

  /**
   * The oldest value of a client holding the most (the one to give up a place), or undefined when
   * empty. With `prefer`, the oldest of that client's values `prefer` accepts, where any does (a
   * walk through its values: for queues as short as a client's TCP connections).
   */
  oldestOfLargest(prefer?: (value: V) => boolean): Share<K, V> | undefined {
    const oldest = this.#byCount[this.#most]?.oldest;
    if (prefer === undefined) return oldest;
    for (let node = oldest; node !== undefined; node = node.next) if (prefer(node.value)) return node;
    return oldest;
  }

  /** Every value, each client's oldest first (tests check the queues against a model with it). */
  *values(): IterableIterator<V> {
    for (const holder of this.#holders.values()) {
      for (let node = holder.oldest; node !== undefined; node = node.next) yield node.value;
    }
  }

  /** Forget everything (on close). Shares handed out before are removed already. */
  clear(): void {
    for (const holder of this.#holders.values()) {
      for (let node = holder.oldest; node !== undefined; node = node.next) node.holder = undefined;
    }
    this.#holders.clear();
    this.#byCount.length = 1;
    this.#most = 0;
    this.#size = 0;
  }

  /** Put `holder` first in the bucket of its count. */
  #list(holder: Holder<K, V>): void {
    const first = this.#byCount[holder.count];
    holder.previous = undefined;
    holder.next = first;
    if (first !== undefined) first.previous = holder;
    this.#byCount[holder.count] = holder;
  }

  /** Take `holder` out of the bucket of its count. */
  #unlist(holder: Holder<K, V>): void {
    if (holder.previous === undefined) this.#byCount[holder.count] = holder.next;
    else holder.previous.next = holder.next;
    if (holder.next !== undefined) holder.next.previous = holder.previous;
    holder.previous = undefined;
    holder.next = undefined;
  }
}
