/**
 * The x86 PC machine's guest RAM layout (hw/i386/pc_q35.c, pc_piix.c,
 * pc.c pc_memory_init, hw/core/numa.c) and QEMU's MemoryRegion tree as far
 * as guest RAM goes (system/memory.c).
 *
 * Guest RAM is one region, `pc.ram` (the machine's RAM: the default memdev
 * `pc.ram`, the memdev named by -machine memory-backend=, or with
 * `-numa node,memdev=` a container holding each node's memdev one after the
 * other). Two aliases map it into the guest-physical address space:
 * `ram-below-4g` at GPA 0 for the part below the PCI hole, `ram-above-4g`
 * at 4 GiB for the rest. Where the split falls is the machine's choice:
 *
 * - q35: RAM of 0xb0000000 (2.75 GiB) or more is split at 2 GiB, smaller
 *   RAM stays below 0xb0000000 (512 MiB for PCI, 256 MiB for MMCONFIG).
 * - pc (i440fx): the split is max-ram-below-4g (default 0xe0000000), lowered
 *   to 3 GiB when RAM does not fit below it (gigabyte_align).
 * - both: `max-ram-below-4g` caps the part below 4 GiB.
 *
 * Not modelled: the legacy VGA window and BIOS shadow below 1 MiB (they
 * overlay RAM in QEMU's tree; here GPA 0xa0000-0xfffff is plain RAM), the
 * above-4G start moved past AMD's 1 TiB HyperTransport hole, and the
 * non-RAM regions of the PCI space (shown as the empty `pci` container).
 */
import type { RAMBlock } from './ram_block.ts';
import { QemuError } from './memory_backend.ts';

const GiB = 2 ** 30;
const MiB = 2 ** 20;
/** x86ms->above_4g_mem_start for guests below 1 TiB. */
export const ABOVE_4G_MEM_START = 4 * GiB;

export type PcMachineType = 'q35' | 'pc';
/** The machine names QEMU's -machine accepts for them (the current versions' aliases). */
export const PC_MACHINE_DESC: Record<PcMachineType, string> = {
  q35: 'Standard PC (Q35 + ICH9, 2009)',
  pc: 'Standard PC (i440FX + PIIX, 1996)',
};

export interface PcRamSplit {
  below4g: number;
  above4g: number;
  /** warn_report messages QEMU would print. */
  warnings: string[];
}

/** pc_machine_set_max_ram_below_4g's checks. */
function checkMaxRamBelow4g(v: number, warnings: string[]): void {
  if (v > 4 * GiB) throw new QemuError(`Machine option 'max-ram-below-4g=${v}' expects size less than or equal to 4G`);
  if (v < MiB) warnings.push(`Only ${v} bytes of RAM below the 4GiB boundary, BIOS may not work with less than 1MiB`);
}

/**
 * below_4g_mem_size / above_4g_mem_size as pc_q35_init and pc_init1
 * compute them.
 */
export function pcRamSplit(type: PcMachineType, ramSize: number, maxRamBelow4g?: number): PcRamSplit {
  const warnings: string[] = [];
  if (maxRamBelow4g !== undefined) checkMaxRamBelow4g(maxRamBelow4g, warnings);
  let lowmem: number;
  if (type === 'q35') {
    lowmem = ramSize >= 0xb0000000 ? 0x80000000 : 0xb0000000;
    const max = maxRamBelow4g || 4 * GiB;
    if (lowmem > max) {
      lowmem = max;
      if (ramSize - lowmem > lowmem && lowmem % GiB)
        warnings.push(
          `There is possibly poor performance as the ram size  (0x${ramSize.toString(16)}) is more then twice the size of max-ram-below-4g (${max}) and max-ram-below-4g is not a multiple of 1G.`,
        );
    }
  } else {
    const max = maxRamBelow4g || 0xe0000000;
    lowmem = max;
    if (ramSize >= max) {
      if (lowmem > 0xc0000000) lowmem = 0xc0000000;
      if (lowmem % GiB) warnings.push(`Large machine and max_ram_below_4g (${max}) not a multiple of 1G; possible bad performance.`);
    }
  }
  return ramSize >= lowmem ? { below4g: lowmem, above4g: ramSize - lowmem, warnings } : { below4g: ramSize, above4g: 0, warnings };
}

/** A MemoryRegion: RAM (backed by a RAMBlock), a container, or an alias into another region. */
export class MemoryRegion {
  /** Subregions in insertion order (each with its address and priority in this container). */
  readonly subregions: MemoryRegion[] = [];
  /** Set when added to a container. */
  addr = 0;
  priority = 0;
  container: MemoryRegion | null = null;

  constructor(
    readonly name: string,
    /** Size in bytes; 2^64 for the whole address space (QEMU's UINT64_MAX regions). */
    readonly size: bigint,
    readonly kind: 'ram' | 'container' | 'alias',
    readonly block: RAMBlock | null = null,
    readonly alias: { mr: MemoryRegion; offset: number } | null = null,
  ) {}

  static ram(name: string, block: RAMBlock): MemoryRegion {
    return new MemoryRegion(name, BigInt(block.usedLength), 'ram', block);
  }
  static container(name: string, size: bigint): MemoryRegion {
    return new MemoryRegion(name, size, 'container');
  }
  static alias(name: string, target: MemoryRegion, offset: number, size: number): MemoryRegion {
    return new MemoryRegion(name, BigInt(size), 'alias', null, { mr: target, offset });
  }

  /** memory_region_add_subregion(_overlap). */
  addSubregion(addr: number, mr: MemoryRegion, priority = 0): void {
    mr.addr = addr;
    mr.priority = priority;
    mr.container = this;
    this.subregions.push(mr);
  }

  /** memory_region_type(): "ram" for RAM (and aliases of it), "i/o" for containers. */
  get typeName(): string {
    if (this.alias) return this.alias.mr.typeName;
    return this.kind === 'ram' ? 'ram' : 'i/o';
  }
}

/** One piece of guest RAM in the flat view: a GPA range and where it lands in a RAMBlock. */
export interface RamSection {
  gpa: number;
  size: number;
  /** The RAM region (the memdev's, or the default pc.ram). */
  mr: MemoryRegion;
  block: RAMBlock;
  /** Offset of `gpa` inside the block. */
  blockOffset: number;
  /** The alias that maps it (ram-below-4g / ram-above-4g). */
  via: string;
}

/** The RAM pieces of `mr` over [offset, offset + size) of it: the RAM itself, or the container's RAM subregions. */
function ramPieces(mr: MemoryRegion, offset: number, size: number): { at: number; size: number; mr: MemoryRegion; off: number }[] {
  if (mr.kind === 'ram') return [{ at: 0, size, mr, off: offset }];
  if (mr.alias) return ramPieces(mr.alias.mr, mr.alias.offset + offset, size);
  const out: { at: number; size: number; mr: MemoryRegion; off: number }[] = [];
  const subs = [...mr.subregions].sort((a, b) => a.addr - b.addr);
  for (const s of subs) {
    const lo = Math.max(offset, s.addr);
    const hi = Math.min(offset + size, s.addr + Number(s.size));
    if (lo >= hi) continue;
    for (const p of ramPieces(s, lo - s.addr, hi - lo)) out.push({ ...p, at: p.at + (lo - offset) });
  }
  return out;
}

/**
 * The flat view of guest RAM (what address_space_memory's FlatView and
 * KVM's memslots hold for RAM): every RAM alias of `system`, resolved to
 * RAMBlock pieces, in GPA order.
 */
export function flatRam(system: MemoryRegion): RamSection[] {
  const out: RamSection[] = [];
  for (const a of system.subregions) {
    if (a.kind === 'container') continue; // the PCI space: no RAM in this model
    for (const p of ramPieces(a, 0, Number(a.size)))
      out.push({ gpa: a.addr + p.at, size: p.size, mr: p.mr, block: p.mr.block!, blockOffset: p.off, via: a.name });
  }
  return out.sort((x, y) => x.gpa - y.gpa);
}

/**
 * pc_memory_init: `ram-below-4g` and `ram-above-4g` aliases of the
 * machine's RAM region in the system address space, with the PCI space as
 * a lower-priority container behind them. Returns the `system` region.
 */
export function pcMemoryInit(ram: MemoryRegion, split: PcRamSplit): MemoryRegion {
  const system = MemoryRegion.container('system', 2n ** 64n);
  system.addSubregion(0, MemoryRegion.alias('ram-below-4g', ram, 0, split.below4g));
  if (split.above4g > 0) system.addSubregion(ABOVE_4G_MEM_START, MemoryRegion.alias('ram-above-4g', ram, split.below4g, split.above4g));
  system.addSubregion(0, MemoryRegion.container('pci', 2n ** 64n), -1);
  return system;
}

/**
 * pc_get_device_memory_range: where memory devices (pc-dimm) go, the
 * "device-memory" region: from the first 1 GiB boundary past the end of
 * RAM above 4 GiB, maxmem - ram_size long, plus 1 GiB per slot so that
 * each DIMM can be 1 GiB aligned (enforce_aligned_dimm, every machine
 * type since 2.2).
 */
export function pcDeviceMemoryRange(split: PcRamSplit, ramSize: number, maxram: number, slots: number): { base: number; size: number } {
  const base = Math.ceil((ABOVE_4G_MEM_START + split.above4g) / GiB) * GiB;
  return { base, size: maxram - ramSize + GiB * slots };
}

/** An e820 entry (hw/i386/e820_memory_layout.h). */
export interface E820Entry {
  address: number;
  length: number;
  type: number;
}
export const E820_RAM = 1;
export const E820_RESERVED = 2;

/** The e820 table QEMU hands the firmware (fw_cfg etc/e820): RAM below the PCI hole and above 4 GiB. */
export function pcE820(split: PcRamSplit): E820Entry[] {
  const t: E820Entry[] = [{ address: 0, length: split.below4g, type: E820_RAM }];
  if (split.above4g) t.push({ address: ABOVE_4G_MEM_START, length: split.above4g, type: E820_RAM });
  return t;
}

// --- info mtree -------------------------------------------------------------------

const hex16 = (v: bigint): string => v.toString(16).padStart(16, '0');

/** mtree_print_mr: one line per region, subregions by address (then priority), two spaces per level. */
function mtreeLines(mr: MemoryRegion, base: bigint, level: number, out: string[], aliased: MemoryRegion[]): void {
  const start = base + BigInt(mr.addr);
  const end = start + mr.size - 1n;
  const pad = '  '.repeat(level);
  const head = `${pad}${hex16(start)}-${hex16(end)} (prio ${mr.priority}, ${mr.typeName}): `;
  if (mr.alias) {
    const a = BigInt(mr.alias.offset);
    out.push(`${head}alias ${mr.name} @${mr.alias.mr.name} ${hex16(a)}-${hex16(a + mr.size - 1n)}`);
    if (!aliased.includes(mr.alias.mr)) aliased.push(mr.alias.mr);
    return;
  }
  out.push(`${head}${mr.name}`);
  const subs = [...mr.subregions].sort((a, b) => a.addr - b.addr || b.priority - a.priority);
  for (const s of subs) mtreeLines(s, start, level + 1, out, aliased);
}

/** `info mtree` for the memory address space and the regions its aliases point to. */
export function renderMtree(system: MemoryRegion): string {
  const out: string[] = ['address-space: memory'];
  const aliased: MemoryRegion[] = [];
  mtreeLines(system, 0n, 1, out, aliased);
  out.push('');
  for (let i = 0; i < aliased.length; i++) {
    const mr = aliased[i]!;
    out.push(`memory-region: ${mr.name}`);
    const saved = { addr: mr.addr, priority: mr.priority };
    mr.addr = 0;
    mr.priority = 0;
    mtreeLines(mr, 0n, 1, out, aliased);
    Object.assign(mr, saved);
    out.push('');
  }
  return out.join('\n') + '\n';
}
