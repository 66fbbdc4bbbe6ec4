#include "data/idx_reader.h"

#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <limits>

namespace fl::internal {
namespace {

// Upper bound on an inflated file; Fashion-MNIST's largest is 47 MB. A corrupt header
// must not make us allocate gigabytes.
constexpr uint64_t kMaxIdxBytes = 1ull << 31;

uint32_t ReadBigEndian32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

bool LooksGzipped(std::string_view bytes) {
  return bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1f &&
         static_cast<unsigned char>(bytes[1]) == 0x8b;
}

std::string MissingDatasetMessage(const std::string& path) {
  return "Fashion-MNIST/MNIST file not found: " + path +
         " (install the Debian package " + std::string(kFashionMnistPackage) +
         ", which provides " + std::string(kFashionMnistDefaultDir) +
         ", or point the data directory at a folder holding the IDX files)";
}

}  // namespace

Result<std::string> GunzipBytes(std::string_view compressed) {
  z_stream zs;
  std::memset(&zs, 0, sizeof(zs));
  // 15 + 32: maximum window, automatic gzip/zlib header detection.
  if (inflateInit2(&zs, 15 + 32) != Z_OK) return Status::Internal("inflateInit2 failed");
  std::string out;
  out.resize(std::max<size_t>(compressed.size() * 4, 1 << 16));
  size_t produced = 0;
  const auto* next_in = reinterpret_cast<const Bytef*>(compressed.data());
  size_t remaining_in = compressed.size();
  int rc = Z_OK;
  while (true) {
    if (produced == out.size()) {
      if (out.size() >= kMaxIdxBytes) {
        inflateEnd(&zs);
        return Status::DataLoss("gzip stream inflates beyond " + std::to_string(kMaxIdxBytes) +
                                " bytes");
      }
      out.resize(out.size() * 2);
    }
    // zlib counts in uInt; feed at most UINT_MAX at a time.
    uInt in_chunk = static_cast<uInt>(std::min<size_t>(remaining_in, UINT_MAX));
    uInt out_chunk = static_cast<uInt>(std::min<size_t>(out.size() - produced, UINT_MAX));
    zs.next_in = const_cast<Bytef*>(next_in);
    zs.avail_in = in_chunk;
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + produced);
    zs.avail_out = out_chunk;
    rc = inflate(&zs, Z_NO_FLUSH);
    size_t consumed = in_chunk - zs.avail_in;
    next_in += consumed;
    remaining_in -= consumed;
    produced += out_chunk - zs.avail_out;
    if (rc == Z_STREAM_END) {
      // Another gzip member may follow (as `cat a.gz b.gz` produces).
      if (remaining_in == 0) break;
      if (inflateReset(&zs) != Z_OK) break;
      continue;
    }
    if (rc == Z_OK) continue;
    if (rc == Z_BUF_ERROR && zs.avail_out == 0) continue;  // only needs more room
    std::string why = zs.msg != nullptr ? zs.msg
                      : rc == Z_BUF_ERROR ? "unexpected end of stream (truncated)"
                                          : "inflate error " + std::to_string(rc);
    inflateEnd(&zs);
    return Status::DataLoss("corrupt gzip stream: " + why);
  }
  inflateEnd(&zs);
  out.resize(produced);
  return out;
}

Result<IdxArray> ParseIdx(std::string_view bytes, std::string_view what) {
  const std::string name(what);
  if (bytes.size() < 4) return Status::DataLoss(name + ": too short for an IDX header");
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  if (p[0] != 0 || p[1] != 0) return Status::DataLoss(name + ": not an IDX file (bad magic)");
  if (p[2] != 0x08) {
    return Status::DataLoss(name + ": unsupported IDX element type code " +
                            std::to_string(p[2]) + " (only unsigned bytes, code 8, are supported)");
  }
  int ndims = p[3];
  if (ndims < 1 || ndims > 4) {
    return Status::DataLoss(name + ": unsupported IDX rank " + std::to_string(ndims));
  }
  size_t header = 4 + 4 * static_cast<size_t>(ndims);
  if (bytes.size() < header) return Status::DataLoss(name + ": truncated IDX header");
  IdxArray array;
  uint64_t count = 1;
  for (int d = 0; d < ndims; ++d) {
    uint32_t dim = ReadBigEndian32(p + 4 + 4 * d);
    array.dims.push_back(dim);
    count *= dim;
    if (count > kMaxIdxBytes) return Status::DataLoss(name + ": IDX dimensions too large");
  }
  uint64_t body = bytes.size() - header;
  if (body != count) {
    return Status::DataLoss(name + ": IDX header promises " + std::to_string(count) +
                            " bytes of data but the file holds " + std::to_string(body) +
                            (body < count ? " (truncated)" : ""));
  }
  array.data.assign(p + header, p + header + count);
  return array;
}

Result<IdxArray> ReadIdxFile(const std::string& path, Env* env) {
  if (env == nullptr) env = Env::Default();
  Result<std::string> raw = env->ReadFile(path);
  if (!raw.ok()) return raw.status();
  if (!LooksGzipped(*raw)) return ParseIdx(*raw, path);
  Result<std::string> inflated = GunzipBytes(*raw);
  if (!inflated.ok()) return inflated.status().WithContext(path);
  return ParseIdx(*inflated, path);
}

Result<ImageDataset> ReadIdxImageDataset(const std::string& images_path,
                                         const std::string& labels_path, Env* env) {
  FL_ASSIGN_OR_RETURN(IdxArray images, ReadIdxFile(images_path, env));
  FL_ASSIGN_OR_RETURN(IdxArray labels, ReadIdxFile(labels_path, env));
  if (images.dims.size() != 3) {
    return Status::DataLoss(images_path + ": expected a 3-d image array, got rank " +
                            std::to_string(images.dims.size()));
  }
  if (labels.dims.size() != 1) {
    return Status::DataLoss(labels_path + ": expected a 1-d label array, got rank " +
                            std::to_string(labels.dims.size()));
  }
  if (images.dims[0] != labels.dims[0]) {
    return Status::DataLoss(images_path + " holds " + std::to_string(images.dims[0]) +
                            " images but " + labels_path + " holds " +
                            std::to_string(labels.dims[0]) + " labels");
  }
  ImageDataset ds;
  ds.rows = images.dims[1];
  ds.cols = images.dims[2];
  ds.images = std::move(images.data);
  ds.labels = std::move(labels.data);
  int max_label = -1;
  for (uint8_t l : ds.labels) max_label = std::max<int>(max_label, l);
  ds.num_classes = max_label + 1;
  return ds;
}

Result<ImageDataset> LoadMnistFormat(const std::string& dir, DatasetSplit split, Env* env) {
  if (env == nullptr) env = Env::Default();
  const std::string prefix = split == DatasetSplit::kTrain ? "train" : "t10k";
  std::string paths[2] = {dir + "/" + prefix + "-images-idx3-ubyte",
                          dir + "/" + prefix + "-labels-idx1-ubyte"};
  for (std::string& path : paths) {
    // Debian ships the files gzipped; an unpacked copy works too.
    if (env->FileExists(path + ".gz")) {
      path += ".gz";
    } else if (!env->FileExists(path)) {
      return Status::NotFound(MissingDatasetMessage(path + ".gz"));
    }
  }
  return ReadIdxImageDataset(paths[0], paths[1], env);
}

}  // namespace fl::internal
