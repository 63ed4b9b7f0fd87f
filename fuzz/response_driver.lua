-- response_driver.lua - the Lua half of fuzz/fuzz_response.c: one fuzz
-- input is one HTTP response handed to the client's response path
-- (status -> error model, or shape-aware JSON -> Lua tables), and the
-- answer is checked against the promises of DESIGN.md. A broken promise
-- raises; the C harness turns that into an abort with the message.
--
-- Input: "<Operation> <status>\n<Header: value\n>...\n<body>"
--    or: "event <ShapeName>\n\n<payload>"  (an event-stream payload, decoded
--        the way kinesis.subscribe does: cjson, then codec.convert)
--    or: "stream\n\n<bytes>"  (a SubscribeToShard body for the Lua binding
--        of the event-stream decoder)
-- Inputs that do not follow this grammar are ignored.
--
-- Operations with simple valid parameters go through client:call (validate,
-- encode, sign, send, decode); the others through client:send with a
-- dummy request, which is the same response path. Decoded ListShards and
-- DescribeStream answers are built into shard maps; decoded records are
-- de-aggregated (KPL): neither may raise on data a server sent. Paginated
-- operations are also paged against a server that repeats the answer: the
-- iteration must end.
local kinesis = require "kinesis"
local client_mod = require "kinesis.client"
local codec = require "kinesis.codec"
local errors = require "kinesis.errors"
local model = require "kinesis.model"
local cjson = require "cjson"
local paging = require "kinesis.paging"

local shapes = model.shapes
local mtype = math.type
local KINDS = { aws = true, protocol = true, transport = true, validation = true }

local current = { status = 200, headers = {}, body = "" }
local transport = {
  send = function(_, _req)
    return { status = current.status, headers = current.headers, body = current.body,
             request_id = current.headers["x-amzn-requestid"] }
  end,
}

local client = assert(kinesis.new {
  region = "us-east-1", endpoint = "http://127.0.0.1:9",
  credentials = { access_key_id = "AKIDFUZZ", secret_access_key = "fuzz-secret" },
  transport = transport, retry = { mode = "off" },
})

local CALL_PARAMS = {
  ListStreams = {},
  ListShards = { StreamName = "s" },
  DescribeStream = { StreamName = "s" },
  DescribeStreamSummary = { StreamName = "s" },
  GetRecords = { ShardIterator = "AAAAAAAAAAAA" },
  GetShardIterator = { StreamName = "s", ShardId = "shardId-000000000000", ShardIteratorType = "TRIM_HORIZON" },
  PutRecord = { StreamName = "s", PartitionKey = "k", Data = "\0\1\2" },
  PutRecords = { StreamName = "s", Records = { { PartitionKey = "k", Data = "x" } } },
}

local function fail(fmt, ...)
  error(string.format(fmt, ...), 0)
end

-- The documented data conventions of a decoded value of shape `sname`.
local function conform(sname, v, path, depth)
  if depth > 64 then return end
  local shape = shapes[sname]
  if not shape then return end
  local t = shape.type
  if t == "blob" then
    if type(v) ~= "string" then fail("%s: blob is a %s", path, type(v)) end
  elseif t == "integer" or t == "long" then
    -- "Integer members come back as Lua integers (24, not 24.0)"
    if type(v) ~= "number" then fail("%s: integer is a %s", path, type(v)) end
    if v == math.floor(v) and v > -2^53 and v < 2^53 and mtype(v) ~= "integer" then
      fail("%s: integral value %s came back as a float", path, tostring(v))
    end
  elseif t == "timestamp" then
    if type(v) ~= "number" then fail("%s: timestamp is a %s", path, type(v)) end
  elseif t == "structure" or t == "union" then
    if type(v) ~= "table" then fail("%s: structure is a %s", path, type(v)) end
    for k, x in pairs(v) do
      if x == cjson.null then fail("%s.%s: JSON null left in the result", path, tostring(k)) end
      local m = shape.members[k]
      if m then conform(m.target, x, path .. "." .. k, depth + 1) end
    end
  elseif t == "list" then
    if type(v) ~= "table" then fail("%s: list is a %s", path, type(v)) end
    for i = 1, #v do
      if v[i] == cjson.null or v[i] == nil then fail("%s[%d]: hole or null in a list", path, i) end
      conform(shape.member, v[i], path .. "[" .. i .. "]", depth + 1)
    end
  elseif t == "map" then
    if type(v) ~= "table" then fail("%s: map is a %s", path, type(v)) end
    for k, x in pairs(v) do
      if x == cjson.null then fail("%s[%s]: JSON null left in a map", path, tostring(k)) end
      conform(shape.value, x, path .. "[" .. tostring(k) .. "]", depth + 1)
    end
  end
end

local function check_error(err, status, opname)
  if not errors.is_error(err) then fail("%s: error is not a kinesis.error (%s)", opname, tostring(err)) end
  if not KINDS[err.kind] then fail("%s: error kind %s", opname, tostring(err.kind)) end
  if type(err.code) ~= "string" or err.code == "" then fail("%s: error without a code", opname) end
  if type(err.message) ~= "string" then fail("%s: error message is a %s", opname, type(err.message)) end
  if type(err.retryable) ~= "boolean" then fail("%s: retryable is a %s", opname, type(err.retryable)) end
  local s = tostring(err)
  if type(s) ~= "string" or s == "" then fail("%s: tostring(err) is empty", opname) end
  if status >= 200 and status < 300 then
    if err.kind == "aws" then fail("%s: a %d answer became an aws error", opname, status) end
  elseif err.kind ~= "aws" then
    fail("%s: a %d answer became a %s error", opname, status, err.kind)
  elseif err.status ~= status then
    fail("%s: error status %s for a %d answer", opname, tostring(err.status), status)
  end
end

-- A shard map built from decoded shards must route every key inside the
-- range of the shard it returns.
local function check_shard_map(shards)
  if type(shards) ~= "table" then return end
  local map, err = kinesis.shard_map(shards, { include_closed = true })
  if not map then
    if type(err) ~= "table" or type(err.code) ~= "string" or type(err.message) ~= "string" then
      fail("shard_map: error is not a {code, message} table: %s", type(err))
    end
    return
  end
  for _, pk in ipairs { "", "a", "partition-key", "\0\255" } do
    local shard = map:lookup(pk)
    local hk = kinesis.hash_key(pk)
    local r = shard.HashKeyRange
    local function le(a, b) return #a < #b or (#a == #b and a <= b) end
    if not (le(r.StartingHashKey, hk) and le(hk, r.EndingHashKey)) then
      fail("shard_map: key %s routed to %s outside its range", hk, tostring(shard.ShardId))
    end
  end
end

local function check_records(records)
  if type(records) ~= "table" then return end
  for i = 1, math.min(#records, 16) do
    local r = records[i]
    if type(r) == "table" and type(r.Data) == "string" and type(r.PartitionKey) == "string"
       and (r.SequenceNumber == nil or type(r.SequenceNumber) == "string") then
      local users, err = kinesis.deaggregate(r)
      if users == nil then
        if not errors.is_error(err) and type(err) ~= "string" then
          fail("deaggregate: error is a %s", type(err))
        end
      elseif type(users) ~= "table" or #users == 0 then
        fail("deaggregate returned no user records")
      end
    end
  end
end

local function parse(input)
  local nl = input:find("\n", 1, true)
  if not nl then return nil end
  local first, rest = input:sub(1, nl - 1), input:sub(nl + 1)
  local head, body
  if rest:sub(1, 1) == "\n" then
    head, body = "", rest:sub(2)
  else
    local sep = rest:find("\n\n", 1, true)
    if not sep then return nil end
    head, body = rest:sub(1, sep - 1), rest:sub(sep + 2)
  end
  local headers = {}
  for line in head:gmatch("[^\n]+") do
    local name, value = line:match("^([^:]+):[ \t]*(.*)$")
    if name then
      name = name:lower()
      headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
    end
  end
  return first, headers, body
end

local function one_event(sname, payload)
  if not shapes[sname] then return end
  local ok, doc = pcall(cjson.decode, payload)
  if not ok or type(doc) ~= "table" then return end
  local event, err = codec.convert(shapes, sname, doc)
  if event == nil then
    if type(err) ~= "string" then fail("convert %s: no event and no message", sname) end
    return
  end
  conform(sname, event, sname, 0)
  if sname == "SubscribeToShardEvent" then check_records(event.Records) end
end

-- The event-stream decoder through its Lua binding (core.es_decoder, whose
-- buffers are Lua userdata lent to the C decoder), as kinesis.subscribe
-- drives it: fed whole and fed in pieces, it must give the same messages
-- and the same end; each message re-encodes (core.es_encode) to one that
-- decodes to the same headers and payload; events decode like subscribe's.
local core = require "kinesis.core"

local function es_run(pieces, max)
  local d = core.es_decoder(max)
  local msgs, status = {}, nil
  for _, piece in ipairs(pieces) do
    local ok, ferr = d:feed(piece)
    if not ok then status = ferr.code break end
    while true do
      local m, nerr = d:next()
      if m == nil then
        if nerr then status = nerr.code end
        break
      end
      msgs[#msgs + 1] = m
    end
    if status then break end
  end
  if not status then
    local ok, ferr = d:finish()
    status = ok and "ok" or ferr.code
  end
  d:close()
  return msgs, status
end

local function same_message(a, b, what)
  if a.payload ~= b.payload then fail("%s: payloads differ", what) end
  for k, v in pairs(a.headers) do
    if b.headers[k] ~= v or b.types[k] ~= a.types[k] then fail("%s: header %q differs", what, k) end
  end
  for k in pairs(b.headers) do
    if a.headers[k] == nil then fail("%s: header %q appeared", what, k) end
  end
end

local function one_stream(bytes)
  local whole, wstatus = es_run { bytes }
  local pieces, at, seed = {}, 1, #bytes
  while at <= #bytes do
    seed = (seed * 1103515245 + 12345) % 2147483648
    local n = seed % 4 == 0 and seed % 4096 + 1 or seed % 13 + 1
    pieces[#pieces + 1] = bytes:sub(at, at + n - 1)
    at = at + n
  end
  local chunked, cstatus = es_run(pieces)
  if #whole ~= #chunked or wstatus ~= cstatus then
    fail("es_decoder: whole gives %d messages and %s, pieces %d and %s", #whole, wstatus, #chunked, cstatus)
  end
  for i, m in ipairs(whole) do
    same_message(m, chunked[i], "message " .. i .. " fed in pieces")
    local list = {}
    for name, value in pairs(m.headers) do list[#list + 1] = { name = name, type = m.types[name], value = value } end
    local again = es_run { core.es_encode(list, m.payload) }
    if #again ~= 1 then fail("message %d does not survive re-encoding", i) end
    same_message(m, again[1], "message " .. i .. " re-encoded")
    local etype = m.headers[":message-type"] == "event" and m.headers[":event-type"]
    if type(etype) == "string" and shapes[etype] then one_event(etype, m.payload) end
  end
end

return function(input)
  local first, headers, body = parse(input)
  if not first then return end
  if first == "stream" then return one_stream(body) end
  local ev = first:match("^event ([%w]+)$")
  if ev then return one_event(ev, body) end
  local opname, status = first:match("^(%w+) (%d%d%d)$")
  local op = opname and client_mod.operations[opname]
  if not op or op.name ~= opname then return end
  status = tonumber(status)
  current.status, current.headers, current.body = status, headers, body

  local out, err
  if CALL_PARAMS[opname] then
    out, err = client:call(opname, CALL_PARAMS[opname])
  else
    out, err = client:send(op, { method = "POST", url = "http://127.0.0.1:9/", headers = {}, body = "{}" })
  end
  if out == nil then
    check_error(err, status, opname)
    return
  end
  if err ~= nil then fail("%s: both a result and an error", opname) end
  if type(out) ~= "table" then fail("%s: result is a %s", opname, type(out)) end
  if status < 200 or status >= 300 then fail("%s: a %d answer gave a result", opname, status) end
  if op.output then conform(op.output, out, opname, 0) end
  if opname == "ListShards" then check_shard_map(out.Shards) end
  if opname == "DescribeStream" and type(out.StreamDescription) == "table" then
    check_shard_map(out.StreamDescription.Shards)
  end
  if opname == "GetRecords" then check_records(out.Records) end

  -- paging over a server that gives this same answer every time must end
  -- (a repeated token is an error, not a loop)
  if paging.paginator(op) and CALL_PARAMS[opname] then
    local n = 0
    for page, perr in client:pages(opname, CALL_PARAMS[opname]) do
      n = n + 1
      if n > 20 then fail("%s: paging never ends when the server repeats its answer", opname) end
      if page == false then
        check_error(perr, 200, opname)
        break
      end
    end
  end
end
