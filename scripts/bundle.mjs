// Bundles the spectrum-link bin into one CommonJS file, dist/host/spectrum-link.cjs (run by
// `npm run build`, after tsc). Why: Node start-up is most of a single `link <vm>`. Resolving,
// reading and compiling some thirty ES modules plus commander cost ~40 ms more than one file,
// and an ES module entry point another ~15 ms for Node's ESM loader, which a CommonJS entry
// point does not load. Code reached through dynamic import() (the VMM clients, with node:http
// and node:net) is only evaluated on first use; packages that load lazily or natively (pino,
// pino-pretty, ip-num, netlink, raw-socket) stay outside the bundle.
// The link bench's Node floor (test/bench/node-floor.ts) is bundled the same way, so that the
// two load alike.
import { rmSync } from 'node:fs';
import { build } from 'esbuild';

const root = new URL('..', import.meta.url).pathname;
const bundles = [
  ['host/cli.ts', 'dist/host/spectrum-link.cjs'],
  ['test/bench/node-floor.ts', 'dist/test/bench/node-floor.cjs'],
];
for (const [entry, outfile] of bundles) {
  rmSync(`${root}${outfile}`, { force: true });
  await build({
    absWorkingDir: root,
    entryPoints: [entry],
    outfile,
    bundle: true,
    format: 'cjs',
    platform: 'node',
    target: 'node20',
    sourcemap: true,
    external: ['pino', 'pino-pretty', 'ip-num', 'netlink', 'raw-socket'],
    // The sources are ES modules that find their packages through createRequire(import.meta.url).
    define: { 'import.meta.url': '__bundleUrl' },
    banner: { js: "'use strict';\nconst __bundleUrl = require('node:url').pathToFileURL(__filename).href;" },
    logLevel: 'warning',
  });
}
