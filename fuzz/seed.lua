-- seed.lua - writes the fuzzers' seed corpora from the shared test vectors,
-- so the seeds follow ../shared/vectors instead of copies kept here.
--   lua5.4 fuzz/seed.lua <shared dir> <out dir>
-- makes <out>/eventstream, <out>/decimal, <out>/shardmap, <out>/kpl,
-- <out>/response.
-- Needs lua-cjson and kinesis.core (base64) on the Lua paths.
local cjson = require "cjson"
local core = require "kinesis.core"

local shared, out = arg[1], arg[2]
assert(shared and out, "usage: seed.lua <shared dir> <out dir>")
local vectors = shared .. "/vectors"
local MAX_SEED = 64 * 1024   -- libFuzzer's -max_len in tools/check.sh

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function lines(cmd)
  local p = assert(io.popen(cmd))
  local t = {}
  for l in p:lines() do t[#t + 1] = l end
  p:close()
  return t
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local counts = {}
local function write(kind, name, bytes)
  if #bytes > MAX_SEED then return end
  local f = assert(io.open(out .. "/" .. kind .. "/" .. name, "wb"))
  f:write(bytes)
  f:close()
  counts[kind] = (counts[kind] or 0) + 1
end

for _, kind in ipairs { "eventstream", "decimal", "shardmap", "kpl", "response", "codec", "answer" } do
  os.execute("mkdir -p " .. q(out .. "/" .. kind))
end

---------------------------------------------------------------- eventstream
-- every framed stream: official positives and negatives, the synthetic
-- SubscribeToShard frames (and their corruptions), kinesis-local's capture
for _, path in ipairs(lines("find " .. q(vectors .. "/eventstream") .. " -type f "
    .. "\\( -path '*/encoded/*' -o -name '*.bin' \\) | sort")) do
  local name = path:sub(#vectors + 2):gsub("[/]", "-")
  write("eventstream", name, read(path))
end

---------------------------------------------------------------- kpl
-- aggregated records, well-formed and malformed (as GetRecords hands them)
for _, path in ipairs(lines("find " .. q(vectors .. "/kpl") .. " -name '*.bin' | sort")) do
  write("kpl", path:sub(#vectors + 2):gsub("[/]", "-"), read(path))
end

---------------------------------------------------------------- decimal / shardmap
local hk = cjson.decode(read(vectors .. "/hashkey.json"))
local keys = {}
for i, k in ipairs(hk.keys) do keys[i] = k.hash_key end
-- pairs of neighbouring keys, and each key against the boundaries
for i = 1, #keys - 1, 7 do write("decimal", "hashkey-" .. i, keys[i] .. "\n" .. keys[i + 1]) end
for name, list in pairs(hk.explicit_hash_key_boundaries) do
  for i = 1, #list - 1 do
    write("decimal", "boundary-" .. name .. "-" .. i, list[i].hash_key .. "\n" .. list[i + 1].hash_key)
  end
end

local function shard_lines(shards)
  local t = {}
  for _, s in ipairs(shards) do t[#t + 1] = s.starting_hash_key .. " " .. s.ending_hash_key end
  return table.concat(t, "\n") .. "\n"
end
for name, map in pairs(hk.shard_maps) do
  write("shardmap", "hashkey-" .. name, shard_lines(map.shards))
end

---------------------------------------------------------------- response
for _, path in ipairs(lines("find " .. q(vectors .. "/shardmaps") .. " -name '*.json' | sort")) do
  local doc = cjson.decode(read(path))
  local name = path:match("([^/]+)%.json$")
  write("shardmap", "listshards-" .. name, shard_lines(doc.shards))
  write("response", "listshards-" .. name,
        "ListShards 200\nContent-Type: application/x-amz-json-1.1\n\n" .. cjson.encode(doc.list_shards_response))
end

-- event payloads as SubscribeToShard carries them, by :event-type or
-- :exception-type
for _, path in ipairs(lines("find " .. q(vectors .. "/eventstream/kinesis-synthetic") .. " -maxdepth 1 -name '*.json' ! -name index.json | sort")) do
  local doc = cjson.decode(read(path))
  for i, m in ipairs(doc.messages or {}) do
    local shape
    for _, h in ipairs(m.headers or {}) do
      if h.name == ":event-type" or h.name == ":exception-type" then shape = h.value end
    end
    if shape and m.payload_base64 then
      local payload = core.b64decode(m.payload_base64)
      if payload then
        write("response", "event-" .. doc.name .. "-" .. i, "event " .. shape .. "\n\n" .. payload)
      end
    end
  end
end
-- whole SubscribeToShard bodies for the event-stream binding
for _, path in ipairs(lines("find " .. q(vectors .. "/eventstream") .. " -type f "
    .. "\\( -path '*/encoded/*' -o -name '*.bin' \\) | sort")) do
  write("response", "stream-" .. path:sub(#vectors + 2):gsub("[/]", "-"), "stream\n\n" .. read(path))
end
-- the records of those events as a GetRecords answer (KPL aggregates too)
for _, path in ipairs(lines("find " .. q(vectors .. "/kpl") .. " -maxdepth 1 -name '*.bin' | sort")) do
  local name = path:match("([^/]+)%.bin$")
  local body = cjson.encode { Records = { {
    SequenceNumber = "49590338271490256608559692538361571095921575989136588898",
    ApproximateArrivalTimestamp = 1700000000.5, PartitionKey = "pk",
    Data = core.b64encode(read(path)) } }, MillisBehindLatest = 0,
    NextShardIterator = "AAAAAAAAAAAA" }
  write("response", "getrecords-kpl-" .. name, "GetRecords 200\n\n" .. body)
end

---------------------------------------------------------------- dictionaries
-- libFuzzer -dict files: tokens a mutation could hardly guess
local function dict(kind, tokens)
  local f = assert(io.open(out .. "/" .. kind .. ".dict", "wb"))
  local seen = {}
  for _, t in ipairs(tokens) do
    if not seen[t] then
      seen[t] = true
      f:write('"', (t:gsub("[\\\"]", "\\%0"):gsub("\n", "\\x0A")), '"\n')
    end
  end
  f:close()
end
local bounds = { "0", "1", "340282366920938463463374607431768211455",
  "340282366920938463463374607431768211456", "170141183460469231731687303715884105727",
  "170141183460469231731687303715884105728", "18446744073709551615", "18446744073709551616",
  "4294967295", "4294967296", "9999999999999999999", "10000000000000000000" }
dict("decimal", bounds)
dict("shardmap", bounds)

local model = require "kinesis.model"
local tokens = { "event ", " 200\n", " 400\n", " 500\n", " 503\n", "\n\n",
  "X-Amzn-ErrorType: ", "X-Amzn-RequestId: ", "Date: ", "__type", "message", "null",
  "true", "false", "[]", "{}", ":", "#", "Infinity", "NaN", "1e400", "-0", "0.5" }
for name, op in pairs(model.operations) do tokens[#tokens + 1] = name .. " " end
for sname, shape in pairs(model.shapes) do
  if shape.members then
    for m in pairs(shape.members) do tokens[#tokens + 1] = '"' .. m .. '":' end
  end
  if sname:match("Exception$") then tokens[#tokens + 1] = sname end
end
table.sort(tokens)
dict("response", tokens)
dict("answer", tokens)

local names = {}
for k, n in pairs(counts) do names[#names + 1] = k .. " " .. n end
table.sort(names)
print("seeds from " .. vectors .. ": " .. table.concat(names, ", "))
