/**
 * Random differential testing against the real kernel.
 *
 *   npm run difftest -- --runs N [--seed S] [--kind arena|postcopy|pressure]
 *
 * Runs N random op-scripts (src/opscript/gen.ts: scriptArb, the arena of
 * random syscalls, postcopyScriptArb, threads blocked in userfaults, or
 * pressureScriptArb, swap and memory cgroups with OOM kills) on the simulator and on
 * this machine's kernel and prints the agreement rate by op. The first
 * disagreement is shrunk by fast-check to a minimal script and saved under
 * test/op-scripts/found/ (as pending-*.jsonl until the simulator is fixed
 * and its expectation generated). A disagreement that the real kernel does
 * not reproduce on a second run is counted as flaky, not as a finding.
 */
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { postcopyScriptArb, pressureScriptArb, scriptArb, opsOf } from '../src/opscript/gen.ts';
import { findings, runLinux, runSim } from '../src/opscript/difftest.ts';
import { diffRuns } from '../src/opscript/diff.ts';
import { linuxBackendUnavailable } from '../src/opscript/linux_backend.ts';

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
};
const runs = arg('--runs', 100);
const seed = arg('--seed', Date.now() % 1_000_000);
const kindAt = process.argv.indexOf('--kind');
const kind = kindAt >= 0 ? process.argv[kindAt + 1] : 'arena';
const ARBS = { arena: scriptArb, postcopy: postcopyScriptArb, pressure: pressureScriptArb };
if (!Object.hasOwn(ARBS, kind!)) {
  console.error(`difftest: --kind must be arena, postcopy or pressure, got ${kind}`);
  process.exit(2);
}
if (kind === 'pressure') {
  // Whatever the simulator does not run, findings() drops everything after its first unsupported op: say so.
  const probe = await runSim('{"op":"swap","size":"8M"}\n{"op":"cgroup","name":"g"}\n');
  const no = probe.results.filter((l) => l.unsupported !== undefined).map((l) => `${String(l.op)}: ${String(l.unsupported)}`);
  if (no.length)
    console.error(`difftest: the simulator does not run these yet; only the ops before them are compared:\n  ${no.join('\n  ')}`);
}
const why = linuxBackendUnavailable();
if (why) {
  console.error(`difftest: the linux backend cannot run here: ${why}`);
  process.exit(1);
}

const perOp = new Map<string, { ops: number; bad: number; skipped: number }>();
let scripts = 0;
let flaky = 0;
let shrinking = false;
const t0 = Date.now();

/** Agreement of one script; a difference the real kernel does not reproduce is flaky, not a finding. */
const property = fc.asyncProperty(ARBS[kind as keyof typeof ARBS], async (text) => {
  const sim = await runSim(text);
  const lin = await runLinux(text);
  let d = findings(diffRuns(sim.results, lin.results));
  if (d.disagreements.length) {
    const again = await runLinux(text);
    if (diffRuns(lin.results, again.results).disagreements.length) {
      if (!shrinking) flaky++;
      return true;
    }
    d = findings(diffRuns(sim.results, again.results));
  }
  if (!shrinking) {
    scripts++;
    const bad = new Set(d.disagreements.map((x) => x.i));
    // from the first op one side could not run, nothing is compared (findings())
    const firstSkipped = d.skipped[0]?.i ?? Infinity;
    opsOf(text).forEach((op, i) => {
      const st = perOp.get(op) ?? { ops: 0, bad: 0, skipped: 0 };
      st.ops++;
      if (i >= firstSkipped) st.skipped++;
      else if (bad.has(i)) st.bad++;
      perOp.set(op, st);
    });
    if (scripts % 100 === 0) console.error(`  ${scripts}/${runs} scripts, ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  }
  if (d.disagreements.length) shrinking = true;
  return d.disagreements.length === 0;
});

const res = await fc.check(property, { seed, numRuns: runs });
const secs = (Date.now() - t0) / 1000;

console.log(
  `difftest: ${scripts} random scripts, seed ${seed}, ${secs.toFixed(0)} s (${(secs / Math.max(1, scripts)).toFixed(2)} s per script)`,
);
console.log('| op | ops run | not compared | disagreeing | agreement |\n| --- | --- | --- | --- | --- |');
for (const [op, st] of [...perOp.entries()].sort()) {
  const compared = st.ops - st.skipped;
  const rate = compared ? `${(((compared - st.bad) / compared) * 100).toFixed(2)}%` : '-';
  console.log(`| ${op} | ${st.ops} | ${st.skipped} | ${st.bad} | ${rate} |`);
}
console.log(`flaky (not reproducible on the real kernel): ${flaky}`);

if (!res.failed) {
  console.log('no reproducible disagreement');
  process.exit(0);
}
if (res.counterexample) {
  const text = res.counterexample[0] as string;
  const name = `pending-${createHash('sha1').update(text).digest('hex').slice(0, 8)}`;
  const dir = fileURLToPath(new URL('../test/op-scripts/found/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  const d = diffRuns((await runSim(text)).results, (await runLinux(text)).results);
  const header = [
    `# Found by npm run difftest (seed ${seed}) after ${scripts} scripts; shrunk by fast-check. Disagreements when found:`,
    ...d.disagreements.map((x) => `#   op ${x.i} ${x.op}.${x.field}: sim=${JSON.stringify(x.a)} linux=${JSON.stringify(x.b)}`),
  ];
  writeFileSync(`${dir}${name}.jsonl`, header.join('\n') + '\n' + text);
  console.log(`shrunk counterexample saved as test/op-scripts/found/${name}.jsonl`);
  console.log(header.join('\n'));
}
process.exit(1);
