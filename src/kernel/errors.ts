/** A call whose semantics memtwin does not model (yet): the op-script layer reports it as unsupported. */
export class UnmodelledError extends Error {}
