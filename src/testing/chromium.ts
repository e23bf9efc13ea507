/** Headless Chromium for tests that look at reports as a person would. */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--enable-logging=stderr',
];

/** Run chromium with a fresh profile; resolves with its output. */
export function chromium(args: string[]): Promise<{ stdout: string; stderr: string }> {
  const profile = mkdtempSync(join(tmpdir(), 'memtwin-chromium-'));
  return new Promise((resolve, reject) => {
    execFile(
      CHROMIUM!,
      [...FLAGS, `--user-data-dir=${profile}`, ...args],
      { timeout: 30_000, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        rmSync(profile, { recursive: true, force: true });
        if (err) reject(new Error(`chromium failed: ${err.message}\n${stderr}`));
        else resolve({ stdout, stderr });
      },
    );
  });
}

/** Lines of chromium's log that report a page error (the reports have no scripts, so any console line is one). */
export function pageErrors(stderr: string): string[] {
  return stderr.split('\n').filter((l) => /Uncaught|ERROR:.*(console|javascript)|:CONSOLE/i.test(l));
}
