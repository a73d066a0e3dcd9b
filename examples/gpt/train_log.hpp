// examples/gpt/train_log.hpp — what a training run leaves behind: the loss log and its picture.
//
// What this is: a CSV of one row per step (step, train loss, validation loss when measured,
// learning rate, gradient norm, tokens/s, ms) and an SVG line chart of the losses, written from
// that log at the end (and whenever asked), so a run shows its curve without any plotting tool.
// What it is not: a metrics framework.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace gpt {

struct step_record {
  int step = 0;
  double train_loss = 0;
  double val_loss = std::numeric_limits<double>::quiet_NaN();  // NaN: not measured this step
  double lr = 0;
  double grad_norm = 0;
  double tokens_per_s = 0;
  double ms = 0;
};

class train_log {
public:
  /// Opens `csv_path` for writing (truncating) and writes the header row. A resumed run passes
  /// the step it resumed from as `kept_through`: the rows of steps 1..kept_through already in
  /// the file (the interrupted run's) are kept, so the log and its curve cover the whole run.
  explicit train_log(std::string csv_path, int kept_through = 0) : path_(std::move(csv_path)) {
    std::vector<step_record> kept;
    if (kept_through > 0) kept = read_rows(path_, kept_through);
    out_.open(path_);
    if (!out_) throw std::runtime_error("train log: cannot write '" + path_ + "'");
    out_ << "step,train_loss,val_loss,lr,grad_norm,tokens_per_s,ms\n";
    for (const auto& r : kept) add(r);
  }

  void add(const step_record& r) {
    records_.push_back(r);
    char line[256];
    std::snprintf(line, sizeof line, "%d,%.6f,%s,%.6g,%.6g,%.1f,%.2f\n", r.step, r.train_loss,
                  std::isnan(r.val_loss) ? "" : std::to_string(r.val_loss).c_str(), r.lr,
                  r.grad_norm, r.tokens_per_s, r.ms);
    out_ << line;
    out_.flush();  // a run stopped half way still leaves its log
  }

  const std::vector<step_record>& records() const noexcept { return records_; }

  /// The rows of steps 1..through of a log this class wrote (none when there is no such file;
  /// a row that does not parse ends the reading: what follows it is not trusted).
  static std::vector<step_record> read_rows(const std::string& path, int through) {
    std::vector<step_record> rows;
    std::ifstream in(path);
    std::string line;
    if (!std::getline(in, line)) return rows;  // the header
    while (std::getline(in, line)) {
      step_record r;
      char val[64] = "";
      if (std::sscanf(line.c_str(), "%d,%lf,%63[^,],%lf,%lf,%lf,%lf", &r.step, &r.train_loss, val,
                      &r.lr, &r.grad_norm, &r.tokens_per_s, &r.ms) == 7) {
        r.val_loss = std::strtod(val, nullptr);
      } else if (std::sscanf(line.c_str(), "%d,%lf,,%lf,%lf,%lf,%lf", &r.step, &r.train_loss,
                             &r.lr, &r.grad_norm, &r.tokens_per_s, &r.ms) != 6) {
        break;
      }
      if (r.step < 1 || r.step > through) break;
      rows.push_back(r);
    }
    return rows;
  }
  const std::string& path() const noexcept { return path_; }

  /// The loss curves as an SVG picture: train loss (every step) and validation loss (the steps
  /// that measured it), loss on a linear axis from the smallest to the largest value seen.
  void write_svg(const std::string& svg_path, const std::string& title) const {
    std::ofstream svg(svg_path);
    if (!svg) throw std::runtime_error("train log: cannot write '" + svg_path + "'");
    constexpr double w = 720, h = 400, left = 60, right = 20, top = 40, bottom = 50;
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    int first = 0, last = 1;
    for (auto& r : records_) {
      for (double v : {r.train_loss, r.val_loss})
        if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
    }
    if (!records_.empty()) first = records_.front().step, last = records_.back().step;
    if (!(hi > lo)) lo = 0, hi = std::isfinite(hi) && hi > 0 ? hi : 1;
    if (last <= first) last = first + 1;
    auto x = [&](double step) { return left + (step - first) / (last - first) * (w - left - right); };
    auto y = [&](double loss) { return top + (hi - loss) / (hi - lo) * (h - top - bottom); };
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' "
                  "font-family='sans-serif' font-size='12'>\n<rect width='100%%' height='100%%' "
                  "fill='white'/>\n<text x='%.0f' y='22' font-size='14'>%s</text>\n",
                  w, h, left, escape(title).c_str());
    svg << buf;
    for (int k = 0; k <= 4; ++k) {  // horizontal grid with loss labels
      const double v = lo + (hi - lo) * k / 4.0;
      std::snprintf(buf, sizeof buf,
                    "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#ddd'/>"
                    "<text x='%.1f' y='%.1f' text-anchor='end'>%.2f</text>\n",
                    left, y(v), w - right, y(v), left - 6, y(v) + 4, v);
      svg << buf;
    }
    std::snprintf(buf, sizeof buf,
                  "<text x='%.1f' y='%.1f'>step %d</text><text x='%.1f' y='%.1f' "
                  "text-anchor='end'>step %d</text>\n",
                  left, h - bottom + 18, first, w - right, h - bottom + 18, last);
    svg << buf;
    auto polyline = [&](const char* colour, bool val) {
      std::string points;
      for (auto& r : records_) {
        const double v = val ? r.val_loss : r.train_loss;
        if (!std::isfinite(v)) continue;
        std::snprintf(buf, sizeof buf, "%.1f,%.1f ", x(r.step), y(v));
        points += buf;
      }
      if (points.empty()) return;
      svg << "<polyline fill='none' stroke='" << colour << "' stroke-width='1.5' points='"
          << points << "'/>\n";
    };
    polyline("#1f77b4", false);
    polyline("#d62728", true);
    std::snprintf(buf, sizeof buf,
                  "<text x='%.1f' y='%.1f' fill='#1f77b4'>train loss</text>"
                  "<text x='%.1f' y='%.1f' fill='#d62728'>validation loss</text>\n</svg>\n",
                  w - 250, h - 12, w - 150, h - 12);
    svg << buf;
  }

private:
  static std::string escape(const std::string& s) {
    std::string out;
    for (char c : s) {
      if (c == '<') out += "&lt;";
      else if (c == '>') out += "&gt;";
      else if (c == '&') out += "&amp;";
      else out += c;
    }
    return out;
  }

  std::string path_;
  std::ofstream out_;
  std::vector<step_record> records_;
};

/// Learning rate at `step` (0-based): linear warm-up over `warmup` steps to `max_lr`, then a
/// cosine decay to `min_lr` at `total` steps (GPT-2/3's schedule).
inline double learning_rate(int step, int warmup, int total, double max_lr, double min_lr) {
  if (step < warmup) return max_lr * (step + 1) / warmup;
  if (step >= total) return min_lr;
  const double progress = double(step - warmup) / std::max(1, total - warmup);
  return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + std::cos(3.14159265358979323846 * progress));
}

}  // namespace gpt
