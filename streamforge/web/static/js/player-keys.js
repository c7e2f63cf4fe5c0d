// Page-wide keys for the player on the watch and embed pages, wherever focus is (except where text is
// typed): media-chrome's own hotkeys work only with focus inside the player, so they are turned off
// (`nohotkeys`) and these take their place. `?` shows the list; a double-click on the picture toggles
// fullscreen. Space on a focused button or link still presses that button.
const controller = document.getElementById('player')
const video = document.getElementById('video')
const SEEK_KEYS = { j: -10, l: 10, ArrowLeft: -5, ArrowRight: 5 }
const VOLUME_STEP = 0.1

export const SHORTCUTS = [
  ['Space or K', 'Play or pause'],
  ['J / L', 'Back or forward 10 seconds'],
  ['← / →', 'Back or forward 5 seconds'],
  ['↑ / ↓', 'Volume up or down 10 %'],
  ['F or double-click', 'Fullscreen'],
  ['M', 'Mute'],
  ['C', 'Captions on or off'],
  ['0 – 9', 'Jump to 0 % – 90 % of the video'],
  ['?', 'This list']
]

function typing (el) {
  if (!el) return false
  if (el.isContentEditable) return true
  if (el.tagName === 'TEXTAREA' || el.tagName === 'SELECT') return true
  if (el.tagName !== 'INPUT') return false
  return !['button', 'checkbox', 'radio', 'range', 'submit', 'reset', 'file', 'color', 'image'].includes(el.type)
}

/** The element that really has focus, through media-chrome's shadow roots. */
function focused () {
  let el = document.activeElement
  while (el?.shadowRoot?.activeElement) el = el.shadowRoot.activeElement
  return el
}

function pressable (el) {
  if (!el || el === document.body || el === controller) return false
  return el.matches('button, a[href], summary, [role=button], [role=menuitem], [role=menuitemradio], input') ||
    el.tagName.startsWith('MEDIA-')
}

function request (name, detail) {
  controller.dispatchEvent(new CustomEvent(name, { bubbles: true, composed: true, detail }))
}

function togglePlay () {
  if (video.paused || video.ended) video.play().catch(() => {})
  else video.pause()
}

function toggleFullscreen () {
  const inside = document.fullscreenElement || document.webkitFullscreenElement
  request(inside ? 'mediaexitfullscreenrequest' : 'mediaenterfullscreenrequest')
}

function toggleCaptions () {
  const tracks = [...video.textTracks].filter((t) => t.kind === 'subtitles' || t.kind === 'captions')
  if (!tracks.length) return
  const showing = tracks.filter((t) => t.mode === 'showing')
  if (showing.length) showing.forEach((t) => { t.mode = 'disabled' })
  else tracks[0].mode = 'showing'
}

function seekBy (seconds) {
  const end = Number.isFinite(video.duration) ? video.duration : Infinity
  video.currentTime = Math.min(Math.max(0, video.currentTime + seconds), end)
}

function setVolume (delta) {
  video.muted = false
  video.volume = Math.round(Math.min(1, Math.max(0, video.volume + delta)) * 100) / 100
}

function showHelp () {
  let dialog = document.getElementById('shortcuts-dialog')
  if (!dialog) {
    dialog = document.createElement('dialog')
    dialog.id = 'shortcuts-dialog'
    dialog.className = 'dialog shortcuts-dialog'
    dialog.setAttribute('aria-labelledby', 'shortcuts-title')
    const rows = SHORTCUTS.map(([k, what]) => `<tr><th scope="row"><kbd>${k}</kbd></th><td>${what}</td></tr>`).join('')
    dialog.innerHTML = `<h2 id="shortcuts-title">Keyboard shortcuts</h2><table class="shortcuts">${rows}</table>
      <div class="dialog-actions"><button type="button" class="button" data-close>Close</button></div>`
    dialog.querySelector('[data-close]').addEventListener('click', () => dialog.close())
    ;(document.fullscreenElement || document.body).append(dialog)
  }
  if (!dialog.open) dialog.showModal()
}

const ACTIONS = {
  k: togglePlay,
  f: toggleFullscreen,
  m: () => { video.muted = !video.muted },
  c: toggleCaptions,
  ArrowUp: () => setVolume(VOLUME_STEP),
  ArrowDown: () => setVolume(-VOLUME_STEP),
  '?': showHelp
}

function onKey (event) {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return
  const el = focused()
  if (typing(el) || document.querySelector('dialog[open]')) return
  const key = event.key.length === 1 && event.key !== '?' ? event.key.toLowerCase() : event.key
  let action = ACTIONS[key]
  if (key === ' ') {
    if (pressable(el)) return // Space presses the focused button
    action = togglePlay
  } else if (key in SEEK_KEYS) {
    action = () => seekBy(SEEK_KEYS[key])
  } else if (/^[0-9]$/.test(key)) {
    action = () => { if (Number.isFinite(video.duration)) video.currentTime = video.duration * Number(key) / 10 }
  }
  if (!action) return
  // a focused slider or menu keeps its own arrows
  if (key.startsWith('Arrow') && el && (el.matches?.('[role=slider], [role=menu] *, [role=menuitemradio], input[type=range]') ||
      el.tagName === 'MEDIA-TIME-RANGE' || el.tagName === 'MEDIA-VOLUME-RANGE')) return
  event.preventDefault()
  action()
}

if (controller && video) {
  controller.setAttribute('nohotkeys', '')
  document.addEventListener('keydown', onKey)
  // the picture only: a quick double press on a control bar button is not a fullscreen request
  controller.addEventListener('dblclick', (event) => {
    if (event.target === controller || event.target === video) toggleFullscreen()
  })
}
