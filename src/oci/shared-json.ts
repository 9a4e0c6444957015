/**
 * JSON.parse for the documents that describe images (manifests, configs, a bundle's header),
 * whose string values repeat across documents: every digest appears in a header, a manifest and
 * a config, every layer names the same media type. JSON.parse makes a new string for each, about
 * 80 bytes a digest, so a bundle of 1600 images held 36,000 digest strings where 6,000 differ.
 * Here a short value is replaced by the copy already seen; the parser's own copy dies young.
 */

/** Strings kept at most: a bound for long-running processes (serve, supervise), cleared when reached. */
const MAX_SHARED = 1 << 16;
/** Longer values (a script in a config's Cmd, a label's text) rarely repeat. */
const MAX_SHARED_LENGTH = 160;

const shared = new Map<string, string>();

function share(_key: string, value: unknown): unknown {
  if (typeof value !== 'string' || value.length > MAX_SHARED_LENGTH) return value;
  const seen = shared.get(value);
  if (seen !== undefined) return seen;
  if (shared.size >= MAX_SHARED) shared.clear();
  shared.set(value, value);
  return value;
}

/** JSON.parse, each short string value the one copy seen before (throws as JSON.parse does). */
export function parseSharedJson(text: string): unknown {
  return JSON.parse(text, share);
}
