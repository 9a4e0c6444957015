import { FerryError } from '../errors.js';

/**
 * The Dockerfile's syntax (the Dockerfile reference): parser directives at the top (`escape`;
 * `syntax` and `check` noted, nothing fetched), comments, line continuations with the escape
 * character, instructions with `--flags`, heredocs on RUN/COPY/ADD. Variables are not expanded
 * here: that happens per instruction while building (shell-words.ts), with the values of that
 * point of the build. Pure: text in, instructions out; errors name the file and line.
 */
export interface Heredoc {
  /** The delimiter word (also the file name of `COPY <<NAME /dest`). */
  name: string;
  /** The body, each line ending in a newline; leading tabs removed for `<<-`. */
  content: string;
  /** Unquoted delimiter: the body's variables are expanded (COPY/ADD) or left to the shell (RUN). */
  expand: boolean;
}

export interface Instruction {
  /** Upper case: RUN, COPY, ... */
  keyword: string;
  /** `--name=value` / `--name` before the arguments, as written. */
  flags: string[];
  /** The arguments after the flags, as written (continuations joined). */
  args: string;
  /** The instruction as written on its line(s), for history and messages. */
  text: string;
  /** 1-based line of the instruction's first line. */
  line: number;
  heredocs: Heredoc[];
  /** ONBUILD's instruction. */
  inner?: Instruction;
}

export interface Dockerfile {
  /** For messages: the Dockerfile's path as the user named it. */
  path: string;
  escape: string;
  syntax?: string;
  instructions: Instruction[];
}

export const KEYWORDS = new Set([
  'ADD', 'ARG', 'CMD', 'COPY', 'ENTRYPOINT', 'ENV', 'EXPOSE', 'FROM', 'HEALTHCHECK', 'LABEL', 'MAINTAINER',
  'ONBUILD', 'RUN', 'SHELL', 'STOPSIGNAL', 'USER', 'VOLUME', 'WORKDIR',
]);
const HEREDOC_KEYWORDS = new Set(['RUN', 'COPY', 'ADD']);
const DIRECTIVE = /^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$/;
const KNOWN_DIRECTIVES = new Set(['escape', 'syntax', 'check']);

export function dockerfileError(path: string, line: number, message: string, hint?: string): FerryError {
  return new FerryError('DOCKERFILE_INVALID', `${path}:${line}: ${message}`, hint === undefined ? {} : { hint });
}

function isComment(line: string): boolean {
  return /^[ \t]*#/.test(line);
}

/** `--x=y --z rest` -> flags and the rest (BuildKit's extractBuilderFlags: words until a non-flag). */
export function splitFlags(text: string): { flags: string[]; rest: string } {
  const flags: string[] = [];
  let rest = text;
  for (;;) {
    const m = /^--([^\s=]+(?:=\S*)?)(?:\s+|$)/.exec(rest);
    if (!m) break;
    if (m[1] === '') break;
    flags.push(`--${m[1]!}`);
    rest = rest.slice(m[0].length);
  }
  return { flags, rest };
}

/** Heredoc markers in a RUN/COPY/ADD line: `<<EOF`, `<<-EOF`, `<<"EOF"`, `<<'EOF'` (not `<<<`). */
function heredocMarkers(args: string): Array<{ name: string; strip: boolean; expand: boolean }> {
  const out: Array<{ name: string; strip: boolean; expand: boolean }> = [];
  const re = /(?:^|[\s;&|(])\d*<<(-?)(?:"([^"<\s]+)"|'([^'<\s]+)'|([A-Za-z0-9_.\-/]+))/g;
  for (const m of args.matchAll(re)) {
    const quoted = m[2] ?? m[3];
    const name = quoted ?? m[4];
    if (name === undefined || name === '') continue;
    out.push({ name, strip: m[1] === '-', expand: quoted === undefined });
  }
  return out;
}

/** Parse one logical line (continuations joined) into an instruction. */
function instructionOf(path: string, text: string, line: number, inOnbuild: boolean): Instruction {
  const m = /^[ \t]*(\S+)[ \t]*([\s\S]*)$/.exec(text);
  if (!m) throw dockerfileError(path, line, 'empty instruction');
  const keyword = m[1]!.toUpperCase();
  if (!KEYWORDS.has(keyword)) {
    throw dockerfileError(path, line, `unknown instruction: ${m[1]!}`, 'see the Dockerfile reference for the instructions ferry build knows');
  }
  const rawArgs = m[2]!.replace(/[ \t\r]+$/, '');
  const { flags, rest } = keyword === 'ONBUILD' ? { flags: [], rest: rawArgs } : splitFlags(rawArgs);
  const instruction: Instruction = { keyword, flags, args: rest, text: text.trim(), line, heredocs: [] };
  if (keyword === 'ONBUILD') {
    if (inOnbuild) throw dockerfileError(path, line, 'ONBUILD ONBUILD is not allowed');
    if (rest === '') throw dockerfileError(path, line, 'ONBUILD needs an instruction');
    const inner = instructionOf(path, rest, line, true);
    if (inner.keyword === 'FROM' || inner.keyword === 'MAINTAINER') throw dockerfileError(path, line, `${inner.keyword} is not allowed as an ONBUILD trigger`);
    instruction.inner = inner;
  } else if (rest === '' && keyword !== 'RUN' && keyword !== 'CMD' && keyword !== 'ENTRYPOINT' && keyword !== 'HEALTHCHECK') {
    throw dockerfileError(path, line, `${keyword} requires at least one argument`);
  }
  return instruction;
}

export function parseDockerfile(text: string, path = 'Dockerfile'): Dockerfile {
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  let escape = '\\';
  let syntax: string | undefined;
  const seen = new Set<string>();
  let i = 0;
  // Directives: only at the very top, before any comment, blank line or instruction.
  for (; i < lines.length; i++) {
    const m = DIRECTIVE.exec(lines[i]!);
    if (!m || !KNOWN_DIRECTIVES.has(m[1]!.toLowerCase())) break;
    const key = m[1]!.toLowerCase();
    if (seen.has(key)) throw dockerfileError(path, i + 1, `only one ${key} parser directive can be used`);
    seen.add(key);
    if (key === 'escape') {
      if (m[2] !== '\\' && m[2] !== '`') throw dockerfileError(path, i + 1, `invalid escape token '${m[2]!}' does not match ' or \\`);
      escape = m[2]!;
    } else if (key === 'syntax') {
      syntax = m[2]!;
    }
  }
  // An odd number of escape characters at the end continues the line; `\\\\` is an escaped escape.
  const esc = escape === '\\' ? '\\\\' : '`';
  const trailing = new RegExp(`(${esc}+)[ \\t]*$`);
  const continuation = { test: (l: string): boolean => ((trailing.exec(l)?.[1]?.length ?? 0) % 2) === 1 };
  const stripContinuation = (l: string): string => l.replace(new RegExp(`${esc}[ \\t]*$`), '');
  const instructions: Instruction[] = [];
  while (i < lines.length) {
    const first = lines[i]!;
    const startLine = i + 1;
    i++;
    if (isComment(first) || first.trim() === '') continue;
    let logical = first.replace(/^[ \t]+/, '');
    let open = continuation.test(logical);
    if (open) logical = stripContinuation(logical);
    while (open && i < lines.length) {
      const next = lines[i]!;
      i++;
      // Comment and empty lines inside a continued instruction are skipped (the reference's rule).
      if (isComment(next) || next.trim() === '') continue;
      open = continuation.test(next);
      logical += open ? stripContinuation(next) : next;
    }
    const instruction = instructionOf(path, logical, startLine, false);
    const target = instruction.inner ?? instruction;
    if (HEREDOC_KEYWORDS.has(target.keyword)) {
      for (const marker of heredocMarkers(target.args)) {
        const body: string[] = [];
        let closed = false;
        while (i < lines.length) {
          const raw = lines[i]!;
          i++;
          const content = marker.strip ? raw.replace(/^\t+/, '') : raw;
          if (content === marker.name) {
            closed = true;
            break;
          }
          body.push(content);
        }
        if (!closed) {
          throw dockerfileError(path, startLine, `unterminated heredoc <<${marker.name}: no line "${marker.name}" ends it`, `end the heredoc with a line holding only ${marker.name}`);
        }
        target.heredocs.push({ name: marker.name, content: body.map((l) => `${l}\n`).join(''), expand: marker.expand });
      }
    }
    instructions.push(instruction);
  }
  return { path, escape, ...(syntax !== undefined ? { syntax } : {}), instructions };
}

/**
 * Split arguments into words the way the reference does for ENV/LABEL/ARG pairs and list forms:
 * on whitespace outside quotes; quotes and escapes are kept (expansion removes them later).
 */
export function splitWords(text: string, escape: string): string[] {
  const words: string[] = [];
  const chars = [...text];
  let word = '';
  let inWord = false;
  let quote: string | undefined;
  for (let p = 0; p < chars.length; p++) {
    let ch = chars[p]!;
    if (quote === undefined) {
      if (/\s/.test(ch)) {
        if (inWord) words.push(word);
        word = '';
        inWord = false;
        continue;
      }
      inWord = true;
      if (ch === '"' || ch === "'") quote = ch;
      else if (ch === escape) {
        if (p + 1 === chars.length) continue;
        word += ch;
        ch = chars[++p]!;
      }
      word += ch;
      continue;
    }
    if (ch === quote) quote = undefined;
    else if (ch === escape && quote !== "'") {
      if (p + 1 === chars.length) continue;
      word += ch;
      ch = chars[++p]!;
    }
    word += ch;
  }
  if (inWord) words.push(word);
  return words;
}

/** The exec (JSON array of strings) form of CMD/RUN/ENTRYPOINT/SHELL/COPY, or undefined (shell form). */
export function jsonForm(args: string): string[] | undefined {
  const t = args.trim();
  if (!t.startsWith('[')) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(t);
  } catch {
    // Not JSON: the reference then takes the text as the shell form, as written.
    return undefined;
  }
  if (!Array.isArray(v) || !v.every((x): x is string => typeof x === 'string')) return undefined;
  return v;
}

/**
 * ENV/LABEL pairs: `K=V K2="v 2"`, or the legacy `K value with spaces` (one pair). Keys and
 * values as written; the caller expands them.
 */
export function keyValuePairs(args: string, escape: string, keyword: string, path: string, line: number): Array<[string, string]> {
  const words = splitWords(args, escape);
  if (words.length === 0) throw dockerfileError(path, line, `${keyword} requires at least one argument`);
  if (!words[0]!.includes('=')) {
    if (keyword === 'LABEL') throw dockerfileError(path, line, `LABEL: "${words[0]!}" is not KEY=VALUE`);
    const m = /^\s*(\S+)\s+([\s\S]*)$/.exec(args);
    if (!m) throw dockerfileError(path, line, `${keyword} ${words[0]!} needs a value`, `write ${keyword} ${words[0]!}=VALUE`);
    return [[m[1]!, m[2]!.trim()]];
  }
  return words.map((w) => {
    const eq = w.indexOf('=');
    if (eq <= 0) throw dockerfileError(path, line, `${keyword}: "${w}" is not KEY=VALUE`);
    return [w.slice(0, eq), w.slice(eq + 1)];
  });
}
