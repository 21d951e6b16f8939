// How long the DNS forwarder waits for upstreams (see DnsForwarderOptions.timeoutMs and
// queryTimeoutMs): here apart, so that `spectrum-netd run` can say them without loading the forwarder.

/**
 * How long one upstream has a query to itself before the next is asked too: short, for failover
 * (a resolver that is down costs each query this), and no limit on a slow answer (see below).
 */
export const UPSTREAM_TIMEOUT_MS = 1500;
/**
 * How long a query waits for an answer in all before its client gets SERVFAIL. Recursive
 * resolvers often take 2-3 s for a cold name, a name behind a VPN or a DNSSEC validation, and the
 * forwarder is its clients' only server; a stub resolver (glibc's, musl's) waits 5 s for its first
 * try before it asks again or gives up: 4 s answers it before then, with room for the answer to
 * get there, so that the client never asks twice for one slow name.
 */
export const QUERY_TIMEOUT_MS = 4000;
/** The longest of either: a stub resolver gives up long before. */
export const MAX_TIMEOUT_MS = 60_000;
