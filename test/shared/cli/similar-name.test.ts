import { describe, expect, it } from 'vitest';
import { didYouMean, similarNames } from '../../../shared/cli/similar-name.js';

describe('similar names (did you mean)', () => {
  it('suggests the closest names within 3 edits where more than 40% of the longer is kept; none else, nor the word itself, nor one character', () => {
    expect(similarNames('netvmm', ['netvm', 'appvm-lynx', 'netvm12'])).toEqual(['netvm']);
    expect(similarNames('netvm3', ['netvm1', 'netvm2', 'appvm'])).toEqual(['netvm1', 'netvm2']);
    expect(similarNames('zzzz', ['netvm', 'appvm-lynx'])).toEqual([]);
    expect(similarNames('ab', ['a', 'ab'])).toEqual([]);
    expect(similarNames('nevtm', ['netvm', 'appvm'])).toEqual(['netvm']); // a swap: two edits
    expect(similarNames('ntvm', ['netvm', 'netvm-old'])).toEqual(['netvm']); // the closer only
    expect(didYouMean('netvmm', ['netvm'])).toBe(' (did you mean netvm?)');
    expect(didYouMean('netvm3', ['netvm1', 'netvm2', 'netvm4'])).toBe(' (did you mean netvm1, netvm2 or netvm4?)');
    expect(didYouMean('zzzz', ['netvm'])).toBe('');
  });
});
