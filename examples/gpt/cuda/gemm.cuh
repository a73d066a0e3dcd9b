// examples/gpt/cuda/gemm.cuh — the mini-GPT's matmuls on cuBLASLt.
//
// What this is: gemm_engine (one cublasLt handle and one workspace, shared by every matmul of
// a model), a column-major gemm() over it, and the three row-major products of a Linear layer
// that the model calls — forward (with the bias added by cuBLASLt's BIAS epilogue), the input
// gradient and the weight gradient — plus matmul_backward, which runs both and the bias
// gradient (kernels.cuh's column sums).
// What it is not: attention's products (attention.cuh computes its own tiles), or a general
// BLAS wrapper: only the type combinations below are used.
//
// Types: inputs X (float or bf16), accumulation always fp32 (CUBLAS_COMPUTE_32F: with float
// inputs this is true fp32, no TF32, which is what lets the tests compare with the host
// model tightly). Activation outputs are X; weight gradients are fp32 (bf16 A and B with an
// fp32 C/D is one of cuBLASLt's supported combinations), so gradients of the fp32 master
// weights never pass through bf16 on their way out of a GEMM.
//
// Row-major to column-major: a row-major (R, K) matrix is the column-major (K, R) matrix with
// leading dimension K, i.e. its transpose. So with weight (OC, C) row-major as nn.Linear keeps
// it and N = B*T rows:
//   forward  out (N,OC) = inp · W^T     <=>  out^T (OC,N) = W (OC,C) · inp^T (C,N)
//   dinp     dinp (N,C) = dout · W      <=>  dinp^T (C,N) = W^T (C,OC) · dout^T (OC,N)
//   dweight  dW (OC,C) = dout^T · inp   <=>  dW^T (C,OC)  = inp^T (C,N) · dout (N,OC)
// Errors: cuBLASLt failures throw gpt::gpu::cublas_error naming the product, its shape and
// types, and the status name (CUBLAS_STATUS_NOT_SUPPORTED, ...).
#pragma once

#include "common.cuh"
#include "kernels.cuh"

#include <cublasLt.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>

namespace gpt::gpu {

class cublas_error : public std::runtime_error {
public:
  cublas_error(cublasStatus_t status, const std::string& what)
      : std::runtime_error(what + ": " + cublasLtGetStatusName(status) + " (" +
                           cublasLtGetStatusString(status) + ")"),
        status_(status) {}
  cublasStatus_t status() const noexcept { return status_; }

private:
  cublasStatus_t status_;
};

inline void check_cublas(cublasStatus_t status, const std::string& what) {
  if (status != CUBLAS_STATUS_SUCCESS) throw cublas_error(status, what);
}

/// One cuBLASLt handle, its workspace, and the algorithms the heuristic chose so far. Not
/// thread-safe: one engine per stream of work.
class gemm_engine {
public:
  /// 32 MiB of workspace: what cuBLAS recommends for Hopper.
  explicit gemm_engine(std::size_t workspace_bytes = std::size_t{32} << 20)
      : workspace_(workspace_bytes, "cuBLASLt workspace") {
    check_cublas(cublasLtCreate(&handle_), "cublasLtCreate");
  }
  ~gemm_engine() {
    if (handle_ != nullptr) cublasLtDestroy(handle_);
  }
  gemm_engine(const gemm_engine&) = delete;
  gemm_engine& operator=(const gemm_engine&) = delete;

  /// Column-major D (m,n) = op(A) op(B) + beta * D, plus bias (m) on every column when bias
  /// is not null (bias has D's type). A is (k,m) if trans_a else (m,k), B is (n,k) if trans_b
  /// else (k,n), each with its leading dimension. D may be read (beta != 0): it is also C.
  /// `what` names the product in errors. Asynchronous on `stream`.
  void gemm(const char* what, bool trans_a, bool trans_b, int m, int n, int k, const void* A,
            cudaDataType_t a_type, int lda, const void* B, cudaDataType_t b_type, int ldb,
            float beta, void* D, cudaDataType_t d_type, int ldd, const void* bias,
            cudaStream_t stream) {
    if (m <= 0 || n <= 0 || k <= 0) return;  // nothing to multiply (k = 0 would mean D = beta D)
    const std::string where = describe(what, trans_a, trans_b, m, n, k, a_type, lda, b_type, ldb,
                                       d_type, ldd, beta, bias != nullptr);
    descriptors d;  // destroyed on every path out
    check_cublas(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), where);
    const cublasOperation_t ta = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t tb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    check_cublas(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)),
                 where);
    check_cublas(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)),
                 where);
    if (bias != nullptr) {
      const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
      check_cublas(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                                  sizeof(epilogue)),
                   where);
      check_cublas(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                  sizeof(bias)),
                   where);
    }
    check_cublas(cublasLtMatrixLayoutCreate(&d.a, a_type, trans_a ? k : m, trans_a ? m : k, lda),
                 where);
    check_cublas(cublasLtMatrixLayoutCreate(&d.b, b_type, trans_b ? n : k, trans_b ? k : n, ldb),
                 where);
    check_cublas(cublasLtMatrixLayoutCreate(&d.d, d_type, m, n, ldd), where);

    // The heuristic assumes 256-byte aligned pointers unless told otherwise; tensors carved
    // out of a flat parameter array are often less aligned, so say what they really are.
    check_cublas(cublasLtMatmulPreferenceCreate(&d.pref), where);
    const std::uint64_t ws = workspace_.bytes();
    check_cublas(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                      &ws, sizeof(ws)),
                 where);
    const std::uint32_t align_a = alignment_of(A), align_b = alignment_of(B), align_d = alignment_of(D);
    check_cublas(cublasLtMatmulPreferenceSetAttribute(
                     d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)),
                 where);
    check_cublas(cublasLtMatmulPreferenceSetAttribute(
                     d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)),
                 where);
    check_cublas(cublasLtMatmulPreferenceSetAttribute(
                     d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d, sizeof(align_d)),
                 where);
    check_cublas(cublasLtMatmulPreferenceSetAttribute(
                     d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, sizeof(align_d)),
                 where);

    // The heuristic's choice depends only on what `where` and the alignments describe, so it
    // is asked once per distinct product (a model has a few dozen) and remembered.
    const std::string key = where + " align " + std::to_string(align_a) + "/" +
                            std::to_string(align_b) + "/" + std::to_string(align_d);
    auto it = algos_.find(key);
    if (it == algos_.end()) {
      cublasLtMatmulHeuristicResult_t heuristic{};
      int found = 0;
      check_cublas(cublasLtMatmulAlgoGetHeuristic(handle_, d.op, d.a, d.b, d.d, d.d, d.pref, 1,
                                                  &heuristic, &found),
                   where);
      if (found == 0)
        throw cublas_error(CUBLAS_STATUS_NOT_SUPPORTED, where + ": no cuBLASLt algorithm");
      it = algos_.emplace(key, heuristic.algo).first;
    }

    const float alpha = 1.0f;
    check_cublas(cublasLtMatmul(handle_, d.op, &alpha, A, d.a, B, d.b, &beta, D, d.d, D, d.d,
                                &it->second, workspace_.data(), workspace_.bytes(), stream),
                 where);
  }

private:
  struct descriptors {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    descriptors() = default;
    descriptors(const descriptors&) = delete;
    descriptors& operator=(const descriptors&) = delete;
    ~descriptors() {
      if (pref) cublasLtMatmulPreferenceDestroy(pref);
      if (d) cublasLtMatrixLayoutDestroy(d);
      if (b) cublasLtMatrixLayoutDestroy(b);
      if (a) cublasLtMatrixLayoutDestroy(a);
      if (op) cublasLtMatmulDescDestroy(op);
    }
  };

  // The largest power of two (<= 256) that divides the address.
  static std::uint32_t alignment_of(const void* p) {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    std::uint32_t align = 256;
    while (align > 1 && a % align != 0) align /= 2;
    return align;
  }

  static std::string describe(const char* what, bool ta, bool tb, int m, int n, int k,
                              cudaDataType_t at, int lda, cudaDataType_t bt, int ldb,
                              cudaDataType_t dt, int ldd, float beta, bool bias) {
    return std::string("cuBLASLt ") + what + " (column-major m " + std::to_string(m) + ", n " +
           std::to_string(n) + ", k " + std::to_string(k) + "; A " + cuda_type_name(at) +
           (ta ? " T" : " N") + " ld " + std::to_string(lda) + ", B " + cuda_type_name(bt) +
           (tb ? " T" : " N") + " ld " + std::to_string(ldb) + ", D " + cuda_type_name(dt) +
           " ld " + std::to_string(ldd) + ", beta " + std::to_string(beta) +
           (bias ? ", bias epilogue" : "") + ")";
  }

  cublasLtHandle_t handle_ = nullptr;
  device_array<unsigned char> workspace_;
  std::map<std::string, cublasLtMatmulAlgo_t> algos_;  // heuristic answers, by product
};

// ---------------------------------------------------------------------------------------------
// A Linear layer, row-major, weight (OC, C) as nn.Linear stores it.
// ---------------------------------------------------------------------------------------------

/// out (N,OC) = inp (N,C) · weight^T + bias (OC); bias may be null. ld_out: out's row stride
/// (>= OC; 0 means OC), e.g. a vocab padded to a multiple of 64.
template <class X>
void matmul_forward(gemm_engine& g, X* out, const X* inp, const X* weight, const X* bias, int N,
                    int C, int OC, cudaStream_t stream, int ld_out = 0) {
  constexpr cudaDataType_t t = cuda_type_of<X>();
  g.gemm("matmul_forward", true, false, OC, N, C, weight, t, C, inp, t, C, 0.0f, out, t,
         ld_out > 0 ? ld_out : OC, bias, stream);
}

/// dinp (N,C) = (or +=) dout (N,OC) · weight; ld_dout: dout's row stride (0 means OC).
template <class X>
void matmul_backward_input(gemm_engine& g, X* dinp, const X* dout, const X* weight, int N, int C,
                           int OC, bool accumulate, cudaStream_t stream, int ld_dout = 0) {
  constexpr cudaDataType_t t = cuda_type_of<X>();
  g.gemm("matmul_backward_input", false, false, C, N, OC, weight, t, C, dout, t,
         ld_dout > 0 ? ld_dout : OC, accumulate ? 1.0f : 0.0f, dinp, t, C, nullptr, stream);
}

/// dweight (OC,C) fp32 = (or +=) dout^T (OC,N) · inp (N,C); ld_dout as above.
template <class X>
void matmul_backward_weight(gemm_engine& g, float* dweight, const X* dout, const X* inp, int N,
                            int C, int OC, bool accumulate, cudaStream_t stream, int ld_dout = 0) {
  constexpr cudaDataType_t t = cuda_type_of<X>();
  g.gemm("matmul_backward_weight", false, true, C, OC, N, inp, t, C, dout, t,
         ld_dout > 0 ? ld_dout : OC, accumulate ? 1.0f : 0.0f, dweight, CUDA_R_32F, C, nullptr,
         stream);
}

/// The whole backward of a Linear layer: dinp (N,C) (skipped when null), dweight (OC,C) and
/// dbias (OC) (skipped when null), both fp32. accumulate_dinp / accumulate_dparams choose
/// between = and +=. workspace: colsum_workspace_floats(N, OC) floats (for dbias).
template <class X>
void matmul_backward(gemm_engine& g, X* dinp, float* dweight, float* dbias, float* workspace,
                     const X* dout, const X* inp, const X* weight, int N, int C, int OC,
                     bool accumulate_dinp, bool accumulate_dparams, cudaStream_t stream) {
  if (dinp != nullptr)
    matmul_backward_input(g, dinp, dout, weight, N, C, OC, accumulate_dinp, stream);
  matmul_backward_weight(g, dweight, dout, inp, N, C, OC, accumulate_dparams, stream);
  if (dbias != nullptr) bias_backward(dbias, workspace, dout, N, OC, OC, accumulate_dparams, stream);
}

}  // namespace gpt::gpu
