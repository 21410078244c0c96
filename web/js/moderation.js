// Moderation and administration screens: reports (sending them, and the guild's and the
// instance admins' queues), the guild audit log, timeouts, slow mode, bulk deletion, the
// account screen (export, deletion), the instance admin screen and the one-time setup link.
// The relay checks every request; permissions here only decide which controls to show.
// User content is put into the page as text nodes only.

import { $, h, show, setText, formatTime } from './dom.js';

export const MOD_PERM = {
  MANAGE_MESSAGES: 1 << 2, MANAGE_CHANNELS: 1 << 3, VIEW_AUDIT_LOG: 1 << 14, MODERATE_MEMBERS: 1 << 15,
};

// What an audit action means, for people.
const ACTIONS = {
  role_create: 'created role', role_update: 'changed role', role_delete: 'deleted role',
  member_role_add: 'gave a role to', member_role_remove: 'took a role from',
  member_kick: 'kicked', member_ban: 'banned', member_unban: 'unbanned',
  member_timeout: 'timed out', member_timeout_end: 'ended the timeout of',
  channel_create: 'created channel', channel_update: 'changed channel', channel_delete: 'deleted channel',
  overwrite_update: 'changed channel access for', overwrite_delete: 'removed channel access for',
  message_delete: 'deleted a message by', message_bulk_delete: 'bulk-deleted messages by',
  invite_create: 'created an invite', invite_revoke: 'revoked an invite of',
  report_resolved: 'resolved a report about', report_dismissed: 'dismissed a report about',
  guild_update: 'renamed the guild', guild_transfer: 'handed the guild to',
  account_suspend: 'suspended', account_unsuspend: 'lifted the suspension of',
  sessions_revoke: 'ended the sessions of', account_delete: 'deleted the account of',
  guild_delete: 'removed guild', admin_grant: 'made an admin:', admin_revoke: 'took admin from',
  device_revoke: 'revoked a device of', instance_invite_create: 'created an instance invite',
  instance_invite_revoke: 'revoked an instance invite',
};

let ctx; // { state, can, describe, username, banner, onSignedOut, renderMembers }
const api = () => ctx.state.api;
const g = () => ctx.state.guilds.get(ctx.state.guildId);
const name = (id) => (id ? ctx.username(id) : 'the server');

export function initModeration(context) {
  ctx = context;
  $('#audit-button').addEventListener('click', openAudit);
  $('#audit-more').addEventListener('click', () => loadAudit(true));
  $('#reports-button').addEventListener('click', openReports);
  $('#reports-status').addEventListener('change', loadReports);
  $('#report-cancel').addEventListener('click', () => $('#report-dialog').close());
  $('#report-form').addEventListener('submit', sendReport);
  $('#member-report').addEventListener('click', () => {
    const id = ctx.state.memberOpen;
    $('#member-dialog').close();
    openReport({ user_id: id }, `The member ${ctx.username(id)}`);
  });
  $('#member-timeout').addEventListener('click', () => timeout(Number($('#member-timeout-duration').value)));
  $('#member-untimeout').addEventListener('click', () => timeout(null));
  $('#member-purge').addEventListener('click', purge);
  $('#account-button').addEventListener('click', () => {
    setText($('#account-error'), '');
    setText($('#account-delete'), 'Delete my account');
    $('#account-dialog').showModal();
  });
  $('#account-export').addEventListener('click', exportData);
  $('#account-delete').addEventListener('click', deleteAccount);
  $('#admin-button').addEventListener('click', openAdmin);
  $('#admin-search').addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(searchAccounts, 250);
  });
  $('#admin-guild-delete').addEventListener('click', removeGuild);
  $('#admin-invite-create').addEventListener('click', createInvite);
}

// ---- controls that depend on the open guild ---------------------------------------------------

export function updateModerationControls() {
  const guild = g();
  show('#audit-button', Boolean(guild) && ctx.can(guild, MOD_PERM.VIEW_AUDIT_LOG));
  show('#reports-button', Boolean(guild) && ctx.can(guild, MOD_PERM.MODERATE_MEMBERS));
  show('#admin-button', Boolean(ctx.state.instanceAdmin));
}

// In the member dialog: timeout and bulk-delete controls for moderators.
export function renderMemberModeration(m, guild) {
  const self = m.user.id === ctx.state.me?.id;
  const owner = m.user.id === guild.owner_id;
  const timedOut = (m.timeout_until ?? 0) > Date.now();
  const mod = !self && !owner && ctx.can(guild, MOD_PERM.MODERATE_MEMBERS);
  show('#member-moderation', mod);
  show('#member-timeout', mod && !timedOut);
  show('#member-timeout-duration', mod && !timedOut);
  show('#member-untimeout', mod && timedOut);
  const note = $('#member-timeout-note');
  show(note, timedOut);
  setText(note, timedOut ? `Timed out until ${formatTime(m.timeout_until)}.` : '');
  show('#member-purge', !self && !owner && ctx.can(guild, MOD_PERM.MANAGE_MESSAGES));
  setText($('#member-purge'), 'Delete recent messages');
  show('#member-report', !self);
}

// A chip in the member list for a timed-out member.
export function timeoutChip(m) {
  return (m.timeout_until ?? 0) > Date.now() ? h('span', { class: 'timeout-chip' }, 'timed out') : '';
}

async function timeout(seconds) {
  const userId = ctx.state.memberOpen;
  const path = `/api/v1/guilds/${ctx.state.guildId}/members/${userId}/timeout`;
  try {
    if (seconds) await api().call('PUT', path, { duration_secs: seconds });
    else await api().call('DELETE', path);
    const m = await api().call('GET', `/api/v1/guilds/${ctx.state.guildId}/members/${userId}`);
    ctx.onMemberUpdate(m);
  } catch (err) {
    setText($('#member-error'), ctx.describe(err));
  }
}

async function purge() {
  const button = $('#member-purge');
  if (button.textContent !== 'Really delete?') {
    setText(button, 'Really delete?');
    return;
  }
  const userId = ctx.state.memberOpen;
  try {
    const done = await api().call('POST', `/api/v1/guilds/${ctx.state.guildId}/members/${userId}/messages/bulk-delete`,
      { within_secs: 86_400 });
    setText($('#member-error'), `${done.deleted} messages of the last day deleted.`);
    setText(button, 'Delete recent messages');
  } catch (err) {
    setText($('#member-error'), ctx.describe(err));
  }
}

// ---- the composer under slow mode and timeouts ------------------------------------------------

// Why the composer cannot send now, or null. `lastSent`: when this user last sent here.
export function composerBlock(channel, guild, member, lastSent) {
  if (!guild || !ctx.state.me) return null;
  if ((member?.timeout_until ?? 0) > Date.now() && !ctx.can(guild, 1 << 10)) {
    return `You are timed out until ${formatTime(member.timeout_until)}.`;
  }
  const slow = channel?.slowmode_secs ?? 0;
  if (slow && !ctx.can(guild, MOD_PERM.MANAGE_MESSAGES) && !ctx.can(guild, MOD_PERM.MANAGE_CHANNELS)) {
    const wait = Math.ceil((lastSent + slow * 1000 - Date.now()) / 1000);
    if (wait > 0) return `Slow mode is on: you can send again in ${wait} s.`;
  }
  return null;
}

// ---- reports -----------------------------------------------------------------------------

let reportTarget = null;

export function openReport(target, what) {
  reportTarget = target;
  setText($('#report-what'), what);
  setText($('#report-error'), '');
  $('#report-reason').value = '';
  const inGuild = ctx.state.guilds.has(ctx.state.guildId);
  show('#report-to', inGuild);
  document.querySelector(`input[name="report-to"][value="${inGuild ? 'guild' : 'instance'}"]`).checked = true;
  $('#report-dialog').showModal();
}

async function sendReport(ev) {
  ev.preventDefault();
  const to = document.querySelector('input[name="report-to"]:checked')?.value;
  const path = to === 'guild' ? `/api/v1/guilds/${ctx.state.guildId}/reports` : '/api/v1/reports';
  try {
    await api().call('POST', path, { ...reportTarget, reason: $('#report-reason').value.trim() });
    $('#report-dialog').close();
    ctx.banner('Report sent. Thank you.', 4000);
  } catch (err) {
    setText($('#report-error'), ctx.describe(err));
  }
}

function reportItem(r, close) {
  const about = r.message_id ? `a message by ${name(r.user_id)}` : name(r.user_id);
  const li = h('li', { 'data-id': r.id },
    h('p', { class: 'entry-meta' }, `${formatTime(r.created_at)} · ${name(r.reporter_id)} reported ${about}`),
    h('p', {}, r.reason));
  if (r.message_content !== null && r.message_content !== undefined) li.append(h('p', { class: 'quote' }, r.message_content));
  if (r.status !== 'open') {
    li.append(h('p', { class: 'entry-meta' }, `${r.status} by ${name(r.handled_by)}${r.action ? `: ${r.action}` : ''}`));
    return li;
  }
  const action = h('input', { 'aria-label': 'Action taken', maxlength: '512', placeholder: 'Action taken' });
  const error = h('span', { class: 'error', role: 'alert' });
  const act = (status) => async () => {
    try {
      await close(r.id, { status, action: action.value.trim() });
      li.remove();
    } catch (err) {
      setText(error, ctx.describe(err));
    }
  };
  li.append(h('div', { class: 'inline' }, action,
    h('button', { type: 'button', onclick: act('resolved') }, 'Resolve'),
    h('button', { type: 'button', onclick: act('dismissed') }, 'Dismiss'), error));
  return li;
}

async function openReports() {
  $('#reports-status').value = 'open';
  $('#reports-dialog').showModal();
  await loadReports();
}

async function loadReports() {
  const guildId = ctx.state.guildId;
  setText($('#reports-error'), '');
  try {
    const list = await api().call('GET', `/api/v1/guilds/${guildId}/reports?status=${$('#reports-status').value}&limit=100`);
    const close = (id, body) => api().call('PATCH', `/api/v1/guilds/${guildId}/reports/${id}`, body);
    const items = list.map((r) => reportItem(r, close));
    if (items.length === 0) items.push(h('li', { class: 'hint' }, 'Nothing here.'));
    $('#reports-list').replaceChildren(...items);
  } catch (err) {
    setText($('#reports-error'), ctx.describe(err));
  }
}

// ---- audit logs --------------------------------------------------------------------------

function auditItem(e) {
  const verb = ACTIONS[e.action] ?? e.action;
  const target = e.target_id && !e.action.startsWith('channel_') && !e.action.startsWith('role_')
    && !e.action.startsWith('overwrite_') && e.action !== 'guild_delete' ? ` ${name(e.target_id)}` : '';
  return h('li', { 'data-action': e.action },
    h('span', { class: 'entry-meta' }, `${formatTime(e.created_at)} · `),
    `${name(e.actor_id)} ${verb}${target}`,
    e.detail ? h('span', { class: 'entry-meta' }, ` — ${e.detail}`) : '');
}

let auditBefore = null;

async function openAudit() {
  auditBefore = null;
  $('#audit-list').replaceChildren();
  $('#audit-dialog').showModal();
  await loadAudit(false);
}

async function loadAudit(more) {
  setText($('#audit-error'), '');
  try {
    const q = more && auditBefore ? `&before=${auditBefore}` : '';
    const list = await api().call('GET', `/api/v1/guilds/${ctx.state.guildId}/audit-log?limit=50${q}`);
    $('#audit-list').append(...list.map(auditItem));
    auditBefore = list.at(-1)?.id ?? auditBefore;
    show('#audit-more', list.length === 50);
  } catch (err) {
    setText($('#audit-error'), ctx.describe(err));
  }
}

// ---- account -----------------------------------------------------------------------------

async function exportData() {
  try {
    const data = await api().call('GET', '/api/v1/users/@me/export');
    const url = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], { type: 'application/json' }));
    const link = h('a', { href: url, download: `concord-${ctx.state.me.username}.json` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (err) {
    setText($('#account-error'), ctx.describe(err));
  }
}

async function deleteAccount() {
  const button = $('#account-delete');
  if (button.textContent !== 'Really delete my account?') {
    setText(button, 'Really delete my account?');
    return;
  }
  try {
    await api().call('DELETE', '/api/v1/users/@me');
    $('#account-dialog').close();
    await ctx.onAccountDeleted();
  } catch (err) {
    const owns = err.code === 'owns_guilds';
    setText($('#account-error'), owns ? 'You own guilds: hand them over or delete them first.' : ctx.describe(err));
    setText(button, 'Delete my account');
  }
}

// ---- instance administration -------------------------------------------------------------

let searchTimer = null;

async function openAdmin() {
  setText($('#admin-error'), '');
  $('#admin-search').value = '';
  $('#admin-dialog').showModal();
  try {
    const stats = await api().call('GET', '/api/v1/admin/stats');
    const rows = [['Accounts', stats.accounts], ['Suspended', stats.suspended_accounts], ['Guilds', stats.guilds],
      ['Messages', stats.messages], ['Active sessions', stats.active_sessions], ['Connected now', stats.gateway_sessions]];
    $('#admin-stats').replaceChildren(...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))]));
    await Promise.all([searchAccounts(), loadInvites(), loadAdminReports(), loadAdminAudit()]);
  } catch (err) {
    setText($('#admin-error'), ctx.describe(err));
  }
}

async function searchAccounts() {
  try {
    const q = encodeURIComponent($('#admin-search').value.trim());
    const list = await api().call('GET', `/api/v1/admin/users?q=${q}&limit=50`);
    $('#admin-users').replaceChildren(...list.map(accountItem));
  } catch (err) {
    setText($('#admin-error'), ctx.describe(err));
  }
}

function accountItem(a) {
  const self = a.id === ctx.state.me?.id;
  const status = a.suspended_at ? 'suspended' : a.instance_admin ? 'admin' : '';
  const li = h('li', { 'data-id': a.id }, h('div', { class: 'inline' },
    h('span', {}, a.username), status ? h('span', { class: 'role-chip' }, status) : ''));
  if (self) return li;
  const row = li.firstChild;
  const run = (method, path, label) => async (ev) => {
    const button = ev.currentTarget;
    if (label && button.textContent !== label) {
      setText(button, label);
      return;
    }
    try {
      await api().call(method, path);
      await Promise.all([searchAccounts(), loadAdminAudit()]);
    } catch (err) {
      setText($('#admin-error'), ctx.describe(err));
    }
  };
  const base = `/api/v1/admin/users/${a.id}`;
  row.append(a.suspended_at
    ? h('button', { type: 'button', 'aria-label': `Unsuspend ${a.username}`, onclick: run('DELETE', `${base}/suspend`) }, 'Unsuspend')
    : h('button', { type: 'button', 'aria-label': `Suspend ${a.username}`, onclick: run('POST', `${base}/suspend`) }, 'Suspend'));
  row.append(h('button', { type: 'button', class: 'danger', 'aria-label': `Delete ${a.username}`, onclick: run('DELETE', base, 'Really delete?') }, 'Delete'));
  return li;
}

async function loadInvites() {
  const list = await api().call('GET', '/api/v1/admin/invites');
  $('#admin-invites').replaceChildren(...list.map((i) => {
    const link = `${location.origin}/invite/${i.code}`;
    const uses = i.max_uses ? `${i.uses}/${i.max_uses} uses` : `${i.uses} uses`;
    const li = h('li', { 'data-code': i.code }, h('div', { class: 'inline' },
      h('code', {}, link), h('span', { class: 'entry-meta' }, i.revoked ? `${uses}, revoked` : uses)));
    if (!i.revoked) {
      li.firstChild.append(h('button', {
        type: 'button',
        'aria-label': `Revoke invite ${i.code}`,
        onclick: async () => {
          try {
            await api().call('DELETE', `/api/v1/admin/invites/${i.code}`);
            await Promise.all([loadInvites(), loadAdminAudit()]);
          } catch (err) {
            setText($('#admin-error'), ctx.describe(err));
          }
        },
      }, 'Revoke'));
    }
    return li;
  }));
}

async function createInvite() {
  try {
    await api().call('POST', '/api/v1/admin/invites', {});
    await Promise.all([loadInvites(), loadAdminAudit()]);
  } catch (err) {
    setText($('#admin-error'), ctx.describe(err));
  }
}

async function loadAdminReports() {
  const list = await api().call('GET', '/api/v1/admin/reports?limit=100');
  const close = (id, body) => api().call('PATCH', `/api/v1/admin/reports/${id}`, body);
  const items = list.map((r) => reportItem(r, async (id, body) => {
    await close(id, body);
    await loadAdminAudit();
  }));
  if (items.length === 0) items.push(h('li', { class: 'hint' }, 'No open reports.'));
  $('#admin-reports').replaceChildren(...items);
}

async function loadAdminAudit() {
  const list = await api().call('GET', '/api/v1/admin/audit?limit=50');
  $('#admin-audit').replaceChildren(...list.map(auditItem));
}

async function removeGuild() {
  const input = $('#admin-guild-id');
  const button = $('#admin-guild-delete');
  if (!/^[0-9]{1,20}$/.test(input.value.trim())) {
    setText($('#admin-error'), 'Enter the id of a guild.');
    return;
  }
  if (button.textContent !== 'Really remove?') {
    setText(button, 'Really remove?');
    return;
  }
  try {
    await api().call('DELETE', `/api/v1/admin/guilds/${input.value.trim()}`);
    input.value = '';
    await loadAdminAudit();
  } catch (err) {
    setText($('#admin-error'), ctx.describe(err));
  } finally {
    setText(button, 'Remove guild');
  }
}

// ---- the one-time setup link (/setup#TOKEN) ----------------------------------------------------

// Read once at boot: the token is in the fragment, which never reaches the server.
export function takeSetupToken() {
  if (location.pathname !== '/setup') return null;
  const token = location.hash.slice(1);
  history.replaceState(null, '', '/');
  return /^[A-Za-z0-9_-]{1,128}$/.test(token) ? token : null;
}

export async function claimSetup(token) {
  try {
    await api().call('POST', '/api/v1/admin/setup', { token });
    ctx.state.instanceAdmin = true;
    updateModerationControls();
    ctx.banner('You are now this instance’s admin (see Admin, bottom left).', 6000);
  } catch (err) {
    ctx.banner(err.code === 'already_set_up' ? 'This instance already has an admin.' : ctx.describe(err), 6000);
  }
}
