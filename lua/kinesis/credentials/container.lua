-- kinesis.credentials.container - the ECS task role and EKS Pod Identity
-- endpoint: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (against 169.254.170.2)
-- or AWS_CONTAINER_CREDENTIALS_FULL_URI, with the authorization token from
-- AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (re-read each time) or _TOKEN.
-- https://docs.aws.amazon.com/sdkref/latest/guide/feature-container-credentials.html

local common = require "kinesis.credentials.common"

local type, find, sub, match, lower, format = type, string.find, string.sub, string.match, string.lower, string.format

local M = {}

M.HOST = "http://169.254.170.2"
M.TIMEOUT = { connect = 2, request = 5 }
M.ATTEMPTS = 2

-- Hosts an http:// full URI may name: loopback, the ECS and EKS Pod
-- Identity agents. Any host is allowed over https.
local function host_allowed(url)
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

--- Returns credentials or nil, reason, fatal.
function M.get(ch)
  local rel = ch:getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
  local full = ch:getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI")
  local url
  if rel then
    url = (ch.opts.container_endpoint or M.HOST) .. rel
  elseif full then
    local ok, why = host_allowed(full)
    if not ok then return nil, "AWS_CONTAINER_CREDENTIALS_FULL_URI " .. why, true end
    url = full
  else
    return nil, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and _FULL_URI not set"
  end
  local headers = { { "Accept", "application/json" } }
  local token
  local token_file = ch:getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
  if token_file then
    local rerr
    token, rerr = common.read_file(token_file)
    if not token then return nil, "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: " .. rerr, true end
    token = common.trim(token)
  else
    token = ch:getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN")
  end
  if token and token ~= "" then
    ch:remember_secret(token)
    if find(token, "[\r\n]") then return nil, "the authorization token contains a line break", true end
    headers[#headers + 1] = { "Authorization", token }
  end
  local resp, err = ch:http("container", M.TIMEOUT, { method = "GET", url = url, headers = headers }, M.ATTEMPTS)
  if not resp or resp.status ~= 200 then
    local detail = ""
    local doc = resp and common.decode_json(resp.body or "")
    if type(doc) == "table" then
      local code, msg = doc.code or doc.Code, doc.message or doc.Message
      if type(code) == "string" then detail = " " .. sub(code, 1, 100) end
      if type(msg) == "string" then detail = detail .. ": " .. sub(msg, 1, 200) end
    end
    return nil, format("GET %s: %s%s", url, common.http_failure(resp, err), detail), true
  end
  local doc = common.decode_json(resp.body or "")
  if type(doc) == "table" then
    ch:remember_secret(doc.SecretAccessKey)
    ch:remember_secret(doc.Token)
  end
  local creds, cerr = common.from_json_doc(doc, "container", "Token")
  if not creds then return nil, "container credentials: " .. cerr, true end
  return creds
end

return M
