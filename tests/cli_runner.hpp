// Runs the `qround` binary built beside the tests and captures its exit code and output.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "test_helpers.hpp"

namespace qround::testing {

struct CliResult {
  int exit_code = -1;
  std::string out, err;
};

// `args` is appended to the binary's path as is (quote paths with spaces yourself); `env` is
// prepended (e.g. "QROUND_ISA=scalar").
inline CliResult run_cli(const std::string& args, const std::string& env = "") {
  TempDir tmp;
  const std::string out = tmp.file("stdout"), err = tmp.file("stderr");
  const std::string cmd = env + (env.empty() ? "" : " ") + "'" + QROUND_CLI_PATH + "' " + args +
                          " >'" + out + "' 2>'" + err + "' </dev/null";
  const int status = std::system(cmd.c_str());
  CliResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

}  // namespace qround::testing
