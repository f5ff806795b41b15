// Reading the manifest.toml files zerotrain writes (token datasets, checkpoints): required keys
// of a type, with errors that name the file, the key and what to do. Host code only (TOML++).
#pragma once

#include <toml++/toml.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace zt::datasets {

// Throws zt::UserError "<source>: <what>; <remedy>".
[[noreturn]] void manifest_error(const std::string& source, const std::string& what,
                                 std::string_view remedy);
// The TOML document of `text`; invalid TOML is a manifest_error with the line.
toml::table parse_manifest_toml(std::string_view text, const std::string& source,
                                std::string_view remedy);
// t[key] as an integer / a string / a table; `where` prefixes the key in messages (e.g.
// "[[train]] entry 3: ").
int64_t manifest_int(const toml::table& t, const char* key, const std::string& where,
                     const std::string& source, std::string_view remedy);
std::string manifest_string(const toml::table& t, const char* key, const std::string& where,
                            const std::string& source, std::string_view remedy);
const toml::table& manifest_table(const toml::table& t, const char* key, const std::string& source,
                                  std::string_view remedy);

// The header every zerotrain manifest starts with: `format` must equal `format_name` and
// `format_version` be 1..max_version. A newer version is "<source>: format_version = N is newer
// than this zerotrain reads (max): update zerotrain<newer_hint>". Returns the version.
int64_t manifest_format_version(const toml::table& root, std::string_view format_name,
                                int64_t max_version, const std::string& source,
                                std::string_view remedy, std::string_view newer_hint);

}  // namespace zt::datasets
