import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { BadOp, MAX_DEPTH, OPS, parseOp, rangeTable } from './ops.ts';
import { addr, flags, size } from './values.ts';
import { OUTPUT_FIELDS, ScriptRunner } from './runner.ts';
import { SimBackend } from './sim_backend.ts';
import type { Backend } from './backend.ts';
import { ExecutorError } from './linux_backend.ts';
import { smallKernel } from '../testing/fixtures.ts';
import { quote } from '../util/input_error.ts';

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

describe('NULL nodemasks', () => {
  it('takes nodes: null in set_mempolicy and mbind (a NULL nodemask), as move_pages takes it', () => {
    expect(parseOp('{"op":"set_mempolicy","mode":"MPOL_LOCAL","nodes":null}', 0).a.nodes).toBeNull();
    expect(parseOp('{"op":"mbind","addr":"$a","len":"4K","mode":"MPOL_DEFAULT","nodes":null}', 0).a.nodes).toBeNull();
    expect(parseOp('{"op":"set_mempolicy","mode":"MPOL_LOCAL"}', 0).a.nodes).toBeUndefined();
    expect(bad('{"op":"set_mempolicy","mode":"MPOL_BIND","nodes":"0"}')).toMatch(/nodes: expected an array of node ids/);
  });
});

describe('process_madvise flags', () => {
  it('takes the flag-name form ([] or names) and a 32-bit number, as other flag fields do', () => {
    const line = (f: string): string => `{"op":"process_madvise","target":"self","iovec":[],"advice":"MADV_COLD","flags":${f}}`;
    expect(parseOp(line('[]'), 0).a.flags).toBe(0);
    expect(parseOp(line('0'), 0).a.flags).toBe(0);
    expect(parseOp(line('1'), 0).a.flags).toBe(1);
    expect(parseOp(line('[1]'), 0).a.flags).toBe(1);
    // the only names are the madv-collapse-flags proposal's (Linux 6.18 defines none and answers EINVAL to any bit)
    expect(parseOp(line('["MADV_F_COLLAPSE_LIMITS","MADV_F_COLLAPSE_DEFRAG"]'), 0).a.flags).toBe(3);
    expect(bad(line('["MADV_COLD"]'))).toMatch(
      /flags: unknown flag name "MADV_COLD" \(expected one of MADV_F_COLLAPSE_LIMITS, MADV_F_COLLAPSE_DEFRAG\)/,
    );
    expect(bad(line('4294967296'))).toMatch(/flags: expected flag names/);
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
    expect(r.results[1]).toEqual({ i: 1, op: 'touch', line: 2, invalid: 'addr: unknown handle $b' });
  });

  it("passes process_madvise flag names to the kernel: EINVAL by default, the proposal's rule with madv-collapse-flags on", async () => {
    const script = (feature: number): string =>
      [
        `{"op":"sysfs","path":"/sys/kernel/memtwin/features/madv-collapse-flags","value":"${feature}"}`,
        '{"op":"sysfs","path":"/sys/kernel/mm/transparent_hugepage/enabled","value":"never"}',
        '{"op":"mmap","len":"4M","prot":["PROT_READ","PROT_WRITE"],"flags":["MAP_PRIVATE","MAP_ANONYMOUS"],"align":"2M","name":"a"}',
        '{"op":"touch","addr":"$a","len":"2M","write":true}',
        '{"op":"process_madvise","target":"self","iovec":[["$a","2M"]],"advice":"MADV_COLLAPSE","flags":["MADV_F_COLLAPSE_DEFRAG","MADV_F_COLLAPSE_LIMITS"]}',
        '{"op":"process_madvise","target":"self","iovec":[["$a","2M"]],"advice":"MADV_COLD","flags":["MADV_F_COLLAPSE_DEFRAG"]}',
      ].join('\n');
    const off = await run(script(0));
    expect(off.results[4]).toMatchObject({ ret: -1, errno: 'EINVAL' });
    const on = await run(script(1));
    expect(on.results[4]).toMatchObject({ ret: 2 * 2 ** 20 });
    expect(on.results[5]).toMatchObject({ ret: -1, errno: 'EINVAL' }); // MADV_COLLAPSE only
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

  it('counts in `ops` only the ops that got an answer: neither an invalid line nor an executor error', async () => {
    const script = ['{"op":"meminfo"}', '{"op":"vmstat","keys":["thp_fault_alloc"]}', '{"op":"meminfo"}'].join('\n');
    // the executor dies on the second op
    const sim = new SimBackend(smallKernel());
    const dying: Backend = {
      name: 'linux',
      exec: async (op) => {
        if (op.i === 1) throw new ExecutorError('executor exited with signal SIGKILL');
        return sim.exec(op);
      },
      close: async () => {},
    };
    const e = new ScriptRunner(dying);
    await e.run(script);
    expect(e.results.map((x) => Object.keys(x).includes('error'))).toEqual([false, true]);
    expect(e.summary()).toEqual({ summary: { ops: 1, errors: 0, backend: 'linux' } });
    // bad input on the second op: the same count
    const r = await run(script.replace('"keys":["thp_fault_alloc"]', '"keys":"x"'));
    expect(r.results.map((x) => Object.keys(x).includes('invalid'))).toEqual([false, true]);
    expect(r.summary()).toEqual({ summary: { ops: 1, errors: 0, backend: 'sim' } });
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

  it('runs damon in the main process only, with attributes DAMON accepts, and reports hot and cold regions', async () => {
    const r = await run(
      [
        '{"op":"mmap","len":"8M","prot":["PROT_READ","PROT_WRITE"],"flags":["MAP_PRIVATE","MAP_ANONYMOUS"],"name":"a"}',
        '{"op":"madvise","addr":"$a","len":"8M","advice":"MADV_NOHUGEPAGE"}',
        '{"op":"touch","addr":"$a","len":"8M","write":true}',
        '{"op":"damon","addr":"$a","len":"8M","aggrs":10,"sample_us":10000,"min_nr_regions":3,"max_nr_regions":20,"hot_addr":"$a","hot_len":"2M"}',
        '{"op":"spawn","name":"u"}',
        '{"op":"damon","in":"u","addr":"$a","len":"8M","aggrs":1}',
      ].join('\n'),
    );
    expect(r.results[3]).toMatchObject({
      ret: 0,
      within_limits: true,
      hot_all_max: true,
      cold_all_zero: true,
      hot_nr_accesses: [10],
      cold_nr_accesses: [0],
    });
    const regions = r.results[3]!.regions as { start: string; size: number }[];
    expect(regions[0]!.start).toBe('$a');
    expect(regions.reduce((n, x) => n + x.size, 0)).toBe(8 * 2 ** 20);
    expect(r.results[5]!.invalid).toMatch(/damon only in the main process/);
    expect(bad('{"op":"damon","addr":0,"len":"8M","aggrs":1,"min_nr_regions":20,"max_nr_regions":10}')).toMatch(/exceeds max_nr_regions/);
    expect(bad('{"op":"damon","addr":0,"len":"8M","aggrs":1,"sample_us":200000}')).toMatch(/sample_us \(200000\) exceeds aggr_us/);
    expect(bad('{"op":"damon","addr":0,"len":"8M","aggrs":1,"min_nr_regions":2}')).toMatch(/min_nr_regions: expected an integer from 3/);
    expect(bad('{"op":"damon","addr":0,"len":"8M","aggrs":1000,"sample_us":1,"aggr_us":60000}')).toMatch(/region checks; at most/);
    expect(bad('{"op":"damon","addr":0,"len":"8M","aggrs":1,"hot_addr":0}')).toMatch(/give both or neither/);
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

describe('quote: bad values in messages', () => {
  it('shows short values whole, as JSON', () => {
    expect(quote('2Q')).toBe('"2Q"');
    expect(quote({ a: [1, null] })).toBe('{"a":[1,null]}');
    expect(quote(undefined)).toBe('undefined');
  });

  it('cuts long values to about 80 characters, with the full length', () => {
    const q = quote('x'.repeat(4_000_000));
    expect(q.length).toBeLessThan(100);
    expect(q).toMatch(/^"x+… \(4000002 chars\)$/);
  });

  it('never throws, whatever the value or its depth', () => {
    let deep: unknown = 1;
    for (let j = 0; j < 100_000; j++) deep = [deep];
    expect(quote(deep)).toMatch(/^\[+… \(200001 chars\)$/);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(quote(cyclic)).toBe('{"self":[circular]}');
    fc.assert(
      fc.property(fc.anything(), (v) => {
        const q = quote(v);
        expect(q.length).toBeLessThanOrEqual(80 + 30);
      }),
    );
  });
});

describe('op-script input limits', () => {
  it('looks op names up without the prototype chain', () => {
    for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf'])
      expect(bad(`{"op":"${name}"}`)).toMatch(new RegExp(`unknown op "${name}"`));
    expect(bad('{"op":"meminfo","constructor":1}')).toMatch(/unknown field "constructor"/);
    expect(bad('{"op":"meminfo","toString":1}')).toMatch(/unknown field "toString"/);
    expect(bad('{"op":"mmap","len":"4K","prot":["constructor"],"flags":[]}')).toMatch(/unknown flag name "constructor"/);
    expect(bad('{"op":"mmap","len":"4K","prot":"__proto__","flags":[]}')).toMatch(/unknown flag name "__proto__"/);
  });

  it('gives every number a range and names the field', () => {
    expect(bad('{"op":"touch","addr":"$a","len":"4K","stride":0}')).toMatch(/^stride: expected a size from 1 to 2\^52/);
    expect(bad('{"op":"touch","addr":"$a","len":"4K","stride":-4096}')).toMatch(/^stride: /);
    expect(bad('{"op":"khugepaged_wait","timeout_ms":1e308}')).toMatch(/^timeout_ms: expected an integer from 0 to 600000, got 1e\+308/);
    expect(bad('{"op":"khugepaged_wait","full_scans":1001}')).toMatch(/^full_scans: expected an integer from 0 to 1000/);
    expect(bad('{"op":"join","thread":"t","timeout_ms":60001}')).toMatch(/^timeout_ms: expected an integer from 0 to 60000/);
    expect(bad('{"op":"uffd_read","fd":"$u","max":4097}')).toMatch(/^max: expected an integer from 0 to 4096/);
    expect(bad('{"op":"thread","name":"t","cpu":1024}')).toMatch(/^cpu: expected an integer from 0 to 1023/);
    expect(bad('{"op":"thread","name":"t","cpu":-1}')).toMatch(/^cpu: /);
    expect(bad('{"op":"meminfo","node":1024}')).toMatch(/^node: expected an integer from 0 to 1023/);
    expect(bad('{"op":"hugetlb_pool","size":"2M","nr":-1}')).toMatch(/^nr: expected an integer from 0 to 2\^32-1/);
    expect(bad('{"op":"hugetlb_pool","size":"2M","nr":1e308}')).toMatch(/^nr: /);
    expect(bad('{"op":"hugetlb_pool","size":"3M","nr":1}')).toMatch(/^size: expected a power of two from 4K to 2\^40/);
    expect(bad('{"op":"mmap","len":"4K","prot":[],"flags":[],"align":"3M"}')).toMatch(/^align: expected a power of two from 4K to 2\^46/);
    expect(bad('{"op":"mmap","len":9007199254740993,"prot":[],"flags":[]}')).toMatch(/^len: expected a size from 0 to 2\^52/);
    expect(bad('{"op":"mmap","len":"4097T","prot":[],"flags":[]}')).toMatch(/^len: /);
    expect(bad('{"op":"mmap","len":"4K","prot":4294967296,"flags":[]}')).toMatch(
      /^prot: expected flag names .* or a number from -2\^31 to 2\^32-1/,
    );
    expect(bad('{"op":"mmap","len":"4K","prot":[1e308],"flags":[]}')).toMatch(/^prot: unknown flag name 1e\+308/);
    expect(bad('{"op":"touch","addr":"$a","len":"4K","fill":256}')).toMatch(/^fill: expected an integer from 0 to 255/);
    expect(bad('{"op":"touch","addr":"$a","len":"4K","fill":1.5}')).toMatch(/^fill: /);
    expect(bad('{"op":"setuid","uid":4294967295}')).toMatch(/^uid: expected an integer from 0 to 4294967294/);
    expect(bad('{"op":"process_madvise","target":"self","iovec":[],"advice":"MADV_COLD","flags":4294967296}')).toMatch(/^flags: /);
    expect(bad('{"op":"munmap","addr":"0x10000000001000","len":"4K"}')).toMatch(/^addr: expected an address from 0 to 2\^52/);
    expect(bad('{"op":"munmap","addr":"$a+4097T","len":"4K"}')).toMatch(/^addr: bad offset "4097T"/);
  });

  it('bounds the work of one op: 2^24 accesses per touch, 64 GiB per peek or pagemap', () => {
    expect(parseOp('{"op":"touch","addr":"$a","len":"64G"}', 0).a.len).toBe(2 ** 36);
    expect(bad('{"op":"touch","addr":"$a","len":"64G","stride":2048}')).toMatch(
      /^len: 64G at a stride of 2K is 33554432 accesses; a touch makes at most 2\^24/,
    );
    expect(bad('{"op":"touch","addr":"$a","len":"1T","stride":1}')).toMatch(/accesses; a touch makes at most 2\^24/);
    expect(bad('{"op":"pagemap","addr":"$a","len":"65G"}')).toMatch(/^len: expected a size from 0 to 64G/);
    expect(bad('{"op":"peek","addr":"$a","len":"1T"}')).toMatch(/^len: expected a size from 0 to 64G/);
    expect(bad('{"op":"move_pages","target":"self","pages":["$a","$a+4K"],"nodes":[0]}')).toMatch(
      /^nodes: expected one node per page \(2\), got 1/,
    );
    expect(
      bad(`{"op":"process_madvise","target":"self","iovec":${JSON.stringify(Array(1025).fill(['$a', '4K']))},"advice":"MADV_COLD"}`),
    ).toMatch(/up to 1024 \(UIO_MAXIOV\)/);
  });

  it('takes a knob value as a string, or an integer JSON holds exactly', () => {
    expect(parseOp('{"op":"sysfs","path":"/p","value":-1}', 0).a.value).toBe('-1');
    expect(parseOp('{"op":"sysfs","path":"/p","value":-0}', 0).a.value).toBe('-0');
    expect(parseOp('{"op":"sysfs","path":"/p","value":"18446744073709551616"}', 0).a.value).toBe('18446744073709551616');
    expect(bad('{"op":"sysfs","path":"/p","value":18446744073709551616}')).toMatch(/^value: .*write larger numbers as strings/);
    expect(bad('{"op":"sysfs","path":"/p","value":0.5}')).toMatch(/^value: /);
    expect(bad(`{"op":"sysfs","path":"/p","value":"${'1'.repeat(4097)}"}`)).toMatch(/^value: expected a string of at most 4096 characters/);
  });

  it('refuses a key given twice, at any depth, as scenario YAML does', () => {
    expect(bad('{"op":"munmap","addr":"$a","len":"4K","len":"8K"}')).toMatch(/^duplicate key "len"$/);
    expect(bad('{"op":"meminfo","op":"mmap"}')).toMatch(/^duplicate key "op"$/);
    expect(bad('{"op":"meminfo","comment":{"a":1,"\\u0061":2}}')).toMatch(/^duplicate key "a" in a nested object$/);
    expect(parseOp('{"op":"meminfo","comment":[{"a":1},{"a":2}]}', 0).op).toBe('meminfo');
    expect(parseOp('{"op":"meminfo","comment":"\\"op\\":1,\\"op\\":2"}', 0).op).toBe('meminfo');
  });

  it(`refuses values nested deeper than ${MAX_DEPTH} levels, and never overflows the stack`, () => {
    const nest = (d: number): string => `${'['.repeat(d)}${']'.repeat(d)}`;
    expect(parseOp(`{"op":"meminfo","comment":${nest(MAX_DEPTH - 1)}}`, 0).op).toBe('meminfo');
    expect(bad(`{"op":"meminfo","comment":${nest(MAX_DEPTH)}}`)).toBe(`values nested deeper than ${MAX_DEPTH} levels`);
    expect(bad(`{"op":"mmap","len":${nest(100_000)},"prot":[],"flags":[]}`)).toBe(`values nested deeper than ${MAX_DEPTH} levels`);
  });

  it('cuts a quoted bad value: a 4 MB value makes a short message', () => {
    const m = bad(`{"op":"mmap","len":"${'x'.repeat(4_000_000)}","prot":[],"flags":[]}`);
    expect(m.length).toBeLessThan(200);
    expect(m).toMatch(/\(4000002 chars\)$/);
    expect(bad(`{"op":"${'y'.repeat(1_000_000)}"}`).length).toBeLessThan(1000);
    expect(bad(`{"op":"meminfo","${'k'.repeat(1_000_000)}":1}`).length).toBeLessThan(200);
  });

  it('never throws anything but BadOp, whatever the line', () => {
    const fields = [...new Set(Object.values(OPS).flatMap((s) => [...Object.keys(s.req), ...Object.keys(s.opt ?? {})]))];
    fc.assert(
      fc.property(
        fc.constantFrom(...Object.keys(OPS)),
        fc.dictionary(fc.constantFrom(...fields, 'constructor', '__proto__'), fc.jsonValue()),
        (op, o) => {
          try {
            parseOp(JSON.stringify({ ...o, op }), 0);
          } catch (e) {
            expect(e).toBeInstanceOf(BadOp);
          }
        },
      ),
      { numRuns: 500 },
    );
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (line) => {
        try {
          parseOp(line, 0);
        } catch (e) {
          expect(e).toBeInstanceOf(BadOp);
        }
      }),
    );
  });
});

describe('invalid lines name the file line', () => {
  it('counts comments and blank lines: i is the op index, line the file line', async () => {
    const r = new ScriptRunner(new SimBackend(smallKernel()));
    await r.run(['# a script', '', '{"op":"meminfo"}', '// more', '   ', '{"op":"meminfo","node":-1}', '{"op":"meminfo"}'].join('\n'));
    expect(r.results).toHaveLength(2);
    expect(r.results[1]).toEqual({ i: 1, op: 'meminfo', line: 6, invalid: 'node: expected an integer from 0 to 1023, got -1' });
    expect(r.badLine).toEqual({ line: 6, message: 'node: expected an integer from 0 to 1023, got -1' });
    expect(Object.keys(r.results[1]!)).toEqual(['i', 'op', 'line', 'invalid']);
  });

  it('refuses a handle expression that resolves outside 0 to 2^52', async () => {
    const r = new ScriptRunner(new SimBackend(smallKernel()));
    await r.run(
      [
        '{"op":"mmap","len":"4K","prot":["PROT_READ"],"flags":["MAP_PRIVATE","MAP_ANONYMOUS"],"name":"a"}',
        '{"op":"munmap","addr":"$a-200T","len":"4K"}',
      ].join('\n'),
    );
    expect(r.results[1]!.invalid).toMatch(/^addr: \$a-0xc80000000000 is outside 0 to 2\^52$/);
  });

  it('keeps the output of valid ops unchanged: no line field', async () => {
    const r = new ScriptRunner(new SimBackend(smallKernel()));
    await r.run('\n# c\n{"op":"meminfo"}\n');
    expect(r.results[0]).not.toHaveProperty('line');
  });

  it('answers prototype names in vmstat keys as unknown counters, as own properties', async () => {
    const r = new ScriptRunner(new SimBackend(smallKernel()));
    await r.run('{"op":"vmstat","keys":["__proto__","constructor","thp_fault_alloc"]}');
    expect(JSON.stringify(r.results[0]!.vmstat)).toBe('{"__proto__":null,"constructor":null,"thp_fault_alloc":0}');
  });
});

describe('docs/op-script.md', () => {
  const doc = readFileSync(fileURLToPath(new URL('../../docs/op-script.md', import.meta.url)), 'utf8');

  it('lists the range of every numeric field, as ops.ts defines them', () => {
    expect(doc).toContain(rangeTable());
  });

  /** The rows of the "Ops reference" tables: op name -> [arguments, outputs, compared]. */
  function referenceRows(): Map<string, string[]> {
    const start = doc.indexOf('\n## Ops reference\n');
    expect(start).toBeGreaterThan(0);
    const end = doc.indexOf('\n## ', start + 1);
    const rows = new Map<string, string[]>();
    let inTable = false;
    for (const line of doc.slice(start, end).split('\n')) {
      if (line.startsWith('| op | arguments | outputs | compared |')) inTable = true;
      else if (!line.startsWith('|')) inTable = false;
      else if (inTable && !line.startsWith('| ---')) {
        const cells = line.slice(2, -2).split(' | ');
        expect(cells, line).toHaveLength(4);
        const m = /^`([a-z_]+)`$/.exec(cells[0]!);
        expect(m, line).not.toBeNull();
        expect(rows.has(m![1]!), `${m![1]} listed twice`).toBe(false);
        rows.set(m![1]!, cells.slice(1));
      }
    }
    return rows;
  }

  it('has a reference row for every op ops.ts parses, and for nothing else', () => {
    expect([...referenceRows().keys()].sort()).toEqual(Object.keys(OPS).sort());
  });

  it("names every op's arguments and outputs in its row, and says whether an op has compared outputs", () => {
    for (const [op, [args, outputs, compared]] of referenceRows()) {
      const spec = OPS[op]!;
      for (const f of Object.keys({ ...spec.req, ...spec.opt })) expect(args, `${op}: argument ${f}`).toContain(`\`${f}\``);
      for (const f of OUTPUT_FIELDS[op] ?? []) expect(outputs, `${op}: output ${f}`).toContain(`\`${f}\``);
      expect(compared === '—', `${op}: compared column`).toBe((OUTPUT_FIELDS[op] ?? []).length === 0);
    }
  });
});
