#!/usr/bin/env bash
# fuzz.sh [--build-dir DIR] [--out DIR] [--build-only | --no-build] [SECONDS] [NAME...]
#
# Builds the libFuzzer harnesses of tests/fuzz (clang, ASan + UBSan, in DIR, default
# build-fuzz) and runs each named one (default: all) for SECONDS (default 600), one after
# the other, starting from its seed corpus tests/fuzz/corpus/NAME. Under OUT (default
# DIR/findings, inside the ignored build folder):
#   OUT/NAME.log       libFuzzer's output and final statistics
#   OUT/NAME/          crash-*, leak-*, timeout-*, oom-* reproducers (a finding)
#   OUT/corpus/NAME/   inputs found that add coverage (the committed seeds stay as they are)
#   OUT/NAME/slow-unit-*  inputs that took over 10 s (noted, not a finding)
# Reproduce a finding: DIR/fuzz/fuzz_NAME OUT/NAME/crash-...
# Exit status: 0 when no harness found anything, 1 on a finding (or a failed build),
# 77 when clang with libFuzzer is not installed (the test suite reports Skipped).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build="$src/build-fuzz"
out=""
mode=run
while [ $# -gt 0 ]; do
  case $1 in
    --build-dir) build=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --build-only) mode=build; shift ;;
    --no-build) mode=nobuild; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) break ;;
  esac
done
seconds=${1:-600}
[ $# -gt 0 ] && shift
all=(safetensors config tokenizer calib store_import minisign manifest image)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${all[@]}")
case $build in /*) ;; *) build="$PWD/$build" ;; esac
[ -n "$out" ] || out="$build/findings"
case $out in /*) ;; *) out="$PWD/$out" ;; esac

# clang with libFuzzer (Debian: clang and libclang-rt-14-dev, see install-deps.sh)?
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return 0; }' \
  > "$probe/p.c"
if ! command -v clang >/dev/null ||
   ! clang -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" 2>"$probe/err"; then
  echo "fuzz.sh: SKIPPED: clang with libFuzzer is not installed (Debian 12: apt-get install" \
       "clang libclang-rt-14-dev): $(head -c 300 "$probe/err" 2>/dev/null)"
  exit 77
fi

if [ $mode != nobuild ]; then
  if [ ! -f "$build/CMakeCache.txt" ]; then
    CC=clang cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DREAP_FUZZ=ON \
      >"$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
  fi
  cmake --build "$build" -j"$(nproc)" --target reap_fuzzers >"$build.build.log" 2>&1 ||
    { tail -50 "$build.build.log"; exit 1; }
  [ $mode = build ] && { echo "fuzz.sh: built $build/fuzz/fuzz_*"; exit 0; }
fi

mkdir -p "$out"
found=0
for n in "${names[@]}"; do
  bin="$build/fuzz/fuzz_$n"
  [ -x "$bin" ] || { echo "fuzz.sh: no harness $bin (names: ${all[*]})"; exit 1; }
  mkdir -p "$out/$n" "$out/corpus/$n"
  # Inputs: the work corpus first (new inputs go there), then the seeds. The process's
  # temporary files go to a folder of its own under OUT (removed at its exit).
  rc=0
  TMPDIR="$out/$n" ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$bin" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
      -error_exitcode=86 -timeout_exitcode=87 -artifact_prefix="$out/$n/" \
      "$out/corpus/$n" "$src/tests/fuzz/corpus/$n" >"$out/$n.log" 2>&1 || rc=$?
  execs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$out/$n.log")
  last=$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$out/$n.log" | tail -1 |
         grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[bKM]?b?' || true)
  # slow-unit-* files (an input over 10 s, usually a busy machine) are not findings; an
  # input over -timeout is (timeout-*).
  artifacts=$(find "$out/$n" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o \
              -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
  if [ $rc -ne 0 ] || [ "$artifacts" -gt 0 ]; then
    found=1
    echo "FINDING $n: exit status $rc, ${execs:-?} executions, $last; see $out/$n.log"
    grep -E 'ERROR:|runtime error|Test unit written' "$out/$n.log" | head -5 || true
  else
    echo "ok $n: ${execs:-?} executions in ${seconds} s, $last"
  fi
done
exit $found
