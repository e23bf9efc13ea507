/**
 * `memtwin view [DIR...]`: a local web server over result directories.
 *
 * It finds every run (a directory with a run's result.json) and every sweep
 * (a result.json listing `runs`) under the directories given, and serves:
 * the pages (plain ES modules in src/view/pages/, no build step), ECharts'
 * browser build from node_modules, src/report/units.ts transpiled for the
 * browser (the same units the static report prints), and a small JSON API
 * over the results. Nothing comes from the network.
 *
 * Files are served only through the index of runs it found (an id, never a
 * path from the request), so a request cannot read anything else. It
 * listens on 127.0.0.1 unless told otherwise.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { isIP } from 'node:net';
import { transformSync } from 'esbuild';
import { fromRoot } from '../util/paths.ts';

// From the package root, not this module: bundled (dist/), the module is elsewhere; the pages and units.ts are not bundled.
const PAGES_DIR = fromRoot('src', 'view', 'pages');
/** Directory levels searched below each DIR for result.json files (a sweep's runs are at DIR/runs/ID). */
const MAX_DEPTH = 6;

/** The pages: path -> the module that draws it (src/view/pages/NAME.js) and its title. */
export const PAGES: Record<string, { module: string; title: string }> = {
  '/': { module: 'runs.js', title: 'Runs' },
  '/run': { module: 'run.js', title: 'Run' },
  '/compare': { module: 'compare.js', title: 'Compare runs' },
  '/phys': { module: 'phys.js', title: 'Physical memory' },
  '/space': { module: 'space.js', title: 'Address spaces' },
  '/migration': { module: 'migration.js', title: 'Migration timeline' },
};

export interface RunEntry {
  id: string;
  dir: string;
  scenario: string;
  /** The run's id in its sweep ("base" alone). */
  run: string;
  params: Record<string, unknown>;
  seed: number;
  duration_ns: number;
  host: string;
  summary: string[];
  final: Record<string, number>;
  /** The sweep it belongs to, if any. */
  sweep?: string;
  snapshots: boolean;
  warnings: number;
}

export interface SweepEntry {
  id: string;
  dir: string;
  scenario: string;
  swept: { label: string; values: unknown[] }[];
  runs: string[];
}

export interface Index {
  roots: string[];
  runs: RunEntry[];
  sweeps: SweepEntry[];
}

interface Cached {
  mtimeMs: number;
  json: Record<string, unknown> | null;
}

/** Finds runs and sweeps under the roots; result.json files are parsed again only when they change. */
export class ResultIndex {
  private readonly cache = new Map<string, Cached>();
  private index: Index = { roots: [], runs: [], sweeps: [] };
  constructor(readonly roots: string[]) {}

  private readJson(file: string): Record<string, unknown> | null {
    let mtimeMs: number;
    try {
      mtimeMs = statSync(file).mtimeMs;
    } catch {
      return null;
    }
    const c = this.cache.get(file);
    if (c && c.mtimeMs === mtimeMs) return c.json;
    let json: Record<string, unknown> | null = null;
    try {
      const v: unknown = JSON.parse(readFileSync(file, 'utf8'));
      if (v && typeof v === 'object' && !Array.isArray(v)) json = v as Record<string, unknown>;
    } catch {
      json = null; // being written, or not memtwin's: left out
    }
    this.cache.set(file, { mtimeMs, json });
    return json;
  }

  /** Look again (runs finish while the server runs). */
  refresh(): Index {
    const runs: RunEntry[] = [];
    const sweeps: SweepEntry[] = [];
    const found: { root: number; dir: string }[] = [];
    const walk = (root: number, dir: string, depth: number): void => {
      if (existsSync(join(dir, 'result.json'))) found.push({ root, dir });
      if (depth >= MAX_DEPTH) return;
      let names: string[];
      try {
        names = readdirSync(dir, { withFileTypes: true })
          .filter((d) => d.isDirectory() && !d.name.startsWith('.') && d.name !== 'node_modules')
          .map((d) => d.name)
          .sort();
      } catch {
        return;
      }
      for (const n of names) walk(root, join(dir, n), depth + 1);
    };
    this.roots.forEach((r, i) => walk(i, r, 0));
    const idOf = (root: number, dir: string): string => {
      const rel = relative(this.roots[root]!, dir).split('\\').join('/');
      return `${root}:${rel || '.'}`;
    };
    const sweepOfDir = new Map<string, string>();
    for (const { root, dir } of found) {
      const j = this.readJson(join(dir, 'result.json'));
      if (!j || !Array.isArray(j['runs']) || !Array.isArray(j['swept'])) continue;
      const id = idOf(root, dir);
      const scen = j['scenario'] as { name?: string } | undefined;
      const list = j['runs'] as { dir?: string }[];
      const runIds = list.map((r) => idOf(root, resolve(dir, String(r.dir ?? ''))));
      for (const r of list) sweepOfDir.set(resolve(dir, String(r.dir ?? '')), id);
      sweeps.push({
        id,
        dir,
        scenario: scen?.name ?? '?',
        swept: (j['swept'] as { label: string; values: unknown[] }[]).map((s) => ({ label: s.label, values: s.values })),
        runs: runIds,
      });
    }
    for (const { root, dir } of found) {
      const j = this.readJson(join(dir, 'result.json'));
      if (!j || !j['series'] || !j['run']) continue;
      const run = j['run'] as { id: string; params: Record<string, unknown> };
      const scen = j['scenario'] as { name: string; summary?: string[] };
      const sweep = sweepOfDir.get(resolve(dir));
      runs.push({
        id: idOf(root, dir),
        dir,
        scenario: scen.name,
        run: run.id,
        params: run.params,
        seed: j['seed'] as number,
        duration_ns: j['duration_ns'] as number,
        host: (j['host'] as { name: string }).name,
        summary: scen.summary ?? [],
        final: j['final'] as Record<string, number>,
        ...(sweep ? { sweep } : {}),
        snapshots: existsSync(join(dir, 'snapshots.json')),
        warnings: Array.isArray(j['warnings']) ? j['warnings'].length : 0,
      });
    }
    const known = new Set(runs.map((r) => r.id));
    for (const s of sweeps) s.runs = s.runs.filter((r) => known.has(r));
    this.index = { roots: this.roots, runs, sweeps };
    return this.index;
  }

  run(id: string): RunEntry | undefined {
    return this.index.runs.find((r) => r.id === id) ?? this.refresh().runs.find((r) => r.id === id);
  }
}

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.html': 'text/html; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
};

function send(res: ServerResponse, status: number, type: string, body: string | Buffer): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
  res.end(body);
}

const notFound = (res: ServerResponse, what: string): void => send(res, 404, TYPES['.json']!, JSON.stringify({ error: what }));

/** The HTML shell of a page: its module draws everything. */
export function pageHtml(path: string): string {
  const p = PAGES[path]!;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${p.title} · memtwin view</title>
<link rel="stylesheet" href="/static/view.css">
<link rel="icon" href="data:,">
</head>
<body>
<nav id="nav"></nav>
<main id="main"><p class="loading">Loading…</p></main>
<script type="module" src="/static/${p.module}"></script>
</body>
</html>
`;
}

let echartsPath: string | undefined;
/** ECharts' browser build (an ES module), from the installed package. */
function echartsFile(): string {
  if (!echartsPath) {
    const req = createRequire(import.meta.url);
    echartsPath = join(dirname(req.resolve('echarts/package.json')), 'dist', 'echarts.esm.min.mjs');
  }
  return echartsPath;
}

let unitsJs: string | undefined;
/** src/report/units.ts for the browser: the units of the static report, stripped of types. */
function unitsModule(): string {
  if (unitsJs === undefined) {
    const base = fromRoot('src', 'report', 'units');
    const js = `${base}.js`;
    unitsJs = existsSync(js)
      ? readFileSync(js, 'utf8')
      : transformSync(readFileSync(`${base}.ts`, 'utf8'), { loader: 'ts', format: 'esm' }).code;
  }
  return unitsJs;
}

export function handle(index: ResultIndex, req: IncomingMessage, res: ServerResponse): void {
  if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain', 'GET only\n');
  const url = new URL(req.url ?? '/', 'http://view.invalid');
  const path = url.pathname;
  if (PAGES[path]) return send(res, 200, TYPES['.html']!, pageHtml(path));
  if (path === '/api/index') return send(res, 200, TYPES['.json']!, JSON.stringify(index.refresh()));
  if (path === '/api/result' || path === '/api/snapshots') {
    const run = index.run(url.searchParams.get('id') ?? '');
    if (!run) return notFound(res, `no run ${JSON.stringify(url.searchParams.get('id'))}`);
    const file = join(run.dir, path === '/api/result' ? 'result.json' : 'snapshots.json');
    if (!existsSync(file)) return notFound(res, `${relative(process.cwd(), file)}: not recorded`);
    return send(res, 200, TYPES['.json']!, readFileSync(file));
  }
  if (path === '/vendor/echarts.js') return send(res, 200, TYPES['.js']!, readFileSync(echartsFile()));
  if (path === '/static/units.js') return send(res, 200, TYPES['.js']!, unitsModule());
  const m = /^\/static\/([a-z_]+\.(js|css))$/.exec(path);
  if (m) {
    const file = join(PAGES_DIR, m[1]!);
    if (existsSync(file)) return send(res, 200, TYPES[`.${m[2]}`]!, readFileSync(file));
  }
  return notFound(res, `no page ${path}`);
}

/** Is `host` a loopback address or name (127.0.0.0/8, ::1, localhost)? */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || /^::ffff:127\./.test(h);
  return false;
}

export interface ViewOptions {
  dirs: string[];
  host: string;
  port: number;
}

/** Start serving; resolves with the server and its URL once it listens. */
export function startView(o: ViewOptions): Promise<{ server: Server; url: string; index: ResultIndex }> {
  const index = new ResultIndex(o.dirs.map((d) => resolve(d)));
  index.refresh();
  const server = createServer((req, res) => {
    try {
      handle(index, req, res);
    } catch (e) {
      send(res, 500, 'text/plain', `memtwin view: ${(e as Error).message}\n`);
    }
  });
  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(o.port, o.host, () => {
      server.off('error', fail);
      const a = server.address();
      const port = a && typeof a === 'object' ? a.port : o.port;
      const host = isIP(o.host) === 6 ? `[${o.host}]` : o.host;
      ok({ server, url: `http://${host}:${port}/`, index });
    });
  });
}
