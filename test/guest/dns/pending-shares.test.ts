import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PendingShares, type Share } from '../../../guest/dns/pending-shares.js';

type Op = { kind: 'add'; client: number } | { kind: 'remove'; pick: number } | { kind: 'remove-largest'; prefer: boolean } | { kind: 'remove-again'; pick: number };

/** Few clients, so that counts grow, tie and fall back. */
const anyOp: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('add' as const), client: fc.integer({ min: 0, max: 5 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('remove' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('remove-largest' as const), prefer: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('remove-again' as const), pick: fc.nat() }) },
);

describe('pending shares', () => {
  it('keeps each client its values in arrival order, counts them, and finds the oldest value of a largest holder (the oldest it prefers, where any)', () => {
    fc.assert(
      fc.property(fc.array(anyOp, { maxLength: 400, size: 'max' }), (ops) => {
        const shares = new PendingShares<number, number>();
        // The model: each client's values, oldest first, and the share handed out for each value.
        const model = new Map<number, number[]>();
        const handed = new Map<number, Share<number, number>>();
        const removed: Share<number, number>[] = [];
        let next = 0;
        const take = (share: Share<number, number>): void => {
          const values = model.get(share.key) ?? [];
          values.splice(values.indexOf(share.value), 1);
          if (values.length === 0) model.delete(share.key);
          handed.delete(share.value);
          removed.push(share);
        };
        for (const op of ops) {
          if (op.kind === 'add') {
            const value = next++;
            const share = shares.add(op.client, value);
            expect(share).toMatchObject({ key: op.client, value });
            model.set(op.client, [...(model.get(op.client) ?? []), value]);
            handed.set(value, share);
          } else if (op.kind === 'remove') {
            const pending = [...handed.values()];
            const share = pending[op.pick % Math.max(1, pending.length)];
            if (share === undefined) continue;
            expect(shares.remove(share)).toBe(true);
            take(share);
          } else if (op.kind === 'remove-again') {
            const share = removed[op.pick % Math.max(1, removed.length)];
            if (share !== undefined) expect(shares.remove(share)).toBe(false);
          } else {
            // With a preference (as for TCP connections: an idle one), values divisible by 3.
            const preferred = (value: number): boolean => value % 3 === 0;
            const largest = op.prefer ? shares.oldestOfLargest(preferred) : shares.oldestOfLargest();
            const most = Math.max(0, ...[...model.values()].map((values) => values.length));
            if (most === 0) {
              expect(largest).toBeUndefined();
              continue;
            }
            // A client holding the most, and the oldest of its values (that it prefers, where any is).
            expect(largest).toBeDefined();
            const values = model.get(largest?.key ?? -1) ?? [];
            expect(values).toHaveLength(most);
            expect(largest?.value).toBe(op.prefer ? (values.find(preferred) ?? values[0]) : values[0]);
            expect(shares.remove(largest as Share<number, number>)).toBe(true);
            take(largest as Share<number, number>);
          }
          // One expect per step: they are slow.
          const counts = [0, 1, 2, 3, 4, 5].map((client) => model.get(client)?.length ?? 0);
          expect({
            size: shares.size,
            clients: shares.clients,
            most: shares.most,
            counts: counts.map((_, client) => shares.countOf(client)),
            values: [...shares.values()].sort((a, b) => a - b),
          }).toEqual({ size: handed.size, clients: model.size, most: Math.max(...counts), counts, values: [...handed.keys()].sort((a, b) => a - b) });
        }
        shares.clear();
        expect(shares.size).toBe(0);
        expect(shares.clients).toBe(0);
        expect(shares.oldestOfLargest()).toBeUndefined();
        for (const share of handed.values()) expect(shares.remove(share)).toBe(false);
      }),
    );
  });
});
