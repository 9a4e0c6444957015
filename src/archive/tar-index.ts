import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { posix } from 'node:path';
import { PassThrough, Readable, addAbortSignal } from 'node:stream';
import { FerryError, messageOf } from '../errors.js';
import type { OpenOptions } from '../oci/image.js';

/**
 * Random access into an uncompressed tar file without extracting it: walk the headers once
 * (entry name -> offset and size), then open entries as byte ranges of the file. A docker-archive
 * can be many GB; this streams every layer straight from the archive and buffers only headers.
 */

const BLOCK = 512;
/** PAX and GNU long-name payloads are names, not data: anything larger is hostile. */
const MAX_META_BYTES = 1024 * 1024;
/** Symlink chains longer than this are loops (Linux stops at 40 too). */
const MAX_LINK_HOPS = 40;

export type TarEntryType = 'file' | 'directory' | 'symlink' | 'hardlink' | 'other';

export interface TarEntry {
  /** Normalised path inside the archive: no leading `./` or `/`, no trailing `/`. */
  readonly name: string;
  readonly type: TarEntryType;
  /** Offset of the entry's data in the tar file. */
  readonly offset: number;
  readonly size: number;
  /** Normalised target of a link (symlinks: resolved against the link's directory). */
  readonly target?: string;
}

export interface TarIndex {
  /** The tar file and how to name it in errors ("docker-archive /x/app.tar"). */
  readonly file: string;
  readonly what: string;
  readonly entries: ReadonlyMap<string, TarEntry>;
  /** The regular file at `name`, following links inside the archive; undefined when absent. */
  lookup(name: string): TarEntry | undefined;
  /** The entry's bytes as a stream of the file's byte range. */
  open(entry: TarEntry, options?: OpenOptions): Readable;
  /** Read a small entry whole, refusing one larger than `max` bytes. */
  read(entry: TarEntry, max: number): Promise<Buffer>;
  /** The first bytes of an entry (magic numbers). */
  head(entry: TarEntry, length: number): Promise<Buffer>;
}

function unsafe(what: string, name: string, why: string): FerryError {
  return new FerryError('UNSAFE_PATH', `${what}: entry "${name}" ${why}`, {
    hint: 'the archive is damaged or crafted to escape its directory; do not use it',
  });
}

/**
 * Normalise an archive path; throws UNSAFE_PATH for absolute paths and paths that climb out
 * with `..`. Returns '' for the archive root itself (`.` or `./`).
 */
export function normalizeEntryName(name: string, what: string): string {
  if (name.includes('\0')) throw unsafe(what, name.replace(/\0/g, '\\0'), 'contains a NUL byte');
  if (name.startsWith('/')) throw unsafe(what, name, 'is an absolute path');
  const n = posix.normalize(name).replace(/\/+$/, '');
  if (n === '..' || n.startsWith('../')) throw unsafe(what, name, 'leaves the archive ("..")');
  return n === '.' ? '' : n;
}

function readString(block: Buffer, offset: number, length: number): string {
  const field = block.subarray(offset, offset + length);
  const nul = field.indexOf(0);
  return field.subarray(0, nul === -1 ? length : nul).toString('utf8');
}

function readNumber(block: Buffer, offset: number, length: number): number {
  const field = block.subarray(offset, offset + length);
  if ((field[0]! & 0x80) !== 0) {
    // GNU base-256, used for sizes over 8 GiB; a negative one (0xff first byte) is invalid here.
    if (field[0] === 0xff) return Number.NaN;
    let value = field[0]! & 0x7f;
    for (let i = 1; i < field.length; i++) value = value * 256 + field[i]!;
    return value;
  }
  const text = readString(block, offset, length).trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) return Number.NaN;
  return Number.parseInt(text, 8);
}

function checksumOk(block: Buffer): boolean {
  const stored = readNumber(block, 148, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : block[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  // Old tars summed signed chars; both are accepted, as GNU tar does.
  return stored === unsigned || stored === signed;
}

function isZero(block: Buffer): boolean {
  for (const b of block) if (b !== 0) return false;
  return true;
}

function parsePax(data: Buffer): Map<string, string> {
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

function entryType(flag: string): TarEntryType {
  switch (flag) {
    case '0':
    case '':
    case '7':
      return 'file';
    case '5':
      return 'directory';
    case '2':
      return 'symlink';
    case '1':
      return 'hardlink';
    default:
      return 'other';
  }
}

async function readAt(handle: FileHandle, length: number, position: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await handle.read(buf, got, length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got === length ? buf : buf.subarray(0, got);
}

/** Walk the headers of the tar at `file` and index its entries. `what` names the archive in errors. */
export async function indexTar(file: string, what: string): Promise<TarIndex> {
  let handle: FileHandle;
  try {
    handle = await open(file, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'NOT_FOUND' : 'IO_ERROR';
    throw new FerryError(code, `${what}: cannot open: ${messageOf(err)}`, { cause: err });
  }
  const entries = new Map<string, TarEntry>();
  try {
    const fileSize = (await handle.stat()).size;
    let pos = 0;
    let pax = new Map<string, string>();
    let longName: string | undefined;
    let longLink: string | undefined;
    let sawHeader = false;
    for (;;) {
      if (pos + BLOCK > fileSize) {
        // Some writers omit the end-of-archive blocks; a tar that stops between entries is complete.
        if (pos === fileSize && sawHeader) break;
        throw new FerryError('INVALID_MANIFEST', `${what}: truncated tar (header at byte ${pos} runs past the end, ${fileSize} bytes)`, {
          hint: 'the file was cut short while copying; copy it again',
        });
      }
      const block = await readAt(handle, BLOCK, pos);
      if (isZero(block)) break;
      if (!checksumOk(block)) {
        throw new FerryError('INVALID_MANIFEST', sawHeader ? `${what}: bad tar header checksum at byte ${pos}` : `${what}: not a tar archive`, {
          hint: sawHeader ? 'the archive is corrupted; copy it again' : 'expected the output of docker save, podman save or skopeo copy (tar, tar.gz or tar.zst)',
        });
      }
      sawHeader = true;
      const flag = readString(block, 156, 1);
      let size = readNumber(block, 124, 12);
      if (pax.has('size')) size = Number(pax.get('size'));
      if (!Number.isSafeInteger(size) || size < 0) {
        throw new FerryError('INVALID_MANIFEST', `${what}: bad entry size in tar header at byte ${pos}`);
      }
      const dataStart = pos + BLOCK;
      const next = dataStart + Math.ceil(size / BLOCK) * BLOCK;
      if (dataStart + size > fileSize) {
        throw new FerryError('INVALID_MANIFEST', `${what}: truncated tar (entry at byte ${pos} needs ${size} bytes, the file ends first)`, {
          hint: 'the file was cut short while copying; copy it again',
        });
      }
      if (flag === 'x' || flag === 'L' || flag === 'K' || flag === 'g') {
        if (size > MAX_META_BYTES) throw new FerryError('INVALID_MANIFEST', `${what}: tar metadata entry at byte ${pos} is ${size} bytes`);
        const data = await readAt(handle, size, dataStart);
        if (flag === 'x') pax = parsePax(data);
        else if (flag === 'L') longName = readString(data, 0, data.length);
        else if (flag === 'K') longLink = readString(data, 0, data.length);
        pos = next;
        continue;
      }
      let rawName = readString(block, 0, 100);
      const magic = readString(block, 257, 6);
      if (magic === 'ustar') {
        // POSIX ustar only; GNU's "ustar  " uses these bytes for times.
        const prefix = readString(block, 345, 155);
        if (prefix !== '') rawName = `${prefix}/${rawName}`;
      }
      rawName = pax.get('path') ?? longName ?? rawName;
      const rawLink = pax.get('linkpath') ?? longLink ?? readString(block, 157, 100);
      pax = new Map();
      longName = undefined;
      longLink = undefined;

      const name = normalizeEntryName(rawName, what);
      // Pre-POSIX tars mark directories only by a trailing slash.
      const type = rawName.endsWith('/') && entryType(flag) === 'file' ? 'directory' : entryType(flag);
      if (name === '') {
        pos = next;
        continue;
      }
      let target: string | undefined;
      if (type === 'symlink') {
        if (rawLink.startsWith('/')) throw unsafe(what, name, `is a symlink to the absolute path "${rawLink}"`);
        const t = posix.normalize(posix.join(posix.dirname(name), rawLink));
        if (t === '..' || t.startsWith('../')) throw unsafe(what, name, `is a symlink that leaves the archive ("${rawLink}")`);
        target = t === '.' ? '' : t;
      } else if (type === 'hardlink') {
        target = normalizeEntryName(rawLink, what);
      }
      // Entries with data only for files; links and directories carry none that matters.
      const entry: TarEntry = target === undefined ? { name, type, offset: dataStart, size } : { name, type, offset: dataStart, size, target };
      entries.set(name, entry);
      pos = next;
    }
  } finally {
    await handle.close();
  }
  return makeIndex(file, what, entries);
}

function makeIndex(file: string, what: string, entries: Map<string, TarEntry>): TarIndex {
  const lookup = (name: string): TarEntry | undefined => {
    let current = normalizeEntryName(name, what);
    for (let hop = 0; hop <= MAX_LINK_HOPS; hop++) {
      const entry = entries.get(current);
      if (entry === undefined) return undefined;
      if (entry.type === 'file') return entry;
      if ((entry.type === 'symlink' || entry.type === 'hardlink') && entry.target !== undefined) {
        current = entry.target;
        continue;
      }
      throw new FerryError('INVALID_MANIFEST', `${what}: entry "${entry.name}" is a ${entry.type}, not a file`);
    }
    throw new FerryError('INVALID_MANIFEST', `${what}: entry "${name}": too many levels of links`);
  };

  const openRange = (entry: TarEntry, options?: OpenOptions): Readable => {
    if (entry.size === 0) return Readable.from([]);
    const range = createReadStream(file, { start: entry.offset, end: entry.offset + entry.size - 1 });
    // A read failure (the archive gone, EIO) names the archive and entry, not a temp file path.
    const out = new PassThrough();
    range.on('error', (err) => {
      out.destroy(new FerryError('IO_ERROR', `${what}: read entry "${entry.name}": ${messageOf(err)}`, { cause: err }));
    });
    out.on('close', () => range.destroy());
    range.pipe(out);
    return options?.signal ? addAbortSignal(options.signal, out) : out;
  };

  const readRange = async (entry: TarEntry, length: number): Promise<Buffer> => {
    const handle = await open(file, 'r');
    try {
      const buf = await readAt(handle, length, entry.offset);
      if (buf.length !== length) throw new FerryError('IO_ERROR', `${what}: entry "${entry.name}": the archive changed while reading it`);
      return buf;
    } finally {
      await handle.close();
    }
  };

  return {
    file,
    what,
    entries,
    lookup,
    open: openRange,
    async read(entry, max) {
      if (entry.size > max) {
        throw new FerryError('INVALID_MANIFEST', `${what}: entry "${entry.name}" is ${entry.size} bytes, over the ${max}-byte limit`);
      }
      return readRange(entry, entry.size);
    },
    async head(entry, length) {
      return readRange(entry, Math.min(length, entry.size));
    },
  };
}
