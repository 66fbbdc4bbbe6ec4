#ifndef FL_CLIENT_PREDICT_COMMAND_H_
#define FL_CLIENT_PREDICT_COMMAND_H_

// `fl-client predict`: predictions of a federated tiny ViT for the images of an IDX file,
// through fl::AdaptivePredictor (the client library's LibTorch-free engine), as
// predictions.csv (data/prediction_csv.h):
//
//   fl-client predict --backbone vit-backbone.flps --model final_model.flps
//                     --images t10k-images-idx3-ubyte.gz [--shifted-test] --out p.csv
//
// --model is the federated tuned part (a FedIns pool, an SSF set, a head; see
// fl/adaptive_predictor.h); without it the backbone predicts with its own head.
// --shifted-test first applies W3's test shifts to the images (image i under
// data.domains[i % |domains|], noise seeded as fl-sim's test set), so the rows equal
// fl-sim's predictions.csv for the same model.

namespace fl::internal {

// argv[0] is the program, argv[1] "predict". Returns the exit status: 0 on success, 2 for
// a bad command line, 1 for any other failure (a missing file, a model that does not fit
// the backbone, ...).
int RunPredictCommand(int argc, char** argv);

}  // namespace fl::internal

#endif  // FL_CLIENT_PREDICT_COMMAND_H_
