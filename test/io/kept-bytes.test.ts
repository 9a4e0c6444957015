import { describe, expect, it } from 'vitest';
import { keptCopy } from '../../src/io/kept-bytes.js';

describe('keptCopy', () => {
  it('copies small documents into slabs of their own, apart from Node’s shared pool', () => {
    const a = keptCopy(Buffer.from('{"schemaVersion":2}'));
    const b = keptCopy(Buffer.from('{"architecture":"amd64"}'));
    // A transient small buffer between them goes to Node's pool, not into the documents' slab.
    const transient = Buffer.from('a chunk of a stream');
    expect(a.toString()).toBe('{"schemaVersion":2}');
    expect(b.toString()).toBe('{"architecture":"amd64"}');
    expect(b.buffer).toBe(a.buffer);
    expect(transient.buffer).not.toBe(a.buffer);
    expect(a.buffer.byteLength).toBe(64 * 1024);
  });

  it('is a copy: changing the source leaves it as it was', () => {
    const source = Buffer.from('{"mediaType":"x"}');
    const copy = keptCopy(source);
    source.fill(0);
    expect(copy.toString()).toBe('{"mediaType":"x"}');
  });

  it('gives a document over an eighth of a slab a buffer of its own, and starts a new slab when one is full', () => {
    const big = keptCopy(Buffer.alloc(8 * 1024 + 1, 1));
    expect(big.length).toBe(8 * 1024 + 1);
    expect(big.buffer.byteLength).toBeLessThan(64 * 1024);
    const first = keptCopy(Buffer.alloc(8 * 1024, 2));
    const slabs = new Set<ArrayBufferLike>([first.buffer]);
    for (let i = 0; i < 8; i++) slabs.add(keptCopy(Buffer.alloc(8 * 1024, 3)).buffer);
    expect(slabs.size).toBe(2);
  });
});
