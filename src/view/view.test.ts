/**
 * `memtwin view`: the server (its index, what it refuses) and, with
 * chromium, every page in a real browser (playwright-core driving Debian's
 * /usr/bin/chromium, nothing downloaded): no console errors, charts that
 * render, zoom and the time cursor shared by the charts, the comparison,
 * and maps that show what two small scenarios must show. Screenshots of
 * each page go to test-results/view/ for a person to look at.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:net';
import { spawn, spawnSync } from 'node:child_process';
import { request, type Server } from 'node:http';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { runScenarioFile } from '../scenario/sweep.ts';
import { renderRunReport, renderSweepReport } from '../report/report.ts';
import type { RunSnapshots } from '../scenario/snapshots.ts';
import { CHROMIUM } from '../testing/chromium.ts';
import { isLoopback, startView } from './server.ts';

// Debian's chromium (scripts/install-chromium.sh), or MEMTWIN_CHROMIUM.
const BROWSER = process.env['MEMTWIN_CHROMIUM'] ?? CHROMIUM;
const SHOTS = fileURLToPath(new URL('../../test-results/view/', import.meta.url));
const scenario = (name: string): string => fileURLToPath(new URL(`../../test/view/${name}`, import.meta.url));
const report = { run: renderRunReport, sweep: renderSweepReport };

let dir: string;
let server: Server;
let base: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'memtwin-view-'));
  await runScenarioFile(scenario('thp-small.yaml'), join(dir, 'thp'), 1, report);
  await runScenarioFile(scenario('postcopy-small.yaml'), join(dir, 'postcopy'), 2, report, {}, { snapshots: true });
  const v = await startView({ dirs: [dir], host: '127.0.0.1', port: 0 });
  server = v.server;
  base = v.url.replace(/\/$/, '');
}, 300_000);

afterAll(() => {
  server?.closeAllConnections();
  server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const get = (path: string): Promise<{ status: number; body: string }> =>
  new Promise((ok, fail) => {
    // http.request keeps the path as written (fetch would resolve "..").
    const req = request(`${base}/`, { path }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => ok({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', fail);
    req.end();
  });

const ids = {
  thp: '0:thp',
  k4: '0:postcopy/runs/000-pages=4K',
  g1: '0:postcopy/runs/001-pages=1G',
};
const q = (id: string): string => `?id=${encodeURIComponent(id)}`;
const snapshotsOf = (sub: string): RunSnapshots => JSON.parse(readFileSync(join(dir, sub, 'snapshots.json'), 'utf8')) as RunSnapshots;

describe('the view server', () => {
  it('knows loopback addresses', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost']) expect(isLoopback(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', '192.168.1.2', 'example.org']) expect(isLoopback(h), h).toBe(false);
  });

  it('finds the runs and the sweep under its directory', async () => {
    const ix = JSON.parse((await get('/api/index')).body) as {
      runs: { id: string; sweep?: string; snapshots: boolean }[];
      sweeps: { runs: string[] }[];
    };
    expect(ix.runs.map((r) => r.id).sort()).toEqual([ids.k4, ids.g1, ids.thp].sort());
    expect(ix.sweeps).toHaveLength(1);
    expect(ix.sweeps[0]!.runs).toEqual([ids.k4, ids.g1]);
    expect(ix.runs.every((r) => r.snapshots)).toBe(true);
  });

  it("records each migration's progress at the run's samples, counters that only grow", () => {
    for (const sub of ['postcopy/runs/000-pages=4K', 'postcopy/runs/001-pages=1G']) {
      const r = JSON.parse(readFileSync(join(dir, sub, 'result.json'), 'utf8')) as { series: { t_ns: number[] } };
      const mig = snapshotsOf(sub).migrations[0]!;
      const p = mig.progress;
      expect(p.t_ns.length, sub).toBeGreaterThan(2);
      // at the samples (no timer of its own: an event of its own would move where faulting loops charge their time)
      for (const t of p.t_ns) expect(r.series.t_ns, sub).toContain(t);
      for (const key of ['ram_bytes', 'postcopy_bytes', 'postcopy_requests'] as const)
        p[key].forEach((v, i) => i && expect(v, `${sub} ${key}`).toBeGreaterThanOrEqual(p[key][i - 1]!));
      expect(p.postcopy_bytes.at(-1), sub).toBe(mig.postcopy!.bytes);
      // no postcopy-preempt in this scenario: nothing on a preempt channel
      expect(p.preempt_bytes, sub).toEqual(p.t_ns.map(() => 0));
      expect(p.postcopy_requests.at(-1), sub).toBe(mig.postcopy!.requests);
    }
  });

  it('serves results only through its index, and nothing outside its pages', async () => {
    expect((await get(`/api/result${q(ids.thp)}`)).status).toBe(200);
    expect((await get(`/api/result${q('0:../../etc')}`)).status).toBe(404);
    expect((await get('/static/../server.ts')).status).toBe(404);
    expect((await get('/static/server.ts')).status).toBe(404);
    expect((await get('/static/common.js')).status).toBe(200);
    expect((await get('/vendor/echarts.js')).body.length).toBeGreaterThan(100_000);
    expect((await get('/static/units.js')).body).toContain('export');
  });

  // Any address of this machine that is not loopback: the server, on 127.0.0.1, must not answer there.
  const outside = Object.values(networkInterfaces())
    .flat()
    .find((a) => a && !a.internal && a.family === 'IPv4')?.address;
  it.skipIf(!outside)(`refuses connections on a non-loopback address of this machine (${outside ?? 'none here'})`, async () => {
    const port = (server.address() as { port: number }).port;
    const err = await new Promise<NodeJS.ErrnoException | null>((ok) => {
      const s = connect({ host: outside!, port });
      s.once('connect', () => {
        s.destroy();
        ok(null);
      });
      s.once('error', (e) => ok(e));
    });
    expect(err?.code).toBe('ECONNREFUSED');
    // and it does answer on loopback, at the same port
    expect((await get('/')).status).toBe(200);
  });
});

if (!BROWSER || !existsSync(BROWSER))
  console.warn('view.test: chromium not found (run scripts/install-chromium.sh): skipping the browser tests');
describe('memtwin view, the command', () => {
  const bin = fileURLToPath(new URL('../../bin/memtwin.js', import.meta.url));

  it('warns when told to listen beyond loopback, prints the URL, and ends quietly with 130 on SIGINT', async () => {
    const child = spawn(process.execPath, [bin, 'view', dir, '--host', '0.0.0.0', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (err += c));
    const exited = new Promise<number | null>((ok) => child.on('exit', (code) => ok(code)));
    // Wait for the URL, then interrupt it as Ctrl-C would.
    for (let i = 0; i < 600 && !/http:\/\/0\.0\.0\.0:\d+\//.test(out); i++) await new Promise((r) => setTimeout(r, 100));
    expect(out).toMatch(/^memtwin view: 3 runs, 1 sweeps under /);
    expect(err).toContain('memtwin: warning: --host 0.0.0.0 is not a loopback address');
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(err).not.toMatch(/Error|at .*\.ts:/);
  }, 120_000);

  it('refuses a directory that is not there and a port out of range, exit status 2', () => {
    const a = spawnSync(process.execPath, [bin, 'view', join(dir, 'nothing-here')], { encoding: 'utf8' });
    expect([a.status, a.stderr.trim()]).toEqual([
      2,
      `memtwin: ${join(dir, 'nothing-here')}: expected a directory of results (memtwin run --out DIR)`,
    ]);
    const b = spawnSync(process.execPath, [bin, 'view', dir, '--port', '70000'], { encoding: 'utf8' });
    expect([b.status, b.stderr.trim()]).toEqual([2, 'memtwin: --port: expected a port number 0 to 65535, got "70000"']);
  });
});

describe.skipIf(!BROWSER || !existsSync(BROWSER))(`memtwin view in chromium (${BROWSER ?? 'not found'})`, () => {
  let browser: Browser;
  beforeAll(async () => {
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: BROWSER!, args: ['--no-sandbox'] });
    mkdirSync(SHOTS, { recursive: true });
  });
  afterAll(async () => {
    await browser?.close();
  });

  /** Open a page, wait until it has drawn, and keep its console errors. */
  async function open(path: string): Promise<{ page: Page; errors: string[] }> {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errors: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(base + path, { waitUntil: 'networkidle' });
    await page.waitForFunction("!document.querySelector('.loading')");
    return { page, errors };
  }

  const shot = (page: Page, name: string): Promise<Buffer> => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

  const pages: [string, string][] = [
    ['runs', '/'],
    ['run-thp', `/run${q(ids.thp)}`],
    ['run-postcopy-1G', `/run${q(ids.g1)}`],
    ['compare-4K-1G', `/compare?id=${encodeURIComponent(ids.k4)}&id=${encodeURIComponent(ids.g1)}`],
    ['phys-thp', `/phys${q(ids.thp)}`],
    ['space-thp', `/space${q(ids.thp)}`],
    ['phys-postcopy-1G', `/phys${q(ids.g1)}`],
    ['space-postcopy-1G', `/space${q(ids.g1)}&t=700000000`],
    ['migration-1G', `/migration${q(ids.g1)}`],
    ['migration-4K', `/migration${q(ids.k4)}`],
  ];
  for (const [name, path] of pages)
    it(`${name} (${path}) loads without console errors`, async () => {
      const { page, errors } = await open(path);
      await shot(page, name);
      expect(await page.locator('.callout', { hasText: 'Cannot show this page' }).count()).toBe(0);
      expect(errors).toEqual([]);
      await page.close();
    });

  it('draws every series of a run, zooms all its charts together, and moves the time cursor on a click', async () => {
    const { page } = await open(`/run${q(ids.thp)}`);
    const n = await page.evaluate(() => (globalThis as unknown as { __charts: unknown[] }).__charts.length);
    const series = Object.keys(
      (JSON.parse(readFileSync(join(dir, 'thp', 'result.json'), 'utf8')) as { series: { metrics: object } }).series.metrics,
    );
    expect(n).toBeGreaterThan(5);
    // Every series is on some chart (a chart's legend names its series).
    const drawn = await page.evaluate(() =>
      (globalThis as unknown as { __charts: { getOption(): { series: { name: string }[] } }[] }).__charts.flatMap((c) =>
        c.getOption().series.map((s) => s.name),
      ),
    );
    expect(new Set(drawn)).toEqual(new Set(series));
    // Zoom one chart: the others follow (one ECharts group).
    const zoom = await page.evaluate(() => {
      type C = { dispatchAction(a: object): void; getOption(): { dataZoom: { start: number; end: number }[] } };
      const cs = (globalThis as unknown as { __charts: C[] }).__charts;
      cs[0]!.dispatchAction({ type: 'dataZoom', start: 20, end: 60 });
      return cs.map((c) => [c.getOption().dataZoom[0]!.start, c.getOption().dataZoom[0]!.end]);
    });
    for (const [s, e] of zoom) expect([Math.round(s!), Math.round(e!)]).toEqual([20, 60]);
    // Click in the middle of the first chart's plot: the cursor moves, the URL keeps it, every chart draws it.
    expect(await page.getByTestId('cursor-time').textContent()).toBe('click a chart');
    const box = (await page.locator('.chart').first().boundingBox())!;
    await page.mouse.click(box.x + box.width / 2, box.y + box.height / 2);
    const label = await page.getByTestId('cursor-time').textContent();
    expect(label).toMatch(/ms$/);
    expect(new URL(page.url()).searchParams.get('t')).toMatch(/^\d+$/);
    const lines = await page.evaluate(() =>
      (globalThis as unknown as { __charts: { getOption(): { series: { markLine?: { data: { name: string }[] } }[] } }[] }).__charts.map(
        (c) => c.getOption().series[0]?.markLine?.data.some((d) => d.name === 'cursor') ?? false,
      ),
    );
    expect(lines.every(Boolean)).toBe(true);
    await shot(page, 'run-thp-zoomed-cursor');
    await page.close();
  });

  it('compares runs picked on the Runs page, side by side, the longer stall marked', async () => {
    const { page } = await open('/');
    await page.locator(`input[data-run="${ids.k4}"]`).check();
    await page.locator(`input[data-run="${ids.g1}"]`).check();
    await page.locator('#compare').click();
    await page.waitForURL(/\/compare\?/);
    await page.waitForFunction("!document.querySelector('.loading')");
    const rows = page.locator('tr[data-compare-run]');
    expect(await rows.count()).toBe(2);
    const g1 = snapshotsOf('postcopy/runs/001-pages=1G').migrations[0]!.postcopy!.longest[0]!;
    const k4 = snapshotsOf('postcopy/runs/000-pages=4K').migrations[0]!.postcopy!.longest[0]!;
    expect(g1.ns).toBeGreaterThan(k4.ns);
    const hot = page.locator('tr.hot[data-compare-run]');
    expect(await hot.getAttribute('data-compare-run')).toBe(ids.g1);
    expect(await hot.getByTestId('longest-stall').textContent()).toBe(`${Math.round(g1.ns / 1e6)} ms`);
    await shot(page, 'compare-from-runs-page');
    await page.close();
  });

  it("the address-space map shows the small scenario's heap as 2M THPs on node 0 at its address", async () => {
    const heap = snapshotsOf('thp')
      .spaces.at(-1)![0]!
      .vmas.find((v) => v.name === 'heap')!;
    const addr = `0x${heap.start.toString(16)}`;
    const { page } = await open(`/space${q(ids.thp)}`);
    const row = page.locator(`div[data-vma="${addr}"] tr[data-start="${addr}"]`);
    expect(await row.getAttribute('data-size')).toBe('2M');
    expect(await row.getAttribute('data-node')).toBe('0');
    expect(await row.locator('td').nth(4).textContent()).toBe('1024 / 1024');
    await page.close();
  });

  it('the physical map counts the two THPs, and hugetlb 1G pages in the 1G run', async () => {
    const { page } = await open(`/phys${q(ids.thp)}`);
    expect(await page.locator('td[data-field="THPs"]').textContent()).toBe('2 (4 MiB)');
    const kinds = JSON.parse((await page.getByTestId('phys-map').getAttribute('data-kinds'))!) as Record<string, number>;
    expect(kinds['thp']).toBe(2);
    await page.close();
    const g = await open(`/phys${q(ids.g1)}`);
    expect(await g.page.locator('td[data-field="hugetlb 1G"]').textContent()).toMatch(/^2 pages/);
    const k1 = JSON.parse((await g.page.getByTestId('phys-map').getAttribute('data-kinds'))!) as Record<string, number>;
    expect(k1['hugetlb']).toBe(1024); // two 1 GiB pages in use at the end (source and destination): 1024 pageblocks
    await g.page.close();
  });

  it('the migration timeline puts the longest vCPU stall first and the sweep’s other run beside it', async () => {
    const pc = snapshotsOf('postcopy/runs/001-pages=1G').migrations[0]!.postcopy!;
    const { page } = await open(`/migration${q(ids.g1)}`);
    const callout = await page.getByTestId('longest-stall').textContent();
    expect(callout).toContain(`vCPU ${pc.longest[0]!.vcpu} waited ${Math.round(pc.longest[0]!.ns / 1e6)} ms`);
    expect(await page.locator('tr.hot[data-fault="0"]').count()).toBe(1);
    expect(await page.getByTestId('siblings').locator('tbody tr').count()).toBe(2);
    expect(await page.getByTestId('content-check').textContent()).toContain("every page arrived with the source's content");
    await page.close();
  });
});
