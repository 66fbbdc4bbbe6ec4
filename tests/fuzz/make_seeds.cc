// Writes the seed corpora of the fuzz targets: valid encodings of every format, so the
// fuzzers start from inputs that reach deep into each decoder.
//   fl_fuzz_make_seeds OUT_DIR   ->  OUT_DIR/<target>/<name>
// Deterministic: the same files on every run.

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "algorithms/ferret/ferret_replay.h"
#include "algorithms/ferret/ferret_spec.h"
#include "codec/dense_codec.h"
#include "codec/ferret/basis.h"
#include "codec/ferret/coefficient_table.h"
#include "codec/named_subset_codec.h"
#include "codec/param_io.h"
#include "core/config.h"
#include "tests/fuzz/fuzz_common.h"
#ifdef FL_FUZZ_HAVE_WIRE
#include "codec/token_codec.h"
#include "fl/v1/fl.pb.h"
#include "proto/wire.h"
#endif

namespace {

namespace fs = std::filesystem;
using namespace fl;
using namespace fl::internal;

fs::path g_out;

void Write(const std::string& target, const std::string& name, const std::string& bytes) {
  const fs::path dir = g_out / target;
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

std::string Le(const void* p, size_t n) { return std::string(static_cast<const char*>(p), n); }

ferret::CoefficientTable DenseTable(uint32_t k, uint32_t l) {
  ferret::CoefficientTable t(0x1111, 0x2222, k, l);
  for (uint32_t b = 0; b < l; ++b) {
    for (uint32_t s = b % 2; s < k; s += 2) (void)t.Append(b, s, 0.25f * (s + 1) - b);
  }
  return t;
}

Result<std::string> Sampled(uint32_t k, uint32_t l, uint32_t n, uint64_t seed,
                            ferret::CoefficientTableFormat format) {
  ferret::CoefficientTable t(0x3333, 0x4444, k, l);
  for (uint32_t b = 0; b < l; ++b) {
    for (uint32_t s : ferret::SelectBasisIndices(k, n, seed, b)) {
      (void)t.Append(b, s, 0.01f * static_cast<float>(s) - 0.3f);
    }
  }
  return SerializeSampledCoefficientTable(t, seed, format);
}

void Tables() {
  using F = ferret::CoefficientTableFormat;
  Write("coefficient_table", "f32", SerializeCoefficientTable(DenseTable(10, 3), F::kFloat32));
  Write("coefficient_table", "bf16", SerializeCoefficientTable(DenseTable(17, 2), F::kBFloat16));
  Write("coefficient_table", "empty", SerializeCoefficientTable(DenseTable(8, 0)));
  Result<std::string> i8 = Sampled(1000, 3, 5, 42, F::kSampledInt8);
  Result<std::string> i4 = Sampled(64, 2, 7, 9, F::kSampledInt4);
  if (i8.ok()) Write("coefficient_table", "int8", *i8);
  if (i4.ok()) Write("coefficient_table", "int4", *i4);
}

void ParamFiles() {
  const ParamSet params = fuzz::FuzzParams(fuzz::FuzzLayout(), 1);
  Write("param_io", "params", "\0" + SerializeParamSet(params));
  Write("param_io", "layout", "\1" + SerializeLayout(params.layout()));
  Layout scalar;
  scalar.Add("s", {});
  scalar.Add("empty", {0, 3});
  Write("param_io", "odd_params", std::string(1, '\0') + SerializeParamSet(ParamSet(scalar)));
  Write("param_io", "odd_layout", "\1" + SerializeLayout(scalar));
}

Result<FerretReplay> Replay(const FerretRoundSpec& spec, uint32_t budget) {
  const Layout layout = fuzz::FuzzLayout();
  FL_ASSIGN_OR_RETURN(ferret::BlockPlan plan, MakeFerretPlan(spec, layout));
  ferret::ProjectOptions options;
  options.budget = budget;
  options.selection_seed = 11;
  const ParamSet delta = fuzz::FuzzParams(layout, 3);
  FerretReplay replay;
  replay.layout_hash = layout.hash();
  replay.spec = spec;
  replay.multiplier = -0.5;
  replay.clip_norm = 3.0;
  FL_ASSIGN_OR_RETURN(replay.table,
                      ferret::Project(plan, MakeFerretBasis(spec), delta.values(), options));
  return replay;
}

void Replays() {
  FerretRoundSpec spec;
  spec.num_bases = 8;
  spec.pool_seed = 5;
  spec.epoch = 3;
  Result<FerretReplay> a = Replay(spec, 0);
  if (a.ok()) Write("ferret_replay", "reference_rademacher", SerializeFerretReplay(*a));
  spec.plan_kind = ferret::BlockPlanKind::kFixedSize;
  spec.block_size = 12;
  spec.distribution = BasisDistribution::kGaussian;
  spec.amplitude = ferret::BasisAmplitude::kInvSqrtDim;
  spec.num_bases = 20;
  Result<FerretReplay> b = Replay(spec, 4);
  if (b.ok()) Write("ferret_replay", "fixed_gaussian", SerializeFerretReplay(*b));
  if (!a.ok() || !b.ok()) std::fprintf(stderr, "replay seeds: %s %s\n",
                                       a.status().ToString().c_str(), b.status().ToString().c_str());
}

std::string DenseHeader(Encoding encoding, bool match, double weight, double loss) {
  std::string s;
  s += static_cast<char>(static_cast<int>(encoding));
  s += static_cast<char>(match ? 1 : 0);
  s += Le(&weight, 8);
  s += Le(&loss, 8);
  return s;
}

void DenseUploads() {
  const ParamSet delta = fuzz::FuzzParams(fuzz::FuzzLayout(), 2);
  for (Encoding e : {Encoding::kDenseF32, Encoding::kDenseF16, Encoding::kDenseBF16}) {
    std::string bytes;
    (void)EncodeDense(delta.values(), e, &bytes);
    Write("dense", EncodingName(e), DenseHeader(e, true, 12.0, 0.5) + bytes);
  }
}

void KeyedUploads() {
  const Layout layout = fuzz::FuzzPoolLayout();
  const ParamSet delta = fuzz::FuzzParams(layout, 3);
  for (Encoding e : {Encoding::kDenseF32, Encoding::kDenseF16, Encoding::kDenseBF16}) {
    std::vector<NamedTensorView> all, some;
    for (size_t t = 0; t < layout.num_tensors(); ++t) {
      const NamedTensorView view{layout.tensors()[t].name, 0.125 * static_cast<double>(t % 9),
                                 delta.tensor(t)};
      all.push_back(view);
      if (t % 3 == 0) some.push_back(view);  // the keys only
    }
    std::string bytes;
    if (EncodeNamedSubset(all, e, &bytes).ok()) {
      Write("named_subset", "all_" + EncodingName(e), bytes);
    }
    if (EncodeNamedSubset(some, e, &bytes).ok()) {
      Write("named_subset", "keys_" + EncodingName(e), bytes);
    }
  }
}

void Configs() {
  const fs::path dir = fs::path(FL_SOURCE_DIR) / "configs";
  if (fs::is_directory(dir)) {
    for (const auto& entry : fs::directory_iterator(dir)) {
      std::ifstream in(entry.path(), std::ios::binary);
      const std::string text((std::istreambuf_iterator<char>(in)), {});
      Write("config", "repo_" + entry.path().filename().string(), std::string(1, '\0') + text);
    }
  }
  Write("config", "server_yaml", std::string(1, '\0') +
                                     "coordinator:\n  min_updates: 2\nalgorithm:\n  name: ferret\n"
                                     "ferret:\n  num_bases: 64\n  upload_format: int8\n"
                                     "server:\n  listen: \"0.0.0.0:50051\"\n  tls: {cert: a.pem}\n");
  Write("config", "fuzz_yaml", std::string(1, '\2') +
                                   "fuzz:\n  free: {a: 1, b: [1, 2], c: x}\n  any: 3.5\n"
                                   "  ints: [4, 5]\n  names: [x, 'y']\n  empty: [true]\n"
                                   "  flag: yes\n  nested: {x: 2}\n");
  Write("config", "server_json", std::string(1, '\1') +
                                     R"({"coordinator": {"min_updates": 3}, "ferret": {"clip": 2.5}})");
  Write("config", "fuzz_json", std::string(1, '\3') +
                                   R"({"fuzz": {"free": {"k": [1, "s", null]}, "any": "v", "ints": [1e3]}})");
}

#ifdef FL_FUZZ_HAVE_WIRE
void WireMessages() {
  Task task;
  task.kind = TaskKind::kTrain;
  task.round = 3;
  task.model_version = 2;
  task.algorithm = "ferret";
  FerretRoundSpec spec;
  spec.num_bases = 50;
  FerretProjection projection;
  projection.upload_format = ferret::CoefficientTableFormat::kSampledInt4;
  projection.budget = 5;
  WriteFerretExtra(spec, projection, &task.config.extra);
  task.config.extra["user"] = TrainValue(std::string("text"));
  v1::Task message;
  ToProto(task, &message);
  Write("wire", "task_ferret", std::string(1, '\0') + message.SerializeAsString());
  v1::PullTaskResponse response;
  Task wait;
  ToProto(wait, response.mutable_task());
  Write("wire", "pull_wait", std::string(1, '\1') + response.SerializeAsString());
  ServerStatusInfo info;
  info.round = 4;
  info.clients_known = 9;
  info.finished = true;
  v1::GetStatusResponse status;
  ToProto(info, &status);
  Write("wire", "status", std::string(1, '\2') + status.SerializeAsString());

  const Layout layout = fuzz::FuzzLayout();
  const ParamSet delta = fuzz::FuzzParams(layout, 4);
  for (Encoding e : {Encoding::kDenseF32, Encoding::kDenseF16, Encoding::kDenseBF16,
                     Encoding::kFerret}) {
    std::string bytes;
    if (e == Encoding::kFerret) {
      bytes = SerializeCoefficientTable(DenseTable(16, 4));
    } else {
      (void)EncodeDense(delta.values(), e, &bytes);
    }
    UpdateMeta meta;
    meta.round = 3;
    meta.base_version = 2;
    meta.weight = 20;
    meta.layout_hash = layout.hash();
    meta.encoding = e;
    meta.sha256 = std::string(32, '\x5a');
    meta.num_examples = 20;
    meta.train_loss = 0.75;
    v1::UpdateChunk chunk;
    ToProto(meta, bytes.size(), chunk.mutable_header());
    const std::string header = chunk.SerializeAsString();
    std::string input(1, '\3');
    input += static_cast<char>(header.size() & 0xff);
    input += static_cast<char>(header.size() >> 8);
    Write("wire", "upload_" + EncodingName(e), input + header + bytes);
  }
}

// SplitStep requests: an open with token ranges, and a forward tensor per encoding.
void SplitMessages() {
  v1::SplitRequest open;
  SplitSessionOptions options;
  options.round = 3;
  options.encoding = Encoding::kDenseF16;
  options.output_tokens = 1;
  options.grad_begin = 1;
  options.grad_end = 9;
  options.body = "vit:width=128,depth=4,heads=4,mlp_ratio=4,prompts=8 blocks [0, 4)";
  ToProto(options, open.mutable_open());
  Write("split_step", "open", open.SerializeAsString());
  TokenTensor tensor{2, 3, 4, std::vector<float>(24)};
  for (size_t i = 0; i < tensor.values.size(); ++i) tensor.values[i] = 0.25f * i - 2;
  for (Encoding e : {Encoding::kDenseF32, Encoding::kDenseF16, Encoding::kDenseBF16}) {
    Result<EncodedTokens> encoded = EncodeTokens(tensor, e);
    if (!encoded.ok()) continue;
    v1::SplitRequest forward;
    ToProto(*encoded, forward.mutable_forward());
    Write("split_step", "forward_" + EncodingName(e), forward.SerializeAsString());
  }
}
#endif

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  g_out = argv[1];
  Tables();
  ParamFiles();
  Replays();
  DenseUploads();
  KeyedUploads();
  Configs();
#ifdef FL_FUZZ_HAVE_WIRE
  WireMessages();
  SplitMessages();
#endif
  return 0;
}
