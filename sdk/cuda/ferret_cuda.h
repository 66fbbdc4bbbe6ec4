#ifndef FL_SDK_CUDA_FERRET_CUDA_H_
#define FL_SDK_CUDA_FERRET_CUDA_H_

// CUDA twins of the Ferret kernels (sdk/codec/ferret/kernels.h): the same job lists,
// the same contracts, the same basis values from rng/philox.h.
//
// Two builds. With nvcc (CMake's FL_HAVE_CUDA) these run on the current CUDA device.
// Without it this file's functions are compiled as "not built with CUDA" stubs:
// CudaCompiled() is false, CudaAvailable() is false and every kernel call returns
// Unimplemented. That is the only meaning of the stubs; callers choose the CPU kernels.
//
// Results. Generated bases and reconstructions (CudaAccumulate, CudaBasisNormsSquared)
// are bitwise equal to the CPU kernels'. Projections agree with the CPU to rounding:
// the device reduces each 1024-entry tile with a tree (deterministic from run to run,
// but a different order from the CPU's lanes).
//
// Memory. Inputs and outputs are host memory; each call copies what it needs to the
// device and back (the vector once per call, not once per block). Calls are serialized
// on the default stream of the current device; thread-compatible.
//
// Errors: Unimplemented (built without CUDA), Unavailable (no usable device),
// InvalidArgument (a job's range exceeds the vector, spans disagree, jobs overlap in
// CudaAccumulate), Internal (a CUDA runtime error, with its message).

#include <cstdint>
#include <span>

#include "codec/ferret/kernels.h"
#include "fl/status.h"

namespace fl::internal::ferret {

// True iff this build compiled the CUDA kernels.
bool CudaCompiled();

// True iff CudaCompiled() and cudaGetDeviceCount reports at least one device. Any error
// from the runtime (no driver, "driver version is insufficient", ...) means false.
bool CudaAvailable();

Status CudaProject(BasisDistribution dist, std::span<const float> x,
                   std::span<const ProjectJob> jobs);

Status CudaAccumulate(BasisDistribution dist, std::span<float> y,
                      std::span<const AccumulateJob> jobs);

Status CudaBasisNormsSquared(BasisDistribution dist, std::span<const NormJob> jobs);

// out[i] = u(seed, block_id, offset + i), generated on the device.
Status CudaGenerateBasis(BasisDistribution dist, uint64_t seed, uint32_t block_id,
                         uint64_t offset, std::span<float> out);

}  // namespace fl::internal::ferret

#endif  // FL_SDK_CUDA_FERRET_CUDA_H_
