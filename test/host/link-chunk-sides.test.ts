// link --all links its VMs in chunks that grow (4, 8, ...), the next chunk looked at while the one
// before it is made: a side device of a link of the run found on the bridge of another of its
// links is left to its own link's steps, whichever chunk either is in, so that the run says (and
// does) the same whatever the timing. The built bin, in a test namespace.
import { expect, it } from 'vitest';
import { describeNetns } from '../harness/index.js';
import { type LinkJson, devices, warningMessages } from './link-fixture.js';
import { linkWorldPerSuite } from './link-world-suite.js';

describeNetns('link --all: side devices of the run swapped between bridges of two chunks', () => {
  // Six app VMs besides the examples' two: more than the first chunk's four.
  const world = linkWorldPerSuite('chunkside', 6);


  const linkAll = async (): Promise<{ links: LinkJson[]; stderr: string; foreignChanged: unknown[] }> => {
    const result = await world().link(['link', '--all', '--attach', 'none', '--json']);
    expect(result.code, result.stderr).toBe(0);
    const lines = result.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { links: LinkJson[]; foreignChanged?: unknown });
    return { links: lines.flatMap((line) => line.links), stderr: result.stderr, foreignChanged: lines.flatMap((line) => (line.foreignChanged === undefined ? [] : [line.foreignChanged])) };
  };

  it("says no move and takes nothing off: each device goes back on its own link's bridge by its own link's steps, every time", async () => {
    const { links } = await linkAll();
    // The first VM linked (the first chunk's) and the last (the last chunk's).
    const first = links[0]!;
    const last = links[links.length - 1]!;
    expect(links.length).toBeGreaterThan(4);
    for (let run = 0; run < 4; run++) {
      await world().host.ip(['link', 'set', 'dev', first.clientDevice, 'master', last.bridge]);
      await world().host.ip(['link', 'set', 'dev', last.clientDevice, 'master', first.bridge]);
      const again = await linkAll();
      expect({ run, warnings: warningMessages(again.stderr), foreignChanged: again.foreignChanged }).toEqual({ run, warnings: [], foreignChanged: [] });
      const host = await devices(world().host);
      expect([host.get(first.clientDevice)?.master, host.get(last.clientDevice)?.master]).toEqual([first.bridge, last.bridge]);
    }
  });
});
