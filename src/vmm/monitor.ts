/**
 * The VM's monitor: QMP (JSON commands and replies shaped as QEMU's,
 * docs/interop/qmp-spec.rst) with QEMU's command names, and the HMP
 * commands reached through `human-monitor-command`.
 *
 * QMP: `{"execute": NAME, "arguments": {...}}` answers `{"return": VALUE}`
 * or `{"error": {"class": CLASS, "desc": TEXT}}`; an "id" member is echoed.
 * Commands: qmp_capabilities, query-commands, query-name, query-status,
 * query-memdev, query-memory-devices, query-cpus-fast,
 * human-monitor-command. HMP: `info mtree`, `info numa`, `info ramblock`
 * and `info ram`. HMP output comes back with "\r\n" line ends as QEMU's
 * monitor writes them; Monitor.hmp() gives the same text with "\n".
 *
 * `info ram` is the export proposed upstream for binding guest NUMA nodes
 * from outside the VMM: one line per guest RAM range (a memslot), with
 *
 *     GPA          first-last guest-physical address (inclusive, as info mtree)
 *     Block Name   the RAMBlock's idstr (a memdev id, or pc.ram)
 *     PSize        the block's host page size
 *     Offset       offset of the range's first byte inside the block
 *     HVA          first-last host virtual address in the VMM (inclusive)
 *     Node         the guest NUMA node of the range (0 without vNUMA)
 *
 * Addresses are 0x%016x like `info ramblock`; columns are right-aligned.
 * A tool reads it, then migrate_pages/move_pages/mbind the HVA range of a
 * guest node to the host node it wants.
 *
 * Devices and migration add commands with registerCommand (QMP) and
 * registerHmp (HMP, e.g. `balloon` or `info balloon`).
 *
 * Hotplug and run state: `object-add` (a memory backend), `device_add`
 * (driver pc-dimm: Vm.deviceAdd), `query-memory-devices`,
 * `query-acpi-ospm-status`, `stop`, `cont`, `quit`. Events are kept in
 * `events` as QMP sends them ({"event", "data", "timestamp": {"seconds",
 * "microseconds"}}) and passed to `onEvent` listeners: STOP, RESUME (also
 * sent around a migration's switchover: src/scenario/vms.ts),
 * SHUTDOWN (reason host-qmp-quit) and ACPI_DEVICE_OST (the guest's _OST
 * after it onlined a DIMM; QEMU has no DEVICE_ADDED event: device_add's
 * reply, and for memory the guest's _OST, are how a client learns of it).
 * The timestamp is the host's virtual time since boot (QEMU's is the wall
 * clock), so runs stay byte-identical.
 */
import type { Vm } from './vm.ts';
import { QemuError, sizeToStr, type MemoryBackendProps } from './memory_backend.ts';
import { renderMtree } from './pc.ts';

/** A QMP command failure (its class and description go into the error reply). */
export class QmpError extends Error {
  constructor(
    readonly errorClass: 'GenericError' | 'CommandNotFound' | 'DeviceNotActive' | 'DeviceNotFound' | 'KVMMissingCap',
    desc: string,
  ) {
    super(desc);
  }
}

export type QmpArgs = Record<string, unknown>;
export type QmpHandler = (args: QmpArgs) => unknown;
export type HmpHandler = (args: string) => string;
export type QmpResponse = { return: unknown; id?: unknown } | { error: { class: string; desc: string }; id?: unknown };
/** An asynchronous QMP event as the monitor sends it. */
export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

const hex = (v: number): string => `0x${v.toString(16).padStart(16, '0')}`;

export class Monitor {
  private readonly commands = new Map<string, { handler: QmpHandler; args: readonly string[] | null }>();
  private readonly hmpCommands = new Map<string, HmpHandler>();
  /** Every event emitted, in order. */
  readonly events: QmpEvent[] = [];
  /** Called for each event as it is emitted (a QMP client reading the socket). */
  readonly onEvent: ((e: QmpEvent) => void)[] = [];

  constructor(readonly vm: Vm) {
    this.registerCommand('qmp_capabilities', () => ({}), ['enable']);
    this.registerCommand('query-commands', () => [...this.commands.keys()].map((name) => ({ name })), []);
    this.registerCommand('query-name', () => (vm.name === undefined ? {} : { name: vm.name }), []);
    this.registerCommand('query-status', () => ({ running: vm.runState === 'running', status: vm.runState }), []);
    this.registerCommand('query-memdev', () => [...vm.backends.values()].map((b) => b.toMemdev()), []);
    this.registerCommand('query-memory-devices', () => this.queryMemoryDevices(), []);
    this.registerCommand('query-acpi-ospm-status', () => this.queryAcpiOspmStatus(), []);
    this.registerCommand('object-add', (a) => this.objectAdd(a), null);
    this.registerCommand('device_add', (a) => this.deviceAdd(a), null);
    this.registerCommand('stop', () => this.setRunState('paused', 'STOP'), []);
    this.registerCommand('cont', () => this.setRunState('running', 'RESUME'), []);
    this.registerCommand('quit', () => this.quit(), []);
    this.registerCommand('query-cpus-fast', () => this.queryCpusFast(), []);
    this.registerCommand('human-monitor-command', (a) => this.humanMonitorCommand(a), ['command-line', 'cpu-index']);
    this.registerHmp('info mtree', () => renderMtree(vm.system));
    this.registerHmp('info numa', () => this.infoNuma());
    this.registerHmp('info ramblock', () => this.infoRamblock());
    this.registerHmp('info ram', () => this.infoRam());
  }

  /**
   * Add a QMP command (the balloon device, migration...). `args`, when
   * given, lists the arguments it accepts; others are refused as QEMU does.
   */
  registerCommand(name: string, handler: QmpHandler, args: readonly string[] | null = null): void {
    if (this.commands.has(name)) throw new Error(`QMP command ${name} is already registered`);
    this.commands.set(name, { handler, args });
  }

  /** Whether a QMP command is registered. */
  hasCommand(name: string): boolean {
    return this.commands.has(name);
  }

  /** Add an HMP command by its words ("balloon", "info balloon"); the handler gets the rest of the line. */
  registerHmp(words: string, handler: HmpHandler): void {
    if (this.hmpCommands.has(words)) throw new Error(`HMP command ${words} is already registered`);
    this.hmpCommands.set(words, handler);
  }

  /** Execute one QMP command, given as JSON text or as an object. */
  execute(input: string | Record<string, unknown>): QmpResponse {
    let req: unknown = input;
    if (typeof input === 'string') {
      try {
        req = JSON.parse(input);
      } catch {
        return err('GenericError', 'JSON parse error, invalid literal');
      }
    }
    if (typeof req !== 'object' || req === null || Array.isArray(req)) return err('GenericError', 'QMP input must be a JSON object');
    const r = req as Record<string, unknown>;
    const withId = (resp: QmpResponse): QmpResponse => ('id' in r ? { ...resp, id: r.id } : resp);
    for (const key of Object.keys(r))
      if (!['execute', 'arguments', 'id'].includes(key)) return withId(err('GenericError', `QMP input member '${key}' is unexpected`));
    if (!('execute' in r)) return withId(err('GenericError', "QMP input lacks member 'execute'"));
    if (typeof r.execute !== 'string') return withId(err('GenericError', "QMP input member 'execute' must be a string"));
    if ('arguments' in r && (typeof r.arguments !== 'object' || r.arguments === null || Array.isArray(r.arguments)))
      return withId(err('GenericError', "QMP input member 'arguments' must be an object"));
    // After quit the VMM is gone and so is its monitor socket (memtwin answers instead of hanging up).
    if (this.vm.runState === 'shutdown') return withId(err('GenericError', 'QEMU has exited (quit): the monitor is closed'));
    const cmd = this.commands.get(r.execute);
    if (!cmd) return withId(err('CommandNotFound', `The command ${r.execute} has not been found`));
    const args = (r.arguments ?? {}) as QmpArgs;
    if (cmd.args)
      for (const a of Object.keys(args)) if (!cmd.args.includes(a)) return withId(err('GenericError', `Parameter '${a}' is unexpected`));
    try {
      return withId({ return: cmd.handler(args) });
    } catch (e) {
      if (e instanceof QmpError) return withId(err(e.errorClass, e.message));
      if (e instanceof QemuError) return withId(err('GenericError', e.message));
      throw e;
    }
  }

  /** Send an event (qapi_event_send_*): recorded with the virtual time and passed to the listeners. */
  emit(event: string, data?: Record<string, unknown>): QmpEvent {
    const ns = this.vm.k.clock.now();
    const e: QmpEvent = {
      event,
      ...(data ? { data } : {}),
      timestamp: { seconds: Math.floor(ns / 1e9), microseconds: Math.floor((ns % 1e9) / 1e3) },
    };
    this.events.push(e);
    for (const f of this.onEvent) f(e);
    return e;
  }

  /** Execute QMP JSON text and answer JSON text. */
  executeJson(text: string): string {
    return JSON.stringify(this.execute(text));
  }

  /** An HMP command line, answered with "\n" line ends (for people and tests). */
  hmp(commandLine: string): string {
    const line = commandLine.trim().replace(/\s+/g, ' ');
    for (const [words, handler] of [...this.hmpCommands].sort((a, b) => b[0].length - a[0].length))
      if (line === words || line.startsWith(`${words} `)) return handler(line.slice(words.length).trim());
    return `unknown command: '${line}'\n`;
  }

  // --- commands ---------------------------------------------------------------------------

  /** object-add: a memory backend (qom-type, id and its properties as on -object). */
  private objectAdd(a: QmpArgs): Record<string, never> {
    if (typeof a['qom-type'] !== 'string') throw new QmpError('GenericError', "Parameter 'qom-type' is missing");
    if (typeof a['id'] !== 'string') throw new QmpError('GenericError', "Parameter 'id' is missing");
    this.vm.objectAdd(a as unknown as MemoryBackendProps);
    return {};
  }

  /** device_add: a pc-dimm (driver, id, memdev, node, addr, slot). */
  private deviceAdd(a: QmpArgs): Record<string, never> {
    if (typeof a['driver'] !== 'string') throw new QmpError('GenericError', "Parameter 'driver' is missing");
    for (const key of Object.keys(a))
      if (!['driver', 'id', 'memdev', 'node', 'addr', 'slot'].includes(key))
        throw new QmpError('GenericError', `Property '${a['driver']}.${key}' not found`);
    for (const key of ['node', 'addr', 'slot'] as const)
      if (a[key] !== undefined && !(Number.isSafeInteger(a[key]) && (a[key] as number) >= 0))
        throw new QmpError('GenericError', `Parameter '${key}' expects uint${key === 'addr' ? 64 : 32}`);
    this.vm.deviceAdd(a as Parameters<Vm['deviceAdd']>[0]);
    return {};
  }

  /** query-memory-devices: a MemoryDeviceInfo (type dimm, PCDIMMDeviceInfo) per plugged device, by address. */
  private queryMemoryDevices(): unknown[] {
    return [...this.vm.memoryDevices]
      .sort((x, y) => x.addr - y.addr)
      .map((d) => ({
        type: d.type,
        data: {
          id: d.id,
          addr: d.addr,
          size: d.size,
          slot: d.slot,
          node: d.node,
          memdev: `/objects/${d.memdev.id}`,
          hotplugged: true,
          hotpluggable: true,
        },
      }));
  }

  /** query-acpi-ospm-status: every DIMM slot, with the device and the last _OST the guest reported for it. */
  private queryAcpiOspmStatus(): unknown[] {
    const out: unknown[] = [];
    for (let slot = 0; slot < this.vm.ramSlots; slot++) {
      const d = this.vm.memoryDevices.find((x) => x.slot === slot);
      const ost = this.vm.ospmStatus.get(slot) ?? { source: 0, status: 0 };
      out.push({ ...(d ? { device: d.id } : {}), slot: String(slot), 'slot-type': 'DIMM', ...ost });
    }
    return out;
  }

  /** stop / cont: the vCPUs stop or run again (vm_stop, vm_start), with STOP or RESUME. */
  private setRunState(state: 'running' | 'paused', event: 'STOP' | 'RESUME'): Record<string, never> {
    if (this.vm.runState === state) return {};
    this.vm.setRunState(state);
    this.emit(event);
    return {};
  }

  /** quit: SHUTDOWN (guest false, reason host-qmp-quit), then QEMU exits and its memory goes back to the host. */
  private quit(): Record<string, never> {
    this.emit('SHUTDOWN', { guest: false, reason: 'host-qmp-quit' });
    this.vm.quit();
    return {};
  }

  private humanMonitorCommand(a: QmpArgs): string {
    const line = a['command-line'];
    if (line === undefined) throw new QmpError('GenericError', "Parameter 'command-line' is missing");
    if (typeof line !== 'string') throw new QmpError('GenericError', "Invalid parameter type for 'command-line', expected: string");
    return this.hmp(line).replace(/\n/g, '\r\n');
  }

  /** query-cpus-fast: CpuInfoFast per vCPU. */
  private queryCpusFast(): unknown[] {
    const numa = this.vm.numaNodes.length > 0;
    return this.vm.vcpus.map((c) => ({
      'thread-id': c.thread.tid,
      props: { ...(numa ? { 'node-id': c.node } : {}), 'socket-id': c.socketId, 'core-id': c.coreId, 'thread-id': c.threadId },
      'qom-path': c.qomPath,
      'cpu-index': c.index,
      target: 'x86_64',
    }));
  }

  /** hmp_info_numa / qmp_x_query_numa. */
  private infoNuma(): string {
    const nodes = this.vm.numaNodes;
    let s = `${nodes.length} nodes\n`;
    for (const n of nodes) {
      // query_numa_node_mem: a node's size counts its plugged DIMMs too.
      const plugged = this.vm.memoryDevices.filter((d) => d.node === n.nodeid).reduce((a, d) => a + d.size, 0);
      s += `node ${n.nodeid} cpus:${n.cpus.map((c) => ` ${c}`).join('')}\n`;
      s += `node ${n.nodeid} size: ${Math.floor((n.size + plugged) / 2 ** 20)} MB\n`;
      s += `node ${n.nodeid} plugged: ${Math.floor(plugged / 2 ** 20)} MB\n`;
    }
    return s;
  }

  /** hmp_info_ramblock (ram_block_format). */
  private infoRamblock(): string {
    let s = `${'Block Name'.padStart(24)} ${'PSize'.padStart(8)}  ${'Offset'.padStart(18)} ${'Used'.padStart(18)} ${'Total'.padStart(18)} ${'HVA'.padStart(18)} ${'RO'.padStart(3)}\n`;
    for (const b of this.vm.ramList.blocks)
      s += `${b.idstr.padStart(24)} ${sizeToStr(b.pageSize).padStart(8)}  ${hex(b.offset)} ${hex(b.usedLength)} ${hex(b.maxLength)} ${hex(b.host)} ${(b.readonly ? 'ro' : 'rw').padStart(3)}\n`;
    return s;
  }

  /** `info ram`: guest RAM ranges with GPA, RAM block, offset, HVA and guest node (see the file comment). */
  private infoRam(): string {
    let s = `${'GPA'.padStart(37)} ${'Block Name'.padStart(24)} ${'PSize'.padStart(8)} ${'Offset'.padStart(18)} ${'HVA'.padStart(37)} ${'Node'.padStart(4)}\n`;
    for (const r of this.vm.slots) {
      const gpa = `${hex(r.gpa)}-${hex(r.gpa + r.size - 1)}`;
      const hva = `${hex(r.hva)}-${hex(r.hva + r.size - 1)}`;
      s += `${gpa} ${r.block.idstr.padStart(24)} ${sizeToStr(r.block.pageSize).padStart(8)} ${hex(r.blockOffset)} ${hva} ${String(r.node).padStart(4)}\n`;
    }
    return s;
  }
}

function err(cls: string, desc: string): QmpResponse {
  return { error: { class: cls, desc } };
}
