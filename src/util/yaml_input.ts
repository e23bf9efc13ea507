/**
 * Load a YAML file and validate it with a zod schema, mapping every
 * problem back to the file, line and column it came from.
 */
import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument, isMap, isSeq, isScalar, type Node as YamlNode } from 'yaml';
import type { z } from 'zod';
import { InputError } from './input_error.ts';

export function loadYaml<S extends z.ZodType>(file: string, schema: S, text?: string): z.infer<S> {
  let src: string;
  try {
    src = text ?? readFileSync(file, 'utf8');
  } catch (e) {
    throw new InputError(
      file,
      undefined,
      undefined,
      undefined,
      `cannot read file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
  const lc = new LineCounter();
  const doc = parseDocument(src, { lineCounter: lc, prettyErrors: false });
  if (doc.errors.length) {
    const e = doc.errors[0]!;
    const pos = lc.linePos(e.pos[0]);
    throw new InputError(file, pos.line, pos.col, undefined, `invalid YAML: ${e.message.split('\n')[0]}`);
  }
  const data: unknown = doc.toJS();
  const r = schema.safeParse(data);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const path = issue.path.map((p) => (typeof p === 'symbol' ? String(p) : p));
  const unknownKey = issue.code === 'unrecognized_keys' ? issue.keys[0] : undefined;
  const node = locate(doc.contents as YamlNode | null, unknownKey !== undefined ? [...path, unknownKey] : path, unknownKey !== undefined);
  const off = node?.range?.[0];
  const pos = off !== undefined ? lc.linePos(off) : undefined;
  const field = path
    .map((p) => (typeof p === 'number' ? `[${p}]` : p))
    .join('.')
    .replace(/\.\[/g, '[');
  throw new InputError(file, pos?.line, pos?.col, field || undefined, describeIssue(issue));
}

/** Walk the YAML AST along a zod issue path, as deep as it exists. */
function locate(node: YamlNode | null, path: (string | number)[], lastIsKey = false): YamlNode | null {
  let cur: YamlNode | null = node;
  for (let i = 0; i < path.length; i++) {
    const key = path[i]!;
    if (cur && isMap(cur)) {
      const pair = cur.items.find((p) => isScalar(p.key) && String(p.key.value) === String(key));
      if (!pair) return cur;
      // For an unknown key, point at the key itself.
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
    default:
      return issue.message;
  }
}
