// FlagReader: walks the arguments of a zerotrain subcommand (prepare, convert, tokenize, estimate,
// bench) flag by flag, and gives the error messages they share for a missing value, an unknown
// option and a stray argument.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace zt::launch {

class FlagReader {
 public:
  // How a flag's value is written. kNextOrEquals: "--flag value" or "--flag=value". kNextOnly:
  // always "--flag value", and an argument is never split at '=' (`estimate` and `bench` have
  // never taken "--flag=value": "--gpus=2" is an error that says to write "--gpus 2").
  enum class Values { kNextOrEquals, kNextOnly };

  // `command` names the subcommand in messages ("prepare" -> `zerotrain prepare --help`). `args`
  // must outlive the reader.
  FlagReader(std::string command, const std::vector<std::string>& args,
             Values values = Values::kNextOrEquals);

  // Moves to the next argument; false when none is left.
  bool next();

  // The current argument as given.
  const std::string& arg() const { return arg_; }
  // --help or -h.
  bool is_help() const { return arg_ == "--help" || arg_ == "-h"; }
  // Starts with "--"; what is not a flag is a switch the caller knows by arg(), or positional.
  bool is_flag() const { return arg_.rfind("--", 0) == 0; }
  // The flag's name: a "--" argument up to its first '=' (kNextOrEquals), else the whole argument.
  const std::string& flag() const { return flag_; }
  // Whether value() finds one: text after '=' or a next argument.
  bool has_value() const { return has_inline_value_ || next_ < args_.size(); }
  // The text after '=', or else the next argument, which is then consumed. Throws zt::UserError
  // "FLAG needs a value (see `zerotrain COMMAND --help`)" when there is neither.
  std::string value();

  // Throw zt::UserError: unknown option "FLAG" / unexpected argument "ARG" for `zerotrain COMMAND`
  // (see `zerotrain COMMAND --help`).
  [[noreturn]] void unknown_option() const;
  [[noreturn]] void unexpected_argument() const;

 private:
  std::string command_;
  const std::vector<std::string>& args_;
  Values values_;
  size_t next_ = 0;  // index of the argument after the current one
  std::string arg_, flag_;
  bool has_inline_value_ = false;  // arg_ is "--flag=value"
  std::string inline_value_;
};

// An integer flag value in [min, max], with `suffixes` also 10k, 10M, 10G (x 10^3, 10^6, 10^9).
// Throws zt::UserError "FLAG TEXT: ..." naming what is allowed: "expected an integer", "must be >=
// MIN" (with suffixes both read "expected an integer >= MIN (a k, M or G suffix is allowed)"),
// "must be <= MAX", and "too large: must be <= MAX" past what int64 holds.
int64_t parse_int_flag(const std::string& flag, const std::string& text, int64_t min,
                       int64_t max = INT64_MAX, bool suffixes = false);

}  // namespace zt::launch
