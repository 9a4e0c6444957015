/**
 * Copies of small documents that a copy keeps to its end (every image's manifest and config:
 * thousands in a big bundle), packed into slabs of their own. Node's shared 8 KiB pool would take
 * them too, but among the short-lived buffers of the same moments (stream chunks, strings made
 * bytes), and then each slab of the pool stays alive for the one or two documents in it: 11 MB
 * of slabs held the 1.8 MB of documents of a 1600-image export. Each in an ArrayBuffer of its own,
 * a document costs about a kilobyte more than its bytes.
 */

/** A slab; a document over an eighth of it gets its own buffer, so at most an eighth is wasted per slab. */
const SLAB_BYTES = 64 * 1024;
const LARGEST_PACKED = SLAB_BYTES / 8;

let slab: Buffer | undefined;
let used = 0;

/**
 * `bytes` as a buffer that pins no memory but its own: a small one copied into a slab shared only
 * with other kept documents, a large one copied unless it is already the whole of its memory (a
 * file read whole), which needs no second copy.
 */
export function keptBytes(bytes: Uint8Array): Buffer {
  if (bytes.length > LARGEST_PACKED) {
    const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
    return whole ? Buffer.from(bytes.buffer, 0, bytes.byteLength) : Buffer.from(bytes);
  }
  if (slab === undefined || used + bytes.length > SLAB_BYTES) {
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
    used = 0;
  }
  const copy = slab.subarray(used, used + bytes.length);
  copy.set(bytes);
  used += bytes.length;
  return copy;
}
