// vit_kernel.inc for the build's target instruction set (the fallback everywhere).

#include <Eigen/Core>
#include <cmath>
#include <unsupported/Eigen/SpecialFunctions>

#include "infer/vit_kernel.h"

namespace fl::internal::base {
#include "infer/vit_kernel.inc"
}  // namespace fl::internal::base
