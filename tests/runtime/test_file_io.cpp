// Whole-file reads and crash-safe writes: exact bytes in and out, and on every failure an error
// naming the file and the reason, with what was there before left as it was.
#include "runtime/file_io.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "tests/support/temp_dir.h"
#include "tests/support/user_error.h"

namespace zt {
namespace {

namespace fs = std::filesystem;
using zt::testing::fresh_dir;
using zt::testing::user_error_of;

// Bytes a text-mode or C-string path would change: a NUL, CR LF, a lone CR, no final newline.
const std::string kBytes = std::string("a\0b\r\nc\rd", 8) + "\xff\xfe";

TEST(FileIo, ReadFileReturnsEveryByte) {
  const std::string dir = fresh_dir("read");
  EXPECT_EQ(read_file(zt::testing::write_file(dir, "f", kBytes), "test file"), kBytes);
  EXPECT_EQ(read_file(zt::testing::write_file(dir, "empty", ""), "test file"), "");
}

TEST(FileIo, ReadFileNamesWhatItCouldNotRead) {
  const std::string dir = fresh_dir("read_missing");
  EXPECT_EQ(user_error_of([&] { read_file(dir + "/absent.json", "tokenizer file"); }),
            "cannot read tokenizer file \"" + dir + "/absent.json\": No such file or directory");
  EXPECT_EQ(user_error_of([&] { read_file(dir, "Hugging Face config"); }),
            "cannot read Hugging Face config \"" + dir + "\": it is a folder, not a file");
}

TEST(FileIo, WriteFileSyncedWritesAndTruncates) {
  const std::string dir = fresh_dir("write");
  const std::string path = dir + "/f";
  write_file_synced(path, std::string(1000, 'x'));
  write_file_synced(path, kBytes);
  EXPECT_EQ(zt::testing::read_file(path), kBytes);  // the longer old content is gone
}

TEST(FileIo, WriteFileSyncedNamesThePathTheReasonAndTheHint) {
  const std::string dir = fresh_dir("write_missing");
  EXPECT_EQ(user_error_of([&] { write_file_synced(dir + "/no/f", "x", "check the folder"); }),
            "cannot write \"" + dir + "/no/f\": No such file or directory: check the folder");
}

TEST(FileIo, ReplaceFileReplacesAndLeavesNoTemporary) {
  const std::string dir = fresh_dir("replace");
  const std::string path = zt::testing::write_file(dir, "config.toml", "old = 1\n");
  replace_file(path, kBytes);
  EXPECT_EQ(zt::testing::read_file(path), kBytes);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  replace_file(dir + "/new.toml", "new = 2\n");  // onto nothing
  EXPECT_EQ(zt::testing::read_file(dir + "/new.toml"), "new = 2\n");
}

TEST(FileIo, AFailedReplaceLeavesWhatWasThere) {
  const std::string dir = fresh_dir("replace_fails");
  // The rename fails: the destination is a folder that holds a file.
  const std::string target = dir + "/metrics.jsonl";
  fs::create_directories(target);
  const std::string kept = zt::testing::write_file(target, "inside", "keep me");
  const std::string message = user_error_of([&] { replace_file(target, "new", "check out_dir"); });
  EXPECT_EQ(message.rfind("cannot replace \"" + target + "\": ", 0), 0u) << message;
  EXPECT_NE(message.find(": check out_dir"), std::string::npos) << message;
  EXPECT_EQ(zt::testing::read_file(kept), "keep me");
  EXPECT_FALSE(fs::exists(target + ".tmp"));  // the temporary does not stay behind either
  // The temporary cannot be written: the destination is not touched.
  const std::string file = zt::testing::write_file(dir, "config.toml", "old");
  fs::create_directories(file + ".tmp/x");
  EXPECT_EQ(user_error_of([&] { replace_file(file, "new", "check out_dir"); }),
            "cannot write \"" + file + ".tmp\": Is a directory: check out_dir");
  EXPECT_EQ(zt::testing::read_file(file), "old");
}

// A folder published onto nothing, onto an empty folder, and onto a full one (swapped, the old
// one removed); no aside folder stays. A failed publish leaves the destination as it was.
TEST(FileIo, ReplaceDirPublishesAFolderWhateverIsThere) {
  const std::string dir = fresh_dir("replace_dir");
  auto make = [&](const std::string& name, const std::string& text) {
    fs::create_directories(dir + "/" + name);
    zt::testing::write_file(dir + "/" + name, "file", text);
    return fs::path(dir) / name;
  };
  const fs::path target = fs::path(dir) / "published", aside = fs::path(dir) / "published.old";
  replace_dir(make("tmp1", "one"), target, aside);  // onto nothing
  EXPECT_EQ(zt::testing::read_file(target / "file"), "one");
  replace_dir(make("tmp2", "two"), target, aside);  // onto a complete folder
  EXPECT_EQ(zt::testing::read_file(target / "file"), "two");
  EXPECT_FALSE(fs::exists(dir + "/tmp2"));
  EXPECT_FALSE(fs::exists(aside));
  fs::create_directories(dir + "/empty");
  replace_dir(make("tmp3", "three"), dir + "/empty", aside);  // onto an empty folder
  EXPECT_EQ(zt::testing::read_file(dir + "/empty/file"), "three");
  const std::string message = user_error_of([&] { replace_dir(dir + "/absent", target, aside); });
  EXPECT_NE(message.find(dir + "/absent"), std::string::npos) << message;
  EXPECT_EQ(zt::testing::read_file(target / "file"), "two");
}

TEST(FileIo, SyncPathFlushesFilesAndFoldersAndNamesAMissingOne) {
  const std::string dir = fresh_dir("sync");
  sync_path(zt::testing::write_file(dir, "f", "x"));
  sync_path(dir);
  EXPECT_EQ(user_error_of([&] { sync_path(dir + "/absent"); }),
            "cannot open \"" + dir + "/absent\" to flush it to disk: No such file or directory");
}

}  // namespace
}  // namespace zt
