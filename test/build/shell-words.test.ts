import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { expandWord, expandWords, ExpansionError } from '../../src/build/shell-words.js';

/**
 * Expansion cases from the Dockerfile reference's lexer tests (BuildKit's shell/envVarTest and
 * wordsTest), as a table: input | expected ("error" = must fail). Environment as there.
 */
const ENV: Record<string, string> = { PWD: '/home', SHELL: 'bash', KOREAN: '한국어', NULL: '' };
const lookup = (name: string): string | undefined => ENV[name];

const CASES = readFileSync(join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'expansion-cases.txt'), 'utf8');

describe('expandWord: the reference lexer cases', () => {
  const rows = CASES.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#')).map((l) => {
    const bar = l.lastIndexOf('|');
    return [l.slice(0, bar).trimEnd(), l.slice(bar + 1)] as const;
  });
  it.each(rows)('%s -> %s', (input, expected) => {
    if (expected === 'error') expect(() => expandWord(input, lookup)).toThrow(ExpansionError);
    else expect(expandWord(input, lookup)).toBe(expected);
  });
  it('uses the escape directive character instead of backslash', () => {
    expect(expandWord('C:\\dir`$PWD', lookup, '`')).toBe('C:\\dir$PWD');
  });
});

describe('expandWords: splitting on unquoted whitespace', () => {
  const env: Record<string, string> = { space: 'abc  def', leading: '  ab c', trailing: 'ab c   ', hi: 'hi' };
  const words = (s: string): string[] => expandWords(s, (n) => env[n]);
  it('splits expansions, keeps quoted text whole', () => {
    expect(words('hello${hi}bye')).toEqual(['hellohibye']);
    expect(words('hello${space}bye')).toEqual(['helloabc', 'defbye']);
    expect(words('hello"${space}"bye')).toEqual(['helloabc  defbye']);
    expect(words('hello "${space}"bye')).toEqual(['hello', 'abc  defbye']);
    expect(words('hello${leading}def')).toEqual(['hello', 'ab', 'cdef']);
    expect(words('hello${trailing}d')).toEqual(['helloab', 'c', 'd']);
    expect(words('hello\\ there')).toEqual(['hello there']);
    expect(words('hello\\" there')).toEqual(['hello"', 'there']);
    expect(words("hello'$there'")).toEqual(['hello$there']);
    expect(() => words('hello" there')).toThrow(ExpansionError);
  });
});
