import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { procStatFields } from './proc_stat.ts';

describe.skipIf(!existsSync('/proc/self/stat'))('procStatFields', () => {
  it("gives this process's fields from field 3 on: its state, its parent, its start time", () => {
    const f = procStatFields(process.pid)!;
    expect(['R', 'S', 'D']).toContain(f[0]);
    expect(Number(f[4 - 3])).toBe(process.ppid);
    // starttime (field 22) as /proc/self/stat has it, whatever the command name holds
    const raw = readFileSync('/proc/self/stat', 'utf8');
    expect(raw.split(' ')).toContain(f[22 - 3]);
    expect(Number(f[22 - 3])).toBeGreaterThan(0);
  });
  it('gives null for a process that does not exist', () => {
    expect(procStatFields(2 ** 22 + 1)).toBeNull();
  });
});
