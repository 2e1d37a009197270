#pragma once
// The one exception type for problems a user can cause (bad files, bad arguments, bad plugins).
// Its message is meant to be printed as it is: it names the file, line or field and says what was
// expected. Programming errors stay as assertions or std::logic_error.
#include <stdexcept>
#include <string>
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace lathe

LATHE_API_END
