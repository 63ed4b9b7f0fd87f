-- gen_model.lua - generates a service's model table from the AWS service models.
-- Usage: lua5.4 tools/gen_model.lua <aws-model dir> [kinesis|dynamodb] > out.lua
-- kinesis (lua/kinesis/model.lua): the Smithy JSON AST (operations, shapes,
-- constraints, paginated and waitable traits) and botocore's paginators/waiters,
-- which page ListShards and DescribeStream that the Smithy model leaves unmarked.
-- dynamodb (lua/kinesis/services/dynamodb_model.lua): the compact SDK form, whose
-- anonymous shapes are named after the path that first reaches them. Both give
-- the same table layout; the output is deterministic (sorted keys) so `make
-- gen-check` can diff it.

local cjson = require "cjson"

local dir = assert(arg[1], "usage: gen_model.lua <aws-model dir> [kinesis|dynamodb]")
local service_name = arg[2] or "kinesis"

local function read_json(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return cjson.decode(s)
end

-- PutRecords -> put_records, ListTagsForStream -> list_tags_for_stream
local function snake(name)
  local s = name:gsub("(%l)(%u)", "%1_%2"):gsub("(%u)(%u%l)", "%1_%2")
  return s:lower()
end

local function kinesis_model()
  local smithy = read_json(dir .. "/smithy/kinesis.json")
  local bc_pag = read_json(dir .. "/botocore/paginators-1.json").pagination
  local bc_wait = read_json(dir .. "/botocore/waiters-2.json").waiters

  local NS = "com.amazonaws.kinesis#"
  local PRELUDE = {
    ["smithy.api#String"] = "string", ["smithy.api#Integer"] = "integer",
    ["smithy.api#Long"] = "long", ["smithy.api#Boolean"] = "boolean",
    ["smithy.api#PrimitiveBoolean"] = "boolean", ["smithy.api#Blob"] = "blob",
    ["smithy.api#Timestamp"] = "timestamp", ["smithy.api#Double"] = "double",
  }

  local function short(id)
    if id == "smithy.api#Unit" then return nil end
    if PRELUDE[id] then return "smithy." .. PRELUDE[id] end
    local s = id:match("#(.+)$")
    assert(id:sub(1, #NS) == NS, "shape outside the service namespace: " .. id)
    return s
  end

  local shapes, operations, service = {}, {}, nil
  local used_prelude = {}

  local function convert_shape(id, s)
    local t = s.traits or {}
    local out = { type = s.type }
    local len, range = t["smithy.api#length"], t["smithy.api#range"]
    if len then out.min, out.max = len.min, len.max end
    if range then out.min, out.max = range.min, range.max end
    if t["smithy.api#pattern"] then out.pattern = t["smithy.api#pattern"] end
    if t["smithy.api#error"] then out.error = t["smithy.api#error"] end
    if t["smithy.api#streaming"] then out.streaming = true end
    if t["smithy.api#sensitive"] then out.sensitive = true end
    if s.type == "enum" then
      out.type = "string"
      local values = {}
      for _, m in pairs(s.members) do
        values[#values + 1] = m.traits["smithy.api#enumValue"]
      end
      table.sort(values)
      out.enum = values
    elseif s.type == "structure" or s.type == "union" then
      local members = {}
      for name, m in pairs(s.members or {}) do
        local mt = m.traits or {}
        local target = short(m.target)
        if PRELUDE[m.target] then used_prelude[m.target] = true end
        members[name] = {
          target = target,
          required = mt["smithy.api#required"] and true or nil,
          context_param = mt["smithy.rules#contextParam"] and mt["smithy.rules#contextParam"].name or nil,
        }
      end
      out.members = members
    elseif s.type == "list" then
      out.member = short(s.member.target)
      if PRELUDE[s.member.target] then used_prelude[s.member.target] = true end
    elseif s.type == "map" then
      out.key, out.value = short(s.key.target), short(s.value.target)
      for _, x in ipairs { s.key.target, s.value.target } do
        if PRELUDE[x] then used_prelude[x] = true end
      end
    end
    return out
  end

  for id, s in pairs(smithy.shapes) do
    if s.type == "service" then
      service = s
    elseif s.type == "operation" then
      local name = short(id)
      local t = s.traits or {}
      local static = t["smithy.rules#staticContextParams"] or {}
      local op = {
        name = name,
        method = snake(name),
        input = s.input and short(s.input.target),
        output = s.output and short(s.output.target),
        operation_type = static.OperationType and static.OperationType.value or nil,
      }
      local errs = {}
      for _, e in ipairs(s.errors or {}) do errs[#errs + 1] = short(e.target) end
      table.sort(errs)
      op.errors = errs
      local pg = t["smithy.api#paginated"]
      local bp = bc_pag[name]
      if pg or bp then
        local p = {}
        if bp then
          p.input_token = bp.input_token
          p.output_token = bp.output_token
          p.limit_key = bp.limit_key
          p.more_results = bp.more_results
          p.result_key = type(bp.result_key) == "table" and bp.result_key or { bp.result_key }
        end
        if pg then
          p.input_token = p.input_token or pg.inputToken
          p.output_token = p.output_token or pg.outputToken
          p.limit_key = p.limit_key or pg.pageSize
          if not p.result_key and pg.items then p.result_key = { pg.items } end
        end
        op.paginator = p
      end
      operations[name] = op
      if t["smithy.waiters#waitable"] then
        op.waiters = {}
        for wname, w in pairs(t["smithy.waiters#waitable"]) do
          local acceptors = {}
          for _, a in ipairs(w.acceptors) do
            local m = a.matcher
            local acc = { state = a.state }
            if m.output then
              acc.path, acc.expected, acc.comparator = m.output.path, m.output.expected, m.output.comparator
            elseif m.errorType then
              acc.error = m.errorType
            elseif m.success ~= nil then
              acc.success = m.success
            else
              error("unsupported waiter matcher in " .. wname)
            end
            acceptors[#acceptors + 1] = acc
          end
          local bw = bc_wait[wname]
          op.waiters[wname] = {
            acceptors = acceptors,
            min_delay = w.minDelay or 2,
            max_delay = w.maxDelay or 120,
            max_attempts = bw and bw.maxAttempts or nil,
          }
        end
      end
    else
      local name = short(id)
      if name then shapes[name] = convert_shape(id, s) end
    end
  end

  for id in pairs(used_prelude) do
    shapes[short(id)] = { type = PRELUDE[id] }
  end

  -- every operation of a streaming output names the member holding the stream
  for _, op in pairs(operations) do
    local out = op.output and shapes[op.output]
    if out then
      for mname, m in pairs(out.members) do
        if shapes[m.target] and shapes[m.target].streaming then op.event_stream = mname end
      end
    end
  end

  local svc = service.traits
  local model = {
    api_version = service.version,
    target_prefix = "Kinesis_" .. service.version:gsub("-", ""),
    sdk_id = svc["aws.api#service"].sdkId,
    endpoint_prefix = svc["aws.api#service"].endpointPrefix,
    signing_name = svc["aws.auth#sigv4"].name,
    json_version = "1.1",
    operations = operations,
    shapes = shapes,
  }
  assert(svc["aws.protocols#awsJson1_1"], "the service no longer speaks awsJson1_1")
  return model
end

-- The compact SDK form: operations with inline input/output structures,
-- shapes referenced as {"shape": "S6"}, a member without a type is a string.
-- Scalars share one shape per type; a structure, list or map gets the name of
-- the first path (operations and members in sorted order) that reaches it.
local function dynamodb_model()
  local api = read_json(dir .. "/dynamodb/api.json")
  local pag = read_json(dir .. "/dynamodb/paginators.json").pagination
  local wait = read_json(dir .. "/dynamodb/waiters.json").waiters
  local meta = api.metadata
  assert(meta.protocol == "json", "DynamoDB no longer speaks JSON")
  local shapes, operations, named = {}, {}, {}
  local SCALAR = { string = true, long = true, integer = true, boolean = true, blob = true,
    timestamp = true, double = true, float = true }

  local function sorted_keys(t)
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys)
    return keys
  end

  local convert
  -- the shape name for node `s` first reached at `path`
  local function name_of(s, path)
    if s.shape then
      local n = named[s.shape]
      if n then return n end
      local target = api.shapes[s.shape]
      local t = target.type or "string"
      if SCALAR[t] then
        n = "smithy." .. (t == "float" and "double" or t)
        shapes[n] = shapes[n] or { type = t == "float" and "double" or t }
        named[s.shape] = n
        return n
      end
      -- the AttributeValue union reaches every item and key: its own name
      if t == "structure" and target.members.S and target.members.M and target.members.L then
        path = "AttributeValue"
      end
      named[s.shape] = path
      convert(target, path)
      -- exactly one of S, N, B, SS, NS, BS, M, L, NULL, BOOL (a union in the Smithy model)
      if path == "AttributeValue" then shapes[path].type = "union" end
      return path
    end
    local t = s.type or "string"
    if SCALAR[t] then
      local n = "smithy." .. (t == "float" and "double" or t)
      shapes[n] = shapes[n] or { type = t == "float" and "double" or t }
      return n
    end
    convert(s, path)
    return path
  end

  function convert(s, path)
    local out = { type = s.type }
    shapes[path] = out
    if s.type == "structure" then
      local required = {}
      for _, r in ipairs(s.required or {}) do required[r] = true end
      out.members = {}
      for _, mname in ipairs(sorted_keys(s.members or {})) do
        out.members[mname] = {
          target = name_of(s.members[mname], path .. "." .. mname),
          required = required[mname] or nil,
        }
      end
    elseif s.type == "list" then
      out.member = name_of(s.member, path .. ".member")
    elseif s.type == "map" then
      out.key = name_of(s.key, path .. ".key")
      out.value = name_of(s.value, path .. ".value")
    else
      error("unexpected shape type " .. tostring(s.type) .. " at " .. path)
    end
  end

  for _, name in ipairs(sorted_keys(api.operations)) do
    local o = api.operations[name]
    local op = { name = name, method = snake(name), errors = {} }
    if o.input then op.input = name_of(o.input, name .. "Input") end
    if o.output then op.output = name_of(o.output, name .. "Output") end
    local p = pag[name]
    if p then
      local rk = p.result_key
      op.paginator = {
        input_token = p.input_token, output_token = p.output_token, limit_key = p.limit_key,
        result_key = rk and (type(rk) == "table" and rk or { rk }) or nil,
      }
    end
    operations[name] = op
  end
  for _, wname in ipairs(sorted_keys(wait)) do
    local w = wait[wname]
    local op = operations[w.operation]
    local acceptors = {}
    for _, a in ipairs(w.acceptors) do
      local acc = { state = a.state }
      if a.matcher == "path" then
        acc.path, acc.expected, acc.comparator = a.argument, a.expected, "stringEquals"
      elseif a.matcher == "error" then
        acc.error = a.expected
      else
        error("unsupported waiter matcher in " .. wname)
      end
      acceptors[#acceptors + 1] = acc
    end
    op.waiters = op.waiters or {}
    op.waiters[wname] = { acceptors = acceptors, min_delay = w.delay, max_delay = 120, max_attempts = w.maxAttempts }
  end
  return {
    api_version = meta.apiVersion,
    target_prefix = meta.targetPrefix,
    sdk_id = meta.serviceId,
    endpoint_prefix = meta.endpointPrefix,
    signing_name = meta.signingName or meta.endpointPrefix,
    json_version = meta.jsonVersion,
    operations = operations,
    shapes = shapes,
  }
end

local model, title
if service_name == "kinesis" then
  model, title = kinesis_model(), "Kinesis"
elseif service_name == "dynamodb" then
  model, title = dynamodb_model(), "DynamoDB"
else
  error("unknown service " .. service_name .. " (kinesis or dynamodb)")
end

-- deterministic Lua serializer
local function is_array(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  for i = 1, n do if t[i] == nil then return false end end
  return true
end

local keywords = {}
for w in ("and break do else elseif end false for function goto if in local nil not or repeat return then true until while"):gmatch("%S+") do
  keywords[w] = true
end

local function key_str(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") and not keywords[k] then return k end
  return "[" .. string.format("%q", k) .. "]"
end

local function ser(v, indent, out)
  local tv = type(v)
  if tv == "string" then
    out[#out + 1] = string.format("%q", v)
  elseif tv == "number" then
    if math.type(v) == "float" and v == math.floor(v) and math.abs(v) < 2^53 then
      out[#out + 1] = string.format("%d", v)
    else
      out[#out + 1] = tostring(v)
    end
  elseif tv == "boolean" then
    out[#out + 1] = tostring(v)
  elseif tv == "table" then
    if next(v) == nil then out[#out + 1] = "{}" return end
    local pad = string.rep("  ", indent + 1)
    if is_array(v) then
      local simple = true
      for _, x in ipairs(v) do if type(x) == "table" then simple = false end end
      if simple then
        local parts = {}
        for _, x in ipairs(v) do local o = {} ser(x, 0, o) parts[#parts + 1] = table.concat(o) end
        out[#out + 1] = "{ " .. table.concat(parts, ", ") .. " }"
        return
      end
      out[#out + 1] = "{\n"
      for _, x in ipairs(v) do
        out[#out + 1] = pad
        ser(x, indent + 1, out)
        out[#out + 1] = ",\n"
      end
    else
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = k end
      table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
      out[#out + 1] = "{\n"
      for _, k in ipairs(keys) do
        out[#out + 1] = pad .. key_str(k) .. " = "
        ser(v[k], indent + 1, out)
        out[#out + 1] = ",\n"
      end
    end
    out[#out + 1] = string.rep("  ", indent) .. "}"
  else
    error("cannot serialize " .. tv)
  end
end

local out = {
  "-- Generated by tools/gen_model.lua from the AWS " .. title .. " service model\n",
  "-- (../shared/aws-model). Do not edit: run `make gen`.\n",
  "return ",
}
ser(model, 0, out)
out[#out + 1] = "\n"
io.write(table.concat(out))
