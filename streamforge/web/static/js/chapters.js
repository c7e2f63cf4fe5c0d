// Chapters in the player (watch and embed pages). The marks on the timeline are media-chrome's own:
// its <media-time-range> splits itself at the cues of the video's default chapters track, the
// WebVTT chapters file _player.html puts in the <video>. This adds what media-chrome lacks: a
// chapter menu in the control bar that seeks to a chapter, and the current chapter's title beside it.
const data = JSON.parse(document.getElementById('video-data').textContent)
const chapters = (data.video && data.video.chapters) || []
const video = document.getElementById('video')
const shell = document.getElementById('player-shell')

function clock (seconds) {
  const s = Math.floor(seconds)
  const h = Math.floor(s / 3600)
  const m = Math.floor((s % 3600) / 60)
  const pad = (n) => String(n).padStart(2, '0')
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`
}

/** The index of the chapter playing at `time`. */
function chapterAt (time) {
  let found = 0
  chapters.forEach((c, i) => { if (time + 0.05 >= c.start) found = i })
  return found
}

function buildMenu (button) {
  const menu = document.createElement('div')
  menu.className = 'chapter-menu'
  menu.id = 'chapter-menu'
  menu.setAttribute('role', 'menu')
  menu.setAttribute('aria-label', 'Chapters')
  menu.hidden = true
  chapters.forEach((c, i) => {
    const item = document.createElement('button')
    item.type = 'button'
    item.className = 'chapter-item'
    item.setAttribute('role', 'menuitemradio')
    item.dataset.index = String(i)
    const time = document.createElement('span')
    time.className = 'chapter-time'
    time.textContent = clock(c.start)
    const title = document.createElement('span')
    title.textContent = c.title
    item.append(time, title)
    item.addEventListener('click', () => {
      video.currentTime = c.start
      if (video.paused) video.play().catch(() => {})
      close(menu, button)
    })
    menu.append(item)
  })
  return menu
}

function close (menu, button) {
  menu.hidden = true
  button.setAttribute('aria-expanded', 'false')
}

function build () {
  const bar = document.querySelector('#player media-control-bar')
  if (!bar || !shell) return
  const button = document.createElement('button')
  button.type = 'button'
  button.className = 'chapter-button'
  button.id = 'chapter-button'
  button.setAttribute('aria-haspopup', 'menu')
  button.setAttribute('aria-expanded', 'false')
  button.setAttribute('aria-controls', 'chapter-menu')
  const label = document.createElement('span')
  label.className = 'chapter-title'
  label.id = 'chapter-title'
  button.append(label)
  const menu = buildMenu(button)
  const before = document.getElementById('captions-button')
  bar.insertBefore(button, before && before.parentElement === bar ? before : null)
  shell.append(menu)
  button.addEventListener('click', (event) => {
    event.stopPropagation()
    menu.hidden = !menu.hidden
    button.setAttribute('aria-expanded', String(!menu.hidden))
    if (!menu.hidden) menu.querySelector('[aria-checked="true"]')?.focus()
  })
  document.addEventListener('click', (event) => { if (!menu.contains(event.target)) close(menu, button) })
  menu.addEventListener('keydown', (event) => { if (event.key === 'Escape') { close(menu, button); button.focus() } })
  const update = () => {
    const i = chapterAt(video.currentTime || 0)
    label.textContent = chapters[i].title
    button.title = `Chapter: ${chapters[i].title} (chapters menu)`
    button.setAttribute('aria-label', `Chapter: ${chapters[i].title}. Open the chapters menu`)
    menu.querySelectorAll('.chapter-item').forEach((el) => el.setAttribute('aria-checked', String(el.dataset.index === String(i))))
  }
  video.addEventListener('timeupdate', update)
  video.addEventListener('seeked', update)
  update()
}

if (chapters.length && video) build()
