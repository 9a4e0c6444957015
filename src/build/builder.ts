import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, chown, lstat, mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { join, posix, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { FerryError, UsageError, isFerryError } from '../errors.js';
import { digestOf, shortDigest, type Digest } from '../oci/digest.js';
import type { Image, Layer } from '../oci/image.js';
import type { ContainerConfig, HistoryEntry, ImageConfig } from '../oci/manifest.js';
import { MediaType } from '../oci/media-types.js';
import { imageConfig, imageManifest, scratchConfig } from '../oci/build-image.js';
import { formatPlatform, hostPlatform, normalizePlatform, parsePlatform, type Platform } from '../oci/platform.js';
import { formatReference, parseReference, withTag, type Reference } from '../oci/reference.js';
import { layerFromBlob } from '../io/layer-forms.js';
import type { CopyInto } from '../oci/destination.js';
import { chainIdOf, chainIds, findStoreImage, openStoreImageByDigest, type Store } from '../store/index.js';
import { ownedName } from '../store/owner.js';
import { removeContainer, runContainer } from '../runtime/containers.js';
import type { LaunchStdio } from '../runtime/launcher.js';
import { upperLayerTar, writeLayerFile, type WrittenLayer } from '../runtime/layer-tar.js';
import { lookupLayered } from '../runtime/layered-fs.js';
import { containerPaths } from '../runtime/state.js';
import { resolveUserInLayers } from '../runtime/users.js';
import { extractArchive, isLocalArchive } from './archive-source.js';
import { BuildCache, type CacheEntry } from './cache.js';
import { planCopy, type CopySource } from './copy.js';
import { dockerfileError, jsonForm, keyValuePairs, parseDockerfile, splitWords, type Dockerfile, type Instruction } from './dockerfile.js';
import { instructionFlags, parseDuration } from './instruction-args.js';
import { writeEntriesLayer, type LayerEntry } from './layer-writer.js';
import { expandWord, expandWords, ExpansionError } from './shell-words.js';
import { ContextTree, expandSource, LayersTree, materialize, type SourceTree } from './source-tree.js';
import { isoTime } from '../io/iso-time.js';

/**
 * `ferry build`: a Dockerfile and its context become an image in the store (DESIGN: a copy from
 * the location "Dockerfile + context + store base" to the store, RUN steps through the runtime).
 * Plan, then act per step: an instruction is expanded with the values of that point of the build,
 * keyed for the cache, and only then run. A RUN is a container of the runtime (the stage's image
 * as built so far, its Env, User, WorkingDir, Shell) whose upper layer becomes the step's layer;
 * a COPY/ADD layer is written straight from its sources; config steps add history only.
 * New layers enter the store through the caller's copy (the transfer engine) (verified, unpacked once); the image's names are
 * written last, so a failed build leaves only unnamed layers that the cache may reuse and prune
 * removes.
 */
export interface BuildOptions {
  context: string;
  /** Default CONTEXT/Dockerfile. */
  dockerfile?: string;
  /** The Dockerfile's text itself (`-f -`: read from stdin by the CLI); `dockerfile` then only names it. */
  dockerfileText?: string;
  tags?: readonly string[];
  buildArgs?: Readonly<Record<string, string>>;
  target?: string;
  noCache?: boolean;
  network?: 'none' | 'host';
  labels?: Readonly<Record<string, string>>;
  platform?: Platform;
  /** SOURCE_DATE_EPOCH: created times and layer mtimes clamped to it, for reproducible images. */
  sourceDateEpoch?: number;
  /** Step lines (STEP n/N, CACHED, ...). */
  log?: (line: string) => void;
  /** Where RUN output goes; default ferry's stdout and stderr. */
  runStdio?: [LaunchStdio, LaunchStdio];
}

export interface BuildResult {
  manifestDigest: Digest;
  configDigest: Digest;
  names: string[];
  steps: number;
  cached: number;
}

const MAX_DOCKERFILE_BYTES = 4 << 20;
const DEFAULT_SHELL = ['/bin/sh', '-c'];
const LAYER_MEDIA_TYPE = MediaType.ociLayerGzip;

interface StageState {
  name: string | undefined;
  index: number;
  platform: Platform;
  layers: Layer[];
  /** The base config as parsed (fields ferry does not know are kept). */
  base: ImageConfig;
  config: ContainerConfig;
  history: HistoryEntry[];
  /** ARGs declared in this stage: value, or undefined when declared without one. */
  args: Map<string, string | undefined>;
  key: string;
  cmdSet: boolean;
}

/** A RUN step's --mount: what goes into its cache key, and the runtime mount that makes it. */
interface RunMount {
  spec: string;
  /** HOST:CONTAINER[:ro] for the runtime's -v. */
  volume?: string;
  /** PATH[:opts] for the runtime's --tmpfs. */
  tmpfs?: string;
}

interface StageDef {
  name: string | undefined;
  index: number;
  from: Instruction;
  body: Instruction[];
}

function sha(...parts: unknown[]): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex');
}

/** A list of strings from an image config (hostile JSON): anything else is refused, not spread. */
function stringList(value: unknown, what: string): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value) || !value.every((v): v is string => typeof v === 'string')) {
    throw new FerryError('INVALID_MANIFEST', `${what} is not a list of strings`);
  }
  return value;
}

function envMap(env: readonly string[] | undefined): Map<string, string> {
  const m = new Map<string, string>();
  for (const e of env ?? []) {
    const eq = e.indexOf('=');
    if (eq > 0) m.set(e.slice(0, eq), e.slice(eq + 1));
  }
  return m;
}

function setEnv(env: readonly string[] | undefined, key: string, value: string): string[] {
  const out = [...(env ?? [])];
  const i = out.findIndex((e) => e.startsWith(`${key}=`));
  if (i >= 0) out[i] = `${key}=${value}`;
  else out.push(`${key}=${value}`);
  return out;
}

function predefinedArgs(target: Platform): Map<string, string> {
  const build = hostPlatform();
  const m = new Map<string, string>();
  m.set('BUILDPLATFORM', formatPlatform(build));
  m.set('BUILDOS', build.os);
  m.set('BUILDARCH', build.architecture);
  m.set('BUILDVARIANT', build.variant ?? '');
  m.set('TARGETPLATFORM', formatPlatform(target));
  m.set('TARGETOS', target.os);
  m.set('TARGETARCH', target.architecture);
  m.set('TARGETVARIANT', target.variant ?? '');
  return m;
}

async function readDockerfile(path: string): Promise<string> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(`build: cannot read the Dockerfile ${path}: ${code === 'ENOENT' ? 'no such file' : String(code)}`, { hint: 'name it with -f, or put a Dockerfile in the context', cause: err });
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new UsageError(`build: the Dockerfile ${path} is not a regular file`);
    if (st.size > MAX_DOCKERFILE_BYTES) throw new FerryError('DOCKERFILE_INVALID', `${path}: ${st.size} bytes is over the ${MAX_DOCKERFILE_BYTES}-byte limit for a Dockerfile`);
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}

/** `.dockerignore` of the context root: only a regular file there counts (a symlink is not followed). */
async function readIgnore(context: string): Promise<string> {
  const path = join(context, '.dockerignore');
  try {
    const st = await lstat(path);
    if (!st.isFile()) throw new FerryError('UNSAFE_PATH', `build: ${path} is not a regular file`, { hint: '.dockerignore must be a plain file in the context root' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  }
  return readFile(path, 'utf8');
}

function nameTag(text: string): Reference {
  const ref = parseReference(text);
  if (ref.digest !== undefined) throw new UsageError(`build -t ${text}: name the image with a tag, not a digest`);
  return ref.tag === undefined ? withTag(ref, 'latest') : ref;
}

class Builder {
  private readonly cache: BuildCache;
  private readonly df: Dockerfile;
  private readonly log: (line: string) => void;
  private readonly stages = new Map<number, StageState>();
  private readonly globalArgs = new Map<string, string | undefined>();
  private readonly usedArgs = new Set<string>();
  private readonly tmpFiles: string[] = [];
  private readonly pendingCache: Array<[string, CacheEntry]> = [];
  private readonly now: number;
  private readonly created: () => string;
  private step = 0;
  private total = 0;
  private cachedSteps = 0;
  private readonly targetPlatform: Platform;

  constructor(
    private readonly store: Store,
    private readonly copyInto: CopyInto,
    private readonly context: ContextTree,
    dockerfile: Dockerfile,
    private readonly options: BuildOptions,
  ) {
    this.cache = new BuildCache(store.root);
    this.df = dockerfile;
    this.log = options.log ?? ((): void => undefined);
    const epoch = options.sourceDateEpoch;
    this.now = epoch ?? Math.floor(Date.now() / 1000);
    this.created = (): string => isoTime(epoch !== undefined ? new Date(epoch * 1000) : new Date());
    this.targetPlatform = normalizePlatform(options.platform ?? hostPlatform());
  }

  private fail(ins: Instruction, message: string, hint?: string): FerryError {
    return dockerfileError(this.df.path, ins.line, message, hint);
  }

  private expander(ins: Instruction, lookup: (name: string) => string | undefined): { word: (t: string) => string; words: (t: string) => string[] } {
    const wrap = <T>(f: () => T): T => {
      try {
        return f();
      } catch (err) {
        if (err instanceof ExpansionError) throw this.fail(ins, `${ins.keyword}: ${err.message}`);
        throw err;
      }
    };
    return {
      word: (t) => wrap(() => expandWord(t, lookup, this.df.escape)),
      words: (t) => wrap(() => expandWords(t, lookup, this.df.escape)),
    };
  }

  private stageLookup(s: StageState): (name: string) => string | undefined {
    return (name) => {
      const env = envMap(s.config.Env);
      if (env.has(name)) return env.get(name);
      if (s.args.has(name)) {
        this.usedArgs.add(name);
        return s.args.get(name);
      }
      return undefined;
    };
  }

  private argValue(name: string, fallback: string | undefined): string | undefined {
    const given = this.options.buildArgs?.[name];
    if (given !== undefined) {
      this.usedArgs.add(name);
      return given;
    }
    return fallback;
  }

  async run(): Promise<BuildResult> {
    const defs = this.split();
    const target = this.targetStage(defs);
    const needed = this.neededStages(defs, target);
    this.total = defs.filter((d) => needed.has(d.index)).reduce((n, d) => n + 1 + d.body.length, 0);
    try {
      for (const def of defs) {
        if (!needed.has(def.index)) continue;
        await this.buildStage(def, defs);
      }
      const final = this.stages.get(target.index)!;
      const unused = Object.keys(this.options.buildArgs ?? {}).filter((k) => !this.usedArgs.has(k) && !predefinedArgs(this.targetPlatform).has(k));
      if (unused.length > 0) this.log(`[Warning] one or more build args were not consumed: ${unused.join(', ')}`);
      return await this.commit(final);
    } finally {
      for (const f of this.tmpFiles) await rm(f, { recursive: true, force: true });
    }
  }

  /** Global ARGs (before the first FROM), then one StageDef per FROM. */
  private split(): StageDef[] {
    const defs: StageDef[] = [];
    const globalLookup = (name: string): string | undefined => this.globalArgs.get(name) ?? predefinedArgs(this.targetPlatform).get(name);
    for (const ins of this.df.instructions) {
      if (ins.keyword === 'FROM') {
        defs.push({ name: undefined, index: defs.length, from: ins, body: [] });
        const m = /\s+AS\s+(\S+)\s*$/i.exec(ins.args);
        if (m) {
          const name = m[1]!.toLowerCase();
          if (!/^[a-z][a-z0-9-_.]*$/.test(name)) throw this.fail(ins, `invalid stage name "${m[1]!}": use letters, digits, '-', '_' and '.', starting with a letter`);
          if (defs.some((d) => d.name === name)) throw this.fail(ins, `duplicate stage name "${name}"`);
          defs[defs.length - 1]!.name = name;
        }
        continue;
      }
      const current = defs[defs.length - 1];
      if (current === undefined) {
        if (ins.keyword !== 'ARG') throw this.fail(ins, `${ins.keyword} before the first FROM: only ARG may come before FROM`, 'start the Dockerfile with FROM (or ARGs, then FROM)');
        for (const [k, v] of this.argPairs(ins)) {
          const value = v === undefined ? undefined : this.expander(ins, globalLookup).word(v);
          this.globalArgs.set(k, this.argValue(k, value));
        }
        continue;
      }
      current.body.push(ins);
    }
    if (defs.length === 0) throw new FerryError('DOCKERFILE_INVALID', `${this.df.path}: no FROM instruction`, { hint: 'a Dockerfile starts with FROM IMAGE (or FROM scratch)' });
    return defs;
  }

  private argPairs(ins: Instruction): Array<[string, string | undefined]> {
    return splitWords(ins.args, this.df.escape).map((w) => {
      const eq = w.indexOf('=');
      const name = eq < 0 ? w : w.slice(0, eq);
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw this.fail(ins, `ARG: invalid name "${name}"`);
      return [name, eq < 0 ? undefined : w.slice(eq + 1)];
    });
  }

  private targetStage(defs: StageDef[]): StageDef {
    const t = this.options.target;
    if (t === undefined) return defs[defs.length - 1]!;
    const found = defs.find((d) => d.name === t.toLowerCase());
    if (found === undefined) throw new UsageError(`build --target ${t}: no stage of that name in ${this.df.path}`, { hint: `stages: ${defs.map((d) => d.name ?? String(d.index)).join(', ')}` });
    return found;
  }

  private stageRef(defs: StageDef[], text: string, before: number): StageDef | undefined {
    const lower = text.toLowerCase();
    const byName = defs.find((d) => d.name === lower && d.index < before);
    if (byName !== undefined) return byName;
    if (/^\d+$/.test(text)) {
      const i = Number(text);
      if (i < before) return defs[i];
    }
    return undefined;
  }

  /** The target and the stages it reads from (FROM stage, COPY --from=stage), transitively. */
  private neededStages(defs: StageDef[], target: StageDef): Set<number> {
    const out = new Set<number>();
    const lookup = (name: string): string | undefined => this.globalArgs.get(name) ?? predefinedArgs(this.targetPlatform).get(name);
    const visit = (d: StageDef): void => {
      if (out.has(d.index)) return;
      out.add(d.index);
      const base = this.expander(d.from, lookup).word(this.fromImage(d.from));
      const dep = this.stageRef(defs, base, d.index);
      if (dep !== undefined) visit(dep);
      for (const ins of d.body) {
        const froms: string[] = [];
        const copyFrom = ins.keyword === 'COPY' ? /^--from=(.*)$/.exec(ins.flags.find((f) => f.startsWith('--from=')) ?? '')?.[1] : undefined;
        if (copyFrom !== undefined) froms.push(copyFrom);
        if (ins.keyword === 'RUN') {
          for (const f of ins.flags.filter((x) => x.startsWith('--mount='))) {
            const m = /(?:^--mount=|,)from=([^,]+)/.exec(f);
            if (m) froms.push(m[1]!);
          }
        }
        for (const from of froms) {
          const s = this.stageRef(defs, from, d.index);
          if (s !== undefined) visit(s);
        }
      }
    };
    visit(target);
    return out;
  }

  private fromImage(ins: Instruction): string {
    const words = splitWords(ins.args, this.df.escape);
    if (words.length === 3 && words[1]!.toUpperCase() === 'AS') return words[0]!;
    if (words.length !== 1) throw this.fail(ins, 'FROM takes IMAGE [AS NAME]');
    return words[0]!;
  }

  private announce(text: string): void {
    this.step++;
    this.log(`STEP ${this.step}/${this.total}: ${text}`);
  }

  private async buildStage(def: StageDef, defs: StageDef[]): Promise<void> {
    const ins = def.from;
    this.announce(ins.text);
    const flags = instructionFlags(this.df.path, ins);
    const lookup = (name: string): string | undefined => {
      if (this.globalArgs.has(name)) {
        this.usedArgs.add(name);
        return this.globalArgs.get(name);
      }
      return predefinedArgs(this.targetPlatform).get(name);
    };
    const ex = this.expander(ins, lookup);
    const baseName = ex.word(this.fromImage(ins));
    const platformFlag = flags.get('platform');
    const platform = platformFlag !== undefined ? normalizePlatform(parsePlatform(ex.word(platformFlag))) : this.targetPlatform;
    const stage: StageState = {
      name: def.name,
      index: def.index,
      platform,
      layers: [],
      base: scratchConfig(platform),
      config: {},
      history: [],
      args: new Map(),
      key: '',
      cmdSet: false,
    };
    const dep = this.stageRef(defs, baseName, def.index);
    let onbuild: string[] = [];
    if (dep !== undefined) {
      const from = this.stages.get(dep.index)!;
      stage.layers = [...from.layers];
      stage.base = from.base;
      stage.config = structuredClone(from.config);
      stage.history = [...from.history];
      stage.platform = from.platform;
      stage.key = sha('stage', from.key);
      onbuild = stringList(from.config.OnBuild, `the ONBUILD triggers of stage ${dep.name ?? dep.index}`) ?? [];
    } else if (baseName.toLowerCase() === 'scratch') {
      stage.key = sha('scratch', formatPlatform(platform));
    } else {
      const image = await this.openBase(ins, baseName, platform);
      stage.layers = [...image.layers];
      stage.base = JSON.parse(image.rawConfig.toString('utf8')) as ImageConfig;
      stage.config = structuredClone(stage.base.config ?? {});
      // Fields the build reads and extends: checked here, as the image's config is foreign JSON.
      const env = stringList(stage.config.Env, `the Env of image ${baseName}`);
      if (env !== undefined) stage.config.Env = env;
      stringList(stage.config.Shell, `the Shell of image ${baseName}`);
      stage.history = [...(stage.base.history ?? [])];
      stage.platform = image.platform;
      stage.key = sha('image', image.digest);
      onbuild = stringList(stage.config.OnBuild, `the OnBuild of image ${baseName}`) ?? [];
    }
    // Triggers run in the child build, right after its FROM, and are not inherited further.
    delete stage.config.OnBuild;
    this.stages.set(def.index, stage);
    for (const trigger of onbuild) {
      const parsed = parseDockerfile(trigger, `${this.df.path} (ONBUILD trigger of ${baseName})`).instructions;
      for (const t of parsed) {
        this.log(`--> ONBUILD ${t.text}`);
        await this.dispatch(stage, { ...t, line: ins.line }, defs);
      }
    }
    for (const body of def.body) {
      this.announce(body.text);
      await this.dispatch(stage, body, defs);
    }
  }

  private async openBase(ins: Instruction, name: string, platform: Platform): Promise<Image> {
    try {
      const entry = await findStoreImage(this.store, name, platform);
      return await openStoreImageByDigest(this.store, entry.manifestDigest, parseReference(entry.name));
    } catch (err) {
      if (isFerryError(err, 'NOT_FOUND') || isFerryError(err, 'PLATFORM_NOT_FOUND') || isFerryError(err, 'INVALID_REFERENCE')) {
        const what = ins.keyword === 'FROM' ? `FROM ${name}` : `${ins.keyword} --from=${name}`;
        throw new FerryError('NOT_FOUND', `${this.df.path}:${ins.line}: ${what}: the image is not in the store (${formatPlatform(platform)})`, {
          hint: `ferry build does not download base images: bring ${name} into the store first with ferry pull (where a registry is reachable) or ferry import`,
          cause: err,
        });
      }
      throw err;
    }
  }

  private async dispatch(s: StageState, ins: Instruction, defs: StageDef[]): Promise<void> {
    try {
      await this.dispatchUnwrapped(s, ins, defs);
    } catch (err) {
      // Errors from below (store, runtime, context) get the Dockerfile and line they belong to.
      if (err instanceof FerryError && !err.message.startsWith(`${this.df.path}:`)) {
        throw new FerryError(err.code, `${this.df.path}:${ins.line}: ${ins.keyword}: ${err.message}`, { ...(err.hint !== undefined ? { hint: err.hint } : {}), cause: err });
      }
      throw err;
    }
  }

  /** A config-only step: history with empty_layer, the key advanced, the time kept by the cache. */
  private async configStep(s: StageState, ins: Instruction, canonical: string, createdBy: string): Promise<void> {
    s.key = sha(s.key, ins.keyword, canonical, s.config);
    const entry = this.options.noCache === true ? undefined : await this.cache.get(s.key);
    const created = entry?.created ?? this.created();
    // Written with the next layer or the image: a build that fails before adds nothing.
    if (entry === undefined) this.pendingCache.push([s.key, { created }]);
    s.history.push({ created, created_by: createdBy, empty_layer: true });
  }

  private async dispatchUnwrapped(s: StageState, ins: Instruction, defs: StageDef[]): Promise<void> {
    const ex = this.expander(ins, this.stageLookup(s));
    const flags = instructionFlags(this.df.path, ins);
    const c = s.config;
    switch (ins.keyword) {
      case 'ENV': {
        const pairs = keyValuePairs(ins.args, this.df.escape, 'ENV', this.df.path, ins.line);
        // Every value is expanded with the environment from before this instruction (the
        // reference: `ENV abc=bye def=$abc` gives def the old abc), then all are set.
        const expanded = pairs.map(([k, v]) => [ex.word(k), ex.word(v)] as const);
        const done: string[] = [];
        for (const [k, value] of expanded) {
          c.Env = setEnv(c.Env, k, value);
          done.push(`${k}=${value}`);
        }
        return this.configStep(s, ins, done.join('\n'), `ENV ${done.join(' ')}`);
      }
      case 'ARG': {
        const done: string[] = [];
        for (const [k, v] of this.argPairs(ins)) {
          let value = v === undefined ? undefined : ex.word(v);
          if (value === undefined && this.globalArgs.has(k)) value = this.globalArgs.get(k);
          if (value === undefined) value = predefinedArgs(this.targetPlatform).get(k);
          value = this.argValue(k, value);
          s.args.set(k, value);
          done.push(value === undefined ? k : `${k}=${value}`);
        }
        return this.configStep(s, ins, done.join('\n'), `ARG ${done.join(' ')}`);
      }
      case 'LABEL': {
        const labels = { ...(c.Labels ?? {}) };
        const done: string[] = [];
        for (const [k, v] of keyValuePairs(ins.args, this.df.escape, 'LABEL', this.df.path, ins.line)) {
          const key = ex.word(k);
          labels[key] = ex.word(v);
          done.push(`${key}=${labels[key]!}`);
        }
        c.Labels = labels;
        return this.configStep(s, ins, done.join('\n'), `LABEL ${done.join(' ')}`);
      }
      case 'MAINTAINER': {
        s.base = { ...s.base, author: ex.word(ins.args) };
        return this.configStep(s, ins, ins.args, `MAINTAINER ${ins.args}`);
      }
      case 'WORKDIR': {
        const dir = ex.word(ins.args.trim());
        const path = posix.normalize(posix.isAbsolute(dir) ? dir : posix.join(c.WorkingDir === undefined || c.WorkingDir === '' ? '/' : c.WorkingDir, dir));
        c.WorkingDir = path;
        const layers = this.layerDirs(s);
        const exists = layers.length > 0 ? await lookupLayered(layers, path, true) : undefined;
        if (exists !== undefined || path === '/') return this.configStep(s, ins, path, `WORKDIR ${path}`);
        // A missing working directory is made in a layer of its own (docker's builder does too),
        // owned by the stage's USER as BuildKit and buildah make it.
        const owner = c.User !== undefined && c.User !== '' ? await this.chownOf(s, ins, c.User) : undefined;
        return this.layerStep(s, ins, sha('WORKDIR', path, owner ?? null), `WORKDIR ${path}`, async (file) => {
          const o = owner ?? { uid: 0, gid: 0 };
          const entries: LayerEntry[] = [];
          const parts = path.split('/').filter((p) => p !== '');
          for (let i = 1; i <= parts.length; i++) {
            const dir = `/${parts.slice(0, i).join('/')}`;
            const found = layers.length > 0 ? await lookupLayered(layers, dir, false) : undefined;
            const st = found?.stat;
            // An existing parent keeps its metadata in the layer; a missing one is made.
            if (st !== undefined && st.isDirectory()) entries.push({ path: dir.slice(1), type: 'dir', mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: Math.floor(st.mtimeMs / 1000) });
            else entries.push({ path: dir.slice(1), type: 'dir', mode: 0o755, uid: o.uid, gid: o.gid, mtime: this.now });
          }
          return writeEntriesLayer(entries, file, this.options.sourceDateEpoch);
        });
      }
      case 'USER': {
        c.User = ex.word(ins.args.trim());
        return this.configStep(s, ins, c.User, `USER ${c.User}`);
      }
      case 'EXPOSE': {
        const ports = { ...(c.ExposedPorts ?? {}) };
        const added: string[] = [];
        for (const p of ex.words(ins.args)) {
          if (!/^\d+(-\d+)?(\/(tcp|udp|sctp))?$/i.test(p)) throw this.fail(ins, `EXPOSE: invalid port "${p}"`, 'write PORT or PORT/PROTOCOL, e.g. 80/tcp');
          const key = (p.includes('/') ? p : `${p}/tcp`).toLowerCase();
          ports[key] = {};
          added.push(key);
        }
        c.ExposedPorts = ports;
        return this.configStep(s, ins, added.join(' '), `EXPOSE ${added.join(' ')}`);
      }
      case 'VOLUME': {
        const vols = { ...(c.Volumes ?? {}) };
        const list = (jsonForm(ins.args) ?? ex.words(ins.args)).map((v) => ex.word(v));
        for (const v of list) {
          if (v.trim() === '') throw this.fail(ins, 'VOLUME: an empty path');
          vols[v] = {};
        }
        c.Volumes = vols;
        return this.configStep(s, ins, list.join('\n'), `VOLUME [${list.join(' ')}]`);
      }
      case 'STOPSIGNAL': {
        c.StopSignal = ex.word(ins.args.trim());
        return this.configStep(s, ins, c.StopSignal, `STOPSIGNAL ${c.StopSignal}`);
      }
      case 'SHELL': {
        const shell = jsonForm(ins.args);
        if (shell === undefined || shell.length === 0) throw this.fail(ins, 'SHELL requires a JSON array, e.g. SHELL ["/bin/bash", "-c"]');
        c.Shell = shell;
        return this.configStep(s, ins, JSON.stringify(shell), `SHELL ${JSON.stringify(shell)}`);
      }
      case 'CMD':
      case 'ENTRYPOINT': {
        const argv = this.commandOf(s, ins);
        if (ins.keyword === 'CMD') {
          c.Cmd = argv;
          s.cmdSet = true;
        } else {
          c.Entrypoint = argv;
          // docker: a new ENTRYPOINT drops a CMD inherited from the base image.
          if (!s.cmdSet) c.Cmd = null;
        }
        return this.configStep(s, ins, JSON.stringify(argv), `${ins.keyword} ${JSON.stringify(argv)}`);
      }
      case 'HEALTHCHECK':
        return this.healthcheck(s, ins, flags);
      case 'ONBUILD': {
        const inner = ins.inner!;
        c.OnBuild = [...(stringList(c.OnBuild, 'the OnBuild of the stage') ?? []), inner.text];
        return this.configStep(s, ins, inner.text, `ONBUILD ${inner.text}`);
      }
      case 'RUN':
        return this.runStep(s, ins, flags, defs);
      case 'COPY':
      case 'ADD':
        return this.copyStep(s, ins, flags, defs);
      default:
        throw this.fail(ins, `${ins.keyword} is not allowed here`);
    }
  }

  private commandOf(s: StageState, ins: Instruction): string[] {
    const json = jsonForm(ins.args);
    if (json !== undefined) return json;
    const shell = stringList(s.config.Shell, 'the Shell of the stage') ?? DEFAULT_SHELL;
    return [...shell, ins.args];
  }

  private healthcheck(s: StageState, ins: Instruction, flags: Map<string, string>): Promise<void> {
    const m = /^(\S+)\s*([\s\S]*)$/.exec(ins.args.trim());
    const kind = m?.[1]?.toUpperCase();
    let health: Record<string, unknown>;
    if (kind === 'NONE') {
      if (m![2] !== '' || flags.size > 0) throw this.fail(ins, 'HEALTHCHECK NONE takes no arguments or flags');
      health = { Test: ['NONE'] };
    } else if (kind === 'CMD') {
      const rest = m![2]!;
      if (rest.trim() === '') throw this.fail(ins, 'HEALTHCHECK CMD needs a command');
      const json = jsonForm(rest);
      health = { Test: json !== undefined ? ['CMD', ...json] : ['CMD-SHELL', rest] };
      for (const [flag, field] of [['interval', 'Interval'], ['timeout', 'Timeout'], ['start-period', 'StartPeriod'], ['start-interval', 'StartInterval']] as const) {
        const v = flags.get(flag);
        if (v === undefined) continue;
        const ns = parseDuration(v);
        if (ns === undefined) throw this.fail(ins, `HEALTHCHECK --${flag}=${v}: not a duration (e.g. 30s, 1m30s)`);
        if (ns !== 0) health[field] = ns;
      }
      const retries = flags.get('retries');
      if (retries !== undefined) {
        if (!/^\d+$/.test(retries)) throw this.fail(ins, `HEALTHCHECK --retries=${retries}: not a number`);
        if (Number(retries) !== 0) health.Retries = Number(retries);
      }
    } else {
      throw this.fail(ins, 'HEALTHCHECK takes NONE or CMD COMMAND', 'e.g. HEALTHCHECK --interval=30s CMD wget -q -O- http://localhost/');
    }
    s.config.Healthcheck = health;
    return this.configStep(s, ins, JSON.stringify(health), `HEALTHCHECK ${JSON.stringify(health)}`);
  }

  private layerDirs(s: StageState): string[] {
    return chainIds(s.layers.map((l) => l.diffId)).reverse().map((c) => this.store.layers.diffDir(c));
  }

  private tmpFile(kind: string): string {
    const f = join(this.store.tmpDir, ownedName(kind));
    this.tmpFiles.push(f);
    return f;
  }

  /**
   * A step that makes a layer: from the cache when its key is there and its layer still is,
   * else `make` writes the layer file, which enters the store through the caller's copy.
   */
  private async layerStep(s: StageState, ins: Instruction, canonical: string, createdBy: string, make: (file: string) => Promise<WrittenLayer>): Promise<void> {
    s.key = sha(s.key, ins.keyword, canonical);
    const parentChain = s.layers.length === 0 ? undefined : chainIds(s.layers.map((l) => l.diffId)).at(-1);
    if (this.options.noCache !== true) {
      const hit = await this.cache.get(s.key);
      const l = hit?.layer;
      if (hit !== undefined && l !== undefined && (await this.store.layers.has(chainIdOf(parentChain, l.diffId))) && (await this.store.blobs.has(l.digest))) {
        this.log('--> CACHED');
        this.cachedSteps++;
        s.layers.push(this.newLayer(l, async () => this.store.blobs.open(l.digest)));
        s.history.push({ created: hit.created, created_by: createdBy });
        return;
      }
    }
    await mkdir(this.store.tmpDir, { recursive: true });
    const file = this.tmpFile('build-layer');
    const written = await make(file);
    const created = this.created();
    const layer = { diffId: written.diffId, digest: written.digest, size: written.size, mediaType: LAYER_MEDIA_TYPE };
    s.layers.push(this.newLayer(layer, async () => createReadStream(file)));
    s.history.push({ created, created_by: createdBy });
    // Into the store now: later RUN steps need it unpacked, and the cache needs it kept.
    await this.copyInto([{ ref: undefined, images: [this.assemble(s)] }]);
    s.layers[s.layers.length - 1] = this.newLayer(layer, async () => this.store.blobs.open(layer.digest));
    await this.cache.put(s.key, { created, layer });
    await this.flushCache();
    this.log(`--> ${shortDigest(written.diffId)}`);
  }

  private newLayer(l: NonNullable<CacheEntry['layer']>, openBlob: () => Promise<Readable>): Layer {
    return layerFromBlob({ descriptor: { mediaType: l.mediaType, digest: l.digest, size: l.size }, diffId: l.diffId, what: `build step ${this.step}`, openBlob });
  }

  /** The stage as an Image: OCI manifest, config from the base with this build's changes. */
  private assemble(s: StageState, extra: { labels?: Readonly<Record<string, string>>; forRun?: boolean } = {}): Image {
    const containerConfig: ContainerConfig = structuredClone(s.config);
    if (extra.labels !== undefined && Object.keys(extra.labels).length > 0) containerConfig.Labels = { ...(containerConfig.Labels ?? {}), ...extra.labels };
    // A RUN container mounts no volumes: what it writes under a VOLUME path belongs to the layer.
    if (extra.forRun === true) delete containerConfig.Volumes;
    const lastCreated = s.history.at(-1)?.created ?? this.created();
    const { raw: rawConfig, config, digest: configDigest } = imageConfig(s.base, {
      created: this.options.sourceDateEpoch !== undefined ? this.created() : lastCreated,
      architecture: s.platform.architecture,
      os: s.platform.os,
      config: containerConfig,
      diffIds: s.layers.map((l) => l.diffId),
      history: s.history,
    });
    const { raw: rawManifest, manifest } = imageManifest(MediaType.ociManifest, { digest: configDigest, size: rawConfig.length }, s.layers.map((l) => l.descriptor));
    return {
      ref: undefined,
      digest: digestOf(rawManifest),
      mediaType: MediaType.ociManifest,
      rawManifest,
      manifest,
      configDigest,
      rawConfig,
      config,
      platform: s.platform,
      layers: [...s.layers],
    };
  }

  private runEnv(s: StageState): string[] {
    const env = envMap(s.config.Env);
    const out: string[] = [];
    for (const [k, v] of s.args) if (v !== undefined && !env.has(k)) out.push(`${k}=${v}`);
    return out;
  }

  private async runStep(s: StageState, ins: Instruction, flags: Map<string, string>, defs: StageDef[]): Promise<void> {
    const mounts = await this.runMounts(s, ins, defs);
    if (flags.has('security')) throw this.fail(ins, 'RUN --security is not supported by ferry build', 'RUN steps get the runtime\'s default confinement');
    const network = flags.get('network') ?? this.options.network ?? 'none';
    if (network !== 'none' && network !== 'host' && network !== 'default') throw this.fail(ins, `RUN --network=${network}: expected none or host`);
    let argv: string[];
    const json = jsonForm(ins.args);
    const shell = stringList(s.config.Shell, 'the Shell of the stage') ?? DEFAULT_SHELL;
    if (json !== undefined) argv = json;
    else if (ins.heredocs.length === 1 && /^\d*<<-?["']?[^\s"']+["']?$/.test(ins.args.trim())) {
      const script = ins.heredocs[0]!;
      if (script.content.startsWith('#!')) {
        // RUN <<EOF with `#!`: its own interpreter runs it, from a file bound read-only under
        // /dev/pipes (BuildKit's place; /dev is the runtime's tmpfs, so nothing reaches the layer).
        await mkdir(this.store.tmpDir, { recursive: true });
        const file = this.tmpFile('build-heredoc');
        await writeFile(file, script.content, { mode: 0o755 });
        const target = `/dev/pipes/${script.name.replace(/[^A-Za-z0-9_.-]/g, '_')}`;
        mounts.push({ spec: JSON.stringify({ heredoc: target, content: script.content }), volume: `${file}:${target}:ro` });
        argv = [target];
      } else {
        // RUN <<EOF: the heredoc is the script for the stage's shell.
        argv = [...shell, script.content];
      }
    } else if (ins.heredocs.length > 0) {
      // The shell reads the heredocs itself: give it the line and the bodies, as written.
      argv = [...shell, `${ins.args}\n${ins.heredocs.map((h) => `${h.content}${h.name}\n`).join('')}`];
    } else argv = [...shell, ins.args];
    if (argv.length === 0) throw this.fail(ins, 'RUN needs a command');
    const env = this.runEnv(s);
    const netMode = network === 'default' ? (this.options.network ?? 'none') : network;
    const canonical = JSON.stringify({ argv, env, config: s.config, network: netMode, mounts: mounts.map((m) => m.spec) });
    const createdBy = `RUN ${json !== undefined ? JSON.stringify(json) : argv.slice(shell.length).join(' ')}`.replace(/\n[\s\S]*$/, ' ...');
    await this.layerStep(s, ins, canonical, createdBy, async (file) => {
      const image = this.assemble(s, { forRun: true });
      const stdio = this.options.runStdio ?? ['inherit', 'inherit'];
      const result = await runContainer(this.store, {
        image: `build step ${this.step} (${this.df.path}:${ins.line})`,
        builtImage: image,
        command: argv,
        entrypoint: '',
        env,
        ...(s.config.User !== undefined && s.config.User !== '' ? { user: s.config.User } : {}),
        ...(s.config.WorkingDir !== undefined && s.config.WorkingDir !== '' ? { workdir: s.config.WorkingDir } : {}),
        network: netMode,
        volumes: mounts.flatMap((m) => (m.volume !== undefined ? [m.volume] : [])),
        tmpfs: mounts.flatMap((m) => (m.tmpfs !== undefined ? [m.tmpfs] : [])),
        remove: false,
        stdio: ['ignore', stdio[0], stdio[1]],
      });
      try {
        if (result.exitCode !== 0) {
          throw new FerryError('BUILD_FAILED', `${this.df.path}:${ins.line}: step ${this.step}/${this.total}, RUN ${ins.args.split('\n')[0]!}: the command exited with code ${String(result.exitCode)}`, {
            hint: 'the output above shows why; the steps before this one are cached',
          });
        }
        const upper = containerPaths(this.store.root, result.id).upper;
        return await writeLayerFile(upperLayerTar(upper, { what: `build step ${this.step}`, ...(this.options.sourceDateEpoch !== undefined ? { maxMtime: this.options.sourceDateEpoch } : {}) }), file);
      } finally {
        await removeContainer(this.store, result.id, true);
      }
    });
  }

  /**
   * `RUN --mount=type=cache,target=DIR[,id=ID][,mode=,uid=,gid=][,ro]`: a directory kept under
   * ROOT/build-cache/mounts/ between builds (ferry prune removes it) and bound at DIR for the
   * step, so what the step writes there stays out of the layer. `type=bind[,source=P][,from=STAGE|IMAGE][,rw]`:
   * a copy of the context's P (as .dockerignore filters it) or of the stage's, bound read-only
   * (rw: writable, the writes thrown away). `type=tmpfs,target=DIR[,size=]`: an empty tmpfs.
   * Other mount types (secret, ssh) are refused.
   */
  private async runMounts(s: StageState, ins: Instruction, defs: StageDef[]): Promise<RunMount[]> {
    const out: RunMount[] = [];
    for (const flag of ins.flags.filter((f) => f.startsWith('--mount='))) {
      const fields = new Map<string, string>();
      for (const part of flag.slice('--mount='.length).split(',')) {
        const eq = part.indexOf('=');
        fields.set(eq < 0 ? part : part.slice(0, eq), eq < 0 ? 'true' : part.slice(eq + 1));
      }
      const type = fields.get('type') ?? 'bind';
      if (type !== 'cache' && type !== 'bind' && type !== 'tmpfs') throw this.fail(ins, `RUN --mount=type=${type} is not supported by ferry build yet (only cache, bind and tmpfs)`, 'copy what the step needs with COPY, or use a build stage');
      const targetText = fields.get('target') ?? fields.get('dst') ?? fields.get('destination');
      if (targetText === undefined || targetText === '') throw this.fail(ins, `RUN --mount=type=${type} needs target=DIR`);
      const workdir = s.config.WorkingDir === undefined || s.config.WorkingDir === '' ? '/' : s.config.WorkingDir;
      const target = posix.normalize(posix.isAbsolute(targetText) ? targetText : posix.join(workdir, targetText));
      if (target === '/' || /[:,]/.test(target)) throw this.fail(ins, `RUN --mount target "${targetText}" cannot be used`);
      if (type === 'bind') {
        out.push(await this.bindMount(s, ins, defs, fields, target));
        continue;
      }
      if (type === 'tmpfs') {
        const size = fields.get('size');
        if (size !== undefined && !/^\d+[kmgKMG]?$/.test(size)) throw this.fail(ins, `RUN --mount=type=tmpfs size=${size}: expected a size such as 64m`);
        out.push({ spec: JSON.stringify({ type, target, size }), tmpfs: `${target}:exec${size !== undefined ? `,size=${size}` : ''}` });
        continue;
      }
      const number = (name: string, fallback: number, radix: number): number => {
        const text = fields.get(name);
        if (text === undefined) return fallback;
        const n = parseInt(text, radix);
        if (!Number.isInteger(n) || n < 0 || !(radix === 8 ? /^[0-7]+$/ : /^\d+$/).test(text)) throw this.fail(ins, `RUN --mount ${name}=${text}: not a valid number`);
        return n;
      };
      const mode = number('mode', 0o755, 8);
      const uid = number('uid', 0, 10);
      const gid = number('gid', 0, 10);
      const readOnly = fields.get('ro') === 'true' || fields.get('readonly') === 'true';
      const id = fields.get('id') ?? target;
      const dir = join(this.store.root, 'build-cache', 'mounts', sha('cache-mount', id).slice(0, 32));
      await mkdir(join(this.store.root, 'build-cache', 'mounts'), { recursive: true, mode: 0o700 });
      try {
        // Made once, with the mode and owner asked for; later builds find it as the last one left it.
        await mkdir(dir, { mode });
        await chown(dir, uid, gid);
        await chmod(dir, mode);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      out.push({ spec: JSON.stringify({ id, target, mode, uid, gid, readOnly }), volume: `${dir}:${target}${readOnly ? ':ro' : ''}` });
    }
    return out;
  }

  private async bindMount(s: StageState, ins: Instruction, defs: StageDef[], fields: Map<string, string>, target: string): Promise<RunMount> {
    const ex = this.expander(ins, this.stageLookup(s));
    const sourceText = fields.get('source') ?? fields.get('src') ?? '.';
    const fromText = fields.get('from');
    const { tree, key } = await this.sourceTree(s, ins, defs, fromText === undefined ? undefined : ex.word(fromText));
    const normal = posix.normalize(sourceText);
    if (fromText === undefined && (normal === '..' || normal.startsWith('../'))) {
      throw new FerryError('UNSAFE_PATH', `${this.df.path}:${ins.line}: RUN --mount source ${sourceText}: the path is outside the build context`);
    }
    const node = await tree.resolve(posix.normalize(`/${sourceText}`).slice(1));
    if (node === undefined) throw this.fail(ins, `RUN --mount source ${sourceText}: no such file or directory in ${tree.what}`);
    await mkdir(this.store.tmpDir, { recursive: true });
    const dir = this.tmpFile('build-bind');
    await materialize(tree, node, dir, fromText !== undefined);
    // The step's cache key covers what it sees there: content, not mtimes (as for COPY).
    const content = await planCopy({ sources: [{ tree, node }], dest: '/m', layers: [], keepOwners: fromText !== undefined, now: 0 });
    const rw = fields.get('rw') === 'true' || fields.get('readwrite') === 'true';
    return { spec: JSON.stringify({ type: 'bind', target, source: node.rel, from: key, content: content.contentKey, rw }), volume: `${dir}:${target}${rw ? '' : ':ro'}` };
  }

  /** What COPY --from / RUN --mount from= name: a stage built before, else a store image; none: the context. */
  private async sourceTree(s: StageState, ins: Instruction, defs: StageDef[], from: string | undefined): Promise<{ tree: SourceTree; key: string }> {
    if (from === undefined) return { tree: this.context, key: 'context' };
    const stage = this.stageRef(defs, from, s.index);
    const built = stage === undefined ? undefined : this.stages.get(stage.index);
    if (stage !== undefined) {
      if (built === undefined) throw this.fail(ins, `stage ${from} is not built before this step`);
      return { tree: new LayersTree(`stage ${stage.name ?? stage.index}`, this.layerDirs(built)), key: `stage:${chainIds(built.layers.map((l) => l.diffId)).at(-1) ?? 'empty'}` };
    }
    const image = await this.openBase(ins, from, this.targetPlatform);
    const dirs = chainIds(image.config.rootfs.diff_ids).reverse().map((c) => this.store.layers.diffDir(c));
    return { tree: new LayersTree(`image ${from}`, dirs), key: `image:${image.digest}` };
  }

  private async chownOf(s: StageState, ins: Instruction, spec: string | undefined): Promise<{ uid: number; gid: number } | undefined> {
    if (spec === undefined) return undefined;
    const user = await resolveUserInLayers(this.layerDirs(s), spec, `the image of ${this.df.path}:${ins.line}`);
    return { uid: user.uid, gid: user.gid };
  }

  private async copyStep(s: StageState, ins: Instruction, flags: Map<string, string>, defs: StageDef[]): Promise<void> {
    const ex = this.expander(ins, this.stageLookup(s));
    const isAdd = ins.keyword === 'ADD';
    for (const unsupported of ['exclude', 'parents', 'checksum', 'keep-git-dir']) {
      if (flags.has(unsupported)) throw this.fail(ins, `${ins.keyword} --${unsupported} is not supported by ferry build yet`, 'copy without it, or select files with .dockerignore');
    }
    const words = (jsonForm(ins.args) ?? splitWords(ins.args, this.df.escape)).map((w) => ex.word(w));
    const heredocNames = new Set(ins.heredocs.map((h) => h.name));
    const srcWords = words.slice(0, -1).filter((w) => !/^\d*<<-?/.test(w) || !heredocNames.has(w.replace(/^\d*<<-?/, '')));
    const destWord = words.at(-1);
    if (destWord === undefined || (srcWords.length === 0 && ins.heredocs.length === 0)) throw this.fail(ins, `${ins.keyword} requires at least one source and a destination`);
    const workdir = s.config.WorkingDir === undefined || s.config.WorkingDir === '' ? '/' : s.config.WorkingDir;
    let dest = posix.isAbsolute(destWord) ? destWord : posix.join(workdir, destWord);
    if (destWord.endsWith('/') && !dest.endsWith('/')) dest += '/';
    if (destWord === '.' || destWord === './') dest = workdir.endsWith('/') ? workdir : `${workdir}/`;

    const fromText = flags.get('from');
    const { tree, key: fromKey } = await this.sourceTree(s, ins, defs, fromText === undefined ? undefined : ex.word(fromText));
    for (const w of srcWords) {
      if (/^[a-z][a-z0-9+.-]*:\/\//i.test(w)) {
        if (!isAdd) throw this.fail(ins, `COPY ${w}: COPY takes files of the context; URLs only with ADD`);
        throw this.fail(ins, `ADD ${w}: ferry build works offline and does not download URLs`, 'download the file where a network is reachable, put it in the build context and ADD or COPY it from there');
      }
    }
    const owner = await this.chownOf(s, ins, flags.has('chown') ? ex.word(flags.get('chown')!) : undefined);
    const chmodText = flags.get('chmod');
    if (chmodText !== undefined && !/^[0-7]{3,4}$/.test(chmodText)) throw this.fail(ins, `${ins.keyword} --chmod=${chmodText}: expected an octal mode such as 0755`);
    const chmod = chmodText === undefined ? undefined : parseInt(chmodText, 8);

    const sources: CopySource[] = [];
    const archives: CopySource[] = [];
    for (const w of srcWords) {
      const normal = posix.normalize(w);
      if (fromText === undefined && (normal === '..' || normal.startsWith('../'))) {
        throw new FerryError('UNSAFE_PATH', `${this.df.path}:${ins.line}: ${ins.keyword} ${w}: the path is outside the build context`, { hint: 'COPY and ADD read only files inside the build context; move the file into it' });
      }
      const found = await expandSource(tree, w);
      if (found.length === 0) {
        throw this.fail(ins, `${ins.keyword} ${w}: no such file or directory in ${tree.what}`, tree === this.context ? 'paths are relative to the build context; check .dockerignore too' : undefined);
      }
      for (const node of found) {
        if (isAdd && fromText === undefined && node.type === 'file' && (await isLocalArchive(tree.open(node)))) archives.push({ tree, node });
        else sources.push({ tree, node });
      }
    }
    const inline = ins.heredocs.map((h) => ({ name: h.name, content: Buffer.from(h.expand ? ex.word(`"${h.content.replace(/(["\\])/g, '\\$1')}"`) : h.content) }));
    const layers = this.layerDirs(s);
    const plan = await planCopy({ sources, inline, dest, layers, keepOwners: fromText !== undefined, now: this.now, ...(owner !== undefined ? { owner } : {}), ...(chmod !== undefined ? { chmod } : {}) });
    const entries = [...plan.entries];
    let archiveKey = '';
    for (const a of archives) {
      // ADD of a local archive: its contents, with their owners, into the destination directory.
      const dir = this.tmpFile('build-add');
      const { tree: extracted, digest } = await extractArchive(a.tree, a.node, dir, `${this.df.path}:${ins.line}`);
      archiveKey += digest;
      const found = await extracted.resolve('');
      if (found === undefined) continue;
      // The private directory's own mode and owner are not the archive's: a new destination is 0755 root.
      const root = { ...found, mode: 0o755, uid: 0, gid: 0 };
      const into = dest.endsWith('/') ? dest : `${dest}/`;
      const sub = await planCopy({ sources: [{ tree: extracted, node: root }], dest: into, layers, keepOwners: true, now: this.now, ...(owner !== undefined ? { owner } : {}), ...(chmod !== undefined ? { chmod } : {}) });
      entries.push(...sub.entries);
    }
    const canonical = JSON.stringify({ words, dest, fromKey, owner, chmod, content: plan.contentKey, archiveKey });
    const shown = `${ins.keyword} ${fromText !== undefined ? `--from=${ex.word(fromText)} ` : ''}${srcWords.join(' ')}${ins.heredocs.map((h) => ` <<${h.name}`).join('')} ${dest}`;
    await this.layerStep(s, ins, canonical, shown, async (file) => writeEntriesLayer(entries, file, this.options.sourceDateEpoch));
  }

  private async flushCache(): Promise<void> {
    for (const [key, entry] of this.pendingCache.splice(0)) await this.cache.put(key, entry);
  }

  private async commit(s: StageState): Promise<BuildResult> {
    const image = this.assemble(s, this.options.labels !== undefined ? { labels: this.options.labels } : {});
    const refs = (this.options.tags ?? []).map(nameTag);
    this.log(`COMMIT ${refs.map(formatReference).join(', ')}`);
    // The image, then each tag: one copy by the transfer engine, every name set at its end.
    const copied = await this.copyInto([{ ref: undefined, images: [image] }, ...refs.map((ref) => ({ ref, images: [{ ...image, ref }] }))]);
    const names = copied.flatMap((name) => (name === undefined ? [] : [name]));
    await this.flushCache();
    for (const n of names) this.log(`Successfully tagged ${n}`);
    return { manifestDigest: image.digest, configDigest: image.configDigest, names, steps: this.step, cached: this.cachedSteps };
  }
}

/**
 * Build the Dockerfile in `options.context` into the store; each new layer and the image go in
 * through `copyInto` (verbs/build.ts gives the transfer engine's copy).
 */
export async function buildImageInto(store: Store, copyInto: CopyInto, options: BuildOptions): Promise<BuildResult> {
  const contextDir = resolve(options.context);
  let st;
  try {
    st = await lstat(contextDir);
  } catch (err) {
    throw new UsageError(`build: the context ${options.context} does not exist`, { cause: err });
  }
  if (!st.isDirectory()) throw new UsageError(`build: the context ${options.context} is not a directory`);
  const dockerfilePath = options.dockerfile ?? join(contextDir, 'Dockerfile');
  for (const t of options.tags ?? []) nameTag(t);
  if (options.dockerfileText !== undefined && Buffer.byteLength(options.dockerfileText) > MAX_DOCKERFILE_BYTES) {
    throw new FerryError('DOCKERFILE_INVALID', `${options.dockerfile ?? 'Dockerfile'}: over the ${MAX_DOCKERFILE_BYTES}-byte limit for a Dockerfile`);
  }
  const text = options.dockerfileText ?? (await readDockerfile(dockerfilePath));
  // Messages name the Dockerfile as the user did (-f PATH), else "Dockerfile".
  const df = parseDockerfile(text, options.dockerfile ?? 'Dockerfile');
  const context = await ContextTree.open(contextDir, await readIgnore(contextDir));
  const lease = await store.lease();
  try {
    return await new Builder(store, copyInto, context, df, options).run();
  } finally {
    await lease.release();
  }
}
