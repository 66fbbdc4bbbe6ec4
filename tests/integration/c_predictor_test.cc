// The predictor's C ABI (fl_predictor_* in fl/fl_client.h) on model files in a temporary
// directory: the same answers as fl::AdaptivePredictor, swapping the tuned part, and the
// refusals with their codes and messages. Links fl_client only: no LibTorch.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "fl/adaptive_predictor.h"
#include "fl/fl_client.h"
#include "fl/param_set.h"

namespace fl {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kWidth = 16, kDepth = 2, kPatch = 7, kHidden = 32, kClasses = 10;
constexpr int32_t kHeads = 2, kTopK = 2;
constexpr int64_t kEntries = 4;
constexpr size_t kImages = 40;

// Values for `layout`: N(mean, std) for each tensor, mean 1 for LayerNorm weights and SSF
// gammas (as trained ones stay near), 0 otherwise.
ParamSet Random(const Layout& layout, uint32_t seed, float std) {
  ParamSet p(layout);
  std::mt19937 rng(seed);
  for (size_t t = 0; t < layout.num_tensors(); ++t) {
    const std::string& name = layout.tensors()[t].name;
    const bool near_one = name.ends_with("gamma") || name.ends_with("norm1.weight") ||
                          name.ends_with("norm2.weight") || name == "norm.weight";
    std::normal_distribution<float> dist(near_one ? 1.0f : 0.0f, std);
    for (float& v : p.tensor(t)) v = dist(rng);
  }
  return p;
}

// A whole tiny ViT of width 16 (VitTrainer's names and shapes).
ParamSet RandomBackbone() {
  const int64_t tokens = (28 / kPatch) * (28 / kPatch) + 1;
  Layout l;
  l.Add("cls", {1, 1, kWidth});
  l.Add("pos", {1, tokens, kWidth});
  l.Add("patch_embed.weight", {kWidth, 1, kPatch, kPatch});
  l.Add("patch_embed.bias", {kWidth});
  for (int64_t j = 0; j < kDepth; ++j) {
    const std::string b = "blocks." + std::to_string(j) + ".";
    l.Add(b + "norm1.weight", {kWidth});
    l.Add(b + "norm1.bias", {kWidth});
    l.Add(b + "qkv.weight", {3 * kWidth, kWidth});
    l.Add(b + "qkv.bias", {3 * kWidth});
    l.Add(b + "proj.weight", {kWidth, kWidth});
    l.Add(b + "proj.bias", {kWidth});
    l.Add(b + "norm2.weight", {kWidth});
    l.Add(b + "norm2.bias", {kWidth});
    l.Add(b + "fc1.weight", {kHidden, kWidth});
    l.Add(b + "fc1.bias", {kHidden});
    l.Add(b + "fc2.weight", {kWidth, kHidden});
    l.Add(b + "fc2.bias", {kWidth});
  }
  l.Add("norm.weight", {kWidth});
  l.Add("norm.bias", {kWidth});
  l.Add("head.weight", {kClasses, kWidth});
  l.Add("head.bias", {kClasses});
  return Random(l, 1, 0.3f);
}

// A FedIns pool of kEntries entries for RandomBackbone, from `seed`.
ParamSet RandomPool(uint32_t seed) {
  Layout l;
  for (int64_t i = 0; i < kEntries; ++i) {
    const std::string e = "pool." + std::to_string(i) + ".";
    std::vector<std::pair<std::string, int64_t>> points = {{"embed", kWidth}};
    for (int64_t j = 0; j < kDepth; ++j) {
      const std::string b = "blocks." + std::to_string(j) + ".";
      for (const auto& [name, dim] :
           std::vector<std::pair<std::string, int64_t>>{{"norm1", kWidth},
                                                        {"qkv", 3 * kWidth},
                                                        {"proj", kWidth},
                                                        {"norm2", kWidth},
                                                        {"fc1", kHidden},
                                                        {"fc2", kWidth}}) {
        points.push_back({b + name, dim});
      }
    }
    points.push_back({"norm", kWidth});
    for (const auto& [point, dim] : points) {
      l.Add(e + "ssf." + point + ".gamma", {dim});
      l.Add(e + "ssf." + point + ".beta", {dim});
    }
    l.Add(e + "key", {kWidth});
    l.Add(e + "head.weight", {kClasses, kWidth});
    l.Add(e + "head.bias", {kClasses});
  }
  return Random(l, seed, 0.2f);
}

class CPredictorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("c_predictor_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    backbone_ = RandomBackbone();
    pool_ = RandomPool(2);
    ASSERT_TRUE(WriteModelFile(Path("backbone.flps"), backbone_).ok());
    ASSERT_TRUE(WriteModelFile(Path("pool.flps"), pool_).ok());
    std::mt19937 rng(3);
    pixels_.resize(kImages * 28 * 28);
    for (uint8_t& p : pixels_) p = static_cast<uint8_t>(rng() % 256);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // The C++ API's answers for the same files.
  std::vector<Prediction> Expected(const ParamSet& tuned) const {
    PredictorOptions o;
    o.heads = kHeads;
    o.top_k = kTopK;
    auto p = AdaptivePredictor::Create(backbone_, tuned, o);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    return *(*p)->Predict(pixels_.data(), kImages);
  }

  std::filesystem::path dir_;
  ParamSet backbone_, pool_;
  std::vector<uint8_t> pixels_;
};

TEST_F(CPredictorTest, PredictsAsTheCppApiAndSwapsTheTunedPart) {
  fl_predictor* p = nullptr;
  ASSERT_EQ(fl_predictor_create(Path("backbone.flps").c_str(), Path("pool.flps").c_str(), kHeads,
                                kTopK, &p),
            FL_OK)
      << fl_last_error();
  EXPECT_EQ(fl_predictor_num_classes(p), kClasses);
  EXPECT_EQ(fl_predictor_image_size(p), 28);
  EXPECT_EQ(fl_predictor_pool_entries(p), kEntries);

  std::vector<int32_t> labels(kImages), entries(kImages * kTopK);
  std::vector<float> logits(kImages * kClasses);
  ASSERT_EQ(fl_predictor_predict(p, pixels_.data(), kImages, labels.data(), logits.data(),
                                 entries.data()),
            FL_OK)
      << fl_last_error();
  const std::vector<Prediction> want = Expected(pool_);
  std::set<std::vector<int32_t>> distinct;
  for (size_t i = 0; i < kImages; ++i) {
    EXPECT_EQ(labels[i], want[i].label);
    EXPECT_EQ(
        std::vector<float>(logits.begin() + i * kClasses, logits.begin() + (i + 1) * kClasses),
        want[i].logits);
    const std::vector<int32_t> chosen(entries.begin() + i * kTopK,
                                      entries.begin() + (i + 1) * kTopK);
    EXPECT_EQ(chosen, want[i].entries);
    distinct.insert(chosen);
  }
  EXPECT_GE(distinct.size(), 2u) << "every image chose the same entries";

  // Labels alone.
  std::vector<int32_t> only_labels(kImages);
  ASSERT_EQ(fl_predictor_predict(p, pixels_.data(), kImages, only_labels.data(), nullptr, nullptr),
            FL_OK);
  EXPECT_EQ(only_labels, labels);

  // A newer pool after a round, then the backbone alone (entries -1).
  const ParamSet newer = RandomPool(9);
  ASSERT_TRUE(WriteModelFile(Path("pool-2.flps"), newer).ok());
  ASSERT_EQ(fl_predictor_set_tuned(p, Path("pool-2.flps").c_str()), FL_OK) << fl_last_error();
  ASSERT_EQ(fl_predictor_predict(p, pixels_.data(), kImages, labels.data(), logits.data(),
                                 entries.data()),
            FL_OK);
  const std::vector<Prediction> want_newer = Expected(newer);
  for (size_t i = 0; i < kImages; ++i) {
    EXPECT_EQ(logits[i * kClasses], want_newer[i].logits[0]);
    EXPECT_EQ(entries[i * kTopK], want_newer[i].entries[0]);
  }
  ASSERT_EQ(fl_predictor_set_tuned(p, nullptr), FL_OK);
  EXPECT_EQ(fl_predictor_pool_entries(p), 0);
  ASSERT_EQ(fl_predictor_predict(p, pixels_.data(), kImages, labels.data(), logits.data(),
                                 entries.data()),
            FL_OK);
  const std::vector<Prediction> want_plain = Expected(ParamSet());
  for (size_t i = 0; i < kImages; ++i) {
    EXPECT_EQ(labels[i], want_plain[i].label);
    EXPECT_EQ(entries[i * kTopK], -1);
  }
  fl_predictor_free(p);
  fl_predictor_free(nullptr);
}

TEST_F(CPredictorTest, PredictsOnSeveralThreadsAtOnce) {
  fl_predictor* p = nullptr;
  ASSERT_EQ(fl_predictor_create(Path("backbone.flps").c_str(), Path("pool.flps").c_str(), kHeads,
                                kTopK, &p),
            FL_OK);
  const std::vector<Prediction> want = Expected(pool_);
  std::vector<std::vector<float>> logits(4, std::vector<float>(kImages * kClasses));
  std::vector<int> codes(4, -1);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < logits.size(); ++t) {
    threads.emplace_back([&, t] {
      std::vector<int32_t> labels(kImages);
      for (int round = 0; round < 5; ++round) {
        codes[t] = fl_predictor_predict(p, pixels_.data(), kImages, labels.data(), logits[t].data(),
                                        nullptr);
        if (codes[t] != FL_OK) break;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (size_t t = 0; t < logits.size(); ++t) {
    ASSERT_EQ(codes[t], FL_OK);
    for (size_t i = 0; i < kImages; ++i) EXPECT_EQ(logits[t][i * kClasses], want[i].logits[0]);
  }
  fl_predictor_free(p);
}

TEST_F(CPredictorTest, RefusesWithCodesAndMessages) {
  fl_predictor* p = reinterpret_cast<fl_predictor*>(this);
  EXPECT_EQ(fl_predictor_create(nullptr, nullptr, kHeads, kTopK, &p), FL_EINVALID_ARGUMENT);
  EXPECT_EQ(p, nullptr);
  EXPECT_THAT(fl_last_error(), HasSubstr("backbone_path is NULL"));
  EXPECT_EQ(fl_predictor_create(Path("missing.flps").c_str(), nullptr, kHeads, kTopK, &p),
            FL_ENOT_FOUND);
  {
    std::ofstream(Path("garbage.flps")) << "not a model";
    // A model file cut short.
    std::string bytes(std::filesystem::file_size(Path("backbone.flps")), '\0');
    std::ifstream(Path("backbone.flps"), std::ios::binary)
        .read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    std::ofstream(Path("cut.flps"), std::ios::binary) << bytes.substr(0, bytes.size() - 10);
  }
  EXPECT_EQ(fl_predictor_create(Path("garbage.flps").c_str(), nullptr, kHeads, kTopK, &p),
            FL_EINVALID_ARGUMENT);
  EXPECT_THAT(fl_last_error(), HasSubstr("garbage.flps"));
  EXPECT_EQ(fl_predictor_create(Path("cut.flps").c_str(), nullptr, kHeads, kTopK, &p),
            FL_EDATA_LOSS);
  EXPECT_EQ(fl_predictor_create(Path("backbone.flps").c_str(), Path("cut.flps").c_str(), kHeads,
                                kTopK, &p),
            FL_EDATA_LOSS);
  EXPECT_EQ(fl_predictor_create(Path("pool.flps").c_str(), nullptr, kHeads, kTopK, &p),
            FL_EINVALID_ARGUMENT);
  EXPECT_THAT(fl_last_error(), HasSubstr("not a TinyVit"));
  EXPECT_EQ(
      fl_predictor_create(Path("backbone.flps").c_str(), Path("pool.flps").c_str(), kHeads, 0, &p),
      FL_EINVALID_ARGUMENT);
  EXPECT_THAT(fl_last_error(), HasSubstr("top_k must be >= 1"));
  EXPECT_EQ(
      fl_predictor_create(Path("backbone.flps").c_str(), Path("pool.flps").c_str(), kHeads, 5, &p),
      FL_EINVALID_ARGUMENT);
  EXPECT_THAT(fl_last_error(), HasSubstr("top_k 5 exceeds the pool's 4 entries"));
  EXPECT_EQ(fl_predictor_create(Path("backbone.flps").c_str(), nullptr, 3, kTopK, &p),
            FL_EINVALID_ARGUMENT);
  EXPECT_THAT(fl_last_error(), HasSubstr("heads 3 does not divide"));
  EXPECT_EQ(fl_predictor_create(Path("backbone.flps").c_str(), Path("pool.flps").c_str(), kHeads,
                                kTopK, nullptr),
            FL_EINVALID_ARGUMENT);

  ASSERT_EQ(fl_predictor_create(Path("backbone.flps").c_str(), Path("pool.flps").c_str(), kHeads,
                                kTopK, &p),
            FL_OK);
  // A backbone as the tuned part of itself is fine (all its tensors replace their own);
  // a tuned part of another width is not, and the pool stays.
  Layout narrow;
  narrow.Add("head.weight", {kClasses, kWidth / 2});
  ASSERT_TRUE(WriteModelFile(Path("narrow.flps"), ParamSet(narrow)).ok());
  EXPECT_EQ(fl_predictor_set_tuned(p, Path("narrow.flps").c_str()), FL_EINVALID_ARGUMENT);
  EXPECT_THAT(fl_last_error(), HasSubstr("tuned tensor \"head.weight\" is [10,8]"));
  EXPECT_EQ(fl_predictor_pool_entries(p), kEntries);
  int32_t label = 0;
  EXPECT_EQ(fl_predictor_predict(p, nullptr, 1, &label, nullptr, nullptr), FL_EINVALID_ARGUMENT);
  EXPECT_EQ(fl_predictor_predict(p, pixels_.data(), 1, nullptr, nullptr, nullptr),
            FL_EINVALID_ARGUMENT);
  EXPECT_EQ(fl_predictor_predict(p, nullptr, 0, nullptr, nullptr, nullptr), FL_OK);
  EXPECT_EQ(fl_predictor_predict(nullptr, pixels_.data(), 1, &label, nullptr, nullptr),
            FL_EINVALID_ARGUMENT);
  EXPECT_EQ(fl_predictor_set_tuned(nullptr, nullptr), FL_EINVALID_ARGUMENT);
  EXPECT_EQ(fl_predictor_num_classes(nullptr), 0);
  fl_predictor_free(p);
}

}  // namespace
}  // namespace fl
