#ifndef FL_ALGORITHMS_SFPROMPT_REGISTER_H_
#define FL_ALGORITHMS_SFPROMPT_REGISTER_H_

// SFPrompt (Cao et al., arXiv 2407.17533): split federated fine-tuning with soft prompts.
// The federated model is the client's prompts and tail; the frozen body runs on the
// server (fl/split_session.h, fl-server --split-*). The rounds are FedAvg's: the server
// half is FedAvgStrategy with its optimizer options, the client half the dense-delta
// Learner; what makes it SFPrompt is the client's three-phase training (local-loss
// update, EL2N pruning, split training: VitTrainer's tuning "sfprompt"), steered by the
// keys below, which travel to clients in TrainConfig::extra.

#include <vector>

#include "algorithms/fedavg/fedavg_strategy.h"
#include "algorithms/registry.h"
#include "core/config.h"

namespace fl::internal {

// "sfprompt.local_epochs", "sfprompt.keep_ratio", "sfprompt.local_pool", "sfprompt.wire".
std::vector<ConfigKey> SfPromptConfigKeys();

// FedAvg's options for algorithm "sfprompt" with the sfprompt keys in train.extra.
// InvalidArgument naming the key at fault.
Result<FedAvgOptions> SfPromptOptionsFromConfig(const AlgorithmConfig& config);

// Registers "sfprompt".
Status RegisterSfPrompt(AlgorithmRegistry* registry);

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_SFPROMPT_REGISTER_H_
