import { createHash } from 'node:crypto';

/**
 * Build tar archives byte by byte in tests, including the malformed and hostile ones no tar tool
 * would write: raw Buffer names, PAX records with binary values, GNU long names, base-256 numbers,
 * wrong checksums, truncation.
 */
export type TarType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

export interface TarSpec {
  name: string | Buffer;
  type?: TarType;
  /** Raw typeflag byte, overriding `type` (e.g. 'S' for an unsupported GNU sparse entry). */
  typeflag?: string;
  body?: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  /** Seconds since the epoch; negative or huge values use base-256 (GNU). */
  mtime?: number;
  linkname?: string | Buffer;
  devmajor?: number;
  devminor?: number;
  /** Extra PAX records (written in an 'x' header before the entry). */
  pax?: Record<string, string | Buffer>;
  /** xattrs as SCHILY.xattr.NAME PAX records. */
  xattrs?: Record<string, string | Buffer>;
  /** Put the name (and linkname) in GNU 'L'/'K' entries instead of PAX when longer than 100 bytes. */
  gnuLong?: boolean;
  /** Corrupt the header checksum. */
  badChecksum?: boolean;
  /** Size written in the header when it should differ from the body (to build lies). */
  headerSize?: number;
}

const TYPEFLAG: Record<TarType, string> = { file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' };

function asBuffer(v: string | Buffer): Buffer {
  return typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
}

function octal(block: Buffer, offset: number, length: number, value: number): void {
  if (value >= 0 && value < 8 ** (length - 1)) {
    block.write(value.toString(8).padStart(length - 1, '0'), offset, length - 1, 'latin1');
    block[offset + length - 1] = 0;
    return;
  }
  // GNU base-256, two's complement, high bit set.
  let v = BigInt(value);
  if (v < 0n) v += 1n << BigInt(8 * length);
  for (let i = length - 1; i >= 0; i--) {
    block[offset + i] = Number(v & 0xffn);
    v >>= 8n;
  }
  block[offset] = (block[offset]! & 0x7f) | 0x80;
  if (value < 0) block[offset] = 0xff;
}

function paxRecord(key: string, value: Buffer): Buffer {
  const rest = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let length = rest.length + 1;
  while (String(length).length + rest.length !== length) length = String(length).length + rest.length;
  return Buffer.concat([Buffer.from(String(length)), rest]);
}

function pad(data: Buffer): Buffer {
  const extra = (512 - (data.length % 512)) % 512;
  return Buffer.concat([data, Buffer.alloc(extra)]);
}

export interface HeaderFields {
  name: Buffer;
  typeflag: string;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  linkname: Buffer;
  devmajor: number;
  devminor: number;
  badChecksum?: boolean;
}

/** One 512-byte ustar header. Names longer than 100 bytes are cut: use PAX or GNU for them. */
export function header(f: HeaderFields): Buffer {
  const block = Buffer.alloc(512);
  f.name.copy(block, 0, 0, Math.min(100, f.name.length));
  octal(block, 100, 8, f.mode);
  octal(block, 108, 8, f.uid);
  octal(block, 116, 8, f.gid);
  octal(block, 124, 12, f.size);
  octal(block, 136, 12, f.mtime);
  block.write('        ', 148, 8, 'latin1');
  block.write(f.typeflag, 156, 1, 'latin1');
  f.linkname.copy(block, 157, 0, Math.min(100, f.linkname.length));
  block.write('ustar\u000000', 257, 8, 'latin1');
  block.write('root', 265, 'latin1');
  block.write('root', 297, 'latin1');
  octal(block, 329, 8, f.devmajor);
  octal(block, 337, 8, f.devminor);
  let sum = 0;
  for (const b of block) sum += b;
  if (f.badChecksum) sum += 1;
  block.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 8, 'latin1');
  return block;
}

/** The bytes of one entry: extended headers, header, padded body. */
export function entryBytes(spec: TarSpec): Buffer {
  const type = spec.type ?? 'file';
  const name = asBuffer(spec.name);
  const linkname = asBuffer(spec.linkname ?? '');
  const body = asBuffer(spec.body ?? '');
  const out: Buffer[] = [];
  const pax: Buffer[] = [];
  let headerName = name;
  let headerLink = linkname;
  if (name.length > 100) {
    if (spec.gnuLong) out.push(...gnuLong('L', name));
    else pax.push(paxRecord('path', name));
    headerName = name.subarray(0, 100);
  }
  if (linkname.length > 100) {
    if (spec.gnuLong) out.push(...gnuLong('K', linkname));
    else pax.push(paxRecord('linkpath', linkname));
    headerLink = linkname.subarray(0, 100);
  }
  for (const [k, v] of Object.entries(spec.xattrs ?? {})) pax.push(paxRecord(`SCHILY.xattr.${k}`, asBuffer(v)));
  for (const [k, v] of Object.entries(spec.pax ?? {})) pax.push(paxRecord(k, asBuffer(v)));
  if (pax.length > 0) {
    const data = Buffer.concat(pax);
    out.push(header({ ...defaults(Buffer.from('PaxHeader')), typeflag: 'x', size: data.length }), pad(data));
  }
  out.push(
    header({
      name: headerName,
      typeflag: spec.typeflag ?? TYPEFLAG[type],
      size: spec.headerSize ?? body.length,
      mode: spec.mode ?? (type === 'dir' ? 0o755 : 0o644),
      uid: spec.uid ?? 0,
      gid: spec.gid ?? 0,
      mtime: spec.mtime ?? 1_700_000_000,
      linkname: headerLink,
      devmajor: spec.devmajor ?? 0,
      devminor: spec.devminor ?? 0,
      badChecksum: spec.badChecksum ?? false,
    }),
  );
  if (body.length > 0) out.push(pad(body));
  return Buffer.concat(out);
}

function defaults(name: Buffer): HeaderFields {
  return { name, typeflag: '0', size: 0, mode: 0o644, uid: 0, gid: 0, mtime: 0, linkname: Buffer.alloc(0), devmajor: 0, devminor: 0 };
}

function gnuLong(flag: 'L' | 'K', value: Buffer): Buffer[] {
  const data = Buffer.concat([value, Buffer.alloc(1)]);
  return [header({ ...defaults(Buffer.from('././@LongLink')), typeflag: flag, size: data.length }), pad(data)];
}

/**
 * One extended header (PAX 'x', PAX global 'g', GNU long name 'L' or long link 'K') with its
 * data, as raw bytes: for floods of them before one entry.
 */
export function extendedHeader(flag: 'x' | 'g' | 'L' | 'K', data: Buffer): Buffer {
  const name = flag === 'L' || flag === 'K' ? '././@LongLink' : 'PaxHeader';
  return Buffer.concat([header({ ...defaults(Buffer.from(name)), typeflag: flag, size: data.length }), pad(data)]);
}

/** PAX records "LEN KEY=VALUE\n", for extendedHeader('x', ...). */
export function paxRecords(records: Record<string, string | Buffer>): Buffer {
  return Buffer.concat(Object.entries(records).map(([k, v]) => paxRecord(k, asBuffer(v))));
}

export interface BuildOptions {
  /** Leave out the two zero blocks. */
  noEnd?: boolean;
  /** Bytes appended after the end marker. */
  trailing?: Buffer;
}

/** A whole tar: entries, end-of-archive (two zero blocks). */
export function buildTar(entries: TarSpec[], options: BuildOptions = {}): Buffer {
  const parts = entries.map(entryBytes);
  if (!options.noEnd) parts.push(Buffer.alloc(1024));
  if (options.trailing) parts.push(options.trailing);
  return Buffer.concat(parts);
}

export function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}
