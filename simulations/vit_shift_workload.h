#ifndef FL_SIMULATIONS_VIT_SHIFT_WORKLOAD_H_
#define FL_SIMULATIONS_VIT_SHIFT_WORKLOAD_H_

// W3 `fmnist-vit-shift` (WORKLOADS.md): a tiny ViT pretrained centrally on clean
// Fashion-MNIST train images 0-29,999 (`fl-sim pretrain`), then fine-tuned federatedly
// on train images 30,000-59,999 under domain shifts (data/domain_shift.h): each client
// holds data.domains_per_client of data.domains, with a label skew by data.partition.
// The metric is accuracy on the test images, image i under domain i % |domains|.
//
// What is federated follows model.tuning (torch/vit_trainer.h): full | head | ssf |
// fedins, on the frozen backbone read from model.backbone. algorithm.name fedins needs
// model.tuning fedins; the baselines are FedAvg with head, ssf or full.
//
// Config keys beyond the shared ones (defaults in WorkloadConfigDefaults()):
//   data.domains             comma list of domains ("clean,inverted,rot90,noise,blur")
//   data.domains_per_client  distinct domains per client (3)
//   data.train_examples      > 0: only the first N federated images (30,000 + [0, N))
//   data.test_examples       > 0: only the first N test images
//   model.backbone           the pretrained ViT (.flps) `fl-sim pretrain` writes
//   model.tuning             full | head | ssf | fedins
//   fedins.entries, fedins.top_k, fedins.lambda, fedins.batch_shared_ssf: the pool's
//                            shape, read when the fedins algorithm declares them
//   pretrain.epochs, pretrain.momentum, pretrain.weight_decay: see vit_pretrain.h
//
// After the final evaluation the workload writes into the run's directory:
//   per_domain.csv    domain, examples, accuracy
//   selection.csv     tuning fedins: per domain, how often each pool entry was among an
//                     image's top_k
//   predictions.csv   every shifted test image's label and pool entries
//                     (data/prediction_csv.h), what `fl-client predict --shifted-test`
//                     gives for the same images and final_model.flps
//   final_model.flps  the final global model (the trainable part), for fl-client and
//                     fl::AdaptivePredictor

#include <cstdint>
#include <memory>
#include <string>

#include "core/config.h"
#include "data/domain_shift.h"
#include "data/idx_reader.h"
#include "data/shifted_split_config.h"
#include "fl/env.h"
#include "fl/param_set.h"
#include "fl/status.h"
#include "simulations/workload.h"
#include "torch/vit_trainer.h"

namespace fl::internal {

// data.dataset of W3.
inline constexpr char kFashionMnistShift[] = "fashion-mnist-shift";
inline constexpr char kPerDomainCsv[] = "per_domain.csv";
inline constexpr char kSelectionCsv[] = "selection.csv";
inline constexpr char kPredictionsCsv[] = "predictions.csv";
inline constexpr char kFinalModelFile[] = "final_model.flps";

// Loads W3 as the header comment describes. InvalidArgument for bad config values (a
// model that is not a ViT, a tuning the algorithm cannot train, bad domains); NotFound
// for a missing backbone, naming the pretrain command; NotFound naming the Debian
// package for missing data.
Result<std::unique_ptr<Workload>> LoadVitShiftWorkload(const Config& config,
                                                       const std::string& device, Env* env);

// Shared with pretraining (vit_pretrain.h). kFederatedBegin and kTestShiftSeed come
// from data/shifted_split_config.h, which fl-client shares.

// The trainer options of model.name (a ViT, ParseVitModelName), model.tuning, the
// fedins.* keys where declared, run.seed, on `device`. InvalidArgument for a model that
// is not a ViT, an unknown tuning, or algorithm fedins without tuning fedins.
Result<VitTrainerOptions> VitTrainerOptionsFromConfig(const Config& config,
                                                      const std::string& device);
// The pretrained ViT of model.backbone. InvalidArgument if unset or of another shape than
// `vit`; NotFound naming the pretrain command if the file is missing; DataLoss if corrupt.
Result<ParamSet> ReadVitBackbone(const Config& config, const VitOptions& vit);
// The Fashion-MNIST test images of data.dir, cut to data.test_examples (> 0).
Result<ImageDataset> LoadCleanTestSet(const Config& config, Env* env);
// LoadCleanTestSet under data.domains (BuildShiftedTestSet, kTestShiftSeed).
Result<ShiftedTestSet> LoadShiftedTestSet(const Config& config, Env* env);

}  // namespace fl::internal

#endif  // FL_SIMULATIONS_VIT_SHIFT_WORKLOAD_H_
