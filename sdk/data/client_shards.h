#ifndef FL_SDK_DATA_CLIENT_SHARDS_H_
#define FL_SDK_DATA_CLIENT_SHARDS_H_

// Which training examples each client of a federation holds: indices into one shared
// dataset, in a form whose size does not depend on holding a list per client, so a
// million virtual clients cost megabytes, not a heap allocation each. Torch-free.
//
//  - stored shards (iid, dirichlet, shards): one flat index array, client by client,
//    plus an offset per client: 8 bytes per example and 8 per client;
//  - drawn shards (sample:<m>): nothing per client; a client's m examples are drawn
//    from (seed, client) each time they are asked for (DrawShard), so any number of
//    clients shares a dataset of any size.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace fl::internal {

// The `per_client` distinct examples of [0, num_examples) that client `client` holds
// under sample:<per_client> with run seed `seed`, ascending. A function of its arguments
// only (SeededRng, so the same on every platform): fl-sim and fl-client draw the same
// shard. REQUIRES: 0 < per_client <= num_examples.
std::vector<int64_t> DrawShard(uint64_t num_examples, uint64_t per_client, uint64_t seed,
                               uint64_t client);

// Immutable once built; const methods may be called from any thread.
class ClientShards {
 public:
  ClientShards() = default;
  // Client c holds indices[offsets[c] .. offsets[c + 1]), ascending.
  // REQUIRES: offsets.size() >= 1, offsets.front() == 0, offsets non-decreasing,
  // offsets.back() == indices.size().
  static ClientShards Stored(std::vector<int64_t> indices, std::vector<uint64_t> offsets);
  // Each of `num_clients` clients holds DrawShard(num_examples, per_client, seed, c).
  // REQUIRES: 0 < per_client <= num_examples.
  static ClientShards Drawn(size_t num_clients, uint64_t num_examples, uint64_t per_client,
                            uint64_t seed);

  size_t num_clients() const { return num_clients_; }
  // The number of examples of `client`. REQUIRES: client < num_clients().
  uint64_t size(size_t client) const {
    return drawn_ ? per_client_ : offsets_[client + 1] - offsets_[client];
  }
  // The examples of `client`, ascending (drawn shards: drawn now, O(per_client) time
  // plus a bitmap of the dataset). REQUIRES: client < num_clients().
  std::vector<int64_t> Indices(size_t client) const;
  // Bytes held for the shards (the index and offset arrays; 0 for drawn shards).
  size_t resident_bytes() const;

 private:
  size_t num_clients_ = 0;
  bool drawn_ = false;
  // Stored shards.
  std::vector<int64_t> indices_;
  std::vector<uint64_t> offsets_;
  // Drawn shards.
  uint64_t num_examples_ = 0;
  uint64_t per_client_ = 0;
  uint64_t seed_ = 0;
};

}  // namespace fl::internal

#endif  // FL_SDK_DATA_CLIENT_SHARDS_H_
