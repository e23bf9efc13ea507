import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { lookupPath, ownedDirs } from './sysfs_tree.ts';
import { smallKernel } from '../testing/fixtures.ts';

const k = smallKernel({ nodes: 2 });
const look = (p: string) => lookupPath(k, p, (q) => k.sysfs.has(q));

describe('sysfs_tree: which paths exist', () => {
  it('lists every modelled knob that lies in an owned directory, as a file', () => {
    const owned = ownedDirs(k);
    for (const p of k.sysfs.paths()) {
      const dir = p.slice(0, p.lastIndexOf('/'));
      const listing = owned.get(dir);
      if (listing) expect([p, listing[p.slice(dir.length + 1)]]).toEqual([p, 'file']);
    }
  });

  it('answers ENOENT, ENOTDIR, a directory, a file, or unmodelled, as open(2) would', () => {
    expect(look('/sys/kernel/mm/transparent_hugepage/nonexistent')).toEqual({ exists: false, errno: 'ENOENT' });
    expect(look('/sys/kernel/mm/transparent_hugepage/nope/deeper')).toEqual({ exists: false, errno: 'ENOENT' });
    expect(look('/sys/kernel/mm/transparent_hugepage/enabled/x')).toEqual({ exists: false, errno: 'ENOTDIR' });
    expect(look('/sys/kernel/mm/transparent_hugepage/khugepaged')).toEqual({ exists: true, dir: true });
    expect(look('/sys/kernel/mm/transparent_hugepage//shmem_enabled')).toEqual({ exists: true, dir: false });
    expect(look('/proc/sys/vm/dirty_ratio')).toEqual({ exists: true, dir: false });
    expect(look('/sys/devices/system/node/node1/hugepages/hugepages-2048kB/free_hugepages')).toEqual({ exists: true, dir: false });
    expect(look('/sys/devices/system/node/node2')).toEqual({ exists: false, errno: 'ENOENT' });
    expect(look('/sys/kernel/mm/ksm/run')).toEqual({ unmodelled: true });
    expect(look('/proc/sys/kernel/whatever')).toEqual({ unmodelled: true });
    expect(look('relative/path')).toEqual({ unmodelled: true });
    expect(look('/sys/kernel/mm/../mm/swap')).toEqual({ unmodelled: true });
    expect(look('/sys/kernel/memtwin/features/no_such_proposal')).toEqual({ exists: false, errno: 'ENOENT' });
  });

  it('offers one mTHP directory per anonymous order, 8kB to 2048kB', () => {
    const thp = ownedDirs(k).get('/sys/kernel/mm/transparent_hugepage')!;
    expect(Object.keys(thp).filter((n) => n.startsWith('hugepages-'))).toEqual(
      ['8', '16', '32', '64', '128', '256', '512', '1024', '2048'].map((s) => `hugepages-${s}kB`),
    );
  });

  it('never throws, and a missing entry stays missing below it', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('sys', 'kernel', 'mm', 'proc', 'vm', 'x', '..', '.', '', 'enabled'), { maxLength: 8 }),
        (parts) => {
          const p = `/${parts.join('/')}`;
          const r = look(p);
          if ('errno' in r && r.errno === 'ENOENT') expect(look(`${p}/more`)).toEqual({ exists: false, errno: 'ENOENT' });
        },
      ),
    );
  });
});
