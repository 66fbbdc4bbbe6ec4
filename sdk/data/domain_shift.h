#ifndef FL_SDK_DATA_DOMAIN_SHIFT_H_
#define FL_SDK_DATA_DOMAIN_SHIFT_H_

// W3 `fmnist-vit-shift` (WORKLOADS.md): Fashion-MNIST under domain shifts, and the
// federated split whose clients each hold a mix of shifts plus a label skew.
// Torch-free, so fl-client could load the same shard.
//
// The shifts, on uint8 grey-scale images (0 = black background):
//   clean     unchanged.
//   inverted  255 - x. The background becomes white: the cheapest shift that defeats a
//             backbone trained on dark backgrounds.
//   rot90     rotated 90 degrees clockwise (square images only). Same pixels, new
//             geometry, so only the positional part of the model is shifted.
//   noise     x + N(0, 64^2) per pixel, rounded and clamped to [0, 255]. sigma = 64 is a
//             quarter of the range: clearly visible and it lifts the black background to
//             a mean near 25, yet the garment stays recognizable, so the domain is
//             learnable. Seeded per image (ShiftSeed), hence reproducible.
//   blur      a 5 x 5 Gaussian (sigma 1.5, applied as two separable 1-D passes, edges
//             replicated). Removes the fine texture that tells shirts from pullovers
//             while keeping the mean brightness.
//
// Every function is deterministic given its seed (SeededRng, sampling.h).

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "data/idx_reader.h"
#include "data/partition.h"
#include "fl/status.h"

namespace fl::internal {

// Written to reports by name only; the values index per-domain tables.
enum class Domain { kClean = 0, kInverted = 1, kRot90 = 2, kNoise = 3, kBlur = 4 };
inline constexpr int kNumDomains = 5;

// "clean", "inverted", "rot90", "noise", "blur".
std::string_view DomainName(Domain domain);
// The inverse of DomainName. InvalidArgument naming the known domains otherwise.
Result<Domain> ParseDomain(std::string_view name);
// Every domain, in enum order.
std::vector<Domain> AllDomains();
// A comma list of domain names ("clean,inverted,rot90"), spaces around names ignored.
// InvalidArgument for an empty list, an unknown name or a repeated one.
Result<std::vector<Domain>> ParseDomainList(std::string_view list);
// The comma list ParseDomainList accepts.
std::string DomainListToString(std::span<const Domain> domains);

// The noise seed of image `index` of a split seeded by `seed`: distinct images get
// unrelated noise, and the same image the same noise in every run.
uint64_t ShiftSeed(uint64_t seed, uint64_t index);

// Shifts one rows x cols image in place. `seed` only matters for kNoise.
// InvalidArgument if image.size() != rows * cols, or for kRot90 on a non-square image.
Status ApplyDomainShift(Domain domain, uint64_t seed, int64_t rows, int64_t cols,
                        std::span<uint8_t> image);

// The federated fine-tuning split of the Fashion-MNIST train set.
struct ShiftedSplitOptions {
  // Examples [begin, end) of the train set are federated; pretraining uses the clean
  // images before `begin`. end = 0 means the end of the set.
  int64_t begin = 30000;
  int64_t end = 0;
  int num_clients = 10;
  // The domains clients draw from, and how many distinct ones each client holds.
  // REQUIRES (else InvalidArgument): 1 <= domains_per_client <= domains.size().
  std::vector<Domain> domains = AllDomains();
  int domains_per_client = 3;
  // The label skew over clients (PartitionExamples); dirichlet:0.5 by default.
  PartitionSpec label_skew{PartitionSpec::Kind::kDirichlet, 0.5, 2};
  uint64_t seed = 1;
};

struct ShiftedSplit {
  // Examples [begin, end) of the train set, each under its domain; example j is
  // train image begin + j.
  ImageDataset images;
  std::vector<Domain> domain;  // one per example of `images`
  // client -> indices into `images`, ascending.
  Partition clients;
  // client -> the domains it holds (domains_per_client distinct ones, in the order its
  // examples cycle through them).
  std::vector<std::vector<Domain>> client_domains;
};

// Builds the split:
//  1. The label skew: PartitionExamples(label_skew) over the labels of [begin, end).
//  2. The clients' domains: client by client, the domains_per_client domains that the
//     fewest earlier clients hold, ties broken by a seeded draw, so every domain is held
//     by nearly equally many clients (counts differ by at most one) in varied mixes.
//  3. Each client's examples, in a seeded shuffled order, take its domains round-robin,
//     so a client holds near-equal numbers of each of its domains. (A client with fewer
//     examples than domains_per_client therefore shows only as many domains.)
//  4. Every example shifted to its domain, noise seeded by ShiftSeed(seed, train index).
// InvalidArgument for a range outside the set, fewer examples than clients or bad
// domain options. Deterministic given options.seed.
Result<ShiftedSplit> BuildShiftedSplit(const ImageDataset& train,
                                       const ShiftedSplitOptions& options);

struct ShiftedTestSet {
  ImageDataset images;         // the test images, each under its domain
  std::vector<Domain> domain;  // image i: domains[i % domains.size()]
};

// The test set under the shifts: image i under domains[i % domains.size()] (with the
// five domains and the 10k Fashion-MNIST test images, 2,000 per domain), its noise
// seeded from (seed, i) on a stream apart from the training split's. InvalidArgument for
// an empty `domains` or a failed shift.
Result<ShiftedTestSet> BuildShiftedTestSet(const ImageDataset& test,
                                           std::span<const Domain> domains, uint64_t seed);

}  // namespace fl::internal

#endif  // FL_SDK_DATA_DOMAIN_SHIFT_H_
