// Subcommands of the `qround` tool. Each takes the arguments after its name and returns the exit
// code: 0 success, 1 runtime error (one clear line on stderr), 2 usage error.
#pragma once

namespace qround::cli {

int run_info(int argc, char** argv);
int run_quantize(int argc, char** argv);
int run_demo(int argc, char** argv);
int run_plan(int argc, char** argv);
int run_check(int argc, char** argv);
int run_model(int argc, char** argv);
int run_generate(int argc, char** argv);
int run_convert(int argc, char** argv);

}  // namespace qround::cli
