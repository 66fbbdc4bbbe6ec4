#include "core/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "fl/env.h"

namespace fl::internal {
namespace {

using nlohmann::json;

json Defaults() {
  return json{
      {"run", {{"rounds", 10}, {"name", "demo"}, {"seed", 1}, {"resume", false}}},
      {"train", {{"lr", 0.05}, {"batch_size", 32}, {"extra", json::object()}}},
      {"server", {{"address", "localhost:50051"}, {"tags", json::array({"a"})}}},
      {"note", nullptr},
  };
}

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fl_config_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    EXPECT_TRUE(Env::Default()->WriteFileAtomic(path, text, false).ok());
    return path;
  }

  Config Fresh() { return *Config::FromDefaults(Defaults()); }

  std::string dir_;
};

TEST_F(ConfigTest, DefaultsAreTheValues) {
  Config c = Fresh();
  EXPECT_EQ(c.GetInt("run.rounds"), 10);
  EXPECT_EQ(c.GetString("run.name"), "demo");
  EXPECT_FALSE(c.GetBool("run.resume"));
  EXPECT_DOUBLE_EQ(c.GetDouble("train.lr"), 0.05);
  EXPECT_DOUBLE_EQ(c.GetDouble("train.batch_size"), 32.0);  // integers read as doubles
  EXPECT_TRUE(c.Has("server.address"));
  EXPECT_FALSE(c.Has("server.port"));
  EXPECT_FALSE(Config::FromDefaults(json::array()).ok());
}

TEST_F(ConfigTest, YamlFileIsTypedBySchema) {
  std::string path = Write("c.yaml",
                           "run:\n"
                           "  rounds: 1e3\n"
                           "  name: 123\n"
                           "  resume: yes\n"
                           "train:\n"
                           "  lr: 1\n"
                           "  extra:\n"
                           "    mu: 0.5\n"
                           "    tag: \"7\"\n"
                           "server:\n"
                           "  tags: [x, y]\n");
  Config c = Fresh();
  ASSERT_TRUE(c.MergeFile(path).ok()) << c.MergeFile(path).ToString();
  EXPECT_EQ(c.GetInt("run.rounds"), 1000);
  EXPECT_EQ(c.GetString("run.name"), "123");
  EXPECT_TRUE(c.GetBool("run.resume"));
  EXPECT_EQ(c.GetDouble("train.lr"), 1.0);
  EXPECT_TRUE(c.Get("train.lr").is_number_float());
  EXPECT_EQ(c.GetDouble("train.extra.mu"), 0.5);
  EXPECT_EQ(c.Get("train.extra.tag"), json("7"));
  EXPECT_EQ(c.Get("server.tags"), json::array({"x", "y"}));
  EXPECT_EQ(c.GetInt("run.seed"), 1);  // untouched keys keep defaults
}

TEST_F(ConfigTest, UnknownKeyNamesKeyAndFile) {
  std::string path = Write("bad.yaml", "run:\n  roundz: 3\n");
  Config c = Fresh();
  Status s = c.MergeFile(path);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("run.roundz"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("bad.yaml"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("line 2"), std::string::npos) << s.message();
}

TEST_F(ConfigTest, WrongTypesAreRejectedAndLeaveConfigUnchanged) {
  Config c = Fresh();
  Status s = c.MergeFile(Write("half.yaml", "run:\n  seed: 4\n  rounds: 0.5\n"));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("run.rounds"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("integer"), std::string::npos) << s.message();
  EXPECT_EQ(c.GetInt("run.seed"), 1);  // the whole file was refused

  EXPECT_FALSE(c.MergeFile(Write("b.yaml", "run:\n  resume: maybe\n")).ok());
  EXPECT_FALSE(c.MergeFile(Write("c.yaml", "train:\n  lr: fast\n")).ok());
  EXPECT_FALSE(c.MergeFile(Write("d.yaml", "run: 5\n")).ok());
  EXPECT_FALSE(c.MergeFile(Write("e.yaml", "run:\n  rounds: [1, 2]\n")).ok());
  EXPECT_FALSE(c.MergeFile(Write("f.yaml", "run:\n  rounds:\n")).ok());
  EXPECT_FALSE(c.MergeFile(Write("g.yaml", "train:\n  extra:\n    nested: {a: 1}\n")).ok());
  EXPECT_EQ(c.json(), Fresh().json());
}

TEST_F(ConfigTest, BadYamlNeverCrashes) {
  const std::vector<std::string> bad = {
      "run: [1, 2\n", "run:\n  rounds: 3\n rounds: 4\n", "a: b: c\n", "- 1\n- 2\n",
      "run: {rounds: 3\n", "\t- x: ]\n", "plain text", "&a [*a]\n", "run: !!binary xyz\n",
      "run:\n  rounds: 3\n  rounds: 4\n"};
  for (const std::string& text : bad) {
    Config c = Fresh();
    Status s = c.MergeYaml(text, "t.yaml");
    // Duplicate keys are accepted by YAML parsers (last wins); everything else fails.
    if (text == "run:\n  rounds: 3\n  rounds: 4\n") continue;
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << text;
    EXPECT_NE(s.message().find("t.yaml"), std::string::npos) << s.message();
  }
  Config c = Fresh();
  Status s = c.MergeYaml("run: [1, 2\n", "t.yaml");
  EXPECT_NE(s.message().find("invalid YAML"), std::string::npos) << s.message();
  EXPECT_TRUE(c.MergeYaml("", "empty.yaml").ok());
  EXPECT_TRUE(c.MergeYaml("# only a comment\n", "c.yaml").ok());
}

TEST_F(ConfigTest, JsonFile) {
  Config c = Fresh();
  ASSERT_TRUE(c.MergeFile(Write("c.json", R"({"run": {"rounds": 4, "name": "x"}, "train": {"lr": 2}})")).ok());
  EXPECT_EQ(c.GetInt("run.rounds"), 4);
  EXPECT_EQ(c.GetDouble("train.lr"), 2.0);
  Status s = c.MergeFile(Write("d.json", R"({"run": {"name": 5}})"));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("run.name"), std::string::npos);
  EXPECT_FALSE(c.MergeFile(Write("e.json", R"({"run": {"rounds": 0.5}})")).ok());
  EXPECT_FALSE(c.MergeFile(Write("f.json", R"({"run": )")).ok());
  EXPECT_FALSE(c.MergeFile(Write("g.json", R"({"nope": 1})")).ok());
  EXPECT_EQ(c.MergeFile(dir_ + "/missing.yaml").code(), StatusCode::kInvalidArgument);
}

TEST_F(ConfigTest, Overrides) {
  Config c = Fresh();
  ASSERT_TRUE(c.ApplyOverride("run.rounds=7").ok());
  ASSERT_TRUE(c.ApplyOverride("train.lr=0.125").ok());
  ASSERT_TRUE(c.ApplyOverride("run.name=a=b").ok());
  ASSERT_TRUE(c.ApplyOverride("train.extra.mu=0.01").ok());
  ASSERT_TRUE(c.ApplyOverride("server.tags=[p, q]").ok());
  ASSERT_TRUE(c.ApplyOverride("note=hello").ok());
  EXPECT_EQ(c.GetInt("run.rounds"), 7);
  EXPECT_EQ(c.GetDouble("train.lr"), 0.125);
  EXPECT_EQ(c.GetString("run.name"), "a=b");
  EXPECT_EQ(c.GetDouble("train.extra.mu"), 0.01);
  EXPECT_EQ(c.Get("server.tags"), json::array({"p", "q"}));
  EXPECT_EQ(c.GetString("note"), "hello");

  Status s = c.ApplyOverride("run.rounds=0.5", "--set run.rounds=0.5");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--set run.rounds=0.5"), std::string::npos);
  EXPECT_FALSE(c.ApplyOverride("run.roundz=1").ok());
  EXPECT_FALSE(c.ApplyOverride("run=1").ok());
  EXPECT_FALSE(c.ApplyOverride("run.rounds").ok());
  EXPECT_FALSE(c.ApplyOverride("=1").ok());
  EXPECT_FALSE(c.ApplyOverride("run..rounds=1").ok());
  EXPECT_FALSE(c.ApplyOverride("train.extra.a.b=1").ok());
  EXPECT_FALSE(c.ApplyOverride("train.lr=nan").ok());
  EXPECT_EQ(c.GetInt("run.rounds"), 7);
}

TEST_F(ConfigTest, YamlRoundTrip) {
  Config c = Fresh();
  ASSERT_TRUE(c.ApplyOverride("run.name=true").ok());  // a string that looks like a bool
  ASSERT_TRUE(c.ApplyOverride("train.lr=3").ok());
  ASSERT_TRUE(c.ApplyOverride("train.extra.k=2").ok());
  ASSERT_TRUE(c.ApplyOverride("train.extra.x=2.0").ok());
  ASSERT_TRUE(c.ApplyOverride("train.extra.s=01x").ok());
  std::string yaml = c.ToYaml();
  EXPECT_NE(yaml.find("rounds: 10"), std::string::npos) << yaml;
  Config back = Fresh();
  ASSERT_TRUE(back.MergeYaml(yaml, "printed").ok()) << yaml;
  EXPECT_EQ(back.json(), c.json()) << yaml;
}

TEST_F(ConfigTest, Build) {
  std::string path = Write("c.yml", "run:\n  rounds: 3\n");
  Result<Config> c = Config::Build(Defaults(), path, {"run.rounds=4", "run.seed=9"});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->GetInt("run.rounds"), 4);
  EXPECT_EQ(c->GetInt("run.seed"), 9);
  EXPECT_FALSE(Config::Build(Defaults(), "", {"x=1"}).ok());
}

TEST_F(ConfigTest, GettersAbortOnProgrammingErrors) {
  Config c = Fresh();
  EXPECT_DEATH(c.GetInt("run.nope"), "run.nope");
  EXPECT_DEATH(c.GetInt("run.name"), "not an integer");
  EXPECT_DEATH(c.GetString("run.rounds"), "not a string");
}

// argv helper: CLI11 wants char**.
class Argv {
 public:
  Argv(std::initializer_list<std::string> args) : storage_(args) {
    for (std::string& s : storage_) ptrs_.push_back(s.data());
  }
  int argc() { return static_cast<int>(ptrs_.size()); }
  char** argv() { return ptrs_.data(); }

 private:
  std::vector<std::string> storage_;
  std::vector<char*> ptrs_;
};

const std::vector<FlagAlias> kAliases = {
    {"--rounds", "run.rounds", "rounds to run"},
    {"--lr", "train.lr", "client learning rate"},
    {"--resume", "run.resume", "resume the previous run"},
};

Result<CommandLine> Parse(Argv args) {
  return ParseCommandLine("fl-test", "test program", Defaults(), kAliases, args.argc(), args.argv());
}

TEST_F(ConfigTest, CommandLineLayersInOrder) {
  std::string path = Write("c.yaml", "run:\n  rounds: 3\n  seed: 5\ntrain:\n  lr: 0.5\n");
  Result<CommandLine> cl = Parse({"fl-test", "--config", path, "--set", "run.seed=6", "--set",
                                  "train.lr=0.25", "--rounds", "8", "--resume"});
  ASSERT_TRUE(cl.ok()) << cl.status().ToString();
  EXPECT_FALSE(cl->exit_now);
  EXPECT_EQ(cl->config.GetInt("run.rounds"), 8);
  EXPECT_EQ(cl->config.GetInt("run.seed"), 6);
  EXPECT_EQ(cl->config.GetDouble("train.lr"), 0.25);
  EXPECT_TRUE(cl->config.GetBool("run.resume"));

  // The alias wins over --set for the same key.
  cl = Parse({"fl-test", "--lr=0.75", "--set", "train.lr=0.1", "--resume=false"});
  ASSERT_TRUE(cl.ok()) << cl.status().ToString();
  EXPECT_EQ(cl->config.GetDouble("train.lr"), 0.75);
  EXPECT_FALSE(cl->config.GetBool("run.resume"));
}

TEST_F(ConfigTest, CommandLineErrors) {
  Result<CommandLine> cl = Parse({"fl-test", "--bogus"});
  EXPECT_EQ(cl.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(cl.status().message().find("--bogus"), std::string::npos) << cl.status().message();

  cl = Parse({"fl-test", "--rounds", "0.5"});
  EXPECT_EQ(cl.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(cl.status().message().find("--rounds"), std::string::npos) << cl.status().message();

  EXPECT_FALSE(Parse({"fl-test", "--rounds"}).ok());
  EXPECT_FALSE(Parse({"fl-test", "--set", "run.rounds"}).ok());
  EXPECT_FALSE(Parse({"fl-test", "--set", "run.nope=1"}).ok());
  EXPECT_FALSE(Parse({"fl-test", "--config", dir_ + "/missing.yaml"}).ok());
  EXPECT_FALSE(Parse({"fl-test", "stray"}).ok());
  std::string bad = Write("bad.yaml", "run: [1,\n");
  cl = Parse({"fl-test", "--config", bad});
  EXPECT_EQ(cl.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(cl.status().message().find("bad.yaml"), std::string::npos);

  Argv args{"fl-test"};
  Result<CommandLine> internal = ParseCommandLine(
      "fl-test", "", Defaults(), {{"--x", "no.such.key", ""}}, args.argc(), args.argv());
  EXPECT_EQ(internal.status().code(), StatusCode::kInternal);
}

TEST_F(ConfigTest, HelpAndPrintConfig) {
  testing::internal::CaptureStdout();
  Result<CommandLine> cl = Parse({"fl-test", "--help"});
  std::string help = testing::internal::GetCapturedStdout();
  ASSERT_TRUE(cl.ok());
  EXPECT_TRUE(cl->exit_now);
  EXPECT_EQ(cl->exit_code, 0);
  EXPECT_NE(help.find("--rounds"), std::string::npos) << help;
  EXPECT_NE(help.find("run.rounds"), std::string::npos) << help;
  EXPECT_NE(help.find("--print-config"), std::string::npos) << help;

  testing::internal::CaptureStdout();
  cl = Parse({"fl-test", "--rounds", "4", "--print-config"});
  std::string printed = testing::internal::GetCapturedStdout();
  ASSERT_TRUE(cl.ok());
  EXPECT_TRUE(cl->exit_now);
  Config back = Fresh();
  ASSERT_TRUE(back.MergeYaml(printed, "stdout").ok()) << printed;
  EXPECT_EQ(back.GetInt("run.rounds"), 4);
  EXPECT_EQ(back.json(), cl->config.json());
}

// Found by tests/fuzz/config_fuzzer: a YAML string that is not UTF-8 was merged, and
// the first json().dump() of the config (run records, metrics.jsonl) threw.
TEST_F(ConfigTest, StringsThatAreNotUtf8AreRefused) {
  Result<Config> c = Config::FromDefaults(Defaults());
  ASSERT_TRUE(c.ok());
  const json before = c->json();

  Status s = c->MergeYaml("run:\n  name: caf\xe9\n", "f.yaml");  // Latin-1
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("'run.name' is not valid UTF-8"), std::string::npos) << s.message();
  s = c->MergeYaml("train:\n  extra:\n    a\xff: 1\n", "f.yaml");  // a free-form key
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  s = c->MergeYaml("train:\n  extra:\n    k: \xed\xa0\x80\n", "f.yaml");  // a surrogate
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  s = c->MergeYaml("train:\n  extra:\n    k: \"\xc0\xaf\"\n", "f.yaml");  // overlong '/'
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  s = c->MergeYaml("server:\n  tags: [ok, \"\xf4\x90\x80\x80\"]\n", "f.yaml");  // > U+10FFFF
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("server.tags[1]"), std::string::npos) << s.message();
  EXPECT_EQ(c->ApplyOverride("run.name=\xc3\x28").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c->ApplyOverride("train.extra.k=\xe2\x82").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c->json(), before);
  EXPECT_NO_THROW((void)c->json().dump());

  // UTF-8 of every length passes.
  ASSERT_TRUE(c->MergeYaml("run:\n  name: \"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8c\x8d\"\n", "f.yaml").ok());
  EXPECT_EQ(c->GetString("run.name"), "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8c\x8d");
  EXPECT_NO_THROW((void)c->json().dump());
}

}  // namespace
}  // namespace fl::internal
