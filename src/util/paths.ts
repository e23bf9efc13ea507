/**
 * Where memtwin's own files are. Found by walking up from this module to the
 * package.json named memtwin, so it works from the sources and from a
 * bundle (sweep workers run a bundle built under node_modules/.cache).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'memtwin') return dir;
      } catch {
        /* not ours */
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find memtwin package root');
    dir = up;
  }
}

export const PACKAGE_ROOT = findRoot();
export const fromRoot = (...parts: string[]): string => join(PACKAGE_ROOT, ...parts);
