// Whether the build (npm run build) is up to date, for scripts/setup, which otherwise rebuilt
// everything (tsc, node-gyp, the bundle) at every run, costing more than the demo. Exact, or a
// rebuild: the stamp (dist/.setup-build-stamp) records a digest of everything the build could
// read, taken before setup's last build, and one of what that build left (dist/, build/); the
// build is skipped only where both are still the same.
//   node scripts/build-stamp.mjs inputs          prints the inputs' digest (taken before the build)
//   node scripts/build-stamp.mjs write DIGEST    records it with the outputs' digest (after the build)
//   node scripts/build-stamp.mjs check           exit 0 where the stamp holds, 1 where the build must run;
//                                                prints the inputs' digest either way, for `write`: the
//                                                build writes no input, so setup hashes them once (a
//                                                rebuild hashed every input twice); the outputs are
//                                                hashed after the build, by `write`
// The inputs: every file of the checkout but .git, node_modules, dist, build, .cache and V8's
// logs (sources, configs, the lock, scripts: more than the build reads, never less), each by its
// path, content and mtime (the tests' own check that dist is not older than a source goes by
// mtimes); what npm installed (node_modules/.package-lock.json); Node.js's and npm's (node-gyp's)
// versions; the build packages' versions; the compiler's environment variables. A clean clone has
// no dist, so no stamp: it always builds.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, lstatSync, openSync, readFileSync, readSync, readdirSync, readlinkSync, realpathSync, statSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const STAMP = 'dist/.setup-build-stamp';
const NOT_INPUTS = new Set(['.git', 'node_modules', 'dist', 'build', '.cache']);
const BUILD_PACKAGES = ['libnftables-dev', 'libnetfilter-conntrack-dev', 'g++', 'make', 'python3'];
const BUILD_ENVIRONMENT = ['CC', 'CXX', 'CFLAGS', 'CXXFLAGS', 'CPPFLAGS', 'LDFLAGS', 'NODE_OPTIONS'];

/**
 * Each file under `dir` (relative to the root), with its mode, mtime and content, into `hash`: a
 * symlink by its target and what it leads to (a folder it leads to walked too, once: `seen`).
 */
function hashTree(hash, dir, skip, seen = new Set([realpathSync(join(root, dir))])) {
  const entries = readdirSync(join(root, dir), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const entry of entries) {
    const path = dir === '' ? entry.name : `${dir}/${entry.name}`;
    if (skip(path, entry.name)) continue;
    const full = join(root, path);
    if (lstatSync(full).isSymbolicLink()) hash.update(`link ${path} ${readlinkSync(full)}\0`);
    let stat;
    try {
      stat = statSync(full, { bigint: true });
    } catch {
      hash.update(`dangling ${path}\0`);
      continue;
    }
    if (stat.isDirectory()) {
      const real = realpathSync(full);
      hash.update(`dir ${path}\0`);
      if (seen.has(real)) continue;
      seen.add(real);
      hashTree(hash, path, skip, seen);
    } else {
      hash.update(`file ${path} ${stat.mode} ${stat.size} ${stat.mtimeNs}\0`);
      if (stat.isFile()) hashFile(hash, full);
      hash.update('\0');
    }
  }
}

/** A file's content into `hash`, a chunk at a time: readFileSync refuses a file over 2 GiB. */
function hashFile(hash, full) {
  let fd;
  try {
    fd = openSync(full, 'r');
    const chunk = Buffer.alloc(1 << 20);
    for (let read; (read = readSync(fd, chunk, 0, chunk.length, null)) > 0; ) hash.update(chunk.subarray(0, read));
  } catch (error) {
    // readSync's error names no file.
    throw new Error(`cannot read ${full} (${error?.code ?? error?.message ?? error}) to hash it`);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** npm's own package.json (its version decides the node-gyp npm run uses), from the npm on PATH. */
function npmVersion() {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const npm = join(dir, 'npm');
    if (!existsSync(npm)) continue;
    for (let at = dirname(realpathSync(npm)); at !== dirname(at); at = dirname(at)) {
      const manifest = join(at, 'package.json');
      if (!existsSync(manifest)) continue;
      const parsed = JSON.parse(readFileSync(manifest, 'utf8'));
      if (parsed.name === 'npm') return `npm ${parsed.version}`;
    }
    return `npm at ${realpathSync(npm)}`;
  }
  return 'no npm';
}

function packageVersions() {
  try {
    return execFileSync('dpkg-query', ['-W', '-f=${Package} ${Version}\\n', ...BUILD_PACKAGES], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch (error) {
    return `dpkg-query: ${String(error?.stdout ?? error)}`;
  }
}

function inputsDigest() {
  const hash = createHash('sha256');
  hashTree(hash, '', (path, name) => NOT_INPUTS.has(path) || /^isolate-.*-v8\.log$/.test(name));
  const installed = join(root, 'node_modules', '.package-lock.json');
  hash.update(`installed ${existsSync(installed) ? readFileSync(installed, 'utf8') : 'none'}\0`);
  hash.update(`node ${process.version} ${process.versions.modules} ${process.arch} ${process.execPath}\0`);
  hash.update(`${npmVersion()}\0${packageVersions()}\0`);
  for (const name of BUILD_ENVIRONMENT) hash.update(`env ${name}=${process.env[name] ?? '(unset)'}\0`);
  return hash.digest('hex');
}

function outputsDigest() {
  const hash = createHash('sha256');
  for (const dir of ['dist', 'build']) {
    if (!existsSync(join(root, dir))) {
      hash.update(`no ${dir}\0`);
      continue;
    }
    hash.update(`dir ${dir}\0`);
    hashTree(hash, dir, (path) => path === STAMP);
  }
  return hash.digest('hex');
}

// A file that cannot be hashed (unreadable, EIO) is said in one line naming it, not as Node's
// stack trace, whose read error names no file: setup says its check failed, its error above.
process.on('uncaughtException', (error) => {
  process.stderr.write(`build-stamp: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});

const [mode, digest] = process.argv.slice(2);
if (mode === 'inputs') {
  process.stdout.write(`${inputsDigest()}\n`);
} else if (mode === 'write' && digest !== undefined && /^[0-9a-f]{64}$/.test(digest)) {
  writeFileSync(join(root, STAMP), `${JSON.stringify({ inputs: digest, outputs: outputsDigest() })}\n`);
} else if (mode === 'check') {
  const inputs = inputsDigest();
  process.stdout.write(`${inputs}\n`);
  let stamp;
  try {
    stamp = JSON.parse(readFileSync(join(root, STAMP), 'utf8'));
  } catch {
    process.exit(1);
  }
  process.exit(stamp?.inputs === inputs && stamp?.outputs === outputsDigest() ? 0 : 1);
} else {
  process.stderr.write('usage: node scripts/build-stamp.mjs inputs | write DIGEST | check\n');
  process.exit(2);
}
