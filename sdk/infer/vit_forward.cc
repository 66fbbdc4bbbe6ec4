#include "infer/vit_forward.h"

#include <unsupported/Eigen/SpecialFunctions>

#include <cmath>

namespace fl::internal {
namespace {

constexpr float kLayerNormEps = 1e-5f;  // torch::nn::LayerNorm's default
constexpr size_t kPointsPerBlock = 6;   // norm1, qkv, proj, norm2, fc1, fc2

// Rows of an activation matrix come in groups, one group per image: the image's tokens,
// its patches (embedding) or its CLS token alone.
struct Rows {
  Eigen::Index per_image;
};

RowMatrix LayerNorm(const RowMatrix& x, const LayerNormWeights& norm) {
  RowMatrix y(x.rows(), x.cols());
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    const auto row = x.row(r).array();
    const float mean = row.mean();
    const float var = (row - mean).square().mean();  // biased, as LayerNorm's
    const float inv_std = 1.0f / std::sqrt(var + kLayerNormEps);
    y.row(r).array() = (row - mean) * inv_std * norm.weight.array() + norm.bias.array();
  }
  return y;
}

// x * gamma + beta with SSF point `point` of each image's set; no-op without SSF.
void ApplySsf(RowMatrix* x, std::span<const SsfScales* const> ssf, size_t point, Rows rows) {
  if (ssf.empty()) return;
  for (size_t b = 0; b < ssf.size(); ++b) {
    auto block = x->middleRows(static_cast<Eigen::Index>(b) * rows.per_image, rows.per_image);
    block.array().rowwise() *= ssf[b]->gamma[point].array();
    block.rowwise() += ssf[b]->beta[point];
  }
}

// The exact (erf) GELU, as torch::gelu's default.
void Gelu(RowMatrix* x) {
  auto a = x->array();
  a = 0.5f * a * (1.0f + (a * static_cast<float>(M_SQRT1_2)).erf());
}

// In-place softmax of each row.
void SoftmaxRows(RowMatrix* s) {
  for (Eigen::Index r = 0; r < s->rows(); ++r) {
    auto row = s->row(r).array();
    row = (row - row.maxCoeff()).exp();
    row /= row.sum();
  }
}

// Multi-head self-attention mixing of qkv [n * tokens, 3 * width] (q | k | v, each head's
// Dh channels adjacent). cls_only: only each image's CLS token asks (the last block's
// other outputs are never read); the result then has n rows, else n * tokens.
RowMatrix Attend(const RowMatrix& qkv, const VitShape& s, Eigen::Index n, bool cls_only) {
  const Eigen::Index t = s.tokens(), w = s.width, dh = s.width / s.heads;
  const Eigen::Index asks = cls_only ? 1 : t;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dh)));
  RowMatrix out(n * asks, w);
  RowMatrix scores(asks, t);
  for (Eigen::Index b = 0; b < n; ++b) {
    for (Eigen::Index h = 0; h < s.heads; ++h) {
      const auto q = qkv.block(b * t, h * dh, asks, dh);
      const auto k = qkv.block(b * t, w + h * dh, t, dh);
      const auto v = qkv.block(b * t, 2 * w + h * dh, t, dh);
      scores.noalias() = q * k.transpose();
      scores *= scale;
      SoftmaxRows(&scores);
      out.block(b * asks, h * dh, asks, dh).noalias() = scores * v;
    }
  }
  return out;
}

// Every image's CLS row of x [n * tokens, width].
RowMatrix ClsRows(const RowMatrix& x, Eigen::Index n, Eigen::Index tokens) {
  RowMatrix cls(n, x.cols());
  for (Eigen::Index b = 0; b < n; ++b) cls.row(b) = x.row(b * tokens);
  return cls;
}

// One pre-norm block on x [n * tokens, width]; `first` = the index of its norm1 SSF
// point. last: returns only the CLS rows [n, width], all the rest needs.
RowMatrix Block(const RowMatrix& x, const VitBlockWeights& blk, const VitShape& s,
                std::span<const SsfScales* const> ssf, size_t first, bool last) {
  const Eigen::Index n = x.rows() / s.tokens();
  const Rows tokens{s.tokens()};
  const Rows out_rows{last ? 1 : s.tokens()};
  RowMatrix h = LayerNorm(x, blk.norm1);
  ApplySsf(&h, ssf, first, tokens);
  RowMatrix qkv = ApplyDense(h, blk.qkv);
  ApplySsf(&qkv, ssf, first + 1, tokens);
  RowMatrix residual = last ? ClsRows(x, n, s.tokens()) : x;
  RowMatrix attended = ApplyDense(Attend(qkv, s, n, last), blk.proj);
  ApplySsf(&attended, ssf, first + 2, out_rows);
  residual += attended;
  h = LayerNorm(residual, blk.norm2);
  ApplySsf(&h, ssf, first + 3, out_rows);
  RowMatrix hidden = ApplyDense(h, blk.fc1);
  ApplySsf(&hidden, ssf, first + 4, out_rows);
  Gelu(&hidden);
  RowMatrix mlp = ApplyDense(hidden, blk.fc2);
  ApplySsf(&mlp, ssf, first + 5, out_rows);
  residual += mlp;
  return residual;
}

// The patch embedding (a stride-patch convolution as one matrix product), its SSF point,
// CLS prepended and positions added: [n * tokens, width].
RowMatrix Embed(const VitWeights& w, const RowMatrix& images, std::span<const SsfScales* const> ssf) {
  const VitShape& s = w.shape;
  const Eigen::Index n = images.rows(), p = s.patch, side = s.side();
  RowMatrix patches(n * s.patches(), p * p);  // row: image b, patch (r, c); column: (i, j)
  for (Eigen::Index b = 0; b < n; ++b) {
    for (Eigen::Index r = 0; r < side; ++r) {
      for (Eigen::Index c = 0; c < side; ++c) {
        const Eigen::Index row = b * s.patches() + r * side + c;
        for (Eigen::Index i = 0; i < p; ++i) {
          patches.row(row).segment(i * p, p) = images.row(b).segment((r * p + i) * s.image + c * p, p);
        }
      }
    }
  }
  RowMatrix embedded = ApplyDense(patches, w.patch_embed);
  ApplySsf(&embedded, ssf, 0, Rows{s.patches()});
  RowMatrix tokens(n * s.tokens(), s.width);
  for (Eigen::Index b = 0; b < n; ++b) {
    tokens.row(b * s.tokens()) = w.cls;
    tokens.middleRows(b * s.tokens() + 1, s.patches()) = embedded.middleRows(b * s.patches(), s.patches());
    tokens.middleRows(b * s.tokens(), s.tokens()) += w.pos;
  }
  return tokens;
}

}  // namespace

RowMatrix ApplyDense(const RowMatrix& x, const DenseLayer& layer) {
  RowMatrix y(x.rows(), layer.weight.rows());
  y.noalias() = x * layer.weight.transpose();
  y.rowwise() += layer.bias;
  return y;
}

RowMatrix VitFeatures(const VitWeights& w, const RowMatrix& images,
                      std::span<const SsfScales* const> ssf) {
  RowMatrix x = Embed(w, images, ssf);
  size_t point = 1;
  for (size_t j = 0; j < w.blocks.size(); ++j) {
    x = Block(x, w.blocks[j], w.shape, ssf, point, /*last=*/j + 1 == w.blocks.size());
    point += kPointsPerBlock;
  }
  RowMatrix cls = LayerNorm(x, w.norm);  // the last block left only the CLS rows
  ApplySsf(&cls, ssf, point, Rows{1});
  return cls;
}

}  // namespace fl::internal
