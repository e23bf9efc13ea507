/**
 * Where the validation guest's memory sits in guest-physical RAM, measured
 * on a real QEMU guest booted as `validate qemu` boots it (-accel tcg, q35,
 * the validation initramfs, memtwin-dirty with the run's arguments):
 *
 *   npx tsx scripts/validate-qemu/guest-layout.ts [MEM_MIB TOUCH_MIB WS_MIB RATE [WAIT_S [WINDOW_MS [OUT.json]]]]
 *
 * (default 1024 256 128 20000 4: a 1g batch run's guest, 4 s after the
 * program is ready, when its migration would switch to postcopy). It stops
 * the guest, saves its RAM with QMP pmemsave, and classifies every 4K page
 * by content: zero; the program's working set (0xa5 but the first 8 bytes,
 * memtwin-dirty's counter, which gives the page's place in the round robin);
 * the rest of what the program touched (all 0xa5); anything else (the boot's
 * footprint: kernel, initramfs, page cache, page tables). Prints how many of
 * each, how the boot footprint spreads over RAM (64 slices), and the runs of
 * consecutive guest-physical pages the working set makes in the order the
 * program writes it. With WINDOW_MS it lets the guest run that long more,
 * saves its RAM again and counts the pages that changed besides the
 * program's (what the guest kernel wrote in that time: in a postcopy, pages
 * it will touch again, missing on the destination). With OUT.json it writes
 * the layout there: runs [first page, pages] of the boot footprint, of the
 * working set in the program's order, and of the rest of the program's
 * pages. Needs scripts/oracle-guest/build.sh and
 * scripts/validate-qemu/build.sh; root is not needed.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync, openSync, readSync, closeSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const KERNEL = join(ROOT, '.cache/oracle-guest/vmlinuz');
const INITRD = join(ROOT, '.cache/validate-qemu/initramfs.cpio.gz');
const PAGE = 4096;
const argv = process.argv.slice(2).length ? process.argv.slice(2) : ['1024', '256', '128', '20000', '4'];
const [memMiB, touchMiB, wsMiB, rate, waitS, windowMs] = argv.slice(0, 6).map(Number) as [number, number, number, number, number?, number?];
const out = argv[6];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function qmp(path: string): Promise<(execute: string, args?: Record<string, unknown>) => Promise<unknown>> {
  for (let i = 0; i < 100 && !existsSync(path); i++) await sleep(100);
  const sock = createConnection(path);
  let buf = '';
  const waiters: ((v: Record<string, unknown>) => void)[] = [];
  sock.on('data', (d) => {
    buf += d.toString();
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const msg = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
      buf = buf.slice(nl + 1);
      if ('return' in msg || 'error' in msg) waiters.shift()?.(msg);
    }
  });
  const cmd = (execute: string, args?: Record<string, unknown>): Promise<unknown> =>
    new Promise((res, rej) => {
      waiters.push((m) => ('error' in m ? rej(new Error(JSON.stringify(m.error))) : res(m.return)));
      sock.write(JSON.stringify(args ? { execute, arguments: args } : { execute }) + '\n');
    });
  await sleep(200);
  await cmd('qmp_capabilities');
  return cmd;
}

async function main(): Promise<void> {
  if (!existsSync(KERNEL) || !existsSync(INITRD))
    throw new Error('run scripts/oracle-guest/build.sh and scripts/validate-qemu/build.sh first');
  const dir = mkdtempSync(join(tmpdir(), 'guest-layout-'));
  const serial = join(dir, 'serial');
  const mem = `${memMiB}M`;
  // The arguments real.ts gives the source QEMU of a run on anonymous RAM.
  const q = spawn(
    'qemu-system-x86_64',
    [
      ...['-accel', 'tcg', '-machine', 'q35,memory-backend=ram0', '-m', mem, '-smp', '1'],
      ...['-object', `memory-backend-ram,id=ram0,size=${mem}`, '-object', 'iothread,id=io0'],
      ...['-device', 'virtio-balloon-pci,id=balloon0,iothread=io0,free-page-hint=off'],
      ...['-kernel', KERNEL, '-initrd', INITRD],
      ...['-append', `console=ttyS0 quiet nokaslr mtd=${touchMiB},${wsMiB},${rate},0,word`],
      ...['-nodefaults', '-vga', 'none', '-display', 'none', '-no-reboot', '-monitor', 'none'],
      ...['-serial', `file:${serial}`, '-qmp', `unix:${join(dir, 'qmp')},server=on,wait=off`],
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  try {
    const cmd = await qmp(join(dir, 'qmp'));
    const t0 = Date.now();
    while (!(existsSync(serial) && readFileSync(serial, 'utf8').includes('MTD READY'))) {
      if (Date.now() - t0 > 120_000) throw new Error('the guest program did not start in 120 s');
      await sleep(100);
    }
    await sleep((waitS ?? 4) * 1000);
    await cmd('stop');
    const dump = join(dir, 'ram');
    await cmd('pmemsave', { val: 0, size: memMiB * 2 ** 20, filename: dump });
    console.log(
      readFileSync(serial, 'utf8')
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('MTD'))
        .slice(-2)
        .join('\n'),
    );
    analyse(dump);
    if (windowMs) {
      await cmd('cont');
      await sleep(windowMs);
      await cmd('stop');
      const again = join(dir, 'ram2');
      await cmd('pmemsave', { val: 0, size: memMiB * 2 ** 20, filename: again });
      changed(dump, again);
    }
  } finally {
    q.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

function analyse(file: string): void {
  const pages = (memMiB * 2 ** 20) / PAGE;
  const wsPages = (wsMiB * 2 ** 20) / PAGE;
  const fd = openSync(file, 'r');
  const b = Buffer.alloc(PAGE);
  let zero = 0;
  let touched = 0;
  let boot = 0;
  const slices = new Array<number>(64).fill(0);
  // The working set: round-robin index -> guest-physical page.
  const ws = new Map<number, number>();
  const counterOf = new Map<number, number>();
  const bootList: number[] = [];
  const restList: number[] = [];
  for (let p = 0; p < pages; p++) {
    readSync(fd, b, 0, PAGE, p * PAGE);
    let allZero = true;
    let tailA5 = true;
    for (let i = 0; i < PAGE; i++) {
      if (b[i] !== 0) allZero = false;
      if (i >= 8 && b[i] !== 0xa5) {
        tailA5 = false;
        if (!allZero) break;
      }
    }
    if (allZero) zero++;
    else if (tailA5 && b.readBigUInt64LE(0) !== 0xa5a5a5a5a5a5a5a5n) {
      // memtwin-dirty's counter: it wrote counter++ at cursor, counter 1 at cursor 0 in the first round.
      // A page the guest kernel moved or freed keeps its old counter: the highest counter of an index is its page.
      const c = Number(b.readBigUInt64LE(0));
      const i = (c - 1) % wsPages;
      if ((counterOf.get(i) ?? -1) < c) {
        ws.set(i, p);
        counterOf.set(i, c);
      }
    } else if (tailA5) {
      touched++;
      restList.push(p);
    } else {
      boot++;
      bootList.push(p);
      slices[Math.floor((p * 64) / pages)]!++;
    }
  }
  closeSync(fd);
  console.log(`pages ${pages}: zero ${zero}, working set ${ws.size}, rest of the program's ${touched}, boot footprint ${boot}`);
  console.log(`boot footprint per 1/64 of RAM: ${slices.join(' ')}`);
  const order = [...ws.keys()].sort((a, c) => a - c);
  let runs = 0;
  let up = 0;
  let down = 0;
  const lengths: number[] = [];
  let len = 0;
  for (let i = 0; i < order.length; i++) {
    const p = ws.get(order[i]!)!;
    const prev = i > 0 ? ws.get(order[i - 1]!) : undefined;
    if (prev !== undefined && p === prev + 1) len++;
    else {
      if (i > 0) lengths.push(len);
      runs++;
      len = 1;
      if (prev !== undefined && p > prev) up++;
      else if (prev !== undefined) down++;
    }
  }
  lengths.push(len);
  lengths.sort((a, c) => a - c);
  const pct = (f: number): number => lengths[Math.min(lengths.length - 1, Math.floor(f * lengths.length))]!;
  console.log(
    `working set in the program's order: ${runs} runs of consecutive guest-physical pages (jumps up ${up}, down ${down}); run length p10 ${pct(0.1)}, p50 ${pct(0.5)}, p90 ${pct(0.9)}, max ${lengths[lengths.length - 1]}`,
  );
  if (out) {
    const runsOf = (ps: number[]): [number, number][] => {
      const r: [number, number][] = [];
      for (const p of ps) {
        const last = r[r.length - 1];
        if (last && p === last[0] + last[1]) last[1]++;
        else r.push([p, 1]);
      }
      return r;
    };
    const wsSet = new Set(ws.values());
    const layout = {
      what: `validation guest (${argv.slice(0, 5).join(' ')}: MEM_MIB TOUCH_MIB WS_MIB RATE WAIT_S), guest-physical 4K pages, measured by scripts/validate-qemu/guest-layout.ts`,
      memMiB,
      boot: runsOf(bootList),
      workingSet: runsOf(order.map((i) => ws.get(i)!)),
      rest: runsOf(restList.filter((p) => !wsSet.has(p))),
    };
    writeFileSync(out, JSON.stringify(layout) + '\n');
    console.log(`wrote ${out}`);
  }
  const first = order.slice(0, 8).map((i) => ws.get(i));
  console.log(`first pages (guest-physical): ${first.join(' ')}; lowest ${Math.min(...ws.values())}, highest ${Math.max(...ws.values())}`);
}

/** Pages that differ between two saves of guest RAM: the program's (0xa5 after the first 8 bytes in either) and the rest. */
function changed(a: string, b: string): void {
  const pages = (memMiB * 2 ** 20) / PAGE;
  const fa = openSync(a, 'r');
  const fb = openSync(b, 'r');
  const x = Buffer.alloc(PAGE);
  const y = Buffer.alloc(PAGE);
  let program = 0;
  let other = 0;
  const slices = new Array<number>(64).fill(0);
  const tailA5 = (z: Buffer): boolean => {
    for (let i = 8; i < PAGE; i++) if (z[i] !== 0xa5) return false;
    return true;
  };
  for (let p = 0; p < pages; p++) {
    readSync(fa, x, 0, PAGE, p * PAGE);
    readSync(fb, y, 0, PAGE, p * PAGE);
    if (x.equals(y)) continue;
    if (tailA5(x) || tailA5(y)) program++;
    else {
      other++;
      slices[Math.floor((p * 64) / pages)]!++;
    }
  }
  closeSync(fa);
  closeSync(fb);
  console.log(`changed in ${windowMs} ms of guest run: ${program} of the program's pages, ${other} others`);
  console.log(`others per 1/64 of RAM: ${slices.join(' ')}`);
}

main().catch((e: unknown) => {
  console.error(`guest-layout: ${(e as Error).message}`);
  process.exit(1);
});
