/* The real-engine check: stock llama.cpp's ggml (prebuilt, from the pinned node-llama-cpp package)
 * reads and dequantizes files qround writes, and quantizes floats with llama.cpp's own quantizer.
 * Only ggml's public API is used (ggml.h, gguf.h, ggml-backend.h of the bundled release).
 *
 *   engine_check dequant FILE.gguf OUTDIR
 *       every tensor → OUTDIR/<name>.f32 (raw float32, rows × cols) via ggml's to_float
 *   engine_check quantize TYPE IN ROWS COLS [IMATRIX] OUT.f32
 *       ggml_quantize_chunk (importance weights: one float per column) then to_float; prints the
 *       seconds the quantizer took
 *   engine_check info FILE.gguf
 *       what llama.cpp's gguf reader sees: one line per key ("kv KEY TYPE VALUE", arrays "kv KEY 9
 *       ELEMTYPE N V…"; floats in %a, exact) and per tensor ("tensor NAME TYPE NE0..NE3 OFFSET")
 *   engine_check compare A B
 *       bitwise comparison of two float32 arrays; prints the number of differing floats and exits
 *       1 when any differ
 *   engine_check colsq COLS X OUT.f32
 *       the importance imp_j = Σ_t X[t][j]² (diag XᵀX) of tokens × COLS inputs, as raw float32
 *   engine_check werror COLS IMP W A B
 *       Σ imp_j (A − W)² and Σ imp_j (B − W)² over rows × COLS weights, in double; prints both
 *       and their ratio B/A
 *
 * Float inputs (IN, IMATRIX, A, B) are raw float32 files or .npy files of dtype <f4 (C order).
 * Exit status: 0 success, 1 a comparison found differences, 2 any error (message on stderr). */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ggml-backend.h"
#include "ggml.h"
#include "gguf.h"

static void die(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("engine_check: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(2);
}

/* ggml's log, warnings and errors only (the backend loader reports every library at info level). */
static void quiet_log(enum ggml_log_level level, const char* text, void* user) {
  static int printing = 0;
  (void)user;
  if (level != GGML_LOG_LEVEL_CONT) printing = level >= GGML_LOG_LEVEL_WARN;
  if (printing) fputs(text, stderr);
}

static void* xmalloc(size_t n) {
  void* p = malloc(n ? n : 1);
  if (!p) die("out of memory allocating %zu bytes", n);
  return p;
}

static unsigned char* read_all(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  if (!f) die("cannot open '%s': %s", path, strerror(errno));
  if (fseek(f, 0, SEEK_END) != 0) die("cannot seek '%s'", path);
  long n = ftell(f);
  if (n < 0) die("cannot size '%s'", path);
  rewind(f);
  unsigned char* buf = xmalloc((size_t)n);
  if (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) die("cannot read '%s'", path);
  fclose(f);
  *size = (size_t)n;
  return buf;
}

static void write_all(const char* path, const void* data, size_t n) {
  FILE* f = fopen(path, "wb");
  if (!f) die("cannot create '%s': %s", path, strerror(errno));
  if (n > 0 && fwrite(data, 1, n, f) != n) die("cannot write '%s'", path);
  if (fclose(f) != 0) die("cannot close '%s'", path);
}

/* A float32 array from a raw .f32 file or a .npy file ('<f4', C order, any shape). */
static float* read_floats(const char* path, size_t* count) {
  size_t size;
  unsigned char* buf = read_all(path, &size);
  size_t start = 0;
  if (size >= 6 && memcmp(buf, "\x93NUMPY", 6) == 0) {
    /* numpy format: magic, major, minor, header length (u16 in 1.0, u32 in 2.0/3.0), header. */
    if (size < 10) die("'%s': truncated .npy header", path);
    size_t hlen, hstart;
    if (buf[6] == 1) {
      hlen = (size_t)buf[8] | ((size_t)buf[9] << 8);
      hstart = 10;
    } else if (buf[6] == 2 || buf[6] == 3) {
      if (size < 12) die("'%s': truncated .npy header", path);
      hlen = (size_t)buf[8] | ((size_t)buf[9] << 8) | ((size_t)buf[10] << 16) |
             ((size_t)buf[11] << 24);
      hstart = 12;
    } else {
      die("'%s': .npy version %d is not 1, 2 or 3", path, buf[6]);
    }
    if (hlen > size - hstart) die("'%s': .npy header longer than the file", path);
    char* header = xmalloc(hlen + 1);
    memcpy(header, buf + hstart, hlen);
    header[hlen] = 0;
    if (!strstr(header, "'descr': '<f4'"))
      die("'%s': .npy dtype is not '<f4' (header %s)", path, header);
    if (!strstr(header, "'fortran_order': False"))
      die("'%s': .npy is not in C order (header %s)", path, header);
    free(header);
    start = hstart + hlen;
  }
  if ((size - start) % 4 != 0) die("'%s': %zu data bytes, not a multiple of 4", path, size - start);
  *count = (size - start) / 4;
  float* out = xmalloc(size - start);
  memcpy(out, buf + start, size - start);
  free(buf);
  return out;
}

static enum ggml_type parse_type(const char* name) {
  for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
    const char* n = ggml_type_name((enum ggml_type)t);
    if (n && strcasecmp(n, name) == 0) return (enum ggml_type)t;
  }
  die("unknown ggml type '%s'", name);
  return GGML_TYPE_F32;
}

/* ggml's own dequantization of `n` elements of `type` (F32 has no to_float: a copy). */
static void to_float(enum ggml_type type, const void* src, float* dst, int64_t n) {
  if (type == GGML_TYPE_F32) {
    memcpy(dst, src, (size_t)n * sizeof(float));
    return;
  }
  const struct ggml_type_traits* tr = ggml_get_type_traits(type);
  if (!tr->to_float) die("ggml type %s has no to_float", ggml_type_name(type));
  tr->to_float(src, dst, n);
}

static int cmd_dequant(const char* path, const char* outdir) {
  struct gguf_init_params params = {true, NULL}; /* metadata only; data read by offset below */
  struct gguf_context* ctx = gguf_init_from_file(path, params);
  if (!ctx) die("llama.cpp's gguf reader refused '%s'", path);
  size_t size;
  unsigned char* file = read_all(path, &size);
  const size_t data_offset = gguf_get_data_offset(ctx);
  const int64_t n_tensors = gguf_get_n_tensors(ctx);
  for (int64_t i = 0; i < n_tensors; ++i) {
    const char* name = gguf_get_tensor_name(ctx, i);
    if (strchr(name, '/')) die("tensor name '%s' contains '/'", name);
    const enum ggml_type type = gguf_get_tensor_type(ctx, i);
    const int64_t* ne = gguf_get_tensor_ne(ctx, i);
    const int64_t n = ne[0] * ne[1] * ne[2] * ne[3];
    const size_t bytes = gguf_get_tensor_size(ctx, i);
    const size_t at = data_offset + gguf_get_tensor_offset(ctx, i);
    if (at > size || bytes > size - at) die("tensor '%s' lies outside '%s'", name, path);
    if (bytes != ggml_row_size(type, ne[0]) * (size_t)(n / (ne[0] ? ne[0] : 1)))
      die("tensor '%s': %zu bytes, ggml_row_size disagrees", name, bytes);
    float* out = xmalloc((size_t)n * sizeof(float));
    to_float(type, file + at, out, n);
    char outpath[4096];
    snprintf(outpath, sizeof outpath, "%s/%s.f32", outdir, name);
    write_all(outpath, out, (size_t)n * sizeof(float));
    printf("%s %s %lld %lld\n", name, ggml_type_name(type), (long long)(n / (ne[0] ? ne[0] : 1)),
           (long long)ne[0]);
    free(out);
  }
  free(file);
  gguf_free(ctx);
  return 0;
}

/* Element i of a numeric GGUF array or scalar at `p`, printed exactly. */
static void print_number(enum gguf_type type, const void* p, size_t i) {
  switch (type) {
    case GGUF_TYPE_UINT8:
      printf(" %u", (unsigned)((const uint8_t*)p)[i]);
      break;
    case GGUF_TYPE_INT8:
      printf(" %d", (int)((const int8_t*)p)[i]);
      break;
    case GGUF_TYPE_UINT16:
      printf(" %u", (unsigned)((const uint16_t*)p)[i]);
      break;
    case GGUF_TYPE_INT16:
      printf(" %d", (int)((const int16_t*)p)[i]);
      break;
    case GGUF_TYPE_UINT32:
      printf(" %u", ((const uint32_t*)p)[i]);
      break;
    case GGUF_TYPE_INT32:
      printf(" %d", ((const int32_t*)p)[i]);
      break;
    case GGUF_TYPE_FLOAT32:
      printf(" %a", (double)((const float*)p)[i]);
      break;
    case GGUF_TYPE_BOOL:
      printf(" %d", (int)((const uint8_t*)p)[i]);
      break;
    case GGUF_TYPE_UINT64:
      printf(" %llu", (unsigned long long)((const uint64_t*)p)[i]);
      break;
    case GGUF_TYPE_INT64:
      printf(" %lld", (long long)((const int64_t*)p)[i]);
      break;
    case GGUF_TYPE_FLOAT64:
      printf(" %a", ((const double*)p)[i]);
      break;
    default:
      die("unexpected GGUF type %d", (int)type);
  }
}

static int cmd_info(const char* path) {
  struct gguf_init_params params = {true, NULL};
  struct gguf_context* ctx = gguf_init_from_file(path, params);
  if (!ctx) die("llama.cpp's gguf reader refused '%s'", path);
  printf("version %u alignment %zu\n", gguf_get_version(ctx), gguf_get_alignment(ctx));
  for (int64_t k = 0; k < gguf_get_n_kv(ctx); ++k) {
    const enum gguf_type type = gguf_get_kv_type(ctx, k);
    printf("kv %s %d", gguf_get_key(ctx, k), (int)type);
    if (type == GGUF_TYPE_ARRAY) {
      const enum gguf_type et = gguf_get_arr_type(ctx, k);
      const size_t n = gguf_get_arr_n(ctx, k);
      printf(" %d %zu", (int)et, n);
      for (size_t i = 0; i < n; ++i) {
        if (et == GGUF_TYPE_STRING)
          printf(" %s", gguf_get_arr_str(ctx, k, i));
        else
          print_number(et, gguf_get_arr_data(ctx, k), i);
      }
    } else if (type == GGUF_TYPE_STRING) {
      printf(" %s", gguf_get_val_str(ctx, k));
    } else {
      print_number(type, gguf_get_val_data(ctx, k), 0);
    }
    printf("\n");
  }
  for (int64_t i = 0; i < gguf_get_n_tensors(ctx); ++i) {
    const int64_t* ne = gguf_get_tensor_ne(ctx, i);
    printf("tensor %s %d %lld %lld %lld %lld %zu\n", gguf_get_tensor_name(ctx, i),
           (int)gguf_get_tensor_type(ctx, i), (long long)ne[0], (long long)ne[1], (long long)ne[2],
           (long long)ne[3], gguf_get_tensor_offset(ctx, i));
  }
  gguf_free(ctx);
  return 0;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmd_quantize(const char* type_name, const char* in, const char* rows_s,
                        const char* cols_s, const char* imatrix_path, const char* out) {
  const enum ggml_type type = parse_type(type_name);
  char* end;
  const long long rows = strtoll(rows_s, &end, 10);
  if (*end || rows <= 0) die("ROWS '%s' is not a positive integer", rows_s);
  const long long cols = strtoll(cols_s, &end, 10);
  if (*end || cols <= 0) die("COLS '%s' is not a positive integer", cols_s);
  if (cols % ggml_blck_size(type) != 0)
    die("COLS %lld is not a multiple of the %s block %lld", cols, ggml_type_name(type),
        (long long)ggml_blck_size(type));
  size_t n;
  float* src = read_floats(in, &n);
  if (n != (size_t)(rows * cols))
    die("'%s' has %zu floats, expected %lld × %lld", in, n, rows, cols);
  float* imatrix = NULL;
  if (imatrix_path) {
    size_t ni;
    imatrix = read_floats(imatrix_path, &ni);
    if (ni != (size_t)cols)
      die("'%s' has %zu floats, expected one per column (%lld)", imatrix_path, ni, cols);
  }
  const size_t bytes = ggml_row_size(type, cols) * (size_t)rows;
  void* q = xmalloc(bytes);
  const double t0 = now_seconds();
  const size_t written = ggml_quantize_chunk(type, src, q, 0, rows, cols, imatrix);
  const double seconds = now_seconds() - t0;
  if (written != bytes) die("ggml_quantize_chunk wrote %zu bytes, expected %zu", written, bytes);
  float* deq = xmalloc(n * sizeof(float));
  to_float(type, q, deq, (int64_t)n);
  write_all(out, deq, n * sizeof(float));
  printf("seconds %.6f\n", seconds);
  free(deq);
  free(q);
  free(imatrix);
  free(src);
  return 0;
}

static int cmd_compare(const char* a_path, const char* b_path) {
  size_t na, nb;
  float* a = read_floats(a_path, &na);
  float* b = read_floats(b_path, &nb);
  if (na != nb) die("'%s' has %zu floats, '%s' has %zu", a_path, na, b_path, nb);
  size_t differ = 0, first = 0;
  for (size_t i = 0; i < na; ++i)
    if (memcmp(&a[i], &b[i], sizeof(float)) != 0 && differ++ == 0) first = i;
  printf("%zu of %zu floats differ", differ, na);
  if (differ) printf(" (first at %zu: %.9g vs %.9g)", first, a[first], b[first]);
  printf("\n");
  free(a);
  free(b);
  return differ ? 1 : 0;
}

/* imp_j = Σ_t X[t][j]² of a tokens × COLS float file (diag XᵀX, the importance llama.cpp's imatrix
 * estimates), written as COLS raw float32 values. */
static int cmd_colsq(const char* cols_s, const char* x_path, const char* out) {
  char* end;
  const long long cols = strtoll(cols_s, &end, 10);
  if (*end || cols <= 0) die("COLS '%s' is not a positive integer", cols_s);
  size_t n;
  float* x = read_floats(x_path, &n);
  if (n % (size_t)cols != 0) die("'%s' has %zu floats, not a multiple of %lld", x_path, n, cols);
  double* acc = calloc((size_t)cols, sizeof(double));
  if (!acc) die("out of memory");
  for (size_t i = 0; i < n; ++i) acc[i % (size_t)cols] += (double)x[i] * x[i];
  float* imp = xmalloc((size_t)cols * sizeof(float));
  for (long long j = 0; j < cols; ++j) imp[j] = (float)acc[j];
  write_all(out, imp, (size_t)cols * sizeof(float));
  free(imp);
  free(acc);
  free(x);
  return 0;
}

/* Σ_r Σ_j imp_j (A[r][j] − W[r][j])² for A and B (rows × COLS float files), in double; prints
 * "A B B/A". */
static int cmd_werror(const char* cols_s, const char* imp_path, const char* w_path,
                      const char* a_path, const char* b_path) {
  char* end;
  const long long cols = strtoll(cols_s, &end, 10);
  if (*end || cols <= 0) die("COLS '%s' is not a positive integer", cols_s);
  size_t ni, nw, na, nb;
  float* imp = read_floats(imp_path, &ni);
  float* w = read_floats(w_path, &nw);
  float* a = read_floats(a_path, &na);
  float* b = read_floats(b_path, &nb);
  if (ni != (size_t)cols) die("'%s' has %zu floats, expected %lld", imp_path, ni, cols);
  if (nw % (size_t)cols != 0 || na != nw || nb != nw)
    die("'%s', '%s', '%s' hold %zu, %zu, %zu floats: expected the same rows × %lld", w_path, a_path,
        b_path, nw, na, nb, cols);
  double ea = 0, eb = 0;
  for (size_t i = 0; i < nw; ++i) {
    const double u = imp[i % (size_t)cols];
    const double da = (double)a[i] - w[i], db = (double)b[i] - w[i];
    ea += u * da * da;
    eb += u * db * db;
  }
  printf("%.9g %.9g %.6f\n", ea, eb, ea > 0 ? eb / ea : 0.0);
  free(imp);
  free(w);
  free(a);
  free(b);
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 2) die("usage: engine_check dequant|info|quantize|compare ...");
  ggml_log_set(quiet_log, NULL);
  const char* dir = getenv("QROUND_ENGINE_LIBDIR");
  ggml_backend_load_all_from_path(dir && *dir ? dir : ENGINE_LIBDIR);
  const char* cmd = argv[1];
  if (strcmp(cmd, "dequant") == 0 && argc == 4) return cmd_dequant(argv[2], argv[3]);
  if (strcmp(cmd, "quantize") == 0 && (argc == 7 || argc == 8))
    return cmd_quantize(argv[2], argv[3], argv[4], argv[5], argc == 8 ? argv[6] : NULL,
                        argv[argc - 1]);
  if (strcmp(cmd, "compare") == 0 && argc == 4) return cmd_compare(argv[2], argv[3]);
  if (strcmp(cmd, "info") == 0 && argc == 3) return cmd_info(argv[2]);
  if (strcmp(cmd, "colsq") == 0 && argc == 5) return cmd_colsq(argv[2], argv[3], argv[4]);
  if (strcmp(cmd, "werror") == 0 && argc == 7)
    return cmd_werror(argv[2], argv[3], argv[4], argv[5], argv[6]);
  die("usage: engine_check dequant FILE.gguf OUTDIR | info FILE.gguf | quantize TYPE IN ROWS COLS "
      "[IMATRIX] OUT.f32"
      " | compare A B | colsq COLS X OUT.f32 | werror COLS IMP W A B");
  return 2;
}
