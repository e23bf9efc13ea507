/**
 * Load a YAML file and validate it with a zod schema, mapping every
 * problem back to the file, line and column it came from, the field, and
 * the forms the field allows (read from the schema itself).
 */
import {
  LineCounter,
  parseDocument,
  isAlias,
  isMap,
  isNode,
  isPair,
  isScalar,
  isSeq,
  visit,
  type Node as YamlNode,
  type Document,
} from 'yaml';
import type { z } from 'zod';
import { InputError, readInput } from './input_error.ts';

export type YamlPath = (string | number)[];

/** How many times aliases may be expanded (the yaml library's guard against alias bombs, at its default). */
export const MAX_ALIAS_COUNT = 100;

/**
 * A value as an error message shows it: JSON, cut to about `max` characters
 * with an ellipsis and the original length, so a 4 MB value gives a short line.
 * (Private copy until input_error.ts has the shared `quote`; same behaviour.)
 */
export function quote(v: unknown, max = 80): string {
  let s: string;
  if (v === undefined) return 'nothing';
  try {
    s = typeof v === 'bigint' ? String(v) : (JSON.stringify(v) ?? String(v));
  } catch {
    s = String(v);
  }
  if (s.length <= max) return s;
  return `${s.slice(0, Math.max(1, max - 1))}… (${s.length} characters)`;
}

/** A path element as a field name shows it (a long or odd key is quoted short). */
function fieldPart(p: string | number): string {
  if (typeof p === 'number') return `[${p}]`;
  return /^[\w/.@+-]{1,60}$/.test(p) ? p : quote(p, 40);
}

/** `processes[0].threads[1].cpu`, or `(top level)` for the document itself. */
export function fieldName(path: YamlPath): string {
  // A path hundreds of levels deep (nested lists) is shown by its ends.
  const parts: YamlPath = path.length > 12 ? [...path.slice(0, 6), `…${path.length - 10} levels…`, ...path.slice(-4)] : path;
  return parts.map(fieldPart).join('.').replace(/\.\[/g, '[') || '(top level)';
}

/** A parsed YAML file that can point at any of its nodes by path. */
export class YamlSource {
  private constructor(
    readonly file: string,
    readonly data: unknown,
    private readonly doc: Document,
    private readonly lc: LineCounter,
  ) {}

  static read(file: string, text?: string): YamlSource {
    const src = text ?? readInput(file);
    const lc = new LineCounter();
    let doc: Document | undefined;
    // A YAML error names the field whose text it is in, as far as the parser got.
    const at = (off: number | undefined, msg: string): InputError => {
      const pos = off !== undefined ? lc.linePos(off) : { line: 1, col: 1 };
      const field = fieldName(off !== undefined && doc ? pathAt(doc.contents as YamlNode | null, off) : []);
      return new InputError(file, pos.line, pos.col, field, `invalid YAML: ${firstLine(msg)}`);
    };
    try {
      doc = parseDocument(src, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
    } catch (e) {
      throw at(undefined, (e as Error).message);
    }
    if (doc.errors.length) {
      const e = doc.errors[0]!;
      throw at(e.pos[0], e.message);
    }
    const bad = doc.warnings.find((w) => w.code === 'TAG_RESOLVE_FAILED');
    if (bad) throw at(bad.pos[0], `${bad.message} (memtwin reads plain YAML: no custom tags)`);
    checkStructure(doc, at);
    let data: unknown;
    try {
      data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
    } catch (e) {
      // The alias guard (an alias bomb), or any other refusal while building the data.
      const first = firstAlias(doc);
      const msg = (e as Error).message;
      throw at(
        first,
        /alias/i.test(msg)
          ? `aliases expand to too much data (${msg}; at most ${MAX_ALIAS_COUNT} alias expansions, weighted by size): write the values out`
          : msg,
      );
    }
    return new YamlSource(file, data, doc, lc);
  }

  /** An InputError located at `path` (at the key itself when `atKey`). */
  error(path: YamlPath, expected: string, atKey = false): InputError {
    const node = locate(this.doc.contents as YamlNode | null, path, atKey);
    const off = node?.range?.[0];
    const pos = off !== undefined ? this.lc.linePos(off) : { line: 1, col: 1 };
    return new InputError(this.file, pos.line, pos.col, fieldName(atKey ? path.slice(0, -1) : path), expected);
  }

  /** Line and column of the node at `path` (as deep as it exists). */
  position(path: YamlPath): { line: number; col: number } {
    const off = locate(this.doc.contents as YamlNode | null, path)?.range?.[0];
    return off !== undefined ? this.lc.linePos(off) : { line: 1, col: 1 };
  }

  /**
   * Validate data (the file's, or a variant of it such as a sweep run) with
   * a schema. `where` maps an issue path to the path reported, for data that
   * is not laid out as the file is.
   */
  validate<S extends z.ZodType>(schema: S, data: unknown = this.data, where: (p: YamlPath) => YamlPath = (p) => p): z.infer<S> {
    const r = schema.safeParse(data, { reportInput: true });
    if (r.success) return r.data;
    const x = explainIssue(schema, r.error.issues[0]!, []);
    throw this.error(where(x.path), x.message, x.atKey);
  }
}

export function loadYaml<S extends z.ZodType>(file: string, schema: S, text?: string): z.infer<S> {
  const src = YamlSource.read(file, text);
  return src.validate(schema);
}

function firstLine(s: string): string {
  return s.split('\n')[0]!;
}

/**
 * What plain JSON-like data cannot hold, refused with its place: keys that
 * are collections, aliases to anchors not yet defined, and aliases inside
 * the node they name (a cycle).
 */
function checkStructure(doc: Document, at: (off: number | undefined, msg: string) => InputError): void {
  const anchors = new Map<string, YamlNode>();
  visit(doc, {
    Pair(_, pair) {
      if (pair.key !== null && isNode(pair.key) && !isScalar(pair.key))
        throw at(pair.key.range?.[0], 'a key must be a plain scalar (a name), not a list, map or alias');
    },
    Node(_, node, path) {
      if (isAlias(node)) {
        const target = anchors.get(node.source);
        if (!target) throw at(node.range?.[0], `alias *${node.source} names no anchor &${node.source} before it`);
        if (path.includes(target)) throw at(node.range?.[0], `alias *${node.source} is inside the node it names (a cycle)`);
      } else if (node.anchor) anchors.set(node.anchor, node);
    },
  });
}

function firstAlias(doc: Document): number | undefined {
  let off: number | undefined;
  visit(doc, {
    Alias(_, node) {
      off = node.range?.[0];
      return visit.BREAK;
    },
  });
  return off;
}

/** The path of the deepest node whose text contains `off` (keys included). */
function pathAt(node: YamlNode | null, off: number): YamlPath {
  const inside = (n: unknown): boolean => {
    const r = isNode(n) ? n.range : undefined;
    return !!r && off >= r[0] && off <= r[2];
  };
  const path: YamlPath = [];
  let cur: YamlNode | null = node;
  for (let guard = 0; cur && guard < 10_000; guard++) {
    let next: YamlNode | null = null;
    if (isMap(cur)) {
      for (const p of cur.items) {
        const key = isScalar(p.key) ? String(p.key.value) : '?';
        if (inside(p.key)) return [...path, key];
        if (inside(p.value)) {
          path.push(key);
          next = p.value as YamlNode;
          break;
        }
      }
    } else if (isSeq(cur)) {
      cur.items.forEach((item, i) => {
        if (!next && inside(item)) {
          path.push(i);
          next = item as YamlNode;
        }
      });
    }
    cur = next;
  }
  return path;
}

/** Walk the YAML AST along a path, as deep as it exists. */
function locate(node: YamlNode | null, path: YamlPath, lastIsKey = false): YamlNode | null {
  let cur: YamlNode | null = node;
  for (let i = 0; i < path.length; i++) {
    const key = path[i]!;
    if (cur && isMap(cur)) {
      const pair = cur.items.find((p) => isScalar(p.key) && String(p.key.value) === String(key));
      if (!pair) return cur;
      if (lastIsKey && i === path.length - 1) return pair.key as YamlNode;
      cur = (pair.value as YamlNode | null) ?? (pair.key as YamlNode);
    } else if (cur && isSeq(cur) && typeof key === 'number') {
      const item = cur.items[key] as YamlNode | undefined;
      if (!item) return cur;
      cur = isPair(item) ? ((item.value as YamlNode | null) ?? cur) : item;
    } else return cur;
  }
  return cur;
}

// ------------------------------------------------------------------ allowed forms

/** Forms given by hand to schemas whose structure says too little (sizes, durations, workloads). */
const FORMS = new WeakMap<object, string>();

/** Give a schema the text error messages use for its allowed form; returns the schema. */
export function withForm<S extends z.ZodType>(schema: S, form: string): S {
  FORMS.set(schema, form);
  return schema;
}

type Def = { type: string; [k: string]: unknown };
const defOf = (s: z.ZodType): Def => (s as unknown as { _zod: { def: Def } })._zod.def;

/** Optional, default and pipe wrappers around a schema, in order, then the schema they wrap. */
function unwrapOnce(s: z.ZodType): z.ZodType | undefined {
  const d = defOf(s);
  switch (d.type) {
    case 'optional':
    case 'nullable':
    case 'default':
    case 'prefault':
    case 'readonly':
    case 'catch':
    case 'nonoptional':
      return d['innerType'] as z.ZodType;
    case 'pipe':
      return defOf(d['in'] as z.ZodType).type === 'transform' ? (d['out'] as z.ZodType) : (d['in'] as z.ZodType);
    case 'lazy':
      return (d['getter'] as () => z.ZodType)();
    default:
      return undefined;
  }
}

/** The schema of the value at `path` below `root` (through unions: the first option that has the path). */
export function schemaAt(root: z.ZodType, path: YamlPath): z.ZodType | undefined {
  if (!path.length) return root;
  let s: z.ZodType | undefined = root;
  for (let guard = 0; s && guard < 32; guard++) {
    const d = defOf(s);
    const [key, ...rest] = path;
    switch (d.type) {
      case 'object': {
        const shape = d['shape'] as Record<string, z.ZodType>;
        const next = Object.prototype.hasOwnProperty.call(shape, String(key)) ? shape[String(key)] : undefined;
        return next && schemaAt(next, rest);
      }
      case 'array':
        return typeof key === 'number' || /^\d+$/.test(String(key)) ? schemaAt(d['element'] as z.ZodType, rest) : undefined;
      case 'record':
        return schemaAt(d['valueType'] as z.ZodType, rest);
      case 'union':
        for (const o of d['options'] as z.ZodType[]) {
          const r = schemaAt(o, path);
          if (r) return r;
        }
        return undefined;
      default:
        s = unwrapOnce(s);
    }
  }
  return undefined;
}

/** A number for a range: 2^53-1 and powers of two above 2^20 spelled out as such. */
function numText(n: number): string {
  if (n === Number.MAX_SAFE_INTEGER) return '2^53-1';
  if (n >= 2 ** 20 && Number.isInteger(Math.log2(n))) return `2^${Math.log2(n)}`;
  return String(n);
}

function numberForm(s: z.ZodType): string {
  const checks = ((defOf(s)['checks'] as { _zod: { def: Record<string, unknown> } }[] | undefined) ?? []).map((c) => c._zod.def);
  const isInt = checks.some((c) => c['check'] === 'number_format' && String(c['format']).includes('int'));
  let lo: string | undefined;
  let hi: string | undefined;
  for (const c of checks) {
    if (c['check'] === 'greater_than') lo = `${c['inclusive'] ? '' : 'more than '}${numText(c['value'] as number)}`;
    if (c['check'] === 'less_than') hi = `${c['inclusive'] ? '' : 'less than '}${numText(c['value'] as number)}`;
  }
  const what = isInt ? 'an integer' : 'a number';
  if (lo !== undefined && hi !== undefined) return `${what} from ${lo} to ${hi}`;
  if (lo !== undefined) return `${what} of at least ${lo}`;
  if (hi !== undefined) return `${what} of at most ${hi}`;
  return what;
}

function lengthLimits(s: z.ZodType): { min?: number; max?: number } {
  const out: { min?: number; max?: number } = {};
  for (const c of (defOf(s)['checks'] as { _zod: { def: Record<string, unknown> } }[] | undefined) ?? []) {
    const d = c._zod.def;
    if (d['check'] === 'min_length') out.min = d['minimum'] as number;
    if (d['check'] === 'max_length') out.max = d['maximum'] as number;
  }
  return out;
}

function listText(xs: string[], max = 12): string {
  return xs.length > max ? `${xs.slice(0, max).join(', ')}, … (${xs.length} in all)` : xs.join(', ');
}

/** The keys of an object schema: required first (as written in the schema), then `…` if there are optional ones. */
function objectForm(shape: Record<string, z.ZodType>): string {
  const keys = Object.keys(shape);
  const req = keys.filter((k) => (shape[k] as unknown as { _zod: { optin?: string } })._zod.optin !== 'optional');
  const shown = req.length ? req : keys.slice(0, 3);
  return `{${shown.join(', ')}${shown.length < keys.length ? ', …' : ''}}`;
}

/** What a schema accepts, in words: "a size from 4K to 1T: …", "one of always, madvise, never", "{name, size, …}". */
export function formOf(s: z.ZodType, depth = 0): string {
  for (let cur: z.ZodType | undefined = s; cur; cur = unwrapOnce(cur)) {
    const f = FORMS.get(cur);
    if (f) return f;
    const d = defOf(cur);
    switch (d.type) {
      case 'string': {
        const { min, max } = lengthLimits(cur);
        return min ? `a non-empty string${max ? ` of at most ${max} characters` : ''}` : 'a string';
      }
      case 'number':
        return numberForm(cur);
      case 'boolean':
        return 'true or false';
      case 'enum':
        return `one of ${listText(Object.values(d['entries'] as Record<string, string>))}`;
      case 'literal':
        return (d['values'] as unknown[]).map((v) => quote(v)).join(' or ');
      case 'union': {
        const forms = [...new Set((d['options'] as z.ZodType[]).map((o) => formOf(o, depth + 1)))];
        return forms.join(' or ');
      }
      case 'object':
        return objectForm(d['shape'] as Record<string, z.ZodType>);
      case 'array': {
        const { min, max } = lengthLimits(cur);
        const n =
          min !== undefined && max !== undefined
            ? `${min} to ${max}`
            : min !== undefined
              ? `at least ${min}`
              : max !== undefined
                ? `at most ${max}`
                : '';
        const each = depth < 2 ? `, each ${formOf(d['element'] as z.ZodType, depth + 1)}` : '';
        return `a list${n ? ` of ${n} ${n === '1' || n.endsWith(' 1') ? 'entry' : 'entries'}` : ''}${each}`;
      }
      case 'record':
        return `a map of names to ${depth < 2 ? formOf(d['valueType'] as z.ZodType, depth + 1) : 'values'}`;
      case 'unknown':
      case 'any':
        return 'any value';
    }
  }
  return 'a value of another form (see `memtwin run --help`)';
}

// ------------------------------------------------------------------ issues

type Issue = z.core.$ZodIssue & { input?: unknown };

/**
 * An issue as a located message: where (path, and whether it is a key) and
 * what is wrong and allowed. For a union, the branch that got furthest
 * names the problem, and the union's forms are listed unless that branch's
 * problem is deeper inside it.
 */
export function explainIssue(root: z.ZodType, issue: Issue, base: YamlPath): { path: YamlPath; message: string; atKey: boolean } {
  const rel = issue.path.map((p) => (typeof p === 'symbol' ? String(p) : p));
  const path = [...base, ...rel];
  const schema = schemaAt(root, rel);
  const form = schema ? formOf(schema) : undefined;
  const got = (): string => (issue.input === undefined ? 'missing' : `got ${quote(issue.input)}`);
  switch (issue.code) {
    case 'unrecognized_keys': {
      const d = schema ? unwrapTo(schema, 'object') : undefined;
      const known = d ? Object.keys(d['shape'] as object) : [];
      return {
        path: [...path, issue.keys[0]!],
        atKey: true,
        message:
          `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys
            .map(
              (k) =>
                `'${quote(k, 40)
                  .slice(1)
                  .replace(/"(?=$| \()/, '')}'`,
            )
            .join(', ')}` + (known.length ? `; the fields here are ${listText(known, 20)}` : ''),
      };
    }
    case 'invalid_union':
      return explainUnion(schema, issue, path, form);
    case 'invalid_type':
      return {
        path,
        atKey: false,
        message: issue.input === undefined ? `missing: expected ${form ?? issue.expected}` : `expected ${form ?? issue.expected}, ${got()}`,
      };
    case 'too_small':
    case 'too_big':
      return {
        path,
        atKey: false,
        message: `expected ${form ?? issue.message}, got ${Array.isArray(issue.input) ? `${issue.input.length} entries` : quote(issue.input)}`,
      };
    case 'invalid_value': {
      const want = form ?? issue.values.map((v) => quote(v)).join(', ');
      return { path, atKey: false, message: issue.input === undefined ? `missing: expected ${want}` : `expected ${want}, ${got()}` };
    }
    case 'custom':
      return { path, atKey: false, message: issue.message };
    default:
      return { path, atKey: false, message: `${issue.message}${form ? `; expected ${form}` : ''}` };
  }
}

function unwrapTo(s: z.ZodType, type: string): Def | undefined {
  for (let cur: z.ZodType | undefined = s; cur; cur = unwrapOnce(cur)) if (defOf(cur).type === type) return defOf(cur);
  return undefined;
}

/** How far into the value a branch's issues got: deeper is a better guess of what was meant. */
function depthOf(issues: Issue[]): number {
  let best = -1;
  for (const i of issues) {
    let d = i.path.length;
    if (i.code === 'invalid_type' && i.path.length === 0) d = -1;
    else if (i.code === 'unrecognized_keys') d += 0.5;
    else if (i.code === 'invalid_union') d += Math.max(0, ...i.errors.map((e) => depthOf(e as Issue[])));
    best = Math.max(best, d);
  }
  return best;
}

/** How many of the input's keys a branch (an object schema) knows: the branch whose fields were written is the one meant. */
function keysKnown(branch: z.ZodType, input: unknown): number {
  const obj = unwrapTo(branch, 'object');
  if (!obj || !input || typeof input !== 'object' || Array.isArray(input)) return 0;
  const shape = obj['shape'] as Record<string, unknown>;
  return Object.keys(input).filter((k) => Object.prototype.hasOwnProperty.call(shape, k)).length;
}

function explainUnion(
  schema: z.ZodType | undefined,
  issue: Extract<Issue, { code: 'invalid_union' }>,
  path: YamlPath,
  form: string | undefined,
): { path: YamlPath; message: string; atKey: boolean } {
  const allowed = form ?? 'one of the forms in `memtwin run --help`';
  const options = schema ? ((unwrapTo(schema, 'union')?.['options'] as z.ZodType[] | undefined) ?? []) : [];
  const branches = (issue.errors as Issue[][]).map((issues, i) => ({
    i,
    issues,
    depth: depthOf(issues),
    known: options[i] ? keysKnown(options[i], issue.input) : 0,
  }));
  // The branch that knows most of the fields given, then the one whose problem is deepest, then the one with fewest problems.
  branches.sort(
    (a, b) =>
      Number(b.depth >= 0) - Number(a.depth >= 0) ||
      b.known - a.known ||
      b.depth - a.depth ||
      a.issues.length - b.issues.length ||
      a.i - b.i,
  );
  const best = branches[0];
  const branch = best && options[best.i];
  if (!best || !branch || best.depth < 0 || !best.issues.length)
    return { path, atKey: false, message: `expected ${allowed}, got ${quote(issue.input)}` };
  // The branch's deepest issue, explained against that branch (its path is relative to the union).
  const deepest = [...best.issues].sort((a, b) => depthOf([b]) - depthOf([a]))[0]!;
  const inner = explainIssue(branch, deepest, path);
  // A missing or unknown field of the union's own object may mean another form was meant: name them all.
  const other = branches[1];
  const ambiguous =
    deepest.code === 'unrecognized_keys' ||
    (deepest.path.length <= 1 && deepest.input === undefined) ||
    (other !== undefined && other.known === best.known && other.depth === best.depth);
  return ambiguous ? { ...inner, message: `${inner.message} (${fieldName(path)} is ${allowed})` } : inner;
}
