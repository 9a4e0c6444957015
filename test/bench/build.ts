import { mkdir, writeFile } from 'node:fs/promises';
import { corpusDir } from './corpus.js';
import { Bench, FERRY, ferryHas, perRun, wall } from './context.js';
import { sh } from './measure.js';
import { missing } from './report.js';

/**
 * `ferry build` of a small `FROM mysql:8` Dockerfile (a config file, an init script, one RUN):
 * cold (`--no-cache`) and fully cached, next to `buildah bud` (vfs driver and chroot isolation:
 * the configuration that works on these machines, see research/wave2-anchors.md) on the same base.
 */
const DOCKERFILE = `FROM mysql:8
COPY --chown=mysql:mysql --chmod=0644 ferry.cnf /etc/mysql/conf.d/ferry.cnf
COPY --chown=mysql:mysql init.sql /docker-entrypoint-initdb.d/
RUN mkdir -p /var/lib/mysql-files && chown mysql:mysql /var/lib/mysql-files
CMD ["mariadbd", "--init-file=/docker-entrypoint-initdb.d/init.sql"]
`;

export async function buildSection(b: Bench): Promise<void> {
  const s = 'build: FROM mysql:8 + config, init script, one RUN';
  if (!(await ferryHas('build'))) {
    b.add({ section: s, figure: 'cold build wall', unit: 's', ferry: missing('this ferry has no build command') });
    return;
  }
  const context = b.path('build-context');
  await mkdir(context, { recursive: true });
  await writeFile(`${context}/Dockerfile`, DOCKERFILE);
  await writeFile(`${context}/ferry.cnf`, '[mysqld]\nmax_connections=77\n');
  await writeFile(`${context}/init.sql`, 'CREATE DATABASE IF NOT EXISTS shop;\n');
  const store = b.path('store-build');
  await sh(`[ -f ${store}/refs.json ] && ${FERRY} --root ${store} inspect mysql:8 >/dev/null 2>&1 || { ${FERRY} --root ${store} import -q oci:${corpusDir}/oci-src:mysql-8 && ${FERRY} --root ${store} tag mysql-8 mysql:8; }`);
  const bh = b.path('buildah-build');
  const buildah = `buildah --storage-driver vfs --root ${bh}/root --runroot ${bh}/run`;
  await sh(`${buildah} inspect localhost/mysql:8 >/dev/null 2>&1 || ${buildah} tag $(${buildah} pull -q oci:${corpusDir}/oci-src:mysql-8) localhost/mysql:8`);
  const m = await b.race([
    { id: 'build.ferry.cold', command: `${FERRY} --root ${store} build -q --no-cache -t bench/mysql ${context}` },
    { id: 'build.ferry.cached', prep: `${FERRY} --root ${store} build -q -t bench/mysql ${context}`, command: `${FERRY} --root ${store} build -q -t bench/mysql ${context}` },
    { id: 'build.buildah', command: `${buildah} bud -q --pull-never --isolation chroot --format docker -t bench/mysql ${context}` },
  ]);
  b.add({ section: s, figure: 'cold build wall', unit: 's', ferry: wall(m.get('build.ferry.cold')), peer: { name: 'buildah bud (vfs)', value: wall(m.get('build.buildah')) }, runs: perRun(m.get('build.ferry.cold'), m.get('build.buildah'), 'wall') });
  b.add({ section: s, figure: 'cached rebuild wall', unit: 's', ferry: wall(m.get('build.ferry.cached')), peer: { name: 'ferry cold build', value: wall(m.get('build.ferry.cold')) }, target: { of: 'ratio', max: 0.5, text: 'cached <= half of cold' } });
}
