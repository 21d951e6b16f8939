// The "did you mean" of a name that names nothing: the closest of the names there are, as
// commander suggests a mistyped command or option (its suggestSimilar): by optimal string
// alignment distance (Damerau–Levenshtein, no substring edited twice), at most 3 edits, and only
// where more than 40% of the longer name is kept; of names equally close, every one.

/** Edits at most: a name further from every other suggests none. */
const MAX_DISTANCE = 3;
/** The share of the longer name that must be kept (unchanged characters) for a suggestion. */
const MIN_SIMILARITY = 0.4;

/** The optimal string alignment distance of `a` and `b` (more than MAX_DISTANCE: some number above it). */
export function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > MAX_DISTANCE) return Math.max(a.length, b.length);
  // d[i][j]: the distance of a's first i characters and b's first j.
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  const at = (i: number, j: number): number => d[i]?.[j] ?? Number.POSITIVE_INFINITY;
  for (let i = 1; i <= a.length; i++) {
    const row = d[i] ?? [];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, at(i - 2, j - 2) + 1);
      row[j] = best;
    }
  }
  return at(a.length, b.length);
}

/** The names of `candidates` closest to `word` (sorted), where close enough; none else. One-character names are never suggested. */
export function similarNames(word: string, candidates: readonly string[]): string[] {
  let best = MAX_DISTANCE;
  let found: string[] = [];
  for (const candidate of new Set(candidates)) {
    if (candidate.length <= 1 || candidate === word) continue;
    const distance = editDistance(word, candidate);
    const length = Math.max(word.length, candidate.length);
    if ((length - distance) / length <= MIN_SIMILARITY || distance > best) continue;
    if (distance < best) [best, found] = [distance, []];
    found.push(candidate);
  }
  return found.sort();
}

/** ` (did you mean X?)` (`X or Y`, ...) for the names close to `word`, or nothing. */
export function didYouMean(word: string, candidates: readonly string[]): string {
  const names = similarNames(word, candidates);
  if (names.length === 0) return '';
  const listed = names.length === 1 ? names[0] : `${names.slice(0, -1).join(', ')} or ${names.at(-1) ?? ''}`;
  return ` (did you mean ${listed}?)`;
}
