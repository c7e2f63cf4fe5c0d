// The API tokens page: create (the secret is shown once), list, revoke.
import { api, toast } from './api.js'

const form = document.getElementById('token-form')
const errorBox = document.getElementById('token-error')
const fresh = document.getElementById('new-token')
const freshValue = document.getElementById('new-token-value')
const copyButton = document.getElementById('copy-token')
const table = document.getElementById('tokens-table')
const body = document.getElementById('tokens-body')
const empty = document.getElementById('tokens-empty')

function showError (message) {
  errorBox.textContent = message
  errorBox.hidden = !message
}

function syncEmpty () {
  const any = body.children.length > 0
  table.hidden = !any
  empty.hidden = any
}

function cell (text, tag = 'td') {
  const el = document.createElement(tag)
  el.textContent = text
  return el
}

function addRow (t) {
  const tr = document.createElement('tr')
  tr.dataset.tokenId = t.id
  const prefix = document.createElement('td')
  const code = document.createElement('code')
  code.textContent = `${t.prefix}…`
  prefix.append(code)
  const revoke = document.createElement('button')
  revoke.type = 'button'
  revoke.className = 'button button-small button-ghost button-danger'
  revoke.dataset.action = 'revoke'
  revoke.textContent = 'Revoke'
  revoke.setAttribute('aria-label', `Revoke ${t.name || t.prefix}`)
  const actions = document.createElement('td')
  actions.append(revoke)
  tr.append(cell(t.name || '(unnamed)'), prefix, cell('just now'), cell('never'), actions)
  body.prepend(tr)
  syncEmpty()
}

form.addEventListener('submit', async (event) => {
  event.preventDefault()
  showError('')
  const button = form.querySelector('button[type=submit]')
  button.disabled = true
  try {
    const t = await api('POST', '/api/tokens', { name: form.elements.name.value.trim() })
    freshValue.value = t.token
    fresh.hidden = false
    freshValue.focus()
    freshValue.select()
    form.reset()
    addRow(t)
  } catch (err) {
    showError(err.message)
  } finally {
    button.disabled = false
  }
})

copyButton.addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText(freshValue.value)
    toast('Token copied to the clipboard.')
  } catch {
    freshValue.select()
    toast('Press Ctrl+C (or ⌘C) to copy the selected token.')
  }
})

body.addEventListener('click', async (event) => {
  const button = event.target.closest('button[data-action=revoke]')
  if (!button) return
  const row = button.closest('tr')
  const name = row.cells[0].textContent
  if (!window.confirm(`Revoke the token "${name}"? Scripts using it will stop working.`)) return
  button.disabled = true
  try {
    await api('DELETE', `/api/tokens/${encodeURIComponent(row.dataset.tokenId)}`)
    row.remove()
    syncEmpty()
    toast('Token revoked.')
  } catch (err) {
    toast(err.message, { kind: 'error' })
    button.disabled = false
  }
})
