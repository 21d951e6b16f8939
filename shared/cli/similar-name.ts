// The "did you mean" of a name that names nothing: the closest of the names there are, as
// commander suggests a mistyped command or option (its suggestSimilar, which it does not export):
// by edit distance (fastest-levenshtein's Levenshtein distance: a swap of neighbours counts two,
// where commander counts one), at most 3 edits, and only where more than 40% of the longer name is
// kept; of names equally close, every one.
import { distance } from 'fastest-levenshtein';

/** Edits at most: a name further from every other suggests none. */
const MAX_DISTANCE = 3;
/** The share of the longer name that must be kept (unchanged characters) for a suggestion. */
const MIN_SIMILARITY = 0.4;

/** The names of `candidates` closest to `word` (sorted), where close enough; none else. One-character names are never suggested. */
export function similarNames(word: string, candidates: readonly string[]): string[] {
  let best = MAX_DISTANCE;
  let found: string[] = [];
  for (const candidate of new Set(candidates)) {
    if (candidate.length <= 1 || candidate === word) continue;
    const edits = distance(word, candidate);
    const length = Math.max(word.length, candidate.length);
    if ((length - edits) / length <= MIN_SIMILARITY || edits > best) continue;
    if (edits < best) [best, found] = [edits, []];
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
