// Temporary directories and small files for tests that read and write real files.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace zt::testing {

// A fresh, empty directory <gtest temp dir>/zt_<pid>_<test suite>_<name>, removed when the test
// program ends. The pid keeps test processes that ctest runs side by side apart.
inline std::string fresh_dir(const std::string& name) {
  struct Cleanup {
    std::vector<std::filesystem::path> dirs;
    ~Cleanup() {
      std::error_code ec;
      for (const auto& d : dirs) std::filesystem::remove_all(d, ec);
    }
  };
  static Cleanup cleanup;
  const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string suite = test != nullptr ? test->test_suite_name() : "global";
  const std::filesystem::path p = std::filesystem::path(::testing::TempDir()) /
                                  ("zt_" + std::to_string(getpid()) + "_" + suite + "_" + name);
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  cleanup.dirs.push_back(p);
  return p.string();
}

// Writes text, byte for byte, to dir/name and returns the file's path.
inline std::string write_file(const std::filesystem::path& dir, const std::string& name,
                              std::string_view text) {
  const std::string path = (dir / name).string();
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// The bytes of a file ("" when it cannot be read).
inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return std::move(ss).str();
}

// Flips one bit of the byte in the middle of `file` (in a checkpoint rank file: inside /master), a
// corruption that only the checksums can find.
inline void flip_middle_byte(const std::filesystem::path& file) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  const auto at = std::streamoff(std::filesystem::file_size(file) / 2);
  f.seekg(at);
  char byte = 0;
  f.read(&byte, 1);
  byte = char(byte ^ 0x10);
  f.seekp(at);
  f.write(&byte, 1);
}

}  // namespace zt::testing
