#include "data/prediction_csv.h"

namespace fl::internal {

void AppendPredictionRow(int64_t index, int32_t label, std::span<const int32_t> entries,
                         std::string* csv) {
  *csv += std::to_string(index);
  *csv += ',';
  *csv += std::to_string(label);
  *csv += ',';
  for (size_t i = 0; i < entries.size(); ++i) {
    if (i > 0) *csv += ';';
    *csv += std::to_string(entries[i]);
  }
  *csv += '\n';
}

}  // namespace fl::internal
