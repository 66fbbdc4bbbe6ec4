#ifndef FL_SDK_INCLUDE_FL_EXPORT_H_
#define FL_SDK_INCLUDE_FL_EXPORT_H_

// FL_EXPORT marks the public API. The SDK is compiled with hidden visibility
// (-fvisibility=hidden -fvisibility-inlines-hidden), so only what carries FL_EXPORT
// reaches the dynamic symbol table of libfl_client.so, libfl_server.so and libfl_sim.so.
// The same objects go into the static libraries, so the attribute is unconditional; in a
// consumer it only restates the default.
#if defined(__GNUC__) || defined(__clang__)
#define FL_EXPORT __attribute__((visibility("default")))
#else
#define FL_EXPORT
#endif

#endif  // FL_SDK_INCLUDE_FL_EXPORT_H_
