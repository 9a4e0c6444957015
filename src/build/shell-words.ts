/**
 * Variable expansion in Dockerfile words, as the Dockerfile reference defines it (BuildKit's
 * shell lexer): `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR:+word}`, `${VAR-word}`, `${VAR+word}`,
 * `${VAR:?msg}`, `${VAR?msg}`; single quotes literal, double quotes expand `$`; the escape
 * character (`\` or the `escape` directive's) escapes the next character. Quotes are removed.
 * Pure; errors are plain messages the caller places at a Dockerfile line.
 */
export class ExpansionError extends Error {}

export type Lookup = (name: string) => string | undefined;

const SPECIAL = new Set(['@', '*', '#', '?', '-', '$', '!', '0']);

/** Nested `${a:-${b:-...}}` deeper than this is refused (a Dockerfile is hostile input). */
const MAX_NESTING = 64;

class Lexer {
  private i = 0;
  private depth = 0;
  private readonly chars: string[];
  /** Words as split by unquoted whitespace (ProcessWords); `null` entries separate words. */
  constructor(
    text: string,
    private readonly lookup: Lookup,
    private readonly escape: string,
  ) {
    this.chars = [...text];
  }

  private peek(): string | undefined {
    return this.chars[this.i];
  }

  private next(): string | undefined {
    return this.chars[this.i++];
  }

  /** The word up to `stop` (consumed) or the end; with `split`, also its whitespace-separated words. */
  run(stop: string | undefined, words?: WordCollector): string {
    let out = '';
    for (;;) {
      const ch = this.peek();
      if (ch === undefined) {
        if (stop !== undefined) throw new ExpansionError("syntax error: missing '}'");
        return out;
      }
      if (ch === stop) {
        this.next();
        return out;
      }
      if (ch === "'") {
        const s = this.singleQuote();
        out += s;
        words?.raw(s);
      } else if (ch === '"') {
        const s = this.doubleQuote();
        out += s;
        words?.raw(s);
      } else if (ch === '$') {
        const s = this.dollar();
        out += s;
        words?.expanded(s);
      } else {
        this.next();
        if (ch === this.escape) {
          const escaped = this.next();
          if (escaped === undefined) return out; // a trailing escape is dropped
          out += escaped;
          words?.raw(escaped);
        } else {
          out += ch;
          words?.char(ch);
        }
      }
    }
  }

  private singleQuote(): string {
    this.next();
    let out = '';
    for (;;) {
      const ch = this.next();
      if (ch === undefined) throw new ExpansionError('unexpected end of statement while looking for matching single-quote');
      if (ch === "'") return out;
      out += ch;
    }
  }

  private doubleQuote(): string {
    this.next();
    let out = '';
    for (;;) {
      const ch = this.peek();
      if (ch === undefined) throw new ExpansionError('unexpected end of statement while looking for matching double-quote');
      if (ch === '"') {
        this.next();
        return out;
      }
      if (ch === '$') {
        out += this.dollar();
        continue;
      }
      this.next();
      if (ch === this.escape) {
        const after = this.peek();
        if (after === undefined) continue;
        // Only these can be escaped inside double quotes; any other escape stays as written.
        if (after === '"' || after === '$' || after === this.escape) {
          out += this.next()!;
          continue;
        }
      }
      out += ch;
    }
  }

  private name(): string {
    let name = '';
    for (;;) {
      const ch = this.peek();
      if (ch === undefined) return name;
      if (name === '' && /\p{Nd}/u.test(ch)) {
        while (this.peek() !== undefined && /\p{Nd}/u.test(this.peek()!)) name += this.next()!;
        return name;
      }
      if (name === '' && SPECIAL.has(ch)) {
        this.next();
        return ch;
      }
      if (!/[\p{L}\p{Nd}_]/u.test(ch)) return name;
      name += this.next()!;
    }
  }

  /** Positional and special parameters are never set in a Dockerfile. */
  private get(name: string): string | undefined {
    if (/^\d+$/.test(name) || SPECIAL.has(name)) return undefined;
    return this.lookup(name);
  }

  private dollar(): string {
    if (++this.depth > MAX_NESTING) throw new ExpansionError(`substitutions nested more than ${MAX_NESTING} deep`);
    try {
      return this.dollarInner();
    } finally {
      this.depth--;
    }
  }

  private dollarInner(): string {
    this.next();
    if (this.peek() !== '{') {
      const name = this.name();
      if (name === '') return '$';
      return this.get(name) ?? '';
    }
    this.next();
    const first = this.peek();
    if (first === undefined) throw new ExpansionError("syntax error: missing '}'");
    if (first === '{' || first === '}' || first === ':') throw new ExpansionError('syntax error: bad substitution');
    const name = this.name();
    const ch = this.next();
    if (ch === undefined) throw new ExpansionError("syntax error: missing '}'");
    const value = this.get(name);
    if (name === '') throw new ExpansionError(`syntax error: bad substitution`);
    switch (ch) {
      case '}':
        return value ?? '';
      case '?': {
        const word = this.run('}');
        if (value === undefined) throw new ExpansionError(`${name}: ${word === '' ? 'is not allowed to be unset' : word}`);
        return value;
      }
      case '-': {
        const word = this.run('}');
        return value === undefined ? word : value;
      }
      case '+': {
        const word = this.run('}');
        return value === undefined ? '' : word;
      }
      case ':': {
        const op = this.next();
        if (op === '+' || op === '-' || op === '?') {
          const word = this.run('}');
          const set = value !== undefined && value !== '';
          if (op === '+') return set ? word : '';
          if (op === '-') return set ? value : word;
          if (!set) throw new ExpansionError(`${name}: ${word === '' ? 'is not allowed to be unset or empty' : word}`);
          return value;
        }
        throw new ExpansionError(`unsupported modifier (${op ?? 'end of word'}) in substitution`);
      }
      default:
        throw new ExpansionError(`unsupported modifier (${ch}) in substitution`);
    }
  }
}

/** Builds the list of words: expanded text splits on whitespace, quoted or escaped text does not. */
class WordCollector {
  readonly words: string[] = [];
  private cur = '';
  private inWord = false;
  char(ch: string): void {
    if (/\s/.test(ch)) {
      this.end();
      return;
    }
    this.cur += ch;
    this.inWord = true;
  }
  raw(s: string): void {
    this.cur += s;
    this.inWord = true;
  }
  expanded(s: string): void {
    for (const ch of s) this.char(ch);
  }
  end(): void {
    if (this.inWord) this.words.push(this.cur);
    this.cur = '';
    this.inWord = false;
  }
}

/** One word expanded (quotes removed), as ENV, LABEL, COPY and most instructions take theirs. */
export function expandWord(text: string, lookup: Lookup, escape = '\\'): string {
  return new Lexer(text, lookup, escape).run(undefined);
}

/** Expanded and split into words on unquoted whitespace (EXPOSE, VOLUME, ... shell forms). */
export function expandWords(text: string, lookup: Lookup, escape = '\\'): string[] {
  const words = new WordCollector();
  new Lexer(text, lookup, escape).run(undefined, words);
  words.end();
  return words.words;
}
