#ifndef FL_ALGORITHMS_FEDAVG_DENSE_DELTA_H_
#define FL_ALGORITHMS_FEDAVG_DENSE_DELTA_H_

// The checks every dense upload passes before any of it is folded, shared by
// DenseRoundAggregator and fl::DecodeDenseDelta (fl/algorithm.h), so that every
// algorithm built on dense deltas refuses the same inputs with the same messages.
// (DenseRoundAggregator then folds straight from the bytes with AccumulateDense, which
// checks the encoding, length and values as DecodeDenseDelta does, without the
// model-sized temporary that DecodeDenseDelta returns.)

#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/update.h"

namespace fl::internal {

// InvalidArgument if `weight` is not finite and > 0.
Status CheckUpdateWeight(double weight);

// InvalidArgument if meta.layout_hash is not `layout`'s, or the train loss is not
// finite, or the weight fails CheckUpdateWeight.
Status CheckDenseUpdateMeta(const UpdateMeta& meta, const Layout& layout);

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_FEDAVG_DENSE_DELTA_H_
