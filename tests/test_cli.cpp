// The qround tool as a user meets it: exit codes (0 ok, 1 runtime error, 2 usage), output, and
// no partial results on failure.
#include <gtest/gtest.h>

#include <regex>
#include <sstream>

#include "test_helpers.hpp"

#include "cli_runner.hpp"

namespace qround {
namespace {

using testing::run_cli;

TEST(Cli, NoArgumentsIsAUsageError) {
  const auto r = run_cli("");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("usage: qround"), std::string::npos);
}

TEST(Cli, UnknownCommandIsAUsageError) {
  const auto r = run_cli("frobnicate");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown command 'frobnicate'"), std::string::npos);
}

TEST(Cli, HelpExitsZero) {
  EXPECT_EQ(run_cli("--help").exit_code, 0);
  for (const char* cmd : {"info", "demo"}) {
    const auto r = run_cli(std::string(cmd) + " --help");
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_NE(r.out.find("usage: qround"), std::string::npos) << cmd;
  }
}

TEST(Cli, InfoPrintsVersionThreadsAndMethods) {
  const auto r = run_cli("info");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("qround 0."), std::string::npos);
  EXPECT_NE(r.out.find("threads: "), std::string::npos);
  EXPECT_NE(r.out.find("isa: "), std::string::npos);
  EXPECT_NE(r.out.find("  supported: scalar"), std::string::npos);
  EXPECT_NE(r.out.find("methods: nearest"), std::string::npos);
}

TEST(Cli, DemoPrintsOneRowPerMethodAndBitWidth) {
  const auto r = run_cli("demo --out 32 --in 64 --tokens 256 --iterations 20 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("relative loss"), std::string::npos);
  // Every method `qround info` lists appears once per bit width, with a finite relative loss.
  const auto info = run_cli("info");
  const auto methods_at = info.out.find("methods: ");
  ASSERT_NE(methods_at, std::string::npos);
  std::istringstream methods(info.out.substr(methods_at + 9, info.out.find('\n', methods_at) -
                                                               methods_at - 9));
  std::string method;
  int count = 0;
  while (methods >> method) {
    for (const char* bits : {"4", "3", "2"}) {
      const std::regex row("(^|\n)" + method + " +" + bits + " +[0-9]+\\.[0-9]+ ");
      EXPECT_TRUE(std::regex_search(r.out, row)) << method << " " << bits << "\n" << r.out;
    }
    ++count;
  }
  EXPECT_GE(count, 1);
}

TEST(Cli, DemoRejectsUnknownOptionsAndBadValues) {
  auto r = run_cli("demo --bogus 1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown option --bogus"), std::string::npos);
  r = run_cli("demo --out notanumber");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--out 'notanumber' is not an integer"), std::string::npos);
}

}  // namespace
}  // namespace qround
