// A link world per describe block: made before its tests, removed after them (also when they fail).
import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, beforeEach, expect } from 'vitest';
import { type Harness, createHarness } from '../harness/index.js';
import { type LinkWorld, type linkPausedBeforeJoin, makeLinkWorld } from './link-fixture.js';

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

/** The files of the world's VM namespaces in the host's /run/netns (mounted or not). */
export const vmNamespaceFiles = (world: LinkWorld): string[] => readdirSync('/run/netns').filter((name) => name.startsWith(world.netnsPrefix));

/**
 * Each test of the enclosing describe block starts with no link of appvm-lynx up (unlink takes the
 * far ends with the host ends) and none of the world's VM namespaces, so that a run has them to add.
 */
export function eachWithoutVmNamespaces(world: () => LinkWorld): void {
  beforeEach(async () => {
    await world().link(['unlink', 'appvm-lynx', '--forget']);
    for (const name of vmNamespaceFiles(world())) await world().host.exec(['ip', 'netns', 'delete', name], { enter: 'nsenter', allowFailure: true });
    expect(vmNamespaceFiles(world())).toEqual([]);
  });
}

/**
 * Do `meanwhile` while a run made by linkPausedBeforeJoin waits at its port's join, then let it
 * on and wait for it to exit with `code`. A run that ended before reading the FIFO is killed (it
 * would wait on it for ever).
 */
export async function resumePausedLink(world: LinkWorld, paused: Pick<Awaited<ReturnType<typeof linkPausedBeforeJoin>>, 'fifo' | 'run'>, code: number, meanwhile: () => Promise<void>): Promise<void> {
  const { fifo, run } = paused;
  try {
    await meanwhile();
    const read = await world.host.exec(['cat', fifo], { enter: 'nsenter', timeoutMs: 30_000 });
    expect(read.stdout).toBe('1');
    const exit = await run.wait();
    expect(exit.code, run.stderr).toBe(code);
  } finally {
    if (run.exit === undefined) await run.kill('SIGKILL');
    await run.waitClosed();
  }
}
