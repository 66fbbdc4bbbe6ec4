#include "data/client_shards.h"

#include <algorithm>
#include <utility>

#include "data/sampling.h"
#include "rng/splitmix64.h"

namespace fl::internal {
namespace {

// Separates the sample:<m> draws from every other stream derived from the run seed.
constexpr uint64_t kDrawShardPurpose = 0x73616d706c653a6dull;  // "sample:m"

}  // namespace

std::vector<int64_t> DrawShard(uint64_t num_examples, uint64_t per_client, uint64_t seed,
                               uint64_t client) {
  SeededRng rng(SplitMix64(seed ^ SplitMix64(kDrawShardPurpose ^ SplitMix64(client))));
  // Floyd's algorithm: per_client distinct values with per_client draws, each subset
  // equally likely.
  std::vector<bool> taken(num_examples, false);
  std::vector<int64_t> out;
  out.reserve(per_client);
  for (uint64_t j = num_examples - per_client; j < num_examples; ++j) {
    uint64_t t = rng.UniformInt(j + 1);
    if (taken[t]) t = j;
    taken[t] = true;
    out.push_back(static_cast<int64_t>(t));
  }
  std::sort(out.begin(), out.end());
  return out;
}

ClientShards ClientShards::Stored(std::vector<int64_t> indices, std::vector<uint64_t> offsets) {
  ClientShards s;
  s.num_clients_ = offsets.size() - 1;
  s.indices_ = std::move(indices);
  s.offsets_ = std::move(offsets);
  return s;
}

ClientShards ClientShards::Drawn(size_t num_clients, uint64_t num_examples, uint64_t per_client,
                                 uint64_t seed) {
  ClientShards s;
  s.num_clients_ = num_clients;
  s.drawn_ = true;
  s.num_examples_ = num_examples;
  s.per_client_ = per_client;
  s.seed_ = seed;
  return s;
}

std::vector<int64_t> ClientShards::Indices(size_t client) const {
  if (drawn_) return DrawShard(num_examples_, per_client_, seed_, client);
  return std::vector<int64_t>(indices_.begin() + static_cast<std::ptrdiff_t>(offsets_[client]),
                              indices_.begin() + static_cast<std::ptrdiff_t>(offsets_[client + 1]));
}

size_t ClientShards::resident_bytes() const {
  return indices_.capacity() * sizeof(int64_t) + offsets_.capacity() * sizeof(uint64_t);
}

}  // namespace fl::internal
