#include "data/fortunes.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <set>
#include <system_error>

namespace fl::internal {
namespace {

namespace fs = std::filesystem;

bool IsSeparatorLine(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line == "%";
}

bool IsBlank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  });
}

bool HasIndexSuffix(const std::string& name) {
  return name.ends_with(".dat") || name.ends_with(".u8");
}

std::string LanguageDir(const std::string& dir, const std::string& language) {
  return language == "en" ? dir : (fs::path(dir) / language).string();
}

std::string MissingMessage(const std::vector<std::string>& languages,
                           const std::vector<std::string>& paths) {
  std::string packages, where;
  for (size_t i = 0; i < languages.size(); ++i) {
    if (i > 0) {
      packages += ' ';
      where += ", ";
    }
    packages += FortunesPackage(languages[i]);
    where += paths[i];
  }
  return "fortune files not found in " + where + " (install the Debian package" +
         (languages.size() > 1 ? "s " : " ") + packages + ", which provide" +
         (languages.size() > 1 ? " " : "s ") + std::string(kFortunesDefaultDir) +
         ", or point the data directory at such a tree)";
}

}  // namespace

std::vector<TextSpan> SplitFortuneEntries(std::string_view text) {
  std::vector<TextSpan> entries;
  size_t entry_start = 0;
  size_t pos = 0;
  auto close = [&](size_t end) {
    if (end > entry_start && !IsBlank(text.substr(entry_start, end - entry_start))) {
      entries.push_back({entry_start, end - entry_start});
    }
  };
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    const size_t line_end = eol == std::string_view::npos ? text.size() : eol;
    const size_t next = eol == std::string_view::npos ? text.size() : eol + 1;
    if (IsSeparatorLine(text.substr(pos, line_end - pos))) {
      close(pos);
      entry_start = next;
    }
    pos = next;
  }
  close(text.size());
  return entries;
}

Result<FortuneFile> SplitFortuneFile(std::string language, std::string name, std::string path,
                                     std::string text, double heldout_fraction) {
  if (!(heldout_fraction > 0 && heldout_fraction < 1)) {
    return Status::InvalidArgument("held-out fraction must be in (0, 1), got " +
                                   std::to_string(heldout_fraction));
  }
  const std::vector<TextSpan> entries = SplitFortuneEntries(text);
  if (entries.size() < 2) {
    return Status::FailedPrecondition(path + ": " + std::to_string(entries.size()) +
                                      " fortune entries; at least two are needed to hold one out");
  }
  const size_t n = entries.size();
  size_t heldout = static_cast<size_t>(std::llround(heldout_fraction * static_cast<double>(n)));
  heldout = std::clamp<size_t>(heldout, 1, n - 1);
  FortuneFile f;
  f.language = std::move(language);
  f.name = std::move(name);
  f.path = std::move(path);
  f.text = std::move(text);
  f.num_entries = n;
  f.num_heldout_entries = heldout;
  f.heldout_begin = entries[n - heldout].offset;
  return f;
}

uint64_t FortuneCorpus::TrainBytes() const {
  uint64_t total = 0;
  for (const FortuneFile& f : files) total += f.train_bytes().size();
  return total;
}

uint64_t FortuneCorpus::HeldoutBytes() const {
  uint64_t total = 0;
  for (const FortuneFile& f : files) total += f.heldout_bytes().size();
  return total;
}

std::string FortunesPackage(std::string_view language) {
  if (language == "en") return "fortunes";
  return "fortunes-" + std::string(language);
}

Result<std::vector<std::string>> ParseLanguageList(std::string_view list) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string_view::npos) comma = list.size();
    std::string name;
    for (char c : list.substr(pos, comma - pos)) {
      if (c != ' ') name += c;
    }
    const bool valid = !name.empty() && name != "." && name != ".." &&
                       std::all_of(name.begin(), name.end(), [](char c) {
                         return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
                       });
    if (!valid) {
      return Status::InvalidArgument(
          "bad language list \"" + std::string(list) +
          "\" (expected names such as de,es,it; en = the top-level files)");
    }
    if (std::find(out.begin(), out.end(), name) != out.end()) {
      return Status::InvalidArgument("language " + name + " listed twice in \"" +
                                     std::string(list) + "\"");
    }
    out.push_back(std::move(name));
    pos = comma + 1;
  }
  return out;
}

Result<std::vector<std::string>> ListFortuneFiles(const std::string& dir,
                                                  const std::string& language) {
  const std::string lang_dir = LanguageDir(dir, language);
  std::error_code ec;
  const fs::path real_dir = fs::canonical(lang_dir, ec);
  if (ec || !fs::is_directory(real_dir, ec)) {
    return Status::NotFound(MissingMessage({language}, {lang_dir}));
  }
  std::vector<std::pair<std::string, std::string>> found;  // (name, path)
  std::set<fs::path> seen;
  for (fs::directory_iterator it(lang_dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (HasIndexSuffix(name) || name.starts_with(".")) continue;
    std::error_code entry_ec;
    if (!fs::is_regular_file(it->path(), entry_ec)) continue;  // directories, dangling links
    const fs::path real = fs::canonical(it->path(), entry_ec);
    // Links into another language's directory belong to that language.
    if (entry_ec || real.parent_path() != real_dir || !seen.insert(real).second) continue;
    found.emplace_back(name, it->path().string());
  }
  if (ec) return Status::Unavailable("cannot list " + lang_dir + ": " + ec.message());
  if (found.empty()) return Status::NotFound(MissingMessage({language}, {lang_dir}));
  std::sort(found.begin(), found.end());
  std::vector<std::string> paths;
  for (auto& [name, path] : found) paths.push_back(std::move(path));
  return paths;
}

Result<FortuneCorpus> LoadFortuneCorpus(const std::string& dir,
                                        const std::vector<std::string>& languages,
                                        double heldout_fraction, Env* env) {
  if (env == nullptr) env = Env::Default();
  if (languages.empty()) return Status::InvalidArgument("no fortune languages given");
  if (!(heldout_fraction > 0 && heldout_fraction < 1)) {
    return Status::InvalidArgument("held-out fraction must be in (0, 1), got " +
                                   std::to_string(heldout_fraction));
  }
  std::vector<std::vector<std::string>> listed;
  std::vector<std::string> missing, missing_paths;
  for (const std::string& language : languages) {
    Result<std::vector<std::string>> files = ListFortuneFiles(dir, language);
    if (!files.ok()) {
      if (files.status().code() != StatusCode::kNotFound) return files.status();
      missing.push_back(language);
      missing_paths.push_back(LanguageDir(dir, language));
      continue;
    }
    listed.push_back(std::move(*files));
  }
  if (!missing.empty()) return Status::NotFound(MissingMessage(missing, missing_paths));

  FortuneCorpus corpus;
  for (size_t l = 0; l < languages.size(); ++l) {
    for (const std::string& path : listed[l]) {
      Result<std::string> text = env->ReadFile(path);
      if (!text.ok()) return text.status().WithContext(path);
      Result<FortuneFile> file = SplitFortuneFile(languages[l], fs::path(path).filename().string(),
                                                  path, std::move(*text), heldout_fraction);
      if (!file.ok()) {
        if (file.status().code() != StatusCode::kFailedPrecondition) return file.status();
        corpus.skipped.push_back(path);
        continue;
      }
      corpus.files.push_back(std::move(*file));
    }
  }
  return corpus;
}

}  // namespace fl::internal
