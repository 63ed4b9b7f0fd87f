-- kinesis.codec - awsJson1_1 bodies by the model's shapes in one C pass each
-- way (src/l_codec.c): encode validates every rule the model states while it
-- writes the JSON (blobs base64, nothing sent on a broken rule); decode
-- parses the answer straight into tables by shape. kinesis.codec_ref and
-- kinesis.validate are the Lua reference it is checked against.

local core = require "kinesis.core"
local ref = require "kinesis.codec_ref"
local validate = require "kinesis.validate"

local format, tostring, type, pcall, setmetatable = string.format, tostring, type, pcall, setmetatable

local M = {}

-- compiled state per shapes table; false when it cannot be compiled (a
-- hand-made table in a spec), and then the reference serves it
local states = setmetatable({}, { __mode = "k" })

local function state_of(shapes)
  local s = states[shapes]
  if s == nil then
    local ok, st, index = pcall(core.codec, shapes)
    s = ok and { st = st, index = index } or false
    states[shapes] = s
  end
  return s
end

-- The C pass names the outer path (member names, list indexes, {map key}),
-- the reference's check of the failing value names the rule, the text and
-- any inner segments: together the error kinesis.validate gives.
local function render(outer, inner)
  local out, n = {}, 0
  local function add(seg)
    n = n + 1
    if seg:sub(1, 1) == "[" or n == 1 then out[n] = seg else out[n] = "." .. seg end
  end
  for i = 1, #outer do
    local seg = outer[i]
    local t = type(seg)
    if t == "number" then add(format("[%d]", seg))
    elseif t == "table" then add(format("[%q]", tostring(seg[1])))
    else add(seg) end
  end
  for i = #inner, 1, -1 do add(inner[i]) end
  return table.concat(out)
end

local function failure(shapes, op, params, sname, value, outer)
  local ok, err = validate.check(shapes, sname, value)
  if ok then
    -- the two disagree: the reference's verdict on the whole input decides
    local rok, rerr = validate.input(shapes, op, params)
    if not rok then return rerr end
    return { path = op.name, rule = "internal", message = op.name .. ": rejected by the codec" }
  end
  local path = render(outer, err.segments)
  if path == "" then path = op.name end
  return { path = path, rule = err.rule, message = format("%s: %s", path, err.text) }
end

--- Validates `params` for operation table `op` and encodes them in one pass:
-- the JSON body, or nil and the validation failure { path =, rule =, message = }.
function M.encode_input(shapes, op, params)
  params = params or {}
  local s = state_of(shapes)
  if not op.input or not s then
    local ok, err = validate.input(shapes, op, params)
    if not ok then return nil, err end
    return ref.encode(shapes, op.input, params)
  end
  local body, sname, value, outer = s.st:encode(s.index[op.input], params)
  if not body then return nil, failure(shapes, op, params, sname, value, outer) end
  local ok, err = validate.prose(op, params, shapes)
  if not ok then return nil, err end
  return body
end

--- Encodes an input table for shape `sname`; returns the JSON text. Input
-- that breaks a rule (never validated) is written by the reference encoder.
function M.encode(shapes, sname, v)
  if not sname then return "{}" end
  local s = state_of(shapes)
  if s then
    local body = s.st:encode(s.index[sname], v or {})
    if body then return body end
  end
  return ref.encode(shapes, sname, v)
end

--- Decodes a response body of shape `sname`; returns the table, or nil and
-- a message when the body is not JSON or does not fit the shape.
function M.decode(shapes, sname, body)
  if not sname or body == nil or body == "" then return {} end
  local s = state_of(shapes)
  if not s then return ref.decode(shapes, sname, body) end
  return s.st:decode(s.index[sname], body)
end

--- Converts a JSON value already parsed by cjson (event-stream payloads).
M.convert = ref.convert
M.null = ref.null
return M
