// comm::mpi with 2 ranks: collectives bitwise against the rank-order reference, abort and
// timeout without hangs. The cases live in comm_mpi_cases.hpp (shared with the 4-rank test).
// mpi-ranks: 2
// ctest-timeout: 120
#include "comm_mpi_cases.hpp"
