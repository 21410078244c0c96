// Moderation and administration in the web client (driven by testkit/tests/web_moderation.rs):
// the first admin made by the one-time setup link, a message reported and the report resolved,
// a timeout and slow mode felt by the member, bulk deletion, the guild audit log, a report to
// the instance admins dismissed in the admin screen, suspension, data export and account
// deletion.
//
// Usage: node tests/web-moderation.mjs <relay base url> <setup link>. Prints one JSON line.

import { launch, finish } from '../lib/chromium.mjs';
import { watch, messageItem, messageText, send, guildPair } from './web-common.mjs';

const base = process.argv[2];
const setupLink = process.argv[3];
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
  const pageB = await (await browser.newContext({ viewport: { width: 1200, height: 800 }, acceptDownloads: true })).newPage();
  watch(pageA, 'A', result, origin);
  watch(pageB, 'B', result, origin);
  await guildPair(pageA, pageB, base, nameA, nameB);

  // The setup link makes A the instance admin (A is logged in already).
  checks.no_admin_button_before = await pageA.getByRole('button', { name: 'Admin', exact: true }).isHidden();
  await pageA.goto(setupLink);
  await pageA.locator('#banner', { hasText: 'You are now this instance’s admin' }).waitFor();
  await pageA.getByRole('button', { name: 'Admin', exact: true }).waitFor();
  checks.setup_claimed = new URL(pageA.url()).pathname === '/';
  await pageA.locator('#composer-input[placeholder="Message #general"]').waitFor();

  // B reports A's message to the guild's moderators; A resolves it.
  await send(pageA, 'questionable words');
  const questionable = messageItem(pageB, 'questionable words');
  await questionable.waitFor();
  await questionable.hover();
  await questionable.getByRole('button', { name: 'Report' }).click();
  await pageB.getByLabel('What is wrong?').fill('this is offensive');
  await pageB.getByRole('button', { name: 'Send report' }).click();
  await pageB.locator('#banner', { hasText: 'Report sent' }).waitFor();
  checks.report_sent = true;
  await pageA.getByRole('button', { name: 'Reports' }).click();
  const report = pageA.locator('#reports-list li', { hasText: 'this is offensive' });
  await report.waitFor();
  checks.report_shows_message = (await report.locator('.quote').textContent()) === 'questionable words';
  await report.getByLabel('Action taken').fill('talked it over');
  await report.getByRole('button', { name: 'Resolve' }).click();
  await report.waitFor({ state: 'detached' });
  await pageA.getByLabel('Show').selectOption('resolved');
  await pageA.locator('#reports-list li', { hasText: 'resolved by' }).waitFor();
  checks.report_resolved = true;
  await pageA.locator('#reports-dialog').getByRole('button', { name: 'Close' }).click();

  // A times B out: B's composer says so and does not send; ending it early lets B speak.
  await pageA.locator('#member-list').getByRole('button', { name: nameB }).click();
  await pageA.getByLabel('Timeout length').selectOption('600');
  await pageA.getByRole('button', { name: 'Time out' }).click();
  await pageA.locator('#member-timeout-note', { hasText: 'Timed out until' }).waitFor();
  await pageA.locator('#member-dialog').getByRole('button', { name: 'Close' }).click();
  await pageA.locator('#member-list li', { hasText: nameB }).locator('.timeout-chip').waitFor();
  await pageB.locator('#composer-note', { hasText: 'You are timed out' }).waitFor();
  await send(pageB, 'muted words');
  await pageB.waitForTimeout(500);
  checks.timeout_blocks = (await pageB.getByLabel('Message', { exact: true }).inputValue()) === 'muted words'
    && (await messageText(pageA, 'muted words').count()) === 0;
  await pageA.locator('#member-list').getByRole('button', { name: nameB }).click();
  await pageA.getByRole('button', { name: 'End timeout' }).click();
  await pageA.getByRole('button', { name: 'Time out' }).waitFor();
  await pageA.locator('#member-dialog').getByRole('button', { name: 'Close' }).click();
  await pageB.locator('#composer-note').waitFor({ state: 'hidden' });
  await send(pageB, 'free again');
  await messageText(pageA, 'free again').waitFor();
  checks.timeout_ended = true;

  // Slow mode (30 s): B just spoke, so B's next message waits with a countdown.
  await pageA.getByRole('button', { name: 'Channel settings' }).click();
  await pageA.getByLabel('Slow mode').selectOption('30');
  await pageA.locator('#settings-dialog').getByRole('button', { name: 'Save' }).click();
  await pageA.locator('#settings-dialog').waitFor({ state: 'hidden' });
  await pageB.locator('#composer-note', { hasText: 'Slow mode is on' }).waitFor();
  await send(pageB, 'slow one');
  await pageB.waitForTimeout(500);
  checks.slowmode_enforced = (await pageB.getByLabel('Message', { exact: true }).inputValue()) === 'slow one'
    && (await messageText(pageA, 'slow one').count()) === 0;
  // The moderator is not slowed.
  await send(pageA, 'mod one');
  await send(pageA, 'mod two');
  await messageText(pageB, 'mod two').waitFor();
  await pageA.getByRole('button', { name: 'Channel settings' }).click();
  await pageA.getByLabel('Slow mode').selectOption('0');
  await pageA.locator('#settings-dialog').getByRole('button', { name: 'Save' }).click();
  await pageB.locator('#composer-note').waitFor({ state: 'hidden' });
  await pageB.getByLabel('Message', { exact: true }).press('Enter');
  await messageText(pageA, 'slow one').waitFor();
  checks.slowmode_off = true;

  // Bulk delete of B's recent messages, seen on both sides.
  await pageA.locator('#member-list').getByRole('button', { name: nameB }).click();
  await pageA.getByRole('button', { name: 'Delete recent messages' }).click();
  await pageA.getByRole('button', { name: 'Really delete?' }).click();
  await pageA.locator('#member-error', { hasText: 'messages of the last day deleted' }).waitFor();
  await pageA.locator('#member-dialog').getByRole('button', { name: 'Close' }).click();
  await messageText(pageA, 'free again').waitFor({ state: 'detached' });
  await messageText(pageB, 'slow one').waitFor({ state: 'detached' });
  checks.bulk_deleted = (await messageText(pageA, 'mod two').count()) === 1;

  // The audit log lists what happened.
  await pageA.getByRole('button', { name: 'Audit log' }).click();
  for (const action of ['report_resolved', 'member_timeout', 'member_timeout_end', 'channel_update', 'message_bulk_delete']) {
    await pageA.locator(`#audit-list li[data-action="${action}"]`).first().waitFor();
  }
  checks.audit_log = (await pageA.locator('#audit-list li[data-action="member_timeout"]').first().textContent()).includes(`timed out ${nameB}`);
  await pageA.locator('#audit-dialog').getByRole('button', { name: 'Close' }).click();
  checks.member_cannot_see_audit = await pageB.getByRole('button', { name: 'Audit log' }).isHidden();

  // Voice presence: a voice channel lists who is in it (B joins through the API, as a node
  // would), with mute shown; leaving clears it.
  const voiceChannel = await pageA.evaluate(async (guildName) => {
    const { kv } = await import('/js/store.js');
    const { access_token: token } = await kv.get('session');
    const headers = { 'content-type': 'application/json', authorization: `Bearer ${token}` };
    const guilds = await (await fetch('/api/v1/users/@me/guilds', { headers })).json();
    const guild = guilds.find((g) => g.name === guildName);
    const made = await fetch(`/api/v1/guilds/${guild.id}/channels`, { method: 'POST', headers, body: JSON.stringify({ name: 'lounge', kind: 'voice' }) });
    return (await made.json()).id;
  }, 'Rust Meetup');
  await pageB.locator('#channel-list button', { hasText: 'lounge' }).waitFor();
  const voiceCall = (method, what, body) => pageB.evaluate(async ([channel, m, w, b]) => {
    const { kv } = await import('/js/store.js');
    const { access_token: token } = await kv.get('session');
    const r = await fetch(`/api/v1/voice/channels/${channel}/${w}`, { method: m, headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify(b) });
    return r.status;
  }, [voiceChannel, method, what, body]);
  checks.voice_join_status = (await voiceCall('POST', 'join', { self_mute: true })) === 200;
  const inLounge = pageA.getByRole('list', { name: 'In lounge' });
  await inLounge.locator('li', { hasText: nameB }).locator('.role-chip', { hasText: 'muted' }).waitFor();
  await voiceCall('POST', 'leave', {});
  await inLounge.waitFor({ state: 'detached' });
  checks.voice_participants_shown = true;

  // B exports their data.
  await pageB.getByRole('button', { name: 'Account' }).click();
  const [download] = await Promise.all([
    pageB.waitForEvent('download'),
    pageB.getByRole('button', { name: 'Export my data' }).click(),
  ]);
  const exported = JSON.parse(await (await import('node:fs/promises')).readFile(await download.path(), 'utf8'));
  checks.export_downloaded = exported.account?.username === nameB;
  await pageB.locator('#account-dialog').getByRole('button', { name: 'Close' }).click();

  // B reports A to the instance admins; A dismisses it in the admin screen.
  await pageB.locator('#member-list').getByRole('button', { name: nameA }).click();
  await pageB.locator('#member-dialog').getByRole('button', { name: 'Report' }).click();
  await pageB.getByLabel('What is wrong?').fill('an admin should look');
  await pageB.getByLabel('The instance admins').check();
  await pageB.getByRole('button', { name: 'Send report' }).click();
  await pageB.locator('#banner', { hasText: 'Report sent' }).waitFor();
  await pageA.getByRole('button', { name: 'Admin', exact: true }).click();
  checks.admin_stats = Number(await pageA.locator('#admin-stats dt:text("Accounts") + dd').textContent()) >= 2;
  const adminReport = pageA.locator('#admin-reports li', { hasText: 'an admin should look' });
  await adminReport.getByRole('button', { name: 'Dismiss' }).click();
  await adminReport.waitFor({ state: 'detached' });
  await pageA.locator('#admin-audit li[data-action="report_dismissed"]').waitFor();
  checks.admin_report_dismissed = true;
  // An invite to the instance: made, listed as a link, revoked.
  await pageA.getByRole('button', { name: 'Create invite' }).click();
  const instanceInvite = pageA.locator('#admin-invites li').first();
  await instanceInvite.locator('code', { hasText: `${origin}/invite/` }).waitFor();
  const code = await instanceInvite.getAttribute('data-code');
  await pageA.getByRole('button', { name: `Revoke invite ${code}` }).click();
  await pageA.locator(`#admin-invites li[data-code="${code}"]`, { hasText: 'revoked' }).waitFor();
  checks.instance_invite = code.length === 12;
  checks.no_console_errors = result.console_errors.length === 0;
  result.console_errors_before_suspension = [...result.console_errors];

  // The outbox survives a reload: a message B typed while its sends failed goes out once
  // after the page is reloaded.
  await pageB.route('**/api/v1/channels/*/messages', (route) => (route.request().method() === 'POST' ? route.abort('internetdisconnected') : route.continue()));
  await send(pageB, 'kept across a reload');
  await pageB.locator('#messages li.pending', { hasText: 'waiting for the connection' }).waitFor();
  await pageB.unroute('**/api/v1/channels/*/messages');
  await pageB.reload();
  await messageText(pageA, 'kept across a reload').waitFor();
  await messageText(pageB, 'kept across a reload').waitFor();
  await pageB.locator('#messages li.pending').waitFor({ state: 'detached' });
  await pageA.waitForTimeout(500);
  checks.outbox_survives_reload = (await messageText(pageA, 'kept across a reload').count()) === 1
    && (await messageText(pageB, 'kept across a reload').count()) === 1;

  // Suspension logs B out; lifting it lets B log in again.
  await pageA.getByLabel('Find accounts').fill(nameB);
  await pageA.getByRole('button', { name: `Suspend ${nameB}` }).click();
  await pageB.locator('#login-section').waitFor({ state: 'visible' });
  checks.suspended_logged_out = await pageB.locator('#app').isHidden();
  await pageA.getByRole('button', { name: `Unsuspend ${nameB}` }).click();
  await pageA.getByRole('button', { name: `Suspend ${nameB}` }).waitFor();
  await pageA.locator('#admin-dialog').getByRole('button', { name: 'Close' }).click();
  await pageB.getByRole('button', { name: 'Log in' }).click();
  await pageB.locator('#composer-input').waitFor({ state: 'visible' });
  checks.unsuspended_login = true;

  // B deletes their account: back to the welcome screen, gone from A's member list.
  await pageB.getByRole('button', { name: 'Account' }).click();
  await pageB.getByRole('button', { name: 'Delete my account' }).click();
  await pageB.getByRole('button', { name: 'Really delete my account?' }).click();
  await pageB.locator('#signup').waitFor({ state: 'visible' });
  await pageA.locator('#member-list').getByRole('button', { name: nameB }).waitFor({ state: 'detached' });
  checks.account_deleted = await pageB.locator('#login-section').isHidden();
  // A cannot delete their own account while owning the guild.
  await pageA.getByRole('button', { name: 'Account' }).click();
  await pageA.getByRole('button', { name: 'Delete my account' }).click();
  await pageA.getByRole('button', { name: 'Really delete my account?' }).click();
  await pageA.locator('#account-error', { hasText: 'You own guilds' }).waitFor();
  checks.owner_must_hand_over = true;

  checks.no_dialogs = result.dialogs.length === 0;
  checks.no_foreign_requests = result.foreign_requests.length === 0;
  result.ok = Object.values(checks).every((v) => v === true);
} catch (err) {
  result.error = String(err?.stack ?? err);
} finally {
  await browser?.close().catch(() => {});
}
finish(result);
