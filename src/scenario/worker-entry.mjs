// Entry of sweep worker threads: load the TypeScript sources through tsx's
// ESM loader (as bin/memtwin.js does), then hand over to worker.ts.
import { register } from 'tsx/esm/api';
register();
const mod = await import('./worker.ts');
export default mod.default;
