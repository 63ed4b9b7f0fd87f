-- kinesis.credentials.sso - IAM Identity Center (SSO) profiles: the access
-- token `aws sso login` caches in ~/.aws/sso/cache/<sha1 hex of the
-- sso-session name, or of the start URL for the legacy form>.json, refreshed
-- with the SSO OIDC CreateToken refresh-token grant near its expiry (sso-session
-- form only; written back with temp file + rename), then exchanged for role
-- credentials with the portal's GetRoleCredentials.
-- https://docs.aws.amazon.com/sdkref/latest/guide/feature-sso-credentials.html

local common = require "kinesis.credentials.common"
local errors = require "kinesis.errors"

local type, tostring, tonumber, pairs, ipairs = type, tostring, tonumber, pairs, ipairs
local format, match, gsub, lower, byte = string.format, string.match, string.gsub, string.lower, string.byte
local floor = math.floor
local nonempty, lazy = common.nonempty, common.lazy

local M = {}

M.REFRESH_WINDOW = 300   -- refresh a token this close to its expiry (the SDKs' 5 minutes)
M.TIMEOUT = { connect = 3, request = 10 }

---------------------------------------------------------------- helpers

local function pct(s)
  return (gsub(s, "[^A-Za-z0-9%-%._~]", function(c) return format("%%%02X", byte(c)) end))
end

local function iso8601(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", floor(t))
end

local function shell_quote(s)
  return "'" .. gsub(s, "'", "'\\''") .. "'"
end

-- A configured endpoint for an SSO service (AWS_ENDPOINT_URL_<ID>, then
-- AWS_ENDPOINT_URL), else the regional default.
-- https://docs.aws.amazon.com/sdkref/latest/guide/feature-ss-endpoints.html
local function endpoint(ch, service_env, default)
  local ignore = ch:getenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
  local url
  if not (ignore and lower(ignore) == "true") then
    url = ch:getenv(service_env) or ch:getenv("AWS_ENDPOINT_URL")
  end
  return (gsub(url or default, "/+$", ""))
end

local function login_hint(name, session)
  local s = format('run "aws sso login --profile %s"', name)
  if session then s = s .. format(' (or "aws sso login --sso-session %s")', session) end
  return s
end

--- The cache file of a session name (sso-session form) or start URL
-- (legacy form), under `home`.
function M.cache_path(home, key)
  local hex = assert(lazy("kinesis.core").sha1_hex(key))
  return home .. "/.aws/sso/cache/" .. hex .. ".json"
end

---------------------------------------------------------------- settings

-- Validates a profile's SSO settings: a table { session, start_url,
-- region, account_id, role_name, key } or nil, reason naming the field.
local function settings(name, props, others)
  local session = nonempty(props.sso_session)
  local start_url, region = nonempty(props.sso_start_url), nonempty(props.sso_region)
  if session then
    local sessions = others and others["sso-session"]
    local sect = sessions and sessions[session]
    if not sect then
      return nil, format("profile %q: sso_session %q has no [sso-session %s] section in the config file",
                         name, session, session)
    end
    local s_url, s_region = nonempty(sect.sso_start_url), nonempty(sect.sso_region)
    -- the SDKs refuse a profile that contradicts its session
    if start_url and s_url and start_url ~= s_url then
      return nil, format("profile %q: sso_start_url differs from that of sso-session %q", name, session)
    end
    if region and s_region and region ~= s_region then
      return nil, format("profile %q: sso_region differs from that of sso-session %q", name, session)
    end
    start_url, region = s_url or start_url, s_region or region
    if not start_url then return nil, format("sso-session %q: sso_start_url is required", session) end
    if not region then return nil, format("sso-session %q: sso_region is required", session) end
  else
    if not start_url then
      return nil, format("profile %q: sso_start_url is required (or sso_session naming an [sso-session] section)", name)
    end
    if not region then return nil, format("profile %q: sso_region is required", name) end
  end
  local account, role = nonempty(props.sso_account_id), nonempty(props.sso_role_name)
  if not account then return nil, format("profile %q: sso_account_id is required", name) end
  if not match(account, "^%d%d%d%d%d%d%d%d%d%d%d%d$") then
    return nil, format("profile %q: sso_account_id must be 12 digits", name)
  end
  if not role then return nil, format("profile %q: sso_role_name is required", name) end
  if not match(region, "^[%a%d%-]+$") then
    return nil, format("profile %q: sso_region must be a region name (letters, digits, '-')", name)
  end
  if not match(start_url, "^[Hh][Tt][Tt][Pp][Ss]?://") then
    return nil, format("profile %q: sso_start_url must be an http(s) URL", name)
  end
  return { session = session, start_url = start_url, region = region, account_id = account,
           role_name = role, key = session or start_url }
end

---------------------------------------------------------------- the token

-- Reads the cached token document; doc or nil, reason.
local function read_token(ch, path, name, session)
  local text = common.read_file(path)
  if not text then
    return nil, format("profile %q: no cached SSO token (%s); %s", name, path, login_hint(name, session))
  end
  local doc = common.decode_json(text)
  if type(doc) ~= "table" then
    return nil, format("profile %q: the SSO token cache %s is not a JSON object; %s", name, path,
                       login_hint(name, session))
  end
  for _, f in ipairs { "accessToken", "refreshToken", "clientSecret" } do
    if type(doc[f]) == "string" then ch:remember_secret(doc[f]) end
  end
  if not nonempty(doc.accessToken) then
    return nil, format("profile %q: the SSO token cache %s has no accessToken; %s", name, path,
                       login_hint(name, session))
  end
  local sts = lazy("kinesis.credentials.sts")
  doc.expires = type(doc.expiresAt) == "string" and sts.parse_time(doc.expiresAt) or nil
  if not doc.expires then
    return nil, format("profile %q: the SSO token cache %s has no valid expiresAt; %s", name, path,
                       login_hint(name, session))
  end
  doc.registration_expires = type(doc.registrationExpiresAt) == "string"
    and sts.parse_time(doc.registrationExpiresAt) or nil
  return doc
end

-- Writes the token document back: a temporary file beside it (owner-only,
-- as the CLI keeps it), then a rename over the old one.
local function write_token(path, doc)
  local out = {}
  for k, v in pairs(doc) do
    if k ~= "expires" and k ~= "registration_expires" then out[k] = v end
  end
  local text = lazy("cjson").encode(out)
  local tmp = format("%s.%d.tmp", path, floor(lazy("kinesis.runtime").now() * 1e6) % 1e9)
  local f, err = io.open(tmp, "wb")
  if not f then return nil, tostring(err) end
  os.execute("chmod 600 " .. shell_quote(tmp))
  local ok, werr = f:write(text)
  f:close()
  if ok then ok, werr = os.rename(tmp, path) end
  if not ok then
    os.remove(tmp)
    return nil, tostring(werr)
  end
  return true
end

-- Sends one JSON request with the chain's SSO retry policy; out (decoded
-- answer) or nil, err (kinesis.errors).
local function call(ch, op, req)
  local t = ch:transport("sso", M.TIMEOUT)
  local policy, total = ch:retry_policy("sso", 3)
  local out, err = common.retrying(policy, { total = total, on_retry = ch:retry_logger(op) }, function(_, left)
    req.timeout = common.request_timeout(M.TIMEOUT.request, left)
    local resp, terr = t:send(req)
    if not resp then
      terr = terr or {}
      return false, nil, errors.transport(op, { code = terr.code or "Transport",
        message = tostring(terr.message or "request failed") })
    end
    if resp.status < 200 or resp.status >= 300 then
      return false, nil, errors.from_response(op, resp, ch)
    end
    local doc = common.decode_json(resp.body or "")
    if type(doc) ~= "table" then
      return false, nil, errors.protocol(op, op .. " answer is not a JSON object", { status = resp.status })
    end
    return true, doc
  end)
  return out, err
end

-- The SSO OIDC refresh-token grant. Returns the updated document or nil, err.
-- https://docs.aws.amazon.com/singlesignon/latest/OIDCAPIReference/API_CreateToken.html
local function refresh(ch, cfg, doc)
  local url = endpoint(ch, "AWS_ENDPOINT_URL_SSO_OIDC", format("https://oidc.%s.amazonaws.com", cfg.region))
  local body = lazy("cjson").encode {
    clientId = doc.clientId, clientSecret = doc.clientSecret,
    grantType = "refresh_token", refreshToken = doc.refreshToken,
  }
  local out, err = call(ch, "CreateToken", {
    method = "POST", url = url .. "/token", body = body,
    headers = { { "Content-Type", "application/json" } },
  })
  if not out then return nil, err end
  local token, expires_in = out.accessToken, tonumber(out.expiresIn)
  if type(token) ~= "string" or token == "" or not expires_in or expires_in <= 0 then
    return nil, errors.protocol("CreateToken", "CreateToken answer lacks accessToken or expiresIn")
  end
  ch:remember_secret(token)
  if type(out.refreshToken) == "string" then ch:remember_secret(out.refreshToken) end
  doc.accessToken = token
  doc.expires = ch:now() + expires_in
  doc.expiresAt = iso8601(doc.expires)
  if type(out.refreshToken) == "string" and out.refreshToken ~= "" then doc.refreshToken = out.refreshToken end
  return doc
end

local function can_refresh(ch, cfg, doc)
  return cfg.session ~= nil and nonempty(doc.refreshToken) ~= nil and nonempty(doc.clientId) ~= nil
    and nonempty(doc.clientSecret) ~= nil and doc.registration_expires ~= nil
    and doc.registration_expires > ch:now()
end

---------------------------------------------------------------- the source

--- Credentials of the SSO profile `name` (props: its properties; others:
-- the config file's other sections, for [sso-session]). nil, reason on
-- failure; every reason says how to log in again where that is the cure.
function M.get(ch, name, props, others)
  local cfg, cerr = settings(name, props, others)
  if not cfg then return nil, cerr end
  local home = ch:getenv("HOME") or ch:getenv("USERPROFILE")
  if not home then return nil, format("profile %q: HOME is not set, so no SSO token cache", name) end
  local path = M.cache_path(home, cfg.key)
  local doc, rerr = read_token(ch, path, name, cfg.session)
  if not doc then return nil, rerr end
  local now = ch:now()
  if doc.expires - now <= M.REFRESH_WINDOW and can_refresh(ch, cfg, doc) then
    local fresh, ferr = refresh(ch, cfg, doc)
    if fresh then
      ch:log { event = "sso_token_refreshed", profile = name, expiration = fresh.expires }
      local ok, werr = write_token(path, fresh)
      -- the refreshed token is good either way; the next process refreshes again
      if not ok then ch.sso_write_error = format("could not rewrite %s: %s", path, werr) end
      doc = fresh
    elseif doc.expires <= now then
      return nil, format("profile %q: the SSO token has expired and its refresh failed (%s); %s",
                         name, ch.sts_failure(ferr), login_hint(name, cfg.session))
    end
  end
  if doc.expires <= now then
    return nil, format("profile %q: the SSO token has expired; %s", name, login_hint(name, cfg.session))
  end
  local portal = endpoint(ch, "AWS_ENDPOINT_URL_SSO", format("https://portal.sso.%s.amazonaws.com", cfg.region))
  local out, err = call(ch, "GetRoleCredentials", {
    method = "GET",
    url = format("%s/federation/credentials?account_id=%s&role_name=%s", portal, pct(cfg.account_id),
                 pct(cfg.role_name)),
    headers = { { "x-amz-sso_bearer_token", doc.accessToken }, { "Accept", "application/json" } },
  })
  if not out then
    local hint = ""
    if err.status == 401 or err.code == "UnauthorizedException" then hint = "; " .. login_hint(name, cfg.session) end
    return nil, format("profile %q: SSO GetRoleCredentials failed: %s%s", name, ch.sts_failure(err), hint)
  end
  local rc = out.roleCredentials
  if type(rc) ~= "table" then
    return nil, format("profile %q: GetRoleCredentials answer has no roleCredentials", name)
  end
  ch:remember_secret(rc.secretAccessKey)
  ch:remember_secret(rc.sessionToken)
  local exp = rc.expiration
  if type(exp) ~= "number" then
    return nil, format("profile %q: GetRoleCredentials answer has no numeric expiration", name)
  end
  local creds, merr = common.make({
    access_key_id = rc.accessKeyId, secret_access_key = rc.secretAccessKey,
    session_token = rc.sessionToken, expiration = exp / 1000,   -- epoch milliseconds
  }, "sso")
  if not creds then return nil, format("profile %q: GetRoleCredentials answer: %s", name, merr) end
  return creds
end

M.settings = settings
return M
