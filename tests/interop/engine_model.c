/* The real-engine check for whole models: stock llama.cpp (libllama of the pinned node-llama-cpp
 * release) loads a GGUF qround wrote and scores token windows with its own forward pass; and
 * llama-quantize's own quantizer (llama_model_quantize) makes the baseline file.
 * Only llama.h's public C API is used.
 *
 *   engine_model nll MODEL.gguf WINDOWS.txt
 *       WINDOWS.txt: one window per line, whitespace-separated token ids (each starts with BOS).
 *       For every window: clear the memory, decode the whole window in one batch with logits on
 *       every position, add −log softmax(logits[i])[token[i+1]] for i = 0..n−2 (double
 *       log-sum-exp). F32 K/V cache, flash attention off, so only the weights and llama.cpp's
 *       activation quantization differ from qround's evaluation. Prints "nll X tokens N".
 *   engine_model quantize IN.gguf OUT.gguf FTYPE [pure] [--imatrix FILE.dat]
 *       llama_model_quantize with the llama_ftype number FTYPE (llama.h), 2 threads; with
 *       --imatrix, the importance matrix of a legacy llama-imatrix file (int32 n_entries; per
 *       entry int32 name length, the name, int32 ncall, int32 nval, nval floats; little-endian),
 *       each value divided by ncall as tools/quantize/quantize.cpp's loader does.
 *
 * Exit status: 0 success, 2 any error (message on stderr). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml-backend.h"
#include "llama.h"

static void die(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("engine_model: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(2);
}

/* Warnings and errors only. */
static void quiet_log(enum ggml_log_level level, const char* text, void* user) {
  static int printing = 0;
  (void)user;
  if (level != GGML_LOG_LEVEL_CONT) printing = level >= GGML_LOG_LEVEL_WARN;
  if (printing) fputs(text, stderr);
}

static void* xrealloc(void* p, size_t n) {
  void* q = realloc(p, n ? n : 1);
  if (!q) die("out of memory allocating %zu bytes", n);
  return q;
}

typedef struct {
  int32_t* ids;
  int n;
} Window;

/* Every line of `path` as a window of token ids. */
static Window* read_windows(const char* path, int* count) {
  FILE* f = fopen(path, "r");
  if (!f) die("cannot open '%s': %s", path, strerror(errno));
  Window* w = NULL;
  int nw = 0;
  char* line = NULL;
  size_t cap = 0;
  while (getline(&line, &cap, f) >= 0) {
    Window cur = {NULL, 0};
    char* p = line;
    for (;;) {
      char* end;
      errno = 0;
      long v = strtol(p, &end, 10);
      if (end == p) break;
      if (errno || v < 0 || v > INT32_MAX) die("%s: bad token id in window %d", path, nw);
      cur.ids = xrealloc(cur.ids, sizeof(int32_t) * (size_t)(cur.n + 1));
      cur.ids[cur.n++] = (int32_t)v;
      p = end;
    }
    if (cur.n == 0) continue;
    w = xrealloc(w, sizeof(Window) * (size_t)(nw + 1));
    w[nw++] = cur;
  }
  free(line);
  fclose(f);
  if (nw == 0) die("%s holds no windows", path);
  *count = nw;
  return w;
}

static int nll(const char* model_path, const char* windows_path) {
  int nw = 0, longest = 0;
  Window* w = read_windows(windows_path, &nw);
  for (int i = 0; i < nw; ++i)
    if (w[i].n > longest) longest = w[i].n;

  struct llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  struct llama_model* model = llama_model_load_from_file(model_path, mp);
  if (!model) die("llama.cpp cannot load '%s'", model_path);
  const int vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

  struct llama_context_params cp = llama_context_default_params();
  cp.n_ctx = (uint32_t)longest;
  cp.n_batch = (uint32_t)longest;
  cp.n_ubatch = (uint32_t)longest;
  cp.n_seq_max = 1;
  cp.n_threads = 2;
  cp.n_threads_batch = 2;
  cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  cp.type_k = GGML_TYPE_F32;
  cp.type_v = GGML_TYPE_F32;
  struct llama_context* ctx = llama_init_from_model(model, cp);
  if (!ctx) die("llama.cpp cannot create a context of %d positions", longest);

  struct llama_batch batch = llama_batch_init(longest, 0, 1);
  double total = 0.0;
  long scored = 0;
  for (int k = 0; k < nw; ++k) {
    llama_memory_clear(llama_get_memory(ctx), true);
    batch.n_tokens = w[k].n;
    for (int i = 0; i < w[k].n; ++i) {
      if (w[k].ids[i] >= vocab) die("window %d: token %d outside the vocabulary", k, w[k].ids[i]);
      batch.token[i] = w[k].ids[i];
      batch.pos[i] = i;
      batch.n_seq_id[i] = 1;
      batch.seq_id[i][0] = 0;
      batch.logits[i] = 1;
    }
    if (llama_decode(ctx, batch) != 0) die("llama_decode failed on window %d", k);
    for (int i = 0; i + 1 < w[k].n; ++i) {
      const float* logits = llama_get_logits_ith(ctx, i);
      if (!logits) die("no logits at window %d position %d", k, i);
      double mx = logits[0];
      for (int v = 1; v < vocab; ++v)
        if (logits[v] > mx) mx = logits[v];
      double sum = 0.0;
      for (int v = 0; v < vocab; ++v) sum += exp((double)logits[v] - mx);
      total += mx + log(sum) - (double)logits[w[k].ids[i + 1]];
      ++scored;
    }
  }
  printf("nll %.6f tokens %ld\n", total / (double)scored, scored);
  llama_batch_free(batch);
  llama_free(ctx);
  llama_model_free(model);
  for (int k = 0; k < nw; ++k) free(w[k].ids);
  free(w);
  return 0;
}

static int32_t read_i32(FILE* f, const char* path) {
  int32_t v;
  if (fread(&v, sizeof v, 1, f) != 1) die("%s: truncated", path);
  return v;
}

/* The entries of a legacy imatrix file as llama_model_quantize's array (terminated by a NULL
 * name); values / ncall (float). */
static struct llama_model_imatrix_data* read_imatrix(const char* path) {
  FILE* f = fopen(path, "rb");
  if (!f) die("cannot open '%s': %s", path, strerror(errno));
  const int32_t n = read_i32(f, path);
  if (n <= 0 || n > 100000) die("%s: %d entries, expected 1..100000", path, n);
  struct llama_model_imatrix_data* out = xrealloc(NULL, sizeof(*out) * (size_t)(n + 1));
  for (int32_t i = 0; i < n; ++i) {
    const int32_t len = read_i32(f, path);
    if (len <= 0 || len > 4096) die("%s: entry %d: name length %d", path, i, len);
    char* name = xrealloc(NULL, (size_t)len + 1);
    if (fread(name, 1, (size_t)len, f) != (size_t)len) die("%s: truncated name", path);
    name[len] = 0;
    const int32_t ncall = read_i32(f, path), nval = read_i32(f, path);
    if (nval <= 0 || nval > (1 << 26)) die("%s: %s: %d values", path, name, nval);
    float* v = xrealloc(NULL, sizeof(float) * (size_t)nval);
    if (fread(v, sizeof(float), (size_t)nval, f) != (size_t)nval) die("%s: truncated values", path);
    if (ncall > 0)
      for (int32_t j = 0; j < nval; ++j) v[j] /= (float)ncall;
    out[i].name = name;
    out[i].data = v;
    out[i].size = (size_t)nval;
  }
  out[n].name = NULL;
  out[n].data = NULL;
  out[n].size = 0;
  fclose(f);
  return out;
}

static int quantize(const char* in, const char* out, int ftype, int pure, const char* imatrix) {
  struct llama_model_quantize_params qp = llama_model_quantize_default_params();
  qp.nthread = 2;
  qp.ftype = (enum llama_ftype)ftype;
  qp.pure = pure != 0;
  if (imatrix) qp.imatrix = read_imatrix(imatrix);
  if (llama_model_quantize(in, out, &qp) != 0)
    die("llama_model_quantize %s -> %s (ftype %d) failed", in, out, ftype);
  return 0;
}

int main(int argc, char** argv) {
  llama_log_set(quiet_log, NULL);
  ggml_backend_load_all_from_path(ENGINE_LIBDIR);
  llama_backend_init();
  if (argc == 4 && strcmp(argv[1], "nll") == 0) return nll(argv[2], argv[3]);
  if (argc >= 5 && strcmp(argv[1], "quantize") == 0) {
    int pure = 0;
    const char* imatrix = NULL;
    for (int i = 5; i < argc; ++i) {
      if (strcmp(argv[i], "pure") == 0)
        pure = 1;
      else if (strcmp(argv[i], "--imatrix") == 0 && i + 1 < argc)
        imatrix = argv[++i];
      else
        die("quantize: unexpected argument '%s' (expected pure or --imatrix FILE)", argv[i]);
    }
    return quantize(argv[2], argv[3], atoi(argv[4]), pure, imatrix);
  }
  fprintf(stderr,
          "usage: engine_model nll MODEL.gguf WINDOWS.txt\n"
          "       engine_model quantize IN.gguf OUT.gguf FTYPE [pure] [--imatrix FILE.dat]\n");
  return 2;
}
