#ifndef FL_CLIENT_VIT_SHIFT_CLIENT_H_
#define FL_CLIENT_VIT_SHIFT_CLIENT_H_

// W3 `fmnist-vit-shift` in fl-client: with data.dataset fashion-mnist-shift and a ViT
// model.name, fl-client holds the shard of fl-sim's virtual client data.partition_index
// (the shared ShiftedSplitOptionsFromConfig, with fl-client's data.num_partitions and
// data.seed in place of fl-sim's data.num_clients and run.seed) and fine-tunes the
// model.tuning part of a VitTrainer on the frozen backbone model.backbone. The backbone
// is provisioned with the client as a file, never downloaded; its layout must be the
// model.name ViT's.
//
// Config keys (defaults in VitShiftClientDefaults()):
//   data.dataset             fashion-mnist | fashion-mnist-shift
//   data.domains, data.domains_per_client   as fl-sim's
//   model.tuning             full | head | ssf | fedins | sfprompt (the server's model is
//                            that part)
//   model.head_blocks, model.tail_blocks   sfprompt: the blocks this client runs before
//                            and after the server's body (the server's --split-cut must
//                            be [head_blocks, depth - tail_blocks))
//   model.backbone           the pretrained ViT (.flps), `fl-sim pretrain` writes it
//   fedins.entries           pool entries (must match the server's pool); fedins.top_k,
//                            fedins.lambda and fedins.batch_shared_ssf are defaults that
//                            each task's settings from the server override

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "core/config.h"
#include "fl/param_set.h"
#include "fl/server_link.h"
#include "fl/status.h"
#include "fl/trainer.h"
#include "torch/vit_trainer.h"

namespace fl::internal {

inline constexpr char kFashionMnistShiftDataset[] = "fashion-mnist-shift";

// The keys above with their defaults (fl-sim's W3 preset values).
nlohmann::json VitShiftClientDefaults();

// True if the config asks for W3 (data.dataset fashion-mnist-shift).
bool IsVitShiftConfig(const Config& config);

// Checks that data.dataset and model.name agree (W3 needs a ViT, the ViT needs W3).
// InvalidArgument naming the keys otherwise.
Status CheckDatasetAndModel(const Config& config);

// The W3 trainer of one fl-client process.
struct VitShiftClient {
  std::unique_ptr<VitTrainer> vit;
  // What the runtime drives: `vit`, logging the pool entries each task trained.
  std::unique_ptr<Trainer> trainer;
  int64_t shard_size = 0;
  std::string description;  // for the start-up log line
};

// Reads the backbone (InvalidArgument if its layout is not model.name's ViT; NotFound if
// the file is missing), builds shard data.partition_index on `device` (a resolved
// device) and the trainer. InvalidArgument naming the key for bad values; NotFound
// naming the Debian package for missing data.
// `link` (not owned, outlives the client) carries tuning sfprompt's split sessions.
Result<VitShiftClient> NewVitShiftClient(const Config& config, const std::string& device,
                                         ServerLink* link);

}  // namespace fl::internal

#endif  // FL_CLIENT_VIT_SHIFT_CLIENT_H_
