// Types of bin/build.mjs, for the tests that import it.
export declare const ROOT: string;
export declare const DIST: string;
export type DistState = { state: 'current' } | { state: 'missing' } | { state: 'stale'; changed: string };
export declare function distState(root?: string): DistState;
export interface BuildError {
  text: string;
  location?: { file: string; line: number; column: number } | null;
}
export declare function build(root?: string): Promise<BuildError[]>;
