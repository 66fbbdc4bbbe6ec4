#include "server/split_config.h"

#include <charconv>
#include <string>
#include <utility>

#include "torch/torch_trainer.h"
#include "torch/vit_trainer.h"

namespace fl::internal {
namespace {

Status BadKey(const char* key, const std::string& want, const std::string& got) {
  return Status::InvalidArgument(std::string("config key ") + key + " must be " + want + " (got " +
                                 got + ")");
}

Result<int64_t> IntIn(const Config& config, const char* key, int64_t lo, int64_t hi) {
  const int64_t v = config.GetInt(key);
  if (v < lo || v > hi) {
    return BadKey(key, "in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]",
                  std::to_string(v));
  }
  return v;
}

// "BEGIN,END" with 0 <= BEGIN < END; the depth is SplitBodyServer::Create's to check.
Status ParseCut(const std::string& text, SplitBodyOptions* body) {
  const size_t comma = text.find(',');
  auto number = [](std::string_view s, int64_t* out) {
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
    return ec == std::errc() && ptr == s.data() + s.size();
  };
  if (comma == std::string::npos ||
      !number(std::string_view(text).substr(0, comma), &body->begin) ||
      !number(std::string_view(text).substr(comma + 1), &body->end) || body->begin < 0 ||
      body->end <= body->begin) {
    return BadKey("split.cut", "BEGIN,END with 0 <= BEGIN < END", "\"" + text + "\"");
  }
  return Status::Ok();
}

Result<bool> OnOff(const Config& config, const char* key) {
  const std::string v = config.GetString(key);
  if (v == "on") return true;
  if (v == "off") return false;
  return BadKey(key, "on or off", "\"" + v + "\"");
}

}  // namespace

nlohmann::json SplitConfigDefaults() {
  const SplitServiceOptions d;
  return {{"split",
           {{"model", ""},
            {"backbone", ""},
            {"cut", std::to_string(d.body.begin) + "," + std::to_string(d.body.end)},
            {"device", "cpu"},
            {"max_sessions", d.max_sessions},
            {"batching", d.body.batching.enabled ? "on" : "off"},
            {"max_batch", d.max_batch_samples},
            {"max_wait_us", d.body.batching.max_wait_us},
            {"idle_timeout_s", static_cast<double>(d.idle_timeout.count()) / 1000.0},
            {"threads", d.body.torch_threads}}}};
}

std::vector<FlagAlias> SplitFlagAliases() {
  return {
      {"--split-model", "split.model", "host SFPrompt's body of this ViT (vit:prompts=8, ...)"},
      {"--split-backbone", "split.backbone", "model file of the whole ViT for the body"},
      {"--split-cut", "split.cut", "the body's blocks BEGIN,END ([BEGIN, END))"},
      {"--split-max-sessions", "split.max_sessions", "split sessions open at once"},
      {"--split-batching", "split.batching", "on | off: batch concurrent sessions' steps"},
      {"--split-max-batch", "split.max_batch", "samples per split step and per body pass"},
      {"--split-max-wait-us", "split.max_wait_us", "how long a body pass waits for more"},
      {"--split-idle-timeout-s", "split.idle_timeout_s", "end split sessions idle this long"},
      {"--split-threads", "split.threads", "LibTorch threads for the body (0: as they are)"},
  };
}

Result<RunningServer::SplitFactory> SplitFactoryFromConfig(const Config& config) {
  const std::string model = config.GetString("split.model");
  if (model.empty()) return RunningServer::SplitFactory();
  SplitServiceOptions o;
  Result<VitOptions> vit = ParseVitModelName(model);
  if (!vit.ok()) return vit.status().WithContext("config key split.model");
  o.body.vit = *vit;
  FL_RETURN_IF_ERROR(ParseCut(config.GetString("split.cut"), &o.body));
  Result<std::string> device = ResolveTorchDevice(config.GetString("split.device"));
  if (!device.ok()) return device.status().WithContext("config key split.device");
  o.body.device = *device;
  FL_ASSIGN_OR_RETURN(int64_t sessions, IntIn(config, "split.max_sessions", 1, 100000));
  o.max_sessions = static_cast<int>(sessions);
  FL_ASSIGN_OR_RETURN(o.body.batching.enabled, OnOff(config, "split.batching"));
  FL_ASSIGN_OR_RETURN(o.max_batch_samples, IntIn(config, "split.max_batch", 1, 1 << 20));
  o.body.batching.max_batch_samples = o.max_batch_samples;
  FL_ASSIGN_OR_RETURN(o.body.batching.max_wait_us,
                      IntIn(config, "split.max_wait_us", 0, 60'000'000));
  const double idle_s = config.GetDouble("split.idle_timeout_s");
  if (!(idle_s > 0 && idle_s <= 86400)) {
    return BadKey("split.idle_timeout_s", "in (0, 86400]", std::to_string(idle_s));
  }
  o.idle_timeout = std::chrono::milliseconds(static_cast<int64_t>(idle_s * 1000));
  FL_ASSIGN_OR_RETURN(int64_t threads, IntIn(config, "split.threads", 0, 1024));
  o.body.torch_threads = static_cast<int>(threads);
  const std::string backbone_path = config.GetString("split.backbone");
  return RunningServer::SplitFactory(
      [o, model, backbone_path](Coordinator* coordinator) -> Result<std::unique_ptr<SplitService>> {
        if (backbone_path.empty()) return SplitService::Create(o, nullptr, coordinator);
        FL_ASSIGN_OR_RETURN(ParamSet backbone, ReadVitBackbone(backbone_path, o.body.vit, model));
        return SplitService::Create(o, &backbone, coordinator);
      });
}

}  // namespace fl::internal
