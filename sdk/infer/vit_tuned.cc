#include "infer/vit_tuned.h"

#include <algorithm>
#include <cctype>
#include <unordered_map>

namespace fl::internal {
namespace {

using Shape = std::vector<int64_t>;
using Expected = std::vector<std::pair<std::string, Shape>>;

// VitTrainer refuses larger pools; the bound also keeps a stray "pool.99999999.key"
// from making us list billions of expected names.
constexpr int64_t kMaxPoolEntries = 1024;

constexpr char kPoolNames[] =
    "a FedIns pool has pool.<i>.ssf.<point>.gamma|beta, pool.<i>.key, pool.<i>.head.weight|bias";
constexpr char kSsfNames[] = "an SSF tuning has ssf.<point>.gamma|beta, head.weight|bias";
constexpr char kTensorNames[] =
    "not a tensor of the backbone, nor of an SSF set (ssf.*) or a FedIns pool (pool.*)";

void AddSsf(const std::string& prefix, const VitShape& s, Expected* e) {
  for (const auto& [point, dim] : SsfPointDims(s)) {
    e->push_back({prefix + point + ".gamma", {dim}});
    e->push_back({prefix + point + ".beta", {dim}});
  }
}

void AddHead(const std::string& prefix, const VitShape& s, Expected* e) {
  e->push_back({prefix + "head.weight", {s.classes, s.width}});
  e->push_back({prefix + "head.bias", {s.classes}});
}

// The entry index i of "pool.<i>.<rest>", or -1 if `name` is not of that form.
int64_t PoolIndex(const std::string& name) {
  if (name.rfind("pool.", 0) != 0) return -1;
  size_t end = 5;
  while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end]))) ++end;
  if (end == 5 || end - 5 > 6 || end >= name.size() || name[end] != '.') return -1;
  return std::stoll(name.substr(5, end - 5));
}

// Entries of the pool whose tensors are `tuned`: one more than the largest index.
Result<int64_t> PoolSize(const ParamSet& tuned) {
  int64_t entries = 0;
  for (const TensorSpec& t : tuned.layout().tensors()) {
    const int64_t i = PoolIndex(t.name);
    if (i < 0) {
      return Status::InvalidArgument("tuned tensor \"" + t.name + "\" is unknown: " + kPoolNames);
    }
    if (i >= kMaxPoolEntries) {
      return Status::InvalidArgument("tuned tensor \"" + t.name + "\": a pool has at most " +
                                     std::to_string(kMaxPoolEntries) + " entries");
    }
    entries = std::max(entries, i + 1);
  }
  return entries;
}

// Every tensor of `tuned` is in `expected` with the same shape, and, if `require_all`,
// every expected tensor is in `tuned`. `names` describes what is expected.
Status CheckNames(const ParamSet& tuned, const Expected& expected, bool require_all,
                  const char* names, const VitShape& s) {
  std::unordered_map<std::string, const Shape*> want;
  for (const auto& [name, shape] : expected) want[name] = &shape;
  for (const TensorSpec& t : tuned.layout().tensors()) {
    auto it = want.find(t.name);
    if (it == want.end()) {
      return Status::InvalidArgument("tuned tensor \"" + t.name + "\" is unknown: " + names);
    }
    if (t.shape != *it->second) {
      return Status::InvalidArgument("tuned tensor \"" + t.name + "\" is " + ShapeText(t.shape) +
                                     " but the backbone (width " + std::to_string(s.width) + ", " +
                                     std::to_string(s.classes) + " classes, depth " +
                                     std::to_string(s.depth) + ") needs " + ShapeText(*it->second));
    }
  }
  if (require_all) {
    for (const auto& [name, shape] : expected) {
      if (tuned.layout().Find(name) < 0) {
        return Status::InvalidArgument("tuned set lacks \"" + name + "\" (" + names + ")");
      }
    }
  }
  return Status::Ok();
}

SsfScales ReadSsf(const ParamSet& tuned, const std::string& prefix, const VitShape& s) {
  SsfScales ssf;
  for (const auto& [point, dim] : SsfPointDims(s)) {
    ssf.gamma.push_back(TensorRow(tuned, prefix + point + ".gamma"));
    ssf.beta.push_back(TensorRow(tuned, prefix + point + ".beta"));
  }
  return ssf;
}

DenseLayer ReadHead(const ParamSet& tuned, const std::string& prefix, const VitShape& s) {
  return {TensorMatrix(tuned, prefix + "head.weight", s.classes),
          TensorRow(tuned, prefix + "head.bias")};
}

bool AnyNameStartsWith(const ParamSet& p, const std::string& prefix) {
  return std::any_of(p.layout().tensors().begin(), p.layout().tensors().end(),
                     [&](const TensorSpec& t) { return t.name.rfind(prefix, 0) == 0; });
}

Result<TunedWeights> ReadPool(const ParamSet& tuned, const VitShape& s) {
  FL_ASSIGN_OR_RETURN(const int64_t entries, PoolSize(tuned));
  Expected expected;
  for (int64_t i = 0; i < entries; ++i) {
    const std::string prefix = "pool." + std::to_string(i) + ".";
    AddSsf(prefix + "ssf.", s, &expected);
    expected.push_back({prefix + "key", {s.width}});
    AddHead(prefix, s, &expected);
  }
  FL_RETURN_IF_ERROR(CheckNames(tuned, expected, /*require_all=*/true, kPoolNames, s));
  TunedWeights w;
  w.kind = TunedWeights::Kind::kPool;
  for (int64_t i = 0; i < entries; ++i) {
    const std::string prefix = "pool." + std::to_string(i) + ".";
    w.pool.push_back({ReadSsf(tuned, prefix + "ssf.", s), TensorRow(tuned, prefix + "key"),
                      ReadHead(tuned, prefix, s)});
  }
  return w;
}

Result<TunedWeights> ReadSsfTuning(const ParamSet& tuned, const VitShape& s) {
  Expected expected;
  AddSsf("ssf.", s, &expected);
  AddHead("", s, &expected);
  FL_RETURN_IF_ERROR(CheckNames(tuned, expected, /*require_all=*/true, kSsfNames, s));
  TunedWeights w;
  w.kind = TunedWeights::Kind::kSsf;
  w.ssf = ReadSsf(tuned, "ssf.", s);
  w.head = ReadHead(tuned, "", s);
  return w;
}

Result<TunedWeights> ReadBackboneTensors(const ParamSet& tuned, const ParamSet& backbone,
                                         const VitShape& s) {
  Expected expected;
  for (const TensorSpec& t : backbone.layout().tensors()) expected.push_back({t.name, t.shape});
  FL_RETURN_IF_ERROR(CheckNames(tuned, expected, /*require_all=*/false, kTensorNames, s));
  TunedWeights w;
  w.kind = TunedWeights::Kind::kTensors;
  w.tensors = tuned;
  return w;
}

}  // namespace

std::vector<std::pair<std::string, int64_t>> SsfPointDims(const VitShape& s) {
  std::vector<std::pair<std::string, int64_t>> points = {{"embed", s.width}};
  for (int64_t j = 0; j < s.depth; ++j) {
    const std::string b = "blocks." + std::to_string(j) + ".";
    points.push_back({b + "norm1", s.width});
    points.push_back({b + "qkv", 3 * s.width});
    points.push_back({b + "proj", s.width});
    points.push_back({b + "norm2", s.width});
    points.push_back({b + "fc1", s.hidden()});
    points.push_back({b + "fc2", s.width});
  }
  points.push_back({"norm", s.width});
  return points;
}

Result<TunedWeights> ReadTunedWeights(const ParamSet& tuned, const ParamSet& backbone,
                                      const VitShape& shape) {
  if (tuned.layout().num_tensors() == 0) return TunedWeights{};
  if (AnyNameStartsWith(tuned, "pool.")) return ReadPool(tuned, shape);
  if (AnyNameStartsWith(tuned, "ssf.")) return ReadSsfTuning(tuned, shape);
  return ReadBackboneTensors(tuned, backbone, shape);
}

}  // namespace fl::internal
