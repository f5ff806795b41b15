// FlagReader: the argument walk and the shared messages of zerotrain's subcommands.
#include "launch/flags.h"

#include <charconv>
#include <utility>

#include "runtime/error.h"

namespace zt::launch {

FlagReader::FlagReader(std::string command, const std::vector<std::string>& args, Values values)
    : command_(std::move(command)), args_(args), values_(values) {}

bool FlagReader::next() {
  if (next_ >= args_.size()) return false;
  arg_ = args_[next_++];
  flag_ = arg_;
  has_inline_value_ = false;
  inline_value_.clear();
  if (values_ == Values::kNextOrEquals && is_flag()) {
    const size_t eq = arg_.find('=');
    if (eq != std::string::npos) {
      flag_ = arg_.substr(0, eq);
      inline_value_ = arg_.substr(eq + 1);
      has_inline_value_ = true;
    }
  } else if (values_ == Values::kNextOnly && is_flag() && arg_.find('=') != std::string::npos) {
    const size_t eq = arg_.find('=');
    throw_user_error(arg_, ": give the value after a space, as in ", arg_.substr(0, eq), " ",
                     arg_.substr(eq + 1), " (see `zerotrain ", command_, " --help`)");
  }
  return true;
}

std::string FlagReader::value() {
  if (has_inline_value_) return inline_value_;
  if (next_ >= args_.size())
    throw_user_error(flag_, " needs a value (see `zerotrain ", command_, " --help`)");
  return args_[next_++];
}

void FlagReader::unknown_option() const {
  throw_user_error("unknown option \"", flag_, "\" for `zerotrain ", command_, "` (see `zerotrain ", command_,
                   " --help`)");
}

void FlagReader::unexpected_argument() const {
  throw_user_error("unexpected argument \"", arg_, "\" for `zerotrain ", command_, "` (see `zerotrain ",
                   command_, " --help`)");
}

int64_t parse_int_flag(const std::string& flag, const std::string& text, int64_t min,
                       int64_t max, bool suffixes) {
  std::string_view digits = text;
  int64_t scale = 1;
  if (suffixes && !digits.empty()) {
    const char last = digits.back();
    scale = last == 'k' || last == 'K' ? 1000 : last == 'M' ? 1000000 : last == 'G' ? 1000000000 : 1;
    if (scale > 1) digits.remove_suffix(1);
  }
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  const bool whole = !digits.empty() && end == digits.data() + digits.size();
  if (whole && (ec == std::errc::result_out_of_range || v > INT64_MAX / scale || v < INT64_MIN / scale))
    throw_user_error(flag, " ", text, ": too large: must be <= ", max);
  if (!whole || ec != std::errc() || (suffixes && v * scale < min)) {
    if (suffixes)
      throw_user_error(flag, " ", text, ": expected an integer >= ", min, " (a k, M or G suffix is allowed)");
    throw_user_error(flag, " ", text, ": expected an integer");
  }
  v *= scale;
  if (v < min) throw_user_error(flag, " ", text, ": must be >= ", min);
  if (v > max) throw_user_error(flag, " ", text, ": must be <= ", max);
  return v;
}

}  // namespace zt::launch
