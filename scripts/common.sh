# scripts/common.sh — sourced by scripts/{setup,test,demo,bench,gpu-deps,gpu-check}; not a program.
#
# Sets REPO_ROOT, and strata_pick_preset sets PRESET (cuda when nvcc is found, host otherwise;
# STRATA_PRESET=host|cuda overrides) and BUILD_DIR, putting /usr/local/cuda/bin on PATH when
# that is where nvcc lives.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

strata_log() { printf '%s\n' "$*" >&2; }

# Prints nvcc's path (PATH first, then /usr/local/cuda/bin); returns 1 when there is none.
strata_find_nvcc() {
  if command -v nvcc >/dev/null 2>&1; then
    command -v nvcc
  elif [[ -x /usr/local/cuda/bin/nvcc ]]; then
    echo /usr/local/cuda/bin/nvcc
  else
    return 1
  fi
}

strata_pick_preset() {
  local nvcc=""
  nvcc="$(strata_find_nvcc)" || nvcc=""
  if [[ -n "${STRATA_PRESET:-}" ]]; then
    PRESET="$STRATA_PRESET"
  elif [[ -n "$nvcc" ]]; then
    PRESET=cuda
  else
    PRESET=host
  fi
  if [[ "$PRESET" == cuda && -n "$nvcc" ]]; then
    case ":$PATH:" in
      *":$(dirname "$nvcc"):"*) ;;
      *) export PATH="$PATH:$(dirname "$nvcc")" ;;
    esac
  fi
  BUILD_DIR="$REPO_ROOT/build/$PRESET"
  export PRESET BUILD_DIR
}

strata_jobs() {
  if [[ -n "${STRATA_JOBS:-}" ]]; then echo "$STRATA_JOBS"; return; fi
  nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2
}

# strata_summary_lines LOG: strata's configure summary from a configure log — the component
# line, where each dependency was found ("strata deps:"), the GPU targets that are built and
# those that are not, with why ("strata gpu:"), and the example's own notes ("gpt:").
strata_summary_lines() {
  grep -E '^-- (strata[ :]|gpt:)' "$1" | grep -vE '^-- strata: (CUDA|NCCL|URING|MPI) off' || true
}

# Configure the preset (always: it is cheap and picks up new files); prints strata's summary.
# Extra args go to cmake (e.g. -DSTRATA_ENABLE_MPI=OFF).
strata_configure() {
  cd "$REPO_ROOT"
  mkdir -p "$REPO_ROOT/build"
  local log="$REPO_ROOT/build/configure-$PRESET.log"
  strata_log "== configure (preset $PRESET; log build/configure-$PRESET.log)"
  if ! cmake --preset "$PRESET" "$@" >"$log" 2>&1; then
    cat "$log" >&2
    strata_log "configure failed (preset $PRESET)"
    return 1
  fi
  strata_summary_lines "$log" >&2
}

# Build the preset with all cores (STRATA_JOBS overrides); extra args go to `cmake --build`
# (e.g. --target NAME).
strata_build() {
  cd "$REPO_ROOT"
  strata_log "== build (preset $PRESET, $(strata_jobs) jobs${*:+: $*})"
  cmake --build --preset "$PRESET" --parallel "$(strata_jobs)" "$@"
}

# The path of a benchmark program in the configured build (from strata-benchmarks.txt, which
# the configure writes: bench_gpt and bench_gpt_cuda are built by examples/gpt); empty if none.
strata_benchmark_path() {
  local list="$BUILD_DIR/strata-benchmarks.txt"
  [[ -f "$list" ]] || return 0
  awk -v t="$1" '$1 == t { print $2; exit }' "$list"
}

# Whether the configured build has a target of this name (Ninja's `help` lists them).
strata_has_target() {
  cmake --build --preset "$PRESET" --target help 2>/dev/null | grep -q "^$1: "
}
