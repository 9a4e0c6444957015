/** Decoding of the bundle reader's headers (to be replaced by io/tar-reader). */

export const BLOCK = 512;

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
