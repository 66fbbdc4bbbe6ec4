#ifndef FL_SDK_DATA_FORTUNES_H_
#define FL_SDK_DATA_FORTUNES_H_

// Reader for fortune files (W2 `fortunes-gpt`): plain text whose entries are separated by
// lines holding only "%". Bytes are kept as they are (the models are byte-level), and each
// file is split once into a training part and a fixed held-out part made of its last
// entries. Torch-free.
//
// Layout on Debian: the package `fortunes` puts the English files directly in
// /usr/share/games/fortunes/; `fortunes-de`, `fortunes-es` and `fortunes-it` add the
// subdirectories de/, es/ and it/. Beside each text file lie its index (.dat) and a .u8
// symlink; fortunes-it also drops symlinks to its files into the top-level directory, and
// es/ and the top level have off/ subdirectories (offensive fortunes, not installed by
// default). A language's files are therefore the regular files (after following links)
// whose real location is the language's own directory, without .dat/.u8 names, each
// counted once.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fl/env.h"
#include "fl/status.h"

namespace fl::internal {

inline constexpr std::string_view kFortunesDefaultDir = "/usr/share/games/fortunes";

// Where an entry lies in its file's text: bytes [offset, offset + size), without the
// separator lines.
struct TextSpan {
  size_t offset = 0;
  size_t size = 0;
};

// Splits fortune-file text into its entries. A separator is a line holding only "%"
// (a trailing '\r' is tolerated). Entries that are empty or only whitespace are dropped.
std::vector<TextSpan> SplitFortuneEntries(std::string_view text);

// One fortune file with its training/held-out split. The held-out part is the file's
// last max(1, round(heldout_fraction * entries)) entries (at most entries - 1): bytes
// [heldout_begin, end) of `text`; training is everything before. The two are disjoint
// and together are the whole file.
struct FortuneFile {
  std::string language;  // "en" for the top-level files, else the subdirectory ("de")
  std::string name;      // file name, e.g. "anekdoten"
  std::string path;      // as read
  std::string text;      // the whole file, bytes as-is
  size_t num_entries = 0;
  size_t num_heldout_entries = 0;
  size_t heldout_begin = 0;

  std::string_view train_bytes() const { return std::string_view(text).substr(0, heldout_begin); }
  std::string_view heldout_bytes() const { return std::string_view(text).substr(heldout_begin); }
};

// Splits `text` as described at FortuneFile. FailedPrecondition if it has fewer than two
// entries (no way to hold one out and still train); InvalidArgument unless
// 0 < heldout_fraction < 1.
Result<FortuneFile> SplitFortuneFile(std::string language, std::string name, std::string path,
                                     std::string text, double heldout_fraction);

struct FortuneCorpus {
  std::vector<FortuneFile> files;    // languages in the order asked, names sorted
  std::vector<std::string> skipped;  // paths of files with fewer than two entries
  uint64_t TrainBytes() const;
  uint64_t HeldoutBytes() const;
};

// The Debian package that installs `language`'s fortunes ("en" -> "fortunes",
// "de" -> "fortunes-de", ...).
std::string FortunesPackage(std::string_view language);

// Parses a comma-separated language list such as "de,es,it" (spaces ignored). A
// language is "en" or a subdirectory name of letters, digits, '_' or '-'. InvalidArgument
// for an empty list, a bad name or a duplicate.
Result<std::vector<std::string>> ParseLanguageList(std::string_view list);

// Lists `language`'s fortune files under `dir` (see the header comment), sorted by name.
// NotFound naming the Debian package if the directory is missing or holds none.
Result<std::vector<std::string>> ListFortuneFiles(const std::string& dir,
                                                  const std::string& language);

// Reads every fortune file of `languages` under `dir` and splits each (files with fewer
// than two entries are listed in `skipped` instead). One NotFound for all missing
// languages, naming every Debian package to install; InvalidArgument for a bad
// heldout_fraction; errors of reading a file carry its path.
Result<FortuneCorpus> LoadFortuneCorpus(const std::string& dir,
                                        const std::vector<std::string>& languages,
                                        double heldout_fraction, Env* env = nullptr);

}  // namespace fl::internal

#endif  // FL_SDK_DATA_FORTUNES_H_
