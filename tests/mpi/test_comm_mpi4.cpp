// comm::mpi with 4 ranks (more ranks than cores on small machines: the waits must not spin the
// peers off the CPU). The cases live in comm_mpi_cases.hpp (shared with the 2-rank test).
// mpi-ranks: 4
// ctest-timeout: 120
#include "comm_mpi_cases.hpp"
