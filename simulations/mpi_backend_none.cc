// fl-sim built without MPI (FL_WITH_MPI=OFF or no MPI found): one process runs the
// whole simulation.

#include <string>

#include "simulations/mpi_backend.h"
#include "simulations/mpi_launch.h"

namespace fl::internal {

Result<std::unique_ptr<MpiBackend>> MpiBackend::StartIfLaunched() {
  const int size = LaunchedWorldSize();
  if (size <= 1) return std::unique_ptr<MpiBackend>();
  return Status::FailedPrecondition(
      "mpirun started " + std::to_string(size) +
      " ranks, but this fl-sim was built without MPI (install libopenmpi-dev and configure "
      "with -DFL_WITH_MPI=ON)");
}

}  // namespace fl::internal
