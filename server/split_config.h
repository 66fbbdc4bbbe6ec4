#ifndef FL_SERVER_SPLIT_CONFIG_H_
#define FL_SERVER_SPLIT_CONFIG_H_

// fl-server's "split" config section: whether and how the server hosts SFPrompt's body
// (server/split_service.h). Keys, with flags: split.model (--split-model, e.g.
// "vit:prompts=8"; empty: no body, SplitStep answers UNIMPLEMENTED), split.backbone
// (--split-backbone, a model file; empty: the ViT's seeded initialization), split.cut
// (--split-cut "BEGIN,END": the body is blocks [BEGIN, END)), split.device,
// split.max_sessions, split.batching (on|off), split.max_batch, split.max_wait_us,
// split.idle_timeout_s, split.threads.

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "fl/status.h"
#include "server/running_server.h"

namespace fl::internal {

// The section with its defaults, to merge into ServerConfigDefaults().
nlohmann::json SplitConfigDefaults();
std::vector<FlagAlias> SplitFlagAliases();

// What RunningServer::Start needs to host the configured body: an empty factory when
// split.model is empty. InvalidArgument naming the key for a bad value; the factory
// itself fails as ReadVitBackbone and SplitService::Create do.
Result<RunningServer::SplitFactory> SplitFactoryFromConfig(const Config& config);

}  // namespace fl::internal

#endif  // FL_SERVER_SPLIT_CONFIG_H_
