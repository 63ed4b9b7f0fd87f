-- kinesis.credentials.env - credentials from the process environment:
-- AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and
-- AWS_CREDENTIAL_EXPIRATION. Half a pair is a configuration mistake that
-- stops the chain rather than falling through to another source.
-- https://docs.aws.amazon.com/sdkref/latest/guide/feature-static-credentials.html

local common = require "kinesis.credentials.common"

local M = {}

--- ch: the chain (getenv). Returns credentials or nil, reason, fatal.
function M.get(ch)
  local id, secret = ch:getenv("AWS_ACCESS_KEY_ID"), ch:getenv("AWS_SECRET_ACCESS_KEY")
  if not id and not secret then return nil, "AWS_ACCESS_KEY_ID not set" end
  if not id then return nil, "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not", true end
  if not secret then return nil, "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not", true end
  local exp
  local exp_text = ch:getenv("AWS_CREDENTIAL_EXPIRATION")
  if exp_text then
    exp = common.lazy("kinesis.credentials.sts").parse_time(exp_text)
    if not exp then return nil, "AWS_CREDENTIAL_EXPIRATION is not an ISO 8601 time", true end
  end
  local creds, err = common.make({ access_key_id = id, secret_access_key = secret,
    session_token = ch:getenv("AWS_SESSION_TOKEN"), expiration = exp }, "environment")
  if not creds then return nil, err, true end
  return creds
end

return M
