/**
 * Migration entries (include/linux/swapops.h, mm/migrate.c): while a folio
 * is being migrated, between migrate_folio_unmap (try_to_migrate) and
 * remove_migration_ptes, its PTEs or PMD hold a migration entry instead of
 * the page, and an access to it waits in migration_entry_wait until the
 * folio is unlocked after its copy.
 *
 * memtwin applies a migration to the page tables at once, when the call
 * runs, and keeps here, per migrated folio, when it was under migration in
 * virtual time: the window of its batch (migrate.ts, MigrateBatches). A
 * workload access at thread time t (workload/engine.ts) then sees the page:
 * - before the window: still on its old node (the walk has not reached it);
 * - in the window: behind a migration entry, so it waits until the window's
 *   end (migration_entry_wait);
 * - after it: on its new node.
 * Op-scripts run one op at a time on the clock, so every window of a call
 * has ended when the next op runs.
 *
 * The windows are first placed in the migrating task's own time, as if it
 * ran at once and alone. In a scenario its CPU time then goes through the
 * scheduler (Kernel.spend), where it may wait behind other tasks or share a
 * CPU; followCpu moves each window to when the task's CPU time really
 * reaches it, so an access waits as long as the migrating task takes.
 */
import { PAGE_SIZE, PMD_SIZE, PUD_SIZE, alignDown } from './uapi.ts';

/** One migrate_pages_batch's folios: all hold migration entries from `unmapAt` until `remapAt` (virtual ns). */
export interface MigrationBatch {
  unmapAt: number;
  remapAt: number;
}

/** A migrated folio's record: its batch, the node it left, and the frames it moved to. */
export interface MigrationEntry {
  batch: MigrationBatch;
  /** The folio's node before the migration. */
  from: number;
  /** First frame and number of frames of the folio it became. */
  pfn: number;
  nr: number;
}

/** What an access at a given time finds (MigrationEntries.at). */
export interface MigrationState {
  /** ns the access waits for the folio's remap (0: none). */
  wait: number;
  /** The node the page is on at the access, when it is not yet moved (-1: where the page table says). */
  oldNode: number;
  /** The batch waited for (with `wait`). */
  batch?: MigrationBatch;
}

const NONE: MigrationState = { wait: 0, oldNode: -1 };

/** The migration entries of one mm, by folio: 4K folios by page number, huge ones by their aligned address. */
export class MigrationEntries {
  private readonly small = new Map<number, MigrationEntry>();
  private readonly pmd = new Map<number, MigrationEntry>();
  private readonly pud = new Map<number, MigrationEntry>();
  /** The batches the entries belong to (a batch of compaction may span several mms, and grows as it goes). */
  private readonly batches = new Set<MigrationBatch>();
  /** The latest window end (as of the last add or prune): after it no entry matters. */
  until = -Infinity;

  get size(): number {
    return this.small.size + this.pmd.size + this.pud.size;
  }

  /** Record the folio of `bytes` bytes mapped at va (aligned to its size) as migrated in `e.batch`. */
  add(va: number, bytes: number, e: MigrationEntry): void {
    if (bytes === PAGE_SIZE) this.small.set(Math.floor(va / PAGE_SIZE), e);
    else if (bytes === PMD_SIZE) this.pmd.set(alignDown(va, PMD_SIZE), e);
    else this.pud.set(alignDown(va, PUD_SIZE), e);
    this.batches.add(e.batch);
    if (e.batch.remapAt > this.until) this.until = e.batch.remapAt;
  }

  /**
   * The entry of the folio that va translates to (frame `pfn`), if it was
   * migrated: an entry whose folio no longer maps va (freed, remapped since)
   * does not count.
   */
  lookup(va: number, pfn: number): MigrationEntry | undefined {
    const own = (e: MigrationEntry | undefined): MigrationEntry | undefined => (e && pfn >= e.pfn && pfn < e.pfn + e.nr ? e : undefined);
    return (
      (this.small.size ? own(this.small.get(Math.floor(va / PAGE_SIZE))) : undefined) ??
      (this.pmd.size ? own(this.pmd.get(alignDown(va, PMD_SIZE))) : undefined) ??
      (this.pud.size ? own(this.pud.get(alignDown(va, PUD_SIZE))) : undefined)
    );
  }

  /** An access to va (frame pfn) at time t: see the top of this file. */
  at(va: number, pfn: number, t: number): MigrationState {
    if (t >= this.until) return NONE;
    const e = this.lookup(va, pfn);
    if (!e) return NONE;
    if (t < e.batch.unmapAt) return { wait: 0, oldNode: e.from };
    if (t < e.batch.remapAt) return { wait: e.batch.remapAt - t, oldNode: -1, batch: e.batch };
    return NONE;
  }

  /**
   * Bring `until` up to date with its batches' ends, and forget every entry
   * once all windows have ended by `now` (nothing can see them any more).
   */
  prune(now: number): void {
    if (!this.batches.size) return;
    let until = -Infinity;
    for (const b of this.batches) if (b.remapAt > until) until = b.remapAt;
    this.until = until;
    if (now < until) return;
    this.small.clear();
    this.pmd.clear();
    this.pud.clear();
    this.batches.clear();
    this.until = -Infinity;
  }
}

/**
 * Move the windows of `batches`, placed in a task's own time from `base`
 * (its CPU time t at base + t, as if it ran at once and alone), to the
 * times its CPU time is really given: the scheduler's onRun for its work
 * (Scheduler.work) says that CPU time `done` to `done + used` runs from
 * `now`. A batch's unmap and remap happen when the task's CPU time reaches
 * them: the ones a quantum covers get their exact time, later ones move by
 * the task's wait so far and again when their own quantum comes. Between
 * its quanta the later windows stand where the wait so far puts them, so an
 * access in that gap may find a batch's entry gone (or not yet there) by at
 * most the task's current wait for its CPU; a thread that waited for a
 * remap that moved later finds the entry again and waits on.
 */
export function followCpu(batches: readonly MigrationBatch[], base: number): (now: number, done: number, used: number) => void {
  const unmap = batches.map((b) => b.unmapAt - base);
  const remap = batches.map((b) => b.remapAt - base);
  let first = 0; // batches before it were remapped in an earlier quantum: their times are final
  let delay = 0;
  return (now, done, used) => {
    const d = now - base - done; // how long the task has waited for CPUs so far
    if (d !== delay) {
      delay = d;
      for (let i = first; i < batches.length; i++) {
        const b = batches[i]!;
        if (unmap[i]! >= done) b.unmapAt = base + unmap[i]! + d;
        if (remap[i]! > done) b.remapAt = base + remap[i]! + d;
      }
    }
    while (first < batches.length && remap[first]! <= done + used) first++;
  };
}
