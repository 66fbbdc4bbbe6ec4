#include "simulations/virtual_clock.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "simulations/event_queue.h"

namespace fl::internal {
namespace {

using ::testing::HasSubstr;

// Every heterogeneity knob off: speed 1, exact bandwidths, always online.
VirtualClockOptions Uniform() {
  VirtualClockOptions o;
  o.seed = 7;
  o.compute_sigma = 0;
  o.straggler_fraction = 0;
  o.bandwidth_sigma = 0;
  return o;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

Result<Config> ClockConfig(const std::vector<std::string>& overrides) {
  nlohmann::json defaults = VirtualClockConfigDefaults();
  defaults["run"] = {{"seed", 3}};
  return Config::Build(defaults, "", overrides);
}

TEST(VirtualClockTest, ProfilesAreAFunctionOfTheSeed) {
  VirtualClockOptions o;  // defaults: sigma 0.5, 10% stragglers
  o.seed = 11;
  const VirtualClock a(o, 200), b(o, 200);
  o.seed = 12;
  const VirtualClock c(o, 200);
  size_t differ = 0;
  for (size_t i = 0; i < 200; ++i) {
    EXPECT_EQ(a.profile(i).speed, b.profile(i).speed);
    EXPECT_EQ(a.profile(i).uplink_bps, b.profile(i).uplink_bps);
    EXPECT_EQ(a.profile(i).downlink_bps, b.profile(i).downlink_bps);
    EXPECT_EQ(a.profile(i).straggler, b.profile(i).straggler);
    differ += a.profile(i).speed != c.profile(i).speed ? 1 : 0;
  }
  EXPECT_GT(differ, 190u);

  // Without stragglers a client's profile does not depend on the population size.
  o.straggler_fraction = 0;
  const VirtualClock small(o, 10), large(o, 1000);
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_EQ(small.profile(i).speed, large.profile(i).speed);
    EXPECT_EQ(small.profile(i).uplink_bps, large.profile(i).uplink_bps);
  }
}

TEST(VirtualClockTest, StragglerCountAndLogNormalMedians) {
  VirtualClockOptions o;
  o.seed = 5;
  o.compute_sigma = 0.5;
  o.straggler_fraction = 0.1;
  o.straggler_slowdown = 10;
  o.uplink_mbps = 8;
  o.downlink_mbps = 40;
  o.bandwidth_sigma = 0.3;
  constexpr size_t kClients = 4000;
  const VirtualClock clock(o, kClients);
  std::vector<double> speeds, log_speeds, up, down;
  size_t stragglers = 0;
  for (size_t i = 0; i < kClients; ++i) {
    const DeviceProfile& p = clock.profile(i);
    // Undo the slowdown: stragglers are drawn from the same log-normal first.
    const double base = p.straggler ? p.speed * 10 : p.speed;
    stragglers += p.straggler ? 1 : 0;
    speeds.push_back(base);
    log_speeds.push_back(std::log(base));
    up.push_back(p.uplink_bps);
    down.push_back(p.downlink_bps);
    EXPECT_DOUBLE_EQ(p.latency_s, 0.05);
  }
  EXPECT_EQ(stragglers, 400u);  // exactly round(0.1 * 4000)
  EXPECT_NEAR(Median(speeds), 1.0, 0.05);
  double mean = 0, var = 0;
  for (double l : log_speeds) mean += l / kClients;
  for (double l : log_speeds) var += (l - mean) * (l - mean) / (kClients - 1);
  EXPECT_NEAR(std::sqrt(var), 0.5, 0.03);
  EXPECT_NEAR(Median(up) / (8e6 / 8), 1.0, 0.04);
  EXPECT_NEAR(Median(down) / (40e6 / 8), 1.0, 0.04);

  o.compute_sigma = 0;
  o.straggler_fraction = 0.25;
  const VirtualClock flat(o, 10);
  size_t slow = 0;
  for (size_t i = 0; i < 10; ++i) {
    const double expected = flat.profile(i).straggler ? 0.1 : 1.0;
    EXPECT_DOUBLE_EQ(flat.profile(i).speed, expected);
    slow += flat.profile(i).straggler ? 1 : 0;
  }
  EXPECT_EQ(slow, 3u);  // round(2.5) = 3
}

TEST(VirtualClockTest, TaskTimelineArithmetic) {
  VirtualClockOptions o = Uniform();
  o.uplink_mbps = 8;     // 1e6 bytes/s
  o.downlink_mbps = 16;  // 2e6 bytes/s
  o.latency_ms = 50;
  o.seconds_per_example = 0.01;
  const VirtualClock clock(o, 3);
  const TaskTimeline t = clock.RunTask(1, 100.0, TaskWork{2000000, 300, 1000000});
  EXPECT_DOUBLE_EQ(t.start, 100.0);
  EXPECT_DOUBLE_EQ(t.began, 100.0);
  EXPECT_DOUBLE_EQ(t.downloaded, 101.05);
  EXPECT_DOUBLE_EQ(t.trained, 104.05);
  EXPECT_DOUBLE_EQ(t.finish, 105.1);

  // Every client a straggler 10x slower: only the training phase stretches.
  o.straggler_fraction = 1;
  o.straggler_slowdown = 10;
  const VirtualClock slow(o, 3);
  const TaskTimeline s = slow.RunTask(1, 0.0, TaskWork{2000000, 300, 1000000});
  EXPECT_DOUBLE_EQ(s.trained - s.downloaded, 30.0);
  EXPECT_DOUBLE_EQ(s.finish, 1.05 + 30.0 + 1.05);
}

// Client overlap: each next task is handed out when the previous upload begins, and
// its own upload waits for the previous one (one uplink per client). Download 0.55 s,
// training 1 s, upload 2.05 s: after the first task the uplink is the bottleneck, so
// one update arrives every 2.05 s instead of every 3.6 s.
TEST(VirtualClockTest, OverlappedTimelineArithmetic) {
  VirtualClockOptions o = Uniform();
  o.uplink_mbps = 8;     // 1e6 bytes/s
  o.downlink_mbps = 16;  // 2e6 bytes/s
  o.latency_ms = 50;
  o.seconds_per_example = 0.01;
  const VirtualClock clock(o, 2);
  const TaskWork work{1000000, 100, 2000000};
  const TaskTimeline first = clock.RunTask(0, 0.0, work, 0.0);
  EXPECT_NEAR(first.downloaded, 0.55, 1e-12);
  EXPECT_NEAR(first.trained, 1.55, 1e-12);
  EXPECT_NEAR(first.uploading, 1.55, 1e-12);  // the uplink was free
  EXPECT_NEAR(first.finish, 3.6, 1e-12);
  // The 3-argument form is the same task with a free uplink.
  const TaskTimeline plain = clock.RunTask(0, 0.0, work);
  EXPECT_EQ(plain.uploading, first.uploading);
  EXPECT_EQ(plain.finish, first.finish);

  TaskTimeline previous = first;
  for (int k = 2; k <= 4; ++k) {
    const TaskTimeline t = clock.RunTask(0, previous.uploading, work, previous.finish);
    EXPECT_NEAR(t.start, 1.55 + 2.05 * (k - 2), 1e-12) << k;
    EXPECT_NEAR(t.downloaded, t.start + 0.55, 1e-12) << k;  // downloads while uploading
    EXPECT_NEAR(t.trained, t.start + 1.55, 1e-12) << k;
    EXPECT_NEAR(t.uploading, previous.finish, 1e-12) << k;  // waits for the uplink
    EXPECT_NEAR(t.finish, 1.55 + 2.05 * k, 1e-12) << k;
    previous = t;
  }

  // A tiny upload: training is the bottleneck and each upload starts when it ends.
  const TaskWork light{1000000, 100, 0};
  const TaskTimeline a = clock.RunTask(1, 0.0, light, 0.0);
  EXPECT_NEAR(a.finish, 1.6, 1e-12);
  const TaskTimeline b = clock.RunTask(1, a.uploading, light, a.finish);
  EXPECT_NEAR(b.trained, 3.1, 1e-12);
  EXPECT_EQ(b.uploading, b.trained);
  EXPECT_NEAR(b.finish, 3.15, 1e-12);
}

TEST(VirtualClockTest, AlwaysOnlineByDefault) {
  const VirtualClock clock(Uniform(), 4);
  for (double t : {0.0, 1.5, 1e6}) {
    EXPECT_TRUE(clock.IsOnline(2, t));
    EXPECT_EQ(clock.NextOnline(2, t), t);
    EXPECT_EQ(clock.AdvanceOnline(2, t, 7.0), t + 7.0);
  }
}

TEST(VirtualClockTest, AvailabilityIsPureAndHasTheConfiguredShare) {
  VirtualClockOptions o = Uniform();
  o.mean_online_s = 100;
  o.mean_offline_s = 300;
  const VirtualClock clock(o, 200);
  const VirtualClock again(o, 200);
  size_t online = 0, samples = 0;
  for (size_t i = 0; i < 200; ++i) {
    for (double t = 0; t < 20000; t += 97) {
      const bool on = clock.IsOnline(i, t);
      // The same answer from another instance, whatever was asked before.
      EXPECT_EQ(on, again.IsOnline(i, t));
      online += on ? 1 : 0;
      ++samples;
      const double next = clock.NextOnline(i, t);
      if (on) {
        EXPECT_EQ(next, t);
      } else {
        EXPECT_GT(next, t);
        EXPECT_TRUE(clock.IsOnline(i, next));
        EXPECT_FALSE(clock.IsOnline(i, (t + next) / 2));
      }
    }
  }
  // Stationary share online: 100 / (100 + 300).
  EXPECT_NEAR(static_cast<double>(online) / static_cast<double>(samples), 0.25, 0.02);
}

TEST(VirtualClockTest, WorkPausesWhileOffline) {
  VirtualClockOptions o = Uniform();
  o.mean_online_s = 50;
  o.mean_offline_s = 50;
  const VirtualClock clock(o, 20);
  for (size_t i = 0; i < 20; ++i) {
    for (double t : {0.0, 33.0, 512.5}) {
      const double end = clock.AdvanceOnline(i, t, 120.0);
      EXPECT_GE(end, t + 120.0);
      // Splitting the work anywhere gives the same end (the task resumes where it
      // stopped).
      const double mid = clock.AdvanceOnline(i, t, 45.0);
      EXPECT_NEAR(clock.AdvanceOnline(i, mid, 75.0), end, 1e-9);
      // Online seconds between t and end add up to the work (sampled on a fine grid).
      double counted = 0;
      constexpr double kStep = 0.01;
      for (double s = t; s < end; s += kStep) counted += clock.IsOnline(i, s) ? kStep : 0;
      EXPECT_NEAR(counted, 120.0, 0.5);
    }
    // A task handed out while offline begins when the client is back.
    const double off = [&] {
      double t = 0;
      while (clock.IsOnline(i, t)) t += 1;
      return t;
    }();
    const TaskTimeline tl = clock.RunTask(i, off, TaskWork{0, 10, 0});
    EXPECT_EQ(tl.began, clock.NextOnline(i, off));
    EXPECT_GT(tl.began, off);
    // An upload that waits for a busy uplink starts when it frees and still pauses
    // while the client is offline.
    const TaskWork work{500000, 2000, 500000};
    const TaskTimeline first = clock.RunTask(i, 0.0, work);
    const TaskTimeline next = clock.RunTask(i, first.uploading, work, first.finish);
    EXPECT_EQ(next.uploading, std::max(next.trained, first.finish));
    EXPECT_EQ(next.finish,
              clock.AdvanceOnline(i, next.uploading, clock.UploadSeconds(i, work.bytes_up)));
  }
}

TEST(VirtualClockTest, ConfigDefaultsAndPreciseErrors) {
  Result<Config> config = ClockConfig({});
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  Result<VirtualClockOptions> o = VirtualClockOptionsFromConfig(*config);
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_TRUE(o->enabled);
  EXPECT_EQ(o->seed, 3u);
  EXPECT_TRUE(o->always_online());
  EXPECT_DOUBLE_EQ(o->straggler_fraction, 0.1);
  EXPECT_DOUBLE_EQ(o->straggler_slowdown, 10);

  struct Case {
    const char* override;
    const char* message;
  };
  const Case cases[] = {
      {"clock.seconds_per_example=-1", "clock.seconds_per_example must be >= 0"},
      {"clock.compute_sigma=-0.1", "clock.compute_sigma must be >= 0 and <= 10"},
      {"clock.straggler_fraction=1.5", "clock.straggler_fraction must be >= 0 and <= 1"},
      {"clock.straggler_slowdown=0.5", "clock.straggler_slowdown must be >= 1"},
      {"clock.uplink_mbps=0", "clock.uplink_mbps must be > 0"},
      {"clock.downlink_mbps=-3", "clock.downlink_mbps must be > 0"},
      {"clock.bandwidth_sigma=11", "clock.bandwidth_sigma must be >= 0 and <= 10"},
      {"clock.latency_ms=-5", "clock.latency_ms must be >= 0"},
      {"clock.server_seconds=-1", "clock.server_seconds must be >= 0"},
      {"clock.mean_online_s=-1", "clock.mean_online_s must be >= 0"},
      {"clock.mean_online_s=60", "clock.mean_offline_s must be > 0 when clock.mean_online_s > 0"},
      {"clock.mean_offline_s=60", "clock.mean_online_s must be > 0 when clock.mean_offline_s > 0"},
  };
  for (const Case& c : cases) {
    Result<Config> bad = ClockConfig({c.override});
    ASSERT_TRUE(bad.ok()) << c.override;
    Result<VirtualClockOptions> r = VirtualClockOptionsFromConfig(*bad);
    ASSERT_FALSE(r.ok()) << c.override;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr(c.message)) << c.override;
  }
}

TEST(EventQueueTest, PopsByTimeThenClientThenPushOrder) {
  EventQueue<std::string> q;
  EXPECT_TRUE(q.empty());
  q.Push(5.0, 2, "c2@5");
  q.Push(1.0, 9, "c9@1");
  q.Push(5.0, 1, "c1@5 first");
  q.Push(5.0, 1, "c1@5 second");
  q.Push(0.5, 4, "c4@0.5");
  q.Push(5.0, 0, "c0@5");
  EXPECT_EQ(q.size(), 6u);
  EXPECT_EQ(q.Top().payload, "c4@0.5");
  std::vector<std::string> order;
  while (!q.empty()) order.push_back(q.Pop().payload);
  EXPECT_EQ(order, (std::vector<std::string>{"c4@0.5", "c9@1", "c0@5", "c1@5 first", "c1@5 second",
                                             "c2@5"}));
}

TEST(EventQueueTest, SameEventsInAnyPushOrderPopTheSame) {
  struct Item {
    double time;
    uint64_t client;
  };
  std::vector<Item> items;
  for (uint64_t c = 0; c < 50; ++c) items.push_back({static_cast<double>((c * 7) % 5), c});
  std::vector<uint64_t> first, second;
  EventQueue<uint64_t> a, b;
  for (const Item& it : items) a.Push(it.time, it.client, it.client);
  for (auto it = items.rbegin(); it != items.rend(); ++it) b.Push(it->time, it->client, it->client);
  while (!a.empty()) first.push_back(a.Pop().payload);
  while (!b.empty()) second.push_back(b.Pop().payload);
  EXPECT_EQ(first, second);
  for (size_t k = 1; k < first.size(); ++k) {
    const double t0 = static_cast<double>((first[k - 1] * 7) % 5);
    const double t1 = static_cast<double>((first[k] * 7) % 5);
    EXPECT_TRUE(t0 < t1 || (t0 == t1 && first[k - 1] < first[k]));
  }
}

}  // namespace
}  // namespace fl::internal
