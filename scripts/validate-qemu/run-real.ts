/**
 * The real side of `memtwin validate qemu` (docs/validate-qemu.md): runs the
 * migration matrix of src/validate/matrix.ts between two local QEMU
 * processes (-accel tcg) and writes validation/qemu/results.json.
 *
 *   npx tsx scripts/validate-qemu/run-real.ts [--batch NAME] [--only ID,ID] [--out FILE] [--repeats N]
 *   ./bin/memtwin.js validate qemu --real      # the same, then the report
 *
 * Needs root (hugetlbfs), qemu-system-x86_64 and the validation initramfs
 * (bash scripts/validate-qemu/build.sh, which needs bash scripts/oracle-guest/build.sh).
 */
import { runReal } from '../../src/validate/real.ts';

const args = process.argv.slice(2);
const get = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const only = get('--only')?.split(',');
const out = get('--out');
const batch = get('--batch');
const repeats = get('--repeats') === undefined ? undefined : Number(get('--repeats'));
if (repeats !== undefined && !(Number.isInteger(repeats) && repeats >= 1)) {
  console.error(`validate-qemu: error: --repeats ${get('--repeats')}: expected a whole number of at least 1`);
  process.exit(2);
}
try {
  await runReal({ batch, only, out, repeats, log: (s) => console.error(s) });
} catch (e) {
  console.error(`validate-qemu: error: ${(e as Error).message}`);
  process.exitCode = 1;
}
