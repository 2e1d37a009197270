#pragma once
// The message of the lathe::Error that `action` throws; a test failure when it throws none.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "lathe/common/error.h"

namespace lathe::testing {

inline std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected a lathe::Error";
  return {};
}

}  // namespace lathe::testing
