-- kinesis.client - the request pipeline: validate -> build -> sign -> send ->
-- decode, for every operation of the model. Each operation is a method named
-- in snake_case (client:put_records{...}) and reachable by its API name
-- (client:call("PutRecords", {...})). Operations never raise for AWS,
-- network or input problems: they return nil, err (kinesis.errors).

local model = require "kinesis.model"
local codec = require "kinesis.codec"
local errors = require "kinesis.errors"
local core = require "kinesis.core"
local retry = require "kinesis.retry"
local credentials = require "kinesis.credentials"
local runtime = require "kinesis.runtime"
local log = require "kinesis.log"

local format, type, tostring, pairs, ipairs, setmetatable, error =
  string.format, type, tostring, pairs, ipairs, setmetatable, error
local floor, abs = math.floor, math.abs
local getenv = os.getenv

local shapes, operations = model.shapes, model.operations

local M = {}

-- operations by API name and by snake_case method name
local by_name = {}
for name, op in pairs(operations) do
  by_name[name] = op
  by_name[op.method] = op
end
M.operations = by_name

-- The service a client speaks: its model, its wire protocol and where its
-- endpoint comes from (nil: the Kinesis rule set). Kinesis is the default;
-- kinesis.dynamodb builds clients for DynamoDB's descriptor, so both share
-- signing, transports, retries, credentials, logging and errors.
local KINESIS = {
  name = "kinesis", shapes = shapes, operations = by_name,
  target_prefix = model.target_prefix, json_version = model.json_version,
  signing_name = model.signing_name, endpoint_env = "AWS_ENDPOINT_URL_KINESIS",
}
M.KINESIS = KINESIS

local Client = {}
Client.__index = Client
Client.__name = "kinesis.client"

-- client.put_record{...} (a dot instead of a colon) passes the parameters
-- as self: say so instead of failing inside the pipeline
local function check_self(self, method)
  if type(self) ~= "table" or self.build_request ~= Client.build_request then
    error(format("kinesis: call methods with a colon: client:%s(...), not client.%s(...)", method, method), 3)
  end
end

--- Splits an endpoint URL into scheme, host, port and the Host header value.
local function parse_endpoint(url)
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.+)$")
  if not scheme then return nil, "endpoint must be an absolute http(s) URL: " .. url end
  scheme = scheme:lower()
  if scheme ~= "http" and scheme ~= "https" then
    return nil, "endpoint scheme must be http or https: " .. url
  end
  local hostport, path = rest:match("^([^/]+)(.*)$")
  if not hostport then return nil, "endpoint has no host: " .. url end
  local host, port = hostport:match("^(%[.+%]):(%d+)$")
  if not host then host, port = hostport:match("^([^:]+):(%d+)$") end
  if not host then host = hostport end
  local default = scheme == "https" and "443" or "80"
  local host_header = host
  if port and port ~= default then host_header = host .. ":" .. port end
  if path == "" then path = "/" end
  return {
    url = scheme .. "://" .. hostport .. path, scheme = scheme, host = host,
    port = tonumber(port or default), host_header = host_header, path = path,
  }
end
M.parse_endpoint = parse_endpoint

local function env_nonempty(name)
  local v = getenv(name)
  if v == "" then return nil end
  return v
end

local function env_truthy(name)
  local v = getenv(name)
  return v ~= nil and v:lower() == "true"
end

local function resolve_region(cfg)
  return cfg.region or env_nonempty("AWS_REGION") or env_nonempty("AWS_DEFAULT_REGION")
end

local endpoints = require "kinesis.endpoints"

-- rule-set parameters in a fixed order: the key of the endpoint cache
local ENDPOINT_KEYS = {}
for name in pairs(endpoints.parameters) do ENDPOINT_KEYS[#ENDPOINT_KEYS + 1] = name end
table.sort(ENDPOINT_KEYS)
local function no_env() return nil end

--- The endpoint for `op` called with `params`: the configured URL, or the
-- model's rule set (partitions, FIPS, dual-stack, account endpoints from
-- ARNs). Resolutions are cached by their parameters.
function Client:endpoint_for(op, params)
  if self.endpoint then return self.endpoint end
  if self.service.endpoint then return self.service.endpoint(self, op, params) end
  local p = endpoints.params_for(op, params, self.endpoint_config, no_env)
  local parts = {}
  for i, k in ipairs(ENDPOINT_KEYS) do parts[i] = tostring(p[k]) end
  local key = table.concat(parts, "\0")
  local cache = self.endpoint_cache
  local ep = cache[key]
  if ep then return ep end
  local r, err = endpoints.resolve(p)
  if not r then return nil, err end
  local perr
  ep, perr = parse_endpoint(r.url)
  if not ep then return nil, perr end
  ep.signing_region = r.signing_region or self.region
  ep.signing_name = r.signing_name
  if r.headers then
    ep.headers = {}
    for name, values in pairs(r.headers) do ep.headers[#ep.headers + 1] = { name, table.concat(values, ",") } end
  end
  self.endpoint_cache_size = self.endpoint_cache_size + 1
  if self.endpoint_cache_size > 256 then
    self.endpoint_cache, self.endpoint_cache_size = {}, 1
  end
  self.endpoint_cache[key] = ep
  if self.logger then
    self.logger { event = "endpoint", op = op.name, url = ep.url, signing_region = ep.signing_region }
  end
  return ep
end

--- Hands an event table to the configured logger (kinesis.log); a no-op
-- when logging is off. Hot paths test self.logger before building events.
function Client:log(ev)
  local logger = self.logger
  if logger then logger(ev) end
end

--- The current credentials from the provider chain (kinesis.credentials):
-- explicit, environment, web identity, profiles, container, IMDSv2.
function Client:credentials()
  return self.credential_provider:get()
end

function Client:transport()
  local t = self._transport
  if t then return t end
  local spec = self.config.transport
  if spec == nil then
    -- inside nginx the cosocket transport; the blocking one everywhere else
    spec = runtime.default_transport()
  end
  if type(spec) == "table" then
    t = spec
  elseif spec == "curl" then
    t = require("kinesis.transport.curl").new {
      timeout = self.config.timeout, verify = self.config.verify, cafile = self.config.cafile,
    }
  elseif spec == "cosocket" then
    t = require("kinesis.transport.cosocket").new {
      timeout = self.config.timeout, verify = self.config.verify, cafile = self.config.cafile,
      pool = self.config.pool,
    }
  else
    error("kinesis: unknown transport " .. tostring(spec), 3)
  end
  self._transport = t
  return t
end

local USER_AGENT = "lua-kinesis/" .. tostring(core._VERSION) .. " " .. tostring(_VERSION):gsub(" ", "/")

-- The headers every request for (endpoint, operation) starts with: the
-- same strings and pairs each call, so built once and shared by the
-- requests (nothing changes a pair after; each request gets its own array,
-- to which the signer appends its headers). Weak keys: endpoints from the
-- rule set come and go with the endpoint cache.
local function base_headers(self, ep, op)
  local by_ep = self.header_cache[ep]
  if not by_ep then
    by_ep = {}
    self.header_cache[ep] = by_ep
  end
  local base = by_ep[op]
  if not base then
    base = {
      { "Host", ep.host_header },
      { "Content-Type", "application/x-amz-json-" .. self.service.json_version },
      { "X-Amz-Target", self.service.target_prefix .. "." .. op.name },
      { "User-Agent", USER_AGENT },
    }
    if ep.headers then
      for _, h in ipairs(ep.headers) do base[#base + 1] = h end
    end
    by_ep[op] = base
  end
  return base
end

--- Builds the signed HTTP request for `op` with `body` (the encoded
-- `params`); nil, err on failure.
function Client:build_request(op, body, params)
  local ep, eerr = self:endpoint_for(op, params)
  if not ep then
    return nil, errors.new { kind = "validation", code = "EndpointError", message = tostring(eerr), op = op.name }
  end
  local creds, cerr = self.credential_provider:get()
  if creds and creds ~= self.last_credentials then
    -- first use or a refresh: say where they came from, never what they are
    self.last_credentials = creds
    if self.logger then
      self.logger { event = "credentials", op = op.name, source = tostring(creds.source),
                    expiration = creds.expiration }
    end
  end
  if not creds then
    if type(cerr) == "table" then
      cerr.op = op.name
      return nil, cerr
    end
    return nil, errors.new { kind = "validation", code = "CredentialsError", message = tostring(cerr), op = op.name }
  end
  local base = base_headers(self, ep, op)
  local headers
  if #base == 4 then
    -- room for the signer's two or three in the array part from the start
    headers = { base[1], base[2], base[3], base[4], nil, nil, nil }
  else
    headers = {}
    for i = 1, #base do headers[i] = base[i] end
  end
  -- one C call signs and appends X-Amz-Date, the token and Authorization
  local signed, serr = self.signer:sign_headers(headers, "POST", ep.path, body,
    ep.signing_region or self.region, ep.signing_name or self.service.signing_name,
    creds.access_key_id, creds.secret_access_key, creds.session_token,
    floor((self.clock and self.clock() or os.time()) + self.clock_offset))
  if not signed then
    return nil, errors.new { kind = "validation", code = "SigningError", message = tostring(serr), op = op.name }
  end
  return { method = "POST", url = ep.url, headers = headers, body = body }
end

--- Sends a built request and turns the response into (out, nil, meta) or (nil, err, meta).
-- decode (optional) reads a 2xx body in place of the model's codec:
-- decode(body) -> out | nil, message (a protocol error, as the codec's).
function Client:send(op, req, decode)
  local shapes = self.service.shapes
  local resp, terr = self:transport():send(req)
  if not resp then
    return nil, errors.transport(op.name, terr or {})
  end
  -- attempts = nil: room for the count Client:attempts adds
  local meta = { status = resp.status, request_id = resp.headers and resp.headers["x-amzn-requestid"],
                 attempts = nil }
  if resp.status < 200 or resp.status >= 300 then
    local err = errors.from_response(op.name, resp, self.credential_provider)
    err.server_time = M.parse_http_date(resp.headers and resp.headers["date"])
    return nil, err, meta
  end
  local out, derr
  if decode then out, derr = decode(resp.body) else out, derr = codec.decode(shapes, op.output, resp.body) end
  if not out then
    -- its framing may be off too (a short Content-Length): not reused
    local t = self._transport
    if t and t.drop_connection then t:drop_connection() end
    return nil, errors.protocol(op.name, derr, { status = resp.status, request_id = meta.request_id }), meta
  end
  return out, nil, meta
end

--- Calls operation `name` (API name or snake_case) with `params`.
function Client:call(name, params)
  check_self(self, "call")
  local shapes = self.service.shapes
  local op = self.service.operations[name]
  if not op then error("kinesis: unknown operation " .. tostring(name), 2) end
  if params ~= nil and type(params) ~= "table" then
    error("kinesis: " .. op.name .. " expects a table of parameters", 2)
  end
  params = params or {}
  -- one C pass: every rule of the model checked while the body is written
  local body, verr = codec.encode_input(shapes, op, params)
  if not body then return nil, errors.validation(op.name, verr) end
  if op.event_stream then
    return nil, errors.protocol(op.name,
      op.name .. " returns an event stream: use client:subscribe_to_shard",
      { code = "EventStreamNotSupported" })
  end
  return self:attempts(op, body, params)
end

-- codes by which a service says the request's clock is off
local SKEW_CODES = {
  RequestTimeTooSkewed = true, RequestExpired = true, RequestInTheFuture = true,
  InvalidSignatureException = true, SignatureDoesNotMatch = true, AuthFailure = true,
}

--- Sends `body` for `op` with the retry policy; returns out, err, meta where
-- meta = { attempts =, status =, request_id = }. decode: as for Client:send.
function Client:attempts(op, body, params, decode)
  local policy = self.retry
  local sleep, now = self:runtime()
  local total = self.timeouts.total
  local started = now()
  local attempt, cost, skew_fixed = 0, nil, false
  while true do
    attempt = attempt + 1
    if policy.limiter then
      local wait = policy.limiter:acquire()
      if wait > 0 then sleep(wait) end
    end
    local req, err = self:build_request(op, body, params)
    if not req then return nil, err, { attempts = attempt } end
    if total then
      local left = total - (now() - started)
      if left <= 0 then
        return nil, errors.new { kind = "transport", code = "Timeout", op = op.name, retryable = false,
          message = format("total timeout of %g s exceeded after %d attempts", total, attempt - 1) },
          { attempts = attempt - 1 }
      end
      req.timeout = self.timeouts.request and math.min(self.timeouts.request, left) or left
    end
    local out, meta
    local logger, sent_at = self.logger, nil
    if logger then
      sent_at = now()
      logger { event = "request", op = op.name, attempt = attempt, url = req.url, bytes = #body }
    end
    out, err, meta = self:send(op, req, decode)
    meta = meta or {}
    meta.attempts = attempt
    if logger then
      logger { event = "response", op = op.name, attempt = attempt, status = meta.status,
               code = err and err.code or nil, request_id = meta.request_id,
               ms = (now() - sent_at) * 1000 }
      if err and err.throttling then logger { event = "throttle", op = op.name, code = err.code } end
    end
    if policy.limiter then policy.limiter:update(err ~= nil and err.throttling == true) end
    if out then
      policy:release(cost)
      return out, nil, meta
    end
    err.attempts = attempt
    local again = false
    if not skew_fixed and SKEW_CODES[err.code] and err.server_time then
      -- learn the offset from the server's Date and try once more at once
      local offset = err.server_time - os.time()
      if abs(offset - self.clock_offset) >= 60 then
        self.clock_offset = offset
        skew_fixed = true
        if self.logger then self.logger { event = "clock_skew", op = op.name, offset = offset } end
        again = attempt < policy.max_attempts
      end
    end
    if not again then
      if not err.retryable or attempt >= policy.max_attempts then return nil, err, meta end
      local c = policy:acquire(err)
      if not c then
        err.retry_quota_exceeded = true
        return nil, err, meta
      end
      cost = c
      local d = policy:delay(attempt)
      if total and now() - started + d >= total then return nil, err, meta end
      if self.logger then
        self.logger { event = "retry", op = op.name, attempt = attempt, reason = err.code, delay = d }
      end
      sleep(d)
    end
  end
end

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12 }

--- Parses an HTTP Date (RFC 7231 IMF-fixdate) to epoch seconds, or nil.
function M.parse_http_date(s)
  if type(s) ~= "string" then return nil end
  local d, mon, y, hh, mm, ss = s:match("^%a+, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  local m = MONTHS[mon]
  if not m then return nil end
  y, m, d = tonumber(y), m, tonumber(d)
  -- days from the civil date (proleptic Gregorian), independent of local time
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + tonumber(hh) * 3600 + tonumber(mm) * 60 + tonumber(ss)
end

for name, op in pairs(operations) do
  local method = op.method
  Client[method] = function(self, params)
    check_self(self, method)
    return self:call(name, params)
  end
end

--- Enhanced fan-out: an iterator of SubscribeToShard events (kinesis.subscribe).
-- opts: event_timeout (seconds of silence before a Timeout), buffer (bytes
-- held unread before the transfer pauses)
function Client:subscribe_to_shard(params, opts)
  check_self(self, "subscribe_to_shard")
  return require("kinesis.subscribe").subscribe_to_shard(self, params, opts)
end

--- Keeps reading a shard across subscription ends (kinesis.subscribe).
function Client:subscribe(params, opts)
  check_self(self, "subscribe")
  return require("kinesis.subscribe").subscribe(self, params, opts)
end

--- Iterator over the response pages of a paginated operation.
function Client:pages(name, params)
  check_self(self, "pages")
  local op = self.service.operations[name]
  if not op then error("kinesis: unknown operation " .. tostring(name), 2) end
  return require("kinesis.paging").pages(self, op, params)
end

--- Iterator over the items (shards, streams, consumers, tags, channels).
function Client:items(name, params)
  check_self(self, "items")
  local op = self.service.operations[name]
  if not op then error("kinesis: unknown operation " .. tostring(name), 2) end
  return require("kinesis.paging").items(self, op, params)
end

--- Waits until a waiter's success state; see kinesis.waiters.
function Client:wait(name, params, opts)
  check_self(self, "wait")
  return require("kinesis.waiters").wait(self, name, params, opts)
end

--- The sleep and clock functions for the calling context: yielding inside
-- kinesis.run and nginx, blocking outside (kinesis.runtime).
function Client:runtime()
  return runtime.sleep, runtime.now
end

--- A KCL-class consumer of a stream (kinesis.consumer; docs/consumer.md).
function Client:consumer(opts) return require("kinesis.consumer").new(self, opts) end

--- A KPL-class producer for a stream (kinesis.producer; docs/producer.md).
function Client:producer(opts) return require("kinesis.producer").new(self, opts) end

function Client:close()
  if self._transport and self._transport.close then self._transport:close() end
  self._transport = nil
  self.credential_provider:close()
end

function Client:__tostring()
  return format("kinesis.client(%s, %s)", tostring(self.region),
    self.endpoint and self.endpoint.url or "endpoint from the rule set")
end

-- The credential providers' HTTP (IMDS, container, STS): cosockets inside
-- nginx, curl elsewhere.
local function credential_transport(topts)
  return require("kinesis.transport." .. runtime.default_transport()).new(topts)
end

---------------------------------------------------------------- configuration
-- Every option of kinesis.new and the type it takes: an unknown key or a
-- wrong type is refused at kinesis.new (ConfigError naming the key), as an
-- unknown request member is refused before a request is sent.

local function config_error(message)
  return errors.new { kind = "validation", code = "ConfigError", message = message }
end

local function one_of(...)
  local allowed = { ... }
  return function(v)
    for _, a in ipairs(allowed) do if v == a then return true end end
    local names = {}
    for i, a in ipairs(allowed) do names[i] = format("%q", a) end
    return false, "must be one of " .. table.concat(names, ", ")
  end
end

local function typed(...)
  local types = { ... }
  return function(v)
    for _, t in ipairs(types) do if type(v) == t then return true end end
    return false, "must be a " .. table.concat(types, " or a ") .. " (got " .. type(v) .. ")"
  end
end

local function seconds(v)
  if type(v) ~= "number" or v ~= v or v < 0 then return false, "must be a number of seconds >= 0" end
  return true
end

local function fields_of(spec, what)
  return function(v)
    if type(v) ~= "table" then return false, "must be a table (got " .. type(v) .. ")" end
    for k, x in pairs(v) do
      local check = spec[k]
      if not check then
        local names = {}
        for n in pairs(spec) do names[#names + 1] = n end
        table.sort(names)
        return false, format("has an unknown key %s (%s takes %s)", tostring(k), what, table.concat(names, ", "))
      end
      local ok, why = check(x)
      if not ok then return false, why, tostring(k) end
    end
    return true
  end
end

local CONFIG = {
  region = typed("string"),
  endpoint = function(v)
    if v == false or type(v) == "string" then return true end
    return false, "must be a URL string (got " .. type(v) .. ")"
  end,
  credentials = typed("table", "function"),
  profile = typed("string"),
  retry = fields_of({
    mode = one_of("standard", "adaptive", "off"), max_attempts = typed("number"),
    base = seconds, max_backoff = seconds,
  }, "retry"),
  timeout = fields_of({ connect = seconds, request = seconds, total = seconds, event = seconds }, "timeout"),
  transport = function(v)
    if v == "curl" or v == "cosocket" then return true end
    if type(v) == "table" and type(v.send) == "function" then return true end
    return false, "must be \"curl\", \"cosocket\" or a table with a send function"
  end,
  verify = typed("boolean"),
  cafile = typed("string"),
  pool = function(v)
    if v == false or type(v) == "table" then return true end
    return false, "must be a table or false"
  end,
  clock = typed("function"),
  use_fips = typed("boolean"),
  use_dualstack = typed("boolean"),
  account_id = typed("string"),
  account_id_endpoint_mode = one_of("preferred", "required", "disabled"),
  imds_v1_fallback = typed("boolean"),
  log = function(v)
    if v == false or type(v) == "function" or v == "debug" then return true end
    return false, "must be a function receiving event tables, \"debug\" or false"
  end,
}

--- Checks a kinesis.new configuration: true, or nil, err (ConfigError).
function M.check_config(cfg)
  if type(cfg) ~= "table" then
    return nil, config_error("kinesis.new expects a table of options (got " .. type(cfg) .. ")")
  end
  for k, v in pairs(cfg) do
    local check = CONFIG[k]
    if not check then
      local names = {}
      for n in pairs(CONFIG) do names[#names + 1] = n end
      table.sort(names)
      local err = config_error(format("unknown option %s (options: %s)", tostring(k), table.concat(names, ", ")))
      err.field = tostring(k)
      return nil, err
    end
    local ok, why, sub = check(v)
    if not ok then
      local field = sub and (tostring(k) .. "." .. sub) or tostring(k)
      local err = config_error(format("option %s %s", field, why))
      err.field = field
      return nil, err
    end
  end
  return true
end

--- Creates a client. See README "Configuration" for every option.
-- `service`: a descriptor like KINESIS (the default); see kinesis.dynamodb.
function M.new(cfg, service)
  local svc = service or KINESIS
  cfg = cfg or {}
  local valid, cerr = M.check_config(cfg)
  if not valid then return nil, cerr end
  local region = resolve_region(cfg) or credentials.region_from_profile(cfg.profile)
  local url = cfg.endpoint
  if not url and not env_truthy("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") then
    url = env_nonempty(svc.endpoint_env) or env_nonempty("AWS_ENDPOINT_URL")
  end
  if not region then
    if not url then
      return nil, config_error("no region: set region, AWS_REGION or AWS_DEFAULT_REGION")
    end
    region = "us-east-1"
  end
  local use_fips, use_dualstack = cfg.use_fips, cfg.use_dualstack
  if use_fips == nil then use_fips = env_truthy("AWS_USE_FIPS_ENDPOINT") end
  if use_dualstack == nil then use_dualstack = env_truthy("AWS_USE_DUALSTACK_ENDPOINT") end
  local ep
  if url and not use_fips and not use_dualstack then
    -- a configured endpoint is used as it is, for every operation
    local perr
    ep, perr = parse_endpoint(url)
    if not ep then
      return nil, config_error(perr)
    end
  end
  local timeouts = cfg.timeout or {}
  local policy, rerr = retry.new(cfg.retry, core.monotime)
  if not policy then
    return nil, config_error(rerr)
  end
  local self = setmetatable({
    config = cfg, service = svc, region = region, endpoint = ep, signer = core.signer(), clock = cfg.clock,
    clock_offset = 0, retry = policy, timeouts = timeouts,
    endpoint_config = {
      region = region, use_fips = use_fips, use_dualstack = use_dualstack, endpoint = url,
      account_id = cfg.account_id,
      account_id_endpoint_mode = cfg.account_id_endpoint_mode or env_nonempty("AWS_ACCOUNT_ID_ENDPOINT_MODE"),
    },
    endpoint_cache = {}, endpoint_cache_size = 0, header_cache = setmetatable({}, { __mode = "k" }),
  }, Client)
  local ok, provider = pcall(credentials.chain, {
    credentials = cfg.credentials, profile = cfg.profile, region = region,
    imds_v1_fallback = cfg.imds_v1_fallback, verify = cfg.verify, cafile = cfg.cafile,
    transport_factory = credential_transport,
    -- the providers' retries and SSO refreshes go to the client's log
    log = function(ev) self:log(ev) end,
  })
  if not ok then
    return nil, config_error(tostring(provider))
  end
  self.credential_provider = provider
  self.logger = log.new(cfg.log, provider)
  return self
end

M.Client = Client
return M
