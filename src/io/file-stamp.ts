import type { BigIntStats } from 'node:fs';

/**
 * What changes whenever a file does, without reading it: device and inode (a file replaced by a
 * rename), size, and the modification and change times to the nanosecond (an edit in place; the
 * change time moves even when someone sets the modification time back). For caches of what was
 * parsed from a file that one command reads many times.
 */
export function fileStamp(st: BigIntStats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}
