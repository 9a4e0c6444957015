import { describe, expect, it } from 'vitest';
import { buildProcessSpec, DEFAULT_PATH, expandEnv, mergeEnv, parseEnvFile, withHome } from '../../src/runtime/container-spec.js';
import { applyChanges } from '../../src/runtime/commit.js';
import { parseVolume } from '../../src/runtime/containers.js';
import { encodeSpec } from '../../src/runtime/launcher.js';
import { parseSignal } from '../../src/runtime/signals.js';
import { MAX_ID, resolveUser } from '../../src/runtime/users.js';
import { APP_CONFIG } from '../helpers/test-images.js';

/** The pure rules of the runtime: docker's override semantics, runc's user lookup, parsing. */

const app = { ...APP_CONFIG, Entrypoint: [...APP_CONFIG.Entrypoint], Cmd: [...APP_CONFIG.Cmd], Env: [...APP_CONFIG.Env] };

describe('buildProcessSpec (docker override rules)', () => {
  it('runs Entrypoint + Cmd with the image Env, WorkingDir and User', () => {
    const s = buildProcessSpec(app, {}, 'abc123');
    expect(s.argv).toEqual(['/opt/app/run.sh', 'hello']);
    expect(s.cwd).toBe('/opt/app');
    expect(s.user).toBe('app');
    expect(s.hostname).toBe('abc123');
    // PATH from the image replaces the default in place; HOSTNAME is a runtime default.
    expect(s.env).toEqual(['PATH=/usr/local/bin:/usr/bin:/bin', 'HOSTNAME=abc123', 'APP_MODE=test']);
  });

  it('arguments after the image replace Cmd, not Entrypoint', () => {
    expect(buildProcessSpec(app, { command: ['a', 'b'] }, 'h').argv).toEqual(['/opt/app/run.sh', 'a', 'b']);
  });

  it('--entrypoint replaces Entrypoint and drops the image Cmd', () => {
    expect(buildProcessSpec(app, { entrypoint: '/bin/echo' }, 'h').argv).toEqual(['/bin/echo']);
    expect(buildProcessSpec(app, { entrypoint: '/bin/echo', command: ['x'] }, 'h').argv).toEqual(['/bin/echo', 'x']);
    // "" clears it: the arguments are the whole command.
    expect(buildProcessSpec(app, { entrypoint: '', command: ['/bin/sh', '-c', 'true'] }, 'h').argv).toEqual(['/bin/sh', '-c', 'true']);
  });

  it('refuses an empty command', () => {
    expect(() => buildProcessSpec({}, {}, 'h')).toThrow(/no command to run/);
    expect(() => buildProcessSpec(app, { entrypoint: '' }, 'h')).toThrow(/no command to run/);
  });

  it('flags override env, workdir, user, hostname; -w must be absolute', () => {
    const s = buildProcessSpec(app, { env: ['APP_MODE=prod', 'NEW=1'], workdir: '/tmp', user: '0:0', hostname: 'box', tty: true }, 'h');
    expect(s.env).toEqual(['PATH=/usr/local/bin:/usr/bin:/bin', 'HOSTNAME=box', 'TERM=xterm', 'APP_MODE=prod', 'NEW=1']);
    expect(s.cwd).toBe('/tmp');
    expect(s.user).toBe('0:0');
    expect(s.config).toEqual({ Entrypoint: ['/opt/app/run.sh'], Cmd: ['hello'], Env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'APP_MODE=prod', 'NEW=1'], WorkingDir: '/tmp', User: '0:0' });
    expect(() => buildProcessSpec(app, { workdir: 'rel' }, 'h')).toThrow(/must be an absolute path/);
    expect(() => buildProcessSpec(app, { hostname: 'bad_name!' }, 'h')).toThrow(/hostname/);
  });

  it('an image without PATH gets the default one; without WorkingDir runs in /', () => {
    const s = buildProcessSpec({ Cmd: ['sh'] }, {}, 'h');
    expect(s.env[0]).toBe(`PATH=${DEFAULT_PATH}`);
    expect(s.cwd).toBe('/');
    expect(withHome(s.env, '/root')).toContain('HOME=/root');
    expect(withHome(['HOME=/x'], '/root')).toEqual(['HOME=/x']);
  });

  it('env: -e NAME takes the host value or is dropped; env files skip comments; overrides replace in place', () => {
    expect(expandEnv(['A=1', 'FROM_HOST', 'MISSING'], { FROM_HOST: 'v' })).toEqual(['A=1', 'FROM_HOST=v']);
    expect(() => expandEnv(['=x'], {})).toThrow(/invalid name/);
    expect(parseEnvFile('# comment\n\nA=1\r\n  B=two words\nC\n')).toEqual(['A=1', 'B=two words', 'C']);
    expect(mergeEnv(['A=1', 'B=2'], ['B=3', 'C=4'])).toEqual(['A=1', 'B=3', 'C=4']);
  });
});

describe('resolveUser (runc GetExecUser, from the image files only)', () => {
  const passwd = 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nbroken line\nnobody:x:65534:65534::/nonexistent:/bin/false\n';
  const group = 'root:x:0:\nwheel:x:10:app,other\napp:x:1000:\naudio:x:29:app\nnogroup:x:65534:\n';

  it('"" is root with its passwd home and groups', () => {
    expect(resolveUser('', passwd, group)).toEqual({ uid: 0, gid: 0, groups: [], home: '/root', name: 'root' });
  });
  it('a name gets its uid, gid, home and the groups that list it', () => {
    expect(resolveUser('app', passwd, group)).toEqual({ uid: 1000, gid: 1000, groups: [10, 29], home: '/home/app', name: 'app' });
  });
  it('an explicit group replaces the gid and drops supplementary groups', () => {
    expect(resolveUser('app:nogroup', passwd, group)).toMatchObject({ uid: 1000, gid: 65534, groups: [] });
    expect(resolveUser('app:4321', passwd, group)).toMatchObject({ uid: 1000, gid: 4321, groups: [] });
  });
  it('a uid not in passwd runs with gid 0 and home /', () => {
    expect(resolveUser('4242', passwd, group)).toEqual({ uid: 4242, gid: 0, groups: [], home: '/', name: undefined });
    expect(resolveUser('1000', passwd, group)).toMatchObject({ uid: 1000, gid: 1000, name: 'app' });
  });
  it('unknown names are errors; no passwd file means only numbers work', () => {
    expect(() => resolveUser('ghost', passwd, group)).toThrow(/no such user in the image's \/etc\/passwd/);
    expect(() => resolveUser('app:ghosts', passwd, group)).toThrow(/no such group/);
    expect(resolveUser('5:6', undefined, undefined)).toMatchObject({ uid: 5, gid: 6 });
    expect(() => resolveUser('app', undefined, undefined)).toThrow(/no such user/);
  });
  it('containerd CVE-2024-40635: ids above 2^31-1 are refused, not wrapped to root', () => {
    expect(() => resolveUser(String(MAX_ID + 1), passwd, group)).toThrow(/out of range/);
    expect(() => resolveUser('0:2147483648', passwd, group)).toThrow(/out of range/);
    expect(() => resolveUser('x', 'x:x:4294967296:0::/:/bin/sh\n', '')).toThrow(/out of range/);
  });
});

describe('parsing', () => {
  it('signals by name, short name or number', () => {
    expect(parseSignal('SIGTERM')).toEqual({ number: 15, name: 'SIGTERM' });
    expect(parseSignal('kill')).toEqual({ number: 9, name: 'SIGKILL' });
    expect(parseSignal('2').name).toBe('SIGINT');
    expect(() => parseSignal('SIGNOPE')).toThrow(/unknown signal/);
  });

  it('volumes: absolute host and container paths, ro/rw', () => {
    expect(parseVolume('/srv/data:/data')).toEqual({ source: '/srv/data', destination: '/data', readOnly: false });
    expect(parseVolume('/srv/x/:/a/../b/:ro')).toEqual({ source: '/srv/x/', destination: '/b', readOnly: true });
    expect(() => parseVolume('named:/data')).toThrow(/named volumes are not supported|must be absolute/);
    expect(() => parseVolume('/x:rel')).toThrow(/container path must be absolute/);
    expect(() => parseVolume('/x:/')).toThrow(/root/);
    expect(() => parseVolume('/x:/y:rx')).toThrow(/unknown option/);
  });

  it('commit --change instructions', () => {
    const c = applyChanges({ Env: ['A=1'], Cmd: ['sh'] }, [
      'CMD ["/bin/echo", "hi"]',
      'ENTRYPOINT /entry.sh --flag',
      'ENV A=2 B="two words"',
      'ENV LEGACY some value',
      'LABEL version=1.0',
      'USER 1000:1000',
      'WORKDIR /work',
      'EXPOSE 8080 53/udp',
      'VOLUME ["/data"]',
      'STOPSIGNAL SIGINT',
    ]);
    expect(c).toEqual({
      Env: ['A=2', 'B=two words', 'LEGACY=some value'],
      Cmd: ['/bin/echo', 'hi'],
      Entrypoint: ['/bin/sh', '-c', '/entry.sh --flag'],
      Labels: { version: '1.0' },
      User: '1000:1000',
      WorkingDir: '/work',
      ExposedPorts: { '8080/tcp': {}, '53/udp': {} },
      Volumes: { '/data': {} },
      StopSignal: 'SIGINT',
    });
    expect(() => applyChanges({}, ['RUN rm -rf /'])).toThrow(/cannot be changed by commit/);
    expect(() => applyChanges({}, ['CMD [not json'])).toThrow(/not a JSON array/);
  });

  it('the launcher spec is NUL-separated key=value records; NUL in a value is refused', () => {
    const spec = {
      mode: 'exec' as const, targetPid: 42, targetStart: '99', argv: ['sh', '-c', 'a=b'], env: ['X=1'], cwd: '/',
      uid: 1, gid: 2, groups: [3], tty: false, interactive: false,
    };
    const records = encodeSpec(spec, 7).toString().split('\0').slice(0, -1);
    expect(records).toEqual(['target=42', 'targetstart=99', 'uid=1', 'gid=2', 'group=3', 'cwd=/', 'tty=0', 'stdin=0', 'nonewprivs=0', 'ppid=7', 'env=X=1', 'arg=sh', 'arg=-c', 'arg=a=b']);
    expect(() => encodeSpec({ ...spec, argv: ['a\0b'] }, 0)).toThrow(/NUL/);
  });
});
