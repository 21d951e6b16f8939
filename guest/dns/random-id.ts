import { randomFillSync } from 'node:crypto';
import type { RandomId } from './pending-table.js';

/**
 * Unpredictable 16-bit ids from the kernel's CSPRNG, drawn in blocks: one getrandom call per
 * 4096 ids instead of one per query.
 */
export function cryptoRandomId(blockIds = 4096): RandomId {
  const block = new Uint16Array(blockIds);
  let next = blockIds;
  return () => {
    if (next >= blockIds) {
      randomFillSync(block);
      next = 0;
    }
    return block[next++] ?? 0;
  };
}
