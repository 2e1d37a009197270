#pragma once
// Small file utilities used across Lathe: whole-file reads with clear errors, and atomic writes
// (a temporary name in the same folder, then rename) so that no reader ever sees half a file.
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include "lathe/common/export.h"

LATHE_API_BEGIN

namespace lathe {

// Reads a whole file; throws lathe::Error naming the path when it is missing or unreadable.
std::string read_file(const std::filesystem::path& path);

// Writes `content` to `path` through a temporary file in the same folder and a rename.
void write_file_atomic(const std::filesystem::path& path, std::string_view content);

// Calls `write` with a temporary path next to `path`, then renames it into place. If `write`
// throws, the temporary file is removed and `path` is left as it was.
void write_atomic_with(const std::filesystem::path& path,
                       const std::function<void(const std::filesystem::path& temporary)>& write);

// Same for a folder: `write` fills a temporary folder which is then renamed to `dir`
// (replacing an existing one).
void write_dir_atomic(const std::filesystem::path& dir,
                      const std::function<void(const std::filesystem::path& temporary)>& write);

// For a --model or --dataset path that is not on this machine: an error naming it, and when it
// reads like a hub id (org/name), saying that Lathe reads local folders and files only and how to
// point it at a downloaded copy. `what` is "model folder" or "dataset file".
[[noreturn]] void fail_not_local(std::string_view what, const std::string& path);

}  // namespace lathe

LATHE_API_END
