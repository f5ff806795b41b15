// Whole-file reads and crash-safe writes. What zerotrain publishes (checkpoints, exports, a
// run's config.toml and metrics.jsonl) is flushed to disk before the rename that makes it
// visible, so a crash or power loss leaves the old version or the new one, never a torn file.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace zt {

// The whole file at `path`. `what` names it in the error ("tokenizer file", "Hugging Face
// config"), which also gives the system's reason.
std::string read_file(const std::filesystem::path& path, std::string_view what);

// Flushes a file's data, or a folder's entries (the renames in it), to the storage device
// (fsync). A failure is a UserError naming the path.
void sync_path(const std::filesystem::path& path);

// Writes `text` to `path` (created or truncated) and flushes it to disk. On failure the
// UserError names the path, the system's reason and `hint` (what the user should check).
void write_file_synced(const std::filesystem::path& path, std::string_view text,
                       std::string_view hint = "check that the folder is writable and has space");

// Replaces `path` by a file holding `text`: written to path.tmp, flushed, renamed over `path`,
// and the rename flushed. At every moment `path` holds its old content or the new one.
void replace_file(const std::filesystem::path& path, std::string_view text,
                  std::string_view hint = "check that the folder is writable and has space");

// Publishes the complete folder `tmp` as `dir` (same filesystem), flushing the parent folder
// after. A missing or empty `dir` is replaced by one rename. A non-empty one is swapped with
// `tmp` atomically (renameat2 RENAME_EXCHANGE), so `dir` holds the old folder or the new one at
// every moment, and the old one, then at `tmp`, is removed. A filesystem without the exchange
// moves the old one to `aside` first (put back if the second rename fails): `dir` is then
// missing between the two renames, and a crash there leaves the old folder at `aside` and the
// new one at `tmp`. Failures are UserErrors naming the paths; `dir` is then as it was.
void replace_dir(const std::filesystem::path& tmp, const std::filesystem::path& dir,
                 const std::filesystem::path& aside);

}  // namespace zt
