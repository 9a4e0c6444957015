import { FerryError } from '../errors.js';

/**
 * Users and groups as a container engine resolves them: from the IMAGE's /etc/passwd and
 * /etc/group (never the host's, and never through NSS: docker cp CVE-2019-14271 loaded the
 * container's libnss as root). The rules are runc's libcontainer/user GetExecUser:
 * - "" is uid 0; "name" must be in passwd; a number not in passwd is that uid with gid 0;
 * - "user:group": the group by name or number; an explicit group means no supplementary groups;
 * - otherwise the supplementary groups are those of /etc/group that list the user's name.
 * Ids above 2^31-1 are refused (containerd CVE-2024-40635: they wrapped to root).
 */
export interface ExecUser {
  uid: number;
  gid: number;
  /** Supplementary groups (setgroups). */
  groups: number[];
  /** From passwd; "/" when the user has no entry. */
  home: string;
  /** The passwd name, when the user has an entry. */
  name: string | undefined;
}

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

export interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

export const MAX_ID = 2 ** 31 - 1;

function parseId(text: string): number | undefined {
  if (!/^\d+$/.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : Number.MAX_SAFE_INTEGER;
}

/** passwd lines `name:password:uid:gid:gecos:home:shell`; malformed lines are skipped, as libc does. */
export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const f = line.split(':');
    const uid = parseId(f[2] ?? '');
    const gid = parseId(f[3] ?? '');
    if (f.length < 4 || f[0] === '' || uid === undefined || gid === undefined) continue;
    out.push({ name: f[0]!, uid, gid, home: f[5] ?? '' });
  }
  return out;
}

/** group lines `name:password:gid:member,member`. */
export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const f = line.split(':');
    const gid = parseId(f[2] ?? '');
    if (f.length < 3 || f[0] === '' || gid === undefined) continue;
    out.push({ name: f[0]!, gid, members: (f[3] ?? '').split(',').map((m) => m.trim()).filter((m) => m !== '') });
  }
  return out;
}

function checkRange(id: number, what: string, spec: string): number {
  if (id > MAX_ID) {
    throw new FerryError('USAGE', `user ${spec}: ${what} ${id} is out of range (at most ${MAX_ID})`, {
      hint: 'ids above 2^31-1 are refused: they have been used to wrap around to root',
    });
  }
  return id;
}

/**
 * Resolve `spec` ("", "name", "uid", "name:group", "uid:gid", ...) against the image's passwd
 * and group files (undefined when the image has none).
 */
export function resolveUser(spec: string, passwdText: string | undefined, groupText: string | undefined, where = 'the image'): ExecUser {
  const colon = spec.indexOf(':');
  const userArg = colon < 0 ? spec : spec.slice(0, colon);
  const groupArg = colon < 0 ? '' : spec.slice(colon + 1);
  const uidArg = parseId(userArg);
  const gidArg = parseId(groupArg);
  const users = passwdText === undefined ? [] : parsePasswd(passwdText);
  const groups = groupText === undefined ? [] : parseGroup(groupText);

  const user: ExecUser = { uid: 0, gid: 0, groups: [], home: '/', name: undefined };
  const match = users.find((u) => (userArg === '' ? u.uid === 0 : uidArg !== undefined ? u.uid === uidArg : u.name === userArg));
  if (match !== undefined) {
    user.uid = checkRange(match.uid, 'uid', spec);
    user.gid = checkRange(match.gid, 'gid', spec);
    user.home = match.home === '' ? '/' : match.home;
    user.name = match.name;
  } else if (userArg !== '') {
    if (uidArg === undefined) {
      throw new FerryError('NOT_FOUND', `user ${userArg}: no such user in ${where}'s /etc/passwd`, {
        hint: passwdText === undefined ? 'the image has no /etc/passwd: give a numeric uid (-u 1000:1000)' : 'give a user the image knows, or a numeric uid',
      });
    }
    user.uid = checkRange(uidArg, 'uid', spec);
  }

  if (groupArg !== '') {
    const g = groups.find((e) => (gidArg !== undefined ? e.gid === gidArg : e.name === groupArg));
    if (g !== undefined) user.gid = checkRange(g.gid, 'gid', spec);
    else if (gidArg !== undefined) user.gid = checkRange(gidArg, 'gid', spec);
    else {
      throw new FerryError('NOT_FOUND', `group ${groupArg}: no such group in ${where}'s /etc/group`, {
        hint: 'give a group the image knows, or a numeric gid',
      });
    }
  } else if (user.name !== undefined) {
    const name = user.name;
    user.groups = groups.filter((g) => g.members.includes(name)).map((g) => checkRange(g.gid, 'gid', spec));
  }
  return user;
}
