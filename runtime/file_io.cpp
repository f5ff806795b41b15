// Whole-file reads and crash-safe writes (runtime/file_io.h), on POSIX open/write/fsync.
#include "runtime/file_io.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc)
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "runtime/error.h"

namespace zt {

namespace fs = std::filesystem;

std::string read_file(const fs::path& path, std::string_view what) {
  std::error_code ec;
  if (fs::is_directory(path, ec))  // a stream opens a folder and then reads nothing, silently
    throw_user_error("cannot read ", what, " \"", path.string(), "\": it is a folder, not a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_user_error("cannot read ", what, " \"", path.string(), "\": ", std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw_user_error("cannot read ", what, " \"", path.string(), "\": ", std::strerror(errno));
  return std::move(ss).str();
}

void sync_path(const fs::path& path) {
  const fs::path p = path.empty() ? fs::path(".") : path;
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_user_error("cannot open \"", p.string(), "\" to flush it to disk: ", std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw_user_error("cannot flush \"", p.string(), "\" to disk (fsync): ", std::strerror(err));
}

void write_file_synced(const fs::path& path, std::string_view text, std::string_view hint) {
  const auto fail = [&](int err) {
    throw_user_error("cannot write \"", path.string(), "\": ", std::strerror(err), ": ", hint);
  };
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(errno);
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      ::close(fd);
      fail(err);
    }
    done += size_t(n);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    fail(err);
  }
  if (::close(fd) != 0) fail(errno);
}

void replace_file(const fs::path& path, std::string_view text, std::string_view hint) {
  const fs::path tmp = path.string() + ".tmp";
  write_file_synced(tmp, text, hint);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    const std::string why = ec.message();
    fs::remove(tmp, ec);
    throw_user_error("cannot replace \"", path.string(), "\": ", why, ": ", hint);
  }
  sync_path(path.parent_path());
}

void replace_dir(const fs::path& tmp, const fs::path& dir, const fs::path& aside) {
  std::error_code ec;
  const bool replace = fs::exists(dir, ec) && !fs::is_empty(dir, ec);
  if (!replace) {
    if (std::rename(tmp.c_str(), dir.c_str()) != 0)  // onto nothing, or onto an empty folder
      throw_user_error("cannot rename ", tmp.string(), " to ", dir.string(), ": ", std::strerror(errno));
  } else if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(tmp, ec);  // the old folder now
  } else {
    fs::remove_all(aside, ec);
    if (std::rename(dir.c_str(), aside.c_str()) != 0)
      throw_user_error("cannot move ", dir.string(), " aside to replace it: ", std::strerror(errno));
    if (std::rename(tmp.c_str(), dir.c_str()) != 0) {
      const int err = errno;
      std::rename(aside.c_str(), dir.c_str());
      throw_user_error("cannot rename ", tmp.string(), " to ", dir.string(), ": ", std::strerror(err));
    }
    fs::remove_all(aside, ec);
  }
  sync_path(dir.has_parent_path() ? dir.parent_path() : fs::path("."));
}

}  // namespace zt
