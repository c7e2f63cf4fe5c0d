// The colour theme, before the page is drawn (a classic script in <head>): the viewer's choice from the
// header's switch if they made one, else the system's (prefers-color-scheme), followed as it changes.
;(function () {
  var KEY = 'streamforge-theme'
  var root = document.documentElement
  var system = window.matchMedia('(prefers-color-scheme: light)')
  function stored () {
    try { return localStorage.getItem(KEY) } catch (e) { return null }
  }
  function apply () {
    var theme = stored() || (system.matches ? 'light' : 'dark')
    root.dataset.theme = theme
    var button = document.getElementById('theme-switch')
    if (button) {
      var next = theme === 'light' ? 'dark' : 'light'
      button.setAttribute('aria-label', 'Switch to the ' + next + ' theme')
      button.title = 'Switch to the ' + next + ' theme'
      button.dataset.theme = theme
    }
  }
  apply()
  system.addEventListener('change', apply)
  document.addEventListener('DOMContentLoaded', function () {
    apply()
    var button = document.getElementById('theme-switch')
    if (!button) return
    button.addEventListener('click', function () {
      var next = root.dataset.theme === 'light' ? 'dark' : 'light'
      try { localStorage.setItem(KEY, next) } catch (e) {}
      apply()
    })
  })
})()
