import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { VirtualClock } from './clock.ts';
import { EventQueue } from './event_queue.ts';
import { maxMinShares, NetLink, Network, Transfer, type Flow } from './network.ts';

const G10 = 1.25e9; // 10 Gbit/s in bytes/s
const net = (): Network => new Network(new EventQueue(new VirtualClock()));

/** Two hosts a and b with 10 Gbit/s NICs, 25 µs each. */
function twoHosts(): Network {
  const n = net();
  n.addHost('a', { bandwidth: G10, latency: 25_000 });
  n.addHost('b', { bandwidth: G10, latency: 25_000 });
  return n;
}

describe('max-min fair shares', () => {
  it('a flow alone gets the whole link; two share it equally; three get a third each', () => {
    const n = twoHosts();
    const p = n.path('a', 'b');
    expect(p.links.map((l) => l.name)).toEqual(['a.tx', 'b.rx']);
    expect(p.latency).toBe(50_000);
    const f = [n.flow('f0', p), n.flow('f1', p), n.flow('f2', p)];
    f[0]!.start();
    expect(f[0]!.rate).toBe(G10);
    f[1]!.start();
    expect(f.map((x) => x.rate)).toEqual([G10 / 2, G10 / 2, 0]);
    f[2]!.start();
    for (const x of f) expect(x.rate).toBeCloseTo(G10 / 3, 3);
    f[0]!.stop();
    expect(f.map((x) => x.rate)).toEqual([0, G10 / 2, G10 / 2]);
  });

  it('NICs are full duplex: a flow each way both get the whole NIC', () => {
    const n = twoHosts();
    const ab = n.flow('ab', n.path('a', 'b'));
    const ba = n.flow('ba', n.path('b', 'a'));
    ab.start();
    ba.start();
    expect([ab.rate, ba.rate]).toEqual([G10, G10]);
  });

  it('a flow held elsewhere leaves the rest of a shared link to the others (the textbook example)', () => {
    // f1 crosses L1 only; f2 crosses L1 and L2 (capacity 2): f2 gets 2, f1 the other 8 of L1.
    const l1 = new NetLink('L1', 10, 0);
    const l2 = new NetLink('L2', 2, 0);
    expect(
      maxMinShares([
        { links: [l1], bound: Infinity },
        { links: [l1, l2], bound: Infinity },
      ]),
    ).toEqual([8, 2]);
    // A cap below the fair share is a bottleneck of the flow's own.
    expect(
      maxMinShares([
        { links: [l1], bound: 1 },
        { links: [l1], bound: Infinity },
        { links: [l1], bound: Infinity },
      ]),
    ).toEqual([1, 4.5, 4.5]);
  });

  it('a flow with a cap (an application rate, a rate limit) gets at most its cap, the others the rest', () => {
    const n = twoHosts();
    const p = n.path('a', 'b');
    const bg = n.flow('bg', p, { cap: 250e6 });
    const mig = n.flow('mig', p);
    bg.start();
    mig.start();
    expect([bg.rate, mig.rate]).toEqual([250e6, G10 - 250e6]);
    bg.setCap(undefined);
    expect([bg.rate, mig.rate]).toEqual([G10 / 2, G10 / 2]);
  });

  it('a destination NIC shared by senders on two hosts is the bottleneck; the fabric is when it is smaller', () => {
    const n = net();
    for (const h of ['a', 'b', 'c']) n.addHost(h, { bandwidth: G10, latency: 0 });
    const ac = n.flow('ac', n.path('a', 'c'));
    const bc = n.flow('bc', n.path('b', 'c'));
    ac.start();
    bc.start();
    expect([ac.rate, bc.rate]).toEqual([G10 / 2, G10 / 2]);
    const m = net();
    for (const h of ['a', 'b', 'c', 'd']) m.addHost(h, { bandwidth: G10, latency: 0 });
    m.setFabric({ bandwidth: G10, latency: 1000 });
    const ab = m.flow('ab', m.path('a', 'b'));
    const cd = m.flow('cd', m.path('c', 'd'));
    expect(m.path('a', 'b').latency).toBe(1000);
    ab.start();
    cd.start();
    expect([ab.rate, cd.rate]).toEqual([G10 / 2, G10 / 2]);
  });

  it("a flow's TCP window bounds it to window / RTT (far above a LAN NIC, binding over a long path)", () => {
    const n = net();
    n.addHost('a', { bandwidth: G10, latency: 25_000_000 });
    n.addHost('b', { bandwidth: G10, latency: 25_000_000 });
    const f = n.flow('f', n.path('a', 'b'));
    f.start();
    // 4 MiB in flight per 100 ms round trip.
    expect(f.rate).toBeCloseTo((4 * 2 ** 20) / 0.1, 3);
    const lan = twoHosts().flow('lan', twoHosts().path('a', 'b'));
    expect(lan.bound).toBeGreaterThan(G10 * 30);
  });

  it('rateIfActive answers without changing any share', () => {
    const n = twoHosts();
    const p = n.path('a', 'b');
    const a = n.flow('a', p);
    const b = n.flow('b', p);
    a.start();
    expect(n.rateIfActive(b)).toBe(G10 / 2);
    expect([a.rate, b.rate, b.active]).toEqual([G10, 0, false]);
  });

  it('property: on random hosts, NICs, fabric and flows, no link is over capacity and every flow is held by its bound or by a full link where no flow gets more', () => {
    const arb = fc.record({
      hosts: fc.array(fc.integer({ min: 1, max: 100 }), { minLength: 2, maxLength: 6 }),
      fabric: fc.option(fc.integer({ min: 1, max: 200 }), { nil: undefined }),
      flows: fc.array(
        fc.record({
          from: fc.nat(),
          to: fc.nat(),
          cap: fc.option(fc.integer({ min: 1, max: 150 }), { nil: undefined }),
          active: fc.boolean(),
        }),
        { minLength: 1, maxLength: 12 },
      ),
    });
    fc.assert(
      fc.property(arb, (t) => {
        const n = net();
        t.hosts.forEach((bw, i) => n.addHost(`h${i}`, { bandwidth: bw * 1e6, latency: 0 }));
        if (t.fabric) n.setFabric({ bandwidth: t.fabric * 1e6, latency: 0 });
        const flows: Flow[] = [];
        t.flows.forEach((x, i) => {
          const a = x.from % t.hosts.length;
          let b = x.to % t.hosts.length;
          if (b === a) b = (a + 1) % t.hosts.length;
          const f = n.flow(`f${i}`, n.path(`h${a}`, `h${b}`), x.cap ? { cap: x.cap * 1e6 } : {});
          if (x.active) f.start();
          flows.push(f);
        });
        const eps = 1e-9;
        for (const l of n.links) {
          const load = flows.filter((f) => f.active && f.links.includes(l)).reduce((s, f) => s + f.rate, 0);
          expect(load).toBeLessThanOrEqual(l.capacity * (1 + eps));
          expect(l.load).toBeCloseTo(load, 0);
        }
        for (const f of flows) {
          if (!f.active) {
            expect(f.rate).toBe(0);
            continue;
          }
          expect(f.rate).toBeGreaterThan(0);
          const atBound = f.rate >= f.bound * (1 - eps);
          const heldBy = f.links.some((l) => {
            const on = flows.filter((g) => g.active && g.links.includes(l));
            const load = on.reduce((s, g) => s + g.rate, 0);
            return load >= l.capacity * (1 - eps) && on.every((g) => g.rate <= f.rate * (1 + eps));
          });
          expect(atBound || heldBy).toBe(true);
        }
        // The same flows given in another order get the same shares.
        const act = flows.filter((f) => f.active);
        const rev = maxMinShares([...act].reverse()).reverse();
        act.forEach((f, i) => expect(rev[i]).toBeCloseTo(f.rate, 3));
      }),
      { numRuns: 300 },
    );
  });
});

describe('flows in virtual time', () => {
  it('integrates bytes per flow and per link, and tells listeners each new rate', () => {
    const q = new EventQueue(new VirtualClock());
    const n = new Network(q);
    n.addHost('a', { bandwidth: 1000, latency: 0 });
    n.addHost('b', { bandwidth: 1000, latency: 0 });
    const p = n.path('a', 'b');
    const f1 = n.flow('f1', p);
    const f2 = n.flow('f2', p);
    const heard: string[] = [];
    f1.onRate((f, prev) => heard.push(`${f.name} ${prev}->${f.rate}@${q.clock.now()}`));
    f1.start();
    q.schedule(1e9, 'f2 starts', () => f2.start());
    q.schedule(2e9, 'f1 stops', () => f1.stop());
    q.runUntil(3e9);
    n.settle();
    expect(f1.bytes).toBeCloseTo(1500, 6);
    expect(f2.bytes).toBeCloseTo(1500, 6);
    expect(n.host('a')!.tx.bytes).toBeCloseTo(3000, 6);
    expect(heard).toEqual(['f1 0->1000@0', 'f1 1000->500@1000000000', 'f1 500->0@2000000000']);
  });

  it('a transfer ends at start + bytes / rate, and moves when another flow takes half the link', () => {
    const q = new EventQueue(new VirtualClock());
    const n = new Network(q);
    const p = n.privatePath('wire', G10, 50_000);
    const f = n.flow('mig', p);
    const other = n.flow('other', p);
    f.start();
    let replans = 0;
    const tx = new Transfer(f, G10, 0, () => replans++);
    expect(tx.at(G10)).toBe(1e9);
    expect(tx.at(G10 / 4)).toBe(0.25e9);
    q.schedule(0.5e9, 'other starts', () => other.start());
    q.runUntil(0.5e9);
    // Half was sent at the full rate; the other half goes at half the rate.
    expect(replans).toBe(1);
    expect(tx.at(G10)).toBe(1.5e9);
    q.schedule(1e9, 'other stops', () => other.stop());
    q.runUntil(1e9);
    expect(tx.at(G10)).toBe(1.25e9);
    q.runUntil(1.3e9);
    other.start();
    // Already all on the wire: nothing moves.
    expect(replans).toBe(2);
    expect(tx.at(G10)).toBe(1.25e9);
  });

  it('a transfer that would end beyond reach of virtual time (2^53 ns) never ends, rather than at a time the queue refuses', () => {
    const q = new EventQueue(new VirtualClock());
    const n = new Network(q);
    const f = n.flow('slow', n.privatePath('wire', 1, 0));
    f.start();
    const tx = new Transfer(f, 2 ** 40, 0, () => {});
    expect(tx.at(1)).toBe(1e9);
    expect(tx.at(2 ** 40)).toBe(Infinity);
  });
});
