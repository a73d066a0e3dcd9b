// strata/exec/trace.hpp — what every queue did and when: spans, Chrome trace JSON, a summary.
//
// Each queue (compute, h2d, d2h, io-read, io-write, collectives) records a span per piece of work.
// The recorder writes them as Chrome trace JSON (open it in Perfetto or chrome://tracing) and
// summarises them: busy time per queue, and the fraction of wall time compute was busy — the
// number the overlap goals are written in. Tests assert on spans (does a copy overlap compute?),
// never on durations. Recording is thread-safe and can be switched off.
//
// CUDA build: work on a CUDA stream (context::compute) is timed by the stream itself, with a
// pair of timing events around it (begin_on / end_on), so tracing never stalls the stream on a
// host callback. Such a span becomes visible once its times are resolved: cudaEventElapsedTime
// against a reference event whose host time is known, converted to the recorder's clock. That
// happens as later spans are recorded, at context::synchronize, and whenever the spans are read
// (spans(), summarize(), write_chrome_json() wait for the device work they have spans for).
#pragma once

#include <strata/core/error.hpp>
#if STRATA_ENABLE_CUDA
#  include <strata/core/cuda_check.hpp>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

STRATA_NAMESPACE_BEGIN

enum class span_kind : std::uint8_t {
  compute, h2d, d2h, copy, io_read, io_write, all_gather, reduce_scatter, optimizer, other
};

constexpr const char* span_kind_name(span_kind k) noexcept {
  switch (k) {
  case span_kind::compute: return "compute";
  case span_kind::h2d: return "h2d";
  case span_kind::d2h: return "d2h";
  case span_kind::copy: return "copy";
  case span_kind::io_read: return "io-read";
  case span_kind::io_write: return "io-write";
  case span_kind::all_gather: return "all-gather";
  case span_kind::reduce_scatter: return "reduce-scatter";
  case span_kind::optimizer: return "optimizer";
  case span_kind::other: return "other";
  }
  return "?";
}

struct span {
  std::string queue;  // which queue ran it: one row in the trace viewer
  span_kind kind;
  std::string label;  // what it was: "fetch layer3.w", "compute layer 3"
  double begin_us, end_us;  // microseconds since the recorder's origin
};

struct trace_summary {
  double wall_us = 0;  // first begin to last end
  std::map<std::string, double> busy_us_by_queue;  // union of the queue's spans
  std::map<span_kind, double> busy_us_by_kind;
  double compute_fraction = 0;  // compute busy / wall

  std::string to_string() const {
    std::string s;
    char line[160];
    std::snprintf(line, sizeof line, "wall %.3f ms, compute busy %.1f%%\n", wall_us / 1000.0,
                  100.0 * compute_fraction);
    s += line;
    for (auto& [q, us] : busy_us_by_queue) {
      std::snprintf(line, sizeof line, "  %-12s busy %10.3f ms (%5.1f%% of wall)\n", q.c_str(),
                    us / 1000.0, wall_us > 0 ? 100.0 * us / wall_us : 0.0);
      s += line;
    }
    return s;
  }
};

/// The union of intervals as sorted, disjoint intervals.
inline std::vector<std::pair<double, double>> merge_intervals(
    std::vector<std::pair<double, double>> iv) {
  std::sort(iv.begin(), iv.end());
  std::vector<std::pair<double, double>> out;
  for (auto [b, e] : iv) {
    if (!out.empty() && b <= out.back().second)
      out.back().second = std::max(out.back().second, e);
    else
      out.emplace_back(b, e);
  }
  return out;
}

/// Total length of the union of intervals (overlapping spans on one queue count once).
inline double union_length(std::vector<std::pair<double, double>> iv) {
  double total = 0;
  for (auto [b, e] : merge_intervals(std::move(iv))) total += e - b;
  return total;
}

class trace_recorder {
public:
  explicit trace_recorder(bool enabled = true)
      : enabled_(enabled), origin_(std::chrono::steady_clock::now()) {}
#if STRATA_ENABLE_CUDA
  ~trace_recorder() {
    for (auto& p : pending_) cudaEventDestroy(p.begin), cudaEventDestroy(p.end);
    for (cudaEvent_t e : spare_events_) cudaEventDestroy(e);
    if (calibration_stream_) cudaStreamDestroy(calibration_stream_);
  }
#endif
  trace_recorder(const trace_recorder&) = delete;
  trace_recorder& operator=(const trace_recorder&) = delete;

  bool enabled() const noexcept { return enabled_; }
  void set_enabled(bool on) noexcept { enabled_ = on; }

  double now_us() const noexcept {
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - origin_)
        .count();
  }

  void record(std::string queue, span_kind kind, std::string label, double begin_us,
              double end_us) {
    record(std::move(queue), kind, std::move(label), begin_us, end_us, enabled_);
  }

  /// Records a span from construction to destruction.
  class scope {
  public:
    scope(trace_recorder& t, std::string queue, span_kind kind, std::string label)
        : t_(t), queue_(std::move(queue)), label_(std::move(label)), kind_(kind),
          begin_(t.now_us()) {}
    ~scope() { t_.record(std::move(queue_), kind_, std::move(label_), begin_, t_.now_us()); }
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;

  private:
    trace_recorder& t_;
    std::string queue_, label_;
    span_kind kind_;
    double begin_;
  };

#if STRATA_ENABLE_CUDA
private:
  struct reference_point;  // below

public:
  /// The start of a span of work on a CUDA stream: a timing event recorded on the stream.
  /// Empty (and free) while recording is off.
  class device_mark {
  public:
    device_mark() = default;
    device_mark(device_mark&& o) noexcept
        : event_(std::exchange(o.event_, nullptr)), reference_(std::move(o.reference_)) {}
    device_mark& operator=(device_mark&& o) noexcept {
      std::swap(event_, o.event_);
      std::swap(reference_, o.reference_);
      return *this;
    }
    ~device_mark() {
      if (event_) cudaEventDestroy(event_);
    }

  private:
    friend class trace_recorder;
    cudaEvent_t event_ = nullptr;
    std::shared_ptr<const reference_point> reference_;  // the host time of a point before it
  };

  /// Marks the start of a span on `stream` (the work launched on it after this call).
  [[nodiscard]] device_mark begin_on(cudaStream_t stream) {
    device_mark m;
    if (!enabled_) return m;
    m.reference_ = calibrate();
    m.event_ = take_event();
    check_cuda(cudaEventRecord(m.event_, stream), "trace: cudaEventRecord (span begin)");
    return m;
  }

  /// Ends the span started by `begin` at the current end of `stream`'s work. Its times are
  /// resolved later (see the top of this file); nothing here waits for the device.
  void end_on(cudaStream_t stream, device_mark&& begin, std::string queue, span_kind kind,
              std::string label) {
    if (!begin.event_) return;
    cudaEvent_t end = take_event();
    if (const cudaError_t r = cudaEventRecord(end, stream); r != cudaSuccess) {
      give_back(end);
      check_cuda(r, "trace: cudaEventRecord (span end)");
    }
    {
      std::lock_guard lock(device_mutex_);
      pending_.push_back({std::exchange(begin.event_, nullptr), end, std::move(begin.reference_),
                          std::move(queue), kind, std::move(label)});
    }
    resolve_device_spans(false);  // keeps the pending list as short as the work in flight
  }

  /// Turns the device spans whose work has ended into spans, in the order they were recorded
  /// (one still running holds back those after it); with `wait`, waits for all of them.
  /// A span whose work failed (a sticky CUDA error) cannot be timed and is dropped: the failure
  /// is reported by whoever waits on that work.
  void resolve_device_spans(bool wait) const {
    std::lock_guard lock(device_mutex_);
    std::vector<pending_span> keep;
    for (auto& p : pending_) {
      const bool done =
          wait ? (cudaEventSynchronize(p.end), true)
               : keep.empty() && cuda_query_done([&] { return cudaEventQuery(p.end); });
      if (!done) {
        keep.push_back(std::move(p));
        continue;
      }
      float since_ms = 0, took_ms = 0;
      const bool timed =
          cudaEventElapsedTime(&since_ms, p.reference->event, p.begin) == cudaSuccess &&
          cudaEventElapsedTime(&took_ms, p.begin, p.end) == cudaSuccess;
      if (timed) {
        const double begin_us = p.reference->host_us + 1e3 * since_ms;
        record(std::move(p.queue), p.kind, std::move(p.label), begin_us, begin_us + 1e3 * took_ms,
               true);
      } else {
        cudaGetLastError();  // the failure belongs to the work's waiter, not to the next check
      }
      give_back_locked(p.begin);
      give_back_locked(p.end);
    }
    pending_ = std::move(keep);
  }
#endif

  /// Every span recorded so far (in the CUDA build, after waiting for the device work of the
  /// spans recorded on streams).
  std::vector<span> spans() const {
#if STRATA_ENABLE_CUDA
    resolve_device_spans(true);
#endif
    std::lock_guard lock(mutex_);
    return spans_;
  }
  void clear() {
#if STRATA_ENABLE_CUDA
    resolve_device_spans(true);  // their events go back to the spares, their spans away
#endif
    std::lock_guard lock(mutex_);
    spans_.clear();
  }

  /// Busy time per queue and kind over the recorded spans (or those given).
  trace_summary summarize() const { return summarize(spans()); }
  static trace_summary summarize(const std::vector<span>& spans) {
    trace_summary s;
    if (spans.empty()) return s;
    double first = spans.front().begin_us, last = spans.front().end_us;
    std::map<std::string, std::vector<std::pair<double, double>>> by_queue;
    std::map<span_kind, std::vector<std::pair<double, double>>> by_kind;
    for (auto& sp : spans) {
      first = std::min(first, sp.begin_us);
      last = std::max(last, sp.end_us);
      by_queue[sp.queue].emplace_back(sp.begin_us, sp.end_us);
      by_kind[sp.kind].emplace_back(sp.begin_us, sp.end_us);
    }
    s.wall_us = last - first;
    for (auto& [q, iv] : by_queue) s.busy_us_by_queue[q] = union_length(iv);
    for (auto& [k, iv] : by_kind) s.busy_us_by_kind[k] = union_length(iv);
    auto c = s.busy_us_by_kind.find(span_kind::compute);
    s.compute_fraction = (c != s.busy_us_by_kind.end() && s.wall_us > 0) ? c->second / s.wall_us
                                                                          : 0.0;
    return s;
  }

  /// Time during which a span of kind `a` and a span of kind `b` were both running (exactly 0
  /// when they never overlap).
  static double overlap_us(const std::vector<span>& spans, span_kind a, span_kind b) {
    std::vector<std::pair<double, double>> ia, ib;
    for (auto& sp : spans) {
      if (sp.kind == a) ia.emplace_back(sp.begin_us, sp.end_us);
      if (sp.kind == b) ib.emplace_back(sp.begin_us, sp.end_us);
    }
    auto ma = merge_intervals(std::move(ia)), mb = merge_intervals(std::move(ib));
    double both = 0;
    for (std::size_t i = 0, j = 0; i < ma.size() && j < mb.size();) {
      const double lo = std::max(ma[i].first, mb[j].first);
      const double hi = std::min(ma[i].second, mb[j].second);
      if (hi > lo) both += hi - lo;
      (ma[i].second < mb[j].second ? i : j)++;
    }
    return both;
  }

  /// Writes Chrome trace JSON ("X" complete events, one thread row per queue).
  void write_chrome_json(const std::string& path) const {
    auto all = spans();
    std::FILE* f = std::fopen(path.c_str(), "w");
    if (!f) throw io_error("trace: cannot open '" + path + "' for writing");
    std::map<std::string, int> tids;
    for (auto& sp : all) tids.emplace(sp.queue, static_cast<int>(tids.size()) + 1);
    std::fputs("{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n", f);
    bool first = true;
    for (auto& [q, tid] : tids) {
      std::fprintf(f, "%s{\"ph\":\"M\",\"pid\":1,\"tid\":%d,\"name\":\"thread_name\","
                      "\"args\":{\"name\":\"%s\"}}",
                   first ? "" : ",\n", tid, escape(q).c_str());
      first = false;
    }
    for (auto& sp : all)
      std::fprintf(f, "%s{\"ph\":\"X\",\"pid\":1,\"tid\":%d,\"cat\":\"%s\",\"name\":\"%s\","
                      "\"ts\":%.3f,\"dur\":%.3f}",
                   first ? "" : ",\n", tids[sp.queue], span_kind_name(sp.kind),
                   escape(sp.label).c_str(), sp.begin_us, sp.end_us - sp.begin_us),
          first = false;
    std::fputs("\n]}\n", f);
    if (std::fclose(f) != 0) throw io_error("trace: writing '" + path + "' failed");
  }

private:
  // `on`: a device span started while recording was on is kept even if it was switched off
  // before its times were resolved.
  void record(std::string queue, span_kind kind, std::string label, double begin_us,
              double end_us, bool on) const {
    if (!on) return;
    std::lock_guard lock(mutex_);
    spans_.push_back({std::move(queue), kind, std::move(label), begin_us, end_us});
  }

#if STRATA_ENABLE_CUDA
  // A device timestamp whose host time is known: an event recorded on an idle stream of the
  // recorder's own (no implicit ordering with the legacy default stream) and waited for, so
  // the device stamped it between the two host clock readings around it; their midpoint is its
  // host time, within a few microseconds.
  struct reference_point {
    cudaEvent_t event = nullptr;
    double host_us = 0;
    ~reference_point() {
      if (event) cudaEventDestroy(event);
    }
  };

  struct pending_span {
    cudaEvent_t begin, end;
    std::shared_ptr<const reference_point> reference;
    std::string queue;
    span_kind kind;
    std::string label;
  };

  // cudaEventElapsedTime answers in float milliseconds: 24 bits are ~1 us at 10 s from the
  // reference, 250 us after an hour. A fresh reference every few seconds keeps every span
  // within microseconds (and the two clocks from drifting apart). Made on the calling thread's
  // device, which is the device of the streams it will time.
  static constexpr double reference_lifetime_us = 5e6;

  std::shared_ptr<const reference_point> calibrate() {
    std::lock_guard lock(device_mutex_);
    if (reference_ && now_us() - reference_->host_us < reference_lifetime_us) return reference_;
    if (!calibration_stream_)
      check_cuda(cudaStreamCreateWithFlags(&calibration_stream_, cudaStreamNonBlocking),
                 "trace: stream");
    auto ref = std::make_shared<reference_point>();
    check_cuda(cudaEventCreate(&ref->event), "trace: cudaEventCreate");
    const double before = now_us();
    check_cuda(cudaEventRecord(ref->event, calibration_stream_),
               "trace: cudaEventRecord (reference)");
    check_cuda(cudaEventSynchronize(ref->event), "trace: reference event");
    ref->host_us = (before + now_us()) / 2;
    reference_ = std::move(ref);
    return reference_;
  }

  // Timing events (no cudaEventDisableTiming), reused: one span costs two cudaEventRecord calls.
  cudaEvent_t take_event() {
    {
      std::lock_guard lock(device_mutex_);
      if (!spare_events_.empty()) {
        cudaEvent_t e = spare_events_.back();
        spare_events_.pop_back();
        return e;
      }
    }
    cudaEvent_t e = nullptr;
    check_cuda(cudaEventCreate(&e), "trace: cudaEventCreate");
    return e;
  }
  void give_back(cudaEvent_t e) const {
    std::lock_guard lock(device_mutex_);
    give_back_locked(e);
  }
  void give_back_locked(cudaEvent_t e) const {
    try {
      spare_events_.push_back(e);
    } catch (...) {
      cudaEventDestroy(e);
    }
  }

  mutable std::mutex device_mutex_;  // guards what follows
  mutable std::vector<pending_span> pending_;
  mutable std::vector<cudaEvent_t> spare_events_;
  std::shared_ptr<const reference_point> reference_;
  cudaStream_t calibration_stream_ = nullptr;
#endif

  static std::string escape(const std::string& in) {
    std::string out;
    for (char c : in) {
      if (c == '"' || c == '\\') out += '\\';
      if (static_cast<unsigned char>(c) < 0x20) continue;
      out += c;
    }
    return out;
  }

  bool enabled_;
  std::chrono::steady_clock::time_point origin_;
  mutable std::mutex mutex_;
  mutable std::vector<span> spans_;  // mutable: reading resolves pending device spans into it
};

STRATA_NAMESPACE_END
