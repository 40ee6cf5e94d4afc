#include <gtest/gtest.h>

#include "cli_runner.hpp"
#include "model_test_data.hpp"
#include "qround/io/safetensors.hpp"

namespace qround {
namespace {

// "--model … --tokenizer …" for the shared data directory.
std::string model_flags(const std::string& dir) {
  return "--model '" + dir + "/stories260K.bin' --tokenizer '" + dir + "/tok512.bin'";
}

using ::qround::testing::run_cli;
using ::qround::testing::TempDir;

// Small runs (one calibration window, 1 500 evaluation tokens) to check the plumbing; the
// figures themselves are checked by the pipeline tests.
TEST(CliModel, QuantizesWritesAndGenerates) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  TempDir tmp;
  const std::string files = model_flags(dir);
  const std::string text = "'" + dir + "/tinystories_train_head.txt'";
  const std::string out = tmp.file("m.safetensors"), dump = tmp.file("dequant");
  const auto r = run_cli("model " + files + " --calib " + text + " --calib-tokens 511 --eval " +
                         text + " --eval-tokens 1500 --bits 4 --group-size 32 --quiet --out '" +
                         out + "' --dump-dequant '" + dump + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("float"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("quantized"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("layers.4.w2"), std::string::npos) << r.out;
  EXPECT_EQ(io::load_quantized(out).size(), 35u);
  EXPECT_TRUE(std::filesystem::exists(dump + "/layers.3.w2.npy"));

  const auto g = run_cli("generate " + files + " --quantized '" + out +
                         "' --prompt 'Once upon a time' --steps 20");
  ASSERT_EQ(g.exit_code, 0) << g.err;
  EXPECT_EQ(g.out.rfind("Once upon a time", 0), 0u) << g.out;
  EXPECT_GT(g.out.size(), std::string("Once upon a time").size() + 20) << g.out;
}

TEST(CliModel, UsageAndRuntimeErrors) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  TempDir tmp;
  const std::string files = model_flags(dir);
  const std::string text = "'" + dir + "/tinystories_train_head.txt'";
  EXPECT_EQ(run_cli("model --tokenizer x --calib y --eval z").exit_code, 2);
  EXPECT_EQ(run_cli("model " + files + " --calib " + text + " --eval " + text + " --bits 9")
                .exit_code,
            2);
  EXPECT_EQ(run_cli("model " + files + " --calib " + text + " --eval " + text +
                    " --mixed-budget 3")
                .exit_code,
            2);
  EXPECT_EQ(run_cli("model " + files + " --calib " + text + " --eval " + text +
                    " --method nosuch")
                .exit_code,
            2);
  const auto missing = run_cli("model --model '" + tmp.file("none.bin") + "' --tokenizer x " +
                               "--calib " + text + " --eval " + text);
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("none.bin"), std::string::npos) << missing.err;
  EXPECT_EQ(run_cli("generate " + files + " --quantized '" + tmp.file("none") + "'").exit_code, 1);
  EXPECT_EQ(run_cli("generate " + files + " --steps -1").exit_code, 2);
  EXPECT_EQ(run_cli("model --help").exit_code, 0);
}

}  // namespace
}  // namespace qround
