#include "codec/named_subset_codec.h"

#include <cmath>
#include <cstring>
#include <unordered_map>

#include "codec/byte_io.h"
#include "codec/dense_codec.h"

namespace fl::internal {
namespace {

constexpr char kMagic[4] = {'F', 'L', 'N', 'S'};
constexpr uint32_t kVersion = 1;
// A long name from the network is cut in errors, not echoed whole.
constexpr size_t kMaxQuotedName = 80;

Status Bad(const std::string& why) { return Status::InvalidArgument("named subset: " + why); }

// Names from the network end up in errors, the ledger and logs: bytes outside printable
// ASCII are written as \xHH, so a reason is always valid UTF-8 and one line.
std::string Quote(std::string_view name) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string quoted(1, '\'');
  for (unsigned char c : name.substr(0, kMaxQuotedName)) {
    if (c >= 0x20 && c < 0x7f) {
      quoted += static_cast<char>(c);
    } else {
      quoted += {'\\', 'x', kHex[c >> 4], kHex[c & 15]};
    }
  }
  if (name.size() <= kMaxQuotedName) return quoted + "'";
  return quoted + "...' (" + std::to_string(name.size()) + " bytes)";
}

// What the header says; validated against the layout before any entry is read.
struct Header {
  Encoding value_encoding = Encoding::kDenseF32;
  uint64_t count = 0;
};

Result<Header> ReadHeader(ByteReader* in, const Layout& layout) {
  std::string_view magic;
  uint32_t version = 0, encoding = 0;
  Header h;
  if (!in->Bytes(4, &magic) || std::memcmp(magic.data(), kMagic, 4) != 0) {
    return Bad("bad magic (not a named-subset payload)");
  }
  if (!in->U32(&version) || !in->U32(&encoding) || !in->U64(&h.count)) {
    return Bad("truncated header");
  }
  if (version != kVersion) return Bad("unsupported version " + std::to_string(version));
  h.value_encoding = static_cast<Encoding>(encoding);
  if (!IsDenseEncoding(h.value_encoding)) {
    return Bad("value encoding " + EncodingName(h.value_encoding) + " is not dense");
  }
  if (h.count == 0) return Bad("no tensors");
  if (h.count > layout.num_tensors()) {
    return Bad(std::to_string(h.count) + " tensors, the layout has " +
               std::to_string(layout.num_tensors()));
  }
  return h;
}

// The layout's tensor indices by name, so that matching n entries costs O(n), not
// O(n x tensors).
using NameIndex = std::unordered_map<std::string_view, size_t>;

NameIndex IndexNames(const Layout& layout) {
  NameIndex index;
  index.reserve(layout.num_tensors());
  for (size_t i = 0; i < layout.num_tensors(); ++i) index.emplace(layout.tensors()[i].name, i);
  return index;
}

Status CheckFraction(const std::string& name, double fraction) {
  if (!std::isfinite(fraction) || fraction < 0 || fraction > 1) {
    return Bad(name + " has weight fraction " + std::to_string(fraction) +
               ", expected a finite value in [0, 1]");
  }
  return Status::Ok();
}

// Reads one entry into *out. `seen` marks the layout tensors already read.
Status ReadEntry(ByteReader* in, const Layout& layout, const NameIndex& names, Encoding encoding,
                 uint64_t ordinal, std::vector<bool>* seen, NamedTensor* out) {
  uint64_t name_size = 0;
  std::string_view name;
  if (!in->U64(&name_size) || !in->Bytes(name_size, &name)) {
    return Bad("truncated in the name of entry " + std::to_string(ordinal));
  }
  auto found = names.find(name);
  if (found == names.end()) return Bad("unknown tensor " + Quote(name));
  const TensorSpec& spec = layout.tensors()[found->second];
  if ((*seen)[found->second]) return Bad(spec.name + " appears twice");
  double fraction = 0;
  uint64_t numel = 0;
  if (!in->F64(&fraction) || !in->U64(&numel)) return Bad(spec.name + " is truncated");
  FL_RETURN_IF_ERROR(CheckFraction(spec.name, fraction));
  if (numel != spec.numel) {
    return Bad(spec.name + " has " + std::to_string(numel) + " values, the layout's has " +
               std::to_string(spec.numel));
  }
  // numel is the layout's, so the size below cannot overflow or be forged.
  const size_t size = DenseEncodedSize(spec.numel, encoding);
  std::string_view bytes;
  if (!in->Bytes(size, &bytes)) {
    return Bad(spec.name + " is truncated (" + std::to_string(size) + " bytes of values, " +
               std::to_string(in->remaining()) + " left)");
  }
  out->index = found->second;
  out->fraction = fraction;
  out->values.resize(spec.numel);
  FL_RETURN_IF_ERROR(DecodeDense(bytes, encoding, out->values));
  const size_t bad = FindNonFinite(out->values);
  if (bad != out->values.size()) {
    return Bad(spec.name + " holds a non-finite value at index " + std::to_string(bad));
  }
  (*seen)[found->second] = true;
  return Status::Ok();
}

}  // namespace

Status EncodeNamedSubset(std::span<const NamedTensorView> tensors, Encoding value_encoding,
                         std::string* out) {
  if (!IsDenseEncoding(value_encoding)) {
    return Status::InvalidArgument("EncodeNamedSubset: value encoding " +
                                   EncodingName(value_encoding) + " is not dense");
  }
  std::string bytes(kMagic, 4);
  PutU32(&bytes, kVersion);
  PutU32(&bytes, static_cast<uint32_t>(value_encoding));
  PutU64(&bytes, tensors.size());
  std::string values;
  for (const NamedTensorView& t : tensors) {
    PutLengthPrefixed(&bytes, t.name);
    PutF64(&bytes, t.fraction);
    PutU64(&bytes, t.values.size());
    FL_RETURN_IF_ERROR(EncodeDense(t.values, value_encoding, &values));
    bytes += values;
  }
  *out = std::move(bytes);
  return Status::Ok();
}

Result<NamedSubset> DecodeNamedSubset(std::string_view bytes, const Layout& layout) {
  ByteReader in(bytes);
  FL_ASSIGN_OR_RETURN(Header header, ReadHeader(&in, layout));
  const NameIndex names = IndexNames(layout);
  std::vector<bool> seen(layout.num_tensors(), false);
  NamedSubset subset;
  subset.value_encoding = header.value_encoding;
  // count <= num_tensors (ReadHeader), so this reservation is bounded by the model.
  subset.tensors.reserve(header.count);
  for (uint64_t i = 0; i < header.count; ++i) {
    NamedTensor t;
    FL_RETURN_IF_ERROR(ReadEntry(&in, layout, names, header.value_encoding, i, &seen, &t));
    subset.tensors.push_back(std::move(t));
  }
  if (in.remaining() != 0) {
    return Bad(std::to_string(in.remaining()) + " trailing bytes after the last tensor");
  }
  return subset;
}

Result<NamedSubsetValues> LocateNamedSubsetValues(std::string_view bytes) {
  ByteReader in(bytes);
  std::string_view magic;
  uint32_t version = 0, encoding = 0;
  uint64_t count = 0;
  if (!in.Bytes(4, &magic) || std::memcmp(magic.data(), kMagic, 4) != 0) {
    return Bad("bad magic (not a named-subset payload)");
  }
  if (!in.U32(&version) || !in.U32(&encoding) || !in.U64(&count)) return Bad("truncated header");
  if (version != kVersion) return Bad("unsupported version " + std::to_string(version));
  NamedSubsetValues out;
  out.value_encoding = static_cast<Encoding>(encoding);
  if (!IsDenseEncoding(out.value_encoding)) {
    return Bad("value encoding " + EncodingName(out.value_encoding) + " is not dense");
  }
  const size_t width = DenseEncodedSize(1, out.value_encoding);
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t name_size = 0, numel = 0;
    std::string_view name, values;
    double fraction = 0;
    if (!in.U64(&name_size) || !in.Bytes(name_size, &name) || !in.F64(&fraction) ||
        !in.U64(&numel) || numel > in.remaining() / width || !in.Bytes(numel * width, &values)) {
      return Bad("entry " + std::to_string(i) + " runs past the end of the payload");
    }
    out.spans.push_back({static_cast<size_t>(values.data() - bytes.data()), numel});
  }
  return out;
}

}  // namespace fl::internal
