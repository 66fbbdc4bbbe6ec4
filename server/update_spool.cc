#include "server/update_spool.h"

#include <cstdint>
#include <cstring>

namespace fl::internal {
namespace {

constexpr char kMagic[4] = {'F', 'L', 'U', 'P'};
constexpr uint32_t kFormatVersion = 1;

template <typename T>
void Put(std::string* out, T value) {
  char buf[sizeof(T)];
  std::memcpy(buf, &value, sizeof(T));
  out->append(buf, sizeof(T));
}

void PutString(std::string* out, std::string_view s) {
  Put<uint64_t>(out, s.size());
  out->append(s);
}

class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  template <typename T>
  bool Get(T* value) {
    if (data_.size() < sizeof(T)) return false;
    std::memcpy(value, data_.data(), sizeof(T));
    data_.remove_prefix(sizeof(T));
    return true;
  }
  bool GetString(std::string* s) {
    uint64_t n = 0;
    if (!Get(&n) || n > data_.size()) return false;
    s->assign(data_.data(), n);
    data_.remove_prefix(n);
    return true;
  }
  bool done() const { return data_.empty(); }

 private:
  std::string_view data_;
};

}  // namespace

std::string EncodeSpooledUpdate(const Payload& payload) {
  const UpdateMeta& m = payload.meta;
  std::string out;
  out.reserve(payload.bytes.size() + 128);
  out.append(kMagic, sizeof(kMagic));
  Put<uint32_t>(&out, kFormatVersion);
  Put<uint64_t>(&out, m.client_id);
  Put<uint64_t>(&out, m.round);
  Put<uint64_t>(&out, m.base_version);
  Put<double>(&out, m.weight);
  Put<uint64_t>(&out, m.layout_hash);
  Put<int32_t>(&out, static_cast<int32_t>(m.encoding));
  PutString(&out, m.sha256);
  Put<uint64_t>(&out, m.num_examples);
  Put<double>(&out, m.train_loss);
  PutString(&out, payload.bytes);
  return out;
}

Result<Payload> DecodeSpooledUpdate(std::string_view data) {
  if (data.size() < sizeof(kMagic) || std::memcmp(data.data(), kMagic, sizeof(kMagic)) != 0) {
    return Status::DataLoss("spooled update: bad magic");
  }
  Reader r(data.substr(sizeof(kMagic)));
  uint32_t version = 0;
  Payload p;
  int32_t encoding = 0;
  UpdateMeta& m = p.meta;
  bool ok = r.Get(&version) && version == kFormatVersion && r.Get(&m.client_id) &&
            r.Get(&m.round) && r.Get(&m.base_version) && r.Get(&m.weight) &&
            r.Get(&m.layout_hash) && r.Get(&encoding) && r.GetString(&m.sha256) &&
            r.Get(&m.num_examples) && r.Get(&m.train_loss) && r.GetString(&p.bytes) && r.done();
  if (!ok) return Status::DataLoss("spooled update: truncated or corrupt");
  m.encoding = static_cast<Encoding>(encoding);
  return p;
}

}  // namespace fl::internal
