#include "data/domain_shift.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "data/sampling.h"
#include "rng/splitmix64.h"

namespace fl::internal {
namespace {

constexpr std::array<std::string_view, kNumDomains> kNames = {"clean", "inverted", "rot90", "noise",
                                                              "blur"};
constexpr double kNoiseSigma = 64.0;
constexpr int kBlurRadius = 2;  // 5 x 5
constexpr double kBlurSigma = 1.5;

// Streams of one seed that must not share numbers (splitmix64-style salts).
constexpr uint64_t kDomainDrawSalt = 0x6a09e667f3bcc909ULL;
constexpr uint64_t kExampleOrderSalt = 0xbb67ae8584caa73bULL;
constexpr uint64_t kTestNoiseSalt = 0x3c6ef372fe94f82bULL;

std::string_view Trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

uint8_t ClampRound(double v) { return static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L)); }

void Invert(std::span<uint8_t> image) {
  for (uint8_t& x : image) x = static_cast<uint8_t>(255 - x);
}

// Clockwise: the top row becomes the right column, out(r, c) = in(n - 1 - c, r).
void Rot90(int64_t n, std::span<uint8_t> image) {
  std::vector<uint8_t> in(image.begin(), image.end());
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < n; ++c) image[r * n + c] = in[(n - 1 - c) * n + r];
  }
}

void AddNoise(uint64_t seed, std::span<uint8_t> image) {
  SeededRng rng(seed);
  for (uint8_t& x : image) x = ClampRound(x + kNoiseSigma * rng.Normal());
}

std::array<double, 2 * kBlurRadius + 1> BlurKernel() {
  std::array<double, 2 * kBlurRadius + 1> k{};
  double sum = 0;
  for (int i = -kBlurRadius; i <= kBlurRadius; ++i) {
    k[i + kBlurRadius] = std::exp(-0.5 * i * i / (kBlurSigma * kBlurSigma));
    sum += k[i + kBlurRadius];
  }
  for (double& w : k) w /= sum;
  return k;
}

// Separable Gaussian: rows then columns, in double so only the final value is rounded.
void Blur(int64_t rows, int64_t cols, std::span<uint8_t> image) {
  static const std::array<double, 2 * kBlurRadius + 1> k = BlurKernel();
  std::vector<double> tmp(image.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      double v = 0;
      for (int i = -kBlurRadius; i <= kBlurRadius; ++i) {
        v += k[i + kBlurRadius] * image[r * cols + std::clamp<int64_t>(c + i, 0, cols - 1)];
      }
      tmp[r * cols + c] = v;
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      double v = 0;
      for (int i = -kBlurRadius; i <= kBlurRadius; ++i) {
        v += k[i + kBlurRadius] * tmp[std::clamp<int64_t>(r + i, 0, rows - 1) * cols + c];
      }
      image[r * cols + c] = ClampRound(v);
    }
  }
}

Status CheckSplitOptions(const ImageDataset& train, const ShiftedSplitOptions& o, int64_t end) {
  if (o.begin < 0 || o.begin >= end || end > train.size()) {
    return Status::InvalidArgument("shifted split: examples [" + std::to_string(o.begin) + ", " +
                                   std::to_string(end) + ") are not a non-empty range of the " +
                                   std::to_string(train.size()) + " training images");
  }
  if (o.domains.empty()) return Status::InvalidArgument("shifted split: no domains");
  if (o.domains_per_client < 1 || o.domains_per_client > static_cast<int>(o.domains.size())) {
    return Status::InvalidArgument(
        "shifted split: domains_per_client must be in [1, " + std::to_string(o.domains.size()) +
        "] (the number of domains), got " + std::to_string(o.domains_per_client));
  }
  return Status::Ok();
}

// Step 2 of BuildShiftedSplit: the least-held domains first, seeded ties.
std::vector<std::vector<Domain>> DrawClientDomains(const ShiftedSplitOptions& o) {
  SeededRng rng(o.seed ^ kDomainDrawSalt);
  std::vector<int> held(o.domains.size(), 0);
  std::vector<std::vector<Domain>> out(o.num_clients);
  for (std::vector<Domain>& mine : out) {
    std::vector<size_t> order(o.domains.size());
    for (size_t d = 0; d < order.size(); ++d) order[d] = d;
    rng.Shuffle(order);  // ties keep this random order under the stable sort
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return held[a] < held[b]; });
    for (int j = 0; j < o.domains_per_client; ++j) {
      ++held[order[j]];
      mine.push_back(o.domains[order[j]]);
    }
  }
  return out;
}

ImageDataset Slice(const ImageDataset& ds, int64_t begin, int64_t end) {
  ImageDataset out;
  out.rows = ds.rows;
  out.cols = ds.cols;
  out.num_classes = ds.num_classes;
  const int64_t pixels = ds.rows * ds.cols;
  out.images.assign(ds.images.begin() + begin * pixels, ds.images.begin() + end * pixels);
  out.labels.assign(ds.labels.begin() + begin, ds.labels.begin() + end);
  return out;
}

std::span<uint8_t> MutableImage(ImageDataset& ds, int64_t i) {
  const int64_t pixels = ds.rows * ds.cols;
  return std::span<uint8_t>(ds.images.data() + i * pixels, static_cast<size_t>(pixels));
}

}  // namespace

std::string_view DomainName(Domain domain) {
  const int i = static_cast<int>(domain);
  return i >= 0 && i < kNumDomains ? kNames[i] : std::string_view("unknown");
}

Result<Domain> ParseDomain(std::string_view name) {
  for (int i = 0; i < kNumDomains; ++i) {
    if (kNames[i] == name) return static_cast<Domain>(i);
  }
  return Status::InvalidArgument("unknown domain \"" + std::string(name) +
                                 "\" (known: " + DomainListToString(AllDomains()) + ")");
}

std::vector<Domain> AllDomains() {
  std::vector<Domain> out;
  for (int i = 0; i < kNumDomains; ++i) out.push_back(static_cast<Domain>(i));
  return out;
}

Result<std::vector<Domain>> ParseDomainList(std::string_view list) {
  std::vector<Domain> out;
  while (true) {
    const size_t comma = list.find(',');
    FL_ASSIGN_OR_RETURN(Domain d, ParseDomain(Trim(list.substr(0, comma))));
    if (std::find(out.begin(), out.end(), d) != out.end()) {
      return Status::InvalidArgument("domain \"" + std::string(DomainName(d)) + "\" listed twice");
    }
    out.push_back(d);
    if (comma == std::string_view::npos) return out;
    list.remove_prefix(comma + 1);
  }
}

std::string DomainListToString(std::span<const Domain> domains) {
  std::string out;
  for (Domain d : domains) {
    if (!out.empty()) out += ",";
    out += DomainName(d);
  }
  return out;
}

uint64_t ShiftSeed(uint64_t seed, uint64_t index) {
  // One SplitMix64 step per index: neighbouring indices get unrelated streams.
  return SplitMix64(seed + index * kGoldenGamma64);
}

Status ApplyDomainShift(Domain domain, uint64_t seed, int64_t rows, int64_t cols,
                        std::span<uint8_t> image) {
  if (rows < 1 || cols < 1 || image.size() != static_cast<size_t>(rows * cols)) {
    return Status::InvalidArgument("domain shift: an image of " + std::to_string(image.size()) +
                                   " bytes is not " + std::to_string(rows) + " x " +
                                   std::to_string(cols));
  }
  switch (domain) {
    case Domain::kClean:
      return Status::Ok();
    case Domain::kInverted:
      Invert(image);
      return Status::Ok();
    case Domain::kRot90:
      if (rows != cols) {
        return Status::InvalidArgument("domain shift rot90 needs a square image, not " +
                                       std::to_string(rows) + " x " + std::to_string(cols));
      }
      Rot90(rows, image);
      return Status::Ok();
    case Domain::kNoise:
      AddNoise(seed, image);
      return Status::Ok();
    case Domain::kBlur:
      Blur(rows, cols, image);
      return Status::Ok();
  }
  return Status::InvalidArgument("unknown domain " + std::to_string(static_cast<int>(domain)));
}

Result<ShiftedSplit> BuildShiftedSplit(const ImageDataset& train,
                                       const ShiftedSplitOptions& options) {
  const int64_t end = options.end == 0 ? train.size() : options.end;
  FL_RETURN_IF_ERROR(CheckSplitOptions(train, options, end));
  ShiftedSplit out;
  out.images = Slice(train, options.begin, end);
  FL_ASSIGN_OR_RETURN(out.clients, PartitionExamples(options.label_skew, out.images.labels,
                                                     options.num_clients, options.seed));
  out.client_domains = DrawClientDomains(options);
  out.domain.assign(static_cast<size_t>(out.images.size()), Domain::kClean);
  SeededRng rng(options.seed ^ kExampleOrderSalt);
  for (size_t c = 0; c < out.clients.size(); ++c) {
    std::vector<int64_t> order = out.clients[c];
    rng.Shuffle(order);
    const std::vector<Domain>& mine = out.client_domains[c];
    for (size_t j = 0; j < order.size(); ++j) out.domain[order[j]] = mine[j % mine.size()];
  }
  for (int64_t j = 0; j < out.images.size(); ++j) {
    FL_RETURN_IF_ERROR(ApplyDomainShift(out.domain[j], ShiftSeed(options.seed, options.begin + j),
                                        out.images.rows, out.images.cols,
                                        MutableImage(out.images, j)));
  }
  return out;
}

Result<ShiftedTestSet> BuildShiftedTestSet(const ImageDataset& test,
                                           std::span<const Domain> domains, uint64_t seed) {
  if (domains.empty()) return Status::InvalidArgument("shifted test set: no domains");
  ShiftedTestSet out;
  out.images = test;
  out.domain.resize(static_cast<size_t>(test.size()));
  for (int64_t i = 0; i < test.size(); ++i) {
    out.domain[i] = domains[static_cast<size_t>(i) % domains.size()];
    FL_RETURN_IF_ERROR(ApplyDomainShift(out.domain[i], ShiftSeed(seed ^ kTestNoiseSalt, i),
                                        out.images.rows, out.images.cols,
                                        MutableImage(out.images, i)));
  }
  return out;
}

}  // namespace fl::internal
