import { UsageError } from '../errors.js';

/** An image platform, as in an index entry or an image config. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  'os.version'?: string;
}

const ARCH_ALIASES: Record<string, string> = {
  x86_64: 'amd64',
  'x86-64': 'amd64',
  aarch64: 'arm64',
  armhf: 'arm',
  armel: 'arm',
  i386: '386',
  i686: '386',
};

/**
 * Normalise as containerd does: arm64 has variant v8 by default, arm v7, amd64 no variant
 * (v1 dropped), and common uname spellings are mapped to GOARCH names.
 */
export function normalizePlatform(p: Platform): Platform {
  const os = p.os.toLowerCase();
  const architecture = ARCH_ALIASES[p.architecture.toLowerCase()] ?? p.architecture.toLowerCase();
  let variant = p.variant?.toLowerCase();
  if (architecture === 'arm64') {
    if (variant === undefined || variant === '' || variant === '8') variant = 'v8';
  } else if (architecture === 'arm') {
    if (variant === undefined || variant === '' || variant === '7') variant = 'v7';
    else if (/^\d$/.test(variant)) variant = `v${variant}`;
  } else if (architecture === 'amd64') {
    if (variant === 'v1') variant = undefined;
  }
  const out: Platform = { os, architecture };
  if (variant) out.variant = variant;
  if (p['os.version']) out['os.version'] = p['os.version'];
  return out;
}

/** Parse `os/arch[/variant]`. */
export function parsePlatform(text: string): Platform {
  const parts = text.trim().split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((x) => x === '')) {
    throw new UsageError(`invalid platform "${text}": expected os/arch[/variant], e.g. linux/arm64`);
  }
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return normalizePlatform(variant ? { os, architecture, variant } : { os, architecture });
}

/** `linux/arm64/v8`-style text; arm64's default v8 variant is left out for display. */
export function formatPlatform(p: Platform): string {
  const n = normalizePlatform(p);
  if (n.architecture === 'arm64' && n.variant === 'v8') return `${n.os}/${n.architecture}`;
  return n.variant ? `${n.os}/${n.architecture}/${n.variant}` : `${n.os}/${n.architecture}`;
}

/** Does `have` (from an image) satisfy the requested `want`? A request without variant matches any. */
export function platformMatches(want: Platform, have: Platform): boolean {
  const w = normalizePlatform(want);
  const h = normalizePlatform(have);
  if (w.os !== h.os || w.architecture !== h.architecture) return false;
  if (want.variant === undefined) return true;
  return w.variant === h.variant;
}

/** The platform of the running host, in OCI terms. */
export function hostPlatform(): Platform {
  const arch = process.arch === 'x64' ? 'amd64' : process.arch === 'ia32' ? '386' : process.arch;
  return normalizePlatform({ os: process.platform === 'win32' ? 'windows' : process.platform, architecture: arch });
}

/** Parse a comma-separated `--platform` list; none gives the host's platform, `all` gives 'all' (every platform). */
export function parsePlatformList(text: string | undefined): Platform[] | 'all' {
  if (text === undefined || text === '') return [hostPlatform()];
  if (text.trim() === 'all') return 'all';
  return text.split(',').map((s) => parsePlatform(s));
}
