// strata/schedule/memory_plan.hpp — the bytes a schedule will need on each tier, up front.
//
// Before the first step the executor adds up what it will hold on each tier of this rank —
// gathered-parameter buffers, shard rings, gradient buffers, shards at home, the staging ring —
// from the layer sizes, the world size, the stage and the lookahead depth. The plan prints as a
// table, and a plan that does not fit a tier's budget is refused before anything runs, with the
// numbers, instead of an out-of-memory error in the middle of step 900. Tests check that the
// measured peak of each tier never exceeds the plan.
#pragma once

#include <strata/exec/context.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <string>
#include <vector>

STRATA_NAMESPACE_BEGIN

class memory_plan {
public:
  struct line {
    tier_id tier;
    std::string what;
    std::size_t bytes;
  };

  void add(tier_id t, std::string what, std::size_t bytes) {
    lines_.push_back({t, std::move(what), bytes});
    total_[static_cast<std::size_t>(t)] += bytes;
  }
  /// One line per tier on which the context already holds memory (its staging ring, buffers
  /// of other components): a plan made beside them must count them.
  void add_held_by(const context& ctx) {
    for (const tier_info& t : ctx.tiers().all())
      if (const std::size_t held = ctx.budget(t.id).used())
        add(t.id, "already held by the context (staging ring, ...)", held);
  }
  /// The NVMe store's bounce buffers (pinned: one per IO queue, io-read and io-write), which
  /// every component with a file home reads and writes through. The context has one store, so
  /// the line is added once however many components ask (here or through add(part)).
  void add_file_home_buffers(const context& ctx) {
    if (has_file_buffers_) return;
    const std::size_t block = std::max<std::size_t>(ctx.config().nvme_checksum_block, 1 << 20);
    add(tier_id::pinned, file_buffers_line, 2 * block);
    has_file_buffers_ = true;
  }
  /// Every line of `part`, appended (a component's own plan into a larger whole; the store's
  /// bounce buffers once: see above).
  void add(const memory_plan& part) {
    for (const line& l : part.lines_) {
      if (l.what == file_buffers_line) {
        if (has_file_buffers_) continue;
        has_file_buffers_ = true;
      }
      add(l.tier, l.what, l.bytes);
    }
  }

  /// True when every line of `part` is also a line of this plan (each matched once): a part
  /// that was planned into this one, such as an optimizer's lines handed to the executor
  /// before its check (zero_executor's plan extension), need not be added or checked again.
  bool includes(const memory_plan& part) const {
    std::vector<bool> used(lines_.size(), false);
    for (const line& p : part.lines_) {
      std::size_t i = 0;
      while (i < lines_.size() && (used[i] || lines_[i].tier != p.tier ||
                                   lines_[i].bytes != p.bytes || lines_[i].what != p.what))
        ++i;
      if (i == lines_.size()) return false;
      used[i] = true;
    }
    return true;
  }

  /// True when no tier of `ctx` has held more than this plan's peak for it (measured peaks,
  /// since the budgets' last reset_peak): the check that a plan told the truth.
  bool covers_peaks(const context& ctx) const {
    for (const tier_info& t : ctx.tiers().all())
      if (ctx.budget(t.id).peak() > peak(t.id)) return false;
    return true;
  }

  /// Planned peak bytes on tier t.
  std::size_t peak(tier_id t) const noexcept { return total_[static_cast<std::size_t>(t)]; }
  const std::vector<line>& lines() const noexcept { return lines_; }

  /// The table: one row per item, a total per tier against its budget; tiers fastest first
  /// and named as the context's tier list names them (by id without a context).
  std::string to_string(const context* ctx = nullptr) const {
    std::string s;
    char row[256];
    for (const tier_id tier : tiers_in_order(ctx)) {
      const std::size_t t = static_cast<std::size_t>(tier);
      if (total_[t] == 0) continue;
      const char* name = ctx ? ctx->tiers().name(tier) : tier_name(tier);
      for (auto& l : lines_)
        if (l.tier == tier) {
          std::snprintf(row, sizeof row, "  %-18s %-48s %s\n", name, l.what.c_str(),
                        format_bytes(l.bytes).c_str());
          s += row;
        }
      std::string budget = "";
      if (ctx) {
        const auto& b = ctx->budget(tier);
        budget = b.limit() == tier_budget::unlimited ? "  (budget unlimited)"
                                                     : "  (budget " + format_bytes(b.limit()) + ")";
      }
      std::snprintf(row, sizeof row, "  %-18s %-48s %s%s\n", name, "= planned peak",
                    format_bytes(total_[t]).c_str(), budget.c_str());
      s += row;
    }
    return s;
  }

  /// Refuses a plan that does not fit: throws out_of_budget naming the tier, the planned peak
  /// and the budget, with the whole table in the message. (What the context already held when
  /// the plan was made — the staging ring — is a line of the plan, so peak <= budget is the
  /// whole test.)
  void check(context& ctx, std::string_view what) const {
    for (const tier_id tier : tiers_in_order(&ctx)) {
      const std::size_t t = static_cast<std::size_t>(tier);
      auto& b = ctx.budget(tier);
      if (total_[t] > b.limit())
        throw out_of_budget("memory plan of '" + std::string(what) + "' refused before the "
                            "first step: tier '" + b.tier_name() + "' needs " +
                                format_bytes(total_[t]) + ", its budget is " +
                                format_bytes(b.limit()) + "\n" + to_string(&ctx),
                            b.tier_name(), total_[t], b.limit(), b.limit());
    }
    for (const line& l : lines_) ctx.tiers().position(l.tier);  // refuses a tier ctx lacks
  }

private:
  // The context's tiers fastest first; without a context, every id that has a line.
  static std::vector<tier_id> tiers_in_order(const context* ctx) {
    std::vector<tier_id> order;
    if (ctx)
      for (const tier_info& t : ctx->tiers().all()) order.push_back(t.id);
    else
      for (std::size_t t = 0; t < tier_table::id_space; ++t) order.push_back(static_cast<tier_id>(t));
    return order;
  }

  static constexpr const char* file_buffers_line = "NVMe bounce buffers (io-read, io-write)";

  std::vector<line> lines_;
  bool has_file_buffers_ = false;
  std::array<std::size_t, tier_table::id_space> total_{};  // by tier id
};

STRATA_NAMESPACE_END
