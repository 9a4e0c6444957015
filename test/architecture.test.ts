import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, posix, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ts from 'typescript';
import { describe, expect, it } from 'vitest';

/**
 * DESIGN's "Layout and who may import what", enforced. Imports point inward:
 *   errors.ts imports nothing; oci/ only oci/ and errors.ts (and node:*); io/ adds io/ and packages;
 *   the locations registry/, archive/, bundle/, store/ never import each other, transfer/, runtime/
 *   or cli/; transfer/ sees only interfaces (no location); runtime/ may use store/'s public API
 *   (store/index.js, or store/read.js, its read API for the start path); verbs/ (the use cases: a source, a destination, copyImages) wires locations to
 *   transfer/ (commit and build too: the runtime or the builder makes the image, handed a copy
 *   into the store), and only cli/ and index.ts import it; build/ may use store/ and runtime/ (a
 *   copy to the store whose RUN steps go through the runtime); nothing imports cli/. Type-only imports count: a type is a
 *   dependency too. Also: relative specifiers end in .js, no default exports, no `any`.
 */

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'src');

type Area =
  | 'errors' | 'index' | 'oci' | 'io' | 'registry' | 'archive' | 'bundle' | 'store' | 'transfer' | 'runtime' | 'build' | 'verbs' | 'cli';

const FOLDERS = new Set<Area>(['oci', 'io', 'registry', 'archive', 'bundle', 'store', 'transfer', 'runtime', 'build', 'verbs', 'cli']);
const LOCATIONS: Area[] = ['registry', 'archive', 'bundle', 'store'];
const INNER: Area[] = ['oci', 'io', 'errors'];

interface Rule {
  areas: Area[];          // src areas this area may import (besides node:*)
  packages: boolean;      // may import npm packages
}

const RULES: Record<Area, Rule> = {
  errors: { areas: [], packages: false },
  oci: { areas: ['oci', 'errors'], packages: false },
  io: { areas: ['oci', 'io', 'errors'], packages: true },
  registry: { areas: ['registry', ...INNER], packages: true },
  archive: { areas: ['archive', ...INNER], packages: true },
  bundle: { areas: ['bundle', ...INNER], packages: true },
  store: { areas: ['store', ...INNER], packages: true },
  transfer: { areas: ['transfer', ...INNER], packages: true },
  runtime: { areas: ['runtime', 'store', ...INNER], packages: true },
  // A location-to-store copy (Dockerfile + context -> store) whose RUN steps go through the runtime.
  build: { areas: ['build', 'store', 'runtime', ...INNER], packages: true },
  // The use cases: each wires a source location and a destination to transfer's copyImages
  // (commit and build: the runtime or the builder makes the image, the engine stores it).
  verbs: { areas: ['verbs', 'transfer', 'runtime', 'build', ...LOCATIONS, ...INNER], packages: true },
  cli: { areas: ['cli', 'index', 'verbs', 'transfer', 'runtime', 'build', ...LOCATIONS, ...INNER], packages: true },
  index: { areas: ['verbs', 'transfer', 'runtime', 'build', ...LOCATIONS, ...INNER], packages: true },
};

/**
 * cli/ holds only the entry points, output, progress, option parsing and one file per command;
 * library logic lives in its room (the locations, transfer/, verbs/).
 */
const CLI_FILES = new Set([
  'cli/main.ts', 'cli/packed-main.ts', // entry points
  'cli/output.ts', 'cli/image-json.ts', 'cli/progress.ts', // what is printed
  'cli/registry-options.ts', 'cli/store-options.ts', 'cli/bundle-file.ts', // option parsing (--root, --ca-file, -f FILE)
]);
const isCliFile = (path: string): boolean => CLI_FILES.has(path) || /^cli\/commands\/[a-z-]+\.ts$/.test(path);

/**
 * The one concurrency limit is the transfer engine's: p-limit only in transfer/. A location that
 * bounds its own streams (the registry client's blob slots; a bundle measures its layers in copyImages)
 * takes an oci/ Limiter from its caller, made by transfer/concurrencyLimit. No exceptions.
 */

/** A property's name when it is written plainly: `a`, `'a'`, `["a"]`. */
function propertyName(name: ts.PropertyName | ts.Expression): string | undefined {
  if (ts.isIdentifier(name) || ts.isStringLiteralLike(name) || ts.isPrivateIdentifier(name)) return name.text;
  if (ts.isComputedPropertyName(name)) return propertyName(name.expression);
  return undefined;
}

/**
 * Images change only in oci/ (DESIGN: "pure functions over raw bytes"). What marks a manifest,
 * index or config being made: an object literal with `diff_ids` or an object as `rootfs` (a config), or with
 * `schemaVersion` beside `layers` or `manifests` (a manifest or an index); or an assignment to
 * `.rootfs`, `.diff_ids` or `.schemaVersion` (one rewritten in place). The store's own records
 * (inventory, refs.json) have a `schemaVersion` of 1, and a container's `rootfs` is a path.
 */
function imageJsonShape(node: ts.Node): string | undefined {
  if (ts.isObjectLiteralExpression(node)) {
    const values = new Map<string, ts.Node>();
    for (const p of node.properties) {
      const name = p.name === undefined ? undefined : propertyName(p.name);
      if (name !== undefined) values.set(name, ts.isPropertyAssignment(p) ? p.initializer : p);
    }
    const rootfs = values.get('rootfs');
    if (values.has('diff_ids') || (rootfs !== undefined && ts.isObjectLiteralExpression(rootfs))) return 'an image config';
    // Image JSON is schemaVersion 2; the store's own records (inventory, refs.json) are version 1.
    const version = values.get('schemaVersion');
    const own = version !== undefined && ts.isNumericLiteral(version) && version.text !== '2';
    if (version !== undefined && !own && (values.has('layers') || values.has('manifests'))) return 'a manifest or index';
    return undefined;
  }
  if (ts.isBinaryExpression(node) && node.operatorToken.kind === ts.SyntaxKind.EqualsToken) {
    const left = node.left;
    const name = ts.isPropertyAccessExpression(left) ? left.name.text : ts.isElementAccessExpression(left) ? propertyName(left.argumentExpression) : undefined;
    if (name === 'rootfs' || name === 'diff_ids' || name === 'schemaVersion') return `an image's ${name}`;
  }
  return undefined;
}

/** The area of a path relative to src/ ('registry/auth.ts' -> registry), or undefined if unknown. */
function areaOf(srcPath: string): Area | undefined {
  if (srcPath === 'errors.ts') return 'errors';
  if (srcPath === 'index.ts') return 'index';
  const top = srcPath.split('/')[0] as Area;
  return srcPath.includes('/') && FOLDERS.has(top) ? top : undefined;
}

interface Found {
  specifier: string;
  line: number;
}

/** Every module specifier of a file: imports, re-exports, dynamic import(), import('x').T types. */
function specifiersOf(source: ts.SourceFile): Found[] {
  const found: Found[] = [];
  const add = (node: ts.Node, literal: ts.Expression | ts.TypeNode | undefined): void => {
    if (literal === undefined) return;
    let text: string | undefined;
    if (ts.isStringLiteralLike(literal as ts.Node)) text = (literal as ts.StringLiteralLike).text;
    else if (ts.isLiteralTypeNode(literal as ts.Node) && ts.isStringLiteral((literal as ts.LiteralTypeNode).literal)) {
      text = ((literal as ts.LiteralTypeNode).literal as ts.StringLiteral).text;
    }
    if (text === undefined) return;
    found.push({ specifier: text, line: source.getLineAndCharacterOfPosition(node.getStart(source)).line + 1 });
  };
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) add(node, node.moduleSpecifier);
    else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) {
      add(node, node.moduleReference.expression);
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) add(node, node.arguments[0]);
    else if (ts.isImportTypeNode(node)) add(node, node.argument);
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

/** The rule violations in a set of sources keyed by their path relative to src/. */
function checkSources(files: Map<string, string>): string[] {
  const problems: string[] = [];
  for (const [path, text] of files) {
    const source = ts.createSourceFile(path, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
    const area = areaOf(path);
    const where = (line: number): string => `src/${path}:${line}`;
    if (area === undefined) {
      problems.push(`src/${path}: not in DESIGN's layout (add its folder to DESIGN and to this test's rules)`);
      continue;
    }
    const rule = RULES[area];
    if (area === 'cli' && !isCliFile(path)) {
      problems.push(`src/${path}: cli/ holds only main, output, progress, option parsing and commands/*.ts; move this logic to its room`);
    }
    for (const { specifier, line } of specifiersOf(source)) {
      if (specifier === 'p-limit' && area !== 'transfer') {
        problems.push(`${where(line)}: p-limit only in transfer/ (the one concurrency limit of copyImages)`);
      }
      if (specifier.startsWith('node:')) {
        if (area === 'errors') problems.push(`${where(line)}: errors.ts imports nothing, but imports ${specifier}`);
        continue;
      }
      if (!specifier.startsWith('.')) {
        if (!rule.packages) problems.push(`${where(line)}: ${area}/ may not import the package "${specifier}"`);
        continue;
      }
      if (!specifier.endsWith('.js')) problems.push(`${where(line)}: relative import "${specifier}" must end in .js`);
      const target = posix.normalize(posix.join(posix.dirname(path), specifier)).replace(/\.js$/, '.ts');
      if (target.startsWith('../')) {
        problems.push(`${where(line)}: "${specifier}" leaves src/`);
        continue;
      }
      const targetArea = areaOf(target);
      if (path.startsWith('registry/http/') && ['registry/client.ts', 'registry/blob-download.ts', 'registry/blob-upload.ts', 'registry/registry-destination.ts'].includes(target)) {
        problems.push(`${where(line)}: the registry client's layers (registry/http/) stand alone: ${path} may not import "${specifier}", which composes them`);
      }
      if (targetArea === undefined) {
        problems.push(`${where(line)}: "${specifier}" points outside DESIGN's layout`);
      } else if (targetArea === 'cli' && area !== 'cli') {
        problems.push(`${where(line)}: nothing imports cli/, but ${area} imports "${specifier}"`);
      } else if (area === 'runtime' && targetArea === 'store' && target !== 'store/index.ts' && target !== 'store/read.ts') {
        problems.push(`${where(line)}: runtime/ uses the store's public API (store/index.js, or store/read.js on the start path), not "${specifier}"`);
      } else if (!rule.areas.includes(targetArea)) {
        problems.push(`${where(line)}: ${area === 'errors' || area === 'index' ? `${area}.ts` : `${area}/`} may not import ${targetArea === 'errors' || targetArea === 'index' ? `${targetArea}.ts` : `${targetArea}/`} ("${specifier}")`);
      }
    }
    const visit = (node: ts.Node): void => {
      const line = (): number => source.getLineAndCharacterOfPosition(node.getStart(source)).line + 1;
      if (ts.isExportAssignment(node)) problems.push(`${where(line())}: default export (named exports only)`);
      if (ts.canHaveModifiers(node) && ts.getModifiers(node)?.some((m) => m.kind === ts.SyntaxKind.DefaultKeyword)) {
        problems.push(`${where(line())}: default export (named exports only)`);
      }
      if (ts.isExportSpecifier(node) && node.name.text === 'default') {
        problems.push(`${where(line())}: default export (named exports only)`);
      }
      if (node.kind === ts.SyntaxKind.AnyKeyword) problems.push(`${where(line())}: \`any\` (use unknown and narrow)`);
      if (area !== 'oci') {
        const shape = imageJsonShape(node);
        if (shape !== undefined) problems.push(`${where(line())}: ${shape} built outside oci/ (images change in one place: call oci/build-image.ts)`);
      }
      ts.forEachChild(node, visit);
    };
    visit(source);
  }
  return problems;
}

async function listTs(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await listTs(full)));
    else if (entry.isFile() && entry.name.endsWith('.ts')) out.push(full);
  }
  return out;
}

describe('architecture', () => {
  it('src/ follows DESIGN: imports point inward, named exports only, no any', async () => {
    const files = new Map<string, string>();
    for (const file of await listTs(SRC)) {
      files.set(relative(SRC, file).split('\\').join('/'), await readFile(file, 'utf8'));
    }
    expect(files.size).toBeGreaterThan(10);
    expect(checkSources(files)).toEqual([]);
  });

  // The checker must be able to fail: each rule, broken on purpose.
  const check = (path: string, text: string): string[] => checkSources(new Map([[path, text]]));

  it('catches a location importing another location, also through types and import()', () => {
    expect(check('registry/a.ts', "import { x } from '../bundle/format.js';")).toEqual([
      'src/registry/a.ts:1: registry/ may not import bundle/ ("../bundle/format.js")',
    ]);
    expect(check('store/a.ts', "import type { X } from '../archive/b.js';")).toHaveLength(1);
    expect(check('bundle/a.ts', "export { y } from '../store/c.js';")).toHaveLength(1);
    expect(check('archive/a.ts', "const m = await import('../registry/d.js');")).toHaveLength(1);
    expect(check('archive/a.ts', "let t: import('../registry/d.js').T;")).toHaveLength(1);
    expect(check('store/a.ts', "import { t } from '../transfer/t.js';")).toHaveLength(1);
    expect(check('registry/a.ts', "import { r } from '../runtime/r.js';")).toHaveLength(1);
    expect(check('registry/a.ts', "import { r } from '../index.js';")).toHaveLength(1);
  });

  it('catches oci/ reaching outwards or to packages, and errors.ts importing anything', () => {
    expect(check('oci/a.ts', "import { v } from '../io/zstd.js';")).toEqual([
      'src/oci/a.ts:1: oci/ may not import io/ ("../io/zstd.js")',
    ]);
    expect(check('oci/a.ts', "import { v } from 'tar';")).toHaveLength(1);
    expect(check('oci/a.ts', "import { v } from './digest.js';\nimport { e } from '../errors.js';\nimport { c } from 'node:crypto';")).toEqual([]);
    expect(check('errors.ts', "import { c } from 'node:util';")).toHaveLength(1);
    expect(check('errors.ts', "import { c } from './oci/digest.js';")).toHaveLength(1);
    expect(check('io/a.ts', "import { r } from '../registry/transport.js';")).toHaveLength(1);
    expect(check('io/a.ts', "import { d } from '../oci/digest.js';\nimport { z } from 'zstd-napi';")).toEqual([]);
  });

  it('catches transfer/ naming a location, anything importing cli/, and runtime/ limits', () => {
    expect(check('transfer/a.ts', "import { s } from '../store/refs.js';")).toHaveLength(1);
    expect(check('transfer/a.ts', "import type { Image } from '../oci/image.js';")).toEqual([]);
    expect(check('runtime/a.ts', "import { s } from '../store/index.js';")).toEqual([]);
    expect(check('runtime/a.ts', "import { s } from '../store/refs.js';")).toEqual([
      'src/runtime/a.ts:1: runtime/ uses the store\'s public API (store/index.js, or store/read.js on the start path), not "../store/refs.js"',
    ]);
    expect(check('runtime/a.ts', "import { c } from '../transfer/copy-images.js';")).toHaveLength(1);
    expect(check('runtime/a.ts', "import { v } from '../verbs/pull.js';")).toHaveLength(1);
    expect(check('store/a.ts', "import { v } from '../verbs/pull.js';")).toHaveLength(1);
    expect(check('transfer/a.ts', "import { v } from '../verbs/pull.js';")).toHaveLength(1);
    expect(check('verbs/a.ts', "import { c } from '../transfer/copy-images.js';\nimport { s } from '../store/index.js';")).toEqual([]);
    expect(check('verbs/a.ts', "import { c } from '../cli/output.js';")).toHaveLength(1);
    expect(check('verbs/a.ts', "import { b } from '../build/builder.js';\nimport { r } from '../runtime/commit.js';")).toEqual([]);
    expect(check('build/a.ts', "import { v } from '../verbs/build.js';")).toHaveLength(1);
    expect(check('runtime/a.ts', "import { b } from '../bundle/format.js';")).toHaveLength(1);
    expect(check('build/a.ts', "import { r } from '../runtime/containers.js';\nimport { s } from '../store/index.js';")).toEqual([]);
    expect(check('build/a.ts', "import { r } from '../registry/client.js';")).toHaveLength(1);
    expect(check('build/a.ts', "import { t } from '../transfer/copy.js';")).toHaveLength(1);
    expect(check('runtime/a.ts', "import { b } from '../build/builder.js';")).toHaveLength(1);
    expect(check('store/a.ts', "import { b } from '../build/cache.js';")).toHaveLength(1);
    expect(check('index.ts', "export { main } from './cli/main.js';")).toEqual([
      "src/index.ts:1: nothing imports cli/, but index imports \"./cli/main.js\"",
    ]);
    expect(check('cli/commands/x.ts', "import { r } from '../../registry/transport.js';\nimport { o } from '../output.js';")).toEqual([]);
  });

  it('catches p-limit outside transfer/, and library logic in cli/', () => {
    expect(check('transfer/a.ts', "import pLimit from 'p-limit';")).toEqual([]);
    expect(check('store/a.ts', "import pLimit from 'p-limit';")).toEqual(['src/store/a.ts:1: p-limit only in transfer/ (the one concurrency limit of copyImages)']);
    expect(check('archive/a.ts', "import { type LimitFunction } from 'p-limit';")).toHaveLength(1);
    expect(check('cli/commands/a.ts', "import pLimit from 'p-limit';")).toHaveLength(1);
    // The former debts are rules like any other file now.
    expect(check('registry/client.ts', "import pLimit, { type LimitFunction } from 'p-limit';")).toHaveLength(1);
    expect(check('bundle/write-bundle.ts', "import pLimit from 'p-limit';")).toHaveLength(1);
    expect(check('registry/client.ts', "import { unlimited, type Limiter } from '../oci/limiter.js';")).toEqual([]);
    expect(check('cli/commands/pull.ts', 'export const x = 1;')).toEqual([]);
    expect(check('registry/http/redirects.ts', "import { RegistryClient } from '../client.js';")).toEqual([
      'src/registry/http/redirects.ts:1: the registry client\'s layers (registry/http/) stand alone: registry/http/redirects.ts may not import "../client.js", which composes them',
    ]);
    expect(check('registry/http/retry.ts', "import { withRetry } from '../retry.js';")).toEqual([]);
    expect(check('cli/main.ts', 'export const x = 1;')).toEqual([]);
    expect(check('cli/import-bundle.ts', 'export const x = 1;')).toEqual([
      'src/cli/import-bundle.ts: cli/ holds only main, output, progress, option parsing and commands/*.ts; move this logic to its room',
    ]);
    expect(check('cli/commands/deep/a.ts', 'export const x = 1;')).toHaveLength(1);
  });

  it('catches a manifest, index or config made outside oci/', () => {
    const manifest = 'export const m = { schemaVersion: 2, mediaType: t, config: c, layers: [] };';
    expect(check('runtime/a.ts', manifest)).toEqual(['src/runtime/a.ts:1: a manifest or index built outside oci/ (images change in one place: call oci/build-image.ts)']);
    expect(check('oci/a.ts', manifest)).toEqual([]);
    expect(check('bundle/a.ts', "const i = { 'schemaVersion': 2, manifests: entries };")).toHaveLength(1);
    expect(check('build/a.ts', 'const c = { ...base, rootfs: { type: "layers", diff_ids: ids } };')).toEqual([
      'src/build/a.ts:1: an image config built outside oci/ (images change in one place: call oci/build-image.ts)',
      'src/build/a.ts:1: an image config built outside oci/ (images change in one place: call oci/build-image.ts)',
    ]);
    expect(check('transfer/a.ts', 'json.rootfs = { ...json.rootfs, diff_ids: d };')).toHaveLength(2);
    expect(check('transfer/a.ts', "json['diff_ids'] = d;")).toEqual(["src/transfer/a.ts:1: an image's diff_ids built outside oci/ (images change in one place: call oci/build-image.ts)"]);
    // Records of the store's own (refs.json) and reading a config are fine.
    expect(check('store/a.ts', 'const r = { schemaVersion: 1, refs: [], layers };\nconst d = config.rootfs.diff_ids;\nconst p = { rootfs: join(dir, "rootfs") };')).toEqual([]);
    expect(check('verbs/a.ts', 'const i = { schemaVersion: v, layers };')).toHaveLength(1);
  });

  it('catches default exports, any, specifiers without .js and files outside the layout', () => {
    expect(check('oci/a.ts', 'export default function f() {}')).toHaveLength(1);
    expect(check('oci/a.ts', 'const x = 1;\nexport default x;')).toEqual(['src/oci/a.ts:2: default export (named exports only)']);
    expect(check('oci/a.ts', 'const x = 1;\nexport { x as default };')).toHaveLength(1);
    expect(check('oci/a.ts', 'export function f(v: any) { return v; }')).toEqual(['src/oci/a.ts:1: `any` (use unknown and narrow)']);
    expect(check('oci/a.ts', 'export const y = JSON.parse("1") as any;')).toHaveLength(1);
    expect(check('oci/a.ts', '// a comment about any type\nexport const s = "as any";')).toEqual([]);
    expect(check('oci/a.ts', "import { d } from './digest';")).toEqual(['src/oci/a.ts:1: relative import "./digest" must end in .js']);
    expect(check('utils.ts', 'export const u = 1;')).toHaveLength(1);
  });
});
