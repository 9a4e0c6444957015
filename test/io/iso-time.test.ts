import { describe, expect, it } from 'vitest';
import { isoTime } from '../../src/io/iso-time.js';

describe('isoTime', () => {
  it('writes exactly what Date#toISOString writes, across years, months, days and milliseconds', () => {
    const fixed = [0, 1, 9, 10, 99, 100, 999, Date.UTC(1999, 11, 31, 23, 59, 59, 999), Date.UTC(2000, 1, 29, 0, 0, 0, 5), Date.UTC(9999, 11, 31, 23, 59, 59, 999), Date.parse('0000-01-01T00:00:00.000Z'), Date.parse('0099-12-31T23:59:59.999Z'), -1, Date.now()];
    let seed = 42;
    const random = (): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    // Years 0..9999 (Date.UTC would read 0..99 as 1900..1999).
    const first = Date.parse('0000-01-01T00:00:00.000Z');
    const span = Date.parse('9999-12-31T23:59:59.999Z') - first;
    const times = [...fixed, ...Array.from({ length: 2000 }, () => Math.floor(first + random() * span))];
    for (const t of times) expect(isoTime(new Date(t)), `time ${t}`).toBe(new Date(t).toISOString());
  });

  it('is the present time without an argument', () => {
    const before = Date.now();
    const text = isoTime();
    expect(Date.parse(text)).toBeGreaterThanOrEqual(before);
    expect(Date.parse(text)).toBeLessThanOrEqual(Date.now());
  });

  it('keeps toISOString for years outside 0..9999 and its RangeError for an invalid date', () => {
    expect(isoTime(new Date(Date.UTC(10000, 0, 1)))).toBe('+010000-01-01T00:00:00.000Z');
    expect(isoTime(new Date(Date.UTC(-1, 0, 1)))).toBe('-000001-01-01T00:00:00.000Z');
    expect(() => isoTime(new Date(Number.NaN))).toThrow(RangeError);
  });
});
