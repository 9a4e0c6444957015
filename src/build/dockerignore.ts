import { posix } from 'node:path';

/**
 * `.dockerignore`: one pattern a line, `#` comments, `!` exceptions, Go filepath.Match syntax
 * plus `**` for any number of directories; the last matching pattern decides, and a path whose
 * parent directory is excluded is excluded too (moby's patternmatcher). Pure.
 */
interface Pattern {
  exclusion: boolean;
  re: RegExp;
  /** The pattern's directory prefix, to know whether an excluded directory may hold exceptions. */
  text: string;
}

/** A pattern that cannot be read (an invalid character class, ...). */
export class PatternError extends Error {}

function globToRegExp(input: string): RegExp {
  // Repeated `**/` match nothing more than one, and would only make the regex backtrack.
  const pattern = input.replace(/(\*\*\/)+/g, '**/');
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') {
      if (pattern[i + 1] === '*') {
        i++;
        if (pattern[i + 1] === '/') {
          i++;
          re += '(?:.*/)?';
        } else re += '.*';
      } else re += '[^/]*';
    } else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) re += '\\[';
      else {
        let cls = pattern.slice(i + 1, end);
        if (cls.startsWith('^') || cls.startsWith('!')) cls = `^${cls.slice(1)}`;
        re += `[${cls.replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else if (c === '\\' && i + 1 < pattern.length) {
      re += pattern[++i]!.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    } else re += c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  try {
    return new RegExp(`^${re}$`, 's');
  } catch (err) {
    throw new PatternError(`bad pattern "${input}": ${(err as Error).message}`, { cause: err });
  }
}

export class IgnoreMatcher {
  private readonly patterns: Pattern[] = [];

  /** Throws PatternError naming the line of a bad pattern. */
  constructor(text: string) {
    for (const [index, rawLine] of text.split(/\r?\n/).entries()) {
      let line = rawLine.trim();
      if (line === '' || line.startsWith('#')) continue;
      let exclusion = false;
      if (line.startsWith('!')) {
        exclusion = true;
        line = line.slice(1).trim();
      }
      let p = posix.normalize(line).replace(/^\/+/, '').replace(/\/+$/, '');
      if (p === '.' || p === '') p = '.';
      let re: RegExp;
      try {
        re = globToRegExp(p);
      } catch (err) {
        throw new PatternError(`line ${index + 1}: ${(err as Error).message}`, { cause: err });
      }
      this.patterns.push({ exclusion, re, text: p });
    }
  }

  get empty(): boolean {
    return this.patterns.length === 0;
  }

  /** Is `rel` (context-relative, no leading slash) left out of the context? */
  ignored(rel: string): boolean {
    const parents = rel.split('/');
    let matched = false;
    for (const p of this.patterns) {
      if (p.exclusion !== matched) continue; // cannot change the outcome
      let hit = p.re.test(rel);
      // A pattern matching a parent directory matches the path below it too.
      for (let n = parents.length - 1; !hit && n > 0; n--) hit = p.re.test(parents.slice(0, n).join('/'));
      if (hit) matched = !p.exclusion;
    }
    return matched;
  }

  /** Could something below the excluded directory `rel` be brought back by an exception? */
  mayHoldExceptions(rel: string): boolean {
    return this.patterns.some((p) => p.exclusion && (p.text.startsWith(`${rel}/`) || p.text.startsWith('*') || p.text.includes('**')));
  }
}

/** Go filepath.Match for one path component (COPY source globs). */
export function matchComponent(pattern: string, name: string): boolean {
  return globToRegExp(pattern.replace(/\*\*/g, '*')).test(name);
}

export function hasGlob(text: string): boolean {
  return /[*?[]/.test(text);
}
