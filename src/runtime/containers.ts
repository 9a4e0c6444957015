import { constants as fsConstants, chmodSync, chownSync, mkdirSync, readFileSync, renameSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { mkdir, open, readFile, rm } from '../io/fs-promises.js';
import { isAbsolute, join, posix, relative } from 'node:path';
import { FerryError, UsageError, messageOf } from '../errors.js';
import { pathExistsNow, writeFileAtomic } from '../io/atomic-file.js';
import { parseDigest } from '../oci/digest.js';
import type { Image } from '../oci/image.js';
import { formatPlatform, type Platform } from '../oci/platform.js';
import { parseReference } from '../oci/reference.js';
// The store's read API, not its index: `run` should not load the importer and unpacker.
import { StoreLock, chainIds, claimRootfs, findStoreImage, openStoreImageByDigest, ownedName, type Store } from '../store/read.js';
import { mark } from '../io/timing.js';
import type { Change } from './changes.js';
import { buildProcessSpec, expandEnv, mergeEnv, parseEnvFile, withHome, type RunFlags } from './container-spec.js';
import { lookupLayered } from './layered-fs.js';
import { existingCgroupProcs, oomEventsFile, planContainerCgroups, removeContainerCgroups } from './cgroups.js';
import { exposedPorts, parsePublish } from './ports.js';
import { parseResources, type ResourceFlags } from './resources.js';
import { launch, type ExecLaunch, type LaunchBind, type LaunchMount, type LaunchStdio, type Launched } from './launcher.js';
import { launchSecurity, parseSecurity, parseTmpfs, securityOf, type SecurityFlags } from './security.js';
import { killArgument, parseSignal } from './signals.js';
import { mergeHealthcheck, parseHealthOnFailure, type HealthFlags } from './healthcheck.js';
import { parseMounts } from './mount-flag.js';
import { parseRestartPolicy } from './restart-policy.js';
import { needsSupervisor, spawnSupervisor } from './supervise.js';
import {
  checkName,
  containerPaths,
  findContainer,
  generateName,
  isAlive,
  listContainerRecords,
  listContainers,
  loadContainer,
  newContainerId,
  processStartTime,
  shortId,
  writeRecord,
  writeRunState,
  type ContainerInfo,
  type ContainerRecord,
  type ContainerRunState,
} from './state.js';
import { findSlirp4netns, privateResolvConf } from './network.js';
import { resolveUserInLayers, resolveUserInProcessRoot, type ExecUser } from './users.js';
import { parseNamedVolume, prepareVolumes, removeAnonymousVolumes, type NamedVolumeSpec } from './volumes.js';
import { isoTime } from '../io/iso-time.js';

/**
 * The container lifecycle (DESIGN "Runtime"): create (files on disk), start (the launcher),
 * stop / kill / rm, exec, logs. A container's status comes from its files and live processes
 * (state.ts), so it survives ferry exiting.
 */
export interface RunOptions extends RunFlags, SecurityFlags, HealthFlags {
  /** --restart no|on-failure[:N]|always|unless-stopped */
  restart?: string;
  /** --mount type=bind|volume|tmpfs,... (docker's syntax) */
  mounts?: readonly string[];
  /** --memory, --cpus, --pids-limit, ... as given (docker's units). */
  resources?: ResourceFlags;
  /** Image name or digest in the store (with `builtImage`: only its name for messages). */
  image: string;
  /**
   * `ferry build`'s RUN: the stage's image as built so far, not a store image (no ref); its
   * layers must be in the store.
   */
  builtImage?: Image;
  platform?: Platform;
  envFiles?: readonly string[];
  /** -v HOST:CONTAINER[:ro|rw] */
  volumes?: readonly string[];
  /** --tmpfs PATH[:opts] */
  tmpfs?: readonly string[];
  /** host, none, private, or container:NAME (share that running container's network namespace). */
  network?: string;
  /** -p specs; they imply --network private. */
  publish?: readonly string[];
  /** -P: publish every port the image exposes. */
  publishAll?: boolean;
  readOnly?: boolean;
  name?: string;
  interactive?: boolean;
  detach?: boolean;
  remove?: boolean;
  /** For bare `-e NAME` entries; default process.env. */
  hostEnv?: NodeJS.ProcessEnv;
  /** A foreground run's stdin/stdout/stderr; default ferry's own (stdin only with -i). */
  stdio?: [LaunchStdio, LaunchStdio, LaunchStdio];
}

export interface RunResult {
  id: string;
  name: string;
  /** Foreground runs: the container's exit code (128+N when killed by signal N). */
  exitCode?: number;
}

/** Signals a foreground ferry passes on to the container (ferry's terminal sends them to ferry). */
const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH'];

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/**
 * -v HOST:CONTAINER[:opts]: absolute paths only (no named volumes); the host dir is created when
 * missing, as docker does. Options: ro/rw, suid/nosuid (default nosuid), exec/noexec; a volume is
 * always nodev (device nodes the container makes there never open host devices).
 */
export function parseVolume(text: string): LaunchBind {
  const parts = text.split(':');
  if (parts.length < 2 || parts.length > 3) {
    throw new UsageError(`volume "${text}": expected HOST:CONTAINER[:ro]`);
  }
  const [host, ctr, opts = ''] = parts as [string, string, string?];
  if (!isAbsolute(host)) {
    throw new UsageError(`volume "${text}": the host path must be absolute`, { hint: 'give a host directory (-v /srv/data:/data) or a volume name (-v data:/data)' });
  }
  if (!ctr.startsWith('/')) throw new UsageError(`volume "${text}": the container path must be absolute`);
  const destination = posix.normalize(ctr).replace(/\/+$/, '');
  if (destination === '' || destination === '/') throw new UsageError(`volume "${text}": cannot mount over the container's root`);
  const bind: LaunchBind = { source: posix.normalize(host), destination, readOnly: false };
  for (const o of opts === '' ? [] : opts.split(',')) {
    if (o === 'ro' || o === 'rw') bind.readOnly = o === 'ro';
    else if (o === 'suid') bind.suid = true;
    else if (o === 'nosuid') delete bind.suid;
    else if (o === 'noexec') bind.noexec = true;
    else if (o === 'exec') delete bind.noexec;
    else if (o === 'nodev') continue; // always
    else if (o === 'dev') throw new UsageError(`volume "${text}": "dev" is refused: device nodes on a container's mounts would reach host devices`);
    else throw new UsageError(`volume "${text}": unknown option "${o}" (ro, rw, suid, nosuid, exec, noexec)`);
  }
  return bind;
}

function depth(path: string): number {
  return path.split('/').filter((c) => c !== '').length;
}

function readHostFile(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  }
}

/**
 * Mount points the launcher needs but the image lacks (/proc, /sys, /dev, /etc/hosts, ...) go into
 * `init/`, a lower layer above the image's (docker's "-init" layer): the container's upper layer
 * then holds only what the container itself changed. A created /etc copies the image's /etc
 * metadata, so the merged directory looks exactly as in the image.
 */
async function makeInitLayer(initDir: string, layers: readonly string[]): Promise<void> {
  mkdirSync(initDir, { mode: 0o755 });
  for (const dir of ['proc', 'sys', 'dev']) {
    if ((await lookupLayered(layers, `/${dir}`, false)) === undefined) mkdirSync(join(initDir, dir), { mode: 0o755 });
  }
  const etc = await lookupLayered(layers, '/etc', false);
  if (etc !== undefined && !etc.stat.isDirectory()) return; // a symlinked /etc: the launcher resolves inside the root
  const missing: string[] = [];
  for (const f of ['hosts', 'hostname', 'resolv.conf']) if ((await lookupLayered(layers, `/etc/${f}`, false)) === undefined) missing.push(f);
  if (missing.length === 0) return;
  const etcDir = join(initDir, 'etc');
  mkdirSync(etcDir, { mode: 0o755 });
  for (const f of missing) writeFileSync(join(etcDir, f), '', { mode: 0o644 });
  if (etc !== undefined) {
    chownSync(etcDir, etc.stat.uid, etc.stat.gid);
    chmodSync(etcDir, etc.stat.mode & 0o7777);
    utimesSync(etcDir, etc.stat.atime, etc.stat.mtime);
  }
}

function writeNetworkFiles(record: ContainerRecord, root: string): void {
  const paths = containerPaths(root, record.id);
  const name = record.hostname;
  let hosts: string;
  let resolv: string;
  if (record.network === 'host') {
    hosts = readHostFile('/etc/hosts');
    if (hosts !== '' && !hosts.endsWith('\n')) hosts += '\n';
    if (!hosts.split('\n').some((l) => l.split(/\s+/).slice(1).includes(name))) hosts += `127.0.0.1\t${name}\n`;
    resolv = readHostFile('/etc/resolv.conf');
  } else {
    hosts = `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.0.1\t${name}\n`;
    resolv = record.network === 'private' && record.networkContainer === undefined && findSlirp4netns() !== undefined
      ? privateResolvConf(readHostFile('/etc/resolv.conf'))
      : `# ferry: --network ${record.network}\n`;
  }
  writeFileSync(paths.hosts, hosts, { mode: 0o644 });
  writeFileSync(paths.hostname, `${name}\n`, { mode: 0o644 });
  writeFileSync(paths.resolvConf, resolv, { mode: 0o644 });
}

/** Layer diff dirs of a container's image, top first (host paths). */
async function imageLayerDirs(store: Store, record: ContainerRecord): Promise<string[]> {
  const plan = JSON.parse(readFileSync(containerPaths(store.root, record.id).rootfsPlan, 'utf8')) as { chainIds: string[] };
  return [...plan.chainIds].reverse().map((c) => store.layers.diffDir(parseDigest(c, `container ${record.name} layer`)));
}

/** The container's files as it sees them now, minus mounts: upper first, then the image. */
export async function containerLayerDirs(store: Store, record: ContainerRecord): Promise<string[]> {
  return [containerPaths(store.root, record.id).upper, ...(await imageLayerDirs(store, record))];
}

/** Namespaces, overlay mounts and pivot_root need root here: there is no rootless mode (yet). */
function requireRoot(what: string): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new FerryError('UNSUPPORTED', `${what}: running containers needs root`, {
      hint: 'run ferry as root (e.g. with sudo); rootless containers are not supported',
    });
  }
}

async function openNamed(store: Store, text: string, platform: Platform | undefined): Promise<{ name: string; image: Image }> {
  const found = await findStoreImage(store, text, platform);
  return { name: found.name, image: await openStoreImageByDigest(store, found.manifestDigest, parseReference(found.name)) };
}

/** Write a container's files (nothing runs yet). */
export async function createContainer(store: Store, options: RunOptions): Promise<ContainerRecord> {
  const restartPolicy = parseRestartPolicy(options.restart ?? 'no');
  if (restartPolicy.name !== 'no' && options.remove === true) {
    throw new UsageError(`--restart ${options.restart ?? ''} and --rm conflict`, { hint: 'a container removed when it exits cannot be restarted: drop one of them' });
  }
  if (restartPolicy.name !== 'no' && options.detach !== true) {
    throw new UsageError(`--restart ${options.restart ?? ''} needs -d`, { hint: 'a restarted container runs in the background; run it with -d and follow it with ferry logs -f' });
  }
  const healthOnFailure = parseHealthOnFailure(options.healthOnFailure);
  // The --health-* flags checked before the image is looked up (merged with its Healthcheck below).
  mergeHealthcheck(undefined, options);
  const mountSpecs = parseMounts(options.mounts ?? []);
  const entry = options.builtImage !== undefined ? { name: options.image, image: options.builtImage } : await openNamed(store, options.image, options.platform);
  const image = entry.image;
  mark('image');
  const healthcheck = mergeHealthcheck(image.config.config?.Healthcheck, options);
  const id = newContainerId();
  const diffIds = image.config.rootfs.diff_ids;
  const layers = chainIds(diffIds).reverse().map((c) => store.layers.diffDir(c));

  const hostEnv = options.hostEnv ?? process.env;
  const fileEntries: string[] = [];
  for (const f of options.envFiles ?? []) {
    let text: string;
    try {
      text = await readFile(f, 'utf8');
    } catch (err) {
      throw new UsageError(`--env-file ${f}: ${messageOf(err)}`, { cause: err });
    }
    fileEntries.push(...parseEnvFile(text));
  }
  const env = expandEnv([...fileEntries, ...(options.env ?? [])], hostEnv);
  const flags: RunFlags = { ...options, env };
  const spec = buildProcessSpec(image.config.config, flags, shortId(id));
  const user = await resolveUserInLayers(layers, spec.user, `image ${entry.name}`);
  const volumeSpecs = [...(options.volumes ?? []).map((v) => parseNamedVolume(v) ?? parseVolume(v)), ...mountSpecs.volumes];
  const hostBinds = volumeSpecs.filter((v): v is LaunchBind => !('name' in v));
  const tmpfs = [...(options.tmpfs ?? []).map(parseTmpfs), ...mountSpecs.tmpfs];
  const resources = parseResources(options.resources ?? {});
  const ports = [...(options.publish ?? []).map(parsePublish), ...(options.publishAll === true ? exposedPorts(image.config.config?.ExposedPorts) : [])];
  if (ports.length > 0 && options.network !== undefined && options.network !== 'private') {
    throw new UsageError(`-p/-P with --network ${options.network}: ports are published only from a private network`, { hint: 'drop --network (-p gives the container a private network), or drop -p' });
  }
  const { network, networkContainer } = await parseNetwork(store, options.network ?? (ports.length > 0 ? 'private' : 'host'));
  const { security, seccompProfile } = await parseSecurity(options);
  const stopSignal = parseSignal(image.config.config?.StopSignal ?? 'SIGTERM').name;
  const img = image.config.config ?? {};
  const covered = new Set([...hostBinds, ...tmpfs].map((m) => m.destination));
  const named = volumeSpecs.filter((v): v is NamedVolumeSpec => 'name' in v);
  const { binds: volumeBinds, mounts: volumeMounts } = await prepareVolumes(store, named, covered, img.Volumes, layers);
  const volumes = [...hostBinds, ...volumeBinds];
  mark('spec');

  const record: ContainerRecord = {
    schemaVersion: 1,
    id,
    name: options.name === undefined ? '' : checkName(options.name),
    created: isoTime(),
    image: { name: entry.name, digest: image.digest, configDigest: image.configDigest, platform: formatPlatform(image.platform) },
    process: {
      argv: spec.argv,
      env: spec.env,
      cwd: spec.cwd,
      user: spec.user,
      uid: user.uid,
      gid: user.gid,
      groups: user.groups,
      home: user.home,
      tty: options.tty ?? false,
      interactive: options.interactive ?? false,
    },
    config: {
      ...spec.config,
      ...(img.StopSignal !== undefined ? { StopSignal: img.StopSignal } : {}),
      ...(img.Labels !== undefined ? { Labels: img.Labels } : {}),
      ...(img.ExposedPorts !== undefined ? { ExposedPorts: img.ExposedPorts } : {}),
      ...(img.Volumes !== undefined ? { Volumes: img.Volumes } : {}),
    },
    hostname: spec.hostname,
    network,
    ...(networkContainer !== undefined ? { networkContainer } : {}),
    ...(ports.length > 0 ? { ports } : {}),
    readOnly: options.readOnly ?? false,
    volumes,
    ...(volumeMounts.length > 0 ? { volumeMounts } : {}),
    tmpfs,
    security,
    resources,
    stopSignal,
    autoRemove: options.remove ?? false,
    detached: options.detach ?? false,
    ...(restartPolicy.name !== 'no' ? { restartPolicy } : {}),
    ...(healthcheck !== undefined ? { healthcheck } : {}),
    ...(healthOnFailure !== 'none' ? { healthOnFailure } : {}),
  };

  for (const source of mountSpecs.mustExist) {
    if (!pathExistsNow(source)) throw new UsageError(`--mount: the bind source ${source} does not exist`, { hint: 'create it first (-v creates a missing directory, --mount does not, as docker)' });
  }
  // docker creates a missing host directory; an existing file is bound as a file.
  for (const v of hostBinds) if (!pathExistsNow(v.source)) await mkdir(v.source, { recursive: true });
  const paths = containerPaths(store.root, id);
  // The plan first (checked and recorded under the store lock): from here on prune keeps the
  // image's layers. The container stays invisible until config.json exists.
  await claimRootfs(store, id, diffIds);
  mark('claim');
  try {
    await store.lock.with(async () => {
      const all = await listContainerRecords(store.root);
      const taken = new Set(all.map((r) => r.name));
      if (record.name === '') record.name = generateName(taken);
      else if (taken.has(record.name)) {
        const other = all.find((r) => r.name === record.name)!;
        throw new FerryError('IN_USE', `container name "${record.name}" is already used by container ${shortId(other.id)}`, {
          hint: 'remove that container (ferry rm) or choose another name',
        });
      }
      await writeRecord(store.root, record);
    });
    mark('record');
    // Small files of one new directory, written synchronously: each async call is a thread-pool
    // round trip, which on a busy machine costs more than the write itself (issue 16).
    writeFileSync(paths.imageManifest, image.rawManifest, { mode: 0o600 });
    writeFileSync(paths.imageConfig, image.rawConfig, { mode: 0o600 });
    if (seccompProfile !== undefined) writeFileSync(paths.seccomp, seccompProfile, { mode: 0o600 });
    for (const d of [paths.upper, paths.work, paths.rootfs]) mkdirSync(d, { mode: 0o755 });
    await makeInitLayer(paths.init, layers);
    writeNetworkFiles(record, store.root);
    mark('files');
  } catch (err) {
    await removeContainerFiles(store, id);
    await removeAnonymousVolumes(store, record);
    throw err;
  }
  return record;
}

/** --network host|none|private|container:NAME (docker's spelling). */
async function parseNetwork(store: Store, text: string): Promise<{ network: ContainerRecord['network']; networkContainer?: string }> {
  if (text === 'host' || text === 'none' || text === 'private') return { network: text };
  if (text.startsWith('container:') && text.length > 'container:'.length) {
    const other = await findContainer(store.root, text.slice('container:'.length));
    if (other.status !== 'running') {
      throw new FerryError('RUNTIME_ERROR', `--network ${text}: container ${other.record.name} is not running`, { hint: 'start it first; this container joins its network namespace' });
    }
    return { network: other.record.network === 'host' ? 'host' : 'none', ...(other.record.network === 'host' ? {} : { networkContainer: other.record.id }) };
  }
  throw new UsageError(`--network ${text}: expected host, private, none or container:NAME`);
}

/** The running container whose network namespace this one joins. */
async function sharedNetwork(store: Store, record: ContainerRecord): Promise<{ shareNetworkOf?: { pid: number; start: string } }> {
  if (record.networkContainer === undefined) return {};
  const other = await findContainer(store.root, record.networkContainer);
  const s = other.state;
  if (other.status !== 'running' || s === undefined) {
    throw new FerryError('RUNTIME_ERROR', `container ${record.name} shares the network of container ${other.record.name}, which is not running`, { hint: `start ${other.record.name} first` });
  }
  return { shareNetworkOf: { pid: s.pid, start: s.pidStart } };
}

/** --network private: slirp4netns for outbound traffic where the host has it (else loopback only; doctor says so). */
function outbound(): { slirp4netns?: string } {
  const slirp4netns = findSlirp4netns();
  return slirp4netns !== undefined ? { slirp4netns } : {};
}

/** Capabilities, seccomp filter and cgroups of a container's processes (run and exec alike). */
async function confinement(store: Store, record: ContainerRecord, cgroups: readonly string[]): Promise<{ capabilities: bigint; seccomp?: Buffer; cgroups: readonly string[]; noNewPrivileges: boolean }> {
  const security = securityOf(record.security);
  const path = containerPaths(store.root, record.id).seccomp;
  const profile = security.seccomp === 'profile' ? readFileSync(path, 'utf8') : undefined;
  return { ...(await launchSecurity(security, profile, `the seccomp profile of container ${record.name}`)), cgroups, noNewPrivileges: security.noNewPrivileges };
}

/** Start the container's init through the launcher: every start (run, start, a restart by the supervisor) comes here. */
export async function launchRecord(store: Store, record: ContainerRecord, stdio: [LaunchStdio, LaunchStdio, LaunchStdio]): Promise<Launched> {
  const paths = containerPaths(store.root, record.id);
  const plan = JSON.parse(readFileSync(paths.rootfsPlan, 'utf8')) as { lowerDirs: string[] };
  const rel = (p: string): string => relative(store.root, p);
  const security = securityOf(record.security);
  const { cgroups, ops: cgroupOps } = planContainerCgroups(record.id, { privileged: security.privileged, resources: record.resources ?? {} });
  const oomFile = oomEventsFile(cgroups);
  const binds: LaunchMount[] = [
    { source: paths.hostname, destination: '/etc/hostname', readOnly: false },
    { source: paths.hosts, destination: '/etc/hosts', readOnly: false },
    { source: paths.resolvConf, destination: '/etc/resolv.conf', readOnly: false },
    ...record.volumes,
    ...(record.tmpfs ?? []),
  ];
  // Shallow first, so a volume inside another volume (or inside /etc) lands on top (docker sorts the same way).
  const sorted = binds.map((b, i) => ({ b, i })).sort((x, y) => depth(x.b.destination) - depth(y.b.destination) || x.i - y.i).map((x) => x.b);
  const p = record.process;
  return launch(
    {
      mode: 'run',
      rootfsDir: paths.rootfs,
      mountCwd: store.root,
      // Relative to the store root: short options, and no ':' or ',' from the root's own path.
      lowerDirs: [rel(paths.init), ...plan.lowerDirs],
      upperDir: rel(paths.upper),
      workDir: rel(paths.work),
      readOnly: record.readOnly,
      hostname: record.hostname,
      network: record.network,
      ...(await sharedNetwork(store, record)),
      ...(record.network === 'private' && record.networkContainer === undefined ? outbound() : {}),
      ports: record.ports ?? [],
      binds: sorted,
      privileged: security.privileged,
      ...(await confinement(store, record, cgroups.procs)),
      exitFile: paths.exit,
      ...(oomFile !== undefined ? { oomFile } : {}),
      cgroupPlan: cgroupOps,
      makeCwd: true,
      argv: p.argv,
      env: withHome(p.env, p.home),
      cwd: p.cwd,
      uid: p.uid,
      gid: p.gid,
      groups: p.groups,
      tty: p.tty,
      interactive: p.interactive,
    },
    { stdio, detached: record.detached },
  );
}

interface SignalForwarder {
  /** From now on signals go to `pid`; those that arrived before are sent now. */
  target(pid: number): void;
  stop(): void;
}

/**
 * Pass the signals ferry receives on to the launcher. Installed BEFORE the launch: a signal that
 * arrives while the container starts must not kill ferry (its default action), it is held and
 * delivered once the launcher's pid is known.
 */
function forwardSignals(): SignalForwarder {
  let pid: number | undefined;
  const pending: NodeJS.Signals[] = [];
  const send = (sig: NodeJS.Signals): void => {
    if (pid === undefined) {
      pending.push(sig);
      return;
    }
    try {
      process.kill(pid, sig);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  };
  const handlers = FORWARDED.map((sig) => {
    const handler = (): void => send(sig);
    process.on(sig, handler);
    return [sig, handler] as const;
  });
  return {
    target(p) {
      pid = p;
      for (const sig of pending.splice(0)) send(sig);
    },
    stop() {
      for (const [sig, handler] of handlers) process.off(sig, handler);
    },
  };
}

/**
 * `ferry run`: create and start a container. Foreground: waits and returns the exit code
 * (a start failure is a LaunchError carrying 125/126/127). Detached: returns once the command runs.
 */
export async function runContainer(store: Store, options: RunOptions): Promise<RunResult> {
  requireRoot(`run ${options.image}`);
  await removeFinishedAutoRemove(store);
  mark('sweep');
  const record = await createContainer(store, options);
  const paths = containerPaths(store.root, record.id);
  if (record.detached) {
    const log = await open(paths.log, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_APPEND | fsConstants.O_NOFOLLOW, 0o640);
    try {
      return await startDetached(store, record, log.fd);
    } finally {
      await log.close();
    }
  }
  const stdio = options.stdio ?? [record.process.interactive ? 'inherit' : 'ignore', 'inherit', 'inherit'];
  const forwarder = forwardSignals();
  let exitCode: number;
  try {
    let launched: Launched;
    try {
      launched = await launchRecord(store, record, stdio);
    } catch (err) {
      if (record.autoRemove) await removeAutoRemoved(store, record);
      throw err;
    }
    mark('launch');
    forwarder.target(launched.monitorPid);
    await recordStarted(store.root, record.id, launched);
    mark('state');
    exitCode = await launched.exited;
    mark('exited');
  } finally {
    forwarder.stop();
  }
  if (record.autoRemove) await removeAutoRemoved(store, record);
  mark('removed');
  return { id: record.id, name: record.name, exitCode };
}

async function startDetached(store: Store, record: ContainerRecord, log: number): Promise<RunResult> {
  const paths = containerPaths(store.root, record.id);
  if (needsSupervisor(record)) {
    // The supervisor starts it (the same launchRecord), restarts it and runs its health checks.
    const { pid } = await spawnSupervisor(store.root, record.id, log);
    await writeFileAtomic(paths.mainPid, `${pid}\n`, 0o644);
    return { id: record.id, name: record.name };
  }
  const launched = await launchRecord(store, record, ['ignore', log, log]);
  await recordStarted(store.root, record.id, launched);
  await writeFileAtomic(paths.mainPid, `${launched.monitorPid}\n`, 0o644);
  // The monitor lives on (its own session); ferry may exit.
  launched.child?.unref();
  return { id: record.id, name: record.name };
}

export async function recordStarted(root: string, id: string, launched: Launched, extra: Partial<ContainerRunState> = {}): Promise<void> {
  await writeRunState(root, id, {
    ...extra,
    monitorPid: launched.monitorPid,
    monitorStart: processStartTime(launched.monitorPid) ?? '',
    pid: launched.pid,
    pidStart: processStartTime(launched.pid) ?? '',
    startedAt: isoTime(launched.startedAt),
    ...(launched.ports.length > 0 ? { ports: launched.ports } : {}),
  });
}

/** Containers run with `-d --rm` that have exited since: removed the next time ferry looks. */
async function removeFinishedAutoRemove(store: Store): Promise<void> {
  // Only --rm containers are looked at further: their status needs their state, exit and processes.
  for (const record of await listContainerRecords(store.root)) {
    if (!record.autoRemove) continue;
    const c = await loadContainer(store.root, record.id);
    if (c?.status === 'exited') await removeAutoRemoved(store, c.record);
  }
}

export async function listAllContainers(store: Store): Promise<ContainerInfo[]> {
  await removeFinishedAutoRemove(store);
  return listContainers(store.root);
}

function signalInit(info: ContainerInfo, signal: NodeJS.Signals | number): boolean {
  const s = info.state;
  if (s === undefined || !isAlive(s.pid, s.pidStart)) return false;
  try {
    process.kill(s.pid, signal);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

/** Poll until the container is no longer running (monitor gone or exit recorded). */
async function waitStopped(root: string, id: string, timeoutMs: number): Promise<ContainerInfo | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const info = await loadContainer(root, id);
    if (info === undefined || info.status !== 'running') return info;
    if (Date.now() >= deadline) return info;
    await sleep(50);
  }
}

/** Until the monitor process itself is gone (it writes the exit file just before exiting). */
async function waitMonitorGone(info: ContainerInfo, timeoutMs: number): Promise<void> {
  const s = info.state;
  if (s === undefined) return;
  const deadline = Date.now() + timeoutMs;
  while (isAlive(s.monitorPid, s.monitorStart) && Date.now() < deadline) await sleep(20);
  if (s.supervisorPid === undefined) return;
  while (isAlive(s.supervisorPid, s.supervisorStart ?? '') && Date.now() < deadline) await sleep(20);
}

function signalSupervisor(info: ContainerInfo, signal: NodeJS.Signals): void {
  const s = info.state;
  if (s?.supervisorPid === undefined || !isAlive(s.supervisorPid, s.supervisorStart ?? '')) return;
  try {
    process.kill(s.supervisorPid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/** Stopped by hand: its supervisor does not restart it, and `unless-stopped` stays down at boot. */
async function markStopped(root: string, id: string): Promise<void> {
  writeFileSync(containerPaths(root, id).stopped, `${isoTime()}\n`, { mode: 0o644 });
}

/** Stop one run: StopSignal, SIGKILL after the timeout. */
async function stopRun(store: Store, info: ContainerInfo, timeoutSeconds: number): Promise<void> {
  const signal = parseSignal(info.record.stopSignal);
  signalInit(info, killArgument(signal));
  let after = await waitStopped(store.root, info.record.id, timeoutSeconds * 1000);
  if (after !== undefined && after.status === 'running') {
    signalInit(after, 'SIGKILL');
    after = await waitStopped(store.root, info.record.id, 10_000);
  }
  if (after?.status === 'running') {
    throw new FerryError('RUNTIME_ERROR', `stop container ${info.record.name}: still running after SIGKILL`);
  }
}

/**
 * `ferry stop`: the image's StopSignal (SIGTERM by default), then SIGKILL after `timeoutSeconds`.
 * Marked stopped by hand first, so its supervisor (restart policy) lets it be; while it waits
 * between two runs, the supervisor is told to give up.
 */
export async function stopContainer(store: Store, text: string, timeoutSeconds = 10): Promise<ContainerInfo> {
  const info = await findContainer(store.root, text);
  await markStopped(store.root, info.record.id);
  // A supervisor may start it again between our look and its own (it reads the mark only after an exit): look again.
  for (let round = 0; round < 5; round++) {
    const now = (await loadContainer(store.root, info.record.id)) ?? info;
    if (now.status === 'running') await stopRun(store, now, timeoutSeconds);
    else if (now.supervised) signalSupervisor(now, 'SIGTERM');
    else break;
    await waitMonitorGone(now, 5000);
  }
  return (await loadContainer(store.root, info.record.id)) ?? info;
}

/**
 * `ferry start`: a created or exited container runs again with its writable layer, config,
 * volumes, limits and ports. Detached (its output appended to its log) unless `attach`, which
 * waits and returns the exit code as a foreground run does.
 */
export async function startContainer(store: Store, text: string, options: { attach?: boolean } = {}): Promise<RunResult> {
  requireRoot(`start ${text}`);
  const found = await findContainer(store.root, text);
  const paths = containerPaths(store.root, found.record.id);
  // One start at a time per container: the boot entry point and a systemd unit (or two users)
  // starting it together must not make two supervisors for one container. Held until the
  // command runs, not while an attached run lasts.
  const lock = new StoreLock(join(paths.dir, 'start.lock'), 60_000);
  if (options.attach !== true) return lock.with(() => startUnlocked(store, found.record.id, undefined));
  const forwarder = forwardSignals();
  try {
    let launched: Launched | undefined;
    const result = await lock.with(() =>
      startUnlocked(store, found.record.id, (l) => {
        launched = l;
        forwarder.target(l.monitorPid);
      }),
    );
    return launched === undefined ? result : { ...result, exitCode: await launched.exited };
  } finally {
    forwarder.stop();
  }
}

/** The start itself, under the start lock; `attached`: launch in the foreground and hand the launch over. */
async function startUnlocked(store: Store, id: string, attached: ((launched: Launched) => void) | undefined): Promise<RunResult> {
  let info = await loadContainer(store.root, id);
  if (info === undefined) throw new FerryError('NOT_FOUND', `no such container: ${id}`, { hint: 'ferry ps -a lists the containers' });
  // A live supervisor between an exit and its decision: wait for it to restart the container or to give up.
  const deadline = Date.now() + 5000;
  while (info.supervised && info.status !== 'running' && info.status !== 'restarting' && Date.now() < deadline) {
    await sleep(50);
    info = (await loadContainer(store.root, id)) ?? info;
  }
  const record = info.record;
  if (info.status === 'running' || info.status === 'restarting' || info.supervised) return { id: record.id, name: record.name };
  const paths = containerPaths(store.root, record.id);
  // The monitor of the last run must be gone before its exit file and cgroups are reused.
  await waitMonitorGone(info, 5000);
  await rm(paths.exit, { force: true });
  await rm(paths.state, { force: true });
  await rm(paths.stopped, { force: true });
  await rm(paths.health, { force: true });
  if (attached === undefined) {
    const log = await open(paths.log, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_APPEND | fsConstants.O_NOFOLLOW, 0o640);
    try {
      return await startDetached(store, { ...record, detached: true }, log.fd);
    } finally {
      await log.close();
    }
  }
  const launched = await launchRecord(store, record, [record.process.interactive ? 'inherit' : 'ignore', 'inherit', 'inherit']);
  attached(launched);
  await recordStarted(store.root, record.id, launched);
  return { id: record.id, name: record.name };
}

/** `ferry restart`: stop (StopSignal, SIGKILL after the timeout), then start detached. */
export async function restartContainer(store: Store, text: string, timeoutSeconds = 10): Promise<RunResult> {
  await stopContainer(store, text, timeoutSeconds);
  return startContainer(store, text);
}

/** `ferry kill`: send a signal (default SIGKILL) to the container's init, which passes it to the command. */
export async function killContainer(store: Store, text: string, signalText = 'SIGKILL'): Promise<ContainerInfo> {
  const signal = parseSignal(signalText);
  const info = await findContainer(store.root, text);
  // As docker: a kill that ends it (SIGKILL or its stop signal) is a stop by hand, not a crash to restart from.
  const ends = signal.name === 'SIGKILL' || signal.name === parseSignal(info.record.stopSignal).name;
  if (ends && (info.status === 'running' || info.status === 'restarting')) await markStopped(store.root, info.record.id);
  if (info.status === 'restarting' && ends) {
    signalSupervisor(info, 'SIGTERM');
    return info;
  }
  if (info.status !== 'running' || !signalInit(info, killArgument(signal))) {
    throw new FerryError('RUNTIME_ERROR', `kill container ${info.record.name}: it is not running`, { hint: 'ferry ps -a shows its status' });
  }
  return info;
}

/** `ferry rm`: drop the container and its writable layer; the image is untouched. `removeVolumes` (-v): its anonymous volumes too. */
export async function removeContainer(store: Store, text: string, force = false, removeVolumes = false): Promise<ContainerInfo> {
  const info = await findContainer(store.root, text);
  if (info.status === 'running' || info.status === 'restarting' || info.supervised) {
    if (!force) {
      throw new FerryError('IN_USE', `remove container ${info.record.name}: it is ${info.status === 'restarting' ? 'restarting' : 'running'}`, { hint: 'stop it first (ferry stop), or use ferry rm -f' });
    }
    // The supervisor first, so that nothing starts it again.
    signalSupervisor(info, 'SIGKILL');
    signalInit(info, 'SIGKILL');
    const after = await waitStopped(store.root, info.record.id, 10_000);
    if (after?.status === 'running') throw new FerryError('RUNTIME_ERROR', `remove container ${info.record.name}: still running after SIGKILL`);
  }
  await waitMonitorGone(info, 5000);
  await removeContainerFiles(store, info.record.id);
  if (removeVolumes) await removeAnonymousVolumes(store, info.record);
  return info;
}

/** --rm: the container and its anonymous volumes go (docker's run --rm). */
async function removeAutoRemoved(store: Store, record: ContainerRecord): Promise<void> {
  await removeContainerFiles(store, record.id);
  await removeAnonymousVolumes(store, record);
}

/** Take the directory out of containers/ in one rename (under the lock gc uses), then delete it. */
async function removeContainerFiles(store: Store, id: string): Promise<void> {
  const dir = containerPaths(store.root, id).dir;
  const trash = join(store.tmpDir, ownedName('container'));
  mkdirSync(store.tmpDir, { recursive: true });
  const moved = await store.lock.with(async () => {
    try {
      renameSync(dir, trash);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  });
  // Synchronous: the async rm walks the tree in a thread-pool round trip per entry, the last
  // thing every --rm run waits for (issue 16).
  if (moved) rmSync(trash, { recursive: true, force: true });
  await removeContainerCgroups(id);
}

export interface ExecOptions {
  argv: readonly string[];
  env?: readonly string[];
  user?: string;
  workdir?: string;
  tty?: boolean;
  interactive?: boolean;
  hostEnv?: NodeJS.ProcessEnv;
  stdio?: [LaunchStdio, LaunchStdio, LaunchStdio];
}

/**
 * A process to start in a running container (`target`: its init) with the container's
 * confinement (capabilities, seccomp, cgroups, no-new-privileges): `ferry exec` and health probes.
 */
export async function execLaunchSpec(
  store: Store,
  record: ContainerRecord,
  target: { pid: number; pidStart: string },
  options: { argv: readonly string[]; env: readonly string[]; cwd: string; user: ExecUser; tty: boolean; interactive: boolean },
): Promise<ExecLaunch> {
  return {
    mode: 'exec',
    targetPid: target.pid,
    targetStart: target.pidStart,
    argv: options.argv,
    env: withHome(options.env, options.user.home),
    cwd: options.cwd,
    uid: options.user.uid,
    gid: options.user.gid,
    groups: options.user.groups,
    tty: options.tty,
    interactive: options.interactive,
    ...(await confinement(store, record, await existingCgroupProcs(record.id))),
  };
}

/** `ferry exec`: run a command in a running container (its namespaces, env, workdir); returns its exit code. */
export async function execInContainer(store: Store, text: string, options: ExecOptions): Promise<number> {
  requireRoot(`exec in ${text}`);
  const info = await findContainer(store.root, text);
  const s = info.state;
  if (info.status !== 'running' || s === undefined || !isAlive(s.pid, s.pidStart)) {
    throw new FerryError('RUNTIME_ERROR', `exec in container ${info.record.name}: it is not running`, { hint: 'start a new one with ferry run' });
  }
  if (options.argv.length === 0) throw new UsageError('exec: no command given');
  if (options.workdir !== undefined && !options.workdir.startsWith('/')) {
    throw new UsageError(`the working directory "${options.workdir}" is invalid: it must be an absolute path`);
  }
  const p = info.record.process;
  let user: ExecUser = { uid: p.uid, gid: p.gid, groups: p.groups, home: p.home, name: undefined };
  if (options.user !== undefined) {
    user = await resolveUserInProcessRoot(s.pid, s.pidStart, options.user, `container ${info.record.name}`);
  }
  const env = mergeEnv(p.env, expandEnv(options.env ?? [], options.hostEnv ?? process.env));
  const tty = options.tty ?? false;
  const interactive = options.interactive ?? false;
  const spec = await execLaunchSpec(store, info.record, { pid: s.pid, pidStart: s.pidStart }, {
    argv: options.argv,
    env: tty && !env.some((e) => e.startsWith('TERM=')) ? [...env, 'TERM=xterm'] : env,
    cwd: options.workdir ?? p.cwd,
    user,
    tty,
    interactive,
  });
  const forwarder = forwardSignals();
  try {
    const launched = await launch(spec, { stdio: options.stdio ?? [interactive ? 'inherit' : 'ignore', 'inherit', 'inherit'], detached: false });
    forwarder.target(launched.monitorPid);
    return await launched.exited;
  } finally {
    forwarder.stop();
  }
}

/**
 * `ferry logs`: write the log of a detached container; with `follow`, keep writing what it adds
 * until the container stops (or `signal` aborts).
 */
export async function containerLogs(
  store: Store,
  text: string,
  write: (chunk: Buffer) => Promise<void> | void,
  options: { follow?: boolean; signal?: AbortSignal } = {},
): Promise<void> {
  const info = await findContainer(store.root, text);
  const path = containerPaths(store.root, info.record.id).log;
  let handle;
  try {
    handle = await open(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    if (!info.record.detached) {
      throw new FerryError('NOT_FOUND', `logs of container ${info.record.name}: it ran in the foreground, its output went to the terminal`, {
        hint: 'run it with -d to keep a log',
      });
    }
    return;
  }
  try {
    let offset = 0;
    const buf = Buffer.alloc(64 * 1024);
    const drain = async (): Promise<void> => {
      for (;;) {
        const { bytesRead } = await handle.read(buf, 0, buf.length, offset);
        if (bytesRead === 0) return;
        offset += bytesRead;
        await write(Buffer.from(buf.subarray(0, bytesRead)));
      }
    };
    await drain();
    if (!options.follow) return;
    for (;;) {
      if (options.signal?.aborted) return;
      const now = await loadContainer(store.root, info.record.id);
      await drain();
      if (now === undefined || now.status !== 'running') return;
      await sleep(100);
    }
  } finally {
    await handle.close();
  }
}

/** For `ps`: how the container was started, as one line. */
export function commandLine(record: ContainerRecord): string {
  return record.process.argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}


/** `ferry diff`: the container's changes against its image. */
export async function containerDiff(store: Store, text: string): Promise<Change[]> {
  const info = await findContainer(store.root, text);
  const { containerChanges } = await import('./changes.js');
  return containerChanges(containerPaths(store.root, info.record.id).upper, await imageLayerDirs(store, info.record), { what: `diff of container ${info.record.name}` });
}
