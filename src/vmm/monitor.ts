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
 */
import type { Vm } from './vm.ts';
import { QemuError, sizeToStr } from './memory_backend.ts';
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

const hex = (v: number): string => `0x${v.toString(16).padStart(16, '0')}`;

export class Monitor {
  private readonly commands = new Map<string, { handler: QmpHandler; args: readonly string[] | null }>();
  private readonly hmpCommands = new Map<string, HmpHandler>();

  constructor(readonly vm: Vm) {
    this.registerCommand('qmp_capabilities', () => ({}), ['enable']);
    this.registerCommand('query-commands', () => [...this.commands.keys()].map((name) => ({ name })), []);
    this.registerCommand('query-name', () => (vm.name === undefined ? {} : { name: vm.name }), []);
    this.registerCommand('query-status', () => ({ running: true, status: 'running' }), []);
    this.registerCommand('query-memdev', () => [...vm.backends.values()].map((b) => b.toMemdev()), []);
    this.registerCommand('query-memory-devices', () => [], []); // no pc-dimm / virtio-mem devices modelled
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
      s += `node ${n.nodeid} cpus:${n.cpus.map((c) => ` ${c}`).join('')}\n`;
      s += `node ${n.nodeid} size: ${Math.floor(n.size / 2 ** 20)} MB\n`;
      s += `node ${n.nodeid} plugged: 0 MB\n`;
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
