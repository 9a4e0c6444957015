import { FerryError } from '../errors.js';

/**
 * The tar format as bytes, shared by every reader and writer: header fields, checksums, octal
 * and GNU base-256 numbers, PAX records (values kept as raw bytes: xattr values are binary), GNU
 * long names, entry types, and the one header encoder. Policy (which entry types a consumer
 * accepts, its path rules, its errors) stays with the consumer.
 */

export const BLOCK = 512;
/** Two zero blocks end an archive. */
export const TAR_END: Buffer = Buffer.alloc(2 * BLOCK);

export type TarEntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo' | 'other';

export interface TarTime {
  sec: number;
  nsec: number;
}

/** What is wrong with an archive, in classes a consumer can map to its own errors. */
export type TarProblemKind =
  | 'truncated' // the archive ends inside a header, extended header or body
  | 'checksum' // a header's checksum does not match (or is not a number): corrupt, or not a tar
  | 'field' // a header field is not a number, out of range or negative
  | 'pax' // a PAX record or value is malformed
  | 'limit' // an extended header (or a body read whole) is larger than allowed
  | 'no-end' // the stream ends without the end-of-archive marker (strict end only)
  | 'trailing'; // data other than zeros after the end-of-archive marker (strict end only)

/** Thrown by the decoding functions here; a reader turns it into its consumer's error. */
export class TarFormatError extends Error {
  readonly kind: TarProblemKind;
  readonly why: string;

  constructor(kind: TarProblemKind, why: string) {
    super(why);
    this.name = 'TarFormatError';
    this.kind = kind;
    this.why = why;
  }
}

/** Zero bytes needed after `size` bytes to reach a block boundary. */
export function paddingSize(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/** The zero bytes that pad an entry of `size` bytes to the next block. */
export function padding(size: number): Buffer {
  return Buffer.alloc(paddingSize(size));
}

const ZEROS = Buffer.alloc(64 * 1024);

/** Are all bytes zero? (memcmp against zeros, no per-byte loop in JS) */
export function isAllZero(data: Buffer): boolean {
  if (data.length > 0 && data[0] !== 0) return false; // every real header starts with its name
  for (let at = 0; at < data.length; at += ZEROS.length) {
    const end = Math.min(data.length, at + ZEROS.length);
    if (data.compare(ZEROS, 0, end - at, at, end) !== 0) return false;
  }
  return true;
}

/** The typeflag of a header block ('0' for an old NUL typeflag). */
export function typeflagOf(block: Buffer): string {
  const flag = block[156]!;
  return flag === 0 ? '0' : String.fromCharCode(flag);
}

export function entryTypeOf(typeflag: string): TarEntryType {
  switch (typeflag) {
    case '0':
    case '7':
      return 'file';
    case '1':
      return 'hardlink';
    case '2':
      return 'symlink';
    case '3':
      return 'char';
    case '4':
      return 'block';
    case '5':
      return 'dir';
    case '6':
      return 'fifo';
    default:
      return 'other';
  }
}

/** A NUL-terminated field's bytes, copied (so an entry does not keep the stream's chunk alive). */
export function readBytes(block: Buffer, offset: number, length: number): Buffer {
  const end = Math.min(block.length, offset + length);
  let nul = block.indexOf(0, offset);
  if (nul === -1 || nul > end) nul = end;
  const out = Buffer.allocUnsafe(nul - offset);
  block.copy(out, 0, offset, nul);
  return out;
}

/** An octal or base-256 (GNU: high bit set, big-endian two's complement) number field. */
export function readNumber(block: Buffer, offset: number, length: number, name: string): number {
  const first = block[offset]!;
  if (first & 0x80) return readBase256(block, offset, length, name);
  // Fast path, the form every writer uses: spaces, octal digits, then spaces up to a NUL or the end.
  let i = offset;
  const end = offset + length;
  while (i < end && block[i] === 0x20) i++;
  let value = 0;
  for (; i < end; i++) {
    const byte = block[i]!;
    if (byte < 0x30 || byte > 0x37) break;
    value = value * 8 + (byte - 0x30);
  }
  while (i < end && block[i] === 0x20) i++;
  if (i === end || block[i] === 0) return value;
  return readOctalText(block, offset, length, name);
}

function readBase256(block: Buffer, offset: number, length: number, name: string): number {
  // 0x80 marks a positive number, 0xff a negative one.
  const first = block[offset]!;
  const negative = first === 0xff;
  let value = 0n;
  for (let i = 0; i < length; i++) {
    const byte = i === 0 ? (negative ? 0xff : first & 0x7f) : block[offset + i]!;
    value = (value << 8n) | BigInt(byte);
  }
  if (negative) value -= 1n << BigInt(8 * length);
  if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
    throw new TarFormatError('field', `${name} of an entry is out of range`);
  }
  return Number(value);
}

/** Any other octal text (other whitespace, or not a number at all): as text, up to its NUL. */
function readOctalText(block: Buffer, offset: number, length: number, name: string): number {
  const text = block.toString('latin1', offset, offset + length).replace(/\0.*$/s, '').trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new TarFormatError(name === 'checksum' ? 'checksum' : 'field', `${name} field "${text}" is not an octal number`);
  const value = Number.parseInt(text, 8);
  if (!Number.isSafeInteger(value)) throw new TarFormatError('field', `${name} of an entry is out of range`);
  return value;
}

/** Sum of a header's bytes with the checksum field counted as spaces: unsigned, and signed as old tools did. */
function checksums(block: Buffer): { unsigned: number; signed: number } {
  let sum = 0;
  let high = 0;
  for (let i = 0; i < BLOCK; i++) {
    const byte = block[i]!;
    sum += byte;
    if (byte & 0x80) high++;
  }
  for (let i = 148; i < 156; i++) {
    const byte = block[i]!;
    sum += 0x20 - byte;
    if (byte & 0x80) high--;
  }
  return { unsigned: sum, signed: sum - 256 * high };
}

/** Does the header's stored checksum match? Either sum is accepted, as GNU tar does. */
export function checksumMatches(block: Buffer): boolean {
  const stored = readNumber(block, 148, 8, 'checksum');
  const { unsigned, signed } = checksums(block);
  return stored === unsigned || stored === signed;
}

/** The header fields of one entry block (before PAX and GNU long-name overrides). */
export interface HeaderFields {
  name: Buffer;
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname: Buffer;
  devmajor: number;
  devminor: number;
}

/** Decode an entry's header block (checksum already checked). Device numbers only for devices. */
export function decodeHeader(block: Buffer): HeaderFields {
  const typeflag = typeflagOf(block);
  let name = readBytes(block, 0, 100);
  // Only POSIX ustar has a prefix field; GNU ("ustar  ") uses those bytes for other things.
  if (block.compare(USTAR_MAGIC, 0, 6, 257, 263) === 0) {
    const prefix = readBytes(block, 345, 155);
    if (prefix.length > 0) name = Buffer.concat([prefix, SLASH, name]);
  }
  const device = typeflag === '3' || typeflag === '4';
  return {
    name,
    typeflag,
    mode: readNumber(block, 100, 8, 'mode') & 0o7777,
    uid: readNumber(block, 108, 8, 'uid'),
    gid: readNumber(block, 116, 8, 'gid'),
    size: readNumber(block, 124, 12, 'size'),
    mtime: readNumber(block, 136, 12, 'mtime'),
    linkname: readBytes(block, 157, 100),
    devmajor: device ? readNumber(block, 329, 8, 'devmajor') : 0,
    devminor: device ? readNumber(block, 337, 8, 'devminor') : 0,
  };
}

const SLASH = Buffer.from('/');
const USTAR_MAGIC = Buffer.from('ustar\0', 'latin1');

/** PAX records "LEN KEY=VALUE\n"; values stay raw bytes (xattr values are binary). */
export function parsePaxRecords(data: Buffer): Map<string, Buffer> {
  const records = new Map<string, Buffer>();
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // NUL padding after the last record
    const space = data.indexOf(0x20, pos);
    if (space === -1) throw new TarFormatError('pax', 'PAX record without a length');
    const lengthText = data.toString('latin1', pos, space);
    if (!/^\d+$/.test(lengthText)) throw new TarFormatError('pax', `PAX record length "${lengthText}" is not a number`);
    const length = Number(lengthText);
    const end = pos + length;
    if (length <= space - pos + 1 || end > data.length || data[end - 1] !== 0x0a) {
      throw new TarFormatError('pax', 'PAX record length does not match its content');
    }
    const record = data.subarray(space + 1, end - 1);
    const eq = record.indexOf(0x3d);
    if (eq <= 0) throw new TarFormatError('pax', 'PAX record without a key');
    records.set(record.toString('utf8', 0, eq), Buffer.from(record.subarray(eq + 1)));
    pos = end;
  }
  return records;
}

/** A PAX decimal time "sec[.frac]"; may be negative. */
export function parsePaxTime(text: string): TarTime {
  const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(text);
  if (!m) throw new TarFormatError('pax', `bad PAX time "${text}"`);
  const sign = m[1] === '-' ? -1 : 1;
  const sec = Number(m[2]);
  const nsec = Number((m[3] ?? '').slice(0, 9).padEnd(9, '0'));
  if (!Number.isSafeInteger(sec)) throw new TarFormatError('pax', `PAX time "${text}" is out of range`);
  if (sign < 0 && nsec > 0) return { sec: -sec - 1, nsec: 1_000_000_000 - nsec };
  return { sec: sign * sec, nsec };
}

/** A PAX decimal number (size, uid, gid, device numbers). */
export function parsePaxDecimal(text: string, key: string): number {
  if (!/^\d+$/.test(text)) throw new TarFormatError('pax', `bad PAX ${key} "${text}"`);
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new TarFormatError('pax', `PAX ${key} "${text}" is out of range`);
  return value;
}

/** One PAX record: "LEN KEY=VALUE\n", where LEN counts the whole record including itself. */
export function paxRecord(key: string, value: Buffer | string): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  const rest = Buffer.byteLength(key) + bytes.length + 3; // ' ', '=', '\n'
  let length = rest + String(rest).length;
  if (String(length).length !== String(rest).length) length = rest + String(length).length;
  return Buffer.concat([Buffer.from(`${length} ${key}=`), bytes, NEWLINE]);
}

const NEWLINE = Buffer.from('\n');

/** An entry's header, as a writer gives it. */
export interface TarHeader {
  /** Raw bytes, or a string written as UTF-8. */
  name: Buffer | string;
  /** '0' file, '1' hardlink, '2' symlink, '3' char, '4' block, '5' directory, '6' FIFO, 'x' PAX. */
  typeflag: string;
  /** Permission bits and setuid/setgid/sticky (07777). */
  mode: number;
  uid?: number;
  gid?: number;
  size: number;
  /** Seconds since the epoch (before 1970 is written as 0, fractions dropped). */
  mtime: number;
  linkname?: Buffer | string;
  /** Written only when given (some writers give 0 on every entry, others leave the fields empty). */
  devmajor?: number;
  devminor?: number;
  /** Written as PAX SCHILY.xattr.NAME records, in this order. */
  xattrs?: ReadonlyArray<readonly [string, Buffer]>;
}

export interface EncodeOptions {
  /**
   * 'pax' (default): what does not fit ustar (names or links over 100 bytes, large numbers,
   * xattrs) goes in a PAX extended header written before the entry's own block.
   * 'none': exactly one block, so the header can be rewritten in place later; numbers too large
   * for octal are written in GNU base-256, and long names or links and xattrs are refused.
   */
  extensions?: 'pax' | 'none';
}

function unfit(name: Buffer, why: string): FerryError {
  return new FerryError('UNSUPPORTED', `tar entry "${name.toString('utf8')}": ${why}`);
}

function writeOctal(block: Buffer, offset: number, length: number, value: number): void {
  block.write(value.toString(8).padStart(length - 1, '0'), offset, length - 1, 'latin1');
  block[offset + length - 1] = 0;
}

function writeBase256(block: Buffer, offset: number, length: number, value: number): void {
  let v = BigInt(value);
  for (let i = offset + length - 1; i > offset; i--) {
    block[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  block[offset] = 0x80 | Number(v & 0x7fn);
}

/**
 * The header block(s) of one entry: its ustar block, preceded by a PAX header when a field does
 * not fit (see EncodeOptions). Deterministic: no uname/gname, no atime/ctime, a fixed PAX name.
 */
export function encodeTarHeader(header: TarHeader, options: EncodeOptions = {}): Buffer {
  const pax = (options.extensions ?? 'pax') === 'pax';
  const name = typeof header.name === 'string' ? Buffer.from(header.name, 'utf8') : header.name;
  const records: Buffer[] = [];
  const block = Buffer.alloc(BLOCK);
  const number = (key: string, offset: number, length: number, value: number): void => {
    if (!Number.isSafeInteger(value) || value < 0) throw unfit(name, `invalid ${key} ${value}`);
    if (value < 8 ** (length - 1)) writeOctal(block, offset, length, value);
    else if (pax) {
      // Overflowing fields hold 0; readers take the PAX record.
      writeOctal(block, offset, length, 0);
      records.push(paxRecord(key, String(value)));
    } else writeBase256(block, offset, length, value);
  };
  if (name.length > 100) {
    if (!pax) throw unfit(name, 'the name is longer than 100 bytes');
    records.push(paxRecord('path', name));
  }
  name.copy(block, 0, 0, Math.min(100, name.length));
  writeOctal(block, 100, 8, header.mode & 0o7777);
  number('uid', 108, 8, header.uid ?? 0);
  number('gid', 116, 8, header.gid ?? 0);
  number('size', 124, 12, header.size);
  number('mtime', 136, 12, Math.max(0, Math.floor(header.mtime)));
  block.write(header.typeflag, 156, 1, 'latin1');
  if (header.linkname !== undefined) {
    const link = typeof header.linkname === 'string' ? Buffer.from(header.linkname, 'utf8') : header.linkname;
    if (link.length > 100) {
      if (!pax) throw unfit(name, 'the link target is longer than 100 bytes');
      records.push(paxRecord('linkpath', link));
    }
    link.copy(block, 157, 0, Math.min(100, link.length));
  }
  block.write('ustar\u000000', 257, 8, 'latin1');
  if (header.devmajor !== undefined) number('SCHILY.devmajor', 329, 8, header.devmajor);
  if (header.devminor !== undefined) number('SCHILY.devminor', 337, 8, header.devminor);
  if (header.xattrs !== undefined && header.xattrs.length > 0) {
    if (!pax) throw unfit(name, 'xattrs need a PAX header');
    for (const [key, value] of header.xattrs) records.push(paxRecord(`SCHILY.xattr.${key}`, value));
  }
  const { unsigned } = checksums(block);
  block.write(`${unsigned.toString(8).padStart(6, '0')}\u0000 `, 148, 8, 'latin1');
  if (records.length === 0) return block;
  const body = Buffer.concat(records);
  const base = name.subarray(name.lastIndexOf(0x2f) + 1).subarray(0, 80);
  // The PAX header is written in the entry's own style (device fields or not).
  const dev = header.devmajor !== undefined ? 0 : undefined;
  const paxHeader = encodeTarHeader({
    name: Buffer.concat([PAX_PREFIX, base]),
    typeflag: 'x',
    mode: 0o644,
    size: body.length,
    mtime: 0,
    ...(dev === undefined ? {} : { devmajor: dev, devminor: dev }),
  });
  return Buffer.concat([paxHeader, body, padding(body.length), block]);
}

const PAX_PREFIX = Buffer.from('PaxHeaders/');
