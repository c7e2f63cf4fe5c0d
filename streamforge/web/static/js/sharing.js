// Sharing on the watch and embed pages, beside watch.js's player: `?t=` starts the video at that
// moment, the player reports views (POST /api/videos/{id}/views: a random session per page load,
// a view once it has played a few seconds, then the seconds played since the last report), and
// the watch page's "Embed" and "Share from this moment" buttons.

const data = JSON.parse(document.getElementById('video-data').textContent)
const video = document.getElementById('video')
const FIRST_REPORT_AFTER = 5 // seconds played before the view counts
const REPORT_EVERY = 15

/** Seconds from `?t=`: "90", "90s", "1m30s", "1h2m3s" or "1:30". */
export function parseStart (value) {
  if (!value) return 0
  const text = String(value).trim().toLowerCase()
  if (/^\d+(\.\d+)?s?$/.test(text)) return parseFloat(text)
  const hms = text.match(/^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/)
  if (hms && text) return (+(hms[1] || 0)) * 3600 + (+(hms[2] || 0)) * 60 + (+(hms[3] || 0))
  if (/^\d+(:\d{1,2}){1,2}$/.test(text)) return text.split(':').reduce((acc, n) => acc * 60 + +n, 0)
  return 0
}

function honourStart () {
  const start = parseStart(new URLSearchParams(location.search).get('t'))
  if (!(start > 0)) return
  video.dataset.start = String(start)
  const seek = () => {
    const end = Number.isFinite(video.duration) ? video.duration : Infinity
    if (Math.abs(video.currentTime - start) > 0.5) video.currentTime = Math.min(start, Math.max(0, end - 0.1))
  }
  if (video.readyState >= 1) seek()
  else video.addEventListener('loadedmetadata', seek, { once: true })
}

function randomSession () {
  const bytes = new Uint8Array(16)
  crypto.getRandomValues(bytes)
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')
}

function reportViews () {
  const session = randomSession()
  const url = `/api/videos/${encodeURIComponent(data.video.id)}/views`
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || ''
  let played = 0 // seconds played and not yet reported
  let total = 0
  let counted = false
  let last = null
  const send = () => {
    const seconds = Math.round(played * 10) / 10
    played = 0
    counted = true
    video.dataset.viewReported = 'true'
    return fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      keepalive: true,
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
      body: JSON.stringify({ session, watched_seconds: seconds })
    }).catch(() => {})
  }
  setInterval(() => {
    const now = performance.now()
    const playing = !video.paused && !video.ended && video.readyState >= 3
    if (playing && last !== null) {
      const step = Math.min((now - last) / 1000, 2)
      played += step
      total += step
    }
    last = playing ? now : null
    if ((!counted && total >= FIRST_REPORT_AFTER) || (counted && played >= REPORT_EVERY)) send()
  }, 500)
  addEventListener('pagehide', () => { if (counted && played >= 1) send() })
}

function panel (label, text) {
  const box = document.getElementById('share-panel')
  const area = document.getElementById('share-code')
  document.getElementById('share-label').textContent = label
  area.value = text
  box.hidden = false
  area.focus()
  area.select()
  return box
}

async function copy (text) {
  const status = document.getElementById('share-status')
  try {
    await navigator.clipboard.writeText(text)
    status.textContent = 'Copied to the clipboard.'
  } catch {
    status.textContent = 'Press Ctrl+C (⌘C) to copy.'
  }
}

function wireShareTools () {
  const tools = document.getElementById('share-tools')
  if (!tools) return
  const image = document.getElementById('moment-image')
  document.getElementById('embed-button')?.addEventListener('click', (event) => {
    const code = event.currentTarget.dataset.code
    image.hidden = true
    panel('Embed code', code)
    copy(code)
  })
  document.getElementById('moment-button')?.addEventListener('click', () => {
    const t = Math.floor(video.currentTime || 0)
    const link = new URL(tools.dataset.watchUrl)
    if (t > 0) link.searchParams.set('t', String(t))
    image.src = `${tools.dataset.thumbnailUrl}?time=${t}&width=320`
    image.alt = `The video at ${t} s`
    image.hidden = false
    panel(t > 0 ? `Link to ${Math.floor(t / 60)}:${String(t % 60).padStart(2, '0')}` : 'Link', link.href)
    copy(link.href)
  })
}

honourStart()
reportViews()
wireShareTools()
