// Precompiled header of fl_torch: LibTorch costs ~20 s per translation unit to parse,
// so fl_torch's few TUs share one parse. Nothing outside sdk/torch includes this.
#include <torch/torch.h>
