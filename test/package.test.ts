/**
 * The npm package stands on its own: what `npm pack` puts in the tarball is
 * what an installed memtwin needs to run its shipped scenarios (compiled:
 * dist/, which `npm pack` builds through the prepare script), build its
 * native executor and read its documentation (nothing points outside it).
 */
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fromRoot } from '../src/util/paths.ts';

interface PackEntry {
  path: string;
}

describe('npm pack', () => {
  const packed = JSON.parse(
    execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: fromRoot(), encoding: 'utf8' }),
  ) as {
    files: PackEntry[];
  }[];
  const files = new Set(packed[0]!.files.map((f) => f.path));

  it('holds every shipped scenario, host, profile and document', () => {
    for (const dir of ['scenarios', 'hosts', 'profiles', 'docs'])
      for (const f of readdirSync(fromRoot(dir))) expect(files, `${dir}/${f}`).toContain(`${dir}/${f}`);
    for (const f of ['README.md', 'ARCHITECTURE.md', 'bin/memtwin.js', 'src/cli/main.ts', 'src/scenario/worker-entry.mjs'])
      expect(files, f).toContain(f);
  });

  it('holds the compiled command line and worker, built by the prepare script (npm pack runs it)', () => {
    const pkg = JSON.parse(readFileSync(fromRoot('package.json'), 'utf8')) as { scripts: Record<string, string> };
    expect(pkg.scripts['prepare']).toBe('node bin/build.mjs');
    for (const f of ['bin/build.mjs', 'dist/SOURCES', 'dist/cli/main.js', 'dist/scenario/worker.js']) expect(files, f).toContain(f);
    // Every output two directories below the package root, as its sources are (src/validate/real.ts finds the root so).
    expect([...files].filter((f) => f.startsWith('dist/') && f.endsWith('.js') && f.split('/').length !== 3)).toEqual([]);
    // Every module the bundles import is in the tarball too.
    const chunks = [...files].filter((f) => f.startsWith('dist/chunks/'));
    expect(chunks.length).toBeGreaterThan(0);
    for (const f of [...files].filter((f) => f.startsWith('dist/') && f.endsWith('.js')))
      for (const m of readFileSync(fromRoot(f), 'utf8').matchAll(/(?:from|import\(?)\s*"(\.{1,2}\/[^"]+)"/g))
        expect(files, `${f} imports ${m[1]}`).toContain(join(dirname(f), m[1]!));
  });

  it('holds the native executor sources and builds them on install', () => {
    for (const f of readdirSync(fromRoot('native')).filter((f) => /\.(c|h)$/.test(f) || f === 'Makefile'))
      expect(files, `native/${f}`).toContain(`native/${f}`);
    const pkg = JSON.parse(readFileSync(fromRoot('package.json'), 'utf8')) as { scripts: Record<string, string> };
    // A tarball install runs install scripts, not prepare.
    expect(pkg.scripts['postinstall']).toMatch(/^make -s -C native \|\| echo /);
  });

  it('leaves the tests and unfinished builds out', () => {
    expect([...files].filter((f) => f.endsWith('.test.ts') || f.startsWith('dist.new-'))).toEqual([]);
  });
});
