#ifndef FL_CLIENT_CLIENT_RUNTIME_H_
#define FL_CLIENT_CLIENT_RUNTIME_H_

// The client's loop: join, pull a task, fetch the model, run the algorithm's Learner on
// the app's Trainer, push the update. Talks to the server only through a ServerLink, so
// it runs unchanged over gRPC (fl-client, edge apps) and in process (fl-sim).

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "fl/learner.h"
#include "fl/server_link.h"
#include "fl/status.h"
#include "fl/trainer.h"
#include "fl/model_snapshot.h"
#include "fl/task.h"
#include "fl/update.h"

namespace fl::internal {

struct ClientRuntimeOptions {
  std::string enrollment_token;  // presented once at Join
  std::string client_name;       // stable per device; REQUIRED non-empty
  // Long-poll wait per PullTask call.
  std::chrono::milliseconds poll_wait{std::chrono::seconds(10)};
  // Run() gives up after this many consecutive failed steps (transport retries happen
  // inside the link; this bounds persistent failure). 0 = never give up.
  int max_consecutive_failures = 20;
  // Pause after a failed step before the next one.
  std::chrono::milliseconds failure_backoff{std::chrono::milliseconds(500)};
  // CO2's overlap of communication with computation: Run() sends a trained update while
  // the next task's local training runs, instead of before pulling it. The next task is
  // then based on the version current before that update arrived (one step staler);
  // the server's staleness accounting covers it (coordinator.mode=async). With nothing
  // to overlap (the server answers "wait" or "done") the update is sent at once, so in
  // synchronous rounds it costs nothing but one extra poll.
  bool overlap = false;
};

// Host seconds one executed task spent in each phase, on the thread that ran it: where
// a simulator's time goes besides local training (tests/bench/sim_efficiency_bench.cc).
struct TaskTimes {
  double fetch = 0;       // the task's model: download or replay (0 when cached)
  double set_params = 0;  // Trainer::SetParameters: the global model into the trainer
  double train = 0;       // Trainer::Train: local training
  double get_params = 0;  // Trainer::GetParameters: the trained model out of the trainer
  double encode = 0;      // the Learner's own work: delta, checks, encoding, digest
  // PushUpdate: the server's checks, decoding and fold; for the update that completes a
  // round, also its close (aggregation, the server step, the new model).
  double push = 0;

  double total() const { return fetch + set_params + train + get_params + encode + push; }
  TaskTimes& operator+=(const TaskTimes& o);
};

// What one executed training task cost and produced.
struct ExecuteReport {
  uint64_t round = 0;
  uint64_t bytes_down = 0;  // model download (0 if the cached model was current)
  // > 0: the model arrived as this many replay records applied to the cached model
  // (bytes_down is then their size) instead of a full download.
  uint64_t replayed_versions = 0;
  uint64_t bytes_up = 0;    // payload bytes uploaded
  // From the payload's meta (num_examples, dataset_size = weight, mean_loss) and the
  // trainer's own TrainStats::metrics.
  TrainStats train;
  bool duplicate = false;   // server had already acknowledged this update
  TaskTimes times;
};

// Bounds and observation of ClientRuntime::Run.
struct RunLimits {
  uint64_t max_tasks = 0;  // stop after this many executed training tasks; 0 = no limit
  // Called after each executed task with the number executed so far; may be empty.
  std::function<void(const ExecuteReport&, uint64_t tasks_done)> on_task;
};

// Not thread-safe: one thread drives one runtime.
class ClientRuntime {
 public:
  // `link` is not owned and must outlive the runtime.
  ClientRuntime(ServerLink* link, ClientRuntimeOptions options);
  ~ClientRuntime();

  // Enrolls; Unauthenticated on a wrong token.
  Status Join();
  // REQUIRES: Join() succeeded.
  Result<Task> Pull(std::chrono::milliseconds wait);
  // Runs one training task: fetches the task's model version unless the cached one
  // matches, trains with the algorithm's Learner (created once per algorithm name) and
  // pushes the update. The cached model is released after use unless keep_model_cache.
  // With a cached older version, the server may answer with replay records instead of
  // the model; they are applied to the cached model with the algorithm's replayer
  // (bitwise the server's model), and a replay that fails falls back to a full download.
  Result<ExecuteReport> Execute(const Task& task, Trainer& trainer, const CancelToken& cancel);
  // Joins if needed, then pulls and executes tasks until the server answers kDone
  // (OK), `limits.max_tasks` tasks were executed (OK), `cancel` fires (Cancelled), or
  // max_consecutive_failures is reached.
  Status Run(Trainer& trainer, const CancelToken& cancel, const RunLimits& limits = {});

  uint64_t client_id() const { return client_id_; }
  const std::string& client_name() const { return options_.client_name; }
  // Keep the last downloaded model between tasks (edge apps: saves a download when the
  // server's version did not change, and lets a later download come as replay records).
  // fl-sim turns it off to keep memory per client ~0.
  void set_keep_model_cache(bool keep) { keep_model_cache_ = keep; }
  // The cached model (params null if none).
  const ModelSnapshot& cached_model() const { return cached_model_; }

 private:
  // Makes cached_model_ the task's model version: by replay from the cached version when
  // the server offers it, else by a full download.
  Status UpdateCachedModel(const Task& task, ExecuteReport* report);

  // A trained update that was not sent yet.
  struct TrainedUpdate {
    Payload payload;
    ExecuteReport report;
  };
  // Makes the task's model ready (UpdateCachedModel unless cached, layout check, the
  // algorithm's learner).
  Status Prepare(const Task& task, Trainer& trainer, ExecuteReport* report);
  // Trains on the prepared model. Uses no link call, so a Send may run meanwhile.
  Result<TrainedUpdate> Train(const Task& task, Trainer& trainer, const CancelToken& cancel,
                              ExecuteReport report);
  // Pushes the update; the report of the executed task.
  Result<ExecuteReport> Send(TrainedUpdate update);
  // Prepare and Train for Run(); an update left `unsent` by the previous task is sent
  // while this one trains, its outcome passed to `sent`.
  Result<TrainedUpdate> TrainOverlapping(const Task& task, Trainer& trainer,
                                         const CancelToken& cancel,
                                         std::optional<TrainedUpdate>* unsent,
                                         const std::function<Status(Result<ExecuteReport>)>& sent);

  ServerLink* link_;
  ClientRuntimeOptions options_;
  uint64_t client_id_ = 0;
  bool joined_ = false;
  bool keep_model_cache_ = true;
  ModelSnapshot cached_model_;
  std::string learner_algorithm_;
  std::unique_ptr<Learner> learner_;
};

}  // namespace fl::internal

#endif  // FL_CLIENT_CLIENT_RUNTIME_H_
