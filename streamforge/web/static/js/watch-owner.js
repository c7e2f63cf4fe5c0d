// The owner's tools on the watch page: edit the title and description (PATCH /api/videos/{id}), and
// choose the cover from the timeline sprite's moments or an uploaded picture (PUT /api/videos/{id}/cover).
import { api } from './api.js'

const data = JSON.parse(document.getElementById('video-data').textContent)
const MAX_TILES = 12

function wireEdit () {
  const form = document.querySelector('#owner-edit form')
  if (!form) return
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    const box = form.querySelector('[data-role=form-error]')
    box.hidden = true
    try {
      await api('PATCH', `/api/videos/${data.video.id}`, {
        title: form.elements.title.value.trim(), description: form.elements.description.value
      })
      location.reload()
    } catch (err) {
      box.textContent = err.message
      box.hidden = false
    }
  })
}

function seconds (stamp) {
  return stamp.split(':').reduce((acc, part) => acc * 60 + parseFloat(part), 0)
}

/** The timeline VTT's cues: [{start, url, x, y, w, h}], sprite URLs signed like the VTT's own. */
async function spriteCues () {
  if (!data.timeline_vtt) return []
  const text = await (await fetch(data.timeline_vtt)).text()
  const base = new URL(data.timeline_vtt, location.href)
  const cues = []
  for (const block of text.split(/\r?\n\r?\n/)) {
    const lines = block.split(/\r?\n/)
    const timing = lines.findIndex((l) => l.includes('-->'))
    if (timing < 0 || !lines[timing + 1]) continue
    const [ref, frag] = lines[timing + 1].trim().split('#xywh=')
    const url = new URL(ref, base)
    if (!url.search) url.search = base.search // one signature covers every file of the video
    const [x, y, w, h] = (frag || '0,0,0,0').split(',').map(Number)
    cues.push({ start: seconds(lines[timing].split('-->')[0].trim()), url: url.href, x, y, w, h })
  }
  return cues
}

async function choose (body, status) {
  status.textContent = 'Saving the cover…'
  try {
    const video = await api('PUT', `/api/videos/${data.video.id}/cover`, body)
    if (video.cover_url) document.getElementById('video').poster = video.cover_url
    status.textContent = 'The cover is changed.'
  } catch (err) {
    status.textContent = err.message
  }
}

async function wireCover () {
  const box = document.getElementById('cover-chooser')
  if (!box) return
  const status = box.querySelector('[data-role=status]')
  let filled = false
  box.addEventListener('toggle', async () => {
    if (!box.open || filled) return
    filled = true
    const cues = await spriteCues().catch(() => [])
    const step = Math.max(1, Math.ceil(cues.length / MAX_TILES))
    const frames = box.querySelector('[data-role=frames]')
    for (const cue of cues.filter((c, i) => i % step === 0)) {
      const b = document.createElement('button')
      b.type = 'button'
      b.className = 'cover-frame'
      const m = Math.floor(cue.start / 60)
      const s = String(Math.floor(cue.start % 60)).padStart(2, '0')
      b.setAttribute('aria-label', `The moment at ${m}:${s}`)
      b.style.width = `${cue.w}px`
      b.style.height = `${cue.h}px`
      b.style.backgroundImage = `url("${cue.url}")`
      b.style.backgroundPosition = `-${cue.x}px -${cue.y}px`
      b.dataset.time = String(cue.start)
      b.addEventListener('click', () => choose({ time: cue.start }, status))
      frames.append(b)
    }
    if (!cues.length) frames.textContent = 'No timeline pictures for this video.'
  })
  box.querySelector('#cover-file').addEventListener('change', (event) => {
    const file = event.target.files[0]
    if (!file) return
    if (file.size > 4 * 1024 * 1024) {
      status.textContent = 'The picture is larger than 4 MiB.'
      return
    }
    const reader = new FileReader()
    reader.onload = () => choose({ image: String(reader.result).split(',')[1] }, status)
    reader.readAsDataURL(file)
  })
}

wireEdit()
wireCover()
