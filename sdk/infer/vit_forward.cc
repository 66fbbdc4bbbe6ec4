#include "infer/vit_forward.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <vector>

#include "infer/vit_kernel.h"

namespace fl::internal {
namespace {

std::atomic<int> isa_limit{static_cast<int>(InferIsa::kAvx2)};

InferIsa CpuInferIsa() {
#if defined(FL_INFER_HAVE_AVX2)
  static const InferIsa isa = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? InferIsa::kAvx2
                                                                           : InferIsa::kBaseline;
  }();
  return isa;
#else
  return InferIsa::kBaseline;
#endif
}

KernelDense Dense(const DenseLayer& l) {
  return {l.weight.data(), l.bias.data(), l.weight.rows(), l.weight.cols()};
}

KernelNorm Norm(const LayerNormWeights& n) { return {n.weight.data(), n.bias.data()}; }

// Raw views of an SSF set, kept alive (the pointer arrays) as long as the object.
class SsfView {
 public:
  explicit SsfView(const SsfScales& s) {
    for (const RowVector& g : s.gamma) gamma_.push_back(g.data());
    for (const RowVector& b : s.beta) beta_.push_back(b.data());
    set_ = {gamma_.data(), beta_.data()};
  }
  const KernelSsf* set() const { return &set_; }

 private:
  std::vector<const float*> gamma_, beta_;
  KernelSsf set_;
};

}  // namespace

InferIsa ActiveInferIsa() {
  return static_cast<InferIsa>(
      std::min(static_cast<int>(CpuInferIsa()), isa_limit.load(std::memory_order_relaxed)));
}

void LimitInferIsa(InferIsa limit) {
  isa_limit.store(static_cast<int>(limit), std::memory_order_relaxed);
}

RowMatrix ApplyDense(const RowMatrix& x, const DenseLayer& layer) {
  RowMatrix y(x.rows(), layer.weight.rows());
  y.noalias() = x * layer.weight.transpose();
  y.rowwise() += layer.bias;
  return y;
}

RowMatrix VitFeatures(const VitWeights& w, const RowMatrix& images,
                      std::span<const SsfScales* const> ssf) {
  std::vector<KernelBlock> blocks;
  for (const VitBlockWeights& b : w.blocks) {
    blocks.push_back(
        {Norm(b.norm1), Dense(b.qkv), Dense(b.proj), Norm(b.norm2), Dense(b.fc1), Dense(b.fc2)});
  }
  KernelVit vit;
  vit.image = w.shape.image;
  vit.patch = w.shape.patch;
  vit.width = w.shape.width;
  vit.heads = w.shape.heads;
  vit.patch_embed = Dense(w.patch_embed);
  vit.cls = w.cls.data();
  vit.pos = w.pos.data();
  vit.blocks = blocks.data();
  vit.depth = static_cast<int64_t>(blocks.size());
  vit.norm = Norm(w.norm);
  // One view per distinct set: a batch-shared set is converted once.
  std::vector<std::unique_ptr<SsfView>> views;
  std::vector<const KernelSsf*> sets;
  for (size_t b = 0; b < ssf.size(); ++b) {
    if (b == 0 || ssf[b] != ssf[b - 1]) views.push_back(std::make_unique<SsfView>(*ssf[b]));
    sets.push_back(views.back()->set());
  }
  RowMatrix out(images.rows(), w.shape.width);
  const KernelSsf* const* per_image = ssf.empty() ? nullptr : sets.data();
#if defined(FL_INFER_HAVE_AVX2)
  if (ActiveInferIsa() == InferIsa::kAvx2) {
    avx2::VitFeatures(vit, images.data(), images.rows(), per_image, out.data());
    return out;
  }
#endif
  base::VitFeatures(vit, images.data(), images.rows(), per_image, out.data());
  return out;
}

}  // namespace fl::internal
