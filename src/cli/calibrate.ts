/**
 * `memtwin calibrate`: measure this host's costs with native/calibrate.c
 * and write a cost profile the simulator can use (--profile).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { fromRoot } from '../util/paths.ts';
import { profileFromCalibration, type CostProfileData } from '../sim/cost_profile.ts';
import { fmtNs } from './format.ts';

export const CALIBRATE_BIN = fromRoot('native', 'build', 'memtwin-calibrate');

export class CalibrateError extends Error {}

export function calibrate(): CostProfileData {
  if (!existsSync(CALIBRATE_BIN)) {
    const r = spawnSync('make', ['-s', '-C', fromRoot('native')], { stdio: 'inherit' });
    if (r.status !== 0 || !existsSync(CALIBRATE_BIN))
      throw new CalibrateError('cannot build native/build/memtwin-calibrate (needs gcc and make)');
  }
  if (typeof process.getuid === 'function' && process.getuid() !== 0)
    throw new CalibrateError('calibrate needs root (hugetlb pools, THP knobs, /proc/sys/vm/compact_memory)');
  console.error('memtwin calibrate: measuring this host (about 2 minutes)...');
  const r = spawnSync(CALIBRATE_BIN, [], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 16 << 20 });
  if (r.status !== 0) throw new CalibrateError(`the calibrator failed (status ${r.status ?? r.signal})`);
  const raw = JSON.parse(r.stdout) as Parameters<typeof profileFromCalibration>[0];
  const date = new Date().toISOString().slice(0, 10);
  return profileFromCalibration(raw, date, `memtwin calibrate on ${hostname()} (native/calibrate.c; methods in native/calibrate.md)`);
}

export function writeProfile(p: CostProfileData, out: string): string {
  writeFileSync(out, JSON.stringify(p, null, 2) + '\n');
  const rows = Object.entries(p.costs).map(([k, c]) => `  ${k.padEnd(32)} ${fmtNs(Math.round(c.median)).padStart(10)}  ${c.unit}`);
  return `${rows.join('\n')}\nwrote ${out} (${Object.keys(p.costs).length} costs, ${p.machine.cpu_model}, ${p.machine.kernel}, ${p.date})`;
}
