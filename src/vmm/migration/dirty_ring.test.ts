/**
 * The KVM dirty ring: entries per first write since harvest, the soft
 * limit and KVM_EXIT_DIRTY_RING_FULL, the reap, a sync's flush, and the
 * size checks QEMU and KVM make.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { KVM_DIRTY_RING_RSVD_ENTRIES, KvmDirtyRing, dirtyRingSizeError } from './dirty_ring.ts';

const costs = { exitNs: 800, perEntryNs: 45, ioctlNs: 200 };

describe('dirty-ring-size', () => {
  it("is a power of two from a page of entries (256) to 65536, or 0 (the bitmap), with QEMU's errors", () => {
    expect(dirtyRingSizeError(0)).toBeUndefined();
    expect(dirtyRingSizeError(256)).toBeUndefined();
    expect(dirtyRingSizeError(65536)).toBeUndefined();
    expect(dirtyRingSizeError(4000)).toBe('dirty-ring-size must be a power of two.');
    expect(dirtyRingSizeError(128)).toMatch(/^Enabling of KVM dirty ring failed: Invalid argument/);
    expect(dirtyRingSizeError(131072)).toBe('KVM dirty ring size 131072 too big (maximum is 65536).  Please use a smaller value.');
  });
});

describe('KvmDirtyRing', () => {
  it('a first write pushes an entry; writing the page again before it is harvested does not', () => {
    const r = new KvmDirtyRing(256, 2, 1000, costs);
    expect(r.softLimit).toBe(256 - KVM_DIRTY_RING_RSVD_ENTRIES);
    expect(r.push(0, 5, false)).toBe(0);
    expect(r.push(0, 5, false)).toBe(0);
    expect(r.push(1, 5, false)).toBe(0); // another vCPU: the page is already on a ring
    expect(r.pending).toBe(1);
    expect(r.takePushed(0)).toBe(1);
    expect(r.takePushed(1)).toBe(0);
  });

  it('the soft limit exits (KVM_EXIT_DIRTY_RING_FULL); the vCPU reaps every ring and loses the exit and the reap', () => {
    const r = new KvmDirtyRing(256, 2, 1000, costs);
    for (let p = 0; p < 10; p++) r.push(1, 500 + p, false);
    let lost = 0;
    for (let p = 0; p < r.softLimit; p++) lost += r.push(0, p, false);
    expect(r.fullExits).toBe(1);
    expect(r.fullExitsPerVcpu).toEqual([1, 0]);
    expect(lost).toBe(costs.exitNs + (r.softLimit + 10) * costs.perEntryNs + costs.ioctlNs);
    expect(r.lostNsPerVcpu[0]).toBe(lost);
    expect(r.pending).toBe(0);
    // Harvested pages push again.
    r.push(0, 0, false);
    expect(r.pending).toBe(1);
  });

  it('with dirty-limit in service a ring-full exit reaps only its own ring', () => {
    const r = new KvmDirtyRing(256, 2, 1000, costs);
    for (let p = 0; p < 10; p++) r.push(1, 500 + p, true);
    for (let p = 0; p < r.softLimit; p++) r.push(0, p, true);
    expect(r.pending).toBe(10);
  });

  it("a sync's flush reaps every ring, and charges pages it found dirty that no ring held", () => {
    const r = new KvmDirtyRing(256, 1, 1000, costs);
    for (let p = 0; p < 50; p++) r.push(0, p, false);
    expect(r.flush(50)).toBe(50 * costs.perEntryNs + costs.ioctlNs);
    expect(r.pending).toBe(0);
    // Nothing pushed, 30 pages found dirty (written by the guest kernel, say).
    expect(r.flush(30)).toBe(30 * costs.perEntryNs + costs.ioctlNs);
    // Entries reaped at a ring-full exit are not charged again.
    for (let p = 0; p < r.softLimit; p++) r.push(0, p, false);
    expect(r.flush(r.softLimit)).toBe(costs.ioctlNs);
  });

  it('property: exits = pages first written / soft limit (one vCPU, pages never repeated between reaps)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 5000 }), fc.constantFrom(256, 512, 1024), (n, size) => {
        const r = new KvmDirtyRing(size, 1, 5000, costs);
        for (let p = 0; p < n; p++) r.push(0, p, false);
        expect(r.fullExits).toBe(Math.floor(n / r.softLimit));
        expect(r.pending).toBe(n % r.softLimit);
        expect(r.entriesReaped).toBe(r.fullExits * r.softLimit);
      }),
      { numRuns: 50 },
    );
  });
});
