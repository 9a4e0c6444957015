import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { FerryError, UsageError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { pathExists, writeFileAtomicSync } from '../io/atomic-file.js';
import type { ContainerProcessConfig } from './container-spec.js';
import type { LaunchBind, LaunchTmpfs, PortMapping } from './launcher.js';
import type { HealthOnFailure, HealthState, HealthcheckConfig } from './healthcheck.js';
import type { Resources } from './resources.js';
import { shouldRestart, type RestartPolicy } from './restart-policy.js';
import type { ContainerSecurity } from './security.js';
import type { VolumeMount } from './volumes.js';
import { randomBytes } from '../io/random.js';
import { isoTime } from '../io/iso-time.js';

/**
 * A container on disk, `ROOT/containers/<id>/`:
 *   config.json   what it runs (written once, at create)
 *   rootfs.json   the store's rootfs plan (gc keeps the layers it names)
 *   image-manifest.json image-config.json   the image's raw manifest and config, so `commit`
 *                 works even after the image was removed from the store
 *   state.json    the launcher's pids once started
 *   exit          the exit status, written by the launcher's monitor when the container ends, so
 *                 it is known even when ferry is long gone
 *   upper/ work/  the writable layer; init/ mount points ferry adds (a lower layer, so they never
 *                 show in diff or commit); rootfs/ the mount point (empty on the host)
 *   hosts hostname resolv.conf   bound onto /etc in the container
 *   log           stdout and stderr of a detached container
 *   main.pid      the top process of a detached start (supervisor, else monitor): systemd's PIDFile
 *   stopped       present while the container was stopped by hand (`unless-stopped` stays down at boot)
 *   health.json   the health check's status and last results, written by the supervisor
 */
export interface ContainerRecord {
  schemaVersion: 1;
  id: string;
  name: string;
  created: string;
  image: { name: string; digest: Digest; configDigest: Digest; platform: string };
  process: {
    argv: string[];
    env: string[];
    cwd: string;
    /** As given (-u or the image's User). */
    user: string;
    uid: number;
    gid: number;
    groups: number[];
    /** The user's home from the image's passwd: HOME when the env has none. */
    home: string;
    tty: boolean;
    interactive: boolean;
  };
  /** The docker-style config `commit` writes into a new image. */
  config: ContainerProcessConfig & {
    StopSignal?: string;
    Labels?: Record<string, string>;
    ExposedPorts?: Record<string, object>;
    Volumes?: Record<string, object>;
  };
  hostname: string;
  network: 'host' | 'none' | 'private';
  /** --network container:NAME: the ID of the container whose network namespace this one joins. */
  networkContainer?: string;
  /** -p/-P as asked (host port 0: the kernel picks; the run state has the bound ones). */
  ports?: PortMapping[];
  readOnly: boolean;
  /** -v binds, volumes included (the /etc files are not listed). */
  volumes: LaunchBind[];
  /** Which of those binds are volumes, named or anonymous (absent in containers made before volumes). */
  volumeMounts?: VolumeMount[];
  /** --tmpfs mounts (absent in containers made before ferry had them). */
  tmpfs?: LaunchTmpfs[];
  /** Capabilities, seccomp, no-new-privileges (absent: docker's defaults). */
  security?: ContainerSecurity;
  /** Resource limits (absent or empty: none). */
  resources?: Resources;
  stopSignal: string;
  autoRemove: boolean;
  detached: boolean;
  /** --restart (absent: no). */
  restartPolicy?: RestartPolicy;
  /** The image's Healthcheck merged with the --health-* flags (absent: none). */
  healthcheck?: HealthcheckConfig;
  /** --health-on-failure (absent: none). */
  healthOnFailure?: HealthOnFailure;
}

export interface ContainerRunState {
  /** The launcher's monitor (host namespaces) and its start time, against pid reuse. */
  monitorPid: number;
  monitorStart: string;
  /** The container's init (PID 1 inside), host pid. */
  pid: number;
  pidStart: string;
  startedAt: string;
  /** Published ports as bound. */
  ports?: PortMapping[];
  /**
   * The supervisor (a detached ferry process that restarts the container and runs its health
   * checks), when the container has a restart policy or a health check.
   */
  supervisorPid?: number;
  supervisorStart?: string;
  /** Restarts by the policy since the last start by hand. */
  restartCount?: number;
  /** The supervisor waits (back-off) before starting it again; the last run's exit follows. */
  restarting?: boolean;
  lastExitCode?: number;
  lastFinishedAt?: string;
}

export type ContainerStatus = 'created' | 'running' | 'restarting' | 'exited';

export interface ContainerInfo {
  record: ContainerRecord;
  state: ContainerRunState | undefined;
  status: ContainerStatus;
  /** Set when exited; null when the monitor died without recording it (killed, host reboot). */
  exitCode: number | null | undefined;
  finishedAt: string | undefined;
  /** The kernel's OOM killer ended it (its memory limit was reached). */
  oomKilled?: boolean;
  /** Restarts by its policy since it was last started by hand. */
  restartCount: number;
  /** Stopped by hand (ferry stop/kill) since it was last started. */
  stoppedByHand: boolean;
  /** Its health check's state, while it runs with one. */
  health?: HealthState;
  /** Its supervisor is alive (the container may be between two runs). */
  supervised: boolean;
}

export interface ContainerPaths {
  dir: string;
  config: string;
  rootfsPlan: string;
  imageManifest: string;
  imageConfig: string;
  state: string;
  exit: string;
  log: string;
  upper: string;
  work: string;
  init: string;
  rootfs: string;
  hosts: string;
  hostname: string;
  resolvConf: string;
  /** The --security-opt seccomp=FILE profile, as given. */
  seccomp: string;
  mainPid: string;
  stopped: string;
  health: string;
}

export const ID_LENGTH = 64;
export const SHORT_ID_LENGTH = 12;

export function containersDir(root: string): string {
  return join(root, 'containers');
}

export function containerPaths(root: string, id: string): ContainerPaths {
  const dir = join(containersDir(root), id);
  // Fixed names below a normalised directory: joined by hand. path.join normalises the whole path
  // character by character, and a container start asks for these paths often (~4 ms in all).
  const at = (name: string): string => `${dir}/${name}`;
  return {
    dir,
    config: at('config.json'),
    rootfsPlan: at('rootfs.json'),
    imageManifest: at('image-manifest.json'),
    imageConfig: at('image-config.json'),
    state: at('state.json'),
    exit: at('exit'),
    log: at('log'),
    upper: at('upper'),
    work: at('work'),
    init: at('init'),
    rootfs: at('rootfs'),
    hosts: at('hosts'),
    hostname: at('hostname'),
    resolvConf: at('resolv.conf'),
    seccomp: at('seccomp.json'),
    mainPid: at('main.pid'),
    stopped: at('stopped'),
    health: at('health.json'),
  };
}

export function newContainerId(): string {
  return randomBytes(ID_LENGTH / 2).toString('hex');
}

export function shortId(id: string): string {
  return id.slice(0, SHORT_ID_LENGTH);
}

const ADJECTIVES = ['brave', 'calm', 'eager', 'fond', 'gentle', 'happy', 'keen', 'lucid', 'merry', 'nimble', 'proud', 'quiet', 'sharp', 'steady', 'swift', 'tidy'];
const NOUNS = ['barge', 'canoe', 'dinghy', 'ferry', 'galley', 'junk', 'ketch', 'launch', 'punt', 'raft', 'schooner', 'skiff', 'sloop', 'tender', 'tug', 'yawl'];

/** docker-style names, adjective_noun, with a number when those are taken. */
export function generateName(taken: ReadonlySet<string>): string {
  for (let attempt = 0; ; attempt++) {
    const bytes = randomBytes(2);
    const base = `${ADJECTIVES[bytes[0]! % ADJECTIVES.length]}_${NOUNS[bytes[1]! % NOUNS.length]}`;
    const name = attempt < 20 ? base : `${base}${attempt}`;
    if (!taken.has(name)) return name;
  }
}

/** docker's rule for --name. */
export function checkName(name: string): string {
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(name) || name.length > 128) {
    throw new UsageError(`container name "${name}" is invalid`, { hint: 'use letters, digits, "_", "." and "-", starting with a letter or digit' });
  }
  return name;
}

/** Start time of a process in clock ticks since boot (/proc/PID/stat field 22), or undefined when it is gone. */
export function processStartTime(pid: number): string | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') return undefined;
    throw err;
  }
  // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
  return text.slice(text.lastIndexOf(')') + 2).split(' ')[19];
}

/** Is `pid` still the process that started at `start`? */
export function isAlive(pid: number, start: string): boolean {
  const now = processStartTime(pid);
  if (now === undefined || now !== start) return false;
  // A zombie (exited, not yet reaped by its parent) is not running.
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return text.slice(text.lastIndexOf(')') + 2, text.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

async function readJson<T>(path: string, what: string): Promise<T | undefined> {
  let text: string;
  try {
    // Synchronous, as every read of a container's small files: ps and each start read all of them.
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new FerryError('IO_ERROR', `read ${what} (${path}): ${(err as Error).message}`, { cause: err });
  }
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    throw new FerryError('STORE_ERROR', `${what} (${path}) is not valid JSON`, { cause: err, hint: 'remove the container with ferry rm -f' });
  }
}

export async function writeRecord(root: string, record: ContainerRecord): Promise<void> {
  writeFileAtomicSync(containerPaths(root, record.id).config, `${JSON.stringify(record, null, 2)}\n`, 0o600);
}

export async function writeRunState(root: string, id: string, state: ContainerRunState): Promise<void> {
  writeFileAtomicSync(containerPaths(root, id).state, `${JSON.stringify(state, null, 2)}\n`, 0o600);
}

/** The recorded exit status, when the monitor wrote one. */
async function readExit(path: string): Promise<{ code: number; at: string; oom: boolean } | undefined> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  // "CODE" or "CODE oom" (the kernel's OOM killer acted in the container's memory cgroup).
  const [codeText = '', flag] = text.trim().split(' ');
  const code = Number(codeText);
  if (codeText === '' || !Number.isInteger(code)) return undefined;
  return { code, at: isoTime(statSync(path).mtime), oom: flag === 'oom' };
}

/** A container's record and live status; undefined when it does not exist (or is half-created). */
export async function loadContainer(root: string, id: string): Promise<ContainerInfo | undefined> {
  const paths = containerPaths(root, id);
  const record = await readJson<ContainerRecord>(paths.config, `container ${shortId(id)} config`);
  if (record === undefined) return undefined;
  const state = await readJson<ContainerRunState>(paths.state, `container ${shortId(id)} state`);
  const supervised = state?.supervisorPid !== undefined && isAlive(state.supervisorPid, state.supervisorStart ?? '');
  const health = record.healthcheck !== undefined ? await readJson<HealthState>(paths.health, `container ${shortId(id)} health`) : undefined;
  const common = { record, state, restartCount: state?.restartCount ?? 0, stoppedByHand: await pathExists(paths.stopped), supervised, ...(health !== undefined ? { health } : {}) };
  // Between two runs: the supervisor waits out its back-off (docker's "Restarting").
  if (supervised && state?.restarting === true) {
    return { ...common, status: 'restarting', exitCode: state.lastExitCode, finishedAt: state.lastFinishedAt };
  }
  const exit = await readExit(paths.exit);
  // A run that just ended, before its live supervisor recorded its decision: it restarts it
  // exactly when its policy says so (docker shows such a container as restarting too).
  if (exit !== undefined && supervised && !common.stoppedByHand && record.restartPolicy !== undefined && shouldRestart(record.restartPolicy, exit.code, common.restartCount)) {
    return { ...common, status: 'restarting', exitCode: exit.code, finishedAt: exit.at, ...(exit.oom ? { oomKilled: true } : {}) };
  }
  if (exit !== undefined) return { ...common, status: 'exited', exitCode: exit.code, finishedAt: exit.at, ...(exit.oom ? { oomKilled: true } : {}) };
  if (state === undefined) return { ...common, status: 'created', exitCode: undefined, finishedAt: undefined };
  if (isAlive(state.monitorPid, state.monitorStart)) return { ...common, status: 'running', exitCode: undefined, finishedAt: undefined };
  // The monitor is gone without writing the exit file: it was killed (or the host rebooted).
  // It may also have written it just now, between the two reads.
  const late = await readExit(paths.exit);
  if (late !== undefined) return { ...common, status: 'exited', exitCode: late.code, finishedAt: late.at };
  return { ...common, status: 'exited', exitCode: null, finishedAt: undefined };
}

function containerIds(root: string): string[] {
  try {
    return readdirSync(containersDir(root)).filter((id) => /^[0-9a-f]{64}$/.test(id));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/**
 * Every container's record (its config.json alone: no live status), for what needs only those:
 * the names a new container must not take, which ones are --rm. With hundreds of stopped
 * containers, reading each one's state, exit and processes twice cost a start 90 ms.
 */
export async function listContainerRecords(root: string): Promise<ContainerRecord[]> {
  const out: ContainerRecord[] = [];
  for (const id of containerIds(root)) {
    const record = await readJson<ContainerRecord>(containerPaths(root, id).config, `container ${shortId(id)} config`);
    if (record !== undefined) out.push(record);
  }
  return out;
}

/** Every container, newest first. */
export async function listContainers(root: string): Promise<ContainerInfo[]> {
  const out: ContainerInfo[] = [];
  for (const id of containerIds(root)) {
    const info = await loadContainer(root, id);
    if (info !== undefined) out.push(info);
  }
  return out.sort((a, b) => (a.record.created < b.record.created ? 1 : a.record.created > b.record.created ? -1 : 0));
}

/** By full id, name, or unique id prefix (docker's rules); the match alone is read whole. */
export async function findContainer(root: string, text: string): Promise<ContainerInfo> {
  const all = await listContainerRecords(root);
  const exact = all.find((r) => r.id === text || r.name === text || r.name === text.replace(/^\//, ''));
  const byPrefix = exact === undefined && /^[0-9a-f]+$/.test(text) ? all.filter((r) => r.id.startsWith(text)) : [];
  if (byPrefix.length > 1) {
    throw new UsageError(`container id prefix ${text} is ambiguous: ${byPrefix.map((r) => shortId(r.id)).join(', ')}`, {
      hint: 'give more characters of the id, or the name',
    });
  }
  const found = exact ?? byPrefix[0];
  // Removed between the two reads: as if it had never been there.
  const info = found === undefined ? undefined : await loadContainer(root, found.id);
  if (info !== undefined) return info;
  throw new FerryError('NOT_FOUND', `no such container: ${text}`, { hint: 'ferry ps -a lists the containers' });
}

/**
 * Containers made from any of these images (manifest digests), whatever their status: what
 * `rmi` must not orphan unasked. A `-d --rm` container that has exited does not count (it is
 * removed the next time ferry looks).
 */
export async function containersUsingImages(root: string, manifestDigests: ReadonlySet<string>): Promise<ContainerInfo[]> {
  return (await listContainers(root)).filter((c) => manifestDigests.has(c.record.image.digest) && !(c.record.autoRemove && c.status === 'exited'));
}
