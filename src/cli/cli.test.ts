/** The command line as a user meets it: exit codes and one-line errors, never a stack trace. */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';

const bin = fileURLToPath(new URL('../../bin/memtwin.js', import.meta.url));
const dir = mkdtempSync(`${tmpdir()}/memtwin-cli-`);
const file = (name: string, text: string): string => {
  writeFileSync(`${dir}/${name}`, text);
  return `${dir}/${name}`;
};
const memtwin = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });

describe('memtwin exec', () => {
  it('runs a script and ends with the summary line', () => {
    const s = file('ok.jsonl', '{"op":"mmap","len":"4K","prot":["PROT_READ"],"flags":["MAP_PRIVATE","MAP_ANONYMOUS"],"name":"a"}\n');
    const r = memtwin('exec', s);
    expect(r.status).toBe(0);
    const lines = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines[0]).toMatchObject({ i: 0, op: 'mmap', ret: '$a' });
    expect(lines[1]).toEqual({ summary: { ops: 1, errors: 0, backend: 'sim' } });
  });

  it('reads the script from standard input for -, and names - in errors', () => {
    const mmap = '{"op":"mmap","len":"4K","prot":["PROT_READ"],"flags":["MAP_PRIVATE","MAP_ANONYMOUS"],"name":"a"}';
    const ok = spawnSync(process.execPath, [bin, 'exec', '-'], { encoding: 'utf8', input: `${mmap}\n` });
    expect(ok.status).toBe(0);
    expect(JSON.parse(ok.stdout.trim().split('\n')[0]!)).toMatchObject({ i: 0, op: 'mmap', ret: '$a' });
    const bad = spawnSync(process.execPath, [bin, 'exec', '-'], { encoding: 'utf8', input: `${mmap}\n{"op":"bogus"}\n` });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/^memtwin: -:2: unknown op "bogus"/);
  });

  it('exits 2 on invalid input, with the line saying what is wrong', () => {
    const s = file('bad.jsonl', '{"op":"mmap","len":"4K","prot":["PROT_READ"],"flags":["MAP_PRIVAT"]}\n');
    const r = memtwin('exec', s);
    expect(r.status).toBe(2);
    expect(r.stdout).toContain('"invalid":"flags: unknown flag name \\"MAP_PRIVAT\\"');
    expect(r.stderr).not.toMatch(/at .*\.ts:\d+/);
  });

  it('reports a bad host file with file, line, column and what was expected', () => {
    const h = file('host.yaml', 'name: x\nnodes:\n  - id: 0\n    memory: 8Q\n    cpus: 0-1\n');
    const s = file('s.jsonl', '{"op":"meminfo"}\n');
    const r = memtwin('exec', s, '--host', h);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/host\.yaml:4:13: nodes\[0\]\.memory: expected a size/);
  });

  it('reports an unknown field of a host file at the key', () => {
    const h = file('host2.yaml', 'name: x\nnodes:\n  - id: 0\n    memory: 8G\n    cpus: 0-1\n    hugepagez: 2M\n');
    const r = memtwin('exec', file('s2.jsonl', '{"op":"meminfo"}\n'), '--host', h);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/host2\.yaml:6:5: nodes\[0\]: unknown field 'hugepagez'/);
  });

  it('says when the script file cannot be read', () => {
    const r = memtwin('exec', `${dir}/missing.jsonl`);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/missing\.jsonl: cannot read script \(ENOENT\)/);
  });
});

describe('memtwin run', () => {
  it('exits 2 with a one-line located error for a broken scenario', () => {
    const s = file('broken.yaml', 'name: x\nduration: 10ms\nprocesses:\n  - name: p\n    mappings:\n      - name: m\n        size: lots\n');
    const r = memtwin('run', s, '--out', `${dir}/out-broken`);
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/broken\.yaml:7:15: processes\[0\]\.mappings\[0\]\.size: expected a size/);
  });

  it('runs a scenario and says where the report is', () => {
    const s = file(
      'tiny.yaml',
      'name: tiny\nhost: this-machine\nduration: 5ms\nprocesses:\n  - name: p\n    mappings:\n      - { name: m, size: 8M }\n    threads:\n      - { name: t, cpu: 0, workload: { pattern: uniform, mapping: m } }\n',
    );
    const r = memtwin('run', s, '--out', `${dir}/out-tiny`, '--quiet');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/report: .*out-tiny\/report\.html/);
  });
});

describe('memtwin run on a sweep whose runs fail in a worker', () => {
  it('reports the scenario error, not a stack trace', () => {
    const s = file(
      'collapse.yaml',
      'name: c\nhost: this-machine\nduration: 5ms\nprocesses:\n  - name: p\n    mappings:\n      - { name: m, size: 8M, madvise: [MADV_SOFT_OFFLINE] }\nsweep:\n  - { path: [seed], values: [1, 2] }\n',
    );
    const r = memtwin('run', s, '--out', `${dir}/out-collapse`, '--workers', '2', '--quiet');
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toMatch(
      /collapse\.yaml:7:40: processes\[0\]\.mappings\[0\]\.madvise\[0\]: MADV_SOFT_OFFLINE is not modelled by the simulator yet$/,
    );
  });
});
