import type { Readable } from 'node:stream';
import { FerryError } from '../errors.js';

/**
 * A byte-exact, streaming tar reader for layer tars: ustar, GNU (long names and links, base-256
 * numbers) and PAX (including binary SCHILY.xattr values). Names stay Buffers, because a tar
 * name is any bytes but NUL, and two names that differ only in invalid UTF-8 are two files.
 * node-tar and tar-stream drop xattrs or device entries, or decode values as text.
 *
 * Memory is constant: file bodies are handed out chunk by chunk; only extended headers (PAX,
 * GNU L/K) are buffered, under a cap.
 */

export type TarEntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

export interface TarTime {
  sec: number;
  nsec: number;
}

export interface TarEntry {
  /** Raw path bytes, after PAX `path` / GNU long name overrides; not yet cleaned. */
  name: Buffer;
  type: TarEntryType;
  /** Permission bits and setuid/setgid/sticky (07777). */
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of body that follow (only `file` entries have one). */
  size: number;
  mtime: TarTime;
  atime: TarTime | undefined;
  /** Target of a symlink or hardlink, raw bytes. */
  linkname: Buffer;
  devmajor: number;
  devminor: number;
  /** From PAX SCHILY.xattr.* (and LIBARCHIVE.xattr.*): name -> raw value. */
  xattrs: Map<string, Buffer>;
}

const BLOCK = 512;
/** Extended headers are buffered: refuse larger ones (a real one is a few KB). */
const MAX_EXTENDED_HEADER = 1024 * 1024;

function invalid(what: string, why: string): FerryError {
  return new FerryError('INVALID_LAYER', `${what}: invalid tar: ${why}`, {
    hint: 'the layer is damaged or was not written by a tar tool; fetch or export the image again',
  });
}

/** Pulls exact byte counts out of a stream's chunks without copying file bodies. */
class ByteSource {
  private readonly iterator: AsyncIterator<unknown>;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private ended = false;

  constructor(stream: Readable) {
    this.iterator = stream[Symbol.asyncIterator]();
  }

  private async fill(): Promise<boolean> {
    if (this.ended) return false;
    const next = await this.iterator.next();
    if (next.done === true) {
      this.ended = true;
      return false;
    }
    const chunk = next.value;
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
    if (buf.length > 0) {
      this.pending.push(buf);
      this.pendingBytes += buf.length;
    }
    return true;
  }

  /** Exactly n bytes, or fewer only at end of stream. Copies only when n spans chunks. */
  async read(n: number): Promise<Buffer> {
    while (this.pendingBytes < n && (await this.fill()));
    const take = Math.min(n, this.pendingBytes);
    const parts: Buffer[] = [];
    let need = take;
    while (need > 0) {
      const first = this.pending[0]!;
      if (first.length <= need) {
        parts.push(first);
        this.pending.shift();
        need -= first.length;
      } else {
        parts.push(first.subarray(0, need));
        this.pending[0] = first.subarray(need);
        need = 0;
      }
    }
    this.pendingBytes -= take;
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, take);
  }

  /** Up to n bytes (at least 1 unless at end), reusing the stream's own chunk. */
  async readSome(n: number): Promise<Buffer> {
    if (this.pendingBytes === 0) {
      while (this.pendingBytes === 0 && (await this.fill()));
      if (this.pendingBytes === 0) return Buffer.alloc(0);
    }
    const first = this.pending[0]!;
    if (first.length <= n) {
      this.pending.shift();
      this.pendingBytes -= first.length;
      return first;
    }
    this.pending[0] = first.subarray(n);
    this.pendingBytes -= n;
    return first.subarray(0, n);
  }

  /** Close the underlying stream early (on error). */
  async close(): Promise<void> {
    if (!this.ended && this.iterator.return) {
      this.ended = true;
      await this.iterator.return();
    }
  }
}

function isZeroBlock(block: Buffer): boolean {
  for (let i = 0; i < block.length; i++) if (block[i] !== 0) return false;
  return true;
}

/** A NUL-terminated field's bytes. */
function field(block: Buffer, offset: number, length: number): Buffer {
  const raw = block.subarray(offset, offset + length);
  const nul = raw.indexOf(0);
  return Buffer.from(nul === -1 ? raw : raw.subarray(0, nul));
}

/** An octal or base-256 (GNU, high bit set) number field. */
function numberField(block: Buffer, offset: number, length: number, what: string, name: string): number {
  const raw = block.subarray(offset, offset + length);
  const first = raw[0]!;
  if (first & 0x80) {
    // Base-256: big-endian two's complement; 0x80 marks a positive number, 0xff a negative one.
    const negative = first === 0xff;
    let value = 0n;
    for (let i = 0; i < raw.length; i++) {
      const byte = i === 0 ? (negative ? 0xff : first & 0x7f) : raw[i]!;
      value = (value << 8n) | BigInt(byte);
    }
    if (negative) value -= 1n << BigInt(8 * raw.length);
    if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw invalid(what, `${name} of an entry is out of range`);
    }
    return Number(value);
  }
  const text = raw.toString('latin1').replace(/\0.*$/s, '').trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw invalid(what, `${name} field "${text}" is not an octal number`);
  const value = Number.parseInt(text, 8);
  if (!Number.isSafeInteger(value)) throw invalid(what, `${name} of an entry is out of range`);
  return value;
}

function checksumOk(block: Buffer, what: string): boolean {
  const stored = numberField(block, 148, 8, what, 'checksum');
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const byte = i >= 148 && i < 156 ? 0x20 : block[i]!;
    unsigned += byte;
    signed += byte > 127 ? byte - 256 : byte;
  }
  // Some old tools summed signed bytes; accept either, as GNU tar does.
  return stored === unsigned || stored === signed;
}

/** A PAX decimal time "sec[.frac]"; may be negative. */
function parsePaxTime(text: string, what: string): TarTime {
  const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(text);
  if (!m) throw invalid(what, `bad PAX time "${text}"`);
  const sign = m[1] === '-' ? -1 : 1;
  const sec = Number(m[2]);
  const frac = (m[3] ?? '').slice(0, 9).padEnd(9, '0');
  const nsec = Number(frac);
  if (!Number.isSafeInteger(sec)) throw invalid(what, `PAX time "${text}" is out of range`);
  if (sign < 0 && nsec > 0) return { sec: -sec - 1, nsec: 1_000_000_000 - nsec };
  return { sec: sign * sec, nsec };
}

function parsePaxDecimal(text: string, key: string, what: string): number {
  if (!/^\d+$/.test(text)) throw invalid(what, `bad PAX ${key} "${text}"`);
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw invalid(what, `PAX ${key} "${text}" is out of range`);
  return value;
}

/** PAX records "LEN KEY=VALUE\n"; values are raw bytes (xattr values are binary). */
function parsePaxRecords(data: Buffer, what: string): Map<string, Buffer> {
  const records = new Map<string, Buffer>();
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // NUL padding after the last record
    const space = data.indexOf(0x20, pos);
    if (space === -1) throw invalid(what, 'PAX record without a length');
    const lengthText = data.subarray(pos, space).toString('latin1');
    if (!/^\d+$/.test(lengthText)) throw invalid(what, `PAX record length "${lengthText}" is not a number`);
    const length = Number(lengthText);
    const end = pos + length;
    if (length <= space - pos + 1 || end > data.length || data[end - 1] !== 0x0a) {
      throw invalid(what, 'PAX record length does not match its content');
    }
    const record = data.subarray(space + 1, end - 1);
    const eq = record.indexOf(0x3d);
    if (eq <= 0) throw invalid(what, 'PAX record without a key');
    records.set(record.subarray(0, eq).toString('utf8'), Buffer.from(record.subarray(eq + 1)));
    pos = end;
  }
  return records;
}

interface Overrides {
  pax: Map<string, Buffer>;
  longName: Buffer | undefined;
  longLink: Buffer | undefined;
}

/**
 * Read a tar stream entry by entry. Each entry's body must be read (`body()`) or is skipped
 * when the next entry is requested. After the end-of-archive marker, the rest of the stream
 * is read (so a digest check on it runs) and must be zeros.
 */
export class TarReader {
  private readonly source: ByteSource;
  private readonly what: string;
  /** Body bytes of the current entry not yet consumed, and its padding. */
  private remaining = 0;
  private padding = 0;
  private done = false;

  constructor(stream: Readable, what: string) {
    this.source = new ByteSource(stream);
    this.what = what;
  }

  /** The next entry, or undefined at the end of the archive. */
  async next(): Promise<TarEntry | undefined> {
    if (this.done) return undefined;
    await this.skipBody();
    const overrides: Overrides = { pax: new Map(), longName: undefined, longLink: undefined };
    for (;;) {
      const block = await this.source.read(BLOCK);
      if (block.length === 0) throw invalid(this.what, 'archive ends without an end-of-archive marker');
      if (block.length < BLOCK) throw invalid(this.what, 'archive is truncated inside a header');
      if (isZeroBlock(block)) {
        await this.finish();
        return undefined;
      }
      if (!checksumOk(block, this.what)) throw invalid(this.what, 'header checksum mismatch (corrupt or not a tar)');
      const typeflag = block[156] === 0 ? '0' : String.fromCharCode(block[156]!);
      const size = numberField(block, 124, 12, this.what, 'size');
      if (size < 0) throw invalid(this.what, 'negative entry size');
      switch (typeflag) {
        case 'x':
          for (const [k, v] of parsePaxRecords(await this.readExtended(size, 'PAX header'), this.what)) overrides.pax.set(k, v);
          continue;
        case 'g':
          // Global PAX headers carry nothing a layer needs (go/containerd skip them too).
          await this.readExtended(size, 'PAX global header');
          continue;
        case 'L':
          overrides.longName = field(await this.readExtended(size, 'GNU long name'), 0, size);
          continue;
        case 'K':
          overrides.longLink = field(await this.readExtended(size, 'GNU long link'), 0, size);
          continue;
        default:
          return this.entry(block, typeflag, size, overrides);
      }
    }
  }

  private entry(block: Buffer, typeflag: string, headerSize: number, o: Overrides): TarEntry {
    const magic = block.subarray(257, 263).toString('latin1');
    let name = field(block, 0, 100);
    // Only POSIX ustar has a prefix field; GNU uses those bytes for other things.
    if (magic === 'ustar\0') {
      const prefix = field(block, 345, 155);
      if (prefix.length > 0) name = Buffer.concat([prefix, Buffer.from('/'), name]);
    }
    if (o.longName !== undefined) name = o.longName;
    let linkname = field(block, 157, 100);
    if (o.longLink !== undefined) linkname = o.longLink;
    let type: TarEntryType;
    switch (typeflag) {
      case '0':
      case '7':
        type = 'file';
        break;
      case '1':
        type = 'hardlink';
        break;
      case '2':
        type = 'symlink';
        break;
      case '3':
        type = 'char';
        break;
      case '4':
        type = 'block';
        break;
      case '5':
        type = 'dir';
        break;
      case '6':
        type = 'fifo';
        break;
      default:
        throw new FerryError('UNSUPPORTED', `${this.what}: tar entry "${name.toString('utf8')}" has unsupported type '${typeflag}'`, {
          hint: 'layers may hold files, directories, links, devices and FIFOs; sparse or multi-volume GNU entries are not supported',
        });
    }
    const entry: TarEntry = {
      name,
      type,
      mode: numberField(block, 100, 8, this.what, 'mode') & 0o7777,
      uid: numberField(block, 108, 8, this.what, 'uid'),
      gid: numberField(block, 116, 8, this.what, 'gid'),
      size: headerSize,
      mtime: { sec: numberField(block, 136, 12, this.what, 'mtime'), nsec: 0 },
      atime: undefined,
      linkname,
      devmajor: type === 'char' || type === 'block' ? numberField(block, 329, 8, this.what, 'devmajor') : 0,
      devminor: type === 'char' || type === 'block' ? numberField(block, 337, 8, this.what, 'devminor') : 0,
      xattrs: new Map(),
    };
    for (const [key, value] of o.pax) this.applyPax(entry, key, value);
    // An old-style (v7) directory is a regular-file entry whose (final) name ends in '/'.
    if (type === 'file' && entry.name.length > 0 && entry.name[entry.name.length - 1] === 0x2f) entry.type = 'dir';
    if (entry.uid < 0 || entry.gid < 0) throw invalid(this.what, `negative owner on "${entry.name.toString('utf8')}"`);
    if (entry.size < 0) throw invalid(this.what, 'negative entry size');
    this.remaining = entry.size;
    this.padding = (BLOCK - (entry.size % BLOCK)) % BLOCK;
    return entry;
  }

  private applyPax(entry: TarEntry, key: string, value: Buffer): void {
    const text = (): string => value.toString('utf8');
    switch (key) {
      case 'path':
        entry.name = value;
        return;
      case 'linkpath':
        entry.linkname = value;
        return;
      case 'size':
        entry.size = parsePaxDecimal(text(), key, this.what);
        return;
      case 'uid':
        entry.uid = parsePaxDecimal(text(), key, this.what);
        return;
      case 'gid':
        entry.gid = parsePaxDecimal(text(), key, this.what);
        return;
      case 'mtime':
        entry.mtime = parsePaxTime(text(), this.what);
        return;
      case 'atime':
        entry.atime = parsePaxTime(text(), this.what);
        return;
      case 'SCHILY.devmajor':
        entry.devmajor = parsePaxDecimal(text(), key, this.what);
        return;
      case 'SCHILY.devminor':
        entry.devminor = parsePaxDecimal(text(), key, this.what);
        return;
      default:
        break;
    }
    if (key.startsWith('SCHILY.xattr.')) {
      entry.xattrs.set(key.slice('SCHILY.xattr.'.length), value);
    } else if (key.startsWith('LIBARCHIVE.xattr.')) {
      // libarchive: URL-encoded name, base64 value.
      entry.xattrs.set(decodeURIComponent(key.slice('LIBARCHIVE.xattr.'.length)), Buffer.from(text(), 'base64'));
    } else if (key.startsWith('GNU.sparse.')) {
      throw new FerryError('UNSUPPORTED', `${this.what}: sparse file entries (${key}) are not supported`);
    }
    // Other keys (ctime, uname, gname, comment, charset, vendor keys) do not change the result.
  }

  private async readExtended(size: number, kind: string): Promise<Buffer> {
    if (size > MAX_EXTENDED_HEADER) throw invalid(this.what, `${kind} of ${size} bytes is over the ${MAX_EXTENDED_HEADER}-byte limit`);
    const padded = size + ((BLOCK - (size % BLOCK)) % BLOCK);
    const data = await this.source.read(padded);
    if (data.length < padded) throw invalid(this.what, `archive is truncated inside a ${kind}`);
    return data.subarray(0, size);
  }

  /** The current entry's body, chunk by chunk; fails if the archive ends early. */
  async *body(): AsyncGenerator<Buffer> {
    while (this.remaining > 0) {
      const chunk = await this.source.readSome(this.remaining);
      if (chunk.length === 0) throw invalid(this.what, 'archive is truncated inside a file');
      this.remaining -= chunk.length;
      yield chunk;
    }
    await this.skipPadding();
  }

  private async skipBody(): Promise<void> {
    while (this.remaining > 0) {
      const chunk = await this.source.readSome(this.remaining);
      if (chunk.length === 0) throw invalid(this.what, 'archive is truncated inside a file');
      this.remaining -= chunk.length;
    }
    await this.skipPadding();
  }

  private async skipPadding(): Promise<void> {
    if (this.padding === 0) return;
    const pad = await this.source.read(this.padding);
    if (pad.length < this.padding) throw invalid(this.what, 'archive is truncated inside a file');
    this.padding = 0;
  }

  /**
   * After the first zero block: read to the end of the stream so digest checks downstream of
   * the source run, and refuse data after the end marker (tar tools pad with zeros only).
   */
  private async finish(): Promise<void> {
    this.done = true;
    for (;;) {
      const chunk = await this.source.readSome(64 * 1024);
      if (chunk.length === 0) return;
      if (!isZeroBlock(chunk)) throw invalid(this.what, 'data after the end-of-archive marker');
    }
  }

  /** Stop reading (after an error): releases the stream. */
  async close(): Promise<void> {
    await this.source.close();
  }
}
