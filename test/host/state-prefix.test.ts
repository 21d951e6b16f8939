// The netns prefix a `link` given none took from the state (read before the lock), as the state read
// under the lock still records it or not (README: Netns prefix): no file read here needs a namespace.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { devicePrefix } from '../../host/device-names.js';
import { loadLinkRunState } from '../../host/state-prefix.js';

let dir = '';
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'spectrum-state-prefix-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** loadLinkRunState of a run that took netns prefix "vm-" from the state as it began (otherwise ""). */
const runTakingRecorded = () =>
  loadLinkRunState({ stateDir: dir, devicePrefix: devicePrefix('sn'), netnsPrefix: 'vm-', netnsPrefixSource: { from: 'state', otherwise: '' } });

it('a netns link that unlink took down keeps the netns prefix recorded: a run that took it is not refused as if no longer recorded', async () => {
  await writeFile(
    join(dir, 'links.json'),
    '{"version":3,"devicePrefix":"sn","netnsPrefix":"vm-","links":[{"client":"appvm-lynx","provider":"netvm","id":7,"unlinked":{"client":"netns","provider":"netns"}}]}\n',
  );
  expect((await runTakingRecorded()).netnsRefusal).toBeUndefined();
});

it('with no link up in netns mode nor taken down in it (its links forgotten), the run that took it is refused: no longer recorded', async () => {
  await writeFile(join(dir, 'links.json'), '{"version":2,"devicePrefix":"sn","netnsPrefix":"vm-","links":[]}\n');
  expect((await runTakingRecorded()).netnsRefusal?.message).toEqual(expect.stringMatching(/^netns prefix "vm-" \(recorded when this run began\) is no longer recorded in state file .*: nothing done; run this again, which uses ""/));
});
