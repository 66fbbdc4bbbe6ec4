#ifndef FL_SIMULATIONS_SIMULATOR_H_
#define FL_SIMULATIONS_SIMULATOR_H_

// fl-sim's engine: many virtual clients against one in-process Coordinator, exactly as
// fl-server serves real ones. Each virtual client is a ClientRuntime over an
// InProcessLink (name "client-<i>", an index into the workload's clients, ~no memory);
// a pool of workers, each owning ONE trainer (a WorkloadWorker), executes the clients
// that a round selected. After each round the new global model is evaluated on the
// workload's held-out data (workload.h: test accuracy for fashion-mnist, bits per byte
// for fortunes).
//
// LibTorch stays out of this header (fl-sim's main includes it).

#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/client_runtime.h"
#include "core/config.h"
#include "data/partition.h"
#include "fl/status.h"
#include "simulations/workload.h"
#include "store/store.h"

namespace fl::internal {

// Every key fl-sim accepts, with its default: the algorithm's "algorithm"/"train",
// the coordinator's "coordinator"/"run", "model", and
//   data: dataset, dir, partition, num_clients, train_examples (0 = all), test_examples
//         (0 = all), and the fortunes keys of WorkloadConfigDefaults()
//   lm, pretrain: see WorkloadConfigDefaults()
//   byzantine: fraction, attack, scale, sigma, weight_factor, constant (byzantine.h)
//   sim:  preset, workers, threads_per_worker, eval_every, out_dir ("" = runs/<preset>-<seed>),
//         device (auto|cpu|cuda), progress (auto|tty|plain|none)
//   clock: the virtual clock that gives every round a simulated duration (virtual_clock.h):
//         enabled (true), seconds_per_example (0.002), compute_sigma (0.5),
//         straggler_fraction (0.1), straggler_slowdown (10), uplink_mbps (5),
//         downlink_mbps (20), bandwidth_sigma (0.5), latency_ms (50), mean_online_s (0),
//         mean_offline_s (0; both 0 = always online), server_seconds (0)
//   client: overlap (false): CO2's client overlap in coordinator.mode=async (see
//         RunSimulation). A no-op in sync mode, as in fl-client: a sync round waits
//         for every upload before the next task exists, so there is nothing to overlap.
nlohmann::json SimulatorConfigDefaults();

// Known preset names; "fmnist-cnn" is the default, "fortunes-gpt" is W2,
// "fmnist-vit-shift" W3.
std::vector<std::string> PresetNames();
// The values a preset sets on top of SimulatorConfigDefaults() (a partial JSON document
// of the same shape). InvalidArgument for an unknown name, listing the known ones.
Result<nlohmann::json> PresetValues(const std::string& preset);

// Splits the training examples among data.num_clients clients with data.partition,
// seeded by run.seed. Shared by `fl-sim run` and `fl-sim export-partition`.
Result<ClientShards> PartitionFromConfig(const Config& config, std::span<const uint8_t> labels);

// The output directory of a run: sim.out_dir, or runs/<preset>-<seed> when empty.
std::string OutputDirectory(const Config& config);

// One evaluated round, as written to CSV/JSONL and the run record.
struct SimRoundRecord {
  RoundMetrics metrics;          // round, accuracy, losses, bytes, clients, wall_seconds
  double metric = 0;             // the workload's metric (accuracy, bits per byte)
  uint64_t train_samples = 0;    // examples trained on this round (with epoch repeats)
  double train_seconds = 0;      // wall time of pull + train + push + aggregation
  double samples_per_sec = 0;    // cumulative train samples / cumulative train seconds
  bool evaluated = false;        // false on rounds skipped by sim.eval_every
  uint64_t bytes_up_total = 0;   // uploaded bytes of this round and all before it
  // Strategy::LastRoundStats() of the round (Ferret: terms applied, clipped, skipped),
  // plus "byzantine_updates" (updates sent by attacking clients) when byzantine.fraction
  // > 0, plus "client.<name>": the sum of TrainStats::metrics over the tasks trained
  // since the previous record (SFPrompt: seconds, FLOPs and bytes per phase); each name
  // becomes a column of metrics.csv.
  std::map<std::string, double> strategy_stats;
  // Simulated seconds from the start of the run to this round's close (the virtual
  // clock's sync-round time, see RunSimulation); NaN when clock.enabled is false.
  double sim_time_s = std::numeric_limits<double>::quiet_NaN();
};

struct SimulationResult {
  std::vector<SimRoundRecord> rounds;
  WorkloadMetric metric;         // what SimRoundRecord::metric is
  double final_metric = 0;       // of the last evaluated round
  double final_accuracy = 0;     // of the last evaluated round, in [0, 1]
  double final_test_loss = 0;
  double wall_seconds = 0;       // whole run, evaluation included
  uint64_t train_samples = 0;
  double train_samples_per_sec = 0;
  uint64_t byzantine_updates = 0;  // sent by attacking clients (byzantine.h), all rounds
  double sim_time_s = 0;         // simulated seconds of the whole run (0 without the clock)
  // Host seconds of every executed client task by phase, summed over the tasks (so over
  // the workers): with the rounds' train_seconds, where the workers' time went.
  TaskTimes task_times;
  std::string out_dir;
  // Under mpirun: this process is a rank other than 0, which trained its share of every
  // round; rank 0 holds the results (everything above is empty here).
  bool mpi_worker = false;
};

// Progress reports while the simulation runs. Calls are serialized but may come from
// worker threads.
struct SimProgress {
  uint64_t round = 0;
  uint64_t total_rounds = 0;
  uint64_t clients_done = 0;     // in this round
  uint64_t clients_selected = 0;
  double elapsed_seconds = 0;
  double eta_seconds = -1;       // < 0 while unknown
  const WorkloadMetric* metric = nullptr;  // set once the workload is loaded
  double last_metric = -1;       // < 0 before the first evaluation
  bool round_finished = false;   // true once per round, after evaluation
  const SimRoundRecord* record = nullptr;  // the finished round's record (round_finished)
};

// Runs a simulation described by `config` (SimulatorConfigDefaults() schema). Writes
// metrics.csv, metrics.jsonl, accuracy_bytes.svg, config.yaml and the run record
// run.db (SQLite, shared with the coordinator, whose models/ and spool/ folders sit
// beside it) to OutputDirectory(config). Those files and folders from an earlier run
// there are deleted first; nothing else in the directory is touched. The second column
// of metrics.csv (and its JSONL key) is the workload's metric name, "accuracy" or
// "bits_per_byte"; accuracy_bytes.svg plots that metric (the file keeps its name).
// Simulated time (column sim_time_s): round r opens when round r - 1 closed (the run
// opens at 0); each selected client runs its task (download the bytes it fetched,
// train the examples it trained, upload the bytes it pushed) on the virtual clock from
// that instant, and the round closes when the last of them finishes, plus
// clock.server_seconds. It is computed from sizes and the seed only, so it is the same
// for any sim.workers, sim.threads_per_worker or host load.
// coordinator.mode=async (needs clock.enabled): idle online clients are handed tasks
// while the coordinator grants them (a rotating index order); each task's completion is
// timed at hand-out from its estimated sizes (the base model's download, client size x
// epochs or steps x batch, a dense upload in the task's encoding) and queued by
// (simulated time, client) (event_queue.h); training runs on the workers in batches
// against the base model held for the task, and updates are pushed to the coordinator
// in simulated-time order, so versions and staleness do not depend on the workers either.
// One row per flush; an update refused as too stale frees its client for a new task.
// A client is eligible for its next task when its upload finishes; with client.overlap
// (CO2, as ClientRuntimeOptions::overlap) when its upload begins instead: the next
// task's base is the version current at that instant, its download and training run
// while the update uploads (separate up- and downlink), and its own upload starts at
// max(its training's end, the previous upload's end) (one uplink per client), so a
// client holds at most two tasks. Each update reaches the coordinator when its upload
// ends. Offline periods pause every phase (virtual_clock.h).
// `progress` (may be empty) is called whenever a client finishes and after each round.
// Errors: InvalidArgument for bad config values, NotFound/DataLoss for the dataset or
// model.init_file, FailedPrecondition for --device cuda without CUDA, and the first
// error of any client (a simulation has no flaky clients to forgive).
Result<SimulationResult> RunSimulation(const Config& config,
                                       const std::function<void(const SimProgress&)>& progress);

}  // namespace fl::internal

#endif  // FL_SIMULATIONS_SIMULATOR_H_
