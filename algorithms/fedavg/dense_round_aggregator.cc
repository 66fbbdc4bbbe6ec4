#include "algorithms/fedavg/dense_round_aggregator.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "algorithms/fedavg/dense_delta.h"
#include "codec/byte_io.h"

namespace fl::internal {
namespace {

// A partial aggregate: "FLPA", format version (u32), round, layout hash, count (u64),
// total weight, weighted loss sum (f64), number of sums (u64), the sums (f64), all
// little-endian.
constexpr char kPartialMagic[] = "FLPA";
constexpr uint32_t kPartialFormat = 1;

Status BadPartial(const std::string& why) {
  return Status::InvalidArgument("DenseRoundAggregator::MergeSerializedPartial: " + why);
}

bool FiniteNonNegative(double v) { return std::isfinite(v) && v >= 0; }

}  // namespace

DenseRoundAggregator::DenseRoundAggregator(std::shared_ptr<const Layout> layout, uint64_t round)
    : fold_("DenseRoundAggregator", round, WeightedAccumulator(std::move(layout))) {}

Status DenseRoundAggregator::Accumulate(const Payload& payload) {
  return AccumulateWithMeta(payload.meta, payload);
}

Status DenseRoundAggregator::AccumulateWithMeta(const UpdateMeta& meta, const Payload& payload) {
  if (meta.encoding != payload.meta.encoding) {
    return Status::InvalidArgument("AccumulateWithMeta: the metadata names another encoding");
  }
  FL_RETURN_IF_ERROR(fold_.CheckUpdate(meta));
  FL_RETURN_IF_ERROR(CheckDenseUpdateMeta(meta, fold_.acc().layout()));
  FL_ASSIGN_OR_RETURN(double weight, FoldWeight(meta));
  FL_RETURN_IF_ERROR(CheckUpdateWeight(weight));
  FL_RETURN_IF_ERROR(Fold(payload, weight, &fold_.acc()));
  fold_.AddLoss(weight, meta.train_loss);
  return Status::Ok();
}

Status DenseRoundAggregator::Fold(const Payload& payload, double weight, WeightedAccumulator* acc) {
  return acc->Accumulate(payload.bytes, payload.meta.encoding, weight);
}

Status DenseRoundAggregator::MergeWith(RoundAggregator&& other) {
  FL_RETURN_IF_ERROR(fold_.CheckUsable("MergeWith"));
  auto* o = dynamic_cast<DenseRoundAggregator*>(&other);
  if (o == nullptr) return Status::InvalidArgument("MergeWith: not a DenseRoundAggregator");
  return fold_.MergeFrom(&o->fold_);
}

Result<AggregateReport> DenseRoundAggregator::Report() && { return fold_.Report(); }

Result<std::string> DenseRoundAggregator::SerializePartial() const {
  FL_RETURN_IF_ERROR(fold_.CheckUsable("SerializePartial"));
  const WeightedAccumulator& acc = fold_.acc();
  std::string out(kPartialMagic, 4);
  PutU32(&out, kPartialFormat);
  PutU64(&out, fold_.round());
  PutU64(&out, acc.layout().hash());
  PutU64(&out, acc.count());
  PutF64(&out, acc.total_weight());
  PutF64(&out, fold_.loss_sum());
  PutU64(&out, acc.sums().size());
  const size_t header = out.size();
  out.resize(header + acc.sums().size() * sizeof(double));
  // The project's formats are little-endian, as is every host it builds for.
  static_assert(std::endian::native == std::endian::little);
  std::memcpy(out.data() + header, acc.sums().data(), acc.sums().size() * sizeof(double));
  return out;
}

Status DenseRoundAggregator::MergeSerializedPartial(std::string_view partial) {
  FL_RETURN_IF_ERROR(fold_.CheckUsable("MergeSerializedPartial"));
  WeightedAccumulator& acc = fold_.acc();
  ByteReader in(partial);
  std::string_view magic;
  uint32_t format = 0;
  uint64_t round = 0, layout_hash = 0, count = 0, n = 0;
  double weight = 0, loss_sum = 0;
  if (!in.Bytes(4, &magic) || !in.U32(&format) || !in.U64(&round) || !in.U64(&layout_hash) ||
      !in.U64(&count) || !in.F64(&weight) || !in.F64(&loss_sum) || !in.U64(&n)) {
    return BadPartial("truncated header (" + std::to_string(partial.size()) + " bytes)");
  }
  if (magic != std::string_view(kPartialMagic, 4) || format != kPartialFormat) {
    return BadPartial("not a dense partial aggregate of format " + std::to_string(kPartialFormat));
  }
  if (round != fold_.round()) {
    return BadPartial("partial of round " + std::to_string(round) + " offered to round " +
                      std::to_string(fold_.round()));
  }
  if (layout_hash != acc.layout().hash() || n != acc.sums().size()) {
    return BadPartial("layout differs (" + std::to_string(n) + " sums, expected " +
                      std::to_string(acc.sums().size()) + ")");
  }
  if (in.remaining() != n * sizeof(double)) {
    return BadPartial(std::to_string(in.remaining()) + " bytes of sums, expected " +
                      std::to_string(n * sizeof(double)));
  }
  if (!FiniteNonNegative(weight) || (count > 0) != (weight > 0) || !std::isfinite(loss_sum)) {
    return BadPartial("count " + std::to_string(count) + ", total weight " +
                      std::to_string(weight) + ", loss sum " + std::to_string(loss_sum) +
                      " are not a fold's");
  }
  std::vector<double> sums(n);
  std::memcpy(sums.data(), partial.data() + (partial.size() - in.remaining()), n * sizeof(double));
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(sums[i])) return BadPartial("non-finite sum at index " + std::to_string(i));
    if (count == 0 && sums[i] != 0) return BadPartial("nonzero sum in an empty partial");
  }
  FL_RETURN_IF_ERROR(acc.MergeSums(sums, count, weight));
  fold_.AddLossSum(loss_sum);
  return Status::Ok();
}

}  // namespace fl::internal
