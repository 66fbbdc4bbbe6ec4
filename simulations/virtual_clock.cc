#include "simulations/virtual_clock.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <span>
#include <string>

#include "data/sampling.h"
#include "rng/splitmix64.h"

namespace fl::internal {
namespace {

// Purposes mixed into run.seed so the clock's draws are independent of every other use
// of the seed (client selection, training, Byzantine choice). Never change: a change
// re-draws every profile and so every simulated time.
constexpr uint64_t kProfileTag = 0x636c6f636b2d7072ull;       // "clock-pr"
constexpr uint64_t kStragglerTag = 0x636c6f636b2d7374ull;     // "clock-st"
constexpr uint64_t kAvailabilityTag = 0x636c6f636b2d6176ull;  // "clock-av"

// Maps 64 random bits to (0, 1), never 0 or 1, so log() of it is finite and negative.
double OpenUnit(uint64_t bits) { return (static_cast<double>(bits >> 11) + 0.5) * 0x1p-53; }

Status Bad(const char* key, const std::string& rule, double got) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%g", got);
  return Status::InvalidArgument("config key clock." + std::string(key) + " " + rule + " (got " +
                                 buf + ")");
}

// Reads clock.<key> and checks lo <= v (or lo < v when `open`), v <= hi, v finite.
Status ReadBounded(const Config& config, const char* key, double lo, bool open, double hi,
                   double* out) {
  const double v = config.GetDouble(std::string("clock.") + key);
  const bool ok = std::isfinite(v) && (open ? v > lo : v >= lo) && v <= hi;
  if (!ok) {
    std::string rule = open ? "must be > " : "must be >= ";
    char bound[32];
    std::snprintf(bound, sizeof(bound), "%g", lo);
    rule += bound;
    if (std::isfinite(hi)) {
      std::snprintf(bound, sizeof(bound), "%g", hi);
      rule += std::string(" and <= ") + bound;
    } else {
      rule += " and finite";
    }
    return Bad(key, rule, v);
  }
  *out = v;
  return Status::Ok();
}

// A client's alternating online/offline periods, walked forward from t = 0. Period k's
// length is output k + 1 of a SplitMix64 stream keyed by (seed, client), so any period
// can be recomputed without state shared between calls.
class PeriodWalker {
 public:
  PeriodWalker(const VirtualClockOptions& o, size_t client)
      : options_(o), key_(SplitMix64(SplitMix64(o.seed ^ kAvailabilityTag) + client)) {
    const double share = o.mean_online_s / (o.mean_online_s + o.mean_offline_s);
    online_ = OpenUnit(SplitMix64(key_)) < share;
    end_ = Length();
  }

  // Moves to the period containing t (periods are [begin, end)).
  void SeekTo(double t) {
    while (t >= end_) Next();
  }
  void Next() {
    ++index_;
    online_ = !online_;
    end_ += Length();
  }
  bool online() const { return online_; }
  double end() const { return end_; }

 private:
  // Exponential with the mean of the current state (inverse transform).
  double Length() const {
    const double mean = online_ ? options_.mean_online_s : options_.mean_offline_s;
    return -mean * std::log(OpenUnit(SplitMix64(key_ + (index_ + 1) * kGoldenGamma64)));
  }

  const VirtualClockOptions& options_;
  const uint64_t key_;
  uint64_t index_ = 0;
  bool online_ = true;
  double end_ = 0;
};

}  // namespace

nlohmann::json VirtualClockConfigDefaults() {
  const VirtualClockOptions d;
  return {{"clock",
           {
               {"enabled", d.enabled},
               {"seconds_per_example", d.seconds_per_example},
               {"compute_sigma", d.compute_sigma},
               {"straggler_fraction", d.straggler_fraction},
               {"straggler_slowdown", d.straggler_slowdown},
               {"uplink_mbps", d.uplink_mbps},
               {"downlink_mbps", d.downlink_mbps},
               {"bandwidth_sigma", d.bandwidth_sigma},
               {"latency_ms", d.latency_ms},
               {"mean_online_s", d.mean_online_s},
               {"mean_offline_s", d.mean_offline_s},
               {"server_seconds", d.server_seconds},
           }}};
}

Result<VirtualClockOptions> VirtualClockOptionsFromConfig(const Config& config) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  VirtualClockOptions o;
  o.enabled = config.GetBool("clock.enabled");
  o.seed = static_cast<uint64_t>(config.GetInt("run.seed"));
  FL_RETURN_IF_ERROR(
      ReadBounded(config, "seconds_per_example", 0, false, kInf, &o.seconds_per_example));
  FL_RETURN_IF_ERROR(ReadBounded(config, "compute_sigma", 0, false, 10, &o.compute_sigma));
  FL_RETURN_IF_ERROR(ReadBounded(config, "straggler_fraction", 0, false, 1, &o.straggler_fraction));
  FL_RETURN_IF_ERROR(
      ReadBounded(config, "straggler_slowdown", 1, false, kInf, &o.straggler_slowdown));
  FL_RETURN_IF_ERROR(ReadBounded(config, "uplink_mbps", 0, true, kInf, &o.uplink_mbps));
  FL_RETURN_IF_ERROR(ReadBounded(config, "downlink_mbps", 0, true, kInf, &o.downlink_mbps));
  FL_RETURN_IF_ERROR(ReadBounded(config, "bandwidth_sigma", 0, false, 10, &o.bandwidth_sigma));
  FL_RETURN_IF_ERROR(ReadBounded(config, "latency_ms", 0, false, kInf, &o.latency_ms));
  FL_RETURN_IF_ERROR(ReadBounded(config, "mean_online_s", 0, false, kInf, &o.mean_online_s));
  FL_RETURN_IF_ERROR(ReadBounded(config, "mean_offline_s", 0, false, kInf, &o.mean_offline_s));
  FL_RETURN_IF_ERROR(ReadBounded(config, "server_seconds", 0, false, kInf, &o.server_seconds));
  // One zero mean would make a client online (or offline) forever after its first
  // period; "always online" is spelled with both at 0.
  if ((o.mean_online_s == 0) != (o.mean_offline_s == 0)) {
    const bool online_zero = o.mean_online_s == 0;
    return Bad(online_zero ? "mean_online_s" : "mean_offline_s",
               std::string("must be > 0 when clock.") +
                   (online_zero ? "mean_offline_s" : "mean_online_s") +
                   " > 0 (set both to 0 for always-online clients)",
               0);
  }
  return o;
}

VirtualClock::VirtualClock(const VirtualClockOptions& options, size_t num_clients)
    : options_(options), stragglers_(num_clients, false) {
  // Exactly round(fraction * n) stragglers, so a small federation gets the share it
  // asked for rather than a binomial draw around it.
  const size_t stragglers =
      std::min(num_clients, static_cast<size_t>(std::llround(options.straggler_fraction *
                                                             static_cast<double>(num_clients))));
  std::vector<size_t> order(num_clients);
  std::iota(order.begin(), order.end(), 0);
  SeededRng rng(SplitMix64(options.seed ^ kStragglerTag));
  rng.Shuffle(std::span<size_t>(order));
  for (size_t k = 0; k < stragglers; ++k) stragglers_[order[k]] = true;
}

DeviceProfile VirtualClock::profile(size_t client) const {
  // One stream per client: a client's speed and bandwidth do not depend on how many
  // clients there are.
  SeededRng rng(SplitMix64(SplitMix64(options_.seed ^ kProfileTag) + client));
  DeviceProfile p;
  p.speed = std::exp(options_.compute_sigma * rng.Normal());
  p.uplink_bps = options_.uplink_mbps * 1e6 / 8 * std::exp(options_.bandwidth_sigma * rng.Normal());
  p.downlink_bps =
      options_.downlink_mbps * 1e6 / 8 * std::exp(options_.bandwidth_sigma * rng.Normal());
  p.latency_s = options_.latency_ms / 1000;
  if (stragglers_[client]) {
    p.straggler = true;
    p.speed /= options_.straggler_slowdown;
  }
  return p;
}

bool VirtualClock::IsOnline(size_t client, double t) const {
  if (options_.always_online()) return true;
  PeriodWalker w(options_, client);
  w.SeekTo(t);
  return w.online();
}

double VirtualClock::NextOnline(size_t client, double t) const {
  if (options_.always_online()) return t;
  PeriodWalker w(options_, client);
  w.SeekTo(t);
  // Offline and online periods alternate, so an offline period ends in an online one.
  return w.online() ? t : w.end();
}

double VirtualClock::AdvanceOnline(size_t client, double t, double work) const {
  if (options_.always_online() || work <= 0) return t + std::max(work, 0.0);
  PeriodWalker w(options_, client);
  w.SeekTo(t);
  while (true) {
    if (w.online()) {
      const double available = w.end() - t;
      if (work <= available) return t + work;
      work -= available;
    }
    t = w.end();
    w.Next();
  }
}

double VirtualClock::DownloadSeconds(size_t client, uint64_t bytes) const {
  const DeviceProfile p = profile(client);
  return p.latency_s + static_cast<double>(bytes) / p.downlink_bps;
}

double VirtualClock::TrainSeconds(size_t client, uint64_t examples) const {
  return static_cast<double>(examples) * options_.seconds_per_example / profile(client).speed;
}

double VirtualClock::UploadSeconds(size_t client, uint64_t bytes) const {
  const DeviceProfile p = profile(client);
  return p.latency_s + static_cast<double>(bytes) / p.uplink_bps;
}

TaskTimeline VirtualClock::RunTask(size_t client, double start, const TaskWork& work) const {
  return RunTask(client, start, work, 0);
}

TaskTimeline VirtualClock::RunTask(size_t client, double start, const TaskWork& work,
                                   double uplink_free) const {
  TaskTimeline t;
  t.start = start;
  t.began = NextOnline(client, start);
  t.downloaded = AdvanceOnline(client, t.began, DownloadSeconds(client, work.bytes_down));
  t.trained = AdvanceOnline(client, t.downloaded, TrainSeconds(client, work.examples));
  // The previous upload ended at an online instant (AdvanceOnline), so either bound is
  // one; the upload itself pauses offline like every other phase.
  t.uploading = std::max(t.trained, uplink_free);
  t.finish = AdvanceOnline(client, t.uploading, UploadSeconds(client, work.bytes_up));
  return t;
}

}  // namespace fl::internal
