#ifndef FL_TESTS_FUZZ_FUZZ_COMMON_H_
#define FL_TESTS_FUZZ_FUZZ_COMMON_H_

// Shared by the libFuzzer targets and the seed generator: the small models the targets
// decode against (so a seed built here passes the layout checks in the target) and
// FUZZ_CHECK, which turns a broken invariant into a crash libFuzzer records.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "fl/param_set.h"

namespace fl::fuzz {

// Two tensors, 40 values: dense uploads and replay records are decoded against it.
inline Layout FuzzLayout() {
  Layout layout;
  layout.Add("weight", {4, 8});
  layout.Add("bias", {8});
  return layout;
}

// A FedIns-like pool of two entries (key, SSF scale, head), 26 values: keyed
// (named-subset) uploads are decoded against it.
inline Layout FuzzPoolLayout() {
  Layout layout;
  for (const char* entry : {"pool.0.", "pool.1."}) {
    layout.Add(std::string(entry) + "key", {4});
    layout.Add(std::string(entry) + "ssf.gamma", {3});
    layout.Add(std::string(entry) + "head.weight", {2, 3});
  }
  return layout;
}

// Deterministic values in [-1, 1).
inline ParamSet FuzzParams(const Layout& layout, uint32_t seed) {
  ParamSet params(layout);
  uint32_t x = seed * 2654435761u + 1;
  for (float& v : params.values()) {
    x = x * 1664525u + 1013904223u;
    v = static_cast<float>(x >> 8) / static_cast<float>(1u << 23) - 1.0f;
  }
  return params;
}

}  // namespace fl::fuzz

#define FUZZ_CHECK(cond, what)                                                    \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "%s:%d: invariant broken: %s (%s)\n", __FILE__, __LINE__, \
                   #cond, std::string(what).c_str());                             \
      std::abort();                                                               \
    }                                                                             \
  } while (0)

#endif  // FL_TESTS_FUZZ_FUZZ_COMMON_H_
