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

describe('memory hotplug (object-add, device_add pc-dimm) and QMP events', () => {
  /** q35 with 5 GiB in two nodes, -m 5G,slots=4,maxmem=9G. */
  function hotplugGuest(extra: { slots?: number; maxmem?: number } = { slots: 4, maxmem: 9216 * MiB }): Vm {
    return new Vm(vmTestKernel(), {
      name: 'guest0',
      m: 5120 * MiB,
      ...extra,
      smp: 4,
      objects: [
        { 'qom-type': 'memory-backend-ram', id: 'ram-node0', size: 2560 * MiB },
        { 'qom-type': 'memory-backend-ram', id: 'ram-node1', size: 2560 * MiB },
      ],
      numa: [
        { nodeid: 0, cpus: [0, 1], memdev: 'ram-node0' },
        { nodeid: 1, cpus: [2, 3], memdev: 'ram-node1' },
      ],
    });
  }
  const GiB = 1024 * MiB;

  it('plugs a DIMM into device memory, answers query-memory-devices and info numa, and the guest range appears in info ram', () => {
    const vm = hotplugGuest();
    const plugged: string[] = [];
    vm.onMemoryPlug.push((d) => plugged.push(d.id));
    // q35 with 5 GiB: 2 GiB below 4G, 3 GiB above; device memory from 7 GiB, 4 GiB + 1 GiB per slot.
    expect(vm.deviceMemory && [vm.deviceMemory.base, vm.deviceMemory.size]).toEqual([7 * GiB, 8 * GiB]);
    const mon = vm.monitor;
    expect(mon.execute({ execute: 'object-add', arguments: { 'qom-type': 'memory-backend-ram', id: 'mem1', size: GiB } })).toEqual({
      return: {},
    });
    expect(mon.execute({ execute: 'device_add', arguments: { driver: 'pc-dimm', id: 'dimm1', memdev: 'mem1', node: 1 } })).toEqual({
      return: {},
    });
    expect(plugged).toEqual(['dimm1']);
    expect(mon.execute({ execute: 'query-memory-devices' })).toEqual({
      return: [
        {
          type: 'dimm',
          data: { id: 'dimm1', addr: 7 * GiB, size: GiB, slot: 0, node: 1, memdev: '/objects/mem1', hotplugged: true, hotpluggable: true },
        },
      ],
    });
    expect(mon.hmp('info numa')).toContain('node 1 size: 3584 MB\nnode 1 plugged: 1024 MB\n');
    // e820/SRAT view: node 1's RAM above 4G (4.5-7 GiB) and the DIMM right after it, one range.
    expect(vm.ramRanges().at(-1)).toEqual({ gpa: 4.5 * GiB, size: 3.5 * GiB, node: 1 });
    expect(mon.hmp('info ram')).toMatch(/0x00000001c0000000-0x00000001ffffffff\s+mem1\s+4 KiB 0x0000000000000000 .* 1\n$/);
    // A second DIMM goes after it; a guest access there reaches the new backend.
    mon.execute({ execute: 'object-add', arguments: { 'qom-type': 'memory-backend-ram', id: 'mem2', size: 512 * MiB } });
    mon.execute({ execute: 'device_add', arguments: { driver: 'pc-dimm', id: 'dimm2', memdev: 'mem2' } });
    expect(vm.memoryDevices.map((d) => [d.id, d.addr, d.slot, d.node])).toEqual([
      ['dimm1', 7 * GiB, 0, 1],
      ['dimm2', 8 * GiB, 1, 0],
    ]);
    vm.access(0, 8 * GiB, 4096, 4096, true, 7);
    expect(vm.peek(8 * GiB)).toBe(7);
    expect(vm.hostFrame(8 * GiB)).toBeTruthy();
    // The guest's _OST for a slot: ACPI_DEVICE_OST, and query-acpi-ospm-status.
    vm.acpiOst(vm.memoryDevices[0]!, 1, 0);
    expect(mon.events.at(-1)).toMatchObject({
      event: 'ACPI_DEVICE_OST',
      data: { info: { device: 'dimm1', slot: '0', 'slot-type': 'DIMM', source: 1, status: 0 } },
    });
    expect((mon.execute({ execute: 'query-acpi-ospm-status' }) as { return: unknown[] }).return).toHaveLength(4);
  });

  it("refuses what QEMU refuses, with QEMU's messages", () => {
    const desc = (vm: Vm, cmd: Record<string, unknown>): string => {
      const r = vm.monitor.execute(cmd);
      return 'error' in r ? r.error.desc : 'accepted';
    };
    const add = (args: Record<string, unknown>) => ({ execute: 'device_add', arguments: { driver: 'pc-dimm', ...args } });
    const obj = (id: string, size: number) => ({ execute: 'object-add', arguments: { 'qom-type': 'memory-backend-ram', id, size } });
    const noMaxmem = hotplugGuest({});
    noMaxmem.monitor.execute(obj('m', GiB));
    expect(desc(noMaxmem, add({ memdev: 'm' }))).toBe("no slots where allocated, please specify the 'slots' option");
    const vm = hotplugGuest();
    expect(desc(vm, add({ memdev: 'nope' }))).toBe("Property 'pc-dimm.memdev' can't find value 'nope'");
    expect(desc(vm, add({ memdev: 'ram-node0' }))).toBe("can't use already busy memdev: ram-node0");
    vm.monitor.execute(obj('big', 5 * GiB));
    expect(desc(vm, add({ memdev: 'big' }))).toBe('not enough space, currently 0x0 in use of total space for memory devices 0x100000000');
    vm.monitor.execute(obj('odd', 3 * MiB));
    expect(desc(vm, add({ memdev: 'odd' }))).toBe('backend memory size must be multiple of 0x200000');
    vm.monitor.execute(obj('m1', GiB));
    expect(desc(vm, add({ memdev: 'm1', node: 2 }))).toBe("'DIMM property node has value 2' which exceeds the number of numa nodes: 2");
    expect(desc(vm, add({ memdev: 'm1', id: 'd1' }))).toBe('accepted');
    vm.monitor.execute(obj('m2', GiB));
    expect(desc(vm, add({ memdev: 'm2', id: 'd1' }))).toBe("Duplicate device ID 'd1'");
    expect(desc(vm, add({ memdev: 'm2', addr: 7 * GiB }))).toBe("address range conflicts with memory device id='d1'");
    expect(desc(vm, { execute: 'device_add', arguments: { driver: 'virtio-mem-pcie', memdev: 'm2' } })).toBe(
      "'virtio-mem-pcie' is not a valid device model name",
    );
    expect(() => hotplugGuest({ slots: 2 })).toThrow('slots specified but no max-size');
    expect(() => hotplugGuest({ slots: 2, maxmem: 4 * GiB })).toThrow(
      'invalid value of maxmem: maximum memory size (0x100000000) must be at least the initial memory size (0x140000000)',
    );
    expect(() => hotplugGuest({ slots: 2, maxmem: 5 * GiB })).toThrow(
      /memory slots were specified but maximum memory size \(0x140000000\) is equal/,
    );
  });

  it('stop, cont and quit change query-status and send STOP, RESUME and SHUTDOWN with virtual timestamps; quit frees the VMM memory', () => {
    const vm = new Vm(vmTestKernel(), { name: 'q', m: 256 * MiB, objects: [], smp: 1 });
    const mon = vm.monitor;
    vm.access(0, 0, 64 * MiB, 4096, true, 1);
    const rss = (): number => vm.process.mm.rssAnon;
    expect(rss()).toBeGreaterThan(0);
    const free0 = vm.k.phys.freePages();
    const states: string[] = [];
    vm.onRunState.push((s) => states.push(s));
    mon.execute({ execute: 'stop' });
    expect(mon.execute({ execute: 'query-status' })).toEqual({ return: { running: false, status: 'paused' } });
    mon.execute({ execute: 'cont' });
    const ns = vm.k.clock.now();
    expect(mon.execute({ execute: 'quit' })).toEqual({ return: {} });
    expect(states).toEqual(['paused', 'running', 'shutdown']);
    expect(mon.events.map((e) => e.event)).toEqual(['STOP', 'RESUME', 'SHUTDOWN']);
    expect(mon.events[2]!.data).toEqual({ guest: false, reason: 'host-qmp-quit' });
    expect(mon.events[2]!.timestamp).toEqual({ seconds: Math.floor(ns / 1e9), microseconds: Math.floor((ns % 1e9) / 1e3) });
    expect(rss()).toBe(0);
    expect(vm.k.phys.freePages()).toBeGreaterThan(free0);
    expect(vm.process.exited).toBe(true);
    expect(mon.execute({ execute: 'query-status' })).toMatchObject({ error: { class: 'GenericError' } });
  });
});
