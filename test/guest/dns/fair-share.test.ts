import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { admission, fairShare, type Admission } from '../../../guest/dns/fair-share.js';
import { PendingShares, type Share } from '../../../guest/dns/pending-shares.js';

/**
 * The forwarder's pending table as far as places go: admission() decides, PendingShares finds the
 * place to free, as in forwarder.ts (#onClientDatagram, #evictOldestOfLargest, #settled).
 */
class Table {
  readonly shares = new PendingShares<number, number>();
  /** The share of each pending query, as each forwarder entry keeps its own. */
  readonly #held = new Map<number, Share<number, number>>();
  #next = 0;

  constructor(
    readonly capacity: number,
    readonly perClientCap: number,
  ) {}

  /** A query of `client` arrives: what happened, its number if admitted, and the query that gave up its place, if one did. */
  ask(client: number): { verdict: Admission; query: number | undefined; evicted: { client: number; query: number } | undefined } {
    const { shares } = this;
    const verdict = admission(shares.countOf(client), shares.clients, shares.size, this.capacity, this.perClientCap);
    if (verdict === 'refuse') return { verdict, query: undefined, evicted: undefined };
    let evicted: { client: number; query: number } | undefined;
    if (verdict === 'evict') {
      const oldest = shares.oldestOfLargest();
      if (oldest === undefined) throw new Error('evict from an empty table');
      shares.remove(oldest);
      this.#held.delete(oldest.value);
      evicted = { client: oldest.key, query: oldest.value };
    }
    const query = this.#next++;
    this.#held.set(query, shares.add(client, query));
    return { verdict, query, evicted };
  }

  /** The upstream answered `query`: it leaves the table. */
  answer(query: number): void {
    const share = this.#held.get(query);
    if (share === undefined) throw new Error(`query ${query} is not pending`);
    this.#held.delete(query);
    this.shares.remove(share);
  }
}

type Op = { kind: 'ask'; client: number } | { kind: 'answer'; pick: number };

describe('fair share of the pending table', () => {
  it('never refuses a client below its fair share while another holds more, evicts only from a largest holder, and stays within capacity', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 48 }),
        fc.integer({ min: 1, max: 64 }),
        fc.integer({ min: 1, max: 12 }),
        fc.array(fc.tuple(fc.boolean(), fc.nat()), { maxLength: 500, size: 'max' }),
        (capacity, perClientCap, clientCount, steps) => {
          // Clients ask far more than the upstreams answer, so the table is full most of the time,
          // and clients 0 and 1 ask twice as often as all the others together.
          const ops: Op[] = steps.map(([answer, n]) =>
            answer && n % 4 === 0 ? { kind: 'answer', pick: n } : { kind: 'ask', client: n % 3 === 0 ? (n >> 2) % clientCount : n % Math.min(2, clientCount) },
          );
          const table = new Table(capacity, perClientCap);
          // The model: each client's pending queries, oldest first.
          const model = new Map<number, number[]>();
          const counts = (): number[] => [...model.values()].map((queries) => queries.length);
          for (const op of ops) {
            if (op.kind === 'answer') {
              const all = [...model.entries()].flatMap(([client, queries]) => queries.map((query) => ({ client, query })));
              const chosen = all[op.pick % Math.max(1, all.length)];
              if (chosen === undefined) continue;
              table.answer(chosen.query);
              const queries = model.get(chosen.client) ?? [];
              queries.splice(queries.indexOf(chosen.query), 1);
              if (queries.length === 0) model.delete(chosen.client);
            } else {
              const own = model.get(op.client)?.length ?? 0;
              const size = counts().reduce((a, b) => a + b, 0);
              const holders = model.size + (own === 0 ? 1 : 0);
              const share = fairShare(capacity, holders);
              const largest = Math.max(0, ...counts());
              const { verdict, query, evicted } = table.ask(op.client);
              if (verdict === 'refuse') {
                if (own < perClientCap) {
                  // Refused only for a full table, and only with the asker at its share already.
                  expect(size).toBe(capacity);
                  expect(own).toBeGreaterThanOrEqual(share);
                }
                // The property as stated: never below its share while someone holds more than theirs.
                expect(own < Math.min(share, perClientCap) && largest > share).toBe(false);
              } else {
                expect(own).toBeLessThan(perClientCap);
                if (verdict === 'admit') {
                  expect(size).toBeLessThan(capacity);
                  expect(evicted).toBeUndefined();
                } else {
                  expect(size).toBe(capacity);
                  expect(own).toBeLessThan(share);
                  // From a largest holder, its oldest query; never the asker, and by at least two
                  // more than it, so the table only gets more even.
                  expect(evicted).toBeDefined();
                  const victim = model.get(evicted?.client ?? -1) ?? [];
                  expect(evicted?.client).not.toBe(op.client);
                  expect(victim).toHaveLength(largest);
                  expect(largest).toBeGreaterThanOrEqual(own + 2);
                  expect(evicted?.query).toBe(victim[0]);
                  victim.shift();
                  if (victim.length === 0) model.delete(evicted?.client ?? -1);
                }
                expect(query).toBeDefined();
                model.set(op.client, [...(model.get(op.client) ?? []), query ?? -1]);
              }
              // A client holding nothing gets a place unless every place is held by a client of its own.
              if (own === 0 && holders <= capacity) expect(verdict).not.toBe('refuse');
            }
            // Within capacity, and the shares agree with the queries held (one expect: they are slow).
            const held = Array.from({ length: clientCount }, (_, client) => model.get(client)?.length ?? 0);
            const size = held.reduce((a, b) => a + b, 0);
            expect({ size: table.shares.size, within: size <= capacity, clients: table.shares.clients, held: held.map((_, client) => table.shares.countOf(client)) }).toEqual({
              size,
              within: true,
              clients: model.size,
              held,
            });
          }
        },
      ),
    );
  });

  it('gives a late client its share of a table that four clients filled, and no more', () => {
    const table = new Table(64, 16);
    for (let round = 0; round < 20; round++) for (let client = 1; client <= 4; client++) table.ask(client);
    expect([1, 2, 3, 4].map((client) => table.shares.countOf(client))).toEqual([16, 16, 16, 16]);
    const verdicts = Array.from({ length: 14 }, () => table.ask(5).verdict);
    // 64 / 5 = 12 places, each taken from a largest holder in turn.
    expect(verdicts).toEqual([...Array<Admission>(12).fill('evict'), 'refuse', 'refuse']);
    expect([1, 2, 3, 4, 5].map((client) => table.shares.countOf(client))).toEqual([13, 13, 13, 13, 12]);
    // The four cannot take places back: each holds more than its share, 12.
    for (let client = 1; client <= 4; client++) expect(table.ask(client).verdict).toBe('refuse');
    // A sixth client still gets in.
    expect(table.ask(6).verdict).toBe('evict');
  });

  it('admits while there is room, whatever the shares, up to the per-client cap', () => {
    fc.assert(
      fc.property(fc.nat({ max: 100 }), fc.nat({ max: 100 }), fc.integer({ min: 1, max: 200 }), (own, clients, capacity) => {
        expect(admission(own, clients, capacity - 1, capacity, own + 1)).toBe('admit');
        expect(admission(own, clients, capacity - 1, capacity, Math.max(1, own))).toBe(own === 0 ? 'admit' : 'refuse');
      }),
    );
  });
});

