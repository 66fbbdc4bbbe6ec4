#include "core/config.h"

#include <CLI/CLI.hpp>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <limits>

#include "fl/env.h"

namespace fl::internal {
namespace {

using nlohmann::json;

// The type a schema entry (a default value) prescribes.
enum class Kind { kBool, kInt, kDouble, kString, kArray, kSection, kFreeForm, kAny };

Kind KindOf(const json& schema) {
  switch (schema.type()) {
    case json::value_t::boolean: return Kind::kBool;
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return Kind::kInt;
    case json::value_t::number_float: return Kind::kDouble;
    case json::value_t::string: return Kind::kString;
    case json::value_t::array: return Kind::kArray;
    case json::value_t::object: return schema.empty() ? Kind::kFreeForm : Kind::kSection;
    default: return Kind::kAny;
  }
}

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kBool: return "a boolean";
    case Kind::kInt: return "an integer";
    case Kind::kDouble: return "a number";
    case Kind::kString: return "a string";
    case Kind::kArray: return "a list";
    case Kind::kSection: return "a section (mapping)";
    case Kind::kFreeForm: return "a mapping";
    case Kind::kAny: return "a scalar";
  }
  return "?";
}

// The kind of an array's elements: the default's first element, or any scalar.
Kind ElementKind(const json& array_schema) {
  return array_schema.empty() ? Kind::kAny : KindOf(array_schema.front());
}

std::string JoinKey(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

std::vector<std::string> SplitKey(std::string_view dotted) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t dot = dotted.find('.', start);
    parts.emplace_back(dotted.substr(start, dot == std::string_view::npos ? dotted.npos : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return parts;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

Status TypeError(std::string_view source, const std::string& key, Kind kind, std::string_view got) {
  return Status::InvalidArgument(std::string(source) + ": key '" + key + "' expects " +
                                 KindName(kind) + ", got '" + std::string(got) + "'");
}

bool ParseIntText(std::string_view text, int64_t* out) {
  text = Trim(text);
  if (text.empty()) return false;
  if (text.front() == '+') text.remove_prefix(1);
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  if (ec == std::errc() && ptr == text.data() + text.size()) return true;
  // "1e3" is an integer written in floating-point notation; "0.5" is not.
  double d = 0;
  auto [dptr, dec] = std::from_chars(text.data(), text.data() + text.size(), d);
  if (dec != std::errc() || dptr != text.data() + text.size()) return false;
  if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9.0e18) return false;
  *out = static_cast<int64_t>(d);
  return true;
}

bool ParseDoubleText(std::string_view text, double* out) {
  text = Trim(text);
  if (text.empty()) return false;
  if (text.front() == '+') text.remove_prefix(1);
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && ptr == text.data() + text.size() && std::isfinite(*out);
}

bool ParseBoolText(std::string_view text, bool* out) {
  std::string t = Lower(Trim(text));
  if (t == "true" || t == "yes" || t == "on" || t == "1") { *out = true; return true; }
  if (t == "false" || t == "no" || t == "off" || t == "0") { *out = false; return true; }
  return false;
}

// An unquoted scalar where the schema does not fix the type: integer, number,
// true/false, null, else string.
json GuessScalar(std::string_view text) {
  int64_t i;
  double d;
  std::string lower = Lower(Trim(text));
  if (ParseIntText(text, &i) && lower.find_first_of(".e") == std::string::npos) return i;
  if (ParseDoubleText(text, &d)) return d;
  if (lower == "true") return true;
  if (lower == "false") return false;
  if (lower == "null" || lower == "~") return nullptr;
  return std::string(text);
}

// Parses `text` as `kind`. `array_schema` is used for kArray.
Result<json> ParseText(std::string_view text, Kind kind, const json& schema,
                       const std::string& key, std::string_view source) {
  switch (kind) {
    case Kind::kBool: {
      bool b;
      if (ParseBoolText(text, &b)) return json(b);
      break;
    }
    case Kind::kInt: {
      int64_t i;
      if (ParseIntText(text, &i)) return json(i);
      break;
    }
    case Kind::kDouble: {
      double d;
      if (ParseDoubleText(text, &d)) return json(d);
      break;
    }
    case Kind::kString:
      return json(std::string(text));
    case Kind::kAny:
      return GuessScalar(text);
    case Kind::kArray: {
      // "[a, b]" or "a,b"; the brackets are optional on the command line.
      std::string_view body = Trim(text);
      if (!body.empty() && body.front() == '[' && body.back() == ']') {
        body = Trim(body.substr(1, body.size() - 2));
      }
      json out = json::array();
      if (body.empty()) return out;
      const Kind element = ElementKind(schema);
      const json element_schema = schema.empty() ? json() : schema.front();
      size_t start = 0;
      for (;;) {
        size_t comma = body.find(',', start);
        std::string_view item = Trim(body.substr(start, comma == body.npos ? body.npos : comma - start));
        Result<json> v = ParseText(item, element, element_schema, key, source);
        if (!v.ok()) return v.status();
        out.push_back(std::move(v).value());
        if (comma == body.npos) break;
        start = comma + 1;
      }
      return out;
    }
    case Kind::kSection:
    case Kind::kFreeForm:
      return Status::InvalidArgument(std::string(source) + ": key '" + key +
                                     "' is a section; set its keys one by one (" + key +
                                     ".name=value)");
  }
  return TypeError(source, key, kind, text);
}

// Checks a typed JSON value against `schema`, returning the value to store (integers
// written as 3.0 become 3; integers for floating-point keys become doubles).
Result<json> CoerceJson(const json& value, const json& schema, const std::string& key,
                        std::string_view source) {
  const Kind kind = KindOf(schema);
  switch (kind) {
    case Kind::kBool:
      if (value.is_boolean()) return value;
      break;
    case Kind::kInt:
      if (value.is_number_integer()) {
        if (value.is_number_unsigned() && value.get<uint64_t>() > uint64_t{std::numeric_limits<int64_t>::max()}) break;
        return json(value.get<int64_t>());
      }
      if (value.is_number_float()) {
        double d = value.get<double>();
        if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) <= 9.0e18) return json(static_cast<int64_t>(d));
      }
      break;
    case Kind::kDouble:
      if (value.is_number()) return json(value.get<double>());
      break;
    case Kind::kString:
      if (value.is_string()) return value;
      break;
    case Kind::kAny:
      if (value.is_primitive()) return value;
      break;
    case Kind::kArray:
      if (value.is_array()) {
        json out = json::array();
        const json element_schema = schema.empty() ? json() : schema.front();
        for (size_t i = 0; i < value.size(); ++i) {
          Result<json> v = CoerceJson(value[i], element_schema, key + "[" + std::to_string(i) + "]", source);
          if (!v.ok()) return v.status();
          out.push_back(std::move(v).value());
        }
        return out;
      }
      break;
    case Kind::kSection:
    case Kind::kFreeForm:
      break;  // handled by the caller, which recurses key by key
  }
  return TypeError(source, key, kind, value.dump());
}

// Merges a JSON object into `target` under the section `schema`.
Status MergeJsonObject(const json& doc, const json& schema, json* target, const std::string& prefix,
                       std::string_view source) {
  const bool free_form = schema.empty();
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    const std::string key = JoinKey(prefix, it.key());
    if (free_form) {
      if (!it.value().is_primitive()) {
        return Status::InvalidArgument(std::string(source) + ": key '" + key + "' expects a scalar");
      }
      (*target)[it.key()] = it.value();
      continue;
    }
    auto s = schema.find(it.key());
    if (s == schema.end()) {
      return Status::InvalidArgument(std::string(source) + ": unknown key '" + key + "'");
    }
    const Kind kind = KindOf(*s);
    if (kind == Kind::kSection || kind == Kind::kFreeForm) {
      if (!it.value().is_object()) return TypeError(source, key, kind, it.value().dump());
      FL_RETURN_IF_ERROR(MergeJsonObject(it.value(), *s, &(*target)[it.key()], key, source));
      continue;
    }
    Result<json> v = CoerceJson(it.value(), *s, key, source);
    if (!v.ok()) return v.status();
    (*target)[it.key()] = std::move(v).value();
  }
  return Status::Ok();
}

// Length of the valid UTF-8 prefix of `s` (RFC 3629: no overlong forms, surrogates or
// code points above U+10FFFF); s.size() if all of it is valid.
size_t ValidUtf8Prefix(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char c = b(i);
    size_t n = 0;
    unsigned char lo = 0x80, hi = 0xbf;  // range of the first continuation byte
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      if (c == 0xe0) lo = 0xa0;
      if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      if (c == 0xf0) lo = 0x90;
      if (c == 0xf4) hi = 0x8f;
    } else {
      return i;
    }
    if (s.size() - i <= n || b(i + 1) < lo || b(i + 1) > hi) return i;
    for (size_t k = 2; k <= n; ++k) {
      if (b(i + k) < 0x80 || b(i + k) > 0xbf) return i;
    }
    i += n + 1;
  }
  return s.size();
}

// JSON strings must be UTF-8 (json::dump throws on anything else, and the effective
// config is dumped into run records), but YAML files and flags can carry any bytes.
// InvalidArgument naming the first key whose name or string value is not valid UTF-8.
Status CheckUtf8(const json& value, const std::string& key, std::string_view source) {
  const auto bad = [&](const std::string& where) {
    return Status::InvalidArgument(std::string(source) + ": " + where + " is not valid UTF-8");
  };
  if (value.is_string()) {
    const std::string& s = value.get_ref<const std::string&>();
    if (ValidUtf8Prefix(s) != s.size()) return bad("the value of key '" + key + "'");
  } else if (value.is_object()) {
    for (auto it = value.begin(); it != value.end(); ++it) {
      const std::string child = key.empty() ? it.key() : key + "." + it.key();
      if (ValidUtf8Prefix(it.key()) != it.key().size()) {
        return bad("a key under '" + key + "' (byte " +
                   std::to_string(ValidUtf8Prefix(it.key())) + " of its name)");
      }
      FL_RETURN_IF_ERROR(CheckUtf8(it.value(), child, source));
    }
  } else if (value.is_array()) {
    for (size_t i = 0; i < value.size(); ++i) {
      FL_RETURN_IF_ERROR(CheckUtf8(value[i], key + "[" + std::to_string(i) + "]", source));
    }
  }
  return Status::Ok();
}

// yaml-cpp marks quoted scalars with the non-specific tag "!": those are strings
// wherever the schema leaves the type open.
json YamlScalarGuess(const YAML::Node& node) {
  if (node.Tag() == "!") return node.Scalar();
  return GuessScalar(node.Scalar());
}

std::string Where(const YAML::Node& node) {
  const YAML::Mark mark = node.Mark();
  if (mark.is_null()) return {};
  return " (line " + std::to_string(mark.line + 1) + ")";
}

Result<json> YamlValue(const YAML::Node& node, const json& schema, const std::string& key,
                       std::string_view source);

Status MergeYamlMap(const YAML::Node& map, const json& schema, json* target, const std::string& prefix,
                    std::string_view source) {
  const bool free_form = schema.empty();
  for (const auto& entry : map) {
    if (!entry.first.IsScalar()) {
      return Status::InvalidArgument(std::string(source) + ": non-scalar key under '" + prefix + "'" +
                                     Where(entry.first));
    }
    const std::string name = entry.first.Scalar();
    const std::string key = JoinKey(prefix, name);
    if (free_form) {
      if (!entry.second.IsScalar() && !entry.second.IsNull()) {
        return Status::InvalidArgument(std::string(source) + ": key '" + key + "' expects a scalar" +
                                       Where(entry.second));
      }
      (*target)[name] = entry.second.IsNull() ? json() : YamlScalarGuess(entry.second);
      continue;
    }
    auto s = schema.find(name);
    if (s == schema.end()) {
      return Status::InvalidArgument(std::string(source) + ": unknown key '" + key + "'" +
                                     Where(entry.first));
    }
    const Kind kind = KindOf(*s);
    if (kind == Kind::kSection || kind == Kind::kFreeForm) {
      if (entry.second.IsNull()) continue;  // "section:" with nothing below it
      if (!entry.second.IsMap()) {
        return Status::InvalidArgument(std::string(source) + ": key '" + key + "' expects " +
                                       KindName(kind) + Where(entry.second));
      }
      FL_RETURN_IF_ERROR(MergeYamlMap(entry.second, *s, &(*target)[name], key, source));
      continue;
    }
    Result<json> v = YamlValue(entry.second, *s, key, source);
    if (!v.ok()) return v.status();
    (*target)[name] = std::move(v).value();
  }
  return Status::Ok();
}

Result<json> YamlValue(const YAML::Node& node, const json& schema, const std::string& key,
                       std::string_view source) {
  const Kind kind = KindOf(schema);
  if (node.IsNull()) {
    if (kind == Kind::kAny) return json();
    return Status::InvalidArgument(std::string(source) + ": key '" + key + "' has no value" +
                                   Where(node));
  }
  if (kind == Kind::kArray) {
    if (!node.IsSequence()) {
      return Status::InvalidArgument(std::string(source) + ": key '" + key + "' expects a list" + Where(node));
    }
    json out = json::array();
    const json element_schema = schema.empty() ? json() : schema.front();
    for (size_t i = 0; i < node.size(); ++i) {
      Result<json> v = YamlValue(node[i], element_schema, key + "[" + std::to_string(i) + "]", source);
      if (!v.ok()) return v.status();
      out.push_back(std::move(v).value());
    }
    return out;
  }
  if (!node.IsScalar()) {
    return Status::InvalidArgument(std::string(source) + ": key '" + key + "' expects " +
                                   KindName(kind) + Where(node));
  }
  if (kind == Kind::kAny) return YamlScalarGuess(node);
  Result<json> v = ParseText(node.Scalar(), kind, schema, key, source);
  if (!v.ok()) return Status(v.status().code(), v.status().message() + Where(node));
  return v;
}

[[noreturn]] void DieOnKey(std::string_view key, const char* problem) {
  std::fprintf(stderr, "fatal: config key '%.*s' %s\n", static_cast<int>(key.size()), key.data(), problem);
  std::abort();
}

// The value at `dotted_key`, or nullptr.
const json* Lookup(const json& root, std::string_view dotted_key) {
  const json* node = &root;
  for (const std::string& part : SplitKey(dotted_key)) {
    if (!node->is_object()) return nullptr;
    auto it = node->find(part);
    if (it == node->end()) return nullptr;
    node = &*it;
  }
  return node;
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string FormatDouble(double d) {
  char buf[64];
  auto [ptr, ec] = std::to_chars(buf, buf + sizeof(buf), d);
  std::string s(buf, ec == std::errc() ? ptr : buf);
  // Keep a floating-point look so that free-form values read back as numbers, not integers.
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

void EmitYaml(YAML::Emitter& out, const json& j) {
  switch (j.type()) {
    case json::value_t::object:
      out << YAML::BeginMap;
      for (auto it = j.begin(); it != j.end(); ++it) {
        out << YAML::Key << it.key() << YAML::Value;
        EmitYaml(out, it.value());
      }
      out << YAML::EndMap;
      break;
    case json::value_t::array: {
      const bool flat = std::all_of(j.begin(), j.end(), [](const json& e) { return e.is_primitive(); });
      out << (flat ? YAML::Flow : YAML::Block) << YAML::BeginSeq;
      for (const json& e : j) EmitYaml(out, e);
      out << YAML::EndSeq;
      break;
    }
    case json::value_t::string: {
      const std::string& s = j.get_ref<const std::string&>();
      // Quote strings that an untyped reader would take for something else.
      if (s.empty() || !GuessScalar(s).is_string() || Trim(s).size() != s.size()) {
        out << YAML::DoubleQuoted << s;
      } else {
        out << s;
      }
      break;
    }
    case json::value_t::boolean:
      out << (j.get<bool>() ? "true" : "false");
      break;
    case json::value_t::number_integer:
      out << j.get<int64_t>();
      break;
    case json::value_t::number_unsigned:
      out << j.get<uint64_t>();
      break;
    case json::value_t::number_float:
      out << FormatDouble(j.get<double>());
      break;
    default:
      out << YAML::Null;
      break;
  }
}

}  // namespace

Result<Config> Config::FromDefaults(const nlohmann::json& defaults) {
  if (!defaults.is_object()) return Status::InvalidArgument("config defaults must be a JSON object");
  Config c;
  c.schema_ = defaults;
  c.values_ = defaults;
  return c;
}

Result<Config> Config::Build(const nlohmann::json& defaults, const std::string& file,
                             const std::vector<std::string>& overrides) {
  FL_ASSIGN_OR_RETURN(Config c, FromDefaults(defaults));
  if (!file.empty()) FL_RETURN_IF_ERROR(c.MergeFile(file));
  for (const std::string& o : overrides) FL_RETURN_IF_ERROR(c.ApplyOverride(o, "--set " + o));
  return c;
}

Status Config::MergeFile(const std::string& path) {
  const std::string source = "config file " + path;
  Result<std::string> text = Env::Default()->ReadFile(path);
  if (!text.ok()) {
    return Status::InvalidArgument(source + ": cannot read: " + text.status().message());
  }
  if (EndsWith(path, ".yaml") || EndsWith(path, ".yml")) return MergeYaml(*text, source);
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(*text);
  } catch (const std::exception& e) {
    return Status::InvalidArgument(source + ": invalid JSON: " + e.what());
  }
  return MergeJson(doc, source);
}

Status Config::MergeYaml(std::string_view text, std::string_view source) {
  try {
    YAML::Node root = YAML::Load(std::string(text));
    if (root.IsNull()) return Status::Ok();  // an empty file changes nothing
    if (!root.IsMap()) {
      return Status::InvalidArgument(std::string(source) + ": top level must be a mapping of keys");
    }
    nlohmann::json merged = values_;
    FL_RETURN_IF_ERROR(MergeYamlMap(root, schema_, &merged, "", source));
    FL_RETURN_IF_ERROR(CheckUtf8(merged, "", source));
    values_ = std::move(merged);
    return Status::Ok();
  } catch (const YAML::Exception& e) {
    std::string where = e.mark.is_null() ? "" : " at line " + std::to_string(e.mark.line + 1) +
                                                    ", column " + std::to_string(e.mark.column + 1);
    return Status::InvalidArgument(std::string(source) + ": invalid YAML" + where + ": " + e.msg);
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string(source) + ": " + e.what());
  }
}

Status Config::MergeJson(const nlohmann::json& doc, std::string_view source) {
  if (!doc.is_object()) {
    return Status::InvalidArgument(std::string(source) + ": top level must be an object");
  }
  nlohmann::json merged = values_;
  FL_RETURN_IF_ERROR(MergeJsonObject(doc, schema_, &merged, "", source));
  values_ = std::move(merged);
  return Status::Ok();
}

Status Config::ApplyOverride(std::string_view assignment, std::string_view source) {
  const size_t eq = assignment.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    return Status::InvalidArgument(std::string(source) + ": expected KEY=VALUE, got '" +
                                   std::string(assignment) + "'");
  }
  return Set(Trim(assignment.substr(0, eq)), assignment.substr(eq + 1), source);
}

Status Config::Set(std::string_view dotted_key, std::string_view value, std::string_view source) {
  const std::string key(dotted_key);
  const std::vector<std::string> parts = SplitKey(dotted_key);
  const nlohmann::json* schema = &schema_;
  nlohmann::json merged = values_;
  nlohmann::json* target = &merged;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    if (part.empty()) {
      return Status::InvalidArgument(std::string(source) + ": malformed key '" + key + "'");
    }
    const bool last = i + 1 == parts.size();
    if (schema->is_object() && schema->empty()) {
      // Free-form section: one more level, any name, type inferred from the text.
      if (!last) {
        return Status::InvalidArgument(std::string(source) + ": unknown key '" + key + "'");
      }
      (*target)[part] = GuessScalar(value);
      FL_RETURN_IF_ERROR(CheckUtf8(merged, "", source));
      values_ = std::move(merged);
      return Status::Ok();
    }
    auto it = schema->is_object() ? schema->find(part) : schema->end();
    if (!schema->is_object() || it == schema->end()) {
      return Status::InvalidArgument(std::string(source) + ": unknown key '" + key + "'");
    }
    schema = &*it;
    if (last) {
      Result<nlohmann::json> v = ParseText(value, KindOf(*schema), *schema, key, source);
      if (!v.ok()) return v.status();
      (*target)[part] = std::move(v).value();
      FL_RETURN_IF_ERROR(CheckUtf8(merged, "", source));
      values_ = std::move(merged);
      return Status::Ok();
    }
    target = &(*target)[part];
  }
  return Status::InvalidArgument(std::string(source) + ": malformed key '" + key + "'");
}

bool Config::Has(std::string_view dotted_key) const { return Lookup(values_, dotted_key) != nullptr; }

const nlohmann::json& Config::Get(std::string_view dotted_key) const {
  const nlohmann::json* v = Lookup(values_, dotted_key);
  if (v == nullptr) DieOnKey(dotted_key, "is not in the config schema");
  return *v;
}

int64_t Config::GetInt(std::string_view dotted_key) const {
  const nlohmann::json& v = Get(dotted_key);
  if (!v.is_number_integer()) DieOnKey(dotted_key, "is not an integer");
  return v.get<int64_t>();
}

double Config::GetDouble(std::string_view dotted_key) const {
  const nlohmann::json& v = Get(dotted_key);
  if (!v.is_number()) DieOnKey(dotted_key, "is not a number");
  return v.get<double>();
}

std::string Config::GetString(std::string_view dotted_key) const {
  const nlohmann::json& v = Get(dotted_key);
  if (!v.is_string()) DieOnKey(dotted_key, "is not a string");
  return v.get<std::string>();
}

bool Config::GetBool(std::string_view dotted_key) const {
  const nlohmann::json& v = Get(dotted_key);
  if (!v.is_boolean()) DieOnKey(dotted_key, "is not a boolean");
  return v.get<bool>();
}

std::string Config::ToYaml() const {
  YAML::Emitter out;
  EmitYaml(out, values_);
  std::string text = out.c_str();
  text += '\n';
  return text;
}

Result<CommandLine> ParseCommandLine(std::string_view program, std::string_view description,
                                     const nlohmann::json& defaults,
                                     const std::vector<FlagAlias>& aliases, int argc, char** argv) {
  FL_ASSIGN_OR_RETURN(Config config, Config::FromDefaults(defaults));

  CLI::App app{std::string(description), std::string(program)};
  app.set_help_flag("-h,--help", "Print this help and exit");
  app.footer(
      "Every config key can be set with --set KEY=VALUE (repeatable); --print-config lists\n"
      "them all with their effective values. Precedence: defaults < --config < --set < flags.");
  std::string config_path;
  std::vector<std::string> sets;
  bool print_config = false;
  app.add_option("--config", config_path, "YAML (.yaml/.yml) or JSON config file")->type_name("FILE");
  app.add_option("--set", sets, "Override a config key, e.g. --set run.rounds=5")
      ->type_name("KEY=VALUE")
      ->allow_extra_args(false);
  app.add_flag("--print-config", print_config, "Print the effective config as YAML and exit");

  // Stable addresses for CLI11's bindings.
  std::deque<std::string> alias_text(aliases.size());
  std::deque<bool> alias_bool(aliases.size(), false);
  std::vector<CLI::Option*> alias_options(aliases.size());
  for (size_t i = 0; i < aliases.size(); ++i) {
    const FlagAlias& a = aliases[i];
    const nlohmann::json* schema = Lookup(defaults, a.key);
    if (schema == nullptr) {
      return Status::Internal("flag " + a.flag + " names unknown config key '" + a.key + "'");
    }
    const Kind kind = KindOf(*schema);
    std::string help = a.help + " [" + a.key + ", default " +
                       (schema->is_string() ? schema->get<std::string>() : schema->dump()) + "]";
    if (kind == Kind::kBool) {
      alias_options[i] = app.add_flag(a.flag, alias_bool[i], help);
    } else {
      const char* type = kind == Kind::kInt ? "INT" : kind == Kind::kDouble ? "NUMBER"
                         : kind == Kind::kArray ? "LIST" : "TEXT";
      alias_options[i] = app.add_option(a.flag, alias_text[i], help)->type_name(type);
    }
  }

  CommandLine result;
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {  // --help
      std::cout << app.help();
      std::cout.flush();
      result.exit_now = true;
      result.exit_code = 0;
      result.config = std::move(config);
      return result;
    }
    return Status::InvalidArgument(e.what());
  } catch (const std::exception& e) {
    return Status::InvalidArgument(e.what());
  }

  if (!config_path.empty()) FL_RETURN_IF_ERROR(config.MergeFile(config_path));
  for (const std::string& s : sets) FL_RETURN_IF_ERROR(config.ApplyOverride(s, "--set " + s));
  for (size_t i = 0; i < aliases.size(); ++i) {
    if (alias_options[i]->count() == 0) continue;
    const FlagAlias& a = aliases[i];
    const std::string value = KindOf(*Lookup(defaults, a.key)) == Kind::kBool
                                  ? (alias_bool[i] ? "true" : "false")
                                  : alias_text[i];
    FL_RETURN_IF_ERROR(config.Set(a.key, value, a.flag));
  }

  if (print_config) {
    std::cout << config.ToYaml();
    std::cout.flush();
    result.exit_now = true;
    result.exit_code = 0;
  }
  result.config = std::move(config);
  return result;
}

Status ConfigValueError(std::string_view key, std::string_view requirement, std::string_view got) {
  return Status::InvalidArgument("config key " + std::string(key) + " must be " +
                                 std::string(requirement) + " (got " + std::string(got) + ")");
}

std::string FormatConfigNumber(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

}  // namespace fl::internal
