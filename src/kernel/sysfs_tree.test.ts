import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { lookupPath, ownedDirs } from './sysfs_tree.ts';
import { existsSync, readdirSync } from 'node:fs';
import { release } from 'node:os';
import { smallKernel } from '../testing/fixtures.ts';
import { Kernel } from './kernel.ts';
import { CostProfile } from '../sim/cost_profile.ts';
import { detectHost } from '../sim/host.ts';

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

/**
 * The listings were taken from this machine's kernel (6.18.44, x86-64);
 * where that kernel runs, every owned directory must list exactly what the
 * model says, for this machine's nodes and huge page sizes. Elsewhere
 * (another kernel's configuration lists other entries) it is skipped.
 */
const here = process.platform === 'linux' && release().startsWith('6.18.') && existsSync('/sys/kernel/mm/transparent_hugepage');
describe.skipIf(!here)('sysfs_tree against this machine', () => {
  it('lists each owned directory exactly as the real one', () => {
    const h = detectHost();
    // the machine's shape with little memory: only the nodes and huge page sizes matter here
    const host = { ...h, nodes: h.nodes.map((n) => ({ ...n, memory: 64 * 2 ** 20 })) };
    const k = new Kernel({ host, costs: CostProfile.default(), seed: 1 });
    for (const [dir, listing] of ownedDirs(k)) {
      const real = readdirSync(dir, { withFileTypes: true }).map((e) => [e.name, e.isDirectory() ? 'dir' : 'file']);
      expect([dir, Object.fromEntries(real.sort())]).toEqual([dir, Object.fromEntries(Object.entries(listing).sort())]);
    }
  });
});
