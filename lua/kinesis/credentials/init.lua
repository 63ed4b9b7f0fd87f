-- kinesis.credentials - the default credential provider chain, in the AWS
-- SDKs' order: explicit -> environment -> web identity -> shared config and
-- credentials files (static, process, roles, IAM Identity Center) ->
-- container -> EC2 instance metadata. One file per source beside this one;
-- here: the chain, the cache and its refresh (early, one at a time: others
-- park on the runtime until it ends, and keep valid credentials if it
-- fails), the providers' HTTP with kinesis.retry, and the redactor.
--
--   local provider = require("kinesis.credentials").chain{ region = "us-east-1" }
--   local creds, err = provider:get()

local errors = require "kinesis.errors"
local common = require "kinesis.credentials.common"

local type, tostring, pairs, ipairs, pcall, setmetatable, getmetatable =
  type, tostring, pairs, ipairs, pcall, setmetatable, getmetatable
local format, find, sub = string.format, string.find, string.sub
local concat = table.concat
local floor = math.floor
local lazy, nonempty = common.lazy, common.nonempty

local M = {}

-- Defaults (seconds). The SDKs refresh 5-15 minutes early; IMDS and
-- container credentials are rotated well before that.
M.REFRESH_WINDOW = 300     -- start refreshing this long before expiration
M.EXPIRY_MARGIN = 60       -- closer than this to expiration counts as expired
M.RETRY_BACKOFF = 10       -- after a failed early refresh, wait before the next
M.CUSTOM_TTL = 900         -- a custom provider's credentials without expiration
M.REFRESH_WAIT = 30        -- longest a caller waits for another's refresh

--- The retry policy (kinesis.retry, standard mode) of each kind of call a
-- provider makes; max_attempts comes from the provider (IMDS: its
-- AWS_METADATA_SERVICE_NUM_ATTEMPTS) unless the chain's `retry` option sets
-- it. total: seconds for all attempts of one call.
M.RETRY = {
  sts = { base = 0.1, max_backoff = 20, total = 30 },
  sso = { base = 0.1, max_backoff = 20, total = 30 },
  imds = { base = 0.05, max_backoff = 1, total = 10 },
  container = { base = 0.05, max_backoff = 1, total = 15 },
}

---------------------------------------------------------------- the chain

local Chain = {}
Chain.__index = Chain
Chain.__name = "kinesis.credentials.chain"

--- Builds a provider. Reads nothing until get(). opts (all optional):
-- profile, region, credentials (table | function | object with :get()),
-- imds_v1_fallback, sts_endpoint, transport_factory(topts, kind) ->
-- transport, retry ({ [kind] = policy config or kinesis.retry policy },
-- kind: sts, sso, imds, container), log (function(event): retries and SSO
-- token refreshes, in kinesis.log's event shape), and for tests: env (table or function
-- name -> value, instead of os.getenv), clock (epoch seconds),
-- container_endpoint (base URL for AWS_CONTAINER_CREDENTIALS_RELATIVE_URI),
-- refresh_window, expiry_margin, retry_backoff, verify, cafile.
function M.chain(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("kinesis.credentials.chain: options table expected, got " .. type(opts), 2)
  end
  local c = opts.credentials
  if c ~= nil and type(c) ~= "table" and type(c) ~= "function" then
    error("kinesis.credentials.chain: credentials must be a table or a function, got " .. type(c), 2)
  end
  for kind, given in pairs(opts.retry or {}) do
    if not M.RETRY[kind] then
      error("kinesis.credentials.chain: retry." .. tostring(kind) .. " is not one of sts, sso, imds, container", 2)
    end
    if type(given) ~= "table" then
      error("kinesis.credentials.chain: retry." .. kind .. " must be a table (a policy or its settings)", 2)
    end
    if type(given.delay) ~= "function" then
      local cfg = { mode = "standard" }
      for k, v in pairs(given) do if k ~= "total" then cfg[k] = v end end
      local ok, err = lazy("kinesis.retry").new(cfg, os.time)
      if not ok then error("kinesis.credentials.chain: retry." .. kind .. ": " .. tostring(err), 2) end
    end
  end
  return setmetatable({
    opts = opts,
    refresh_window = opts.refresh_window or M.REFRESH_WINDOW,
    expiry_margin = opts.expiry_margin or M.EXPIRY_MARGIN,
    retry_backoff = opts.retry_backoff or M.RETRY_BACKOFF,
    transports = {},
    policies = {},
    secrets = {},   -- the last MAX_SECRETS secret strings seen, for redact()
    refresh_key = {},
  }, Chain)
end

--- Hands an event to opts.log (a no-op without one).
function Chain:log(ev)
  local log = self.opts.log
  if log then log(ev) end
end

--- An on_retry for common.retrying that logs a "retry" event for `op`
-- (nil: the error's own op).
function Chain:retry_logger(op)
  if not self.opts.log then return nil end
  return function(n, delay, err)
    self:log { event = "retry", op = op or err.op, attempt = n, reason = err.code, delay = delay }
  end
end

function Chain:now()
  local clock = self.opts.clock
  return clock and clock() or os.time()
end

-- A getenv that honours opts.env; empty values (and false in an env
-- table) count as unset.
function Chain:getenv(name)
  local env = self.opts.env
  local v
  if type(env) == "table" then v = env[name]
  elseif type(env) == "function" then v = env(name)
  else v = os.getenv(name) end
  if v == nil or v == false then return nil end
  return nonempty(tostring(v))
end

local MAX_SECRETS = 32

function Chain:remember_secret(s)
  if type(s) ~= "string" or #s < 4 then return end
  local list = self.secrets
  for i = 1, #list do
    if list[i] == s then return end
  end
  if #list >= MAX_SECRETS then table.remove(list, 1) end
  list[#list + 1] = s
end

function Chain:remember(creds)
  if creds then
    self:remember_secret(creds.secret_access_key)
    self:remember_secret(creds.session_token)
  end
  return creds
end

-- Replaces every secret this chain has seen with "<redacted>".
function Chain:redact(text)
  text = tostring(text)
  for _, s in ipairs(self.secrets) do
    local from = 1
    while true do
      local i, j = find(text, s, from, true)
      if not i then break end
      text = sub(text, 1, i - 1) .. "<redacted>" .. sub(text, j + 1)
      from = i + 10
    end
  end
  return text
end

-- One transport per purpose, made on first use and kept (keep-alive).
function Chain:transport(kind, timeout)
  local t = self.transports[kind]
  if t then return t end
  local topts = { timeout = timeout, verify = self.opts.verify, cafile = self.opts.cafile }
  if self.opts.transport_factory then
    t = self.opts.transport_factory(topts, kind)
  else
    t = lazy("kinesis.transport.curl").new(topts)
  end
  self.transports[kind] = t
  return t
end

function Chain:signer()
  if not self._signer then self._signer = lazy("kinesis.core").signer() end
  return self._signer
end

--- The retry policy and total budget for `kind` (one policy per kind and
-- chain, so its retry quota spans refreshes).
function Chain:retry_policy(kind, attempts)
  local p = self.policies[kind]
  local defaults = M.RETRY[kind] or M.RETRY.sts
  local given = self.opts.retry and self.opts.retry[kind]
  if p then return p, (type(given) == "table" and given.total) or defaults.total end
  if type(given) == "table" and type(given.delay) == "function" then
    p = given   -- a policy object
  else
    local cfg = { mode = "standard", max_attempts = attempts or 3, base = defaults.base,
                  max_backoff = defaults.max_backoff }
    if type(given) == "table" then
      for k, v in pairs(given) do if k ~= "total" then cfg[k] = v end end
    end
    local err
    p, err = lazy("kinesis.retry").new(cfg, lazy("kinesis.runtime").now)
    if not p then error("kinesis.credentials: retry." .. kind .. ": " .. tostring(err), 0) end
  end
  self.policies[kind] = p
  return p, (type(given) == "table" and given.total) or defaults.total
end

-- the op named in the log events of each kind of plain HTTP call
local HTTP_OPS = { imds = "InstanceMetadata", container = "ContainerCredentials" }

--- One HTTP exchange with retries on transport failures, 5xx and 429,
-- following the kind's retry policy. Returns resp or nil, transport err.
function Chain:http(kind, timeout, req, attempts)
  local t = self:transport(kind, timeout)
  local policy, total = self:retry_policy(kind, attempts)
  local on_retry = self:retry_logger(HTTP_OPS[kind] or kind)
  local resp, _, terr = common.retrying(policy, { total = total, on_retry = on_retry }, function(_, left)
    req.timeout = common.request_timeout(timeout and timeout.request, left)
    local r, e = t:send(req)
    if r and not common.http_retryable(r) then return true, r end
    -- the verdict for the retry loop; the last answer or transport error goes back
    return false, r, { retryable = common.http_retryable(r, e), code = e and e.code or "HTTP" }, e
  end)
  return resp, terr
end

---------------------------------------------------------------- STS options

function Chain:sts_region(profile_props)
  return self.opts.region or self:getenv("AWS_REGION") or self:getenv("AWS_DEFAULT_REGION")
    or (profile_props and nonempty(profile_props.region)) or "us-east-1"
end

function Chain:sts_options(profile_props)
  local policy, total = self:retry_policy("sts", 3)
  return {
    region = self:sts_region(profile_props),
    endpoint = self.opts.sts_endpoint or self:getenv("AWS_ENDPOINT_URL_STS")
      or self:getenv("AWS_ENDPOINT_URL"),
    transport = self:transport("sts", { connect = 3, request = 10 }),
    request_timeout = 10,
    signer = self:signer(),
    retry = policy, total = total, on_retry = self:retry_logger(),
    redact = self,
  }
end

--- An STS error as one line for the chain's reasons.
function Chain.sts_failure(err)
  local s = tostring(err.code or "error")
  if err.status then s = s .. format(" (HTTP %d)", err.status) end
  if err.message and err.message ~= "" then s = s .. ": " .. err.message end
  return s
end

---------------------------------------------------------------- providers
-- Each returns credentials, or nil, reason, fatal. fatal = the source is
-- configured but failed: the chain stops there instead of falling through
-- to a source the user did not mean (as the SDKs do).

-- name -> the module whose get(chain) is the source
M.PROVIDERS = {
  ["explicit"] = "kinesis.credentials.explicit",
  ["environment"] = "kinesis.credentials.env",
  ["web identity"] = "kinesis.credentials.web_identity",
  ["shared files"] = "kinesis.credentials.profile",
  ["container"] = "kinesis.credentials.container",
  ["instance metadata"] = "kinesis.credentials.imds",
}

M.ORDER = { "explicit", "environment", "web identity", "shared files", "container", "instance metadata" }

--- Runs one source by its name in M.ORDER.
function Chain:provider(name)
  return lazy(M.PROVIDERS[name]).get(self)
end

--- The `region` of a profile (profile or AWS_PROFILE or "default") in the
-- shared config file, or nil. opts: env (as for chain).
function M.region_from_profile(profile, opts)
  local ch = M.chain { env = opts and opts.env, profile = profile }
  return lazy("kinesis.credentials.profile").region(ch, profile)
end

---------------------------------------------------------------- loading

--- Walks the chain once, ignoring the cache. Returns credentials or nil,
-- err (kinesis.errors, code "CredentialsError", err.providers = the list of
-- { name, reason } tried, in order).
function Chain:load()
  local tried = {}
  local stopped
  for _, name in ipairs(M.ORDER) do
    local ok, creds, reason, fatal = pcall(self.provider, self, name)
    if not ok then creds, reason, fatal = nil, "raised: " .. tostring(creds), true end
    if creds then
      self:remember(creds)
      return creds
    end
    tried[#tried + 1] = { name = name, reason = self:redact(reason) }
    if fatal then
      stopped = name
      break
    end
  end
  local parts = {}
  for i, t in ipairs(tried) do parts[i] = t.name .. ": " .. t.reason end
  local message = "no credentials: " .. concat(parts, "; ")
  if stopped and stopped ~= M.ORDER[#M.ORDER] then
    message = message .. " [" .. stopped .. " is configured but failed; later sources were not tried]"
  end
  return nil, errors.new { kind = "validation", code = "CredentialsError", message = message,
                           providers = tried }
end

-- The deadline after which the cache entry is refreshed (nil: never).
local function stale_at(creds, now)
  if creds.expiration then return creds.expiration end
  if creds.source == "custom" then return now + M.CUSTOM_TTL end
  return nil
end

-- Loads and records the outcome; the single place that updates the cache.
function Chain:load_locked()
  local runtime = lazy("kinesis.runtime")
  self.refreshing = runtime.now() + M.REFRESH_WAIT
  local ok, creds, err = pcall(self.load, self)
  self.refreshing = nil
  local now = self:now()
  if not ok then
    creds, err = nil, errors.new { kind = "validation", code = "CredentialsError",
                                   message = "credential chain raised: " .. self:redact(creds) }
  end
  self.loads = (self.loads or 0) + 1
  if creds then
    self.cached, self.cached_until, self.retry_at = creds, stale_at(creds, now), nil
  else
    self.retry_at = now + self.retry_backoff
  end
  runtime.wake(self.refresh_key, creds, err)
  return creds, err
end

-- Is another caller refreshing right now? (A refresh whose caller vanished
-- mid-way counts only until its deadline.)
function Chain:is_refreshing()
  local r = self.refreshing
  if not r then return false end
  if lazy("kinesis.runtime").now() < r then return true end
  self.refreshing = nil
  return false
end

--- Refreshes now, one refresh at a time: a caller that finds another's
-- refresh under way parks until it ends (runtime.park/wake) and takes its
-- outcome; where nothing can wait (a plain script, a blocking phase) it
-- loads by itself.
function Chain:refresh()
  local runtime = lazy("kinesis.runtime")
  if self:is_refreshing() and runtime.can_yield() then
    local woke, creds, err = runtime.park(self.refresh_key, self.refreshing - runtime.now())
    if woke then return creds, err end
    if self.cached and (not self.cached_until or self.cached_until - self:now() > self.expiry_margin) then
      return self.cached
    end
  end
  return self:load_locked()
end

--- Credentials for signing, or nil, err. Cached; refreshed from
-- refresh_window seconds before expiration (a failure then keeps the
-- current ones, and the next try waits retry_backoff seconds); within
-- expiry_margin of expiration they are not used any more.
function Chain:get()
  local c = self.cached
  if c then
    local now = self:now()
    local until_ = self.cached_until
    if not until_ or until_ - now > self.refresh_window then return c end
    if until_ - now > self.expiry_margin then
      if self:is_refreshing() then return c end
      if self.retry_at and now < self.retry_at then return c end
      local fresh = self:refresh()
      return fresh or c
    end
  end
  return self:refresh()
end

--- Forgets cached credentials (the next get() walks the chain again).
function Chain:invalidate()
  self.cached, self.cached_until, self.retry_at = nil, nil, nil
end

--- Closes the transports this provider opened.
function Chain:close()
  for k, t in pairs(self.transports) do
    if type(t.close) == "function" then t:close() end
    self.transports[k] = nil
  end
end

function Chain:__tostring()
  local c = self.cached
  if not c then return "kinesis.credentials.chain(not loaded)" end
  local s = "kinesis.credentials.chain(" .. tostring(c.source)
  if c.profile then s = s .. ", profile " .. c.profile end
  if c.expiration then s = s .. format(", expires in %d s", floor(c.expiration - self:now())) end
  return s .. ")"
end

M.Chain = Chain
M.Credentials = common.Credentials

--- Is `v` a credentials table built by this module?
function M.is_credentials(v)
  return type(v) == "table" and getmetatable(v) == common.Credentials
end

return M
