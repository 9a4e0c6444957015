import type { ChildProcess } from 'node:child_process';
import { close, closeSync, openSync, read } from 'node:fs';
import type { Socket } from 'node:net';
import { constants } from 'node:os';
import { FerryError } from '../errors.js';
import { nodeChildProcess } from '../io/builtins.js';
import { errnoReason, nativeFs } from '../io/native.js';
import { nativePart } from '../io/native-parts.js';
import type { CgroupOp } from './cgroups.js';

/**
 * Driving native/ferry-launch.c: the spec goes to its fd 3 as NUL-terminated key=value records,
 * status lines come back on the same socket ("pid N", "error CODE MESSAGE"); EOF without an
 * error means the command was exec'd.
 */
/** A host path bound into the container: always nodev; nosuid unless `suid`. */
export interface LaunchBind {
  source: string;
  destination: string;
  readOnly: boolean;
  suid?: boolean;
  noexec?: boolean;
}

/** A tmpfs (`--tmpfs`): always nodev; nosuid and noexec unless asked, as docker's. */
export interface LaunchTmpfs {
  tmpfs: true;
  destination: string;
  readOnly: boolean;
  /** The mount data: size=, mode=, uid=, gid=, nr_inodes= (checked by parseTmpfs). */
  data: string;
  suid?: boolean;
  exec?: boolean;
}

export type LaunchMount = LaunchBind | LaunchTmpfs;

/** A published port: the host's [hostIp:]hostPort relayed to containerPort in the container. */
export interface PortMapping {
  protocol: 'tcp' | 'udp';
  /** "" for every address. */
  hostIp: string;
  hostPort: number;
  containerPort: number;
}

export interface LaunchProcess {
  argv: readonly string[];
  env: readonly string[];
  cwd: string;
  uid: number;
  gid: number;
  groups: readonly number[];
  tty: boolean;
  /** Relay stdin to the pty (-i with -t). Without -t, stdin is simply inherited. */
  interactive: boolean;
  noNewPrivileges?: boolean;
  /** Root's capabilities as a bit mask (bit N = capability N); default docker's set. */
  capabilities?: bigint;
  /** A compiled seccomp filter (struct sock_filter[]); none: unconfined. */
  seccomp?: Buffer;
  /** cgroup.procs files the process joins before it runs anything. */
  cgroups?: readonly string[];
}

export interface RunLaunch extends LaunchProcess {
  mode: 'run';
  /** The empty directory the overlay is mounted on (inside the container's namespace only). */
  rootfsDir: string;
  /** lowerdir/upperdir/workdir may be relative to this directory (the store root). */
  mountCwd: string;
  lowerDirs: readonly string[];
  upperDir: string;
  workDir: string;
  readOnly: boolean;
  hostname: string;
  network: 'host' | 'none' | 'private';
  /** --network container:NAME: join that container's namespace (its init's host pid and start time). */
  shareNetworkOf?: { pid: number; start: string };
  /** --network private: run this slirp4netns for the container's outbound traffic. */
  slirp4netns?: string;
  /** -p: host listeners the launcher binds (port 0: the kernel picks) and relays into the container. */
  ports?: readonly PortMapping[];
  /** Volumes and tmpfs mounts, in the order they are mounted. */
  binds: readonly LaunchMount[];
  /** --privileged: host devices in /dev, /sys writable, nothing masked. */
  privileged?: boolean;
  /** The monitor writes the exit status here when the container ends. */
  exitFile: string;
  /** Make the container's cgroups and set its limits (done by the launcher before the clone). */
  cgroupPlan?: readonly CgroupOp[];
  /** The memory cgroup's OOM counter: an OOM kill is recorded with the exit status. */
  oomFile?: string;
  /** Create the working directory when missing (docker does for run, not for exec). */
  makeCwd: boolean;
}

export interface ExecLaunch extends LaunchProcess {
  mode: 'exec';
  /** Host pid of the container's init and its start time (/proc/PID/stat field 22). */
  targetPid: number;
  targetStart: string;
}

export type LaunchSpec = RunLaunch | ExecLaunch;

/** 'inherit' (ferry's own), 'ignore' (/dev/null), 'pipe' (read by ferry: a health probe's output) or an open fd (a log file). */
export type LaunchStdio = 'inherit' | 'ignore' | 'pipe' | number;

export interface LaunchOptions {
  /** stdin, stdout, stderr of the launcher (and, without a pty, of the command). */
  stdio: [LaunchStdio, LaunchStdio, LaunchStdio];
  /** Keep running after ferry exits (-d); otherwise the container dies with ferry. */
  detached: boolean;
}

export interface Launched {
  /** Node's child process when it started the launcher: detached, or with pipes (stdout, stderr); see launch. */
  child: ChildProcess | undefined;
  /** The launcher (monitor) process. */
  monitorPid: number;
  /** run: the container init's host pid; exec: the process's host pid. */
  pid: number;
  /** The launcher's exit: the container's (or exec'd process's) exit code, 128+N on signal N. */
  exited: Promise<number>;
  /** The ports published, with the host ports actually bound. */
  ports: PortMapping[];
  /** When the launcher was started (docker's StartedAt: never after the container's FinishedAt). */
  startedAt: Date;
}

/** A start that failed inside the launcher: the code is what docker would exit with (125/126/127). */
export class LaunchError extends FerryError {
  readonly exitCode: number;
  constructor(message: string, exitCode: number) {
    super('RUNTIME_ERROR', message, {
      hint:
        exitCode === 127 ? 'check the command and the image\'s PATH' :
        exitCode === 126 ? 'the command exists but cannot be executed (permissions, format)' :
        'see the message; the container was not started',
    });
    this.name = 'LaunchError';
    this.exitCode = exitCode;
  }
}

/** The launcher executable: build/Release/ferry-launch, or the packed one, checked by hash before each use. */
export function launcherPath(): string {
  return nativePart('ferry-launch');
}

function record(key: string, value: string | number | boolean): string {
  const text = typeof value === 'boolean' ? (value ? '1' : '0') : String(value);
  if (text.includes('\0')) throw new FerryError('USAGE', `${key} holds a NUL byte`);
  return `${key}=${text}\0`;
}

/** The spec as the launcher reads it. */
export function encodeSpec(spec: LaunchSpec, parentPid: number): Buffer {
  const r: string[] = [];
  if (spec.mode === 'run') {
    r.push(record('rootfs', spec.rootfsDir), record('mountcwd', spec.mountCwd));
    for (const l of spec.lowerDirs) r.push(record('lower', l));
    r.push(record('upper', spec.upperDir), record('work', spec.workDir), record('readonly', spec.readOnly));
    r.push(record('hostname', spec.hostname), record('net', spec.network), record('exitfile', spec.exitFile), record('mkcwd', spec.makeCwd));
    if (spec.oomFile !== undefined) r.push(record('oomfile', spec.oomFile));
    for (const op of spec.cgroupPlan ?? []) {
      if ('mkdir' in op) r.push(record('cg.mkdir', op.mkdir));
      else if ('inherit' in op) r.push(record('cg.inherit', op.inherit));
      else r.push(record('cg.write', op.write), record('cg.value', op.value));
    }
    if (spec.slirp4netns !== undefined) r.push(record('slirp', spec.slirp4netns));
    if (spec.shareNetworkOf !== undefined) r.push(record('netpid', spec.shareNetworkOf.pid), record('netpidstart', spec.shareNetworkOf.start));
    for (const p of spec.ports ?? []) r.push(record('port', `${p.protocol}:${p.hostIp}:${p.hostPort}:${p.containerPort}`));
    for (const b of spec.binds) {
      if ('tmpfs' in b) r.push(record('tmpfs', b.data), record('bind.exec', b.exec ?? false));
      else r.push(record('bind.src', b.source), record('bind.noexec', b.noexec ?? false));
      r.push(record('bind.dst', b.destination), record('bind.ro', b.readOnly), record('bind.suid', b.suid ?? false));
    }
    r.push(record('privileged', spec.privileged ?? false));
  } else {
    r.push(record('target', spec.targetPid), record('targetstart', spec.targetStart));
  }
  r.push(record('uid', spec.uid), record('gid', spec.gid));
  for (const g of spec.groups) r.push(record('group', g));
  r.push(record('cwd', spec.cwd), record('tty', spec.tty), record('stdin', spec.interactive), record('nonewprivs', spec.noNewPrivileges ?? false));
  if (parentPid > 0) r.push(record('ppid', parentPid));
  if (spec.capabilities !== undefined) r.push(record('caps', spec.capabilities.toString()));
  if (spec.seccomp !== undefined) r.push(record('seccomp', spec.seccomp.toString('hex')));
  for (const c of spec.cgroups ?? []) r.push(record('cgroup', c));
  for (const e of spec.env) r.push(record('env', e));
  for (const a of spec.argv) r.push(record('arg', a));
  return Buffer.from(r.join(''));
}

/** Parse the status lines; throws LaunchError on "error". */
function parseStatus(text: string, ports: PortMapping[]): number | undefined {
  let pid: number | undefined;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const port = /^port (tcp|udp) ([0-9.]+) (\d+) (\d+)$/.exec(line);
    if (port) {
      ports.push({ protocol: port[1] as 'tcp' | 'udp', hostIp: port[2] === '0.0.0.0' ? '' : port[2]!, hostPort: Number(port[3]), containerPort: Number(port[4]) });
      continue;
    }
    const m = /^pid (\d+)$/.exec(line);
    if (m) {
      pid = Number(m[1]);
      continue;
    }
    const e = /^error (\d+) (.*)$/.exec(line);
    if (e) throw new LaunchError(e[2]!, Number(e[1]));
    throw new FerryError('RUNTIME_ERROR', `container launcher: unexpected status "${line}"`);
  }
  return pid;
}

function exitCodeOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  return 128 + (signal === null ? 0 : constants.signals[signal]);
}

/** A detached child with a status channel on its fd 3 (the launcher, a container's supervisor). */
export interface StatusChild {
  child: ChildProcess;
  /** Its exit code (128+N on signal N); never an unhandled rejection. */
  exited: Promise<number>;
  /** fd 3, for writing a request to it. */
  sock: Socket;
  /** Everything it wrote on fd 3, once it closed it (its exec or its exit). */
  status: Promise<string>;
}

/**
 * Spawn `command` in its own session (a terminal's signals reach ferry, which forwards them once)
 * with fd 3 a socket to it, and collect what it says there.
 */
export function spawnWithStatus(command: string, args: readonly string[], stdio: readonly LaunchStdio[], env: NodeJS.ProcessEnv | undefined, what: string): StatusChild {
  const child = nodeChildProcess().spawn(command, args, { stdio: [...stdio, 'pipe'], detached: true, ...(env !== undefined ? { env } : {}) });
  const exited = new Promise<number>((resolvePromise, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => resolvePromise(exitCodeOf(code, signal)));
  });
  // Nobody may be left with an unhandled rejection when the caller only awaits the status.
  exited.catch(() => undefined);
  const sock = child.stdio[3] as Socket | null;
  if (sock === null) throw new FerryError('RUNTIME_ERROR', `${what}: no status channel`);
  const status = collectStatus(sock);
  child.once('error', () => sock.destroy());
  return { child, exited, sock, status };
}

/** A launcher just started and sent its request, by Node (`child`) or by posix_spawn; its status channel ends with `status`. */
interface StartedLauncher extends Pick<StatusChild, 'exited' | 'status'> {
  child: ChildProcess | undefined;
  pid: number | undefined;
}

/** The launcher on Node's child process (detached, or with pipes to read). */
function spawnLauncherNode(launcher: string, mode: string, stdio: readonly LaunchStdio[], request: Buffer): StartedLauncher {
  const { child, exited, sock, status } = spawnWithStatus(launcher, [mode], stdio, {}, 'container launcher');
  sock.end(request);
  return { child, pid: child.pid, exited, status: status.finally(() => sock.destroy()) };
}

/** Everything the child writes on its status socket, once it closed it (its exec or its exit). */
function collectStatus(sock: Socket): Promise<string> {
  const chunks: Buffer[] = [];
  return new Promise<string>((resolvePromise, reject) => {
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.once('end', () => resolvePromise(Buffer.concat(chunks).toString('utf8')));
    sock.once('error', (err: NodeJS.ErrnoException) => {
      // A child exiting before reading the whole request (a usage error) resets the socket.
      if (err.code === 'EPIPE' || err.code === 'ECONNRESET') resolvePromise(Buffer.concat(chunks).toString('utf8'));
      else reject(err);
    });
    sock.once('close', () => resolvePromise(Buffer.concat(chunks).toString('utf8')));
  });
}

/**
 * What the child writes on its end of a status socket until it closes it, read on the thread pool
 * (it closes it at its exec, moments after its start), then the fd closed: no node:net and its
 * start cost for one short read.
 */
function readStatusFd(fd: number): Promise<string> {
  const chunks: Buffer[] = [];
  return new Promise<string>((resolvePromise, reject) => {
    const next = (): void => {
      const buf = Buffer.allocUnsafe(4096);
      read(fd, buf, 0, buf.length, null, (err, n) => {
        // A child exiting before reading the whole request (a usage error) resets the socket.
        const ended = err === null ? n === 0 : err.code === 'ECONNRESET';
        if (err === null && n > 0) {
          chunks.push(buf.subarray(0, n));
          next();
          return;
        }
        close(fd, () => {
          if (ended) resolvePromise(Buffer.concat(chunks).toString('utf8'));
          else reject(new FerryError('RUNTIME_ERROR', `container launcher: read its status: ${err?.message ?? 'failed'}`, { cause: err }));
        });
      });
    };
    next();
  });
}

/**
 * The launcher of a container ferry waits for (stdio inherited, ignored or fds: nothing to pipe),
 * started by posix_spawn (io/native): libuv's fork would first copy the page tables of this whole
 * process, the largest step of a container start after Node's own. Same session, fds, signals,
 * environment and status socket as spawnWithStatus; the request is on its way before this returns.
 */
function spawnLauncherFast(launcher: string, mode: string, stdio: readonly LaunchStdio[], request: Buffer): StartedLauncher {
  const native = nativeFs();
  let devNull: number | undefined;
  const fds = stdio.map((s, i) => {
    if (s === 'inherit') return i;
    if (typeof s === 'number') return s;
    devNull ??= openSync('/dev/null', 'r+');
    return devNull;
  }) as [number, number, number];
  let spawned: [number, number];
  try {
    spawned = native.spawnSession(launcher, [mode], fds, request);
  } catch (err) {
    throw new FerryError('RUNTIME_ERROR', `container launcher: cannot start ${launcher}: ${errnoReason(err)}`, {
      cause: err,
      hint: 'run `ferry doctor`: the launcher may be missing or not executable',
    });
  } finally {
    if (devNull !== undefined) closeSync(devNull);
  }
  const [pid, fd] = spawned;
  const status = readStatusFd(fd);
  const exited = native.waitExit(pid);
  exited.catch(() => undefined);
  // readStatusFd closes the fd when the child has closed its end.
  return { child: undefined, pid, exited, status };
}


/**
 * Start the launcher and wait until the command was exec'd (or failed to be). Rejects with a
 * LaunchError when the start failed; the launcher has exited (or is exiting) with its code then.
 */
export async function launch(spec: LaunchSpec, options: LaunchOptions): Promise<Launched> {
  // Before the spawn: a command that ends at once may be recorded as finished before the pid line arrives.
  const request = encodeSpec(spec, options.detached ? 0 : process.pid);
  const startedAt = new Date();
  // Detached (ferry may exit first, unref'd) or with pipes to read: Node's own child process.
  const launcher = launcherPath();
  const { child, pid: monitorPid, exited, status } = options.detached || options.stdio.includes('pipe')
    ? spawnLauncherNode(launcher, spec.mode, options.stdio, request)
    : spawnLauncherFast(launcher, spec.mode, options.stdio, request);
  let pid: number | undefined;
  const ports: PortMapping[] = [];
  try {
    pid = parseStatus(await status, ports);
  } catch (err) {
    await exited.catch(() => undefined);
    throw err;
  }
  if (pid === undefined || monitorPid === undefined) {
    const code = await exited;
    throw new LaunchError(`container launcher exited with status ${code} before starting the container`, 125);
  }
  return { child, monitorPid, pid, exited, ports, startedAt };
}
