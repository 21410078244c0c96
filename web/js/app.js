// Concord web client: boot, account creation/login, guilds, channels, DMs, messages.
// User content is only ever put into the page as text nodes (never parsed as HTML).
//
// State and screens: boot, create account / log in / link a device, guilds, channels
// (create, rename, delete, private access by role), members (roles, presence, kick, ban), the
// role editor, DMs, unread counts and acks, the open channel (a history page, catch-up by
// seq, live events batched every 16 ms, windowed to ~200 messages at the bottom,
// scroll-back), the outbox (kept in IndexedDB across reloads, retried when the gateway is
// back; the nonce keeps a retry from posting twice), edit/delete/reply/reactions/mentions,
// search and jump, typing, keyboard shortcuts.

import { Api, ApiError, NodeApi, RETRYABLE } from './api.js';
import { Gateway } from './gateway.js';
import { VoiceCall } from './voice.js';
import { kv } from './store.js';
import { deviceLabel, newKeyPair, signCertificate } from './signed.js';
import { $, h, show, setText, compareIds, formatTime, reconcile, highlightNodes } from './dom.js';
import {
  initModeration, updateModerationControls, renderMemberModeration, timeoutChip, composerBlock,
  openReport, takeSetupToken, claimSetup,
} from './moderation.js';

const PAGE = 50;
// Served by a node (`concord ui`) rather than by the relay: the node says so in index.html.
const NODE_SERVED = document.querySelector('meta[name="concord-backend"]')?.content === 'node';
const TYPING_SEND_MS = 5_000;
const TYPING_SHOW_MS = 10_000;
const HOME = '@me';
const QUICK_REACTION = '👍';
const INSTANCE_INVITE_LENGTH = 12;
const KEEP_MESSAGES = 200; // at the bottom, older messages beyond this are dropped (refetched on scroll)
const ALL = (1 << 17) - 1;
const PERM = {
  MANAGE_MESSAGES: 1 << 2, MANAGE_CHANNELS: 1 << 3, MANAGE_ROLES: 1 << 4, KICK_MEMBERS: 1 << 5,
  BAN_MEMBERS: 1 << 6, CREATE_INVITES: 1 << 7, ADMINISTRATOR: 1 << 10,
};
const PERMISSION_NAMES = [
  [1 << 0, 'View channels'], [1 << 1, 'Send messages'], [1 << 13, 'Read history'],
  [1 << 12, 'Add reactions'], [1 << 7, 'Create invites'], [1 << 8, 'Connect to voice'],
  [1 << 9, 'Speak'], [1 << 2, 'Manage messages'], [1 << 3, 'Manage channels'],
  [1 << 4, 'Manage roles'], [1 << 5, 'Kick members'], [1 << 6, 'Ban members'],
  [1 << 11, 'Manage guild'], [1 << 14, 'View audit log'], [1 << 15, 'Moderate members'],
  [1 << 16, 'Mute members in voice'],
  [1 << 10, 'Administrator'],
];

const state = {
  device: null,
  account: null,
  api: null,
  gateway: null,
  me: null,
  guilds: new Map(), // id → ReadyGuild
  dms: new Map(), // id → Channel (kind dm)
  members: new Map(), // guild id → Map(user id → Member)
  users: new Map(), // id → username
  names: 0, // bumped when a username is learnt (cached message nodes re-render)
  userFetches: new Map(),
  guildId: null, // a guild id, HOME for direct messages, or null
  view: null, // the open channel, see openChannel
  outbox: new Map(), // nonce → {channelId, content, status: 'sending'|'waiting'|'failed', error}
  inviteCode: null,
  typing: new Map(), // user id → timeout
  lastTypingSent: 0,
  connected: false,
  reads: new Map(), // channel id → {lastRead, unread, mentions}
  acks: new Map(), // channel id → timer
  renderTimer: null,
  presence: new Map(), // user id → online | idle | offline (from presence_update)
  memberOpen: null, // user id shown in the member dialog
  replyTo: null, // message being replied to
  instanceAdmin: false, // from GET /users/@me
  setupToken: null, // from a /setup#TOKEN link, claimed once logged in
  lastSent: new Map(), // channel id → when I last sent there (slow mode)
  voice: new Map(), // user id → VoiceState (who is in which voice channel)
  call: null, // the VoiceCall this browser is in, if any
  deleting: new Set(), // channel ids this browser is deleting
};

// What the user may do guild-wide (owner and ADMINISTRATOR: everything). The relay checks
// every request anyway; this only decides which buttons to show.
function guildPerms(g) {
  if (!g || !state.me) return 0;
  if (g.owner_id === state.me.id) return ALL;
  let p = 0;
  for (const r of g.roles ?? []) if (r.id === g.id || g.my_roles?.includes(r.id)) p |= r.permissions;
  return p & PERM.ADMINISTRATOR ? ALL : p;
}

const can = (g, bit) => (guildPerms(g) & bit) !== 0;

// ---- boot ---------------------------------------------------------------------------------

async function boot() {
  state.setupToken = takeSetupToken();
  const invite = location.pathname.match(/^\/invite\/([A-Za-z0-9_-]{1,32})$/);
  state.inviteCode = invite ? invite[1] : null;
  if (!window.isSecureContext || !crypto.subtle) {
    fatal('Concord needs a secure context (https://, or http://localhost).');
    return;
  }
  if (NODE_SERVED) {
    await bootNodeServed();
    return;
  }
  state.device = await ensureDevice();
  state.account = (await kv.get('account')) ?? null;
  state.api = new Api(state.device);
  state.api.onLoggedOut = () => showWelcome(state.me);
  setText($('#device-key'), state.device.public);
  wireWelcome();
  wireApp();
  const user = await kv.get('user');
  const session = await kv.get('session');
  if (user && session) {
    state.api.session = session;
    await loadOutbox();
    startApp();
  } else {
    showWelcome(user);
  }
}

// `concord ui`: the node signed this page in with a cookie and speaks for it; no keys here.
async function bootNodeServed() {
  state.api = new NodeApi();
  state.api.onLoggedOut = () => {
    state.gateway?.stop();
    fatal('This page is not signed in to your node. Run `concord ui` to open it again.');
  };
  wireApp();
  show('#logout-button', false);
  try {
    await state.api.call('GET', '/api/v1/users/@me');
  } catch (err) {
    if (err.status !== 401) fatal(err.code === 'no_relay' ? err.message : describe(err));
    return;
  }
  await loadOutbox();
  startApp();
}

async function ensureDevice() {
  const make = async () => {
    let device = await kv.get('device');
    if (!device) {
      device = await newKeyPair();
      await kv.set('device', device);
    }
    return device;
  };
  return navigator.locks ? navigator.locks.request('concord-device', make) : make();
}

function fatal(text) {
  show('#loading', false);
  show('#welcome', true);
  show('#signup', false);
  show('#link-section', false);
  const el = $('#fatal');
  setText(el, text);
  show(el, true);
}

function showWelcome(user) {
  state.gateway?.stop();
  if (state.call) endCall();
  show('#loading', false);
  show('#app', false);
  show('#welcome', true);
  show('#login-section', Boolean(user));
  if (user) setText($('#login-user'), user.username);
  const note = $('#invite-note');
  show(note, Boolean(state.inviteCode));
  setText(note, 'You were invited to a guild. Create an account (or log in) to join it.');
  $(user ? '#login-button' : '#signup-username').focus();
}

function wireWelcome() {
  $('#signup').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const error = $('#signup-error');
    setText(error, '');
    const username = $('#signup-username').value.trim();
    const button = ev.submitter ?? $('#signup button');
    button.disabled = true;
    try {
      const account = await newKeyPair();
      const cert = await signCertificate(account, state.device.public, deviceLabel(), Math.floor(Date.now() / 1000));
      try {
        await state.api.login({ certificate: cert, username });
      } catch (err) {
        // An invite-only relay: the invite this page was opened with lets the account in
        // (and joins its guild).
        if (!(err instanceof ApiError && err.code === 'invite_required' && state.inviteCode)) throw err;
        await state.api.login({ certificate: cert, username, invite: state.inviteCode });
      }
      await kv.set('account', account);
      state.account = account;
      startApp();
    } catch (err) {
      setText(error, describe(err));
    } finally {
      button.disabled = false;
    }
  });
  const loginWith = async (errorEl) => {
    setText(errorEl, '');
    try {
      await state.api.login();
      startApp();
    } catch (err) {
      setText(errorEl, err.code === 'certificate_required' ? 'This browser is not linked to an account yet.' : describe(err));
    }
  };
  $('#login-button').addEventListener('click', () => loginWith($('#signup-error')));
  $('#linked-button').addEventListener('click', () => loginWith($('#link-error')));
}

function describe(err) {
  if (err instanceof ApiError) {
    const known = {
      username_taken: 'That username is taken.',
      validation_failed: err.message,
      registration_closed: 'This relay does not accept new accounts.',
      invite_required: 'This relay accepts new accounts by invite only: open an invite link first.',
      slowmode: err.message,
      owns_guilds: 'You own guilds: hand them over or delete them first.',
      account_suspended: 'This account is suspended on this relay.',
      network: 'The relay cannot be reached.',
      rate_limited: 'Too many attempts; wait a moment.',
      storage_full: 'The server is out of storage; your message will be sent when there is room.',
      retry: 'Not sure the server got this; sending again.',
    };
    return known[err.code] ?? err.message;
  }
  return String(err?.message ?? err);
}

// ---- the app shell ------------------------------------------------------------------------

function startApp() {
  show('#loading', false);
  show('#welcome', false);
  show('#app', true);
  show('#link-device-button', Boolean(state.account));
  if (NODE_SERVED) show('#logout-button', false);
  banner('Connecting…');
  state.gateway?.stop();
  state.gateway = new Gateway(state.api, {
    ready: onReady,
    resumed: () => {},
    event: onEvent,
    state: (s) => {
      state.connected = s === 'connected';
      if (s === 'connected') {
        banner(null);
        flushOutbox();
      } else if (s === 'reconnecting') {
        banner('Connection lost. Reconnecting…');
      } else if (s === 'logged_out') {
        showWelcome(state.me);
      }
    },
  });
  state.gateway.start();
}

let bannerTimer = null;

// A status line at the top; `ms`: hide it again after that long.
function banner(text, ms) {
  const el = $('#banner');
  clearTimeout(bannerTimer);
  setText(el, text ?? '');
  show(el, Boolean(text));
  if (text && ms) bannerTimer = setTimeout(() => banner(null), ms);
}

async function onAccountDeleted() {
  state.gateway?.stop();
  state.outbox.clear();
  await Promise.all(['session', 'user', 'account', 'outbox'].map((k) => kv.del(k)));
  state.api.session = null;
  state.account = null;
  state.me = null;
  showWelcome(null);
}

async function loadMe() {
  try {
    const me = await state.api.call('GET', '/api/v1/users/@me');
    state.instanceAdmin = Boolean(me.instance_admin);
    updateGuildControls();
    if (state.setupToken) {
      const token = state.setupToken;
      state.setupToken = null;
      await claimSetup(token);
    }
  } catch {
    // The admin button stays hidden; nothing else depends on it.
  }
}

function wireApp() {
  initModeration({
    state, can, describe, username, banner, onAccountDeleted,
    onMemberUpdate: (m) => onEvent('member_update', m),
  });
  setInterval(updateComposerNote, 1000);
  wireVoice();
  $('#dm-home').addEventListener('click', () => selectGuild(HOME));
  $('#new-guild').addEventListener('click', () => {
    setText($('#guild-error'), '');
    $('#guild-name-input').value = '';
    $('#guild-dialog').showModal();
  });
  $('#guild-cancel').addEventListener('click', () => $('#guild-dialog').close());
  $('#guild-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const name = $('#guild-name-input').value.trim();
    try {
      const guild = await state.api.call('POST', '/api/v1/guilds', { name });
      addGuild(guild);
      $('#guild-dialog').close();
      selectGuild(guild.id);
    } catch (err) {
      setText($('#guild-error'), describe(err));
    }
  });

  $('#invite-button').addEventListener('click', async () => {
    if (!state.guilds.has(state.guildId)) return;
    try {
      const invite = await state.api.call('POST', `/api/v1/guilds/${state.guildId}/invites`, {});
      $('#invite-link').value = `${location.origin}/invite/${invite.code}`;
      $('#invite-dialog').showModal();
      $('#invite-link').select();
    } catch (err) {
      banner(describe(err));
    }
  });
  $('#new-channel').addEventListener('click', () => {
    setText($('#channel-error'), '');
    $('#channel-name-input').value = '';
    $('#channel-private').checked = false;
    $('#channel-dialog').showModal();
  });
  $('#channel-cancel').addEventListener('click', () => $('#channel-dialog').close());
  $('#channel-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const kind = document.querySelector('input[name="channel-kind"]:checked')?.value ?? 'text';
    try {
      const channel = await state.api.call('POST', `/api/v1/guilds/${state.guildId}/channels`, {
        name: $('#channel-name-input').value.trim(),
        kind,
        private: $('#channel-private').checked,
        topic: null,
      });
      onEvent('channel_create', channel);
      $('#channel-dialog').close();
      if (channel.kind === 'text') openChannel(channel);
    } catch (err) {
      setText($('#channel-error'), describe(err));
    }
  });
  $('#channel-settings').addEventListener('click', () => {
    const c = state.view?.channel;
    if (!c) return;
    setText($('#settings-error'), '');
    $('#settings-name').value = c.name;
    $('#settings-topic').value = c.topic ?? '';
    $('#settings-slowmode').value = String(c.slowmode_secs ?? 0);
    if (!$('#settings-slowmode').value) $('#settings-slowmode').value = '0';
    setText($('#settings-delete'), 'Delete channel');
    renderChannelAccess();
    $('#settings-dialog').showModal();
  });
  $('#settings-cancel').addEventListener('click', () => $('#settings-dialog').close());
  $('#settings-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const c = state.view?.channel;
    if (!c) return;
    try {
      const updated = await state.api.call('PATCH', `/api/v1/channels/${c.id}`, {
        name: $('#settings-name').value.trim(),
        topic: $('#settings-topic').value.trim() || null,
        slowmode_secs: Number($('#settings-slowmode').value),
      });
      onEvent('channel_update', updated);
      $('#settings-dialog').close();
    } catch (err) {
      setText($('#settings-error'), describe(err));
    }
  });
  $('#settings-delete').addEventListener('click', async () => {
    const c = state.view?.channel;
    const button = $('#settings-delete');
    if (!c) return;
    if (button.textContent !== 'Really delete?') {
      setText(button, 'Really delete?');
      return;
    }
    // No read marker for a channel on its way out (it would answer 404).
    state.deleting.add(c.id);
    clearTimeout(state.acks.get(c.id));
    state.acks.delete(c.id);
    try {
      await state.api.call('DELETE', `/api/v1/channels/${c.id}`);
      onEvent('channel_delete', { id: c.id, guild_id: c.guild_id });
      $('#settings-dialog').close();
    } catch (err) {
      state.deleting.delete(c.id);
      setText($('#settings-error'), describe(err));
    }
  });
  $('#member-dm').addEventListener('click', () => {
    const id = state.memberOpen;
    $('#member-dialog').close();
    if (id) openDm(id);
  });
  $('#member-kick').addEventListener('click', () => moderate('kick'));
  $('#member-ban').addEventListener('click', () => moderate('ban'));
  $('#roles-button').addEventListener('click', () => {
    setText($('#roles-error'), '');
    renderRolesDialog();
    $('#roles-dialog').showModal();
  });
  $('#role-select').addEventListener('change', () => renderRolesDialog($('#role-select').value));
  $('#role-save').addEventListener('click', saveRole);
  $('#role-delete').addEventListener('click', deleteRole);
  $('#role-create').addEventListener('click', createRole);
  $('#reply-cancel').addEventListener('click', () => setReply(null));
  $('#status-select').addEventListener('change', () => {
    state.gateway?.send('presence', { status: $('#status-select').value });
    renderMembers();
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) ackOpenChannel();
  });

  $('#invite-copy').addEventListener('click', () => {
    navigator.clipboard?.writeText($('#invite-link').value).catch(() => {});
  });

  $('#join-cancel').addEventListener('click', () => {
    $('#join-dialog').close();
    forgetInvite();
  });
  $('#join-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const guild = await state.api.call('POST', `/api/v1/invites/${state.inviteCode}/accept`, undefined);
      addGuild(guild);
      $('#join-dialog').close();
      forgetInvite();
      selectGuild(guild.id);
    } catch (err) {
      setText($('#join-error'), describe(err));
    }
  });

  $('#link-device-button').addEventListener('click', () => {
    setText($('#link-dialog-error'), '');
    $('#link-key').value = '';
    $('#link-dialog').showModal();
  });
  $('#link-cancel').addEventListener('click', () => $('#link-dialog').close());
  $('#link-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const cert = await signCertificate(state.account, $('#link-key').value.trim(), $('#link-label').value, Math.floor(Date.now() / 1000));
      await state.api.call('POST', '/api/v1/users/@me/devices', { certificate: cert });
      $('#link-dialog').close();
    } catch (err) {
      setText($('#link-dialog-error'), describe(err));
    }
  });

  $('#logout-button').addEventListener('click', async () => {
    state.gateway?.stop();
    await state.api.logout();
    state.outbox.clear();
    await kv.del('outbox');
    showWelcome(state.me);
  });

  const input = $('#composer-input');
  $('#composer').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sendMessage();
  });
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      sendMessage();
    } else if (ev.key === 'ArrowUp' && !input.value && state.view) {
      // Up in an empty composer edits your last message.
      const view = state.view;
      const last = [...view.messages.values()].filter((m) => m.author === state.me?.id).sort((a, b) => compareIds(a.id, b.id)).at(-1);
      if (last) {
        ev.preventDefault();
        view.editing = { id: last.id, draft: last.content };
        renderMessages();
      }
    } else if (ev.key === 'Escape' && state.replyTo) {
      setReply(null);
    }
  });
  // Alt+↑ / Alt+↓: previous / next text channel of the list (a voice channel would join).
  document.addEventListener('keydown', (ev) => {
    if (!ev.altKey || (ev.key !== 'ArrowUp' && ev.key !== 'ArrowDown') || $('#app').hidden) return;
    const buttons = [...$('#channel-list').querySelectorAll('button:not([disabled]):not([data-kind="voice"])')];
    if (buttons.length === 0) return;
    ev.preventDefault();
    const at = buttons.findIndex((b) => b.getAttribute('aria-current') === 'page');
    const next = buttons[(at + (ev.key === 'ArrowDown' ? 1 : buttons.length - 1)) % buttons.length];
    next.click();
    next.focus();
  });
  input.addEventListener('input', () => {
    const now = Date.now();
    if (state.view && input.value && now - state.lastTypingSent > TYPING_SEND_MS) {
      state.lastTypingSent = now;
      state.gateway.typing(state.view.channel.id);
    }
  });
  $('#messages').addEventListener('scroll', () => {
    if ($('#messages').scrollTop < 120) loadOlder();
  });

  $('#search').addEventListener('submit', (ev) => {
    ev.preventDefault();
    search($('#search-input').value.trim());
  });
  $('#search-close').addEventListener('click', () => show('#search-results', false));
}

function forgetInvite() {
  state.inviteCode = null;
  if (location.pathname !== '/') history.replaceState(null, '', '/');
}

// ---- gateway state --------------------------------------------------------------------------

function onReady(d) {
  if ($('#status-select').value !== 'online') state.gateway.send('presence', { status: $('#status-select').value });
  state.me = d.user;
  learnUser(d.user);
  setText($('#me-name'), d.user.username);
  state.guilds.clear();
  for (const g of d.guilds) state.guilds.set(g.id, g);
  state.dms.clear();
  for (const c of d.dms) addDm(c);
  state.voice.clear();
  for (const g of d.guilds) for (const v of g.voice_states ?? []) state.voice.set(v.user_id, v);
  // Who was already online before we connected; presence_update events carry changes.
  state.presence.clear();
  for (const p of d.presences ?? []) state.presence.set(p.user_id, p.status);
  const keep = state.guildId === HOME || state.guilds.has(state.guildId) ? state.guildId : d.guilds[0]?.id ?? null;
  renderGuilds();
  const open = state.view && channelById(state.view.channel.id);
  if (keep && keep === state.guildId && open) {
    renderChannels();
    catchUp(state.view); // a new session: fetch whatever happened meanwhile
  } else {
    selectGuild(keep);
  }
  if (state.inviteCode) offerInvite();
  loadReadStates();
  loadMe();
}

async function loadReadStates() {
  try {
    const states = await state.api.call('GET', '/api/v1/users/@me/read-states');
    for (const r of states) {
      if (state.view?.channel.id === r.channel_id) continue;
      state.reads.set(r.channel_id, { lastRead: r.last_read_id ?? null, unread: r.unread_count, mentions: r.mention_count });
    }
    renderGuilds();
    renderChannels();
  } catch {
    // Unread counts are a nicety; they come back with the next ready.
  }
}

function readState(channelId) {
  let r = state.reads.get(channelId);
  if (!r) {
    r = { lastRead: null, unread: 0, mentions: 0 };
    state.reads.set(channelId, r);
  }
  return r;
}

// Counts a new message in a channel that is not being looked at.
function countUnread(m) {
  if (m.author === state.me?.id || m.deleted) return;
  const r = readState(m.channel_id);
  if (r.lastRead && compareIds(m.id, r.lastRead) <= 0) return;
  r.unread += 1;
  if (m.mentions?.includes(state.me?.id)) r.mentions += 1;
  if (m.guild_id ? m.guild_id === state.guildId : state.guildId === HOME) renderChannels();
  renderGuilds();
}

function ackOpenChannel() {
  const view = state.view;
  if (!view || document.hidden || view.messages.size === 0) return;
  const newest = [...view.messages.keys()].sort(compareIds).at(-1);
  const r = readState(view.channel.id);
  const changed = r.unread || r.mentions;
  r.unread = 0;
  r.mentions = 0;
  if (changed) {
    renderChannels();
    renderGuilds();
  }
  if (r.lastRead && compareIds(newest, r.lastRead) <= 0) return;
  r.lastRead = newest;
  const channelId = view.channel.id;
  clearTimeout(state.acks.get(channelId));
  if (state.deleting.has(channelId)) return;
  state.acks.set(channelId, setTimeout(() => {
    state.acks.delete(channelId);
    if (state.deleting.has(channelId)) return;
    state.api.call('POST', `/api/v1/channels/${channelId}/ack`, { message_id: newest }).catch(() => {});
  }, 500));
}

async function offerInvite() {
  // Instance invites (12 characters; guild invites have 8) only let an account sign up.
  if (state.inviteCode.length === INSTANCE_INVITE_LENGTH) {
    forgetInvite();
    return;
  }
  setText($('#join-error'), '');
  try {
    const preview = await state.api.call('GET', `/api/v1/invites/${state.inviteCode}`);
    if (state.guilds.has(preview.guild_id)) {
      forgetInvite();
      selectGuild(preview.guild_id);
      return;
    }
    const members = preview.member_count === 1 ? '1 member' : `${preview.member_count} members`;
    setText($('#join-text'), `You are invited to ${preview.guild_name} (${members}).`);
    setText($('#join-dialog-title'), `Join ${preview.guild_name}`);
    show('#join-button', true);
  } catch (err) {
    setText($('#join-text'), 'This invite is not valid any more.');
    show('#join-button', false);
  }
  if (!$('#join-dialog').open) $('#join-dialog').showModal();
}

function addGuild(g) {
  state.guilds.set(g.id, g);
  renderGuilds();
  if (g.id === state.guildId) renderChannels();
}

function addDm(c) {
  state.dms.set(c.id, c);
  for (const u of c.recipients ?? []) learnUser(u);
  if (state.guildId === HOME) renderChannels();
}

function learnUser(u) {
  if (state.users.get(u.id) !== u.username) {
    state.users.set(u.id, u.username);
    state.names += 1;
  }
}

function channelById(id) {
  if (state.dms.has(id)) return state.dms.get(id);
  for (const g of state.guilds.values()) {
    const c = g.channels.find((x) => x.id === id);
    if (c) return c;
  }
  return null;
}

function onEvent(t, d) {
  switch (t) {
    case 'message_create':
      if (state.view?.channel.id !== d.channel_id || document.hidden) countUnread(d);
      onChannelEvent(t, d);
      break;
    case 'message_update':
    case 'message_delete':
    case 'reaction_add':
    case 'reaction_remove':
      onChannelEvent(t, d);
      break;
    case 'role_create':
    case 'role_update': {
      const g = state.guilds.get(d.guild_id);
      if (g) g.roles = (g.roles ?? []).filter((r) => r.id !== d.id).concat([d]);
      if (d.guild_id === state.guildId) refreshGuildViews();
      break;
    }
    case 'role_delete': {
      const g = state.guilds.get(d.guild_id);
      if (g) {
        g.roles = (g.roles ?? []).filter((r) => r.id !== d.role_id);
        g.my_roles = (g.my_roles ?? []).filter((id) => id !== d.role_id);
        for (const m of state.members.get(g.id)?.values() ?? []) m.roles = m.roles.filter((id) => id !== d.role_id);
      }
      if (d.guild_id === state.guildId) refreshGuildViews();
      break;
    }
    case 'typing_start':
      onTyping(d);
      break;
    case 'presence_update':
      state.presence.set(d.user_id, d.status);
      renderMembers();
      break;
    case 'guild_create':
      addGuild(d);
      if (!state.guildId) selectGuild(d.id);
      break;
    case 'guild_update': {
      const g = state.guilds.get(d.id);
      if (g) addGuild({ ...g, ...d });
      if (d.id === state.guildId) setText($('#guild-name'), d.name);
      break;
    }
    case 'guild_delete': {
      // Kicked, banned or deleted: read acks still pending for its channels would be refused.
      for (const c of state.guilds.get(d.id)?.channels ?? []) {
        clearTimeout(state.acks.get(c.id));
        state.acks.delete(c.id);
      }
      state.guilds.delete(d.id);
      renderGuilds();
      if (state.guildId === d.id) selectGuild(state.guilds.keys().next().value ?? HOME);
      break;
    }
    case 'channel_create':
    case 'channel_update': {
      if (!d.guild_id) {
        addDm(d);
        break;
      }
      const g = state.guilds.get(d.guild_id);
      if (!g) break;
      g.channels = g.channels.filter((c) => c.id !== d.id).concat([d]);
      if (state.view?.channel.id === d.id) {
        state.view.channel = d;
        showChannelTitle(d);
        if ($('#settings-dialog').open) renderChannelAccess();
      }
      if (g.id === state.guildId) renderChannels();
      break;
    }
    case 'channel_delete': {
      clearTimeout(state.acks.get(d.id));
      state.acks.delete(d.id);
      state.reads.delete(d.id);
      const g = state.guilds.get(d.guild_id);
      if (!g) break;
      g.channels = g.channels.filter((c) => c.id !== d.id);
      if (g.id === state.guildId) {
        if (state.view?.channel.id === d.id) openChannel(firstTextChannel(g));
        else renderChannels();
      }
      break;
    }
    case 'member_add':
    case 'member_update': {
      learnUser(d.user);
      const g = state.guilds.get(d.guild_id);
      if (g && d.user.id === state.me?.id) {
        g.my_roles = d.roles;
        if (g.id === state.guildId) refreshGuildViews();
      }
      state.members.get(d.guild_id)?.set(d.user.id, d);
      if (d.guild_id === state.guildId) {
        renderMembers();
        if (state.memberOpen === d.user.id) renderMemberDialog();
      }
      break;
    }
    case 'voice_state_update':
      // channel_id null: the user left voice.
      if (d.channel_id) state.voice.set(d.user_id, d);
      else state.voice.delete(d.user_id);
      // The screen we watch went away.
      if (state.call?.watching === d.user_id && (!d.channel_id || !d.self_video)) stopWatching();
      if (state.call) {
        // Our place ended elsewhere (another device joined, the grant lapsed, a kick).
        if (d.user_id === state.me.id && d.channel_id !== state.call.channel.id) endCall('You left the voice channel.');
        else state.call.update(d);
      }
      if (d.guild_id === state.guildId) renderChannels();
      break;
    case 'member_remove':
      state.members.get(d.guild_id)?.delete(d.user.id);
      if (d.guild_id === state.guildId) {
        renderMembers();
        if (state.memberOpen === d.user.id && $('#member-dialog').open) $('#member-dialog').close();
      }
      break;
    default:
      break;
  }
}

// ---- guilds, channels, members ----------------------------------------------------------------

function sortedChannels(g) {
  return [...(g?.channels ?? [])].sort((a, b) => a.position - b.position || compareIds(a.id, b.id));
}

function firstTextChannel(g) {
  return sortedChannels(g).find((c) => c.kind === 'text') ?? null;
}

function dmPeer(c) {
  return c.recipients?.find((u) => u.id !== state.me?.id) ?? c.recipients?.[0] ?? null;
}

function channelTitle(c) {
  if (c.kind === 'dm') return `@${dmPeer(c)?.username ?? 'unknown'}`;
  return `#${c.name}`;
}

function renderGuilds() {
  const home = $('#dm-home');
  if (state.guildId === HOME) home.setAttribute('aria-current', 'true');
  else home.removeAttribute('aria-current');
  home.classList.toggle('unread', [...state.dms.keys()].some((id) => state.reads.get(id)?.unread));
  const items = [...state.guilds.values()].sort((a, b) => compareIds(a.id, b.id)).map((g) => {
    const initials = g.name.trim().split(/\s+/).map((w) => [...w][0]).join('').slice(0, 2) || '?';
    const unread = g.channels.some((c) => state.reads.get(c.id)?.unread);
    const button = h('button', {
      type: 'button',
      class: unread ? 'round unread' : 'round',
      title: g.name,
      'aria-current': g.id === state.guildId ? 'true' : false,
      onclick: () => selectGuild(g.id),
    }, h('span', { 'aria-hidden': 'true' }, initials), h('span', { class: 'sr-only' }, g.name));
    return h('li', {}, button);
  });
  $('#guild-list').replaceChildren(...items);
}

function selectGuild(id) {
  state.guildId = id;
  show('#search-results', false);
  renderGuilds();
  if (id === HOME) {
    setText($('#guild-name'), 'Direct messages');
    show('#invite-button', false);
    show('#new-channel', false);
    show('#roles-button', false);
    show('#members', false);
    show('#search', false);
    const first = [...state.dms.values()].sort((a, b) => compareIds(b.id, a.id))[0] ?? null;
    openChannel(state.view && state.dms.has(state.view.channel.id) ? state.view.channel : first);
    return;
  }
  const g = id ? state.guilds.get(id) : null;
  setText($('#guild-name'), g ? g.name : 'No guild yet');
  updateGuildControls();
  show('#members', Boolean(g));
  show('#search', Boolean(g));
  if (g) loadMembers(g.id);
  openChannel(firstTextChannel(g));
}

function refreshGuildViews() {
  updateGuildControls();
  renderMembers();
  if ($('#roles-dialog').open) renderRolesDialog($('#role-select').value);
  if ($('#member-dialog').open) renderMemberDialog();
  if (state.view) renderMessages();
}

function updateGuildControls() {
  const g = state.guilds.get(state.guildId);
  show('#invite-button', Boolean(g) && can(g, PERM.CREATE_INVITES));
  show('#new-channel', Boolean(g) && can(g, PERM.MANAGE_CHANNELS));
  show('#roles-button', Boolean(g) && can(g, PERM.MANAGE_ROLES));
  updateModerationControls();
  updateComposerNote();
  const c = state.view?.channel;
  show('#channel-settings', Boolean(g && c?.guild_id === g.id && can(g, PERM.MANAGE_CHANNELS)));
}

// ---- voice (web/js/voice.js: the SFU call) ---------------------------------------------

function volumeSlider(userId) {
  const value = Math.round((state.call?.volumes.get(userId) ?? 1) * 100);
  return h('input', {
    type: 'range', min: '0', max: '100', value: String(value), class: 'volume',
    'aria-label': `Volume of ${username(userId)}`,
    oninput: (ev) => state.call?.setVolume(userId, Number(ev.target.value) / 100),
  });
}

async function joinVoice(channel) {
  if (state.call?.channel.id === channel.id) return;
  if (state.call) await leaveVoice();
  setText($('#voice-error'), '');
  const call = new VoiceCall(state.api, channel, state.me.id, {
    speaking: (set) => {
      for (const li of document.querySelectorAll('[data-voice-user]')) li.classList.toggle('speaking', set.has(li.dataset.voiceUser));
    },
    state: (text) => setText($('#voice-status'), `${text} — 🔊 ${channel.name}`),
    ended: (reason) => endCall(reason),
    video: () => renderVoicePanel(),
    // After a reconnect the watched stream arrives on the new connection's slot.
    watching: (track) => { if (track) $('#video-view').srcObject = new MediaStream([track]); },
  });
  state.call = call;
  renderVoicePanel();
  setText($('#voice-status'), `Joining 🔊 ${channel.name}…`);
  try {
    await call.join();
  } catch (err) {
    // A failed join undoes itself (leave), and the gateway's voice_state_update for that may
    // end the call first ("You left…"): the join's own reason is the one to show.
    if (state.call === call || !state.call) endCall(describe(err));
  }
  renderChannels();
}

function endCall(reason) {
  closeViewer();
  state.call?.close();
  state.call = null;
  renderVoicePanel();
  renderChannels();
  if (reason) setText($('#voice-error'), reason);
}

async function leaveVoice() {
  const call = state.call;
  state.call = null;
  closeViewer();
  await call?.leave();
  renderVoicePanel();
  renderChannels();
}

function renderVoicePanel() {
  const call = state.call;
  show('#voice-controls', Boolean(call));
  if (!call) setText($('#voice-status'), 'Not in voice');
  $('#voice-mute').setAttribute('aria-pressed', String(Boolean(call?.muted)));
  setText($('#voice-mute'), call?.muted ? 'Unmute' : 'Mute');
  $('#voice-deafen').setAttribute('aria-pressed', String(Boolean(call?.deafened)));
  setText($('#voice-deafen'), call?.deafened ? 'Undeafen' : 'Deafen');
  const sharing = call?.video?.kind;
  $('#voice-share').setAttribute('aria-pressed', String(sharing === 'screen'));
  setText($('#voice-share'), sharing === 'screen' ? 'Stop sharing' : 'Share screen');
  $('#voice-camera').setAttribute('aria-pressed', String(sharing === 'camera'));
  setText($('#voice-camera'), sharing === 'camera' ? 'Camera off' : 'Camera');
}

// Someone's screen or camera in the viewer above the messages.
async function watchVideo(userId) {
  const call = state.call;
  if (!call) return;
  setText($('#voice-error'), '');
  try {
    const track = await call.watch(userId);
    $('#video-view').srcObject = new MediaStream([track]);
    setText($('#video-title'), `Watching ${username(userId)}`);
    show('#video-viewer', true);
  } catch (err) {
    setText($('#voice-error'), describe(err));
  }
}

function closeViewer() {
  show('#video-viewer', false);
  $('#video-view').srcObject = null;
}

async function stopWatching() {
  closeViewer();
  await state.call?.stopWatching().catch(() => {});
}

function wireVoice() {
  $('#voice-relay-only').checked = localStorage.getItem('concord-voice-relay-only') === '1';
  $('#voice-relay-only').addEventListener('change', (ev) => {
    localStorage.setItem('concord-voice-relay-only', ev.target.checked ? '1' : '0');
  });
  const act = async (fn) => {
    setText($('#voice-error'), '');
    try {
      await fn(state.call);
    } catch (err) {
      setText($('#voice-error'), describe(err));
    }
    renderVoicePanel();
  };
  $('#voice-mute').addEventListener('click', () => act((call) => call?.setMuted(!call.muted)));
  $('#voice-deafen').addEventListener('click', () => act((call) => call?.setDeafened(!call.deafened)));
  const toggleVideo = (kind) => act((call) => (call?.video?.kind === kind ? call.stopVideo() : call?.startVideo(kind)));
  $('#voice-share').addEventListener('click', () => toggleVideo('screen'));
  $('#voice-camera').addEventListener('click', () => toggleVideo('camera'));
  $('#video-stop').addEventListener('click', () => stopWatching());
  $('#voice-leave').addEventListener('click', () => act(() => leaveVoice()));
  renderVoicePanel();
}

function renderChannels() {
  const list = state.guildId === HOME
    ? [...state.dms.values()].sort((a, b) => compareIds(b.id, a.id))
    : sortedChannels(state.guilds.get(state.guildId));
  const items = list.map((c) => {
    const label = c.kind === 'voice' ? `🔊 ${c.name}` : channelTitle(c);
    const r = state.reads.get(c.id);
    const badge = r?.unread ? h('span', { class: 'badge', 'aria-label': `${r.unread} unread${r.mentions ? `, ${r.mentions} mentioning you` : ''}` }, String(Math.min(r.unread, 999))) : '';
    const voice = c.kind === 'voice';
    const inThisCall = voice && state.call?.channel.id === c.id;
    const button = h('button', {
      type: 'button',
      class: r?.unread ? 'unread' : false,
      'aria-current': state.view?.channel.id === c.id || inThisCall ? 'page' : false,
      title: voice ? (inThisCall ? 'You are in this voice channel' : 'Join voice') : c.topic ?? '',
      'data-kind': c.kind,
      onclick: () => (voice ? joinVoice(c) : openChannel(c)),
    }, label, badge);
    const inVoice = voice ? [...state.voice.values()].filter((v) => v.channel_id === c.id) : [];
    const voiceList = inVoice.length
      ? h('ul', { class: 'voice-participants', 'aria-label': `In ${c.name}` }, ...inVoice.map((v) => h('li', {
        'data-voice-user': v.user_id,
        class: state.call?.speaking.has(v.user_id) ? 'speaking' : false,
      },
      h('span', { class: 'voice-name' }, username(v.user_id)),
      v.self_mute || v.server_mute ? h('span', { class: 'role-chip' }, v.server_mute ? 'server-muted' : 'muted') : '',
      v.self_deaf ? h('span', { class: 'role-chip' }, 'deafened') : '',
      v.self_video ? h('span', { class: 'role-chip live' }, 'live') : '',
      v.self_video && inThisCall && v.user_id !== state.me.id
        ? h('button', { type: 'button', class: 'watch', 'aria-label': `Watch ${username(v.user_id)}`, onclick: () => watchVideo(v.user_id) }, 'Watch')
        : '',
      inThisCall && v.user_id !== state.me.id ? volumeSlider(v.user_id) : '')))
      : '';
    return h('li', {}, button, voiceList);
  });
  if (state.guildId === HOME && items.length === 0) {
    items.push(h('li', { class: 'hint' }, 'No conversations yet. Pick a member of a guild to message them.'));
  }
  $('#channel-list').replaceChildren(...items);
}

// A private channel's role overwrites: a checked role may view (and use) the channel.
const ACCESS = (1 << 0) | (1 << 1) | (1 << 13) | (1 << 12) | (1 << 8) | (1 << 9);

function renderChannelAccess() {
  const c = state.view?.channel;
  const g = c && state.guilds.get(c.guild_id);
  show('#settings-access', Boolean(g && c.private));
  if (!g || !c.private) return;
  const roles = (g.roles ?? []).filter((r) => r.id !== g.id).sort((a, b) => b.position - a.position);
  const boxes = roles.map((r) => {
    const granted = c.overwrites.some((o) => o.kind === 'role' && o.target_id === r.id && o.allow & 1);
    const box = h('input', { type: 'checkbox', checked: granted });
    box.addEventListener('change', async () => {
      try {
        if (box.checked) await state.api.call('PUT', `/api/v1/channels/${c.id}/permissions/${r.id}`, { kind: 'role', allow: ACCESS, deny: 0 });
        else await state.api.call('DELETE', `/api/v1/channels/${c.id}/permissions/${r.id}`);
      } catch (err) {
        setText($('#settings-error'), describe(err));
        box.checked = !box.checked;
      }
    });
    return h('label', {}, box, r.name);
  });
  if (boxes.length === 0) boxes.push(h('p', { class: 'hint' }, 'Create a role first (Roles), then give it access here.'));
  $('#settings-roles').replaceChildren(...boxes);
}

async function loadMembers(guildId) {
  try {
    const members = new Map();
    let after = null;
    for (let i = 0; i < 10; i += 1) {
      const q = after ? `?limit=100&after=${after}` : '?limit=100';
      const page = await state.api.call('GET', `/api/v1/guilds/${guildId}/members${q}`);
      for (const m of page) {
        learnUser(m.user);
        members.set(m.user.id, m);
      }
      if (page.length < 100) break;
      after = page[page.length - 1].user.id;
    }
    state.members.set(guildId, members);
    if (guildId === state.guildId) renderMembers();
    if (state.view) renderMessages();
  } catch {
    // Names fall back to per-user lookups.
  }
}

function renderMembers() {
  const g = state.guilds.get(state.guildId);
  const roleNames = new Map((g?.roles ?? []).filter((r) => r.id !== g.id).map((r) => [r.id, r.name]));
  const members = [...(state.members.get(state.guildId)?.values() ?? [])]
    .sort((a, b) => a.user.username.localeCompare(b.user.username));
  const items = members.map((m) => {
    const status = m.user.id === state.me?.id ? (state.connected ? $('#status-select').value : 'offline') : state.presence.get(m.user.id);
    const dot = status ? h('span', { class: `presence ${status}`, role: 'img', 'aria-label': status }) : '';
    const label = m.user.id === state.me?.id ? `${m.user.username} (you)` : m.user.username;
    const chips = m.roles.filter((id) => roleNames.has(id)).map((id) => h('span', { class: 'role-chip' }, roleNames.get(id)));
    return h('li', {}, dot, h('button', {
      type: 'button',
      class: 'link',
      onclick: () => openMember(m.user.id),
    }, label), ...chips, timeoutChip(m));
  });
  $('#member-list').replaceChildren(...items);
}

function openMember(userId) {
  state.memberOpen = userId;
  setText($('#member-error'), '');
  setText($('#member-kick'), 'Kick');
  setText($('#member-ban'), 'Ban');
  renderMemberDialog();
  $('#member-dialog').showModal();
}

function renderMemberDialog() {
  const g = state.guilds.get(state.guildId);
  const m = state.members.get(state.guildId)?.get(state.memberOpen);
  if (!g || !m) return;
  const self = m.user.id === state.me?.id;
  const owner = m.user.id === g.owner_id;
  setText($('#member-dialog-title'), owner ? `${m.user.username} (owner)` : m.user.username);
  const manage = can(g, PERM.MANAGE_ROLES);
  const roles = (g.roles ?? []).filter((r) => r.id !== g.id).sort((a, b) => b.position - a.position);
  const boxes = roles.map((r) => {
    const box = h('input', { type: 'checkbox', checked: m.roles.includes(r.id), disabled: !manage });
    box.addEventListener('change', () => setMemberRole(m.user.id, r.id, box.checked));
    return h('label', {}, box, r.name);
  });
  if (boxes.length === 0) boxes.push(h('p', { class: 'hint' }, 'This guild has no roles yet.'));
  $('#member-role-list').replaceChildren(...boxes);
  show('#member-dm', !self);
  show('#member-kick', !self && !owner && can(g, PERM.KICK_MEMBERS));
  show('#member-ban', !self && !owner && can(g, PERM.BAN_MEMBERS));
  renderMemberModeration(m, g);
}

async function setMemberRole(userId, roleId, on) {
  try {
    await state.api.call(on ? 'PUT' : 'DELETE', `/api/v1/guilds/${state.guildId}/members/${userId}/roles/${roleId}`);
  } catch (err) {
    setText($('#member-error'), describe(err));
    renderMemberDialog();
  }
}

// Kick or ban the member in the dialog; the first click asks, the second does it.
async function moderate(what) {
  const button = $(`#member-${what}`);
  const label = what === 'kick' ? 'Kick' : 'Ban';
  if (button.textContent === label) {
    setText(button, `Really ${what}?`);
    return;
  }
  const userId = state.memberOpen;
  try {
    if (what === 'kick') await state.api.call('DELETE', `/api/v1/guilds/${state.guildId}/members/${userId}`);
    else await state.api.call('PUT', `/api/v1/guilds/${state.guildId}/bans/${userId}`, { reason: null });
    state.members.get(state.guildId)?.delete(userId);
    renderMembers();
    $('#member-dialog').close();
  } catch (err) {
    setText($('#member-error'), describe(err));
  }
}

function renderRolesDialog(selected) {
  const g = state.guilds.get(state.guildId);
  if (!g) return;
  const roles = [...(g.roles ?? [])].sort((a, b) => b.position - a.position);
  const current = roles.find((r) => r.id === selected) ?? roles[0];
  $('#role-select').replaceChildren(...roles.map((r) => h('option', { value: r.id, selected: r.id === current?.id }, r.name)));
  const everyone = current?.id === g.id;
  $('#role-name').value = current?.name ?? '';
  $('#role-name').disabled = everyone;
  show('#role-delete', Boolean(current) && !everyone);
  setText($('#role-delete'), 'Delete role');
  $('#role-perms').replaceChildren(...PERMISSION_NAMES.map(([bit, name]) => h('label', {},
    h('input', { type: 'checkbox', 'data-bit': bit, checked: Boolean(current && current.permissions & bit) }), name)));
}

async function saveRole() {
  const roleId = $('#role-select').value;
  const g = state.guilds.get(state.guildId);
  let permissions = 0;
  for (const box of $('#role-perms').querySelectorAll('input[type=checkbox]')) if (box.checked) permissions |= Number(box.dataset.bit);
  const body = { permissions };
  if (roleId !== g?.id) body.name = $('#role-name').value.trim();
  try {
    const role = await state.api.call('PATCH', `/api/v1/guilds/${state.guildId}/roles/${roleId}`, body);
    onEvent('role_update', role);
    setText($('#roles-error'), 'Saved.');
  } catch (err) {
    setText($('#roles-error'), describe(err));
  }
}

async function deleteRole() {
  const roleId = $('#role-select').value;
  const button = $('#role-delete');
  if (button.textContent === 'Delete role') {
    setText(button, 'Really delete?');
    return;
  }
  try {
    await state.api.call('DELETE', `/api/v1/guilds/${state.guildId}/roles/${roleId}`);
    onEvent('role_delete', { guild_id: state.guildId, role_id: roleId });
    renderRolesDialog();
  } catch (err) {
    setText($('#roles-error'), describe(err));
  }
}

async function createRole() {
  const name = $('#new-role-name').value.trim();
  if (!name) return;
  try {
    const role = await state.api.call('POST', `/api/v1/guilds/${state.guildId}/roles`, { name, permissions: 0 });
    onEvent('role_create', role);
    $('#new-role-name').value = '';
    renderRolesDialog(role.id);
  } catch (err) {
    setText($('#roles-error'), describe(err));
  }
}

async function openDm(userId) {
  let channel = [...state.dms.values()].find((c) => c.recipients?.some((u) => u.id === userId));
  try {
    channel ??= await state.api.call('POST', '/api/v1/users/@me/dms', { recipient: userId });
  } catch (err) {
    banner(describe(err));
    return;
  }
  addDm(channel);
  state.guildId = HOME;
  selectGuild(HOME);
  openChannel(channel);
}

function username(id) {
  const name = state.users.get(id);
  if (name) return name;
  if (!state.userFetches.has(id)) {
    state.userFetches.set(id, state.api.call('GET', `/api/v1/users/${id}`).then((u) => {
      learnUser(u);
      if (state.view) renderMessages();
    }, () => {}));
  }
  return 'unknown';
}

// ---- the open channel -----------------------------------------------------------------------
//
// A view holds the messages shown (by id), `applied` = the channel seq applied so far, and
// live events that arrived while a page or a catch-up was loading. Channel events are applied
// in seq order exactly once (docs/protocols/gateway.md, "Channel seq and catch-up").

async function openChannel(channel) {
  state.typing.forEach((timer) => clearTimeout(timer));
  state.typing.clear();
  renderTyping();
  const list = $('#messages');
  if (!channel) {
    state.view = null;
    renderChannels();
    setText($('#channel-name'), state.guildId === HOME ? 'Direct messages' : state.guildId ? 'No text channel' : 'Create or join a guild to start');
    list.replaceChildren();
    list.setAttribute('aria-label', 'Messages');
    show('#composer', false);
    return;
  }
  const view = {
    channel,
    messages: new Map(),
    nodes: new Map(), // id → {key, li}: rendered messages, rebuilt only when they change
    applied: 0,
    busy: true,
    catching: false,
    buffered: [],
    hasMore: true,
    loadingOlder: false,
    stick: true,
    editing: null, // {id, draft}
    confirmDelete: null,
    mine: new Set(), // `${message id} ${emoji}` reacted by me (seen this session)
  };
  state.view = view;
  setReply(null);
  const read = state.reads.get(channel.id);
  view.lastRead = read?.unread ? read.lastRead ?? '0' : null; // the "new messages" divider goes after it
  renderChannels();
  showChannelTitle(channel);
  list.dataset.channel = channel.id;
  list.replaceChildren();
  show('#composer', true);
  updateGuildControls();
  try {
    const page = await state.api.call('GET', `/api/v1/channels/${channel.id}/messages?limit=${PAGE}`);
    if (state.view !== view) return;
    for (const m of page) {
      view.messages.set(m.id, m);
      learnMyReactions(view, m);
    }
    view.hasMore = page.length === PAGE;
    view.applied = page.reduce((max, m) => Math.max(max, m.seq), page.channelSeq ?? 0);
    view.busy = false;
    await catchUp(view);
  } catch (err) {
    view.busy = false;
    banner(describe(err));
  }
  if (state.view === view) {
    renderMessages();
    scrollToBottom();
    ackOpenChannel();
  }
}

// The note above the composer while the user cannot send (timeout, slow mode); returns it.
function updateComposerNote() {
  const c = state.view?.channel;
  const g = c?.guild_id ? state.guilds.get(c.guild_id) : null;
  const me = g ? state.members.get(g.id)?.get(state.me?.id) : null;
  const why = c && g ? composerBlock(c, g, me, state.lastSent.get(c.id) ?? 0) : null;
  const note = $('#composer-note');
  if (note.textContent !== (why ?? '')) setText(note, why ?? '');
  show(note, Boolean(why));
  return why;
}

// History marks the reactions the caller made (`me`), so a reload shows them pressed.
function learnMyReactions(view, m) {
  for (const r of m.reactions ?? []) if (r.me) view.mine.add(`${m.id} ${r.emoji}`);
}

function showChannelTitle(channel) {
  const title = channelTitle(channel);
  setText($('#channel-name'), title);
  $('#messages').setAttribute('aria-label', `Messages in ${title}`);
  $('#composer-input').setAttribute('placeholder', `Message ${title}`);
}

function onChannelEvent(t, d) {
  const view = state.view;
  if (!view || view.channel.id !== d.channel_id) return;
  if (view.busy) {
    view.buffered.push({ t, d });
    return;
  }
  if (d.seq <= view.applied) return;
  if (d.seq === view.applied + 1) {
    apply(view, t, d);
    view.applied = d.seq;
    scheduleRender();
    if (t === 'message_create') ackOpenChannel();
  } else {
    view.buffered.push({ t, d });
    catchUp(view);
  }
}

async function catchUp(view) {
  if (view.catching) return;
  view.busy = true;
  view.catching = true;
  try {
    for (;;) {
      for (;;) {
        const page = await state.api.call('GET', `/api/v1/channels/${view.channel.id}/events?after_seq=${view.applied}&limit=100`);
        for (const e of page) {
          if (e.seq > view.applied) {
            apply(view, e.kind, e.data);
            view.applied = e.seq;
          }
        }
        if (page.length < 100) break;
      }
      const buffered = view.buffered.sort((a, b) => a.d.seq - b.d.seq);
      view.buffered = [];
      let gap = false;
      for (const { t, d } of buffered) {
        if (d.seq <= view.applied) continue;
        if (d.seq === view.applied + 1) {
          apply(view, t, d);
          view.applied = d.seq;
        } else {
          view.buffered.push({ t, d });
          gap = true;
        }
      }
      if (!gap) break;
    }
  } catch (err) {
    banner(describe(err));
  } finally {
    view.busy = false;
    view.catching = false;
  }
  if (state.view === view) renderMessages();
}

function apply(view, t, d) {
  switch (t) {
    case 'message_create':
      if (d.deleted) break;
      view.messages.set(d.id, d);
      if (d.author === state.me?.id) state.outbox.delete(d.nonce);
      clearTyping(d.author);
      break;
    case 'message_update': {
      const m = view.messages.get(d.id);
      if (m && !d.deleted) view.messages.set(d.id, { ...m, content: d.content, edited_at: d.edited_at, mentions: d.mentions });
      break;
    }
    case 'message_delete':
      view.messages.delete(d.id);
      break;
    case 'reaction_add':
    case 'reaction_remove': {
      const key = `${d.message_id} ${d.emoji}`;
      if (d.user_id === state.me?.id) {
        if (t === 'reaction_add') view.mine.add(key);
        else view.mine.delete(key);
      }
      const m = view.messages.get(d.message_id);
      if (!m) break;
      const reactions = (m.reactions ?? []).map((r) => ({ ...r }));
      let r = reactions.find((x) => x.emoji === d.emoji);
      if (!r) {
        r = { emoji: d.emoji, count: 0 };
        reactions.push(r);
      }
      r.count += t === 'reaction_add' ? 1 : -1;
      view.messages.set(m.id, { ...m, reactions: reactions.filter((x) => x.count > 0) });
      break;
    }
    default:
      break;
  }
}

async function loadOlder() {
  const view = state.view;
  if (!view || !view.hasMore || view.loadingOlder || view.busy || view.messages.size === 0) return false;
  view.loadingOlder = true;
  const oldest = [...view.messages.keys()].sort(compareIds)[0];
  try {
    const page = await state.api.call('GET', `/api/v1/channels/${view.channel.id}/messages?before=${oldest}&limit=${PAGE}`);
    if (state.view !== view) return false;
    const list = $('#messages');
    const fromBottom = list.scrollHeight - list.scrollTop;
    for (const m of page) {
      if (view.messages.has(m.id)) continue;
      view.messages.set(m.id, m);
      learnMyReactions(view, m);
    }
    view.hasMore = page.length === PAGE;
    renderMessages();
    list.scrollTop = list.scrollHeight - fromBottom;
    return true;
  } catch (err) {
    banner(describe(err));
    return false;
  } finally {
    view.loadingOlder = false;
  }
}

// ---- sending (an outbox: messages typed offline go out once when back) -------------------------

async function sendMessage() {
  const view = state.view;
  const input = $('#composer-input');
  const content = mentionIds(input.value.trim());
  if (!view || !content) return;
  // Timed out, or slow mode still counting: keep the text and say why.
  if (updateComposerNote()) return;
  state.lastSent.set(view.channel.id, Date.now());
  input.value = '';
  state.lastTypingSent = 0;
  const nonce = crypto.randomUUID();
  const replyTo = state.replyTo?.channel_id === view.channel.id ? state.replyTo.id : null;
  setReply(null);
  state.outbox.set(nonce, { channelId: view.channel.id, content, replyTo, status: 'sending' });
  saveOutbox();
  view.stick = true;
  renderMessages();
  await deliver(nonce);
}

async function deliver(nonce) {
  const p = state.outbox.get(nonce);
  if (!p || p.inflight) return;
  p.inflight = true;
  p.status = 'sending';
  try {
    const m = await state.api.call('POST', `/api/v1/channels/${p.channelId}/messages`, { content: p.content, nonce, reply_to: p.replyTo ?? null });
    state.outbox.delete(nonce);
    saveOutbox();
    // The gateway delivers the event in seq order; until then show the answer.
    const view = state.view;
    if (view?.channel.id === m.channel_id && !view.messages.has(m.id) && m.seq > view.applied) view.messages.set(m.id, m);
  } catch (err) {
    // A retryable refusal keeps the message with its nonce; the relay stores it once however
    // often it arrives (docs/protocols/faults.md, "Retrying a send").
    const transient = err instanceof ApiError && (RETRYABLE.has(err.code) || err.status >= 500);
    p.status = transient ? 'waiting' : 'failed';
    p.error = describe(err);
    saveOutbox();
    // The relay answered (an outcome it could not know, a full disk, a busy database): try
    // again after its Retry-After, else with backoff. No answer at all waits for the gateway
    // to come back (flushOutbox).
    if (transient && err.status !== 0) {
      p.attempts = (p.attempts ?? 0) + 1;
      const backoff = Math.min(30, 2 ** (p.attempts - 1));
      setTimeout(() => { if (state.outbox.get(nonce)?.status === 'waiting') deliver(nonce); }, 1000 * (err.retryAfter ?? backoff));
    }
  } finally {
    p.inflight = false;
  }
  if (state.view?.channel.id === p.channelId) renderMessages();
}

function flushOutbox() {
  for (const [nonce, p] of state.outbox) if (p.status === 'waiting') deliver(nonce);
}

// The outbox survives a reload: unsent messages are kept in IndexedDB and go out (once: the
// relay answers a repeated nonce with the first message) when the next session connects.
function saveOutbox() {
  const unsent = [...state.outbox].map(([nonce, p]) => ({
    nonce, channelId: p.channelId, content: p.content, replyTo: p.replyTo ?? null,
  }));
  kv.set('outbox', unsent).catch(() => {});
}

async function loadOutbox() {
  for (const p of (await kv.get('outbox')) ?? []) {
    if (typeof p?.nonce !== 'string' || typeof p.content !== 'string') continue;
    state.outbox.set(p.nonce, { channelId: p.channelId, content: p.content, replyTo: p.replyTo, status: 'waiting' });
  }
}

// "@name" of a member (or DM peer) becomes the wire form "<@id>" (shown as @name again).
function mentionIds(text) {
  const known = new Map();
  const members = state.view?.channel.guild_id ? state.members.get(state.view.channel.guild_id)?.values() ?? [] : [];
  for (const m of members) known.set(m.user.username, m.user.id);
  for (const u of state.view?.channel.recipients ?? []) known.set(u.username, u.id);
  return text.replace(/(^|\s)@([a-z0-9_.]{2,32})/g, (whole, lead, name) => (known.has(name) ? `${lead}<@${known.get(name)}>` : whole));
}

function setReply(m) {
  state.replyTo = m;
  show('#reply-bar', Boolean(m));
  if (m) {
    setText($('#reply-text'), `Replying to ${username(m.author)}`);
    $('#composer-input').focus();
  }
}

async function editMessage(view, id, content) {
  const m = view.messages.get(id);
  view.editing = null;
  if (!m || !content || content === m.content) {
    renderMessages();
    return;
  }
  try {
    const updated = await state.api.call('PATCH', `/api/v1/channels/${view.channel.id}/messages/${id}`, { content });
    if (view.messages.has(id)) view.messages.set(id, { ...view.messages.get(id), content: updated.content, edited_at: updated.edited_at });
  } catch (err) {
    banner(describe(err));
  }
  renderMessages();
}

async function deleteMessage(view, id) {
  view.confirmDelete = null;
  try {
    await state.api.call('DELETE', `/api/v1/channels/${view.channel.id}/messages/${id}`);
    view.messages.delete(id);
  } catch (err) {
    banner(describe(err));
  }
  renderMessages();
}

async function toggleReaction(view, id, emoji) {
  const key = `${id} ${emoji}`;
  const method = view.mine.has(key) ? 'DELETE' : 'PUT';
  try {
    await state.api.call(method, `/api/v1/channels/${view.channel.id}/messages/${id}/reactions/${encodeURIComponent(emoji)}`);
    if (method === 'PUT') view.mine.add(key);
    else view.mine.delete(key);
  } catch (err) {
    banner(describe(err));
  }
  renderMessages();
}

// ---- search ---------------------------------------------------------------------------------

async function search(q) {
  if (!q || !state.guilds.has(state.guildId)) return;
  const list = $('#search-list');
  show('#search-results', true);
  setText($('#search-title'), `Results for “${q}”`);
  list.replaceChildren(h('li', { class: 'hint' }, 'Searching…'));
  try {
    const answer = await state.api.call('GET', `/api/v1/guilds/${state.guildId}/search?q=${encodeURIComponent(q)}&limit=25`);
    const items = answer.hits.map((hit) => {
      const m = hit.message;
      const channel = channelById(m.channel_id);
      const where = `${channel ? channelTitle(channel) : ''} · ${username(m.author)} · ${formatTime(m.created_at)}`;
      return h('li', {}, h('button', {
        type: 'button',
        class: 'hit',
        onclick: () => jumpTo(m.channel_id, m.id),
      }, h('span', { class: 'where' }, where), h('span', { class: 'snippet' }, ...highlightNodes(hit.highlight))));
    });
    if (items.length === 0) items.push(h('li', { class: 'hint' }, 'No messages found.'));
    list.replaceChildren(...items);
  } catch (err) {
    list.replaceChildren(h('li', { class: 'error' }, describe(err)));
  }
}

// Opens the channel and scrolls back until the message is loaded, then shows it.
async function jumpTo(channelId, messageId) {
  const channel = channelById(channelId);
  if (!channel) return;
  if (state.view?.channel.id !== channelId) await openChannel(channel);
  const view = state.view;
  for (let i = 0; i < 200 && view && !view.messages.has(messageId) && view.hasMore; i += 1) {
    if (!(await loadOlder())) await new Promise((r) => setTimeout(r, 50));
  }
  const li = $('#messages').querySelector(`li[data-id="${messageId}"]`);
  if (!li) return;
  li.scrollIntoView({ block: 'center' });
  li.classList.add('highlight');
  li.setAttribute('tabindex', '-1');
  li.focus({ preventScroll: true });
  setTimeout(() => li.classList.remove('highlight'), 4000);
}

// ---- rendering ------------------------------------------------------------------------------

// Live events arrive one task each: render at most once per 16 ms.
function scheduleRender() {
  state.renderTimer ??= setTimeout(() => {
    state.renderTimer = null;
    renderMessages();
  }, 16);
}

function renderMessages() {
  clearTimeout(state.renderTimer);
  state.renderTimer = null;
  const view = state.view;
  const list = $('#messages');
  if (!view) return;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  if ((atBottom || view.stick) && !view.loadingOlder && view.messages.size > KEEP_MESSAGES * 1.5) {
    // A windowed list: keep the DOM small during bursts; scrolling up fetches them again.
    const drop = [...view.messages.keys()].sort(compareIds).slice(0, view.messages.size - KEEP_MESSAGES);
    for (const id of drop) view.messages.delete(id);
    view.hasMore = true;
  }
  const items = [];
  if (!view.busy && !view.hasMore) {
    // A channel older than the archive boundary may have had older messages archived.
    const archived = state.api.archivedBefore && compareIds(view.channel.id, state.api.archivedBefore) < 0;
    view.startNode ??= h('li', { class: 'system' }, archived
      ? `Older messages of ${channelTitle(view.channel)} are archived by this relay.`
      : `This is the start of ${channelTitle(view.channel)}.`);
    items.push(view.startNode);
  }
  const ids = [...view.messages.keys()].sort(compareIds);
  let prev = null;
  const seen = new Set();
  for (const id of ids) {
    const m = view.messages.get(id);
    const unreadStart = view.lastRead !== null && !view.dividerAt && m.author !== state.me?.id && compareIds(id, view.lastRead) > 0;
    if (unreadStart) view.dividerAt = id;
    if (view.dividerAt === id) {
      view.dividerNode ??= h('li', { class: 'divider', role: 'separator', 'aria-label': 'New messages' }, 'New');
      items.push(view.dividerNode);
    }
    const grouped = Boolean(prev && prev.author === m.author && m.created_at - prev.created_at < 5 * 60_000);
    items.push(messageNode(view, m, grouped));
    seen.add(id);
    prev = m;
  }
  for (const id of view.nodes.keys()) if (!seen.has(id)) view.nodes.delete(id);
  for (const [nonce, p] of state.outbox) {
    if (p.channelId !== view.channel.id) continue;
    const status = { sending: 'sending…', waiting: 'waiting for the connection…', failed: `not sent: ${p.error}` }[p.status];
    const retry = p.status === 'failed' ? h('button', { type: 'button', class: 'link', onclick: () => deliver(nonce) }, 'Retry') : '';
    items.push(h('li', { class: `message ${p.status === 'failed' ? 'failed' : 'pending'}`, 'data-nonce': nonce },
      h('div', { class: 'meta' }, h('span', { class: 'author' }, state.me?.username ?? ''), h('span', { class: 'time' }, status), retry),
      h('p', { class: 'content' }, p.content)));
  }
  reconcile(list, items);
  if (atBottom || view.stick) {
    view.stick = false;
    scrollToBottom();
  }
}

// One message's <li>, reused while nothing it shows has changed (keeps focus and selection).
function messageNode(view, m, grouped) {
  const editing = view.editing?.id === m.id;
  const reacted = (m.reactions ?? []).map((r) => view.mine.has(`${m.id} ${r.emoji}`)).join();
  const perms = m.guild_id ? guildPerms(state.guilds.get(m.guild_id)) : 0;
  const replied = m.reply_to ? view.messages.has(m.reply_to) : '';
  const key = [grouped, editing, view.confirmDelete === m.id, reacted, state.names, perms, replied].join('|');
  const cached = view.nodes.get(m.id);
  if (cached && cached.m === m && cached.key === key) return cached.li;
  const li = buildMessage(view, m, grouped, editing);
  view.nodes.set(m.id, { m, key, li });
  return li;
}

function buildMessage(view, m, grouped, editing) {
  const mine = m.author === state.me?.id;
  const name = username(m.author);
  const time = h('time', { class: 'time', datetime: new Date(m.created_at).toISOString() }, formatTime(m.created_at));
  const meta = h('div', { class: 'meta' }, h('span', { class: 'author' }, name), time);
  if (m.edited_at) meta.append(h('span', { class: 'edited' }, '(edited)'));
  const li = h('li', { class: grouped && !m.reply_to ? 'message grouped' : 'message', 'data-id': m.id });
  if (m.reply_to) {
    const orig = view.messages.get(m.reply_to);
    const text = orig ? `↪ ${username(orig.author)}: ${orig.content.slice(0, 120)}` : '↪ an earlier message';
    li.append(h('p', { class: 'reply' }, text));
  }
  li.append(meta);
  if (m.mentions?.includes(state.me?.id)) li.classList.add('mention');
  if (editing) {
    const area = h('textarea', { class: 'edit-input', 'aria-label': 'Edit message', maxlength: '4000', rows: '2' });
    area.value = view.editing.draft;
    area.addEventListener('input', () => {
      view.editing.draft = area.value;
    });
    area.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        editMessage(view, m.id, area.value.trim());
      } else if (ev.key === 'Escape') {
        view.editing = null;
        renderMessages();
      }
    });
    const form = h('form', { class: 'edit' }, area,
      h('div', { class: 'actions' },
        h('button', { type: 'button', onclick: () => { view.editing = null; renderMessages(); } }, 'Cancel'),
        h('button', { type: 'submit' }, 'Save')));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      editMessage(view, m.id, area.value.trim());
    });
    li.append(form);
    queueMicrotask(() => area.focus());
  } else {
    li.append(h('p', { class: 'content' }, ...contentNodes(m.content)));
  }
  if (m.reactions?.length) {
    li.append(h('ul', { class: 'reactions', 'aria-label': 'Reactions' }, ...m.reactions.map((r) => h('li', {},
      h('button', {
        type: 'button',
        'aria-pressed': view.mine.has(`${m.id} ${r.emoji}`) ? 'true' : 'false',
        'aria-label': `${r.emoji} ${r.count}`,
        onclick: () => toggleReaction(view, m.id, r.emoji),
      }, `${r.emoji} ${r.count}`)))));
  }
  const actions = [
    h('button', { type: 'button', 'aria-label': `React with ${QUICK_REACTION}`, onclick: () => toggleReaction(view, m.id, QUICK_REACTION) }, QUICK_REACTION),
    h('button', { type: 'button', onclick: () => setReply(m) }, 'Reply'),
  ];
  if (mine) actions.push(h('button', { type: 'button', onclick: () => { view.editing = { id: m.id, draft: m.content }; renderMessages(); } }, 'Edit'));
  if (!mine && m.guild_id) {
    actions.push(h('button', { type: 'button', onclick: () => openReport({ channel_id: m.channel_id, message_id: m.id }, `A message by ${name}`) }, 'Report'));
  }
  if (mine || can(state.guilds.get(m.guild_id), PERM.MANAGE_MESSAGES)) {
    if (view.confirmDelete === m.id) {
      actions.push(h('button', { type: 'button', class: 'danger', onclick: () => deleteMessage(view, m.id) }, 'Confirm delete'));
    } else {
      actions.push(h('button', { type: 'button', onclick: () => { view.confirmDelete = m.id; renderMessages(); } }, 'Delete'));
    }
  }
  if (!editing) li.append(h('div', { class: 'message-actions', role: 'group', 'aria-label': 'Message actions' }, ...actions));
  return li;
}

// Text with `<@id>` mentions shown as @name (both as text nodes).
function contentNodes(content) {
  const out = [];
  const re = /<@(\d{1,20})>/g;
  let at = 0;
  for (const match of content.matchAll(re)) {
    if (match.index > at) out.push(content.slice(at, match.index));
    // Only names already known: a mention may name anyone (or no one), so no lookup.
    out.push(h('span', { class: 'mention-chip' }, `@${state.users.get(match[1]) ?? 'unknown user'}`));
    at = match.index + match[0].length;
  }
  if (at < content.length) out.push(content.slice(at));
  return out;
}

function scrollToBottom() {
  const list = $('#messages');
  list.scrollTop = list.scrollHeight;
}

function onTyping(d) {
  if (!state.view || d.channel_id !== state.view.channel.id || d.user_id === state.me?.id) return;
  clearTimeout(state.typing.get(d.user_id));
  state.typing.set(d.user_id, setTimeout(() => clearTyping(d.user_id), TYPING_SHOW_MS));
  renderTyping();
}

function clearTyping(userId) {
  if (!state.typing.has(userId)) return;
  clearTimeout(state.typing.get(userId));
  state.typing.delete(userId);
  renderTyping();
}

function renderTyping() {
  const names = [...state.typing.keys()].map(username);
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = 'Several people are typing…';
  setText($('#typing'), text);
}

boot().catch((err) => fatal(`Concord could not start: ${describe(err)}`));
