-- kinesis.codec_ref - the reference awsJson1_1 codec in Lua, kept for the
-- differential specs and fuzzer of the C codec (kinesis.codec) and for
-- shapes tables other than the model's. Encoding walks the input shape
-- (lists always arrays, blobs base64, timestamps epoch seconds); decoding
-- runs lua-cjson, then the output shape: blobs raw bytes, integer members
-- Lua integers, JSON nulls absent.

local cjson = require "cjson"
local core = require "kinesis.core"

local b64encode, b64decode = core.b64encode, core.b64decode
local encode_string = cjson.encode
local null = cjson.null
local concat, sort, format, floor = table.concat, table.sort, string.format, math.floor
local pairs, type, tostring, error, setmetatable = pairs, type, tostring, error, setmetatable
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

-- compiled walkers, per shapes table and shape name
local encoders = setmetatable({}, { __mode = "k" })
local decoders = setmetatable({}, { __mode = "k" })

local function cache_for(caches, shapes)
  local c = caches[shapes]
  if not c then
    c = {}
    caches[shapes] = c
  end
  return c
end

---------------------------------------------------------------- encoding

-- Returns enc(v, buf, n) -> n: appends the JSON of v to buf after index n.
local function encoder(shapes, sname, cache)
  local f = cache[sname]
  if f then return f end
  local shape = shapes[sname]
  if not shape then error("kinesis.codec: unknown shape " .. tostring(sname)) end
  local t = shape.type
  if t == "string" then
    f = function(v, buf, n) buf[n + 1] = encode_string(v) return n + 1 end
  elseif t == "blob" then
    f = function(v, buf, n) buf[n + 1] = '"' .. b64encode(v) .. '"' return n + 1 end
  elseif t == "boolean" then
    f = function(v, buf, n) buf[n + 1] = v and "true" or "false" return n + 1 end
  elseif t == "integer" or t == "long" or t == "timestamp" or t == "double" then
    f = function(v, buf, n) buf[n + 1] = number_text(v) return n + 1 end
  elseif t == "structure" or t == "union" then
    -- members in a fixed (sorted) order, each with its quoted name ready
    local names = {}
    for name in pairs(shape.members) do names[#names + 1] = name end
    sort(names)
    local keys, encs = {}, {}
    cache[sname] = function(v, buf, n) return f(v, buf, n) end -- recursion guard
    for i, name in ipairs(names) do
      keys[i] = encode_string(name) .. ":"
      encs[i] = encoder(shapes, shape.members[name].target, cache)
    end
    local count = #names
    f = function(v, buf, n)
      n = n + 1
      buf[n] = "{"
      local first = true
      for i = 1, count do
        local mv = v[names[i]]
        if mv ~= nil and mv ~= null then
          n = n + 1
          buf[n] = first and keys[i] or ("," .. keys[i])
          first = false
          n = encs[i](mv, buf, n)
        end
      end
      n = n + 1
      buf[n] = "}"
      return n
    end
  elseif t == "list" then
    cache[sname] = function(v, buf, n) return f(v, buf, n) end
    local member = encoder(shapes, shape.member, cache)
    f = function(v, buf, n)
      n = n + 1
      buf[n] = "["
      for i = 1, #v do
        if i > 1 then
          n = n + 1
          buf[n] = ","
        end
        n = member(v[i], buf, n)
      end
      n = n + 1
      buf[n] = "]"
      return n
    end
  elseif t == "map" then
    cache[sname] = function(v, buf, n) return f(v, buf, n) end
    local value = encoder(shapes, shape.value, cache)
    f = function(v, buf, n)
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = k end
      sort(keys)
      n = n + 1
      buf[n] = "{"
      for i = 1, #keys do
        n = n + 1
        buf[n] = (i > 1 and "," or "") .. encode_string(keys[i]) .. ":"
        n = value(v[keys[i]], buf, n)
      end
      n = n + 1
      buf[n] = "}"
      return n
    end
  else
    error("kinesis.codec: cannot encode shape type " .. tostring(t))
  end
  cache[sname] = f
  return f
end

--- Encodes a validated input table for shape `sname`; returns the JSON text.
function M.encode(shapes, sname, v)
  if not sname then return "{}" end
  local buf = {}
  encoder(shapes, sname, cache_for(encoders, shapes))(v or {}, buf, 0)
  return concat(buf)
end

---------------------------------------------------------------- decoding

-- A decoder converts a decoded JSON value of its shape in place and returns
-- it, or nil plus a message when the value does not fit the shape.
local function decoder(shapes, sname, cache)
  local f = cache[sname]
  if f ~= nil then return f end
  local shape = shapes[sname]
  if not shape then return false end
  local t = shape.type
  if t == "string" or t == "boolean" or t == "double" then
    f = false -- nothing to do
  elseif t == "blob" then
    f = function(v)
      if type(v) ~= "string" then return nil, "expected base64 text for " .. sname end
      local raw, err = b64decode(v)
      if not raw then return nil, "invalid base64 in " .. sname .. ": " .. tostring(err) end
      return raw
    end
  elseif t == "integer" or t == "long" then
    f = function(v)
      if type(v) ~= "number" then return nil, "expected a number for " .. sname end
      return tointeger(v) or v
    end
  elseif t == "timestamp" then
    f = function(v)
      if type(v) ~= "number" then return nil, "expected epoch seconds for " .. sname end
      return v
    end
  elseif t == "structure" or t == "union" then
    cache[sname] = function(v) return f(v) end -- recursion guard
    local conv = {}
    for name, m in pairs(shape.members) do
      local c = decoder(shapes, m.target, cache)
      if c then conv[name] = c end
    end
    f = function(v)
      if type(v) ~= "table" then return nil, "expected an object for " .. sname end
      for k, x in pairs(v) do
        if x == null then
          v[k] = nil
        else
          local c = conv[k]
          if c then
            local y, err = c(x)
            if err then return nil, k .. ": " .. err end
            v[k] = y
          end
        end
      end
      return v
    end
  elseif t == "list" then
    cache[sname] = function(v) return f(v) end
    local c = decoder(shapes, shape.member, cache)
    f = function(v)
      if type(v) ~= "table" then return nil, "expected an array for " .. sname end
      local len, n = #v, 0
      for i = 1, len do
        local x = v[i]
        if x ~= null then
          if c then
            local y, err = c(x)
            if err then return nil, "[" .. i .. "]: " .. err end
            x = y
          end
          n = n + 1
          v[n] = x
        end
      end
      for i = n + 1, len do v[i] = nil end
      return v
    end
  elseif t == "map" then
    cache[sname] = function(v) return f(v) end
    local c = decoder(shapes, shape.value, cache)
    f = function(v)
      if type(v) ~= "table" then return nil, "expected an object for " .. sname end
      for k, x in pairs(v) do
        if x == null then
          v[k] = nil
        elseif c then
          local y, err = c(x)
          if err then return nil, k .. ": " .. err end
          v[k] = y
        end
      end
      return v
    end
  else
    f = false
  end
  cache[sname] = f
  return f
end

local function convert(shapes, sname, v)
  if v == null then return nil end
  local f = decoder(shapes, sname, cache_for(decoders, shapes))
  if not f then return v end
  return f(v)
end

--- Decodes a response body of shape `sname`; returns the table, or nil and
-- a message when the body is not JSON or does not fit the shape.
function M.decode(shapes, sname, body)
  if not sname then return {} end
  if body == nil or body == "" then return {} end
  local ok, v = pcall(cjson.decode, body)
  if not ok then return nil, "invalid JSON in response: " .. tostring(v) end
  local out, err = convert(shapes, sname, v)
  if err then return nil, "unexpected response shape: " .. err end
  return out or {}
end

--- Converts a JSON value already parsed by cjson (event-stream payloads).
M.convert = convert

M.null = null
return M
