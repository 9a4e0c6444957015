import { describe, expect, it } from 'vitest';
import { keptBytes } from '../../src/io/kept-bytes.js';

describe('keptBytes', () => {
  it('copies small documents into slabs of their own, apart from Node’s shared pool', () => {
    const a = keptBytes(Buffer.from('{"schemaVersion":2}'));
    const b = keptBytes(Buffer.from('{"architecture":"amd64"}'));
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
    const copy = keptBytes(source);
    source.fill(0);
    expect(copy.toString()).toBe('{"mediaType":"x"}');
  });

  it('keeps a large document that is the whole of its memory as it is, and copies one that is a view of more', () => {
    const whole = Buffer.alloc(16 * 1024, 4);
    expect(keptBytes(whole).buffer).toBe(whole.buffer);
    const view = Buffer.alloc(64 * 1024, 5).subarray(1024, 17 * 1024);
    const kept = keptBytes(view);
    expect(kept.buffer).not.toBe(view.buffer);
    expect(kept.buffer.byteLength).toBe(16 * 1024);
    expect(kept.equals(view)).toBe(true);
  });

  it('gives a document over an eighth of a slab a buffer of its own, and starts a new slab when one is full', () => {
    const big = keptBytes(Buffer.alloc(8 * 1024 + 1, 1));
    expect(big.length).toBe(8 * 1024 + 1);
    expect(big.buffer.byteLength).toBeLessThan(64 * 1024);
    const first = keptBytes(Buffer.alloc(8 * 1024, 2));
    const slabs = new Set<ArrayBufferLike>([first.buffer]);
    for (let i = 0; i < 8; i++) slabs.add(keptBytes(Buffer.alloc(8 * 1024, 3)).buffer);
    expect(slabs.size).toBe(2);
  });
});
