// An accessibility scan (axe-core) of the web client's main views, light and dark, desktop
// and 360 px (driven by testkit/tests/web_a11y.rs). Serious and critical violations fail.
//
// Usage: node tests/web-a11y.mjs <relay base url>. Prints one JSON line.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { launch, finish } from '../lib/chromium.mjs';
import { watch, messageText, send, guildPair } from './web-common.mjs';

const base = process.argv[2];
const origin = new URL(base).origin;
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const suffix = Math.random().toString(36).slice(2, 8);
const result = { ok: false, checks: {}, views: {}, console_errors: [], foreign_requests: [], dialogs: [] };

// Runs axe on the page as it is (evaluated through the DevTools protocol: the page's CSP,
// which forbids injected scripts, stays on) and keeps serious and critical violations.
async function scan(page, view) {
  await page.evaluate(axeSource);
  const found = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
  });
  const bad = found.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  result.views[view] = { violations: found.length, serious_or_critical: bad };
  result.checks[view] = bad.length === 0;
}

let browser;
try {
  browser = await launch();
  const pageA = await (await browser.newContext({ viewport: { width: 1200, height: 800 } })).newPage();
  const pageB = await (await browser.newContext({ viewport: { width: 360, height: 740 } })).newPage();
  watch(pageA, 'A', result, origin);
  watch(pageB, 'B', result, origin);

  await pageA.goto(`${base}/`);
  await pageA.getByLabel('Username', { exact: true }).waitFor();
  await scan(pageA, 'welcome');
  await pageA.emulateMedia({ colorScheme: 'dark' });
  await scan(pageA, 'welcome_dark');
  await pageA.emulateMedia({ colorScheme: 'light' });

  await guildPair(pageA, pageB, base, `ana_${suffix}`, `bo_${suffix}`);
  await send(pageA, 'hello <@0> and friends');
  await send(pageB, 'hi there');
  await messageText(pageA, 'hi there').waitFor();
  await pageA.locator('#member-list li').nth(1).waitFor();
  await scan(pageA, 'chat');
  await pageA.emulateMedia({ colorScheme: 'dark' });
  await scan(pageA, 'chat_dark');
  await pageA.emulateMedia({ colorScheme: 'light' });
  await scan(pageB, 'chat_360');

  await pageA.getByRole('button', { name: 'Invite people' }).click();
  await pageA.getByLabel('Invite link').waitFor();
  await scan(pageA, 'invite_dialog');
  await pageA.getByRole('button', { name: 'Done' }).click();
  await pageA.getByRole('button', { name: 'Roles' }).click();
  await pageA.locator('#role-perms input').first().waitFor();
  await scan(pageA, 'roles_dialog');
  await pageA.getByRole('button', { name: 'Close' }).click();

  await pageA.getByLabel('Search messages').fill('hi');
  await pageA.getByLabel('Search messages').press('Enter');
  await pageA.locator('#search-list button.hit').first().waitFor();
  await scan(pageA, 'search');

  await pageB.getByRole('button', { name: 'Direct messages' }).click();
  await scan(pageB, 'dms_360');

  result.checks.no_console_errors = result.console_errors.length === 0;
  result.ok = Object.values(result.checks).every((v) => v === true);
} catch (err) {
  result.error = String(err?.stack ?? err);
} finally {
  await browser?.close().catch(() => {});
}
finish(result);
