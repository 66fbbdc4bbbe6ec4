#ifndef FL_SIMULATIONS_MPI_LAUNCH_H_
#define FL_SIMULATIONS_MPI_LAUNCH_H_

// Whether mpirun started this process as one of several ranks, and which, read from the
// environment OpenMPI's launcher sets (OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_RANK) before
// MPI is initialized. Shared by the MPI backend, the build without it and fl-sim's main.

#include <cstdlib>

namespace fl::internal {

// The number of ranks mpirun started; 1 when it did not.
inline int LaunchedWorldSize() {
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  return size == nullptr ? 1 : std::atoi(size);
}

// This process's rank among them; 0 when mpirun did not start it.
inline int LaunchedRank() {
  const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
  return rank == nullptr ? 0 : std::atoi(rank);
}

}  // namespace fl::internal

#endif  // FL_SIMULATIONS_MPI_LAUNCH_H_
