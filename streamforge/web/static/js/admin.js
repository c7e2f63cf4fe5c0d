// The admin page: change a user's role, quota or disabled flag; create invite links.
import { api, toast } from './api.js'

const usersError = document.getElementById('users-error')

function show (box, message) {
  box.textContent = message
  box.hidden = !message
}

async function patchUser (row, body) {
  show(usersError, '')
  try {
    const user = await api('PATCH', `/api/admin/users/${row.dataset.userId}`, body)
    toast(`${user.email} updated`)
    return user
  } catch (err) {
    show(usersError, err.message)
    return null
  }
}

document.getElementById('users')?.addEventListener('change', async (event) => {
  const select = event.target.closest('select[data-action=role]')
  if (!select) return
  const row = select.closest('tr')
  const user = await patchUser(row, { role: select.value })
  if (!user) window.location.reload()
})

document.getElementById('users')?.addEventListener('click', async (event) => {
  const button = event.target.closest('button[data-action=toggle]')
  if (!button) return
  const row = button.closest('tr')
  const disabled = row.dataset.disabled !== 'true'
  const user = await patchUser(row, { disabled })
  if (user) {
    row.dataset.disabled = String(user.disabled)
    button.textContent = user.disabled ? 'Enable' : 'Disable'
    button.classList.toggle('button-danger', !user.disabled)
    button.classList.toggle('button-ghost', !user.disabled)
  }
})

document.getElementById('users')?.addEventListener('submit', async (event) => {
  const form = event.target.closest('form[data-action=quota]')
  if (!form) return
  event.preventDefault()
  const value = (name, unit = 1) => {
    const text = form.elements[name].value.trim()
    return text === '' ? null : Math.round(Number(text) * unit)
  }
  // the storage quota is typed in MB or GB (binary: 1 GB = 1024 MB); the API takes bytes
  const quota = { max_bytes: value('max_bytes', Number(form.elements.unit.value)), max_videos: value('max_videos') }
  const user = await patchUser(form.closest('tr'), { quota })
  if (user) window.location.reload()
})

const inviteForm = document.getElementById('invite-form')
inviteForm?.addEventListener('submit', async (event) => {
  event.preventDefault()
  const box = document.getElementById('invite-error')
  show(box, '')
  try {
    const invite = await api('POST', '/api/admin/invites', {
      email: inviteForm.elements.email.value.trim(), role: inviteForm.elements.role.value
    })
    const out = document.getElementById('invite-url')
    out.value = invite.url
    document.getElementById('invite-result').hidden = false
    out.focus()
    out.select()
  } catch (err) {
    show(box, err.message)
  }
})

// Runners: revoking one stops it at once and hands its running work back to the queue
document.getElementById('runners')?.addEventListener('click', async (event) => {
  const button = event.target.closest('button[data-action=revoke-runner]')
  if (!button) return
  if (!window.confirm('Revoke this runner? Its running work goes back to the queue.')) return
  try {
    await api('DELETE', `/api/admin/runners/${button.dataset.runnerId}`)
    button.closest('tr').remove()
    toast('Runner revoked')
  } catch (err) {
    toast(err.message)
  }
})
