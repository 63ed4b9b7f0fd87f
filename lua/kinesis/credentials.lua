-- kinesis.credentials - the default credential provider chain, in the AWS
-- SDKs' order: explicit -> environment -> web identity -> shared config and
-- credentials files -> container -> EC2 instance metadata (IMDSv2). Lazy:
-- nothing is read before the first get(). Temporary credentials are cached
-- and refreshed early, one refresh at a time (concurrent kinesis.run tasks
-- wait for the same one), and kept while still valid if a refresh fails.
-- Secrets never reach error messages or tostring(): every error text is
-- scrubbed of the secrets this chain has seen.
--
--   local provider = require("kinesis.credentials").chain{ region = "us-east-1" }
--   local creds, err = provider:get()

local ini = require "kinesis.ini"
local errors = require "kinesis.errors"

local type, tostring, tonumber, pairs, ipairs, pcall, setmetatable, getmetatable =
  type, tostring, tonumber, pairs, ipairs, pcall, setmetatable, getmetatable
local format, find, sub, match, gsub, lower, rep =
  string.format, string.find, string.sub, string.match, string.gsub, string.lower, string.rep
local concat = table.concat
local floor = math.floor

local M = {}

-- Defaults (seconds). The SDKs refresh 5-15 minutes early; IMDS and
-- container credentials are rotated well before that.
M.REFRESH_WINDOW = 300     -- start refreshing this long before expiration
M.EXPIRY_MARGIN = 60       -- closer than this to expiration counts as expired
M.RETRY_BACKOFF = 10       -- after a failed early refresh, wait before the next
M.CUSTOM_TTL = 900         -- a custom provider's credentials without expiration
M.IMDS_TOKEN_TTL = 21600

local IMDS_V4 = "http://169.254.169.254"
local IMDS_V6 = "http://[fd00:ec2::254]"
local ECS_HOST = "http://169.254.170.2"

---------------------------------------------------------------- helpers

local function lazy(name)
  return package.loaded[name] or require(name)
end

local function trim(s)
  return (gsub(s, "^%s+", ""):gsub("%s+$", ""))
end

local function nonempty(v)
  if type(v) ~= "string" or v == "" then return nil end
  return v
end

-- Reads a whole file: text or nil, reason (no content in the reason).
local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, tostring(err) end
  local s = f:read("*a")
  f:close()
  if not s then return nil, path .. ": cannot read" end
  return s
end

local function sleep(seconds)
  local sched = package.loaded["kinesis.scheduler"]
  if sched and sched.current_task() then return sched.sleep(seconds) end
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and type(ngx.sleep) == "function" then return ngx.sleep(seconds) end
  return lazy("kinesis.core").sleep(seconds)
end

local function shell_quote(s)
  return "'" .. gsub(s, "'", "'\\''") .. "'"
end

-- Masks all but the last 4 characters of an access key id.
local function mask(id)
  if type(id) ~= "string" then return "?" end
  if #id <= 4 then return rep("*", #id) end
  return rep("*", #id - 4) .. sub(id, -4)
end

---------------------------------------------------------------- credentials

local Credentials = {}
Credentials.__name = "kinesis.credentials"

function Credentials.__tostring(c)
  local s = format("kinesis.credentials(%s, access key %s", tostring(c.source), mask(c.access_key_id))
  if c.session_token then s = s .. ", session" end
  if c.expiration then s = s .. format(", expires %d", floor(c.expiration)) end
  return s .. ")"
end

-- Validates raw fields and builds a credentials table; nil, reason if bad.
local function make_credentials(t, source, expiration_text)
  if type(t) ~= "table" then return nil, "credentials must be a table" end
  local id, secret = nonempty(t.access_key_id), nonempty(t.secret_access_key)
  if not id then return nil, "access_key_id is missing" end
  if not secret then return nil, "secret_access_key is missing" end
  local token = t.session_token
  if token ~= nil and type(token) ~= "string" then return nil, "session_token must be a string" end
  if token == "" then token = nil end
  local exp = t.expiration
  if exp ~= nil and type(exp) ~= "number" then
    return nil, (expiration_text or "expiration") .. " is not a valid time"
  end
  return setmetatable({
    access_key_id = id, secret_access_key = secret, session_token = token,
    expiration = exp, source = source, profile = t.profile, role_arn = t.role_arn,
  }, Credentials)
end

-- The JSON shape of IMDS, the container API and credential_process.
local function from_json_doc(doc, source, token_field)
  if type(doc) ~= "table" then return nil, "response is not a JSON object" end
  local exp
  if doc.Expiration ~= nil then
    exp = type(doc.Expiration) == "string" and lazy("kinesis.sts").parse_time(doc.Expiration) or nil
    if not exp then return nil, "Expiration is not an ISO 8601 time" end
  end
  local token = doc[token_field]
  if token ~= nil and type(token) ~= "string" then return nil, token_field .. " is not a string" end
  if type(doc.AccessKeyId) ~= "string" or doc.AccessKeyId == "" then return nil, "AccessKeyId is missing" end
  if type(doc.SecretAccessKey) ~= "string" or doc.SecretAccessKey == "" then
    return nil, "SecretAccessKey is missing"
  end
  return make_credentials({ access_key_id = doc.AccessKeyId, secret_access_key = doc.SecretAccessKey,
                            session_token = token, expiration = exp }, source)
end

local function decode_json(text)
  local cjson = lazy("cjson")
  local ok, doc = pcall(cjson.decode, text)
  if not ok then return nil end
  return doc
end

---------------------------------------------------------------- the chain

local Chain = {}
Chain.__index = Chain
Chain.__name = "kinesis.credentials.chain"

--- Builds a provider. Reads nothing until get(). opts (all optional):
-- profile, region, credentials (table | function | object with :get()),
-- imds_v1_fallback, sts_endpoint, transport_factory(topts) -> transport,
-- and for tests: env (table or function name -> value, instead of
-- os.getenv), clock (epoch seconds), container_endpoint (base URL for
-- AWS_CONTAINER_CREDENTIALS_RELATIVE_URI), refresh_window, expiry_margin,
-- retry_backoff, verify, cafile (for https STS / container endpoints).
function M.chain(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("kinesis.credentials.chain: options table expected, got " .. type(opts), 2)
  end
  local c = opts.credentials
  if c ~= nil and type(c) ~= "table" and type(c) ~= "function" then
    error("kinesis.credentials.chain: credentials must be a table or a function, got " .. type(c), 2)
  end
  return setmetatable({
    opts = opts,
    refresh_window = opts.refresh_window or M.REFRESH_WINDOW,
    expiry_margin = opts.expiry_margin or M.EXPIRY_MARGIN,
    retry_backoff = opts.retry_backoff or M.RETRY_BACKOFF,
    transports = {},
    secrets = {},   -- the last MAX_SECRETS secret strings seen, for redact()
  }, Chain)
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

-- "HTTP 403" or the transport's complaint, for error messages.
local function http_failure(resp, err)
  if resp then return "HTTP " .. tostring(resp.status) end
  return "request failed: " .. tostring(err and (err.message or err.code) or "unknown error")
end

-- Sends with up to `attempts` tries on transport errors and 5xx.
function Chain:http(kind, timeout, req, attempts)
  local t = self:transport(kind, timeout)
  local resp, err
  for i = 1, attempts or 1 do
    resp, err = t:send(req)
    if resp and resp.status < 500 then return resp end
    if i < (attempts or 1) then sleep(0.05 * i) end
  end
  return resp, err
end

---------------------------------------------------------------- STS options

function Chain:sts_region(profile_props)
  return self.opts.region or self:getenv("AWS_REGION") or self:getenv("AWS_DEFAULT_REGION")
    or (profile_props and nonempty(profile_props.region)) or "us-east-1"
end

function Chain:sts_options(profile_props)
  return {
    region = self:sts_region(profile_props),
    endpoint = self.opts.sts_endpoint or self:getenv("AWS_ENDPOINT_URL_STS")
      or self:getenv("AWS_ENDPOINT_URL"),
    transport = self:transport("sts", { connect = 3, request = 10 }),
    signer = self:signer(),
  }
end

local function sts_failure(err)
  local s = tostring(err.code or "error")
  if err.status then s = s .. format(" (HTTP %d)", err.status) end
  if err.message and err.message ~= "" then s = s .. ": " .. err.message end
  return s
end

---------------------------------------------------------------- providers
-- Each returns credentials, or nil, reason, fatal. fatal = the source is
-- configured but failed: the chain stops there instead of falling through
-- to a source the user did not mean (as the SDKs do).

local providers = {}

function providers.explicit(self)
  local src = self.opts.credentials
  if src == nil then return nil, "not set" end
  local raw, err, source
  if type(src) == "function" or (type(src) == "table" and type(src.get) == "function") then
    source = "custom"
    local ok, a, b
    if type(src) == "function" then ok, a, b = pcall(src)
    else ok, a, b = pcall(src.get, src) end
    if not ok then return nil, "custom provider raised: " .. tostring(a), true end
    if a == nil then return nil, "custom provider: " .. tostring(b or "returned nothing"), true end
    raw = a
  else
    source, raw = "explicit", src
  end
  local creds
  creds, err = make_credentials(raw, source)
  if not creds then return nil, err, true end
  return creds
end

function providers.environment(self)
  local id, secret = self:getenv("AWS_ACCESS_KEY_ID"), self:getenv("AWS_SECRET_ACCESS_KEY")
  if not id and not secret then return nil, "AWS_ACCESS_KEY_ID not set" end
  if not id then return nil, "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not", true end
  if not secret then return nil, "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not", true end
  local exp
  local exp_text = self:getenv("AWS_CREDENTIAL_EXPIRATION")
  if exp_text then
    exp = lazy("kinesis.sts").parse_time(exp_text)
    if not exp then return nil, "AWS_CREDENTIAL_EXPIRATION is not an ISO 8601 time", true end
  end
  local creds, err = make_credentials({ access_key_id = id, secret_access_key = secret,
    session_token = self:getenv("AWS_SESSION_TOKEN"), expiration = exp }, "environment")
  if not creds then return nil, err, true end
  return creds
end

-- AssumeRoleWithWebIdentity with a token file (environment or profile).
function Chain:web_identity(token_file, role_arn, session_name, profile_props, source)
  local token, rerr = read_file(token_file)
  if not token then return nil, "cannot read the web identity token file: " .. rerr end
  token = trim(token)
  if token == "" then return nil, "the web identity token file " .. token_file .. " is empty" end
  self:remember_secret(token)
  local o = self:sts_options(profile_props)
  o.role_arn, o.role_session_name, o.web_identity_token = role_arn, session_name, token
  if profile_props and profile_props.duration_seconds then
    o.duration_seconds = tonumber(profile_props.duration_seconds)
  end
  local out, err = lazy("kinesis.sts").assume_role_with_web_identity(o)
  if not out then return nil, "STS AssumeRoleWithWebIdentity failed: " .. sts_failure(err) end
  out.role_arn = role_arn
  return make_credentials(out, source)
end

providers["web identity"] = function(self)
  local file, role = self:getenv("AWS_WEB_IDENTITY_TOKEN_FILE"), self:getenv("AWS_ROLE_ARN")
  if not file then return nil, "AWS_WEB_IDENTITY_TOKEN_FILE not set" end
  if not role then return nil, "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not", true end
  local creds, err = self:web_identity(file, role, self:getenv("AWS_ROLE_SESSION_NAME"), nil, "web_identity")
  if not creds then return nil, err, true end
  return creds
end

---------------------------------------------------------------- shared files

-- credential_process: runs the command through sh, reads its JSON.
-- https://docs.aws.amazon.com/sdkref/latest/guide/feature-process-credentials.html
function Chain:credential_process(command, name)
  local errfile, statusfile = os.tmpname(), os.tmpname()
  local p = io.popen("sh -c " .. shell_quote(command) .. " </dev/null 2>" .. shell_quote(errfile)
                     .. "; echo $? >" .. shell_quote(statusfile), "r")
  if not p then
    os.remove(errfile)
    os.remove(statusfile)
    return nil, "credential_process could not be started"
  end
  local out = p:read("*a") or ""
  p:close()
  local status = tonumber(match(read_file(statusfile) or "", "%d+"))
  local stderr = read_file(errfile) or ""
  os.remove(errfile)
  os.remove(statusfile)
  local doc = decode_json(out)
  if type(doc) == "table" then
    self:remember_secret(doc.SecretAccessKey)
    self:remember_secret(doc.SessionToken)
  end
  if status ~= 0 then
    local line = match(stderr, "[^\r\n]*[^%s][^\r\n]*") or ""
    if #line > 200 then line = sub(line, 1, 200) .. "..." end
    return nil, format("credential_process of profile %q exited with status %s%s", name,
                       tostring(status), line ~= "" and (": " .. line) or "")
  end
  if type(doc) ~= "table" then
    return nil, format("credential_process of profile %q did not print a JSON object", name)
  end
  if doc.Version ~= 1 then
    local v = doc.Version
    if type(v) == "number" and v == floor(v) then v = format("%d", v) end
    return nil, format("credential_process of profile %q printed Version %s, expected 1", name,
                       tostring(v))
  end
  local creds, err = from_json_doc(doc, "process", "SessionToken")
  if not creds then return nil, format("credential_process of profile %q: %s", name, err) end
  creds.profile = name
  return creds
end

local CREDENTIAL_KEYS = {
  "aws_access_key_id", "aws_secret_access_key", "role_arn", "credential_process",
  "credential_source", "source_profile", "web_identity_token_file", "sso_session", "sso_start_url",
}

local function has_credentials(props)
  for _, k in ipairs(CREDENTIAL_KEYS) do
    if props[k] ~= nil then return true end
  end
  return false
end

local NAMED_SOURCES = {
  Environment = "environment", Ec2InstanceMetadata = "instance metadata", EcsContainer = "container",
}

-- Credentials of one profile (static, process, role); nil, reason on failure.
function Chain:resolve_profile(profiles, name, visited)
  local props = profiles[name]
  if not props then return nil, format("source profile %q does not exist", name) end
  if visited[name] then
    visited[#visited + 1] = name
    return nil, "source_profile cycle: " .. concat(visited, " -> ")
  end
  visited[name] = true
  visited[#visited + 1] = name
  local role_arn = nonempty(props.role_arn)
  if role_arn then
    if props.mfa_serial then
      return nil, format("profile %q needs an MFA code (mfa_serial), which cannot be prompted for here", name)
    end
    local src, named = nonempty(props.source_profile), nonempty(props.credential_source)
    if src and named then
      return nil, format("profile %q sets both source_profile and credential_source", name)
    end
    local base, err
    if src then
      if src == name then
        -- a profile may assume a role with its own static keys
        base, err = make_credentials({ access_key_id = props.aws_access_key_id,
          secret_access_key = props.aws_secret_access_key, session_token = props.aws_session_token },
          "profile")
        if not base then return nil, format("profile %q: %s", name, err) end
      else
        base, err = self:resolve_profile(profiles, src, visited)
        if not base then return nil, err end
      end
    elseif named then
      local provider = NAMED_SOURCES[named]
      if not provider then
        return nil, format("profile %q: unknown credential_source %q (Environment, Ec2InstanceMetadata, EcsContainer)",
                           name, named)
      end
      base, err = providers[provider](self)
      if not base then return nil, format("credential_source %s of profile %q: %s", named, name, err) end
    elseif nonempty(props.web_identity_token_file) then
      local creds
      creds, err = self:web_identity(props.web_identity_token_file, role_arn,
                                     nonempty(props.role_session_name), props, "assume_role")
      if not creds then return nil, format("profile %q: %s", name, err) end
      creds.profile = name
      return creds
    else
      return nil, format("profile %q has role_arn but no source_profile, credential_source or web_identity_token_file", name)
    end
    self:remember(base)
    local o = self:sts_options(props)
    o.credentials, o.role_arn = base, role_arn
    o.role_session_name = nonempty(props.role_session_name)
    o.external_id = nonempty(props.external_id)
    o.duration_seconds = tonumber(props.duration_seconds)
    local out
    out, err = lazy("kinesis.sts").assume_role(o)
    if not out then
      return nil, format("profile %q: STS AssumeRole failed: %s", name, sts_failure(err))
    end
    out.role_arn, out.profile = role_arn, name
    return make_credentials(out, "assume_role")
  end
  if nonempty(props.credential_process) then
    return self:credential_process(props.credential_process, name)
  end
  if props.aws_access_key_id or props.aws_secret_access_key then
    local creds, err = make_credentials({ access_key_id = props.aws_access_key_id,
      secret_access_key = props.aws_secret_access_key, session_token = props.aws_session_token,
      profile = name }, "profile")
    if not creds then return nil, format("profile %q: %s", name, err) end
    return creds
  end
  if props.sso_session or props.sso_start_url then
    return nil, format("profile %q uses IAM Identity Center (SSO), which is not supported; use credential_process", name)
  end
  return nil, format("profile %q has no credentials", name)
end

-- The file paths, expanding a leading ~ with HOME; nil, reason if unknown.
function Chain:file_paths()
  local home = self:getenv("HOME") or self:getenv("USERPROFILE")
  local function expand(p)
    if sub(p, 1, 1) == "~" and (sub(p, 2, 2) == "/" or #p == 1) then
      if not home then return nil end
      return home .. sub(p, 2)
    end
    return p
  end
  local config = expand(self:getenv("AWS_CONFIG_FILE") or "~/.aws/config")
  local creds = expand(self:getenv("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials")
  return config, creds
end

function Chain:load_profiles()
  local config, creds = self:file_paths()
  if not config and not creds then return nil, "HOME not set, so no ~/.aws files" end
  local profiles, info = ini.load(config, creds)
  if not profiles then return nil, info, true end
  info.config_path, info.credentials_path = config, creds
  return profiles, info
end

providers["shared files"] = function(self)
  local profiles, info, fatal = self:load_profiles()
  if not profiles then return nil, info, fatal end
  local explicit = self.opts.profile or self:getenv("AWS_PROFILE")
  local name = explicit or "default"
  local where = format("%s or %s", tostring(info.credentials_path), tostring(info.config_path))
  if not info.config and not info.credentials then
    if explicit then return nil, format("profile %q selected but neither %s exists", name, where), true end
    return nil, "no " .. where
  end
  local props = profiles[name]
  if not props then
    if explicit then return nil, format("profile %q not found in %s", name, where), true end
    return nil, format("profile %q not found in %s", name, where)
  end
  if not has_credentials(props) then return nil, format("profile %q has no credentials", name) end
  local creds, err = self:resolve_profile(profiles, name, {})
  if not creds then return nil, err, true end
  creds.profile = creds.profile or name
  return creds
end

--- The `region` of a profile (profile or AWS_PROFILE or "default") in the
-- shared config file, or nil. opts: env (as for chain).
function M.region_from_profile(profile, opts)
  local ch = M.chain { env = opts and opts.env, profile = profile }
  local profiles = ch:load_profiles()
  if not profiles then return nil end
  local props = profiles[profile or ch:getenv("AWS_PROFILE") or "default"]
  return props and nonempty(props.region) or nil
end

---------------------------------------------------------------- container

-- Hosts an http:// AWS_CONTAINER_CREDENTIALS_FULL_URI may name: loopback,
-- the ECS and EKS Pod Identity agents. Any host is allowed over https.
-- https://docs.aws.amazon.com/sdkref/latest/guide/feature-container-credentials.html
local function container_host_allowed(url)
  local scheme, host = match(url, "^(%a+)://([^/:%[]+)")
  if not scheme then scheme, host = match(url, "^(%a+)://(%[[^%]]+%])") end
  if not scheme then return false, "is not an absolute URL" end
  scheme = lower(scheme)
  if scheme == "https" then return true end
  if scheme ~= "http" then return false, "must be http or https" end
  host = lower(host)
  if host == "localhost" or host == "[::1]" or host == "169.254.170.2" or host == "169.254.170.23"
     or host == "[fd00:ec2::23]" or match(host, "^127%.%d+%.%d+%.%d+$") then
    return true
  end
  return false, "uses http with host " .. host
    .. " (http is only allowed to loopback, 169.254.170.2, 169.254.170.23 and fd00:ec2::23)"
end

providers.container = function(self)
  local rel = self:getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
  local full = self:getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI")
  local url
  if rel then
    url = (self.opts.container_endpoint or ECS_HOST) .. rel
  elseif full then
    local ok, why = container_host_allowed(full)
    if not ok then return nil, "AWS_CONTAINER_CREDENTIALS_FULL_URI " .. why, true end
    url = full
  else
    return nil, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and _FULL_URI not set"
  end
  local headers = { { "Accept", "application/json" } }
  local token
  local token_file = self:getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
  if token_file then
    local rerr
    token, rerr = read_file(token_file)
    if not token then return nil, "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: " .. rerr, true end
    token = trim(token)
  else
    token = self:getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN")
  end
  if token and token ~= "" then
    self:remember_secret(token)
    if find(token, "[\r\n]") then return nil, "the authorization token contains a line break", true end
    headers[#headers + 1] = { "Authorization", token }
  end
  local resp, err = self:http("container", { connect = 2, request = 5 },
                              { method = "GET", url = url, headers = headers }, 2)
  if not resp or resp.status ~= 200 then
    local detail = ""
    local doc = resp and decode_json(resp.body or "")
    if type(doc) == "table" then
      local code, msg = doc.code or doc.Code, doc.message or doc.Message
      if type(code) == "string" then detail = " " .. sub(code, 1, 100) end
      if type(msg) == "string" then detail = detail .. ": " .. sub(msg, 1, 200) end
    end
    return nil, format("GET %s: %s%s", url, http_failure(resp, err), detail), true
  end
  local doc = decode_json(resp.body or "")
  if type(doc) == "table" then
    self:remember_secret(doc.SecretAccessKey)
    self:remember_secret(doc.Token)
  end
  local creds, cerr = from_json_doc(doc, "container", "Token")
  if not creds then return nil, "container credentials: " .. cerr, true end
  return creds
end

---------------------------------------------------------------- IMDSv2

function Chain:imds_settings()
  local timeout = tonumber(self:getenv("AWS_METADATA_SERVICE_TIMEOUT") or "") or 1
  local attempts = floor(tonumber(self:getenv("AWS_METADATA_SERVICE_NUM_ATTEMPTS") or "") or 1)
  if attempts < 1 then attempts = 1 end
  local base = self:getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT")
  if not base then
    local mode = lower(self:getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE") or "ipv4")
    base = mode == "ipv6" and IMDS_V6 or IMDS_V4
  end
  base = gsub(base, "/+$", "")
  return base, { connect = timeout, request = timeout }, attempts
end

-- The session token: cached until shortly before its TTL ends. Returns
-- token | false (IMDSv1 fallback) or nil, reason.
function Chain:imds_token(base, timeout, attempts, force)
  local cached = self.imds_cached_token
  if not force and cached and cached.base == base and self:now() < cached.expires then
    return cached.value
  end
  self.imds_cached_token = nil
  local resp, err = self:http("imds", timeout, {
    method = "PUT", url = base .. "/latest/api/token", body = "",
    headers = { { "X-aws-ec2-metadata-token-ttl-seconds", tostring(M.IMDS_TOKEN_TTL) } },
  }, attempts)
  if resp and resp.status == 200 and nonempty(resp.body) then
    local token = trim(resp.body)
    self:remember_secret(token)
    self.imds_cached_token = { value = token, base = base, expires = self:now() + M.IMDS_TOKEN_TTL - 60 }
    return token
  end
  local why = "token request PUT " .. base .. "/latest/api/token: " .. http_failure(resp, err)
  if resp and resp.status == 403 then
    -- IMDS forbids tokens (disabled, or the call came through a proxy): no fallback
    return nil, why .. " (forbidden)"
  end
  if self.opts.imds_v1_fallback then return false end
  return nil, why .. " (IMDSv1 fallback is off)"
end

function Chain:imds_get(base, timeout, attempts, path, token)
  local headers = {}
  if token then headers[1] = { "X-aws-ec2-metadata-token", token } end
  return self:http("imds", timeout, { method = "GET", url = base .. path, headers = headers }, attempts)
end

local CREDS_PATH = "/latest/meta-data/iam/security-credentials/"

providers["instance metadata"] = function(self)
  local disabled = self:getenv("AWS_EC2_METADATA_DISABLED")
  if disabled and lower(disabled) == "true" then return nil, "disabled by AWS_EC2_METADATA_DISABLED" end
  local base, timeout, attempts = self:imds_settings()
  local token, terr = self:imds_token(base, timeout, attempts)
  if token == nil then return nil, terr, true end
  local fresh_token = false
  -- one GET; a 401 with a cached token means it went stale: take a new one once
  local function get(path)
    local resp, err = self:imds_get(base, timeout, attempts, path, token or nil)
    if resp and resp.status == 401 and token and not fresh_token then
      local t2, e2 = self:imds_token(base, timeout, attempts, true)
      if t2 == nil then return nil, nil, e2 end
      token, fresh_token = t2, true
      resp, err = self:imds_get(base, timeout, attempts, path, token or nil)
    end
    return resp, err
  end
  local role = self:getenv("AWS_EC2_INSTANCE_PROFILE_NAME")
  if not role then
    local resp, err, why = get(CREDS_PATH)
    if why then return nil, why, true end
    if not resp or resp.status ~= 200 then
      local extra = resp and resp.status == 404 and " (no IAM role attached to this instance)" or ""
      return nil, "GET " .. CREDS_PATH .. ": " .. http_failure(resp, err) .. extra, true
    end
    role = match(resp.body or "", "^%s*([^\r\n]+)")   -- the first line names the role
    role = role and trim(role)
    if not role or role == "" then return nil, "GET " .. CREDS_PATH .. ": no role name in the answer", true end
  end
  local resp, err, why = get(CREDS_PATH .. role)
  if why then return nil, why, true end
  if not resp or resp.status ~= 200 then
    return nil, "GET " .. CREDS_PATH .. role .. ": " .. http_failure(resp, err), true
  end
  local doc = decode_json(resp.body or "")
  if type(doc) == "table" then
    self:remember_secret(doc.SecretAccessKey)
    self:remember_secret(doc.Token)
    if doc.Code ~= nil and doc.Code ~= "Success" then
      return nil, "instance metadata credentials: Code " .. tostring(doc.Code), true
    end
  end
  local creds, cerr = from_json_doc(doc, "imds", "Token")
  if not creds then return nil, "instance metadata credentials: " .. cerr, true end
  return creds
end

---------------------------------------------------------------- loading

M.ORDER = { "explicit", "environment", "web identity", "shared files", "container", "instance metadata" }

--- Walks the chain once, ignoring the cache. Returns credentials or nil,
-- err (kinesis.errors, code "CredentialsError", err.providers = the list of
-- { name, reason } tried, in order).
function Chain:load()
  local tried = {}
  local stopped
  for _, name in ipairs(M.ORDER) do
    local ok, creds, reason, fatal = pcall(providers[name], self)
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
local function stale_at(self, creds, now)
  if creds.expiration then return creds.expiration end
  if creds.source == "custom" then return now + M.CUSTOM_TTL end
  return nil
end

-- Loads and records the outcome; the single place that updates the cache.
function Chain:load_locked()
  self.refreshing = true
  local ok, creds, err = pcall(self.load, self)
  self.refreshing = false
  self.refresh_task = nil
  local now = self:now()
  if not ok then
    creds, err = nil, errors.new { kind = "validation", code = "CredentialsError",
                                   message = "credential chain raised: " .. self:redact(creds) }
  end
  self.loads = (self.loads or 0) + 1
  if creds then
    self.cached, self.cached_until, self.retry_at = creds, stale_at(self, creds, now), nil
  else
    self.retry_at = now + self.retry_backoff
  end
  return creds, err
end

--- Refreshes now: one refresh at a time. Inside kinesis.run the refresh
-- runs as its own task and every asker waits for that task; in nginx,
-- concurrent askers poll until it ends.
function Chain:refresh()
  local sched = package.loaded["kinesis.scheduler"]
  local me = sched and sched.current_task()
  if me then
    local r = self.refresh_task
    if not r or r.sched ~= me.sched then
      r = sched.spawn(function() return self:load_locked() end)
      self.refresh_task = r
    end
    local ok, creds, err = r:wait()
    if not ok then
      return nil, errors.new { kind = "validation", code = "CredentialsError",
                               message = "credential refresh failed: " .. self:redact(creds) }
    end
    return creds, err
  end
  local ngx = rawget(_G, "ngx")
  if self.refreshing and type(ngx) == "table" and type(ngx.sleep) == "function" then
    local waited = 0
    while self.refreshing and waited < 30 do
      ngx.sleep(0.01)
      waited = waited + 0.01
    end
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
      if self.refreshing or self.refresh_task then return c end
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
M.Credentials = Credentials

--- Is `v` a credentials table built by this module?
function M.is_credentials(v)
  return type(v) == "table" and getmetatable(v) == Credentials
end

return M
