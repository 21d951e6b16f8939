/** One benchmark figure: a named case, its value and unit, in a suite. */
export interface BenchResult {
  readonly suite: string;
  readonly name: string;
  readonly value: number;
  readonly unit: string;
  /** What the figure is compared with, or a goal it is held to. */
  readonly note?: string;
}

/** Median of a non-empty list of numbers. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] ?? 0) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}

/** The p-th percentile (0..100) by nearest rank. */
export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? 0;
}

/**
 * Throughput of `operation` over `inputs`: warm up, then several timed rounds over all inputs,
 * reporting the median round so a GC pause or a busy neighbour core skews nothing.
 */
export function measureThroughput<T>(
  suite: string,
  name: string,
  inputs: readonly T[],
  operation: (input: T) => unknown,
  rounds = 7,
): BenchResult {
  let sink: unknown;
  for (const input of inputs) sink = operation(input);
  const rates: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const start = process.hrtime.bigint();
    for (const input of inputs) sink = operation(input);
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    rates.push(inputs.length / seconds);
  }
  if (sink === Symbol.for('never')) console.log(sink); // keeps the results observably used
  return { suite, name, value: median(rates), unit: 'ops/s' };
}

/**
 * The V8 flags the agent's service files start it with (NODE_OPTIONS in guest/service/): V8 grows
 * its young generation up to 2 x 16 MiB under a burst of short-lived allocations, most of a busy
 * agent's peak RSS; capped at 1 MiB, scavenges get cheaper too. Benchmarks run the agent's
 * servers with the same flags. SPECTRUM_BENCH_NODE_FLAGS adds more, for experiments.
 */
export const AGENT_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1', ...(process.env['SPECTRUM_BENCH_NODE_FLAGS'] ?? '').split(' ').filter(Boolean)];
