// Launches Debian's Chromium through playwright-core. Shared by every browser test.
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CONCORD_CHROMIUM || '/usr/bin/chromium';

export async function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Root in CI: the sandbox needs user namespaces we may not have.
    args: ['--no-sandbox', '--disable-dev-shm-usage', ...extraArgs],
  });
}

// Prints one JSON line (the test's result) and exits with its status.
export function finish(result) {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(result.ok ? 0 : 1);
}
