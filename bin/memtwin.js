#!/usr/bin/env node
// memtwin command-line entry. Runs the compiled JavaScript in dist/ (bin/build.mjs) when it was built from the
// sources as they are; otherwise the TypeScript sources through tsx, which compiles them as they load (seconds),
// so a developer who edited src/ never runs stale code. On a terminal that fallback says so in one line.
import { distState } from './build.mjs';

const dist = distState();
if (dist.state === 'current') await import('../dist/cli/main.js');
else {
  if (process.stderr.isTTY)
    process.stderr.write(
      dist.state === 'stale'
        ? `memtwin: ${dist.changed} is newer than dist/; running the sources through tsx (slower start; npm run build compiles them)\n`
        : `memtwin: dist/ is not built; running the sources through tsx (slower start; npm run build compiles them)\n`,
    );
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/cli/main.ts');
}
