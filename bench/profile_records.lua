-- bench/profile_records.lua - what the Lua pipeline costs per PutRecords
-- call of 500 x 100-byte records, split into the pieces kinesis.validate
-- and kinesis.codec spend it on. Each piece is timed alone with the same
-- data, so the pieces do not add up exactly to their stage; they show which
-- function a faster version must change. No server needed.
--
--   lua5.4 bench/profile_records.lua [SECONDS]
--
-- Prints { pieces = { {name, us}, ... }, hwm_kb } (us = microseconds per
-- PutRecords call, i.e. for all 500 records).

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
        local _ = p .. "." .. "Data", p .. "." .. "PartitionKey"
      end
    end },
  { "codec.encode (whole stage)", function() codec.encode(shapes, op.input, params) end },
  { "  b64encode of the 500 blobs (C)", function() for i = 1, N do b64encode(datas[i]) end end },
  { "  cjson.encode of 2 member names + the key, per record",
    function() for i = 1, N do encode_string("Data") encode_string("PartitionKey") encode_string(keys[i]) end end },
  { "signer:sign of the 92 KB body (SHA-256 of the body dominates)", function() assert(signer:sign(sign_req)) end },
  { "codec.decode of the 500-entry response (whole stage)",
    function() assert(codec.decode(shapes, op.output, resp)) end },
  { "  cjson.decode of that response alone", function() cjson.decode(resp) end },
}

local out = {}
for i, p in ipairs(pieces) do
  if p[2] and (utf8_len or not p[1]:find("utf8.len", 1, true)) then
    local rate = common.rate(p[2], seconds, 2, 4)
    out[#out + 1] = { name = p[1], us = 1e6 / rate }
  end
end
common.emit { pieces = out, request_bytes = #body, response_bytes = #resp }
