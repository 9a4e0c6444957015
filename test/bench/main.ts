import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { buildSection } from './build.js';
import { ensureCorpus } from './corpus.js';
import { Bench, FERRY_BIN, REPO } from './context.js';
import { deltaSection } from './delta.js';
import { exportSection } from './export.js';
import { importSection } from './import.js';
import { describeMachine } from './machine.js';
import { memorySection } from './memory.js';
import { packSection } from './pack.js';
import { note, sh } from './measure.js';
import { markdownTable, samplesTable } from './report.js';
import { runSection } from './run-latency.js';
import { scaleSection } from './scale.js';

const SECTIONS = {
  export: exportSection,
  delta: deltaSection,
  import: importSection,
  pack: packSection,
  run: runSection,
  memory: memorySection,
  build: buildSection,
  scale: scaleSection,
} as const;
type SectionName = keyof typeof SECTIONS;

function positiveInt(name: string, fallback: number): number {
  const text = process.env[name];
  if (text === undefined || text === '') return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name}="${text}": expected a whole number >= 1`);
  return n;
}

function sections(): SectionName[] {
  const only = process.env.BENCH_ONLY?.trim();
  if (only === undefined || only === '') return Object.keys(SECTIONS) as SectionName[];
  const names = only.split(/[\s,]+/);
  for (const n of names) if (!(n in SECTIONS)) throw new Error(`BENCH_ONLY: unknown section "${n}" (use ${Object.keys(SECTIONS).join(', ')})`);
  return names as SectionName[];
}

const USAGE = `npm run bench: ferry next to its peers on the corpus of issue 7 (see test/bench/README.md).
Env: BENCH_RUNS (default 3, medians), BENCH_RUN_RUNS (default 10, for run latency),
     BENCH_SCALE (default "25 100 400 1600": image counts of the scale section),
     BENCH_ONLY="export delta import pack run memory build scale" (a subset writes $BENCH_WORK/RESULTS.md, not test/bench/RESULTS.md),
     BENCH_WORK (default /var/tmp/ferry-bench), CORPUS_DIR (default /var/tmp/ferry-corpus).`;

async function main(): Promise<number> {
  if (process.argv.includes('--help') || process.argv.includes('-h')) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench: run as root: the corpus build uses debootstrap/apt, podman and runc need root, and ferry run mounts overlayfs\n');
    return 1;
  }
  await access(join(REPO, 'dist', 'cli', 'main.js')).catch(() => {
    throw new Error(`bench: ${FERRY_BIN} needs dist/: run npm run build first`);
  });
  const names = sections();
  const work = process.env.BENCH_WORK ?? '/var/tmp/ferry-bench';
  await mkdir(work, { recursive: true });
  const b = new Bench(work, positiveInt('BENCH_RUNS', 3), positiveInt('BENCH_RUN_RUNS', 10));
  const zstdNapi = (JSON.parse(await readFile(join(REPO, 'node_modules', 'zstd-napi', 'package.json'), 'utf8')) as { version: string }).version;
  const machine = await describeMachine(work, zstdNapi);
  const started = new Date();

  // Trees a previous bench moved aside: deleted now, long before the import section creates files.
  await sh(b.emptyTrash());
  await ensureCorpus();
  for (const name of names) {
    note(`== ${name}`);
    await SECTIONS[name](b);
  }

  const table = markdownTable(b.rows);
  process.stdout.write(`\n${table}\n`);
  const full = names.length === Object.keys(SECTIONS).length;
  const minutes = ((Date.now() - started.getTime()) / 60000).toFixed(0);
  const text = [
    '# ferry benchmark results',
    '',
    `Written by \`npm run bench\` (test/bench/) on ${started.toISOString().slice(0, 16)}Z in ${minutes} min; sections: ${names.join(', ')}.`,
    `Every ferry figure is next to its peer measured in the same run, interleaved run by run; medians of ${b.runs} runs`,
    `(run latency: ${b.runRuns} runs after 2 warm-ups). Caches warm, \`sync\` before each run and at the end of each`,
    'command that writes. Peak RSS is the largest single process of a pipeline (getrusage), not their sum.',
    'Hauler-equivalent = `skopeo copy` of each image into one OCI layout, then `tar | zstd -T0 -3`.',
    'A ratio of timed figures is the median of the per-run ratios (run i of ferry over run i of the peer),',
    'steadier on a shared machine than the ratio of the medians shown beside it.',
    '',
    '## Machine',
    ...machine,
    `- load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`,
    '',
    '## Results',
    table,
    '',
    ...(b.findings.length > 0 ? ['## Notes', ...b.findings.map((f) => `- ${f}`), ''] : []),
    '## Every run',
    samplesTable(b.measured, b.commands),
    '',
    '`$W` is the work directory, `$REFS` the seven corpus references on 127.0.0.1:5000, `ferry` is `node bin/ferry.js`.',
    '',
  ].join('\n');
  const out = full ? join(REPO, 'test', 'bench', 'RESULTS.md') : join(work, 'RESULTS.md');
  await writeFile(out, text);
  note(`wrote ${out}`);
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
