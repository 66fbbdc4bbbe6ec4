#ifndef FL_SDK_RNG_PHILOX_H_
#define FL_SDK_RNG_PHILOX_H_

// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11)
// and the basis distributions built on it. One header for host C++ and CUDA device
// code: the CPU client and a CUDA server generate bit-identical values from it.
//
// Addressing. A PhiloxStream is a 64-bit seed (the Philox key) plus a 32-bit block id
// and a 32-bit domain, which fill the two high counter words; the two low counter words
// hold a 64-bit call index. Output word w of call c belongs to element 4c + w (uniform,
// gaussian) or to elements 128c + 32w .. 128c + 32w + 31, one per bit (rademacher).
// So element j's value is a pure function of (seed, block, domain, j): it never depends
// on thread count, tile size, launch shape or device.
//
// Bitwise reproducibility across host and device:
//  - rademacher: integer operations only; the value is exactly +1 or -1.
//  - uniform: a 24-bit integer turned into an odd multiple of 2^-24 in (-1, 1); the
//    conversion and the power-of-two scaling are exact.
//  - gaussian: Box-Muller with this header's own log, sin and cos, written with one
//    correctly rounded IEEE operation per step (+, -, *, /, sqrt). Device code uses the
//    explicit round-to-nearest intrinsics so nvcc never fuses a multiply-add; host code
//    must be compiled without contraction or fast math (the build passes
//    -ffp-contract=off to every target that includes this header through fl_ferret, and
//    this header refuses -ffast-math). Under these rules gaussian values are bitwise
//    equal too. Their absolute error against exact Box-Muller on the same 24-bit inputs
//    is a few units in the last place of the radius (2.3 at most over 8M values).
//
// Nothing here uses std:: so that device code can include it.

#include <stdint.h>

#if defined(__CUDACC__)
#define FL_HOST_DEVICE __host__ __device__
#define FL_ALWAYS_INLINE __forceinline__
#else
#define FL_HOST_DEVICE
#define FL_ALWAYS_INLINE inline __attribute__((always_inline))
#endif

#if defined(__FAST_MATH__)
#error "sdk/rng/philox.h needs IEEE arithmetic: do not compile it with -ffast-math"
#endif

namespace fl::internal {

struct Philox4x32Counter {
  uint32_t v[4];
};

struct Philox4x32Key {
  uint32_t v[2];
};

// Multiplies a * b into a 64-bit product; returns the high word, stores the low word.
FL_HOST_DEVICE FL_ALWAYS_INLINE uint32_t PhiloxMulHiLo(uint32_t a, uint32_t b, uint32_t* lo) {
#if defined(__CUDA_ARCH__)
  *lo = a * b;
  return __umulhi(a, b);
#else
  const uint64_t product = static_cast<uint64_t>(a) * b;
  *lo = static_cast<uint32_t>(product);
  return static_cast<uint32_t>(product >> 32);
#endif
}

// Philox4x32 with `Rounds` rounds (Random123's philox4x32_R). Philox4x32-10 is the
// standard, crush-resistant choice.
template <int Rounds>
FL_HOST_DEVICE FL_ALWAYS_INLINE Philox4x32Counter Philox4x32R(Philox4x32Counter ctr,
                                                              Philox4x32Key key) {
  const uint32_t kMul0 = 0xD2511F53u;
  const uint32_t kMul1 = 0xCD9E8D57u;
  const uint32_t kWeyl0 = 0x9E3779B9u;
  const uint32_t kWeyl1 = 0xBB67AE85u;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < Rounds; ++round) {
    if (round > 0) {
      key.v[0] += kWeyl0;
      key.v[1] += kWeyl1;
    }
    uint32_t lo0, lo1;
    const uint32_t hi0 = PhiloxMulHiLo(kMul0, ctr.v[0], &lo0);
    const uint32_t hi1 = PhiloxMulHiLo(kMul1, ctr.v[2], &lo1);
    Philox4x32Counter next;
    next.v[0] = hi1 ^ ctr.v[1] ^ key.v[0];
    next.v[1] = lo1;
    next.v[2] = hi0 ^ ctr.v[3] ^ key.v[1];
    next.v[3] = lo0;
    ctr = next;
  }
  return ctr;
}

FL_HOST_DEVICE FL_ALWAYS_INLINE Philox4x32Counter Philox4x32_10(Philox4x32Counter ctr,
                                                                Philox4x32Key key) {
  return Philox4x32R<10>(ctr, key);
}

// Domains keep independent uses of one seed apart. Mixed into counter word 3, so
// changing them changes every derived value: never renumber an existing entry.
enum PhiloxDomain : uint32_t {
  kPhiloxDomainBasis = 0,      // Ferret basis entries v_{k,l}
  kPhiloxDomainSelection = 1,  // which basis indices a block uses (n_l < K)
  kPhiloxDomainSeedPool = 2,   // deriving the K pool seeds from a run seed
};

// A counter-based stream: (seed, block, domain) fixed, call index free.
struct PhiloxStream {
  Philox4x32Key key;
  uint32_t block;
  uint32_t domain;

  // Output of call `index` of this stream.
  FL_HOST_DEVICE FL_ALWAYS_INLINE Philox4x32Counter At(uint64_t index) const {
    Philox4x32Counter ctr;
    ctr.v[0] = static_cast<uint32_t>(index);
    ctr.v[1] = static_cast<uint32_t>(index >> 32);
    ctr.v[2] = block;
    ctr.v[3] = domain;
    return Philox4x32_10(ctr, key);
  }
};

FL_HOST_DEVICE FL_ALWAYS_INLINE PhiloxStream MakePhiloxStream(uint64_t seed, uint32_t block,
                                                              uint32_t domain) {
  PhiloxStream s;
  s.key.v[0] = static_cast<uint32_t>(seed);
  s.key.v[1] = static_cast<uint32_t>(seed >> 32);
  s.block = block;
  s.domain = domain;
  return s;
}

// The distribution of basis entries. Persisted in configs and sent with coefficient
// tables: never change the value of an existing entry.
enum class BasisDistribution : uint32_t {
  kRademacher = 1,  // +1 or -1, 128 entries per Philox call; per-entry variance 1
  kUniform = 2,     // odd multiples of 2^-24 in (-1, 1), 4 per call; variance ~1/3
  kGaussian = 3,    // standard normal (Box-Muller), 4 per call; variance ~1
};

// Number of basis entries one Philox call yields.
FL_HOST_DEVICE FL_ALWAYS_INLINE uint32_t EntriesPerCall(BasisDistribution d) {
  return d == BasisDistribution::kRademacher ? 128u : 4u;
}

// --- Exact float helpers. Bit casts go through a union, which both GCC and nvcc define.

FL_HOST_DEVICE FL_ALWAYS_INLINE uint32_t PhiloxFloatBits(float f) {
  union {
    float f;
    uint32_t u;
  } c;
  c.f = f;
  return c.u;
}

FL_HOST_DEVICE FL_ALWAYS_INLINE float PhiloxBitsFloat(uint32_t u) {
  union {
    float f;
    uint32_t u;
  } c;
  c.u = u;
  return c.f;
}

// One correctly rounded operation each; never contracted into a fused multiply-add.
FL_HOST_DEVICE FL_ALWAYS_INLINE float ExactAdd(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

FL_HOST_DEVICE FL_ALWAYS_INLINE float ExactMul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

FL_HOST_DEVICE FL_ALWAYS_INLINE float ExactDiv(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

FL_HOST_DEVICE FL_ALWAYS_INLINE float ExactSqrt(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return __builtin_sqrtf(a);
#endif
}

// --- Distributions of single entries.

// Bit `bit` of `word` set -> -1, clear -> +1 (a sign flip of 1.0f, integer ops only).
FL_HOST_DEVICE FL_ALWAYS_INLINE float RademacherFromBit(uint32_t word, uint32_t bit) {
  return PhiloxBitsFloat(0x3f800000u | (((word >> bit) & 1u) << 31));
}

// The odd integer 2*(word >> 8) + 1 - 2^24, in [-(2^24 - 1), 2^24 - 1]. Symmetric, so
// the uniform entries have mean exactly zero.
FL_HOST_DEVICE FL_ALWAYS_INLINE int32_t UniformNumerator(uint32_t word) {
  return static_cast<int32_t>((word >> 8) << 1) - 16777215;
}

// UniformNumerator(word) * 2^-24: both steps exact. Per-entry variance
// (1 - 2^-48) / 3.
FL_HOST_DEVICE FL_ALWAYS_INLINE float UniformFromWord(uint32_t word) {
  return static_cast<float>(UniformNumerator(word)) * 0x1p-24f;
}

// Natural logarithm for u in [2^-24, 1]: argument reduction to m in [sqrt(1/2), sqrt(2))
// by integer operations, then log(m) = 2 atanh(f / (2 + f)) with the classic
// degree-8 (in s) minimax polynomial (Cody-Waite split of ln 2).
FL_HOST_DEVICE FL_ALWAYS_INLINE float PhiloxLogUnit(float u) {
  const uint32_t bits = PhiloxFloatBits(u);
  int32_t e = static_cast<int32_t>(bits >> 23) - 127;
  uint32_t mbits = (bits & 0x007fffffu) | 0x3f800000u;
  // m > sqrt(2): halve it. Selects rather than a branch, so that CPU loops vectorize.
  const bool halve = mbits > 0x3fb504f3u;
  mbits -= halve ? 0x00800000u : 0u;
  e += halve ? 1 : 0;
  const float f = ExactAdd(PhiloxBitsFloat(mbits), -1.0f);
  const float s = ExactDiv(f, ExactAdd(2.0f, f));
  const float z = ExactMul(s, s);
  const float w = ExactMul(z, z);
  const float kLg1 = 0x1.555554p-1f;  // 0.66666662693
  const float kLg2 = 0x1.999c26p-2f;  // 0.40000972152
  const float kLg3 = 0x1.23d3dcp-2f;  // 0.28498786688
  const float kLg4 = 0x1.f13c4cp-3f;  // 0.24279078841
  const float kLn2Hi = 0x1.62e3p-1f;      // 6.9313812256e-01, low bits zero
  const float kLn2Lo = 0x1.2fefa2p-17f;   // 9.0580006145e-06
  const float t1 = ExactMul(w, ExactAdd(kLg2, ExactMul(w, kLg4)));
  const float t2 = ExactMul(z, ExactAdd(kLg1, ExactMul(w, kLg3)));
  const float r = ExactAdd(t2, t1);
  const float hfsq = ExactMul(ExactMul(0.5f, f), f);
  const float dk = static_cast<float>(e);
  float acc = ExactMul(s, ExactAdd(hfsq, r));
  acc = ExactAdd(acc, ExactMul(dk, kLn2Lo));
  acc = ExactAdd(acc, -hfsq);
  acc = ExactAdd(acc, f);
  return ExactAdd(acc, ExactMul(dk, kLn2Hi));
}

// sin(x) and cos(x) for x in [0, pi/4] by Taylor polynomials (truncation error below
// 2e-9, under half an ulp of the results).
FL_HOST_DEVICE FL_ALWAYS_INLINE void PhiloxSinCosSmall(float x, float* sin_out, float* cos_out) {
  const float x2 = ExactMul(x, x);
  float sp = 0x1.71de3ap-19f;                        // 1/9!
  sp = ExactAdd(-0x1.a01a02p-13f, ExactMul(x2, sp));  // -1/7!
  sp = ExactAdd(0x1.111112p-7f, ExactMul(x2, sp));    // 1/5!
  sp = ExactAdd(-0x1.555556p-3f, ExactMul(x2, sp));   // -1/3!
  *sin_out = ExactAdd(x, ExactMul(ExactMul(x, x2), sp));
  float cp = -0x1.27e4fcp-22f;                       // -1/10!
  cp = ExactAdd(0x1.a01a02p-16f, ExactMul(x2, cp));   // 1/8!
  cp = ExactAdd(-0x1.6c16c2p-10f, ExactMul(x2, cp));  // -1/6!
  cp = ExactAdd(0x1.555556p-5f, ExactMul(x2, cp));    // 1/4!
  cp = ExactAdd(-0.5f, ExactMul(x2, cp));
  *cos_out = ExactAdd(1.0f, ExactMul(x2, cp));
}

// Box-Muller on two words: radius from the top 24 bits of `a` (u1 in [2^-24, 1], so
// |z| <= 5.77: the tail beyond that, probability 2^-24 per pair, is cut), angle
// 2*pi*(k + 1/2)/2^24 from the top 24 bits of `b`, reduced to [0, pi/4] exactly with
// integer arithmetic (quadrant, then reflection).
FL_HOST_DEVICE FL_ALWAYS_INLINE void GaussianPairFromWords(uint32_t a, uint32_t b, float* z0,
                                                           float* z1) {
  // Integer-to-float conversions go through int32 (all values are below 2^24), which
  // vectorizes on the CPU and is exact everywhere.
  const float u1 = static_cast<float>(static_cast<int32_t>((a >> 8) + 1u)) * 0x1p-24f;  // exact
  const float radius = ExactSqrt(ExactMul(-2.0f, PhiloxLogUnit(u1)));
  const uint32_t k = b >> 8;
  const uint32_t quadrant = k >> 22;
  const uint32_t n_raw = ((k & 0x3fffffu) << 1) | 1u;  // angle in the quadrant: n * pi / 2^24
  const bool reflect = n_raw > 0x400000u;                // beyond pi/4: use pi/2 - angle
  const uint32_t n = reflect ? 0x800000u - n_raw : n_raw;
  const float x = ExactMul(static_cast<float>(static_cast<int32_t>(n)), 0x1.921fb6p-23f);  // pi/2^24
  float s, c;
  PhiloxSinCosSmall(x, &s, &c);
  const float s_half = reflect ? c : s;  // sin and cos of the angle within the quadrant
  const float c_half = reflect ? s : c;
  // Rotate by the quadrant: odd quadrants swap sin and cos; the signs follow
  // (q = 1: cos < 0; q = 2: both < 0; q = 3: sin < 0), applied as exact sign flips.
  const bool odd = (quadrant & 1u) != 0;
  const float sin_t = odd ? c_half : s_half;
  const float cos_t = odd ? s_half : c_half;
  const uint32_t sin_sign = (quadrant >> 1) << 31;
  const uint32_t cos_sign = ((quadrant ^ (quadrant >> 1)) & 1u) << 31;
  *z0 = ExactMul(radius, PhiloxBitsFloat(PhiloxFloatBits(cos_t) ^ cos_sign));
  *z1 = ExactMul(radius, PhiloxBitsFloat(PhiloxFloatBits(sin_t) ^ sin_sign));
}

// The four entries 4q .. 4q+3 of a basis stream (any distribution).
FL_HOST_DEVICE FL_ALWAYS_INLINE void BasisQuad(const PhiloxStream& stream, BasisDistribution dist,
                                               uint64_t q, float out[4]) {
  if (dist == BasisDistribution::kRademacher) {
    const uint64_t first = q << 2;
    const Philox4x32Counter r = stream.At(first >> 7);
    const uint32_t word = r.v[(first >> 5) & 3u];
    const uint32_t bit = static_cast<uint32_t>(first & 31u);
    for (uint32_t i = 0; i < 4; ++i) out[i] = RademacherFromBit(word, bit + i);
    return;
  }
  const Philox4x32Counter r = stream.At(q);
  if (dist == BasisDistribution::kUniform) {
    for (int i = 0; i < 4; ++i) out[i] = UniformFromWord(r.v[i]);
    return;
  }
  GaussianPairFromWords(r.v[0], r.v[1], &out[0], &out[1]);
  GaussianPairFromWords(r.v[2], r.v[3], &out[2], &out[3]);
}

// Entry j of a basis stream. The reference definition; the fused kernels must agree
// with it bit for bit.
FL_HOST_DEVICE FL_ALWAYS_INLINE float BasisEntry(const PhiloxStream& stream, BasisDistribution dist,
                                                 uint64_t j) {
  if (dist == BasisDistribution::kRademacher) {
    const Philox4x32Counter r = stream.At(j >> 7);
    return RademacherFromBit(r.v[(j >> 5) & 3u], static_cast<uint32_t>(j & 31u));
  }
  float quad[4];
  BasisQuad(stream, dist, j >> 2, quad);
  return quad[j & 3u];
}

// Exact, order-independent fixed-point value of entry^2 for clipping norms: the uniform
// entry squared is UniformNumerator^2 * 2^-48, an integer below 2^48; a gaussian entry
// squared (rounded to float) is truncated to a multiple of 2^-32 (below 34 * 2^32).
// Sums of these integers do not depend on summation order, so CPU and CUDA agree.
FL_HOST_DEVICE FL_ALWAYS_INLINE uint64_t UniformSquareFixed(uint32_t word) {
  const int64_t m = UniformNumerator(word);
  return static_cast<uint64_t>(m * m);
}

FL_HOST_DEVICE FL_ALWAYS_INLINE uint64_t GaussianSquareFixed(float z) {
  const float scaled = ExactMul(ExactMul(z, z), 0x1p32f);  // * 2^32, exact
#if defined(__CUDA_ARCH__)
  return __float2ull_rz(scaled);
#else
  return static_cast<uint64_t>(scaled);
#endif
}

}  // namespace fl::internal

#endif  // FL_SDK_RNG_PHILOX_H_
