#ifndef FL_SIMULATIONS_MPI_LAUNCH_H_
#define FL_SIMULATIONS_MPI_LAUNCH_H_

// Whether mpirun started this process as one of several ranks, read from the
// environment OpenMPI's launcher sets (OMPI_COMM_WORLD_SIZE), before MPI is initialized.
// Shared by the MPI backend and the build without it.

#include <cstdlib>

namespace fl::internal {

// The number of ranks mpirun started; 1 when it did not.
inline int LaunchedWorldSize() {
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  return size == nullptr ? 1 : std::atoi(size);
}

}  // namespace fl::internal

#endif  // FL_SIMULATIONS_MPI_LAUNCH_H_
