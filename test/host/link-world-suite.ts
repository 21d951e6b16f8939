// A link world per describe block: made before its tests, removed after them (also when they fail).
import { afterAll, beforeAll } from 'vitest';
import { type Harness, createHarness } from '../harness/index.js';
import { type LinkWorld, makeLinkWorld } from './link-fixture.js';

/** The world of the enclosing describe block, for its tests to call. */
export function linkWorldPerSuite(name: string, extraClients = 0): () => LinkWorld {
  let harness: Harness | undefined;
  let world: LinkWorld | undefined;
  beforeAll(async () => {
    harness = createHarness(name);
    world = await makeLinkWorld(harness, extraClients);
  });
  afterAll(async () => {
    await world?.dispose();
    await harness?.cleanup();
  });
  return () => {
    if (world === undefined) throw new Error(`link world ${name} used outside its tests`);
    return world;
  };
}
