// Pure: the keys that an object of a JSON text holds more than once. JSON.parse keeps the last of
// them without a word, so a state file such as {"version":2,"version":1,...} would be read as
// another than it says (and its problems said of that one: `unknown key "devicePrefix"`, of a
// version 1 file), and {"links":[...],"links":[]} as one recording nothing.

/** A key an object holds more than once: where that object is (`links[3]`; '' for the top), and the key. */
export interface DuplicateKey {
  readonly at: string;
  readonly key: string;
}

/** An object or array open where the scan is, with where it is (worked out only for a duplicate: `at`). */
type Frame =
  | { readonly type: 'object'; readonly parent: Frame | undefined; readonly keys: Set<string>; expectKey: boolean; key: string; readonly slot: string | number | undefined }
  | { readonly type: 'array'; readonly parent: Frame | undefined; index: number; readonly slot: string | number | undefined };

/** Where the value that `parent` holds now is: its key, or its index (none at the top). */
function slotIn(parent: Frame | undefined): string | number | undefined {
  if (parent === undefined) return undefined;
  return parent.type === 'array' ? parent.index : parent.key;
}

/** Where a frame is, in words: `links[3]`, `a.b`, `a["x y"]`; '' for the top. */
function at(frame: Frame | undefined): string {
  if (frame?.parent === undefined) return '';
  const above = at(frame.parent);
  const { slot } = frame;
  if (typeof slot === 'number') return `${above}[${slot}]`;
  if (slot === undefined || !/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(slot)) return `${above}[${JSON.stringify(slot ?? '')}]`;
  return above === '' ? slot : `${above}.${slot}`;
}

/**
 * The duplicate keys of `text`, JSON that JSON.parse took (else what it finds is unspecified), in
 * the order met: at most `max`, and how many there are in all. One pass over the text.
 */
export function duplicateKeys(text: string, max: number): { readonly shown: DuplicateKey[]; readonly count: number } {
  const shown: DuplicateKey[] = [];
  let count = 0;
  let top: Frame | undefined;
  const { length } = text;
  for (let i = 0; i < length; i += 1) {
    const char = text.charCodeAt(i);
    if (char === 0x22 /* " */) {
      // Its closing quote: the next one after an even number of backslashes.
      let end = text.indexOf('"', i + 1);
      let escaped = false;
      while (end > 0 && text.charCodeAt(end - 1) === 0x5c /* \ */) {
        escaped = true;
        let before = end - 1;
        while (text.charCodeAt(before - 1) === 0x5c) before -= 1;
        if ((end - before) % 2 === 0) break;
        end = text.indexOf('"', end + 1);
      }
      if (end < 0) break;
      if (top?.type === 'object' && top.expectKey) {
        const key = escaped ? (JSON.parse(text.slice(i, end + 1)) as string) : text.slice(i + 1, end);
        if (top.keys.has(key)) {
          count += 1;
          if (shown.length < max) shown.push({ at: at(top), key });
        } else top.keys.add(key);
        top.key = key;
        top.expectKey = false;
      }
      i = end;
    } else if (char === 0x7b /* { */) {
      top = { type: 'object', parent: top, keys: new Set(), expectKey: true, key: '', slot: slotIn(top) };
    } else if (char === 0x5b /* [ */) {
      top = { type: 'array', parent: top, index: 0, slot: slotIn(top) };
    } else if (char === 0x7d /* } */ || char === 0x5d /* ] */) {
      top = top?.parent;
    } else if (char === 0x2c /* , */ && top !== undefined) {
      if (top.type === 'object') top.expectKey = true;
      else top.index += 1;
    }
  }
  return { shown, count };
}
