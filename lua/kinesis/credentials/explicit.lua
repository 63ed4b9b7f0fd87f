-- kinesis.credentials.explicit - what kinesis.new{ credentials = ... } was
-- given: a table of keys, a function returning one, or an object with
-- :get(). Anything given here is the only source: a failure stops the
-- chain. A custom provider's credentials without expiration are asked for
-- again every CUSTOM_TTL seconds (kinesis.credentials).

local common = require "kinesis.credentials.common"

local type, tostring, pcall = type, tostring, pcall

local M = {}

--- Returns credentials or nil, reason, fatal.
function M.get(ch)
  local src = ch.opts.credentials
  if src == nil then return nil, "not set" end
  local raw, source
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
  local creds, err = common.make(raw, source)
  if not creds then return nil, err, true end
  return creds
end

return M
