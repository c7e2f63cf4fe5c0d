// The login page: after a refused sign-in the server's page is the same whatever email was typed (so it
// tells nothing about which exist), so the browser puts the email back itself, from this tab's storage.
const form = document.getElementById('password-form')
if (form) {
  const email = form.elements.email
  const KEY = 'streamforge-login-email'
  if (!email.value) {
    email.value = sessionStorage.getItem(KEY) || ''
    if (email.value && document.querySelector('#login-error')) form.elements.password.focus()
  }
  form.addEventListener('submit', () => sessionStorage.setItem(KEY, email.value))
}
