// Ferret's two halves on their own: the round spec carried in TrainConfig::extra, the
// replay record, the coefficient-space aggregator, the strategy's server step and the
// learner, on a real (plain C++) linear model.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "algorithms/ferret/ferret_learner.h"
#include "algorithms/ferret/ferret_replay.h"
#include "algorithms/ferret/ferret_round_aggregator.h"
#include "algorithms/ferret/ferret_spec.h"
#include "algorithms/ferret/ferret_strategy.h"
#include "algorithms/ferret/register.h"
#include "algorithms/registry.h"
#include "codec/ferret/coefficient_table.h"
#include "codec/ferret/projection.h"
#include "core/config.h"
#include "core/hash.h"
#include "crypto/sha256.h"
#include "examples/linear_trainer.h"

namespace fl::internal {
namespace {

using ::testing::HasSubstr;

Layout TwoTensors(int64_t a, int64_t b) {
  Layout l;
  l.Add("weight", {a});
  l.Add("bias", {b});
  return l;
}

ParamSet RandomParams(const Layout& layout, uint64_t seed, float scale = 1.0f) {
  ParamSet p(layout);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, scale);
  for (float& v : p.values()) v = normal(rng);
  return p;
}

bool BitwiseEqual(const ParamSet& a, const ParamSet& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

FerretOptions SmallOptions() {
  FerretOptions o;
  o.num_bases = 16;
  o.pool_seed = 42;
  o.train.lr = 0.05;
  o.train.batch_size = 8;
  return o;
}

// A client's upload: the projection of `delta` for the strategy's round.
Payload Upload(FerretStrategy& s, const ParamSet& global, uint64_t round,
               std::span<const float> delta, double weight, uint64_t selection_seed = 0) {
  const FerretRoundSpec spec = s.SpecForRound(round);
  Result<ferret::BlockPlan> plan = MakeFerretPlan(spec, global.layout());
  EXPECT_TRUE(plan.ok());
  ferret::ProjectOptions po;
  po.selection_seed = selection_seed;
  Result<ferret::CoefficientTable> table =
      ferret::Project(*plan, MakeFerretBasis(spec), delta, po);
  EXPECT_TRUE(table.ok()) << table.status().ToString();
  Payload p;
  p.bytes = ferret::SerializeCoefficientTable(*table);
  p.meta.round = round;
  p.meta.weight = weight;
  p.meta.layout_hash = global.layout().hash();
  p.meta.encoding = Encoding::kFerret;
  p.meta.sha256 = Sha256(p.bytes);
  p.meta.train_loss = 1.0;
  return p;
}

Payload WithTable(Payload p, const ferret::CoefficientTable& table) {
  p.bytes = ferret::SerializeCoefficientTable(table);
  p.meta.sha256 = Sha256(p.bytes);
  return p;
}

TEST(FerretSpecTest, ExtraCarriesSpecExactlyAndNamesMissingKeys) {
  FerretRoundSpec spec;
  spec.plan_kind = ferret::BlockPlanKind::kFixedSize;
  spec.block_size = (uint64_t{1} << 40) + 3;
  spec.distribution = BasisDistribution::kGaussian;
  spec.amplitude = ferret::BasisAmplitude::kInvSqrtDim;
  spec.pool_seed = 0xfedcba9876543210ull;  // needs all 64 bits: more than a double holds
  spec.epoch = 0x123456789abcull;
  spec.num_bases = 77;
  FerretProjection projection;
  projection.scale = ferret::CoefficientScale::kReference;
  projection.selection = ferret::SelectionPolicy::kProportional;
  projection.budget = 50;
  projection.min_per_block = 3;
  projection.upload_format = ferret::CoefficientTableFormat::kBFloat16;
  std::map<std::string, TrainValue> extra;
  WriteFerretExtra(spec, projection, &extra);

  FerretRoundSpec spec2;
  FerretProjection projection2;
  ASSERT_TRUE(ReadFerretExtra(extra, &spec2, &projection2).ok());
  EXPECT_EQ(spec2, spec);
  EXPECT_EQ(projection2.scale, projection.scale);
  EXPECT_EQ(projection2.selection, projection.selection);
  EXPECT_EQ(projection2.budget, 50u);
  EXPECT_EQ(projection2.min_per_block, 3u);
  EXPECT_EQ(projection2.upload_format, ferret::CoefficientTableFormat::kBFloat16);
  // Tasks from servers that predate the value format mean float32.
  std::map<std::string, TrainValue> no_format = extra;
  no_format.erase("ferret.upload_format");
  ASSERT_TRUE(ReadFerretExtra(no_format, &spec2, &projection2).ok());
  EXPECT_EQ(projection2.upload_format, ferret::CoefficientTableFormat::kFloat32);
  std::map<std::string, TrainValue> bad_format = extra;
  bad_format["ferret.upload_format"] = 7;
  Status bad = ReadFerretExtra(bad_format, &spec2, &projection2);
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), HasSubstr("ferret.upload_format"));

  std::map<std::string, TrainValue> missing = extra;
  missing.erase("ferret.num_bases");
  Status s = ReadFerretExtra(missing, &spec2, &projection2);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("ferret.num_bases"));
  // The 64-bit seed is one integer value, not two doubles.
  EXPECT_TRUE(extra.at("ferret.pool_seed").is_int());
  EXPECT_EQ(extra.count("ferret.pool_seed_hi"), 0u);
  std::map<std::string, TrainValue> fractional = extra;
  fractional["ferret.pool_seed"] = 0.5;
  s = ReadFerretExtra(fractional, &spec2, &projection2);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("ferret.pool_seed"));
  std::map<std::string, TrainValue> text = extra;
  text["ferret.num_bases"] = "77";
  s = ReadFerretExtra(text, &spec2, &projection2);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("ferret.num_bases"));
  std::map<std::string, TrainValue> unknown = extra;
  unknown["ferret.distribution"] = 9;
  EXPECT_EQ(ReadFerretExtra(unknown, &spec2, &projection2).code(), StatusCode::kInvalidArgument);
}

TEST(FerretConfigTest, ReadsTheSectionAndNamesBadKeys) {
  auto build = [](std::vector<std::string> overrides) {
    Result<Config> c = Config::Build(AlgorithmConfigDefaults(), "", overrides);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return *c;
  };
  Result<FerretOptions> o = FerretOptionsFromConfig(ConfigView(build(
      {"algorithm.name=ferret", "ferret.num_bases=64", "ferret.block_plan=fixed:1000",
       "ferret.distribution=uniform", "ferret.selection=norm", "ferret.seed=9",
       "ferret.server_momentum=0.5", "ferret.upload_format=bf16",
       "ferret.server_lr_decay_rounds=20", "train.local_steps=3"})));
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->num_bases, 64u);
  EXPECT_EQ(o->plan_kind, ferret::BlockPlanKind::kFixedSize);
  EXPECT_EQ(o->block_size, 1000u);
  EXPECT_EQ(o->distribution, BasisDistribution::kUniform);
  EXPECT_EQ(o->projection.selection, ferret::SelectionPolicy::kProportional);
  EXPECT_EQ(o->pool_seed, 9u);
  EXPECT_EQ(o->projection.upload_format, ferret::CoefficientTableFormat::kBFloat16);
  EXPECT_EQ(o->server_lr_decay_rounds, 20u);
  EXPECT_EQ(o->train.local_steps, 3);
  EXPECT_EQ(o->train.upload_encoding, Encoding::kFerret);

  auto error = [&](std::vector<std::string> overrides) {
    Result<FerretOptions> r = FerretOptionsFromConfig(ConfigView(build(std::move(overrides))));
    EXPECT_FALSE(r.ok());
    return r.status();
  };
  EXPECT_THAT(error({"ferret.block_plan=fixed:0"}).message(), HasSubstr("ferret.block_plan"));
  EXPECT_THAT(error({"ferret.block_plan=blocks"}).message(), HasSubstr("ferret.block_plan"));
  EXPECT_THAT(error({"ferret.num_bases=0"}).message(), HasSubstr("ferret.num_bases"));
  EXPECT_THAT(error({"ferret.seed_policy=sometimes"}).message(), HasSubstr("ferret.seed_policy"));
  EXPECT_THAT(error({"ferret.seed_policy=fresh", "ferret.server_momentum=0.9"}).message(),
              HasSubstr("ferret.server_momentum"));
  EXPECT_THAT(error({"ferret.server_lr=0"}).message(), HasSubstr("ferret.server_lr"));
  EXPECT_THAT(error({"ferret.clip=-1"}).message(), HasSubstr("ferret.clip"));
  EXPECT_THAT(error({"ferret.server_lr_decay_rounds=-1"}).message(),
              HasSubstr("ferret.server_lr_decay_rounds"));
  EXPECT_THAT(error({"ferret.upload_format=f16"}).message(), HasSubstr("ferret.upload_format"));
  Result<FerretOptions> int4 =
      FerretOptionsFromConfig(ConfigView(build({"ferret.upload_format=int4"})));
  ASSERT_TRUE(int4.ok());
  EXPECT_EQ(int4->projection.upload_format, ferret::CoefficientTableFormat::kSampledInt4);
  EXPECT_THAT(error({"ferret.bases_per_block=500"}).message(), HasSubstr("ferret.bases_per_block"));

  // The registry builds it by name, and its learner and replayer are registered.
  Result<std::unique_ptr<Strategy>> strategy = CreateStrategy(build({"algorithm.name=ferret"}));
  ASSERT_TRUE(strategy.ok()) << strategy.status().ToString();
  EXPECT_EQ((*strategy)->name(), "ferret");
  EXPECT_TRUE(CreateLearner("ferret").ok());
  ParamSet model(TwoTensors(4, 1));
  EXPECT_EQ(ApplyReplayRecord("fedavg", "x", &model).code(), StatusCode::kUnimplemented);
  EXPECT_EQ(ApplyReplayRecord("ferret", "x", &model).code(), StatusCode::kDataLoss);
}

TEST(FerretReplayTest, RecordRoundTripsAndIsCheckedBeforeUse) {
  const Layout layout = TwoTensors(300, 5);
  FerretRoundSpec spec;
  spec.num_bases = 8;
  spec.pool_seed = 5;
  spec.epoch = 3;
  ParamSet model = RandomParams(layout, 1);
  Result<ferret::BlockPlan> plan = MakeFerretPlan(spec, layout);
  ASSERT_TRUE(plan.ok());
  const ParamSet delta = RandomParams(layout, 2, 0.1f);
  Result<ferret::CoefficientTable> table =
      ferret::Project(*plan, MakeFerretBasis(spec), delta.values(), {});
  ASSERT_TRUE(table.ok());

  FerretReplay replay;
  replay.layout_hash = layout.hash();
  replay.spec = spec;
  replay.multiplier = -0.5;
  replay.clip_norm = 3.0;
  replay.table = *table;
  const std::string bytes = SerializeFerretReplay(replay);
  Result<FerretReplay> parsed = ParseFerretReplay(bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->spec, spec);
  EXPECT_EQ(parsed->multiplier, -0.5);
  EXPECT_EQ(parsed->clip_norm, 3.0);
  EXPECT_EQ(parsed->table, *table);
  EXPECT_EQ(SerializeFerretReplay(*parsed), bytes);

  // Applying the record is exactly the documented reconstruction.
  ParamSet expected = model;
  ferret::ReconstructOptions ro;
  ro.multiplier = -0.5;
  ro.clip_norm = 3.0;
  ASSERT_TRUE(ferret::Reconstruct(*plan, MakeFerretBasis(spec), *table, ro, expected.values()).ok());
  ParamSet replayed = model;
  ASSERT_TRUE(ApplyReplayRecord("ferret", bytes, &replayed).ok());
  EXPECT_TRUE(BitwiseEqual(replayed, expected));
  EXPECT_FALSE(BitwiseEqual(replayed, model));

  EXPECT_EQ(ParseFerretReplay(bytes.substr(0, 40)).status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(ParseFerretReplay(bytes.substr(0, bytes.size() - 1)).status().code(),
            StatusCode::kDataLoss);
  std::string bad_magic = bytes;
  bad_magic[0] = 'X';
  EXPECT_EQ(ParseFerretReplay(bad_magic).status().code(), StatusCode::kInvalidArgument);
  FerretReplay nan_lr = replay;
  nan_lr.multiplier = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(ParseFerretReplay(SerializeFerretReplay(nan_lr)).status().code(),
            StatusCode::kInvalidArgument);
  // Replay records hold float32 tables only: a record whose table is in another format
  // has a second encoding, so it is refused (found by tests/fuzz/ferret_replay_fuzzer,
  // whose input below carries an empty int8 table).
  const std::string f32_table = ferret::SerializeCoefficientTable(*table);
  ASSERT_EQ(bytes.substr(bytes.size() - f32_table.size()), f32_table);
  const std::string bf16_record =
      bytes.substr(0, bytes.size() - f32_table.size()) +
      ferret::SerializeCoefficientTable(*table, ferret::CoefficientTableFormat::kBFloat16);
  Result<FerretReplay> bf16 = ParseFerretReplay(bf16_record);
  EXPECT_EQ(bf16.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bf16.status().message().find("must be float32"), std::string::npos)
      << bf16.status().ToString();
  const std::string fuzz_input(
      "\x46\x4c\x46\x52\x01\x00\x00\x00\xdd\x9d\xd8\x15\xa2\x5f\x0e\xa4"
      "\x02\x00\x00\x00\x0c\x00\x00\x00\x00\x04\x00\x00\x03\x00\x00\x00"
      "\x02\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x27\x00\x00\x00"
      "\x00\x00\x00\x00\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00\x60\x00"
      "\x00\x00\x00\x00\x00\xc8\x08\x40\x46\x4c\x46\x43\x03\x00\x00\x00"
      "\x9b\xfc\xff\x63\xe9\x03\x00\x00\x69\x70\x34\x1a\x8b\xf2\x2a\x76"
      "\x1c\xd1\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00"
      "\x00\x69\x70\x52",
      116);
  EXPECT_EQ(ParseFerretReplay(fuzz_input).status().code(), StatusCode::kInvalidArgument);
  // A record for another model is refused and leaves the model alone.
  ParamSet other = RandomParams(TwoTensors(305, 0), 3);
  const ParamSet before = other;
  EXPECT_EQ(ApplyReplayRecord("ferret", bytes, &other).code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(BitwiseEqual(other, before));
}

TEST(FerretRoundAggregatorTest, FoldsInCoefficientSpaceAndRefusesBadTablesWithoutChange) {
  const Layout layout = TwoTensors(2000, 10);
  FerretStrategy strategy(SmallOptions());
  const ParamSet global = RandomParams(layout, 7);
  auto agg = strategy.NewRoundAggregator(global, 1);
  auto* ferret_agg = dynamic_cast<FerretRoundAggregator*>(agg.get());
  ASSERT_NE(ferret_agg, nullptr);
  const FerretRoundKey key = ferret_agg->key();

  const ParamSet d1 = RandomParams(layout, 11, 0.01f);
  const ParamSet d2 = RandomParams(layout, 12, 0.01f);
  const Payload p1 = Upload(strategy, global, 1, d1.values(), 1.0);
  const Payload p2 = Upload(strategy, global, 1, d2.values(), 3.0);
  ASSERT_TRUE(agg->Accumulate(p1).ok());
  const size_t entries = ferret_agg->num_entries();
  EXPECT_LE(entries, size_t{key.num_seeds} * key.num_blocks);

  Result<ferret::CoefficientTable> good = ferret::ParseCoefficientTable(p2.bytes);
  ASSERT_TRUE(good.ok());
  auto refuse = [&](const Payload& p, StatusCode code, const char* words) {
    Status s = agg->Accumulate(p);
    EXPECT_EQ(s.code(), code) << s.ToString();
    EXPECT_THAT(s.message(), HasSubstr(words));
    EXPECT_EQ(agg->count(), 1u);
    EXPECT_EQ(ferret_agg->num_entries(), entries);
  };
  // Coefficients for a block the plan does not have (header widened to carry them).
  ferret::CoefficientTable wide_l(key.plan_hash, key.basis_hash, key.num_seeds, key.num_blocks + 1);
  ASSERT_TRUE(wide_l.Append(0, 0, 1.0f).ok());
  ASSERT_TRUE(wide_l.Append(key.num_blocks, 0, 1.0f).ok());
  refuse(WithTable(p2, wide_l), StatusCode::kInvalidArgument, "unknown block");
  // A seed index outside the pool.
  ferret::CoefficientTable wide_k(key.plan_hash, key.basis_hash, key.num_seeds + 1, key.num_blocks);
  ASSERT_TRUE(wide_k.Append(0, key.num_seeds, 1.0f).ok());
  refuse(WithTable(p2, wide_k), StatusCode::kInvalidArgument, "unknown seed index");
  // Another block plan (e.g. a client that cut the model differently).
  ferret::CoefficientTable other_plan(key.plan_hash ^ 1, key.basis_hash, key.num_seeds,
                                      key.num_blocks);
  ASSERT_TRUE(other_plan.Append(0, 0, 1.0f).ok());
  refuse(WithTable(p2, other_plan), StatusCode::kFailedPrecondition, "block plan");
  // Another seed pool (a stale round's bases under the fresh policy).
  ferret::CoefficientTable other_basis(key.plan_hash, key.basis_hash + 1, key.num_seeds,
                                       key.num_blocks);
  ASSERT_TRUE(other_basis.Append(0, 0, 1.0f).ok());
  refuse(WithTable(p2, other_basis), StatusCode::kFailedPrecondition, "basis");
  // Non-finite coefficients, named by (block, seed).
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    ferret::CoefficientTable t(key.plan_hash, key.basis_hash, key.num_seeds, key.num_blocks);
    for (const ferret::Coefficient& c : good->entries()) {
      ASSERT_TRUE(t.Append(c.block, c.seed, c.block == 1 && c.seed == 3 ? bad : c.value).ok());
    }
    refuse(WithTable(p2, t), StatusCode::kInvalidArgument, "non-finite");
  }
  Payload dense = p2;
  dense.meta.encoding = Encoding::kDenseF32;
  refuse(dense, StatusCode::kInvalidArgument, "ferret");
  Payload garbage = WithTable(p2, *good);
  garbage.bytes.resize(garbage.bytes.size() - 2);
  refuse(garbage, StatusCode::kInvalidArgument, "malformed");
  Payload wrong_round = p2;
  wrong_round.meta.round = 2;
  refuse(wrong_round, StatusCode::kFailedPrecondition, "round");
  Payload zero_weight = p2;
  zero_weight.meta.weight = 0;
  refuse(zero_weight, StatusCode::kInvalidArgument, "weight");

  ASSERT_TRUE(agg->Accumulate(p2).ok());
  Result<AggregateReport> report = std::move(*agg).Report();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->aggregate_encoding, Encoding::kFerret);
  EXPECT_TRUE(report->mean_delta.empty());
  EXPECT_EQ(report->count, 2u);
  EXPECT_EQ(report->total_weight, 4.0);
  // The mean is (1 * C1 + 3 * C2) / 4, exactly as the codec's accumulator computes it.
  Result<ferret::CoefficientTable> c1 = ferret::ParseCoefficientTable(p1.bytes);
  ferret::CoefficientAccumulator reference(key.plan_hash, key.basis_hash, key.num_seeds,
                                           key.num_blocks);
  ASSERT_TRUE(reference.Add(*c1, 1.0).ok());
  ASSERT_TRUE(reference.Add(*good, 3.0).ok());
  Result<ferret::CoefficientTable> mean = reference.ToTable(0.25);
  ASSERT_TRUE(mean.ok());
  EXPECT_EQ(report->encoded_aggregate, ferret::SerializeCoefficientTable(*mean));
  EXPECT_EQ(agg->Accumulate(p1).code(), StatusCode::kFailedPrecondition);  // consumed
}

TEST(FerretRoundAggregatorTest, MergeEqualsSequentialFold) {
  const Layout layout = TwoTensors(500, 3);
  FerretStrategy strategy(SmallOptions());
  const ParamSet global = RandomParams(layout, 1);
  std::vector<Payload> ps;
  for (int i = 0; i < 4; ++i) {
    ps.push_back(Upload(strategy, global, 1, RandomParams(layout, 20 + i, 0.1f).values(), 1.0 + i));
  }
  auto all = strategy.NewRoundAggregator(global, 1);
  auto left = strategy.NewRoundAggregator(global, 1);
  auto right = strategy.NewRoundAggregator(global, 1);
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(all->Accumulate(ps[i]).ok());
    ASSERT_TRUE((i < 2 ? left : right)->Accumulate(ps[i]).ok());
  }
  ASSERT_TRUE(left->MergeWith(std::move(*right)).ok());
  EXPECT_EQ(right->Accumulate(ps[0]).code(), StatusCode::kFailedPrecondition);
  auto other_round = strategy.NewRoundAggregator(global, 2);
  EXPECT_EQ(left->MergeWith(std::move(*other_round)).code(), StatusCode::kInvalidArgument);
  Result<AggregateReport> a = std::move(*all).Report();
  Result<AggregateReport> b = std::move(*left).Report();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->count, b->count);
  Result<ferret::CoefficientTable> ta = ferret::ParseCoefficientTable(a->encoded_aggregate);
  Result<ferret::CoefficientTable> tb = ferret::ParseCoefficientTable(b->encoded_aggregate);
  ASSERT_TRUE(ta.ok() && tb.ok());
  ASSERT_EQ(ta->size(), tb->size());
  for (size_t i = 0; i < ta->size(); ++i) {
    EXPECT_NEAR(ta->entries()[i].value, tb->entries()[i].value,
                1e-6 * std::abs(ta->entries()[i].value) + 1e-12);
  }
}

// One real round through the strategy's own aggregator; returns the replay record.
std::string RunRound(FerretStrategy& s, ParamSet* global, uint64_t round,
                     const std::vector<ParamSet>& deltas) {
  auto agg = s.NewRoundAggregator(*global, round);
  for (size_t i = 0; i < deltas.size(); ++i) {
    EXPECT_TRUE(agg->Accumulate(Upload(s, *global, round, deltas[i].values(), 1.0 + i)).ok());
  }
  Result<AggregateReport> report = std::move(*agg).Report();
  EXPECT_TRUE(report.ok());
  Status applied = s.ApplyRound(std::move(report).value(), global);
  EXPECT_TRUE(applied.ok()) << applied.ToString();
  return s.TakeReplayRecord();
}

TEST(FerretStrategyTest, ServerStepIsOneReconstructThatClientsReplayBitwise) {
  const Layout layout = TwoTensors(3000, 7);
  FerretOptions o = SmallOptions();
  o.server_lr = 0.7;
  o.clip = 0.05;  // small enough that some terms are clipped
  o.threads = 3;  // the replaying client uses another thread count
  FerretStrategy strategy(o);
  const ParamSet w0 = RandomParams(layout, 3);
  ParamSet global = w0;
  const ParamSet d1 = RandomParams(layout, 4, 0.01f);
  const ParamSet d2 = RandomParams(layout, 5, 0.01f);

  // The expected step: mean table, then one reconstruction with -server_lr and the clip.
  auto agg = strategy.NewRoundAggregator(global, 1);
  ASSERT_TRUE(agg->Accumulate(Upload(strategy, global, 1, d1.values(), 1.0)).ok());
  ASSERT_TRUE(agg->Accumulate(Upload(strategy, global, 1, d2.values(), 2.0)).ok());
  Result<AggregateReport> report = std::move(*agg).Report();
  ASSERT_TRUE(report.ok());
  Result<ferret::CoefficientTable> mean = ferret::ParseCoefficientTable(report->encoded_aggregate);
  ASSERT_TRUE(mean.ok());
  ParamSet expected = w0;
  ferret::ReconstructOptions ro;
  ro.multiplier = -0.7;
  ro.clip_norm = 0.05;
  Result<ferret::ReconstructStats> expected_stats = ferret::Reconstruct(
      *MakeFerretPlan(strategy.SpecForRound(1), layout), MakeFerretBasis(strategy.SpecForRound(1)),
      *mean, ro, expected.values());
  ASSERT_TRUE(expected_stats.ok());
  ASSERT_GT(expected_stats->terms_clipped, 0u);

  ASSERT_TRUE(strategy.ApplyRound(std::move(report).value(), &global).ok());
  EXPECT_TRUE(BitwiseEqual(global, expected));
  const std::map<std::string, double> stats = strategy.LastRoundStats();
  EXPECT_EQ(stats.at("ferret.terms_clipped"), expected_stats->terms_clipped);
  EXPECT_EQ(stats.at("ferret.terms_applied"), expected_stats->terms_applied);
  EXPECT_EQ(stats.at("ferret.terms_skipped_nonfinite"), 0);

  const std::string record = strategy.TakeReplayRecord();
  ASSERT_FALSE(record.empty());
  EXPECT_EQ(stats.at("ferret.replay_bytes"), record.size());
  EXPECT_TRUE(strategy.TakeReplayRecord().empty()) << "a record is handed out once";
  ParamSet client = w0;
  ASSERT_TRUE(ApplyReplayRecord("ferret", record, &client).ok());
  EXPECT_TRUE(BitwiseEqual(client, global));
  // The record is O(K L), far below the model's d floats.
  EXPECT_LT(record.size(), layout.total_numel() * sizeof(float) / 5);
}

TEST(FerretStrategyTest, DecayingServerLrIsInEachRoundsReplayRecord) {
  const Layout layout = TwoTensors(500, 3);
  FerretOptions o = SmallOptions();
  o.server_lr = 0.6;
  o.server_lr_decay_rounds = 4;  // lr * 4 / (4 + r - 1): 0.6, 0.48, 0.4, ...
  FerretStrategy strategy(o);
  EXPECT_DOUBLE_EQ(strategy.ServerLrForRound(1), 0.6);
  EXPECT_DOUBLE_EQ(strategy.ServerLrForRound(5), 0.3);
  ParamSet global = RandomParams(layout, 3);
  const std::vector<ParamSet> deltas = {RandomParams(layout, 4, 0.01f)};
  for (uint64_t round = 1; round <= 3; ++round) {
    const ParamSet before = global;
    const std::string record = RunRound(strategy, &global, round, deltas);
    Result<FerretReplay> replay = ParseFerretReplay(record);
    ASSERT_TRUE(replay.ok()) << replay.status().ToString();
    EXPECT_DOUBLE_EQ(replay->multiplier, -0.6 * 4 / (4 + round - 1)) << round;
    EXPECT_DOUBLE_EQ(strategy.LastRoundStats().at("ferret.server_lr"), -replay->multiplier);
    // A client replaying the record takes the same, smaller step.
    ParamSet client = before;
    ASSERT_TRUE(ApplyReplayRecord("ferret", record, &client).ok());
    EXPECT_TRUE(BitwiseEqual(client, global));
  }
}

TEST(FerretStrategyTest, MomentumIsInCoefficientSpaceAndSurvivesSaveAndLoad) {
  const Layout layout = TwoTensors(1000, 4);
  FerretOptions o = SmallOptions();
  o.server_momentum = 0.5;
  o.clip = 0;
  FerretStrategy a(o);
  ParamSet wa = RandomParams(layout, 1);
  const std::vector<ParamSet> r1 = {RandomParams(layout, 2, 0.01f)};
  const std::vector<ParamSet> r2 = {RandomParams(layout, 3, 0.01f)};
  const std::string rec1 = RunRound(a, &wa, 1, r1);
  EXPECT_FALSE(a.SaveState().empty());

  // A strategy restored from a's state takes the same second step bit for bit.
  FerretStrategy b(o);
  ASSERT_TRUE(b.LoadState(a.SaveState()).ok());
  ParamSet wb = wa;
  const std::string rec2a = RunRound(a, &wa, 2, r2);
  const std::string rec2b = RunRound(b, &wb, 2, r2);
  EXPECT_TRUE(BitwiseEqual(wa, wb));
  EXPECT_EQ(rec2a, rec2b);

  // Round 2's applied table is 0.5 * C_1 + mean_2.
  Result<FerretReplay> p1 = ParseFerretReplay(rec1);
  Result<FerretReplay> p2 = ParseFerretReplay(rec2a);
  ASSERT_TRUE(p1.ok() && p2.ok());
  FerretStrategy fresh(o);
  ParamSet scratch = RandomParams(layout, 1);
  auto agg = fresh.NewRoundAggregator(scratch, 2);
  ASSERT_TRUE(agg->Accumulate(Upload(fresh, scratch, 2, r2[0].values(), 1.0)).ok());
  Result<AggregateReport> mean2 = std::move(*agg).Report();
  Result<ferret::CoefficientTable> m2 = ferret::ParseCoefficientTable(mean2->encoded_aggregate);
  ASSERT_TRUE(m2.ok());
  std::vector<ferret::CoefficientTable> tables = {*m2, p1->table};
  std::vector<double> weights = {1.0, 0.5};
  Result<ferret::CoefficientTable> expected = ferret::WeightedSum(tables, weights);
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(p2->table, *expected);

  EXPECT_EQ(b.LoadState("FRSTgarbage").code(), StatusCode::kDataLoss);
  EXPECT_TRUE(b.LoadState("").ok());
}

TEST(FerretStrategyTest, RefusesForeignAggregatesAndNonFiniteStepsWithoutChange) {
  const Layout layout = TwoTensors(200, 2);
  FerretOptions o = SmallOptions();
  FerretStrategy s(o);
  ParamSet global = RandomParams(layout, 1);
  const ParamSet before = global;
  AggregateReport dense;
  dense.mean_delta = RandomParams(layout, 2);
  dense.count = 1;
  EXPECT_EQ(s.ApplyRound(dense, &global).code(), StatusCode::kInvalidArgument);
  auto agg = s.NewRoundAggregator(global, 1);
  ASSERT_TRUE(agg->Accumulate(Upload(s, global, 1, RandomParams(layout, 3).values(), 1.0)).ok());
  Result<AggregateReport> report = std::move(*agg).Report();
  ASSERT_TRUE(report.ok());
  // An aggregate of another round's bases (fresh pools differ per round).
  FerretOptions fresh_o = o;
  fresh_o.seed_policy = FerretSeedPolicy::kFresh;
  FerretStrategy fresh(fresh_o);
  fresh.NewRoundAggregator(global, 5);
  auto agg_other = fresh.NewRoundAggregator(global, 6);
  ASSERT_TRUE(agg_other->Accumulate(Upload(fresh, global, 6, RandomParams(layout, 3).values(), 1.0)).ok());
  Result<AggregateReport> other = std::move(*agg_other).Report();
  ASSERT_TRUE(other.ok());
  ParamSet g2 = global;
  FerretStrategy fresh2(fresh_o);
  fresh2.NewRoundAggregator(global, 7);
  EXPECT_EQ(fresh2.ApplyRound(*other, &g2).code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(BitwiseEqual(g2, before));
  // A step that overflows the model.
  FerretOptions huge = o;
  huge.server_lr = 1e38;
  huge.clip = 0;
  FerretStrategy h(huge);
  h.NewRoundAggregator(global, 1);
  EXPECT_EQ(h.ApplyRound(*report, &global).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(BitwiseEqual(global, before));
  EXPECT_TRUE(h.TakeReplayRecord().empty());
  ASSERT_TRUE(s.ApplyRound(*report, &global).ok());
  EXPECT_FALSE(BitwiseEqual(global, before));
}

TEST(FerretLearnerTest, UploadsTheProjectionOfTheDescentDirection) {
  constexpr size_t kDim = 16;
  std::vector<float> x, y;
  examples::MakeLinearData(kDim, 64, 3, &x, &y);
  examples::LinearTrainer trainer(kDim, x, y);
  examples::LinearTrainer replica(kDim, std::move(x), std::move(y));
  FerretStrategy strategy(SmallOptions());
  const ParamSet global = RandomParams(trainer.layout(), 9, 0.1f);
  Task task;
  task.kind = TaskKind::kTrain;
  task.round = 4;
  task.model_version = 3;
  task.algorithm = "ferret";
  task.config = strategy.ConfigureRound(4);
  task.config.seed = 1234;
  EXPECT_EQ(task.config.upload_encoding, Encoding::kFerret);
  FerretLearner learner;
  CancelToken cancel;
  Result<Payload> p = learner.Train(task, global, trainer, cancel);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->meta.encoding, Encoding::kFerret);
  EXPECT_EQ(p->meta.round, 4u);
  EXPECT_EQ(p->meta.base_version, 3u);
  EXPECT_EQ(p->meta.weight, 64);
  EXPECT_EQ(p->meta.sha256, Sha256(p->bytes));

  // The same training by hand: the table is the projection of global - local.
  ASSERT_TRUE(replica.SetParameters(global).ok());
  ASSERT_TRUE(replica.Train(task.config, cancel).ok());
  ParamSet local;
  ASSERT_TRUE(replica.GetParameters(&local).ok());
  std::vector<float> descent(global.size());
  for (size_t i = 0; i < descent.size(); ++i) descent[i] = global.data()[i] - local.data()[i];
  auto agg = strategy.NewRoundAggregator(global, 4);
  ASSERT_TRUE(agg->Accumulate(*p).ok()) << "the server accepts the learner's table";
  ferret::ProjectOptions po;
  po.selection_seed = Fnv1a64U64(kFnv1a64OffsetBasis, 1234);
  const FerretRoundSpec spec = strategy.SpecForRound(4);
  Result<ferret::CoefficientTable> expected = ferret::Project(
      *MakeFerretPlan(spec, global.layout()), MakeFerretBasis(spec), descent, po);
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(p->bytes, ferret::SerializeCoefficientTable(*expected));

  Task no_params = task;
  no_params.config.extra.clear();
  Result<Payload> refused = learner.Train(no_params, global, trainer, cancel);
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  Task dense = task;
  dense.config.upload_encoding = Encoding::kDenseF32;
  EXPECT_EQ(learner.Train(dense, global, trainer, cancel).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(FerretLearnerTest, Int8UploadsCarryTheSelectionSeedAndTheServerAcceptsThem) {
  constexpr size_t kDim = 16;
  std::vector<float> x, y;
  examples::MakeLinearData(kDim, 64, 3, &x, &y);
  examples::LinearTrainer trainer(kDim, x, y);
  FerretOptions options = SmallOptions();
  options.num_bases = 4096;           // a large pool ...
  options.projection.budget = 6;      // ... of which each client draws a few
  options.projection.upload_format = ferret::CoefficientTableFormat::kSampledInt8;
  FerretStrategy strategy(options);
  const ParamSet global = RandomParams(trainer.layout(), 9, 0.1f);
  Task task;
  task.kind = TaskKind::kTrain;
  task.round = 1;
  task.algorithm = "ferret";
  task.config = strategy.ConfigureRound(1);
  task.config.seed = 77;
  FerretLearner learner;
  CancelToken cancel;
  Result<Payload> p = learner.Train(task, global, trainer, cancel);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  Result<ferret::CoefficientTable> table = ferret::ParseCoefficientTable(p->bytes);
  ASSERT_TRUE(table.ok()) << table.status().ToString();
  const FerretRoundSpec spec = strategy.SpecForRound(1);
  Result<ferret::BlockPlan> plan = MakeFerretPlan(spec, global.layout());
  ASSERT_TRUE(plan.ok());
  // 44-byte header with the seed, then 9 bytes and 6 values per block: no 512-byte maps.
  EXPECT_EQ(p->bytes.size(), 44u + plan->num_blocks() * (9u + 6u));
  EXPECT_EQ(table->size(), plan->num_blocks() * 6u);
  auto agg = strategy.NewRoundAggregator(global, 1);
  ASSERT_TRUE(agg->Accumulate(*p).ok()) << "the server accepts the int8 table";
}

}  // namespace
}  // namespace fl::internal
