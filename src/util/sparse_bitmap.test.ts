import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { SparseBitmap } from './sparse_bitmap.ts';

describe('SparseBitmap', () => {
  it('property: agrees with a plain array of flags, and counts set bits', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 200_000 }), fc.array(fc.nat(), { maxLength: 300 }), (n, idx) => {
        const b = new SparseBitmap(n);
        const ref = new Set<number>();
        for (const x of idx) {
          const i = x % n;
          expect(b.set(i)).toBe(!ref.has(i));
          ref.add(i);
        }
        expect(b.count).toBe(ref.size);
        for (const x of idx) expect(b.test(x % n)).toBe(true);
        for (let i = 0; i < n; i += 997) expect(b.test(i)).toBe(ref.has(i));
      }),
    );
  });

  it('costs memory only for the chunks written', () => {
    const b = new SparseBitmap(60 * 2 ** 18); // a 60 GiB mapping's 4K pages
    expect(b.bytes()).toBe(0);
    for (let i = 0; i < 2 ** 18; i++) b.set(i); // 1 GiB written
    expect(b.count).toBe(2 ** 18);
    expect(b.bytes()).toBe(2 ** 15); // 8 chunks of 4 KiB
    const f = new SparseBitmap(70_000);
    f.fill();
    expect(f.count).toBe(70_000);
    expect(f.test(69_999)).toBe(true);
  });
});
