import { describe, expect, it } from 'vitest';
import { canonMsgs, diffRuns } from './diff.ts';

const vmstat = (i: number, v: Record<string, number>) => ({ i, op: 'vmstat', ret: 0, vmstat: v });
const read = (i: number, msgs: unknown[]) => ({ i, op: 'uffd_read', ret: msgs.length, msgs });
const fault = (address: string) => ({ event: 'UFFD_EVENT_PAGEFAULT', address, flags: ['UFFD_PAGEFAULT_FLAG_WRITE'] });
const remove = (address: string) => ({ event: 'UFFD_EVENT_REMOVE', address });

describe('diffRuns: what the script alone decides', () => {
  it('compares a system-wide THP counter as at least the simulator’s count', () => {
    const sim = [vmstat(0, { thp_fault_alloc: 5, thp_split_pmd: 1 })];
    // Another process faulted five more THPs meanwhile: still agreement.
    expect(diffRuns(sim, [vmstat(0, { thp_fault_alloc: 10, thp_split_pmd: 1 })]).disagreements).toEqual([]);
    // Fewer than the script's own: a finding.
    const d = diffRuns(sim, [vmstat(0, { thp_fault_alloc: 4, thp_split_pmd: 1 })]).disagreements;
    expect(d).toEqual([{ i: 0, op: 'vmstat', field: 'vmstat.thp_fault_alloc', a: 5, b: 4 }]);
    // A counter the simulator reports and Linux does not is a difference too.
    expect(diffRuns(sim, [vmstat(0, { thp_fault_alloc: 5 })]).disagreements.map((x) => x.field)).toEqual(['vmstat.thp_split_pmd']);
  });

  it('does not compare counters every process moves', () => {
    expect(diffRuns([vmstat(0, { pgfault: 10 })], [vmstat(0, { pgfault: 99 })]).disagreements).toEqual([]);
  });

  it('does not compare the order of faults raised by different threads', () => {
    const a = [read(3, [fault('$a+0x1000'), fault('$a+0x5000')])];
    const b = [read(3, [fault('$a+0x5000'), fault('$a+0x1000')])];
    expect(diffRuns(a, b).disagreements).toEqual([]);
  });

  it('still finds a fault read after an event, and a different set of faults', () => {
    const faultFirst = [read(3, [fault('$a+0x1000'), remove('$a+0x200000')])];
    const eventFirst = [read(3, [remove('$a+0x200000'), fault('$a+0x1000')])];
    expect(diffRuns(faultFirst, eventFirst).disagreements.map((x) => x.field)).toEqual(['msgs']);
    expect(diffRuns([read(3, [fault('$a+0x1000')])], [read(3, [fault('$a+0x2000')])]).disagreements).toHaveLength(1);
  });

  it("does not compare pagemap's shared flag on 1G pages (Linux's folio_maybe_mapped_shared), but the rest of the run", () => {
    const pm = (pages: unknown[]) => [{ i: 3, op: 'pagemap', ret: 0, pages }];
    const g = { present: true, node: 0, size: '1G' };
    expect(diffRuns(pm([{ n: 2048, ...g }]), pm([{ n: 2048, ...g, shared: true }])).disagreements).toEqual([]);
    expect(
      diffRuns(
        pm([{ n: 512, ...g }]),
        pm([
          { n: 256, ...g, shared: true },
          { n: 256, ...g },
        ]),
      ).disagreements,
    ).toEqual([]);
    expect(diffRuns(pm([{ n: 2048, ...g }]), pm([{ n: 2048, ...g, node: 1, shared: true }])).disagreements).toHaveLength(1);
    const t = { present: true, node: 0, size: '2M' };
    expect(diffRuns(pm([{ n: 512, ...t }]), pm([{ n: 512, ...t, shared: true }])).disagreements).toHaveLength(1);
  });

  it('canonMsgs sorts within each run of faults or events and keeps the runs in order', () => {
    expect(canonMsgs([fault('$a+0x2000'), fault('$a+0x1000'), remove('$a+0x9000'), remove('$a+0x3000'), fault('$a+0x7000')])).toEqual([
      fault('$a+0x1000'),
      fault('$a+0x2000'),
      remove('$a+0x3000'),
      remove('$a+0x9000'),
      fault('$a+0x7000'),
    ]);
  });
});
