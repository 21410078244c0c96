// Concord web client: boot, account creation/login, guilds, channels, messages.
// User content is only ever put into the page with textContent (never as HTML).

import { Api, ApiError } from './api.js';
import { Gateway } from './gateway.js';
import { kv } from './store.js';
import { deviceLabel, newKeyPair, signCertificate } from './signed.js';
import { $, h, show, setText, compareIds, formatTime } from './dom.js';

const PAGE = 50;
const TYPING_SEND_MS = 5_000;
const TYPING_SHOW_MS = 10_000;

const state = {
  device: null,
  account: null,
  api: null,
  gateway: null,
  me: null,
  guilds: new Map(), // id → ReadyGuild
  dms: new Map(),
  users: new Map(), // id → username
  userFetches: new Map(),
  guildId: null,
  view: null, // the open channel, see openChannel
  inviteCode: null,
  pendingGuild: null,
  typing: new Map(), // user id → timeout
  lastTypingSent: 0,
};

// ---- boot ---------------------------------------------------------------------------------

async function boot() {
  const invite = location.pathname.match(/^\/invite\/([A-Za-z0-9_-]{1,32})$/);
  state.inviteCode = invite ? invite[1] : null;
  if (!window.isSecureContext || !crypto.subtle) {
    fatal('Concord needs a secure context (https://, or http://localhost).');
    return;
  }
  state.device = await ensureDevice();
  state.account = (await kv.get('account')) ?? null;
  state.api = new Api(state.device);
  state.api.onLoggedOut = () => showWelcome();
  setText($('#device-key'), state.device.public);
  wireWelcome();
  wireApp();
  const user = await kv.get('user');
  const session = await kv.get('session');
  if (user && session) {
    state.api.session = session;
    startApp();
  } else {
    showWelcome(user);
  }
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
      await state.api.login({ certificate: cert, username });
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
      network: 'The relay cannot be reached.',
      rate_limited: 'Too many attempts; wait a moment.',
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
  banner('Connecting…');
  state.gateway?.stop();
  state.gateway = new Gateway(state.api, {
    ready: onReady,
    resumed: () => banner(null),
    event: onEvent,
    state: (s) => {
      if (s === 'connected') banner(null);
      else if (s === 'reconnecting') banner('Connection lost. Reconnecting…');
      else if (s === 'logged_out') showWelcome(state.me);
    },
  });
  state.gateway.start();
}

function banner(text) {
  const el = $('#banner');
  setText(el, text ?? '');
  show(el, Boolean(text));
}

function wireApp() {
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
    if (!state.guildId) return;
    try {
      const invite = await state.api.call('POST', `/api/v1/guilds/${state.guildId}/invites`, {});
      $('#invite-link').value = `${location.origin}/invite/${invite.code}`;
      $('#invite-dialog').showModal();
      $('#invite-link').select();
    } catch (err) {
      banner(describe(err));
    }
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
    }
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
}

function forgetInvite() {
  state.inviteCode = null;
  if (location.pathname !== '/') history.replaceState(null, '', '/');
}

// ---- gateway state --------------------------------------------------------------------------

function onReady(d) {
  state.me = d.user;
  state.users.set(d.user.id, d.user.username);
  setText($('#me-name'), d.user.username);
  state.guilds.clear();
  for (const g of d.guilds) state.guilds.set(g.id, g);
  state.dms.clear();
  for (const c of d.dms) state.dms.set(c.id, c);
  const keep = state.guildId && state.guilds.has(state.guildId) ? state.guildId : d.guilds[0]?.id ?? null;
  renderGuilds();
  if (keep && keep === state.guildId && state.view) {
    renderChannels();
    catchUp(state.view); // a new session: fetch whatever happened meanwhile
  } else {
    selectGuild(keep);
  }
  if (state.inviteCode) offerInvite();
}

async function offerInvite() {
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

function onEvent(t, d) {
  switch (t) {
    case 'message_create':
    case 'message_update':
    case 'message_delete':
    case 'reaction_add':
    case 'reaction_remove':
      onChannelEvent(t, d);
      break;
    case 'typing_start':
      onTyping(d);
      break;
    case 'guild_create':
      addGuild(d);
      if (!state.guildId) selectGuild(d.id);
      break;
    case 'guild_update': {
      const g = state.guilds.get(d.id);
      if (g) addGuild({ ...g, ...d });
      break;
    }
    case 'guild_delete':
      state.guilds.delete(d.id);
      renderGuilds();
      if (state.guildId === d.id) selectGuild(state.guilds.keys().next().value ?? null);
      break;
    case 'channel_create':
    case 'channel_update': {
      if (!d.guild_id) {
        state.dms.set(d.id, d);
        break;
      }
      const g = state.guilds.get(d.guild_id);
      if (!g) break;
      g.channels = g.channels.filter((c) => c.id !== d.id).concat([d]);
      if (g.id === state.guildId) renderChannels();
      break;
    }
    case 'channel_delete': {
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
    case 'member_update':
      state.users.set(d.user.id, d.user.username);
      break;
    default:
      break;
  }
}

// ---- guilds and channels --------------------------------------------------------------------

function sortedChannels(g) {
  return [...(g?.channels ?? [])].sort((a, b) => a.position - b.position || compareIds(a.id, b.id));
}

function firstTextChannel(g) {
  return sortedChannels(g).find((c) => c.kind === 'text') ?? null;
}

function renderGuilds() {
  const list = $('#guild-list');
  const items = [...state.guilds.values()].sort((a, b) => compareIds(a.id, b.id)).map((g) => {
    const initials = g.name.trim().split(/\s+/).map((w) => w[0]).join('').slice(0, 2) || '?';
    const button = h('button', {
      type: 'button',
      class: 'round',
      title: g.name,
      'aria-label': g.name,
      'aria-current': g.id === state.guildId ? 'true' : false,
      onclick: () => selectGuild(g.id),
    }, initials);
    return h('li', {}, button);
  });
  list.replaceChildren(...items);
}

function selectGuild(id) {
  state.guildId = id;
  renderGuilds();
  const g = id ? state.guilds.get(id) : null;
  setText($('#guild-name'), g ? g.name : 'No guild yet');
  show('#invite-button', Boolean(g));
  if (g) loadMembers(g.id);
  openChannel(firstTextChannel(g));
}

function renderChannels() {
  const g = state.guilds.get(state.guildId);
  const items = sortedChannels(g).map((c) => {
    const label = c.kind === 'voice' ? `🔊 ${c.name}` : `# ${c.name}`;
    const button = h('button', {
      type: 'button',
      'aria-current': state.view?.channel.id === c.id ? 'page' : false,
      disabled: c.kind !== 'text',
      title: c.kind === 'voice' ? 'Voice channels are not in the web client yet' : c.topic ?? '',
      onclick: () => openChannel(c),
    }, label);
    return h('li', {}, button);
  });
  $('#channel-list').replaceChildren(...items);
}

async function loadMembers(guildId) {
  try {
    let after = null;
    for (let i = 0; i < 10; i += 1) {
      const q = after ? `?limit=100&after=${after}` : '?limit=100';
      const page = await state.api.call('GET', `/api/v1/guilds/${guildId}/members${q}`);
      for (const m of page) state.users.set(m.user.id, m.user.username);
      if (page.length < 100) break;
      after = page[page.length - 1].user.id;
    }
    if (state.view) renderMessages();
  } catch {
    // Names fall back to per-user lookups.
  }
}

function username(id) {
  const name = state.users.get(id);
  if (name) return name;
  if (!state.userFetches.has(id)) {
    state.userFetches.set(id, state.api.call('GET', `/api/v1/users/${id}`).then((u) => {
      state.users.set(u.id, u.username);
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
  if (!channel) {
    state.view = null;
    renderChannels();
    setText($('#channel-name'), state.guildId ? 'No text channel' : 'Create or join a guild to start');
    $('#messages').replaceChildren();
    $('#messages').setAttribute('aria-label', 'Messages');
    show('#composer', false);
    return;
  }
  const view = {
    channel,
    messages: new Map(),
    pending: new Map(), // nonce → {content, failed}
    applied: 0,
    busy: true,
    buffered: [],
    hasMore: true,
    loadingOlder: false,
    stick: true,
  };
  state.view = view;
  renderChannels();
  setText($('#channel-name'), `# ${channel.name}`);
  $('#messages').setAttribute('aria-label', `Messages in ${channel.name}`);
  $('#messages').dataset.channel = channel.id;
  $('#composer-input').setAttribute('placeholder', `Message #${channel.name}`);
  show('#composer', true);
  renderMessages();
  try {
    const page = await state.api.call('GET', `/api/v1/channels/${channel.id}/messages?limit=${PAGE}`);
    if (state.view !== view) return;
    for (const m of page) view.messages.set(m.id, m);
    view.hasMore = page.length === PAGE;
    view.applied = page.reduce((max, m) => Math.max(max, m.seq), 0);
    view.busy = false;
    await catchUp(view);
  } catch (err) {
    view.busy = false;
    banner(describe(err));
  }
  if (state.view === view) {
    renderMessages();
    scrollToBottom();
  }
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
    renderMessages();
  } else {
    view.buffered.push({ t, d });
    catchUp(view);
  }
}

async function catchUp(view) {
  if (view.busy && view.catching) return;
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
      if (d.author === state.me?.id) view.pending.delete(d.nonce);
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
  if (!view || !view.hasMore || view.loadingOlder || view.messages.size === 0) return;
  view.loadingOlder = true;
  const oldest = [...view.messages.keys()].sort(compareIds)[0];
  try {
    const page = await state.api.call('GET', `/api/v1/channels/${view.channel.id}/messages?before=${oldest}&limit=${PAGE}`);
    if (state.view !== view) return;
    const list = $('#messages');
    const fromBottom = list.scrollHeight - list.scrollTop;
    for (const m of page) if (!view.messages.has(m.id)) view.messages.set(m.id, m);
    view.hasMore = page.length === PAGE;
    renderMessages();
    list.scrollTop = list.scrollHeight - fromBottom;
  } catch (err) {
    banner(describe(err));
  } finally {
    view.loadingOlder = false;
  }
}

async function sendMessage() {
  const view = state.view;
  const input = $('#composer-input');
  const content = input.value.trim();
  if (!view || !content) return;
  input.value = '';
  state.lastTypingSent = 0;
  const nonce = crypto.randomUUID();
  view.pending.set(nonce, { content, failed: false });
  view.stick = true;
  renderMessages();
  scrollToBottom();
  await deliver(view, nonce);
}

async function deliver(view, nonce) {
  const p = view.pending.get(nonce);
  if (!p) return;
  p.failed = false;
  try {
    const m = await state.api.call('POST', `/api/v1/channels/${view.channel.id}/messages`, { content: p.content, nonce, reply_to: null });
    view.pending.delete(nonce);
    // The gateway delivers the event in seq order; until then show the answer.
    if (!view.messages.has(m.id) && m.seq > view.applied) view.messages.set(m.id, m);
  } catch (err) {
    p.failed = true;
    p.error = describe(err);
  }
  if (state.view === view) renderMessages();
}

// ---- rendering ------------------------------------------------------------------------------

function renderMessages() {
  const view = state.view;
  const list = $('#messages');
  if (!view) return;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const items = [];
  if (!view.busy && !view.hasMore) {
    items.push(h('li', { class: 'system' }, `This is the start of #${view.channel.name}.`));
  }
  const ids = [...view.messages.keys()].sort(compareIds);
  let prev = null;
  for (const id of ids) {
    const m = view.messages.get(id);
    const grouped = prev && prev.author === m.author && m.created_at - prev.created_at < 5 * 60_000;
    items.push(messageItem(m, grouped));
    prev = m;
  }
  for (const [nonce, p] of view.pending) {
    const retry = p.failed
      ? h('button', { type: 'button', class: 'link', onclick: () => deliver(view, nonce) }, 'Retry')
      : '';
    items.push(h('li', { class: p.failed ? 'message failed' : 'message pending', 'data-nonce': nonce },
      h('div', { class: 'meta' }, h('span', { class: 'author' }, state.me?.username ?? ''),
        h('span', { class: 'time' }, p.failed ? `not sent: ${p.error}` : 'sending…'), retry),
      h('p', { class: 'content' }, p.content)));
  }
  list.replaceChildren(...items);
  if (atBottom || view.stick) {
    view.stick = false;
    scrollToBottom();
  }
}

function messageItem(m, grouped) {
  const time = h('time', { class: 'time', datetime: new Date(m.created_at).toISOString() }, formatTime(m.created_at));
  const meta = h('div', { class: 'meta' }, h('span', { class: 'author' }, username(m.author)), time);
  if (m.edited_at) meta.append(h('span', { class: 'edited' }, '(edited)'));
  const body = h('p', { class: 'content' }, m.content);
  const li = h('li', { class: grouped ? 'message grouped' : 'message', 'data-id': m.id }, meta, body);
  if (m.mentions?.includes(state.me?.id)) li.classList.add('mention');
  if (m.reactions?.length) {
    li.append(h('ul', { class: 'reactions', 'aria-label': 'Reactions' },
      ...m.reactions.map((r) => h('li', {}, `${r.emoji} ${r.count}`))));
  }
  return li;
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
