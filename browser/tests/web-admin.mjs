// Guild administration in the web client (driven by testkit/tests/web_admin.rs): replies,
// presence, a role with a permission given to a member (who then gets the matching button),
// a private channel the member cannot see, kick, and ban (rejoining is refused).
//
// Usage: node tests/web-admin.mjs <relay base url>. Prints one JSON line.

import { launch, finish } from '../lib/chromium.mjs';
import { watch, messageItem, messageText, send, guildPair } from './web-common.mjs';

const base = process.argv[2];
const origin = new URL(base).origin;
const suffix = Math.random().toString(36).slice(2, 8);
const nameA = `ana_${suffix}`;
const nameB = `bo_${suffix}`;
const result = { ok: false, checks: {}, console_errors: [], foreign_requests: [], dialogs: [] };
const checks = result.checks;

let browser;
try {
  browser = await launch();
  const pageA = await (await browser.newContext({ viewport: { width: 1200, height: 800 } })).newPage();
  const pageB = await (await browser.newContext({ viewport: { width: 1200, height: 800 } })).newPage();
  watch(pageA, 'A', result, origin);
  watch(pageB, 'B', result, origin);
  const invite = await guildPair(pageA, pageB, base, nameA, nameB);

  // Reply.
  await send(pageA, 'a question?');
  const question = messageItem(pageB, 'a question?');
  await question.waitFor();
  await question.hover();
  await question.getByRole('button', { name: 'Reply' }).click();
  await pageB.locator('#reply-bar', { hasText: `Replying to ${nameA}` }).waitFor();
  await send(pageB, 'an answer!');
  await messageItem(pageA, 'an answer!').locator('.reply', { hasText: 'a question?' }).waitFor();
  checks.reply_shown = true;

  // Presence: B sets "Idle", A sees it; back to online.
  await pageB.getByLabel('Status').selectOption('idle');
  await pageA.locator('#member-list li', { hasText: nameB }).locator('.presence.idle').waitFor();
  await pageB.getByLabel('Status').selectOption('online');
  await pageA.locator('#member-list li', { hasText: nameB }).locator('.presence.online').waitFor();
  checks.presence_seen = true;

  // B cannot delete A's message until A gives B a role with "Manage messages".
  const foreign = messageItem(pageB, 'a question?');
  checks.no_delete_before = (await foreign.getByRole('button', { name: 'Delete' }).count()) === 0;
  await pageA.getByRole('button', { name: 'Roles' }).click();
  await pageA.getByLabel('New role').fill('mods');
  await pageA.getByRole('button', { name: 'Create role' }).click();
  await pageA.locator('#role-select option', { hasText: 'mods' }).waitFor({ state: 'attached' });
  await pageA.locator('#role-perms').getByLabel('Manage messages').check();
  await pageA.getByRole('button', { name: 'Save role' }).click();
  await pageA.locator('#roles-error', { hasText: 'Saved.' }).waitFor();
  await pageA.getByRole('button', { name: 'Close' }).click();
  await pageA.locator('#member-list').getByRole('button', { name: nameB }).click();
  await pageA.locator('#member-role-list').getByLabel('mods').check();
  await pageA.locator('#member-dialog').getByRole('button', { name: 'Close' }).click();
  await pageB.locator('#member-list li', { hasText: nameB }).locator('.role-chip', { hasText: 'mods' }).waitFor();
  checks.role_seen = true;
  await foreign.hover();
  await foreign.getByRole('button', { name: 'Delete' }).click();
  await foreign.getByRole('button', { name: 'Confirm delete' }).click();
  await messageText(pageA, 'a question?').waitFor({ state: 'detached' });
  checks.moderator_delete = true;

  // A private channel: A sees it, B does not.
  await pageA.getByRole('button', { name: 'Create channel' }).click();
  await pageA.locator('#channel-dialog').getByLabel('Channel name').fill('secret');
  await pageA.getByLabel('Private (only roles given access can see it)').check();
  await pageA.getByRole('button', { name: 'Create', exact: true }).click();
  await pageA.locator('#composer-input[placeholder="Message #secret"]').waitFor();
  await send(pageA, 'hush');
  await messageText(pageA, 'hush').waitFor();
  await send(pageB, 'still here');
  await messageText(pageB, 'still here').waitFor();
  checks.private_hidden = (await pageB.locator('#channel-list button', { hasText: '#secret' }).count()) === 0;
  // Giving the "mods" role access shows the channel (and its history) to B.
  await pageA.getByRole('button', { name: 'Channel settings' }).click();
  await pageA.locator('#settings-roles').getByLabel('mods').check();
  await pageA.locator('#settings-dialog').getByRole('button', { name: 'Cancel' }).click();
  const secretB = pageB.locator('#channel-list button', { hasText: '#secret' });
  await secretB.waitFor();
  await secretB.click();
  await messageText(pageB, 'hush').waitFor();
  checks.private_granted = true;
  await pageB.locator('#channel-list button', { hasText: '#general' }).click();
  await pageB.locator('#composer-input[placeholder="Message #general"]').waitFor();
  await pageA.locator('#channel-list button', { hasText: '#general' }).click();

  // Mentions: "@name" is sent as <@id>, highlighted for the one mentioned.
  await send(pageA, `hey @${nameB}, look`);
  const mention = messageItem(pageB, 'look');
  await mention.waitFor();
  checks.mention_highlighted = (await mention.getAttribute('class')).includes('mention')
    && (await mention.locator('.mention-chip').textContent()) === `@${nameB}`;

  // Keyboard: ↑ in the empty composer edits the last own message; Alt+↓ changes channel.
  await pageA.getByLabel('Message', { exact: true }).focus();
  await pageA.keyboard.press('ArrowUp');
  const editBox = pageA.getByLabel('Edit message');
  await editBox.waitFor();
  await editBox.fill(`hey @${nameB}, look again`);
  await editBox.press('Enter');
  await messageText(pageB, 'look again').waitFor();
  await pageA.keyboard.press('Alt+ArrowDown');
  await pageA.locator('#composer-input[placeholder="Message #secret"]').waitFor();
  await pageA.keyboard.press('Alt+ArrowUp');
  await pageA.locator('#composer-input[placeholder="Message #general"]').waitFor();
  checks.keyboard = true;

  // Kick: B loses the guild.
  await pageA.locator('#member-list').getByRole('button', { name: nameB }).click();
  await pageA.getByRole('button', { name: 'Kick' }).click();
  await pageA.getByRole('button', { name: 'Really kick?' }).click();
  await pageB.getByRole('button', { name: 'Rust Meetup' }).waitFor({ state: 'detached' });
  checks.kicked = true;

  // B rejoins by the invite, then is banned: the guild goes, and joining again is refused.
  await pageB.goto(invite);
  await pageB.getByRole('button', { name: 'Join guild' }).click();
  await pageB.getByRole('button', { name: 'Rust Meetup' }).waitFor();
  await pageA.locator('#member-list').getByRole('button', { name: nameB }).waitFor();
  checks.no_console_errors = result.console_errors.length === 0;
  result.console_errors_before_ban = [...result.console_errors];
  await pageA.locator('#member-list').getByRole('button', { name: nameB }).click();
  await pageA.getByRole('button', { name: 'Ban' }).click();
  await pageA.getByRole('button', { name: 'Really ban?' }).click();
  await pageB.getByRole('button', { name: 'Rust Meetup' }).waitFor({ state: 'detached' });
  await pageB.goto(invite);
  await pageB.getByRole('button', { name: 'Join guild' }).click();
  await pageB.locator('#join-error').filter({ hasText: /./ }).waitFor();
  checks.ban_refuses_rejoin = (await pageB.getByRole('button', { name: 'Rust Meetup' }).count()) === 0;
  result.join_error = await pageB.locator('#join-error').textContent();
  checks.no_dialogs = result.dialogs.length === 0;
  checks.no_foreign_requests = result.foreign_requests.length === 0;
  result.ok = Object.values(checks).every((v) => v === true);
} catch (err) {
  result.error = String(err?.stack ?? err);
} finally {
  await browser?.close().catch(() => {});
}
finish(result);
