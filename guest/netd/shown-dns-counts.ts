// Apart from status-shape.ts (which loads zod only once an answer is there to check): formatStatus
// shows these, and status-shape.ts checks them.

/**
 * The DNS forwarder's counters `status` shows, in its order: UDP and TCP queries, then the client
 * TCP connections taken, refused and evicted (what to look at when DNS over TCP is refused).
 */
export const SHOWN_DNS_COUNTS = [
  'queries',
  'answered',
  'retransmits',
  'upstreamTimeouts',
  'failed',
  'rateLimited',
  'overloaded',
  'evicted',
  'malformed',
  'tcpConnections',
  'tcpRejected',
  'tcpEvicted',
] as const;
