// DOM helpers. Text goes in as text nodes only: nothing here parses HTML.

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
