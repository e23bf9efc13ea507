import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { formatRate, parseRate } from './input_error.ts';

describe('parseRate', () => {
  it('reads bytes/s (decimal and binary prefixes) and bits/s as NICs are sold', () => {
    expect(parseRate(1250000000)).toBe(1.25e9);
    expect(parseRate('1.25GB/s')).toBe(1.25e9);
    expect(parseRate('1250MB/s')).toBe(1.25e9);
    expect(parseRate('1250 MB/s')).toBe(1.25e9);
    expect(parseRate('10Gbit/s')).toBe(1.25e9);
    expect(parseRate('10 Gb/s')).toBe(1.25e9);
    expect(parseRate('10Gbps')).toBe(1.25e9);
    expect(parseRate('100Mbit/s')).toBe(12.5e6);
    expect(parseRate('1kbit/s')).toBe(125);
    expect(parseRate('1GiB/s')).toBe(2 ** 30);
    expect(parseRate('800kB/s')).toBe(800e3);
    expect(parseRate('512B/s')).toBe(512);
  });

  it('refuses what is not a positive rate', () => {
    for (const v of ['10G', '10', 'fast', '0Gbit/s', '-1MB/s', '10 Gibit/s', '1e9B/s', '', Infinity, -5, 0, NaN, null, {}])
      expect(parseRate(v)).toBeUndefined();
  });

  it('property: a bit rate is an eighth of the same number in bytes, for every prefix', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 10 ** 6 }), fc.constantFrom('', 'k', 'M', 'G', 'T'), (n, p) => {
        expect(parseRate(`${n}${p}bit/s`)! * 8).toBeCloseTo(parseRate(`${n}${p === 'k' ? 'k' : p}B/s`)!, 0);
      }),
    );
  });

  it('formats a rate in bits and bytes', () => {
    expect(formatRate(1.25e9)).toBe('10 Gbit/s (1.25 GB/s)');
    expect(formatRate(250e6)).toBe('2 Gbit/s (250 MB/s)');
  });
});
