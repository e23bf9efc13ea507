/**
 * What each postcopy-on-hugetlbfs proposal (and the /dev/mem remap) implies for the vCPU: the
 * number of userfaults, each fault's resolution time on the destination,
 * the background fill of the rest of the page, and what the page tables
 * and VMAs look like meanwhile. Deterministic (seeded), from the cost
 * profile; the network is not modelled (see src/agents/uffd_hugetlb_dest.ts).
 *
 *   npx tsx scripts/postcopy-hugetlb-table.ts [--touches N] [--seed S]
 */
import { destination, fillHugePage, vcpuFaults, type Design } from '../src/agents/uffd_hugetlb_dest.ts';
import { HGM_PROPOSALS } from '../src/kernel/hugetlb_hgm.ts';
import { DEVMEM_REMAP } from '../src/kernel/hugetlb_devmem.ts';
import { PAGE_SIZE, PMD_SIZE, PUD_SIZE } from '../src/kernel/uapi.ts';
import { SeededRandom } from '../src/sim/random.ts';

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
};
const touches = arg('--touches', 64);
const seed = arg('--seed', 1);
const ms = (ns: number): string => (ns >= 1e6 ? `${(ns / 1e6).toFixed(2)} ms` : `${(ns / 1e3).toFixed(1)} µs`);

console.log(
  `| page | design | vCPU faults | first fault | later faults (mean) | stalled in total | rest of the page | PTE tables at peak | VMAs at peak |`,
);
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const hs of [PUD_SIZE, PMD_SIZE]) {
  for (const proposal of [null, ...HGM_PROPOSALS, DEVMEM_REMAP] as (Design | null)[]) {
    const d = destination(proposal, hs, 2);
    // The vCPU touches `touches` random 4K pages of the first huge page.
    const rnd = new SeededRandom(seed).stream('touches');
    const offsets = Array.from({ length: touches }, () => rnd.int(0, hs / PAGE_SIZE - 1) * PAGE_SIZE);
    const { faults, latency } = vcpuFaults(d, offsets);
    const tables = d.p.mm.pgtablesBytes / PAGE_SIZE;
    // A /dev/mem alias is a VMA of its own (memtwin keeps it at guest RAM's addresses): counted here.
    const vmas = d.p.mm.vmas.length + d.k.devmem.openAliases;
    const rest = fillHugePage(d, d.a);
    if (!d.p.mm.pgtable.puds.has(d.a / PUD_SIZE) && !(hs === PMD_SIZE && d.p.mm.pgtable.pmds.has(d.a / PMD_SIZE)))
      throw new Error(`${proposal}: the page did not end huge`);
    const later = latency.slice(1);
    const mean = later.length ? later.reduce((x, y) => x + y, 0) / later.length : 0;
    console.log(
      `| ${hs === PUD_SIZE ? '1G' : '2M'} | ${proposal ?? 'Linux 6.18 (whole page)'} | ${faults} | ${ms(latency[0] ?? 0)} | ${later.length ? ms(mean) : '-'} | ${ms(latency.reduce((x, y) => x + y, 0))} | ${ms(rest)} | ${tables} | ${vmas} |`,
    );
  }
}
