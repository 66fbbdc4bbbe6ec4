#include "server/update_spool.h"

#include <cstdint>
#include <cstring>

#include "codec/byte_io.h"

namespace fl::internal {
namespace {

constexpr char kMagic[4] = {'F', 'L', 'U', 'P'};
constexpr uint32_t kFormatVersion = 1;

}  // namespace

std::string EncodeSpooledUpdate(const UpdateMeta& m, std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() + 128);
  out.append(kMagic, sizeof(kMagic));
  PutU32(&out, kFormatVersion);
  PutU64(&out, m.client_id);
  PutU64(&out, m.round);
  PutU64(&out, m.base_version);
  PutF64(&out, m.weight);
  PutU64(&out, m.layout_hash);
  PutU32(&out, static_cast<uint32_t>(m.encoding));
  PutLengthPrefixed(&out, m.sha256);
  PutU64(&out, m.num_examples);
  PutF64(&out, m.train_loss);
  PutLengthPrefixed(&out, bytes);
  return out;
}

Result<Payload> DecodeSpooledUpdate(std::string_view data) {
  if (data.size() < sizeof(kMagic) || std::memcmp(data.data(), kMagic, sizeof(kMagic)) != 0) {
    return Status::DataLoss("spooled update: bad magic");
  }
  ByteReader r(data.substr(sizeof(kMagic)));
  uint32_t version = 0;
  Payload p;
  uint32_t encoding = 0;
  UpdateMeta& m = p.meta;
  bool ok = r.U32(&version) && version == kFormatVersion && r.U64(&m.client_id) &&
            r.U64(&m.round) && r.U64(&m.base_version) && r.F64(&m.weight) &&
            r.U64(&m.layout_hash) && r.U32(&encoding) && r.LengthPrefixed(&m.sha256) &&
            r.U64(&m.num_examples) && r.F64(&m.train_loss) && r.LengthPrefixed(&p.bytes) && r.remaining() == 0;
  if (!ok) return Status::DataLoss("spooled update: truncated or corrupt");
  m.encoding = static_cast<Encoding>(encoding);
  return p;
}

}  // namespace fl::internal
