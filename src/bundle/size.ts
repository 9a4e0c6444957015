import { UsageError } from '../errors.js';

/**
 * FAT32 holds files of at most 4 GiB - 1 byte: the `fat32` volume size preset, so every volume
 * fits on the USB sticks people actually carry.
 */
export const FAT32_MAX_FILE = 4 * 1024 ** 3 - 1;
/** Smaller volumes would only make thousands of files. */
export const MIN_VOLUME_SIZE = 1024 * 1024;

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
  kb: 1000,
  mb: 1000 ** 2,
  gb: 1000 ** 3,
  tb: 1000 ** 4,
};

/**
 * Parse a size as `split -b` does: `700M`, `4G`, `16MiB` are binary (powers of 1024), `4GB` is
 * decimal, a plain number is bytes; `fat32` is just under 4 GiB.
 */
export function parseSize(text: string): number {
  const t = text.trim().toLowerCase();
  if (t === 'fat32') return FAT32_MAX_FILE;
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/.exec(t);
  const unit = m ? UNITS[m[2]!] : undefined;
  if (!m || unit === undefined) {
    throw new UsageError(`invalid size "${text}": expected a number with an optional unit, e.g. 4G, 700M, 16MiB, 4GB or fat32`);
  }
  const bytes = Math.floor(Number.parseFloat(m[1]!) * unit);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new UsageError(`invalid size "${text}": must be a positive number of bytes`);
  return bytes;
}

/** `121.4 MB`-style text (decimal units, as the README's figures). */
export function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 'B';
  for (const u of units) {
    if (value < 1000) break;
    value /= 1000;
    unit = u;
  }
  return `${value >= 100 ? value.toFixed(0) : value.toFixed(1)} ${unit}`;
}

/** `128 MiB`-style text for memory. */
export function formatMemory(bytes: number): string {
  const mib = bytes / 1024 ** 2;
  return mib >= 1024 ? `${(mib / 1024).toFixed(1)} GiB` : `${Math.ceil(mib)} MiB`;
}
