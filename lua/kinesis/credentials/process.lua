-- kinesis.credentials.process - a profile's credential_process: the command
-- runs through sh with stdin closed; its stdout is the JSON document
-- (Version 1, AccessKeyId, SecretAccessKey, SessionToken, Expiration). A
-- failure reports the exit status and the first line of stderr, never stdout,
-- which may hold the secrets.
-- https://docs.aws.amazon.com/sdkref/latest/guide/feature-process-credentials.html

local common = require "kinesis.credentials.common"

local type, tostring, tonumber = type, tostring, tonumber
local format, match, sub, gsub = string.format, string.match, string.sub, string.gsub
local floor = math.floor

local M = {}

local function shell_quote(s)
  return "'" .. gsub(s, "'", "'\\''") .. "'"
end

--- Runs `command` for profile `name`. Returns credentials or nil, reason.
function M.run(ch, command, name)
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
  local status = tonumber(match(common.read_file(statusfile) or "", "%d+"))
  local stderr = common.read_file(errfile) or ""
  os.remove(errfile)
  os.remove(statusfile)
  local doc = common.decode_json(out)
  if type(doc) == "table" then
    ch:remember_secret(doc.SecretAccessKey)
    ch:remember_secret(doc.SessionToken)
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
  local creds, err = common.from_json_doc(doc, "process", "SessionToken")
  if not creds then return nil, format("credential_process of profile %q: %s", name, err) end
  creds.profile = name
  return creds
end

return M
