#ifndef FL_SDK_DATA_IDX_READER_H_
#define FL_SDK_DATA_IDX_READER_H_

// Reader for IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or not.
// Torch-free: fl-client loads its shard with it without linking LibTorch.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fl/env.h"
#include "fl/status.h"

namespace fl::internal {

// Debian package that installs Fashion-MNIST under /usr/share/datasets/fashion-mnist.
inline constexpr std::string_view kFashionMnistPackage = "dataset-fashion-mnist";
inline constexpr std::string_view kFashionMnistDefaultDir = "/usr/share/datasets/fashion-mnist";

// One decoded IDX array of unsigned bytes (type code 0x08).
struct IdxArray {
  std::vector<int64_t> dims;   // e.g. {60000, 28, 28}
  std::vector<uint8_t> data;   // product(dims) bytes, row-major
};

// Grey-scale images with one label each.
struct ImageDataset {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<uint8_t> images;  // size() * rows * cols bytes, image-major
  std::vector<uint8_t> labels;  // one per image
  int num_classes = 0;          // 1 + the largest label

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  const uint8_t* image(int64_t i) const { return images.data() + i * rows * cols; }
};

enum class DatasetSplit { kTrain, kTest };

// Inflates a gzip (or zlib) stream held in memory. Concatenated gzip members are joined.
// DataLoss if the stream is corrupt or truncated.
Result<std::string> GunzipBytes(std::string_view compressed);

// Decodes an IDX file's bytes. DataLoss on a bad magic number, an unsupported element
// type, or a size that disagrees with the header; `what` names the file in messages.
Result<IdxArray> ParseIdx(std::string_view bytes, std::string_view what);

// Reads `path`: gunzipped if its content starts with the gzip magic, then ParseIdx.
// NotFound if the file does not exist; DataLoss if it is corrupt or truncated.
Result<IdxArray> ReadIdxFile(const std::string& path, Env* env = nullptr);

// Reads an images file (N x rows x cols) and a labels file (N) into one dataset.
// DataLoss if either is malformed or their counts differ.
Result<ImageDataset> ReadIdxImageDataset(const std::string& images_path,
                                         const std::string& labels_path, Env* env = nullptr);

// Loads a split of an MNIST-format dataset from `dir`, which holds
// {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]. A missing directory or file gives
// one NotFound error naming the path and the Debian package that installs
// Fashion-MNIST; corrupt files give DataLoss. Never crashes on bad input.
Result<ImageDataset> LoadMnistFormat(const std::string& dir, DatasetSplit split,
                                     Env* env = nullptr);

}  // namespace fl::internal

#endif  // FL_SDK_DATA_IDX_READER_H_
