#ifndef FL_SDK_DATA_SHIFTED_SPLIT_CONFIG_H_
#define FL_SDK_DATA_SHIFTED_SPLIT_CONFIG_H_

// W3's split and test set from config keys. fl-sim's workload and fl-client both read
// them here, so a client process builds exactly the shard of fl-sim's client i.
//
// Keys read (the same in both programs unless ShiftedSplitKeys renames them):
//   data.domains             comma list of domains (ParseDomainList)
//   data.domains_per_client  distinct domains per client
//   data.partition           the label skew (ParsePartitionSpec)
//   data.train_examples      > 0: only the first N federated images
//   data.num_clients         clients of the split (fl-client: data.num_partitions)
//   run.seed                 the split's seed (fl-client: data.seed)

#include <cstdint>
#include <string>
#include <vector>

#include "core/config.h"
#include "data/domain_shift.h"
#include "fl/status.h"

namespace fl::internal {

// The first train image of the federated range; pretraining uses the ones before it.
inline constexpr int64_t kFederatedBegin = 30000;
// The test images' noise seed: fixed, so runs of every seed score the same images.
inline constexpr uint64_t kTestShiftSeed = 0;

// The keys whose names differ between programs; fl-sim's by default.
struct ShiftedSplitKeys {
  std::string num_clients = "data.num_clients";
  std::string seed = "run.seed";
};

// data.domains. InvalidArgument naming the key for a bad list.
Result<std::vector<Domain>> DomainsFromConfig(const Config& config);

// The options of the split over a train set of `train_size` images: the federated range
// [kFederatedBegin, train_size), cut to data.train_examples. InvalidArgument naming the
// key for any bad value.
Result<ShiftedSplitOptions> ShiftedSplitOptionsFromConfig(const Config& config, int64_t train_size,
                                                          const ShiftedSplitKeys& keys = {});

}  // namespace fl::internal

#endif  // FL_SDK_DATA_SHIFTED_SPLIT_CONFIG_H_
