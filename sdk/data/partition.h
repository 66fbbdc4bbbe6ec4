#ifndef FL_SDK_DATA_PARTITION_H_
#define FL_SDK_DATA_PARTITION_H_

// Splits a labelled dataset among virtual clients. Torch-free: fl-client calls the
// same function, so a client process holds exactly the shard fl-sim would give it.
//
// Every partition is a function of (spec, labels, num_clients, seed) only: the random
// numbers come from SeededRng (std::mt19937_64 with hand-written distributions), so a
// seed gives the same split on every platform. iid, dirichlet and shards give every
// example to exactly one client and leave no client empty; sample:<m> gives every
// client m examples drawn from the whole dataset (clients overlap), so there may be more
// clients than examples.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "data/client_shards.h"
#include "fl/status.h"

namespace fl::internal {

struct PartitionSpec {
  enum class Kind { kIid, kDirichlet, kShards, kSample };
  Kind kind = Kind::kIid;
  // kDirichlet: concentration of the per-class Dirichlet over clients (small = skewed).
  double alpha = 0.5;
  // kShards: label-pure shards per client.
  int shards_per_client = 2;
  // kSample: examples drawn for each client.
  int64_t examples_per_client = 32;
};

// Parses "iid", "dirichlet:<alpha>" (alpha > 0), "shards:<k>" (k >= 1) or "sample:<m>"
// (1 <= m <= 10^7).
// InvalidArgument otherwise, naming the accepted forms.
Result<PartitionSpec> ParsePartitionSpec(std::string_view spec);
// The canonical string form, which ParsePartitionSpec accepts.
std::string PartitionSpecToString(const PartitionSpec& spec);

// client -> indices into `labels` (ascending within each client).
using Partition = std::vector<std::vector<int64_t>>;

// Splits examples 0..labels.size()-1 among `num_clients` clients:
//  - iid: a seeded shuffle cut into num_clients near-equal parts (sizes differ by <= 1).
//  - dirichlet:a: for each class, proportions p ~ Dirichlet(a, ..., a) over clients and
//    the class's shuffled examples are cut at the cumulative proportions. A client
//    left empty then takes one random example from the currently largest client
//    (repeated until none is empty), which changes the split only where it has to.
//  - shards:k: the examples of each class are cut into label-pure shards (shard counts
//    per class proportional to class size, at least one per class), the shards are
//    shuffled and each client receives k of them, so a client sees at most k labels.
//    The shard count is num_clients * k; every shard is non-empty.
//  - sample:m: client c holds DrawShard(labels.size(), m, seed, c) (client_shards.h): m
//    distinct examples drawn when asked for, nothing stored per client.
// The result holds 8 bytes per example and per client (nothing for sample:m).
// InvalidArgument if num_clients < 1, if there are fewer examples than clients (except
// sample:m), for shards fewer shards than distinct labels or examples, or for sample:m
// fewer than m examples. Deterministic given `seed`.
Result<ClientShards> ShardExamples(const PartitionSpec& spec, std::span<const uint8_t> labels,
                                   int num_clients, uint64_t seed);

// ShardExamples with every client's indices as a list of its own (small federations,
// tests).
Result<Partition> PartitionExamples(const PartitionSpec& spec, std::span<const uint8_t> labels,
                                    int num_clients, uint64_t seed);

}  // namespace fl::internal

#endif  // FL_SDK_DATA_PARTITION_H_
