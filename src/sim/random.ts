import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { uniformInt } from 'pure-rand/distribution/uniformInt';

/**
 * All randomness in a run derives from one seed. Each consumer asks for a
 * named stream; a stream's seed is a hash of (run seed, name), so adding a
 * new consumer never perturbs the numbers another consumer sees.
 */
export class SeededRandom {
  private readonly streams = new Map<string, RandomStream>();
  constructor(readonly seed: number) {}

  stream(name: string): RandomStream {
    let s = this.streams.get(name);
    if (!s) {
      s = new RandomStream(xoroshiro128plus(mix(this.seed, name)));
      this.streams.set(name, s);
    }
    return s;
  }
}

export class RandomStream {
  constructor(private readonly rng: ReturnType<typeof xoroshiro128plus>) {}

  /** Integer in [from, to], both included. */
  int(from: number, to: number): number {
    return uniformInt(this.rng, from, to);
  }

  /** Float in [0, 1) with 32 bits of randomness. */
  float(): number {
    return (this.rng.next() >>> 0) / 0x1_0000_0000;
  }
}

/** FNV-1a over the name, folded with the seed: a stable 32-bit stream seed. */
function mix(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ (seed >>> 0);
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= Math.floor(seed / 0x1_0000_0000);
  return h | 0;
}
