import { describe, expect, it } from 'vitest';
import { isFerryError } from '../../src/errors.js';
import { IgnoreMatcher } from '../../src/build/dockerignore.js';
import { jsonForm, keyValuePairs, parseDockerfile, splitWords } from '../../src/build/dockerfile.js';

/** The Dockerfile's syntax, case by case, after the reference and its parser test files. */
const parse = (text: string) => parseDockerfile(text, 'Dockerfile').instructions;

describe('parseDockerfile', () => {
  it('reads directives only at the top; syntax is noted, nothing fetched', () => {
    const df = parseDockerfile('# syntax=docker/dockerfile:1\n# escape=`\nFROM x\n', 'Dockerfile');
    expect(df.escape).toBe('`');
    expect(df.syntax).toBe('docker/dockerfile:1');
    expect(parseDockerfile('FROM x\n# escape=`\n', 'D').escape).toBe('\\');
    expect(parseDockerfile('# comment\n# escape=`\nFROM x\n', 'D').escape).toBe('\\');
    expect(() => parseDockerfile('# escape=x\nFROM a\n', 'D')).toThrow(/invalid escape token/);
  });

  it('joins continuations, drops comment and empty lines inside them, keeps an escaped escape at the end', () => {
    const ins = parse('FROM a\nRUN echo one \\\n# a comment\n\n    two\nENV C trailing\\\\backslash\\\\\nENV D x\nENV E hello\\\n\\\nworld\n');
    expect(ins.map((i) => [i.keyword, i.args, i.line])).toEqual([
      ['FROM', 'a', 1],
      ['RUN', 'echo one     two', 2],
      ['ENV', 'C trailing\\\\backslash\\\\', 6],
      ['ENV', 'D x', 7],
      ['ENV', 'E helloworld', 8],
    ]);
  });

  it('uses the escape directive for continuations', () => {
    const ins = parse('# escape=`\nFROM a\nRUN dir c:\\ `\n  /s\n');
    expect(ins[1]!.args).toBe('dir c:\\   /s');
  });

  it('splits flags from arguments and keeps the instruction text', () => {
    const [, copy] = parse('FROM a\ncopy --from=b --chown=1:2 src dst\n');
    expect(copy).toMatchObject({ keyword: 'COPY', flags: ['--from=b', '--chown=1:2'], args: 'src dst', text: 'copy --from=b --chown=1:2 src dst', line: 2 });
  });

  it('reads heredoc bodies after the line, several per instruction, <<- stripping tabs', () => {
    const ins = parse('FROM a\nCOPY <<one <<"two" /dst/\n1 $X\none\n2 $X\ntwo\nRUN <<-EOT\n\techo hi\n\tEOT\nCMD x\n');
    expect(ins[1]!.heredocs).toEqual([
      { name: 'one', content: '1 $X\n', expand: true },
      { name: 'two', content: '2 $X\n', expand: false },
    ]);
    expect(ins[2]!.heredocs).toEqual([{ name: 'EOT', content: 'echo hi\n', expand: true }]);
    expect(ins[3]).toMatchObject({ keyword: 'CMD', line: 10 });
    // Not a heredoc: a here-string.
    expect(parse('FROM a\nRUN cat <<<x\n')[1]!.heredocs).toEqual([]);
  });

  it('refuses unknown instructions and unterminated heredocs, naming the line', () => {
    for (const [text, message] of [
      ['FROM a\n\nBOGUS x\n', /^Dockerfile:3: unknown instruction: BOGUS$/],
      ['FROM a\nRUN <<EOF\nnever ends\n', /^Dockerfile:2: unterminated heredoc <<EOF/],
      ['FROM a\nONBUILD ONBUILD RUN x\n', /^Dockerfile:2: ONBUILD ONBUILD is not allowed/],
      ['FROM a\nENV\n', /^Dockerfile:2: ENV requires at least one argument/],
    ] as const) {
      let caught: unknown;
      try {
        parse(text);
      } catch (err) {
        caught = err;
      }
      expect(isFerryError(caught, 'DOCKERFILE_INVALID'), text).toBe(true);
      expect((caught as Error).message).toMatch(message);
    }
  });

  it('parses ONBUILD triggers as instructions', () => {
    expect(parse('FROM a\nONBUILD COPY --chown=1 x /y\n')[1]!.inner).toMatchObject({ keyword: 'COPY', flags: ['--chown=1'], args: 'x /y' });
  });
});

describe('argument forms', () => {
  it('JSON (exec) form only for a JSON array of strings; anything else is shell form', () => {
    expect(jsonForm('["a", "b c"]')).toEqual(['a', 'b c']);
    expect(jsonForm("['a']")).toBeUndefined();
    expect(jsonForm('["a", 1]')).toBeUndefined();
    expect(jsonForm('[ "unterminated"')).toBeUndefined();
    expect(jsonForm('echo [x]')).toBeUndefined();
  });

  it('ENV and LABEL pairs, the legacy one-pair form, quotes kept for expansion', () => {
    expect(keyValuePairs('A=1 B="two words" C=x\\ y', '\\', 'ENV', 'D', 1)).toEqual([['A', '1'], ['B', '"two words"'], ['C', 'x\\ y']]);
    expect(keyValuePairs('NAME value with  spaces', '\\', 'ENV', 'D', 1)).toEqual([['NAME', 'value with  spaces']]);
    expect(() => keyValuePairs('novalue', '\\', 'LABEL', 'D', 4)).toThrow(/D:4: LABEL: "novalue" is not KEY=VALUE/);
  });

  it('splits words on unquoted whitespace', () => {
    expect(splitWords(`a "b c" 'd e' f\\ g`, '\\')).toEqual(['a', '"b c"', "'d e'", 'f\\ g']);
  });
});

describe('.dockerignore', () => {
  const m = new IgnoreMatcher('# comment\n*.log\n/build\n**/tmp\ndocs\n!docs/keep.md\nsecret?.txt\n[ab].bin\n');
  it.each([
    ['x.log', true],
    ['dir/x.log', false],
    ['build', true],
    ['build/out/a', true],
    ['tmp', true],
    ['a/b/tmp/c', true],
    ['docs/readme.md', true],
    ['docs/keep.md', false],
    ['secret1.txt', true],
    ['secret12.txt', false],
    ['a.bin', true],
    ['c.bin', false],
    ['src/main.c', false],
  ])('%s ignored: %s', (path, ignored) => {
    expect(m.ignored(path)).toBe(ignored);
  });
  it('knows an excluded directory may hold an exception', () => {
    expect(m.mayHoldExceptions('docs')).toBe(true);
    expect(m.mayHoldExceptions('build')).toBe(false);
  });
});
