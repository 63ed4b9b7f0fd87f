-- kinesis.validate - checks an operation's input against the model before
-- anything is sent: required and unknown members, types, lengths (strings in
-- code points, blobs in bytes), ranges, patterns, enums, list and map sizes,
-- 128-bit hash keys, and the rules the model states only in prose.
-- Returns true, or nil plus {path=, rule=, message=}.

local regex = require "kinesis.regex"

local byte, format, floor = string.byte, string.format, math.floor
local pairs, type, tostring = pairs, type, tostring

local M = {}

local compiled = setmetatable({}, { __mode = "k" })

-- Compiled pattern per shape, with a small memo of recent matches: a
-- producer sends the same StreamName on every call.
local function pattern_of(shape)
  local f = compiled[shape]
  if not f then
    local match, seen, n = regex.compile(shape.pattern), {}, 0
    f = function(s)
      local r = seen[s]
      if r ~= nil then return r end
      r = match(s)
      if #s <= 256 then
        if n >= 128 then seen, n = {}, 0 end
        seen[s], n = r, n + 1
      end
      return r
    end
    compiled[shape] = f
  end
  return f
end

-- number of code points in a UTF-8 string, or nil if it is not valid UTF-8
local function utf8_length(s)
  local i, n, len = 1, 0, #s
  while i <= len do
    local c = byte(s, i)
    local extra, min
    if c < 0x80 then extra, min = 0, 0
    elseif c >= 0xC2 and c <= 0xDF then extra, min = 1, 0x80
    elseif c >= 0xE0 and c <= 0xEF then extra, min = 2, 0x800
    elseif c >= 0xF0 and c <= 0xF4 then extra, min = 3, 0x10000
    else return nil end
    local cp = extra == 0 and c or (c % (2 ^ (6 - extra)))
    for k = 1, extra do
      local d = byte(s, i + k)
      if not d or d < 0x80 or d > 0xBF then return nil end
      cp = cp * 64 + (d - 0x80)
    end
    if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return nil end
    i = i + extra + 1
    n = n + 1
  end
  return n
end
-- Lua 5.3+ has a strict UTF-8 decoder in C (overlongs, surrogates and
-- code points past U+10FFFF refused): twenty times faster than the loop
if utf8 and utf8.len then
  local ulen = utf8.len
  utf8_length = function(s) return (ulen(s)) end
end
M.utf8_length = utf8_length

-- A structure's required member names in name order, so that a value
-- missing several reports the same one every time (pairs() order changes
-- from one Lua state to the next); cached per shape table.
local required_cache = setmetatable({}, { __mode = "k" })
local function required_of(shape)
  local list = required_cache[shape]
  if not list then
    list = {}
    for name, m in pairs(shape.members) do
      if m.required then list[#list + 1] = name end
    end
    table.sort(list)
    required_cache[shape] = list
  end
  return list
end

-- A failure carries the path as segments, innermost first; each level adds
-- its own on the way out, so a successful check builds no path strings.
local function fail(rule, message)
  return nil, { rule = rule, text = message, segments = {} }
end

local function add_segment(err, seg)
  local s = err.segments
  s[#s + 1] = seg
  return nil, err
end

-- "Records", "[3]", "PartitionKey" -> "Records[3].PartitionKey"
local function render(segments)
  local out = {}
  for i = #segments, 1, -1 do
    local seg = segments[i]
    if seg:sub(1, 1) == "[" or #out == 0 then out[#out + 1] = seg
    else out[#out + 1] = "." .. seg end
  end
  return table.concat(out)
end

local function is_integer(v)
  return type(v) == "number" and v == floor(v) and v > -2^63 and v < 2^63
end

-- 128-bit decimal bounds of HashKey members: the C core's checker, always
-- (the validation must not depend on which modules happen to be loaded)
local u128_check = require("kinesis.core").u128_check

local check

local function check_len(shape, n, what)
  if shape.min and n < shape.min then
    return fail("length", format("%s must be at least %d (got %d)", what, shape.min, n))
  end
  if shape.max and n > shape.max then
    return fail("length", format("%s must be at most %d (got %d)", what, shape.max, n))
  end
  return true
end

function check(shapes, sname, v)
  local shape = shapes[sname]
  local t = shape.type
  if t == "string" then
    if type(v) ~= "string" then
      return fail("type", "must be a string (got " .. type(v) .. ")")
    end
    if shape.min or shape.max then
      local n = utf8_length(v)
      if not n then return fail("utf8", "is not valid UTF-8") end
      local ok, err = check_len(shape, n, "length")
      if not ok then return nil, err end
    elseif not utf8_length(v) then
      return fail("utf8", "is not valid UTF-8")
    end
    if shape.enum then
      local found = false
      for _, e in ipairs(shape.enum) do if e == v then found = true break end end
      if not found then
        return fail("enum", format("must be one of %s (got %q)", table.concat(shape.enum, ", "), v))
      end
    end
    if shape.pattern and not pattern_of(shape)(v) then
      return fail("pattern", format("does not match the pattern %s", shape.pattern))
    end
    if sname == "HashKey" then
      local ok, why = u128_check(v)
      if not ok then return fail("range", "is not a 128-bit hash key: " .. tostring(why)) end
    end
    return true
  elseif t == "structure" or t == "union" then
    if type(v) ~= "table" then
      return fail("type", "must be a table (got " .. type(v) .. ")")
    end
    local members = shape.members
    local count = 0
    for k, x in pairs(v) do
      local m = members[k]
      if not m then
        return add_segment(select(2, fail("unknown", "is not a member of " .. sname)), tostring(k))
      end
      count = count + 1
      local ok, err = check(shapes, m.target, x)
      if not ok then return add_segment(err, k) end
    end
    for _, name in ipairs(required_of(shape)) do
      if v[name] == nil then
        return add_segment(select(2, fail("required", "is required")), name)
      end
    end
    if t == "union" and count ~= 1 then
      return fail("union", "must set exactly one member")
    end
    return true
  elseif t == "list" then
    if type(v) ~= "table" then
      return fail("type", "must be a list (got " .. type(v) .. ")")
    end
    local n = #v
    for k in pairs(v) do
      if type(k) ~= "number" or k < 1 or k > n or k ~= floor(k) then
        return fail("type", "must be a list (a table with keys 1..n)")
      end
    end
    local ok, err = check_len(shape, n, "number of items")
    if not ok then return nil, err end
    local member = shape.member
    for i = 1, n do
      ok, err = check(shapes, member, v[i])
      if not ok then return add_segment(err, format("[%d]", i)) end
    end
    return true
  elseif t == "map" then
    if type(v) ~= "table" then
      return fail("type", "must be a table (got " .. type(v) .. ")")
    end
    local n = 0
    for k, x in pairs(v) do
      n = n + 1
      local ok, err = check(shapes, shape.key, k)
      if ok then ok, err = check(shapes, shape.value, x) end
      if not ok then return add_segment(err, format("[%q]", tostring(k))) end
    end
    return check_len(shape, n, "number of entries")
  elseif t == "blob" then
    if type(v) ~= "string" then
      return fail("type", "must be a string of bytes (got " .. type(v) .. ")")
    end
    return check_len(shape, #v, "size in bytes")
  elseif t == "boolean" then
    if type(v) ~= "boolean" then
      return fail("type", "must be a boolean (got " .. type(v) .. ")")
    end
    return true
  elseif t == "integer" or t == "long" then
    if not is_integer(v) then
      return fail("type", "must be an integer (got " .. tostring(v) .. ")")
    end
    if t == "integer" and (v < -2^31 or v >= 2^31) then
      return fail("range", "must fit in 32 bits")
    end
    if shape.min and v < shape.min then
      return fail("range", format("must be at least %d (got %d)", shape.min, v))
    end
    if shape.max and v > shape.max then
      return fail("range", format("must be at most %d (got %d)", shape.max, v))
    end
    return true
  elseif t == "timestamp" then
    if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then
      return fail("type", "must be a number of seconds since the epoch")
    end
    return true
  elseif t == "double" then
    if type(v) ~= "number" then return fail("type", "must be a number") end
    return true
  end
  return fail("type", "has an unsupported shape type " .. tostring(t))
end

-- Rules the API reference states in prose (not in the model's traits).
local function prose_rules(op, params, shapes)
  local input = shapes[op.input]
  local m = input.members
  if m.StreamName and m.StreamARN and not m.StreamName.required and not m.StreamARN.required then
    -- "you must use either the StreamARN or the StreamName parameter, or both";
    -- ListShards continues a listing from NextToken alone
    local paged = op.paginator and params[op.paginator.input_token] ~= nil
      and op.paginator.input_token == "NextToken"
    if params.StreamName == nil and params.StreamARN == nil and not paged then
      return M.error("StreamName", "required", "StreamName or StreamARN is required")
    end
  end
  if op.name == "ListShards" or op.name == "ListStreamConsumers" then
    -- NextToken carries the stream: the service rejects both together
    if params.NextToken ~= nil then
      for _, k in ipairs { "StreamName", "StreamARN", "StreamCreationTimestamp" } do
        if params[k] ~= nil and not (op.name == "ListStreamConsumers" and k == "StreamARN") then
          return M.error(k, "conflict", "must not be given together with NextToken")
        end
      end
    end
  end
  if m.ConsumerARN and m.ConsumerName and m.StreamARN then
    -- DescribeStreamConsumer / DeregisterStreamConsumer
    if params.ConsumerARN == nil and (params.StreamARN == nil or params.ConsumerName == nil) then
      return M.error("ConsumerARN", "required", "ConsumerARN, or StreamARN and ConsumerName, is required")
    end
  end
  return true
end

--- The validation failure: { path =, rule =, message = "path: text" }.
function M.error(path, rule, text)
  return nil, { path = path, rule = rule, message = format("%s: %s", path, text) }
end

--- Validates `params` for operation table `op`; true or nil, err.
function M.input(shapes, op, params)
  if not op.input then
    if params ~= nil and next(params) ~= nil then
      return M.error(op.name, "unknown", "takes no parameters")
    end
    return true
  end
  local ok, err = check(shapes, op.input, params or {})
  if not ok then
    local path = #err.segments > 0 and render(err.segments) or op.name
    return M.error(path, err.rule, err.text)
  end
  return prose_rules(op, params or {}, shapes)
end

M.check = check
-- the prose rules alone (kinesis.codec runs them after its C pass)
M.prose = prose_rules
return M
