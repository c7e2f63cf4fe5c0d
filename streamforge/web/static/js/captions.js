// The watch page's caption tracks for the owner: add or replace a language from a WebVTT or SRT
// file, remove one. The server validates and rewrites the master; the page reloads to play it.
import { api } from './api.js'

const editor = document.getElementById('captions-editor')
const MAX_BYTES = 1024 * 1024

function showError (message) {
  const box = editor.querySelector('[data-role=caption-error]')
  box.textContent = message
  box.hidden = !message
}

async function addTrack (event) {
  event.preventDefault()
  const form = event.target
  const file = form.elements.file.files[0]
  if (!file) return showError('Choose a WebVTT or SRT file.')
  if (file.size > MAX_BYTES) return showError('The file is larger than 1 MiB.')
  const button = form.querySelector('button[type=submit]')
  button.disabled = true
  showError('')
  try {
    const content = await file.text()
    await api('POST', `/api/videos/${editor.dataset.videoId}/captions`, {
      language: form.elements.language.value.trim(),
      label: form.elements.label.value.trim() || undefined,
      content
    })
    sessionStorage.setItem('streamforge-open-captions', '1')
    window.location.reload()
  } catch (err) {
    showError(err.message)
    button.disabled = false
  }
}

async function removeTrack (event) {
  const button = event.target.closest('[data-action=delete-caption]')
  if (!button) return
  button.disabled = true
  try {
    await api('DELETE', `/api/videos/${editor.dataset.videoId}/captions/${encodeURIComponent(button.dataset.language)}`)
    sessionStorage.setItem('streamforge-open-captions', '1')
    window.location.reload()
  } catch (err) {
    showError(err.message)
    button.disabled = false
  }
}

if (editor) {
  if (sessionStorage.getItem('streamforge-open-captions')) {
    sessionStorage.removeItem('streamforge-open-captions')
    editor.open = true
  }
  editor.querySelector('#caption-form').addEventListener('submit', addTrack)
  editor.querySelector('#caption-list').addEventListener('click', removeTrack)
}
