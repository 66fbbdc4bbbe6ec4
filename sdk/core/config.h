#ifndef FL_SDK_CORE_CONFIG_H_
#define FL_SDK_CORE_CONFIG_H_

// The one configuration mechanism of fl-server, fl-client and fl-sim.
//
// A config is a nested JSON document built in three layers:
//   1. defaults supplied by the binary: a JSON object that is also the schema (every
//      valid key and its type);
//   2. a config file: YAML for .yaml/.yml, JSON otherwise;
//   3. overrides "dotted.key=value" from the command line.
// Each layer is validated against the schema as it is applied: an unknown key or a
// value of the wrong type is InvalidArgument naming the key and where it came from.
//
// Types come from the defaults:
//   bool, integer (rejects 0.5; accepts 1e3), floating point (accepts integers),
//   string, array (elements typed by the default's first element, if any),
//   object with keys (a section: only those keys are valid),
//   empty object (free-form: any keys, scalar types inferred), null (any scalar).
// YAML scalars and command-line values are parsed as the schema's type, so
// `name: 123` is the string "123" where name is a string, and `yes`/`no`/`on`/`off`
// are booleans only where a boolean is expected.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "fl/status.h"

namespace fl::internal {

// Thread-compatible: const methods may be called concurrently.
class Config {
 public:
  // An empty config (no keys); getters abort on it. Use FromDefaults.
  Config() = default;

  // InvalidArgument if `defaults` is not a JSON object.
  static Result<Config> FromDefaults(const nlohmann::json& defaults);

  // Convenience: FromDefaults, MergeFile (if `file` is non-empty), then each override.
  static Result<Config> Build(const nlohmann::json& defaults, const std::string& file,
                              const std::vector<std::string>& overrides);

  // Merges a YAML (.yaml/.yml) or JSON file. InvalidArgument if it cannot be read or
  // parsed, or holds an unknown key or a mistyped value; the config is then unchanged.
  Status MergeFile(const std::string& path);
  // Merges YAML text; `source` names it in error messages. Never throws.
  Status MergeYaml(std::string_view text, std::string_view source);
  // Merges a JSON document (typed values are checked, not re-parsed).
  Status MergeJson(const nlohmann::json& doc, std::string_view source);
  // Applies "dotted.key=value". InvalidArgument (config unchanged) if malformed,
  // unknown or mistyped; `source` names the flag in the message.
  Status ApplyOverride(std::string_view assignment, std::string_view source = "--set");
  // Sets one key from text parsed as the key's type.
  Status Set(std::string_view dotted_key, std::string_view value, std::string_view source);

  // True if `dotted_key` names a value in the schema or in a free-form section.
  bool Has(std::string_view dotted_key) const;

  // Typed getters. The config was validated when built, so these return values
  // directly. A key absent from the schema, or of another type, is a programming
  // error: they print the key and abort. GetDouble also reads integer keys.
  int64_t GetInt(std::string_view dotted_key) const;
  double GetDouble(std::string_view dotted_key) const;
  std::string GetString(std::string_view dotted_key) const;
  bool GetBool(std::string_view dotted_key) const;
  // Any value or section (arrays, free-form sections). Aborts if absent.
  const nlohmann::json& Get(std::string_view dotted_key) const;

  const nlohmann::json& json() const { return values_; }
  const nlohmann::json& schema() const { return schema_; }
  // The effective config as YAML (for --print-config and run records); reading it
  // back with MergeYaml reproduces json().
  std::string ToYaml() const;

 private:
  nlohmann::json schema_ = nlohmann::json::object();
  nlohmann::json values_ = nlohmann::json::object();
};

// The one message for a config value out of range: "config key K must be R (got G)".
Status ConfigValueError(std::string_view key, std::string_view requirement, std::string_view got);
// A number as config errors quote it (printf's %g).
std::string FormatConfigNumber(double v);

// A command-line flag that is a shortcut for one config key, e.g.
// {"--rounds", "run.rounds", "rounds to run"}. Its value is parsed as the key's type;
// a boolean key makes a flag that takes no value (`--flag` or `--flag=false`).
struct FlagAlias {
  std::string flag;
  std::string key;
  std::string help;
};

struct CommandLine {
  Config config;
  bool exit_now = false;  // --help or --print-config was handled; exit with exit_code
  int exit_code = 0;
};

// Parses argv (CLI11): --help, --config FILE, --set key=value (repeatable),
// --print-config, and every alias. Layers apply in the order defaults, --config file,
// --set (in order), aliases. --help and --print-config print to stdout and set
// exit_now. Any bad flag, file or value is InvalidArgument with one message that the
// binary prints before exiting with status 2. Internal if an alias names a key that is
// not in `defaults` (a programming error).
Result<CommandLine> ParseCommandLine(std::string_view program, std::string_view description,
                                     const nlohmann::json& defaults,
                                     const std::vector<FlagAlias>& aliases, int argc,
                                     char** argv);

}  // namespace fl::internal

#endif  // FL_SDK_CORE_CONFIG_H_
