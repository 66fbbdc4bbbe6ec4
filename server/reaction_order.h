#ifndef FL_SERVER_REACTION_ORDER_H_
#define FL_SERVER_REACTION_ORDER_H_

// gRPC runs a callback call's reactions (Start, OnReadDone, OnWriteDone, OnCancel,
// OnDone) on its own threads and passes the call from one to the next inside libgrpc,
// which Debian ships without ThreadSanitizer instrumentation. TSan then cannot see that
// a reaction comes after the reactor was built or after the reaction before it, and
// reports races that cannot happen. Each reaction marks itself on its reactor (acquire
// on entry, release on exit) so the order gRPC guarantees becomes visible to TSan;
// reactions that do overlap (OnCancel beside OnReadDone) stay unordered and are still
// checked. Outside TSan builds all of this compiles to nothing.

#if defined(__SANITIZE_THREAD__)
#define FL_TSAN_ANNOTATE 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FL_TSAN_ANNOTATE 1
#endif
#endif

#if defined(FL_TSAN_ANNOTATE)
#include <sanitizer/tsan_interface.h>
#endif

namespace fl::internal {

// Entering a reaction of `reactor`: everything earlier reactions did is visible.
inline void ReactionBegins(const void* reactor) {
#if defined(FL_TSAN_ANNOTATE)
  __tsan_acquire(const_cast<void*>(reactor));
#else
  (void)reactor;
#endif
}

// Leaving a reaction of `reactor`: what it did is visible to later reactions.
inline void ReactionEnds(const void* reactor) {
#if defined(FL_TSAN_ANNOTATE)
  __tsan_release(const_cast<void*>(reactor));
#else
  (void)reactor;
#endif
}

// ReactionBegins on construction, ReactionEnds on destruction. Not for OnDone, which
// deletes the reactor: call ReactionBegins there.
class ReactionScope {
 public:
  explicit ReactionScope(const void* reactor) : reactor_(reactor) { ReactionBegins(reactor_); }
  ~ReactionScope() { ReactionEnds(reactor_); }
  ReactionScope(const ReactionScope&) = delete;
  ReactionScope& operator=(const ReactionScope&) = delete;

 private:
  const void* const reactor_;
};

}  // namespace fl::internal

#endif  // FL_SERVER_REACTION_ORDER_H_
