# lua-kinesis build, test and demo.
#   make            build the C modules for Lua 5.4 into build/5.4/kinesis/
#   make LUA=luajit build the same sources for LuaJIT (Lua 5.1 API) into build/5.1/
#   make test       install what is missing, build, run the whole busted suite
#   make demo       install what is missing, start kinesis-local, run examples/quickstart.lua
#   make local-kinesis       a local Kinesis on 4568 (foreground; LOCAL_KINESIS_ARGS=--background)
#   make local-kinesis-stop  stop the one started with --background
#   make release-rockspec    lua-kinesis-$(VERSION)-1.rockspec from the scm one (VERSION from src/l_core.c)
#   make bench      run the benchmarks (bench/), each against a baseline measured in the same run
#   make gen        regenerate lua/kinesis/model.lua, services/dynamodb_model.lua and endpoint_rules.lua from the AWS models
#   make gen-check  fail if the committed generated files differ from a fresh generation

LUA        ?= lua5.4
SHARED     ?= $(abspath ../shared)
CC         ?= cc
CFLAGS     ?= -O2 -g
WARN       := -Wall -Wextra -Werror -std=c99 -D_POSIX_C_SOURCE=200809L
PKGCONFIG  ?= pkg-config

ifeq ($(LUA),luajit)
LUA_PC     := luajit
LUA_ABI    := 5.1
LUA_BIN    := luajit
else
LUA_PC     := $(LUA)
LUA_ABI    := $(patsubst lua%,%,$(LUA))
LUA_BIN    := $(LUA)
endif

LUA_CFLAGS  := $(shell $(PKGCONFIG) --cflags $(LUA_PC) 2>/dev/null)
CURL_CFLAGS := $(shell $(PKGCONFIG) --cflags libcurl 2>/dev/null)
CURL_LIBS   := $(shell $(PKGCONFIG) --libs libcurl 2>/dev/null || echo -lcurl)
SSL_LIBS    := $(shell $(PKGCONFIG) --libs libcrypto 2>/dev/null || echo -lcrypto)

OUT        := build/$(LUA_ABI)
# curl.so: the transport and its binding, plus the helpers both modules link
CURL_ONLY  := src/transport.c src/transport_multi.c src/l_curl.c
SHARED_SRC := src/buf.c src/l_util.c
CORE_SRC   := $(filter-out $(CURL_ONLY),$(wildcard src/*.c))
CURL_SRC   := $(CURL_ONLY) $(SHARED_SRC)
HDRS       := $(wildcard src/*.h)

CORE_SO    := $(OUT)/kinesis/core.so
CURL_SO    := $(OUT)/kinesis/curl.so

.PHONY: all build deps test demo gen gen-check clean luajit bench local-kinesis local-kinesis-stop release-rockspec
all build: $(CORE_SO) $(CURL_SO)

$(CORE_SO): $(CORE_SRC) $(HDRS) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -fPIC -shared $(LUA_CFLAGS) -o $@ $(CORE_SRC) $(SSL_LIBS)

$(CURL_SO): $(wildcard $(CURL_SRC)) $(HDRS) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -fPIC -shared $(LUA_CFLAGS) $(CURL_CFLAGS) -o $@ $(wildcard $(CURL_SRC)) $(CURL_LIBS)

luajit:
	$(MAKE) LUA=luajit build

deps:
	@sh tools/deps.sh

test: deps
	@$(MAKE) --no-print-directory build
	@$(MAKE) --no-print-directory LUA=luajit build
	@$(MAKE) --no-print-directory gen-check
	@SHARED=$(SHARED) sh tools/test.sh $(TEST_ARGS)

demo: deps
	@$(MAKE) --no-print-directory build
	@SHARED=$(SHARED) sh tools/demo.sh

local-kinesis:
	@sh tools/local-kinesis.sh $(LOCAL_KINESIS_ARGS)

local-kinesis-stop:
	@sh tools/local-kinesis.sh --stop

VERSION := $(shell sed -n -E 's/^\#define KN_VERSION "(.*)"$$/\1/p' src/l_core.c)
release-rockspec:
	sed -e 's/^version = "scm-1"$$/version = "$(VERSION)-1"/' \
	    -e 's|^\(  url = "git+.*",\)$$|\1\n  tag = "v$(VERSION)",|' \
	    lua-kinesis-scm-1.rockspec > lua-kinesis-$(VERSION)-1.rockspec

bench: deps
	@$(MAKE) --no-print-directory build
	@sh bench/run.sh

gen:
	lua5.4 tools/gen_model.lua $(SHARED)/aws-model > lua/kinesis/model.lua.tmp
	mv lua/kinesis/model.lua.tmp lua/kinesis/model.lua
	lua5.4 tools/gen_model.lua $(SHARED)/aws-model dynamodb > lua/kinesis/services/dynamodb_model.lua.tmp
	mv lua/kinesis/services/dynamodb_model.lua.tmp lua/kinesis/services/dynamodb_model.lua
	lua5.4 tools/gen_endpoints.lua $(SHARED)/aws-model > lua/kinesis/endpoint_rules.lua.tmp
	mv lua/kinesis/endpoint_rules.lua.tmp lua/kinesis/endpoint_rules.lua

gen-check:
	@mkdir -p $(OUT)
	@lua5.4 tools/gen_model.lua $(SHARED)/aws-model > $(OUT)/model.lua.check
	@cmp -s $(OUT)/model.lua.check lua/kinesis/model.lua || \
	  { echo "lua/kinesis/model.lua is out of date: run 'make gen'"; diff -u lua/kinesis/model.lua $(OUT)/model.lua.check | head -40; exit 1; }
	@lua5.4 tools/gen_model.lua $(SHARED)/aws-model dynamodb > $(OUT)/dynamodb_model.lua.check
	@cmp -s $(OUT)/dynamodb_model.lua.check lua/kinesis/services/dynamodb_model.lua || \
	  { echo "lua/kinesis/services/dynamodb_model.lua is out of date: run 'make gen'"; exit 1; }
	@lua5.4 tools/gen_endpoints.lua $(SHARED)/aws-model > $(OUT)/endpoint_rules.lua.check
	@cmp -s $(OUT)/endpoint_rules.lua.check lua/kinesis/endpoint_rules.lua || \
	  { echo "lua/kinesis/endpoint_rules.lua is out of date: run 'make gen'"; exit 1; }
	@echo "model.lua, services/dynamodb_model.lua and endpoint_rules.lua match the AWS models"

clean:
	rm -rf build

# hardening targets (make check, make fuzz) live in mk/
-include mk/*.mk
