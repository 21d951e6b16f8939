// The README places spectrum-link's lines name for what they leave out ("(README: Device prefix)")
// are there to find: a heading, a bold term of a list, or a row of a table ("the --attach table, netns").
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..');

/** Every `README: <place>` that a source file of `dir` says in a line (not a comment's prose). */
async function placesNamed(dir: string): Promise<{ file: string; place: string }[]> {
  const found: { file: string; place: string }[] = [];
  for (const entry of await readdir(join(ROOT, dir), { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !entry.name.endsWith('.ts')) continue;
    const file = join(entry.parentPath, entry.name);
    for (const line of (await readFile(file, 'utf8')).split('\n')) {
      if (/^\s*(\/\/|\*|\/\*)/.test(line)) continue;
      for (const match of line.matchAll(/README: ([^)'"`]+)/g)) found.push({ file, place: match[1] ?? '' });
    }
  }
  return found;
}

/** Whether `readme` has `place`: a heading, a bold list term, or `the <header> table, <row>`. */
function hasPlace(readme: string, place: string): boolean {
  const lines = readme.split('\n');
  if (lines.some((line) => /^#+ /.test(line) && line.replace(/^#+ /, '') === place)) return true;
  if (lines.some((line) => line.startsWith(`- **${place}**`))) return true;
  const table = /^the (\S+) table, (\S+)$/.exec(place);
  if (table === null) return false;
  const header = lines.findIndex((line) => line.startsWith(`| \`${table[1]}\` |`));
  if (header < 0) return false;
  const rows = lines.slice(header + 2);
  const end = rows.findIndex((line) => !line.startsWith('|'));
  return rows.slice(0, end < 0 ? undefined : end).some((line) => line.startsWith(`| \`${table[2]}\``));
}

it("every README place spectrum-link's lines name is in the README", async () => {
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
  const named = [...(await placesNamed('host')), ...(await placesNamed('shared'))];
  expect(named.length).toBeGreaterThan(5);
  expect(named.filter(({ place }) => !hasPlace(readme, place))).toEqual([]);
});
