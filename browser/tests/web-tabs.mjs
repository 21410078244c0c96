// Two tabs of one user share a session (tokens in IndexedDB) against a relay whose access
// tokens live 60 s, so that every call of either tab refreshes first (driven by
// testkit/tests/web_tabs.rs). Refreshes are taken in turns under a Web Lock and always use
// the newest stored refresh token: no 401, no reuse revocation, both tabs keep working.
//
// Usage: node tests/web-tabs.mjs <relay base url>. Prints one JSON line.

import { launch, finish } from '../lib/chromium.mjs';
import { watch, createAccount, send, messageText } from './web-common.mjs';

const base = process.argv[2];
const origin = new URL(base).origin;
const result = { ok: false, checks: {}, console_errors: [], foreign_requests: [], dialogs: [], refreshes: 0 };
const checks = result.checks;

let browser;
try {
  browser = await launch();
  const ctx = await browser.newContext();
  const one = await ctx.newPage();
  watch(one, 'tab1', result, origin);
  ctx.on('response', (resp) => {
    if (resp.url().endsWith('/api/v1/auth/refresh') && resp.status() === 200) result.refreshes += 1;
  });
  await one.goto(`${base}/`);
  const name = `ana_${Math.random().toString(36).slice(2, 8)}`;
  await createAccount(one, name);
  await one.getByRole('button', { name: 'New guild' }).click();
  await one.getByLabel('Guild name').fill('Tabs');
  await one.getByRole('button', { name: 'Create guild' }).click();
  await one.getByRole('heading', { name: '#general' }).waitFor();

  const two = await ctx.newPage();
  watch(two, 'tab2', result, origin);
  await two.goto(`${base}/`);
  await two.locator('#me-name', { hasText: name }).waitFor();
  await two.locator('#composer-input[placeholder="Message #general"]').waitFor();
  checks.second_tab_logged_in = true;

  const texts = (tab) => Array.from({ length: 5 }, (_, i) => `${tab} says ${i}`);
  await Promise.all([
    (async () => { for (const t of texts('one')) await send(one, t); })(),
    (async () => { for (const t of texts('two')) await send(two, t); })(),
  ]);
  for (const t of [...texts('one'), ...texts('two')]) {
    await messageText(one, t).waitFor();
    await messageText(two, t).waitFor();
  }
  checks.all_delivered = true;
  await two.reload();
  await two.locator('#me-name', { hasText: name }).waitFor();
  await messageText(two, 'one says 4').waitFor();
  await send(two, 'after reload');
  await messageText(one, 'after reload').waitFor();
  checks.still_logged_in = await two.locator('#welcome').isHidden();
  checks.refreshed = result.refreshes >= 2;
  checks.no_failed_requests = (result.failed_requests ?? []).length === 0;
  checks.no_console_errors = result.console_errors.length === 0;
  result.ok = Object.values(checks).every((v) => v === true);
} catch (err) {
  result.error = String(err?.stack ?? err);
} finally {
  await browser?.close().catch(() => {});
}
finish(result);
