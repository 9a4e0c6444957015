import { posix } from 'node:path';
import { UsageError } from '../errors.js';
import type { ContainerConfig } from '../oci/manifest.js';

/**
 * What a container runs, from the image config plus `ferry run` flags, with docker's rules
 * (moby daemon/create + runconfig merge). Pure: no files, no processes.
 */
export interface RunFlags {
  /** Arguments after the image: replace the image's Cmd. */
  command?: readonly string[];
  /** --entrypoint: replaces the image's Entrypoint and drops its Cmd; "" clears it. */
  entrypoint?: string;
  /** -e and --env-file entries, already expanded (see expandEnv), in order. */
  env?: readonly string[];
  workdir?: string;
  user?: string;
  hostname?: string;
  tty?: boolean;
}

/** The parts of the container's config that `commit` writes into the new image (docker semantics). */
export interface ContainerProcessConfig {
  Entrypoint: string[] | null;
  Cmd: string[] | null;
  /** Image Env with the -e overrides; not the runtime defaults HOSTNAME/TERM/HOME. */
  Env: string[];
  WorkingDir: string;
  User: string;
}

export interface ProcessSpec {
  argv: string[];
  /** The final environment (defaults, image, flags), without HOME (added once the user is known). */
  env: string[];
  cwd: string;
  /** As given ("", "app", "1000:1000"); resolved against the image's passwd later. */
  user: string;
  hostname: string;
  config: ContainerProcessConfig;
}

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

function envKey(entry: string): string {
  const eq = entry.indexOf('=');
  return eq < 0 ? entry : entry.slice(0, eq);
}

/** moby ReplaceOrAppendEnvValues: an override replaces the same key in place, else is appended. */
export function mergeEnv(base: readonly string[], overrides: readonly string[]): string[] {
  const out = [...base];
  for (const entry of overrides) {
    const key = envKey(entry);
    const i = out.findIndex((e) => envKey(e) === key);
    if (i >= 0) out[i] = entry;
    else out.push(entry);
  }
  return out;
}

/**
 * -e / --env-file entries to K=V: "K=V" stays; a bare "K" takes the value from `hostEnv` and is
 * dropped when the host does not have it (docker). Names must be non-empty.
 */
export function expandEnv(entries: readonly string[], hostEnv: NodeJS.ProcessEnv): string[] {
  const out: string[] = [];
  for (const entry of entries) {
    const eq = entry.indexOf('=');
    const key = eq < 0 ? entry : entry.slice(0, eq);
    if (key === '' || /\s/.test(key) || key.includes('\0')) throw new UsageError(`environment variable "${entry}": invalid name`);
    if (eq >= 0) {
      if (entry.includes('\0')) throw new UsageError(`environment variable ${key}: the value holds a NUL byte`);
      out.push(entry);
      continue;
    }
    const value = hostEnv[key];
    if (value !== undefined) out.push(`${key}=${value}`);
  }
  return out;
}

/** docker's --env-file: one K=V or K per line; blank lines and # comments skipped; no quoting. */
export function parseEnvFile(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((line) => line.replace(/^\s+/, ''))
    .filter((line) => line !== '' && !line.startsWith('#'));
}

/** A hostname the kernel and resolvers accept: letters, digits, '-', '.', at most 63 characters. */
export function checkHostname(name: string): string {
  if (!/^[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$/.test(name)) {
    throw new UsageError(`hostname "${name}" is invalid`, { hint: 'use letters, digits, "-" and ".", at most 63 characters' });
  }
  return name;
}

function absoluteDir(dir: string, what: string): string {
  if (dir === '') return '/';
  if (dir.includes('\0')) throw new UsageError(`${what} "${dir}" holds a NUL byte`);
  return posix.normalize(posix.join('/', dir));
}

export function buildProcessSpec(image: ContainerConfig | undefined, flags: RunFlags, defaultHostname: string): ProcessSpec {
  const img = image ?? {};
  const entrypointOverridden = flags.entrypoint !== undefined;
  const entrypoint = entrypointOverridden ? (flags.entrypoint === '' ? [] : [flags.entrypoint!]) : [...(img.Entrypoint ?? [])];
  // docker: a new entrypoint drops the image's Cmd; arguments after the image replace it.
  const cmd = flags.command !== undefined && flags.command.length > 0 ? [...flags.command] : entrypointOverridden ? [] : [...(img.Cmd ?? [])];
  const argv = [...entrypoint, ...cmd];
  if (argv.length === 0) {
    throw new UsageError('no command to run: the image has no Entrypoint or Cmd and none was given', {
      hint: 'give the command after the image name, e.g. ferry run IMAGE /bin/sh',
    });
  }
  if (argv.some((a) => a.includes('\0'))) throw new UsageError('the command holds a NUL byte');

  if (flags.workdir !== undefined && !flags.workdir.startsWith('/')) {
    throw new UsageError(`the working directory "${flags.workdir}" is invalid: it must be an absolute path`);
  }
  const cwd = absoluteDir(flags.workdir ?? img.WorkingDir ?? '', 'working directory');
  const hostname = checkHostname(flags.hostname ?? defaultHostname);
  const configEnv = mergeEnv(img.Env ?? [], flags.env ?? []);

  // moby CreateDaemonEnvironment: PATH, HOSTNAME (and TERM with a tty) are defaults the image
  // and the flags override.
  const defaults = [
    `PATH=${DEFAULT_PATH}`,
    `HOSTNAME=${hostname}`,
    ...(flags.tty === true ? ['TERM=xterm'] : []),
  ];
  const env = mergeEnv(defaults, configEnv);

  return {
    argv,
    env,
    cwd,
    user: flags.user ?? img.User ?? '',
    hostname,
    config: {
      Entrypoint: entrypoint.length > 0 ? entrypoint : null,
      Cmd: entrypointOverridden || (flags.command !== undefined && flags.command.length > 0) ? (cmd.length > 0 ? cmd : null) : img.Cmd ?? null,
      Env: configEnv,
      WorkingDir: flags.workdir ?? img.WorkingDir ?? '',
      User: flags.user ?? img.User ?? '',
    },
  };
}

/** HOME from the user's passwd entry when neither the image nor the flags set it (runc). */
export function withHome(env: readonly string[], home: string): string[] {
  return env.some((e) => envKey(e) === 'HOME') ? [...env] : [...env, `HOME=${home}`];
}
