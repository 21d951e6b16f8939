// Who gets a place in the DNS forwarder's pending table once it is full (and, alike, who gets a
// client TCP connection once all are open: a "query" below is then a connection).
//
// Pushout, the longest-queue-drop of shared-buffer switches: a query of a client holding less than
// its fair share of the full table (its places divided evenly among the clients holding any, the
// asking one counted) takes the place of the oldest query of the client holding the most, which is
// answered SERVFAIL; a client holding its share already is refused. A dynamic per-client cap
// (capacity / clients) was the alternative: it is cheaper still, but it only binds once others
// ask, and a few clients asking for names that never resolve fill the table in a moment and hold
// it for all the upstream timeouts, so a client coming later would be refused until then. With
// pushout it gets its place at once, and while the table has room any client may use it: no places
// are kept empty for clients that may never come. The oldest query of the largest holder has
// waited the longest for its answer (the least likely to get one still), of the client asking the
// most.

export type Admission = 'admit' | 'evict' | 'refuse';

/** Places per client when `clients` share `capacity` evenly; rounded down, so shares never add up beyond it. */
export function fairShare(capacity: number, clients: number): number {
  return Math.floor(capacity / Math.max(1, clients));
}

/**
 * What to do with a new query of a client holding `own` places when `clients` clients (it among
 * them if own > 0) hold `size` of the table's `capacity` places:
 *   refuse  it holds `perClientCap` places, or the table is full and it holds its fair share;
 *   admit   a place is free;
 *   evict   the table is full and it holds less than its fair share f: the client holding the
 *           most gives up its oldest place. That client holds at least own + 2 (the others hold
 *           capacity - own > capacity - f >= (n - 1) f places among n - 1 clients, n the clients
 *           with the asker counted, so one holds f + 1 or more), so it is never the asker and the
 *           table only gets more even.
 * Positional numbers, not an object: it runs for every query.
 */
export function admission(own: number, clients: number, size: number, capacity: number, perClientCap: number): Admission {
  if (own >= perClientCap) return 'refuse';
  if (size < capacity) return 'admit';
  return own < fairShare(capacity, own === 0 ? clients + 1 : clients) ? 'evict' : 'refuse';
}
