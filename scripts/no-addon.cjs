// Runs when neither a prebuild nor a compiler could provide the native addon: the install goes on
// without it, because the simulated backend needs no addon.
'use strict'
console.warn(
  'node-memory-pressure: no prebuilt addon matches this platform and compiling one failed (see above). ' +
    'Installed without it: the kernel backends are unavailable (a warning with code ERR_NATIVE_UNAVAILABLE ' +
    'says so once at run time); the simulated backend works.',
)
