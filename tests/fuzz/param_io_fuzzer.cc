// ParseParamSet and ParseLayout (model files on disk, the model download stream). The
// first byte picks the decoder; whatever parses must serialize back to the same bytes.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "codec/param_io.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) {
    fl::Result<fl::Layout> layout = fl::internal::ParseLayout(bytes);
    if (!layout.ok()) return 0;
    FUZZ_CHECK(fl::internal::SerializeLayout(*layout) == bytes, "layout re-encodes differently");
  } else {
    fl::Result<fl::ParamSet> params = fl::internal::ParseParamSet(bytes);
    if (!params.ok()) return 0;
    FUZZ_CHECK(params->size() == params->layout().total_numel(), "size != layout numel");
    FUZZ_CHECK(fl::internal::SerializeParamSet(*params) == bytes, "params re-encode differently");
    (void)params->AllFinite();
  }
  return 0;
}
