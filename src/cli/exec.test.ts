/**
 * `memtwin exec` at its edges, as a user meets them: bad input named by
 * file and line with exit 2, a closed stdout (`| head -1`) and SIGINT
 * ending the run quietly with the usual statuses, never a stack trace.
 */
import { describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';

const bin = fileURLToPath(new URL('../../bin/memtwin.js', import.meta.url));
const dir = mkdtempSync(`${tmpdir()}/memtwin-exec-`);
const file = (name: string, text: string): string => {
  writeFileSync(`${dir}/${name}`, text);
  return `${dir}/${name}`;
};
const STACK = /\n\s+at /;

/** A script that runs for minutes on the simulator: 64 MiB touched 3000 times. */
const long = file(
  'long.jsonl',
  [
    '{"op":"mmap","len":"64M","prot":["PROT_READ","PROT_WRITE"],"flags":["MAP_PRIVATE","MAP_ANONYMOUS"],"name":"a"}',
    ...Array.from({ length: 3000 }, (_, j) => `{"op":"touch","addr":"$a","len":"64M","write":true,"fill":${j % 256}}`),
  ].join('\n'),
);

/** Start `memtwin exec long.jsonl`; resolves with the child once its first result line is out. */
function startLong(): Promise<{ child: ReturnType<typeof spawn>; stderr: () => string }> {
  const child = spawn(process.execPath, [bin, 'exec', long], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((res) => child.stdout!.once('data', () => res({ child, stderr: () => err })));
}

const exited = (child: ReturnType<typeof spawn>): Promise<{ code: number | null; signal: NodeJS.Signals | null }> =>
  new Promise((res) => child.once('exit', (code, signal) => res({ code, signal })));

describe('memtwin exec: bad input', () => {
  it('names the file and line (comments and blank lines counted) on stderr, and the line in the result', () => {
    const s = file('bad.jsonl', '# a comment\n\n{"op":"meminfo"}\n{"op":"touch","addr":"$a","len":"4K","stride":0}\n');
    const r = spawnSync(process.execPath, [bin, 'exec', s], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stdout).toContain('{"i":1,"op":"touch","line":4,"invalid":"stride: expected a size from 1 to 2^52');
    expect(r.stderr).toBe(`memtwin: ${s}:4: stride: expected a size from 1 to 2^52 (a number, or a string like "4K", "2M", "1G"), got 0\n`);
  });

  it('answers prototype op names and deep nesting with exit 2, not a stack trace', () => {
    for (const [name, text] of [
      ['proto.jsonl', '{"op":"constructor"}\n'],
      ['deep.jsonl', `{"op":"mmap","len":${'['.repeat(10_000)}${']'.repeat(10_000)},"prot":[],"flags":[]}\n`],
    ]) {
      const r = spawnSync(process.execPath, [bin, 'exec', file(name!, text!)], { encoding: 'utf8' });
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(new RegExp(`^memtwin: .*${name}:1: `));
      expect(r.stderr).not.toMatch(STACK);
    }
  });
});

describe('memtwin exec: the end of a run', () => {
  it('stops quietly with status 141 when the reader of stdout goes away (| head -1)', async () => {
    const { child, stderr } = await startLong();
    child.stdout!.destroy();
    const { code, signal } = await exited(child);
    expect({ code, signal }).toEqual({ code: 141, signal: null });
    expect(stderr()).not.toMatch(STACK);
    expect(stderr()).toBe('');
  }, 60_000);

  it('ends at once on SIGINT, quietly (status 130 in a shell)', async () => {
    const { child, stderr } = await startLong();
    child.kill('SIGINT');
    const { code, signal } = await exited(child);
    expect(signal === 'SIGINT' || code === 130).toBe(true);
    expect(stderr()).toBe('');
  }, 60_000);
});
