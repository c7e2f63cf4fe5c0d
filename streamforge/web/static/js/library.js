// The library: the server renders the cards; this module keeps the ones still uploading or
// processing up to date (one GET /api/videos per tick for the whole page), and wires the
// reprocess, edit and delete buttons.
import { api, formatDuration, parseTags, statusClass, statusLabel, toast } from './api.js'

const grid = document.getElementById('library')
const editDialog = document.getElementById('edit-dialog')
const editForm = document.getElementById('edit-form')
const deleteDialog = document.getElementById('delete-dialog')

function cardOf (id) {
  return grid?.querySelector(`[data-video-id="${CSS.escape(id)}"]`)
}

function part (card, role) {
  return card.querySelector(`[data-role="${role}"]`)
}

/** Bring a card in line with a fresh VIDEO. */
function updateCard (card, v) {
  card.dataset.status = v.status
  card.dataset.uploadStatus = v.upload_status
  const badge = part(card, 'badge')
  badge.textContent = statusLabel(v)
  badge.className = `badge ${statusClass(v)}`
  const title = part(card, 'title')
  if (title.textContent !== v.title) title.textContent = v.title
  part(card, 'visibility').textContent = v.visibility.charAt(0).toUpperCase() + v.visibility.slice(1)

  const progress = part(card, 'progress')
  const bar = progress.querySelector('progress')
  const text = part(card, 'progress-text')
  const active = v.status === 'PENDING' || v.status === 'PROCESSING'
  progress.hidden = !active
  if (v.status === 'PROCESSING') {
    const pct = (v.progress || 0) * 100
    bar.value = Math.max(0.5, pct)
    text.textContent = `${Math.round(pct)}%`
  } else {
    bar.removeAttribute('value')
    text.textContent = ''
  }

  const uploadHint = part(card, 'upload-hint')
  if (uploadHint) uploadHint.hidden = !(v.upload_status === 'UPLOADING' && v.status === 'PENDING')
  const error = part(card, 'error')
  error.hidden = !(v.status === 'FAILED' && v.error_message)
  error.textContent = v.error_message || ''
  card.querySelector('[data-action=reprocess]').hidden = v.status !== 'FAILED'

  const duration = part(card, 'duration')
  const d = formatDuration(v.original?.duration)
  duration.textContent = d
  duration.hidden = !d

  if (v.cover_url) {
    const img = part(card, 'cover')
    if (img) {
      if (img.getAttribute('src') !== v.cover_url) img.src = v.cover_url
    } else {
      const placeholder = part(card, 'cover-placeholder')
      const fresh = document.createElement('img')
      fresh.src = v.cover_url
      fresh.alt = ''
      fresh.dataset.role = 'cover'
      placeholder?.replaceWith(fresh)
    }
  }
}

// ---------- live updates ----------

let timer = null

function activeCards () {
  return [...(grid?.querySelectorAll('.video-card') || [])]
    .filter((c) => c.dataset.status === 'PENDING' || c.dataset.status === 'PROCESSING')
}

async function refresh () {
  timer = null
  if (!activeCards().length) return
  try {
    const page = grid.dataset.page || '1'
    const perPage = grid.dataset.perPage || '24'
    const answer = await api('GET', `/api/videos?page=${encodeURIComponent(page)}&per_page=${encodeURIComponent(perPage)}`)
    for (const v of answer.items) {
      const card = cardOf(v.id)
      if (card) updateCard(card, v)
    }
  } catch (err) {
    if (err.status === 401) {
      toast(err.message, { kind: 'error' })
      return
    }
  }
  schedule()
}

function schedule () {
  if (timer || !activeCards().length) return
  timer = setTimeout(refresh, document.hidden ? 10000 : 2000)
}

document.addEventListener('visibilitychange', () => {
  if (!document.hidden && timer) {
    clearTimeout(timer)
    timer = null
    refresh()
  }
})

// ---------- actions ----------

let editing = null
let deleting = null

async function onAction (event) {
  const button = event.target.closest('button[data-action]')
  if (!button || !grid.contains(button)) return
  const card = button.closest('.video-card')
  const id = card.dataset.videoId
  const action = button.dataset.action
  if (action === 'reprocess') {
    button.disabled = true
    try {
      updateCard(card, await api('POST', `/api/videos/${encodeURIComponent(id)}/reprocess`))
      toast('Processing again.')
      schedule()
    } catch (err) {
      toast(err.message, { kind: 'error' })
    } finally {
      button.disabled = false
    }
  } else if (action === 'edit') {
    button.disabled = true
    try {
      const v = await api('GET', `/api/videos/${encodeURIComponent(id)}`)
      editing = { id, card, opener: button }
      const f = editForm.elements
      f.title.value = v.title
      f.description.value = v.description || ''
      f.tags.value = (v.tags || []).join(', ')
      f.visibility.value = v.visibility
      part(editForm, 'form-error').hidden = true
      editDialog.showModal()
      f.title.focus()
    } catch (err) {
      toast(err.message, { kind: 'error' })
    } finally {
      button.disabled = false
    }
  } else if (action === 'delete') {
    deleting = { id, card, opener: button }
    part(deleteDialog, 'delete-name').textContent = part(card, 'title').textContent
    deleteDialog.showModal()
  }
}

editForm?.addEventListener('submit', async (event) => {
  event.preventDefault()
  if (!editing) return
  const f = editForm.elements
  const save = editForm.querySelector('button[type=submit]')
  save.disabled = true
  try {
    const v = await api('PATCH', `/api/videos/${encodeURIComponent(editing.id)}`, {
      title: f.title.value.trim(),
      description: f.description.value.trim(),
      tags: parseTags(f.tags.value),
      visibility: f.visibility.value
    })
    updateCard(editing.card, v)
    editDialog.close()
    toast('Saved.')
  } catch (err) {
    const box = part(editForm, 'form-error')
    box.textContent = err.message
    box.hidden = false
  } finally {
    save.disabled = false
  }
})

deleteDialog?.querySelector('form').addEventListener('submit', async (event) => {
  event.preventDefault()
  if (!deleting) return
  const { id, card } = deleting
  const button = deleteDialog.querySelector('button[type=submit]')
  button.disabled = true
  try {
    await api('DELETE', `/api/videos/${encodeURIComponent(id)}`)
    deleteDialog.close()
    const next = card.nextElementSibling || card.previousElementSibling
    card.remove()
    toast('Video deleted.')
    next?.querySelector('.card-title a')?.focus()
    if (!grid.querySelector('.video-card')) location.reload()
  } catch (err) {
    toast(err.message, { kind: 'error' })
  } finally {
    button.disabled = false
  }
})

for (const dialog of [editDialog, deleteDialog]) {
  dialog?.addEventListener('click', (event) => {
    if (event.target.closest('[data-action=close]')) dialog.close()
  })
  dialog?.addEventListener('close', () => {
    const state = dialog === editDialog ? editing : deleting
    state?.opener?.isConnected && state.opener.focus()
    if (dialog === editDialog) editing = null
    else deleting = null
  })
}

grid?.addEventListener('click', onAction)
schedule()
