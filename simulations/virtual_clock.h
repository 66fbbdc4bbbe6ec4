#ifndef FL_SIMULATIONS_VIRTUAL_CLOCK_H_
#define FL_SIMULATIONS_VIRTUAL_CLOCK_H_

// fl-sim's virtual clock: how long a federated task takes on a simulated device, so
// that simulated time depends only on the seed, the configuration and the bytes and
// examples a task moves, never on the host's speed, its load or the worker count.
//
// Every client gets a device profile drawn once from run.seed:
//   - compute speed: log-normal with median 1 and log-space sigma clock.compute_sigma;
//     exactly round(clock.straggler_fraction * clients) clients (a seeded choice) are
//     stragglers whose speed is further divided by clock.straggler_slowdown;
//   - up/down bandwidth: log-normal around clock.uplink_mbps / clock.downlink_mbps
//     (those are the medians) with log-space sigma clock.bandwidth_sigma;
//   - latency clock.latency_ms, paid once per transfer (download and upload);
//   - availability: alternating online/offline periods with exponential lengths of
//     means clock.mean_online_s / clock.mean_offline_s (both 0: always online). The
//     state at t = 0 is drawn from the stationary share online/(online + offline), and
//     period k's length is a hash of (seed, client, k), so IsOnline(i, t) and
//     NextOnline(i, t) are pure functions of (seed, i, t).
//
// A task (download, train, upload) is work measured in online seconds:
//   download = latency + bytes_down / downlink, train = examples * seconds_per_example /
//   speed (examples count every epoch), upload = latency + bytes_up / uplink.
// Simplification for a client that goes offline mid-task: the task pauses while the
// client is offline and resumes where it stopped when it is back (a phone that is
// unplugged stops training and picks up later; nothing is lost or restarted). A task
// handed to an offline client starts when the client next comes online.
//
// Thread-safety: a VirtualClock is immutable after construction; const methods may be
// called from any thread.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/config.h"
#include "fl/status.h"

namespace fl::internal {

// The "clock" section of fl-sim's config, with defaults:
//   enabled: true          measure simulated time (false: sim_time_s stays empty)
//   seconds_per_example: 0.002   simulated seconds per training example at speed 1
//   compute_sigma: 0.5     log-space sigma of the compute speed (0: all speed 1)
//   straggler_fraction: 0.1, straggler_slowdown: 10
//   uplink_mbps: 5, downlink_mbps: 20, bandwidth_sigma: 0.5   (megabits per second)
//   latency_ms: 50
//   mean_online_s: 0, mean_offline_s: 0   (0 and 0: always online)
//   server_seconds: 0      simulated server cost added to every sync round
// The clock only measures: it never changes which clients train or what they send.
nlohmann::json VirtualClockConfigDefaults();

struct VirtualClockOptions {
  bool enabled = true;
  uint64_t seed = 0;  // run.seed
  double seconds_per_example = 0.002;
  double compute_sigma = 0.5;
  double straggler_fraction = 0.1;  // in [0, 1]
  double straggler_slowdown = 10;   // >= 1
  double uplink_mbps = 5;           // > 0
  double downlink_mbps = 20;        // > 0
  double bandwidth_sigma = 0.5;
  double latency_ms = 50;
  double mean_online_s = 0;  // both 0, or both > 0
  double mean_offline_s = 0;
  double server_seconds = 0;  // per sync round

  bool always_online() const { return mean_online_s == 0 && mean_offline_s == 0; }
};

// Reads the clock section and run.seed. InvalidArgument naming the key and the rule
// for a negative, non-finite or out-of-range value, or for exactly one of
// mean_online_s and mean_offline_s being 0.
Result<VirtualClockOptions> VirtualClockOptionsFromConfig(const Config& config);

struct DeviceProfile {
  double speed = 1;  // compute speed multiplier, straggler slowdown included
  bool straggler = false;
  double uplink_bps = 0;    // bytes per second
  double downlink_bps = 0;  // bytes per second
  double latency_s = 0;     // per transfer
};

// What a task does, in sizes: all the clock needs to time it.
struct TaskWork {
  uint64_t bytes_down = 0;  // model download
  uint64_t examples = 0;    // training examples, every epoch counted
  uint64_t bytes_up = 0;    // update upload
};

// The simulated timeline of one task.
// start <= began <= downloaded <= trained <= uploading <= finish.
struct TaskTimeline {
  double start = 0;       // when the task was handed out
  double began = 0;       // first online instant at or after start
  double downloaded = 0;  // model received
  double trained = 0;     // local training done
  double uploading = 0;   // upload began: `trained`, or later if the uplink was busy
  double finish = 0;      // update received by the server
};

class VirtualClock {
 public:
  // Picks the stragglers among `num_clients` clients. REQUIRES: options validated (see
  // VirtualClockOptionsFromConfig).
  VirtualClock(const VirtualClockOptions& options, size_t num_clients);

  const VirtualClockOptions& options() const { return options_; }
  size_t num_clients() const { return stragglers_.size(); }
  // Drawn from (seed, client) when asked for, so the clock holds one bit per client (a
  // million clients start in milliseconds). REQUIRES: client < num_clients().
  DeviceProfile profile(size_t client) const;

  // Availability. Pure functions of (seed, client, t); t >= 0 in seconds.
  bool IsOnline(size_t client, double t) const;
  // t if the client is online at t, else the start of its next online period.
  double NextOnline(size_t client, double t) const;
  // The instant at which the client has been online for `work` seconds counted from t
  // (offline stretches do not count). Equals t + work for an always-online client.
  double AdvanceOnline(size_t client, double t, double work) const;

  // Simulated seconds of each phase while online.
  double DownloadSeconds(size_t client, uint64_t bytes) const;
  double TrainSeconds(size_t client, uint64_t examples) const;
  double UploadSeconds(size_t client, uint64_t bytes) const;

  // The task handed to `client` at simulated time `start`: waits until the client is
  // online, then downloads, trains and uploads, pausing whenever it goes offline.
  TaskTimeline RunTask(size_t client, double start, const TaskWork& work) const;
  // The same, for a client whose uplink is busy until `uplink_free` with its previous
  // task's upload (client overlap: one uplink per client, separate from the downlink,
  // so the download and training run meanwhile): the upload starts at
  // max(trained, uplink_free). An overlapping client may take its next task at
  // `uploading`, the instant its previous upload has finished and this one begins.
  TaskTimeline RunTask(size_t client, double start, const TaskWork& work,
                       double uplink_free) const;

 private:
  VirtualClockOptions options_;
  std::vector<bool> stragglers_;  // by client
};

}  // namespace fl::internal

#endif  // FL_SIMULATIONS_VIRTUAL_CLOCK_H_
