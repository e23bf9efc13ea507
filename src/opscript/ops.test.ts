import { describe, expect, it } from 'vitest';
import { BadOp, parseOp } from './ops.ts';
import { addr, flags, size } from './values.ts';
import { ScriptRunner } from './runner.ts';
import { SimBackend } from './sim_backend.ts';
import { smallKernel } from '../testing/fixtures.ts';

const bad = (line: string): string => {
  try {
    parseOp(line, 3);
  } catch (e) {
    expect(e).toBeInstanceOf(BadOp);
    return (e as Error).message;
  }
  throw new Error('expected bad input');
};

describe('op-script values', () => {
  it('parses sizes, handle addresses and flag names', () => {
    expect(size('len', '2M')).toBe(2097152);
    expect(size('len', '1536K')).toBe(1536 * 1024);
    expect(size('len', 4096)).toBe(4096);
    expect(addr('addr', '$a+0x1000')).toEqual({ handle: 'a', offset: 4096 });
    expect(addr('addr', '$buf-4K')).toEqual({ handle: 'buf', offset: -4096 });
    expect(addr('addr', '$a+2M')).toEqual({ handle: 'a', offset: 2 << 20 });
    expect(flags('prot', ['PROT_READ', 'PROT_WRITE'], 'prot')).toBe(3);
    expect(flags('flags', ['MAP_PRIVATE', 'MAP_ANONYMOUS', 'MAP_HUGETLB', 'MAP_HUGE_2MB'], 'mmap')).toBe(0x2 | 0x20 | 0x40000 | (21 << 26));
    expect(flags('advice', 'MADV_COLLAPSE', 'advice')).toBe(25);
  });

  it('rejects bad input with the field and what was expected', () => {
    expect(bad('{"op":"mmap","len":"2Q","prot":[],"flags":[]}')).toMatch(/len: expected a size/);
    expect(bad('{"op":"mmap","len":"2M","prot":["PROT_RAED"],"flags":[]}')).toMatch(/prot: unknown flag name "PROT_RAED"/);
    expect(bad('{"op":"mmapp"}')).toMatch(/unknown op "mmapp"/);
    expect(bad('{"op":"munmap","addr":"$a"}')).toMatch(/len: required field missing/);
    expect(bad('{"op":"touch","addr":"$a","len":"4K","fil":1}')).toMatch(/unknown field "fil"/);
    expect(bad('{"op":"touch","addr":"$a","len":"4K","fill":300}')).toMatch(/fill: expected an integer from 0 to 255/);
    expect(bad('{"op":"touch","addr":"$a","len":"4K","write":"yes"}')).toMatch(/write: expected true or false/);
    expect(bad('not json')).toMatch(/not valid JSON/);
    expect(bad('{"op":"uffdio_copy","fd":"$u","len":"4K"}')).toMatch(/dst: required field missing/);
    expect(bad('{"op":"uffdio_register","fd":"$u","addr":"$a","len":"4K","mode":["UFFDIO_COPY_MODE_WP"]}')).toMatch(
      /mode: unknown flag name "UFFDIO_COPY_MODE_WP"/,
    );
  });
});

describe('the script runner', () => {
  async function run(text: string) {
    const r = new ScriptRunner(new SimBackend(smallKernel()));
    await r.run(text);
    return r;
  }

  it('stops at an unknown handle with an invalid line and keeps what ran before', async () => {
    const r = await run(
      [
        '{"op":"mmap","len":"4K","prot":["PROT_READ"],"flags":["MAP_PRIVATE","MAP_ANONYMOUS"],"name":"a"}',
        '{"op":"touch","addr":"$b","len":"4K"}',
        '{"op":"touch","addr":"$a","len":"4K"}',
      ].join('\n'),
    );
    expect(r.invalid).toBe(true);
    expect(r.results).toHaveLength(2);
    expect(r.results[0]).toMatchObject({ i: 0, op: 'mmap', ret: '$a' });
    expect(r.results[1]).toEqual({ i: 1, op: 'touch', invalid: 'addr: unknown handle $b' });
  });

  it('renders fault addresses relative to the handle that contains them', async () => {
    const r = await run(
      [
        '{"op":"mmap","len":"8K","prot":["PROT_READ"],"flags":["MAP_PRIVATE","MAP_ANONYMOUS"],"name":"a"}',
        '{"op":"touch","addr":"$a","len":"8K","write":true}',
      ].join('\n'),
    );
    expect(r.results[1]).toMatchObject({ ret: -1, signal: 'SIGSEGV', at: '$a' });
    expect(r.summary()).toEqual({ summary: { ops: 2, errors: 1, backend: 'sim' } });
  });

  it('refers to a failed mmap as a handle that does not exist', async () => {
    const r = await run(
      [
        '{"op":"mmap","len":0,"prot":["PROT_READ"],"flags":["MAP_PRIVATE","MAP_ANONYMOUS"],"name":"z"}',
        '{"op":"touch","addr":"$z","len":"4K"}',
      ].join('\n'),
    );
    expect(r.results[0]).toMatchObject({ ret: -1, errno: 'EINVAL' });
    expect(r.results[1]!.invalid).toMatch(/handle \$z does not exist \(its mmap failed\)/);
  });

  it('runs setuid only in a spawned process, which then loses its capabilities', async () => {
    const r = await run(
      [
        '{"op":"spawn","name":"u"}',
        '{"op":"setuid","in":"u","uid":1000,"gid":1000}',
        '{"op":"setuid","in":"u","uid":0}',
        '{"op":"setuid","uid":1000}',
      ].join('\n'),
    );
    expect(r.results[1]).toMatchObject({ ret: 0 });
    expect(r.results[2]).toMatchObject({ ret: -1, errno: 'EPERM' });
    expect(r.results[3]!.invalid).toMatch(/setuid only in a spawned process/);
    expect(bad('{"op":"setuid","uid":-1}')).toMatch(/uid: expected an integer from 0 to 4294967294/);
  });

  it('is deterministic: the same script and seed print the same bytes', async () => {
    const text = [
      '{"op":"mmap","len":"16M","prot":["PROT_READ","PROT_WRITE"],"flags":["MAP_PRIVATE","MAP_ANONYMOUS"],"name":"a"}',
      '{"op":"madvise","addr":"$a","len":"16M","advice":"MADV_HUGEPAGE"}',
      '{"op":"touch","addr":"$a","len":"16M","write":true,"stride":"64K"}',
      '{"op":"pagemap","addr":"$a","len":"16M"}',
    ].join('\n');
    const a = JSON.stringify((await run(text)).results);
    const b = JSON.stringify((await run(text)).results);
    expect(a).toBe(b);
  });
});
