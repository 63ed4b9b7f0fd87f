-- kinesis.dynamodb - a DynamoDB client through the Kinesis client's own
-- pipeline (signing, transports, retries, credentials, logging, errors): the
-- generated model (kinesis.services.dynamodb_model) as a service descriptor.
-- Every operation is a snake_case method and callable by name. Also the
-- AttributeValue helpers that turn plain Lua values into DynamoDB's typed form.

local client = require "kinesis.client"
local model = require "kinesis.services.dynamodb_model"
local errors = require "kinesis.errors"

local type, pairs, ipairs, tostring, setmetatable, getmetatable, error, format =
  type, pairs, ipairs, tostring, setmetatable, getmetatable, error, string.format
local math_type = math.type

local M = {}

local by_name = {}
for name, op in pairs(model.operations) do
  by_name[name] = op
  by_name[op.method] = op
end
M.operations = by_name
M.model = model

-- dynamodb.{region}.{dnsSuffix} from the partitions (FIPS: dynamodb-fips;
-- dual-stack: the partition's dual-stack suffix)
local function endpoint(self, op)
  local ep = self.dynamodb_endpoint
  if ep then return ep end
  local partition = require("kinesis.endpoints").lib["aws.partition"]
  local p = partition(self.region)
  local cfg = self.endpoint_config
  if cfg.use_fips and not p.supportsFIPS then return nil, "FIPS is not supported in " .. tostring(self.region) end
  if cfg.use_dualstack and not p.supportsDualStack then
    return nil, "dual-stack is not supported in " .. tostring(self.region)
  end
  local host = (cfg.use_fips and "dynamodb-fips." or "dynamodb.") .. self.region .. "." ..
    (cfg.use_dualstack and p.dualStackDnsSuffix or p.dnsSuffix)
  local perr
  ep, perr = client.parse_endpoint("https://" .. host)
  if not ep then return nil, perr end
  ep.signing_region = self.region
  self.dynamodb_endpoint = ep
  if self.logger then self.logger { event = "endpoint", op = op.name, url = ep.url, signing_region = self.region } end
  return ep
end

M.SERVICE = {
  name = "dynamodb", shapes = model.shapes, operations = by_name,
  target_prefix = model.target_prefix, json_version = model.json_version,
  signing_name = model.signing_name, endpoint_env = "AWS_ENDPOINT_URL_DYNAMODB",
  endpoint = endpoint,
}

local Client = setmetatable({}, { __index = client.Client })
Client.__index = Client
Client.__name = "kinesis.dynamodb.client"
Client.__tostring = function(self)
  return format("kinesis.dynamodb.client(%s, %s)", tostring(self.region),
    self.endpoint and self.endpoint.url or "regional endpoint")
end

for name, op in pairs(model.operations) do
  local method = op.method
  Client[method] = function(self, params)
    if type(self) ~= "table" or getmetatable(self) ~= Client then
      error(format("kinesis.dynamodb: call methods with a colon: client:%s(...)", method), 2)
    end
    return self:call(name, params)
  end
end

--- kinesis.dynamodb.new{...} -> client | nil, err: the options of kinesis.new
-- (region, endpoint, credentials, profile, retry, timeout, transport, log, ...);
-- the endpoint also from AWS_ENDPOINT_URL_DYNAMODB or AWS_ENDPOINT_URL.
function M.new(cfg)
  local c, err = client.new(cfg, M.SERVICE)
  if not c then return nil, err end
  return setmetatable(c, Client)
end

M.Client = Client

---------------------------------------------------------------- AttributeValues

-- Markers for the values plain Lua cannot tell apart: sets, numbers kept
-- as decimal strings, binary, and null (nil cannot sit in a table).
local Set = { __name = "kinesis.dynamodb.set" }
local Number = { __name = "kinesis.dynamodb.number" }
local Binary = { __name = "kinesis.dynamodb.binary" }
M.null = setmetatable({}, { __name = "kinesis.dynamodb.null", __tostring = function() return "null" end })

--- A string set (kind "SS", the default), number set ("NS") or binary set ("BS").
function M.set(items, kind)
  kind = kind or "SS"
  if kind ~= "SS" and kind ~= "NS" and kind ~= "BS" then
    error("kinesis.dynamodb.set: kind must be SS, NS or BS", 2)
  end
  if type(items) ~= "table" then error("kinesis.dynamodb.set: items must be a list", 2) end
  local copy = {}
  for i, v in ipairs(items) do copy[i] = v end
  return setmetatable({ kind = kind, items = copy }, Set)
end

--- A number kept exactly as its decimal text (DynamoDB numbers have 38 digits).
function M.number(text)
  if type(text) ~= "string" or not text:match("^%-?%d+%.?%d*[eE]?[-+]?%d*$") then
    error("kinesis.dynamodb.number: text must be a decimal number string", 2)
  end
  return setmetatable({ text = text }, Number)
end

--- Bytes to be stored as a binary (B) attribute.
function M.binary(bytes)
  if type(bytes) ~= "string" then error("kinesis.dynamodb.binary: bytes must be a string", 2) end
  return setmetatable({ bytes = bytes }, Binary)
end

local function number_text(v)
  if math_type and math_type(v) == "integer" then return format("%d", v) end
  if v ~= v or v == math.huge or v == -math.huge then return nil end
  if v == math.floor(v) and v > -2^53 and v < 2^53 then return format("%d", v) end
  -- the shortest text that reads back as the same double
  for digits = 15, 17 do
    local s = format("%." .. digits .. "g", v)
    if tonumber(s) == v then return s end
  end
  return format("%.17g", v)
end

local function is_list(t)
  local n = #t
  if n == 0 then return next(t) == nil end
  local count = 0
  for k in pairs(t) do
    if type(k) ~= "number" then return false end
    count = count + 1
  end
  return count == n
end

local to_attr

--- A plain Lua value as an AttributeValue: string -> S, number -> N,
-- boolean -> BOOL, dynamodb.null -> NULL, list -> L, table -> M, and the
-- set/number/binary markers. Returns the AttributeValue, or nil and a
-- message naming the path of the value it cannot convert.
function to_attr(v, path)
  path = path or "value"
  local t = type(v)
  if t == "string" then return { S = v } end
  if t == "boolean" then return { BOOL = v } end
  if t == "number" then
    local s = number_text(v)
    if not s then return nil, path .. ": NaN and infinities are not DynamoDB numbers" end
    return { N = s }
  end
  if v == nil or v == M.null then return { NULL = true } end
  if t ~= "table" then return nil, path .. ": a " .. t .. " has no DynamoDB type" end
  local mt = getmetatable(v)
  if mt == Set then
    local out = {}
    for i, x in ipairs(v.items) do
      if v.kind == "NS" then
        if type(x) == "number" then x = number_text(x)
        elseif getmetatable(x) == Number then x = x.text end
      end
      if type(x) ~= "string" then
        return nil, format("%s[%d]: a %s set holds %s", path, i, v.kind, v.kind == "NS" and "numbers" or "strings")
      end
      out[i] = x
    end
    if #out == 0 then return nil, path .. ": DynamoDB sets cannot be empty" end
    return { [v.kind] = out }
  elseif mt == Number then
    return { N = v.text }
  elseif mt == Binary then
    return { B = v.bytes }
  end
  if is_list(v) and next(v) ~= nil then
    local out = {}
    for i, x in ipairs(v) do
      local a, err = to_attr(x, format("%s[%d]", path, i))
      if not a then return nil, err end
      out[i] = a
    end
    return { L = out }
  end
  local out = {}
  for k, x in pairs(v) do
    if type(k) ~= "string" then return nil, format("%s: map keys must be strings (got %s)", path, type(k)) end
    local a, err = to_attr(x, path .. "." .. k)
    if not a then return nil, err end
    out[k] = a
  end
  return { M = out }
end
M.to_attr = to_attr

local from_attr

--- An AttributeValue as a plain Lua value: S -> string, N -> number (an
-- integer when it is one and fits; else the exact text as a dynamodb.number
-- when a float would round it), BOOL, NULL -> dynamodb.null, L -> list,
-- M -> table, SS/NS/BS -> dynamodb.set, B -> dynamodb.binary. nil, message
-- for a value that is not an AttributeValue.
function from_attr(a, path)
  path = path or "value"
  if type(a) ~= "table" then return nil, path .. ": not an AttributeValue" end
  if a.S ~= nil then return a.S end
  if a.N ~= nil then
    local n = tonumber(a.N)
    if n == nil then return nil, path .. ": N is not a number" end
    if a.N:match("^%-?%d+$") then
      local i = math.tointeger and math.tointeger(n)
      if i and format("%d", i) == a.N:gsub("^(%-?)0+(%d)", "%1%2") then return i end
      if not math.tointeger and #a.N:gsub("^%-", "") <= 15 then return n end
      return M.number(a.N)
    end
    if number_text(n) == a.N then return n end
    if #a.N:gsub("[^%d]", "") <= 15 then return n end
    return M.number(a.N)
  end
  if a.BOOL ~= nil then return a.BOOL end
  if a.NULL ~= nil then return M.null end
  if a.B ~= nil then return M.binary(a.B) end
  if a.L ~= nil then
    local out = {}
    for i, x in ipairs(a.L) do
      local v, err = from_attr(x, format("%s[%d]", path, i))
      if err then return nil, err end
      out[i] = v
    end
    return out
  end
  if a.M ~= nil then
    local out = {}
    for k, x in pairs(a.M) do
      local v, err = from_attr(x, path .. "." .. k)
      if err then return nil, err end
      out[k] = v
    end
    return out
  end
  for _, kind in ipairs { "SS", "NS", "BS" } do
    if a[kind] ~= nil then return M.set(a[kind], kind) end
  end
  return nil, path .. ": not an AttributeValue"
end
M.from_attr = from_attr

--- A table of plain values as an item ({ name = AttributeValue }); nil, err.
function M.to_item(t)
  if type(t) ~= "table" then error("kinesis.dynamodb.to_item: a table is required", 2) end
  local out = {}
  for k, v in pairs(t) do
    if type(k) ~= "string" then return nil, "item keys must be strings" end
    local a, err = to_attr(v, k)
    if not a then return nil, err end
    out[k] = a
  end
  return out
end

--- An item ({ name = AttributeValue }) as a table of plain values; nil, err.
function M.from_item(item)
  if type(item) ~= "table" then return nil, "an item must be a table" end
  local out = {}
  for k, a in pairs(item) do
    local v, err = from_attr(a, k)
    if err then return nil, err end
    out[k] = v
  end
  return out
end

--- Whether v is dynamodb.null, a set, a number or a binary marker.
function M.is_set(v) return getmetatable(v) == Set end
function M.is_number(v) return getmetatable(v) == Number end
function M.is_binary(v) return getmetatable(v) == Binary end

M.errors = errors
return M
