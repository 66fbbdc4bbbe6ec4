// Fused Ferret projection and reconstruction against their definitions: naive
// materializing implementations, an exact least-squares oracle, unbiasedness over many
// seed pools, and bitwise independence from the thread count.

#include "codec/ferret/projection.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "codec/ferret/kernels.h"
#include "cuda/ferret_cuda.h"

namespace fl::internal::ferret {
namespace {

constexpr BasisDistribution kAllDistributions[] = {
    BasisDistribution::kRademacher, BasisDistribution::kUniform, BasisDistribution::kGaussian};

Layout MakeLayout(const std::vector<int64_t>& sizes) {
  Layout layout;
  for (size_t i = 0; i < sizes.size(); ++i) layout.Add(std::to_string(i) + "p", {sizes[i]});
  return layout;
}

// Blocks 1000, 40, 5000, 129, 64, 2000, 7: ragged tails for every kernel path.
Layout RaggedLayout() { return MakeLayout({1000, 37, 3, 5000, 129, 64, 2000, 7}); }

std::vector<float> RandomVector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

BasisSpec MakeBasis(BasisDistribution d, uint32_t k, uint64_t run_seed = 1,
                    BasisAmplitude a = BasisAmplitude::kUnit, uint64_t epoch = 0) {
  BasisSpec spec;
  spec.distribution = d;
  spec.amplitude = a;
  spec.seeds = MakeSeedPool(run_seed, epoch, k);
  return spec;
}

float Entry(const BasisSpec& basis, uint32_t seed_index, uint32_t block, uint64_t j) {
  return BasisEntry(MakePhiloxStream(basis.seeds[seed_index], block, kPhiloxDomainBasis),
                    basis.distribution, j);
}

bool BitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::bit_cast<uint32_t>(a[i]) != std::bit_cast<uint32_t>(b[i])) return false;
  }
  return true;
}

TEST(FerretKernelsTest, GeneratedSlicesDependOnlyOnTheEntryIndex) {
  for (BasisDistribution d : kAllDistributions) {
    std::vector<float> whole(3000);
    CpuGenerateBasis(d, 77, 4, 0, whole);
    for (uint64_t offset : {1u, 3u, 127u, 128u, 129u, 1001u}) {
      std::vector<float> part(700);
      CpuGenerateBasis(d, 77, 4, offset, part);
      for (size_t i = 0; i < part.size(); ++i) {
        ASSERT_EQ(std::bit_cast<uint32_t>(part[i]), std::bit_cast<uint32_t>(whole[offset + i]))
            << "distribution " << static_cast<int>(d) << " offset " << offset << " i " << i;
      }
    }
  }
}

TEST(FerretProjectionTest, MatchesNaiveMaterializingProjection) {
  const Layout layout = RaggedLayout();
  const BlockPlan plan = BlockPlan::Reference(layout);
  ASSERT_EQ(plan.num_blocks(), 7u);
  const std::vector<float> delta = RandomVector(layout.total_numel(), 3);
  for (BasisDistribution d : kAllDistributions) {
    for (BasisAmplitude a : {BasisAmplitude::kUnit, BasisAmplitude::kInvSqrtDim}) {
      const BasisSpec basis = MakeBasis(d, 9, 5, a);
      ProjectOptions opts;
      opts.budget = 6;  // a subset of the pool per block
      opts.selection_seed = 17;
      Result<CoefficientTable> table = Project(plan, basis, delta, opts);
      ASSERT_TRUE(table.ok()) << table.status().ToString();
      ASSERT_EQ(table->size(), 7u * 6);
      EXPECT_TRUE(ValidateCoefficientTable(*table, plan.hash(), basis.Hash(), 9, 7).ok());
      for (const Coefficient& c : table->entries()) {
        const Block& b = plan.blocks()[c.block];
        double dot = 0, mag = 0;
        for (size_t j = 0; j < b.size; ++j) {
          const double p = static_cast<double>(delta[b.offset + j]) * Entry(basis, c.seed, c.block, j);
          dot += p;
          mag += std::fabs(p);
        }
        const double factor = CoefficientFactor(basis, CoefficientScale::kUnbiased, b.size, 6);
        EXPECT_NEAR(c.value, factor * dot, std::fabs(factor) * mag * 2e-6 + 1e-30)
            << "block " << c.block << " seed " << c.seed;
      }
    }
  }
}

// The documented evaluation order, written out element by element.
std::vector<float> NaiveReconstruct(const BlockPlan& plan, const BasisSpec& basis,
                                    const CoefficientTable& table, double multiplier,
                                    std::vector<float> params) {
  for (uint32_t l = 0; l < plan.num_blocks(); ++l) {
    const Block& b = plan.blocks()[l];
    const double a = EntryAmplitude(basis.amplitude, b.size);
    const std::span<const Coefficient> entries = table.BlockEntries(l);
    for (size_t j = 0; j < b.size; ++j) {
      float acc = 0.0f;
      for (const Coefficient& c : entries) {
        const float term = static_cast<float>(multiplier * (static_cast<double>(c.value) * a));
        acc = acc + term * Entry(basis, c.seed, l, j);
      }
      params[b.offset + j] = params[b.offset + j] + acc;
    }
  }
  return params;
}

TEST(FerretReconstructTest, BitwiseEqualToTheDocumentedElementwiseOrder) {
  const Layout layout = RaggedLayout();
  const BlockPlan plan = BlockPlan::Reference(layout);
  const std::vector<float> w0 = RandomVector(layout.total_numel(), 8, 0.1f);
  for (BasisDistribution d : kAllDistributions) {
    const BasisSpec basis = MakeBasis(d, 12, 2, BasisAmplitude::kInvSqrtDim);
    CoefficientTable table(plan.hash(), basis.Hash(), 12, plan.num_blocks());
    std::mt19937 rng(4);
    for (uint32_t l = 0; l < plan.num_blocks(); ++l) {
      for (uint32_t k = l % 2; k < 12; k += 1 + l % 3) {
        ASSERT_TRUE(table.Append(l, k, std::normal_distribution<float>()(rng)).ok());
      }
    }
    std::vector<float> w = w0;
    ReconstructOptions opts;
    opts.multiplier = -0.7;
    Result<ReconstructStats> stats = Reconstruct(plan, basis, table, opts, w);
    ASSERT_TRUE(stats.ok()) << stats.status().ToString();
    EXPECT_EQ(stats->terms_applied, table.size());
    EXPECT_EQ(stats->terms_clipped, 0u);
    EXPECT_TRUE(BitwiseEqual(w, NaiveReconstruct(plan, basis, table, -0.7, w0)))
        << "distribution " << static_cast<int>(d);
  }
}

TEST(FerretProjectionTest, ResultsDoNotDependOnTheThreadCount) {
  // Several chunks per block (32768 entries each) and several blocks.
  const Layout layout = MakeLayout({150001, 7, 9, 70000, 33, 120000});
  const BlockPlan plan = BlockPlan::Reference(layout);
  const std::vector<float> delta = RandomVector(layout.total_numel(), 21);
  for (BasisDistribution d : kAllDistributions) {
    const BasisSpec basis = MakeBasis(d, 16, 9);
    ProjectOptions popts;
    popts.selection = SelectionPolicy::kProportional;
    popts.num_threads = 1;
    Result<CoefficientTable> ref = Project(plan, basis, delta, popts);
    ASSERT_TRUE(ref.ok());
    ReconstructOptions ropts;
    ropts.multiplier = -0.01;
    ropts.clip_norm = 50.0;
    std::vector<float> w_ref(delta.size(), 0.5f);
    ASSERT_TRUE(Reconstruct(plan, basis, *ref, ropts, w_ref).ok());
    for (int threads : {2, 3, 8}) {
      popts.num_threads = threads;
      Result<CoefficientTable> t = Project(plan, basis, delta, popts);
      ASSERT_TRUE(t.ok());
      EXPECT_TRUE(*t == *ref) << threads << " threads, distribution " << static_cast<int>(d);
      ropts.num_threads = threads;
      std::vector<float> w(delta.size(), 0.5f);
      ASSERT_TRUE(Reconstruct(plan, basis, *ref, ropts, w).ok());
      EXPECT_TRUE(BitwiseEqual(w, w_ref)) << threads << " threads";
    }
  }
}

// A client on an old CPU and a server on a new one must agree: the baseline, AVX2 and
// AVX-512 copies of the hot loops give the same bits.
TEST(FerretProjectionTest, EveryKernelCopyGivesTheSameBits) {
  const KernelIsa best = ActiveKernelIsa();
  if (best == KernelIsa::kBaseline) GTEST_SKIP() << "this CPU runs only the baseline copy";
  const Layout layout = MakeLayout({40000, 9, 5000, 129});
  const BlockPlan plan = BlockPlan::Reference(layout);
  const std::vector<float> delta = RandomVector(layout.total_numel(), 6);
  for (BasisDistribution d : kAllDistributions) {
    const BasisSpec basis = MakeBasis(d, 10, 4);
    ReconstructOptions r;
    r.multiplier = -0.5;
    r.clip_norm = 20.0;
    std::vector<CoefficientTable> tables;
    std::vector<std::vector<float>> rebuilt;
    for (int isa = 0; isa <= static_cast<int>(best); ++isa) {
      SetKernelIsaLimitForTesting(static_cast<KernelIsa>(isa));
      EXPECT_EQ(static_cast<int>(ActiveKernelIsa()), isa);
      Result<CoefficientTable> t = Project(plan, basis, delta, {});
      ASSERT_TRUE(t.ok());
      tables.push_back(*t);
      rebuilt.emplace_back(delta.size(), 0.25f);
      ASSERT_TRUE(Reconstruct(plan, basis, *t, r, rebuilt.back()).ok());
    }
    SetKernelIsaLimitForTesting(KernelIsa::kAvx512);
    for (size_t i = 1; i < tables.size(); ++i) {
      EXPECT_TRUE(tables[i] == tables[0]) << "copy " << i << ", distribution " << static_cast<int>(d);
      EXPECT_TRUE(BitwiseEqual(rebuilt[i], rebuilt[0])) << "copy " << i;
    }
  }
}

TEST(FerretProjectionTest, CounterIsTheIndexWithinTheBlock) {
  // Block 1 has 2000 entries in both plans but starts at 500 in one and 1000 in the
  // other: with the same content it must get the same coefficients, bit for bit.
  const BlockPlan a = BlockPlan::Reference(MakeLayout({500, 2000}));
  const BlockPlan b = BlockPlan::Reference(MakeLayout({1000, 2000}));
  ASSERT_EQ(a.num_blocks(), 2u);
  ASSERT_EQ(b.num_blocks(), 2u);
  const std::vector<float> content = RandomVector(2000, 5);
  std::vector<float> da(2500, 1.0f), db(3000, -1.0f);
  std::copy(content.begin(), content.end(), da.begin() + 500);
  std::copy(content.begin(), content.end(), db.begin() + 1000);
  for (BasisDistribution d : kAllDistributions) {
    const BasisSpec basis = MakeBasis(d, 8, 3);
    Result<CoefficientTable> ta = Project(a, basis, da, {});
    Result<CoefficientTable> tb = Project(b, basis, db, {});
    ASSERT_TRUE(ta.ok() && tb.ok());
    const std::span<const Coefficient> ea = ta->BlockEntries(1), eb = tb->BlockEntries(1);
    ASSERT_EQ(ea.size(), eb.size());
    for (size_t i = 0; i < ea.size(); ++i) {
      EXPECT_EQ(std::bit_cast<uint32_t>(ea[i].value), std::bit_cast<uint32_t>(eb[i].value));
    }
  }
}

// Mean of many independent reconstructions (fresh seed pool per trial) against delta.
struct BiasResult {
  double slope;        // <mean, delta> / <delta, delta>
  double max_z;        // max_i |mean_i - delta_i| / standard error_i
  double rel_error;    // ||mean - delta|| / ||delta||
};

BiasResult MeasureBias(BasisDistribution d, BasisAmplitude a, CoefficientScale scale,
                       uint32_t K, uint32_t budget, int trials) {
  const Layout layout = MakeLayout({48, 16});  // one block of 64 under the reference rule
  const BlockPlan plan = *BlockPlan::FixedSize(layout, 64);
  const std::vector<float> delta = RandomVector(64, 99);
  std::vector<double> sum(64, 0.0), sum_sq(64, 0.0);
  for (int t = 0; t < trials; ++t) {
    const BasisSpec basis = MakeBasis(d, K, 1234, a, static_cast<uint64_t>(t));
    ProjectOptions p;
    p.scale = scale;
    p.budget = budget;
    p.selection_seed = 555 + t;
    Result<CoefficientTable> table = Project(plan, basis, delta, p);
    EXPECT_TRUE(table.ok());
    std::vector<float> w(64, 0.0f);
    EXPECT_TRUE(Reconstruct(plan, basis, *table, {}, w).ok());
    for (int i = 0; i < 64; ++i) {
      sum[i] += w[i];
      sum_sq[i] += static_cast<double>(w[i]) * w[i];
    }
  }
  BiasResult r{0, 0, 0};
  double dd = 0, md = 0, err = 0;
  for (int i = 0; i < 64; ++i) {
    const double mean = sum[i] / trials;
    const double var = sum_sq[i] / trials - mean * mean;
    const double se = std::sqrt(var / trials);
    r.max_z = std::max(r.max_z, std::fabs(mean - delta[i]) / se);
    dd += static_cast<double>(delta[i]) * delta[i];
    md += mean * delta[i];
    err += (mean - delta[i]) * (mean - delta[i]);
  }
  r.slope = md / dd;
  r.rel_error = std::sqrt(err / dd);
  return r;
}

// 4000 trials: each coordinate's mean is within a few standard errors of delta (5 over
// 64 coordinates fails by chance with probability < 1e-4), the projection of the mean
// onto delta has slope 1 within 3%.
TEST(FerretUnbiasednessTest, UnbiasedScaleRecoversDeltaOnAverage) {
  for (BasisDistribution d : kAllDistributions) {
    const BiasResult r = MeasureBias(d, BasisAmplitude::kUnit, CoefficientScale::kUnbiased,
                                     /*K=*/8, /*budget=*/0, /*trials=*/4000);
    EXPECT_LT(r.max_z, 5.0) << static_cast<int>(d);
    EXPECT_NEAR(r.slope, 1.0, 0.03) << static_cast<int>(d);
  }
  // Reference amplitude with the unbiased scale, and a random subset of a larger pool.
  const BiasResult u = MeasureBias(BasisDistribution::kUniform, BasisAmplitude::kInvSqrtDim,
                                   CoefficientScale::kUnbiased, 16, 4, 4000);
  EXPECT_LT(u.max_z, 5.0);
  EXPECT_NEAR(u.slope, 1.0, 0.05);
}

TEST(FerretUnbiasednessTest, ReferenceScaleIsBiasedByAThirdWithUniformEntries) {
  const BiasResult r = MeasureBias(BasisDistribution::kUniform, BasisAmplitude::kInvSqrtDim,
                                   CoefficientScale::kReference, 8, 0, 4000);
  EXPECT_NEAR(r.slope, 1.0 / 3, 0.02);
  EXPECT_GT(r.rel_error, 0.5);
}

// Solves A x = b (n x n, row-major) by Gaussian elimination with partial pivoting.
std::vector<double> Solve(std::vector<double> A, std::vector<double> b, size_t n) {
  for (size_t col = 0; col < n; ++col) {
    size_t pivot = col;
    for (size_t r = col + 1; r < n; ++r) {
      if (std::fabs(A[r * n + col]) > std::fabs(A[pivot * n + col])) pivot = r;
    }
    for (size_t c = 0; c < n; ++c) std::swap(A[col * n + c], A[pivot * n + c]);
    std::swap(b[col], b[pivot]);
    for (size_t r = col + 1; r < n; ++r) {
      const double f = A[r * n + col] / A[col * n + col];
      for (size_t c = col; c < n; ++c) A[r * n + c] -= f * A[col * n + c];
      b[r] -= f * b[col];
    }
  }
  std::vector<double> x(n);
  for (size_t i = n; i-- > 0;) {
    double s = b[i];
    for (size_t c = i + 1; c < n; ++c) s -= A[i * n + c] * x[c];
    x[i] = s / A[i * n + i];
  }
  return x;
}

// The exact least-squares oracle gamma = (V^T V)^-1 V^T delta, with V^T delta taken from
// the fused projection and V generated entry by entry. With n = d it recovers delta;
// with n < d the residual is orthogonal to every basis.
TEST(FerretOracleTest, ExactLeastSquaresFromFusedProjections) {
  for (BasisDistribution d : kAllDistributions) {
    for (uint32_t K : {16u, 6u}) {
      const size_t dim = 16;
      const BlockPlan plan = *BlockPlan::FixedSize(MakeLayout({16}), dim);
      const BasisSpec basis = MakeBasis(d, K, 31);
      const std::vector<float> delta = RandomVector(dim, 7);
      // Raw dots <delta, u_k> straight from the fused kernel, in double.
      std::vector<double> vt_delta(K);
      const std::vector<uint64_t> seeds = basis.seeds;
      const ProjectJob job{0, 0, dim, seeds, vt_delta};
      ASSERT_TRUE(CpuProject(d, delta, std::span<const ProjectJob>(&job, 1), 1).ok());
      // ... and the same through Project's coefficients.
      Result<CoefficientTable> table = Project(plan, basis, delta, {});
      ASSERT_TRUE(table.ok());
      const double factor = CoefficientFactor(basis, CoefficientScale::kUnbiased, dim, K);
      for (uint32_t k = 0; k < K; ++k) {
        EXPECT_NEAR(table->entries()[k].value / factor, vt_delta[k],
                    1e-6 * (std::fabs(vt_delta[k]) + 1));
      }
      std::vector<double> V(dim * K);  // V[j * K + k]
      for (size_t j = 0; j < dim; ++j) {
        for (uint32_t k = 0; k < K; ++k) V[j * K + k] = Entry(basis, k, 0, j);
      }
      std::vector<double> gram(K * K, 0.0);
      for (uint32_t a = 0; a < K; ++a) {
        for (uint32_t b = 0; b < K; ++b) {
          for (size_t j = 0; j < dim; ++j) gram[a * K + b] += V[j * K + a] * V[j * K + b];
        }
      }
      const std::vector<double> gamma = Solve(gram, vt_delta, K);
      std::vector<double> residual(dim);
      double norm = 0, res_norm = 0;
      for (size_t j = 0; j < dim; ++j) {
        double rebuilt = 0;
        for (uint32_t k = 0; k < K; ++k) rebuilt += V[j * K + k] * gamma[k];
        residual[j] = delta[j] - rebuilt;
        norm += static_cast<double>(delta[j]) * delta[j];
        res_norm += residual[j] * residual[j];
      }
      if (K == dim) {
        EXPECT_LT(std::sqrt(res_norm / norm), 1e-3) << "distribution " << static_cast<int>(d);
      } else {
        EXPECT_GT(std::sqrt(res_norm / norm), 0.1);  // a 6-dim subspace cannot hold delta
        for (uint32_t k = 0; k < K; ++k) {
          double dot = 0;
          for (size_t j = 0; j < dim; ++j) dot += V[j * K + k] * residual[j];
          EXPECT_NEAR(dot, 0.0, 1e-4 * std::sqrt(norm * dim)) << k;
        }
      }
    }
  }
}

TEST(FerretReconstructTest, ClipsEachTermToTheNormBoundAndCountsIt) {
  const BlockPlan plan = *BlockPlan::FixedSize(MakeLayout({1024}), 1024);
  for (BasisDistribution d : kAllDistributions) {
    const BasisSpec basis = MakeBasis(d, 3, 8);
    // Rademacher norms are 32 |c|; uniform about 18.5 |c|; gaussian about 32 |c|.
    const float coeffs[3] = {1.0f, 0.01f, -2.0f};
    for (uint32_t k = 0; k < 3; ++k) {
      CoefficientTable one(plan.hash(), basis.Hash(), 3, 1);
      ASSERT_TRUE(one.Append(0, k, coeffs[k]).ok());
      ReconstructOptions opts;
      opts.clip_norm = 10.0;
      opts.multiplier = -1.0;
      std::vector<float> w(1024, 0.0f);
      Result<ReconstructStats> s = Reconstruct(plan, basis, one, opts, w);
      ASSERT_TRUE(s.ok());
      double term_norm = 0, basis_norm = 0;
      for (size_t j = 0; j < 1024; ++j) {
        term_norm += static_cast<double>(w[j]) * w[j];
        const double u = Entry(basis, k, 0, j);
        basis_norm += u * u;
      }
      term_norm = std::sqrt(term_norm);
      const double unclipped = std::fabs(coeffs[k]) * std::sqrt(basis_norm);
      EXPECT_EQ(s->terms_clipped, unclipped > 10.0 ? 1u : 0u) << k;
      EXPECT_NEAR(term_norm, std::min(unclipped, 10.0), 1e-5 * unclipped) << k;
    }
  }
}

TEST(FerretReconstructTest, NormCacheGivesTheSameBitsAndFillsOnce) {
  const Layout layout = RaggedLayout();
  const BlockPlan plan = BlockPlan::Reference(layout);
  for (BasisDistribution d : {BasisDistribution::kUniform, BasisDistribution::kGaussian}) {
    const BasisSpec basis = MakeBasis(d, 6, 12);
    Result<CoefficientTable> table =
        Project(plan, basis, RandomVector(layout.total_numel(), 3, 10.0f), {});
    ASSERT_TRUE(table.ok());
    ReconstructOptions r;
    r.clip_norm = 5.0;
    std::vector<float> plain(layout.total_numel(), 0.0f), cached = plain, again = plain;
    Result<ReconstructStats> s = Reconstruct(plan, basis, *table, r, plain);
    ASSERT_TRUE(s.ok());
    EXPECT_GT(s->terms_clipped, 0u);
    BasisNormCache cache;
    r.norm_cache = &cache;
    ASSERT_TRUE(Reconstruct(plan, basis, *table, r, cached).ok());
    EXPECT_EQ(cache.size(), table->size());
    // A second round reads every norm from the cache.
    ASSERT_TRUE(Reconstruct(plan, basis, *table, r, again).ok());
    EXPECT_EQ(cache.size(), table->size());
    EXPECT_TRUE(BitwiseEqual(plain, cached));
    EXPECT_TRUE(BitwiseEqual(plain, again));
    const Coefficient& first = table->entries()[0];
    const double* hit = cache.Find(d, basis.seeds[first.seed], first.block,
                                   plan.blocks()[first.block].size);
    ASSERT_NE(hit, nullptr);
    double want = 0;
    for (size_t j = 0; j < plan.blocks()[first.block].size; ++j) {
      const double u = Entry(basis, first.seed, first.block, j);
      want += u * u;
    }
    EXPECT_NEAR(*hit, want, 1e-6 * want);
  }
}

TEST(FerretReconstructTest, SkipsNonFiniteTermsVisibly) {
  const Layout layout = RaggedLayout();
  const BlockPlan plan = BlockPlan::Reference(layout);
  const BasisSpec basis = MakeBasis(BasisDistribution::kRademacher, 4, 1);
  CoefficientTable with_bad(plan.hash(), basis.Hash(), 4, plan.num_blocks());
  CoefficientTable good(plan.hash(), basis.Hash(), 4, plan.num_blocks());
  ASSERT_TRUE(with_bad.Append(0, 0, 0.5f).ok());
  ASSERT_TRUE(good.Append(0, 0, 0.5f).ok());
  ASSERT_TRUE(with_bad.Append(0, 1, std::numeric_limits<float>::quiet_NaN()).ok());
  ASSERT_TRUE(with_bad.Append(2, 3, -std::numeric_limits<float>::infinity()).ok());
  ASSERT_TRUE(with_bad.Append(3, 0, 3e38f).ok());  // finite, but times 2 overflows float
  ASSERT_TRUE(with_bad.Append(4, 2, 0.25f).ok());
  ASSERT_TRUE(good.Append(4, 2, 0.25f).ok());
  ReconstructOptions opts;
  opts.multiplier = 2.0;
  std::vector<float> w(layout.total_numel(), 1.0f), w_good = w;
  Result<ReconstructStats> s = Reconstruct(plan, basis, with_bad, opts, w);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->terms_applied, 2u);
  EXPECT_EQ(s->terms_skipped_nonfinite, 3u);
  ASSERT_TRUE(Reconstruct(plan, basis, good, opts, w_good).ok());
  EXPECT_TRUE(BitwiseEqual(w, w_good));
}

TEST(FerretProjectionTest, ReplayThroughTheWireFormatIsBitIdentical) {
  const Layout layout = RaggedLayout();
  const BlockPlan plan = BlockPlan::Reference(layout);
  const BasisSpec basis = MakeBasis(BasisDistribution::kGaussian, 20, 77);
  const std::vector<float> delta = RandomVector(layout.total_numel(), 1, 0.01f);
  ProjectOptions p;
  p.selection = SelectionPolicy::kProportional;
  Result<CoefficientTable> table = Project(plan, basis, delta, p);
  ASSERT_TRUE(table.ok());
  // Proportional counts: the largest-norm block uses the whole pool, none fewer than 2.
  uint32_t most = 0;
  for (uint32_t l = 0; l < plan.num_blocks(); ++l) {
    const size_t n = table->BlockEntries(l).size();
    EXPECT_GE(n, 2u);
    most = std::max<uint32_t>(most, static_cast<uint32_t>(n));
  }
  EXPECT_EQ(most, 20u);
  Result<CoefficientTable> wire = ParseCoefficientTable(SerializeCoefficientTable(*table));
  ASSERT_TRUE(wire.ok());
  ASSERT_TRUE(ValidateCoefficientTable(*wire, plan.hash(), basis.Hash(), 20, plan.num_blocks()).ok());
  const std::vector<float> w0 = RandomVector(layout.total_numel(), 2);
  ReconstructOptions r;
  r.multiplier = -1.0;
  r.clip_norm = 10.0;
  std::vector<float> server = w0, client = w0;
  ASSERT_TRUE(Reconstruct(plan, basis, *table, r, server).ok());
  r.num_threads = 3;
  ASSERT_TRUE(Reconstruct(plan, basis, *wire, r, client).ok());
  EXPECT_TRUE(BitwiseEqual(server, client));
}

TEST(FerretProjectionTest, ApproximatesTheUpdateWhenThePoolIsLarge) {
  // With n = K >> 1 the unbiased estimator's relative error is about sqrt(d / n)... so
  // use d < n: one 64-entry block, K = 4096 rademacher bases.
  const BlockPlan plan = *BlockPlan::FixedSize(MakeLayout({64}), 64);
  const BasisSpec basis = MakeBasis(BasisDistribution::kRademacher, 4096, 3);
  const std::vector<float> delta = RandomVector(64, 12);
  Result<CoefficientTable> table = Project(plan, basis, delta, {});
  ASSERT_TRUE(table.ok());
  std::vector<float> w(64, 0.0f);
  ASSERT_TRUE(Reconstruct(plan, basis, *table, {}, w).ok());
  double err = 0, norm = 0;
  for (int i = 0; i < 64; ++i) {
    err += (w[i] - delta[i]) * (w[i] - delta[i]);
    norm += delta[i] * delta[i];
  }
  EXPECT_LT(std::sqrt(err / norm), 0.25);  // expected about sqrt(63 / 4096) = 0.12
}

TEST(FerretProjectionTest, RejectsBadInputsPrecisely) {
  const Layout layout = RaggedLayout();
  const BlockPlan plan = BlockPlan::Reference(layout);
  const BasisSpec basis = MakeBasis(BasisDistribution::kRademacher, 4, 1);
  std::vector<float> delta = RandomVector(layout.total_numel(), 1);
  delta[5003] = std::numeric_limits<float>::quiet_NaN();
  Result<CoefficientTable> t = Project(plan, basis, delta, {});
  ASSERT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("5003"), std::string::npos) << t.status().ToString();
  delta[5003] = 0.0f;
  EXPECT_EQ(Project(plan, basis, std::span<const float>(delta).first(100), {}).status().code(),
            StatusCode::kInvalidArgument);
  BasisSpec dup = basis;
  dup.seeds[1] = dup.seeds[0];
  EXPECT_EQ(Project(plan, dup, delta, {}).status().code(), StatusCode::kInvalidArgument);

  Result<CoefficientTable> good = Project(plan, basis, delta, {});
  ASSERT_TRUE(good.ok());
  std::vector<float> w(layout.total_numel(), 1.0f);
  const std::vector<float> w0 = w;
  const BlockPlan other = *BlockPlan::FixedSize(layout, 1000);
  EXPECT_EQ(Reconstruct(other, basis, *good, {}, w).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(Reconstruct(plan, MakeBasis(BasisDistribution::kRademacher, 4, 2), *good, {}, w)
                .status()
                .code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(Reconstruct(plan, basis, *good, {}, std::span<float>(w).first(10)).status().code(),
            StatusCode::kInvalidArgument);
  ReconstructOptions nan_mult;
  nan_mult.multiplier = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(Reconstruct(plan, basis, *good, nan_mult, w).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(BitwiseEqual(w, w0));

  ProjectOptions cuda;
  cuda.device = ComputeDevice::kCuda;
  const StatusCode expected = !CudaCompiled()   ? StatusCode::kUnimplemented
                              : !CudaAvailable() ? StatusCode::kUnavailable
                                                 : StatusCode::kOk;
  EXPECT_EQ(Project(plan, basis, delta, cuda).status().code(), expected);
}

}  // namespace
}  // namespace fl::internal::ferret
