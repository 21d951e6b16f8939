// An rtnl addon built from other sources than the code (a partial build: its program format
// another, or none) as RtnlSocket and netd's kernel meet it: refused on one line saying to build,
// before any socket is opened. The addon's load is replaced for rtnl.node only; nothing here
// reaches a kernel.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { RtnetlinkKernel } from '../../../guest/netd/rtnetlink.js';
import { PROGRAM_FORMAT, RtnlSocket } from '../../../shared/rtnl-socket.js';

/** What loadNativeAddon gives for rtnl.node: an addon whose runner reads this format (undefined: none said). */
const given = vi.hoisted(() => ({ format: undefined as number | undefined }));

vi.mock('../../../shared/native-addon.js', async (importOriginal) => {
  const original = await importOriginal<typeof import('../../../shared/native-addon.js')>();
  return {
    loadNativeAddon: <T>(fromUrl: string, file: string): T | undefined =>
      file === 'rtnl.node' ? ((given.format === undefined ? {} : { programFormat: given.format }) as T) : original.loadNativeAddon<T>(fromUrl, file),
  };
});

const staleLine = (its: string): string =>
  `the rtnl addon (build/Release/rtnl.node) was built from other sources than this code (it reads ${its}, this code writes format ${PROGRAM_FORMAT}): run npm run build`;

describe('an rtnl addon of another program format', () => {
  afterEach(() => {
    given.format = undefined;
  });

  it.each([
    ['none said (built before there was one)', undefined, 'an older format'],
    ['another', PROGRAM_FORMAT - 1, `format ${PROGRAM_FORMAT - 1}`],
  ] as const)('%s: RtnlSocket refuses it as addon-stale, opening nothing', (_how, format, its) => {
    given.format = format;
    expect(() => RtnlSocket.open(null)).toThrow(expect.objectContaining({ name: 'RtnlError', kind: 'addon-stale', message: staleLine(its) }));
  });

  it("netd's kernel says that line as it is (as for a missing addon), not that this may not be Linux", () => {
    given.format = PROGRAM_FORMAT + 1;
    expect(() => new RtnetlinkKernel()).toThrow(expect.objectContaining({ name: 'NetdError', kind: 'netlink', message: staleLine(`format ${PROGRAM_FORMAT + 1}`) }));
  });
});
