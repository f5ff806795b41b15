// The prepare pipeline (note "prepare pipeline" in prepare.h): reader -> tokenizer workers ->
// one in-order writer, with bounded memory and temporary files renamed at the end.
#include "datasets/prepare.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "datasets/jsonl.h"
#include "datasets/shard_writer.h"
#include "datasets/unicode_classes.h"
#include "runtime/error.h"
#include "runtime/rng.h"
#include "runtime/text.h"

namespace zt::datasets {

namespace fs = std::filesystem;

namespace {

constexpr uint64_t kSplitStream = 0x7a11d;  // stream of the counter-based RNG (rng.h)
constexpr int kFallbackPieces = 16;         // bytes without an exact split point before a hard cut

// Length of a prefix of `text` of at most `limit` bytes that ends on a UTF-8 character boundary.
size_t utf8_boundary(std::string_view text, size_t limit) {
  size_t end = std::min(limit, text.size());
  // Step back over continuation bytes (10xxxxxx), at most 3.
  for (int i = 0; i < 3 && end > 0 && end < text.size() && (static_cast<unsigned char>(text[end]) & 0xc0) == 0x80; ++i)
    --end;
  return end == 0 ? std::min(limit, text.size()) : end;
}

struct Piece {
  int64_t seq = 0;
  bool doc_end = false;
  bool val = false;
  int64_t bytes = 0;
  std::string text;
  std::vector<int32_t> tokens;
};

std::string shard_name(Split split, int index) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%s-%05d.h5", std::string(split_name(split)).c_str(), index);
  return buf;
}

bool is_our_temp_file(const std::string& name) {
  return ((name.starts_with("train-") || name.starts_with("val-")) && name.ends_with(".h5.tmp")) ||
         name == std::string(kManifestFile) + ".tmp";
}

bool is_our_dataset_file(const std::string& name) {
  return ((name.starts_with("train-") || name.starts_with("val-")) && name.ends_with(".h5")) ||
         name == kManifestFile;
}

// The regular files in `dir` that `keep` selects, by name.
template <class F>
std::vector<std::string> files_in(const std::string& dir, F keep) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file(ec) && keep(name)) names.push_back(name);
  }
  return names;
}

// Prepares out_dir: refuses a non-empty one without overwrite; with it, removes only the
// temporary files an interrupted prepare left (the dataset in it goes once the new one is
// complete: Pipeline::finalize).
void prepare_out_dir(const PrepareOptions& o) {
  std::error_code ec;
  if (fs::exists(o.out_dir, ec) && !fs::is_directory(o.out_dir, ec))
    throw_user_error("--out \"", o.out_dir, "\" is a file, not a folder: choose another --out");
  if (fs::is_directory(o.out_dir, ec) && !fs::is_empty(o.out_dir, ec)) {
    const std::vector<std::string> temps = files_in(o.out_dir, is_our_temp_file);
    if (!o.overwrite) {
      const auto entries =
          std::distance(fs::directory_iterator(o.out_dir, ec), fs::directory_iterator());
      if (!temps.empty() && entries == std::ptrdiff_t(temps.size()))
        throw_user_error("--out \"", o.out_dir, "\" holds only the temporary files of an interrupted "
                         "prepare (", temps.front(), "...): pass --overwrite to replace them, or "
                         "remove them");
      throw_user_error("--out \"", o.out_dir, "\" is not empty: choose a new or empty folder, or pass --overwrite "
                       "to replace the dataset in it");
    }
    for (const std::string& name : temps) fs::remove(fs::path(o.out_dir) / name, ec);
  }
  fs::create_directories(o.out_dir, ec);
  if (!fs::is_directory(o.out_dir))
    throw_user_error("cannot create --out \"", o.out_dir, "\": ", ec ? ec.message() : "unknown error");
}

class Pipeline {
 public:
  Pipeline(const PrepareOptions& o, const TokenizerRef& tok) : o_(o), tok_(tok) {
    threads_ = o.threads > 0 ? o.threads : int(std::max(1u, std::thread::hardware_concurrency()));
    max_in_flight_ = 4 * size_t(threads_) + 8;
    manifest_.tokenizer = tok.id;
    manifest_.vocab_size = tok.vocab_size;
    manifest_.eos_id = tok.eos_id;
    manifest_.token_dtype = token_dtype_for_vocab(tok.vocab_size);
    manifest_.val_fraction = o.val_fraction;
    manifest_.split_seed = uint64_t(o.split_seed);
    for (const std::string& in : o.inputs) {
      std::error_code ec;
      const auto size = fs::file_size(in, ec);
      if (!ec) total_bytes_ += int64_t(size);
    }
  }

  PrepareSummary run() {
    const auto start = std::chrono::steady_clock::now();
    start_ = start;
    last_report_ = start;
    for (int i = 0; i < threads_; ++i) workers_.emplace_back([this] { guarded([this] { work(); }); });
    writer_ = std::thread([this] { guarded([this] { write(); }); });
    guarded([this] { read_all(); });
    // End of input: the workers drain the queue and stop; the writer stops after the last piece.
    {
      std::lock_guard<std::mutex> lock(mutex_);
      input_done_ = true;
    }
    work_cv_.notify_all();
    done_cv_.notify_all();
    for (std::thread& t : workers_) t.join();
    writer_.join();
    if (error_) {
      cleanup();
      std::rethrow_exception(error_);
    }
    try {
      check_not_empty();
      finalize();
    } catch (...) {
      cleanup();
      throw;
    }
    if (o_.progress) report(true);
    PrepareSummary s;
    s.manifest = manifest_;
    s.bytes_read = bytes_read_.load();
    s.documents = documents_;
    s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return s;
  }

 private:
  // Runs f; the first exception of any thread is kept and stops every thread.
  template <class F>
  void guarded(F f) {
    try {
      f();
    } catch (...) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
        failed_ = true;
      }
      work_cv_.notify_all();
      done_cv_.notify_all();
      slot_cv_.notify_all();
    }
  }

  // ---- reader ----

  void read_all() {
    for (const std::string& path : o_.inputs) {
      if (stopped()) return;
      if (o_.format == InputFormat::kText) {
        read_text(path);
      } else {
        read_jsonl(path);
      }
    }
  }

  // True once another thread failed; throws when the caller asked the run to stop.
  bool stopped() {
    if (o_.stop && o_.stop())
      throw_user_error("prepare was interrupted; nothing was written to \"", o_.out_dir, "\"",
                       o_.overwrite ? " (the dataset in it is as it was)" : "");
    std::lock_guard<std::mutex> lock(mutex_);
    return failed_;
  }

  std::ifstream open_input(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw_user_error("cannot read input \"", path, "\": check the path");
    return in;
  }

  // One file = one document, streamed in pieces.
  void read_text(const std::string& path) {
    std::ifstream in = open_input(path);
    std::string buffer;
    std::vector<char> block(size_t(o_.piece_bytes));
    bool any = false;
    bool eof = false;
    while (!eof) {
      if (stopped()) return;
      in.read(block.data(), std::streamsize(block.size()));
      const std::streamsize got = in.gcount();
      if (got < std::streamsize(block.size())) {
        if (in.bad()) throw_user_error("reading input \"", path, "\" failed");
        eof = true;
      }
      bytes_read_ += got;
      buffer.append(block.data(), size_t(got));
      // Hand out full pieces while more text follows them.
      while (!eof && int64_t(buffer.size()) >= o_.piece_bytes) {
        size_t cut = find_piece_end(buffer, size_t(o_.piece_bytes));
        if (cut == 0) {
          if (int64_t(buffer.size()) < kFallbackPieces * o_.piece_bytes) break;  // read more first
          cut = find_piece_end(buffer, size_t(kFallbackPieces * o_.piece_bytes));
          if (cut == 0) cut = utf8_boundary(buffer, size_t(o_.piece_bytes));
        }
        if (!any) begin_document();
        any = true;
        emit(buffer.substr(0, cut), false);
        buffer.erase(0, cut);
        if (stopped()) return;
      }
    }
    if (buffer.empty() && !any) return;  // an empty file is no document
    if (!any) begin_document();
    emit_document_text(std::move(buffer));
  }

  // One line = one document.
  void read_jsonl(const std::string& path) {
    std::ifstream in = open_input(path);
    std::string line, text, error;
    int64_t line_no = 0;
    while (std::getline(in, line)) {
      ++line_no;
      bytes_read_ += int64_t(line.size()) + 1;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line_no == 1 && line.starts_with("\xef\xbb\xbf")) line.erase(0, 3);  // a UTF-8 byte order mark
      if (line.find_first_not_of(" \t") == std::string::npos) continue;  // blank lines
      text.clear();
      const JsonExtract r = extract_json_string(line, o_.jsonl_key, &text, &error);
      if (r != JsonExtract::kOk)
        throw_user_error(path, ":", line_no, ": ", error,
                         r == JsonExtract::kMalformed ? " (each line must be one JSON object)"
                                                      : " (choose the key with --jsonl-key)");
      if (text.empty()) continue;
      begin_document();
      emit_document_text(std::move(text));
      text = std::string();
      if (stopped()) return;
    }
    if (in.bad()) throw_user_error("reading input \"", path, "\" failed");
  }

  void begin_document() {
    current_val_ = o_.val_fraction > 0 &&
                   random_uniform(uint64_t(o_.split_seed), kSplitStream, uint64_t(documents_)) < o_.val_fraction;
    ++documents_;
  }

  // The rest of a document, cut into pieces; the last piece ends the document.
  void emit_document_text(std::string text) {
    std::string_view rest(text);
    while (int64_t(rest.size()) > o_.piece_bytes) {
      size_t cut = find_piece_end(rest, size_t(o_.piece_bytes));
      if (cut == 0) cut = find_piece_end(rest, size_t(kFallbackPieces * o_.piece_bytes));
      if (cut == 0) cut = utf8_boundary(rest, size_t(o_.piece_bytes));
      emit(std::string(rest.substr(0, cut)), false);
      rest.remove_prefix(cut);
    }
    emit(std::string(rest), true);
  }

  void emit(std::string text, bool doc_end) {
    auto piece = std::make_unique<Piece>();
    piece->bytes = int64_t(text.size());
    piece->text = std::move(text);
    piece->doc_end = doc_end;
    piece->val = current_val_;
    std::unique_lock<std::mutex> lock(mutex_);
    slot_cv_.wait(lock, [&] { return failed_ || in_flight_ < max_in_flight_; });
    if (failed_) return;
    piece->seq = next_seq_++;
    ++in_flight_;
    work_.push_back(std::move(piece));
    lock.unlock();
    work_cv_.notify_one();
  }

  // ---- workers ----

  void work() {
    for (;;) {
      std::unique_ptr<Piece> piece;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        work_cv_.wait(lock, [&] { return failed_ || !work_.empty() || input_done_; });
        if (failed_ || work_.empty()) return;
        piece = std::move(work_.front());
        work_.pop_front();
      }
      tok_.encode_append(piece->text, piece->tokens);
      piece->text = std::string();
      {
        std::lock_guard<std::mutex> lock(mutex_);
        done_.emplace(piece->seq, std::move(piece));
      }
      done_cv_.notify_all();
    }
  }

  // ---- writer ----

  void write() {
    int64_t next = 0;
    for (;;) {
      std::unique_ptr<Piece> piece;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        done_cv_.wait(lock, [&] {
          return failed_ || done_.count(next) > 0 || (input_done_ && next == next_seq_);
        });
        if (failed_) return;
        auto it = done_.find(next);
        if (it == done_.end()) break;  // all pieces written
        piece = std::move(it->second);
        done_.erase(it);
      }
      append(*piece);
      ++next;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        --in_flight_;
      }
      slot_cv_.notify_one();
      if (o_.progress) report(false);
    }
    for (Split split : {Split::kTrain, Split::kVal}) close_shard(split);
  }

  void append(const Piece& piece) {
    const Split split = piece.val ? Split::kVal : Split::kTrain;
    const int s = int(split);
    if (!writers_[s]) {
      const std::string name = shard_name(split, int(manifest_shards(split).size()));
      ShardWriterOptions wo;
      wo.dtype = manifest_.token_dtype;
      wo.compression = o_.compression;
      ShardAttributes attrs{tok_.id, tok_.vocab_size, tok_.eos_id, split};
      const std::string tmp = (fs::path(o_.out_dir) / (name + ".tmp")).string();
      temp_files_.push_back(tmp);
      writers_[s] = std::make_unique<ShardWriter>(tmp, attrs, wo);
    }
    ShardWriter& w = *writers_[s];
    w.append(piece.tokens);
    tokens_written_ += int64_t(piece.tokens.size());
    if (piece.doc_end) {
      const int32_t eos = int32_t(tok_.eos_id);
      w.append(std::span<const int32_t>(&eos, 1));
      ++tokens_written_;
      w.end_document();
      ++documents_written_;
      if (w.tokens() >= o_.shard_tokens) close_shard(split);
    }
  }

  std::vector<ShardInfo>& manifest_shards(Split split) {
    return split == Split::kTrain ? manifest_.train : manifest_.val;
  }

  void close_shard(Split split) {
    std::unique_ptr<ShardWriter>& w = writers_[int(split)];
    if (!w) return;
    ShardInfo info = w->finish();
    w.reset();
    info.file = shard_name(split, int(manifest_shards(split).size()));
    manifest_shards(split).push_back(info);
  }

  // ---- the end ----

  // A dataset training cannot use is an error, not a success to find out about later.
  void check_not_empty() const {
    if (documents_ == 0)
      throw_user_error("no documents in the inputs: ",
                       o_.format == InputFormat::kText
                           ? "every file is empty"
                           : "every line is blank or has an empty \"" + o_.jsonl_key + "\"",
                       "; nothing was written to \"", o_.out_dir, "\"");
    if (manifest_.train.empty())
      throw_user_error("all ", documents_, " documents went to the validation split (--val-fraction ",
                       o_.val_fraction, "), so there is nothing to train on: lower --val-fraction "
                       "(0 keeps every document for training); nothing was written to \"",
                       o_.out_dir, "\"");
  }

  void finalize() {
    // A dataset being replaced: its manifest goes first, so that none points at a mix of old
    // and new shards; its shards are renamed over or, beyond the new ones, removed below.
    const std::vector<std::string> old_files = files_in(o_.out_dir, is_our_dataset_file);
    std::error_code removed;
    fs::remove(fs::path(o_.out_dir) / kManifestFile, removed);
    for (Split split : {Split::kTrain, Split::kVal}) {
      for (const ShardInfo& s : manifest_shards(split)) {
        const fs::path final_path = fs::path(o_.out_dir) / s.file;
        std::error_code ec;
        fs::rename(final_path.string() + ".tmp", final_path, ec);
        if (ec) throw_user_error("cannot rename the finished shard to \"", final_path.string(), "\": ", ec.message());
        final_files_.push_back(final_path.string());
      }
    }
    temp_files_.clear();
    for (const std::string& name : old_files) {
      const std::string path = (fs::path(o_.out_dir) / name).string();
      if (std::find(final_files_.begin(), final_files_.end(), path) == final_files_.end())
        fs::remove(path, removed);
    }
    const fs::path manifest_path = fs::path(o_.out_dir) / kManifestFile;
    const std::string tmp = manifest_path.string() + ".tmp";
    temp_files_.push_back(tmp);
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out << manifest_to_toml(manifest_);
      out.flush();
      if (!out) throw_user_error("cannot write \"", tmp, "\": check that the folder is writable and has space");
    }
    std::error_code ec;
    fs::rename(tmp, manifest_path, ec);
    if (ec) throw_user_error("cannot rename \"", tmp, "\" to \"", manifest_path.string(), "\": ", ec.message());
    temp_files_.clear();
  }

  void cleanup() {
    writers_[0].reset();
    writers_[1].reset();
    std::error_code ec;
    for (const std::string& f : temp_files_) fs::remove(f, ec);
    for (const std::string& f : final_files_) fs::remove(f, ec);
  }

  // Called by the writer thread only.
  void report(bool final) {
    const auto now = std::chrono::steady_clock::now();
    const bool tty = isatty(STDERR_FILENO) == 1;
    const double interval = tty ? 0.25 : 10.0;
    if (!final && std::chrono::duration<double>(now - last_report_).count() < interval) return;
    last_report_ = now;
    const double secs = std::max(1e-9, std::chrono::duration<double>(now - start_).count());
    const double mb = double(bytes_read_.load()) / 1e6;
    char pct[32] = "";
    if (total_bytes_ > 0)
      std::snprintf(pct, sizeof(pct), " (%.0f%%)", 100.0 * double(bytes_read_.load()) / double(total_bytes_));
    std::fprintf(stderr, "%sprepare: %.2f MB read%s | %.1f MB/s | %lld tokens | %.0f tokens/s | %lld documents%s",
                 tty ? "\r\033[K" : "", mb, pct, mb / secs, (long long)tokens_written_,
                 double(tokens_written_) / secs, (long long)documents_written_, tty && !final ? "" : "\n");
    std::fflush(stderr);
  }

  const PrepareOptions& o_;
  const TokenizerRef& tok_;
  int threads_ = 1;
  size_t max_in_flight_ = 8;
  Manifest manifest_;
  int64_t total_bytes_ = 0;

  std::mutex mutex_;
  std::condition_variable work_cv_, done_cv_, slot_cv_;
  std::deque<std::unique_ptr<Piece>> work_;
  std::map<int64_t, std::unique_ptr<Piece>> done_;
  int64_t next_seq_ = 0;
  size_t in_flight_ = 0;
  bool input_done_ = false;
  bool failed_ = false;
  std::exception_ptr error_;
  std::vector<std::thread> workers_;
  std::thread writer_;

  // Reader state.
  int64_t documents_ = 0;
  bool current_val_ = false;
  std::atomic<int64_t> bytes_read_{0};

  // Writer state.
  std::unique_ptr<ShardWriter> writers_[2];
  int64_t tokens_written_ = 0;
  int64_t documents_written_ = 0;
  std::vector<std::string> temp_files_, final_files_;
  std::chrono::steady_clock::time_point start_, last_report_;
};

}  // namespace

size_t find_piece_end(std::string_view text, size_t limit) {
  // The last p in [1, limit] where a whitespace character begins that a non-whitespace one
  // follows. A lead or ASCII byte never continues an earlier sequence, so the tokenizer's walk
  // over the code points reaches p itself; a byte that begins no well-formed sequence is a
  // one-byte non-whitespace character to it, as here.
  const auto* base = reinterpret_cast<const unsigned char*>(text.data());
  const unsigned char* end = base + text.size();
  if (text.size() < 2) return 0;
  for (size_t p = std::min(limit, text.size() - 1); p >= 1; --p) {
    const unsigned char b = base[p];
    if ((b > 0x20 && b < 0x7f) || (b & 0xc0) == 0x80) continue;  // printable ASCII, mid-character
    uint32_t cp = 0;
    const size_t n = decode_utf8(base + p, end, &cp);
    if (n == 0 || !unicode::is_space(cp) || p + n >= text.size()) continue;
    uint32_t next = 0;
    const size_t m = decode_utf8(base + p + n, end, &next);
    if (m == 0 || !unicode::is_space(next)) return p;
  }
  return 0;
}

PrepareSummary prepare_dataset(const PrepareOptions& o, const TokenizerRef& tok) {
  if (o.inputs.empty()) throw_user_error("no input files: give the text or jsonl files to tokenize");
  if (o.out_dir.empty()) throw_user_error("no output folder: pass --out DATASET_DIR");
  if (!(o.val_fraction >= 0 && o.val_fraction < 1))
    throw_user_error("--val-fraction ", o.val_fraction, " must be in [0, 1)");
  if (o.shard_tokens < 1) throw_user_error("--shard-tokens must be >= 1");
  if (o.compression < 0 || o.compression > 9) throw_user_error("--compress must be a gzip level in [0, 9]");
  if (o.format == InputFormat::kJsonl && o.jsonl_key.empty()) throw_user_error("--jsonl-key must not be empty");
  ZT_CHECK(o.piece_bytes >= 16, "piece_bytes too small");
  ZT_CHECK(tok.encode_append != nullptr && tok.vocab_size > 0 && tok.eos_id >= 0 && tok.eos_id < tok.vocab_size,
           "incomplete tokenizer");
  for (const std::string& in : o.inputs) {
    std::error_code ec;
    if (!fs::exists(in, ec)) throw_user_error("input file \"", in, "\" does not exist: check the path");
    if (fs::is_directory(in, ec))
      throw_user_error("input \"", in, "\" is a folder: give the files in it (e.g. ", in, "/*.txt)");
  }
  prepare_out_dir(o);
  Pipeline pipeline(o, tok);
  return pipeline.run();
}

}  // namespace zt::datasets
