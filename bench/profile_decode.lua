-- bench/profile_decode.lua - where GetRecords decoding spends its time, and
-- what other shape walks would save. kinesis.codec now compiles one closure
-- per shape (string members cost a table lookup, not a call); the
-- "compiled" variant here is that walk rebuilt standalone, kept as the
-- reference the two further experiments are measured against: "inline"
-- converts blob, integer and timestamp members inside the structure loop,
-- "direct" also reads members by name instead of pairs(). Same results
-- (checked on the whole body); experiments for the report, not used by lua/.
--
--   lua5.4 bench/profile_decode.lua [REPS]
--
-- Prints { cjson_ms, codec_walk_ms, compiled_walk_ms, inline_walk_ms,
-- direct_walk_ms, hwm_kb }: compiled = one closure per shape; inline = the
-- same, with blob, integer and timestamp members converted inside the
-- structure loop (no call); direct = inline, reading the members by name
-- instead of pairs() (a JSON null under an unknown name then survives).

local common = require "common"
local cjson = require "cjson"
local codec = require "kinesis.codec"
local model = require "kinesis.model"
local core = require "kinesis.core"

local reps = tonumber(arg[1]) or 5
local null = cjson.null
local b64decode = core.b64decode
local tointeger = math.tointeger or function(x)
  -- LuaJIT: numbers are doubles (as in kinesis.codec)
  if x == math.floor(x) then return x end
end
local pairs, type, tostring = pairs, type, tostring

-- markers for leaf members converted inline by the "inline" variant
local BLOB, INT, TIME = 1, 2, 3
local INLINE, DIRECT = false, false

local function compile(shapes, sname, cache)
  local c = cache[sname]
  if c ~= nil then return c end
  local shape = shapes[sname]
  if not shape then cache[sname] = false return false end
  local t = shape.type
  local f
  if t == "structure" or t == "union" then
    local conv = {}
    cache[sname] = function(v) return f(v) end -- for recursive shapes
    for name, m in pairs(shape.members) do
      local mt = shapes[m.target] and shapes[m.target].type
      if INLINE and mt == "blob" then conv[name] = BLOB
      elseif INLINE and (mt == "integer" or mt == "long") then conv[name] = INT
      elseif INLINE and mt == "timestamp" then conv[name] = TIME
      else conv[name] = compile(shapes, m.target, cache) end
    end
    f = function(v)
      if type(v) ~= "table" then return nil, "expected an object for " .. sname end
      for k, x in pairs(v) do
        if x == null then
          v[k] = nil
        else
          local cv = conv[k]
          if cv then
            -- leaves are converted inline (no call); containers recurse
            local y, err
            if cv == BLOB then
              if type(x) ~= "string" then return nil, k .. ": expected base64 text" end
              y, err = b64decode(x)
              if not y then return nil, k .. ": invalid base64: " .. tostring(err) end
            elseif cv == INT then
              if type(x) ~= "number" then return nil, k .. ": expected a number" end
              y = tointeger(x) or x
            elseif cv == TIME then
              if type(x) ~= "number" then return nil, k .. ": expected epoch seconds" end
              y = x
            else
              y, err = cv(x)
              if err then return nil, k .. ": " .. err end
            end
            v[k] = y
          end
        end
      end
      return v
    end
    if DIRECT then
      -- members read by name from the shape's list: no pairs(); a JSON null
      -- under a name the model does not know stays (the one difference)
      local names, convs, n = {}, {}, 0
      for name in pairs(shape.members) do
        n = n + 1
        names[n], convs[n] = name, conv[name]
      end
      f = function(v)
        if type(v) ~= "table" then return nil, "expected an object for " .. sname end
        for i = 1, n do
          local k = names[i]
          local x = v[k]
          if x ~= nil then
            if x == null then
              v[k] = nil
            else
              local cv = convs[i]
              if cv then
                local y, err
                if cv == BLOB then
                  if type(x) ~= "string" then return nil, k .. ": expected base64 text" end
                  y, err = b64decode(x)
                  if not y then return nil, k .. ": invalid base64: " .. tostring(err) end
                elseif cv == INT then
                  if type(x) ~= "number" then return nil, k .. ": expected a number" end
                  y = tointeger(x) or x
                elseif cv == TIME then
                  if type(x) ~= "number" then return nil, k .. ": expected epoch seconds" end
                  y = x
                else
                  y, err = cv(x)
                  if err then return nil, k .. ": " .. err end
                end
                v[k] = y
              end
            end
          end
        end
        return v
      end
    end
  elseif t == "list" then
    local cm = compile(shapes, shape.member, cache)
    f = function(v)
      if type(v) ~= "table" then return nil, "expected an array for " .. sname end
      local n, len = 0, #v
      for i = 1, len do
        local x = v[i]
        if x ~= null then
          if cm then
            local y, err = cm(x)
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
    local cv = compile(shapes, shape.value, cache)
    f = function(v)
      if type(v) ~= "table" then return nil, "expected an object for " .. sname end
      for k, x in pairs(v) do
        if x == null then v[k] = nil elseif cv then
          local y, err = cv(x)
          if err then return nil, k .. ": " .. err end
          v[k] = y
        end
      end
      return v
    end
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
  else
    f = false -- strings, booleans, doubles: nothing to do
  end
  cache[sname] = f
  return f
end

-- the same body as bench/decode.lua
local N = 10000
local blobs = {}
for i = 1, 256 do blobs[i] = core.b64encode(common.bytes(100, i)) end
local parts = {}
for i = 1, N do
  parts[i] = string.format(
    '{"SequenceNumber":"4965150811237057323336453918541915328203649300922%07d",' ..
    '"ApproximateArrivalTimestamp":1.%012dE9,"Data":"%s","PartitionKey":"partition-key-%05d"}',
    i, 713354821000 + i * 7, blobs[(i - 1) % 256 + 1], i)
end
local body = '{"Records":[' .. table.concat(parts, ",") ..
  '],"NextShardIterator":"AAAAAAAAAAGc0FbRMa3yT1p0c2VyAbcdefghijklmnopqrstuvwxyz0123456789==",' ..
  '"MillisBehindLatest":0}'
parts, blobs = nil, nil

local shapes = model.shapes
local walk = compile(shapes, "GetRecordsOutput", {})
INLINE = true
local walk_inline = compile(shapes, "GetRecordsOutput", {})
DIRECT = true
local walk_direct = compile(shapes, "GetRecordsOutput", {})

-- identical output, record by record
for _, w in ipairs { walk, walk_inline, walk_direct } do
  local a = assert(codec.convert(shapes, "GetRecordsOutput", cjson.decode(body)))
  local b = assert(w(cjson.decode(body)))
  assert(#a.Records == #b.Records and a.NextShardIterator == b.NextShardIterator)
  assert(math.type == nil or math.type(b.MillisBehindLatest) == "integer")
  for i = 1, #a.Records do
    local x, y = a.Records[i], b.Records[i]
    for k, v in pairs(x) do assert(y[k] == v, k) end
    for k in pairs(y) do assert(x[k] ~= nil, k) end
  end
end

-- CPU time (os.clock): a compute-bound figure, less disturbed than wall time
-- when other processes share the CPUs
local clock = os.clock
local function timed(f, v)
  collectgarbage("collect")
  local t0 = clock()
  f(v)
  return (clock() - t0) * 1e3
end
-- each walk gets a freshly parsed body, made just before it is timed
local function walked(f)
  local parsed = cjson.decode(body)
  return timed(f, parsed)
end
local t_cjson, t_codec, t_comp, t_inl, t_dir = {}, {}, {}, {}, {}
for r = 1, reps + 1 do
  local a = timed(cjson.decode, body)
  local b = walked(function(v) codec.convert(shapes, "GetRecordsOutput", v) end)
  local c = walked(walk)
  local d = walked(walk_inline)
  local e = walked(walk_direct)
  if r > 1 then
    t_cjson[#t_cjson + 1], t_codec[#t_codec + 1], t_comp[#t_comp + 1], t_inl[#t_inl + 1] = a, b, c, d
    t_dir[#t_dir + 1] = e
  end
end
common.emit {
  cjson_ms = common.median(t_cjson), codec_walk_ms = common.median(t_codec),
  compiled_walk_ms = common.median(t_comp), inline_walk_ms = common.median(t_inl),
  direct_walk_ms = common.median(t_dir),
}
