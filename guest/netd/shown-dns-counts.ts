// Apart from status-shape.ts (which loads zod only once an answer is there to check): formatStatus
// shows these, and status-shape.ts checks them.

/** The DNS forwarder's counters `status` shows, in its order. */
export const SHOWN_DNS_COUNTS = ['queries', 'answered', 'retransmits', 'upstreamTimeouts', 'failed', 'rateLimited', 'overloaded', 'evicted', 'malformed'] as const;
