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

}  // namespace zt::datasets
