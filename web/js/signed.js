// The signed byte formats of docs/protocols/signed-formats.md, byte for byte, and the
// WebCrypto Ed25519 keys that sign them (non-extractable private keys).

import { b64u } from './b64.js';

const utf8 = new TextEncoder();

export function certificateBytes(accountKey, deviceKey, label, createdAt) {
  return utf8.encode(`concord-device-v1\n${accountKey}\n${deviceKey}\n${label}\n${createdAt}`);
}

export function loginBytes(audience, challenge) {
  return utf8.encode(`concord-auth-v1\n${audience}\n${challenge}`);
}

export async function sign(privateKey, bytes) {
  return b64u(await crypto.subtle.sign({ name: 'Ed25519' }, privateKey, bytes));
}

// A new key pair whose private half can never be exported.
export async function newKeyPair() {
  const pair = await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
  const raw = await crypto.subtle.exportKey('raw', pair.publicKey);
  return { privateKey: pair.privateKey, publicKey: pair.publicKey, public: b64u(raw) };
}

// The account key's certificate for a device key (label: ≤ 100 chars, no newline).
export async function signCertificate(account, deviceKey, label, createdAt) {
  const clean = label.replace(/[\r\n]/g, ' ').slice(0, 100);
  const signature = await sign(account.privateKey, certificateBytes(account.public, deviceKey, clean, createdAt));
  return { account_key: account.public, device_key: deviceKey, label: clean, created_at: createdAt, signature };
}

// A label for this browser's device certificate, e.g. "Chrome on Linux".
export function deviceLabel() {
  const ua = navigator.userAgent;
  const browser = /Firefox\//.test(ua) ? 'Firefox' : /Edg\//.test(ua) ? 'Edge' : /Chrom/.test(ua) ? 'Chromium' : /Safari\//.test(ua) ? 'Safari' : 'Browser';
  const os = /Android/.test(ua) ? 'Android' : /iPhone|iPad/.test(ua) ? 'iOS' : /Windows/.test(ua) ? 'Windows' : /Mac OS/.test(ua) ? 'macOS' : /Linux/.test(ua) ? 'Linux' : 'web';
  return `${browser} on ${os}`;
}
