// How long to wait for an upstream's answer before sending the query again: the round-trip
// estimate of RFC 6298 (section 2), per upstream, from answers to queries sent once (Karn).
// A forwarder that waits its whole timeout for a lost datagram answers SERVFAIL to a client
// that got no chance to retry; one that resends after a few round trips recovers in time.

export interface RetransmitBounds {
  /** Before the first sample (RFC 6298 2.1 says 1 s). */
  readonly initialMs: number;
  /** Never sooner: an upstream's answers vary with its load and with names it must look up. */
  readonly minMs: number;
  /** Never later. */
  readonly maxMs: number;
}

/** Clock granularity term G of RFC 6298 (performance.now() is finer; 1 ms keeps RTO above SRTT). */
const GRANULARITY_MS = 1;

export class RttEstimator {
  #srtt: number | undefined;
  #rttvar = 0;

  constructor(readonly bounds: RetransmitBounds) {
    const { initialMs, minMs, maxMs } = bounds;
    if (!(minMs > 0 && minMs <= maxMs && Number.isFinite(maxMs) && initialMs > 0)) {
      throw new RangeError(`retransmit bounds need 0 < min <= max, got ${minMs}..${maxMs}`);
    }
  }

  /** A measured round trip, in milliseconds. */
  sample(rttMs: number): void {
    if (!(rttMs >= 0) || !Number.isFinite(rttMs)) return;
    if (this.#srtt === undefined) {
      this.#srtt = rttMs;
      this.#rttvar = rttMs / 2;
      return;
    }
    this.#rttvar = 0.75 * this.#rttvar + 0.25 * Math.abs(this.#srtt - rttMs);
    this.#srtt = 0.875 * this.#srtt + 0.125 * rttMs;
  }

  /** Smoothed round trip, once there is a sample. */
  get smoothedMs(): number | undefined {
    return this.#srtt;
  }

  /** The retransmission timeout: SRTT + max(G, 4 RTTVAR), within the bounds. */
  timeoutMs(): number {
    const { initialMs, minMs, maxMs } = this.bounds;
    const rto = this.#srtt === undefined ? initialMs : this.#srtt + Math.max(GRANULARITY_MS, 4 * this.#rttvar);
    return Math.min(maxMs, Math.max(minMs, rto));
  }
}
