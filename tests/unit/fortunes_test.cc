// The fortune reader on the real Debian files (packages fortunes, fortunes-de,
// fortunes-es, fortunes-it).
#include "data/fortunes.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include <gtest/gtest.h>

namespace fl::internal {
namespace {

const std::string kDir(kFortunesDefaultDir);

std::string Slice(std::string_view text, const TextSpan& s) {
  return std::string(text.substr(s.offset, s.size));
}

TEST(FortunesTest, SplitsEntriesOnPercentLines) {
  const std::string text = "first\nline two\n%\n\n%\nsecond 50% off\n%\r\nthird\n%";
  std::vector<TextSpan> e = SplitFortuneEntries(text);
  ASSERT_EQ(e.size(), 3u);
  EXPECT_EQ(Slice(text, e[0]), "first\nline two\n");
  EXPECT_EQ(Slice(text, e[1]), "second 50% off\n");  // a '%' inside a line is text
  EXPECT_EQ(Slice(text, e[2]), "third\n");
  EXPECT_TRUE(SplitFortuneEntries("%\n%\n  \n%\n").empty());
}

TEST(FortunesTest, RealFileEntriesMatchTheSeparatorCount) {
  // de/anekdoten: every entry ends with a "%" line; fortune's strfile counts the same.
  Result<std::string> text = Env::Default()->ReadFile(kDir + "/de/anekdoten");
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  size_t separators = 0;
  size_t pos = 0;
  if (text->starts_with("%\n")) ++separators;
  while ((pos = text->find("\n%\n", pos)) != std::string::npos) ++separators, pos += 2;
  std::vector<TextSpan> e = SplitFortuneEntries(*text);
  EXPECT_GE(e.size(), 20u);
  EXPECT_EQ(e.size(), separators + (text->ends_with("%\n") ? 0 : 1));
  EXPECT_EQ(Slice(*text, e[0]).rfind("Ein Mathematikprofessor", 0), 0u);
  for (const TextSpan& s : e) EXPECT_EQ(Slice(*text, s).find("\n%\n"), std::string::npos);
}

TEST(FortunesTest, HeldOutSliceIsFixedDisjointAndLastEntries) {
  Result<std::string> text = Env::Default()->ReadFile(kDir + "/es/asimov.fortunes");
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  Result<FortuneFile> a = SplitFortuneFile("es", "asimov.fortunes", "p", *text, 0.1);
  Result<FortuneFile> b = SplitFortuneFile("es", "asimov.fortunes", "p", *text, 0.1);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->heldout_begin, b->heldout_begin);
  const size_t n = SplitFortuneEntries(*text).size();
  EXPECT_EQ(a->num_entries, n);
  EXPECT_EQ(a->num_heldout_entries, std::max<size_t>(1, (n + 5) / 10));
  // Disjoint and complete: training is a prefix, held-out the rest.
  EXPECT_EQ(std::string(a->train_bytes()) + std::string(a->heldout_bytes()), *text);
  // The held-out part is exactly the last entries.
  EXPECT_EQ(SplitFortuneEntries(a->heldout_bytes()).size(), a->num_heldout_entries);
  EXPECT_EQ(SplitFortuneEntries(a->train_bytes()).size(), n - a->num_heldout_entries);
  EXPECT_FALSE(a->train_bytes().empty());

  EXPECT_EQ(SplitFortuneFile("x", "one", "one", "single entry\n%\n", 0.1).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(SplitFortuneFile("x", "two", "two", "a\n%\nb\n", 0.0).status().code(),
            StatusCode::kInvalidArgument);
  Result<FortuneFile> two = SplitFortuneFile("x", "two", "two", "a\n%\nb\n", 0.9);
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->num_heldout_entries, 1u);  // at most entries - 1
  EXPECT_EQ(two->heldout_bytes(), "b\n");
}

TEST(FortunesTest, ClientFilesPerLanguage) {
  // Counted independently: regular files directly in the directory, no .dat/.u8.
  for (const std::string lang : {"de", "es", "it"}) {
    size_t expected = 0;
    for (const auto& entry : std::filesystem::directory_iterator(kDir + "/" + lang)) {
      const std::string name = entry.path().filename().string();
      if (entry.is_regular_file() && !entry.is_symlink() && !name.ends_with(".dat") &&
          !name.ends_with(".u8")) {
        ++expected;
      }
    }
    Result<std::vector<std::string>> files = ListFortuneFiles(kDir, lang);
    ASSERT_TRUE(files.ok()) << files.status().ToString();
    EXPECT_EQ(files->size(), expected) << lang;
    EXPECT_TRUE(std::is_sorted(files->begin(), files->end()));
  }
  // es/off/ is a directory of the same package, not a client.
  Result<std::vector<std::string>> es = ListFortuneFiles(kDir, "es");
  ASSERT_TRUE(es.ok());
  for (const std::string& p : *es) EXPECT_EQ(p.find("/off"), std::string::npos) << p;

  // English: fortunes-it links its files into the top level; they stay Italian.
  Result<std::vector<std::string>> en = ListFortuneFiles(kDir, "en");
  ASSERT_TRUE(en.ok()) << en.status().ToString();
  std::set<std::string> names;
  for (const std::string& p : *en) names.insert(std::filesystem::path(p).filename().string());
  EXPECT_TRUE(names.count("fortunes"));
  EXPECT_TRUE(names.count("literature"));
  EXPECT_FALSE(names.count("zuse"));  // -> it/zuse
  EXPECT_FALSE(names.count("art.u8"));
  EXPECT_FALSE(names.count("off"));
  EXPECT_GE(en->size(), 30u);
}

TEST(FortunesTest, CorpusSkipsSingleEntryFilesAndCountsBytes) {
  Result<FortuneCorpus> corpus = LoadFortuneCorpus(kDir, {"de", "es", "it"}, 0.1);
  ASSERT_TRUE(corpus.ok()) << corpus.status().ToString();
  EXPECT_GE(corpus->files.size(), 20u);
  size_t listed = 0;
  for (const std::string lang : {"de", "es", "it"}) listed += ListFortuneFiles(kDir, lang)->size();
  EXPECT_EQ(corpus->files.size() + corpus->skipped.size(), listed);
  for (const std::string& p : corpus->skipped) {
    Result<std::string> text = Env::Default()->ReadFile(p);
    ASSERT_TRUE(text.ok());
    EXPECT_LT(SplitFortuneEntries(*text).size(), 2u) << p;
  }
  uint64_t total = 0;
  for (const FortuneFile& f : corpus->files) {
    EXPECT_GE(f.num_entries, 2u) << f.path;
    EXPECT_GE(f.num_heldout_entries, 1u) << f.path;
    total += f.text.size();
  }
  EXPECT_EQ(corpus->TrainBytes() + corpus->HeldoutBytes(), total);
  EXPECT_EQ(corpus->files.front().language, "de");
  EXPECT_EQ(corpus->files.back().language, "it");
}

TEST(FortunesTest, MissingDataNamesThePackages) {
  const std::string empty =
      std::filesystem::temp_directory_path() / ("fortunes_empty_" + std::to_string(::getpid()));
  std::filesystem::create_directories(empty + "/de");
  std::ofstream(empty + "/de/witze") << "a\n%\nb\n%\nc\n";
  Result<FortuneCorpus> r = LoadFortuneCorpus(empty, {"de", "es", "it"}, 0.1);
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("fortunes-es fortunes-it"), std::string::npos)
      << r.status().message();
  EXPECT_EQ(r.status().message().find("fortunes-de"), std::string::npos);
  Result<FortuneCorpus> de = LoadFortuneCorpus(empty, {"de"}, 0.1);
  ASSERT_TRUE(de.ok()) << de.status().ToString();
  EXPECT_EQ(de->files.size(), 1u);
  Result<FortuneCorpus> en = LoadFortuneCorpus(empty + "/nowhere", {"en"}, 0.1);
  EXPECT_NE(en.status().message().find("package fortunes,"), std::string::npos)
      << en.status().message();
  std::filesystem::remove_all(empty);
}

TEST(FortunesTest, LanguageLists) {
  Result<std::vector<std::string>> l = ParseLanguageList("de, es,it");
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(*l, (std::vector<std::string>{"de", "es", "it"}));
  EXPECT_FALSE(ParseLanguageList("").ok());
  EXPECT_FALSE(ParseLanguageList("de,,it").ok());
  EXPECT_FALSE(ParseLanguageList("../etc").ok());
  EXPECT_FALSE(ParseLanguageList("de,de").ok());
}

}  // namespace
}  // namespace fl::internal
