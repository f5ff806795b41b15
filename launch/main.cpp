// The zerotrain executable.
#include <string>
#include <vector>

#include "launch/cli.h"

int main(int argc, char** argv) {
  return zt::launch::run_cli(std::vector<std::string>(argv + 1, argv + argc));
}
