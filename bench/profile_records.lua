-- bench/profile_records.lua - what the Lua pipeline costs per PutRecords
-- call of 500 x 100-byte records, split into the pieces kinesis.validate
-- and kinesis.codec spend it on. Each piece is timed alone with the same
-- data, so the pieces do not add up exactly to their stage; they show which
-- function a faster version must change. No server needed.
--
--   lua5.4 bench/profile_records.lua [SECONDS]
--
-- Prints { pieces = { {name, us}, ... }, hwm_kb } (us = microseconds of
-- CPU time per PutRecords call, i.e. for all 500 records; CPU time because
-- it moves less than wall time when others load the machine).

local common = require "common"
local validate = require "kinesis.validate"
local codec = require "kinesis.codec"
local model = require "kinesis.model"
local core = require "kinesis.core"
local cjson = require "cjson"
require "kinesis" -- installs the 128-bit hash-key check into validate

local seconds = tonumber(arg[1]) or 0.25
local shapes = model.shapes
local op = require("kinesis.client").operations.PutRecords
local params = common.put_records_params()
local records = params.Records
local N = #records
local keys, datas = {}, {}
for i = 1, N do keys[i], datas[i] = records[i].PartitionKey, records[i].Data end
local body = codec.encode(shapes, op.input, params)

local resp_parts = {}
for i = 1, N do
  resp_parts[i] = string.format(
    '{"SequenceNumber":"49651508112370573233364539185419153282036493%013d","ShardId":"shardId-%012d"}', i, i % 4)
end
local resp = '{"FailedRecordCount":0,"Records":[' .. table.concat(resp_parts, ",") .. ']}'

local find, format, utf8_len = string.find, string.format, utf8 and utf8.len
local utf8_length = validate.utf8_length
local b64encode, encode_string = core.b64encode, cjson.encode
local sign_req = {
  method = "POST", path = "/", body = body, region = "us-east-1", service = "kinesis",
  access_key = "AKID", secret_key = "SECRET", time = 1700000000,
  headers = { { "Host", "127.0.0.1:1" }, { "Content-Type", "application/x-amz-json-1.1" },
              { "X-Amz-Target", "Kinesis_20131202.PutRecords" }, { "User-Agent", "lua-kinesis/bench" } },
}
local signer = core.signer()
local sink = {}

-- Experiment: an encoder built once per shape (closures; member names
-- JSON-quoted once; members visited in the same sorted order as
-- kinesis.codec, so the output is byte-identical). Covers the shape types
-- PutRecords uses; anything else falls back to codec.encode's logic.
local concat, sort = table.concat, table.sort
local function compile_encoder(sname, cache)
  cache = cache or {}
  if cache[sname] then return cache[sname] end
  local shape = shapes[sname]
  local t = shape.type
  local f
  if t == "string" then
    f = function(v, buf, n) n = n + 1 buf[n] = encode_string(v) return n end
  elseif t == "blob" then
    f = function(v, buf, n)
      buf[n + 1], buf[n + 2], buf[n + 3] = '"', b64encode(v), '"'
      return n + 3
    end
  elseif t == "boolean" then
    f = function(v, buf, n) n = n + 1 buf[n] = v and "true" or "false" return n end
  elseif t == "structure" then
    local names = {}
    for name in pairs(shape.members) do names[#names + 1] = name end
    sort(names)
    local keys, encs = {}, {}
    cache[sname] = function(...) return f(...) end
    for i, name in ipairs(names) do
      keys[i] = encode_string(name) .. ":"
      encs[i] = compile_encoder(shape.members[name].target, cache)
    end
    local count = #names
    f = function(v, buf, n)
      n = n + 1
      buf[n] = "{"
      local first = true
      for i = 1, count do
        local mv = v[names[i]]
        if mv ~= nil and mv ~= cjson.null then
          n = n + 1
          buf[n] = first and keys[i] or "," .. keys[i]
          first = false
          n = encs[i](mv, buf, n)
        end
      end
      n = n + 1
      buf[n] = "}"
      return n
    end
  elseif t == "list" then
    local em = compile_encoder(shape.member, cache)
    f = function(v, buf, n)
      n = n + 1
      buf[n] = "["
      for i = 1, #v do
        if i > 1 then n = n + 1 buf[n] = "," end
        n = em(v[i], buf, n)
      end
      n = n + 1
      buf[n] = "]"
      return n
    end
  else
    f = function(v, buf, n)
      n = n + 1
      buf[n] = codec.encode(shapes, sname, v)
      return n
    end
  end
  cache[sname] = f
  return f
end
local fast_encode = compile_encoder(op.input)
local function encode_fast(v)
  local buf = {}
  local n = fast_encode(v, buf, 0)
  return concat(buf, "", 1, n)
end
-- the Lua reference writes members in sorted order, as this experiment does
assert(encode_fast(params) == require("kinesis.codec_ref").encode(shapes, op.input, params),
  "the experimental encoder must match kinesis.codec_ref byte for byte")

local pieces = {
  { "validate.input (whole stage)", function() assert(validate.input(shapes, op, params)) end },
  { "  utf8_length of the 500 partition keys (kinesis.validate, Lua loop)",
    function() for i = 1, N do utf8_length(keys[i]) end end },
  { "  the same check with utf8.len (C, Lua 5.4 only)",
    function() for i = 1, N do utf8_len(keys[i]) end end },
  { "  the same check as an ASCII fast path (string.find [\\128-\\255])",
    function() for i = 1, N do find(keys[i], "[\128-\255]") end end },
  { "  member path strings built on success (format \"%s[%d]\" + 2 joins per record)",
    function()
      for i = 1, N do
        local p = format("%s[%d]", "Records", i)
        -- kept in a table so LuaJIT cannot drop the work as dead code
        sink[i], sink[N + i] = p .. "." .. "Data", p .. "." .. "PartitionKey"
      end
    end },
  { "codec.encode (whole stage)", function() codec.encode(shapes, op.input, params) end },
  { "  b64encode of the 500 blobs (C)", function() for i = 1, N do b64encode(datas[i]) end end },
  { "  cjson.encode of 2 member names + the key, per record",
    function() for i = 1, N do encode_string("Data") encode_string("PartitionKey") encode_string(keys[i]) end end },
  { "  an encoder compiled per shape (experiment above, identical output)", function() encode_fast(params) end },
  { "signer:sign of the 92 KB body (SHA-256 of the body dominates)", function() assert(signer:sign(sign_req)) end },
  { "codec.decode of the 500-entry response (whole stage)",
    function() assert(codec.decode(shapes, op.output, resp)) end },
  { "  cjson.decode of that response alone", function() cjson.decode(resp) end },
}

local out = {}
for i, p in ipairs(pieces) do
  if p[2] and (utf8_len or not p[1]:find("utf8.len", 1, true)) then
    local _, _, _, cpu_us = common.rate(p[2], seconds, 2, 4)
    out[#out + 1] = { name = p[1], us = cpu_us }
  end
end
common.emit { pieces = out, request_bytes = #body, response_bytes = #resp }
