-- kinesis.credentials.profile - the shared config and credentials files
-- (~/.aws/config, ~/.aws/credentials; AWS_CONFIG_FILE,
-- AWS_SHARED_CREDENTIALS_FILE): static keys, credential_process, role_arn
-- with source_profile chains or credential_source, web_identity_token_file,
-- and IAM Identity Center (kinesis.credentials.sso). The format is parsed by
-- kinesis.ini. https://docs.aws.amazon.com/sdkref/latest/guide/file-format.html

local ini = require "kinesis.ini"
local common = require "kinesis.credentials.common"

local tostring, tonumber, ipairs = tostring, tonumber, ipairs
local format, sub = string.format, string.sub
local concat = table.concat
local nonempty, lazy, make = common.nonempty, common.lazy, common.make

local M = {}

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

-- credential_source values and the chain's provider each names
local NAMED_SOURCES = {
  Environment = "environment", Ec2InstanceMetadata = "instance metadata", EcsContainer = "container",
}

--- The two file paths, a leading ~ expanded with HOME (nil when unknown).
function M.file_paths(ch)
  local home = ch:getenv("HOME") or ch:getenv("USERPROFILE")
  local function expand(p)
    if sub(p, 1, 1) == "~" and (sub(p, 2, 2) == "/" or #p == 1) then
      if not home then return nil end
      return home .. sub(p, 2)
    end
    return p
  end
  local config = expand(ch:getenv("AWS_CONFIG_FILE") or "~/.aws/config")
  local creds = expand(ch:getenv("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials")
  return config, creds
end

--- profiles, info (kinesis.ini.load's, plus the paths) or nil, reason, fatal.
function M.load(ch)
  local config, creds = M.file_paths(ch)
  if not config and not creds then return nil, "HOME not set, so no ~/.aws files" end
  local profiles, info = ini.load(config, creds)
  if not profiles then return nil, info, true end
  info.config_path, info.credentials_path = config, creds
  return profiles, info
end

--- Credentials of profile `name` (static, process, role, web identity,
-- SSO); nil, reason on failure. visited guards source_profile cycles.
function M.resolve(ch, profiles, info, name, visited)
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
        base, err = make({ access_key_id = props.aws_access_key_id,
          secret_access_key = props.aws_secret_access_key, session_token = props.aws_session_token },
          "profile")
        if not base then return nil, format("profile %q: %s", name, err) end
      else
        base, err = M.resolve(ch, profiles, info, src, visited)
        if not base then return nil, err end
      end
    elseif named then
      local provider = NAMED_SOURCES[named]
      if not provider then
        return nil, format("profile %q: unknown credential_source %q (Environment, Ec2InstanceMetadata, EcsContainer)",
                           name, named)
      end
      base, err = ch:provider(provider)
      if not base then return nil, format("credential_source %s of profile %q: %s", named, name, err) end
    elseif nonempty(props.web_identity_token_file) then
      local creds
      creds, err = lazy("kinesis.credentials.web_identity").assume(ch, props.web_identity_token_file,
        role_arn, nonempty(props.role_session_name), props, "assume_role")
      if not creds then return nil, format("profile %q: %s", name, err) end
      creds.profile = name
      return creds
    else
      return nil, format("profile %q has role_arn but no source_profile, credential_source or web_identity_token_file", name)
    end
    ch:remember(base)
    local o = ch:sts_options(props)
    o.credentials, o.role_arn = base, role_arn
    o.role_session_name = nonempty(props.role_session_name)
    o.external_id = nonempty(props.external_id)
    o.duration_seconds = tonumber(props.duration_seconds)
    local out
    out, err = lazy("kinesis.credentials.sts").assume_role(o)
    if not out then
      return nil, format("profile %q: STS AssumeRole failed: %s", name, ch.sts_failure(err))
    end
    out.role_arn, out.profile = role_arn, name
    return make(out, "assume_role")
  end
  if nonempty(props.sso_session) or nonempty(props.sso_start_url) or nonempty(props.sso_account_id) then
    local creds, err = lazy("kinesis.credentials.sso").get(ch, name, props, info and info.others)
    if not creds then return nil, err end
    creds.profile = name
    return creds
  end
  if nonempty(props.credential_process) then
    return lazy("kinesis.credentials.process").run(ch, props.credential_process, name)
  end
  if props.aws_access_key_id or props.aws_secret_access_key then
    local creds, err = make({ access_key_id = props.aws_access_key_id,
      secret_access_key = props.aws_secret_access_key, session_token = props.aws_session_token,
      profile = name }, "profile")
    if not creds then return nil, format("profile %q: %s", name, err) end
    return creds
  end
  return nil, format("profile %q has no credentials", name)
end

--- The chain's source: the selected profile (the profile option, else
-- AWS_PROFILE, else "default"). Returns credentials or nil, reason, fatal.
function M.get(ch)
  local profiles, info, fatal = M.load(ch)
  if not profiles then return nil, info, fatal end
  local explicit = ch.opts.profile or ch:getenv("AWS_PROFILE")
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
  local creds, err = M.resolve(ch, profiles, info, name, {})
  if not creds then return nil, err, true end
  creds.profile = creds.profile or name
  return creds
end

--- The `region` of a profile in the loaded files, or nil.
function M.region(ch, profile)
  local profiles = M.load(ch)
  if not profiles then return nil end
  local props = profiles[profile or ch:getenv("AWS_PROFILE") or "default"]
  return props and nonempty(props.region) or nil
end

return M
