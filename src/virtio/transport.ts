/**
 * The virtio transport between one driver and one device (virtio-pci's
 * common and device config, reduced to what the model needs): feature
 * negotiation, the device-specific config space (little-endian bytes),
 * the config-change interrupt, and the device's virtqueues.
 *
 * The VMM's device creates the transport; whoever wires a VM hands it to
 * the guest driver. Each config-space access by the guest is a VM exit to
 * QEMU in userspace, charged as such.
 */
import { GuestBuffers, SplitVirtqueue } from './virtqueue.ts';
import type { VirtioTiming } from './timing.ts';

export interface QueueSpec {
  readonly name: string;
  /** Ring size, as virtio_add_queue gives it. */
  readonly size: number;
}

export class VirtioTransport {
  /** The device-specific config space (struct virtio_<dev>_config). */
  readonly config: DataView;
  /** Features both sides accepted (after negotiate). */
  private features = 0n;
  private negotiated = false;
  /** Queues by index; a slot is empty when the device did not add that queue. */
  readonly queues: (SplitVirtqueue | undefined)[];
  /** The driver's config_changed callback. */
  private onConfigChanged: (() => void) | null = null;
  /** The device's set_config callback, after the guest wrote the config. */
  onConfigWrite: (() => void) | null = null;

  constructor(
    readonly deviceId: number,
    /** Feature bits the device offers (host_features). */
    readonly hostFeatures: bigint,
    configBytes: number,
    queues: readonly (QueueSpec | null)[],
    readonly timing: VirtioTiming,
    readonly buffers: GuestBuffers,
  ) {
    this.config = new DataView(new ArrayBuffer(configBytes));
    this.queues = queues.map((q) => (q ? new SplitVirtqueue(q.name, q.size, timing, buffers) : undefined));
  }

  // --- driver side --------------------------------------------------------------

  /**
   * Feature negotiation (virtio_dev_probe / finalize_features): the driver
   * accepts the offered features it knows; the result is what both use.
   */
  negotiate(driverFeatures: bigint, onConfigChanged: () => void): bigint {
    this.features = this.hostFeatures & driverFeatures;
    this.negotiated = true;
    this.onConfigChanged = onConfigChanged;
    return this.features;
  }

  hasFeature(bit: number): boolean {
    return (this.features & (1n << BigInt(bit))) !== 0n;
  }

  get isNegotiated(): boolean {
    return this.negotiated;
  }

  /** virtio_cread_le of a u32 field: one config-space read, one exit. */
  readConfig32(offset: number): number {
    this.timing.configExit();
    return this.config.getUint32(offset, true);
  }

  /** virtio_cwrite_le of a u32 field: one config-space write, one exit; QEMU's set_config runs. */
  writeConfig32(offset: number, value: number): void {
    this.timing.configExit();
    this.config.setUint32(offset, value >>> 0, true);
    this.onConfigWrite?.();
  }

  // --- device side ---------------------------------------------------------------

  /** virtio_notify_config: a config interrupt; the driver's config_changed runs. */
  notifyConfig(): void {
    if (!this.onConfigChanged) return;
    this.timing.interrupt();
    this.onConfigChanged();
  }
}
