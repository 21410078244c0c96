// Node-served mode (driven by testkit/tests/web_node.rs). `concord ui` prints a one-time URL
// for the web client on the node's loopback control API; opening it signs the browser in with
// a cookie, and the page then sends and receives through the node. A browser user on the
// relay (A) and the node's user (N, in the node-served page) talk both ways; the page keeps
// its session across a reload; the one-time URL does not work twice; a page without the
// cookie says how to open it. Then a new browser on the relay is linked to the node's account
// with `concord device link <the key the browser shows>` and sees the node's guild.
//
// Usage: node tests/web-node.mjs <relay url> <invite url> <concord binary> <node data dir>
//        <node user name> <guild name>. Prints one JSON line.

import { execFileSync } from 'node:child_process';
import { launch, finish } from '../lib/chromium.mjs';
import { watch, createAccount, send, messageText, TIMEOUT } from './web-common.mjs';

const [relay, invite, bin, dataDir, nodeName, guildName] = process.argv.slice(2);
const relayOrigin = new URL(relay).origin;
const suffix = Math.random().toString(36).slice(2, 8);
const result = { ok: false, checks: {}, console_errors: [], foreign_requests: [], dialogs: [] };
const checks = result.checks;
const started = Date.now();
const mark = (name) => { (result.ms ??= {})[name] = Date.now() - started; };
const concord = (...args) => execFileSync(bin, ['--data-dir', dataDir, ...args], { encoding: 'utf8', timeout: 30_000 });

let browser;
try {
  browser = await launch();
  // A: a browser user on the relay, invited to the node's guild.
  const pageA = await (await browser.newContext()).newPage();
  watch(pageA, 'A', result, relayOrigin);
  await pageA.goto(invite);
  await createAccount(pageA, `ana_${suffix}`);
  await pageA.getByRole('button', { name: 'Join guild' }).click();
  await pageA.locator('#composer-input[placeholder="Message #general"]').waitFor();
  mark('relay_user_joined');

  // N: the node-served page, opened with the URL `concord ui` prints.
  const printed = concord('ui', '--no-open');
  const url = printed.split('\n').map((l) => l.trim()).find((l) => l.startsWith('http://127.0.0.1:'));
  result.ui_url_shape = url?.replace(/ticket=.*/, 'ticket=…');
  const nodeOrigin = new URL(url).origin;
  const pageN = await (await browser.newContext()).newPage();
  watch(pageN, 'N', result, nodeOrigin);
  await pageN.goto(url);
  await pageN.locator('#me-name', { hasText: nodeName }).waitFor();
  checks.ticket_left_address_bar = new URL(pageN.url()).pathname === '/' && !pageN.url().includes('ticket');
  await pageN.getByRole('button', { name: guildName }).click();
  await pageN.locator('#composer-input[placeholder="Message #general"]').waitFor();
  checks.node_page_opened = true;
  mark('opened');

  await send(pageN, 'hello from the node page');
  await messageText(pageA, 'hello from the node page').waitFor();
  checks.node_page_to_relay_user = true;
  mark('sent');
  await send(pageA, 'hello to the node page');
  await messageText(pageN, 'hello to the node page').waitFor();
  checks.relay_user_to_node_page = true;
  mark('received');
  // Exactly once on both sides (the page's own message is not shown twice either).
  const once = async (page, text) => (await page.locator('#messages .content').filter({ hasText: new RegExp(`^${text}$`) }).count()) === 1;
  checks.no_duplicates = (await once(pageN, 'hello from the node page')) && (await once(pageA, 'hello from the node page'))
    && (await once(pageN, 'hello to the node page'));

  await pageN.reload();
  await pageN.locator('#me-name', { hasText: nodeName }).waitFor();
  await pageN.getByRole('button', { name: guildName }).click();
  await messageText(pageN, 'hello to the node page').waitFor();
  checks.reload_keeps_session = true;
  mark('reloaded');

  // The one-time URL, a second time (another browser profile): refused, nothing signed in.
  const other = await (await browser.newContext()).newPage();
  const again = await other.goto(url);
  checks.ticket_single_use = again.status() === 403 && (await other.content()).includes('already used');
  await other.goto(`${nodeOrigin}/`);
  await other.locator('#fatal', { hasText: 'concord ui' }).waitFor();
  checks.no_cookie_no_access = await other.locator('#app').isHidden();
  mark('refused');

  // `concord device link <key>`: the key a new browser on the relay shows.
  const pageC = await (await browser.newContext()).newPage();
  watch(pageC, 'C', result, relayOrigin);
  await pageC.goto(`${relay}/`);
  await pageC.getByText('Use an existing account on this browser').click();
  const key = (await pageC.locator('#device-key').textContent()).trim();
  const linked = concord('device', 'link', key, '--label', 'browser linked from the CLI');
  checks.cli_echoes_the_key = linked.includes(key);
  await pageC.getByRole('button', { name: 'I linked it, log in' }).click();
  await pageC.locator('#me-name', { hasText: nodeName }).waitFor({ timeout: TIMEOUT });
  await pageC.getByRole('button', { name: guildName }).waitFor();
  checks.cli_linked_browser = true;
  mark('linked');

  checks.no_console_errors = result.console_errors.length === 0;
  checks.no_foreign_requests = result.foreign_requests.length === 0;
  checks.no_dialogs = result.dialogs.length === 0;
  result.ok = Object.values(checks).every((v) => v === true);
} catch (err) {
  result.error = String(err?.stack ?? err);
} finally {
  await browser?.close().catch(() => {});
}
finish(result);
