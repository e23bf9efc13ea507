/**
 * Page migration (mm/migrate.c): move a page's contents and identity to
 * another frame and repoint every mapping of it (the rmap walk), then free
 * the old frame. The content token travels with the page, which is how the
 * tests prove migration loses nothing.
 */
import type { Kernel } from './kernel.ts';
import { PG } from './page.ts';
import { PageTable, PteTable, pteOf, pfnOfPte, type Vma, type MmStruct } from './mm_types.ts';
import { PAGE_SIZE } from './uapi.ts';

/** Every (mm, vma, va) that maps a 4K frame (rmap_walk), for anon and shmem pages. */
export function rmapWalk(k: Kernel, pfn: number, cb: (mm: MmStruct, vma: Vma, va: number) => void): void {
  const m = k.mem;
  const f = m.flags(pfn);
  if (f & PG.anon) {
    const mm = k.mmById(m.owner(pfn));
    if (!mm) return;
    const va = m.index(pfn) * PAGE_SIZE;
    const vma = mm.vmaAt(va);
    if (vma) cb(mm, vma, va);
    return;
  }
  if (f & PG.shmem) {
    const file = k.files.get(m.owner(pfn));
    if (!file) return;
    const idx = m.index(pfn);
    for (const p of k.processes.values()) {
      for (const vma of p.mm.vmas) {
        if (vma.file !== file) continue;
        const va = vma.start + (idx - vma.pgoff) * PAGE_SIZE;
        if (va >= vma.start && va < vma.end) cb(p.mm, vma, va);
      }
    }
  }
}

/**
 * Migrate one order-0 page from `src` to the free frame `dst` (already
 * taken off the free lists). Counts pgmigrate_success.
 */
export function migrateFrame(k: Kernel, src: number, dst: number): void {
  const m = k.mem;
  m.resetRange(dst, 1);
  m.setFlags(dst, m.flags(src) & ~PG.buddy);
  m.setOwner(dst, m.owner(src));
  m.setIndex(dst, m.index(src));
  m.setToken(dst, m.token(src));
  m.addMapcount(dst, m.mapcount(src));
  rmapWalk(k, src, (mm, _vma, va) => {
    const e = mm.pgtable.pmds.get(PageTable.pmdKey(va));
    if (e instanceof PteTable) {
      const i = Math.floor(va / PAGE_SIZE) & 511;
      if (e.ptes[i]! > 0 && pfnOfPte(e.ptes[i]!) === src) e.ptes[i] = pteOf(dst);
    }
  });
  if (m.flags(src) & PG.shmem) {
    const file = k.files.get(m.owner(src));
    file?.pages.set(m.index(src), dst);
  }
  k.phys.free(src, 0);
  k.vmstat.count('pgmigrate_success');
}
