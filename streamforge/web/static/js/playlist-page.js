// The playlist pages: /playlists makes a new playlist; on /playlists/{slug} its owner moves videos up
// and down, removes them, edits the title, description and visibility, or deletes the playlist.
import { api } from './api.js'

function showError (form, message) {
  const box = form.querySelector('[data-role=form-error]')
  box.textContent = message
  box.hidden = !message
}

async function createPlaylist (event) {
  event.preventDefault()
  const form = event.target
  try {
    const playlist = await api('POST', '/api/playlists', {
      title: form.elements.title.value.trim(), visibility: form.elements.visibility.value
    })
    location.assign(`/playlists/${encodeURIComponent(playlist.slug)}`)
  } catch (err) {
    showError(form, err.message)
  }
}

function wireItems (playlist) {
  const list = document.getElementById('playlist-items')
  if (!list) return
  list.addEventListener('click', async (event) => {
    const button = event.target.closest('button[data-action]')
    if (!button) return
    const item = button.closest('[data-video-id]')
    const videoId = item.dataset.videoId
    const index = [...list.children].indexOf(item)
    button.disabled = true
    try {
      if (button.dataset.action === 'remove') {
        await api('DELETE', `/api/playlists/${playlist.id}/items/${encodeURIComponent(videoId)}`)
      } else {
        const position = button.dataset.action === 'up' ? index - 1 : index + 1
        await api('POST', `/api/playlists/${playlist.id}/items`, { video_id: videoId, position })
      }
      location.reload()
    } catch (err) {
      button.disabled = false
      alert(err.message)
    }
  })
}

function wireEdit (playlist) {
  const form = document.querySelector('#playlist-edit form')
  if (!form) return
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    try {
      await api('PATCH', `/api/playlists/${playlist.id}`, {
        title: form.elements.title.value.trim(),
        description: form.elements.description.value,
        visibility: form.elements.visibility.value
      })
      location.reload()
    } catch (err) {
      showError(form, err.message)
    }
  })
  form.querySelector('[data-action=delete-playlist]').addEventListener('click', async () => {
    if (!confirm('Delete this playlist? Its videos stay.')) return
    try {
      await api('DELETE', `/api/playlists/${playlist.id}`)
      location.assign('/playlists')
    } catch (err) {
      showError(form, err.message)
    }
  })
}

document.getElementById('new-playlist')?.addEventListener('submit', createPlaylist)
const dataNode = document.getElementById('playlist-data')
if (dataNode) {
  const playlist = JSON.parse(dataNode.textContent)
  if (playlist.owner) {
    wireItems(playlist)
    wireEdit(playlist)
  }
}
