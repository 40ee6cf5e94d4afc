#!/usr/bin/env bash
# The real-engine check: stock llama.cpp (the prebuilt linux-x64 libraries of the npm package
# node-llama-cpp, pinned, see /work/shared/ENGINE.md) reads the GGUF files qround writes and its own
# dequantization must equal qround's simulated weights bit for bit.
#
#   scripts/interop.sh            installs what is missing, builds the harness, runs every check
#
# Environment: QROUND_ENGINE_CACHE (default ~/.cache/qround-engine) holds the npm install;
# QROUND_BUILD_DIR (default build/interop) is a qround build with the tests on (configured and
# built here when its tools are missing). If the engine cannot be installed or the harness cannot
# be built this FAILS (exit 1): it never skips. Prints one line per check, then "N passed, N
# failed"; any failed check makes the exit status non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

ENGINE_VERSION=3.21.1
CACHE=${QROUND_ENGINE_CACHE:-$HOME/.cache/qround-engine}
BUILD=${QROUND_BUILD_DIR:-build/interop}
DATA=${QROUND_DATA_DIR:-../shared/data}
LIBDIR=$CACHE/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
BUNDLE=$CACHE/node_modules/node-llama-cpp/llama/gitRelease.bundle
HARNESS=$BUILD/interop-engine  # extracted headers and the compiled engine_check / engine_model
ENGINE_CHECK=$HARNESS/engine_check
ENGINE_MODEL=$HARNESS/engine_model
WRITE_LAYER=$BUILD/tests/write_layer_gguf
GGUF_NLL=$BUILD/tests/gguf_nll
MIX_TYPES=$BUILD/tests/mix_types

die() {
  echo "interop: FAILED: $*" >&2
  echo "0 passed, 1 failed"
  exit 1
}

# ---- stock llama.cpp --------------------------------------------------------------------------
installed_version() {  # the version of an installed npm package in the cache, or nothing
  local pkg=$CACHE/node_modules/$1/package.json
  [ -f "$pkg" ] && node -e "process.stdout.write(require(process.argv[1]).version)" "$pkg" || true
}

# Debian packages for the commands that are missing (a node from elsewhere, e.g. NodeSource, that
# bundles npm is used as it is: Debian's npm would conflict with it).
install_commands() {
  local cmd pkg missing=()
  for cmd in node:nodejs npm:npm gcc:gcc git:git; do
    command -v "${cmd%%:*}" >/dev/null || missing+=("${cmd#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  (qround_install_packages "${missing[@]}") || die "cannot install Debian packages: ${missing[*]}"
  for cmd in node npm gcc git; do
    command -v "$cmd" >/dev/null || die "'$cmd' is still missing after installing ${missing[*]}"
  done
}

install_engine() {
  install_commands
  if [ "$(installed_version node-llama-cpp)" = "$ENGINE_VERSION" ] &&
     [ "$(installed_version @node-llama-cpp/linux-x64)" = "$ENGINE_VERSION" ] &&
     [ -f "$BUNDLE" ] && [ -d "$LIBDIR" ]; then
    return 0
  fi
  echo "installing node-llama-cpp@$ENGINE_VERSION (linux-x64 binaries only) into $CACHE"
  mkdir -p "$CACHE"
  [ -f "$CACHE/package.json" ] ||
    echo '{"name":"qround-engine","version":"1.0.0","private":true}' >"$CACHE/package.json"
  # --ignore-scripts: no postinstall download/build; --omit=optional: no GPU or other-arch packages.
  (cd "$CACHE" && npm install --save-exact --ignore-scripts --no-audit --no-fund --omit=optional \
     "node-llama-cpp@$ENGINE_VERSION" "@node-llama-cpp/linux-x64@$ENGINE_VERSION") ||
    die "npm could not install node-llama-cpp@$ENGINE_VERSION into $CACHE"
  [ "$(installed_version node-llama-cpp)" = "$ENGINE_VERSION" ] ||
    die "node-llama-cpp in $CACHE is not version $ENGINE_VERSION after npm install"
  [ -d "$LIBDIR" ] || die "the prebuilt libraries are missing: $LIBDIR"
  [ -f "$BUNDLE" ] || die "the source bundle is missing: $BUNDLE"
}

build_harness() {
  local stamp=$HARNESS/stamp want
  want="$ENGINE_VERSION $LIBDIR $(cat tests/interop/engine_check.c tests/interop/engine_model.c | cksum)"
  if [ -x "$ENGINE_CHECK" ] && [ -x "$ENGINE_MODEL" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return 0; fi
  rm -rf "$HARNESS"
  mkdir -p "$HARNESS"
  # The release's own headers (ggml/include, include) from the git bundle inside the package.
  git clone -q --no-checkout "$BUNDLE" "$HARNESS/src" || die "cannot clone $BUNDLE"
  git -C "$HARNESS/src" checkout -q HEAD -- ggml/include include ||
    die "cannot extract the headers from $BUNDLE"
  gcc -std=c11 -D_POSIX_C_SOURCE=200809L -O2 -Wall -Wextra -Werror \
      -I"$HARNESS/src/ggml/include" -I"$HARNESS/src/include" -DENGINE_LIBDIR="\"$LIBDIR\"" \
      tests/interop/engine_check.c -o "$ENGINE_CHECK" \
      -L"$LIBDIR" -l:libggml.v0.4.0.so -l:libggml-base.so -Wl,-rpath,"$LIBDIR" ||
    die "cannot compile tests/interop/engine_check.c against the bundled llama.cpp headers"
  gcc -std=c11 -D_POSIX_C_SOURCE=200809L -O2 -Wall -Wextra -Werror \
      -I"$HARNESS/src/ggml/include" -I"$HARNESS/src/include" -DENGINE_LIBDIR="\"$LIBDIR\"" \
      tests/interop/engine_model.c -o "$ENGINE_MODEL" \
      -L"$LIBDIR" -l:libllama.v0.4.0.so -l:libggml.v0.4.0.so -l:libggml-base.so \
      -Wl,-rpath,"$LIBDIR" -lm ||
    die "cannot compile tests/interop/engine_model.c against the bundled llama.cpp headers"
  echo "$want" >"$stamp"
}

build_qround_tools() {
  if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DQROUND_BUILD_TESTS=ON \
          -DQROUND_BUILD_BENCH=OFF -DQROUND_BUILD_EXAMPLES=OFF -DQROUND_BUILD_CLI=ON >/dev/null ||
      die "cannot configure qround in $BUILD"
  fi
  cmake --build "$BUILD" -j "$(qround_jobs)" --target write_layer_gguf gguf_nll mix_types qround_cli >/dev/null ||
    die "cannot build qround's tools in $BUILD"
}

# ---- checks ---------------------------------------------------------------------------------
PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS  $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL  $*"; }

# Compares llama.cpp's dequantization of DIR/layer.gguf (one tensor) with DIR/dequant.npy, the
# weights qround simulated: same shape, every float the same bits.
check_layer_dir() {
  local dir=$1 label=${2:-$1} out info files result
  out=$(mktemp -d)
  if ! info=$("$ENGINE_CHECK" dequant "$dir/layer.gguf" "$out" 2>"$out/stderr"); then
    fail "$label: llama.cpp cannot read layer.gguf: $(tail -n 2 "$out/stderr")"
    rm -rf "$out"
    return
  fi
  files=("$out"/*.f32)
  if [ "${#files[@]}" -ne 1 ] || [ ! -f "${files[0]}" ]; then
    fail "$label: layer.gguf holds ${#files[@]} tensors, expected 1"
  else
    # info: NAME TYPE ROWS COLS; numpy's header spells the shape "(ROWS, COLS)".
    read -r _ type rows cols <<<"$info"
    if ! head -c 256 "$dir/dequant.npy" | tr -d '\0' | grep -q "'shape': ($rows, $cols)"; then
      fail "$label: dequant.npy is not $rows x $cols like the GGUF tensor"
    elif result=$("$ENGINE_CHECK" compare "${files[0]}" "$dir/dequant.npy" 2>&1); then
      pass "$label: llama.cpp's $type dequantization == dequant.npy ($rows x $cols, $result)"
    else
      fail "$label: llama.cpp's $type dequantization != dequant.npy: $result"
    fi
  fi
  rm -rf "$out"
}

# Metadata of every GGUF value type and tensors of five types in one qround file: llama.cpp's gguf
# reader must see exactly the keys, types, values, shapes and offsets qround's reader sees.
check_container() {
  local work=$1 diffs
  if ! "$WRITE_LAYER" metadata "$work/all.gguf" >"$work/qround.txt" 2>"$work/werr"; then
    fail "container: qround could not write the file: $(cat "$work/werr")"
  elif ! "$ENGINE_CHECK" info "$work/all.gguf" >"$work/engine.txt" 2>"$work/eerr"; then
    fail "container: llama.cpp cannot read it: $(tail -n 2 "$work/eerr")"
  elif ! diffs=$(diff "$work/qround.txt" "$work/engine.txt"); then
    fail "container: llama.cpp reads it differently: $(echo "$diffs" | head -n 6 | tr '\n' ' ')"
  elif ! "$ENGINE_CHECK" dequant "$work/all.gguf" "$work" >/dev/null 2>"$work/eerr"; then
    fail "container: llama.cpp cannot dequantize its tensors: $(tail -n 2 "$work/eerr")"
  else
    pass "container: llama.cpp's reader sees qround's $(grep -c '^kv' "$work/engine.txt") keys" \
         "(every value type) and $(grep -c '^tensor' "$work/engine.txt") tensors exactly"
  fi
}

# |a − b| <= tol for two decimal numbers.
within() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= t) }'; }

# Whole models: stories260K converted to a llama GGUF by `qround convert` and quantized by
# `qround model --format`; llama.cpp loads each file and its NLL on held-out token windows (the
# calibration text's tail, tokenized by qround) must match qround's evaluation of the same file
# within 0.002 nats/token.
check_models() {
  local work=$1/models qround=$BUILD/qround text=$DATA/tinystories_train_head.txt
  mkdir -p "$work"
  if [ ! -f "$DATA/stories260K.bin" ]; then
    fail "models: $DATA/stories260K.bin not found (set QROUND_DATA_DIR)"
    return
  fi
  if ! "$qround" convert --model "$DATA/stories260K.bin" --tokenizer "$DATA/tok512.bin" \
       --out "$work/f32.gguf" >/dev/null 2>"$work/err"; then
    fail "models: qround convert failed: $(tail -n 2 "$work/err")"
    return
  fi
  # "FILE LABEL": the float model, qround's files, llama-quantize's own q4_0.
  local files=("$work/f32.gguf f32 (qround convert)") spec type method
  for spec in q4_0:gptq q4_0:nearest q4_1:gptq q5_0:gptq q8_0:gptq q4_k_m:gptq q6_k:adaround; do
    type=${spec%%:*}
    method=${spec#*:}
    if "$qround" model --model "$work/f32.gguf" --calib "$text" --calib-tokens 4088 \
         --eval "$text" --eval-tokens 200 --format "$type" --method "$method" --iterations 400 \
         --quiet --out "$work/$type-$method.gguf" >"$work/log" 2>&1; then
      files+=("$work/$type-$method.gguf $type $method (qround model)")
    else
      fail "models: qround model --format $type --method $method failed: $(tail -n 2 "$work/log")"
    fi
  done
  if "$ENGINE_MODEL" quantize "$work/f32.gguf" "$work/lq-q4_0.gguf" 2 >/dev/null 2>"$work/err"; then
    files+=("$work/lq-q4_0.gguf q4_0 (llama-quantize)")
  else
    fail "models: llama_model_quantize q4_0 failed: $(tail -n 2 "$work/err")"
  fi
  # qround's calibration as llama-imatrix's file (--imatrix-out), given to llama-quantize; and
  # the same file back to qround (--imatrix).
  if "$qround" model --model "$work/f32.gguf" --calib "$text" --calib-tokens 4088 \
       --eval "$text" --eval-tokens 200 --format q4_1 --method nearest --quiet \
       --imatrix-out "$work/stories.dat" --out "$work/q4_1-nearest.gguf" >"$work/log" 2>&1 &&
     "$qround" model --model "$work/f32.gguf" --calib "$text" --calib-tokens 4088 \
       --eval "$text" --eval-tokens 200 --format q4_1 --method gptq --quiet \
       --imatrix "$work/stories.dat" --out "$work/q4_1-gptq-imatrix.gguf" >>"$work/log" 2>&1; then
    files+=("$work/q4_1-gptq-imatrix.gguf q4_1 gptq with qround's imatrix (qround model)")
    if "$ENGINE_MODEL" quantize "$work/f32.gguf" "$work/lq-q4_1-imatrix.gguf" 3 \
         --imatrix "$work/stories.dat" >/dev/null 2>"$work/err"; then
      pass "models: llama_model_quantize takes qround's imatrix (--imatrix-out stories.dat)"
      files+=("$work/lq-q4_1-imatrix.gguf q4_1 (llama-quantize with qround's imatrix)")
    else
      fail "models: llama_model_quantize refused qround's imatrix: $(tail -n 2 "$work/err")"
    fi
  else
    fail "models: qround model --imatrix-out / --imatrix failed: $(tail -n 2 "$work/log")"
  fi
  local entry file label ours theirs
  for entry in "${files[@]}"; do
    file=${entry%% *}
    label=${entry#* }
    if ! ours=$("$GGUF_NLL" "$file" "$text" 4088 12000 "$work/windows.txt" 2>"$work/err"); then
      fail "models: $label: qround cannot evaluate the file: $(tail -n 2 "$work/err")"
      continue
    fi
    if ! theirs=$("$ENGINE_MODEL" nll "$file" "$work/windows.txt" 2>"$work/err"); then
      fail "models: $label: llama.cpp cannot run the file: $(tail -n 2 "$work/err")"
      continue
    fi
    ours=$(echo "$ours" | awk '{print $2}')
    theirs=$(echo "$theirs" | awk '{print $2}')
    if within "$ours" "$theirs" 0.002; then
      pass "model $label: llama.cpp NLL $theirs, qround $ours (12000 held-out tokens)"
    else
      fail "model $label: llama.cpp NLL $theirs differs from qround's $ours by more than 0.002"
    fi
  done
}

# Type mixes: llama.cpp's own quantizer (llama_model_quantize) chooses every tensor's type of
# synthetic F32 llama models with K-compatible shapes (and ones where the fallbacks fire); the
# types it stored must be exactly the ones qround's plan_tensor_types gives (model/type_mix.hpp).
# SPEC: FILE_TYPE[:pure][:imatrix]; q2_k_s always gets an importance matrix (llama-quantize
# refuses it without one).
check_mixes() {
  local work=$1/mixes
  mkdir -p "$work"
  # "LABEL write options": dim 256 unless said, hidden 768, 8 heads, 2 KV heads, vocab 512, tied.
  local models=(
    "tied-16L --layers 16"
    "untied-9L --layers 9 --heads 4 --kv-heads 2 --hidden 512 --vocab 768 --untied"
    "ffn352-8L --layers 8 --hidden 352 --kv-heads 4"
    "dim160-ffn200-3L --dim 160 --heads 5 --kv-heads 1 --hidden 200 --layers 3 --untied"
  )
  local specs=(f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q2_k_s q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m
               q5_k_s q5_k_m q6_k q4_0:pure q5_1:pure q2_k:pure q4_k_m:pure q6_k:pure
               q4_0:imatrix q5_0:imatrix q4_k_m:imatrix q2_k_s:pure)
  local entry label opts spec name ftype in out theirs ours diffs summary
  for entry in "${models[@]}"; do
    label=${entry%% *}
    opts=${entry#* }
    in=$work/$label.gguf
    # shellcheck disable=SC2086  # opts holds the shape options
    if ! "$MIX_TYPES" write "$in" $opts >/dev/null 2>"$work/err" ||
       ! "$MIX_TYPES" imatrix "$in" "$work/$label.dat" >/dev/null 2>>"$work/err"; then
      fail "mix $label: qround could not write the model or its imatrix: $(tail -n 2 "$work/err")"
      continue
    fi
    for spec in "${specs[@]}"; do
      name=${spec%%:*}
      local qargs=() pargs=()
      [[ $spec == *:pure* ]] && qargs+=(pure) && pargs+=(pure)
      if [[ $spec == *:imatrix* || $name == q2_k_s ]]; then
        qargs+=(--imatrix "$work/$label.dat")
        pargs+=(imatrix)
        [[ $spec == *:imatrix* ]] || spec+=":imatrix"
      fi
      out=$work/$label-${spec//:/-}.gguf
      if ! ftype=$("$MIX_TYPES" ftype "$name" 2>"$work/err"); then
        fail "mix $label $spec: $(cat "$work/err")"
        continue
      fi
      if ! "$ENGINE_MODEL" quantize "$in" "$out" "$ftype" "${qargs[@]}" >/dev/null 2>"$work/err"; then
        fail "mix $label $spec: llama_model_quantize failed: $(grep -v '^ *$' "$work/err" | tail -n 2)"
        continue
      fi
      if ! theirs=$("$MIX_TYPES" types "$out" 2>"$work/err") ||
         ! ours=$("$MIX_TYPES" plan "$in" "$name" "${pargs[@]}" 2>>"$work/err"); then
        fail "mix $label $spec: mix_types failed: $(tail -n 2 "$work/err")"
      elif diffs=$(diff <(echo "$theirs") <(echo "$ours")); then
        summary=$(echo "$theirs" | awk '{n[$2]++} END {for (t in n) printf "%s %s ", t, n[t]}' |
                  tr ' ' '\n' | paste -d' ' - - | sort | paste -sd, -)
        pass "mix $label $spec: $(echo "$theirs" | wc -l) tensors, llama.cpp's types == qround's ($summary)"
      else
        fail "mix $label $spec: llama.cpp's types (<) differ from qround's plan (>):"
        echo "$diffs" | grep '^[<>]' | head -n 12 | sed 's/^/        /'
      fi
      rm -f "$out"
    done
  done
  # The comparison can fail: llama.cpp's q4_k_s file is not qround's q4_k_m plan.
  in=$work/tied-16L.gguf
  if [ -f "$in" ] && "$ENGINE_MODEL" quantize "$in" "$work/neg.gguf" \
       "$("$MIX_TYPES" ftype q4_k_s)" >/dev/null 2>&1 &&
     ! diff <("$MIX_TYPES" types "$work/neg.gguf") <("$MIX_TYPES" plan "$in" q4_k_m) >/dev/null; then
    pass "mix negative control: llama.cpp's q4_k_s types differ from qround's q4_k_m plan"
  else
    fail "mix negative control: could not tell llama.cpp's q4_k_s file from the q4_k_m plan"
  fi
  rm -f "$work"/*.gguf
}

main() {
  install_engine
  build_harness
  build_qround_tools
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  local work=$WORK

  mkdir -p "$work/container"
  check_container "$work/container"

  # Float-typed layers written by qround's GGUF writer: wide synthetic ones and real layers.
  local sources=("synthetic:64x4096:1" "synthetic:3x96:2")
  if [ -d "$DATA/layers" ]; then
    sources+=("$DATA/layers/layers.0.wq.W.npy" "$DATA/layers/layers.1.w2.W.npy")
  else
    echo "note: $DATA/layers not found: synthetic layers only"
  fi
  local type src i=0
  for type in f32 f16 bf16; do
    for src in "${sources[@]}"; do
      i=$((i + 1))
      if "$WRITE_LAYER" "$type" "$src" "$work/layer$i" >/dev/null 2>"$work/err$i"; then
        check_layer_dir "$work/layer$i" "$type $(basename "$src")"
      else
        fail "$type $(basename "$src"): qround could not write the layer: $(cat "$work/err$i")"
      fi
    done
  done

  # The comparison itself must be able to fail: f16 of the synthetic layer is not its f32 values.
  local rc=0
  "$ENGINE_CHECK" compare "$work/layer1/dequant.npy" \
    "$work/layer$((1 + ${#sources[@]}))/dequant.npy" >"$work/neg" 2>&1 || rc=$?
  if [ "$rc" -eq 1 ]; then
    pass "negative control: compare tells f16 from f32 values ($(cat "$work/neg"))"
  else
    fail "negative control: compare of f32 and f16 values exited $rc: $(cat "$work/neg")"
  fi

  # llama.cpp's own quantizer (the baseline qround's scale search is measured against), with and
  # without importance weights, on the 64 x 4096 synthetic layer.
  "$WRITE_LAYER" importance 4096 3 "$work/imatrix.npy" >/dev/null
  local imat result
  for imat in "" "$work/imatrix.npy"; do
    local what="q4_K baseline${imat:+ with imatrix}"
    if result=$("$ENGINE_CHECK" quantize q4_K "$work/layer1/dequant.npy" 64 4096 $imat \
                  "$work/q4k.f32" 2>"$work/qerr") &&
       ! "$ENGINE_CHECK" compare "$work/q4k.f32" "$work/layer1/dequant.npy" >/dev/null 2>&1; then
      pass "$what: ggml_quantize_chunk ran, ${result#seconds } s for 64 x 4096"
    else
      fail "$what: $(tail -n 2 "$work/qerr")"
    fi
  done

  # Quantized layers: `qround quantize --format TYPE` on the type's exact levels, every method
  # that can store there; llama.cpp must dequantize layer.gguf to exactly dequant.npy.
  local qround=$BUILD/qround
  "$WRITE_LAYER" problem 32 4096 128 7 "$work/wide" >/dev/null
  "$WRITE_LAYER" problem 16 256 128 8 "$work/k256" >/dev/null
  local jobs=()  # "TYPE METHOD WEIGHTS INPUTS LABEL [settings]"
  # iq4_nl (levels d·kvalues_iq4nl[n], a table): nearest and gptq; the uniform-step methods refuse.
  for type in q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k q4_k q5_k q6_k iq4_nl; do
    jobs+=("$type nearest $work/wide/W.npy $work/wide/X.npy synthetic-32x4096")
    jobs+=("$type gptq $work/wide/W.npy $work/wide/X.npy synthetic-32x4096")
    if [ "$type" != iq4_nl ]; then
      jobs+=("$type adaround $work/k256/W.npy $work/k256/X.npy synthetic-16x256 --iterations 200")
      jobs+=("$type flexround $work/k256/W.npy $work/k256/X.npy synthetic-16x256 --iterations 200")
    fi
    if [ -d "$DATA/layers" ] && [ "${type%_k}" = "$type" ]; then  # 64 inputs: 32-blocks only
      jobs+=("$type gptq $DATA/layers/layers.0.wq.W.npy $DATA/layers/layers.0.attn_in.X.npy layers.0.wq")
      if [ "$type" = iq4_nl ]; then
        jobs+=("$type nearest $DATA/layers/layers.0.wq.W.npy $DATA/layers/layers.0.attn_in.X.npy layers.0.wq")
        jobs+=("$type gptq $DATA/layers/layers.1.w1.W.npy $DATA/layers/layers.1.ffn_in.X.npy layers.1.w1")
      else
        jobs+=("$type adaround $DATA/layers/layers.0.wq.W.npy $DATA/layers/layers.0.attn_in.X.npy layers.0.wq --iterations 300")
      fi
    fi
  done
  local job n=0 t m wts inp label extra
  for job in "${jobs[@]}"; do
    n=$((n + 1))
    read -r t m wts inp label extra <<<"$job"
    # shellcheck disable=SC2086  # extra holds method settings
    if "$qround" quantize --weights "$wts" --inputs "$inp" --format "$t" --method "$m" \
         --quiet --out "$work/q$n" $extra >/dev/null 2>"$work/qerr$n"; then
      check_layer_dir "$work/q$n" "$t $m $label"
    else
      fail "$t $m $label: qround quantize failed: $(tail -n 2 "$work/qerr$n")"
    fi
  done
  # iq4_nl's scale search against llama.cpp's own quantizer (ggml_quantize_chunk → quantize_iq4_nl,
  # imatrix = diag(XᵀX)): Σ imp (w − ŵ)² of RTN on qround's grid must not exceed llama.cpp's.
  local bsrc=("$work/wide/W.npy $work/wide/X.npy synthetic-32x4096") b bw bx blabel shape rows cols
  if [ -d "$DATA/layers" ]; then
    bsrc+=("$DATA/layers/layers.0.wq.W.npy $DATA/layers/layers.0.attn_in.X.npy layers.0.wq")
    bsrc+=("$DATA/layers/layers.1.w1.W.npy $DATA/layers/layers.1.ffn_in.X.npy layers.1.w1")
  fi
  for b in "${bsrc[@]}"; do
    read -r bw bx blabel <<<"$b"
    shape=$(head -c 256 "$bw" | tr -d '\0' | grep -o "'shape': ([0-9]*, [0-9]*)" | tr -dc '0-9 ')
    read -r rows cols <<<"$shape"
    n=$((n + 1))
    if "$ENGINE_CHECK" colsq "$cols" "$bx" "$work/imp$n.f32" 2>"$work/berr" &&
       "$ENGINE_CHECK" quantize iq4_nl "$bw" "$rows" "$cols" "$work/imp$n.f32" \
         "$work/llama$n.f32" >/dev/null 2>>"$work/berr" &&
       "$qround" quantize --weights "$bw" --inputs "$bx" --format iq4_nl --method nearest --quiet \
         --out "$work/q$n" >/dev/null 2>>"$work/berr" &&
       result=$("$ENGINE_CHECK" werror "$cols" "$work/imp$n.f32" "$bw" "$work/llama$n.f32" \
                  "$work/q$n/dequant.npy" 2>>"$work/berr"); then
      read -r theirs ours ratio <<<"$result"
      if awk -v r="$ratio" 'BEGIN { exit !(r <= 1.0) }'; then
        pass "iq4_nl scale search $blabel: Σ imp·(w − ŵ)² qround $ours ≤ llama.cpp $theirs (ratio $ratio)"
      else
        fail "iq4_nl scale search $blabel: qround $ours > llama.cpp $theirs (ratio $ratio)"
      fi
    else
      fail "iq4_nl scale search $blabel: $(tail -n 2 "$work/berr")"
    fi
  done
  # The methods that move codes in uniform steps refuse iq4_nl, naming it (exit 1, no file).
  for m in adaround flexround nupes; do
    if "$qround" quantize --weights "$work/k256/W.npy" --inputs "$work/k256/X.npy" \
         --format iq4_nl --method "$m" --quiet --out "$work/refuse-$m" >/dev/null 2>"$work/rerr"; then
      fail "iq4_nl $m: qround quantize should refuse the table format but succeeded"
    elif grep -q "iq4_nl" "$work/rerr" && [ ! -e "$work/refuse-$m/layer.gguf" ]; then
      pass "iq4_nl $m: refused ($(head -c 90 "$work/rerr")...)"
    else
      fail "iq4_nl $m: refusal does not name iq4_nl: $(tail -n 2 "$work/rerr")"
    fi
  done
  # qround's own check agrees (and reads the GGUF back through qround's reader).
  if out=$("$qround" check --weights "$work/wide/W.npy" --inputs "$work/wide/X.npy" \
             --quantized "$work/q1" 2>&1); then
    pass "qround check: $(echo "$out" | sed -n 2p)"
  else
    fail "qround check: $out"
  fi

  check_models "$work"
  check_mixes "$work"

  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ]
}

main "$@"
