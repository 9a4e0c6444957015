import { DEFAULT_CAPABILITIES } from './capabilities.js';
import type { LaunchTmpfs, PortMapping } from './launcher.js';
import { NO_RESTART } from './restart-policy.js';
import { securityOf } from './security.js';
import type { ContainerInfo } from './state.js';

/**
 * `ferry inspect CONTAINER`: docker's `inspect` shape (the fields scripts read with
 * `docker inspect -f` or jq), built from the container's record and live status. Fields ferry has
 * no notion of are left out rather than faked, except the few docker always has (Paused, Dead).
 */
const ZERO_TIME = '0001-01-01T00:00:00Z';

function portMap(ports: readonly PortMapping[]): Record<string, Array<{ HostIp: string; HostPort: string }>> {
  const out: Record<string, Array<{ HostIp: string; HostPort: string }>> = {};
  for (const p of ports) {
    const key = `${p.containerPort}/${p.protocol}`;
    (out[key] ??= []).push({ HostIp: p.hostIp, HostPort: p.hostPort === 0 ? '' : String(p.hostPort) });
  }
  return out;
}

function isTmpfs(m: unknown): m is LaunchTmpfs {
  return typeof m === 'object' && m !== null && (m as { tmpfs?: unknown }).tmpfs === true;
}

export function containerInspectJson(info: ContainerInfo): Record<string, unknown> {
  const r = info.record;
  const running = info.status === 'running';
  const restarting = info.status === 'restarting';
  const policy = r.restartPolicy ?? NO_RESTART;
  const security = securityOf(r.security);
  const res = r.resources ?? {};
  const volumeOf = new Map((r.volumeMounts ?? []).map((m) => [m.destination, m]));
  const mounts = [
    ...r.volumes.map((b) => {
      const v = volumeOf.get(b.destination);
      return v === undefined
        ? { Type: 'bind', Source: b.source, Destination: b.destination, Mode: b.readOnly ? 'ro' : '', RW: !b.readOnly, Propagation: 'rprivate' }
        : { Type: 'volume', Name: v.name, Source: b.source, Destination: b.destination, Driver: 'local', Mode: b.readOnly ? 'ro' : '', RW: !b.readOnly, Propagation: '' };
    }),
    ...(r.tmpfs ?? []).filter(isTmpfs).map((t) => ({ Type: 'tmpfs', Source: '', Destination: t.destination, Mode: t.data, RW: !t.readOnly, Propagation: '' })),
  ];
  const caps = security.capabilities;
  const networkMode = r.networkContainer !== undefined ? `container:${r.networkContainer}` : r.network === 'private' ? 'bridge' : r.network;
  const boundPorts = running ? info.state?.ports ?? [] : [];
  return {
    Id: r.id,
    Created: r.created,
    Path: r.process.argv[0] ?? '',
    Args: r.process.argv.slice(1),
    State: {
      Status: info.status,
      // docker: a container between two runs of its restart policy is still Running, and Restarting.
      Running: running || restarting,
      Paused: false,
      Restarting: restarting,
      OOMKilled: info.oomKilled === true,
      Dead: false,
      Pid: running ? info.state?.pid ?? 0 : 0,
      // docker says 0 for a container that never ran; -1 for an exit ferry could not record.
      ExitCode: info.exitCode === null ? -1 : info.exitCode ?? 0,
      Error: info.exitCode === null ? 'the container monitor ended without recording the exit status' : '',
      StartedAt: info.state?.startedAt ?? ZERO_TIME,
      FinishedAt: info.finishedAt ?? ZERO_TIME,
      RestartCount: info.restartCount,
      // What the supervisor last wrote (none for a foreground run: only detached containers are probed).
      ...(info.health !== undefined ? { Health: info.health } : {}),
    },
    Image: r.image.configDigest,
    Name: `/${r.name}`,
    RestartCount: info.restartCount,
    Platform: r.image.platform,
    HostConfig: {
      Binds: r.volumes.map((b) => `${volumeOf.get(b.destination)?.name ?? b.source}:${b.destination}${b.readOnly ? ':ro' : ''}`),
      NetworkMode: networkMode,
      PortBindings: portMap(r.ports ?? []),
      RestartPolicy: { Name: policy.name, MaximumRetryCount: policy.maximumRetryCount },
      AutoRemove: r.autoRemove,
      CapAdd: security.privileged ? null : caps.filter((c) => !DEFAULT_CAPABILITIES.includes(c)),
      CapDrop: security.privileged ? null : DEFAULT_CAPABILITIES.filter((c) => !caps.includes(c)),
      Capabilities: security.privileged ? null : caps,
      Privileged: security.privileged,
      ReadonlyRootfs: r.readOnly,
      SecurityOpt: [...(security.seccomp === 'unconfined' ? ['seccomp=unconfined'] : []), ...(security.noNewPrivileges ? ['no-new-privileges'] : [])],
      Tmpfs: Object.fromEntries((r.tmpfs ?? []).filter(isTmpfs).map((t) => [t.destination, t.data])),
      Memory: res.memory ?? 0,
      MemorySwap: res.memorySwap ?? 0,
      MemoryReservation: res.memoryReservation ?? 0,
      NanoCpus: res.cpuQuota !== undefined && res.cpuPeriod !== undefined && res.cpuPeriod > 0 ? Math.round((res.cpuQuota / res.cpuPeriod) * 1e9) : 0,
      CpuShares: res.cpuShares ?? 0,
      CpusetCpus: res.cpusetCpus ?? '',
      PidsLimit: res.pidsLimit ?? null,
    },
    Mounts: mounts,
    Config: {
      Hostname: r.hostname,
      User: r.config.User,
      Tty: r.process.tty,
      OpenStdin: r.process.interactive,
      Env: r.process.env,
      Cmd: r.config.Cmd,
      Entrypoint: r.config.Entrypoint,
      Image: r.image.name,
      WorkingDir: r.config.WorkingDir,
      Labels: r.config.Labels ?? {},
      ExposedPorts: r.config.ExposedPorts ?? null,
      Volumes: r.config.Volumes ?? null,
      StopSignal: r.stopSignal,
      ...(r.healthcheck !== undefined ? { Healthcheck: r.healthcheck } : {}),
    },
    NetworkSettings: {
      Ports: portMap(boundPorts),
    },
  };
}
