// fl.v1 messages from the network, converted into domain types as GrpcLink and
// GrpcService do (proto/wire.h), and uploads decoded into payloads as the server does.
// Input: u8 selector, then
//   0, 1: a v1::Task / v1::PullTaskResponse: FromProto, then the Ferret settings the
//         learner reads from the task's extra values (ReadFerretExtra);
//   2:    a v1::GetStatusResponse;
//   3:    u16 n, n bytes of a v1::UpdateChunk carrying the header, then the payload:
//         FromProto(header), then DecodeDenseDelta or ParseCoefficientTable by encoding.
// Whatever converts must convert back and forth again.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "algorithms/ferret/ferret_spec.h"
#include "codec/ferret/coefficient_table.h"
#include "fl/algorithm.h"
#include "fl/v1/fl.pb.h"
#include "proto/wire.h"
#include "tests/fuzz/fuzz_common.h"

namespace {

using fl::internal::FromProto;
using fl::internal::ToProto;

void CheckTask(const fl::v1::Task& message) {
  fl::Result<fl::Task> task = FromProto(message);
  if (!task.ok()) return;
  fl::v1::Task again;
  ToProto(*task, &again);
  fl::Result<fl::Task> back = FromProto(again);
  FUZZ_CHECK(back.ok(), back.status().ToString());
  std::string diff;
  for (const auto& [key, value] : task->config.extra) {
    auto it = back->config.extra.find(key);
    // Same type and value; NaN (which != itself) counts as equal to NaN.
    const bool same = it != back->config.extra.end() &&
                      (it->second == value || (it->second.type() == value.type() &&
                                               it->second.ToString() == value.ToString()));
    if (!same) {
      diff += " " + key + "=" + value.ToString() + "->" +
              (it == back->config.extra.end() ? "(gone)" : it->second.ToString());
    }
  }
  FUZZ_CHECK(back->round == task->round && back->algorithm == task->algorithm &&
                 back->config.extra.size() == task->config.extra.size() && diff.empty(),
             "a task changed on a round trip:" + diff);
  fl::internal::FerretRoundSpec spec;
  fl::internal::FerretProjection projection;
  const fl::Status read = fl::internal::ReadFerretExtra(task->config.extra, &spec, &projection);
  if (read.ok()) {
    FUZZ_CHECK(fl::internal::ValidateFerretRoundSpec(spec).ok(),
               "ReadFerretExtra accepted an invalid spec");
  }
}

void CheckUpload(std::string_view header_bytes, std::string_view payload_bytes) {
  fl::v1::UpdateChunk chunk;
  if (!chunk.ParseFromArray(header_bytes.data(), static_cast<int>(header_bytes.size()))) return;
  if (!chunk.has_header()) return;
  fl::Result<fl::UpdateMeta> meta = FromProto(chunk.header());
  if (!meta.ok()) return;
  fl::v1::UpdateHeader again;
  ToProto(*meta, chunk.header().total_bytes(), &again);
  FUZZ_CHECK(FromProto(again).ok(), "an accepted header does not convert back");

  fl::Payload payload;
  payload.meta = *meta;
  payload.bytes.assign(payload_bytes);
  static const fl::Layout layout = fl::fuzz::FuzzLayout();
  if (payload.meta.encoding == fl::Encoding::kFerret) {
    fl::Result<fl::internal::ferret::CoefficientTable> table =
        fl::internal::ferret::ParseCoefficientTable(payload.bytes);
    if (table.ok()) {
      (void)fl::internal::ferret::ValidateCoefficientTable(*table, table->plan_hash(),
                                                          table->basis_hash(), 16, 4);
    }
  } else {
    fl::Result<fl::ParamSet> delta = fl::DecodeDenseDelta(payload, layout);
    FUZZ_CHECK(!delta.ok() || delta->AllFinite(), "an accepted delta is not finite");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const char* rest = reinterpret_cast<const char*>(data) + 1;
  const int rest_size = static_cast<int>(size - 1);
  switch (data[0] % 4) {
    case 0: {
      fl::v1::Task task;
      if (task.ParseFromArray(rest, rest_size)) CheckTask(task);
      break;
    }
    case 1: {
      fl::v1::PullTaskResponse response;
      if (response.ParseFromArray(rest, rest_size) && response.has_task()) {
        CheckTask(response.task());
      }
      break;
    }
    case 2: {
      fl::v1::GetStatusResponse response;
      if (response.ParseFromArray(rest, rest_size)) {
        const fl::ServerStatusInfo info = FromProto(response);
        fl::v1::GetStatusResponse again;
        ToProto(info, &again);
        (void)FromProto(again);
      }
      break;
    }
    default: {
      if (size < 3) return 0;
      const size_t n = data[1] | (size_t{data[2]} << 8);
      if (n > size - 3) return 0;
      const std::string_view all(reinterpret_cast<const char*>(data) + 3, size - 3);
      CheckUpload(all.substr(0, n), all.substr(n));
      break;
    }
  }
  return 0;
}
