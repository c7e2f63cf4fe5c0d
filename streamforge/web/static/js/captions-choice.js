// Remembers the viewer's captions choice (a language, or off) across videos and visits, and applies it
// when a video's subtitle tracks appear (hls.js adds them from the master's SUBTITLES group).
const KEY = 'streamforge-captions'

function subtitleTracks (video) {
  return [...video.textTracks].filter((t) => t.kind === 'subtitles' || t.kind === 'captions')
}

function stored () {
  try {
    return localStorage.getItem(KEY)
  } catch {
    return null
  }
}

function store (value) {
  try {
    localStorage.setItem(KEY, value)
  } catch {
    // private mode: the choice lasts for this page only
  }
}

/** Apply the remembered choice to `video`'s subtitle tracks, then remember what the viewer picks. */
export function rememberCaptions (video) {
  let applied = false
  const apply = () => {
    const tracks = subtitleTracks(video)
    if (!tracks.length) return
    const want = stored()
    if (want && want !== 'off') {
      const match = tracks.find((t) => t.language === want) ||
        tracks.find((t) => t.language.split('-')[0] === want.split('-')[0])
      if (match) {
        for (const t of tracks) if (t !== match && t.mode === 'showing') t.mode = 'disabled'
        match.mode = 'showing'
      }
    }
    applied = true
  }
  video.textTracks.addEventListener('addtrack', () => setTimeout(apply, 0))
  video.textTracks.addEventListener('change', () => {
    if (!applied) return
    const tracks = subtitleTracks(video)
    if (!tracks.length) return
    const showing = tracks.find((t) => t.mode === 'showing')
    store(showing ? showing.language || showing.label : 'off')
  })
  apply()
}
