rockspec_format = "3.0"
package = "lua-kinesis"
version = "scm-1"
source = {
  url = "git+https://example.invalid/lua-kinesis.git",
}
description = {
  summary = "Amazon Kinesis Data Streams client: every operation, SigV4 in C, libcurl transport",
  detailed = [[
A complete Kinesis Data Streams client for Lua 5.1 (LuaJIT/OpenResty) through 5.4.
A C core signs requests (SigV4 with OpenSSL), does the 128-bit hash-key and
shard arithmetic and the binary codecs; a libcurl transport sends them; Lua
modules generated from the AWS service model expose every operation as a
table-in/table-out function.
]],
  license = "MIT",
}
-- Debian's lua-cjson package is not registered with LuaRocks; declare it
-- once with `luarocks config rocks_provided.lua-cjson 2.1.0-1` (README, Install)
dependencies = {
  "lua >= 5.1",
  "lua-cjson",
}
external_dependencies = {
  -- libcurl is probed by library: Debian keeps curl/curl.h in the multiarch
  -- include folder, where the header probe does not look
  LIBCURL = { library = "curl" },
  OPENSSL = { library = "crypto" },
}
build = {
  type = "builtin",
  copy_directories = { "docs", "examples" },
  modules = {
    ["kinesis.core"] = {
      sources = {
        "src/l_core.c", "src/l_base64.c", "src/l_pqueue.c", "src/l_time.c", "src/l_kpl.c", "src/l_sigv4.c", "src/l_hash.c", "src/l_eventstream.c",
        "src/l_fs.c", "src/l_signal.c", "src/l_digest.c", "src/l_util.c",
        "src/base64.c", "src/sigv4.c", "src/u128.c", "src/shardmap.c", "src/eventstream.c",
        "src/crc32.c", "src/kpl.c", "src/md5.c", "src/buf.c", "src/codec.c", "src/l_codec.c",
        "src/answer.c", "src/l_answer.c",
      },
      libraries = { "crypto" },
      incdirs = { "src", "$(OPENSSL_INCDIR)" },
      libdirs = { "$(OPENSSL_LIBDIR)" },
    },
    ["kinesis.curl"] = {
      sources = { "src/l_curl.c", "src/transport.c", "src/transport_multi.c", "src/buf.c", "src/l_util.c" },
      libraries = { "curl" },
      incdirs = { "src", "$(LIBCURL_INCDIR)" },
      libdirs = { "$(LIBCURL_LIBDIR)" },
    },
    ["kinesis"] = "lua/kinesis/init.lua",
    ["kinesis.client"] = "lua/kinesis/client.lua",
    ["kinesis.codec"] = "lua/kinesis/codec.lua",
    ["kinesis.codec_ref"] = "lua/kinesis/codec_ref.lua",
    ["kinesis.errors"] = "lua/kinesis/errors.lua",
    ["kinesis.model"] = "lua/kinesis/model.lua",
    ["kinesis.regex"] = "lua/kinesis/regex.lua",
    ["kinesis.credentials"] = "lua/kinesis/credentials/init.lua",
    ["kinesis.credentials.common"] = "lua/kinesis/credentials/common.lua",
    ["kinesis.credentials.explicit"] = "lua/kinesis/credentials/explicit.lua",
    ["kinesis.credentials.env"] = "lua/kinesis/credentials/env.lua",
    ["kinesis.credentials.profile"] = "lua/kinesis/credentials/profile.lua",
    ["kinesis.credentials.process"] = "lua/kinesis/credentials/process.lua",
    ["kinesis.credentials.web_identity"] = "lua/kinesis/credentials/web_identity.lua",
    ["kinesis.credentials.container"] = "lua/kinesis/credentials/container.lua",
    ["kinesis.credentials.imds"] = "lua/kinesis/credentials/imds.lua",
    ["kinesis.credentials.sts"] = "lua/kinesis/credentials/sts.lua",
    ["kinesis.credentials.sso"] = "lua/kinesis/credentials/sso.lua",
    ["kinesis.ini"] = "lua/kinesis/ini.lua",
    ["kinesis.endpoints"] = "lua/kinesis/endpoints.lua",
    ["kinesis.endpoint_rules"] = "lua/kinesis/endpoint_rules.lua",
    ["kinesis.retry"] = "lua/kinesis/retry.lua",
    ["kinesis.paging"] = "lua/kinesis/paging.lua",
    ["kinesis.waiters"] = "lua/kinesis/waiters.lua",
    ["kinesis.scheduler"] = "lua/kinesis/scheduler.lua",
    ["kinesis.shards"] = "lua/kinesis/shards.lua",
    ["kinesis.kpl"] = "lua/kinesis/kpl.lua",
    ["kinesis.validate"] = "lua/kinesis/validate.lua",
    ["kinesis.transport.curl"] = "lua/kinesis/transport/curl.lua",
    ["kinesis.subscribe"] = "lua/kinesis/subscribe.lua",
    ["kinesis.log"] = "lua/kinesis/log.lua",
    ["kinesis.consumer"] = "lua/kinesis/consumer.lua",
    ["kinesis.checkpoints"] = "lua/kinesis/checkpoints/init.lua",
    ["kinesis.checkpoints.memory"] = "lua/kinesis/checkpoints/memory.lua",
    ["kinesis.checkpoints.file"] = "lua/kinesis/checkpoints/file.lua",
    ["kinesis.runtime"] = "lua/kinesis/runtime/init.lua",
    ["kinesis.runtime.loop"] = "lua/kinesis/runtime/loop.lua",
    ["kinesis.runtime.nginx"] = "lua/kinesis/runtime/nginx.lua",
    ["kinesis.runtime.task"] = "lua/kinesis/runtime/task.lua",
    ["kinesis.transport.cosocket"] = "lua/kinesis/transport/cosocket.lua",
    ["kinesis.producer"] = "lua/kinesis/producer.lua",
    ["kinesis.dynamodb"] = "lua/kinesis/dynamodb.lua",
    ["kinesis.services.dynamodb_model"] = "lua/kinesis/services/dynamodb_model.lua",
    ["kinesis.leases"] = "lua/kinesis/leases.lua",
    ["kinesis.checkpoints.dynamodb"] = "lua/kinesis/checkpoints/dynamodb.lua",
  },
}
