// Apart from status-shape.ts (which loads zod only once an answer is there to check): formatStatus
// shows these, and status-shape.ts checks them.

/**
 * The DNS forwarder's counters `status` shows, in its order: UDP and TCP queries (the answers
 * relayed, those of them relayed truncated (TC) and those taken late from an upstream the query
 * had gone on from, what to look at when --dns-upstream-timeout is short; the upstreams' timeouts,
 * TCP connections they ended without an answer, and SERVFAIL, REFUSED or NOTIMP answers among
 * them), then the client TCP connections taken, refused, evicted and closed for idleness
 * (what to look at when DNS over TCP is refused or cut).
 */
export const SHOWN_DNS_COUNTS = [
  'queries',
  'answered',
  'truncated',
  'lateAnswers',
  'retransmits',
  'upstreamTimeouts',
  'upstreamClosed',
  'upstreamErrors',
  'failed',
  'rateLimited',
  'overloaded',
  'evicted',
  'malformed',
  'tcpConnections',
  'tcpRejected',
  'tcpEvicted',
  'tcpIdleClosed',
] as const;
