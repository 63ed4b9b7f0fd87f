# Hardening targets (issue 8). Included by the Makefile; uses its LUA, OUT,
# CORE_SRC, CURL_SRC, HDRS, WARN, LUA_CFLAGS, CURL_CFLAGS, CURL_LIBS and
# SSL_LIBS. The stages themselves are driven by tools/check.sh.
#   make check          warnings (gcc+clang, 5.4+LuaJIT), cppcheck, the whole
#                       suite under ASan+UBSan, the C core specs under
#                       valgrind, every fuzzer for FUZZ_SECONDS (35) each
#   make fuzz           the fuzzers only, FUZZ_SECONDS each (default 300):
#                       make fuzz FUZZ_SECONDS=3600 FUZZERS="eventstream decimal"
#   make check-asan | check-valgrind | check-warnings | check-cppcheck
#                       one stage
#   make asan-build | fuzz-build
#                       the instrumented modules, interpreter and fuzzers

SAN_CC      ?= clang
FUZZ_CC     ?= clang
SAN_FLAGS   := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
SAN_OUT     := build/asan/$(LUA_ABI)
SAN_CORE_SO := $(SAN_OUT)/kinesis/core.so
SAN_CURL_SO := $(SAN_OUT)/kinesis/curl.so
SAN_LUA     := build/asan/bin/lua5.4
FUZZ_OUT    := build/fuzz
FUZZERS     ?= eventstream decimal shardmap kpl response codec answer
FUZZ_BINS   := $(addprefix $(FUZZ_OUT)/fuzz_,$(FUZZERS))
LUA54_CFLAGS := $(shell $(PKGCONFIG) --cflags lua5.4 2>/dev/null)
LUA54_LIBS  := $(shell $(PKGCONFIG) --libs lua5.4 2>/dev/null || echo -llua5.4)

.PHONY: check fuzz check-tools check-warnings check-cppcheck check-asan check-valgrind \
        asan-build fuzz-build

check: check-tools
	@sh tools/check.sh all

fuzz: check-tools
	@sh tools/check.sh fuzz

check-tools: deps
	@sh tools/check.sh tools

check-warnings:
	@sh tools/check.sh warnings

check-cppcheck:
	@sh tools/check.sh cppcheck

check-asan:
	@sh tools/check.sh asan

check-valgrind:
	@sh tools/check.sh valgrind

asan-build: $(SAN_CORE_SO) $(SAN_CURL_SO) $(SAN_LUA) build/asan/include/lua5.4

$(SAN_CORE_SO): $(CORE_SRC) $(HDRS) Makefile mk/check.mk
	@mkdir -p $(dir $@)
	$(SAN_CC) -O1 -g $(SAN_FLAGS) $(WARN) -fPIC -shared $(LUA_CFLAGS) -o $@ $(CORE_SRC) $(SSL_LIBS)

$(SAN_CURL_SO): $(wildcard $(CURL_SRC)) $(HDRS) Makefile mk/check.mk
	@mkdir -p $(dir $@)
	$(SAN_CC) -O1 -g $(SAN_FLAGS) $(WARN) -fPIC -shared $(LUA_CFLAGS) $(CURL_CFLAGS) -o $@ $(wildcard $(CURL_SRC)) $(CURL_LIBS)

$(SAN_LUA): tools/sanitized_lua.c mk/check.mk
	@mkdir -p $(dir $@)
	$(SAN_CC) -O1 -g $(SAN_FLAGS) $(WARN) $(LUA54_CFLAGS) -o $@ $< $(LUA54_LIBS)

# luarocks takes LUA_DIR from the lua5.4 first in PATH (the sanitized one
# during check-asan: spec/rockspec_spec.lua runs luarocks make), so the Lua
# headers must be found under build/asan/include as well
build/asan/include/lua5.4:
	@mkdir -p $(dir $@)
	@ln -sfn $(firstword $(patsubst -I%,%,$(filter -I%,$(LUA54_CFLAGS))) /usr/include/lua5.4) $@

fuzz-build: $(FUZZ_BINS)

FUZZ_FLAGS := -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
              -fno-omit-frame-pointer $(WARN) -Isrc

$(FUZZ_OUT)/fuzz_eventstream: fuzz/fuzz_eventstream.c src/eventstream.c src/crc32.c $(HDRS) mk/check.mk
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ fuzz/fuzz_eventstream.c src/eventstream.c src/crc32.c

# The portable two-word arithmetic, checked against the compiler's
# unsigned __int128 in the harness: a differential, not a self-comparison.
$(FUZZ_OUT)/fuzz_decimal: fuzz/fuzz_decimal.c src/u128.c src/md5.c $(HDRS) mk/check.mk
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -DKN_U128_PORTABLE -o $@ fuzz/fuzz_decimal.c src/u128.c src/md5.c $(SSL_LIBS)

$(FUZZ_OUT)/fuzz_shardmap: fuzz/fuzz_shardmap.c src/shardmap.c src/u128.c src/md5.c $(HDRS) mk/check.mk
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ fuzz/fuzz_shardmap.c src/shardmap.c src/u128.c src/md5.c $(SSL_LIBS)

$(FUZZ_OUT)/fuzz_kpl: fuzz/fuzz_kpl.c src/kpl.c src/md5.c $(HDRS) mk/check.mk
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ fuzz/fuzz_kpl.c src/kpl.c src/md5.c $(SSL_LIBS)

$(FUZZ_OUT)/fuzz_answer: fuzz/fuzz_answer.c src/answer.c $(HDRS) mk/check.mk
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ fuzz/fuzz_answer.c src/answer.c

# Lua 5.4 in the harness; kinesis.core compiled in (instrumented, preloaded);
# lua-cjson is the system module, found through package.cpath.
$(FUZZ_OUT)/fuzz_response: fuzz/fuzz_response.c fuzz/lua_harness.h $(CORE_SRC) $(HDRS) mk/check.mk
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) $(LUA54_CFLAGS) -o $@ fuzz/fuzz_response.c $(CORE_SRC) $(LUA54_LIBS) $(SSL_LIBS)

# the codec, differential against the Lua reference: built like fuzz_response
$(FUZZ_OUT)/fuzz_codec: fuzz/fuzz_codec.c fuzz/lua_harness.h $(CORE_SRC) $(HDRS) mk/check.mk
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) $(LUA54_CFLAGS) -o $@ fuzz/fuzz_codec.c $(CORE_SRC) $(LUA54_LIBS) $(SSL_LIBS)

# tools/check.sh reads the Makefile's variables through this
check-print-%:
	@echo '$($*)'
