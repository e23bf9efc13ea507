/**
 * What a run depends on besides the scenario's own text: the files it reads
 * (host files, the cost profile), identified by the SHA-256 of their bytes.
 * runScenario records them in result.json under `inputs.digests`; a resumed
 * sweep keeps a finished run only if the scenario, every digest and
 * memtwin's version are what this attempt would use (staleReason).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fromRoot } from '../util/paths.ts';
import { detectHost, HOSTS_DIR } from '../sim/host.ts';
import type { Scenario } from './schema.ts';

/** One file a run reads: as the scenario names it, and the hash of its content. */
export interface InputDigest {
  /** What the scenario says (a path, a shipped host name, `auto`), or the default profile's path in the package. */
  source: string;
  /** Hex SHA-256 of the bytes read (for `auto`, of the host detected from /sys), or `unreadable`. */
  sha256: string;
}

const sha256 = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');

function fileDigest(path: string): string {
  try {
    return sha256(readFileSync(path));
  } catch {
    // The run itself reports the file it cannot read; the digest just records that it could not.
    return 'unreadable';
  }
}

/** A host given by name or path, as resolveHost reads it. */
function hostDigest(nameOrPath: string): string {
  if (nameOrPath === 'auto') {
    try {
      const h = detectHost();
      return sha256(JSON.stringify({ ...h, cpuNode: [...h.cpuNode] }));
    } catch {
      return 'unreadable';
    }
  }
  return fileDigest(/^[a-z0-9-]+$/.test(nameOrPath) ? `${HOSTS_DIR}${nameOrPath}.yaml` : nameOrPath);
}

/**
 * The files `s` reads, keyed by where the scenario names them: `host`,
 * `profile`, and `vms[i].events[j].destination.host` for a migration to a
 * host of its own. Inline hosts are part of the scenario and have no entry.
 */
export function inputDigests(s: Scenario): Record<string, InputDigest> {
  const out: Record<string, InputDigest> = {};
  if (typeof s.host === 'string') out.host = { source: s.host, sha256: hostDigest(s.host) };
  s.vms.forEach((vm, i) =>
    vm.events.forEach((ev, j) => {
      const h = ev.destination?.host;
      if (typeof h === 'string') out[`vms[${i}].events[${j}].destination.host`] = { source: h, sha256: hostDigest(h) };
    }),
  );
  out.profile = s.profile
    ? { source: s.profile, sha256: fileDigest(s.profile) }
    : { source: 'profiles/default.json', sha256: fileDigest(fromRoot('profiles', 'default.json')) };
  return out;
}

/** What a finished run recorded, as far as the resume check reads it. */
export interface RecordedRun {
  memtwin?: { version?: string };
  inputs?: unknown;
}

/**
 * Why a run recorded as `prev` is not what this attempt would compute from
 * `inputs` (inputsOf: the scenario plus `digests`) with memtwin `version`;
 * undefined when it is. Each reason is one short phrase ("host file changed
 * (hosts/big.yaml)").
 */
export function staleReason(prev: RecordedRun, inputs: unknown, version: string): string | undefined {
  const reasons: string[] = [];
  const was = prev.memtwin?.version;
  if (was !== version) reasons.push(`memtwin version changed (${was ?? 'unknown'} -> ${version})`);
  const { digests: prevDigests, ...prevScenario } = asRecord(prev.inputs);
  const { digests: nowDigests, ...nowScenario } = asRecord(inputs);
  const field = firstDifference(prevScenario, nowScenario);
  if (field !== undefined) reasons.push(`scenario changed${field ? ` (${field})` : ''}`);
  const p = asRecord(prevDigests) as Record<string, InputDigest | undefined>;
  const n = asRecord(nowDigests) as Record<string, InputDigest | undefined>;
  for (const key of new Set([...Object.keys(n), ...Object.keys(p)])) {
    const a = p[key],
      b = n[key];
    if (a?.sha256 === b?.sha256 && a?.source === b?.source) continue;
    // A file named differently is a scenario change, already reported.
    if (field !== undefined && a && b && a.source !== b.source) continue;
    const what = key === 'profile' ? 'cost profile' : key === 'host' ? 'host file' : `${key} file`;
    reasons.push(!a ? `${what} not recorded by the earlier run` : `${what} changed (${(b ?? a).source})`);
  }
  return reasons.length ? reasons.join('; ') : undefined;
}

function asRecord(x: unknown): Record<string, unknown> {
  return x && typeof x === 'object' && !Array.isArray(x) ? (x as Record<string, unknown>) : {};
}

/**
 * The first path (`kernel./sys/...`, `processes[0].threads`) where two
 * JSON values differ, '' when they differ at the top, undefined when equal.
 */
export function firstDifference(a: unknown, b: unknown, path = ''): string | undefined {
  if (JSON.stringify(a) === JSON.stringify(b)) return undefined;
  if (Array.isArray(a) && Array.isArray(b)) {
    if (a.length !== b.length) return path;
    for (let i = 0; i < a.length; i++) {
      const d = firstDifference(a[i], b[i], `${path}[${i}]`);
      if (d !== undefined) return d;
    }
    return path;
  }
  if (a && b && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a) && !Array.isArray(b)) {
    const ra = a as Record<string, unknown>,
      rb = b as Record<string, unknown>;
    for (const k of new Set([...Object.keys(ra), ...Object.keys(rb)])) {
      const d = firstDifference(ra[k], rb[k], path ? `${path}.${k}` : k);
      if (d !== undefined) return d;
    }
    return path;
  }
  return path;
}
