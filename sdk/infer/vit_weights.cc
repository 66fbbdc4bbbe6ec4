#include "infer/vit_weights.h"

#include <cmath>
#include <cstring>
#include <tuple>
#include <unordered_set>
#include <utility>

namespace fl::internal {
namespace {

using Shape = std::vector<int64_t>;

// The shape of tensor `name`, or null if `params` has none of that name.
const Shape* ShapeOf(const ParamSet& params, const std::string& name) {
  const int i = params.layout().Find(name);
  return i < 0 ? nullptr : &params.layout().tensors()[static_cast<size_t>(i)].shape;
}

Status NotAVit(const std::string& why) {
  return Status::InvalidArgument("backbone is not a TinyVit: " + why);
}

// The dimensions that show in the tensors' shapes; heads come from the caller.
Result<VitShape> DeriveShape(const ParamSet& backbone, int64_t heads) {
  const Shape* cls = ShapeOf(backbone, "cls");
  const Shape* embed = ShapeOf(backbone, "patch_embed.weight");
  const Shape* pos = ShapeOf(backbone, "pos");
  const Shape* fc1 = ShapeOf(backbone, "blocks.0.fc1.weight");
  const Shape* head = ShapeOf(backbone, "head.weight");
  const std::pair<const Shape*, const char*> needed[] = {{cls, "cls"},
                                                         {embed, "patch_embed.weight"},
                                                         {pos, "pos"},
                                                         {fc1, "blocks.0.fc1.weight"},
                                                         {head, "head.weight"}};
  for (const auto& [tensor, name] : needed) {
    if (tensor == nullptr) return NotAVit(std::string("no tensor \"") + name + "\"");
  }
  if (cls->size() != 3 || (*cls)[2] < 1) {
    return NotAVit("\"cls\" is " + ShapeText(*cls) + ", not [1,1,width]");
  }
  VitShape s;
  s.width = (*cls)[2];
  if (embed->size() != 4 || (*embed)[2] != (*embed)[3] || (*embed)[2] < 1) {
    return NotAVit("\"patch_embed.weight\" is " + ShapeText(*embed) +
                   ", not [width,1,patch,patch]");
  }
  s.patch = (*embed)[2];
  if (pos->size() != 3 || (*pos)[1] < 2) {
    return NotAVit("\"pos\" is " + ShapeText(*pos) + ", not [1,tokens,width]");
  }
  const auto side =
      static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>((*pos)[1] - 1))));
  if (side * side + 1 != (*pos)[1]) {
    return NotAVit("\"pos\" has " + std::to_string((*pos)[1]) +
                   " tokens, not a square number of patches plus CLS");
  }
  s.image = side * s.patch;
  if (fc1->size() != 2 || (*fc1)[0] % s.width != 0 || (*fc1)[0] < s.width) {
    return NotAVit("\"blocks.0.fc1.weight\" is " + ShapeText(*fc1) +
                   ", not [mlp_ratio*width,width]");
  }
  s.mlp_ratio = (*fc1)[0] / s.width;
  if (head->size() != 2 || (*head)[0] < 1) {
    return NotAVit("\"head.weight\" is " + ShapeText(*head) + ", not [classes,width]");
  }
  s.classes = (*head)[0];
  while (ShapeOf(backbone, "blocks." + std::to_string(s.depth) + ".norm1.weight") != nullptr)
    ++s.depth;
  if (s.depth == 0) return NotAVit("no tensor \"blocks.0.norm1.weight\"");
  if (heads < 1 || s.width % heads != 0) {
    return Status::InvalidArgument("heads " + std::to_string(heads) +
                                   " does not divide the backbone's width " +
                                   std::to_string(s.width));
  }
  s.heads = heads;
  return s;
}

// Every tensor of a TinyVit of shape `s`, with its shape, in the model's order.
std::vector<std::pair<std::string, Shape>> ExpectedTensors(const VitShape& s) {
  const int64_t w = s.width, h = s.hidden();
  std::vector<std::pair<std::string, Shape>> t = {
      {"cls", {1, 1, w}},
      {"pos", {1, s.tokens(), w}},
      {"patch_embed.weight", {w, 1, s.patch, s.patch}},
      {"patch_embed.bias", {w}},
  };
  for (int64_t j = 0; j < s.depth; ++j) {
    const std::string b = "blocks." + std::to_string(j) + ".";
    const std::tuple<const char*, int64_t, int64_t> dense[] = {
        {"qkv", 3 * w, w}, {"proj", w, w}, {"fc1", h, w}, {"fc2", w, h}};
    for (const auto& [layer, out, in] : dense) {
      t.push_back({b + layer + ".weight", {out, in}});
      t.push_back({b + layer + ".bias", {out}});
    }
    for (const char* norm : {"norm1", "norm2"}) {
      t.push_back({b + norm + ".weight", {w}});
      t.push_back({b + norm + ".bias", {w}});
    }
  }
  t.push_back({"norm.weight", {w}});
  t.push_back({"norm.bias", {w}});
  t.push_back({"head.weight", {s.classes, w}});
  t.push_back({"head.bias", {s.classes}});
  return t;
}

// Every tensor present with its expected shape, and no other.
Status CheckTensors(const ParamSet& backbone, const VitShape& s) {
  std::unordered_set<std::string> expected;
  for (const auto& [name, shape] : ExpectedTensors(s)) {
    const Shape* got = ShapeOf(backbone, name);
    if (got == nullptr) return NotAVit("no tensor \"" + name + "\"");
    if (*got != shape) {
      return Status::InvalidArgument("backbone tensor \"" + name + "\" is " + ShapeText(*got) +
                                     "; a TinyVit of width " + std::to_string(s.width) +
                                     " with its other tensors needs " + ShapeText(shape));
    }
    expected.insert(name);
  }
  for (const TensorSpec& t : backbone.layout().tensors()) {
    if (expected.count(t.name) == 0) {
      return NotAVit("it has a tensor \"" + t.name + "\" a TinyVit does not");
    }
  }
  return Status::Ok();
}

DenseLayer Dense(const ParamSet& p, const std::string& name, int64_t out) {
  return {TensorMatrix(p, name + ".weight", out), TensorRow(p, name + ".bias")};
}

LayerNormWeights Norm(const ParamSet& p, const std::string& name) {
  return {TensorRow(p, name + ".weight"), TensorRow(p, name + ".bias")};
}

}  // namespace

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ',';
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

RowVector TensorRow(const ParamSet& params, const std::string& name) {
  const std::span<const float> t = params.tensor(static_cast<size_t>(params.layout().Find(name)));
  RowVector v(static_cast<Eigen::Index>(t.size()));
  std::memcpy(v.data(), t.data(), t.size() * sizeof(float));
  return v;
}

RowMatrix TensorMatrix(const ParamSet& params, const std::string& name, int64_t rows) {
  const std::span<const float> t = params.tensor(static_cast<size_t>(params.layout().Find(name)));
  RowMatrix m(rows, static_cast<Eigen::Index>(t.size()) / rows);
  std::memcpy(m.data(), t.data(), t.size() * sizeof(float));
  return m;
}

Result<VitWeights> ReadVitWeights(const ParamSet& backbone, int64_t heads) {
  FL_ASSIGN_OR_RETURN(const VitShape s, DeriveShape(backbone, heads));
  FL_RETURN_IF_ERROR(CheckTensors(backbone, s));
  VitWeights w;
  w.shape = s;
  w.patch_embed = Dense(backbone, "patch_embed", s.width);
  w.cls = TensorRow(backbone, "cls");
  w.pos = TensorMatrix(backbone, "pos", s.tokens());
  for (int64_t j = 0; j < s.depth; ++j) {
    const std::string b = "blocks." + std::to_string(j) + ".";
    w.blocks.push_back({Norm(backbone, b + "norm1"), Dense(backbone, b + "qkv", 3 * s.width),
                        Dense(backbone, b + "proj", s.width), Norm(backbone, b + "norm2"),
                        Dense(backbone, b + "fc1", s.hidden()),
                        Dense(backbone, b + "fc2", s.width)});
  }
  w.norm = Norm(backbone, "norm");
  w.head = Dense(backbone, "head", s.classes);
  return w;
}

}  // namespace fl::internal
