// The web client end to end in Chromium, against a relay started by
// testkit/tests/web_client.rs: two browser contexts (two users) create accounts, a guild, an
// invite, join, chat live both ways with a typing indicator; HTML in messages stays text;
// a reload keeps the session; history scrolls back; the signed formats match the vectors.
//
// Also: edit, delete and a reaction seen by the other user, a DM both ways, a second
// browser linked to A's account sees A's guilds, search jumps to an older message, and
// screenshots of the main views (light and dark, desktop and 360 px) are written as PNG.
//
// Usage: node tests/web-client.mjs <relay base url> [screenshot dir]. Prints one JSON line.

import { launch, finish } from '../lib/chromium.mjs';
import { watch as watchPage, messageItem, messageText, createAccount, send, apiSend } from './web-common.mjs';

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const base = process.argv[2];
const shots = process.argv[3] ?? null;
const origin = new URL(base).origin;
const suffix = Math.random().toString(36).slice(2, 8);
const nameA = `ana_${suffix}`;
const nameB = `bo.${suffix}`;

const result = { ok: false, checks: {}, console_errors: [], foreign_requests: [], dialogs: [], screenshots: [] };
const checks = result.checks;
const watch = (page, who) => watchPage(page, who, result, origin);

async function screenshot(page, name) {
  if (!shots) return;
  mkdirSync(shots, { recursive: true });
  const path = join(shots, `${name}.png`);
  await page.screenshot({ path });
  result.screenshots.push(path);
}

// Signs the documented vectors with WebCrypto keys imported from the vector seeds (PKCS#8 =
// fixed header + seed) through the client's own byte-format code.
async function vectors(page) {
  return page.evaluate(async () => {
    const { certificateBytes, loginBytes, sign } = await import('/js/signed.js');
    const { b64u } = await import('/js/b64.js');
    const key = async (byte) => {
      const der = new Uint8Array(48);
      der.set([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]);
      der.fill(byte, 16);
      return crypto.subtle.importKey('pkcs8', der, { name: 'Ed25519' }, false, ['sign']);
    };
    const account = 'iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w';
    const device = 'gTl3Dqh9F19Wo1Rmw0x-zMuNipG07jeiXfYPW4_Js5Q';
    const cert = await sign(await key(1), certificateBytes(account, device, 'laptop', 1700000000));
    const login = await sign(await key(2), loginBytes('https://chat.example.org', 'q2x8JfQm5mN0bGl3kPz7Ew'));
    return {
      certificate: cert === '05UFPzFUNs8qNUacz_6UJhF0mn4K4mSuzEWVAp0O0B785WnlAcuwflJpdbdle9Ol0Swhbgs86gO2qRpDQShKBA',
      login: login === 'i8W4G2qbSLecFiEpPmDFsqqiIMAVlMSQmY9PdA5rzH1O4RcFq1r4mz89MzC9lvX6RTW_5GF3sPW-sROVgVvNAA',
      login_bytes: loginBytes('https://chat.example.org', 'q2x8JfQm5mN0bGl3kPz7Ew').length === 63,
      b64u: b64u(new Uint8Array([251, 255])) === '-_8',
    };
  });
}

// What IndexedDB holds: the keys must be non-extractable Ed25519 CryptoKeys.
async function storedKeys(page) {
  return page.evaluate(async () => {
    const { kv } = await import('/js/store.js');
    const device = await kv.get('device');
    const account = await kv.get('account');
    const ok = (k) => k?.privateKey instanceof CryptoKey && k.privateKey.extractable === false && k.privateKey.algorithm.name === 'Ed25519';
    return { device: ok(device), account: account ? ok(account) : null };
  });
}

let browser;
try {
  browser = await launch();
  const ctxA = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  // B uses a phone-sized window: the client must work at 360 px.
  const ctxB = await browser.newContext({ viewport: { width: 360, height: 740 } });
  const pageA = await ctxA.newPage();
  const pageB = await ctxB.newPage();
  watch(pageA, 'A');
  watch(pageB, 'B');

  // A: first visit, account, guild, invite.
  const first = await pageA.goto(`${base}/`);
  const headers = first.headers();
  result.csp = headers['content-security-policy'] ?? null;
  checks.csp = Boolean(result.csp) && result.csp.includes("default-src 'self'") && !/unsafe-(inline|eval)/.test(result.csp);
  checks.html_content_type = (headers['content-type'] ?? '').startsWith('text/html');
  await pageA.getByLabel('Username', { exact: true }).waitFor();
  await screenshot(pageA, 'welcome-desktop');
  await createAccount(pageA, nameA);
  await pageA.getByRole('button', { name: 'New guild' }).click();
  await pageA.getByLabel('Guild name').fill('Rust Meetup');
  await pageA.getByRole('button', { name: 'Create guild' }).click();
  await pageA.getByRole('heading', { name: '#general' }).waitFor();
  checks.guild_created = await pageA.getByRole('button', { name: 'Rust Meetup' }).isVisible();
  await pageA.getByRole('button', { name: 'Invite people' }).click();
  await pageA.getByLabel('Invite link').waitFor({ state: 'visible' });
  const invite = await pageA.getByLabel('Invite link').inputValue();
  checks.invite_link = invite.startsWith(`${origin}/invite/`);
  await pageA.getByRole('button', { name: 'Done' }).click();

  // B: opens the invite link, creates an account, joins.
  await pageB.goto(invite);
  await pageB.locator('#invite-note').waitFor({ state: 'visible' });
  checks.invite_note = (await pageB.locator('#invite-note').textContent()).includes('invited');
  await createAccount(pageB, nameB);
  await pageB.getByRole('button', { name: 'Join guild' }).click();
  await pageB.locator('#composer-input[placeholder="Message #general"]').waitFor();
  checks.joined = (await pageB.evaluate(() => location.pathname)) === '/';

  // Live both ways, with the typing indicator.
  await send(pageA, 'hello from A');
  await messageText(pageB, 'hello from A').waitFor();
  checks.b_sees_a_live = true;
  await pageB.getByLabel('Message', { exact: true }).fill('typing…');
  await pageA.locator('#typing', { hasText: `${nameB} is typing` }).waitFor();
  checks.typing_seen = true;
  await send(pageB, 'hi from B');
  await messageText(pageA, 'hi from B').waitFor();
  checks.a_sees_b_live = true;
  checks.author_shown = await pageA.locator('#messages .author', { hasText: nameB }).first().isVisible();

  // HTML in a message is text: no element is created and nothing runs.
  const img = '<img src=x onerror=window.__pwned=1>';
  const script = '<script>window.__pwned=2</script>';
  await send(pageA, img);
  await send(pageA, script);
  await messageText(pageB, script).waitFor();
  const xss = await pageB.evaluate(() => ({
    imgs: document.querySelectorAll('#messages img').length,
    scripts: document.querySelectorAll('#messages script').length,
    pwned: window.__pwned ?? null,
    shown: [...document.querySelectorAll('#messages .content')].map((e) => e.textContent),
  }));
  checks.html_is_text = xss.imgs === 0 && xss.scripts === 0 && xss.pwned === null && xss.shown.includes(img) && xss.shown.includes(script);
  result.xss = { imgs: xss.imgs, scripts: xss.scripts, pwned: xss.pwned };

  // Edit, reaction and delete, each seen live by the other user.
  const mineA = messageItem(pageA, 'hello from A');
  await mineA.hover();
  await mineA.getByRole('button', { name: 'Edit' }).click();
  const editBox = pageA.getByLabel('Edit message');
  await editBox.fill('hello from A, edited');
  await editBox.press('Enter');
  await messageText(pageB, 'hello from A, edited').waitFor();
  checks.edit_seen = (await messageItem(pageB, 'hello from A, edited').locator('.edited').count()) === 1;
  const theirs = messageItem(pageB, 'hello from A, edited');
  await theirs.hover();
  await theirs.getByRole('button', { name: 'React with 👍' }).click();
  await messageItem(pageA, 'hello from A, edited').getByRole('button', { name: '👍 1' }).waitFor();
  checks.reaction_seen = true;
  // After a reload, history marks B's own reaction (pressed for B, not for A).
  await pageB.reload();
  const pressedB = messageItem(pageB, 'hello from A, edited').getByRole('button', { name: '👍 1' });
  await pressedB.waitFor();
  checks.reaction_mine_after_reload = (await pressedB.getAttribute('aria-pressed')) === 'true'
    && (await messageItem(pageA, 'hello from A, edited').getByRole('button', { name: '👍 1' }).getAttribute('aria-pressed')) === 'false';
  await send(pageA, 'delete me');
  await messageText(pageB, 'delete me').waitFor();
  const doomed = messageItem(pageA, 'delete me');
  await doomed.hover();
  await doomed.getByRole('button', { name: 'Delete' }).click();
  await doomed.getByRole('button', { name: 'Confirm delete' }).click();
  await messageText(pageB, 'delete me').waitFor({ state: 'detached' });
  checks.delete_seen = (await messageText(pageA, 'delete me').count()) === 0;
  await screenshot(pageA, 'chat-desktop-light');
  await pageA.emulateMedia({ colorScheme: 'dark' });
  await screenshot(pageA, 'chat-desktop-dark');
  await pageA.emulateMedia({ colorScheme: 'light' });
  await screenshot(pageB, 'chat-360');

  // A direct message, both ways: A picks B in the member list, then "Send a message".
  await pageA.locator('#member-list').getByRole('button', { name: nameB }).click();
  await pageA.getByRole('button', { name: 'Send a message' }).click();
  await pageA.locator(`#composer-input[placeholder="Message @${nameB}"]`).waitFor();
  await send(pageA, 'a private hello');
  await pageB.getByRole('button', { name: 'Direct messages' }).click();
  await pageB.getByRole('button', { name: `@${nameA}` }).click();
  await messageText(pageB, 'a private hello').waitFor();
  await send(pageB, 'a private answer');
  await messageText(pageA, 'a private answer').waitFor();
  checks.dm_exchanged = true;
  await screenshot(pageB, 'dm-360');
  await pageA.getByRole('button', { name: 'Rust Meetup' }).click();
  await pageB.getByRole('button', { name: 'Rust Meetup' }).click();
  await pageA.locator('#composer-input[placeholder="Message #general"]').waitFor();
  await pageB.locator('#composer-input[placeholder="Message #general"]').waitFor();

  // Channels: A creates #random (B sees it appear), posts there (B, in #general, sees an
  // unread badge, then the message under a "New" divider), renames it, deletes it.
  await pageA.getByRole('button', { name: 'Create channel' }).click();
  await pageA.locator('#channel-dialog').getByLabel('Channel name').fill('random');
  await pageA.getByRole('button', { name: 'Create', exact: true }).click();
  await pageA.locator('#composer-input[placeholder="Message #random"]').waitFor();
  const randomB = pageB.locator('#channel-list button', { hasText: '#random' });
  await randomB.waitFor();
  checks.channel_created_seen = true;
  await send(pageA, 'news in random');
  await messageText(pageA, 'news in random').waitFor();
  await pageB.locator('#channel-list button.unread .badge', { hasText: '1' }).waitFor();
  checks.unread_badge = true;
  // B's read acknowledgement (sent 500 ms after reading) must land before A deletes the
  // channel, or it races the deletion and gets a 404.
  const ackB = pageB.waitForResponse((r) => r.url().endsWith('/ack') && r.request().method() === 'POST');
  await randomB.click();
  await messageText(pageB, 'news in random').waitFor();
  await ackB;
  checks.unread_divider = await pageB.locator('#messages li.divider').isVisible();
  await pageB.locator('#channel-list .badge').waitFor({ state: 'detached' });
  checks.unread_cleared = true;
  await pageA.getByRole('button', { name: 'Channel settings' }).click();
  await pageA.locator('#settings-dialog').getByLabel('Channel name').fill('off-topic');
  await pageA.getByRole('button', { name: 'Save' }).click();
  await pageB.locator('#composer-input[placeholder="Message #off-topic"]').waitFor();
  checks.channel_renamed_seen = true;
  await pageA.getByRole('button', { name: 'Channel settings' }).click();
  await pageA.getByRole('button', { name: 'Delete channel' }).click();
  await pageA.getByRole('button', { name: 'Really delete?' }).click();
  await pageB.locator('#composer-input[placeholder="Message #general"]').waitFor();
  await pageA.locator('#composer-input[placeholder="Message #general"]').waitFor();
  checks.channel_deleted_seen = (await pageB.locator('#channel-list button', { hasText: '#off-topic' }).count()) === 0;

  // A backlog of 60 messages (sent through the API with A's own stored session), then B
  // reloads: still logged in (keys and tokens in IndexedDB), newest page shown, and
  // scrolling up reaches the first message.
  await apiSend(pageA, Array.from({ length: 60 }, (_, i) => `backlog ${i}`));
  await messageText(pageB, 'backlog 59').waitFor();
  await pageB.reload();
  await pageB.locator('#me-name', { hasText: nameB }).waitFor();
  await messageText(pageB, 'backlog 59').waitFor();
  checks.reload_keeps_session = await pageB.locator('#welcome').isHidden();
  checks.newest_page_only = (await messageText(pageB, 'hello from A').count()) === 0;
  for (let i = 0; i < 20 && (await messageText(pageB, 'hello from A').count()) === 0; i += 1) {
    await pageB.locator('#messages').evaluate((el) => {
      el.scrollTop = 0;
    });
    await pageB.waitForTimeout(150);
  }
  checks.scroll_back = (await messageText(pageB, 'hello from A').count()) === 1;
  checks.start_of_channel = await pageB.locator('#messages .system').isVisible();
  checks.no_duplicates = await pageB.evaluate(() => {
    const ids = [...document.querySelectorAll('#messages li[data-id]')].map((li) => li.dataset.id);
    return ids.length === new Set(ids).size && ids.length === 64;
  });

  // Still live after the reload.
  await send(pageA, 'after reload');
  await messageText(pageB, 'after reload').waitFor();
  checks.live_after_reload = true;

  // Search from A finds the edited message (now above the newest page) and jumps to it.
  await pageA.getByLabel('Search messages').fill('edited');
  await pageA.getByLabel('Search messages').press('Enter');
  const hit = pageA.locator('#search-list button.hit', { hasText: 'hello from A' });
  await hit.waitFor();
  checks.search_highlight = (await hit.locator('mark', { hasText: 'edited' }).count()) === 1;
  await screenshot(pageA, 'search-desktop');
  await hit.click();
  const target = pageA.locator('#messages li.message.highlight', { hasText: 'hello from A, edited' });
  await target.waitFor();
  checks.search_jump = await target.evaluate((li) => {
    const box = li.getBoundingClientRect();
    const list = li.closest('#messages').getBoundingClientRect();
    return box.top >= list.top && box.bottom <= list.bottom;
  });

  // A second browser linked to A's account (A signs its device key) sees A's guilds.
  const ctxC = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  const pageC = await ctxC.newPage();
  watch(pageC, 'C');
  await pageC.goto(`${base}/`);
  await pageC.getByText('Use an existing account on this browser').click();
  const keyC = (await pageC.locator('#device-key').textContent()).trim();
  await pageA.getByRole('button', { name: 'Link a device' }).click();
  await pageA.getByLabel('Device key').fill(keyC);
  await pageA.getByLabel('Device name').fill('second browser');
  await pageA.getByRole('button', { name: 'Link device' }).click();
  await pageA.locator('#link-dialog').waitFor({ state: 'hidden' });
  await pageC.getByRole('button', { name: 'I linked it, log in' }).click();
  await pageC.locator('#me-name', { hasText: nameA }).waitFor();
  await pageC.getByRole('button', { name: 'Rust Meetup' }).waitFor();
  await messageText(pageC, 'after reload').waitFor();
  checks.linked_browser = true;
  result.keys_c = await storedKeys(pageC);

  // 360 px: nothing wider than the window.
  checks.fits_360 = await pageB.evaluate(() => document.documentElement.scrollWidth <= 360);

  result.vectors = await vectors(pageA);
  checks.vectors = Object.values(result.vectors).every(Boolean);
  result.keys = { a: await storedKeys(pageA), b: await storedKeys(pageB) };
  checks.keys_non_extractable = result.keys.a.device && result.keys.a.account === true && result.keys.b.device && result.keys.b.account === true
    && result.keys_c.device && result.keys_c.account === null;

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
