-- bench/sign.lua - SigV4 signatures per second through the binding
-- (signer:sign, the call client:build_request makes), for a payload of SIZE
-- bytes, with the same headers a PutRecord carries. The signing key is
-- cached per day/region/service, as in the client. bench/sha_floor.c is the
-- baseline (OpenSSL SHA-256 of the payload alone).
--
--   lua5.4 bench/sign.lua SIZE SECONDS
--
-- Prints { size, rate, calls, seconds, sha256_hex_rate (core.sha256_hex of
-- the payload through the binding, for reference), hwm_kb }.

local common = require "common"
local core = require "kinesis.core"

local size, seconds = tonumber(arg[1]), tonumber(arg[2]) or 0.5
local payload = common.bytes(math.min(size, 4096), 7)
if size > #payload then payload = payload:rep(math.ceil(size / #payload)):sub(1, size) end
assert(#payload == size)

local signer = core.signer()
local headers = {
  { "Host", "kinesis.us-east-1.amazonaws.com" },
  { "Content-Type", "application/x-amz-json-1.1" },
  { "X-Amz-Target", "Kinesis_20131202.PutRecord" },
  { "User-Agent", "lua-kinesis/bench" },
}
local req = {
  method = "POST", path = "/", headers = headers, body = payload,
  region = "us-east-1", service = "kinesis", access_key = "AKID", secret_key = "SECRET",
  time = 1700000000,
}
local sign = signer.sign
assert(sign(signer, req).headers)
local batch = size >= 65536 and 1 or 64
local rate, calls, elapsed = common.rate(function() sign(signer, req) end, seconds, batch, batch)
local sha256_hex = core.sha256_hex
local hrate = common.rate(function() sha256_hex(payload) end, seconds / 2, batch, batch)
common.emit { size = size, rate = rate, calls = calls, seconds = elapsed, sha256_hex_rate = hrate }
