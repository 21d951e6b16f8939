import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PendingTable } from '../../../guest/dns/pending-table.js';
import { cryptoRandomId } from '../../../guest/dns/random-id.js';

type Op =
  | { kind: 'insert'; value: number; timeout: number }
  | { kind: 'take'; pick: number }
  | { kind: 'reschedule'; pick: number; timeout: number }
  | { kind: 'expire'; advance: number };

const anyOp: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('insert' as const), value: fc.integer(), timeout: fc.integer({ min: 0, max: 40 }) }),
  fc.record({ kind: fc.constant('take' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('reschedule' as const), pick: fc.nat(), timeout: fc.integer({ min: 0, max: 40 }) }),
  fc.record({ kind: fc.constant('expire' as const), advance: fc.integer({ min: 0, max: 50 }) }),
);

describe('pending table', () => {
  it('hands out ids that are unique among pending entries, returns each value once, expires by deadline, and stays within capacity', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 64 }),
        fc.array(anyOp, { maxLength: 300 }),
        fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 1, maxLength: 8 }),
        (capacity, ops, draws) => {
          // A deliberately poor random source (few distinct values) forces the collision path.
          let i = 0;
          const table = new PendingTable<number>(capacity, () => draws[i++ % draws.length] ?? 0);
          // Deadlines differ per entry; equal deadlines fall due in the order they were set.
          const model = new Map<number, { value: number; deadline: number; order: number }>();
          let now = 0;
          let order = 0;
          for (const op of ops) {
            if (op.kind === 'insert') {
              const id = table.insert(op.value, now + op.timeout);
              if (model.size >= capacity) {
                expect(id).toBeUndefined();
              } else {
                expect(id).toBeDefined();
                expect(id).toBeGreaterThanOrEqual(0);
                expect(id).toBeLessThanOrEqual(0xffff);
                expect(model.has(id ?? -1)).toBe(false);
                model.set(id ?? -1, { value: op.value, deadline: now + op.timeout, order: order++ });
              }
            } else if (op.kind === 'reschedule') {
              const ids = [...model.keys()];
              const id = ids.length === 0 ? op.pick & 0xffff : (ids[op.pick % ids.length] ?? 0);
              const slot = model.get(id);
              expect(table.reschedule(id, now + op.timeout)).toBe(slot !== undefined);
              if (slot !== undefined) model.set(id, { ...slot, deadline: now + op.timeout, order: order++ });
            } else if (op.kind === 'take') {
              const ids = [...model.keys()];
              const id = ids.length === 0 ? op.pick & 0xffff : (ids[op.pick % ids.length] ?? 0);
              expect(table.take(id)).toBe(model.get(id)?.value);
              model.delete(id);
              expect(table.take(id)).toBeUndefined();
            } else {
              now += op.advance;
              const expected = [...model.entries()].filter(([, slot]) => slot.deadline <= now).sort(([, a], [, b]) => a.deadline - b.deadline || a.order - b.order);
              const earliest = Math.min(...[...model.values()].map((slot) => slot.deadline));
              expect(table.nextDeadline()).toBe(model.size === 0 ? undefined : earliest);
              expect(table.expire(now)).toEqual(expected.map(([, slot]) => slot.value));
              for (const [id] of expected) model.delete(id);
            }
            expect(table.size).toBe(model.size);
            expect(table.size).toBeLessThanOrEqual(capacity);
          }
        },
      ),
    );
  });

  it('fills the whole 16-bit id space with distinct ids', () => {
    const table = new PendingTable<number>(0x1_0000, cryptoRandomId());
    const ids = new Set<number>();
    for (let i = 0; i < 0x1_0000; i++) ids.add(table.insert(i, 0) ?? -1);
    expect(ids.size).toBe(0x1_0000);
    expect(ids.has(-1)).toBe(false);
    expect(table.insert(0, 0)).toBeUndefined();
  });

  it('reports the oldest deadline next', () => {
    const table = new PendingTable<string>(4, () => 7);
    expect(table.nextDeadline()).toBeUndefined();
    table.insert('a', 10);
    table.insert('b', 20);
    expect(table.nextDeadline()).toBe(10);
    table.take(7);
    expect(table.nextDeadline()).toBe(20);
  });

  it('refuses capacities outside 1..65536', () => {
    expect(() => new PendingTable(0, () => 0)).toThrow(RangeError);
    expect(() => new PendingTable(0x1_0001, () => 0)).toThrow(RangeError);
  });

  it('draws ids that look uniform', () => {
    const random = cryptoRandomId(64);
    const buckets = new Array<number>(16).fill(0);
    for (let i = 0; i < 16_000; i++) {
      const id = random();
      buckets[id >> 12] = (buckets[id >> 12] ?? 0) + 1;
    }
    for (const count of buckets) expect(count).toBeGreaterThan(800);
  });
});
