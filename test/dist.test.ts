/**
 * Compiled memtwin (bin/build.mjs, bin/memtwin.js): dist/ is used exactly
 * when it was built from the sources as they are, in a package root of its
 * own (a copy of bin/, a two-file src/, the real node_modules), so the
 * repository's own dist/ is never touched.
 */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { build, distState } from '../bin/build.mjs';
import { fromRoot } from '../src/util/paths.ts';

let root: string;
/** What the sources held at the last build (path -> content), or undefined before one. */
let built: Map<string, string> | undefined;

const write = (rel: string, text: string): void => {
  mkdirSync(dirname(join(root, rel)), { recursive: true });
  writeFileSync(join(root, rel), text);
};
/** The package's entry point prints where it runs from (dist/ or the .ts source) and what the other module holds. */
const MAIN = `import { VALUE } from '../util/value.ts';\nconsole.log(import.meta.url.endsWith('.ts') ? 'src' : 'dist', VALUE);\n`;

function sources(): Map<string, string> {
  const m = new Map<string, string>();
  const walk = (rel: string): void => {
    for (const e of readdirSync(join(root, rel), { withFileTypes: true }))
      if (e.isDirectory()) walk(`${rel}/${e.name}`);
      else if (!e.name.endsWith('.test.ts')) m.set(`${rel}/${e.name}`, readFileSync(join(root, rel, e.name), 'utf8'));
  };
  walk('src');
  return m;
}
const same = (a: Map<string, string>, b: Map<string, string>): boolean => a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);

async function rebuild(): Promise<void> {
  expect(await build(root)).toEqual([]);
  built = sources();
}

/** `memtwin` in the copy: what its entry printed, and its stderr (not a terminal). */
function memtwin(): { out: string; err: string } {
  const r = spawnSync(process.execPath, [join(root, 'bin', 'memtwin.js')], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return { out: r.stdout.trim(), err: r.stderr };
}

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'memtwin-dist-'));
  write('package.json', JSON.stringify({ name: 'memtwin', type: 'module' }));
  for (const f of ['bin/build.mjs', 'bin/memtwin.js', 'tsconfig.json']) {
    mkdirSync(dirname(join(root, f)), { recursive: true });
    copyFileSync(fromRoot(f), join(root, f));
  }
  symlinkSync(fromRoot('node_modules'), join(root, 'node_modules'));
  mkdirSync(join(root, '.git'));
  write('src/cli/main.ts', MAIN);
  write('src/util/value.ts', 'export const VALUE: number = 1;\n');
  write('src/scenario/worker.ts', 'export default function run(): number {\n  return 1;\n}\n');
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('bin/memtwin.js', () => {
  it('runs the sources until dist/ is built, then dist/, and the sources again as soon as one is edited', async () => {
    expect(distState(root)).toEqual({ state: 'missing' });
    expect(memtwin()).toEqual({ out: 'src 1', err: '' });
    await rebuild();
    expect(existsSync(join(root, 'dist', 'cli', 'main.js')) && existsSync(join(root, 'dist', 'scenario', 'worker.js'))).toBe(true);
    expect(memtwin()).toEqual({ out: 'dist 1', err: '' });
    write('src/util/value.ts', 'export const VALUE: number = 2;\n');
    expect(distState(root)).toEqual({ state: 'stale', changed: 'src/util/value.ts' });
    // Never the stale JavaScript; no note either, stderr not being a terminal.
    expect(memtwin()).toEqual({ out: 'src 2', err: '' });
    await rebuild();
    expect(memtwin()).toEqual({ out: 'dist 2', err: '' });
  }, 60_000);

  it('trusts dist/ outside a git checkout (an installed package, built by npm pack)', async () => {
    await rebuild();
    write('src/util/value.ts', 'export const VALUE: number = 3;\n');
    rmSync(join(root, '.git'), { recursive: true });
    try {
      expect(distState(root)).toEqual({ state: 'current' });
    } finally {
      mkdirSync(join(root, '.git'));
    }
    expect(distState(root)).toMatchObject({ state: 'stale' });
  }, 60_000);
});

describe('distState', () => {
  type Op =
    | { kind: 'edit'; file: number; text: string }
    | { kind: 'touch'; file: number }
    | { kind: 'add'; text: string }
    | { kind: 'remove'; file: number }
    | { kind: 'test'; text: string }
    | { kind: 'build' };
  const FILES = ['src/util/value.ts', 'src/scenario/worker.ts', 'src/util/extra.ts', 'src/cli/more/deep.ts'];
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ kind: fc.constant('edit' as const), file: fc.nat(FILES.length - 1), text: fc.constantFrom('1', '2', '3') }),
    fc.record({ kind: fc.constant('touch' as const), file: fc.nat(FILES.length - 1) }),
    fc.record({ kind: fc.constant('add' as const), text: fc.constantFrom('a', 'b') }),
    fc.record({ kind: fc.constant('remove' as const), file: fc.nat(FILES.length - 1) }),
    fc.record({ kind: fc.constant('test' as const), text: fc.constantFrom('x', 'y') }),
    fc.constant({ kind: 'build' as const }),
  );
  let clock = Date.now() / 1000;

  function apply(o: Op): void {
    // The two modules the entry points import stay: the build needs them.
    const file = FILES[o.kind === 'edit' || o.kind === 'touch' || o.kind === 'remove' ? o.file : 0]!;
    const value = file === 'src/util/value.ts';
    const worker = file === 'src/scenario/worker.ts';
    const keep = value || worker;
    switch (o.kind) {
      case 'edit':
        if (value) write(file, `export const VALUE: number = ${o.text};\n`);
        else if (worker) write(file, `export default function run(): number {\n  return ${o.text};\n}\n`);
        else write(file, `export const X = ${o.text};\n`);
        break;
      case 'touch':
        // A later time, same content (a checkout that rewrote the file as it was).
        if (existsSync(join(root, file))) utimesSync(join(root, file), (clock += 5), clock);
        break;
      case 'add':
        write(`src/util/added-${o.text}.ts`, `export const A = '${o.text}';\n`);
        break;
      case 'remove':
        if (!keep) rmSync(join(root, file), { force: true });
        break;
      case 'test':
        write('src/util/value.test.ts', `// ${o.text}\n`);
        break;
      case 'build':
        break;
    }
  }

  it('is current exactly when the sources (tests aside) are what dist/ was built from', async () => {
    await rebuild();
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 6 }), async (ops) => {
        for (const o of ops) {
          if (o.kind === 'build') await rebuild();
          else apply(o);
          const want = same(sources(), built!) ? 'current' : 'stale';
          expect(distState(root).state, JSON.stringify(ops)).toBe(want);
        }
      }),
      { numRuns: 25 },
    );
  }, 120_000);
});
