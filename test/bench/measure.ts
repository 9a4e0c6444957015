import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** One timed run: wall seconds (monotonic clock), CPU seconds (user + system), peak RSS in bytes. */
export interface Sample {
  wall: number;
  cpu: number;
  rss: number;
}

/** The medians of several runs, and every run (RESULTS.md lists them all). */
export interface Measured {
  wall: number;
  cpu: number;
  rss: number;
  samples: Sample[];
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function summarise(samples: readonly Sample[]): Measured {
  return { wall: median(samples.map((s) => s.wall)), cpu: median(samples.map((s) => s.cpu)), rss: median(samples.map((s) => s.rss)), samples: [...samples] };
}

export class CommandFailed extends Error {
  constructor(
    readonly command: string,
    readonly code: number | null,
    readonly output: string,
  ) {
    super(`command failed (exit ${String(code)}): ${command}\n${output.slice(-2000)}`);
  }
}

let log: (line: string) => void = (line) => void process.stderr.write(`[bench] ${line}\n`);
export function setLog(fn: (line: string) => void): void {
  log = fn;
}
export function note(line: string): void {
  log(line);
}

/** Run a shell command (bash, pipefail), collecting its output; throws CommandFailed on a non-zero exit. */
export async function sh(command: string, options: { env?: NodeJS.ProcessEnv; echo?: boolean } = {}): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn('bash', ['-c', `set -euo pipefail\n${command}`], { env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    const collect = (c: Buffer): void => {
      chunks.push(c);
      if (options.echo === true) process.stderr.write(c);
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.on('error', reject);
    child.on('close', (code) => {
      const out = Buffer.concat(chunks).toString('utf8');
      if (code === 0) resolvePromise(out);
      else reject(new CommandFailed(command, code, out));
    });
  });
}

/**
 * Time one shell command under /usr/bin/time: the wall clock is ours (hrtime around the whole
 * child), CPU and peak RSS are the kernel's rusage for the command and every descendant it
 * waited for. Peak RSS of a pipeline is that of its largest process, not their sum.
 */
export async function timeOnce(command: string, env?: NodeJS.ProcessEnv): Promise<Sample> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-bench-time-'));
  const out = join(dir, 'time');
  try {
    const started = process.hrtime.bigint();
    await new Promise<void>((resolvePromise, reject) => {
      const child = spawn('/usr/bin/time', ['-f', '%U %S %M', '-o', out, 'bash', '-c', `set -euo pipefail\n${command}`], {
        env: env ?? process.env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const chunks: Buffer[] = [];
      child.stdout.on('data', (c: Buffer) => chunks.push(c));
      child.stderr.on('data', (c: Buffer) => chunks.push(c));
      child.on('error', reject);
      child.on('close', (code) => {
        if (code === 0) resolvePromise();
        else reject(new CommandFailed(command, code, Buffer.concat(chunks).toString('utf8')));
      });
    });
    const wall = Number(process.hrtime.bigint() - started) / 1e9;
    const fields = (await readFile(out, 'utf8')).trim().split('\n').pop()!.split(' ');
    const [user, system, rssKiB] = fields.map(Number) as [number, number, number];
    return { wall, cpu: user + system, rss: rssKiB * 1024 };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Start-to-exit latency of a command run directly (no shell, no /usr/bin/time in between). */
export async function latencyOnce(argv: readonly string[], env?: NodeJS.ProcessEnv): Promise<number> {
  const started = process.hrtime.bigint();
  await new Promise<void>((resolvePromise, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { env: env ?? process.env, stdio: ['ignore', 'ignore', 'pipe'] });
    const chunks: Buffer[] = [];
    child.stderr.on('data', (c: Buffer) => chunks.push(c));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolvePromise();
      else reject(new CommandFailed(argv.join(' '), code, Buffer.concat(chunks).toString('utf8')));
    });
  });
  return Number(process.hrtime.bigint() - started) / 1e9;
}

/** A command under comparison: an untimed preparation, then the timed command. */
export interface Contender {
  id: string;
  prep?: string;
  command: string;
}

/**
 * Run every contender `runs` times, interleaved (a, b, c, a, b, c, ...), so that drift in the
 * machine's load hits them alike; `sync` before each timed command, so that one's dirty pages are
 * not paid by the next.
 */
export async function race(contenders: readonly Contender[], runs: number, env?: NodeJS.ProcessEnv): Promise<Map<string, Measured | Error>> {
  const samples = new Map<string, Sample[]>(contenders.map((c) => [c.id, []]));
  const failed = new Map<string, Error>();
  for (let i = 1; i <= runs; i++) {
    for (const c of contenders) {
      if (failed.has(c.id)) continue;
      try {
        if (c.prep !== undefined) await sh(c.prep, env === undefined ? {} : { env });
        await sh('sync');
        const s = await timeOnce(c.command, env);
        log(`${c.id} run ${i}/${runs}: ${s.wall.toFixed(2)} s wall, ${s.cpu.toFixed(2)} s CPU, ${(s.rss / 1e6).toFixed(0)} MB RSS`);
        samples.get(c.id)!.push(s);
      } catch (err) {
        log(`${c.id} FAILED: ${(err as Error).message.slice(0, 600)}`);
        failed.set(c.id, err as Error);
      }
    }
  }
  const result = new Map<string, Measured | Error>();
  for (const c of contenders) result.set(c.id, failed.get(c.id) ?? summarise(samples.get(c.id)!));
  return result;
}
