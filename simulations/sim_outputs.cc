#include "simulations/sim_outputs.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>

namespace fl::internal {
namespace {

std::string EscapeXml(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace

// A two-axis line chart: the workload's metric (left axis: accuracy in %, or from 0 to
// above the largest value) and bytes moved per round (right axis, MB up + down) over
// rounds. Plain SVG, no dependency.
std::string PlotSvg(const std::vector<SimRoundRecord>& rounds, const std::string& title,
                    const WorkloadMetric& metric) {
  constexpr double kW = 800, kH = 420, kLeft = 70, kRight = 80, kTop = 50, kBottom = 60;
  const double pw = kW - kLeft - kRight, ph = kH - kTop - kBottom;
  uint64_t max_round = 1;
  double max_mb = 0;
  double max_metric = 1;  // a fraction's axis ends at 100%
  if (!metric.is_fraction) {
    max_metric = 0;
    for (const SimRoundRecord& r : rounds) {
      if (r.evaluated && std::isfinite(r.metric)) max_metric = std::max(max_metric, r.metric);
    }
    max_metric = max_metric > 0 ? max_metric * 1.1 : 1;
  }
  for (const SimRoundRecord& r : rounds) {
    max_round = std::max(max_round, r.metrics.round);
    max_mb = std::max(max_mb, static_cast<double>(r.metrics.bytes_up + r.metrics.bytes_down) / 1e6);
  }
  if (max_mb <= 0) max_mb = 1;
  max_mb *= 1.1;
  auto x = [&](double round) {
    return kLeft + (max_round <= 1 ? pw / 2 : (round - 1) / (max_round - 1) * pw);
  };
  auto y_metric = [&](double v) { return kTop + ph * (1.0 - v / max_metric); };
  auto y_mb = [&](double mb) { return kTop + ph * (1.0 - mb / max_mb); };
  char buf[256];
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kW << "\" height=\"" << kH
    << "\" viewBox=\"0 0 " << kW << ' ' << kH << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s << "<text x=\"" << kW / 2 << "\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">"
    << EscapeXml(title) << "</text>\n";
  // Grid and axes.
  for (int i = 0; i <= 5; ++i) {
    const double frac = i / 5.0;
    const double yy = kTop + ph * (1.0 - frac);
    std::snprintf(buf, sizeof(buf),
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", kLeft,
                  yy, kLeft + pw, yy);
    s << buf;
    if (metric.is_fraction) {
      std::snprintf(buf, sizeof(buf),
                    "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#1f77b4\">%d%%</text>\n",
                    kLeft - 6, yy + 4, i * 20);
    } else {
      std::snprintf(buf, sizeof(buf),
                    "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#1f77b4\">%.3g</text>\n",
                    kLeft - 6, yy + 4, frac * max_metric);
    }
    s << buf;
    std::snprintf(buf, sizeof(buf),
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"start\" fill=\"#ff7f0e\">%.3g</text>\n",
                  kLeft + pw + 6, yy + 4, frac * max_mb);
    s << buf;
  }
  const uint64_t step = std::max<uint64_t>(1, (max_round + 9) / 10);
  for (uint64_t r = 1; r <= max_round; r += step) {
    std::snprintf(buf, sizeof(buf),
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%llu</text>\n", x(r),
                  kTop + ph + 18, static_cast<unsigned long long>(r));
    s << buf;
  }
  std::snprintf(buf, sizeof(buf),
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                "stroke=\"#333\"/>\n",
                kLeft, kTop, pw, ph);
  s << buf;
  s << "<text x=\"" << kLeft + pw / 2 << "\" y=\"" << kH - 18 << "\" text-anchor=\"middle\">round</text>\n";
  std::snprintf(buf, sizeof(buf),
                "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\" "
                "fill=\"#1f77b4\">%s</text>\n",
                kTop + ph / 2, EscapeXml(metric.label).c_str());
  s << buf;
  std::snprintf(buf, sizeof(buf),
                "<text transform=\"translate(%.1f %.1f) rotate(90)\" text-anchor=\"middle\" "
                "fill=\"#ff7f0e\">MB per round (up + down)</text>\n",
                kW - 16, kTop + ph / 2);
  s << buf;
  // Series.
  std::ostringstream acc_points, mb_points;
  for (const SimRoundRecord& r : rounds) {
    const double round = static_cast<double>(r.metrics.round);
    if (r.evaluated) {
      std::snprintf(buf, sizeof(buf), "%.1f,%.1f ", x(round), y_metric(r.metric));
      acc_points << buf;
    }
    const double mb = static_cast<double>(r.metrics.bytes_up + r.metrics.bytes_down) / 1e6;
    std::snprintf(buf, sizeof(buf), "%.1f,%.1f ", x(round), y_mb(mb));
    mb_points << buf;
  }
  s << "<polyline fill=\"none\" stroke=\"#ff7f0e\" stroke-width=\"1.5\" stroke-dasharray=\"5,3\" "
       "points=\""
    << mb_points.str() << "\"/>\n";
  s << "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"" << acc_points.str()
    << "\"/>\n";
  // Legend.
  s << "<line x1=\"" << kLeft + 10 << "\" y1=\"" << kTop + 14 << "\" x2=\"" << kLeft + 34
    << "\" y2=\"" << kTop + 14 << "\" stroke=\"#1f77b4\" stroke-width=\"2\"/>"
    << "<text x=\"" << kLeft + 40 << "\" y=\"" << kTop + 18 << "\">" << EscapeXml(metric.label)
    << "</text>\n";
  s << "<line x1=\"" << kLeft + 10 << "\" y1=\"" << kTop + 32 << "\" x2=\"" << kLeft + 34
    << "\" y2=\"" << kTop + 32 << "\" stroke=\"#ff7f0e\" stroke-width=\"1.5\" "
    << "stroke-dasharray=\"5,3\"/>"
    << "<text x=\"" << kLeft + 40 << "\" y=\"" << kTop + 36 << "\">MB per round</text>\n";
  s << "</svg>\n";
  return s.str();
}

std::string FormatDouble(double v, int precision) {
  if (!std::isfinite(v)) return "";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
  return buf;
}

// Fixed columns, then one column per strategy statistic any round reported (sorted by
// name; empty in rounds without it).
std::string MetricsCsv(const std::vector<SimRoundRecord>& rounds, const WorkloadMetric& metric) {
  std::set<std::string> stat_names;
  for (const SimRoundRecord& r : rounds) {
    for (const auto& [name, value] : r.strategy_stats) stat_names.insert(name);
  }
  std::ostringstream out;
  out << "round," << metric.name
      << ",test_loss,train_loss,bytes_up,bytes_down,bytes_up_total,clients,wall_seconds,"
         "train_samples,samples_per_sec,sim_time_s";
  for (const std::string& name : stat_names) out << ',' << name;
  out << '\n';
  for (const SimRoundRecord& r : rounds) {
    const RoundMetrics& m = r.metrics;
    out << m.round << ',' << (r.evaluated ? FormatDouble(r.metric) : "") << ','
        << (r.evaluated ? FormatDouble(m.test_loss) : "") << ',' << FormatDouble(m.train_loss)
        << ',' << m.bytes_up << ',' << m.bytes_down << ',' << r.bytes_up_total << ','
        << m.clients << ',' << FormatDouble(m.wall_seconds) << ',' << r.train_samples << ','
        << FormatDouble(r.samples_per_sec) << ',' << FormatDouble(r.sim_time_s, 12);
    for (const std::string& name : stat_names) {
      auto it = r.strategy_stats.find(name);
      out << ',' << (it == r.strategy_stats.end() ? "" : FormatDouble(it->second, 12));
    }
    out << '\n';
  }
  return out.str();
}

std::string MetricsJsonl(const std::vector<SimRoundRecord>& rounds, const WorkloadMetric& metric) {
  std::string out;
  for (const SimRoundRecord& r : rounds) {
    const RoundMetrics& m = r.metrics;
    nlohmann::json j = {
        {"round", m.round},
        {metric.name, r.evaluated ? nlohmann::json(r.metric) : nlohmann::json(nullptr)},
        {"test_loss", r.evaluated ? nlohmann::json(m.test_loss) : nlohmann::json(nullptr)},
        {"train_loss", m.train_loss},
        {"bytes_up", m.bytes_up},
        {"bytes_down", m.bytes_down},
        {"bytes_up_total", r.bytes_up_total},
        {"clients", m.clients},
        {"wall_seconds", m.wall_seconds},
        {"train_samples", r.train_samples},
        {"samples_per_sec", r.samples_per_sec},
        {"sim_time_s",
         std::isfinite(r.sim_time_s) ? nlohmann::json(r.sim_time_s) : nlohmann::json(nullptr)},
    };
    for (const auto& [name, value] : r.strategy_stats) j[name] = value;
    out += j.dump() + "\n";
  }
  return out;
}

// Files of an earlier run in `dir` that this run replaces. Nothing else is touched.
void RemovePreviousRun(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const char* name : {kRunDb, "run.db-wal", "run.db-shm", kMetricsCsv, kMetricsJsonl, kPlotSvg,
                           kConfigYaml}) {
    fs::remove(fs::path(dir) / name, ec);
  }
  fs::remove_all(fs::path(dir) / "models", ec);
  fs::remove_all(fs::path(dir) / "spool", ec);
}

// Writes the per-round outputs; called after every round so a long run can be
// inspected (or plotted) while it is still going.
Status WriteRoundFiles(Env* env, const std::string& dir, const std::vector<SimRoundRecord>& rounds,
                       const std::string& title, const WorkloadMetric& metric) {
  FL_RETURN_IF_ERROR(
      env->WriteFileAtomic(dir + "/" + kMetricsCsv, MetricsCsv(rounds, metric), false));
  FL_RETURN_IF_ERROR(
      env->WriteFileAtomic(dir + "/" + kMetricsJsonl, MetricsJsonl(rounds, metric), false));
  return env->WriteFileAtomic(dir + "/" + kPlotSvg, PlotSvg(rounds, title, metric), false);
}

}  // namespace fl::internal
