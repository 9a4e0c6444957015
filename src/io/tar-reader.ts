import type { FileHandle } from 'node:fs/promises';
import { FerryError } from '../errors.js';
import {
  BLOCK,
  TarFormatError,
  checksumMatches,
  decodeHeader,
  entryTypeOf,
  isAllZero,
  paddingSize,
  parsePaxDecimal,
  parsePaxRecords,
  parsePaxTime,
  readBytes,
  readNumber,
  typeflagOf,
  type TarEntryType,
  type TarProblemKind,
  type TarTime,
} from './tar-format.js';

/**
 * The one streaming tar reader: ustar, GNU (long names and links, base-256 numbers) and PAX
 * (including binary SCHILY.xattr values), byte-exact. Names stay Buffers, because a tar name is
 * any bytes but NUL, and two names that differ only in invalid UTF-8 are two files. It faces
 * hostile input (layer unpack): every header is checked, the extended headers before one entry
 * are capped together, and with the strict end the whole stream is read and only zeros may
 * follow the end marker.
 *
 * Memory is constant: bodies are handed out chunk by chunk as the stream delivers them (no
 * copies); only extended headers (PAX, GNU L/K) are buffered, under one cap for all those of an
 * entry (consecutive PAX headers merge: with a cap per header, a flood of them grew without
 * end). Each entry reports the byte offsets of its header and body, so a file can be indexed
 * without reading the bodies (TarFileSource skips them with a seek).
 *
 * The reader knows the format, not a consumer's policy: it returns every entry type (unknown
 * ones as 'other') with all its PAX records, and reports problems through the consumer's `error`.
 */

export interface TarEntry {
  /** Raw path bytes, after PAX `path` / GNU long name overrides; not cleaned. */
  name: Buffer;
  /** The header's typeflag ('0' for an old NUL one). */
  typeflag: string;
  /** 'dir' also for an old-style (v7) file entry whose name ends in '/'. */
  type: TarEntryType;
  /** Permission bits and setuid/setgid/sticky (07777). */
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of body that follow the header. */
  size: number;
  mtime: TarTime;
  atime: TarTime | undefined;
  /** Target of a symlink or hardlink, raw bytes. */
  linkname: Buffer;
  devmajor: number;
  devminor: number;
  /** From PAX SCHILY.xattr.* (and LIBARCHIVE.xattr.*): name -> raw value. */
  xattrs: ReadonlyMap<string, Buffer>;
  /** Every PAX record that applied to this entry, raw (a consumer may refuse some, e.g. GNU.sparse.*). */
  pax: ReadonlyMap<string, Buffer>;
  /** Offset in the archive of the entry's own header block (after any extended headers). */
  headerOffset: number;
  /** Offset in the archive of the entry's body. */
  bodyOffset: number;
}

/** A problem found in the archive, for the consumer to turn into its own error. */
export interface TarProblem {
  kind: TarProblemKind;
  /** What is wrong, in words ("header checksum mismatch (corrupt or not a tar)"). */
  why: string;
  /** Where: a header block, an extended header's data, an entry's body (with padding), or after the end marker. */
  part: 'header' | 'extended' | 'body' | 'end';
  /** Offset of the header concerned: the block being read, or the header of the extended data or body. */
  header: number;
  /** Size of that extended header or body (0 for a header block). */
  size: number;
  /** For 'limit': the limit. */
  limit: number;
  /** Bytes of the archive read so far. */
  offset: number;
}

export interface TarReaderOptions {
  /** Names the archive in the consumer's errors. */
  what: string;
  /** The consumer's error for a problem in the archive. */
  error: (problem: TarProblem) => Error;
  /**
   * Either way the archive may end cleanly after a complete entry without the end-of-archive
   * marker, as GNU tar and Go's archive/tar accept (such layers occur in the wild); an entry cut
   * short, or extended headers without their entry, is truncation.
   * 'strict' (default): the stream is read to its end (so a digest over it covers every byte) and
   * only zeros may follow the marker. 'lenient': reading stops at the marker.
   */
  end?: 'strict' | 'lenient';
  /**
   * Most bytes of extended headers (PAX, PAX global, GNU long name and link) buffered for one
   * entry, all of them together; a real entry has a few KB. Default 1 MiB.
   */
  maxExtendedHeader?: number;
  /**
   * Called, in order, with every byte the reader consumes that it does not hand out through
   * `body()` or `readBody()`: header blocks (extended ones included), padding, skipped bodies,
   * the end marker and what follows it. With the bodies handed out, that is the whole archive
   * (tar-split). The buffers may be views of the stream's chunks: copy what is kept.
   */
  skeleton?: (bytes: Buffer) => void;
}

/** Where a reader's bytes come from. */
interface ByteSource {
  /** Bytes consumed so far. */
  readonly offset: number;
  /** Exactly n bytes, or fewer only at the end. */
  read(n: number): Promise<Buffer>;
  /** Up to n bytes (at least 1 unless at the end), without copying when possible. */
  readSome(n: number): Promise<Buffer>;
  /** Pass over n bytes; returns how many there were. */
  skip(n: number): Promise<number>;
  close(): Promise<void>;
}

/** Pulls exact byte counts out of a stream's chunks without copying bodies. */
class StreamSource implements ByteSource {
  offset = 0;
  private readonly iterator: AsyncIterator<unknown>;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private ended = false;

  constructor(stream: AsyncIterable<unknown>) {
    this.iterator = stream[Symbol.asyncIterator]();
  }

  private async fill(): Promise<boolean> {
    if (this.ended) return false;
    const next = await this.iterator.next();
    if (next.done === true) {
      this.ended = true;
      return false;
    }
    const chunk = next.value as Uint8Array;
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (buf.length > 0) {
      this.pending.push(buf);
      this.pendingBytes += buf.length;
    }
    return true;
  }

  /** Copies only when n spans chunks. */
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
    this.offset += take;
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, take);
  }

  /** Reuses the stream's own chunk. */
  async readSome(n: number): Promise<Buffer> {
    if (this.pendingBytes === 0) {
      while (this.pendingBytes === 0 && (await this.fill()));
      if (this.pendingBytes === 0) return EMPTY;
    }
    const first = this.pending[0]!;
    let out: Buffer;
    if (first.length <= n) {
      this.pending.shift();
      out = first;
    } else {
      this.pending[0] = first.subarray(n);
      out = first.subarray(0, n);
    }
    this.pendingBytes -= out.length;
    this.offset += out.length;
    return out;
  }

  async skip(n: number): Promise<number> {
    let done = 0;
    while (done < n) {
      const chunk = await this.readSome(n - done);
      if (chunk.length === 0) break;
      done += chunk.length;
    }
    return done;
  }

  async close(): Promise<void> {
    this.pending = [];
    this.pendingBytes = 0;
    if (!this.ended) {
      this.ended = true;
      await this.iterator.return?.();
    }
  }
}

const EMPTY = Buffer.alloc(0);
/** Bodies read from a file come in pieces of at most this. */
const FILE_CHUNK = 1024 * 1024;

/**
 * A tar file read at positions: skipping a body is a seek, so indexing a many-GB archive reads
 * only its headers. The caller owns the handle (the reader does not close it).
 */
export class TarFileSource implements ByteSource {
  offset = 0;
  private readonly handle: FileHandle;
  private readonly size: number;

  constructor(handle: FileHandle, size: number) {
    this.handle = handle;
    this.size = size;
  }

  async read(n: number): Promise<Buffer> {
    const length = Math.max(0, Math.min(n, this.size - this.offset));
    const buf = Buffer.alloc(length);
    let got = 0;
    while (got < length) {
      const { bytesRead } = await this.handle.read(buf, got, length - got, this.offset + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    this.offset += got;
    return got === length ? buf : buf.subarray(0, got);
  }

  readSome(n: number): Promise<Buffer> {
    return this.read(Math.min(n, FILE_CHUNK));
  }

  async skip(n: number): Promise<number> {
    const done = Math.max(0, Math.min(n, this.size - this.offset));
    this.offset += done;
    return done;
  }

  async close(): Promise<void> {}
}

/** Shared by the many entries without PAX records or xattrs (read-only). */
const NONE: ReadonlyMap<string, Buffer> = new Map();

/**
 * PAX records for one entry. A real entry has a dozen; even xattrs cannot need more (Linux lists
 * at most 64 KiB of xattr names). Each record costs far more memory parsed than its few bytes in
 * the tar, so a 1 MiB header of tiny records would otherwise cost tens of MB per entry.
 */
const MAX_PAX_RECORDS = 10_000;

const EXTENDED_KINDS: ReadonlyMap<string, string> = new Map([
  ['x', 'PAX header'],
  ['g', 'PAX global header'],
  ['L', 'GNU long name'],
  ['K', 'GNU long link'],
]);

/** A name for messages: UTF-8 where valid, control characters and other bytes as \xNN. */
function shownName(name: Buffer): string {
  const text = name.toString('utf8');
  const plain = !text.includes('\ufffd') && !/[\u0000-\u001f\u007f]/.test(text);
  if (plain) return text;
  return [...name].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`)).join('');
}

/**
 * Read a tar entry by entry. Each entry's body may be read (`body()`, `readBody()`) or is
 * skipped when the next entry is requested.
 */
export class TarReader {
  private readonly source: ByteSource;
  /** Names the archive in errors (for a consumer's own checks too). */
  protected readonly what: string;
  private readonly error: (problem: TarProblem) => Error;
  private readonly strictEnd: boolean;
  private readonly maxExtended: number;
  private readonly skeleton: ((bytes: Buffer) => void) | undefined;
  /** Body bytes of the current entry not yet consumed, and its padding. */
  private remaining = 0;
  private padding = 0;
  /** The header and size of what is being read, for problems. */
  private header = 0;
  private size = 0;
  private bodyOpen = false;
  private done = false;

  constructor(input: AsyncIterable<unknown> | TarFileSource, options: TarReaderOptions) {
    this.source = input instanceof TarFileSource ? input : new StreamSource(input);
    this.what = options.what;
    this.error = options.error;
    this.strictEnd = (options.end ?? 'strict') === 'strict';
    this.maxExtended = options.maxExtendedHeader ?? 1024 * 1024;
    this.skeleton = options.skeleton;
  }

  /** Bytes of the archive read so far. */
  get offset(): number {
    return this.source.offset;
  }

  private problem(kind: TarProblemKind, part: TarProblem['part'], why: string, limit = 0): Error {
    const size = part === 'header' || part === 'end' ? 0 : this.size;
    return this.error({ kind, why, part, header: this.header, size, limit, offset: this.source.offset });
  }

  /** Run a decoding step, turning format errors into the consumer's. */
  private decode<T>(part: TarProblem['part'], step: () => T): T {
    try {
      return step();
    } catch (err) {
      if (err instanceof TarFormatError) throw this.problem(err.kind, part, err.why);
      throw err;
    }
  }

  /** The next entry, or undefined at the end of the archive. */
  async next(): Promise<TarEntry | undefined> {
    if (this.done) return undefined;
    if (this.bodyOpen) {
      throw new FerryError('IO_ERROR', `${this.what}: internal error: the next tar entry was requested while an entry body was still being read`);
    }
    await this.skipBody();
    let pax: Map<string, Buffer> | undefined;
    let longName: Buffer | undefined;
    let longLink: Buffer | undefined;
    /** Bytes of extended headers read for this entry so far. */
    let extended = 0;
    for (;;) {
      this.header = this.source.offset;
      this.size = 0;
      const block = await this.source.read(BLOCK);
      this.skeleton?.(block);
      const pending = pax !== undefined || longName !== undefined || longLink !== undefined;
      if (block.length === 0) {
        if (pending) throw this.problem('truncated', 'header', 'archive ends after extended headers, without their entry');
        // A clean end after a complete entry, without the end-of-archive marker.
        this.done = true;
        return undefined;
      }
      if (block.length < BLOCK) throw this.problem('truncated', 'header', 'archive is truncated inside a header');
      if (isAllZero(block)) {
        if (pending) throw this.problem('truncated', 'header', 'archive ends after extended headers, without their entry');
        this.done = true;
        if (this.strictEnd) await this.finish();
        return undefined;
      }
      if (!this.decode('header', () => checksumMatches(block))) {
        throw this.problem('checksum', 'header', 'header checksum mismatch (corrupt or not a tar)');
      }
      const typeflag = typeflagOf(block);
      const size = this.decode('header', () => readNumber(block, 124, 12, 'size'));
      if (size < 0) throw this.problem('field', 'header', 'negative entry size');
      if (typeflag === 'x' || typeflag === 'g' || typeflag === 'L' || typeflag === 'K') {
        this.checkExtended(size, extended, typeflag);
        extended += size;
      }
      switch (typeflag) {
        case 'x': {
          const data = await this.readExtended(size, 'PAX header');
          pax ??= new Map();
          for (const [k, v] of this.decode('extended', () => parsePaxRecords(data))) pax.set(k, v);
          if (pax.size > MAX_PAX_RECORDS) {
            throw this.problem('limit', 'extended', `${pax.size} PAX records for one entry are over the ${MAX_PAX_RECORDS}-record limit`, MAX_PAX_RECORDS);
          }
          continue;
        }
        case 'g':
          // Global PAX headers carry nothing an entry needs (Go and containerd skip them too).
          await this.readExtended(size, 'PAX global header');
          continue;
        case 'L': {
          const data = await this.readExtended(size, 'GNU long name');
          longName = readBytes(data, 0, size);
          continue;
        }
        case 'K': {
          const data = await this.readExtended(size, 'GNU long link');
          longLink = readBytes(data, 0, size);
          continue;
        }
        default:
          return this.entry(block, pax, longName, longLink);
      }
    }
  }

  private entry(block: Buffer, pax: Map<string, Buffer> | undefined, longName: Buffer | undefined, longLink: Buffer | undefined): TarEntry {
    const fields = this.decode('header', () => decodeHeader(block));
    const entry: TarEntry = {
      name: longName ?? fields.name,
      typeflag: fields.typeflag,
      type: entryTypeOf(fields.typeflag),
      mode: fields.mode,
      uid: fields.uid,
      gid: fields.gid,
      size: fields.size,
      mtime: { sec: fields.mtime, nsec: 0 },
      atime: undefined,
      linkname: longLink ?? fields.linkname,
      devmajor: fields.devmajor,
      devminor: fields.devminor,
      xattrs: NONE,
      pax: pax ?? NONE,
      headerOffset: this.header,
      bodyOffset: this.source.offset,
    };
    if (pax !== undefined) {
      try {
        applyPax(entry, pax);
      } catch (err) {
        // Named after the entry (its PAX path when that was valid), not just the archive.
        if (err instanceof TarFormatError) throw this.problem(err.kind, 'extended', `entry "${shownName(entry.name)}": ${err.why}`);
        throw err;
      }
    }
    // An old-style (v7) directory is a regular-file entry whose (final) name ends in '/'.
    if (entry.type === 'file' && entry.name.length > 0 && entry.name[entry.name.length - 1] === 0x2f) entry.type = 'dir';
    if (entry.uid < 0 || entry.gid < 0) throw this.problem('field', 'header', `negative owner on "${shownName(entry.name)}"`);
    if (entry.size < 0) throw this.problem('field', 'header', 'negative entry size');
    this.remaining = entry.size;
    this.padding = paddingSize(entry.size);
    this.size = entry.size;
    return entry;
  }

  /** Refuse an extended header that would take this entry's extended headers over the cap, before it is read. */
  private checkExtended(size: number, before: number, typeflag: string): void {
    if (before + size <= this.maxExtended) return;
    this.size = size;
    const kind = EXTENDED_KINDS.get(typeflag) ?? 'extended header';
    const why =
      before === 0
        ? `${kind} of ${size} bytes is over the ${this.maxExtended}-byte limit`
        : `${kind} of ${size} bytes after ${before} bytes of extended headers for the same entry is over the ${this.maxExtended}-byte limit for one entry`;
    throw this.problem('limit', 'extended', why, this.maxExtended);
  }

  private async readExtended(size: number, kind: string): Promise<Buffer> {
    this.size = size;
    const padded = size + paddingSize(size);
    const data = await this.source.read(padded);
    this.skeleton?.(data);
    if (data.length < padded) throw this.problem('truncated', 'extended', `archive is truncated inside a ${kind}`);
    return data.subarray(0, size);
  }

  /** The current entry's body, chunk by chunk as the source delivers it; fails if the archive ends early. */
  async *body(): AsyncGenerator<Buffer> {
    this.bodyOpen = true;
    try {
      while (this.remaining > 0) {
        const chunk = await this.source.readSome(this.remaining);
        if (chunk.length === 0) throw this.problem('truncated', 'body', 'archive is truncated inside a file');
        this.remaining -= chunk.length;
        yield chunk;
      }
      await this.skipPadding();
    } finally {
      this.bodyOpen = false;
    }
  }

  /** The whole body of the current entry, for small entries; a 'limit' problem when over `max` bytes. */
  async readBody(max: number): Promise<Buffer> {
    if (this.remaining > max) {
      throw this.problem('limit', 'body', `entry of ${this.remaining} bytes is over the ${max}-byte limit`, max);
    }
    const data = await this.source.read(this.remaining);
    if (data.length < this.remaining) throw this.problem('truncated', 'body', 'archive is truncated inside a file');
    this.remaining = 0;
    await this.skipPadding();
    return data;
  }

  private async skipBody(): Promise<void> {
    const n = this.remaining + this.padding;
    if (n === 0) return;
    const skipped = await this.skip(n);
    if (skipped < n) throw this.problem('truncated', 'body', 'archive is truncated inside a file');
    this.remaining = 0;
    this.padding = 0;
  }

  private async skipPadding(): Promise<void> {
    if (this.padding === 0) return;
    const skipped = await this.skip(this.padding);
    if (skipped < this.padding) throw this.problem('truncated', 'body', 'archive is truncated inside a file');
    this.padding = 0;
  }

  /** Pass over n bytes (a seek on a file), or read them for the skeleton when one is wanted. */
  private async skip(n: number): Promise<number> {
    const skeleton = this.skeleton;
    if (skeleton === undefined) return this.source.skip(n);
    let done = 0;
    while (done < n) {
      const chunk = await this.source.readSome(n - done);
      if (chunk.length === 0) break;
      skeleton(chunk);
      done += chunk.length;
    }
    return done;
  }

  /**
   * After the first zero block: read to the end of the stream so digest checks downstream of
   * the source run, and refuse data after the end marker (tar tools pad with zeros only).
   */
  private async finish(): Promise<void> {
    for (;;) {
      const chunk = await this.source.readSome(64 * 1024);
      if (chunk.length === 0) return;
      this.skeleton?.(chunk);
      if (!isAllZero(chunk)) throw this.problem('trailing', 'end', 'data after the end-of-archive marker');
    }
  }

  /** Stop reading (after an error, or when only the start was wanted): releases the stream. */
  async close(): Promise<void> {
    await this.source.close();
  }
}

/** PAX keys holding a decimal number, and the entry field each one sets. */
const DECIMAL_KEYS: ReadonlyMap<string, 'size' | 'uid' | 'gid' | 'devmajor' | 'devminor'> = new Map([
  ['size', 'size'],
  ['uid', 'uid'],
  ['gid', 'gid'],
  ['SCHILY.devmajor', 'devmajor'],
  ['SCHILY.devminor', 'devminor'],
]);

/** A PAX path or linkpath: any bytes but NUL, as in a header field (a C string cannot hold one). */
function paxName(value: Buffer, key: string): Buffer {
  if (value.includes(0)) throw new TarFormatError('pax', `PAX ${key} "${shownName(value)}" contains a NUL byte`);
  return value;
}

/** A LIBARCHIVE.xattr name, URL-encoded by libarchive. */
function libarchiveXattrName(encoded: string): string {
  try {
    return decodeURIComponent(encoded);
  } catch (err) {
    if (err instanceof URIError) throw new TarFormatError('pax', `LIBARCHIVE.xattr name "${encoded}" is not valid URL encoding`);
    throw err;
  }
}

/** Apply the PAX records that change an entry; the others stay in `entry.pax` for the consumer. */
function applyPax(entry: TarEntry, records: ReadonlyMap<string, Buffer>): void {
  // The names first, so that a problem with another record names the entry by its real path.
  const path = records.get('path');
  if (path !== undefined) entry.name = paxName(path, 'path');
  const linkpath = records.get('linkpath');
  if (linkpath !== undefined) entry.linkname = paxName(linkpath, 'linkpath');
  const xattrs = new Map<string, Buffer>();
  for (const [key, value] of records) {
    const decimal = DECIMAL_KEYS.get(key);
    if (decimal !== undefined) entry[decimal] = parsePaxDecimal(value.toString('utf8'), key);
    else if (key === 'mtime') entry.mtime = parsePaxTime(value.toString('utf8'));
    else if (key === 'atime') entry.atime = parsePaxTime(value.toString('utf8'));
    else if (key.startsWith('SCHILY.xattr.')) xattrs.set(key.slice('SCHILY.xattr.'.length), value);
    else if (key.startsWith('LIBARCHIVE.xattr.')) {
      // libarchive: URL-encoded name, base64 value.
      xattrs.set(libarchiveXattrName(key.slice('LIBARCHIVE.xattr.'.length)), Buffer.from(value.toString('utf8'), 'base64'));
    }
    // Other keys (path and linkpath above, ctime, uname, gname, comment, charset, vendor keys) do not change the entry.
  }
  if (xattrs.size > 0) entry.xattrs = xattrs;
}
