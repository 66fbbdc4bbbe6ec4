#include "simulations/run_comparison.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

namespace fl::internal {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::vector<std::string_view> SplitCsvLine(std::string_view line) {
  std::vector<std::string_view> fields;
  size_t start = 0;
  while (true) {
    const size_t comma = line.find(',', start);
    fields.push_back(
        line.substr(start, comma == std::string_view::npos ? line.npos : comma - start));
    if (comma == std::string_view::npos) return fields;
    start = comma + 1;
  }
}

bool ParseNumber(std::string_view text, double* out) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size();
}

Status BadLine(size_t line, const std::string& why) {
  return Status::InvalidArgument("metrics.csv line " + std::to_string(line) + ": " + why);
}

// metrics.csv names its metric but not its direction: accuracy is the one
// fl-sim metric where higher is better (bits per byte and losses go down).
bool HigherIsBetter(const std::string& metric_name) { return metric_name == "accuracy"; }

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string FormatBytes(double bytes) {
  char buf[32];
  if (bytes >= 1e9) {
    std::snprintf(buf, sizeof(buf), "%.3g GB", bytes / 1e9);
  } else if (bytes >= 1e6) {
    std::snprintf(buf, sizeof(buf), "%.3g MB", bytes / 1e6);
  } else if (bytes >= 1e3) {
    std::snprintf(buf, sizeof(buf), "%.3g kB", bytes / 1e3);
  } else {
    std::snprintf(buf, sizeof(buf), "%.0f B", bytes);
  }
  return buf;
}

constexpr const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                   "#9467bd", "#8c564b", "#e377c2", "#17becf"};

std::string FormatSeconds(double seconds) {
  char buf[32];
  if (seconds >= 3600) {
    std::snprintf(buf, sizeof(buf), "%.3g h", seconds / 3600);
  } else if (seconds >= 60) {
    std::snprintf(buf, sizeof(buf), "%.3g min", seconds / 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%.3g s", seconds);
  }
  return buf;
}

}  // namespace

bool RunCurve::HasSimTime() const {
  if (points.empty()) return false;
  for (const RunCurvePoint& p : points) {
    if (!std::isfinite(p.sim_time_s)) return false;
  }
  return true;
}

Result<RunCurve> ParseRunCurve(std::string_view csv, std::string label) {
  RunCurve curve;
  curve.label = std::move(label);
  std::istringstream in{std::string(csv)};
  std::string line;
  if (!std::getline(in, line)) return BadLine(1, "empty file");
  const std::vector<std::string_view> header = SplitCsvLine(line);
  auto column = [&](std::string_view name) -> int {
    auto it = std::find(header.begin(), header.end(), name);
    return it == header.end() ? -1 : static_cast<int>(it - header.begin());
  };
  const int round_col = column("round");
  const int up_col = column("bytes_up");
  const int clients_col = column("clients");
  const int sim_col = column("sim_time_s");  // -1 in runs from before the virtual clock
  if (round_col != 0 || header.size() < 2 || up_col < 0 || clients_col < 0) {
    return BadLine(1,
                   "not an fl-sim metrics.csv header (needs round, <metric>, bytes_up, "
                   "clients): '" +
                       line + "'");
  }
  curve.metric_name = std::string(header[1]);
  size_t line_no = 1;
  double cumulative = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    const std::vector<std::string_view> fields = SplitCsvLine(line);
    if (fields.size() != header.size()) {
      return BadLine(line_no, std::to_string(fields.size()) + " fields, the header has " +
                                  std::to_string(header.size()));
    }
    double round = 0, up = 0, clients = 0;
    if (!ParseNumber(fields[round_col], &round) || !ParseNumber(fields[up_col], &up) ||
        !ParseNumber(fields[clients_col], &clients) || round < 1 || up < 0 || clients < 0) {
      return BadLine(line_no, "round, bytes_up or clients is not a valid number");
    }
    RunCurvePoint p;
    p.round = static_cast<uint64_t>(round);
    if (!curve.points.empty() && p.round <= curve.points.back().round) {
      return BadLine(line_no, "rounds must increase");
    }
    p.metric = kNaN;
    if (!fields[1].empty() && (!ParseNumber(fields[1], &p.metric) || !std::isfinite(p.metric))) {
      return BadLine(line_no, "the metric is not a finite number");
    }
    if (sim_col >= 0 && !fields[sim_col].empty()) {
      if (!ParseNumber(fields[sim_col], &p.sim_time_s) || !std::isfinite(p.sim_time_s) ||
          p.sim_time_s < 0) {
        return BadLine(line_no, "sim_time_s is not a finite number >= 0");
      }
      if (!curve.points.empty() && p.sim_time_s < curve.points.back().sim_time_s) {
        return BadLine(line_no, "sim_time_s must not decrease");
      }
    }
    p.upload_bytes_per_client = clients > 0 ? up / clients : 0;
    cumulative += p.upload_bytes_per_client;
    p.cumulative_upload_per_client = cumulative;
    curve.points.push_back(p);
  }
  if (curve.points.empty()) return BadLine(line_no, "no rounds");
  return curve;
}

Result<std::string> CompareRunsSvg(const std::vector<RunCurve>& runs, const std::string& title) {
  if (runs.empty()) return Status::InvalidArgument("no runs to compare");
  for (const RunCurve& r : runs) {
    if (r.metric_name != runs[0].metric_name) {
      return Status::InvalidArgument("runs report different metrics: " + runs[0].metric_name +
                                     " (" + runs[0].label + ") and " + r.metric_name + " (" +
                                     r.label + ")");
    }
  }
  const bool fraction = runs[0].metric_name == "accuracy";
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  double max_round = 1, min_bytes = std::numeric_limits<double>::infinity(), max_bytes = 0;
  // The simulated-time panel needs every run on the clock: one without it would be
  // missing from that panel and the comparison would mislead.
  bool sim_panel = true;
  double max_sim = 0;
  for (const RunCurve& r : runs) {
    sim_panel = sim_panel && r.HasSimTime();
    for (const RunCurvePoint& p : r.points) {
      if (std::isfinite(p.sim_time_s)) max_sim = std::max(max_sim, p.sim_time_s);
      max_round = std::max(max_round, static_cast<double>(p.round));
      if (p.cumulative_upload_per_client > 0) {
        min_bytes = std::min(min_bytes, p.cumulative_upload_per_client);
        max_bytes = std::max(max_bytes, p.cumulative_upload_per_client);
      }
      if (std::isfinite(p.metric)) {
        lo = std::min(lo, p.metric);
        hi = std::max(hi, p.metric);
      }
    }
  }
  if (!(lo <= hi)) lo = 0, hi = 1;
  const double pad = std::max((hi - lo) * 0.05, 1e-9);
  lo -= pad;
  hi += pad;
  if (!(min_bytes <= max_bytes)) min_bytes = 1, max_bytes = 10;
  // Whole decades around the byte range.
  const double log_lo = std::floor(std::log10(min_bytes));
  const double log_hi = std::max(log_lo + 1, std::ceil(std::log10(max_bytes)));

  constexpr double kPanelW = 420, kPanelH = 320, kLeft = 70, kGap = 70, kTop = 50, kBottom = 60;
  const int panels = sim_panel ? 3 : 2;
  const double width = kLeft + panels * kPanelW + (panels - 1) * kGap + 30;
  const double height = kTop + kPanelH + kBottom + 22.0 * static_cast<double>(runs.size());
  const double x0[3] = {kLeft, kLeft + kPanelW + kGap, kLeft + 2 * (kPanelW + kGap)};
  if (!(max_sim > 0)) max_sim = 1;
  auto y = [&](double v) { return kTop + kPanelH * (1.0 - (v - lo) / (hi - lo)); };
  auto x_round = [&](double r) {
    return x0[0] + (max_round <= 1 ? kPanelW / 2 : (r - 1) / (max_round - 1) * kPanelW);
  };
  auto x_bytes = [&](double b) {
    return x0[1] + (std::log10(b) - log_lo) / (log_hi - log_lo) * kPanelW;
  };
  auto x_sim = [&](double t) { return x0[2] + t / max_sim * kPanelW; };

  char buf[320];
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
    << "\" viewBox=\"0 0 " << width << ' ' << height
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << width / 2 << "\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">"
    << Escape(title) << "</text>\n";
  for (int panel = 0; panel < panels; ++panel) {
    for (int i = 0; i <= 5; ++i) {
      const double v = lo + (hi - lo) * i / 5.0;
      std::snprintf(buf, sizeof(buf),
                    "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                    "stroke=\"#ddd\"/>"
                    "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.4g%s</text>\n",
                    x0[panel], y(v), x0[panel] + kPanelW, y(v), x0[panel] - 6, y(v) + 4,
                    fraction ? v * 100 : v, fraction ? "%" : "");
      s << buf;
    }
    std::snprintf(buf, sizeof(buf),
                  "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                  "fill=\"none\" "
                  "stroke=\"#333\"/>\n",
                  x0[panel], kTop, kPanelW, kPanelH);
    s << buf;
  }
  const double step = std::max(1.0, std::ceil(max_round / 10));
  for (double r = 1; r <= max_round; r += step) {
    std::snprintf(buf, sizeof(buf),
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n", x_round(r),
                  kTop + kPanelH + 18, r);
    s << buf;
  }
  for (double e = log_lo; e <= log_hi; e += 1) {
    const double b = std::pow(10.0, e);
    std::snprintf(buf, sizeof(buf),
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                  "stroke=\"#eee\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                  x_bytes(b), kTop, x_bytes(b), kTop + kPanelH, x_bytes(b), kTop + kPanelH + 18,
                  FormatBytes(b).c_str());
    s << buf;
  }
  std::snprintf(buf, sizeof(buf),
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">round</text>"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">uploaded per client "
                "(cumulative, log scale)</text>"
                "<text transform=\"translate(18 %.1f) rotate(-90)\" "
                "text-anchor=\"middle\">%s</text>\n",
                x0[0] + kPanelW / 2, kTop + kPanelH + 40, x0[1] + kPanelW / 2, kTop + kPanelH + 40,
                kTop + kPanelH / 2, Escape(runs[0].metric_name).c_str());
  s << buf;
  if (sim_panel) {
    for (int i = 0; i <= 5; ++i) {
      const double t = max_sim * i / 5.0;
      std::snprintf(buf, sizeof(buf),
                    "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                    "stroke=\"#eee\"/>"
                    "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                    x_sim(t), kTop, x_sim(t), kTop + kPanelH, x_sim(t), kTop + kPanelH + 18,
                    FormatSeconds(t).c_str());
      s << buf;
    }
    std::snprintf(buf, sizeof(buf),
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">simulated time "
                  "(virtual clock)</text>\n",
                  x0[2] + kPanelW / 2, kTop + kPanelH + 40);
    s << buf;
  }
  for (size_t i = 0; i < runs.size(); ++i) {
    const char* color = kColors[i % std::size(kColors)];
    std::ostringstream by_round, by_bytes, by_sim;
    for (const RunCurvePoint& p : runs[i].points) {
      if (!std::isfinite(p.metric)) continue;
      std::snprintf(buf, sizeof(buf), "%.1f,%.1f ", x_round(static_cast<double>(p.round)),
                    y(p.metric));
      by_round << buf;
      if (p.cumulative_upload_per_client > 0) {
        std::snprintf(buf, sizeof(buf), "%.1f,%.1f ", x_bytes(p.cumulative_upload_per_client),
                      y(p.metric));
        by_bytes << buf;
      }
      if (sim_panel) {
        std::snprintf(buf, sizeof(buf), "%.1f,%.1f ", x_sim(p.sim_time_s), y(p.metric));
        by_sim << buf;
      }
    }
    std::vector<std::string> series = {by_round.str(), by_bytes.str()};
    if (sim_panel) series.push_back(by_sim.str());
    for (const std::string& points : series) {
      s << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\" points=\""
        << points << "\"/>\n";
    }
    const double ly = kTop + kPanelH + kBottom + 22.0 * static_cast<double>(i);
    std::snprintf(buf, sizeof(buf),
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                  "stroke-width=\"2\"/><text x=\"%.1f\" y=\"%.1f\">",
                  kLeft, ly, kLeft + 24, ly, color, kLeft + 30, ly + 4);
    s << buf << Escape(runs[i].label) << "</text>\n";
  }
  s << "</svg>\n";
  return s.str();
}

std::string CompareRunsTable(const std::vector<RunCurve>& runs) {
  std::ostringstream out;
  char buf[512];
  std::snprintf(buf, sizeof(buf), "%-36s %6s %10s %10s %10s %14s %14s %10s\n", "run", "rounds",
                "first", "last", "best", "up/client/rd", "up/client", "sim time");
  out << buf;
  for (const RunCurve& r : runs) {
    const bool higher = HigherIsBetter(r.metric_name);
    double first = kNaN, last = kNaN, best = kNaN;
    for (const RunCurvePoint& p : r.points) {
      if (!std::isfinite(p.metric)) continue;
      if (!std::isfinite(first)) first = p.metric;
      last = p.metric;
      if (!std::isfinite(best) || (higher ? p.metric > best : p.metric < best)) best = p.metric;
    }
    const double total = r.points.back().cumulative_upload_per_client;
    const double sim = r.points.back().sim_time_s;
    std::snprintf(buf, sizeof(buf), "%-36s %6llu %10.4g %10.4g %10.4g %14.0f %14.0f %10s\n",
                  r.label.c_str(), static_cast<unsigned long long>(r.points.back().round), first,
                  last, best, total / static_cast<double>(r.points.size()), total,
                  std::isfinite(sim) ? FormatSeconds(sim).c_str() : "-");
    out << buf;
  }
  return out.str();
}

}  // namespace fl::internal
