// Config files (sdk/core/config.h): MergeYaml and MergeJson against fl-server's
// defaults as the schema, optionally extended by a section with every other kind of
// schema entry (free-form, any scalar, typed arrays). Input: u8 flags (bit 0: JSON,
// bit 1: extended schema), then the document. A config that merges must print as YAML
// that reads back to the same values (Config::ToYaml's contract).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "tests/fuzz/fuzz_common.h"
#ifdef FL_FUZZ_HAVE_SERVER
#include "server/running_server.h"
#else
#include "algorithms/registry.h"
#include "server/coordinator_config.h"
#endif

namespace {

nlohmann::json ServerDefaults() {
#ifdef FL_FUZZ_HAVE_SERVER
  return fl::internal::ServerConfigDefaults();
#else
  nlohmann::json defaults = fl::internal::AlgorithmConfigDefaults();
  defaults.update(fl::internal::CoordinatorConfigDefaults());
  defaults.update(fl::internal::ModelConfigDefaults("cnn"));
  return defaults;
#endif
}

const fl::internal::Config& BaseConfig(bool extended) {
  static const fl::internal::Config plain = *fl::internal::Config::FromDefaults(ServerDefaults());
  static const fl::internal::Config wide = [] {
    nlohmann::json defaults = ServerDefaults();
    defaults["fuzz"] = {{"free", nlohmann::json::object()},
                        {"any", nullptr},
                        {"ints", {1, 2}},
                        {"names", {"a"}},
                        {"empty", nlohmann::json::array()},
                        {"flag", false},
                        {"nested", {{"x", 0.5}}}};
    return *fl::internal::Config::FromDefaults(defaults);
  }();
  return extended ? wide : plain;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  const bool extended = data[0] & 2;
  fl::internal::Config config = BaseConfig(extended);
  fl::Status merged;
  if (data[0] & 1) {
    const nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) return 0;
    merged = config.MergeJson(doc, "fuzz.json");
  } else {
    merged = config.MergeYaml(text, "fuzz.yaml");
  }
  if (!merged.ok()) {
    FUZZ_CHECK(config.json() == BaseConfig(extended).json(), "a refused merge changed the config");
    return 0;
  }
  const std::string yaml = config.ToYaml();
  fl::internal::Config back = BaseConfig(extended);
  const fl::Status reread = back.MergeYaml(yaml, "printed.yaml");
  FUZZ_CHECK(reread.ok(), reread.ToString() + "\n" + yaml);
  FUZZ_CHECK(back.json().dump() == config.json().dump(),
             "ToYaml does not read back to the same config:\n" + yaml);
  return 0;
}
