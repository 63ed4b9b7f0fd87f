-- Hash keys: partition key -> MD5 -> 128-bit decimal -> shard, checked
-- against ../shared/vectors/hashkey.json (210 keys, 4 shard maps captured
-- from kinesis-local and kinesalite, explicit hash key boundaries) and the
-- strict decimal rules. Also compiles and runs the C unit tests of
-- src/u128.c and src/shardmap.c over both 128-bit representations.
local cjson = require "cjson"
local shards = require "kinesis.shards"

local SHARED = os.getenv("SHARED") or "../shared"
local VECTORS = SHARED .. "/vectors"
local MAPS = { "kinesis-local-4", "kinesis-local-7", "kinesalite-4", "kinesalite-7" }

local TWO_64_M1 = "18446744073709551615"
local TWO_64 = "18446744073709551616"
local TWO_128_M2 = "340282366920938463463374607431768211454"
local TWO_128_M1 = "340282366920938463463374607431768211455"
local TWO_128 = "340282366920938463463374607431768211456"

local function read_json(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return cjson.decode(text)
end

local function exit_ok(cmd)
  local ok, how, code = os.execute(cmd)
  return ok == true and how == "exit" and code == 0
end

local vectors = read_json(VECTORS .. "/hashkey.json")

-- The raw ListShards output captured from each server.
local listings = {}
for _, name in ipairs(MAPS) do
  listings[name] = read_json(VECTORS .. "/shardmaps/" .. name .. ".json")
end

describe("C core unit tests (spec/c/test_u128.c)", function()
  local cc = os.getenv("CC") or "cc"
  local cflags = "-O2 -std=c99 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -Isrc"
  local sources = "spec/c/test_u128.c src/u128.c src/shardmap.c src/md5.c -lcrypto"

  local function build_and_run(defines, exe)
    os.execute("mkdir -p spec/.tmp")
    local log = exe .. ".log"
    local built = exit_ok(string.format("%s %s %s %s -o %s > %s 2>&1",
      cc, cflags, defines, sources, exe, log))
    assert(built, "compile failed, see " .. log)
    local ran = exit_ok(string.format("%s > %s 2>&1", exe, log))
    local f = io.open(log, "rb")
    local out = f and f:read("a") or ""
    if f then f:close() end
    assert(ran, "C tests failed:\n" .. out)
    return out
  end

  it("pass over unsigned __int128", function()
    local out = build_and_run("-DKN_EXPECT_NATIVE=1", "spec/.tmp/test_u128")
    assert.matches("representation: unsigned __int128", out, 1, true)
    assert.matches("%d+ checks, 0 failed", out)
  end)

  it("pass over the portable two-word fallback (-DKN_U128_PORTABLE)", function()
    local out = build_and_run("-DKN_U128_PORTABLE -DKN_EXPECT_NATIVE=0", "spec/.tmp/test_u128_portable")
    assert.matches("representation: two 64-bit words", out, 1, true)
    assert.matches("%d+ checks, 0 failed", out)
  end)
end)

describe("kinesis.shards.hash_key", function()
  it("matches all " .. #vectors.keys .. " vectors", function()
    assert.is_true(#vectors.keys >= 210)
    for _, v in ipairs(vectors.keys) do
      -- key_utf8_hex is the authority on the bytes; the JSON string must agree.
      local bytes = v.key_utf8_hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
      assert.are.equal(bytes, v.key)
      assert.are.equal(v.hash_key, shards.hash_key(v.key), v.group .. " key " .. v.key_utf8_hex)
    end
  end)

  -- hex -> decimal by long multiplication on digit arrays (no 128-bit code
  -- involved), to compare hash keys with digests computed elsewhere
  local function hex_to_decimal(hex)
    local digits = { 0 }
    for c in hex:gmatch("%x") do
      local carry = tonumber(c, 16)
      for i = 1, #digits do
        local x = digits[i] * 16 + carry
        digits[i], carry = x % 10, x // 10
      end
      while carry > 0 do digits[#digits + 1], carry = carry % 10, carry // 10 end
    end
    while #digits > 1 and digits[#digits] == 0 do digits[#digits] = nil end
    local s = {}
    for i = #digits, 1, -1 do s[#s + 1] = tostring(digits[i]) end
    return table.concat(s)
  end

  it("reads the MD5 big-endian: md5_hex and hash_key are the same number", function()
    local v = vectors.keys[1]
    assert.are.equal(hex_to_decimal(v.md5_hex), shards.hash_key(v.key))
  end)

  it("digests RFC 1321's test suite and every length across the block edges", function()
    -- src/md5.c against RFC 1321 section A.5 and against node's crypto
    -- (OpenSSL) for inputs of 0..300 bytes: the padding differs when
    -- the tail is under 56 bytes, 56-63 bytes, or a whole block
    local rfc = {
      [""] = "d41d8cd98f00b204e9800998ecf8427e",
      a = "0cc175b9c0f1b6a831c399e269772661",
      abc = "900150983cd24fb0d6963f7d28e17f72",
      ["message digest"] = "f96b697d7cb7938d525a2f31aaf161d0",
      abcdefghijklmnopqrstuvwxyz = "c3fcd3d76192e4007dfb496cca67e13b",
      ["ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"] = "d174ab98d277d9f5a5611c2c9f419d9f",
      [("1234567890"):rep(8)] = "57edf4a22be3c955ac49da2e2107b67a",
    }
    for msg, hex in pairs(rfc) do
      assert.are.equal(hex_to_decimal(hex), shards.hash_key(msg), msg)
    end
    local p = assert(io.popen([[node -e '
      const c = require("crypto"); const out = [];
      for (let n = 0; n <= 300; n++) {
        const b = Buffer.alloc(n);
        for (let i = 0; i < n; i++) b[i] = (i * 7 + n) & 255;
        out.push(c.createHash("md5").update(b).digest("hex"));
      }
      console.log(out.join("\n"));']]))
    local n = 0
    for hex in p:lines() do
      local t = {}
      for i = 0, n - 1 do t[i + 1] = string.char((i * 7 + n) & 255) end
      assert.are.equal(hex_to_decimal(hex), shards.hash_key(table.concat(t)), "length " .. n)
      n = n + 1
    end
    p:close()
    assert.are.equal(301, n)
  end)

  it("is binary-safe and does not normalize", function()
    assert.are.equal("196354609347928108891364980146585313137", shards.hash_key("\0"))
    assert.are.not_equal(shards.hash_key("a\0b"), shards.hash_key("a"))
    assert.are.not_equal(shards.hash_key("\195\169"), shards.hash_key("e\204\129")) -- NFC vs NFD é
    assert.are.equal("281949768489412648962353822266799178366", shards.hash_key(""))
  end)

  it("raises on a non-string partition key", function()
    assert.has_error(function() shards.hash_key(12) end)
    assert.has_error(function() shards.hash_key(nil) end)
    assert.has_error(function() shards.hash_key({}) end)
  end)
end)

describe("shard maps from the captured ListShards output", function()
  local maps = {}
  for _, name in ipairs(MAPS) do
    maps[name] = assert(shards.shard_map(listings[name].list_shards_response.Shards))
  end

  it("hold the ranges the vectors were made with", function()
    for _, name in ipairs(MAPS) do
      local want = vectors.shard_maps[name].shards
      local got = maps[name]:shards()
      assert.are.equal(#want, #got, name)
      for i, s in ipairs(want) do
        assert.are.equal(s.shard_id, got[i].ShardId)
        assert.are.equal(s.starting_hash_key, got[i].HashKeyRange.StartingHashKey)
        assert.are.equal(s.ending_hash_key, got[i].HashKeyRange.EndingHashKey)
      end
    end
  end)

  it("route every vector key to the shard the server chose, in all 4 maps", function()
    local n = 0
    for _, v in ipairs(vectors.keys) do
      for _, name in ipairs(MAPS) do
        local shard = maps[name]:lookup(v.key)
        assert.are.equal(v.shard[name], shard.ShardId, name .. " " .. v.key_utf8_hex)
        assert.are.equal(v.shard[name], maps[name]:lookup_hash(v.hash_key).ShardId)
        n = n + 1
      end
    end
    assert.are.equal(#vectors.keys * 4, n)
  end)

  it("route every explicit hash key boundary case", function()
    local n = 0
    for name, cases in pairs(vectors.explicit_hash_key_boundaries) do
      for _, c in ipairs(cases) do
        assert.is_true(shards.u128_check(c.hash_key))
        assert.are.equal(c.shard, maps[name]:lookup_hash(c.hash_key).ShardId, name .. " " .. c.why)
        n = n + 1
      end
    end
    assert.are.equal(44, n)
  end)

  it("route each range's first and last key (and the keys just outside)", function()
    for _, name in ipairs(MAPS) do
      local list = maps[name]:shards()
      for i, s in ipairs(list) do
        local r = s.HashKeyRange
        assert.are.equal(s, maps[name]:lookup_hash(r.StartingHashKey))
        assert.are.equal(s, maps[name]:lookup_hash(r.EndingHashKey))
        if i > 1 then
          local lower = maps[name]:lookup_hash(list[i - 1].HashKeyRange.EndingHashKey)
          assert.are.equal(list[i - 1], lower)
        end
      end
    end
  end)

  it("route 0, 1, 2^64-1, 2^64, 2^128-2 and 2^128-1", function()
    local want = {
      ["kinesis-local-4"] = { "0", "0", "0", "0", "3", "3" },
      ["kinesis-local-7"] = { "0", "0", "0", "0", "6", "6" },
      ["kinesalite-4"] = { "0", "0", "0", "0", "3", "3" },
      ["kinesalite-7"] = { "0", "0", "0", "0", "6", "6" },
    }
    local keys = { "0", "1", TWO_64_M1, TWO_64, TWO_128_M2, TWO_128_M1 }
    for _, name in ipairs(MAPS) do
      for i, k in ipairs(keys) do
        assert.is_true(shards.u128_check(k))
        local id = "shardId-00000000000" .. want[name][i]
        assert.are.equal(id, maps[name]:lookup_hash(k).ShardId, name .. " " .. k)
      end
    end
  end)

  it("show where kinesis-local and kinesalite disagree (why ranges are never computed)", function()
    -- 2^126 - 1 ends shard 0 in kinesalite but starts shard 1 in kinesis-local.
    local k = "85070591730234615865843651857942052863"
    assert.are.equal("shardId-000000000000", maps["kinesalite-4"]:lookup_hash(k).ShardId)
    assert.are.equal("shardId-000000000001", maps["kinesis-local-4"]:lookup_hash(k).ShardId)
  end)
end)

describe("strict decimals", function()
  local map = assert(shards.shard_map(listings["kinesalite-4"].list_shards_response.Shards))
  local bad = {
    { "-1", "only the digits" },
    { "+1", "only the digits" },
    { "01", "leading zero" },
    { "00", "leading zero" },
    { TWO_128, "greater than 2^128-1" },
    { string.rep("9", 39), "greater than 2^128-1" },
    { "1" .. string.rep("0", 39), "greater than 2^128-1" },            -- 40 digits
    { string.rep("1", 40), "greater than 2^128-1" },
    { "", "empty" },
    { " ", "only the digits" },
    { " 1", "only the digits" },
    { "1 ", "only the digits" },
    { "1 2", "only the digits" },
    { "12a", "only the digits" },
    { "abc", "only the digits" },
    { "0x1f", "only the digits" },
    { "1.5", "only the digits" },
    { "1e3", "only the digits" },
    { "1\0", "only the digits" },
    { "\217\161", "only the digits" },                               -- Arabic-Indic one
  }

  it("u128_check rejects each bad form with a reason", function()
    for _, case in ipairs(bad) do
      local ok, why = shards.u128_check(case[1])
      assert.is_nil(ok, case[1])
      assert.equal("invalid_decimal", why.code)
      assert.matches(case[2], why.message, 1, true)
    end
  end)

  it("lookup_hash gives nil, err for each bad form", function()
    for _, case in ipairs(bad) do
      local shard, err = map:lookup_hash(case[1])
      assert.is_nil(shard)
      assert.equal("invalid_hash_key", err.code)
      assert.matches("bad hash key", err.message, 1, true)
      assert.matches(case[2], err.message, 1, true)
    end
  end)

  it("u128_check accepts 0, 1, 2^64-1, 2^64, 2^128-2, 2^128-1", function()
    for _, k in ipairs({ "0", "1", TWO_64_M1, TWO_64, TWO_128_M2, TWO_128_M1 }) do
      assert.is_true(shards.u128_check(k), k)
    end
  end)

  it("u128_check never raises, even on non-strings", function()
    for _, v in ipairs({ 5, true, {}, print }) do
      local ok, why = shards.u128_check(v)
      assert.is_nil(ok)
      assert.matches("decimal string", why, 1, true)
    end
    local ok, why = shards.u128_check(nil)
    assert.is_nil(ok)
    assert.matches("nil", why, 1, true)
  end)

  it("lookup_hash raises on a non-string (misuse)", function()
    assert.has_error(function() map:lookup_hash(1) end)
  end)
end)

describe("the LuaJIT build (build/5.1)", function()
  local so = "build/5.1/kinesis/core.so"
  local f = io.open(so, "rb")
  if f then f:close() end
  local has_luajit = exit_ok("command -v luajit > /dev/null 2>&1")

  local run = (f and has_luajit) and it or pending
  run("routes the same keys as the Lua 5.4 build", function()
    -- A few vectors through kinesis.shards under LuaJIT (Lua 5.1 API).
    local lines = {}
    for i = 1, #vectors.keys, 7 do
      local v = vectors.keys[i]
      lines[#lines + 1] = string.format("  { %q, %q, %q },", v.key_utf8_hex, v.hash_key, v.shard["kinesalite-7"])
    end
    local ranges = {}
    for _, s in ipairs(listings["kinesalite-7"].list_shards_response.Shards) do
      ranges[#ranges + 1] = string.format("  { ShardId = %q, HashKeyRange = { StartingHashKey = %q, EndingHashKey = %q } },",
        s.ShardId, s.HashKeyRange.StartingHashKey, s.HashKeyRange.EndingHashKey)
    end
    local script = "spec/.tmp/luajit_hashkey.lua"
    local out = assert(io.open(script, "wb"))
    out:write("package.path = 'lua/?.lua;' .. package.path\n",
      "package.cpath = 'build/5.1/?.so;' .. package.cpath\n",
      "local shards = require 'kinesis.shards'\n",
      "local cases = {\n", table.concat(lines, "\n"), "\n}\n",
      "local map = assert(shards.shard_map({\n", table.concat(ranges, "\n"), "\n}))\n",
      "for _, c in ipairs(cases) do\n",
      "  local key = c[1]:gsub('%x%x', function(h) return string.char(tonumber(h, 16)) end)\n",
      "  assert(shards.hash_key(key) == c[2], c[1])\n",
      "  assert(map:lookup(key).ShardId == c[3], c[1])\n",
      "  assert(map:lookup_hash(c[2]).ShardId == c[3], c[1])\n",
      "end\n",
      "assert(shards.u128_check('01') == nil)\n",
      "assert(#shards.even_ranges(7) == 7)\n",
      "assert(shards.split_point({StartingHashKey = '0', EndingHashKey = '", TWO_128_M1,
      "'}) == '170141183460469231731687303715884105728')\n",
      "print('luajit ok ' .. #cases)\n")
    out:close()
    assert.is_true(exit_ok("luajit " .. script .. " > spec/.tmp/luajit_hashkey.log 2>&1"),
      "luajit run failed, see spec/.tmp/luajit_hashkey.log")
  end)
end)
