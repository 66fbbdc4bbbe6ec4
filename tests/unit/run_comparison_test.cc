#include "simulations/run_comparison.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

namespace fl::internal {
namespace {

using ::testing::HasSubstr;

// As fl-sim writes it: round 2 not evaluated, two strategy columns at the end.
constexpr char kFerretCsv[] =
    "round,bits_per_byte,test_loss,train_loss,bytes_up,bytes_down,bytes_up_"
    "total,clients,"
    "wall_seconds,train_samples,samples_per_sec,ferret.terms_applied,ferret."
    "terms_clipped\n"
    "1,4.5,3.1,3.2,3000,100,3000,10,1.5,80,53,200,0\n"
    "2,,,3.1,4000,100,7000,10,3.1,80,52,200,1\n"
    "3,4.2,2.9,3.0,5000,100,12000,10,4.6,80,52,200,0\n";

constexpr char kFedAvgCsv[] =
    "round,bits_per_byte,test_loss,train_loss,bytes_up,bytes_down,bytes_up_"
    "total,clients,"
    "wall_seconds,train_samples,samples_per_sec\n"
    "1,4.0,2.8,3.2,35000000,100,35000000,10,1.5,80,53\n"
    "2,3.6,2.5,3.1,35000000,100,70000000,10,3.1,80,52\n";

TEST(RunComparisonTest, ParsesPerClientUploadsAndSkipsUnevaluatedRounds) {
  Result<RunCurve> c = ParseRunCurve(kFerretCsv, "ferret");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->metric_name, "bits_per_byte");
  ASSERT_EQ(c->points.size(), 3u);
  EXPECT_EQ(c->points[2].round, 3u);
  EXPECT_DOUBLE_EQ(c->points[0].metric, 4.5);
  EXPECT_TRUE(std::isnan(c->points[1].metric));
  EXPECT_DOUBLE_EQ(c->points[1].upload_bytes_per_client, 400.0);
  EXPECT_DOUBLE_EQ(c->points[2].cumulative_upload_per_client, 1200.0);
}

TEST(RunComparisonTest, BadFilesNameTheLine) {
  struct Case {
    const char* csv;
    const char* message;
  };
  const Case cases[] = {
      {"", "line 1"},
      {"step,accuracy\n1,0.5\n", "line 1"},
      {"round,accuracy,bytes_up,clients\n1,0.5,10\n", "line 2: 3 fields"},
      {"round,accuracy,bytes_up,clients\n1,0.5,10,2\n1,0.6,10,2\n", "line 3: rounds must increase"},
      {"round,accuracy,bytes_up,clients\n1,nan,10,2\n", "line 2: the metric"},
      {"round,accuracy,bytes_up,clients\n1,0.5,-4,2\n", "line 2"},
      {"round,accuracy,bytes_up,clients\n", "no rounds"},
  };
  for (const Case& c : cases) {
    Result<RunCurve> r = ParseRunCurve(c.csv, "x");
    ASSERT_FALSE(r.ok()) << c.csv;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr(c.message)) << c.csv;
  }
}

TEST(RunComparisonTest, PlotHasBothPanelsPerRunAndTheTableSummarizes) {
  Result<RunCurve> ferret = ParseRunCurve(kFerretCsv, "ferret <K=200>");
  Result<RunCurve> fedavg = ParseRunCurve(kFedAvgCsv, "fedavg");
  ASSERT_TRUE(ferret.ok() && fedavg.ok());
  Result<std::string> svg = CompareRunsSvg({*fedavg, *ferret}, "W2");
  ASSERT_TRUE(svg.ok()) << svg.status().ToString();
  size_t lines = 0;
  for (size_t at = svg->find("<polyline"); at != std::string::npos;
       at = svg->find("<polyline", at + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 4u);  // two runs, two panels
  EXPECT_THAT(*svg, HasSubstr("ferret &lt;K=200&gt;"));
  EXPECT_THAT(*svg, HasSubstr("log scale"));

  const std::string table = CompareRunsTable({*fedavg, *ferret});
  // Lower bits per byte is better: Ferret's best is 4.2, its mean upload 400
  // B/round.
  EXPECT_THAT(table, HasSubstr("4.2"));
  EXPECT_THAT(table, HasSubstr(" 400 "));
  EXPECT_THAT(table, HasSubstr("3500000"));

  RunCurve accuracy = *fedavg;
  accuracy.metric_name = "accuracy";
  EXPECT_EQ(CompareRunsSvg({*fedavg, accuracy}, "x").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(CompareRunsSvg({}, "x").status().code(), StatusCode::kInvalidArgument);
}

TEST(RunComparisonTest, SimulatedTimeAddsAThirdPanelWhenEveryRunHasIt) {
  constexpr char kClocked[] =
      "round,accuracy,bytes_up,clients,samples_per_sec,sim_time_s\n"
      "1,0.5,100,2,10,12.5\n"
      "2,,100,2,10,30\n"
      "3,0.7,100,2,10,41.25\n";
  Result<RunCurve> clocked = ParseRunCurve(kClocked, "clocked");
  ASSERT_TRUE(clocked.ok()) << clocked.status().ToString();
  EXPECT_TRUE(clocked->HasSimTime());
  EXPECT_DOUBLE_EQ(clocked->points[2].sim_time_s, 41.25);

  // Runs from before the clock, or with it off, have no simulated time.
  Result<RunCurve> old = ParseRunCurve(kFedAvgCsv, "old");
  ASSERT_TRUE(old.ok());
  EXPECT_FALSE(old->HasSimTime());
  Result<RunCurve> off = ParseRunCurve(
      "round,accuracy,bytes_up,clients,sim_time_s\n1,0.5,100,2,\n", "off");
  ASSERT_TRUE(off.ok()) << off.status().ToString();
  EXPECT_FALSE(off->HasSimTime());

  auto polylines = [](const std::string& svg) {
    size_t n = 0;
    for (size_t at = svg.find("<polyline"); at != std::string::npos;
         at = svg.find("<polyline", at + 1)) {
      ++n;
    }
    return n;
  };
  Result<std::string> both = CompareRunsSvg({*clocked, *clocked}, "t");
  ASSERT_TRUE(both.ok());
  EXPECT_EQ(polylines(*both), 6u);  // two runs, three panels
  EXPECT_THAT(*both, HasSubstr("simulated time"));
  Result<std::string> mixed = CompareRunsSvg({*clocked, *off}, "t");
  ASSERT_TRUE(mixed.ok());
  EXPECT_EQ(polylines(*mixed), 4u);  // one run lacks the clock: the usual two panels
  EXPECT_THAT(CompareRunsTable({*clocked, *off}), HasSubstr("41.2 s"));

  for (const char* bad :
       {"round,accuracy,bytes_up,clients,sim_time_s\n1,0.5,1,1,-2\n",
        "round,accuracy,bytes_up,clients,sim_time_s\n1,0.5,1,1,5\n2,0.5,1,1,4\n"}) {
    Result<RunCurve> r = ParseRunCurve(bad, "x");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("sim_time_s")) << bad;
  }
}

}  // namespace
}  // namespace fl::internal
