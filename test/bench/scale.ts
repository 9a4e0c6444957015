import { access, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildScaleLayout } from '../helpers/test-images.js';
import { Bench, FERRY, REPO, rss, wall } from './context.js';
import { writeFloorScript } from './import.js';
import { median, note, sh, type Contender, type Measured } from './measure.js';
import { isNumber, missing, type Value } from './report.js';

/** Image counts of the synthetic layouts; BENCH_SCALE="25 100" picks others (smallest and largest are compared). */
function scaleSizes(): number[] {
  const text = process.env.BENCH_SCALE?.trim();
  if (text === undefined || text === '') return [25, 100, 400, 1600];
  const sizes = text.split(/[\s,]+/).map(Number);
  for (const n of sizes) if (!Number.isInteger(n) || n < 1) throw new Error(`BENCH_SCALE="${text}": expected whole numbers >= 1`);
  return [...new Set(sizes)].sort((a, b) => a - b);
}

/** Measures the header's own cost (see the script). */
const HEADER_COST = join(REPO, 'test', 'bench', 'header-cost.js');

/** Unique bytes per image in the scale layouts. */
const UNIQUE_BYTES = 64 * 1024;

/**
 * The layout of `n` images, `unique` bytes of its own each (kept between benches: the builder is
 * deterministic), and its bundle definition.
 */
async function scaleLayout(b: Bench, n: number, unique = UNIQUE_BYTES): Promise<{ dir: string; definition: string }> {
  const name = unique === UNIQUE_BYTES ? `scale-${n}` : `scale-${n}-${unique / 1024}KiB`;
  const dir = b.path(name);
  const definition = b.path(`${name}.yaml`);
  try {
    await access(`${dir}/index.json`);
    await access(definition);
  } catch {
    const started = Date.now();
    await sh(`rm -rf ${dir}`);
    const names = await buildScaleLayout(dir, n, unique);
    await writeFile(definition, ['name: scale', 'images:', ...names.map((name) => `  - oci:${dir}:${name}`), ''].join('\n'));
    note(`scale: built a layout of ${n} images (${unique / 1024} KiB each) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
  return { dir, definition };
}

const perImage = (v: Value, n: number): Value => (isNumber(v) ? v / n : v);

/**
 * ferry at 25 to 1600 images (a shared busybox base, one 64 KiB layer of its own each): export,
 * ls, import (next to the floor, zstd -d | tar -x per layer), images, run and fsck, each size
 * interleaved with the others run by run. Time per image and peak RSS should not grow with the
 * number of images; the per-layer overhead of import is its time above the floor per layer.
 */
export async function scaleSection(b: Bench): Promise<void> {
  const s = 'scale: synthetic layouts, a shared base and one 64 KiB layer per image';
  const sizes = scaleSizes();
  const small = sizes[0]!;
  const large = sizes[sizes.length - 1]!;
  const bundle = (n: number): string => b.path(`scale-${n}.tar.zst`);
  const store = (n: number): string => b.path(`scale-store-${n}`);
  const floor = (n: number): string => b.path(`scale-floor-${n}`);
  const layouts = new Map<number, { dir: string; definition: string }>();
  for (const n of sizes) layouts.set(n, await scaleLayout(b, n));
  const definition = (n: number): string => layouts.get(n)!.definition;

  const m = new Map<string, Measured | Error>();
  const race = async (contenders: Contender[]): Promise<void> => {
    for (const [id, r] of await b.race(contenders)) m.set(id, r);
  };
  await race(sizes.map((n) => ({ id: `scale.export-${n}`, prep: `rm -f ${bundle(n)}`, command: `${FERRY} export -q -f ${definition(n)} -o ${bundle(n)} && sync` })));
  // The default 128 MiB zstd window fills with the images' unique bytes (64 KiB each: 100 MiB at
  // 1600), in the compressor and the decompressor alike; a 1 MiB window is filled at every size.
  const ends = [...new Set([small, large])];
  const w20 = (n: number): string => `${bundle(n)}.w20`;
  await race(ends.map((n) => ({ id: `scale.export-w20-${n}`, prep: `rm -f ${w20(n)}`, command: `${FERRY} export -q --window-log 20 -f ${definition(n)} -o ${w20(n)} && sync` })));
  await race(ends.map((n) => ({ id: `scale.import-w20-${n}`, prep: b.discard(`${store(n)}-w20`), command: `${FERRY} --root ${store(n)}-w20 import -q ${w20(n)} >/dev/null && sync` })));
  // zstd alone on the same streams, at both ends and both windows: the tool whose bytes ferry must
  // match grows with the images' bytes too (its worker jobs, and the default window's history).
  // ferry's growth less zstd's own is what ferry itself keeps.
  // Each window's own stream: the bundle header in it records the window.
  const stream = (compressed: string): string => compressed.replace(/\.tar\.zst(\.w20)?$/, '$1.tar');
  const compressed = ends.flatMap((n) => [bundle(n), w20(n)]);
  for (const c of compressed) await sh(`zstd -q -d --long=31 -f ${c} -o ${stream(c)}`);
  await race(
    ends.flatMap((n) => [
      { id: `scale.zstd-c-${n}`, command: `zstd -q -T2 -9 --long=27 -c ${stream(bundle(n))} >/dev/null` },
      // -B: ferry's jobs at a small window are the window's size (src/bundle/write-bundle.ts).
      { id: `scale.zstd-c-w20-${n}`, command: `zstd -q -T2 -9 --long=20 -B1MiB -c ${stream(w20(n))} >/dev/null` },
      { id: `scale.zstd-d-${n}`, command: `zstd -q -d --long=31 -c ${bundle(n)} >/dev/null` },
      { id: `scale.zstd-d-w20-${n}`, command: `zstd -q -d --long=31 -c ${w20(n)} >/dev/null` },
    ]),
  );
  // The header alone, in a process of its own: one JSON document of ~2.5 KB per image, parsed
  // whole on import and serialized in 64 KiB pieces, twice, on export (median of 3; see header-cost.js).
  const headerCost = new Map<string, Value>();
  for (const n of ends) {
    const json = b.path(`scale-${n}-header.json`);
    await sh(`tar -xOf ${stream(w20(n))} ferry-bundle.json > ${json}`);
    for (const mode of ['parse', 'serialize']) {
      const runs: number[] = [];
      for (let i = 0; i < 3; i++) runs.push(Number((await sh(`${process.execPath} --expose-gc ${HEADER_COST} ${mode} ${json}`)).trim()));
      headerCost.set(`${mode}-${n}`, runs.every(Number.isFinite) ? median(runs) : missing('failed'));
    }
    await sh(`rm -f ${json}`);
  }
  await sh(`rm -f ${compressed.map(stream).join(' ')}`);
  // At the default window the compressor's worker jobs (16 MiB at level 9) and their buffers fill
  // only once tens of MB have passed, which the smallest layout's ~4 MB never do; the small
  // window's 1 MiB jobs fill at every size. The same count of images as the smallest, carrying as
  // many bytes as the largest, is the control: against it, what grows is what ferry keeps per image.
  const fat = large > small ? await scaleLayout(b, small, (UNIQUE_BYTES * large) / small) : undefined;
  if (fat !== undefined) {
    const fatBundle = b.path(`scale-${small}-same-bytes.tar.zst`);
    const fatStore = b.path(`scale-store-${small}-same-bytes`);
    await race([
      { id: `scale.export-same-bytes-${small}`, prep: `rm -f ${fatBundle}`, command: `${FERRY} export -q -f ${fat.definition} -o ${fatBundle} && sync` },
      { id: `scale.export-w20-same-bytes-${small}`, prep: `rm -f ${fatBundle}.w20`, command: `${FERRY} export -q --window-log 20 -f ${fat.definition} -o ${fatBundle}.w20 && sync` },
    ]);
    await race([
      { id: `scale.import-same-bytes-${small}`, prep: b.discard(fatStore), command: `${FERRY} --root ${fatStore} import -q ${fatBundle} >/dev/null && sync` },
      { id: `scale.import-w20-same-bytes-${small}`, prep: b.discard(`${fatStore}-w20`), command: `${FERRY} --root ${fatStore}-w20 import -q ${fatBundle}.w20 >/dev/null && sync` },
    ]);
    await sh(`${b.discard(fatStore)}; ${b.discard(`${fatStore}-w20`)}; rm -f ${fatBundle} ${fatBundle}.w20`);
  }
  await race(sizes.map((n) => ({ id: `scale.ls-${n}`, command: `${FERRY} ls ${bundle(n)} >/dev/null` })));
  const imports: Contender[] = [];
  for (const n of sizes) {
    const script = await writeFloorScript(b, bundle(n), floor(n), `scale-${n}`);
    imports.push({ id: `scale.import-${n}`, prep: b.discard(store(n)), command: `${FERRY} --root ${store(n)} import -q ${bundle(n)} >/dev/null && sync` });
    imports.push({
      id: `scale.floor-${n}`,
      prep: `${b.discard(floor(n))}; mkdir -p ${floor(n)}`,
      command: `zstd -q -d --long=31 -c ${bundle(n)} | tar -x -C ${floor(n)} --to-command=${script} -f - && sync`,
    });
  }
  await race(imports);
  // The same images named from other sources, N names from one of each: an OCI archive (a tar of
  // the layout) and the store they were imported into. Each name opened, indexed or looked up the
  // whole source again once (exporting 400 images from one archive took minutes): the time per
  // image stays flat only if a source is read once for all the names in it.
  const archive = (n: number): string => b.path(`scale-${n}.oci.tar`);
  const alternative = async (n: number, kind: 'archive' | 'names'): Promise<string> => {
    const { dir, definition } = layouts.get(n)!;
    const out = b.path(`scale-${n}-${kind}.yaml`);
    const text = await readFile(definition, 'utf8');
    await writeFile(out, text.split(`oci:${dir}:`).join(kind === 'archive' ? `oci-archive:${archive(n)}:` : ''));
    return out;
  };
  const sources: Contender[] = [];
  for (const n of ends) {
    await sh(`tar -C ${layouts.get(n)!.dir} -cf ${archive(n)} .`);
    const fromArchive = await alternative(n, 'archive');
    const fromStore = await alternative(n, 'names');
    sources.push({ id: `scale.export-archive-${n}`, prep: `rm -f ${bundle(n)}.a`, command: `${FERRY} export -q -f ${fromArchive} -o ${bundle(n)}.a && sync` });
    sources.push({ id: `scale.export-store-${n}`, prep: `rm -f ${bundle(n)}.s`, command: `${FERRY} --root ${store(n)} export -q -f ${fromStore} -o ${bundle(n)}.s && sync` });
  }
  await race(sources);
  for (const n of ends) await sh(`rm -f ${archive(n)} ${bundle(n)}.a ${bundle(n)}.s`);
  await race(sizes.map((n) => ({ id: `scale.images-${n}`, command: `${FERRY} --root ${store(n)} images >/dev/null` })));
  await race(sizes.map((n) => ({ id: `scale.run-${n}`, command: `${FERRY} --root ${store(n)} run --rm img-00001 true` })));
  await race(sizes.map((n) => ({ id: `scale.fsck-${n}`, command: `${FERRY} --root ${store(n)} fsck >/dev/null` })));

  const at = (op: string, n: number): Measured | Error | undefined => m.get(`scale.${op}-${n}`);
  for (const op of ['export', 'export-archive', 'export-store', 'import', 'images', 'fsck']) {
    b.add({
      section: s,
      figure: `${op.replace('-archive', ' from an oci-archive').replace('-store', ' from the store')}: time per image at ${large} images`,
      unit: 's',
      ferry: perImage(wall(at(op, large)), large),
      peer: { name: `at ${small} images`, value: perImage(wall(at(op, small)), small) },
    });
  }
  for (const op of ['ls', 'run']) {
    b.add({ section: s, figure: `${op}: time at ${large} images`, unit: 's', ferry: wall(at(op, large)), peer: { name: `at ${small} images`, value: wall(at(op, small)) } });
  }
  for (const op of ['export', 'import', 'export-w20', 'import-w20']) {
    const w = op.endsWith('-w20');
    b.add({
      section: s,
      figure: `${op.replace('-w20', '')}: peak RSS at ${large} images${w ? ', --window-log 20' : ''}`,
      ...(w ? {} : { note: 'the 128 MiB window fills with 64 KiB per image' }),
      unit: 'MB',
      ferry: rss(at(op, large)),
      peer: { name: `at ${small} images`, value: rss(at(op, small)) },
      target: { of: 'ratio', max: 1.2, text: '<= 1.2x (flat)' },
      runs: { ferry: at(op, large), peer: at(op, small), metric: 'rss' },
    });
  }
  const zstdOf: Record<string, { op: string; command: string }> = {
    export: { op: 'zstd-c', command: 'zstd -T2 -9 --long=27 of the tar stream ferry compresses' },
    import: { op: 'zstd-d', command: 'zstd -d of the default bundle' },
    'export-w20': { op: 'zstd-c-w20', command: 'zstd -T2 -9 --long=20 -B1MiB of the tar stream ferry compresses' },
    'import-w20': { op: 'zstd-d-w20', command: 'zstd -d of the --window-log 20 bundle' },
  };
  const grew = (id: string): Value => {
    const [l, sm] = [rss(at(id, large)), rss(at(id, small))];
    return isNumber(l) && isNumber(sm) ? l - sm : missing('not measured');
  };
  for (const [op, z] of Object.entries(zstdOf)) {
    b.add({
      section: s,
      figure: `zstd alone (${z.command}): peak RSS at ${large} images`,
      unit: 'MB',
      ferry: rss(at(z.op, large)),
      peer: { name: `at ${small} images`, value: rss(at(z.op, small)) },
      runs: { ferry: at(z.op, large), peer: at(z.op, small), metric: 'rss' },
    });
    const [ours, theirs] = [grew(op), grew(z.op)];
    b.add({
      section: s,
      figure: `${op.replace('-w20', '')}: peak RSS growth ${small} -> ${large} images less zstd's own${op.endsWith('-w20') ? ', --window-log 20' : ''}`,
      note: 'what ferry keeps beyond the compressor or decompressor it embeds',
      unit: 'MB',
      ferry: isNumber(ours) && isNumber(theirs) ? ours - theirs : missing('not measured'),
    });
  }
  // How much of the 1.2x allowance (0.2x the smaller run's peak) the header alone takes.
  for (const [mode, op] of [
    ['parse', 'import'],
    ['serialize', 'export'],
  ] as const) {
    const allowance = rss(at(`${op}-w20`, small));
    b.add({
      section: s,
      figure: `${op}: peak RSS growth of the header alone (${mode} ferry-bundle.json) at ${large} images`,
      note: `a process of its own; ${op}'s whole 1.2x allowance at --window-log 20 is ${isNumber(allowance) ? `${((allowance * 0.2) / 1e6).toFixed(0)} MB` : 'not measured'}`,
      unit: 'MB',
      ferry: headerCost.get(`${mode}-${large}`) ?? missing('not measured'),
      peer: { name: `at ${small} images`, value: headerCost.get(`${mode}-${small}`) ?? missing('not measured') },
    });
  }
  if (fat !== undefined) {
    const perImage = (UNIQUE_BYTES * large) / small / 1024 / 1024;
    for (const op of ['export', 'import', 'export-w20', 'import-w20']) {
      const w = op.endsWith('-w20');
      const control = at(op.replace(/(-w20)?$/, '$1-same-bytes'), small);
      b.add({
        section: s,
        figure: `${op.replace('-w20', '')}: peak RSS at ${large} images against ${small} of the same bytes${w ? ', --window-log 20' : ''}`,
        note: `${small} images of ${perImage} MiB each: the image count alone`,
        unit: 'MB',
        ferry: rss(at(op, large)),
        peer: { name: `${small} images, ${perImage} MiB each`, value: rss(control) },
        target: { of: 'ratio', max: 1.2, text: '<= 1.2x (flat)' },
        runs: { ferry: at(op, large), peer: control, metric: 'rss' },
      });
    }
  }
  for (const n of sizes) {
    b.add({
      section: s,
      figure: `import of ${n} images`,
      unit: 's',
      ferry: wall(at('import', n)),
      peer: { name: 'floor: zstd -d | tar -x per layer', value: wall(at('floor', n)) },
      runs: { ferry: at('import', n), peer: at('floor', n), metric: 'wall' },
    });
  }
  // Above the floor, per layer: what ferry's own bookkeeping (metadata, fsyncs, locks) costs.
  const overheadAt = sizes.includes(400) ? 400 : large;
  const imp = wall(at('import', overheadAt));
  const flo = wall(at('floor', overheadAt));
  b.add({
    section: s,
    figure: `import: time above the floor per layer, ${overheadAt} layers`,
    unit: 's',
    ferry: isNumber(imp) && isNumber(flo) ? (imp - flo) / (overheadAt + 1) : missing('not measured'),
    target: { of: 'ferry', max: 0.003, text: '<= 3 ms' },
  });
  // The floor runs a shell, grep and tar for every bundle entry (manifests and configs too), so at
  // hundreds of images it is mostly process starts: ferry's own cost per layer is also shown as the
  // slope of its import time between the smallest and the largest layout.
  const impSmall = wall(at('import', small));
  const impLarge = wall(at('import', large));
  if (large > small) {
    b.add({
      section: s,
      figure: `import: time per added image (one layer each), ${small} -> ${large} images`,
      unit: 's',
      ferry: isNumber(impSmall) && isNumber(impLarge) ? (impLarge - impSmall) / (large - small) : missing('not measured'),
    });
  }
  for (const n of sizes) await sh(`${b.discard(store(n))}; ${b.discard(`${store(n)}-w20`)}; ${b.discard(floor(n))}; rm -f ${bundle(n)} ${w20(n)}`);
}
