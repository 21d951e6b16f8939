/** One benchmark figure: a named case, its throughput, and what it is compared with. */
export interface BenchResult {
  readonly suite: string;
  readonly name: string;
  readonly opsPerSecond: number;
  readonly rounds: number;
  readonly opsPerRound: number;
  /** What opsPerSecond counts when it is not operations per second (bit/s, a ratio). */
  readonly unit?: string;
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
  rates.sort((a, b) => a - b);
  return { suite, name, opsPerSecond: rates[Math.floor(rates.length / 2)] ?? 0, rounds, opsPerRound: inputs.length };
}
