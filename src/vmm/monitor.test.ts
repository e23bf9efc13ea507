/**
 * The monitor: QMP replies shaped as QEMU's, HMP `info` output, and the
 * `info ram` table of a 5 GiB two-node q35 guest.
 */
import { describe, expect, it } from 'vitest';
import { vmTestKernel } from './test_fixtures.ts';
import { Vm } from './vm.ts';
import { Monitor, QmpError } from './monitor.ts';

const MiB = 2 ** 20;

/** -machine q35 -m 5G -smp 4 with two 2.5 GiB memdevs, each bound to a host node, one per guest node. */
function twoNodeGuest(): Vm {
  return new Vm(vmTestKernel(), {
    name: 'guest0',
    machine: 'q35',
    m: 5120 * MiB,
    smp: 4,
    objects: [
      { 'qom-type': 'memory-backend-ram', id: 'ram-node0', size: 2560 * MiB, 'host-nodes': [0], policy: 'bind' },
      { 'qom-type': 'memory-backend-ram', id: 'ram-node1', size: 2560 * MiB, 'host-nodes': [1], policy: 'bind' },
    ],
    numa: [
      { nodeid: 0, cpus: [0, 1], memdev: 'ram-node0' },
      { nodeid: 1, cpus: [2, 3], memdev: 'ram-node1' },
    ],
  });
}

describe('HMP', () => {
  it('info ram: one line per guest RAM range with GPA, RAM block, offset, HVA and guest node', () => {
    const mon = new Monitor(twoNodeGuest());
    expect(mon.hmp('info ram')).toBe(
      [
        '                                  GPA               Block Name    PSize             Offset                                   HVA Node',
        '0x0000000000000000-0x000000007fffffff                ram-node0    4 KiB 0x0000000000000000 0x00007eff5fe00000-0x00007effdfdfffff    0',
        '0x0000000100000000-0x000000011fffffff                ram-node0    4 KiB 0x0000000080000000 0x00007effdfe00000-0x00007effffdfffff    0',
        '0x0000000120000000-0x00000001bfffffff                ram-node1    4 KiB 0x0000000000000000 0x00007efebfc00000-0x00007eff5fbfffff    1',
        '',
      ].join('\n'),
    );
  });

  it('info mtree, info numa and info ramblock as QEMU prints them', () => {
    const mon = new Monitor(twoNodeGuest());
    expect(mon.hmp('info mtree')).toBe(
      [
        'address-space: memory',
        '  0000000000000000-ffffffffffffffff (prio 0, i/o): system',
        '    0000000000000000-000000007fffffff (prio 0, i/o): alias ram-below-4g @pc.ram 0000000000000000-000000007fffffff',
        '    0000000000000000-ffffffffffffffff (prio -1, i/o): pci',
        '    0000000100000000-00000001bfffffff (prio 0, i/o): alias ram-above-4g @pc.ram 0000000080000000-000000013fffffff',
        '',
        'memory-region: pc.ram',
        '  0000000000000000-000000013fffffff (prio 0, i/o): pc.ram',
        '    0000000000000000-000000009fffffff (prio 0, ram): ram-node0',
        '    00000000a0000000-000000013fffffff (prio 0, ram): ram-node1',
        '',
        '',
      ].join('\n'),
    );
    expect(mon.hmp('info numa')).toBe(
      '2 nodes\nnode 0 cpus: 0 1\nnode 0 size: 2560 MB\nnode 0 plugged: 0 MB\nnode 1 cpus: 2 3\nnode 1 size: 2560 MB\nnode 1 plugged: 0 MB\n',
    );
    expect(mon.hmp('info ramblock')).toBe(
      [
        '              Block Name    PSize              Offset               Used              Total                HVA  RO',
        '               ram-node0    4 KiB  0x0000000000000000 0x00000000a0000000 0x00000000a0000000 0x00007eff5fe00000  rw',
        '               ram-node1    4 KiB  0x00000000a0000000 0x00000000a0000000 0x00000000a0000000 0x00007efebfc00000  rw',
        '',
      ].join('\n'),
    );
    expect(mon.hmp('info nothing')).toBe("unknown command: 'info nothing'\n");
  });

  it('without vNUMA: the default pc.ram memdev, aliased below and above 4 GiB', () => {
    const mon = new Monitor(new Vm(vmTestKernel(), { m: 3 * 1024 * MiB }));
    expect(mon.hmp('info mtree')).toContain('(prio 0, ram): alias ram-above-4g @pc.ram 0000000080000000-00000000bfffffff');
    expect(mon.hmp('info mtree')).toContain('memory-region: pc.ram\n  0000000000000000-00000000bfffffff (prio 0, ram): pc.ram\n');
    expect(mon.hmp('info numa')).toBe('0 nodes\n');
    expect(mon.hmp('info ram').split('\n')[2]).toMatch(/^0x0000000100000000-0x000000013fffffff {19}pc\.ram {4}4 KiB 0x0000000080000000 /);
  });
});

describe('QMP', () => {
  it('answers with QEMU-shaped replies and errors', () => {
    const mon = new Monitor(twoNodeGuest());
    expect(mon.execute({ execute: 'qmp_capabilities' })).toEqual({ return: {} });
    expect(mon.execute({ execute: 'query-name', id: 7 })).toEqual({ return: { name: 'guest0' }, id: 7 });
    expect(mon.executeJson('{"execute":"query-memdev"}')).toBe(
      JSON.stringify({
        return: [
          {
            id: 'ram-node0',
            size: 2684354560,
            merge: true,
            dump: true,
            prealloc: false,
            share: false,
            reserve: true,
            'host-nodes': [0],
            policy: 'bind',
          },
          {
            id: 'ram-node1',
            size: 2684354560,
            merge: true,
            dump: true,
            prealloc: false,
            share: false,
            reserve: true,
            'host-nodes': [1],
            policy: 'bind',
          },
        ],
      }),
    );
    const cpus = mon.execute({ execute: 'query-cpus-fast' }) as { return: Record<string, unknown>[] };
    expect(cpus.return[2]).toEqual({
      'thread-id': mon.vm.vcpus[2]!.thread.tid,
      props: { 'node-id': 1, 'socket-id': 0, 'core-id': 2, 'thread-id': 0 },
      'qom-path': '/machine/unattached/device[2]',
      'cpu-index': 2,
      target: 'x86_64',
    });
    expect(mon.execute({ execute: 'query-memory-devices' })).toEqual({ return: [] });
    expect(mon.execute({ execute: 'balloon', arguments: { value: 1 } })).toEqual({
      error: { class: 'CommandNotFound', desc: 'The command balloon has not been found' },
    });
    expect(mon.execute({ execute: 'human-monitor-command' })).toEqual({
      error: { class: 'GenericError', desc: "Parameter 'command-line' is missing" },
    });
    expect(mon.execute({ execute: 'query-name', arguments: { x: 1 } })).toEqual({
      error: { class: 'GenericError', desc: "Parameter 'x' is unexpected" },
    });
    expect(mon.execute({ arguments: {} })).toEqual({ error: { class: 'GenericError', desc: "QMP input lacks member 'execute'" } });
    expect(mon.execute('{not json')).toEqual({ error: { class: 'GenericError', desc: 'JSON parse error, invalid literal' } });
  });

  it('human-monitor-command returns the HMP text with the monitor\'s "\\r\\n" line ends', () => {
    const mon = new Monitor(twoNodeGuest());
    const r = mon.execute({ execute: 'human-monitor-command', arguments: { 'command-line': 'info numa' } }) as { return: string };
    expect(r.return).toBe(mon.hmp('info numa').replace(/\n/g, '\r\n'));
    expect(r.return.startsWith('2 nodes\r\nnode 0 cpus: 0 1\r\n')).toBe(true);
  });

  it('lets devices and migration register their commands', () => {
    const mon = new Monitor(twoNodeGuest());
    let target = 0;
    mon.registerCommand(
      'balloon',
      (a) => {
        if (typeof a.value !== 'number' || a.value <= 0) throw new QmpError('GenericError', "Parameter 'value' expects a size");
        target = a.value;
        return {};
      },
      ['value'],
    );
    mon.registerCommand('query-balloon', () => ({ actual: target || mon.vm.ramSize }), []);
    mon.registerHmp('info balloon', () => `balloon: actual=${(target || mon.vm.ramSize) / MiB}\n`);
    expect(mon.execute({ execute: 'balloon', arguments: { value: 1024 * MiB } })).toEqual({ return: {} });
    expect(mon.execute({ execute: 'query-balloon' })).toEqual({ return: { actual: 1024 * MiB } });
    expect(mon.execute({ execute: 'balloon', arguments: { value: -1 } })).toEqual({
      error: { class: 'GenericError', desc: "Parameter 'value' expects a size" },
    });
    expect(mon.hmp('info balloon')).toBe('balloon: actual=1024\n');
    expect(() => mon.registerCommand('balloon', () => ({}))).toThrow('already registered');
    expect((mon.execute({ execute: 'query-commands' }) as { return: { name: string }[] }).return.map((c) => c.name)).toContain(
      'query-balloon',
    );
  });
});
