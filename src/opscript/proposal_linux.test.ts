/**
 * The ops of proposals Linux never merged, differentially: the same script
 * on the simulator (the proposal's feature off, as by default) and on this
 * machine's real kernel (the linux backend). The kernel answers the
 * proposal's op `unsupported`, naming the proposal, so `diff` lists it as
 * skipped; everything else the script does must agree. Skipped, with a
 * notice, where the linux backend cannot run.
 */
import { describe, expect, it } from 'vitest';
import { LinuxBackend, linuxBackendUnavailable } from './linux_backend.ts';
import { SimBackend } from './sim_backend.ts';
import { ScriptRunner, type ResultLine } from './runner.ts';
import type { Backend } from './backend.ts';
import { diffRuns } from './diff.ts';
import { PROPOSAL_OPS, proposalUnsupported } from './ops.ts';
import { Kernel } from '../kernel/kernel.ts';
import { CostProfile } from '../sim/cost_profile.ts';
import { resolveHost } from '../sim/host.ts';

const noLinux = linuxBackendUnavailable();
if (noLinux) console.warn(`\n*** proposal-op real-kernel tests SKIPPED: ${noLinux} ***\n`);

const RW = ['PROT_READ', 'PROT_WRITE'];
const ANON = ['MAP_PRIVATE', 'MAP_ANONYMOUS'];

async function runOn(b: Backend, ops: object[]): Promise<ResultLine[]> {
  const r = new ScriptRunner(b);
  try {
    await r.run(ops.map((o) => JSON.stringify(o)).join('\n') + '\n');
  } finally {
    await b.close();
  }
  expect(r.failed).toBeUndefined();
  return r.results;
}

describe('proposal ops on a real kernel', () => {
  it('each names the proposal it belongs to; other ops are not proposals', () => {
    expect(proposalUnsupported('process_mbind')).toEqual({
      unsupported: 'process_mbind belongs to a proposal Linux never merged (process_mbind)',
    });
    expect(proposalUnsupported('ms_mbind')?.unsupported).toContain('(memsched)');
    expect(proposalUnsupported('mbind')).toBeUndefined();
    expect([...PROPOSAL_OPS.keys()]).toEqual(['ms_tbind', 'ms_mbind', 'ms_move', 'process_mbind']);
  });
});

describe.skipIf(noLinux !== undefined)('process_mbind: the simulator (feature off) against Linux', () => {
  it('Linux answers unsupported and diff skips it; the target process keeps its default policy on both', async () => {
    const script = [
      { op: 'spawn', name: 'p' },
      { op: 'mmap', len: '2M', prot: RW, flags: ANON, name: 'h', in: 'p' },
      { op: 'process_mbind', target: 'p', addr: '$h', len: '2M', mode: 'MPOL_BIND', nodes: [0], flags: ['MPOL_MF_MOVE'] },
      { op: 'touch', addr: '$h', len: '64K', write: true, in: 'p' },
      { op: 'get_mempolicy', addr: '$h', flags: ['MPOL_F_ADDR'], in: 'p' },
    ];
    const sim = await runOn(new SimBackend(new Kernel({ host: resolveHost('auto'), costs: CostProfile.default() })), script);
    const linux = await runOn(new LinuxBackend(), script);
    expect(sim[2]).toMatchObject({ op: 'process_mbind', ret: -1, errno: 'ENOSYS' });
    expect(linux[2]).toMatchObject({
      op: 'process_mbind',
      unsupported: 'process_mbind belongs to a proposal Linux never merged (process_mbind)',
    });
    const d = diffRuns(sim, linux);
    expect(d.skipped.map((s) => s.op)).toEqual(['process_mbind']);
    expect(d.disagreements).toEqual([]);
    expect(sim[4]).toMatchObject({ mode: 'MPOL_DEFAULT' });
    expect(linux[4]).toMatchObject({ mode: 'MPOL_DEFAULT' });
  });
});
