// Shared by the page modules: JSON calls to our API (with the CSRF header a signed-in browser
// must send), polling a video while it is processed, and a few formatting helpers.

/** An error answer of the API: {"error": {"code", "message"}} with its HTTP status. */
export class ApiError extends Error {
  constructor (status, code, message) {
    super(message)
    this.name = 'ApiError'
    this.status = status
    this.code = code
  }
}

function csrfToken () {
  return document.querySelector('meta[name="csrf-token"]')?.content || ''
}

/** Call our JSON API; resolves to the parsed body (null for 204), rejects with ApiError. */
export async function api (method, path, body, { signal } = {}) {
  const headers = { Accept: 'application/json' }
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = csrfToken()
  const init = { method, headers, credentials: 'same-origin', signal }
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json'
    init.body = JSON.stringify(body)
  }
  let res
  try {
    res = await fetch(path, init)
  } catch (err) {
    if (err?.name === 'AbortError') throw err
    throw new ApiError(0, 'network', 'The server could not be reached. Check your connection and try again.')
  }
  if (res.status === 204) return null
  let data = null
  try {
    data = await res.json()
  } catch {
    data = null
  }
  if (!res.ok) {
    const e = data?.error
    if (res.status === 401) {
      throw new ApiError(401, 'unauthorized', 'Your session has ended: sign in again.')
    }
    throw new ApiError(res.status, e?.code || `http_${res.status}`, e?.message || `${method} ${path} answered ${res.status}`)
  }
  return data
}

const TERMINAL = new Set(['COMPLETED', 'FAILED', 'ARCHIVED'])

/** True once a video will not change without someone asking (done, failed or deleted). */
export function isSettled (video) {
  return TERMINAL.has(video.status)
}

/**
 * Poll GET /api/videos/{id} until `done(video)` (default: the video is settled), calling
 * `onUpdate(video)` with each answer. Slower while the tab is hidden. Returns a stop function.
 */
export function pollVideo (id, onUpdate, { interval = 1500, done = isSettled, onError } = {}) {
  let stopped = false
  let timer = null
  let failures = 0
  const tick = async () => {
    if (stopped) return
    try {
      const video = await api('GET', `/api/videos/${encodeURIComponent(id)}`)
      failures = 0
      if (stopped) return
      onUpdate(video)
      if (done(video)) {
        stopped = true
        return
      }
    } catch (err) {
      failures += 1
      if (err.status === 404 || err.status === 401) {
        stopped = true
        onError?.(err)
        return
      }
      if (failures === 3) onError?.(err)
    }
    const wait = (document.hidden ? 5 : 1) * interval * Math.min(4, 1 + failures)
    timer = setTimeout(tick, wait)
  }
  timer = setTimeout(tick, 0)
  return () => {
    stopped = true
    clearTimeout(timer)
  }
}

/** What a video's state means to a person, in a word or two. */
export function statusLabel (video) {
  switch (video.status) {
    case 'PENDING': return video.upload_status === 'UPLOADING' ? 'Uploading' : 'Queued'
    case 'PROCESSING': return 'Processing'
    case 'COMPLETED': return 'Ready'
    case 'FAILED': return 'Failed'
    case 'ARCHIVED': return 'Deleted'
    default: return video.status
  }
}

/** The badge class that goes with statusLabel. */
export function statusClass (video) {
  return {
    PENDING: 'badge-pending',
    PROCESSING: 'badge-processing',
    COMPLETED: 'badge-ready',
    FAILED: 'badge-failed'
  }[video.status] || ''
}

/** 65 -> "1:05", 3723 -> "1:02:03". */
export function formatDuration (seconds) {
  if (!Number.isFinite(seconds) || seconds <= 0) return ''
  const total = Math.round(seconds)
  const h = Math.floor(total / 3600)
  const m = Math.floor((total % 3600) / 60)
  const s = String(total % 60).padStart(2, '0')
  return h ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`
}

/** 1536 -> "1.5 KB" (binary units, as Uppy's Dashboard counts them). */
export function formatBytes (bytes) {
  if (!Number.isFinite(bytes)) return ''
  const units = ['bytes', 'KB', 'MB', 'GB', 'TB']
  let i = 0
  let n = bytes
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024
    i += 1
  }
  return i === 0 ? `${n} bytes` : `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`
}

/** A short transient message at the bottom of the page (announced by screen readers). */
export function toast (message, { kind = 'info', timeout = 5000 } = {}) {
  const box = document.getElementById('toasts')
  if (!box) return
  const el = document.createElement('div')
  el.className = `toast toast-${kind}`
  el.textContent = message
  box.append(el)
  setTimeout(() => el.remove(), timeout)
}

/** "a, b ,, c" -> ["a", "b", "c"]. */
export function parseTags (text) {
  return [...new Set(String(text || '').split(',').map((t) => t.trim()).filter(Boolean))]
}

/** Show the page's "libraries missing" notice (rendered hidden by the template). */
export function showVendorMissing () {
  for (const el of document.querySelectorAll('.vendor-missing')) el.hidden = false
}
