# Builds the native addon `memory_pressure.node`: the Linux implementation on Linux, and elsewhere a
# stub with the same exports, so that `npm install` succeeds on macOS and Windows too.
{
  'targets': [
    {
      'target_name': 'memory_pressure',
      # node-addon-api's gyp target adds its include directory and turns C++ exceptions off
      # (-fno-exceptions and NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS, the current name of
      # NAPI_DISABLE_CPP_EXCEPTIONS; defining both draws a redefinition warning): every status is
      # checked instead.
      'dependencies': [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api",
      ],
      'defines': [
        # Version 8 is the first with napi_add_async_cleanup_hook, which worker teardown needs.
        'NAPI_VERSION=8',
      ],
      'cflags_cc': ['-Wall', '-Wextra'],
      'conditions': [
        ['OS=="linux"', {
          'sources': ['native/memory_pressure_linux.cc'],
          # dlsym lives in libdl before glibc 2.34 (in libc since; libdl.so.2 stays as a stub).
          'libraries': ['-ldl'],
        }, {
          'sources': ['native/memory_pressure_stub.cc'],
        }],
      ],
    },
  ],
}
