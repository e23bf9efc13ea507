/**
 * QEMU's RAMBlock and ram_list (include/exec/ramblock.h, system/physmem.c):
 * every piece of guest RAM the VMM allocated, with its place in the
 * ram_addr_t space (the offsets migration and dirty tracking use), its
 * length, its host virtual address (HVA) in the VMM process, and the page
 * size of the memory behind it.
 */
import type { Kernel } from '../kernel/kernel.ts';
import type { Process } from '../kernel/sched.ts';
import { MADV, PAGE_SIZE, type SysRet } from '../kernel/uapi.ts';
import { QemuError, type HostMemoryBackend } from './memory_backend.ts';

/** BITS_PER_LONG << TARGET_PAGE_BITS: find_ram_offset starts blocks on a dirty-bitmap long (256 KiB). */
export const RAM_OFFSET_ALIGN = 64 * 4096;

export class RAMBlock {
  constructor(
    /** RAMBlock.idstr: the memory region's name (a memdev's id, or "pc.ram"). */
    readonly idstr: string,
    /** Offset in ram_addr_t space (find_ram_offset). */
    readonly offset: number,
    /** used_length: bytes of guest RAM in the block. */
    readonly usedLength: number,
    /** max_length: bytes mapped for the block (resizeable blocks only differ; none here). */
    readonly maxLength: number,
    /** host: the HVA of the block's first byte in the VMM process. */
    readonly host: number,
    /** page_size: the host page size backing the block (4 KiB, or the hugetlbfs page size). */
    readonly pageSize: number,
    /** The memory backend that owns the block. */
    readonly backend: HostMemoryBackend,
  ) {}

  /** HVA of a byte of the block (qemu_map_ram_ptr / ramblock_ptr). */
  hostOf(offsetInBlock: number): number {
    if (offsetInBlock < 0 || offsetInBlock >= this.usedLength)
      throw new RangeError(`offset 0x${offsetInBlock.toString(16)} is outside RAMBlock ${this.idstr}`);
    return this.host + offsetInBlock;
  }

  /** Whether an HVA lies inside the block's used part. */
  containsHost(hva: number): boolean {
    return hva >= this.host && hva < this.host + this.usedLength;
  }

  /** "rw": guest RAM blocks are writable (ROM blocks are not modelled). */
  get readonly(): boolean {
    return false;
  }

  /** qemu_ram_is_shared: mapped MAP_SHARED. */
  get shared(): boolean {
    return this.backend.share;
  }

  /** Whether QEMU holds an fd for the block (memfd and file backends; anonymous RAM has none). */
  get hasFd(): boolean {
    return this.backend.type !== 'memory-backend-ram';
  }

  /**
   * ram_block_discard_range: give [start, start + length) of the block
   * back to the host (balloon inflation, free page reporting, postcopy).
   * An fd-backed block punches a hole in its file (fallocate
   * PUNCH_HOLE, which the simulated kernel offers as MADV_REMOVE on the
   * shared mapping); then 4K-page blocks and private file mappings are
   * zapped with MADV_DONTNEED, shared anonymous memory with MADV_REMOVE.
   * Returns 0 or -errno; misaligned or overrunning ranges throw with
   * QEMU's error_report text.
   */
  discardRange(k: Kernel, vmm: Process, start: number, length: number): SysRet {
    const host = this.host + start;
    if (host % this.pageSize) throw new QemuError(`ram_block_discard_range: Unaligned start address: 0x${host.toString(16)}`);
    if (start + length > this.maxLength)
      throw new QemuError(
        `ram_block_discard_range: Overrun block '${this.idstr}' (${start}/${length.toString(16)}/${this.maxLength.toString(16)})`,
      );
    if (length % this.pageSize) throw new QemuError(`ram_block_discard_range: Unaligned length: ${length.toString(16)}`);
    if (!length) return 0;
    const needFallocate = this.hasFd && this.shared;
    const needMadvise = this.pageSize === PAGE_SIZE || (this.hasFd && !this.shared);
    if (needFallocate) {
      const r = k.madvise(vmm, host, length, MADV.MADV_REMOVE);
      if (r < 0) return r;
    }
    if (needMadvise) return k.madvise(vmm, host, length, this.shared && !this.hasFd ? MADV.MADV_REMOVE : MADV.MADV_DONTNEED);
    return 0;
  }
}

/**
 * ram_list: the VM's RAM blocks, kept sorted from biggest to smallest as
 * QEMU keeps them (the order `info ramblock` prints), with QEMU's best-fit
 * placement in ram_addr_t space.
 */
export class RamList {
  readonly blocks: RAMBlock[] = [];

  /**
   * find_ram_offset: the smallest gap after an existing block (each
   * candidate rounded up to RAM_OFFSET_ALIGN) that fits `size`; 0 for the
   * first block.
   */
  findRamOffset(size: number): number {
    if (this.blocks.length === 0) return 0;
    const RAM_ADDR_MAX = Number.MAX_SAFE_INTEGER;
    let best = -1;
    let minGap = RAM_ADDR_MAX;
    for (const b of this.blocks) {
      const candidate = Math.ceil((b.offset + b.maxLength) / RAM_OFFSET_ALIGN) * RAM_OFFSET_ALIGN;
      let next = RAM_ADDR_MAX;
      for (const n of this.blocks) if (n.offset >= candidate) next = Math.min(next, n.offset);
      if (next - candidate >= size && next - candidate < minGap) {
        best = candidate;
        minGap = next - candidate;
      }
    }
    if (best < 0) throw new Error(`Failed to find gap of requested size: ${size}`);
    return best;
  }

  /** ram_block_add's list insertion: before the first smaller block. */
  add(block: RAMBlock): void {
    if (this.blocks.some((b) => b.idstr === block.idstr)) throw new Error(`RAMBlock "${block.idstr}" already registered`);
    const i = this.blocks.findIndex((b) => b.maxLength < block.maxLength);
    if (i < 0) this.blocks.push(block);
    else this.blocks.splice(i, 0, block);
  }

  byName(idstr: string): RAMBlock | undefined {
    return this.blocks.find((b) => b.idstr === idstr);
  }

  /** qemu_ram_block_from_host: the block holding an HVA, and the offset in it. */
  fromHost(hva: number): { block: RAMBlock; offset: number } | undefined {
    const block = this.blocks.find((b) => b.containsHost(hva));
    return block ? { block, offset: hva - block.host } : undefined;
  }
}
