// The `qround` tool: one binary, one subcommand per job.
#include <fmt/format.h>

#include <cstdio>
#include <cstring>
#include <exception>

#include "args.hpp"
#include "commands.hpp"
#include "qround/error.hpp"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

constexpr Command kCommands[] = {
    {"info", qround::cli::run_info, "version, SIMD paths compiled and detected, threads"},
    {"quantize", qround::cli::run_quantize, "round one layer's weights with a chosen method"},
    {"plan", qround::cli::run_plan, "choose bits per layer: the Pareto front of size vs loss"},
    {"demo", qround::cli::run_demo, "every method at 4, 3 and 2 bits on an LLM-like layer"},
    {"check", qround::cli::run_check, "run the packed int8/int4 kernel against the simulation"},
    {"model", qround::cli::run_model,
     "quantize a whole model (llama2.c or GGUF) end to end, report NLL and KL, write GGUF"},
    {"generate", qround::cli::run_generate, "sample text from a float or quantized model"},
    {"convert", qround::cli::run_convert, "write a model as a float llama GGUF"},
};

void usage(std::FILE* out) {
  std::fprintf(out, "usage: qround <command> [options]\n\ncommands:\n");
  for (const auto& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
  std::fprintf(out, "\n`qround <command> --help` shows a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char* name = argv[1];
  if (!std::strcmp(name, "--help") || !std::strcmp(name, "-h") || !std::strcmp(name, "help")) {
    usage(stdout);
    return 0;
  }
  for (const auto& c : kCommands) {
    if (std::strcmp(name, c.name) != 0) continue;
    try {
      return c.run(argc - 2, argv + 2);
    } catch (const qround::cli::UsageError& e) {
      std::fprintf(stderr, "qround %s: %s (see qround %s --help)\n", name, e.what(), name);
      return 2;
    } catch (const qround::Error& e) {
      std::fprintf(stderr, "qround %s: error: %s\n", name, e.what());
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "qround %s: unexpected error: %s\n", name, e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "qround: unknown command '%s'\n\n", name);
  usage(stderr);
  return 2;
}
