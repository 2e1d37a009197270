#pragma once
// Throwing a lathe::Error whose message fmt builds, as the built-ins do: fail("{}: expected ...", where).
#include <fmt/format.h>
#include <fmt/std.h>

#include "lathe/common/error.h"
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace lathe

LATHE_API_END
