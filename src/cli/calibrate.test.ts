import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromRoot } from '../util/paths.ts';
import {
  CALIBRATE_BIN,
  CalibrateError,
  checkCalibrateArgs,
  mergeProfile,
  parseGroupList,
  selectCosts,
  unknownNames,
  writeProfile,
} from './calibrate.ts';
import { CostProfile, PROFILE_COSTS, type CostProfileData } from '../sim/cost_profile.ts';
import { InputError } from '../util/input_error.ts';

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
    expect(() => mergeProfile(JSON.parse(text), { ...fresh, machine: { ...fresh.machine, cores: 999 } })).toThrow(
      /machine: measured on another machine \(cores: 2 there, 999 here\); not merging/,
    );
  });

  it('refuses a file that is not a profile', () => {
    expect(() => mergeProfile({ costs: {} }, fresh, 'x.json')).toThrow(/^x\.json: machine: not a cost profile/);
  });

  it('merges a newer kernel build when told to (--other-machine), and each merged entry records where it was measured', () => {
    const newer = { ...fresh.machine, kernel: 'newer-build', mem_bytes: 1 };
    const merged = mergeProfile(JSON.parse(text), { ...fresh, machine: newer }, 'p.json', true);
    const c = merged.costs.khugepaged_scan_new!;
    expect(c.measured_on).toEqual({ ...newer, date: '2099-01-01' });
    expect(c.method).toMatch(
      /on newer-build, not this profile's machine \(kernel: .* there, newer-build here; mem_bytes: \d+ there, 1 here\)/,
    );
    // The profile's own machine record, and every entry not measured now, stay as they were.
    expect(merged.machine).toEqual(base.machine);
    for (const [k, v] of Object.entries(base.costs)) if (k !== 'khugepaged_scan_new') expect(merged.costs[k]).toEqual(v);
    // The same machine records nothing extra.
    expect(mergeProfile(JSON.parse(text), fresh, 'p.json', true).costs.khugepaged_scan_new!.measured_on).toBeUndefined();
  });

  it("the shipped profile's entries measured on a newer build of its machine say so in measured_on", () => {
    const elsewhere = Object.values(base.costs).filter((c) => c.measured_on);
    expect(elsewhere.length).toBeGreaterThan(0);
    for (const c of elsewhere) {
      expect(c.measured_on!.kernel).not.toBe(base.machine.kernel);
      expect(c.method).toContain(c.measured_on!.kernel);
    }
  });
});

const dir = mkdtempSync(join(tmpdir(), 'memtwin-calibrate-'));
const bin = fromRoot('bin', 'memtwin.js');
const memtwin = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
const defaultText = readFileSync(fromRoot('profiles', 'default.json'), 'utf8');
/** The default profile without `drop`: what `calibrate --only` writes is such a profile. */
function partialProfile(name: string, drop: readonly string[]): string {
  const p = JSON.parse(defaultText) as CostProfileData;
  for (const c of drop) delete p.costs[c];
  const f = join(dir, name);
  writeFileSync(f, JSON.stringify(p, null, 2));
  return f;
}
const thrown = (f: () => unknown): Error => {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error');
};

describe('calibrate checks its arguments before measuring', () => {
  const base = JSON.parse(defaultText) as CostProfileData;
  const groups = () => LIST;

  it('refuses a --merge profile of another machine, naming what differs', () => {
    const e = thrown(() =>
      checkCalibrateArgs({ merge: fromRoot('profiles', 'default.json') }, () => ({ ...base.machine, kernel: 'other' }), groups),
    );
    expect(e).toBeInstanceOf(InputError);
    expect(e.message).toMatch(/default\.json: machine: measured on another machine \(kernel: .* there, other here\); not merging/);
    // The same machine: the raw profile to merge into comes back.
    expect(checkCalibrateArgs({ merge: fromRoot('profiles', 'default.json') }, () => base.machine, groups)).toEqual(base);
    // Told that the machine differs on purpose, it merges.
    const other = () => ({ ...base.machine, kernel: 'other' });
    expect(checkCalibrateArgs({ merge: fromRoot('profiles', 'default.json'), otherMachine: true }, other, groups)).toEqual(base);
  });

  it('refuses unknown --only names, an empty --only, a --merge file that is missing or not a profile, an --out it cannot write', () => {
    expect(unknownNames(['compaction', 'access_random_4k_ws16M', 'page_migrate_4k', 'pgae_migrate_4k'], parseGroupList(LIST))).toEqual([
      'pgae_migrate_4k',
    ]);
    expect(thrown(() => checkCalibrateArgs({ only: ['pgae_migrate_4k'] }, undefined, groups)).message).toMatch(
      /^--only: unknown cost or group 'pgae_migrate_4k'/,
    );
    expect(thrown(() => checkCalibrateArgs({ only: [] })).message).toMatch(/^--only: needs at least one/);
    expect(thrown(() => checkCalibrateArgs({ merge: join(dir, 'none.json') })).message).toMatch(
      /none\.json: cannot read the profile to merge into \(ENOENT\)/,
    );
    writeFileSync(join(dir, 'script.jsonl'), '{"op":"meminfo"}\n');
    expect(thrown(() => checkCalibrateArgs({ merge: join(dir, 'script.jsonl') })).message).toMatch(
      /script\.jsonl: machine: not a cost profile/,
    );
    expect(thrown(() => checkCalibrateArgs({ out: join(dir, 'no', 'such', 'p.json') })).message).toMatch(
      /^--out: cannot write .*\(ENOENT\)/,
    );
    expect(thrown(() => checkCalibrateArgs({ out: dir })).message).toMatch(/is a directory/);
  });

  it.skipIf(!existsSync(CALIBRATE_BIN))('memtwin calibrate --merge of another machine exits 2 without measuring anything', () => {
    const other = JSON.parse(defaultText) as CostProfileData;
    other.machine.cpu_model = 'Some Other CPU';
    writeFileSync(join(dir, 'other.json'), JSON.stringify(other));
    const r = memtwin('calibrate', '--only', 'syscall_null', '--merge', join(dir, 'other.json'), '--out', join(dir, 'merged.json'));
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(
      /other\.json: machine: measured on another machine \(.*cpu_model: Some Other CPU there, [^;]* here.*\); not merging/,
    );
    // The calibrator never started measuring (it announces each group on stderr), and nothing was written.
    expect(r.stderr).not.toMatch(/measuring|\[calibrate\]/);
    expect(existsSync(join(dir, 'merged.json'))).toBe(false);
  });

  it('writes a profile whole or not at all, and says when it cannot', () => {
    const out = join(dir, 'written.json');
    writeProfile(base, out);
    expect(readFileSync(out, 'utf8')).toBe(JSON.stringify(base, null, 2) + '\n');
    expect(() => writeProfile(base, join(dir, 'no', 'p.json'))).toThrow(CalibrateError);
  });
});

describe('a partial profile (calibrate --only without --merge) used as --profile', () => {
  it('is refused, naming every missing cost, whatever is missing', () => {
    fc.assert(
      fc.property(fc.subarray([...PROFILE_COSTS], { minLength: 1 }), (drop) => {
        const p = JSON.parse(defaultText) as CostProfileData;
        for (const c of drop) delete p.costs[c];
        const e = thrown(() => new CostProfile(p, 'p.json'));
        expect(e).toBeInstanceOf(InputError);
        const listed = /needs: ([^.]+)\./.exec(e.message)![1]!.split(', ');
        expect(listed.sort()).toEqual([...drop].sort());
      }),
      { numRuns: 100 },
    );
    // Entries the simulator does not read may be missing.
    const p = JSON.parse(defaultText) as CostProfileData;
    delete p.costs['tlb_miss_4k'];
    expect(new CostProfile(p).ns('syscall_null')).toBeGreaterThan(0);
  });

  it('memtwin exec --profile and a scenario with profile: exit 2 with the missing costs, no stack trace', () => {
    const f = partialProfile(
      'partial.json',
      PROFILE_COSTS.filter((c) => c !== 'syscall_null'),
    );
    writeFileSync(join(dir, 's.jsonl'), '{"op":"meminfo"}\n');
    const r = memtwin('exec', join(dir, 's.jsonl'), '--profile', f);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(
      new RegExp(`partial\\.json: costs: the profile lacks ${PROFILE_COSTS.length - 1} costs the simulator needs: fault_anon_4k_write, `),
    );
    expect(r.stderr).toMatch(/memtwin calibrate --only NAMES --merge FULL\.json/);
    expect(r.stderr).not.toMatch(/\n\s+at /);

    const scen = join(dir, 'p.yaml');
    writeFileSync(
      scen,
      `name: p\nhost: this-machine\nprofile: ${partialProfile('one-missing.json', ['fault_thp_2m_write'])}\nduration: 2ms\nprocesses:\n  - name: p\n    mappings:\n      - { name: m, size: 8M }\n    threads:\n      - { name: t, cpu: 0, workload: { pattern: uniform, mapping: m } }\n`,
    );
    const s = memtwin('run', scen, '--out', join(dir, 'out-p'), '--quiet');
    expect(s.status).toBe(2);
    expect(s.stderr.trim()).toMatch(
      /^memtwin: .*one-missing\.json: costs: the profile lacks 1 cost the simulator needs: fault_thp_2m_write\. /,
    );
  });

  it('a profile file that cannot be read or parsed is reported with its name', () => {
    expect(() => CostProfile.load(join(dir, 'missing.json'))).toThrow(/missing\.json: cannot read cost profile \(ENOENT\)/);
    writeFileSync(join(dir, 'broken.json'), '{');
    expect(() => CostProfile.load(join(dir, 'broken.json'))).toThrow(/broken\.json: not a cost profile/);
    writeFileSync(join(dir, 'wrong.json'), JSON.stringify({ ...JSON.parse(defaultText), date: 5 }));
    expect(() => CostProfile.load(join(dir, 'wrong.json'))).toThrow(/wrong\.json: date: /);
  });
});
