// docs/api.md, "Optimizers": one AdamW update of a tensor with bf16 gradients and a bf16
// parameter copy written in the same pass.
#include "check.hpp"

#include <strata/strata.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

using namespace strata;

int main() {
  const std::size_t n = 1000;
  std::vector<float> master_(n, 1.0f), m_(n, 0.0f), v_(n, 0.0f);
  std::vector<bf16> grads_(n, to_bf16(0.5f)), copy_(n);
  std::span<float> master(master_), m(m_), v(v_);
  std::span<const bf16> grads(grads_);
  bf16* param_copy = copy_.data();
  const std::uint64_t step = 1;
  const float clip = 1.0f, loss_scale = 1.0f;

  // snippet-begin
  optim::adam_params h{.lr = 3e-4f, .beta2 = 0.95f, .weight_decay = 0.1f};   // AdamW by default
  auto k = optim::adam_step_scalars::make(h, /*t=*/step, /*grad multiplier=*/clip / loss_scale);
  optim::adam_update<bf16, bf16>(k, master, m, v, grads, param_copy);  // spans; copy: bf16*
  // snippet-end

  // Step 1 with bias correction moves every weight by about lr against its gradient (and decays
  // it by lr * wd): 1 - 3e-4 * (1 + 0.1).
  for (std::size_t i = 0; i < n; ++i) {
    snippet::check(master_[i] < 1.0f && master_[i] > 1.0f - 4e-4f, "one AdamW step of ~lr");
    snippet::check(to_float(copy_[i]) == to_float(to_bf16(master_[i])),
                   "the bf16 copy is the rounded master weight");
  }
}
