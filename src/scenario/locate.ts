/**
 * Problems found while a scenario runs (a command QEMU refuses, a field
 * that cannot work in its context, a migration still running at the end),
 * located in the scenario file as the loader locates its own (load.ts with
 * YamlSource.error): file, line, column, field.
 *
 * A run has its scenario (RunSpec: the parsed data, with sweep values in
 * place), not the YAML it came from, so the locator reads the file again
 * the first time it has something to report. A field a sweep value put
 * there is reported at that value in the sweep list, as load.ts reports a
 * bad sweep value, with the field it went to in the text.
 */
import { isDeepStrictEqual } from 'node:util';
import { YamlSource, type YamlPath } from '../util/yaml_input.ts';
import { InputError } from '../util/input_error.ts';
import type { RunSpec } from './load.ts';

export interface Locator {
  /** An InputError at `path` of the scenario (at the key itself when `atKey`). */
  error(path: YamlPath, expected: string, atKey?: boolean): InputError;
  /** A warning's text, located as an error would be ("file:line:col: field: text"). */
  warning(path: YamlPath, text: string): string;
}

/** `vms[0].events[2].bandwidth`: a path as YamlSource.error names fields. */
export function fieldName(path: YamlPath): string {
  return path
    .map((p) => (typeof p === 'number' ? `[${p}]` : p))
    .join('.')
    .replace(/\.\[/g, '[');
}

/**
 * A run as the locator needs it: its sweep values, and, when the loader
 * gives it, the loader's own mapping from a field to where its value was
 * set (load.ts computes one per run to report bad sweep values; with it,
 * every place a value can come from is covered, not only the sweep).
 */
export type LocatedRun = Pick<RunSpec, 'params'> & { where?: (p: YamlPath) => YamlPath };

export function runLocator(file: string, spec: LocatedRun): Locator {
  let src: YamlSource | null | undefined;
  const read = (): YamlSource | null => {
    if (src === undefined)
      try {
        src = YamlSource.read(file);
      } catch {
        src = null; // the file changed or went away since it was loaded: report without a line
      }
    return src;
  };
  const error = (path: YamlPath, expected: string, atKey = false): InputError => {
    const s = read();
    if (!s) return new InputError(file, undefined, undefined, fieldName(atKey ? path.slice(0, -1) : path) || undefined, expected);
    const mapped = spec.where?.(path);
    const swept = mapped !== undefined ? (mapped === path ? undefined : mapped) : sweptAt(s.data, spec.params, path);
    if (swept) return s.error(swept, `${fieldName(path)}: ${expected}`);
    return s.error(path, expected, atKey);
  };
  return {
    error,
    warning: (path, text) => error(path, text).message,
  };
}

/**
 * The sweep value (or configuration) of this run that set `path`, if one
 * did: ['sweep', j, 'values' | 'configs', v], as load.ts locates it. The
 * run's params name each dimension's value by its label.
 */
function sweptAt(data: unknown, params: Record<string, unknown>, path: YamlPath): YamlPath | undefined {
  const sweep = (data as { sweep?: unknown } | null)?.sweep;
  if (!Array.isArray(sweep)) return undefined;
  const within = (sp: unknown): boolean =>
    Array.isArray(sp) && sp.length <= path.length && sp.every((x, i) => String(x) === String(path[i]));
  for (let j = 0; j < sweep.length; j++) {
    const dim = sweep[j] as {
      path?: unknown[];
      label?: string;
      values?: unknown[];
      configs?: { name?: string; set?: { path?: unknown }[] }[];
    };
    if (Array.isArray(dim.configs)) {
      if (dim.label === undefined || !(dim.label in params)) continue;
      const v = dim.configs.findIndex((c) => c.name === params[dim.label!]);
      if (v >= 0 && (dim.configs[v]!.set ?? []).some((x) => within(x.path))) return ['sweep', j, 'configs', v];
    } else if (Array.isArray(dim.path) && Array.isArray(dim.values)) {
      const label = dim.label ?? String(dim.path[dim.path.length - 1]);
      if (!(label in params) || !within(dim.path)) continue;
      const v = dim.values.findIndex((x) => isDeepStrictEqual(x, params[label]));
      if (v >= 0) return ['sweep', j, 'values', v];
    }
  }
  return undefined;
}
