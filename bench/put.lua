-- bench/put.lua - PutRecord / PutRecords end to end (validate, JSON, sign,
-- send, parse) over one keep-alive connection to the nginx stub.
--
--   lua5.4 bench/put.lua dump    KIND PORT DIR   -- writes DIR/KIND.{url,headers,body}:
--                                                   the signed request for bench/floor.c
--   lua5.4 bench/put.lua run     KIND PORT SECONDS
--   lua5.4 bench/put.lua send    KIND PORT SECONDS   -- transport:send of one pre-signed request
--   lua5.4 bench/put.lua logging KIND PORT SECONDS   -- logging off vs on (a no-op log function)
--   lua5.4 bench/put.lua profile KIND PORT SECONDS
--
-- KIND is put_record (one 100-byte record) or put_records (500 of them).
-- run and send print { rate, calls, seconds, connects, cpu_us, hwm_kb }; profile times each
-- stage of the pipeline on its own (same functions the client calls, in the
-- same order) and prints microseconds per call for each.

local common = require "common"
local client_mod = require "kinesis.client"
local codec = require "kinesis.codec"
local validate = require "kinesis.validate"
local model = require "kinesis.model"

local mode, kind, port = arg[1], arg[2], arg[3]
local params
if kind == "put_record" then
  params = common.put_record_params()
elseif kind == "put_records" then
  params = common.put_records_params()
else
  error("unknown kind " .. tostring(kind))
end
local op = client_mod.operations[kind]
local client = common.client(port)

local function check(out, err)
  if not out then error("bench call failed: " .. tostring(err)) end
  return out
end

if mode == "dump" then
  local dir = arg[4]
  local body = codec.encode(model.shapes, op.input, params)
  local req = assert(client:build_request(op, body))
  local function write(name, s)
    local f = assert(io.open(dir .. "/" .. kind .. "." .. name, "wb"))
    f:write(s)
    f:close()
  end
  local lines = {}
  for _, h in ipairs(req.headers) do lines[#lines + 1] = h[1] .. ": " .. h[2] end
  write("url", req.url)
  write("headers", table.concat(lines, "\n") .. "\n")
  write("body", req.body)
  -- one real call, so a broken stub shows up here and not as a fast floor
  check(client[kind](client, params))
  common.emit { url = req.url, body_bytes = #req.body }

elseif mode == "run" then
  local seconds = tonumber(arg[4]) or 1
  local call = client[kind]
  local batch = kind == "put_records" and 2 or 16
  local rate, calls, elapsed, cpu_us = common.rate(function() check(call(client, params)) end, seconds, batch, batch * 4)
  local stats = client:transport():stats()
  common.emit { rate = rate, calls = calls, seconds = elapsed, connects = stats.connects, cpu_us = cpu_us }

elseif mode == "logging" then
  -- logging's cost: the same calls with logging off and with a log
  -- function that drops every event (off, on, on, off in one process), and
  -- what "off" leaves on the path: the client's logger-field tests of one
  -- attempt (7), timed alone against an empty loop
  local seconds = (tonumber(arg[4]) or 1) / 4
  local call = client[kind]
  local logged = common.client(port, { log = function() end })
  local batch = kind == "put_records" and 2 or 16
  local off, on = 0, 0
  for _, which in ipairs { "off", "on", "on", "off" } do
    local c = which == "off" and client or logged
    local rate = common.rate(function() check(call(c, params)) end, seconds, batch, batch)
    if which == "off" then off = off + rate / 2 else on = on + rate / 2 end
  end
  local n, clock = 2000000, os.clock
  local c0 = clock()
  for _ = 1, n do end
  local empty = clock() - c0
  c0 = clock()
  local t = client
  for _ = 1, n do
    if t.logger then end
    if t.logger then end
    if t.logger then end
    if t.logger then end
    if t.logger then end
    if t.logger then end
    if t.logger then end
  end
  local tests_ns = math.max(0, (clock() - c0 - empty)) * 1e9 / n
  common.emit { off_rate = off, on_rate = on, tests_ns = tests_ns, call_ns = 1e9 / off }

elseif mode == "send" then
  -- the transport alone: the pre-built, pre-signed request through
  -- transport:send (binding + transport.c + response table), no Lua
  -- pipeline; between the floor and the end-to-end figure
  local seconds = tonumber(arg[4]) or 1
  local transport = client:transport()
  local body = codec.encode(model.shapes, op.input, params)
  local req = assert(client:build_request(op, body))
  local batch = kind == "put_records" and 2 or 16
  local rate, calls, elapsed, cpu_us = common.rate(function()
    local resp = assert(transport:send(req))
    if resp.status ~= 200 then error("HTTP " .. resp.status) end
  end, seconds, batch, batch * 4)
  common.emit { rate = rate, calls = calls, seconds = elapsed, connects = transport:stats().connects, cpu_us = cpu_us }

elseif mode == "profile" then
  -- Each stage n times in a row, stage by stage; the sum is compared with
  -- the end-to-end time per call measured right after.
  local seconds = tonumber(arg[4]) or 0.3
  local shapes = model.shapes
  local transport = client:transport()
  local body = codec.encode(shapes, op.input, params)
  local req = assert(client:build_request(op, body))
  local resp = assert(transport:send(req))
  local stages = {
    { "validate", function() assert(validate.input(shapes, op, params)) end },
    { "encode (JSON + base64)", function() codec.encode(shapes, op.input, params) end },
    { "build + sign", function() assert(client:build_request(op, body)) end },
    { "send (transport:send)", function() assert(transport:send(req)) end },
    { "decode response", function() assert(codec.decode(shapes, op.output, resp.body)) end },
  }
  local out = { stages = {} }
  local sum = 0
  for _, s in ipairs(stages) do
    local rate = common.rate(s[2], seconds, 4, 8)
    local us = 1e6 / rate
    sum = sum + us
    out.stages[#out.stages + 1] = { name = s[1], us = us }
  end
  local call = client[kind]
  local rate = common.rate(function() check(call(client, params)) end, seconds, 4, 8)
  out.sum_us = sum
  out.end_to_end_us = 1e6 / rate
  -- the whole pipeline with an in-memory transport returning the same
  -- response: the client's own CPU cost per call, without the network
  local canned = { status = resp.status, headers = resp.headers, body = resp.body }
  local mem = common.client(port, { transport = { send = function() return canned end } })
  local mcall = mem[kind]
  local _, _, _, cpu_us = common.rate(function() check(mcall(mem, params)) end, seconds, 4, 8)
  out.in_memory_cpu_us = cpu_us
  local signer = require("kinesis.core").signer()
  local sreq = {
    method = "POST", path = client.endpoint.path, body = body, region = "us-east-1", service = "kinesis",
    access_key = "AKID", secret_key = "SECRET", time = 1700000000, headers = {},
  }
  for i = 1, 4 do sreq.headers[i] = req.headers[i] end
  local _, _, _, sign_us = common.rate(function() assert(signer:sign(sreq)) end, seconds, 4, 8)
  out.sign_cpu_us = sign_us
  out.body_bytes = #body
  out.response_bytes = #resp.body
  common.emit(out)
else
  error("usage: put.lua dump|run|send|profile KIND PORT ...")
end
