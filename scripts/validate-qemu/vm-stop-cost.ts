/**
 * vm_stop and vm_start under TCG on this machine, as the migration's
 * switchover pays them: a QEMU configured as `validate qemu`'s runs
 * (q35, 1 vCPU, 256 MiB, a virtio-balloon with an iothread, -accel tcg;
 * firmware only, the vCPU idle in SeaBIOS), and QMP `stop` (vm_stop:
 * pause_all_vcpus, the block layer drained, the state change notifiers)
 * and `cont` (vm_start) timed round trip, minus the round trip of
 * `query-status` (the QMP cost alone), medians over the repeats.
 *
 *   npx tsx scripts/validate-qemu/vm-stop-cost.ts [repeats]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Qmp } from '../../src/validate/real.ts';

const repeats = Number(process.argv[2] ?? 200);
const dir = mkdtempSync(join(tmpdir(), 'memtwin-vmstop-'));
const qemu = spawn(
  'qemu-system-x86_64',
  [
    '-accel',
    'tcg',
    '-machine',
    'q35,memory-backend=ram0',
    '-m',
    '256M',
    '-smp',
    '1',
    '-object',
    'memory-backend-ram,id=ram0,size=256M',
    '-object',
    'iothread,id=io0',
    '-device',
    'virtio-balloon-pci,id=balloon0,iothread=io0',
    '-nodefaults',
    '-vga',
    'none',
    '-display',
    'none',
    '-monitor',
    'none',
    '-serial',
    'none',
    '-qmp',
    `unix:${join(dir, 'qmp')},server=on,wait=off`,
  ],
  { stdio: 'ignore' },
);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
try {
  const q = await Qmp.connect(join(dir, 'qmp'));
  await new Promise((r) => setTimeout(r, 2000)); // the firmware runs its course
  const time = async (cmd: string): Promise<number> => {
    const t = process.hrtime.bigint();
    await q.cmd(cmd);
    return Number(process.hrtime.bigint() - t) / 1e3;
  };
  const stop: number[] = [];
  const cont: number[] = [];
  const query: number[] = [];
  for (let i = 0; i < repeats; i++) {
    query.push(await time('query-status'));
    stop.push(await time('stop'));
    query.push(await time('query-status'));
    cont.push(await time('cont'));
    await new Promise((r) => setTimeout(r, 5));
  }
  const base = median(query);
  console.log(
    JSON.stringify({
      repeats,
      query_status_us: base,
      stop_us: median(stop),
      cont_us: median(cont),
      vm_stop_us: median(stop) - base,
      vm_start_us: median(cont) - base,
      stop_us_min_max: [Math.min(...stop), Math.max(...stop)],
      cont_us_min_max: [Math.min(...cont), Math.max(...cont)],
    }),
  );
  q.close();
} finally {
  qemu.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
}
