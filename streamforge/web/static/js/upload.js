// The upload page: Uppy (Dashboard + AwsS3 + GoldenRetriever) sends the file straight to the
// object store through the presigned URLs of our API. Small files go in one PUT; big ones as an
// S3 multipart upload with several parts in flight, each retried on failure, pausable, and
// resumable after a reload (GoldenRetriever keeps the upload id; listParts says what is there).
// After the bytes are in, the page follows the processing through GET /api/videos/{id}.
import {
  api, ApiError, formatBytes, parseTags, pollVideo, showVendorMissing, statusClass, statusLabel, toast
} from './api.js'

const script = document.getElementById('upload-script')
const settings = JSON.parse(document.getElementById('upload-settings').textContent)
const form = document.getElementById('upload-form')
const submitButton = document.getElementById('upload-submit')
const errorBox = document.getElementById('upload-error')
const list = document.getElementById('upload-list')
const listEmpty = document.getElementById('upload-queue-empty')

const MAX_PARTS = 10000
// Browsers leave `type` empty for some containers; the API wants a MIME type.
const MIME_BY_EXTENSION = {
  mp4: 'video/mp4', m4v: 'video/x-m4v', mov: 'video/quicktime', mkv: 'video/x-matroska', webm: 'video/webm',
  avi: 'video/x-msvideo', ts: 'video/mp2t', mts: 'video/mp2t', m2ts: 'video/mp2t', mpg: 'video/mpeg',
  mpeg: 'video/mpeg', flv: 'video/x-flv', wmv: 'video/x-ms-wmv', ogv: 'video/ogg', '3gp': 'video/3gpp',
  mp3: 'audio/mpeg', m4a: 'audio/mp4', aac: 'audio/aac', flac: 'audio/flac', wav: 'audio/wav', ogg: 'audio/ogg',
  oga: 'audio/ogg', opus: 'audio/ogg'
}

function extensionOf (name) {
  const m = /\.([^.]+)$/.exec(name || '')
  return m ? m[1].toLowerCase() : ''
}

function contentTypeOf (file) {
  return file.type || MIME_BY_EXTENSION[extensionOf(file.name)] || 'application/octet-stream'
}

/** The UPLOAD headers a page may set: the browser sends Content-Length itself (the file's size). */
function sendable (headers) {
  const out = { ...(headers || {}) }
  for (const name of Object.keys(out)) if (name.toLowerCase() === 'content-length') delete out[name]
  return out
}

function titleFromName (name) {
  return (name || '').replace(/\.[^.]+$/, '').replace(/[_]+/g, ' ').trim() || name
}

/** The part size the API plans for a file of `size` bytes (see web/api.py: _part_size). */
function partSizeFor (size) {
  return Math.max(settings.partSize, Math.ceil(size / MAX_PARTS))
}

function showError (message) {
  errorBox.textContent = message
  errorBox.hidden = !message
}

function formMeta () {
  const f = form.elements
  return {
    title: f.title.value.trim(),
    description: f.description.value.trim(),
    tags: parseTags(f.tags.value),
    visibility: f.visibility.value
  }
}

// ---------- the "Uploads" list: one row per file, from the first byte to the end of processing ----------

class UploadRow {
  constructor (fileId, title) {
    this.fileId = fileId
    this.samples = []
    this.stopPolling = null
    this.el = document.createElement('li')
    this.el.className = 'upload-item'
    this.el.innerHTML = `
      <div class="upload-item-head">
        <span class="upload-item-title"></span>
        <span class="badge badge-pending" data-role="badge" role="status">Waiting</span>
      </div>
      <progress max="100" value="0"></progress>
      <p class="upload-item-status" data-role="status">Starting…</p>
      <p class="upload-item-error" data-role="error" hidden></p>
      <div class="upload-item-actions" data-role="actions"></div>`
    this.titleEl = this.el.querySelector('.upload-item-title')
    this.badge = this.el.querySelector('[data-role=badge]')
    this.bar = this.el.querySelector('progress')
    this.status = this.el.querySelector('[data-role=status]')
    this.error = this.el.querySelector('[data-role=error]')
    this.actions = this.el.querySelector('[data-role=actions]')
    this.setTitle(title)
    list.prepend(this.el)
    listEmpty.hidden = true
  }

  setTitle (title) {
    this.titleEl.textContent = title
    this.bar.setAttribute('aria-label', `Progress of ${title}`)
  }

  setBadge (text, cls) {
    this.badge.textContent = text
    this.badge.className = `badge ${cls}`
  }

  setProgress (percent) {
    if (percent == null) {
      this.bar.removeAttribute('value') // indeterminate
    } else {
      this.bar.value = Math.max(0, Math.min(100, percent))
    }
  }

  uploading (sent, total) {
    const now = performance.now()
    this.samples.push([now, sent])
    while (this.samples.length > 2 && now - this.samples[0][0] > 5000) this.samples.shift()
    const [t0, b0] = this.samples[0]
    const speed = now > t0 ? (sent - b0) / ((now - t0) / 1000) : 0
    const left = speed > 0 ? (total - sent) / speed : null
    this.setBadge('Uploading', 'badge-pending')
    this.setProgress(total ? (100 * sent) / total : 0)
    let text = `${formatBytes(sent)} of ${formatBytes(total)}`
    if (speed > 0 && sent < total) text += ` · ${formatBytes(speed)}/s`
    if (left != null && sent < total) text += ` · ${formatTimeLeft(left)} left`
    this.status.textContent = text
    this.error.hidden = true
  }

  paused (isPaused) {
    if (isPaused) {
      this.setBadge('Paused', 'badge-pending')
      this.status.textContent = `Paused at ${Math.round(this.bar.value)}%`
      this.samples = []
    } else {
      this.setBadge('Uploading', 'badge-pending')
    }
  }

  failed (message) {
    this.setBadge('Upload failed', 'badge-failed')
    this.error.textContent = message
    this.error.hidden = false
    this.status.textContent = 'Press Upload to try again; parts already sent are kept.'
  }

  interrupted (ghost) {
    this.setBadge('Interrupted', 'badge-pending')
    this.status.textContent = ghost
      ? 'The page was reloaded. Choose the same file again to continue where the upload stopped.'
      : 'The page was reloaded. Press Upload to continue.'
  }

  /** The bytes are in the store: follow the processing until it ends. */
  follow (video) {
    this.samples = []
    this.show(video)
    this.stopPolling?.()
    this.stopPolling = pollVideo(video.id, (v) => this.show(v), {
      onError: (err) => { this.status.textContent = `Could not check on the processing: ${err.message}` }
    })
  }

  show (video) {
    this.video = video
    this.setTitle(video.title)
    this.setBadge(statusLabel(video), statusClass(video))
    this.error.hidden = true
    const pct = Math.round((video.progress || 0) * 100)
    if (video.status === 'PROCESSING') {
      this.setProgress(Math.max(pct, 0.5)) // a sliver shows it has started
      this.status.textContent = `Processing · ${pct}%${video.master_playlist_url ? ' · already playable' : ''}`
    } else if (video.status === 'PENDING') {
      this.setProgress(null)
      this.status.textContent = video.upload_status === 'UPLOADED'
        ? 'Uploaded. Waiting for a worker to start processing…'
        : 'Finishing the upload…'
    } else if (video.status === 'COMPLETED') {
      this.setProgress(100)
      this.status.textContent = 'Ready to watch.'
    } else if (video.status === 'FAILED') {
      this.setProgress(0)
      this.status.textContent = 'Processing failed.'
      this.error.textContent = video.error_message || 'The video could not be processed.'
      this.error.hidden = false
    }
    this.renderActions(video)
  }

  renderActions (video) {
    this.actions.replaceChildren()
    if (video.master_playlist_url || video.status === 'COMPLETED') {
      const a = document.createElement('a')
      a.className = 'button button-small button-primary'
      a.href = new URL(video.watch_url, location.href).pathname
      a.textContent = video.status === 'COMPLETED' ? 'Watch' : 'Watch now'
      this.actions.append(a)
    }
    if (video.status === 'FAILED') {
      const b = document.createElement('button')
      b.type = 'button'
      b.className = 'button button-small'
      b.textContent = 'Reprocess'
      b.addEventListener('click', async () => {
        b.disabled = true
        try {
          this.follow(await api('POST', `/api/videos/${video.id}/reprocess`))
        } catch (err) {
          toast(err.message, { kind: 'error' })
          b.disabled = false
        }
      })
      this.actions.append(b)
    }
  }

  remove () {
    this.stopPolling?.()
    this.el.remove()
    listEmpty.hidden = list.children.length > 0
  }
}

function formatTimeLeft (seconds) {
  if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s`
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`
}

// ---------- Uppy ----------

async function main () {
  let lib
  try {
    lib = await import(script.dataset.uppy)
  } catch (err) {
    showVendorMissing()
    document.getElementById('uppy-dashboard').hidden = true // no empty box where the Dashboard would be
    submitButton.disabled = true
    showError('The uploader could not be loaded, so uploads are not possible from this page.')
    return null
  }
  const { Uppy, Dashboard, AwsS3, GoldenRetriever } = lib
  const rows = new Map() // Uppy file id -> UploadRow
  const putUploads = new Map() // Uppy file id -> {video, upload} of a single-PUT upload
  const rowFor = (file) => {
    let row = rows.get(file.id)
    if (!row) {
      row = new UploadRow(file.id, file.meta.title || titleFromName(file.name))
      rows.set(file.id, row)
    }
    return row
  }

  const uppy = new Uppy({
    id: 'streamforge-upload',
    autoProceed: false,
    allowMultipleUploadBatches: true,
    restrictions: {
      maxFileSize: settings.maxSize,
      allowedFileTypes: [...settings.contentTypes, ...settings.extensions]
    },
    // the API rejects what the store cannot take; say so before any byte moves
    onBeforeFileAdded: (file) => {
      if (!file.type && !settings.extensions.includes(`.${extensionOf(file.name)}`) &&
          !settings.contentTypes.includes('application/octet-stream')) {
        uppy.info(`${file.name} does not look like a video file`, 'error', 5000)
        return false
      }
      return true
    }
  })

  // the one file picker of the page: Uppy's Dashboard (mounted once a restore is over, below)
  const dashboard = {
    inline: true,
    target: '#uppy-dashboard',
    height: 240,
    width: '100%',
    hideUploadButton: true, // the form's Upload button starts it, with the title and the rest
    hideProgressDetails: false,
    showProgressDetails: true,
    proudlyDisplayPoweredByUppy: false,
    fileManagerSelectionType: 'files',
    disableThumbnailGenerator: true,
    theme: 'dark',
    doneButtonHandler: null,
    locale: {
      strings: {
        dropPasteFiles: 'Drop a video here or %{browseFiles}',
        browseFiles: 'choose a file',
        dropHint: 'Drop your video here'
      }
    }
  }

  const videoIdOf = (file) => uppy.getFile(file.id)?.meta?.videoId || file.meta?.videoId

  /** POST /api/videos: the Video row, and where its bytes go. */
  async function createVideo (file, signal) {
    const meta = { ...formMeta(), ...pickMeta(file.meta) }
    const body = {
      title: meta.title || titleFromName(file.name),
      filename: file.name,
      size: file.size,
      content_type: contentTypeOf(file),
      tags: meta.tags || [],
      visibility: meta.visibility || settings.defaultVisibility
    }
    if (meta.description) body.description = meta.description
    const answer = await api('POST', '/api/videos', body, { signal })
    uppy.setFileMeta(file.id, { videoId: answer.video.id })
    rowFor(file).setTitle(answer.video.title)
    return answer
  }

  async function deleteVideo (id) {
    try {
      await api('DELETE', `/api/videos/${encodeURIComponent(id)}`)
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 404) console.warn('could not delete video', id, err)
    }
  }

  uppy.use(AwsS3, {
    limit: 6,
    // the same rule as the API: multipart above the threshold, with its part size
    shouldUseMultipart: (file) => file.size > settings.multipartThreshold,
    getChunkSize: (file) => partSizeFor(file.size),

    async getUploadParameters (file, { signal } = {}) {
      const cached = putUploads.get(file.id)
      if (cached && Date.parse(cached.upload.expires_at) - Date.now() > 60_000) {
        return { method: 'PUT', url: cached.upload.url, headers: sendable(cached.upload.headers) }
      }
      // a PUT URL from before a reload (or an expired one) is gone: start over with a fresh video
      const stale = cached?.video.id || videoIdOf(file)
      if (stale) deleteVideo(stale)
      const { video, upload } = await createVideo(file, signal)
      if (upload.method !== 'PUT') {
        deleteVideo(video.id)
        throw new Error('The server planned a multipart upload for this file; reload the page and try again.')
      }
      putUploads.set(file.id, { video, upload })
      return { method: 'PUT', url: upload.url, headers: sendable(upload.headers) }
    },

    async createMultipartUpload (file) {
      const { video, upload } = await createVideo(file)
      if (upload.method !== 'MULTIPART' || upload.part_size !== partSizeFor(file.size)) {
        deleteVideo(video.id)
        throw new Error('The server planned this upload differently than the page; reload the page and try again.')
      }
      return { uploadId: upload.upload_id, key: video.id }
    },

    async signPart (file, { key, partNumber, signal }) {
      const answer = await api('POST', `/api/videos/${encodeURIComponent(key)}/upload/parts`,
        { part_numbers: [partNumber] }, { signal })
      return { url: answer.urls[String(partNumber)] }
    },

    async listParts (file, { key, signal }) {
      const answer = await api('GET', `/api/videos/${encodeURIComponent(key)}/upload/parts`, undefined, { signal })
      return answer.parts.map((p) => ({ PartNumber: p.part_number, ETag: p.etag, Size: p.size }))
    },

    async completeMultipartUpload (file, { key, parts, signal }) {
      const video = await api('POST', `/api/videos/${encodeURIComponent(key)}/upload/complete`, {
        parts: parts.map((p) => ({ part_number: p.PartNumber, etag: String(p.ETag || '').replace(/"/g, '') }))
      }, { signal })
      return { location: video.watch_url, video }
    },

    async abortMultipartUpload (file, { key }) {
      if (key) await deleteVideo(key)
    }
  })

  // Keeps the selected file, its metadata and the multipart upload id across reloads. Blobs up to
  // 10 MiB come back from IndexedDB; bigger files come back as "ghosts" that the user picks again.
  // Its restore runs in the background; a file picked before it ends would be wiped by it.
  const restoring = localStorage.getItem(`uppyState:${uppy.getID()}`)
    ? Promise.race([new Promise((resolve) => uppy.once('restored', resolve)),
      new Promise((resolve) => setTimeout(resolve, 10000))])
    : null
  uppy.use(GoldenRetriever, { serviceWorker: false })

  let autoTitle = ''
  form.elements.title.addEventListener('input', () => { autoTitle = '' })

  uppy.on('file-added', (file) => {
    showError('')
    // one file at a time: a new choice replaces one that has not started (or has finished)
    for (const other of uppy.getFiles()) {
      if (other.id === file.id) continue
      const busy = other.progress.uploadStarted && !other.progress.uploadComplete && !other.error
      if (!busy) uppy.removeFile(other.id)
    }
    const t = form.elements.title
    if (!t.value.trim() || t.value === autoTitle) {
      autoTitle = titleFromName(file.name)
      t.value = autoTitle
    }
  })

  uppy.on('restriction-failed', (file, err) => showError(err.message))

  uppy.on('upload-progress', (file, progress) => {
    if (!file) return
    rowFor(file).uploading(progress.bytesUploaded || 0, progress.bytesTotal || file.size)
  })

  uppy.on('upload-pause', (file, isPaused) => {
    if (file) rowFor(file).paused(isPaused)
  })

  uppy.on('upload-error', (file, err) => {
    if (!file) return
    const message = err?.message || 'The upload failed.'
    rowFor(file).failed(message)
    showError(`The upload of ${file.name} failed: ${message}`)
  })

  uppy.on('upload-success', async (file, response) => {
    if (!file) return
    const row = rowFor(file)
    const id = videoIdOf(file)
    try {
      // a single PUT is finished by telling the API; a multipart upload was completed already
      const video = response?.body?.video ||
        await api('POST', `/api/videos/${encodeURIComponent(id)}/upload/complete`, {})
      putUploads.delete(file.id)
      row.follow(video)
    } catch (err) {
      row.failed(err.message)
    }
  })

  uppy.on('file-removed', (file) => {
    const row = rows.get(file.id)
    rows.delete(file.id)
    putUploads.delete(file.id)
    // an upload given up half-way leaves nothing behind; a finished one is a video now
    if (!file.progress?.uploadComplete) {
      const id = file.meta?.videoId
      if (id) deleteVideo(id)
      row?.remove()
    }
  })

  uppy.on('complete', () => {
    submitButton.disabled = false
    if (uppy.getFiles().every((f) => f.progress.uploadComplete)) {
      form.elements.title.value = ''
      form.elements.description.value = ''
      form.elements.tags.value = ''
      autoTitle = ''
    }
  })

  uppy.on('cancel-all', () => { submitButton.disabled = false })

  uppy.on('restored', () => {
    const files = uppy.getFiles()
    const pending = files.filter((f) => !f.progress.uploadComplete)
    if (!pending.length) return
    const f = pending[0]
    const meta = pickMeta(f.meta)
    form.elements.title.value = meta.title || titleFromName(f.name)
    form.elements.description.value = meta.description || ''
    form.elements.tags.value = (meta.tags || []).join(', ')
    if (meta.visibility) form.elements.visibility.value = meta.visibility
    const row = rowFor(f)
    row.interrupted(Boolean(f.isGhost))
    const { bytesUploaded, bytesTotal } = f.progress || {}
    if (bytesTotal) row.setProgress((100 * (bytesUploaded || 0)) / bytesTotal)
    showError('')
  })

  async function submit () {
    showError('')
    const files = uppy.getFiles()
    if (!files.length) {
      showError('Choose a video file first.')
      focusPicker()
      return
    }
    // the title defaults to the file's name (as when it is picked); an emptied one is filled again
    const title = form.elements.title
    if (!title.value.trim()) title.value = autoTitle = titleFromName(files[0].name)
    if (!form.reportValidity()) {
      showError('Check the highlighted field.')
      return
    }
    if (files.some((f) => f.isGhost)) {
      showError('Choose the same file again to continue its upload.')
      focusPicker()
      return
    }
    const meta = formMeta()
    for (const f of files) {
      if (!f.progress.uploadStarted || f.error) uppy.setFileMeta(f.id, meta)
      rowFor(f)
    }
    submitButton.disabled = true
    try {
      // resume a restored upload only while its files are still here; a new file replaced them
      const resuming = uppy.getState().recoveredState && files.some((f) => f.isRestored && !f.progress.uploadComplete)
      if (uppy.getState().recoveredState && !resuming) uppy.setState({ recoveredState: null })
      if (resuming) {
        uppy.emit('restore-confirmed')
      } else if (files.some((f) => f.error)) {
        await uppy.retryAll()
      } else {
        await uppy.upload()
      }
    } catch (err) {
      showError(err.message)
    } finally {
      const busy = uppy.getFiles().some((f) => f.progress.uploadStarted && !f.progress.uploadComplete && !f.error)
      if (!busy) submitButton.disabled = false
    }
  }

  // The picker appears once a restore is over: a file picked during it would be wiped by it.
  await restoring
  uppy.use(Dashboard, dashboard)
  window.streamforgeUppy = uppy // for debugging from the console
  return { uppy, submit }
}

function focusPicker () {
  document.querySelector('#uppy-dashboard .uppy-Dashboard-browse')?.focus()
}

function pickMeta (meta = {}) {
  const out = {}
  for (const k of ['title', 'description', 'tags', 'visibility']) {
    if (meta[k] !== undefined && meta[k] !== '') out[k] = meta[k]
  }
  return out
}

// The form works from the first moment: a submit made while Uppy is still loading is handed
// to it once it is ready.
const ready = main()
form.addEventListener('submit', async (event) => {
  event.preventDefault()
  const app = await ready
  app?.submit()
})
