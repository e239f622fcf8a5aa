// Native half of node-memory-pressure on Linux: only system calls and fd plumbing (eventfd(2), uv_poll
// on the Node event loop, reading eventfd counters, close(2), malloc_trim(3)). Policy lives in JS.

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cmath>
#include <string>
#include <unordered_set>

// A worker terminated while the addon runs (loading, or inside watch()) makes every call into JS
// fail with napi_pending_exception; without this node-addon-api turns the throw of that failure into
// a fatal error that aborts the whole process (napi-inl.h, Error::ThrowAsJavaScriptException). With
// it the throw is dropped: nobody is left to catch it. Defined here so every build has it.
#ifndef NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS
#define NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS
#endif
#include <napi.h>
#include <uv.h>

namespace {

// The TypeScript side exports these numbers as POLL_READABLE/POLL_DISCONNECT/POLL_PRIORITIZED and
// hands callbacks the libuv bits unchanged, so they must not drift.
static_assert(UV_READABLE == 1, "POLL_READABLE in src/native.ts");
static_assert(UV_DISCONNECT == 4, "POLL_DISCONNECT in src/native.ts");
static_assert(UV_PRIORITIZED == 8, "POLL_PRIORITIZED in src/native.ts");

// Number.MAX_SAFE_INTEGER: an eventfd counter can reach 2^64-2 (eventfd(2)), which a double
// cannot hold exactly.
constexpr double kMaxSafeInteger = 9007199254740991.0;

struct Addon;
class PollWatcher;

// One fd being polled. Owned by libuv from uv_poll_init until the close callback, which is the
// only place it is freed; the JS PollWatcher only points at it while the watch is open.
struct Watch {
  uv_poll_t handle;
  Addon* addon = nullptr;
  int fd = -1;
  bool closing = false;
  napi_ref callback = nullptr;
  napi_async_context async_context = nullptr;
  napi_ref resource = nullptr;
  PollWatcher* wrapper = nullptr;
  Watch* prev = nullptr;
  Watch* next = nullptr;
};

// Per-environment state (main thread and every worker has its own): no static mutable state, so
// the addon is safe to load in several environments at once.
struct Addon {
  napi_env env = nullptr;
  Napi::FunctionReference watcher_constructor;
  // Every Watch not yet freed, open or closing: teardown has to wait for all of them.
  Watch* watches = nullptr;
  bool tearing_down = false;
  napi_async_cleanup_hook_handle cleanup_hook = nullptr;
  // Fds this addon created (eventfd, open) that no Watch owns yet: closed at teardown, so a worker
  // terminated between two JS statements leaks none of them.
  std::unordered_set<int> fds;
};

void Link(Addon* addon, Watch* w) {
  w->next = addon->watches;
  if (w->next != nullptr) w->next->prev = w;
  addon->watches = w;
}

void Unlink(Addon* addon, Watch* w) {
  if (w->prev != nullptr) w->prev->next = w->next;
  else addon->watches = w->next;
  if (w->next != nullptr) w->next->prev = w->prev;
  w->prev = w->next = nullptr;
}

void DetachWrapper(Watch* w);

// Releases the JS-side resources of a Watch that libuv no longer uses.
void FreeWatch(Watch* w) {
  // A failure in watch() can leave the JS object without a way to reach it (napi_unwrap fails in
  // a terminating environment): the object must not keep a pointer to freed memory.
  DetachWrapper(w);
  napi_env env = w->addon->env;
  // During environment teardown Node seals the current handle scope; napi_async_destroy may
  // create handles, so give it a scope of its own.
  napi_handle_scope scope = nullptr;
  bool scoped = napi_open_handle_scope(env, &scope) == napi_ok;
  if (w->callback != nullptr) napi_delete_reference(env, w->callback);
  if (w->async_context != nullptr) napi_async_destroy(env, w->async_context);
  if (w->resource != nullptr) napi_delete_reference(env, w->resource);
  if (scoped) napi_close_handle_scope(env, scope);
  delete w;
}

void FinishTeardownIfIdle(Addon* addon) {
  if (!addon->tearing_down || addon->watches != nullptr || addon->cleanup_hook == nullptr) return;
  napi_async_cleanup_hook_handle hook = addon->cleanup_hook;
  addon->cleanup_hook = nullptr;
  napi_remove_async_cleanup_hook(hook);
}

void OnHandleClosed(uv_handle_t* handle) {
  Watch* w = static_cast<Watch*>(handle->data);
  Addon* addon = w->addon;
  Unlink(addon, w);
  FreeWatch(w);
  FinishTeardownIfIdle(addon);
}

void CloseWatch(Watch* w, bool close_fd);

class PollWatcher : public Napi::ObjectWrap<PollWatcher> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "PollWatcher",
                       {
                           InstanceAccessor<&PollWatcher::Fd>("fd", napi_enumerable),
                           InstanceAccessor<&PollWatcher::Closed>("closed", napi_enumerable),
                           InstanceMethod<&PollWatcher::Ref>("ref"),
                           InstanceMethod<&PollWatcher::Unref>("unref"),
                           InstanceMethod<&PollWatcher::HasRef>("hasRef"),
                           InstanceMethod<&PollWatcher::Close>("close"),
                       });
  }

  explicit PollWatcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PollWatcher>(info) {
    // Only watch() may build one: it passes the Watch as an External, which JS cannot forge.
    if (info.Length() != 1 || !info[0].IsExternal()) {
      napi_throw_type_error(info.Env(), "ERR_ILLEGAL_CONSTRUCTOR",
                            "PollWatcher cannot be constructed directly; use watch()");
      return;
    }
    watch_ = info[0].As<Napi::External<Watch>>().Data();
    // From here the Watch knows its object, so every path that frees the Watch detaches it.
    if (watch_ != nullptr) watch_->wrapper = this;
  }

  // The JS object was garbage-collected (or its environment is going away) while the watch was
  // still open: close it rather than leak the fd and the poll handle.
  ~PollWatcher() override {
    if (watch_ != nullptr) CloseWatch(watch_, true);
  }

  void Detach() { watch_ = nullptr; }

 private:
  Napi::Value Fd(const Napi::CallbackInfo& info) {
    // After close the number may already name some other file; -1 cannot be misused.
    return Napi::Number::New(info.Env(), watch_ != nullptr ? watch_->fd : -1);
  }

  Napi::Value Closed(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), watch_ == nullptr);
  }

  void Ref(const Napi::CallbackInfo&) {
    if (watch_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(&watch_->handle));
  }

  void Unref(const Napi::CallbackInfo&) {
    if (watch_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(&watch_->handle));
  }

  Napi::Value HasRef(const Napi::CallbackInfo& info) {
    bool has = watch_ != nullptr && uv_has_ref(reinterpret_cast<uv_handle_t*>(&watch_->handle));
    return Napi::Boolean::New(info.Env(), has);
  }

  void Close(const Napi::CallbackInfo&) {
    if (watch_ != nullptr) CloseWatch(watch_, true);
  }

  Watch* watch_ = nullptr;
};

// Stops polling and hands the handle back to libuv; the Watch itself is freed in OnHandleClosed.
// Idempotent, and safe from inside the watch's own callback: libuv does not run a close callback
// before the current poll callback has returned.
void DetachWrapper(Watch* w) {
  if (w->wrapper == nullptr) return;
  w->wrapper->Detach();
  w->wrapper = nullptr;
}

void CloseWatch(Watch* w, bool close_fd) {
  if (w->closing) return;
  w->closing = true;
  DetachWrapper(w);
  // libuv poll docs: stop the handle before closing its fd. uv_poll_stop removes the fd from
  // epoll right away (uv_close would too, but the order is then an implementation detail), so
  // closing it afterwards cannot leave a stale registration behind for a reused fd number.
  uv_poll_stop(&w->handle);
  uv_close(reinterpret_cast<uv_handle_t*>(&w->handle), OnHandleClosed);
  // close(2): no EINTR retry, on Linux the fd is released even when close reports EINTR.
  if (close_fd) close(w->fd);
}

// Hands an exception thrown by the JS callback to process 'uncaughtException', as Node does for
// its own callbacks. When JS may no longer run (worker terminating), nothing is pending and the
// failure is dropped: there is nobody left to tell.
void ReportCallbackException(napi_env env) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) != napi_ok || !pending) return;
  napi_value error = nullptr;
  if (napi_get_and_clear_last_exception(env, &error) != napi_ok) return;
  napi_fatal_exception(env, error);
}

void OnPoll(uv_poll_t* handle, int status, int events) {
  Watch* w = static_cast<Watch*>(handle->data);
  Addon* addon = w->addon;
  // Defensive: uv_poll_stop already drops events epoll reported for this fd in the current batch,
  // and once teardown has begun no JS callback may run.
  if (w->closing || addon->tearing_down) return;
  napi_env env = addon->env;
  napi_handle_scope scope = nullptr;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value recv = nullptr;
  napi_value callback = nullptr;
  napi_value argv[2] = {nullptr, nullptr};
  if (napi_get_global(env, &recv) == napi_ok &&
      napi_get_reference_value(env, w->callback, &callback) == napi_ok && callback != nullptr &&
      napi_create_int32(env, status, &argv[0]) == napi_ok &&
      napi_create_int32(env, events, &argv[1]) == napi_ok) {
    // napi_make_callback, not napi_call_function: it enters the watch's async context and drains
    // process.nextTick and microtasks afterwards, like every callback Node itself makes.
    if (napi_make_callback(env, w->async_context, recv, callback, 2, argv, nullptr) != napi_ok) {
      ReportCallbackException(env);
    }
  }
  // `w` may be closing now (the callback may have closed it) but is still allocated: its close
  // callback runs in a later loop phase.
  napi_close_handle_scope(env, scope);
}

// Environment teardown (process exit, worker exit or terminate). uv_close is asynchronous and the
// loop must have no open handles when it is closed (libuv asserts otherwise), so this is an
// async hook: it stays registered until the last close callback has run.
void OnEnvTeardown(napi_async_cleanup_hook_handle hook, void* data) {
  Addon* addon = static_cast<Addon*>(data);
  addon->cleanup_hook = hook;
  addon->tearing_down = true;
  for (Watch* w = addon->watches; w != nullptr; w = w->next) CloseWatch(w, true);
  // Node runs cleanup hooks after in-flight requests (an fs.write on one of these fds) completed,
  // so no request can still be using a number closed here (src/env.cc, RunCleanup).
  for (int fd : addon->fds) close(fd);
  addon->fds.clear();
  FinishTeardownIfIdle(addon);
}

void ThrowTypeError(Napi::Env env, const char* code, const std::string& message) {
  napi_throw_type_error(env, code, message.c_str());
}

const char* TypeName(const Napi::Value& value) {
  switch (value.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "boolean";
    case napi_number: return "number";
    case napi_string: return "string";
    case napi_symbol: return "symbol";
    case napi_object: return "object";
    case napi_function: return "function";
    case napi_external: return "external";
    case napi_bigint: return "bigint";
  }
  return "unknown";
}

// Reads argument `index` as an fd. Negative integers are accepted (the system call then answers
// EBADF); anything that is not an int32 integer throws. Returns false with an exception pending.
bool GetFd(const Napi::CallbackInfo& info, size_t index, int* fd) {
  Napi::Value value = info[index];
  if (!value.IsNumber()) {
    ThrowTypeError(info.Env(), "ERR_INVALID_ARG_TYPE",
                   std::string("fd must be a number, received ") + TypeName(value));
    return false;
  }
  double number = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(number) || std::trunc(number) != number || number < INT32_MIN ||
      number > INT32_MAX) {
    char received[32];
    snprintf(received, sizeof received, "%.17g", number);
    napi_throw_range_error(
        info.Env(), "ERR_OUT_OF_RANGE",
        (std::string("fd must be an integer in the int32 range, received ") + received).c_str());
    return false;
  }
  *fd = static_cast<int>(number);
  return true;
}

Napi::Value Eventfd(const Napi::CallbackInfo& info) {
  // eventfd(2): non-blocking so that readEventfd can drain it to EAGAIN on the loop thread.
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return Napi::Number::New(info.Env(), -errno);
  info.Env().GetInstanceData<Addon>()->fds.insert(fd);
  return Napi::Number::New(info.Env(), fd);
}

// open(2) with O_CLOEXEC, the fd owned by this environment until close(): a file opened from JS
// (fs.openSync) would outlive a worker terminated before its close ran.
Napi::Value Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) {
    ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", std::string("path must be a string, received ") + TypeName(info[0]));
    return env.Undefined();
  }
  if (!info[1].IsString()) {
    ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", std::string("mode must be 'r' or 'w', received ") + TypeName(info[1]));
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  std::string mode = info[1].As<Napi::String>().Utf8Value();
  if ((mode != "r" && mode != "w") || path.find('\0') != std::string::npos) {
    ThrowTypeError(env, "ERR_INVALID_ARG_VALUE", "mode must be 'r' or 'w' and path must hold no NUL byte");
    return env.Undefined();
  }
  int fd;
  do {
    fd = open(path.c_str(), (mode == "r" ? O_RDONLY : O_WRONLY) | O_CLOEXEC);
  } while (fd == -1 && errno == EINTR);
  if (fd < 0) return Napi::Number::New(env, -errno);
  env.GetInstanceData<Addon>()->fds.insert(fd);
  return Napi::Number::New(env, fd);
}

Napi::Value ReadEventfd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return env.Undefined();
  uint64_t counter = 0;
  ssize_t n;
  do {
    n = read(fd, &counter, sizeof counter);
  } while (n == -1 && errno == EINTR);
  if (n == -1) {
    // eventfd(2): a non-blocking eventfd whose counter is zero fails with EAGAIN.
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, 0);
    return Napi::Number::New(env, -errno);
  }
  // eventfd(2) always transfers exactly 8 bytes; anything else is not an eventfd.
  if (n != static_cast<ssize_t>(sizeof counter)) return Napi::Number::New(env, -EINVAL);
  double value = static_cast<double>(counter);
  return Napi::Number::New(env, value > kMaxSafeInteger ? kMaxSafeInteger : value);
}

Napi::Value WatchFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Addon* addon = env.GetInstanceData<Addon>();
  int fd;
  if (!GetFd(info, 0, &fd)) return env.Undefined();
  if (!info[1].IsString()) {
    ThrowTypeError(env, "ERR_INVALID_ARG_TYPE",
                   std::string("mode must be 'readable' or 'priority', received ") +
                       TypeName(info[1]));
    return env.Undefined();
  }
  std::string mode = info[1].As<Napi::String>().Utf8Value();
  int events;
  if (mode == "readable") {
    events = UV_READABLE;
  } else if (mode == "priority") {
    // Kernfs/sysfs, procfs sysctl and PSI files signal changes with POLLPRI (often with
    // POLLERR); libuv reports those as UV_PRIORITIZED rather than as an error.
    events = UV_PRIORITIZED;
  } else {
    ThrowTypeError(env, "ERR_INVALID_ARG_VALUE",
                   "mode must be 'readable' or 'priority', received '" + mode + "'");
    return env.Undefined();
  }
  if (!info[2].IsFunction()) {
    ThrowTypeError(env, "ERR_INVALID_ARG_TYPE",
                   std::string("callback must be a function, received ") + TypeName(info[2]));
    return env.Undefined();
  }
  if (fd < 0) return Napi::Number::New(env, -EBADF);

  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    Napi::Error::New(env, "napi_get_uv_event_loop failed").ThrowAsJavaScriptException();
    return env.Undefined();
  }

  // The steps that can throw come first, while nothing has been registered with libuv yet.
  Watch* w = new Watch();
  w->addon = addon;
  w->fd = fd;
  Napi::Object object = addon->watcher_constructor.New({Napi::External<Watch>::New(env, w)});
  if (env.IsExceptionPending() || object.IsEmpty()) {
    FreeWatch(w);
    return env.Undefined();
  }
  PollWatcher* wrapper = PollWatcher::Unwrap(object);
  napi_value name = Napi::String::New(env, "node-memory-pressure:PollWatcher");
  napi_value resource = Napi::Object::New(env);
  if (wrapper == nullptr ||
      napi_create_reference(env, info[2], 1, &w->callback) != napi_ok ||
      // A fresh object is the async resource, so async_hooks and AsyncLocalStorage see callbacks
      // in the context watch() was called from. Not the watcher itself: Node 26 holds the resource
      // strongly, which would keep an unclosed watcher from ever being finalized. Node 20 holds it
      // weakly (AsyncLocalStorage keeps its store on it), so the watch holds it for its lifetime.
      napi_create_reference(env, resource, 1, &w->resource) != napi_ok ||
      napi_async_init(env, resource, name, &w->async_context) != napi_ok) {
    FreeWatch(w);
    if (!env.IsExceptionPending()) {
      Napi::Error::New(env, "could not set up the watcher's callback").ThrowAsJavaScriptException();
    }
    return env.Undefined();
  }

  // uv_poll_init answers EEXIST when the fd is already polled on this loop and EPERM for files
  // epoll cannot watch (regular files); on failure the fd stays the caller's.
  int err = uv_poll_init(loop, &w->handle, fd);
  if (err != 0) {
    FreeWatch(w);
    return Napi::Number::New(env, err);
  }
  w->handle.data = w;
  Link(addon, w);
  // The Watch closes the fd from now on (even when uv_poll_start fails below: CloseWatch(w, false)
  // leaves it to the caller, who still holds the number, so keep it owned then).
  addon->fds.erase(fd);
  // Unref'd by default: watching must not keep the process alive unless asked to (ref()).
  uv_unref(reinterpret_cast<uv_handle_t*>(&w->handle));
  err = uv_poll_start(&w->handle, events, OnPoll);
  if (err != 0) {
    CloseWatch(w, false);
    addon->fds.insert(fd);
    return Napi::Number::New(env, err);
  }
  return object;
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return env.Undefined();
  env.GetInstanceData<Addon>()->fds.erase(fd);
  // close(2): not retried on EINTR, because Linux has already released the fd by then.
  return Napi::Number::New(env, close(fd) == 0 ? 0 : -errno);
}

// The allocator functions are looked up at run time rather than linked, so that one build loads on
// every C library: mallinfo2 exists from glibc 2.33 on (the glibc builds need nothing newer than
// 2.17), and musl has neither it nor malloc_trim. Function-local statics: resolved once, thread-safe.
using MallocTrimFn = int (*)(size_t);

// glibc's struct mallinfo2 (malloc.h), declared here because musl's headers lack it.
struct MallInfo2 {
  size_t arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost;
};
using MallInfo2Fn = MallInfo2 (*)();

MallocTrimFn ResolveMallocTrim() {
  static const MallocTrimFn fn = reinterpret_cast<MallocTrimFn>(dlsym(RTLD_DEFAULT, "malloc_trim"));
  return fn;
}

Napi::Value MallocTrim(const Napi::CallbackInfo& info) {
  MallocTrimFn malloc_trim_fn = ResolveMallocTrim();
  if (malloc_trim_fn == nullptr) return Napi::Number::New(info.Env(), -ENOSYS);
  // malloc_trim(3): returns free pages at the top of the heap and (since glibc 2.8) whole free
  // pages inside every arena to the kernel.
  return Napi::Number::New(info.Env(), malloc_trim_fn(0) != 0 ? 1 : 0);
}

Napi::Value MallocInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  static const MallInfo2Fn mallinfo2_fn =
      reinterpret_cast<MallInfo2Fn>(dlsym(RTLD_DEFAULT, "mallinfo2"));
  // Without mallinfo2 there is no answer: mallinfo(3)'s int fields wrap past 2 GiB.
  if (mallinfo2_fn == nullptr) return Napi::Number::New(env, -ENOSYS);
  // mallinfo2(3), summed over every arena: bytes taken from the system by brk/arenas, free bytes
  // held in them (reusable by the next allocations without the kernel), bytes in mmap'd chunks,
  // and the part of the free bytes at the top that trimming would release.
  MallInfo2 mi = mallinfo2_fn();
  Napi::Array out = Napi::Array::New(env, 4);
  out.Set(0u, Napi::Number::New(env, static_cast<double>(mi.arena)));
  out.Set(1u, Napi::Number::New(env, static_cast<double>(mi.fordblks)));
  out.Set(2u, Napi::Number::New(env, static_cast<double>(mi.hblkhd)));
  out.Set(3u, Napi::Number::New(env, static_cast<double>(mi.keepcost)));
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  Addon* addon = new Addon();
  addon->env = env;
  env.SetInstanceData<Addon>(addon);
  if (napi_add_async_cleanup_hook(env, OnEnvTeardown, addon, &addon->cleanup_hook) != napi_ok) {
    Napi::Error::New(env, "napi_add_async_cleanup_hook failed").ThrowAsJavaScriptException();
    return exports;
  }
  Napi::Function constructor = PollWatcher::Define(env);
  if (env.IsExceptionPending()) return exports;
  addon->watcher_constructor = Napi::Persistent(constructor);

  exports.Set("platformSupported", Napi::Boolean::New(env, true));
  exports.Set("eventfd", Napi::Function::New<Eventfd>(env, "eventfd"));
  exports.Set("readEventfd", Napi::Function::New<ReadEventfd>(env, "readEventfd"));
  exports.Set("watch", Napi::Function::New<WatchFd>(env, "watch"));
  exports.Set("close", Napi::Function::New<Close>(env, "close"));
  exports.Set("open", Napi::Function::New<Open>(env, "open"));
  exports.Set("mallocTrim", Napi::Function::New<MallocTrim>(env, "mallocTrim"));
  exports.Set("mallocTrimSupported", Napi::Boolean::New(env, ResolveMallocTrim() != nullptr));
  exports.Set("mallocInfo", Napi::Function::New<MallocInfo>(env, "mallocInfo"));
  return exports;
}

}  // namespace

NODE_API_MODULE(memory_pressure, Init)
