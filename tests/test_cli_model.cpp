#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "cli_runner.hpp"
#include "model_test_data.hpp"
#include "qround/io/gguf.hpp"
#include "qround/io/imatrix.hpp"
#include "qround/io/json.hpp"
#include "qround/io/safetensors.hpp"
#include "qround/model/gguf_llama.hpp"
#include "qround/model/llama2c.hpp"
#include "qround/model/tokenizer.hpp"

namespace qround {
namespace {

// "--model … --tokenizer …" for the shared data directory.
std::string model_flags(const std::string& dir) {
  return "--model '" + dir + "/stories260K.bin' --tokenizer '" + dir + "/tok512.bin'";
}

using ::qround::testing::run_cli;
using ::qround::testing::slurp;
using ::qround::testing::TempDir;

// The number after `label` on the first line of `out` that starts with it (NaN if none).
double number_after(const std::string& out, const std::string& label) {
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);)
    if (line.rfind(label, 0) == 0) return std::stod(line.substr(label.size()));
  return std::nan("");
}

// Small runs (one calibration window, 1 500 evaluation tokens) to check the plumbing; the
// figures themselves are checked by the pipeline tests.
TEST(CliModel, QuantizesWritesAndGenerates) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  TempDir tmp;
  const std::string files = model_flags(dir);
  const std::string text = "'" + dir + "/tinystories_train_head.txt'";
  const std::string out = tmp.file("m.safetensors"), dump = tmp.file("dequant");
  const auto r =
      run_cli("model " + files + " --calib " + text + " --calib-tokens 511 --eval " + text +
              " --eval-tokens 1500 --bits 4 --group-size 32 --quiet --out '" + out +
              "' --dump-dequant '" + dump + "' --report '" + tmp.file("r.json") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  {
    const json::Value j = json::parse(slurp(tmp.file("r.json")));
    EXPECT_EQ(j.at("layers").as_array().size(), 35u);
    EXPECT_EQ(j.at("layers").as_array()[34].at("name").as_string(), "layers.4.w2");
    EXPECT_EQ(j.at("evaluation").at("quantized").at("tokens").as_int(), 1500);
    EXPECT_NEAR(j.at("evaluation").at("quantized").at("nll").as_number(),
                number_after(r.out, "quantized"), 1e-4);
  }
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
  EXPECT_EQ(
      run_cli("model " + files + " --calib " + text + " --eval " + text + " --bits 9").exit_code,
      2);
  EXPECT_EQ(run_cli("model " + files + " --calib " + text + " --eval " + text + " --method nosuch")
                .exit_code,
            2);
  // Issue 15: an unknown method setting, a group size the packed containers cannot take and
  // empty paths are usage errors found before any model work (they exited 1, the group size only
  // after the float pass), and --max-memory must parse.
  for (const char* bad : {" --frobnicate 1", " --method gptq --blok 8", " --group-size 3",
                          " --out=", " --dump-dequant=", " --max-memory lots",
                          " --mixed-budget 3.5 --group-size 12"}) {
    const auto r = run_cli("model " + files + " --calib " + text + " --eval " + text + bad);
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
  }
  const auto group3 =
      run_cli("model " + files + " --calib " + text + " --eval " + text + " --group-size 3");
  EXPECT_NE(group3.err.find("--group-size 3"), std::string::npos) << group3.err;
  const auto missing = run_cli("model --model '" + tmp.file("none.bin") + "' --tokenizer x " +
                               "--calib " + text + " --eval " + text);
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("none.bin"), std::string::npos) << missing.err;
  EXPECT_EQ(run_cli("generate " + files + " --quantized '" + tmp.file("none") + "'").exit_code, 1);
  EXPECT_EQ(run_cli("generate " + files + " --steps -1").exit_code, 2);
  EXPECT_EQ(run_cli("model --help").exit_code, 0);
}

// Mixed precision on stories260K (nearest, group 32, 511 calibration tokens, 4 000 eval tokens).
// Storage counts scales and zero points: uniform 3 bits costs 3.61 bits/weight, 4 bits 4.64, so
// the budget between them is 4.1 (3.5 would be below uniform 3 bits and mostly 2-bit layers).
// Measured: uniform 3 bits NLL 2.1014 (3.6105 bpw), uniform 4 bits 1.6387 (4.6427 bpw), mixed
// ≤ 4.1 NLL 1.8636 (4.0962 bpw; 18 layers at 3 bits, 16 at 4, 1 at 8); float 1.5420.
// --method block: the per-layer method then block reconstruction, its table and report (a few
// steps only: the quality is the block reconstruction tests' job); its options only with it.
TEST(CliModel, BlockMethodRunsAndReports) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  TempDir tmp;
  const std::string common = "model " + model_flags(dir) + " --calib '" + dir +
                             "/tinystories_train_head.txt' --calib-tokens 511 --eval '" + dir +
                             "/tinystories_train_head.txt' --eval-tokens 1000 --bits 3 --quiet";
  const auto r = run_cli(common + " --method block --block-init nearest --block-iterations 5 " +
                         "--block-batch 1 --report '" + tmp.file("r.json") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("per-layer loss"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("block reconstruction"), std::string::npos) << r.out;
  const json::Value j = json::parse(slurp(tmp.file("r.json")));
  const auto& blocks = j.at("block_reconstruction").at("blocks").as_array();
  ASSERT_EQ(blocks.size(), 5u);
  for (const auto& b : blocks)
    EXPECT_LE(b.at("final_loss").as_number(), b.at("per_layer_loss").as_number());
  EXPECT_EQ(j.at("block_reconstruction").at("iterations").as_int(), 5);
  for (const std::string bad :
       {" --block-iterations 5", " --method block --block-target other",
        " --method block --block-init block", " --method block --block-lr 0",
        " --method block --block-iterations -2", " --method block --block-init nosuch"}) {
    const auto e = run_cli(common + bad);
    EXPECT_EQ(e.exit_code, 2) << bad << ": " << e.err;
  }
}

TEST(CliModel, MixedBudgetLandsBetweenUniformWidths) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  TempDir tmp;
  const std::string text = "'" + dir + "/tinystories_train_head.txt'";
  const std::string common = "model " + model_flags(dir) + " --calib " + text +
                             " --calib-tokens 511 --eval " + text +
                             " --eval-tokens 4000 --group-size 32 --quiet";
  const auto three = run_cli(common + " --bits 3");
  const auto four = run_cli(common + " --bits 4");
  const std::string out = tmp.file("mixed.safetensors");
  const auto mixed = run_cli(common + " --mixed-budget 4.1 --out '" + out + "'");
  ASSERT_EQ(three.exit_code, 0) << three.err;
  ASSERT_EQ(four.exit_code, 0) << four.err;
  ASSERT_EQ(mixed.exit_code, 0) << mixed.err;
  const double nll3 = number_after(three.out, "quantized"),
               nll4 = number_after(four.out, "quantized"),
               nll_mixed = number_after(mixed.out, "quantized");
  EXPECT_GT(nll_mixed, nll4 + 0.05) << mixed.out;
  EXPECT_LT(nll_mixed, nll3 - 0.05) << mixed.out;
  EXPECT_LE(number_after(mixed.out, "bits per weight"), 4.1) << mixed.out;
  EXPECT_NEAR(number_after(three.out, "bits per weight"), 3.6105, 1e-3) << three.out;
  // The layers really get different widths, and the file stores them.
  std::set<int> widths;
  for (const auto& layer : io::load_quantized(out)) widths.insert(layer.packed.grid().bits);
  EXPECT_GE(widths.size(), 2u) << mixed.out;
  EXPECT_NE(mixed.out.find("front points"), std::string::npos) << mixed.out;
}

TEST(CliModel, MixedBudgetUsageErrors) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  TempDir tmp;
  const std::string text = "'" + dir + "/tinystories_train_head.txt'";
  const std::string out = tmp.file("m.safetensors");
  const std::string common = "model " + model_flags(dir) + " --calib " + text +
                             " --calib-tokens 200 --eval " + text +
                             " --eval-tokens 300 --quiet --out '" + out + "'";
  for (const char* bad :
       {" --mixed-budget 1.5", " --mixed-budget 40", " --mixed-budget -1",
        " --mixed-budget 3 --mixed-bits 2,9", " --mixed-budget 3 --bits 4", " --mixed-bits 2,4"}) {
    const auto r = run_cli(common + bad);
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
    EXPECT_NE(r.err.find("mixed"), std::string::npos) << bad << ": " << r.err;
    EXPECT_FALSE(std::filesystem::exists(out)) << bad;
  }
}

// `qround model --format`: the GGUF, the JSON report with every tensor, the importance matrix of
// the calibration written for llama-quantize and read back with --imatrix, and the held-out
// evaluation (--eval-skip) — the plumbing; the exactness of the file is test_gguf_llama's.
// A GGUF whose vocabulary qround cannot run: text is refused with a hint, token ids quantize it,
// and the output keeps the input's tokenizer.
TEST(CliModelGguf, AnUnrunnableTokenizerTakesTokenIdsAndIsKept) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  TempDir tmp;
  const model::LlamaModel s = model::load_llama2c(dir + "/stories260K.bin");
  const auto tok = model::Tokenizer::load(dir + "/tok512.bin", s.config().vocab_size);
  io::GgufFile f = model::llama_to_gguf(s, tok);
  f.set("tokenizer.ggml.model", io::GgufValue::string("gpt2"));
  f.set("tokenizer.ggml.merges", io::GgufValue::array(std::vector<std::string>{"a b"}));
  const std::string in = tmp.file("bpe.gguf"), out = tmp.file("q.gguf"),
                    ids = tmp.file("calib.tokens");
  io::write_gguf(in, f);
  std::string id_text;
  for (int t : tok.encode(slurp(dir + "/tinystories_train_head.txt").substr(0, 6000)))
    id_text += std::to_string(t) + " ";
  std::ofstream(ids) << id_text;
  const std::string text = "'" + dir + "/tinystories_train_head.txt'";
  const auto refused = run_cli("model --model '" + in + "' --calib " + text + " --eval " + text +
                               " --format q8_0 --quiet --out '" + out + "'");
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("gpt2"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find(".tokens"), std::string::npos) << refused.err;
  const auto r = run_cli("model --model '" + in + "' --calib '" + ids + "' --eval '" + ids +
                         "' --format q8_0 --method gptq --quiet --out '" + out + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const io::GgufFile q = io::read_gguf(out);
  EXPECT_EQ(q.get("tokenizer.ggml.model").get<std::string>(), "gpt2");
  EXPECT_TRUE(q.get("tokenizer.ggml.merges") == f.get("tokenizer.ggml.merges"));
  EXPECT_TRUE(q.get("tokenizer.ggml.tokens") == f.get("tokenizer.ggml.tokens"));
}

TEST(CliModelGguf, WritesTheFileReportAndImatrix) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  TempDir tmp;
  const std::string text = "'" + dir + "/tinystories_train_head.txt'";
  const std::string common = "model " + model_flags(dir) + " --calib " + text +
                             " --calib-tokens 511 --eval " + text +
                             " --eval-skip 4088 --eval-tokens 1500 --format q4_0 --quiet";
  const std::string out = tmp.file("m.gguf"), report = tmp.file("r.json"),
                    imatrix = tmp.file("imatrix.gguf"), legacy = tmp.file("imatrix.dat");
  const auto r = run_cli(common + " --method gptq --out '" + out + "' --report '" + report +
                         "' --imatrix-out '" + imatrix + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(io::read_gguf(out).tensors().size(), 1u + 5u * 9u + 1u);  // + norms
  const json::Value j = json::parse(slurp(report));
  EXPECT_EQ(j.at("format").as_string(), "q4_0");
  EXPECT_EQ(j.at("method").as_string(), "gptq");
  const auto& tensors = j.at("tensors").as_array();
  ASSERT_EQ(tensors.size(), 36u);  // token_embd + 35 linears (output tied)
  int rounded = 0;
  for (const auto& t : tensors) {
    const std::string name = t.at("name").as_string(), type = t.at("type").as_string();
    EXPECT_FALSE(t.at("reason").as_string().empty()) << name;
    EXPECT_GT(t.at("bytes").as_number(), 0) << name;
    if (name.find("ffn_down") != std::string::npos) {
      EXPECT_EQ(type, "f16") << name;  // 172 columns: no 32-blocks
    } else if (name.rfind("blk.", 0) == 0) {
      EXPECT_EQ(type, "q4_0") << name;
      EXPECT_EQ(t.at("scale_importance").as_string(), "calibration") << name;
      EXPECT_LE(t.at("rounding").at("loss").as_number(),
                t.at("rounding").at("loss_rtn").as_number() * (1 + 1e-9))
          << name;
      ++rounded;
    }
  }
  EXPECT_EQ(rounded, 30);
  const auto& ev = j.at("evaluation");
  EXPECT_EQ(ev.at("skip_tokens").as_int(), 4088);
  EXPECT_EQ(ev.at("quantized").at("tokens").as_int(), 1500);
  EXPECT_GT(ev.at("nll_increase").as_number(), 0.0);
  EXPECT_LT(ev.at("nll_increase").as_number(), 0.2);
  EXPECT_EQ(j.at("stages").as_array().size(), 15u);  // q,k,v / o / gate,up per block (down: f16)
  // The imatrix: llama-imatrix's names and one count for every blk matrix.
  const io::Imatrix im = io::read_imatrix(imatrix);
  EXPECT_EQ(im.entries.size(), 35u);
  EXPECT_NE(im.find("blk.4.ffn_down.weight"), nullptr);

  // Given back as --imatrix (legacy form this time), it weighs the scale searches.
  const auto legacy_run =
      run_cli(common + " --method nearest --out '" + out + "' --report '" + report +
              "' --imatrix '" + imatrix + "' --imatrix-out '" + legacy + "'");
  ASSERT_EQ(legacy_run.exit_code, 0) << legacy_run.err;
  EXPECT_EQ(io::read_imatrix(legacy).form, io::ImatrixForm::kLegacy);
  const json::Value again = json::parse(slurp(report));
  for (const auto& t : again.at("tensors").as_array()) {
    const std::string name = t.at("name").as_string();
    if (name.rfind("blk.", 0) == 0 && name.find("ffn_down") == std::string::npos)
      EXPECT_EQ(t.at("scale_importance").as_string(), "imatrix") << name;
    if (name == "token_embd.weight") EXPECT_EQ(t.at("scale_importance").as_string(), "uniform");
  }

  // The held-out tail is what --eval-skip evaluates: a different NLL from the head.
  const auto head =
      run_cli("model " + model_flags(dir) + " --calib " + text + " --calib-tokens 511 --eval " +
              text + " --eval-tokens 1500 --format q4_0 --quiet --out '" + out + "'");
  ASSERT_EQ(head.exit_code, 0) << head.err;
  EXPECT_NE(number_after(head.out, "float"), ev.at("float").at("nll").as_number());
}

TEST(CliModelGguf, UsageErrorsLeaveNoFile) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  TempDir tmp;
  const std::string text = "'" + dir + "/tinystories_train_head.txt'";
  const std::string out = tmp.file("m.gguf");
  const std::string common = "model " + model_flags(dir) + " --calib " + text +
                             " --calib-tokens 200 --eval " + text + " --eval-tokens 300 --quiet";
  for (const std::string& bad :
       {std::string(" --format q4_0 --imatrix x.gguf --scale-search minmax"),
        std::string(" --imatrix x.gguf --bits 4"), std::string(" --format q4_0 --bits 4"),
        std::string(" --format q4_0 --imatrix-process-output"),
        std::string(" --format q4_0 --eval-skip 100000000"), std::string(" --format q9_9"),
        std::string(" --eval-skip -3"), std::string(" --format q4_0 --mixed-budget 2"),
        std::string(" --format q4_0 --mixed-budget 7.7 --mixed-candidates q4_0,f16"),
        std::string(" --format q4_0 --mixed-candidates q4_0")}) {
    const auto r = run_cli(common + bad + " --out '" + out + "'");
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
    EXPECT_FALSE(r.err.empty()) << bad;
    EXPECT_FALSE(std::filesystem::exists(out)) << bad;
  }
  const auto missing = run_cli(common + " --format q4_0 --imatrix '" + tmp.file("none.gguf") +
                               "' --out '" + out + "'");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("none.gguf"), std::string::npos) << missing.err;
  EXPECT_FALSE(std::filesystem::exists(out));
}

}  // namespace
}  // namespace qround
