/**
 * A precopy's passes as query-migrate shows them: from the source's
 * query-migrate polled every 50 ms (RealRun.samples, and memtwin's own
 * prediction sampled the same way), each bitmap sync's time, the pages it
 * found dirty and the bytes sent by then.
 *
 * QEMU's `remaining` is ram_bytes_remaining(): the dirty bitmap's set bits
 * (migration_dirty_pages) times the target page size. Between two polls it
 * falls by the pages sent (ram.normal + ram.duplicate + xbzrle pages) and
 * rises by what the syncs in between found (num_dirty: bits not set
 * before), so the pages a sync found are the rise of `remaining` in pages
 * plus the pages sent over the same polls. A poll's interval can hold
 * several syncs; their pages are then summed on the last of them.
 */
import { PAGE_SIZE } from '../kernel/uapi.ts';
import type { QuerySample } from './matrix.ts';

export interface Pass {
  /** dirty-sync-count after the sync(s) seen at this poll. */
  sync: number;
  /** How many syncs happened between the previous poll and this one (1 normally). */
  syncsInPoll: number;
  /** The poll that first showed the sync (ms after migrate): the sync is at most one poll interval before. */
  atMs: number;
  /** The previous poll (ms): the sync happened in (prevAtMs, atMs]. */
  prevAtMs: number;
  /** Pages the sync(s) found dirty that were not dirty already (remaining's rise plus the pages sent meanwhile). */
  newDirtyPages: number;
  /** ram.transferred at this poll (bytes). */
  transferred: number;
  /** remaining at this poll (pages). */
  remainingPages: number;
}

/** Pages sent as of a sample: normal and zero pages (xbzrle pages count as normal in neither; memtwin's do not either). */
const sentPages = (s: QuerySample): number => s.normal + s.duplicate;

/** The syncs after the first (the setup's, which sets every bit: its count is 1 at the first poll). */
export function passesOf(samples: readonly QuerySample[]): Pass[] {
  const out: Pass[] = [];
  for (let i = 1; i < samples.length; i++) {
    const [a, b] = [samples[i - 1]!, samples[i]!];
    if (b.dirtySyncCount <= a.dirtySyncCount || b.status !== 'active' || a.status !== 'active') continue;
    const newDirty = (b.remaining - a.remaining) / PAGE_SIZE + (sentPages(b) - sentPages(a));
    out.push({
      sync: b.dirtySyncCount,
      syncsInPoll: b.dirtySyncCount - a.dirtySyncCount,
      atMs: b.atMs,
      prevAtMs: a.atMs,
      newDirtyPages: Math.round(newDirty),
      transferred: b.transferred,
      remainingPages: Math.round(b.remaining / PAGE_SIZE),
    });
  }
  return out;
}

/**
 * The bytes a precopy moved per 100 ms rate window, from the polls: the
 * rate between two polls that are both `active` (bytes/s), for the time
 * from `fromMs` to `toMs`. The mean over the span, not per window: the
 * polls are 50 ms apart and not aligned with QEMU's windows.
 */
export function meanRate(samples: readonly QuerySample[], fromMs: number, toMs: number): number | null {
  const act = samples.filter((s) => s.status === 'active' && s.atMs >= fromMs && s.atMs <= toMs);
  if (act.length < 2) return null;
  const [a, b] = [act[0]!, act[act.length - 1]!];
  return b.atMs > a.atMs ? ((b.transferred - a.transferred) * 1000) / (b.atMs - a.atMs) : null;
}
