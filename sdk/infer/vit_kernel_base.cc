// vit_kernel.inc for the build's target instruction set (the fallback everywhere).

#include "infer/vit_kernel.h"

#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>

#include <cmath>

namespace fl::internal::base {
#include "infer/vit_kernel.inc"
}  // namespace fl::internal::base
