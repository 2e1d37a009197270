#pragma once
// Helpers for the safetensors tests: a scratch folder per test, hand-built files, and the Python
// reference (tests/io/safetensors_reference.py run by /usr/bin/python3 with PyTorch).
#include <gtest/gtest.h>

#include "support/scratch_dir.h"
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace lathe::testing {

namespace fs = std::filesystem;


inline void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// An 8-byte length, the header text as given, then `data_size` bytes (0, 1, 2, ...).
inline std::string raw_safetensors(const std::string& header, std::size_t data_size,
                                   uint64_t declared_length = UINT64_MAX) {
  const uint64_t length = declared_length == UINT64_MAX ? header.size() : declared_length;
  std::string bytes(reinterpret_cast<const char*>(&length), sizeof length);
  bytes += header;
  for (std::size_t i = 0; i < data_size; ++i) bytes.push_back(static_cast<char>(i));
  return bytes;
}

inline std::vector<std::byte> from_hex(const std::string& hex) {
  std::vector<std::byte> bytes;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    bytes.push_back(static_cast<std::byte>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return bytes;
}

struct CommandResult {
  int status = -1;
  std::string output;
};

inline CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return result;
  char buffer[4096];
  while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) result.output.append(buffer, n);
  const int status = ::pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// Runs tests/io/safetensors_reference.py; fails the test with a clear message when the oracle
// (/usr/bin/python3 with torch) is missing.
inline CommandResult run_python_reference(const std::string& arguments) {
  const char* python = "/usr/bin/python3";
  static const bool has_torch = run_command(std::string(python) + " -c 'import torch'").status == 0;
  if (!has_torch) {
    ADD_FAILURE() << "the Python reference needs /usr/bin/python3 with PyTorch "
                     "(apt-get install python3-torch)";
    return {};
  }
  const std::string script = std::string(LATHE_SOURCE_DIR) + "/tests/io/safetensors_reference.py";
  return run_command(std::string(python) + " '" + script + "' " + arguments);
}

}  // namespace lathe::testing
