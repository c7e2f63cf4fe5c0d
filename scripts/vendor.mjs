// Copy the prebuilt browser files of our npm dependencies into streamforge/web/static/vendor/.
// Runs by itself after `npm ci` / `npm install` (the postinstall script); `npm run vendor` reruns it.
// No bundler: every file copied is a ready-made browser build shipped in the package.
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const modules = join(root, 'node_modules')
const out = join(root, 'streamforge', 'web', 'static', 'vendor')

// [package, file in the package, file under vendor/]
const files = [
  ['hls.js', 'dist/hls.min.js', 'hls.js/hls.min.js'],
  ['hls.js', 'LICENSE', 'hls.js/LICENSE'],
  ['media-chrome', 'dist/iife/all.js', 'media-chrome/media-chrome.js'],
  ['media-chrome', 'LICENSE', 'media-chrome/LICENSE'],
  ['uppy', 'dist/uppy.min.mjs', 'uppy/uppy.min.mjs'],
  ['uppy', 'dist/uppy.min.css', 'uppy/uppy.min.css'],
]
// media-tracks ships unbundled ES modules with relative imports: copy the folder as is
const folders = [['media-tracks', 'dist', 'media-tracks', /\.js$/]]

function version (pkg) {
  return JSON.parse(readFileSync(join(modules, pkg, 'package.json'), 'utf8')).version
}

const missing = [...files, ...folders].map(([pkg]) => pkg).filter((pkg) => !existsSync(join(modules, pkg, 'package.json')))
if (missing.length) {
  console.error(`vendor: ${[...new Set(missing)].join(', ')} not installed; run \`npm ci\` at the repository root first`)
  process.exit(1)
}

rmSync(out, { recursive: true, force: true })
const versions = {}
for (const [pkg, from, to] of files) {
  const src = join(modules, pkg, from)
  const dest = join(out, to)
  mkdirSync(dirname(dest), { recursive: true })
  copyFileSync(src, dest)
  versions[pkg] = version(pkg)
}
for (const [pkg, from, to, pattern] of folders) {
  const dest = join(out, to)
  mkdirSync(dest, { recursive: true })
  for (const name of readdirSync(join(modules, pkg, from))) {
    if (pattern.test(name)) copyFileSync(join(modules, pkg, from, name), join(dest, name))
  }
  for (const name of ['LICENSE', 'LICENSE.md']) {
    if (existsSync(join(modules, pkg, name))) copyFileSync(join(modules, pkg, name), join(dest, name))
  }
  versions[pkg] = version(pkg)
}
writeFileSync(join(out, 'versions.json'), JSON.stringify(versions, null, 2) + '\n')
console.log(`vendor: copied ${Object.entries(versions).map(([k, v]) => `${k}@${v}`).join(', ')} into ${out}`)
