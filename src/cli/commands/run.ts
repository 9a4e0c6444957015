import type { Command } from 'commander';
import { parsePlatform } from '../../oci/platform.js';
import { runContainer, type RunOptions } from '../../runtime/containers.js';
import { LaunchError } from '../../runtime/launcher.js';
import { reportError } from '../output.js';
import { storeFromCommand } from '../store-options.js';
import { mark } from '../../io/timing.js';
import type { Register } from './index.js';

interface RunFlags {
  detach?: boolean;
  interactive?: boolean;
  tty?: boolean;
  rm?: boolean;
  name?: string;
  env: string[];
  envFile: string[];
  volume: string[];
  tmpfs: string[];
  capAdd: string[];
  capDrop: string[];
  securityOpt: string[];
  privileged?: boolean;
  publish: string[];
  publishAll?: boolean;
  memory?: string;
  memorySwap?: string;
  memoryReservation?: string;
  cpus?: string;
  cpuShares?: string;
  cpusetCpus?: string;
  pidsLimit?: string;
  workdir?: string;
  user?: string;
  entrypoint?: string;
  hostname?: string;
  network?: string;
  readOnly?: boolean;
  platform?: string;
  restart?: string;
  mount: string[];
  healthCmd?: string;
  healthInterval?: string;
  healthTimeout?: string;
  healthRetries?: string;
  healthStartPeriod?: string;
  healthcheck?: boolean;
  healthOnFailure?: string;
}

export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/**
 * A start failure inside the launcher exits as docker does (125 setup, 126 cannot execute, 127
 * not found) instead of ferry's usual 1, after the usual error lines.
 */
export function reportLaunchError(err: unknown): void {
  if (!(err instanceof LaunchError)) throw err;
  reportError(err, (line) => process.stderr.write(`${line}\n`));
  process.exitCode = err.exitCode;
}

/** `ferry run [flags] IMAGE [COMMAND...]`: flags after the image belong to the command. */
export const registerRun: Register = (program) => {
  program
    .command('run')
    .description('run a command in a new container from a store image')
    .argument('<image>', 'a store image: name, or image ID (a prefix of its manifest or config digest)')
    .argument('[command...]', 'command and arguments (default: the image\'s Entrypoint and Cmd)')
    .option('-d, --detach', 'run in the background and print the container ID; output goes to its log')
    .option('-i, --interactive', 'keep stdin attached')
    .option('-t, --tty', 'give the container a terminal (pty)')
    .option('--rm', 'remove the container when it exits')
    .option('--name <name>', 'name the container')
    .option('-e, --env <NAME[=VALUE]>', 'set an environment variable (NAME alone takes the host value; repeatable)', collect, [])
    .option('--env-file <file>', 'read NAME=VALUE lines from a file (repeatable)', collect, [])
    .option('-v, --volume <HOST|NAME:CONTAINER[:opts]>', 'bind a host directory or file, or a volume (created and filled from the image when new); opts: ro, suid, noexec, nocopy (repeatable; always nodev)', collect, [])
    .option('--mount <type=bind|volume|tmpfs,source=..,target=..[,readonly]>', 'mount a host path, a volume or a tmpfs (docker\'s syntax; repeatable; always nodev)', collect, [])
    .option('--tmpfs <CONTAINER[:opts]>', 'mount a tmpfs; opts: size=64m, mode=1777, uid=, gid=, ro, exec, suid (repeatable; always nodev)', collect, [])
    .option('--cap-add <cap>', 'add a Linux capability to docker\'s default set (NET_ADMIN, ..., ALL; repeatable)', collect, [])
    .option('--cap-drop <cap>', 'drop a Linux capability (repeatable; ALL drops every one)', collect, [])
    .option('--security-opt <opt>', 'seccomp=unconfined, seccomp=PROFILE.json (docker\'s format) or no-new-privileges (repeatable)', collect, [])
    .option('-m, --memory <bytes>', 'memory limit (e.g. 256m); the kernel kills the container past it (exit 137)')
    .option('--memory-swap <bytes>', 'memory + swap limit (-1: unlimited swap; default twice --memory)')
    .option('--memory-reservation <bytes>', 'soft memory limit, reclaimed first under pressure')
    .option('--cpus <n>', 'CPU time, in CPUs (e.g. 0.5: half of one CPU)')
    .option('-c, --cpu-shares <n>', 'relative CPU weight (default 1024)')
    .option('--cpuset-cpus <list>', 'CPUs the container may run on (e.g. 0-1,3)')
    .option('--pids-limit <n>', 'maximum number of processes (0 or -1: unlimited)')
    .option('--privileged', 'give the container every capability, the host\'s devices, no seccomp filter and no masked paths')
    .option('-w, --workdir <dir>', 'working directory inside the container')
    .option('-u, --user <user[:group]>', 'user (name or uid) and group, looked up in the image')
    .option('--entrypoint <command>', 'replace the image\'s Entrypoint ("" clears it; the image\'s Cmd is dropped)')
    .option('--hostname <name>', 'hostname (default: the short container ID)')
    .option('--network <mode>', 'host (the host\'s network; the default without -p), private (its own, loopback only, ports published with -p; the default with -p), none, or container:NAME (share that container\'s)')
    .option('-p, --publish <[IP:]HOST:CONTAINER[/udp]>', 'publish a container port on the host (repeatable; implies --network private)', collect, [])
    .option('-P, --publish-all', 'publish every port the image exposes, on ports the host picks')
    .option('--restart <policy>', 'no, on-failure[:N], always or unless-stopped: restart it when it exits (needs -d; 100 ms back-off doubling, reset after 10 s up)')
    .option('--health-cmd <command>', 'health check command, run in the container through /bin/sh -c')
    .option('--health-interval <duration>', 'time between health checks (default 30s)')
    .option('--health-timeout <duration>', 'longest a health check may run (default 30s)')
    .option('--health-retries <n>', 'failures in a row before it is unhealthy (default 3)')
    .option('--health-start-period <duration>', 'failures in this time after the start do not count')
    .option('--no-healthcheck', 'no health check, not even the image\'s')
    .option('--health-on-failure <action>', 'when it turns unhealthy: none (default), kill, restart or stop')
    .option('--read-only', 'mount the container\'s root filesystem read-only')
    .option('--platform <os/arch[/variant]>', 'which platform of a multi-platform image (default: this host\'s)')
    .passThroughOptions()
    .action(async (image: string, command: string[], flags: RunFlags, cmd: Command) => {
      const store = await storeFromCommand(cmd);
      mark('store');
      const options: RunOptions = {
        image,
        command,
        env: flags.env,
        envFiles: flags.envFile,
        volumes: flags.volume,
        tmpfs: flags.tmpfs,
        capAdd: flags.capAdd,
        capDrop: flags.capDrop,
        securityOpts: flags.securityOpt,
        privileged: flags.privileged === true,
        resources: {
          ...(flags.memory !== undefined ? { memory: flags.memory } : {}),
          ...(flags.memorySwap !== undefined ? { memorySwap: flags.memorySwap } : {}),
          ...(flags.memoryReservation !== undefined ? { memoryReservation: flags.memoryReservation } : {}),
          ...(flags.cpus !== undefined ? { cpus: flags.cpus } : {}),
          ...(flags.cpuShares !== undefined ? { cpuShares: flags.cpuShares } : {}),
          ...(flags.cpusetCpus !== undefined ? { cpusetCpus: flags.cpusetCpus } : {}),
          ...(flags.pidsLimit !== undefined ? { pidsLimit: flags.pidsLimit } : {}),
        },
        ...(flags.network !== undefined ? { network: flags.network } : {}),
        publish: flags.publish,
        publishAll: flags.publishAll === true,
        readOnly: flags.readOnly === true,
        interactive: flags.interactive === true,
        tty: flags.tty === true,
        detach: flags.detach === true,
        remove: flags.rm === true,
        mounts: flags.mount,
        ...(flags.restart !== undefined ? { restart: flags.restart } : {}),
        ...(flags.healthCmd !== undefined ? { healthCmd: flags.healthCmd } : {}),
        ...(flags.healthInterval !== undefined ? { healthInterval: flags.healthInterval } : {}),
        ...(flags.healthTimeout !== undefined ? { healthTimeout: flags.healthTimeout } : {}),
        ...(flags.healthRetries !== undefined ? { healthRetries: flags.healthRetries } : {}),
        ...(flags.healthStartPeriod !== undefined ? { healthStartPeriod: flags.healthStartPeriod } : {}),
        ...(flags.healthcheck === false ? { noHealthcheck: true } : {}),
        ...(flags.healthOnFailure !== undefined ? { healthOnFailure: flags.healthOnFailure } : {}),
      };
      if (flags.name !== undefined) options.name = flags.name;
      if (flags.workdir !== undefined) options.workdir = flags.workdir;
      if (flags.user !== undefined) options.user = flags.user;
      if (flags.entrypoint !== undefined) options.entrypoint = flags.entrypoint;
      if (flags.hostname !== undefined) options.hostname = flags.hostname;
      if (flags.platform !== undefined) options.platform = parsePlatform(flags.platform);
      try {
        const result = await runContainer(store, options);
        if (result.exitCode === undefined) process.stdout.write(`${result.id}\n`);
        else process.exitCode = result.exitCode;
      } catch (err) {
        reportLaunchError(err);
      }
    });
};
