#pragma once
// Helpers shared by the safetensors reader and writer.
#include <cstddef>
#include <optional>
#include <vector>

#include "lathe/io/safetensors.h"

namespace lathe::safetensors::detail {

// prod(shape) * dtype_size, or nullopt when a dimension is negative or the product overflows.
std::optional<std::size_t> checked_nbytes(const std::vector<int64_t>& shape, Dtype dtype);

}  // namespace lathe::safetensors::detail
