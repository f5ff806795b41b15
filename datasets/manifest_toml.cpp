// Required keys of manifest.toml files, with errors naming the file and the key.
#include "datasets/manifest_toml.h"

#include "runtime/error.h"

namespace zt::datasets {

void manifest_error(const std::string& source, const std::string& what, std::string_view remedy) {
  throw_user_error(source, ": ", what, "; ", remedy);
}

toml::table parse_manifest_toml(std::string_view text, const std::string& source,
                                std::string_view remedy) {
  try {
    return toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    manifest_error(source,
                   "invalid TOML at line " + std::to_string(e.source().begin.line) + ": " +
                       std::string(e.description()),
                   remedy);
  }
}

int64_t manifest_int(const toml::table& t, const char* key, const std::string& where,
                     const std::string& source, std::string_view remedy) {
  const auto v = t[key].value<int64_t>();
  if (!v || !t[key].is_integer())
    manifest_error(source, where + "key \"" + key + "\" is missing or not an integer", remedy);
  return *v;
}

std::string manifest_string(const toml::table& t, const char* key, const std::string& where,
                            const std::string& source, std::string_view remedy) {
  const auto v = t[key].value<std::string>();
  if (!v) manifest_error(source, where + "key \"" + key + "\" is missing or not a string", remedy);
  return *v;
}

const toml::table& manifest_table(const toml::table& t, const char* key, const std::string& source,
                                  std::string_view remedy) {
  const toml::table* sub = t[key].as_table();
  if (sub == nullptr) manifest_error(source, std::string("table [") + key + "] is missing", remedy);
  return *sub;
}

int64_t manifest_format_version(const toml::table& root, std::string_view format_name,
                                int64_t max_version, const std::string& source,
                                std::string_view remedy, std::string_view newer_hint) {
  const std::string format = manifest_string(root, "format", "", source, remedy);
  if (format != format_name)
    manifest_error(source, "format = \"" + format + "\", expected \"" + std::string(format_name) + "\"", remedy);
  const int64_t version = manifest_int(root, "format_version", "", source, remedy);
  if (version > max_version)
    throw_user_error(source, ": format_version = ", version, " is newer than this zerotrain reads (",
                     max_version, "): update zerotrain", newer_hint);
  if (version < 1) manifest_error(source, "format_version must be >= 1", remedy);
  return version;
}

}  // namespace zt::datasets
