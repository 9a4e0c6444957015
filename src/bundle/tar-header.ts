import { FerryError } from '../errors.js';

/**
 * Minimal, deterministic tar writing: ustar headers with fixed fields (uid/gid 0, empty
 * uname/gname, one mtime), and a PAX extended header only when a name or size does not fit.
 * Bundles hold only regular files and directories, so that is all this writes.
 */

export const BLOCK = 512;
/** The largest size the 11-digit octal ustar field holds; larger entries get a PAX `size` record. */
const USTAR_MAX_SIZE = 0o77777777777;

export interface TarEntryHeader {
  name: string;
  type: 'file' | 'directory';
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
}

function writeString(block: Buffer, offset: number, length: number, value: string): void {
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length > length) throw new Error(`tar field too long: ${value}`);
  bytes.copy(block, offset);
}

function writeOctal(block: Buffer, offset: number, length: number, value: number): void {
  // length-1 digits then NUL, as GNU tar and node-tar write them
  writeString(block, offset, length, `${value.toString(8).padStart(length - 1, '0')}\0`);
}

function ustarBlock(name: string, typeflag: string, size: number, mtime: number, mode: number): Buffer {
  const block = Buffer.alloc(BLOCK);
  writeString(block, 0, 100, name);
  writeOctal(block, 100, 8, mode);
  writeOctal(block, 108, 8, 0);
  writeOctal(block, 116, 8, 0);
  writeOctal(block, 124, 12, size);
  writeOctal(block, 136, 12, mtime);
  block.fill(0x20, 148, 156); // checksum is computed with its own field as spaces
  writeString(block, 156, 1, typeflag);
  writeString(block, 257, 6, 'ustar\0');
  writeString(block, 263, 2, '00');
  let sum = 0;
  for (const byte of block) sum += byte;
  writeString(block, 148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  return block;
}

/** One PAX record: "<len> <key>=<value>\n", where len counts the whole record including itself. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body) + 1;
  while (String(len).length + Buffer.byteLength(body) !== len) len = String(len).length + Buffer.byteLength(body);
  return `${len}${body}`;
}

/** Zero bytes that pad an entry of `size` bytes to the next 512-byte block. */
export function padding(size: number): Buffer {
  const rest = size % BLOCK;
  return Buffer.alloc(rest === 0 ? 0 : BLOCK - rest);
}

/** The header block(s) of one entry: a PAX header first when the name or size needs one. */
export function encodeTarHeader(entry: TarEntryHeader): Buffer {
  if (!Number.isSafeInteger(entry.size) || entry.size < 0) {
    throw new FerryError('BUNDLE_INVALID', `tar entry ${entry.name}: invalid size ${entry.size}`);
  }
  const mode = entry.type === 'directory' ? 0o755 : 0o644;
  const typeflag = entry.type === 'directory' ? '5' : '0';
  const mtime = Math.max(0, Math.floor(entry.mtime));
  const records: string[] = [];
  let name = entry.name;
  if (Buffer.byteLength(name) > 100) {
    records.push(paxRecord('path', name));
    name = name.slice(0, 99).replace(/[^\x20-\x7e]/g, '_');
  }
  let size = entry.size;
  if (size > USTAR_MAX_SIZE) {
    records.push(paxRecord('size', String(size)));
    size = 0;
  }
  const main = ustarBlock(name, typeflag, size, mtime, mode);
  if (records.length === 0) return main;
  const pax = Buffer.from(records.join(''), 'utf8');
  return Buffer.concat([ustarBlock('PaxHeader', 'x', pax.length, mtime, 0o644), pax, padding(pax.length), main]);
}

/** Two zero blocks end a tar archive. */
export const TAR_END = Buffer.alloc(2 * BLOCK);

export interface ParsedTarHeader {
  name: string;
  /** ustar typeflag: '0' file, '5' directory, 'x' PAX, 'g' global PAX, 'L' GNU long name, ... */
  typeflag: string;
  size: number;
}

function readString(block: Buffer, offset: number, length: number): string {
  const field = block.subarray(offset, offset + length);
  const nul = field.indexOf(0);
  return field.subarray(0, nul === -1 ? length : nul).toString('utf8');
}

function readNumber(block: Buffer, offset: number, length: number): number {
  const field = block.subarray(offset, offset + length);
  if ((field[0]! & 0x80) !== 0) {
    // GNU base-256 for sizes over 8 GiB
    let value = 0;
    for (let i = 1; i < field.length; i++) value = value * 256 + field[i]!;
    return value;
  }
  const text = readString(block, offset, length).trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) return Number.NaN;
  return Number.parseInt(text, 8);
}

/** Is this block all zeros (the end-of-archive marker)? */
export function isZeroBlock(block: Buffer): boolean {
  for (const byte of block) if (byte !== 0) return false;
  return true;
}

/** Parse a header block; undefined when the checksum does not match (not a tar header). */
export function decodeTarHeader(block: Buffer): ParsedTarHeader | undefined {
  const stored = readNumber(block, 148, 8);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
  if (stored !== sum) return undefined;
  let name = readString(block, 0, 100);
  const magic = readString(block, 257, 6);
  if (magic.startsWith('ustar')) {
    const prefix = readString(block, 345, 155);
    if (prefix !== '') name = `${prefix}/${name}`;
  }
  const size = readNumber(block, 124, 12);
  if (!Number.isSafeInteger(size) || size < 0) return undefined;
  return { name, typeflag: readString(block, 156, 1) || '0', size };
}

/** Parse PAX records ("<len> key=value\n"...) into a map. */
export function parsePaxRecords(data: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let pos = 0;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    if (space === -1) break;
    const len = Number.parseInt(data.subarray(pos, space).toString('ascii'), 10);
    if (!Number.isSafeInteger(len) || len <= 0 || pos + len > data.length) break;
    const record = data.subarray(space + 1, pos + len - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (eq > 0) out.set(record.slice(0, eq), record.slice(eq + 1));
    pos += len;
  }
  return out;
}
