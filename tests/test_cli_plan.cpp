// `qround plan` end to end: manifest with relative paths, the plan file, budgets, usage errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cli_runner.hpp"
#include "qround/io/json.hpp"
#include "qround/io/npy.hpp"

namespace qround::testing {
namespace {

// Two small layers written as .npy beside a manifest that names them relatively.
std::string write_manifest(const TempDir& dir) {
  for (int i = 0; i < 2; ++i) {
    io::save_npy(dir.file("w" + std::to_string(i) + ".npy"), random_matrix(8 + 8 * i, 32, 10 + i));
    io::save_npy(dir.file("x" + std::to_string(i) + ".npy"), random_matrix(64, 32, 20 + i));
  }
  const std::string manifest = dir.file("manifest.json");
  std::ofstream(manifest) << R"({"layers": [
    {"name": "a", "weights": "w0.npy", "inputs": "x0.npy"},
    {"name": "b", "weights": "w1.npy", "inputs": ["x1.npy", "x0.npy"]}]})";
  return manifest;
}

TEST(CliPlan, WritesTheFrontAndTheChosenPoint) {
  if (std::string(QROUND_CLI_PATH).empty()) GTEST_SKIP() << "CLI not built";
  TempDir dir;
  const std::string manifest = write_manifest(dir);
  const CliResult r =
      run_cli("plan --layers '" + manifest + "' --bits 2,4,8 --group-size 16 " +
              "--method gptq --block 8 --budget 4.5 --out '" + dir.file("plan.json") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("<- chosen"), std::string::npos) << r.out;
  const json::Value plan = json::parse(slurp(dir.file("plan.json")));
  const auto& front = plan.at("front").as_array();
  ASSERT_GE(front.size(), 3u);
  for (size_t i = 1; i < front.size(); ++i) {
    EXPECT_GT(front[i].at("bits_per_weight").as_number(),
              front[i - 1].at("bits_per_weight").as_number());
    EXPECT_LT(front[i].at("loss").as_number(), front[i - 1].at("loss").as_number());
  }
  const json::Value& chosen = plan.at("chosen");
  EXPECT_LE(chosen.at("bits_per_weight").as_number(), 4.5);
  EXPECT_EQ(chosen.at("allocation").as_object().size(), 2u);
  EXPECT_EQ(front.front().at("allocation").at("b").as_int(), 2);
}

TEST(CliPlan, Errors) {
  if (std::string(QROUND_CLI_PATH).empty()) GTEST_SKIP() << "CLI not built";
  TempDir dir;
  const std::string manifest = write_manifest(dir);
  const std::string out = " --out '" + dir.file("plan.json") + "'";
  CliResult r = run_cli("plan --layers '" + manifest + "' --bits 2,4 --budget 1.0" + out);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("below the minimum"), std::string::npos) << r.err;
  r = run_cli("plan --layers '" + manifest + "' --bits 2,4 --budget 9" + out);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("above the maximum"), std::string::npos) << r.err;
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"manifest.json", "w0.npy", "w1.npy", "x0.npy",
                                                     "x1.npy"}));  // nothing written on error
  EXPECT_EQ(run_cli("plan --layers '" + manifest + "' --bits 2,9" + out).exit_code, 2);
  // An unknown method setting is a usage error found before any work (as in `quantize`), and so
  // are an infinite budget and an empty --out (issue 15: these exited 1).
  r = run_cli("plan --layers '" + manifest + "' --bits 2,4 --frobnicate 1" + out);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("frobnicate"), std::string::npos) << r.err;
  for (const char* bad : {" --budget inf", " --budget nan", " --budget-bytes inf",
                          " --out=", " --threads 5000", " --max-memory lots"}) {
    r = run_cli("plan --layers '" + manifest + "' --bits 2,4" + out + bad);
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
  }
  // Inputs overflowing the statistics: exit 1 naming the layer.
  io::save_npy(dir.file("x0.npy"), MatrixF::Constant(64, 32, 1e37f));
  r = run_cli("plan --layers '" + manifest + "' --bits 2,4" + out);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("x0.npy"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("XᵀX overflows"), std::string::npos) << r.err;
  EXPECT_EQ(run_cli("plan --layers '" + dir.file("missing.json") + "'" + out).exit_code, 1);
}

// Regression (issue 15): weights of shape (2^62, 0) made plan spin forever.
TEST(CliPlan, EmptyWeightsWithAHugeShapeAreRefused) {
  if (std::string(QROUND_CLI_PATH).empty()) GTEST_SKIP() << "CLI not built";
  TempDir dir;
  write_manifest(dir);
  std::string header =
      "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 0), }";
  header.append((64 - (10 + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::ofstream(dir.file("w0.npy"), std::ios::binary)
      << std::string("\x93NUMPY\x01\x00", 8) << static_cast<char>(header.size() & 0xff)
      << static_cast<char>(header.size() >> 8) << header;
  const CliResult r = run_cli("plan --layers '" + dir.file("manifest.json") +
                              "' --bits 2,4 --out '" + dir.file("plan.json") + "'");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("4611686018427387904"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir.file("plan.json")));
}

TEST(CliPlan, FormatCandidatesErrors) {
  if (std::string(QROUND_CLI_PATH).empty()) GTEST_SKIP() << "CLI not built";
  TempDir dir;
  const std::string manifest = write_manifest(dir);
  const std::string plan = "plan --layers '" + manifest + "' --out '" + dir.file("plan.json") + "'";
  CliResult r = run_cli(plan + " --formats q4_0,q9_9");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("q9_9"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("q6_k"), std::string::npos) << r.err;  // the known names
  r = run_cli(plan + " --formats q4_0 --bits 2,4");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("not both"), std::string::npos) << r.err;
  EXPECT_EQ(run_cli(plan + " --formats q4_0,q4_0").exit_code, 2);
  EXPECT_EQ(run_cli(plan + " --formats f16").exit_code, 2);
  // 32-input layers are no whole K-quant block (256): no candidate left for layer 'a'.
  r = run_cli(plan + " --formats q4_k,q6_k");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("'a' (32 inputs)"), std::string::npos) << r.err;
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"manifest.json", "w0.npy", "w1.npy", "x0.npy",
                                                     "x1.npy"}));  // nothing written on error
}

TEST(CliGptq, QuantizeTakesGptqSettings) {
  if (std::string(QROUND_CLI_PATH).empty()) GTEST_SKIP() << "CLI not built";
  TempDir dir;
  write_manifest(dir);
  const std::string common = "quantize --weights '" + dir.file("w1.npy") + "' --inputs '" +
                             dir.file("x1.npy") + "' --bits 3 --group-size 8 --method gptq";
  CliResult r = run_cli(common + " --act-order --static-groups --damp 0.05 --block 8 --out '" +
                        dir.file("q") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json::Value report = json::parse(slurp(dir.file("q/report.json")));
  EXPECT_EQ(report.at("method").as_string(), "gptq");
  EXPECT_LE(report.at("loss").as_number(), report.at("loss_rtn").as_number());
  r = run_cli(common + " --act-order --out '" + dir.file("q2") + "'");  // needs static groups
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("static"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace qround::testing
