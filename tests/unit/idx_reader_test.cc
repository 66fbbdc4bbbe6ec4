#include "data/idx_reader.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

namespace fl::internal {
namespace {

const std::string kDir = FL_FASHION_MNIST_DIR;

std::filesystem::path TempDir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("fl_idx_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string Gzip(const std::string& raw) {
  uLongf bound = compressBound(raw.size()) + 64;
  std::string out(bound, '\0');
  z_stream zs{};
  // 15 + 16: gzip wrapper, as the Debian files use.
  EXPECT_EQ(deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  zs.avail_in = raw.size();
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = out.size();
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

void WriteFile(const std::filesystem::path& path, const std::string& data) {
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(std::fwrite(data.data(), 1, data.size(), f), data.size());
  std::fclose(f);
}

std::string ReadRaw(const std::string& path) {
  Result<std::string> r = Env::Default()->ReadFile(path);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : std::string();
}

TEST(IdxReaderTest, ReadsFashionMnistTrainAndTest) {
  Result<ImageDataset> train = LoadMnistFormat(kDir, DatasetSplit::kTrain);
  ASSERT_TRUE(train.ok()) << train.status().ToString();
  EXPECT_EQ(train->size(), 60000);
  EXPECT_EQ(train->rows, 28);
  EXPECT_EQ(train->cols, 28);
  EXPECT_EQ(train->images.size(), 60000u * 28 * 28);
  EXPECT_EQ(train->num_classes, 10);
  // Fashion-MNIST is balanced: 6000 training images per class.
  std::vector<int> counts(10, 0);
  for (uint8_t l : train->labels) {
    ASSERT_LT(l, 10);
    ++counts[l];
  }
  for (int c : counts) EXPECT_EQ(c, 6000);
  // Real images: not all black, and pixels span most of the byte range.
  auto [lo, hi] = std::minmax_element(train->images.begin(), train->images.end());
  EXPECT_EQ(*lo, 0);
  EXPECT_EQ(*hi, 255);

  Result<ImageDataset> test = LoadMnistFormat(kDir, DatasetSplit::kTest);
  ASSERT_TRUE(test.ok()) << test.status().ToString();
  EXPECT_EQ(test->size(), 10000);
  EXPECT_EQ(test->num_classes, 10);
  for (uint8_t l : test->labels) ASSERT_LT(l, 10);
}

TEST(IdxReaderTest, MissingDirectoryNamesPackageAndPath) {
  const std::string dir = "/nonexistent/fl-test/fashion-mnist";
  Result<ImageDataset> r = LoadMnistFormat(dir, DatasetSplit::kTrain);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("dataset-fashion-mnist"), std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find(dir), std::string::npos) << r.status().message();
}

TEST(IdxReaderTest, TruncatedGzipIsDataLoss) {
  auto dir = TempDir("truncated");
  std::string gz = ReadRaw(kDir + "/t10k-labels-idx1-ubyte.gz");
  ASSERT_GT(gz.size(), 100u);
  WriteFile(dir / "t10k-labels-idx1-ubyte.gz", gz.substr(0, gz.size() / 2));
  WriteFile(dir / "t10k-images-idx3-ubyte.gz", ReadRaw(kDir + "/t10k-images-idx3-ubyte.gz"));
  Result<ImageDataset> r = LoadMnistFormat(dir.string(), DatasetSplit::kTest);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().ToString();
  std::filesystem::remove_all(dir);
}

TEST(IdxReaderTest, CorruptGzipBytesAreDataLoss) {
  std::string gz = ReadRaw(kDir + "/t10k-labels-idx1-ubyte.gz");
  for (size_t i = 20; i < gz.size() - 8; i += 7) gz[i] = static_cast<char>(gz[i] ^ 0x5a);
  Result<std::string> r = GunzipBytes(gz);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
}

TEST(IdxReaderTest, HeaderSizeMismatchIsDataLoss) {
  // A valid header for 3 labels but only 2 data bytes, gzipped correctly.
  std::string raw("\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02", 10);
  Result<IdxArray> r = ParseIdx(raw, "labels");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);

  auto dir = TempDir("mismatch");
  WriteFile(dir / "bad.gz", Gzip(raw));
  Result<IdxArray> file = ReadIdxFile((dir / "bad.gz").string());
  EXPECT_EQ(file.status().code(), StatusCode::kDataLoss);
  // Same bytes with the right count parse, uncompressed too.
  raw[7] = 2;
  WriteFile(dir / "good", raw);
  Result<IdxArray> good = ReadIdxFile((dir / "good").string());
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  EXPECT_EQ(good->dims, std::vector<int64_t>({2}));
  EXPECT_EQ(good->data, std::vector<uint8_t>({1, 2}));
  std::filesystem::remove_all(dir);
}

TEST(IdxReaderTest, RejectsBadMagicAndTypeAndCountMismatch) {
  EXPECT_EQ(ParseIdx(std::string("\x01\x02", 2), "x").status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(ParseIdx(std::string("\x00\x01\x08\x01\x00\x00\x00\x00", 8), "x").status().code(),
            StatusCode::kDataLoss);
  // Element type 0x0d (float32) is not supported.
  EXPECT_EQ(ParseIdx(std::string("\x00\x00\x0d\x01\x00\x00\x00\x00", 8), "x").status().code(),
            StatusCode::kDataLoss);

  auto dir = TempDir("count");
  std::string images("\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x00\x01\x07\x08",
                     18);
  std::string labels("\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02\x03", 11);
  WriteFile(dir / "images", images);
  WriteFile(dir / "labels", labels);
  Result<ImageDataset> r = ReadIdxImageDataset((dir / "images").string(), (dir / "labels").string());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("labels"), std::string::npos);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fl::internal
