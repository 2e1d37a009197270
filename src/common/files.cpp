#include "lathe/common/files.h"

#include <unistd.h>

#include <atomic>
#include <fstream>
#include <sstream>

#include "lathe/common/format.h"

namespace lathe {
namespace fs = std::filesystem;

std::string read_file(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) fail("{}: is a folder, expected a file", path.string());
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open file ({})", path.string(), std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) fail("{}: read error", path.string());
  return std::move(buffer).str();
}

void fail_not_local(std::string_view what, const std::string& path) {
  // org/name: one slash, not a path from / . or ~, not a file name (model names have dots: Qwen2.5-7B).
  const auto extension = std::filesystem::path(path).extension().string();
  const bool file_name = extension == ".jsonl" || extension == ".json" || extension == ".csv";
  const bool hub_like = !path.empty() && path.find('/') != std::string::npos && path.find('/') == path.rfind('/') &&
                        path.front() != '/' && path.front() != '.' && path.front() != '~' && !file_name;
  if (!hub_like) fail("{}: {} not found", path, what);
  fail("{}: {} not found. Lathe reads local folders and files only; '{}' looks like a hub id: download it first "
       "(e.g. huggingface-cli download {}{} --local-dir DIR) and give the local path",
       path, what, path, what == "dataset file" ? "--repo-type dataset " : "", path);
}

static fs::path temporary_sibling(const fs::path& path) {
  static std::atomic<unsigned> counter{0};
  auto name = fmt::format(".{}.tmp-{}-{}", path.filename().string(), ::getpid(), counter++);
  return path.parent_path() / name;
}

void write_atomic_with(const fs::path& path, const std::function<void(const fs::path&)>& write) {
  if (!path.parent_path().empty()) fs::create_directories(path.parent_path());
  const fs::path temporary = temporary_sibling(path);
  try {
    write(temporary);
    fs::rename(temporary, path);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(temporary, ignored);
    throw;
  }
}

void write_file_atomic(const fs::path& path, std::string_view content) {
  write_atomic_with(path, [&](const fs::path& temporary) {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) fail("{}: cannot create file ({})", temporary.string(), std::strerror(errno));
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.flush();
    if (!out) fail("{}: write failed (disk full?)", path.string());
  });
}

void write_dir_atomic(const fs::path& dir, const std::function<void(const fs::path&)>& write) {
  if (!dir.parent_path().empty()) fs::create_directories(dir.parent_path());
  const fs::path temporary = temporary_sibling(dir);
  std::error_code ec;
  try {
    fs::create_directories(temporary);
    write(temporary);
  } catch (...) {
    fs::remove_all(temporary, ec);
    throw;
  }
  if (!fs::exists(dir, ec)) {
    fs::rename(temporary, dir);
    return;
  }
  // rename() cannot replace a non-empty folder: move the old one aside, then drop it.
  const fs::path old = temporary_sibling(dir);
  fs::rename(dir, old);
  fs::rename(temporary, dir);
  fs::remove_all(old, ec);
}

}  // namespace lathe
