#ifndef FL_SIMULATIONS_MPI_BACKEND_H_
#define FL_SIMULATIONS_MPI_BACKEND_H_

// fl-sim across processes: `mpirun -np P fl-sim run ...` spreads every synchronous
// round's selected clients over P ranks. Rank 0 is the whole simulation (Coordinator,
// Strategy, evaluation, outputs); each round it broadcasts the round's tasks and global
// model, trains its own share of the clients through the Coordinator as a single
// process would, and merges the other ranks' partial aggregates into the open round
// (Coordinator::MergeRemotePartial), which closes it. The other ranks only train: each
// folds its clients' updates into its own RoundAggregator, merges the partials of its
// children and sends the result to its parent, along a binomial tree over the ranks with
// children received in a fixed order (not MPI_Reduce, whose order is unspecified).
//
// Rank 0 assigns a round's clients to ranks largest first, each to the rank with the
// fewest examples so far (so the round does not wait on one overloaded rank). A client
// trains with the seed the Coordinator gave its task and sim.threads_per_worker threads
// wherever it runs, so every client's update is the one a single process computes.
// Sums are fp64 (agg/weighted_accumulator.h): the global model is bitwise the
// single-process one except when a mean lies within fp64 rounding of a float32 rounding
// boundary. Rank 0 counts the other ranks' clients as the Coordinator's own (ledger rows,
// bytes up and down, simulated time); their TrainStats::metrics are not forwarded (only
// SFPrompt reports any, and it is refused).
//
// Needs an algorithm whose RoundAggregator implements SerializePartial (FedAvg, FedProx,
// FedAdam), synchronous rounds, no Byzantine clients, no norm bounding and no split
// body (CheckSupport). MPI headers stay in mpi_backend.cc; without MPI the build
// compiles mpi_backend_none.cc instead.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "core/config.h"
#include "fl/model_snapshot.h"
#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/strategy.h"
#include "fl/task.h"
#include "server/coordinator.h"
#include "simulations/virtual_clock.h"
#include "simulations/workload.h"

namespace fl::internal {

// One process's part in a run over MPI ranks. Called from the process's main thread only
// (MPI is initialized with MPI_THREAD_FUNNELED).
class MpiBackend {
 public:
  // A round's tasks, by client index.
  using Work = std::vector<std::pair<size_t, Task>>;

  // Initializes MPI (unless the program did) when this process was started by mpirun
  // with more than one rank and returns its backend; null when fl-sim runs alone. Under
  // mpirun, fl::RunSimulation (fl/simulation.h) returns the results on rank 0 only. FailedPrecondition if mpirun
  // started several ranks of an fl-sim built without MPI (each would run the whole
  // simulation into the same directory).
  static Result<std::unique_ptr<MpiBackend>> StartIfLaunched();

  // Finalizes MPI (if it initialized it) after EndRun (rank 0) or ServeRounds (other
  // ranks) succeeded; a rank that failed exits without it, which makes mpirun end the
  // others.
  virtual ~MpiBackend() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // InvalidArgument naming what a run across ranks cannot do under `config`: an
  // algorithm (`strategy`, whose aggregator is tried on `initial`) without partial
  // aggregates, coordinator.mode=async, byzantine.fraction > 0, norm bounding, a
  // workload with a split body (`split_body`). Every rank checks.
  virtual Status CheckSupport(const Config& config, Strategy* strategy, const ParamSet& initial,
                              bool split_body) const = 0;
  // Whether work item k of the current round trains on this rank.
  virtual bool Trains(size_t k) const = 0;

  // ---- rank 0 ----
  // Assigns round `work` to the ranks by the sizes of its clients in `workload` and sends
  // it, with the model it is based on, to every rank.
  virtual Status StartRound(const Work& work, const Workload& workload,
                            const ModelSnapshot& model) = 0;
  // Receives the partial aggregates of rank 0's children in order and merges each into
  // the coordinator's open round; fills task_work for the work items other ranks trained
  // and adds their examples to *samples.
  virtual Status FinishRound(Coordinator* coordinator, std::vector<TaskWork>* task_work,
                             std::atomic<uint64_t>* samples) = 0;
  // Tells every rank the run is over.
  virtual Status EndRun() = 0;

  // ---- every other rank ----
  // Loads the workload of `config` and trains this rank's share of every round until
  // rank 0 ends the run.
  virtual Status ServeRounds(const Config& config) = 0;
};

}  // namespace fl::internal

#endif  // FL_SIMULATIONS_MPI_BACKEND_H_
