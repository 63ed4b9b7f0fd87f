-- kinesis.credentials.imds - EC2 instance metadata (IMDSv2): a session token
-- (PUT /latest/api/token, cached for its TTL), the role name, then the
-- role's credentials. IMDSv1 (no token) only when the chain's
-- imds_v1_fallback asks for it. Settings: AWS_EC2_METADATA_DISABLED,
-- AWS_EC2_METADATA_SERVICE_ENDPOINT(_MODE), AWS_METADATA_SERVICE_TIMEOUT
-- and _NUM_ATTEMPTS. https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-instance-metadata-service.html

local common = require "kinesis.credentials.common"

local type, tostring, tonumber = type, tostring, tonumber
local match, gsub, lower = string.match, string.gsub, string.lower
local floor = math.floor
local nonempty, trim = common.nonempty, common.trim

local M = {}

M.TOKEN_TTL = 21600
local V4 = "http://169.254.169.254"
local V6 = "http://[fd00:ec2::254]"
local CREDS_PATH = "/latest/meta-data/iam/security-credentials/"

local function settings(ch)
  local timeout = tonumber(ch:getenv("AWS_METADATA_SERVICE_TIMEOUT") or "") or 1
  local attempts = floor(tonumber(ch:getenv("AWS_METADATA_SERVICE_NUM_ATTEMPTS") or "") or 1)
  if attempts < 1 then attempts = 1 end
  local base = ch:getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT")
  if not base then
    local mode = lower(ch:getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE") or "ipv4")
    base = mode == "ipv6" and V6 or V4
  end
  base = gsub(base, "/+$", "")
  return base, { connect = timeout, request = timeout }, attempts
end

-- The session token, cached (on the chain) until shortly before its TTL
-- ends. Returns token | false (IMDSv1 fallback) or nil, reason.
local function session_token(ch, base, timeout, attempts, force)
  local cached = ch.imds_cached_token
  if not force and cached and cached.base == base and ch:now() < cached.expires then
    return cached.value
  end
  ch.imds_cached_token = nil
  local resp, err = ch:http("imds", timeout, {
    method = "PUT", url = base .. "/latest/api/token", body = "",
    headers = { { "X-aws-ec2-metadata-token-ttl-seconds", tostring(M.TOKEN_TTL) } },
  }, attempts)
  if resp and resp.status == 200 and nonempty(resp.body) then
    local token = trim(resp.body)
    ch:remember_secret(token)
    ch.imds_cached_token = { value = token, base = base, expires = ch:now() + M.TOKEN_TTL - 60 }
    return token
  end
  local why = "token request PUT " .. base .. "/latest/api/token: " .. common.http_failure(resp, err)
  if resp and resp.status == 403 then
    -- IMDS forbids tokens (disabled, or the call came through a proxy): no fallback
    return nil, why .. " (forbidden)"
  end
  if ch.opts.imds_v1_fallback then return false end
  return nil, why .. " (IMDSv1 fallback is off)"
end

--- Returns credentials or nil, reason, fatal.
function M.get(ch)
  local disabled = ch:getenv("AWS_EC2_METADATA_DISABLED")
  if disabled and lower(disabled) == "true" then return nil, "disabled by AWS_EC2_METADATA_DISABLED" end
  local base, timeout, attempts = settings(ch)
  local token, terr = session_token(ch, base, timeout, attempts)
  if token == nil then return nil, terr, true end
  local fresh_token = false
  local function get_once(path)
    local headers = {}
    if token then headers[1] = { "X-aws-ec2-metadata-token", token } end
    return ch:http("imds", timeout, { method = "GET", url = base .. path, headers = headers }, attempts)
  end
  -- one GET; a 401 with a cached token means it went stale: take a new one once
  local function get(path)
    local resp, err = get_once(path)
    if resp and resp.status == 401 and token and not fresh_token then
      local t2, e2 = session_token(ch, base, timeout, attempts, true)
      if t2 == nil then return nil, nil, e2 end
      token, fresh_token = t2, true
      resp, err = get_once(path)
    end
    return resp, err
  end
  local role = ch:getenv("AWS_EC2_INSTANCE_PROFILE_NAME")
  if not role then
    local resp, err, why = get(CREDS_PATH)
    if why then return nil, why, true end
    if not resp or resp.status ~= 200 then
      local extra = resp and resp.status == 404 and " (no IAM role attached to this instance)" or ""
      return nil, "GET " .. CREDS_PATH .. ": " .. common.http_failure(resp, err) .. extra, true
    end
    role = match(resp.body or "", "^%s*([^\r\n]+)")   -- the first line names the role
    role = role and trim(role)
    if not role or role == "" then return nil, "GET " .. CREDS_PATH .. ": no role name in the answer", true end
  end
  local resp, err, why = get(CREDS_PATH .. role)
  if why then return nil, why, true end
  if not resp or resp.status ~= 200 then
    return nil, "GET " .. CREDS_PATH .. role .. ": " .. common.http_failure(resp, err), true
  end
  local doc = common.decode_json(resp.body or "")
  if type(doc) == "table" then
    ch:remember_secret(doc.SecretAccessKey)
    ch:remember_secret(doc.Token)
    if doc.Code ~= nil and doc.Code ~= "Success" then
      return nil, "instance metadata credentials: Code " .. tostring(doc.Code), true
    end
  end
  local creds, cerr = common.from_json_doc(doc, "imds", "Token")
  if not creds then return nil, "instance metadata credentials: " .. cerr, true end
  return creds
end

return M
