import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fromRoot } from '../util/paths.ts';
import { CalibrateError, mergeProfile, parseGroupList, selectCosts } from './calibrate.ts';
import type { CostProfileData } from '../sim/cost_profile.ts';

const LIST = `mmap_mprotect        mmap_munmap_pair,mprotect_split,syscall_null
khugepaged_scan      khugepaged_scan_per_pte
access_curve         access_random_4k_ws*,access_random_2m_ws*
compaction           page_migrate_4k,compact_scan_per_page
`;

describe('calibrate --only selection', () => {
  const groups = parseGroupList(LIST);
  it('parses the calibrator --list output', () => {
    expect(groups.get('compaction')).toEqual(['page_migrate_4k', 'compact_scan_per_page']);
    expect(groups.size).toBe(4);
  });
  it('keeps only the named costs of a group that ran', () => {
    expect(selectCosts(['page_migrate_4k'], groups, ['page_migrate_4k', 'compact_scan_per_page'])).toEqual(['page_migrate_4k']);
  });
  it('a group id selects all of its costs, including prefix patterns', () => {
    expect(selectCosts(['compaction'], groups, ['page_migrate_4k', 'compact_scan_per_page'])).toEqual([
      'page_migrate_4k',
      'compact_scan_per_page',
    ]);
    expect(selectCosts(['access_curve'], groups, ['access_random_4k_ws16M', 'access_random_2m_ws1G', 'access_tlb_hit'])).toEqual([
      'access_random_4k_ws16M',
      'access_random_2m_ws1G',
    ]);
  });
});

describe('calibrate --merge', () => {
  const text = readFileSync(fromRoot('profiles', 'default.json'), 'utf8');
  const base = JSON.parse(text) as CostProfileData;
  const fresh: CostProfileData = {
    machine: { ...base.machine },
    date: '2099-01-01',
    source: 'test',
    costs: { khugepaged_scan_new: { min: 1, median: 2, max: 3, unit: 'ns per PTE', method: 'm' } },
  };

  it('adds the new cost at the end and leaves every other byte of the profile as it was', () => {
    const merged = mergeProfile(JSON.parse(text), fresh);
    const out = JSON.stringify(merged, null, 2) + '\n';
    const { khugepaged_scan_new, ...rest } = merged.costs;
    expect(JSON.stringify({ ...merged, costs: rest }, null, 2) + '\n').toBe(text);
    expect(Object.keys(merged.costs).at(-1)).toBe('khugepaged_scan_new');
    expect(khugepaged_scan_new!.median).toBe(2);
    expect(khugepaged_scan_new!.method).toMatch(/^m \[Measured 2099-01-01/);
    expect(out.startsWith(text.slice(0, text.indexOf('"costs"')))).toBe(true);
  });

  it('keeps the entries that were not measured here (published or derived VM costs) with their sources', () => {
    const derived = Object.entries(base.costs).filter(([, c]) => c.derived?.startsWith('published:'));
    expect(derived.map(([k]) => k)).toEqual(expect.arrayContaining(['vmexit_ioeventfd', 'kvm_ept_violation', 'guest_page_alloc']));
    const merged = mergeProfile(JSON.parse(text), fresh);
    for (const [k, c] of derived) expect(merged.costs[k]).toEqual(c);
  });

  it('replaces a re-measured cost in place', () => {
    const first = Object.keys(base.costs)[0]!;
    const merged = mergeProfile(JSON.parse(text), { ...fresh, costs: { [first]: fresh.costs.khugepaged_scan_new! } });
    expect(Object.keys(merged.costs)).toEqual(Object.keys(base.costs));
    expect(merged.costs[first]!.median).toBe(2);
  });

  it('refuses to merge measurements of another machine', () => {
    expect(() => mergeProfile(JSON.parse(text), { ...fresh, machine: { ...fresh.machine, cores: 999 } })).toThrow(CalibrateError);
  });

  it('refuses a file that is not a profile', () => {
    expect(() => mergeProfile({ costs: {} }, fresh, 'x.json')).toThrow(/x\.json: field/);
  });
});
