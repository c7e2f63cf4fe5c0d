// Several audio tracks (languages, commentary): hls.js's audio tracks are published as the <video>'s
// audioTracks (the media-tracks polyfill, as media-chrome's own hls-video element does), so
// media-chrome's audio track menu lists them by name and language and switches between them. The
// menu button shows only when there is a choice.

/** Publish `hls`'s audio tracks on `video` and follow the viewer's choice; `button` is the menu's button. */
export function wireAudioTracks (hls, Hls, video, button) {
  if (typeof video.addAudioTrack !== 'function') return
  const clear = () => {
    for (const track of [...video.audioTracks]) video.removeAudioTrack(track)
  }
  hls.on(Hls.Events.AUDIO_TRACKS_UPDATED, (event, info) => {
    clear()
    for (const a of info.audioTracks) {
      const track = video.addAudioTrack(a.default ? 'main' : 'alternative', a.name, a.lang)
      track.id = String(a.id)
      if (a.id === hls.audioTrack) track.enabled = true
    }
    if (button) button.hidden = info.audioTracks.length < 2
  })
  video.audioTracks.addEventListener('change', () => {
    const chosen = [...video.audioTracks].find((t) => t.enabled)
    const id = chosen ? Number(chosen.id) : -1
    if (id >= 0 && id !== hls.audioTrack && hls.audioTracks.some((t) => t.id === id)) hls.audioTrack = id
  })
  hls.on(Hls.Events.AUDIO_TRACK_SWITCHED, (event, info) => {
    for (const track of video.audioTracks) {
      if (track.id === String(info.id) && !track.enabled) track.enabled = true
    }
    video.dataset.audioTrack = String(info.id)
  })
  hls.once(Hls.Events.DESTROYING, clear)
}
