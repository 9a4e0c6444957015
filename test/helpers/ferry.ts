import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:os';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root, found from this file's own place (test/helpers/ferry.ts). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const FERRY_BIN = resolve(REPO_ROOT, 'bin', 'ferry.js');

export interface FerryResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunFerryOptions {
  /** Added to (and overriding) the test process's environment. */
  env?: Record<string, string>;
  input?: string | Buffer;
  cwd?: string;
}

/**
 * Run `node bin/ferry.js ARGS` as a user would and collect what it prints. The CLI runs from
 * dist/, which `npm test` builds before vitest starts; a signal death reports code 128+N.
 */
export async function runFerry(args: string[], options: RunFerryOptions = {}): Promise<FerryResult> {
  const child = spawn(process.execPath, [FERRY_BIN, ...args], {
    cwd: options.cwd ?? REPO_ROOT,
    env: { ...process.env, ...options.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
  child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
  // A CLI that exits without reading its input closes the pipe: that is not a test failure.
  child.stdin.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') stderr.push(Buffer.from(`[runFerry] stdin: ${err.message}\n`));
  });
  child.stdin.end(options.input ?? '');
  const code = await new Promise<number>((resolvePromise, reject) => {
    child.on('error', reject);
    child.on('close', (exitCode, signal) => {
      resolvePromise(exitCode ?? 128 + signalNumber(signal));
    });
  });
  return { code, stdout: Buffer.concat(stdout).toString('utf8'), stderr: Buffer.concat(stderr).toString('utf8') };
}

function signalNumber(signal: NodeJS.Signals | null): number {
  return signal === null ? 0 : constants.signals[signal];
}

/** Start `ferry ARGS` (a `serve -q` command) and resolve with the address it prints on its first line. */
export async function startFerryServe(args: string[]): Promise<{ child: ChildProcess; host: string }> {
  const child = spawn(process.execPath, [FERRY_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const host = await new Promise<string>((resolvePromise, reject) => {
    let out = '';
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const line = out.split('\n')[0];
      if (out.includes('\n') && line !== undefined) resolvePromise(line.trim());
    });
    child.on('exit', (code) => reject(new Error(`ferry ${args.join(' ')} exited ${code}: ${stderr}`)));
  });
  return { child, host };
}

export interface TimedFerryResult {
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** `ferry --root ROOT ARGS`, killed after `ms`: a hang is a failure, not a stuck test run. */
export async function ferryWithin(root: string, ms: number, args: string[]): Promise<TimedFerryResult> {
  const child = spawn(process.execPath, [FERRY_BIN, '--root', root, ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, ms);
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stdout, stderr, timedOut };
}
