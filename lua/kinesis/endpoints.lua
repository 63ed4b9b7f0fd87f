-- kinesis.endpoints - endpoint resolution by the model's endpoint rule set.
-- Interprets the Smithy rules-engine decision tree (smithy.rules#endpointRuleSet,
-- copied into kinesis.endpoint_rules by tools/gen_endpoints.lua) with the
-- standard and AWS library functions, so FIPS, dual-stack, every partition and
-- the account-based endpoints follow the model instead of hand-written rules.
-- The rule set is compiled once, at load, into closures; an unknown function
-- or a malformed template fails the require, not a request.
-- Semantics: smithy.io, "Rules engine specification", "Rules engine standard
-- library", "AWS rules engine library functions".

local data = require "kinesis.endpoint_rules"
local regex = require "kinesis.regex"

local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local error, pcall = error, pcall
local byte, sub, find, match, gsub, format, lower =
  string.byte, string.sub, string.find, string.match, string.gsub, string.format, string.lower
local concat = table.concat
local getenv = os.getenv

local M = {}

local rule_set = data.rule_set
local PARAMS = rule_set.parameters
M.parameters = PARAMS
M.signing_name = data.signing_name

---------------------------------------------------------------------------
-- getAttr paths: "name", "resourceId[0]", "[0]", "a.b[1]"
---------------------------------------------------------------------------

-- A path compiles to steps: string keys and 1-based numeric indexes.
local function compile_path(path)
  local steps = {}
  for part in (path .. "."):gmatch("([^.]*)%.") do
    local key, rest = match(part, "^([^%[]*)(.*)$")
    if key ~= "" then steps[#steps + 1] = key end
    while rest ~= "" do
      local idx, tail = match(rest, "^%[(%d+)%](.*)$")
      if not idx then error("endpoint rules: bad getAttr path '" .. path .. "'", 0) end
      steps[#steps + 1] = tonumber(idx) + 1
      rest = tail
    end
  end
  if #steps == 0 then error("endpoint rules: empty getAttr path", 0) end
  return steps
end

local function walk(value, steps)
  for i = 1, #steps do
    if type(value) ~= "table" then return nil end
    value = value[steps[i]]
  end
  return value
end

local path_cache = {}
local function get_attr(value, path)
  if type(path) ~= "string" then return nil end
  local steps = path_cache[path]
  if not steps then
    steps = compile_path(path)
    path_cache[path] = steps
  end
  return walk(value, steps)
end

---------------------------------------------------------------------------
-- standard library
---------------------------------------------------------------------------

local function is_ascii(s) return not find(s, "[\128-\255]") end

-- Inclusive start, exclusive stop, 0-based; `reverse` counts from the end.
-- Empty result (nil) when the input is too short or not ASCII.
local function substring(s, start, stop, reverse)
  if type(s) ~= "string" or type(start) ~= "number" or type(stop) ~= "number" then return nil end
  if start < 0 or start >= stop or #s < stop or not is_ascii(s) then return nil end
  if reverse == true then
    return sub(s, #s - stop + 1, #s - start)
  end
  return sub(s, start + 1, stop)
end

-- RFC 1123 host label: 1-63 letters, digits and hyphens, no hyphen at either end.
local function is_host_label(s)
  return #s >= 1 and #s <= 63 and find(s, "^[A-Za-z0-9][A-Za-z0-9%-]*$") ~= nil
    and sub(s, -1) ~= "-"
end

local function is_valid_host_label(s, allow_subdomains)
  if type(s) ~= "string" then return false end
  if allow_subdomains ~= true then return is_host_label(s) end
  for label in (s .. "."):gmatch("([^.]*)%.") do
    if not is_host_label(label) then return false end
  end
  return true
end

-- RFC 3986 section 2.1 percent-encoding; only the unreserved set stays.
local function uri_encode(s)
  if type(s) ~= "string" then return nil end
  return (gsub(s, "[^A-Za-z0-9%-_.~]", function(c) return format("%%%02X", byte(c)) end))
end

local function is_ipv4(host)
  local a, b, c, d = match(host, "^(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)$")
  if not a then return false end
  return tonumber(a) <= 255 and tonumber(b) <= 255 and tonumber(c) <= 255 and tonumber(d) <= 255
end

-- URL structure of the standard library: scheme, authority (host and port as
-- written, no userinfo), path, normalizedPath (always starts and ends with "/"),
-- isIp. Only http and https; a query makes the URL invalid.
local function parse_url(s)
  if type(s) ~= "string" then return nil end
  local scheme, rest = match(s, "^(%a[%w+.%-]*)://(.*)$")
  if not scheme then return nil end
  scheme = lower(scheme)
  if scheme ~= "http" and scheme ~= "https" then return nil end
  if find(rest, "?", 1, true) then return nil end
  rest = match(rest, "^([^#]*)")
  local authority, path = match(rest, "^([^/]*)(.*)$")
  authority = gsub(authority, "^.*@", "")
  local host, port = match(authority, "^(%[[%x:.]+%])(.*)$")
  local is_ip = host ~= nil
  if not host then
    host, port = match(authority, "^([^:%[%]]+)(.*)$")
    if not host then return nil end
    is_ip = is_ipv4(host)
  end
  if port ~= "" and not find(port, "^:%d+$") then return nil end
  if path == "" then path = "/" end
  local normalized = path
  if sub(normalized, -1) ~= "/" then normalized = normalized .. "/" end
  return {
    scheme = scheme, authority = authority, path = path,
    normalizedPath = normalized, isIp = is_ip,
  }
end

---------------------------------------------------------------------------
-- AWS library: aws.partition, aws.parseArn
---------------------------------------------------------------------------

local partitions = {}
local default_partition
for _, p in ipairs(data.partitions) do
  local outputs = {}
  for k, v in pairs(p.outputs) do outputs[k] = v end
  outputs.name = outputs.name or p.id
  local entry = {
    id = p.id, outputs = outputs, regions = p.regions,
    matches = regex.compile(p.regionRegex),
  }
  partitions[#partitions + 1] = entry
  if p.id == "aws" then default_partition = entry end
end
assert(default_partition, "partitions data has no aws partition")

-- A region entry may override some of its partition's outputs.
local function outputs_for(p, region_entry)
  local override = false
  for k in pairs(region_entry) do
    if p.outputs[k] ~= nil and k ~= "name" then override = true end
  end
  if not override then return p.outputs end
  local merged = {}
  for k, v in pairs(p.outputs) do merged[k] = v end
  for k, v in pairs(region_entry) do
    if p.outputs[k] ~= nil and k ~= "name" then merged[k] = v end
  end
  return merged
end

-- Known regions first (in any partition), then each partition's region regex;
-- an unknown region falls back to the aws partition, as the AWS SDKs do.
local function partition_of(region)
  if type(region) ~= "string" then return nil end
  for i = 1, #partitions do
    local p = partitions[i]
    local entry = p.regions[region]
    if entry then return outputs_for(p, entry) end
  end
  for i = 1, #partitions do
    local p = partitions[i]
    if p.matches(region) then return p.outputs end
  end
  return default_partition.outputs
end

-- arn:partition:service:region:account-id:resource, the resource split on ":"
-- and "/" (empty pieces kept). Partition, service and resource must be non-empty.
local function parse_arn(s)
  if type(s) ~= "string" or sub(s, 1, 4) ~= "arn:" then return nil end
  local fields, pos = {}, 5
  for i = 1, 4 do
    local colon = find(s, ":", pos, true)
    if not colon then return nil end
    fields[i] = sub(s, pos, colon - 1)
    pos = colon + 1
  end
  local resource = sub(s, pos)
  if fields[1] == "" or fields[2] == "" or resource == "" then return nil end
  local ids = {}
  for piece in (resource .. "/"):gmatch("([^:/]*)[:/]") do ids[#ids + 1] = piece end
  return {
    partition = fields[1], service = fields[2], region = fields[3],
    accountId = fields[4], resourceId = ids,
  }
end

M.lib = {
  isSet = function(v) return v ~= nil end,
  ["not"] = function(v) return not v end,
  booleanEquals = function(a, b) return type(a) == "boolean" and a == b end,
  stringEquals = function(a, b) return type(a) == "string" and a == b end,
  getAttr = get_attr,
  substring = substring,
  isValidHostLabel = is_valid_host_label,
  uriEncode = uri_encode,
  parseURL = parse_url,
  ["aws.partition"] = partition_of,
  ["aws.parseArn"] = parse_arn,
}
local LIB = M.lib

---------------------------------------------------------------------------
-- compiling the rule set into closures over a scope table
---------------------------------------------------------------------------

local function constant(v) return function() return v end end

local function lookup(name, steps)
  if steps then
    return function(scope) return walk(scope[name], steps) end
  end
  return function(scope) return scope[name] end
end

-- "{Region}.{PartitionResult#dnsSuffix}"; "{{" and "}}" are literal braces.
local function compile_template(s)
  if not find(s, "[{}]") then return constant(s) end
  local parts, buf, i, n = {}, {}, 1, #s
  local function flush()
    if #buf > 0 then parts[#parts + 1] = concat(buf) buf = {} end
  end
  while i <= n do
    local c = sub(s, i, i)
    if c == "{" and sub(s, i + 1, i + 1) == "{" then
      buf[#buf + 1] = "{"
      i = i + 2
    elseif c == "}" and sub(s, i + 1, i + 1) == "}" then
      buf[#buf + 1] = "}"
      i = i + 2
    elseif c == "{" then
      local close = find(s, "}", i + 1, true)
      if not close then error("endpoint rules: unclosed template in '" .. s .. "'", 0) end
      local inner = sub(s, i + 1, close - 1)
      local name, path = match(inner, "^([^#]+)#(.+)$")
      flush()
      local get = name and lookup(name, compile_path(path)) or lookup(inner)
      parts[#parts + 1] = { get = get, src = inner }
      i = close + 1
    elseif c == "}" then
      error("endpoint rules: unbalanced '}' in '" .. s .. "'", 0)
    else
      buf[#buf + 1] = c
      i = i + 1
    end
  end
  flush()
  return function(scope)
    local out = {}
    for k = 1, #parts do
      local p = parts[k]
      if type(p) == "string" then
        out[k] = p
      else
        local v = p.get(scope)
        if type(v) ~= "string" then
          error("endpoint rules: template value {" .. p.src .. "} is not set", 0)
        end
        out[k] = v
      end
    end
    return concat(out)
  end
end

local compile_expr

local function compile_call(e)
  local f = LIB[e.fn]
  if not f then error("endpoint rules: unsupported function " .. tostring(e.fn), 0) end
  local argv = e.argv or {}
  local n = #argv
  -- a literal getAttr path is parsed once, here
  if e.fn == "getAttr" and type(argv[2]) == "string" then
    local steps, target = compile_path(argv[2]), compile_expr(argv[1])
    return function(scope) return walk(target(scope), steps) end
  end
  local a, b, c, d = argv[1] ~= nil and compile_expr(argv[1]), argv[2] ~= nil and compile_expr(argv[2]),
    argv[3] ~= nil and compile_expr(argv[3]), argv[4] ~= nil and compile_expr(argv[4])
  if n == 0 then return function() return f() end end
  if n == 1 then return function(scope) return f(a(scope)) end end
  if n == 2 then return function(scope) return f(a(scope), b(scope)) end end
  if n == 3 then return function(scope) return f(a(scope), b(scope), c(scope)) end end
  if n == 4 then return function(scope) return f(a(scope), b(scope), c(scope), d(scope)) end end
  error("endpoint rules: " .. e.fn .. " called with " .. n .. " arguments", 0)
end

function compile_expr(e)
  local t = type(e)
  if t == "string" then return compile_template(e) end
  if t ~= "table" then return constant(e) end
  if e.ref then return lookup(e.ref) end
  if e.fn then return compile_call(e) end
  local items = {}
  for i = 1, #e do items[i] = compile_expr(e[i]) end
  return function(scope)
    local out = {}
    for i = 1, #items do out[i] = items[i](scope) end
    return out
  end
end

-- Endpoint properties: nested maps and arrays whose strings are templates.
local function compile_value(v)
  local t = type(v)
  if t == "string" then return compile_template(v) end
  if t ~= "table" then return constant(v) end
  local keys, fns = {}, {}
  for k, x in pairs(v) do
    keys[#keys + 1] = k
    fns[#fns + 1] = compile_value(x)
  end
  return function(scope)
    local out = {}
    for i = 1, #keys do out[keys[i]] = fns[i](scope) end
    return out
  end
end

local function compile_headers(h)
  local names, lists = {}, {}
  for name, values in pairs(h or {}) do
    local fns = {}
    for i = 1, #values do fns[i] = compile_expr(values[i]) end
    names[#names + 1] = name
    lists[#lists + 1] = fns
  end
  if #names == 0 then return nil end
  return function(scope)
    local out = {}
    for i = 1, #names do
      local vals, fns = {}, lists[i]
      for j = 1, #fns do vals[j] = fns[j](scope) end
      out[names[i]] = vals
    end
    return out
  end
end

local compile_rules

local function compile_rule(r)
  local conds = {}
  for i, c in ipairs(r.conditions or {}) do
    conds[i] = { eval = compile_call(c), assign = c.assign }
  end
  local rule = { type = r.type, conds = conds }
  if r.type == "endpoint" then
    local ep = r.endpoint
    rule.url = compile_expr(ep.url)
    rule.properties = compile_value(ep.properties or {})
    rule.headers = compile_headers(ep.headers)
  elseif r.type == "error" then
    rule.message = compile_expr(r.error)
  elseif r.type == "tree" then
    rule.rules = compile_rules(r.rules)
  else
    error("endpoint rules: unknown rule type " .. tostring(r.type), 0)
  end
  return rule
end

function compile_rules(list)
  local out = {}
  for i, r in ipairs(list) do out[i] = compile_rule(r) end
  return out
end

---------------------------------------------------------------------------
-- evaluation
---------------------------------------------------------------------------

-- A condition holds unless its value is nil or false; an assigned name is
-- visible to the later conditions and, for a tree, to its sub-rules.
local function conditions_hold(conds, scope)
  for i = 1, #conds do
    local c = conds[i]
    local v = c.eval(scope)
    if v == nil or v == false then
      for j = 1, i - 1 do
        if conds[j].assign then scope[conds[j].assign] = nil end
      end
      return false
    end
    if c.assign then scope[c.assign] = v end
  end
  return true
end

local function signing_of(properties, scope, default_name)
  local region, name = scope.Region, default_name
  local schemes = type(properties) == "table" and properties.authSchemes
  if type(schemes) == "table" then
    for i = 1, #schemes do
      local s = schemes[i]
      if type(s) == "table" and s.name == "sigv4" then
        region = s.signingRegion or region
        name = s.signingName or name
        break
      end
    end
  end
  return region, name
end

-- Returns an endpoint table, or nil and an error message, or nothing when no
-- rule of the list matched.
local function evaluate(rules, scope, signing_name)
  for i = 1, #rules do
    local r = rules[i]
    if conditions_hold(r.conds, scope) then
      if r.type == "endpoint" then
        local url = r.url(scope)
        if type(url) ~= "string" then error("endpoint rules: endpoint url is not a string", 0) end
        local properties = r.properties(scope)
        local region, name = signing_of(properties, scope, signing_name)
        return {
          url = url,
          headers = r.headers and r.headers(scope) or nil,
          properties = properties,
          signing_region = region,
          signing_name = name,
        }
      elseif r.type == "error" then
        local msg = r.message(scope)
        return nil, type(msg) == "string" and msg or "endpoint rules: error rule without a message"
      end
      -- tree rules are terminal: once entered, one of their rules must match
      local ep, err = evaluate(r.rules, scope, signing_name)
      if ep or err then return ep, err end
      return nil, "endpoint rules exhausted: no rule of a matching tree applies"
    end
  end
end

local TYPE_OF = { string = "string", boolean = "boolean" }

local function check_param(decls, name, v)
  local decl = decls[name]
  if not decl then return "unknown endpoint parameter " .. tostring(name) end
  if decl.type == "stringArray" then
    if type(v) ~= "table" then return "endpoint parameter " .. name .. " must be a list of strings" end
    for i = 1, #v do
      if type(v[i]) ~= "string" then return "endpoint parameter " .. name .. " must be a list of strings" end
    end
  elseif type(v) ~= TYPE_OF[decl.type] then
    return "endpoint parameter " .. name .. " must be a " .. tostring(decl.type) .. ", got " .. type(v)
  end
end

local function copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = copy(x) end
  return out
end

-- Applies declared defaults, checks types and required parameters, evaluates.
local function run(compiled, params)
  local decls = compiled.parameters
  local scope = {}
  for name, v in pairs(params) do
    local perr = check_param(decls, name, v)
    if perr then return nil, perr end
    scope[name] = v
  end
  for name, decl in pairs(decls) do
    if scope[name] == nil and decl.default ~= nil then scope[name] = copy(decl.default) end
    if scope[name] == nil and decl.required then
      return nil, "missing required endpoint parameter " .. name
    end
  end
  local ok, ep, err = pcall(evaluate, compiled.rules, scope, compiled.signing_name)
  if not ok then return nil, tostring(ep) end
  if ep == nil and err == nil then return nil, "no endpoint rule matched the parameters" end
  return ep, err
end

--- Compiles a decision-tree rule set (the decoded smithy.rules#endpointRuleSet
-- document) into a resolver function(params) -> endpoint | nil, message.
-- `signing_name` is the service's SigV4 name when no authSchemes say otherwise.
-- Raises when the rule set uses a function or syntax this engine lacks.
function M.compile(rs, signing_name)
  if type(rs) ~= "table" or type(rs.rules) ~= "table" then
    error("bad argument #1 to 'compile' (rule set table expected)", 2)
  end
  local compiled = {
    parameters = rs.parameters or {},
    rules = compile_rules(rs.rules),
    signing_name = signing_name,
  }
  return function(params)
    if type(params) ~= "table" then
      error("bad argument #1 to resolver (table expected, got " .. type(params) .. ")", 2)
    end
    return run(compiled, params)
  end
end

local default_compiled = {
  parameters = PARAMS,
  rules = compile_rules(rule_set.rules),
  signing_name = data.signing_name,
}

--- Resolves the endpoint for one set of rule-set parameters (names as in the
-- model: Region, UseFIPS, UseDualStack, Endpoint, StreamARN, ...). Returns
-- { url, headers, properties, signing_region, signing_name } or nil, message.
-- signing_region/signing_name come from a sigv4 entry of the endpoint's
-- authSchemes property, else from Region and the service's SigV4 name.
function M.resolve(params)
  if type(params) ~= "table" then
    error("bad argument #1 to 'resolve' (table expected, got " .. type(params) .. ")", 2)
  end
  return run(default_compiled, params)
end

---------------------------------------------------------------------------
-- parameters of one call
---------------------------------------------------------------------------

local function env_value(env, name)
  local v = env(name)
  if v == nil or v == "" then return nil end
  return v
end

local function env_bool(env, name)
  local v = env_value(env, name)
  if v == nil then return nil end
  v = lower(v)
  if v == "true" then return true end
  if v == "false" then return false end
  return nil
end

--- Builds the rule-set parameters for one call of operation `op` (API name or
-- the kinesis.model operation table) with `input` (the request table) and the
-- client `config` (region, use_fips, use_dualstack, endpoint, account_id,
-- account_id_endpoint_mode). Unset config falls back to the environment:
-- AWS_REGION / AWS_DEFAULT_REGION, AWS_USE_FIPS_ENDPOINT,
-- AWS_USE_DUALSTACK_ENDPOINT, AWS_ENDPOINT_URL_KINESIS / AWS_ENDPOINT_URL
-- (skipped when AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true),
-- AWS_ACCOUNT_ID_ENDPOINT_MODE. `env` (default os.getenv) is for tests.
function M.params_for(op, input, config, env)
  local model = require "kinesis.model"
  if type(op) == "string" then
    local found = model.operations[op]
    if not found then error("unknown operation " .. op, 2) end
    op = found
  elseif type(op) ~= "table" then
    error("bad argument #1 to 'params_for' (operation name or table expected)", 2)
  end
  input, config, env = input or {}, config or {}, env or getenv
  local p = {}
  -- smithy.rules#staticContextParams
  p.OperationType = op.operation_type
  -- smithy.rules#contextParam on input members
  local shape = op.input and model.shapes[op.input]
  if shape and shape.members then
    for member, m in pairs(shape.members) do
      if m.context_param and input[member] ~= nil then p[m.context_param] = input[member] end
    end
  end
  -- built-ins: AWS::Region, AWS::UseFIPS, AWS::UseDualStack, SDK::Endpoint,
  -- AWS::Auth::AccountId, AWS::Auth::AccountIdEndpointMode
  p.Region = config.region or env_value(env, "AWS_REGION") or env_value(env, "AWS_DEFAULT_REGION")
  p.UseFIPS = config.use_fips
  if p.UseFIPS == nil then p.UseFIPS = env_bool(env, "AWS_USE_FIPS_ENDPOINT") end
  p.UseDualStack = config.use_dualstack
  if p.UseDualStack == nil then p.UseDualStack = env_bool(env, "AWS_USE_DUALSTACK_ENDPOINT") end
  p.Endpoint = config.endpoint
  if p.Endpoint == nil and env_bool(env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") ~= true then
    p.Endpoint = env_value(env, "AWS_ENDPOINT_URL_KINESIS") or env_value(env, "AWS_ENDPOINT_URL")
  end
  p.AccountId = config.account_id
  p.AccountIdEndpointMode = config.account_id_endpoint_mode
    or env_value(env, "AWS_ACCOUNT_ID_ENDPOINT_MODE")
  -- only what this rule set declares, so resolve() accepts the table
  for name in pairs(p) do
    if not PARAMS[name] then p[name] = nil end
  end
  return p
end

return M
