#include "data/partition.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "data/sampling.h"

namespace fl::internal {
namespace {

constexpr std::string_view kSpecForms =
    "expected iid, dirichlet:<alpha>, shards:<k> or sample:<m>";

Status BadSpec(std::string_view spec, std::string_view why) {
  return Status::InvalidArgument("bad partition \"" + std::string(spec) + "\": " +
                                 std::string(why) + " (" + std::string(kSpecForms) + ")");
}

// Indices of each label, in ascending label order; each list shuffled by `rng`.
std::vector<std::vector<int64_t>> ShuffledClasses(std::span<const uint8_t> labels,
                                                   SeededRng& rng) {
  std::map<uint8_t, std::vector<int64_t>> by_label;
  for (size_t i = 0; i < labels.size(); ++i) by_label[labels[i]].push_back(static_cast<int64_t>(i));
  std::vector<std::vector<int64_t>> classes;
  for (auto& [label, indices] : by_label) {
    rng.Shuffle(indices);
    classes.push_back(std::move(indices));
  }
  return classes;
}

// Start of part `i` when `n` items are cut into `parts` near-equal parts.
size_t PartBegin(size_t i, size_t n, size_t parts) { return i * n / parts; }

// Sorts each client's run of `indices` (the order the shards promise).
void SortEachClient(std::vector<int64_t>& indices, const std::vector<uint64_t>& offsets) {
  for (size_t c = 0; c + 1 < offsets.size(); ++c) {
    std::sort(indices.begin() + static_cast<std::ptrdiff_t>(offsets[c]),
              indices.begin() + static_cast<std::ptrdiff_t>(offsets[c + 1]));
  }
}

ClientShards Iid(size_t n, int num_clients, SeededRng& rng) {
  std::vector<int64_t> all(n);
  for (size_t i = 0; i < n; ++i) all[i] = static_cast<int64_t>(i);
  rng.Shuffle(all);
  std::vector<uint64_t> offsets(static_cast<size_t>(num_clients) + 1);
  for (size_t c = 0; c < offsets.size(); ++c) offsets[c] = PartBegin(c, n, num_clients);
  SortEachClient(all, offsets);
  return ClientShards::Stored(std::move(all), std::move(offsets));
}

// The lists of `p`, one after the other, each sorted.
ClientShards Flatten(Partition p) {
  std::vector<uint64_t> offsets(p.size() + 1, 0);
  for (size_t c = 0; c < p.size(); ++c) offsets[c + 1] = offsets[c] + p[c].size();
  std::vector<int64_t> indices;
  indices.reserve(offsets.back());
  for (std::vector<int64_t>& client : p) {
    indices.insert(indices.end(), client.begin(), client.end());
    std::vector<int64_t>().swap(client);
  }
  SortEachClient(indices, offsets);
  return ClientShards::Stored(std::move(indices), std::move(offsets));
}

Partition Dirichlet(std::span<const uint8_t> labels, int num_clients, double alpha,
                    SeededRng& rng) {
  Partition out(num_clients);
  for (const std::vector<int64_t>& cls : ShuffledClasses(labels, rng)) {
    std::vector<double> p = rng.Dirichlet(alpha, num_clients);
    const size_t n = cls.size();
    double cumulative = 0;
    size_t begin = 0;
    for (int c = 0; c < num_clients; ++c) {
      cumulative += p[c];
      size_t end = c + 1 == num_clients
                       ? n
                       : std::min(n, static_cast<size_t>(std::llround(cumulative * n)));
      end = std::max(end, begin);
      out[c].insert(out[c].end(), cls.begin() + begin, cls.begin() + end);
      begin = end;
    }
  }
  // Repair: an empty client takes one random example from the largest client. With
  // n >= num_clients the largest client always has >= 2 examples while one is empty.
  for (int c = 0; c < num_clients; ++c) {
    if (!out[c].empty()) continue;
    size_t largest = 0;
    for (size_t j = 1; j < out.size(); ++j) {
      if (out[j].size() > out[largest].size()) largest = j;
    }
    std::vector<int64_t>& donor = out[largest];
    size_t pick = static_cast<size_t>(rng.UniformInt(donor.size()));
    out[c].push_back(donor[pick]);
    donor[pick] = donor.back();
    donor.pop_back();
  }
  return out;
}

Result<ClientShards> Shards(std::span<const uint8_t> labels, int num_clients, int k,
                            SeededRng& rng) {
  std::vector<std::vector<int64_t>> classes = ShuffledClasses(labels, rng);
  const size_t num_shards = static_cast<size_t>(num_clients) * static_cast<size_t>(k);
  if (num_shards < classes.size()) {
    return Status::InvalidArgument(
        "shards:" + std::to_string(k) + " with " + std::to_string(num_clients) + " clients makes " +
        std::to_string(num_shards) + " shards, fewer than the " + std::to_string(classes.size()) +
        " labels present; every label needs a shard of its own");
  }
  if (num_shards > labels.size()) {
    return Status::InvalidArgument("shards:" + std::to_string(k) + " needs " +
                                   std::to_string(num_shards) + " non-empty shards but there are " +
                                   std::to_string(labels.size()) + " examples");
  }
  // One shard per label, then each further shard to the label with the most examples
  // per shard, so shard sizes stay even while every shard holds a single label.
  std::vector<size_t> shards(classes.size(), 1);
  for (size_t extra = classes.size(); extra < num_shards; ++extra) {
    size_t best = classes.size();
    for (size_t c = 0; c < classes.size(); ++c) {
      if (shards[c] >= classes[c].size()) continue;
      if (best == classes.size() ||
          classes[c].size() * shards[best] > classes[best].size() * shards[c]) {
        best = c;
      }
    }
    // num_shards <= labels.size() guarantees some class can still be split.
    ++shards[best];
  }
  std::vector<std::span<const int64_t>> pieces;
  pieces.reserve(num_shards);
  for (size_t c = 0; c < classes.size(); ++c) {
    const size_t n = classes[c].size();
    for (size_t s = 0; s < shards[c]; ++s) {
      size_t b = PartBegin(s, n, shards[c]);
      size_t e = PartBegin(s + 1, n, shards[c]);
      pieces.emplace_back(classes[c].data() + b, e - b);
    }
  }
  rng.Shuffle(pieces);
  // Client c holds pieces c*k .. c*k+k-1.
  std::vector<uint64_t> offsets(static_cast<size_t>(num_clients) + 1, 0);
  std::vector<int64_t> indices;
  indices.reserve(labels.size());
  for (size_t s = 0; s < pieces.size(); ++s) {
    indices.insert(indices.end(), pieces[s].begin(), pieces[s].end());
    offsets[s / static_cast<size_t>(k) + 1] = indices.size();
  }
  SortEachClient(indices, offsets);
  return ClientShards::Stored(std::move(indices), std::move(offsets));
}

// sample:m: nothing to compute beyond the checks.
Result<ClientShards> Sample(size_t n, int num_clients, int64_t m, uint64_t seed) {
  if (m < 1) return Status::InvalidArgument("sample m must be >= 1");
  if (static_cast<uint64_t>(m) > n) {
    return Status::InvalidArgument("sample:" + std::to_string(m) + " draws " + std::to_string(m) +
                                   " distinct examples per client but there are " +
                                   std::to_string(n));
  }
  return ClientShards::Drawn(static_cast<size_t>(num_clients), n, static_cast<uint64_t>(m), seed);
}

}  // namespace

Result<PartitionSpec> ParsePartitionSpec(std::string_view spec) {
  PartitionSpec out;
  if (spec == "iid") {
    out.kind = PartitionSpec::Kind::kIid;
    return out;
  }
  size_t colon = spec.find(':');
  if (colon == std::string_view::npos) return BadSpec(spec, "unknown partition");
  std::string_view kind = spec.substr(0, colon);
  std::string arg(spec.substr(colon + 1));
  if (arg.empty()) return BadSpec(spec, "missing value after ':'");
  char* end = nullptr;
  errno = 0;
  if (kind == "dirichlet") {
    double alpha = std::strtod(arg.c_str(), &end);
    if (errno != 0 || end != arg.c_str() + arg.size() || !std::isfinite(alpha) || alpha <= 0) {
      return BadSpec(spec, "alpha must be a positive number");
    }
    out.kind = PartitionSpec::Kind::kDirichlet;
    out.alpha = alpha;
    return out;
  }
  if (kind == "shards") {
    long k = std::strtol(arg.c_str(), &end, 10);
    if (errno != 0 || end != arg.c_str() + arg.size() || k < 1 || k > 1000000) {
      return BadSpec(spec, "k must be a positive integer");
    }
    out.kind = PartitionSpec::Kind::kShards;
    out.shards_per_client = static_cast<int>(k);
    return out;
  }
  if (kind == "sample") {
    long long m = std::strtoll(arg.c_str(), &end, 10);
    if (errno != 0 || end != arg.c_str() + arg.size() || m < 1 || m > 10000000) {
      return BadSpec(spec, "m must be an integer in [1, 10000000]");
    }
    out.kind = PartitionSpec::Kind::kSample;
    out.examples_per_client = static_cast<int64_t>(m);
    return out;
  }
  return BadSpec(spec, "unknown partition");
}

std::string PartitionSpecToString(const PartitionSpec& spec) {
  switch (spec.kind) {
    case PartitionSpec::Kind::kIid:
      return "iid";
    case PartitionSpec::Kind::kDirichlet: {
      char buf[64];
      std::snprintf(buf, sizeof(buf), "dirichlet:%g", spec.alpha);
      return buf;
    }
    case PartitionSpec::Kind::kShards:
      return "shards:" + std::to_string(spec.shards_per_client);
    case PartitionSpec::Kind::kSample:
      return "sample:" + std::to_string(spec.examples_per_client);
  }
  return "iid";
}

Result<ClientShards> ShardExamples(const PartitionSpec& spec, std::span<const uint8_t> labels,
                                   int num_clients, uint64_t seed) {
  if (num_clients < 1) {
    return Status::InvalidArgument("num_clients must be >= 1, got " + std::to_string(num_clients));
  }
  if (spec.kind == PartitionSpec::Kind::kSample) {
    return Sample(labels.size(), num_clients, spec.examples_per_client, seed);
  }
  if (labels.size() < static_cast<size_t>(num_clients)) {
    return Status::InvalidArgument("cannot give " + std::to_string(num_clients) +
                                   " clients at least one example each from " +
                                   std::to_string(labels.size()) +
                                   " examples (sample:<m> draws from the whole dataset for any "
                                   "number of clients)");
  }
  SeededRng rng(seed);
  switch (spec.kind) {
    case PartitionSpec::Kind::kIid:
      return Iid(labels.size(), num_clients, rng);
    case PartitionSpec::Kind::kDirichlet:
      if (!(spec.alpha > 0) || !std::isfinite(spec.alpha)) {
        return Status::InvalidArgument("dirichlet alpha must be positive");
      }
      return Flatten(Dirichlet(labels, num_clients, spec.alpha, rng));
    case PartitionSpec::Kind::kShards:
      if (spec.shards_per_client < 1) return Status::InvalidArgument("shards k must be >= 1");
      return Shards(labels, num_clients, spec.shards_per_client, rng);
    case PartitionSpec::Kind::kSample:
      break;
  }
  return Status::Internal("unknown partition kind");
}

Result<Partition> PartitionExamples(const PartitionSpec& spec, std::span<const uint8_t> labels,
                                    int num_clients, uint64_t seed) {
  FL_ASSIGN_OR_RETURN(ClientShards shards, ShardExamples(spec, labels, num_clients, seed));
  Partition out(shards.num_clients());
  for (size_t c = 0; c < out.size(); ++c) out[c] = shards.Indices(c);
  return out;
}

}  // namespace fl::internal
