#!/usr/bin/env node
/**
 * dist/: the compiled JavaScript that bin/memtwin.js and sweep workers run,
 * so no TypeScript is compiled when memtwin starts.
 *
 *   node bin/build.mjs     build it (npm run build; npm's prepare step runs it
 *                          on `npm install`/`npm ci` in a clone and on `npm pack`)
 *
 * esbuild bundles the two entry points, the command line (dist/cli/main.js)
 * and the scenario worker (dist/scenario/worker.js), with the code they share
 * and what they import lazily in dist/chunks/, and the dependencies inlined.
 * Not one module per source file as tsc would emit: Node 20 spends about
 * 1 ms of CPU per ES module it loads, and `memtwin --help` loads ~470 of them
 * (~220 sources, ~250 files of zod, yaml and the others), 0.40 s of CPU
 * against 0.25 s for the bundle. Every output is two directories below the
 * package root, as its sources are (src/validate/real.ts finds the root
 * that way). Not inlined: piscina (it starts its threads from a file of its
 * own), esbuild and tsx (the development fallback), fast-check (tests), and
 * ECharts, which src/report/charts.ts loads with require at the first chart.
 * The bundle is not type-checked (`npm run typecheck` does that).
 *
 * It is built in a directory of its own that then replaces dist/ whole, so a
 * source that was removed leaves no module behind and a failed build leaves
 * no half-written dist/.
 *
 * dist/SOURCES records what it was built from: the newest modification time
 * among the inputs (src/ files and directories, so a removed file counts; the
 * tsconfig, the lockfile, this script), when they were read, and a SHA-256
 * of their paths and contents. distState() compares, in a git checkout: the
 * inputs' times first (a stat per file), their contents when a time is newer
 * (a checkout that touched files without changing them keeps dist/ current)
 * or when the newest input was written less than RACY_MS before the build
 * read it (file times advance in ticks of a few ms: an edit right after the
 * build could keep the time it read). A package installed from its tarball
 * has no .git: its dist/ was built by `npm pack` from the src/ beside it.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const DIST = join(ROOT, 'dist');
const STAMP = 'SOURCES';
const RACY_MS = 1000;
/** Files outside src/ that change what the build emits (the lockfile: dependencies are inlined). */
const INPUTS = ['tsconfig.json', 'package-lock.json', 'bin/build.mjs'];
/** Entry points (under src/), each with the same path under dist/. */
const ENTRIES = ['src/cli/main.ts', 'src/scenario/worker.ts'];
const EXTERNAL = ['piscina', 'esbuild', 'tsx', 'fast-check', 'echarts'];

/** What the build may read: src/ without tests (test helpers in src/testing/ too: the bundle has what imports them). */
const built = (rel) => !rel.endsWith('.test.ts');

/** The sources, in a fixed order (paths relative to the root), and the newest mtime among them and their directories. */
function scanSources(root) {
  const files = [];
  let newest = 0;
  let newestPath = '';
  const note = (rel, ms) => {
    if (ms > newest) [newest, newestPath] = [ms, rel];
  };
  const walk = (rel) => {
    note(rel, statSync(join(root, rel)).mtimeMs);
    for (const e of readdirSync(join(root, rel), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = `${rel}/${e.name}`;
      if (!built(p)) continue;
      if (e.isDirectory()) walk(p);
      else {
        files.push(p);
        note(p, statSync(join(root, p)).mtimeMs);
      }
    }
  };
  walk('src');
  for (const f of INPUTS)
    if (existsSync(join(root, f))) {
      files.push(f);
      note(f, statSync(join(root, f)).mtimeMs);
    }
  return { files, newest, newestPath };
}

function digestOf(root, files) {
  const h = createHash('sha256');
  for (const f of files)
    h.update(`${f}\0`)
      .update(readFileSync(join(root, f)))
      .update('\0');
  return h.digest('hex');
}

/**
 * Whether dist/ runs the sources as they are: 'current'; 'missing' (never
 * built); or 'stale', with `changed`, the newest input (what to name in a
 * note). Outside a git checkout (an installed package) dist/ is current
 * when it is there.
 */
export function distState(root = ROOT) {
  let stamp;
  try {
    stamp = JSON.parse(readFileSync(join(root, 'dist', STAMP), 'utf8'));
  } catch {
    return { state: 'missing' };
  }
  if (!existsSync(join(root, '.git'))) return { state: 'current' };
  const s = scanSources(root);
  const settled = stamp.newest < stamp.read - RACY_MS;
  if (settled && s.newest <= stamp.newest && s.files.length === stamp.files) return { state: 'current' };
  if (digestOf(root, s.files) === stamp.digest) return { state: 'current' };
  return { state: 'stale', changed: s.newestPath };
}

/** Bundle src/ into dist/ (replacing it). Returns esbuild's errors, none if it built. */
export async function build(root = ROOT) {
  // Record the inputs before reading them: one edited during the build makes dist/ stale, not silently current.
  const read = Date.now();
  const s = scanSources(root);
  const digest = digestOf(root, s.files);
  const out = join(root, `dist.new-${process.pid}`);
  rmSync(out, { recursive: true, force: true });
  const { build: esbuild } = await import('esbuild');
  try {
    await esbuild({
      absWorkingDir: root,
      entryPoints: ENTRIES,
      outbase: 'src',
      outdir: out,
      entryNames: '[dir]/[name]',
      chunkNames: 'chunks/[name]-[hash]',
      bundle: true,
      splitting: true,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      external: EXTERNAL,
      // Inlined CommonJS dependencies (commander, cli-progress) call require for Node's modules.
      banner: {
        js: "import { createRequire as __memtwinCreateRequire } from 'node:module';\nconst require = __memtwinCreateRequire(import.meta.url);",
      },
      logLevel: 'silent',
    });
  } catch (e) {
    rmSync(out, { recursive: true, force: true });
    return e.errors ?? [{ text: String(e) }];
  }
  writeFileSync(join(out, STAMP), JSON.stringify({ newest: s.newest, read, files: s.files.length, digest }) + '\n');
  rmSync(join(root, 'dist'), { recursive: true, force: true });
  renameSync(out, join(root, 'dist'));
  return [];
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const t = performance.now();
  const errors = await build();
  for (const e of errors)
    console.error(`memtwin: build: ${e.location ? `${e.location.file}:${e.location.line}:${e.location.column}: ` : ''}${e.text}`);
  if (errors.length) process.exit(1);
  console.error(`memtwin: built ${relative(process.cwd(), DIST) || '.'} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
}
