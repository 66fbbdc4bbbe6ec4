// vit_kernel.inc compiled with -mavx2 -mfma (sdk/infer/CMakeLists.txt), for x86-64 CPUs
// that have them: Eigen's matrix products run about twice as fast as with the baseline's
// SSE2.
//
// Eigen is renamed here (EigenAvx2): its inline functions and templates, compiled with
// AVX2, must not share names with the baseline copy's, or the linker could keep one
// AVX2 body for both and the baseline would run AVX2 instructions. The standard headers
// come first so that nothing of theirs sees the rename. tests/unit/check_isa_copy_symbols.sh
// checks that this object defines no linkable symbol outside fl::internal::avx2 and
// EigenAvx2.

#include <cmath>
#include <complex>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <new>
#include <type_traits>

#include "infer/vit_kernel.h"

#define Eigen EigenAvx2
#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>

namespace fl::internal::avx2 {
#include "infer/vit_kernel.inc"
}  // namespace fl::internal::avx2
