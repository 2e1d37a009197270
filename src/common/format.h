#pragma once
// Internal helpers for building lathe::Error messages with fmt.
#include <fmt/format.h>
#include <fmt/std.h>

#include "lathe/common/error.h"

namespace lathe {

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace lathe
