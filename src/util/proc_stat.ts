import { readFileSync } from 'node:fs';

/**
 * The fields of /proc/PID/stat after the command name, which may itself
 * hold spaces and ')': element 0 is field 3 (the state), element k field
 * k + 3 (proc(5)). Null when the process does not exist or there is no
 * /proc.
 */
export function procStatFields(pid: number): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}
