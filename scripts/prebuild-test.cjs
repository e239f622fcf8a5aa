// Run by node-gyp-build at install time (package.json "prebuild.test"): it succeeds only when a shipped
// prebuild for this platform loads, so a git checkout (no prebuilds/) always compiles native/ from source.
'use strict'
const path = require('node:path')

// node-gyp-build reads PREBUILDS_ONLY when it is first required: without it a stale build/ would pass.
process.env.PREBUILDS_ONLY = '1'
const binding = require('node-gyp-build')(path.join(__dirname, '..'))
if (typeof binding.eventfd !== 'function' || typeof binding.platformSupported !== 'boolean') {
  throw new Error('the prebuild is not the node-memory-pressure addon')
}
