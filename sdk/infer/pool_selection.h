#ifndef FL_SDK_INFER_POOL_SELECTION_H_
#define FL_SDK_INFER_POOL_SELECTION_H_

// FedIns's choice of pool entries per instance and their combination (VitTrainer's
// RunPool in sdk/torch/vit_trainer.cc; docs: shared/specs/fedins.md).

#include <cstdint>
#include <span>
#include <vector>

#include "infer/vit_tuned.h"

namespace fl::internal {

// For each row of queries [n, width] (the backbone's CLS features without SSF), the
// top_k entries whose keys are most cosine-similar, most similar first, as torch::topk
// orders them: n * top_k indices. REQUIRES: 1 <= top_k <= pool.size().
std::vector<int32_t> SelectEntries(const RowMatrix& queries,
                                   const std::vector<PoolEntryWeights>& pool, int64_t top_k);

// The uniform mean of the `chosen` entries' SSF sets and heads (an index may repeat).
// REQUIRES: chosen is not empty.
void CombineEntries(const std::vector<PoolEntryWeights>& pool, std::span<const int32_t> chosen,
                    SsfScales* ssf, DenseLayer* head);

}  // namespace fl::internal

#endif  // FL_SDK_INFER_POOL_SELECTION_H_
