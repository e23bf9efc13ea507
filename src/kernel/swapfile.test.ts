import { describe, expect, it } from 'vitest';
import { smallKernel } from '../testing/fixtures.ts';
import { SWAPFILE_CLUSTER, sysSwapon, swpOffset, swpType } from './swapfile.ts';
import { PAGE_SIZE } from './uapi.ts';

describe('swap areas (swapfile.ts)', () => {
  it('refuses what swapon refuses: a second swapon of a path, a priority out of range, an area without a usable page', () => {
    const k = smallKernel({ nodes: 1 });
    expect(sysSwapon(k, { path: '/a', size: 1 << 20, kind: 'file' })).toBe(0);
    expect(sysSwapon(k, { path: '/a', size: 1 << 20, kind: 'file' })).toBe(-16); // EBUSY
    expect(sysSwapon(k, { path: '/b', size: 1 << 20, kind: 'file', prio: 32768 })).toBe(-22);
    expect(sysSwapon(k, { path: '/c', size: PAGE_SIZE, kind: 'file' })).toBe(-22);
    expect(k.swap.totalSwapPages).toBe(255);
  });

  it('gives default priorities -2, -3, ... and uses the highest priority area first', () => {
    const k = smallKernel({ nodes: 1 });
    sysSwapon(k, { path: '/low', size: 1 << 20, kind: 'file' });
    sysSwapon(k, { path: '/high', size: 1 << 20, kind: 'file', prio: 5 });
    expect(k.swap.areas.map((a) => a!.prio)).toEqual([-2, 5]);
    const e = k.swap.allocSwapEntry(0);
    expect(swpType(e)).toBe(1);
    expect(swpOffset(e)).toBe(1); // slot 0 is the header
  });

  it('takes turns between areas of equal priority on rotational files', () => {
    const k = smallKernel({ nodes: 1 });
    sysSwapon(k, { path: '/x', size: 1 << 20, kind: 'file', prio: 1 });
    sysSwapon(k, { path: '/y', size: 1 << 20, kind: 'file', prio: 1 });
    const types = Array.from({ length: 4 }, () => swpType(k.swap.allocSwapEntry(0)));
    expect(types).toEqual([0, 1, 0, 1]);
  });

  it('hands out consecutive slots in a cluster, refuses a large folio on a file, and counts what is free', () => {
    const k = smallKernel({ nodes: 1 });
    sysSwapon(k, { path: '/f', size: 4 * SWAPFILE_CLUSTER * PAGE_SIZE, kind: 'file' });
    const offs = Array.from({ length: 5 }, () => swpOffset(k.swap.allocSwapEntry(0)));
    expect(offs).toEqual([1, 2, 3, 4, 5]);
    expect(k.swap.allocSwapEntry(9)).toBe(-1); // "Swapfile is not block device so unable to allocate large entries"
    expect(k.swap.nrSwapPages).toBe(4 * SWAPFILE_CLUSTER - 1 - 5);
  });

  it('lets zram (a block device) take a THP whole in a free cluster', () => {
    const k = smallKernel({ nodes: 1 });
    sysSwapon(k, { path: '/dev/zram0', size: 4 * SWAPFILE_CLUSTER * PAGE_SIZE, kind: 'zram' });
    const e = k.swap.allocSwapEntry(9);
    expect(swpOffset(e) % SWAPFILE_CLUSTER).toBe(0);
    expect(swpOffset(e)).toBeGreaterThan(0);
  });
});
