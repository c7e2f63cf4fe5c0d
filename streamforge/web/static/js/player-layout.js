// The player's layout beside watch.js: captions are lifted above the control bar by exactly the
// controls' height (app.css reads --captions-lift), on any player size from a phone to fullscreen.
const controller = document.getElementById('player')

function liftCaptions () {
  const range = controller.querySelector('media-time-range')
  if (!range) return
  const box = controller.getBoundingClientRect()
  const lift = Math.max(0, box.bottom - range.getBoundingClientRect().top) + 6
  if (lift > 6 && lift < box.height / 2) controller.style.setProperty('--captions-lift', `${Math.round(lift)}px`)
}

if (controller) {
  new ResizeObserver(liftCaptions).observe(controller)
  customElements.whenDefined('media-controller').then(liftCaptions)
}
