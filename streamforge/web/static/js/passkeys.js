// Passkeys: "Sign in with a passkey" on the login page, "Add a passkey" and the list on /account.
// The server speaks WebAuthn's JSON forms (py_webauthn's options_to_json, PublicKeyCredential.toJSON);
// browsers without the JSON helpers get the same conversion by hand.
import { api, toast } from './api.js'

const b64 = {
  decode (text) {
    const s = text.replace(/-/g, '+').replace(/_/g, '/')
    const bin = atob(s + '='.repeat((4 - (s.length % 4)) % 4))
    return Uint8Array.from(bin, (c) => c.charCodeAt(0)).buffer
  },
  encode (buffer) {
    let bin = ''
    for (const byte of new Uint8Array(buffer)) bin += String.fromCharCode(byte)
    return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
  }
}

function creationOptions (json) {
  if (PublicKeyCredential.parseCreationOptionsFromJSON) return PublicKeyCredential.parseCreationOptionsFromJSON(json)
  return {
    ...json,
    challenge: b64.decode(json.challenge),
    user: { ...json.user, id: b64.decode(json.user.id) },
    excludeCredentials: (json.excludeCredentials || []).map((c) => ({ ...c, id: b64.decode(c.id) }))
  }
}

function requestOptions (json) {
  if (PublicKeyCredential.parseRequestOptionsFromJSON) return PublicKeyCredential.parseRequestOptionsFromJSON(json)
  return {
    ...json,
    challenge: b64.decode(json.challenge),
    allowCredentials: (json.allowCredentials || []).map((c) => ({ ...c, id: b64.decode(c.id) }))
  }
}

function credentialJSON (cred) {
  if (cred.toJSON) return cred.toJSON()
  const r = cred.response
  const response = { clientDataJSON: b64.encode(r.clientDataJSON) }
  for (const name of ['attestationObject', 'authenticatorData', 'signature', 'userHandle']) {
    if (r[name]) response[name] = b64.encode(r[name])
  }
  if (r.getTransports) response.transports = r.getTransports()
  return { id: cred.id, rawId: b64.encode(cred.rawId), type: cred.type, response, clientExtensionResults: {} }
}

function say (box, message) {
  if (!box) return
  box.textContent = message
  box.hidden = !message
}

// WebAuthn needs a secure context and a domain: an app reached at an IP address cannot use passkeys
const byAddress = /^[0-9.]+$/.test(location.hostname) || location.hostname.includes(':') ||
  location.hostname.startsWith('[')
const supported = typeof window.PublicKeyCredential === 'function' && !byAddress

// ---------- the login page ----------
// (not api(): a refused passkey answers 401 with its reason, which api() words as an ended session)
async function signInCall (path, body) {
  const res = await fetch(path, {
    method: 'POST',
    credentials: 'same-origin',
    headers: {
      Accept: 'application/json',
      'Content-Type': 'application/json',
      'X-CSRF-Token': document.querySelector('meta[name="csrf-token"]')?.content || ''
    },
    body: JSON.stringify(body)
  })
  const data = await res.json().catch(() => null)
  if (!res.ok) throw new Error(data?.error?.message || `the server answered ${res.status}`)
  return data
}

const signInButton = document.getElementById('passkey-button')
if (signInButton && supported) {
  signInButton.hidden = false
  signInButton.addEventListener('click', async () => {
    const box = document.getElementById('passkey-error')
    say(box, '')
    signInButton.disabled = true
    try {
      const options = await signInCall('/login/passkey/options', {})
      const cred = await navigator.credentials.get({ publicKey: requestOptions(options) })
      const form = document.getElementById('password-form')
      const done = await signInCall('/login/passkey', {
        credential: credentialJSON(cred),
        remember: !!document.getElementById('login-remember')?.checked,
        next: form?.elements.next?.value || ''
      })
      window.location.assign(done.redirect)
    } catch (err) {
      say(box, err.name === 'NotAllowedError' ? 'The passkey sign-in was cancelled or timed out.' : err.message)
    } finally {
      signInButton.disabled = false
    }
  })
}

// ---------- the account page ----------
const list = document.getElementById('passkey-list')

function row (key) {
  const li = document.createElement('li')
  li.dataset.passkeyId = key.id
  const label = document.createElement('span')
  label.textContent = `${key.name} · added ${key.created_at.slice(0, 10)}` +
    (key.last_used_at ? ` · last used ${key.last_used_at.slice(0, 10)}` : '')
  const remove = document.createElement('button')
  remove.type = 'button'
  remove.className = 'button button-ghost button-small'
  remove.dataset.action = 'remove'
  remove.textContent = 'Remove'
  li.append(label, ' ', remove)
  return li
}

if (list) {
  const box = document.getElementById('passkey-error')
  api('GET', '/api/me/passkeys').then((data) => {
    list.replaceChildren(...data.items.map(row))
    list.dataset.loaded = 'true'
  }).catch((err) => say(box, err.message))
  list.addEventListener('click', async (event) => {
    const button = event.target.closest('button[data-action=remove]')
    if (!button) return
    const li = button.closest('li')
    try {
      await api('DELETE', `/api/me/passkeys/${li.dataset.passkeyId}`)
      li.remove()
      toast('Passkey removed')
    } catch (err) {
      say(box, err.message)
    }
  })
  const form = document.getElementById('passkey-form')
  if (!supported) {
    say(box, byAddress ? 'Passkeys need this server opened by its name (such as localhost), not an IP address.'
      : 'This browser cannot use passkeys here (they need HTTPS, or localhost).')
    form.hidden = true
  }
  form?.addEventListener('submit', async (event) => {
    event.preventDefault()
    say(box, '')
    try {
      const options = await api('POST', '/api/me/passkeys/options', {})
      const cred = await navigator.credentials.create({ publicKey: creationOptions(options) })
      const key = await api('POST', '/api/me/passkeys', {
        credential: credentialJSON(cred), name: form.elements.name.value.trim()
      })
      list.append(row(key))
      form.reset()
      toast('Passkey added')
    } catch (err) {
      say(box, err.name === 'NotAllowedError' ? 'Adding the passkey was cancelled or timed out.' : err.message)
    }
  })
}
