/**
 * Run-time errors and warnings located in the scenario file: at the field,
 * or at the sweep value (or configuration) that set it.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fieldName, runLocator } from './locate.ts';

const dir = mkdtempSync(join(tmpdir(), 'memtwin-locate-'));
const file = (name: string, text: string): string => {
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
};

const TEXT = `name: x
duration: 1s
vms:
  - name: g
    events:
      - { at: 10ms, op: migrate, bandwidth: 1250M }
sweep:
  - path: [vms, 0, events, 0, bandwidth]
    values: [1250M, 0]
    label: bw
  - label: mode
    configs:
      - name: plain
      - name: fast
        set:
          - { path: [vms, 0, events, 0, max-bandwidth], value: 1250M }
`;

describe('run locator', () => {
  it('names fields as the loader does', () => {
    expect(fieldName(['vms', 0, 'events', 2, 'bandwidth'])).toBe('vms[0].events[2].bandwidth');
  });

  it('points at the field, or at the sweep value or configuration that set it', () => {
    const f = file('x.yaml', TEXT);
    const base = runLocator(f, { params: { bw: '1250M', mode: 'plain' } });
    expect(base.error(['vms', 0, 'events', 0, 'latency'], 'no').message).toBe(`${f}:6:9: vms[0].events[0].latency: no`);
    const zero = runLocator(f, { params: { bw: 0, mode: 'plain' } });
    expect(zero.error(['vms', 0, 'events', 0, 'bandwidth'], 'must be positive').message).toBe(
      `${f}:9:21: sweep[0].values[1]: vms[0].events[0].bandwidth: must be positive`,
    );
    const fast = runLocator(f, { params: { bw: '1250M', mode: 'fast' } });
    expect(fast.warning(['vms', 0, 'events', 0, 'max-bandwidth'], 'slow')).toBe(
      `${f}:14:9: sweep[1].configs[1]: vms[0].events[0].max-bandwidth: slow`,
    );
    // The loader's own mapping, when the run carries one, decides.
    const mapped = runLocator(f, { params: {}, where: (p) => (p[0] === 'vms' ? ['name'] : p) });
    expect(mapped.error(['vms', 0, 'events', 0, 'bandwidth'], 'x').message).toBe(`${f}:1:7: name: vms[0].events[0].bandwidth: x`);
  });

  it('still reports file and field when the file is gone', () => {
    const f = file('gone.yaml', TEXT);
    const loc = runLocator(f, { params: {} });
    rmSync(f);
    expect(loc.error(['vms', 0, 'events', 0], 'no').message).toBe(`${f}: vms[0].events[0]: no`);
  });
});
