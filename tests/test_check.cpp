// The inference check on real layers (skipped when the data is absent) and on synthetic ones:
// the integer path must match the float simulation to float rounding (≥ 100 dB SQNR) at W8A8 and
// W4A8 on every ISA this machine runs; NUPES grids go through the float-activation path.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "cli_runner.hpp"
#include "qround/check.hpp"
#include "qround/error.hpp"
#include "qround/io/json.hpp"
#include "qround/io/npy.hpp"
#include "qround/isa.hpp"
#include "qround/scale_search.hpp"
#include "test_helpers.hpp"

namespace qround {
namespace {

QuantizedLayer quantize_layer(const MatrixF& w, GridSpec spec, float exponent = 1.0f) {
  spec.restricted = spec.symmetric && spec.bits == 8;  // int8 kernels take ±127
  QuantizedLayer layer;
  layer.grid = make_grid(w, spec);
  if (exponent != 1.0f) layer.grid.exponent = VectorF::Constant(w.rows(), exponent);
  layer.codes = quantize(w, layer.grid);
  return layer;
}

struct Spec {
  const char* name;
  int bits;
  int group;  // 0 = per row
  bool symmetric;
};

constexpr Spec kSpecs[] = {{"W8A8 per-row symmetric", 8, 0, true},
                           {"W8A8 group-32 symmetric", 8, 32, true},
                           {"W4A8 per-row symmetric", 4, 0, true},
                           {"W4A8 group-32 asymmetric", 4, 32, false}};

void expect_kernel_matches_simulation(const MatrixF& w, const MatrixF& x, const std::string& what) {
  for (const Spec& s : kSpecs) {
    const QuantizedLayer layer =
        quantize_layer(w, GridSpec::with_group_size(s.bits, s.group, s.symmetric));
    const PackedMatrix packed(layer);
    for (Isa isa : supported_isas()) {
      ScopedIsaOverride force(isa);
      const CheckResult r = check(packed, layer, x, w);
      EXPECT_EQ(r.isa, isa);
      EXPECT_GE(r.sqnr_int_vs_sim_db, 100.0) << what << " " << s.name << " on " << to_string(isa);
      EXPECT_LT(r.rel_err, 1e-5);
      // The quantization's own cost: finite, and the kernel inherits it.
      EXPECT_TRUE(std::isfinite(r.sqnr_sim_vs_float_db));
      EXPECT_NEAR(r.sqnr_int_vs_float_db, r.sqnr_sim_vs_float_db, 0.01);
      if (isa == supported_isas().back())
        std::printf(
            "[ check    ] %s %s on %s: int vs sim %.1f dB, vs float %.1f dB (sim %.1f dB)\n",
            what.c_str(), s.name, to_string(isa), r.sqnr_int_vs_sim_db, r.sqnr_int_vs_float_db,
            r.sqnr_sim_vs_float_db);
    }
  }
  // NUPES levels: the float-activation path (act_bits 32); the integer path refuses.
  const QuantizedLayer nupes = quantize_layer(w, GridSpec::with_group_size(4, 32, true), 0.8f);
  const PackedMatrix packed(nupes);
  CheckOptions float_acts;
  float_acts.act_bits = 32;
  const CheckResult r = check(packed, nupes, x, w, float_acts);
  EXPECT_GE(r.sqnr_int_vs_sim_db, 100.0) << what << " NUPES float activations";
  EXPECT_THROW(check(packed, nupes, x, w), InvalidArgument);
}

TEST(Check, RealLayersMatchSimulation) {
  const auto dir = testing::layers_dir();
  const std::pair<const char*, const char*> cases[] = {
      {"layers.0.w1.W.npy", "layers.0.ffn_in.X.npy"},
      {"layers.0.w2.W.npy", "layers.0.ffn_hidden.X.npy"},
      {"layers.1.wq.W.npy", "layers.1.attn_in.X.npy"}};
  if (!std::filesystem::exists(dir / cases[0].first))
    GTEST_SKIP() << "real layers not found in " << dir << " (set QROUND_DATA_DIR)";
  for (const auto& [wname, xname] : cases) {
    const MatrixF w = io::load_npy_f32((dir / wname).string());
    const MatrixF x = io::load_npy_f32((dir / xname).string());
    expect_kernel_matches_simulation(w, x.topRows(512), wname);
  }
}

TEST(Check, SyntheticLayerMatchesSimulation) {
  const MatrixF w = testing::random_matrix(70, 200, 3, 0.05);
  const MatrixF x = testing::llm_like_activations(33, 200, 4);
  expect_kernel_matches_simulation(w, x, "synthetic 70×200");
}

TEST(Check, RejectsMismatchedInputs) {
  const MatrixF w = testing::random_matrix(16, 64, 5);
  const QuantizedLayer layer = quantize_layer(w, GridSpec::with_group_size(4, 32, true));
  const PackedMatrix packed(layer);
  QuantizedLayer other = layer;
  other.codes(3, 3) = static_cast<std::int8_t>(other.codes(3, 3) == 0 ? 1 : 0);
  const MatrixF x = testing::random_matrix(4, 64, 6);
  EXPECT_THROW(check(packed, other, x, w), InvalidArgument);
  EXPECT_THROW(check(packed, layer, testing::random_matrix(4, 63, 6), w), InvalidArgument);
  EXPECT_THROW(check(packed, layer, x, testing::random_matrix(16, 63, 6)), InvalidArgument);
  CheckOptions bad;
  bad.act_bits = 16;
  EXPECT_THROW(check(packed, layer, x, w, bad), InvalidArgument);
  const CheckResult r = check(packed, layer, x);  // without float weights
  EXPECT_TRUE(std::isnan(r.sqnr_int_vs_float_db));
  EXPECT_GE(r.sqnr_int_vs_sim_db, 100.0);
}

// Regression (issue 15): 0 tokens segfaulted in maxCoeff() of an empty matrix.
TEST(Check, RejectsZeroTokens) {
  const MatrixF w = testing::random_matrix(16, 64, 5);
  const QuantizedLayer layer = quantize_layer(w, GridSpec::with_group_size(4, 32, true));
  const PackedMatrix packed(layer);
  const MatrixF none(0, 64);
  for (int act_bits : {8, 32}) {
    CheckOptions o;
    o.act_bits = act_bits;
    EXPECT_THROW(check(packed, layer, none, w, o), InvalidArgument) << act_bits;
    EXPECT_THROW(check(packed, layer, none, o), InvalidArgument) << act_bits;
  }
}

TEST(Check, CommandLineRejectsZeroTokens) {
  if (std::string(QROUND_CLI_PATH).empty()) GTEST_SKIP() << "the qround tool is not built";
  testing::TempDir tmp;
  const MatrixF w = testing::random_matrix(8, 32, 7);
  const std::string wp = tmp.file("w.npy"), xp = tmp.file("x.npy"), x0 = tmp.file("x0.npy");
  io::save_npy(wp, w);
  io::save_npy(xp, testing::random_matrix(16, 32, 8));
  io::save_npy(x0, MatrixF(0, 32));
  const std::string out = tmp.file("q");
  const auto q = testing::run_cli("quantize --weights " + wp + " --inputs " + xp +
                                  " --bits 4 --group-size 32 --quiet --out " + out);
  ASSERT_EQ(q.exit_code, 0) << q.err;
  const auto r =
      testing::run_cli("check --weights " + wp + " --inputs " + x0 + " --quantized " + out);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("no tokens"), std::string::npos) << r.err;
}

TEST(Check, CommandLineOnARealLayer) {
  if (std::string(QROUND_CLI_PATH).empty()) GTEST_SKIP() << "the qround tool is not built";
  const auto dir = testing::layers_dir();
  const std::string w = (dir / "layers.0.wo.W.npy").string(),
                    x = (dir / "layers.0.attn_out.X.npy").string();
  if (!std::filesystem::exists(w)) GTEST_SKIP() << "real layers not found in " << dir;
  testing::TempDir tmp;
  for (const char* grid : {"--bits 4 --group-size 32", "--bits 8 --group-size 0 --symmetric"}) {
    const std::string out = tmp.file(std::string("q") + grid[7]);
    const auto q = testing::run_cli("quantize --weights " + w + " --inputs " + x + " " + grid +
                                    " --quiet --out " + out);
    ASSERT_EQ(q.exit_code, 0) << q.err;
    for (const char* env : {"", "QROUND_ISA=scalar"}) {
      const auto r = testing::run_cli(
          "check --json --weights " + w + " --inputs " + x + " --quantized " + out, env);
      ASSERT_EQ(r.exit_code, 0) << r.err;
      const json::Value v = json::parse(r.out);
      EXPECT_GE(v.at("sqnr_int_vs_sim_db").as_number(), 100.0) << grid << " " << env;
      EXPECT_GT(v.at("sqnr_sim_vs_float_db").as_number(), 10.0);
      if (*env) {
        EXPECT_EQ(v.at("isa").as_string(), "scalar");
      }
    }
  }
  const auto bad = testing::run_cli("check --weights " + w + " --inputs " + x + " --quantized " +
                                    tmp.file("q4") + " --act-bits 16");
  EXPECT_EQ(bad.exit_code, 2);
  const auto missing = testing::run_cli("check --weights " + w + " --inputs " + x +
                                        " --quantized " + tmp.file("nothing"));
  EXPECT_EQ(missing.exit_code, 1);
}

}  // namespace
}  // namespace qround
