// The watch page: hls.js plays the master playlist in a plain <video>, media-chrome draws the
// controls around it. hls.js's levels are published as the video's renditions (the media-tracks
// polyfill, as media-chrome's own hls-video element does), so media-chrome's rendition menu lists
// them and switches between them; the timeline's preview thumbnails come from the WebVTT sprite
// through a <track kind="metadata" label="thumbnails">. Native HLS is used only where the browser
// has no MediaSource (Safari on iOS).
import { api, pollVideo, showVendorMissing } from './api.js'
import { rememberCaptions } from './captions-choice.js'
import { wireAudioTracks } from './audio-tracks.js'

const script = document.getElementById('watch-script')
const data = JSON.parse(document.getElementById('video-data').textContent)
const video = document.getElementById('video')
const controller = document.getElementById('player')
const overlay = document.getElementById('player-overlay')
const errorBox = document.getElementById('player-error')

const CODEC_NAMES = { avc1: 'H.264', avc3: 'H.264', hvc1: 'HEVC', hev1: 'HEVC', av01: 'AV1', vp09: 'VP9', vp9: 'VP9' }

function codecName (codec) {
  if (!codec) return ''
  const key = String(codec).split(',')[0].split('.')[0].toLowerCase()
  return CODEC_NAMES[key] || key.toUpperCase()
}

function showPlayerError (message) {
  errorBox.textContent = message
  errorBox.hidden = !message
}

function loadClassicScript (src) {
  return new Promise((resolve, reject) => {
    const el = document.createElement('script')
    el.src = src
    el.onload = () => resolve()
    el.onerror = () => reject(new Error(`could not load ${src}`))
    document.head.append(el)
  })
}

/** Load the player libraries; false (with the page's notice shown) when they are missing. */
async function loadLibraries () {
  let chrome = true
  try {
    // the polyfill must be in place before media-chrome looks at the <video>
    await import(script.dataset.mediaTracks)
    await loadClassicScript(script.dataset.mediaChrome)
  } catch (err) {
    chrome = false
  }
  let hls = true
  try {
    if (!window.Hls) await loadClassicScript(script.dataset.hls)
  } catch (err) {
    hls = false
  }
  if (!chrome) {
    // the browser's own controls still work without media-chrome
    video.controls = true
    controller.classList.add('player-fallback')
  }
  if (!chrome || !hls) showVendorMissing()
  if (chrome) labelRenditionsWithCodecs()
  return hls
}

/** Where the ladder has several codecs, label each rung with its codec ("720p · VP9") and keep
 *  each height's codecs together; with one codec media-chrome's own labels ("720p") stay. */
function labelRenditionsWithCodecs () {
  const Menu = customElements.get('media-rendition-menu')
  if (!Menu || Menu.streamforgePatched) return
  const baseFormat = Menu.formatRendition.bind(Menu)
  const baseCompare = Menu.compareRendition.bind(Menu)
  const severalCodecs = () =>
    new Set([...(video.videoRenditions || [])].map((r) => codecName(r.codec)).filter(Boolean)).size > 1
  Menu.formatRendition = function (rendition, options) {
    if (!severalCodecs()) return baseFormat(rendition, options)
    const codec = codecName(rendition.codec)
    let text = `${Math.min(rendition.width, rendition.height)}p · ${codec}`
    const twin = [...video.videoRenditions].some((r) => String(r.id) !== String(rendition.id) &&
      r.height === rendition.height && codecName(r.codec) === codec && r.bitrate !== rendition.bitrate)
    if (twin && rendition.bitrate) text += ` (${(rendition.bitrate / 1e6).toFixed(1)} Mbps)`
    return Menu.formatMenuItemText(text, rendition)
  }
  Menu.compareRendition = function (a, b) {
    if (!severalCodecs() || a.height !== b.height) return baseCompare(a, b)
    return codecName(a.codec).localeCompare(codecName(b.codec)) || (b.bitrate ?? 0) - (a.bitrate ?? 0)
  }
  Menu.streamforgePatched = true
}

let hls = null

/** Publish hls.js's levels as the <video>'s renditions, and switch level when one is chosen. */
function wireRenditions (Hls) {
  if (typeof video.addVideoTrack !== 'function') return
  const clear = () => {
    for (const track of [...video.videoTracks]) video.removeVideoTrack(track)
  }
  hls.on(Hls.Events.MANIFEST_PARSED, (event, info) => {
    clear()
    const track = video.addVideoTrack('main')
    track.id = 'main'
    track.selected = true
    info.levels.forEach((level, index) => {
      const r = track.addRendition(level.url[0], level.width, level.height, level.videoCodec, level.bitrate)
      r.id = String(index)
    })
  })
  video.videoRenditions.addEventListener('change', (event) => {
    const index = event.target.selectedIndex // -1: automatic
    if (hls && index !== hls.nextLevel) {
      // switch now rather than at the next segment: the viewer asked for it
      hls.currentLevel = index
    }
  })
  hls.on(Hls.Events.LEVEL_SWITCHED, (event, info) => {
    const level = hls.levels[info.level]
    if (level) controller.dataset.level = `${level.height}p`
    video.dataset.level = String(info.level)
  })
  hls.once(Hls.Events.DESTROYING, clear)
}

function startPlayback (src, Hls) {
  if (hls || video.dataset.src === src) return
  video.dataset.src = src
  overlay.hidden = true
  showPlayerError('')
  const mseOk = Hls && Hls.isSupported()
  if (mseOk) {
    hls = new Hls({
      // a video still being processed has an EVENT playlist: start at its beginning, not its end
      startPosition: 0,
      capLevelToPlayerSize: false,
      enableWorker: true
    })
    wireRenditions(Hls)
    wireAudioTracks(hls, Hls, video, document.getElementById('audio-button'))
    let mediaRecoveries = 0
    hls.on(Hls.Events.ERROR, (event, info) => {
      if (!info.fatal) return
      if (info.type === Hls.ErrorTypes.NETWORK_ERROR) {
        showPlayerError('The stream could not be loaded; retrying…')
        setTimeout(() => hls?.startLoad(), 2000)
      } else if (info.type === Hls.ErrorTypes.MEDIA_ERROR && mediaRecoveries < 3) {
        mediaRecoveries += 1
        hls.recoverMediaError()
      } else {
        showPlayerError(`This video cannot be played here (${info.details}).`)
        hls.destroy()
        hls = null
      }
    })
    hls.on(Hls.Events.FRAG_BUFFERED, () => showPlayerError(''))
    hls.loadSource(src)
    hls.attachMedia(video)
  } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
    video.src = src
  } else {
    showPlayerError('This browser cannot play HLS video.')
  }
}

/** Add the timeline thumbnails track once the VTT sprite exists. */
function ensureThumbnailTrack (v) {
  if (video.querySelector('track[label="thumbnails"]')) return
  const vtt = (v.thumbnails || []).find((t) => t.type === 'TIMELINE' && t.url.split('?')[0].endsWith('.vtt'))
  if (!vtt) return
  const track = document.createElement('track')
  track.kind = 'metadata'
  track.label = 'thumbnails'
  track.src = vtt.url
  track.default = true
  video.append(track)
}

function updateOverlay (v) {
  const title = overlay.querySelector('[data-role=overlay-title]')
  const bar = overlay.querySelector('[data-role=overlay-progress]')
  const text = overlay.querySelector('[data-role=overlay-text]')
  if (v.status === 'FAILED') {
    if (title) title.textContent = 'Processing failed'
    if (bar) bar.hidden = true
    if (text) text.textContent = v.error_message || 'The video could not be processed.'
    return
  }
  if (title) {
    title.textContent = v.upload_status === 'UPLOADING'
      ? 'Waiting for the upload'
      : v.status === 'PROCESSING' ? `Processing · ${Math.round((v.progress || 0) * 100)}%` : 'Queued for processing'
  }
  if (bar) {
    if (v.status === 'PROCESSING') bar.value = Math.max(0.5, (v.progress || 0) * 100)
    else bar.removeAttribute('value')
  }
}

async function main () {
  const hasHls = await loadLibraries()
  const Hls = hasHls ? window.Hls : null
  const v = data.video
  if (v.master_playlist_url) {
    startPlayback(v.master_playlist_url, Hls)
  }
  // the owner watches a video being processed: play it as soon as it is playable, keep the
  // poster and the thumbnails track up to date
  if (data.owner && (v.status === 'PENDING' || v.status === 'PROCESSING')) {
    pollVideo(v.id, (fresh) => {
      if (!video.poster && fresh.cover_url) video.poster = fresh.cover_url
      ensureThumbnailTrack(fresh)
      if (fresh.master_playlist_url) startPlayback(fresh.master_playlist_url, Hls)
      else updateOverlay(fresh)
      if (fresh.status === 'COMPLETED') document.getElementById('video-status')?.remove()
    }, { interval: 2000 })
  }
}

window.streamforgePlayer = { get hls () { return hls }, video, api }
rememberCaptions(video)
main()
