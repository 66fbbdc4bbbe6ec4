#include "fl/env.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace fl {
namespace {

class EnvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fl_env_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
  Env* env_ = Env::Default();
};

TEST_F(EnvTest, WriteReadDeleteRoundTrip) {
  const std::string path = dir_ + "/model.bin";
  std::string data("bin\0ary", 7);
  ASSERT_TRUE(env_->WriteFileAtomic(path, data, /*sync=*/true).ok());
  EXPECT_TRUE(env_->FileExists(path));
  Result<std::string> read = env_->ReadFile(path);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(*read, data);
  // Overwrite replaces the whole content.
  ASSERT_TRUE(env_->WriteFileAtomic(path, "x", /*sync=*/false).ok());
  EXPECT_EQ(*env_->ReadFile(path), "x");
  ASSERT_TRUE(env_->DeleteFile(path).ok());
  EXPECT_FALSE(env_->FileExists(path));
  EXPECT_EQ(env_->ReadFile(path).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(env_->DeleteFile(path).code(), StatusCode::kNotFound);
}

TEST_F(EnvTest, WriteLeavesNoTemporaryFiles) {
  ASSERT_TRUE(env_->WriteFileAtomic(dir_ + "/a", "1", true).ok());
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    names.push_back(entry.path().filename().string());
  }
  EXPECT_EQ(names, std::vector<std::string>{"a"});
}

TEST_F(EnvTest, WriteIntoMissingDirectoryFails) {
  Status s = env_->WriteFileAtomic(dir_ + "/no/such/file", "x", true);
  EXPECT_FALSE(s.ok());
}

TEST_F(EnvTest, CreateDirsMakesParentsAndIsIdempotent) {
  const std::string nested = dir_ + "/a/b/c";
  ASSERT_TRUE(env_->CreateDirs(nested).ok());
  ASSERT_TRUE(env_->CreateDirs(nested).ok());
  ASSERT_TRUE(env_->WriteFileAtomic(nested + "/f", "ok", true).ok());
  EXPECT_EQ(env_->CreateDirs(nested + "/f").code(), StatusCode::kFailedPrecondition);
}

TEST_F(EnvTest, ClocksAdvance) {
  uint64_t t0 = env_->NowMicros();
  env_->SleepForMicros(2000);
  EXPECT_GE(env_->NowMicros() - t0, 2000u);
  EXPECT_GT(env_->NowUnixSeconds(), 1600000000);
}

}  // namespace
}  // namespace fl
