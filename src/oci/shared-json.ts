/**
 * JSON.parse for the documents that describe images (manifests, configs, a bundle's header),
 * whose string values repeat across documents: every digest appears in a header, a manifest and
 * a config, every layer names the same media type. JSON.parse makes a new string for each, about
 * 80 bytes a digest, so a bundle of 1600 images held 36,000 digest strings where 6,000 differ.
 * Here a short value is replaced by the copy already seen in a table of strings.
 *
 * The process's table suits documents that are kept (a source's manifests and configs, held for
 * the whole copy). A document read once and dropped (a bundle's header, whose strings repeat
 * within it, or a manifest parsed again when asked for) gets a table of its own, or `'none'`:
 * in the process's table its strings would outlive it.
 */

/** Strings kept at most: a bound for long-running processes (serve, supervise), cleared when reached. */
const MAX_SHARED = 1 << 16;
/** Longer values (a script in a config's Cmd, a label's text) rarely repeat. */
const MAX_SHARED_LENGTH = 160;

/** Which copy of each short string a parse hands out (see parseSharedJson). */
export type StringTable = Map<string, string>;

const processTable: StringTable = new Map<string, string>();

/** A table for one document, or for a set of documents dropped together. */
export function newStringTable(): StringTable {
  return new Map<string, string>();
}

/** Where strings are shared: the process's table, a table of the caller's, or none (plain JSON.parse). */
export type Sharing = 'process' | 'none' | StringTable;

/** JSON.parse, each short string value the one copy seen before in `sharing`'s table (throws as JSON.parse does). */
export function parseSharedJson(text: string, sharing: Sharing = 'process'): unknown {
  if (sharing === 'none') return JSON.parse(text);
  const table = sharing === 'process' ? processTable : sharing;
  return JSON.parse(text, (_key: string, value: unknown): unknown => {
    if (typeof value !== 'string' || value.length > MAX_SHARED_LENGTH) return value;
    const seen = table.get(value);
    if (seen !== undefined) return seen;
    if (table.size >= MAX_SHARED) table.clear();
    table.set(value, value);
    return value;
  });
}
