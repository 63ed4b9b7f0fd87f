-- codec_driver.lua - the Lua half of fuzz/fuzz_codec.c: differential
-- fuzzing of the C codec (kinesis.codec) against the Lua reference
-- (kinesis.validate + kinesis.codec_ref). A broken promise raises; the C
-- harness turns that into an abort with the message.
--
-- Input: the first byte picks the direction.
--   even: decode. The second byte picks an output shape of the model, the
--         rest is the response body. The C decoder must not raise; when it
--         takes the body, the reference must take it too, with the same
--         values (members the model does not know aside); when the
--         reference refuses it, so must the C decoder. (The C decoder may
--         refuse more: a scalar of the wrong JSON type.)
--   odd:  encode. The second byte picks an operation, the rest drives the
--         construction of its parameters table by shape (valid and broken
--         values alike). Both pipelines must agree: the same validation
--         error table, or bodies that decode to the same JSON.
local codec = require "kinesis.codec"
local ref = require "kinesis.codec_ref"
local validate = require "kinesis.validate"
local model = require "kinesis.model"
local cjson = require "cjson"

local shapes = model.shapes
local byte, char, floor = string.byte, string.char, math.floor

local function fail(fmt, ...)
  error(string.format(fmt, ...), 0)
end

local ops, outputs = {}, {}
for name, op in pairs(model.operations) do
  if op.input then ops[#ops + 1] = name end
  if op.output then outputs[#outputs + 1] = op.output end
end
table.sort(ops)
table.sort(outputs)

local function deep_equal(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= "table" then return a == b or (a ~= a and b ~= b) end
  for k, v in pairs(a) do if not deep_equal(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

local function known(sname, v)
  local sh = shapes[sname]
  if type(v) ~= "table" or not sh then return v end
  local out = {}
  if sh.type == "structure" or sh.type == "union" then
    for k, x in pairs(v) do
      local m = sh.members[k]
      if m then out[k] = known(m.target, x) end
    end
  elseif sh.type == "list" then
    for i, x in ipairs(v) do out[i] = known(sh.member, x) end
  elseif sh.type == "map" then
    for k, x in pairs(v) do out[k] = known(sh.value, x) end
  else
    return v
  end
  return out
end

local function decode_case(data)
  local sname = outputs[(byte(data, 2) or 0) % #outputs + 1]
  local body = data:sub(3)
  local ok, got, gerr = pcall(codec.decode, shapes, sname, body)
  if not ok then fail("codec.decode raised on %q: %s", body, tostring(got)) end
  if got == nil and type(gerr) ~= "string" then fail("codec.decode failed without a message") end
  local rok, want, werr = pcall(ref.decode, shapes, sname, body)
  if not rok then return end -- the reference itself raised: nothing to compare with
  if got ~= nil then
    if want == nil then fail("%s: C took a body the reference refused (%s): %q", sname, tostring(werr), body) end
    if not deep_equal(known(sname, want), got) then fail("%s: values differ for %q", sname, body) end
  end
end

-- parameters built from the input bytes
local ALPHABET = "arn:aws:kinesis:us-east-1:123456789012:stream/s0123456789abcdef_.-/ \0\255\195\169"

local function encode_case(data)
  local pos = 2
  local function nb()
    pos = pos + 1
    return byte(data, pos) or 0
  end
  local function text(n, raw)
    local out = {}
    for i = 1, n do
      local b = nb()
      out[i] = raw and char(b) or ALPHABET:sub(b % #ALPHABET + 1, b % #ALPHABET + 1)
    end
    return table.concat(out)
  end
  local WRONG = { 1, "x", true, {}, 1.5, -1, 2 ^ 53, 0 / 0, 2 ^ 63 }
  local value
  function value(sname, depth)
    local sh = shapes[sname]
    local t, k = sh.type, nb() % 16
    if k == 15 then return WRONG[nb() % #WRONG + 1] end
    if t == "string" then
      if sh.enum and k < 12 then return sh.enum[nb() % #sh.enum + 1] end
      if sname == "HashKey" and k < 4 then
        return ({ "0", "340282366920938463463374607431768211455", "340282366920938463463374607431768211456", "01" })[k + 1]
      end
      return text(nb() % 48, k == 14)
    elseif t == "blob" then
      return text(nb() % 64, true)
    elseif t == "boolean" then
      return k % 2 == 0
    elseif t == "integer" or t == "long" then
      local v = nb() * 256 + nb() - 1000
      if k == 13 then v = v + 0.5 elseif k == 12 then v = 2 ^ 31 elseif k == 11 then v = -2 ^ 63 end
      return v
    elseif t == "timestamp" then
      return 1700000000 + nb() + (k < 4 and 0.125 or 0)
    elseif t == "double" then
      return nb() / 4
    elseif t == "structure" or t == "union" then
      local v = {}
      if depth > 6 then return v end
      local names = {}
      for name in pairs(sh.members) do names[#names + 1] = name end
      table.sort(names)
      for _, name in ipairs(names) do
        if nb() % 3 > 0 then v[name] = value(sh.members[name].target, depth + 1) end
      end
      if k == 14 then v.Unknown = 1 end
      return v
    elseif t == "list" then
      local v = {}
      for i = 1, nb() % 5 do v[i] = value(sh.member, depth + 1) end
      if k == 14 then v.x = 1 end
      return v
    elseif t == "map" then
      local v = {}
      for _ = 1, nb() % 3 do v[text(nb() % 8)] = value(sh.value, depth + 1) end
      return v
    end
    return nil
  end
  local op = model.operations[ops[(byte(data, 2) or 0) % #ops + 1]]
  local params = value(op.input, 0)
  if type(params) ~= "table" then params = {} end
  local want, werr
  local vok, verr = validate.input(shapes, op, params)
  if vok then want = ref.encode(shapes, op.input, params) else werr = verr end
  local ok, got, gerr = pcall(codec.encode_input, shapes, op, params)
  if not ok then fail("%s: codec.encode_input raised: %s", op.name, tostring(got)) end
  if want then
    if not got then fail("%s: C refused what the reference took: %s", op.name, tostring(gerr and gerr.message)) end
    if not deep_equal(cjson.decode(want), cjson.decode(got)) then
      fail("%s: bodies differ:\n%s\n%s", op.name, want, got)
    end
  else
    if got then fail("%s: C took what the reference refused: %s", op.name, werr.message) end
    if gerr.message ~= werr.message or gerr.path ~= werr.path or gerr.rule ~= werr.rule then
      fail("%s: errors differ: %s | %s", op.name, werr.message, gerr.message)
    end
  end
end

return function(data)
  if #data < 2 then return end
  if floor(byte(data, 1)) % 2 == 0 then decode_case(data) else encode_case(data) end
end
