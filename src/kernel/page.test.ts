import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { MemMap, PAGES_PER_SECTION, PG } from './page.ts';

/**
 * The plain frame metadata the compact sections must read back exactly:
 * one value per frame and field, with the defaults a fresh frame has.
 */
class PlainMemMap {
  private readonly f = new Map<string, Float64Array>();
  private static readonly defaults: Record<string, number> = { next: -1, prev: -1, lastCpupid: -1 };
  constructor(private readonly total: number) {}
  private col(field: string): Float64Array {
    let a = this.f.get(field);
    if (!a) this.f.set(field, (a = new Float64Array(this.total).fill(PlainMemMap.defaults[field] ?? 0)));
    return a;
  }
  get(field: string, pfn: number): number {
    return this.col(field)[pfn]!;
  }
  set(field: string, pfn: number, v: number): void {
    this.col(field)[pfn] = v;
  }
}

const FIELDS = ['flags', 'order', 'mapcount', 'entireMapcount', 'owner', 'index', 'token', 'lastCpupid', 'memcg', 'next', 'prev'] as const;

function read(m: MemMap, field: (typeof FIELDS)[number], pfn: number): number {
  switch (field) {
    case 'flags':
      return m.flags(pfn);
    case 'order':
      return m.order(pfn);
    case 'mapcount':
      return m.mapcount(pfn);
    case 'entireMapcount':
      return m.entireMapcount(pfn);
    case 'owner':
      return m.owner(pfn);
    case 'index':
      return m.index(pfn);
    case 'token':
      return m.token(pfn);
    case 'lastCpupid':
      return m.lastCpupid(pfn);
    case 'memcg':
      return m.memcg(pfn);
    case 'next':
      return m.next(pfn);
    case 'prev':
      return m.prev(pfn);
  }
}

type Op =
  | { op: 'setOwner' | 'setIndex' | 'setNext' | 'setPrev' | 'setToken' | 'setFlags' | 'setOrder'; pfn: number; v: number }
  | { op: 'addMapcount' | 'addEntireMapcount'; pfn: number; v: number }
  | { op: 'resetPage'; pfn: number }
  | { op: 'resetRange'; pfn: number; n: number }
  | { op: 'initAnonPage'; pfn: number; owner: number; index: number }
  | { op: 'initAnonFolio'; pfn: number; order: number; owner: number; vpn: number }
  | { op: 'lruRun'; pfn: number; n: number; owner: number; vpn: number } // frames put on a list in pfn order
  | { op: 'owners'; pfn: number; n: number; first: number } // n distinct owners on n frames
  | { op: 'farLinks'; pfn: number; n: number; stride: number } // n links far from their frames
  | { op: 'setLinks'; pfn: number; next: number; prev: number } // Section.setLinksAt: list_add's and list_del's one write
  | { op: 'xchgLastCpupid'; pfn: number; v: number }
  | { op: 'setMemcg'; pfn: number; v: number };

// Frames of two sections, mostly near a few places so runs overlap and rules collide.
const pfnArb = fc.oneof(
  fc.integer({ min: 0, max: 2 * PAGES_PER_SECTION - 1 }),
  fc.integer({ min: 0, max: 1100 }),
  fc.integer({ min: PAGES_PER_SECTION - 40, max: PAGES_PER_SECTION + 40 }),
);
const ownerArb = fc.constantFrom(0, -1, -2, 1, 2, 3, 70000);
const indexArb = fc.oneof(fc.integer({ min: 0, max: 4096 }), fc.constantFrom(0, 2 ** 32 - 1, 2 ** 32, 2 ** 40 - 1));
const linkArb = (pfn: number): fc.Arbitrary<number> =>
  fc.oneof(
    fc.constant(-1),
    fc.integer({ min: Math.max(0, pfn - 9), max: pfn + 9 }),
    fc.integer({ min: 0, max: 2 * PAGES_PER_SECTION - 1 }),
  );

const opArb: fc.Arbitrary<Op> = pfnArb.chain((pfn) =>
  fc.oneof(
    fc.record({ op: fc.constant('setOwner' as const), pfn: fc.constant(pfn), v: ownerArb }),
    fc.record({ op: fc.constant('setIndex' as const), pfn: fc.constant(pfn), v: fc.oneof(indexArb, fc.constant(pfn + 100)) }),
    fc.record({ op: fc.constant('setNext' as const), pfn: fc.constant(pfn), v: linkArb(pfn) }),
    fc.record({ op: fc.constant('setPrev' as const), pfn: fc.constant(pfn), v: linkArb(pfn) }),
    fc.record({ op: fc.constant('setToken' as const), pfn: fc.constant(pfn), v: fc.integer({ min: 0, max: 2 ** 32 - 1 }) }),
    fc.record({ op: fc.constant('setFlags' as const), pfn: fc.constant(pfn), v: fc.integer({ min: 0, max: (1 << 22) - 1 }) }),
    fc.record({ op: fc.constant('setOrder' as const), pfn: fc.constant(pfn), v: fc.integer({ min: 0, max: 18 }) }),
    fc.record({ op: fc.constant('addMapcount' as const), pfn: fc.constant(pfn), v: fc.integer({ min: -200, max: 200 }) }),
    fc.record({ op: fc.constant('addEntireMapcount' as const), pfn: fc.constant(pfn), v: fc.integer({ min: -2, max: 2 }) }),
    fc.record({ op: fc.constant('resetPage' as const), pfn: fc.constant(pfn) }),
    fc.record({ op: fc.constant('resetRange' as const), pfn: fc.constant(pfn), n: fc.integer({ min: 1, max: 1200 }) }),
    fc.record({ op: fc.constant('initAnonPage' as const), pfn: fc.constant(pfn), owner: ownerArb, index: indexArb }),
    fc.record({
      op: fc.constant('initAnonFolio' as const),
      pfn: fc.constant(pfn & ~511),
      order: fc.constantFrom(2, 9),
      owner: ownerArb,
      vpn: fc.integer({ min: 0, max: 2 ** 36 }),
    }),
    fc.record({
      op: fc.constant('lruRun' as const),
      pfn: fc.constant(pfn),
      n: fc.integer({ min: 1, max: 1500 }),
      owner: ownerArb,
      vpn: fc.integer({ min: 0, max: 2 ** 36 }),
    }),
    fc.record({
      op: fc.constant('owners' as const),
      pfn: fc.constant(pfn),
      n: fc.integer({ min: 1, max: 300 }),
      first: fc.integer({ min: 3, max: 1000 }),
    }),
    fc.record({
      op: fc.constant('farLinks' as const),
      pfn: fc.constant(pfn),
      n: fc.integer({ min: 1, max: 1100 }),
      stride: fc.integer({ min: 8, max: 5000 }),
    }),
    fc.record({ op: fc.constant('setLinks' as const), pfn: fc.constant(pfn), next: linkArb(pfn), prev: linkArb(pfn) }),
    fc.record({ op: fc.constant('xchgLastCpupid' as const), pfn: fc.constant(pfn), v: fc.integer({ min: -1, max: 5000 }) }),
    fc.record({ op: fc.constant('setMemcg' as const), pfn: fc.constant(pfn), v: fc.integer({ min: 0, max: 5 }) }),
  ),
);

const TOTAL = 2 * PAGES_PER_SECTION;
const inRange = (pfn: number): boolean => pfn >= 0 && pfn < TOTAL;

/** Apply one op to both representations; returns the pfns it touched. */
function apply(m: MemMap, p: PlainMemMap, o: Op): number[] {
  const touched: number[] = [];
  const set = (field: string, pfn: number, v: number): void => {
    p.set(field, pfn, v);
    touched.push(pfn);
  };
  switch (o.op) {
    case 'setOwner':
      m.setOwner(o.pfn, o.v);
      set('owner', o.pfn, o.v);
      break;
    case 'setIndex':
      m.setIndex(o.pfn, o.v);
      set('index', o.pfn, o.v);
      break;
    case 'setNext':
      m.setNext(o.pfn, o.v);
      set('next', o.pfn, o.v);
      break;
    case 'setPrev':
      m.setPrev(o.pfn, o.v);
      set('prev', o.pfn, o.v);
      break;
    case 'setToken':
      m.setToken(o.pfn, o.v);
      set('token', o.pfn, o.v);
      break;
    case 'setFlags':
      m.setFlags(o.pfn, o.v);
      set('flags', o.pfn, o.v);
      break;
    case 'setOrder':
      m.setOrder(o.pfn, o.v);
      set('order', o.pfn, o.v);
      break;
    case 'addMapcount':
      expect(m.addMapcount(o.pfn, o.v)).toBe(p.get('mapcount', o.pfn) + o.v);
      set('mapcount', o.pfn, p.get('mapcount', o.pfn) + o.v);
      break;
    case 'addEntireMapcount':
      expect(m.addEntireMapcount(o.pfn, o.v)).toBe(p.get('entireMapcount', o.pfn) + o.v);
      set('entireMapcount', o.pfn, p.get('entireMapcount', o.pfn) + o.v);
      break;
    case 'resetPage':
    case 'resetRange': {
      const n = o.op === 'resetPage' ? 1 : Math.min(o.n, TOTAL - o.pfn);
      if (o.op === 'resetPage') m.resetPage(o.pfn);
      else m.resetRange(o.pfn, n);
      for (let q = o.pfn; q < o.pfn + n; q++)
        for (const f of ['flags', 'order', 'mapcount', 'entireMapcount', 'owner', 'index', 'token', 'memcg']) set(f, q, 0);
      for (let q = o.pfn; q < o.pfn + n; q++) set('lastCpupid', q, -1);
      break;
    }
    case 'initAnonPage':
      m.initAnonPage(o.pfn, o.owner, o.index, PG.anon);
      set('flags', o.pfn, PG.anon);
      set('owner', o.pfn, o.owner);
      set('index', o.pfn, o.index);
      set('mapcount', o.pfn, 1);
      break;
    case 'initAnonFolio': {
      const n = 1 << o.order;
      if (o.pfn + n > TOTAL) break;
      m.initAnonFolio(o.pfn, o.order, o.owner, o.vpn, PG.anon);
      for (let j = 0; j < n; j++) {
        set('flags', o.pfn + j, (j ? PG.tail : PG.head) | PG.anon);
        set('owner', o.pfn + j, o.owner);
        set('index', o.pfn + j, o.vpn + j);
      }
      set('order', o.pfn, o.order);
      break;
    }
    case 'lruRun': {
      // lruAddNewAnon's pattern: each frame becomes the list head, linked to the one before it.
      let head = -1;
      for (let q = o.pfn; q < Math.min(TOTAL, o.pfn + o.n); q++) {
        m.setOwner(q, o.owner);
        m.setIndex(q, o.vpn + (q - o.pfn));
        m.setPrev(q, -1);
        m.setNext(q, head);
        if (head >= 0) m.setPrev(head, q);
        set('owner', q, o.owner);
        set('index', q, o.vpn + (q - o.pfn));
        set('prev', q, -1);
        set('next', q, head);
        if (head >= 0) set('prev', head, q);
        head = q;
      }
      break;
    }
    case 'owners':
      for (let j = 0; j < o.n && inRange(o.pfn + j); j++) {
        m.setOwner(o.pfn + j, o.first + j);
        set('owner', o.pfn + j, o.first + j);
      }
      break;
    case 'farLinks':
      for (let j = 0; j < o.n && inRange(o.pfn + j); j++) {
        const v = (o.pfn + j + o.stride * (j + 1)) % TOTAL;
        m.setNext(o.pfn + j, v);
        set('next', o.pfn + j, v);
      }
      break;
    case 'setLinks':
      m.sec(o.pfn).setLinksAt(o.pfn % PAGES_PER_SECTION, o.next, o.prev);
      set('next', o.pfn, o.next);
      set('prev', o.pfn, o.prev);
      break;
    case 'xchgLastCpupid':
      expect(m.xchgLastCpupid(o.pfn, o.v)).toBe(p.get('lastCpupid', o.pfn));
      set('lastCpupid', o.pfn, o.v);
      break;
    case 'setMemcg':
      m.setMemcg(o.pfn, 1, o.v);
      set('memcg', o.pfn, o.v);
      break;
  }
  return touched;
}

describe('MemMap sections', () => {
  it('read back what a plain per-frame store holds, through random sequences that widen columns', () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 30 }), (ops) => {
        const m = new MemMap(TOTAL);
        const p = new PlainMemMap(TOTAL);
        const seen = new Set<number>([0, 1, PAGES_PER_SECTION - 1, PAGES_PER_SECTION, TOTAL - 1]);
        for (const o of ops) for (const q of apply(m, p, o)) seen.add(q);
        for (const q of seen) for (const f of FIELDS) expect(read(m, f, q), `${f} of ${q}`).toBe(p.get(f, q));
      }),
      { numRuns: 60 },
    );
  });

  it('keeps the links of a section of huge folios narrow, and widens to every link intact past the escapes it keeps', () => {
    const m = new MemMap(PAGES_PER_SECTION);
    m.setNext(0, -1); // the section exists
    const narrow = m.metadataBytes();
    // 64 THP heads on one list, each linked to the next and the previous head: 126 links far from their frames.
    for (let h = 0; h < 64; h++) {
      m.setNext(h * 512, h < 63 ? (h + 1) * 512 : -1);
      m.setPrev(h * 512, h > 0 ? (h - 1) * 512 : -1);
    }
    expect(m.metadataBytes() - narrow).toBeLessThan(4096); // the escapes, not two int32 columns
    // Near links of both signs, then far ones until the section widens.
    for (let q = 1; q < 100; q++) {
      m.setNext(q, q - 1);
      m.setPrev(q, q + 1);
    }
    for (let q = 600; q < 900; q++) m.setNext(q, q + 5000);
    expect(m.metadataBytes() - narrow).toBeGreaterThanOrEqual(7 * PAGES_PER_SECTION); // two int32 columns for the byte of nibbles
    for (let h = 0; h < 64; h++) {
      expect(m.next(h * 512)).toBe(h < 63 ? (h + 1) * 512 : -1);
      expect(m.prev(h * 512)).toBe(h > 0 ? (h - 1) * 512 : -1);
    }
    for (let q = 1; q < 100; q++) expect([m.next(q), m.prev(q)]).toEqual([q - 1, q + 1]);
    for (let q = 600; q < 900; q++) expect(m.next(q)).toBe(q + 5000);
    expect([m.next(200), m.prev(200)]).toEqual([-1, -1]);
  });

  it('a THP freed and another at other virtual pages in its frames keep the index narrow', () => {
    const m = new MemMap(PAGES_PER_SECTION);
    m.initAnonFolio(512, 9, 7, 1000, PG.anon);
    const narrow = m.metadataBytes();
    expect([m.index(512), m.index(1023)]).toEqual([1000, 1511]);
    m.resetRange(512, 512);
    m.initAnonFolio(512, 9, 7, 5000, PG.anon); // the chunk's count went back to 0: a new base, no widening
    expect([m.index(512), m.index(1023), m.index(511), m.index(1024)]).toEqual([5000, 5511, 0, 0]);
    expect(m.metadataBytes()).toBe(narrow);
  });

  it('keeps a section narrow while frames follow one rule, and widens one column on a deviation', () => {
    const m = new MemMap(PAGES_PER_SECTION);
    // Frames put on an LRU list in pfn order, as the fault path and UFFDIO_COPY's bulk placement do.
    for (let q = 0; q < PAGES_PER_SECTION; q++) {
      m.initAnonPage(q, 7, 1000 + q, PG.anon);
      m.setNext(q, q - 1);
      if (q > 0) m.setPrev(q - 1, q);
    }
    const narrow = m.metadataBytes() / PAGES_PER_SECTION;
    expect(narrow).toBeLessThan(12.5);
    m.setIndex(5, 3); // breaks chunk 0's rule
    expect(m.index(5)).toBe(3);
    expect(m.index(6)).toBe(1006);
    expect(m.metadataBytes() / PAGES_PER_SECTION).toBeCloseTo(narrow + 5 - (64 * 10 + 4096) / PAGES_PER_SECTION, 5);
  });
});
