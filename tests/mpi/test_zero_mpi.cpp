// The ZeRO executor over 2 MPI ranks (mpirun); the cases are in zero_mpi_cases.hpp.
// mpi-ranks: 2
// ctest-timeout: 300
#include "zero_mpi_cases.hpp"
