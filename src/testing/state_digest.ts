/**
 * A digest of everything reachable from a value through own enumerable
 * properties: primitives, typed arrays (their bytes), arrays, Maps, Sets and
 * plain or class objects (their constructor's name and fields, in order).
 * Functions count as present, not by their code; an object met again is
 * named by when it was first met, so shared structure and cycles compare
 * too. Two runs that built the same state give the same digest; a test
 * compares states far larger than toEqual can walk in time.
 */
import { createHash, type Hash } from 'node:crypto';

export function stateDigest(root: unknown): string {
  const h = createHash('sha256');
  walk(h, root, new Map());
  return h.digest('hex');
}

/** stateDigest of each own field of `obj` (to name the part that differs). */
export function fieldDigests(obj: object): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of Object.keys(obj)) out[key] = stateDigest((obj as Record<string, unknown>)[key]);
  return out;
}

function walk(h: Hash, v: unknown, seen: Map<object, number>): void {
  const stack: unknown[] = [v];
  while (stack.length) {
    const x = stack.pop();
    if (x === null || (typeof x !== 'object' && typeof x !== 'function')) {
      h.update(`${typeof x}:${Object.is(x, -0) ? '-0' : String(x)};`);
      continue;
    }
    if (typeof x === 'function') {
      h.update('fn;');
      continue;
    }
    const id = seen.get(x);
    if (id !== undefined) {
      h.update(`@${id};`);
      continue;
    }
    seen.set(x, seen.size);
    if (ArrayBuffer.isView(x)) {
      h.update(`${x.constructor.name}:${x.byteLength};`);
      h.update(new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
      continue;
    }
    // Children go on the stack in reverse, so they are visited in order.
    const kids: unknown[] = [];
    if (x instanceof Map) {
      h.update(`Map:${x.size};`);
      for (const [a, b] of x) kids.push(a, b);
    } else if (x instanceof Set) {
      h.update(`Set:${x.size};`);
      for (const a of x) kids.push(a);
    } else if (Array.isArray(x)) {
      h.update(`Array:${x.length};`);
      for (let i = 0; i < x.length; i++) kids.push(x[i]);
    } else {
      const keys = Object.keys(x);
      h.update(`${(x as object).constructor?.name ?? 'null'}{${keys.join(',')}};`);
      for (const key of keys) kids.push((x as Record<string, unknown>)[key]);
    }
    for (let i = kids.length - 1; i >= 0; i--) stack.push(kids[i]);
  }
}
