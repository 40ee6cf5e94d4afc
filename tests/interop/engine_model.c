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
 *   engine_model quantize IN.gguf OUT.gguf FTYPE [pure]
 *       llama_model_quantize with the llama_ftype number FTYPE (llama.h), 2 threads.
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

static int quantize(const char* in, const char* out, int ftype, int pure) {
  struct llama_model_quantize_params qp = llama_model_quantize_default_params();
  qp.nthread = 2;
  qp.ftype = (enum llama_ftype)ftype;
  qp.pure = pure != 0;
  if (llama_model_quantize(in, out, &qp) != 0)
    die("llama_model_quantize %s -> %s (ftype %d) failed", in, out, ftype);
  return 0;
}

int main(int argc, char** argv) {
  llama_log_set(quiet_log, NULL);
  ggml_backend_load_all_from_path(ENGINE_LIBDIR);
  llama_backend_init();
  if (argc == 4 && strcmp(argv[1], "nll") == 0) return nll(argv[2], argv[3]);
  if ((argc == 5 || argc == 6) && strcmp(argv[1], "quantize") == 0)
    return quantize(argv[2], argv[3], atoi(argv[4]), argc == 6 && strcmp(argv[5], "pure") == 0);
  fprintf(stderr,
          "usage: engine_model nll MODEL.gguf WINDOWS.txt\n"
          "       engine_model quantize IN.gguf OUT.gguf FTYPE [pure]\n");
  return 2;
}
