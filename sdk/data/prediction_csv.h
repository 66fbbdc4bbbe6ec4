#ifndef FL_SDK_DATA_PREDICTION_CSV_H_
#define FL_SDK_DATA_PREDICTION_CSV_H_

// The predictions table fl-sim writes after a W3 run (predictions.csv) and
// `fl-client predict` writes: one row per image,
//
//   index,label,entries
//   0,9,3;7;1
//
// where entries are the pool entries the image combined, most similar first (empty
// without a pool). One writer, so the files of both programs compare byte for byte.

#include <cstdint>
#include <span>
#include <string>

namespace fl::internal {

inline constexpr char kPredictionCsvHeader[] = "index,label,entries\n";

// Appends the row of image `index` to *csv.
void AppendPredictionRow(int64_t index, int32_t label, std::span<const int32_t> entries,
                         std::string* csv);

}  // namespace fl::internal

#endif  // FL_SDK_DATA_PREDICTION_CSV_H_
