// tests/catch_main.cpp — main() for every Catch2 test executable, compiled once.
//
// tests/CMakeLists.txt builds it as a static library and links it into each test_* program.
// With Catch2 v3, CMake links Catch2::Catch2WithMain instead and this file is not compiled.
// Built with STRATA_CATCH_MAIN_MPI (the tests/mpi programs), main wraps the run in
// MPI_Init_thread / MPI_Finalize and combines the ranks' results, so every rank must pass.
#if defined(STRATA_CATCH_MAIN_MPI)
#  if defined(STRATA_CATCH2_V3)
#    include <catch2/catch_session.hpp>
#  else
#    define CATCH_CONFIG_RUNNER
#    include "catch.hpp"
#  endif
#  include <mpi.h>

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int local_failed = Catch::Session().run(argc, argv);
  int any_failed = 0;
  MPI_Allreduce(&local_failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any_failed != 0 ? 1 : 0;
}
#elif defined(STRATA_CATCH2_V3)
#  error "with Catch2 v3 link Catch2::Catch2WithMain instead of compiling tests/catch_main.cpp"
#else
#  define CATCH_CONFIG_MAIN
#  include "catch.hpp"
#endif
