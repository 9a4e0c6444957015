import { spawn, type ChildProcess } from 'node:child_process';
import { watch } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestHex, type Digest } from '../../src/oci/digest.js';
import { fsck, openStore, refName } from '../../src/store/index.js';
import { FERRY_BIN, REPO_ROOT, runFerry } from '../helpers/ferry.js';
import { memoryImage, type MemoryImage } from '../helpers/memory-image.js';
import { buildTar } from '../helpers/tar-builder.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

/**
 * kill -9 of `ferry import` at many moments: a seeded spread of delays across a whole import, and
 * kills keyed on what the import is doing (a blob ingest or a layer staging dir appearing in tmp/,
 * a refs.json rewrite). After each kill the next open sweeps tmp/, fsck finds nothing, no image is
 * half there, and importing again completes with fsck still clean.
 */
let work: string;
let bundle: string;
let images: Record<string, MemoryImage>;
/** How long a whole import works, from its first tmp/ entry to its exit. */
let workMs: number;
/** How many entries a whole import makes in tmp/ (lease, blob ingests, layer staging dirs, rewrites). */
let steps: number;

/** mulberry32: a small seeded PRNG, so a failing kill schedule can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A layer of `files` files of 64 KiB: half pseudo-random (so it stays a few MiB compressed), half text. */
function layer(name: string, files: number, seed: number): Buffer {
  const next = prng(seed);
  const entries = [{ name: `${name}/`, type: 'dir' as const }];
  const out: Array<{ name: string; type?: 'dir'; body?: Buffer }> = [...entries];
  for (let i = 0; i < files; i++) {
    const body = Buffer.alloc(64 * 1024);
    for (let j = 0; j < 32 * 1024; j += 4) body.writeUInt32LE(Math.floor(next() * 2 ** 32), j);
    body.fill(`${name} file ${i}\n`, 32 * 1024);
    out.push({ name: `${name}/f${i}`, body });
  }
  return buildTar(out);
}

async function writeLayout(dir: string, imgs: Record<string, MemoryImage>): Promise<void> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  const manifests = [];
  for (const [name, img] of Object.entries(imgs)) {
    for (const [digest, bytes] of img.blobs) await writeFile(join(dir, 'blobs', 'sha256', digestHex(digest as Digest)), bytes);
    manifests.push({ mediaType: img.mediaType, digest: img.digest, size: img.rawManifest.length, annotations: { 'org.opencontainers.image.ref.name': name } });
  }
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests }));
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  ms: number;
}

function startImport(root: string): { child: ChildProcess; done: Promise<Run> } {
  const started = Date.now();
  const child = spawn(process.execPath, [FERRY_BIN, '--root', root, 'import', '-q', bundle], { cwd: REPO_ROOT, stdio: 'ignore' });
  const done = new Promise<Run>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, ms: Date.now() - started }));
  });
  return { child, done };
}

/**
 * When to kill: a delay after the import first touches tmp/ (node start-up varies too much with
 * the machine's load to count from the spawn), or when the nth tmp/ entry (of a kind, or of any
 * kind: the import's own steps) appears, plus a delay.
 */
type Trigger = { delayMs: number } | { kind: 'blob' | 'layer' | 'refs' | 'any'; nth: number; thenMs: number };

function describeTrigger(t: Trigger): string {
  return 'delayMs' in t ? `work + ${t.delayMs} ms` : `${t.kind} #${t.nth} + ${t.thenMs} ms`;
}

/** Names in tmp/ are `<pid>.<start>-<random>-<kind>`. */
function kindOf(name: string): string {
  return name.slice(name.lastIndexOf('-') + 1);
}

/** Run one import into a fresh store and kill -9 it at the trigger. */
async function killedImport(root: string, trigger: Trigger): Promise<Run> {
  // The store exists (as on a host that imported before), so tmp/ can be watched from the start.
  await openStore({ root });
  const { child, done } = startImport(root);
  const kill = (): void => void child.kill('SIGKILL');
  let timer: NodeJS.Timeout | undefined;
  const seen = new Set<string>();
  const watcher = watch(join(root, 'tmp'), (_event, name) => {
    if (name === null || seen.has(name)) return;
    if ('delayMs' in trigger) {
      if (seen.size === 0) timer = setTimeout(kill, trigger.delayMs);
      seen.add(name);
      return;
    }
    if (trigger.kind !== 'any' && kindOf(name) !== trigger.kind) return;
    seen.add(name);
    if (seen.size !== trigger.nth) return;
    if (trigger.thenMs === 0) kill();
    else timer = setTimeout(kill, trigger.thenMs);
  });
  try {
    return await done;
  } finally {
    clearTimeout(timer);
    watcher.close();
  }
}

interface Outcome {
  trigger: string;
  killed: boolean;
  /** What the kill interrupted, read from the store before the next open sweeps it. */
  left: string[];
  refs: number;
  layers: number;
}

beforeAll(async () => {
  work = await makeTempDir('import-kill');
  const base = layer('base', 48, 1);
  images = {
    one: memoryImage([base, layer('one-a', 48, 2), layer('one-b', 48, 3)]),
    two: memoryImage([base, layer('two-a', 48, 4), layer('two-b', 48, 5)]),
    three: memoryImage([base, layer('three-a', 48, 6)]),
  };
  const layout = join(work, 'layout');
  await writeLayout(layout, images);
  bundle = join(work, 'kill.tar.zst');
  const e = await runFerry(['export', '-q', '--layers', 'as-pulled', '-o', bundle, ...Object.keys(images).map((n) => `oci:${layout}:${n}`)]);
  expect(e.code, e.stderr).toBe(0);
  // Time whole imports, and when they first touch tmp/, to spread the kills over the real work:
  // two at once, as the kill cycles below run.
  const timed = async (root: string): Promise<{ workMs: number; steps: number }> => {
    await openStore({ root });
    let workStarted: number | undefined;
    const steps = new Set<string>();
    const watcher = watch(join(root, 'tmp'), (_event, name) => {
      workStarted ??= Date.now();
      if (name !== null) steps.add(name);
    });
    const r = await startImport(root).done;
    watcher.close();
    expect(r.code).toBe(0);
    await rm(root, { recursive: true });
    return { workMs: Date.now() - (workStarted ?? Date.now()), steps: steps.size };
  };
  const runs = await Promise.all([timed(join(work, 'full-a')), timed(join(work, 'full-b'))]);
  // The shorter run: a kill planned past the end of a faster run is wasted.
  workMs = Math.min(...runs.map((r) => r.workMs));
  steps = Math.min(...runs.map((r) => r.steps));
}, 60_000);
afterAll(async () => {
  await removeDir(work);
});

/** The layout names the images one, two, three: they are imported as docker.io/library/NAME:latest. */
const expectedRefs = (): Record<string, string> => Object.fromEntries(Object.entries(images).map(([name, i]) => [refName(name), i.digest]));

describe('kill -9 during ferry import', () => {
  it('at 24 moments (10 seeded delays, 6 seeded steps, 8 keyed on blob/layer/refs entries): fsck is clean after each, and a re-import completes', async () => {
    const next = prng(20240611);
    const seeded: Trigger[] = [];
    // Stratified: one delay in each of 10 equal slices of the import's work, so all of it is covered.
    for (let i = 0; i < 10; i++) seeded.push({ delayMs: Math.round((workMs * (i + next())) / 10) });
    // And 6 at seeded steps of the import (the nth entry it makes in tmp/), a little after.
    for (let i = 0; i < 6; i++) seeded.push({ kind: 'any', nth: 1 + Math.floor(next() * steps), thenMs: Math.round(next() * 20) });
    const keyed: Trigger[] = [
      { kind: 'blob', nth: 1, thenMs: 0 },
      { kind: 'blob', nth: 7, thenMs: 15 },
      { kind: 'layer', nth: 1, thenMs: 0 },
      { kind: 'layer', nth: 3, thenMs: 40 },
      { kind: 'layer', nth: 6, thenMs: 80 },
      { kind: 'refs', nth: 1, thenMs: 0 },
      { kind: 'refs', nth: 2, thenMs: 0 },
      { kind: 'refs', nth: 3, thenMs: 0 },
    ];
    const want = expectedRefs();
    const cycle = async (i: number, trigger: Trigger): Promise<Outcome> => {
      const root = join(work, `store-${i}`);
      let t = trigger;
      let r = await killedImport(root, t);
      const missed: string[] = [];
      // A delay past this run's end (runs vary with the machine's load): that slot again, earlier.
      for (let tries = 0; r.signal !== 'SIGKILL' && 'delayMs' in t && tries < 3; tries++) {
        missed.push(`${describeTrigger(t)}: exit ${r.code} after ${r.ms} ms`);
        await rm(root, { recursive: true });
        t = { delayMs: Math.round(t.delayMs * 0.8) };
        r = await killedImport(root, t);
      }
      const peek = await openStore({ root, readOnly: true });
      const outcome: Outcome = {
        trigger: `${describeTrigger(t)}${missed.length > 0 ? ` (missed ${missed.join('; ')})` : ''}`,
        killed: r.signal === 'SIGKILL',
        left: [...new Set((await readdir(peek.tmpDir)).map(kindOf))].sort(),
        refs: (await peek.refs.list()).length,
        layers: (await peek.layers.list()).length,
      };
      // The next open sweeps tmp/ and mends l/; then nothing is wrong, and every name is whole.
      const store = await openStore({ root });
      expect((await fsck(store)).problems, outcome.trigger).toEqual([]);
      for (const ref of await store.refs.list()) expect(ref.manifestDigest, outcome.trigger).toBe(want[ref.name]);
      const again = await runFerry(['--root', root, 'import', '-q', bundle]);
      expect(again.code, `re-import after kill at ${outcome.trigger}: ${again.stderr}`).toBe(0);
      const after = await openStore({ root, readOnly: true });
      expect((await fsck(after)).problems, outcome.trigger).toEqual([]);
      expect(Object.fromEntries((await after.refs.list()).map((e) => [e.name, e.manifestDigest]))).toEqual(want);
      await rm(root, { recursive: true });
      return outcome;
    };
    // Two at a time: an import mostly waits for fsync/syncfs, and the kills stay independent (one store each).
    const triggers = [...seeded, ...keyed];
    const outcomes: Outcome[] = new Array<Outcome>(triggers.length);
    let nextIndex = 0;
    const worker = async (): Promise<void> => {
      for (let i = nextIndex++; i < triggers.length; i = nextIndex++) outcomes[i] = await cycle(i, triggers[i]!);
    };
    await Promise.all([worker(), worker()]);
    console.log(`import works ${workMs} ms in ${steps} tmp/ steps\n${outcomes.map((o) => `${o.trigger.padEnd(24)} killed=${o.killed} left=[${o.left.join(',')}] refs=${o.refs} layers=${o.layers}`).join('\n')}`);
    expect(outcomes.filter((o) => o.killed).length).toBeGreaterThanOrEqual(20);
    // The kills landed in each kind of work: a blob ingest, a layer unpack, the ref writes.
    expect(outcomes.some((o) => o.left.includes('blob'))).toBe(true);
    expect(outcomes.some((o) => o.left.includes('layer'))).toBe(true);
    expect(outcomes.some((o) => o.left.includes('refs') || (o.refs > 0 && o.refs < 3))).toBe(true);
  }, 120_000);
});
