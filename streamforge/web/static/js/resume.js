// Resume and the end of a video, beside watch.js on the watch page: the signed-in viewer's position is
// saved every few seconds while playing, on pause and when the page is left (sendBeacon), and the page
// starts where they stopped (the server puts it in the page, 0 when `?t=` is given). At the end: an end
// screen with Replay, and in a `?list=` playlist the next video, which starts by itself after a moment.
const data = JSON.parse(document.getElementById('video-data').textContent)
const video = document.getElementById('video')
const controller = document.getElementById('player')
const SAVE_EVERY_MS = 5000
const NEXT_AFTER_S = 5
const LOCAL_WINS_MS = 60000

function csrf () {
  return document.querySelector('meta[name="csrf-token"]')?.content || ''
}

function position () {
  return Math.round((video.currentTime || 0) * 10) / 10
}

function duration () {
  return Number.isFinite(video.duration) ? Math.round(video.duration * 10) / 10 : ''
}

let lastSaved = null

const LOCAL_KEY = `streamforge-position:${data.video.id}`

/** This browser's own last position of the video: a reload is sent before the old page's last report
 *  (sendBeacon on leaving) reaches the server, so the page also keeps it here. */
function remember (at, watched) {
  try {
    localStorage.setItem(LOCAL_KEY, JSON.stringify({ position: watched ? 0 : at, at: Date.now() }))
  } catch {
    // private mode: the server's position is all there is
  }
}

function remembered () {
  try {
    return JSON.parse(localStorage.getItem(LOCAL_KEY) || 'null')
  } catch {
    return null
  }
}

/** Tell the server where the viewer is; `beacon` when the page is going away. */
function save (beacon = false) {
  const at = video.ended ? duration() || position() : position()
  remember(at, video.ended)
  if (at === lastSaved || (!at && lastSaved === null)) return
  lastSaved = at
  const form = new URLSearchParams({ csrf_token: csrf(), video_id: data.video.id, position: String(at), duration: String(duration()) })
  if (beacon && navigator.sendBeacon) {
    navigator.sendBeacon('/api/me/history', form)
    return
  }
  fetch('/api/me/history', { method: 'POST', body: form, credentials: 'same-origin', keepalive: true }).catch(() => {})
}

function trackPosition () {
  setInterval(() => { if (!video.paused && !video.ended) save() }, SAVE_EVERY_MS)
  video.addEventListener('pause', () => save())
  video.addEventListener('ended', () => save())
  addEventListener('pagehide', () => save(true))
  document.addEventListener('visibilitychange', () => { if (document.visibilityState === 'hidden') save(true) })
}

function resume () {
  // the server's position (any device), unless this browser saved a newer one moments ago (a reload whose
  // request overtook the old page's last report); with no server entry (a cleared history) it starts at 0
  const local = remembered()
  const serverAt = data.resume_at ? Date.parse(data.resume_at) : 0
  const fresh = local && serverAt && local.at > serverAt && Date.now() - local.at < LOCAL_WINS_MS
  const at = fresh ? Number(local.position || 0) : Number(data.resume || 0)
  if (!(at > 0) || new URLSearchParams(location.search).has('t')) return
  video.dataset.resumedFrom = String(at)
  const seek = () => {
    if (video.currentTime < 0.5) video.currentTime = at
  }
  if (video.readyState >= 1) seek()
  else video.addEventListener('loadedmetadata', seek, { once: true })
}

function watchUrl (item) {
  const url = new URL(`/watch/${encodeURIComponent(item.slug)}`, location.origin)
  url.searchParams.set('list', data.playlist.slug)
  url.searchParams.set('autoplay', '1')
  return url.href
}

function endScreen () {
  const box = document.createElement('div')
  box.className = 'end-screen'
  box.id = 'end-screen'
  box.hidden = true
  box.setAttribute('role', 'group')
  box.setAttribute('aria-label', 'Video ended')
  const next = data.playlist?.next
  box.innerHTML = `<div class="end-screen-box">
      ${next ? '<p class="end-screen-next">Up next: <strong data-role="next-title"></strong></p><p class="end-screen-count" data-role="count" aria-live="polite"></p>' : ''}
      <div class="end-screen-actions">
        <button type="button" class="button" data-action="replay">Replay</button>
        ${next ? '<a class="button button-primary" data-action="next">Play next</a><button type="button" class="button button-ghost" data-action="stay">Cancel</button>' : ''}
      </div></div>`
  controller.append(box)
  let timer = null
  const stop = () => { clearInterval(timer); timer = null; const c = box.querySelector('[data-role=count]'); if (c) c.textContent = '' }
  if (next) {
    box.querySelector('[data-role=next-title]').textContent = next.title
    box.querySelector('[data-action=next]').href = watchUrl(next)
    box.querySelector('[data-action=stay]').addEventListener('click', stop)
  }
  box.querySelector('[data-action=replay]').addEventListener('click', () => {
    stop()
    box.hidden = true
    video.currentTime = 0
    video.play().catch(() => {})
  })
  video.addEventListener('ended', () => {
    box.hidden = false
    if (!next) return
    let left = NEXT_AFTER_S
    const count = box.querySelector('[data-role=count]')
    count.textContent = `Starts in ${left} s`
    timer = setInterval(() => {
      left -= 1
      count.textContent = `Starts in ${left} s`
      if (left <= 0) { stop(); location.assign(watchUrl(next)) }
    }, 1000)
  })
  video.addEventListener('play', () => { stop(); box.hidden = true })
}

function autoplay () {
  if (new URLSearchParams(location.search).get('autoplay') !== '1') return
  const start = () => video.play().catch(() => { video.muted = true; video.play().catch(() => {}) })
  if (video.readyState >= 2) start()
  else video.addEventListener('canplay', start, { once: true })
}

if (video && controller) {
  if (data.viewer) {
    trackPosition()
    resume()
  }
  endScreen()
  autoplay()
}
