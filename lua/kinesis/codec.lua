-- kinesis.codec - awsJson1_1 bodies driven by the model's shapes.
-- Encoding walks the input shape so lists are always JSON arrays (even
-- empty), blobs are base64 (in C), booleans stay booleans and timestamps are
-- epoch seconds. Decoding runs lua-cjson, then walks the output shape: blobs
-- become raw bytes, integer members Lua integers, and JSON nulls disappear.

local cjson = require "cjson"
local core = require "kinesis.core"

local b64encode, b64decode = core.b64encode, core.b64decode
local encode_string = cjson.encode
local null = cjson.null
local concat, sort, format, floor = table.concat, table.sort, string.format, math.floor
local pairs, ipairs, type, tostring = pairs, ipairs, type, tostring
local tointeger = math.tointeger or function(x)
  -- Lua 5.1/LuaJIT: numbers are doubles; integral values are already exact
  if x == floor(x) then return x end
end

local M = {}

local function number_text(v)
  if v == floor(v) and v > -2^63 and v < 2^63 then
    return format("%d", v)
  end
  -- timestamps with a fraction: millisecond precision is what Kinesis keeps
  local s = format("%.6f", v):gsub("0+$", "")
  return s
end

-- encode value `v` of shape `sname` into buffer `buf`
local function enc(shapes, sname, v, buf)
  local shape = shapes[sname]
  local t = shape.type
  if t == "string" then
    buf[#buf + 1] = encode_string(v)
  elseif t == "structure" or t == "union" then
    buf[#buf + 1] = "{"
    local members, first = shape.members, true
    local names = shape.order
    if not names then
      -- member names in a fixed order, computed once per shape
      names = {}
      for name in pairs(members) do names[#names + 1] = name end
      sort(names)
      shape.order = names
    end
    for i = 1, #names do
      local name = names[i]
      local m = members[name]
      local mv = v[name]
      if mv ~= nil and mv ~= null then
        if not first then buf[#buf + 1] = "," end
        first = false
        buf[#buf + 1] = encode_string(name)
        buf[#buf + 1] = ":"
        enc(shapes, m.target, mv, buf)
      end
    end
    buf[#buf + 1] = "}"
  elseif t == "list" then
    buf[#buf + 1] = "["
    local member = shape.member
    for i = 1, #v do
      if i > 1 then buf[#buf + 1] = "," end
      enc(shapes, member, v[i], buf)
    end
    buf[#buf + 1] = "]"
  elseif t == "map" then
    buf[#buf + 1] = "{"
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    sort(keys)
    for i, k in ipairs(keys) do
      if i > 1 then buf[#buf + 1] = "," end
      buf[#buf + 1] = encode_string(k)
      buf[#buf + 1] = ":"
      enc(shapes, shape.value, v[k], buf)
    end
    buf[#buf + 1] = "}"
  elseif t == "blob" then
    buf[#buf + 1] = '"' .. b64encode(v) .. '"'
  elseif t == "boolean" then
    buf[#buf + 1] = v and "true" or "false"
  elseif t == "integer" or t == "long" or t == "timestamp" or t == "double" then
    buf[#buf + 1] = number_text(v)
  else
    error("kinesis.codec: cannot encode shape type " .. tostring(t))
  end
end

--- Encodes a validated input table for shape `sname`; returns the JSON text.
function M.encode(shapes, sname, v)
  if not sname then return "{}" end
  local buf = {}
  enc(shapes, sname, v or {}, buf)
  return concat(buf)
end

-- convert a decoded JSON value of shape `sname`; returns the value, or
-- nil plus a message for a value that does not fit the shape
local function dec(shapes, sname, v)
  if v == null then return nil end
  local shape = shapes[sname]
  if not shape then return v end
  local t = shape.type
  if t == "structure" or t == "union" then
    if type(v) ~= "table" then return nil, "expected an object for " .. sname end
    local members = shape.members
    for k, x in pairs(v) do
      local m = members[k]
      if x == null then
        v[k] = nil
      elseif m then
        local y, err = dec(shapes, m.target, x)
        if err then return nil, k .. ": " .. err end
        v[k] = y
      end
    end
    return v
  elseif t == "list" then
    if type(v) ~= "table" then return nil, "expected an array for " .. sname end
    local member, out, n = shape.member, v, 0
    local len = #v
    for i = 1, len do
      local x = v[i]
      if x ~= null then
        local y, err = dec(shapes, member, x)
        if err then return nil, "[" .. i .. "]: " .. err end
        n = n + 1
        out[n] = y
      end
    end
    for i = n + 1, len do out[i] = nil end
    return out
  elseif t == "map" then
    if type(v) ~= "table" then return nil, "expected an object for " .. sname end
    for k, x in pairs(v) do
      if x == null then v[k] = nil else
        local y, err = dec(shapes, shape.value, x)
        if err then return nil, k .. ": " .. err end
        v[k] = y
      end
    end
    return v
  elseif t == "blob" then
    if type(v) ~= "string" then return nil, "expected base64 text for " .. sname end
    local raw, err = b64decode(v)
    if not raw then return nil, "invalid base64 in " .. sname .. ": " .. tostring(err) end
    return raw
  elseif t == "integer" or t == "long" then
    if type(v) ~= "number" then return nil, "expected a number for " .. sname end
    return tointeger(v) or v
  elseif t == "timestamp" then
    if type(v) ~= "number" then return nil, "expected epoch seconds for " .. sname end
    return v
  end
  return v
end

--- Decodes a response body of shape `sname`; returns the table, or nil and
-- a message when the body is not JSON or does not fit the shape.
function M.decode(shapes, sname, body)
  if not sname then return {} end
  if body == nil or body == "" then return {} end
  local ok, v = pcall(cjson.decode, body)
  if not ok then return nil, "invalid JSON in response: " .. tostring(v) end
  local out, err = dec(shapes, sname, v)
  if err then return nil, "unexpected response shape: " .. err end
  return out or {}
end

--- Decodes a JSON value already parsed by cjson (event-stream payloads).
function M.convert(shapes, sname, v)
  return dec(shapes, sname, v)
end

M.null = null
return M
