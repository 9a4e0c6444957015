import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { corpusDir, fullRef } from './corpus.js';
import { Bench, FERRY, FERRY_BIN, fileSize, ferryHas, perRun } from './context.js';
import { PACK } from './pack.js';
import { PODMAN_SRC, defaultBundle, preparePodman } from './export.js';
import { importStore } from './import.js';
import { latencyOnce, median, note, sh, summarise } from './measure.js';
import { missing, type Value } from './report.js';

/** What each FERRY_TIMING mark (src/io/timing.ts) ends, in the order a run reaches them. */
const PHASES: ReadonlyArray<readonly [mark: string, label: string]> = [
  ['node', 'Node start (to the first line of bin/ferry.js)'],
  ['main', 'CLI modules (main.js, commander)'],
  ['modules', 'run command modules'],
  ['store', 'open the store'],
  ['sweep', 'finished --rm containers swept'],
  ['image', 'image read (refs, manifest, config, layer metas)'],
  ['spec', 'process spec, user, volumes, seccomp'],
  ['claim', 'rootfs claimed (lock, rootfs.json)'],
  ['record', 'config.json written (lock, names)'],
  ['files', 'container files (init layer, hosts, ...)'],
  ['launch', 'launcher: cgroups, namespaces, mounts, exec'],
  ['state', 'state.json written'],
  ['exited', 'container ran (true)'],
  ['removed', '--rm: container removed'],
  ['exit', 'until process exit'],
];

/** One run with FERRY_TIMING=1: the marks' times (ms since Node started) and the wall time seen from outside. */
async function timedMarks(argv: readonly string[]): Promise<{ marks: Map<string, number>; wallMs: number }> {
  const started = process.hrtime.bigint();
  const stderr = await new Promise<string>((resolvePromise, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, FERRY_TIMING: '1' }, stdio: ['ignore', 'ignore', 'pipe'] });
    const chunks: Buffer[] = [];
    child.stderr.on('data', (c: Buffer) => chunks.push(c));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolvePromise(Buffer.concat(chunks).toString('utf8')) : reject(new Error(`exit ${String(code)}: ${Buffer.concat(chunks).toString('utf8')}`))));
  });
  const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
  const line = stderr.split('\n').find((l) => l.startsWith('{"ferryTiming"'));
  if (line === undefined) throw new Error('no FERRY_TIMING line: is dist/ built from this tree?');
  return { marks: new Map((JSON.parse(line) as { ferryTiming: Array<[string, number]> }).ferryTiming), wallMs };
}

/**
 * Where the time of `ferry run --rm` goes: median of each phase over FERRY_TIMING runs (interleaved
 * with nothing else, after the timed runs), as rows of the run section.
 */
async function startBreakdown(b: Bench, s: string, argv: readonly string[], who: string): Promise<void> {
  const runs: Array<{ marks: Map<string, number>; wallMs: number }> = [];
  for (let i = 0; i < b.runRuns; i++) runs.push(await timedMarks(argv));
  for (const [i, [name, label]] of PHASES.entries()) {
    const before = i === 0 ? undefined : PHASES[i - 1]![0];
    const spans = runs.flatMap((r) => {
      const end = r.marks.get(name);
      const start = before === undefined ? 0 : r.marks.get(before);
      return end === undefined || start === undefined ? [] : [end - start];
    });
    if (spans.length === 0) continue;
    const ms = median(spans);
    b.add({ section: s, figure: `${who}breakdown: ${label}`, unit: 's', ferry: ms / 1000, note: `median of ${spans.length} FERRY_TIMING runs` });
  }
  const after = runs.flatMap((r) => {
    const exit = r.marks.get('exit');
    return exit === undefined ? [] : [r.wallMs - exit];
  });
  // Wall minus the exit mark: Node's clock starts 10-17 ms after the exec (loading the binary, its
  // static initialisers), so this holds that as well as the teardown after the mark.
  b.add({ section: s, figure: `${who}breakdown: outside Node's clock (exec and loading before it starts, teardown after the exit mark)`, unit: 's', ferry: median(after) / 1000 });
  b.add({ section: s, figure: `${who}breakdown: total (the FERRY_TIMING runs, wall)`, unit: 's', ferry: median(runs.map((r) => r.wallMs)) / 1000 });
}

interface Runner {
  id: string;
  argv: (i: number) => string[];
}

/**
 * Start-to-exit latency of `true` in the redis image: ferry run --rm from the imported store,
 * runc run on the same rootfs unpacked by umoci, podman run --rm (runc: crun cannot start
 * containers on this machine's hybrid cgroups). Two warm-up runs each, then interleaved runs.
 */
export async function runSection(b: Bench): Promise<void> {
  const s = 'run: `true` in redis:7, start to exit';
  const ref = fullRef('library/redis:7');
  const built = await ferryHas('run');
  const runners: Runner[] = [];
  if (built) {
    const store = importStore(b);
    await sh(`[ -f ${store}/refs.json ] || { [ -f ${defaultBundle(b)} ] || ${FERRY} export -q --cache-dir ${b.path('cache-cold')} -o ${defaultBundle(b)} ${ref}; ${FERRY} --root ${store} import -q ${defaultBundle(b)}; }`);
    runners.push({ id: 'run.ferry', argv: () => [process.execPath, FERRY_BIN, '--root', store, 'run', '--rm', ref, 'true'] });
    // The pack section (or npm run pack) made it: the same run from the one-file ferry.
    if (await fileSize(PACK).then((v) => typeof v === 'number')) runners.push({ id: 'run.pack', argv: () => [PACK, '--root', store, 'run', '--rm', ref, 'true'] });
  }
  const rb = b.path('runc-redis');
  await sh(`rm -rf ${rb}; umoci unpack --image ${corpusDir}/oci-src:redis-7 ${rb} >/dev/null`);
  const config = JSON.parse(await readFile(`${rb}/config.json`, 'utf8')) as { process: { args: string[]; terminal: boolean }; root: { readonly: boolean } };
  config.process.args = ['/bin/true'];
  config.process.terminal = false;
  config.root.readonly = false;
  await writeFile(`${rb}/config.json`, JSON.stringify(config));
  runners.push({ id: 'run.runc', argv: (i) => ['runc', 'run', '--bundle', rb, `ferry-bench-runc-${process.pid}-${i}`] });
  const podmanBroken = await preparePodman(b);
  if (podmanBroken === undefined) {
    const pod = b.podman(PODMAN_SRC).split(' ');
    runners.push({ id: 'run.podman', argv: () => [...pod, 'run', '--rm', '--runtime', 'runc', '--ulimit', 'nofile=1024:4096', '--ulimit', 'nproc=4096:4096', '--network', 'host', ref, 'true'] });
  }

  const times = new Map<string, number[]>(runners.map((r) => [r.id, []]));
  const failed = new Map<string, string>();
  for (const r of runners) b.commands.set(r.id, b.display(r.argv(0).join(' ')));
  for (let i = -2; i < b.runRuns; i++) {
    for (const r of runners) {
      if (failed.has(r.id)) continue;
      try {
        const t = await latencyOnce(r.argv(i + 2));
        if (i >= 0) times.get(r.id)!.push(t);
      } catch (err) {
        note(`${r.id} FAILED: ${(err as Error).message.slice(0, 600)}`);
        failed.set(r.id, (err as Error).message.split('\n')[0] ?? 'failed');
      }
    }
  }
  const value = (id: string): Value => {
    if (failed.has(id)) return missing('failed');
    const t = times.get(id);
    return t === undefined || t.length === 0 ? missing('not run') : median(t);
  };
  for (const r of runners) {
    const t = times.get(r.id)!;
    if (t.length > 0) b.measured.set(r.id, summarise(t.map((wall) => ({ wall, cpu: Number.NaN, rss: Number.NaN }))));
    else if (failed.has(r.id)) b.measured.set(r.id, new Error(failed.get(r.id)));
    note(`${r.id}: median ${(median(t) * 1000).toFixed(0)} ms over ${t.length} runs`);
  }
  const ferry = built ? value('run.ferry') : missing('not built');
  if (times.has('run.pack')) {
    b.add({ section: s, figure: 'median latency, ferry-linux-x64 (pack)', unit: 's', ferry: value('run.pack'), peer: { name: 'node bin/ferry.js', value: ferry }, runs: perRun(b.measured.get('run.pack'), b.measured.get('run.ferry'), 'wall') });
    b.add({ section: s, figure: 'median latency, ferry-linux-x64 (pack)', unit: 's', ferry: value('run.pack'), peer: { name: 'runc run, same rootfs', value: value('run.runc') }, target: { of: 'ratio', max: 2, text: '<= 2x' }, runs: perRun(b.measured.get('run.pack'), b.measured.get('run.runc'), 'wall') });
    b.add({ section: s, figure: 'median latency, ferry-linux-x64 (pack)', unit: 's', ferry: value('run.pack'), peer: { name: 'podman run --rm', value: podmanBroken === undefined ? value('run.podman') : missing(podmanBroken) }, target: { of: 'ratio', max: 0.5, text: '< 0.5x' }, runs: perRun(b.measured.get('run.pack'), b.measured.get('run.podman'), 'wall') });
  }
  b.add({ section: s, figure: 'median latency', unit: 's', ferry, peer: { name: 'runc run, same rootfs', value: value('run.runc') }, target: { of: 'ratio', max: 2, text: '<= 2x' }, runs: perRun(b.measured.get('run.ferry'), b.measured.get('run.runc'), 'wall') });
  b.add({ section: s, figure: 'median latency', unit: 's', ferry, peer: { name: 'podman run --rm', value: podmanBroken === undefined ? value('run.podman') : missing(podmanBroken) }, target: { of: 'ratio', max: 0.5, text: '< 0.5x' }, runs: perRun(b.measured.get('run.ferry'), b.measured.get('run.podman'), 'wall') });
  if (built && !failed.has('run.ferry')) await startBreakdown(b, s, runners[0]!.argv(0), '');
  const pack = runners.find((r) => r.id === 'run.pack');
  if (pack !== undefined && !failed.has('run.pack')) await startBreakdown(b, s, pack.argv(0), 'pack ');
  await sh(`rm -rf ${rb}`);
}
