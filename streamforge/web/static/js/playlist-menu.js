// "Add to playlist" on the watch page: the viewer's playlists as checkboxes (ticked where this video
// is in), a tick adds it at the end, an untick takes it out; a new playlist can be made on the spot.
import { api } from './api.js'

const menu = document.getElementById('add-to-playlist')

function status (text) {
  menu.querySelector('[data-role=status]').textContent = text
}

function row (playlist, videoId) {
  const li = document.createElement('li')
  const label = document.createElement('label')
  const box = document.createElement('input')
  box.type = 'checkbox'
  box.checked = playlist.items.some((v) => v.id === videoId)
  box.dataset.playlistId = playlist.id
  label.append(box, ` ${playlist.title}`)
  li.append(label)
  box.addEventListener('change', async () => {
    box.disabled = true
    try {
      if (box.checked) {
        await api('POST', `/api/playlists/${playlist.id}/items`, { video_id: videoId })
        status(`Added to ${playlist.title}.`)
      } else {
        await api('DELETE', `/api/playlists/${playlist.id}/items/${videoId}`)
        status(`Removed from ${playlist.title}.`)
      }
    } catch (err) {
      box.checked = !box.checked
      status(err.message)
    } finally {
      box.disabled = false
    }
  })
  return li
}

async function load () {
  const list = menu.querySelector('[data-role=list]')
  const { items } = await api('GET', '/api/playlists')
  list.replaceChildren(...items.map((p) => row(p, menu.dataset.videoId)))
  if (!items.length) status('You have no playlists yet: make one below.')
}

async function create (event) {
  event.preventDefault()
  const form = event.target
  const title = form.elements.title.value.trim()
  if (!title) return
  try {
    const playlist = await api('POST', '/api/playlists', { title })
    const full = await api('POST', `/api/playlists/${playlist.id}/items`, { video_id: menu.dataset.videoId })
    menu.querySelector('[data-role=list]').append(row(full, menu.dataset.videoId))
    form.reset()
    status(`Added to ${title}.`)
  } catch (err) {
    status(err.message)
  }
}

if (menu) {
  menu.addEventListener('toggle', () => { if (menu.open) load().catch((err) => status(err.message)) })
  menu.querySelector('[data-role=new]').addEventListener('submit', create)
}
