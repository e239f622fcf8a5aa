// Stand-in for the native addon where eventfd(2) and Linux polling semantics do not exist (macOS,
// Windows): same exports, `platformSupported: false`, every function answers -ENOSYS.

#include <errno.h>

#include <napi.h>

#ifndef ENOSYS
#define ENOSYS 38  // The Linux value, for C libraries that do not define it at all.
#endif

namespace {

// Arguments are ignored: with nothing to do there is nothing to validate, and callers are
// expected to check `platformSupported` before calling anything.
Napi::Value NotSupported(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), -ENOSYS);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("platformSupported", Napi::Boolean::New(env, false));
  exports.Set("eventfd", Napi::Function::New<NotSupported>(env, "eventfd"));
  exports.Set("readEventfd", Napi::Function::New<NotSupported>(env, "readEventfd"));
  exports.Set("watch", Napi::Function::New<NotSupported>(env, "watch"));
  exports.Set("close", Napi::Function::New<NotSupported>(env, "close"));
  exports.Set("open", Napi::Function::New<NotSupported>(env, "open"));
  exports.Set("mallocTrim", Napi::Function::New<NotSupported>(env, "mallocTrim"));
  exports.Set("mallocTrimSupported", Napi::Boolean::New(env, false));
  exports.Set("mallocInfo", Napi::Function::New<NotSupported>(env, "mallocInfo"));
  return exports;
}

}  // namespace

NODE_API_MODULE(memory_pressure, Init)
