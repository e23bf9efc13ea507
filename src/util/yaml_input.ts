/**
 * Load a YAML file and validate it with a zod schema, mapping every
 * problem back to the file, line and column it came from.
 */
import { LineCounter, parseDocument, isMap, isSeq, isScalar, type Node as YamlNode, type Document } from 'yaml';
import type { z } from 'zod';
import { InputError, readInput } from './input_error.ts';

export type YamlPath = (string | number)[];

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
    const doc = parseDocument(src, { lineCounter: lc, prettyErrors: false });
    if (doc.errors.length) {
      const e = doc.errors[0]!;
      const pos = lc.linePos(e.pos[0]);
      throw new InputError(file, pos.line, pos.col, undefined, `invalid YAML: ${e.message.split('\n')[0]}`);
    }
    return new YamlSource(file, doc.toJS(), doc, lc);
  }

  /** An InputError located at `path` (at the key itself when `atKey`). */
  error(path: YamlPath, expected: string, atKey = false): InputError {
    const node = locate(this.doc.contents as YamlNode | null, path, atKey);
    const off = node?.range?.[0];
    const pos = off !== undefined ? this.lc.linePos(off) : undefined;
    const field = (atKey ? path.slice(0, -1) : path)
      .map((p) => (typeof p === 'number' ? `[${p}]` : p))
      .join('.')
      .replace(/\.\[/g, '[');
    return new InputError(this.file, pos?.line, pos?.col, field || undefined, expected);
  }

  /**
   * Validate data (the file's, or a variant of it such as a sweep run) with
   * a schema. `where` maps an issue path to the path reported, for data that
   * is not laid out as the file is.
   */
  validate<S extends z.ZodType>(schema: S, data: unknown = this.data, where: (p: YamlPath) => YamlPath = (p) => p): z.infer<S> {
    const r = schema.safeParse(data);
    if (r.success) return r.data;
    const issue = r.error.issues[0]!;
    const path = issue.path.map((p) => (typeof p === 'symbol' ? String(p) : p));
    if (issue.code === 'unrecognized_keys') throw this.error(where([...path, issue.keys[0]!]), describeIssue(issue), true);
    throw this.error(where(path), describeIssue(issue));
  }
}

export function loadYaml<S extends z.ZodType>(file: string, schema: S, text?: string): z.infer<S> {
  const src = YamlSource.read(file, text);
  return src.validate(schema);
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
      cur = item;
    } else return cur;
  }
  return cur;
}

function describeIssue(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'unrecognized_keys':
      return `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `'${k}'`).join(', ')}`;
    case 'invalid_type':
      return `expected ${issue.expected}`;
    case 'invalid_value':
      return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'invalid_union':
      return 'does not match any allowed form (see `memtwin run --help` and the JSON Schema)';
    default:
      return issue.message;
  }
}
