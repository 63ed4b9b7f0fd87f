-- kinesis.credentials.web_identity - AssumeRoleWithWebIdentity with a token
-- file (EKS service accounts and other OIDC federations), configured by
-- AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN (+ AWS_ROLE_SESSION_NAME) or by
-- a profile's web_identity_token_file + role_arn. The file is re-read on
-- every refresh, since its issuer rotates it.
-- https://docs.aws.amazon.com/sdkref/latest/guide/feature-assume-role-credentials.html

local common = require "kinesis.credentials.common"

local tonumber = tonumber

local M = {}

--- Exchanges the token in `token_file` for role credentials. props: the
-- profile's properties (region, duration_seconds) or nil. Returns
-- credentials or nil, reason.
function M.assume(ch, token_file, role_arn, session_name, props, source)
  local token, rerr = common.read_file(token_file)
  if not token then return nil, "cannot read the web identity token file: " .. rerr end
  token = common.trim(token)
  if token == "" then return nil, "the web identity token file " .. token_file .. " is empty" end
  ch:remember_secret(token)
  local o = ch:sts_options(props)
  o.role_arn, o.role_session_name, o.web_identity_token = role_arn, session_name, token
  if props and props.duration_seconds then
    o.duration_seconds = tonumber(props.duration_seconds)
  end
  local out, err = common.lazy("kinesis.credentials.sts").assume_role_with_web_identity(o)
  if not out then return nil, "STS AssumeRoleWithWebIdentity failed: " .. ch.sts_failure(err) end
  out.role_arn = role_arn
  return common.make(out, source)
end

--- The environment-configured source. Returns credentials or nil, reason, fatal.
function M.get(ch)
  local file, role = ch:getenv("AWS_WEB_IDENTITY_TOKEN_FILE"), ch:getenv("AWS_ROLE_ARN")
  if not file then return nil, "AWS_WEB_IDENTITY_TOKEN_FILE not set" end
  if not role then return nil, "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not", true end
  local creds, err = M.assume(ch, file, role, ch:getenv("AWS_ROLE_SESSION_NAME"), nil, "web_identity")
  if not creds then return nil, err, true end
  return creds
end

return M
