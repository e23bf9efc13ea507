/** The PC machines' RAM split, against the examples in QEMU's pc_piix.c and the q35 rules. */
import { describe, expect, it } from 'vitest';
import { pcE820, pcRamSplit, E820_RAM } from './pc.ts';
import { QemuError } from './memory_backend.ts';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const split = (...a: Parameters<typeof pcRamSplit>): [number, number] => {
  const s = pcRamSplit(...a);
  return [s.below4g / MiB, s.above4g / MiB];
};

describe('PC RAM layout', () => {
  it('q35: below 0xb0000000 everything is low; from 2.75 GiB on the split is at 2 GiB', () => {
    expect(split('q35', 2 * GiB)).toEqual([2048, 0]);
    expect(split('q35', 2.5 * GiB)).toEqual([2560, 0]);
    expect(split('q35', 0xb0000000 - MiB)).toEqual([2815, 0]);
    expect(split('q35', 0xb0000000)).toEqual([2048, 768]);
    expect(split('q35', 5 * GiB)).toEqual([2048, 3072]);
    expect(split('q35', 5 * GiB, GiB)).toEqual([1024, 4096]);
  });

  it("pc (i440fx): pc_piix.c's examples", () => {
    expect(split('pc', 4 * GiB)).toEqual([3072, 1024]); // qemu -M pc -m 4G
    expect(split('pc', 4 * GiB, 2 * GiB)).toEqual([2048, 2048]); // max-ram-below-4g=2G
    expect(split('pc', 3968 * MiB, 4 * GiB)).toEqual([3968, 0]); // max-ram-below-4g=4G -m 3968M: all low
    expect(split('pc', 3 * GiB)).toEqual([3072, 0]);
    expect(split('pc', 3.25 * GiB)).toEqual([3328, 0]); // below 3.5 GiB: no split
    expect(split('pc', 3.5 * GiB)).toEqual([3072, 512]);
  });

  it('warns and refuses as the machine property does', () => {
    expect(pcRamSplit('q35', 8 * GiB, 1536 * MiB).warnings[0]).toContain('max-ram-below-4g is not a multiple of 1G');
    expect(() => pcRamSplit('q35', GiB, 5 * GiB)).toThrow(QemuError);
    expect(() => pcRamSplit('q35', GiB, 5 * GiB)).toThrow(
      "Machine option 'max-ram-below-4g=5368709120' expects size less than or equal to 4G",
    );
  });

  it('e820: RAM below the hole and from 4 GiB', () => {
    expect(pcE820(pcRamSplit('q35', 5 * GiB))).toEqual([
      { address: 0, length: 2 * GiB, type: E820_RAM },
      { address: 4 * GiB, length: 3 * GiB, type: E820_RAM },
    ]);
    expect(pcE820(pcRamSplit('q35', GiB))).toEqual([{ address: 0, length: GiB, type: E820_RAM }]);
  });
});
