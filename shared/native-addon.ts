// Loading the project's native addons (node-gyp builds them into build/Release at the package
// root) from any module of the package: its sources, their compiled copies in dist, or a bundle.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The addon `file` (e.g. rtnl.node), looked for upwards from the module at `fromUrl`; undefined if not built. */
export function loadNativeAddon<T>(fromUrl: string, file: string): T | undefined {
  let dir = dirname(fileURLToPath(fromUrl));
  for (let level = 0; level < 5; level++) {
    const candidate = join(dir, 'build', 'Release', file);
    if (existsSync(candidate)) return createRequire(fromUrl)(candidate) as T;
    dir = dirname(dir);
  }
  return undefined;
}
