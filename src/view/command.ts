/**
 * The `view` command: check the arguments, start the server (server.ts),
 * print the URL, serve until SIGINT or SIGTERM.
 *
 * Interrupted, it closes the server and exits with 130 (SIGINT) or 143
 * (SIGTERM), quietly: a server has no other way to end, but the shell
 * convention (128 + the signal's number) is what `memtwin run` and `exec`
 * give when interrupted, and what scripts that start it expect.
 */
import { existsSync, statSync } from 'node:fs';
import { InputError } from '../util/input_error.ts';
import { isLoopback, startView } from './server.ts';

export async function viewCommand(dirs: string[], o: { port: string; host: string }): Promise<void> {
  const port = Number(o.port);
  if (!/^\d+$/.test(o.port) || port > 65535)
    throw new InputError('--port', undefined, undefined, undefined, `expected a port number 0 to 65535, got "${o.port}"`);
  for (const d of dirs)
    if (!existsSync(d) || !statSync(d).isDirectory())
      throw new InputError(d, undefined, undefined, undefined, 'expected a directory of results (memtwin run --out DIR)');
  if (!isLoopback(o.host))
    process.stderr.write(
      `memtwin: warning: --host ${o.host} is not a loopback address: anyone who can reach it can read these results (the view has no authentication)\n`,
    );
  let started;
  try {
    started = await startView({ dirs, host: o.host, port });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'EADDRINUSE')
      throw new InputError(
        '--port',
        undefined,
        undefined,
        undefined,
        `port ${port} on ${o.host} is in use; choose another (--port 0 picks a free one)`,
      );
    if (err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND' || err.code === 'EACCES')
      throw new InputError('--host', undefined, undefined, undefined, `cannot listen on ${o.host}:${port} (${err.code})`);
    throw e;
  }
  const { server, url, index } = started;
  const ix = index.refresh();
  process.stdout.write(`memtwin view: ${ix.runs.length} runs, ${ix.sweeps.length} sweeps under ${dirs.join(', ')}\n${url}\n`);
  await new Promise<void>((done) => {
    const stop = (status: number): void => {
      process.exitCode = status;
      server.close(() => done());
      server.closeAllConnections();
    };
    process.once('SIGINT', () => stop(130));
    process.once('SIGTERM', () => stop(143));
  });
}
