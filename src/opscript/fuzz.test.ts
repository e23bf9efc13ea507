/**
 * Fuzzing op-scripts in process (fuzz.ts): malformed and extreme scripts
 * built from the goldens and gen.ts's random scripts either run to their
 * end or stop at one located `invalid` line; nothing throws, and the
 * simulator's work is bounded by a budget of ops, kernel events and virtual
 * time (never wall-clock). scripts/fuzz.ts runs the same generators by the
 * thousand through the real command line.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { fileURLToPath } from 'node:url';
import type { Kernel } from '../kernel/kernel.ts';
import { smallKernel } from '../testing/fixtures.ts';
import { BudgetExceeded, checkScript, goldenScripts, malformedScriptArb } from './fuzz.ts';

const goldens = goldenScripts(fileURLToPath(new URL('../../test/op-scripts', import.meta.url)));
/** Two nodes of 512 MiB: filling every pool or node stays cheap, and NUMA paths are taken. */
const kernel = (): Kernel => smallKernel({ nodes: 2, mib: 512 });

describe('op-script fuzzing on the simulator', () => {
  it('every malformed or extreme script ends in results or one located invalid line, within its budget', async () => {
    let invalid = 0;
    let ran = 0;
    await fc.assert(
      fc.asyncProperty(malformedScriptArb(goldens, 'small', 3), async (text) => {
        const o = await checkScript(text, kernel);
        if (o.invalid) invalid++;
        else ran++;
      }),
      { numRuns: 400, seed: 20240611 },
    );
    // The generators reach both sides of the contract.
    expect(invalid).toBeGreaterThan(100);
    expect(ran).toBeGreaterThan(20);
  }, 120_000);

  it('stops a loop that does not advance virtual time (the guard itself works)', async () => {
    const k = kernel();
    // A kernel event that reschedules itself at the same instant: what a zero-length loop looks like.
    const again = (): void => void k.events.after(0, 'spin', again);
    k.events.after(0, 'spin', again);
    await expect(checkScript('{"op":"meminfo"}', () => k)).rejects.toBeInstanceOf(BudgetExceeded);
  });

  it('bounds the cases the tester found: stride 0, 1e308 timeouts, prototype op names, deep nesting, 2^64 knob values', async () => {
    const cases = [
      '{"op":"mmap","len":"1T","prot":["PROT_READ"],"flags":["MAP_PRIVATE","MAP_ANONYMOUS","MAP_NORESERVE"],"name":"a"}\n{"op":"touch","addr":"$a","len":"16M","stride":0}',
      '{"op":"khugepaged_wait","timeout_ms":1e308}',
      '{"op":"constructor"}',
      '{"op":"__proto__"}',
      '{"op":"toString"}',
      `{"op":"meminfo","comment":${'['.repeat(10_000)}${']'.repeat(10_000)}}`,
      '{"op":"hugetlb_pool","size":"2M","nr":1e308}',
    ];
    for (const text of cases) expect((await checkScript(text, kernel)).invalid).toBe(true);
    const knob = await checkScript(
      '{"op":"sysfs","path":"/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages","value":"18446744073709551616"}\n{"op":"meminfo"}',
      kernel,
    );
    expect(knob.results[0]).toMatchObject({ ret: -1, errno: 'ERANGE' });
    expect(knob.results[1]).toMatchObject({ HugePages_Total: 0 });
  });
});
