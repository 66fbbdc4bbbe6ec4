#ifndef FL_SDK_INFER_VIT_KERNEL_H_
#define FL_SDK_INFER_VIT_KERNEL_H_

// The TinyVit forward pass's arithmetic on raw float arrays, compiled once per instruction
// set: vit_kernel.inc is built as `base` (the build's target, e.g. baseline x86-64) and,
// on x86-64, as `avx2` (AVX2 + FMA), and vit_forward.cc picks one at run time. Eigen
// chooses its SIMD code when the preprocessor runs, so each copy is its own translation
// unit; the interface is plain pointers because the copies' Eigen types (and their
// alignment assumptions) are not the same types.

#include <cstdint>

namespace fl::internal {

// y = x W^T + b; weight [out, in] row-major.
struct KernelDense {
  const float* weight = nullptr;
  const float* bias = nullptr;
  int64_t out = 0;
  int64_t in = 0;
};

struct KernelNorm {
  const float* weight = nullptr;
  const float* bias = nullptr;
};

struct KernelBlock {
  KernelNorm norm1;
  KernelDense qkv;
  KernelDense proj;
  KernelNorm norm2;
  KernelDense fc1;
  KernelDense fc2;
};

struct KernelVit {
  int64_t image = 0;  // pixels per side
  int64_t patch = 0;
  int64_t width = 0;
  int64_t heads = 0;
  KernelDense patch_embed;     // [width, patch * patch]
  const float* cls = nullptr;  // [width]
  const float* pos = nullptr;  // [tokens, width]
  const KernelBlock* blocks = nullptr;
  int64_t depth = 0;
  KernelNorm norm;
};

// One SSF set: gamma[p] and beta[p] at point p (vit_tuned.h's SsfPointDims order).
struct KernelSsf {
  const float* const* gamma = nullptr;
  const float* const* beta = nullptr;
};

// The CLS token after the final norm and its SSF point, out [n, width], for images
// [n, image * image] (normalized). ssf: null (no SSF) or n sets, one per image.
namespace base {
void VitFeatures(const KernelVit& vit, const float* images, int64_t n, const KernelSsf* const* ssf,
                 float* out);
}  // namespace base
// Only in x86-64 builds (FL_INFER_HAVE_AVX2); call only where the CPU has AVX2 and FMA.
namespace avx2 {
void VitFeatures(const KernelVit& vit, const float* images, int64_t n, const KernelSsf* const* ssf,
                 float* out);
}  // namespace avx2

// Which copy VitFeatures (vit_forward.h) runs.
enum class InferIsa : int { kBaseline = 0, kAvx2 = 1 };
// The best copy the build has and the CPU runs, capped by LimitInferIsa.
InferIsa ActiveInferIsa();
// Caps the copy used from now on, so that tests run each copy on one machine.
// Thread-safe.
void LimitInferIsa(InferIsa limit);

}  // namespace fl::internal

#endif  // FL_SDK_INFER_VIT_KERNEL_H_
