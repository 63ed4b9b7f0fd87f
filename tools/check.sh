#!/bin/sh
# check.sh - the stages of `make check` and `make fuzz` (mk/check.mk).
#   sh tools/check.sh all        every stage below; a summary with timings
#   sh tools/check.sh tools      install clang, compiler-rt, cppcheck, valgrind if missing
#   sh tools/check.sh warnings   -Wall -Wextra -Werror: gcc and clang, Lua 5.4 and LuaJIT
#   sh tools/check.sh cppcheck   static analysis of every C file of the project
#   sh tools/check.sh asan       the whole busted suite on ASan+UBSan-built modules
#   sh tools/check.sh valgrind   the C core specs under valgrind: no errors, 0 bytes definitely lost
#   sh tools/check.sh fuzz       regression inputs, then each fuzzer for FUZZ_SECONDS
# Logs go to build/check/. Every stage exits non-zero on any finding.
# Variables: FUZZ_SECONDS (fuzz: 300, all: 35), FUZZERS, FUZZ_JOBS (2).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
export SHARED="${SHARED:-$(cd "$ROOT/../shared" 2>/dev/null && pwd || echo "$ROOT/../shared")}"
LOG=build/check
mkdir -p "$LOG" spec/.tmp
MAKE="${MAKE:-make} --no-print-directory"
FUZZERS="${FUZZERS:-eventstream decimal shardmap kpl response codec answer}"
FUZZ_JOBS="${FUZZ_JOBS:-2}"
SPEC_LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;$ROOT/spec/?.lua;;"

say() { printf '%s\n' "$*"; }
now() { date +%s; }
mkvar() { $MAKE -s "check-print-$1"; }

# The "N successes / N failures / N errors" line of a busted log.
busted_summary() {
  sed 's/\x1b\[[0-9;]*m//g' "$1" | grep -a -E '[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors?' | tail -1
}

busted_failed() {   # log -> number of failures + errors (1 when there is no summary)
  line=$(busted_summary "$1")
  [ -n "$line" ] || { echo 1; return; }
  f=$(echo "$line" | sed -E 's/.* ([0-9]+) failures? .*/\1/')
  e=$(echo "$line" | sed -E 's/.* ([0-9]+) errors?.*/\1/')
  echo $((f + e))
}

busted_passed() {
  busted_summary "$1" | sed -E 's/^([0-9]+) success.*/\1/'
}

# ---------------------------------------------------------------- tools

stage_tools() {
  missing=""
  command -v clang >/dev/null 2>&1 || missing="$missing clang"
  if command -v clang >/dev/null 2>&1; then
    rt=$(clang -print-file-name=libclang_rt.asan-x86_64.so)
    fz=$(clang -print-file-name=libclang_rt.fuzzer-x86_64.a)
    [ -f "$rt" ] && [ -f "$fz" ] || missing="$missing libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev"
  else
    missing="$missing libclang-rt-14-dev"
  fi
  command -v cppcheck >/dev/null 2>&1 || missing="$missing cppcheck"
  command -v valgrind >/dev/null 2>&1 || missing="$missing valgrind"
  [ -n "$missing" ] || return 0
  if [ "$(id -u)" != 0 ]; then
    say "missing tools:$missing (run as root, or install them)" >&2
    return 1
  fi
  say "installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null && \
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing >/dev/null
}

# ---------------------------------------------------------------- warnings

stage_warnings() {
  warn=$(mkvar WARN)
  lua_inc=$(pkg-config --cflags lua5.4)
  rc=0
  for cc in gcc clang; do
    for lua in lua5.4 luajit; do
      abi=$([ "$lua" = luajit ] && echo 5.1 || echo 5.4)
      if ! $MAKE -s LUA=$lua CC=$cc OUT="build/warn/$cc/$abi" build >"$LOG/warn-$cc-$abi.log" 2>&1; then
        say "warnings: $cc, $lua: FAILED"; cat "$LOG/warn-$cc-$abi.log"; rc=1
      else
        say "warnings: $cc, $lua: clean"
      fi
    done
    # the C that is not in the modules: unit tests, harnesses, the interpreter
    for f in spec/c/*.c fuzz/*.c tools/*.c; do
      for def in "" "-DKN_U128_PORTABLE"; do
        # shellcheck disable=SC2086
        if ! $cc $warn $def -fsyntax-only -Isrc $lua_inc "$f" >"$LOG/warn-$cc-other.log" 2>&1; then
          say "warnings: $cc $def $f: FAILED"; cat "$LOG/warn-$cc-other.log"; rc=1
        fi
      done
    done
  done
  [ $rc = 0 ] && say "warnings: spec/c, fuzz, tools C files: clean with gcc and clang"
  return $rc
}

# ---------------------------------------------------------------- cppcheck

# Suppressed, with reasons:
#   variableScope             the house style declares at the top of a block
#   missingIncludeSystem      system headers are not cppcheck's business here
#   knownConditionTrueFalse:src/u128.c
#                             false positive: cppcheck 2.10 takes `len - i`
#                             in kn_u128_parse's chunk loop for 0
stage_cppcheck() {
  if cppcheck --std=c99 --enable=warning,style,performance,portability --inline-suppr \
      --error-exitcode=1 -q --suppress=variableScope --suppress=missingIncludeSystem \
      --suppress=knownConditionTrueFalse:src/u128.c --suppress=toomanyconfigs \
      -I src $(pkg-config --cflags-only-I lua5.4) \
      src/*.c spec/c/*.c fuzz/*.c tools/*.c >"$LOG/cppcheck.log" 2>&1; then
    say "cppcheck: clean ($(ls src/*.c spec/c/*.c fuzz/*.c tools/*.c | wc -l) files)"
  else
    say "cppcheck: FINDINGS"; cat "$LOG/cppcheck.log"; return 1
  fi
}

# ---------------------------------------------------------------- asan

# The whole suite with kinesis.core and kinesis.curl built with
# -fsanitize=address,undefined (build/asan/5.4), loaded into a sanitized
# lua5.4 (build/asan/bin/lua5.4, tools/sanitized_lua.c) that is also first
# in PATH, so the specs' own `lua5.4` children are sanitized too. Not
# LD_PRELOAD: it would reach every child, and the curl CLI the stub control
# uses hangs at start-up with the ASan runtime preloaded. Reports of any
# process go to build/check/sanitizer/; one report fails the stage.
# No spec is excluded: the LuaJIT and nginx specs load build/5.1 through
# their own LUA_CPATH in uninstrumented luajit/nginx, which still works.
stage_asan() {
  $MAKE -s asan-build >"$LOG/asan-build.log" 2>&1 || { cat "$LOG/asan-build.log"; return 1; }
  reports="$ROOT/$LOG/sanitizer"
  rm -rf "$reports"
  mkdir -p "$reports"
  log="$LOG/asan-suite.log"
  # The multi-process end-to-end specs (producer, consumer, lease workers)
  # spend minutes waiting on kinesis-local and dynalite; the C paths they
  # drive (codec, KPL, shard map, transport, the producer's queue) are run
  # under the sanitizers by the faster specs (producer_queue_spec among
  # them), so they run in make test only, to keep CI's time.
  set -- --exclude-pattern=producer_spec --exclude-pattern=producer_faults_spec \
    --exclude-pattern=producer_reshard_spec --exclude-pattern=consumer_spec \
    --exclude-pattern=leases_multi_spec spec
  env PATH="$ROOT/build/asan/bin:$PATH" \
    LUA_PATH="$SPEC_LUA_PATH" LUA_CPATH="$ROOT/build/asan/5.4/?.so;;" \
    ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_string_checks=1:log_path=$reports/asan" \
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan" \
    KINESIS_SANITIZED=1 \
    "$ROOT/build/asan/bin/lua5.4" /usr/bin/busted -p _spec -o utfTerminal "$@" >"$log" 2>&1
  brc=$?
  failed=$(busted_failed "$log")
  passed=$(busted_passed "$log")
  nrep=$(find "$reports" -type f | wc -l)
  inlog=$(grep -a -c -E 'ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer' "$log")
  say "asan+ubsan suite: ${passed:-0} passed, $failed failed, $nrep sanitizer report(s), busted exit $brc"
  if [ "$failed" != 0 ] || [ "$nrep" != 0 ] || [ "$inlog" != 0 ] || [ -z "$passed" ]; then
    sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -a -E -A12 '^(Failure|Error) →' | head -150
    for f in $(find "$reports" -type f | head -5); do say "--- $f"; head -60 "$f"; done
    return 1
  fi
}

# ---------------------------------------------------------------- valgrind

# The specs of the C core and its bindings, and the C unit tests of spec/c,
# under memcheck. Filtered out (busted --filter-out, Lua patterns): tests
# of speed or CPU time, as memcheck runs code some 30x slower (shardmap's
# 100,000-lookup timing test, scheduler_spec's CPU-time test, transport's
# 20 TLS requests in flight at once: under memcheck the first completes
# before the twentieth handshake ends).
# eventstream_spec is left to ASan and fuzz_eventstream: under memcheck its
# chunk-by-chunk vector runs took 37 minutes of CI's 90.
VALGRIND_SPECS="base64 producer_queue codec hashkey kpl shardmap sigv4 transport scheduler"
VALGRIND_FILTER_OUT="binary search over 10000 shards
does not busy%-wait
HTTPS requests to an HTTP/1.1%-only server side by side"
stage_valgrind() {
  $MAKE -s build >/dev/null || return 1
  vg="valgrind -q --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite --error-exitcode=99 --num-callers=40"
  rc=0
  set --
  old_ifs=$IFS
  IFS='
'
  for p in $VALGRIND_FILTER_OUT; do set -- "$@" "--filter-out=$p"; done
  IFS=$old_ifs
  for s in $VALGRIND_SPECS; do
    [ -f "spec/${s}_spec.lua" ] || continue
    log="$LOG/valgrind-$s.log"
    t0=$(now)
    # shellcheck disable=SC2086
    env LUA_PATH="$SPEC_LUA_PATH" LUA_CPATH="$ROOT/build/5.4/?.so;;" KINESIS_VALGRIND=1 \
      $vg lua5.4 /usr/bin/busted -o utfTerminal "$@" "spec/${s}_spec.lua" >"$log" 2>&1
    vrc=$?
    failed=$(busted_failed "$log")
    lost=$(grep -a -c 'definitely lost' "$log")
    errs=$(grep -a -c -E '^==[0-9]+== (Invalid|Conditional|Use of uninit|Syscall param|Mismatched|Source and destination)' "$log")
    say "valgrind $s: $(busted_passed "$log") passed, $failed failed, $errs memcheck error(s), $lost definitely-lost report(s), $(( $(now) - t0 )) s"
    if [ "$vrc" = 99 ] || [ "$failed" != 0 ] || [ "$lost" != 0 ] || [ "$errs" != 0 ]; then
      rc=1
      grep -a -E -B2 -A25 '^==[0-9]+== [A-Z]' "$log" | head -80
      sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -a -E -A10 '^(Failure|Error) →' | head -60
    fi
  done
  for variant in native portable; do
    def=$([ $variant = portable ] && echo "-DKN_U128_PORTABLE -DKN_EXPECT_NATIVE=0" || echo "-DKN_EXPECT_NATIVE=1")
    bin="$LOG/test_u128_$variant"
    # shellcheck disable=SC2086
    cc -O1 -g $def -Isrc -o "$bin" spec/c/test_u128.c src/u128.c src/shardmap.c src/md5.c -lcrypto || { rc=1; continue; }
    if $vg "$bin" >"$LOG/valgrind-test_u128_$variant.log" 2>&1; then
      say "valgrind spec/c/test_u128 ($variant): clean"
    else
      rc=1; say "valgrind spec/c/test_u128 ($variant): FAILED"; tail -40 "$LOG/valgrind-test_u128_$variant.log"
    fi
  done
  return $rc
}

# ---------------------------------------------------------------- fuzz

# The part of a libFuzzer log that says what broke: a harness's message, a
# sanitizer report's first frames, where the input was written.
crash_excerpt() {
  awk '/^fuzz_[a-z]+: /{n=4} /ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:/{n=16}
       n>0{print "    " $0; n--} /Test unit written/{print "    " $0}' "$1" | head -60
}

fuzz_one() {   # name seconds
  name=$1 secs=$2
  bin=build/fuzz/fuzz_$name
  work=build/fuzz/corpus/$name
  seeds=build/fuzz/seeds/$name
  kept=fuzz/corpus/$name
  staged=build/fuzz/kept/$name
  log="$LOG/fuzz-$name.log"
  rm -rf "$staged"
  mkdir -p "$work" "$staged" build/fuzz/artifacts
  extra=""
  # the Lua state keeps memory between inputs: see fuzz/fuzz_response.c
  [ "$name" = response ] || [ "$name" = codec ] && extra="-detect_leaks=0"
  dict=""
  [ -f "build/fuzz/seeds/$name.dict" ] && dict="-dict=build/fuzz/seeds/$name.dict"
  common="-max_len=65536 -timeout=20 -rss_limit_mb=3072 -print_final_stats=1 -artifact_prefix=build/fuzz/artifacts/$name-"
  rc=0
  # 1. every kept input (seeds and the regressions of bugs found), one by
  #    one so each failure is named; those that pass seed the fuzzing
  : >"$log.replay"
  for f in "$kept"/*; do
    [ -f "$f" ] || continue
    # shellcheck disable=SC2086
    if KINESIS_ROOT="$ROOT" "$bin" $extra "$f" >>"$log.replay" 2>&1; then
      cp "$f" "$staged/"
    else
      rc=1
      say "fuzz $name: kept input $f FAILS:"
      crash_excerpt "$log.replay"
    fi
  done
  # 2. the vector seeds, once each
  # shellcheck disable=SC2086
  if ! KINESIS_ROOT="$ROOT" "$bin" $common $extra -runs=0 "$seeds" >>"$log.replay" 2>&1; then
    say "fuzz $name: a seed from the vectors FAILS (see $log.replay)"
    grep -a -E -A30 'ERROR|fuzz_[a-z]+: ' "$log.replay" | tail -40
    return 1
  fi
  # 3. new inputs for `secs` seconds (new corpus entries go to $work)
  # shellcheck disable=SC2086
  KINESIS_ROOT="$ROOT" "$bin" $common $extra $dict -max_total_time="$secs" \
    "$work" "$staged" "$seeds" >"$log" 2>&1
  frc=$?
  runs=$(grep -a 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  rate=$(grep -a 'stat::average_exec_per_sec' "$log" | awk '{print $2}')
  cov=$(grep -a -E '^#[0-9]+.*DONE' "$log" | sed -E 's/.*cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+).*/cov \1, features \2, corpus \3/' | tail -1)
  if [ $frc != 0 ]; then
    say "fuzz $name: CRASH after ${runs:-?} runs (once fixed, keep the input as $kept/regress-<what>)"
    crash_excerpt "$log"
    return 1
  fi
  say "fuzz $name: ${runs:-?} runs in $secs s (${rate:-?}/s), $cov, no crash"
  return $rc
}

stage_fuzz() {
  secs=${FUZZ_SECONDS:-300}
  # shellcheck disable=SC2086
  $MAKE -s build fuzz-build FUZZERS="$FUZZERS" >"$LOG/fuzz-build.log" 2>&1 || { cat "$LOG/fuzz-build.log"; return 1; }
  LUA_PATH="$SPEC_LUA_PATH" LUA_CPATH="$ROOT/build/5.4/?.so;;" lua5.4 fuzz/seed.lua "$SHARED" build/fuzz/seeds || return 1
  rc=0 running=0 pids=""
  for name in $FUZZERS; do
    ( fuzz_one "$name" "$secs" >"$LOG/fuzz-$name.result" 2>&1 ) &
    pids="$pids $!"
    running=$((running + 1))
    if [ $running -ge "$FUZZ_JOBS" ]; then
      for p in $pids; do wait "$p" || rc=1; done
      pids="" running=0
    fi
  done
  for p in $pids; do wait "$p" || rc=1; done
  for name in $FUZZERS; do cat "$LOG/fuzz-$name.result"; done
  return $rc
}

# ---------------------------------------------------------------- all

run_stage() {   # name function -> appends "name status seconds" to the summary
  stage_start=$(now)
  say "==== $1"
  if "$2"; then stage_status=ok; else stage_status=FAILED; fi
  echo "$1 $stage_status $(( $(now) - stage_start ))" >>"$LOG/summary"
}

stage_all() {
  all_start=$(now)
  : >"$LOG/summary"
  run_stage warnings stage_warnings
  run_stage cppcheck stage_cppcheck
  # build everything first, so the two stages below do not run make at once
  $MAKE -s build >/dev/null && $MAKE -s LUA=luajit build >/dev/null && $MAKE -s gen-check >/dev/null \
    && $MAKE -s asan-build >"$LOG/asan-build.log" 2>&1 || { cat "$LOG/asan-build.log"; echo "build FAILED 0" >>"$LOG/summary"; }
  # the suite waits on servers most of the time: valgrind uses that CPU
  ( run_stage asan+ubsan stage_asan >"$LOG/asan.out" 2>&1 ) &
  apid=$!
  run_stage valgrind stage_valgrind
  wait $apid
  cat "$LOG/asan.out"
  FUZZ_SECONDS=${FUZZ_SECONDS:-35} run_stage fuzz stage_fuzz
  say "==== summary (make check, $(( $(now) - all_start )) s)"
  awk '{ printf "  %-12s %-7s %5d s\n", $1, $2, $3 }' "$LOG/summary"
  ! grep -q FAILED "$LOG/summary"
}

case "${1:-all}" in
  all) stage_all ;;
  tools) stage_tools ;;
  warnings) stage_warnings ;;
  cppcheck) stage_cppcheck ;;
  asan) stage_asan ;;
  valgrind) stage_valgrind ;;
  fuzz) stage_fuzz ;;
  *) say "usage: $0 [all|tools|warnings|cppcheck|asan|valgrind|fuzz]" >&2; exit 2 ;;
esac
