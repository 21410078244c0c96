// DOM helpers. Text goes in as text nodes only: nothing here parses HTML. `h` builds
// elements, `reconcile` updates a list in place, search highlights become text + <mark>.

export function $(selector) {
  const el = document.querySelector(selector);
  if (!el) throw new Error(`missing element ${selector}`);
  return el;
}

// h('button', {type: 'button', onclick: f, 'aria-label': 'x'}, 'text', childEl)
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === false || value === null || value === undefined) continue;
    if (key === 'class') el.className = value;
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === '' || child === null || child === undefined) continue;
    el.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return el;
}

export function show(target, visible) {
  const el = typeof target === 'string' ? $(target) : target;
  el.hidden = !visible;
}

export function setText(el, text) {
  el.textContent = text;
}

// Ids are 64-bit decimal strings: compare them as numbers without losing precision.
export function compareIds(a, b) {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

export function formatTime(ms) {
  const d = new Date(ms);
  return new Date().toDateString() === d.toDateString() ? timeFormat.format(d) : dateFormat.format(d);
}

// Makes `parent`'s children exactly `nodes`, moving only what is out of place (a node that
// stays where it is keeps its focus, selection and scroll anchoring).
export function reconcile(parent, nodes) {
  let i = 0;
  for (const node of nodes) {
    const at = parent.children[i] ?? null;
    if (at !== node) parent.insertBefore(node, at);
    i += 1;
  }
  while (parent.children.length > nodes.length) parent.lastElementChild.remove();
}

const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'" };

// A search highlight from the relay (HTML-escaped text with <mark>…</mark>) as nodes: text
// nodes and <mark> elements only; nothing else in it is interpreted.
export function highlightNodes(escaped) {
  const out = [];
  let marked = false;
  for (const part of escaped.split(/(<mark>|<\/mark>)/)) {
    if (part === '<mark>') marked = true;
    else if (part === '</mark>') marked = false;
    else if (part) {
      const text = part.replace(/&(amp|lt|gt|quot|#39);/g, (_, e) => ENTITIES[e]);
      out.push(marked ? h('mark', {}, text) : text);
    }
  }
  return out;
}
