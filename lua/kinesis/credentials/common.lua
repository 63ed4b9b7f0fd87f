-- kinesis.credentials.common - what every credential provider shares: the
-- credentials table (masked tostring), the JSON document shape of IMDS, the
-- container API and credential_process, file and string helpers, and the
-- one retry loop through kinesis.retry for the providers' HTTP calls (STS,
-- SSO, IMDS, container), sleeping with the runtime's sleep.

local type, tostring, pcall, setmetatable = type, tostring, pcall, setmetatable
local format, sub, gsub, rep = string.format, string.sub, string.gsub, string.rep
local floor, min = math.floor, math.min

local M = {}

function M.lazy(name)
  return package.loaded[name] or require(name)
end
local lazy = M.lazy

function M.trim(s)
  return (gsub(s, "^%s+", ""):gsub("%s+$", ""))
end

function M.nonempty(v)
  if type(v) ~= "string" or v == "" then return nil end
  return v
end
local nonempty = M.nonempty

--- Reads a whole file: text or nil, reason (no content in the reason).
function M.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, tostring(err) end
  local s = f:read("*a")
  f:close()
  if not s then return nil, path .. ": cannot read" end
  return s
end

function M.decode_json(text)
  local ok, doc = pcall(lazy("cjson").decode, text)
  if not ok then return nil end
  return doc
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
M.Credentials = Credentials

function Credentials.__tostring(c)
  local s = format("kinesis.credentials(%s, access key %s", tostring(c.source), mask(c.access_key_id))
  if c.session_token then s = s .. ", session" end
  if c.expiration then s = s .. format(", expires %d", floor(c.expiration)) end
  return s .. ")"
end

--- Validates raw fields and builds a credentials table; nil, reason if bad.
function M.make(t, source, expiration_text)
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

--- The JSON shape of IMDS, the container API and credential_process.
function M.from_json_doc(doc, source, token_field)
  if type(doc) ~= "table" then return nil, "response is not a JSON object" end
  local exp
  if doc.Expiration ~= nil then
    exp = type(doc.Expiration) == "string" and lazy("kinesis.credentials.sts").parse_time(doc.Expiration) or nil
    if not exp then return nil, "Expiration is not an ISO 8601 time" end
  end
  local token = doc[token_field]
  if token ~= nil and type(token) ~= "string" then return nil, token_field .. " is not a string" end
  if type(doc.AccessKeyId) ~= "string" or doc.AccessKeyId == "" then return nil, "AccessKeyId is missing" end
  if type(doc.SecretAccessKey) ~= "string" or doc.SecretAccessKey == "" then
    return nil, "SecretAccessKey is missing"
  end
  return M.make({ access_key_id = doc.AccessKeyId, secret_access_key = doc.SecretAccessKey,
                  session_token = token, expiration = exp }, source)
end

--- "HTTP 403" or the transport's complaint, for error messages.
function M.http_failure(resp, err)
  if resp then return "HTTP " .. tostring(resp.status) end
  return "request failed: " .. tostring(err and (err.message or err.code) or "unknown error")
end

---------------------------------------------------------------- retries

-- Transport failures that fail the same way on every attempt.
local FINAL_TRANSPORT = { TLS = true, InvalidRequest = true }

--- Is a raw HTTP exchange (resp | nil, transport err) worth another
-- attempt? Transport failures other than TLS and refused requests, 5xx and
-- 429; everything else is an answer.
function M.http_retryable(resp, err)
  if not resp then return not (err and FINAL_TRANSPORT[err.code]) end
  return resp.status >= 500 or resp.status == 429
end

--- Runs attempt(n, time_left) until it succeeds, fails for good, the
-- policy's attempts or quota run out, or the next delay would pass the
-- total time. policy: a kinesis.retry policy (max_attempts, delay,
-- acquire, release). attempt returns ok, a, b, c: ok = true ends with
-- a, b, c; ok = false with b an error-like table (code, retryable) tries
-- again when b.retryable. opts: total (seconds), sleep, now,
-- on_retry(n, delay, b) (told before each sleep).
-- Returns the last attempt's a, b, c and the number of attempts.
function M.retrying(policy, opts, attempt)
  local runtime = lazy("kinesis.runtime")
  local sleep, now = opts.sleep or runtime.sleep, opts.now or runtime.now
  local total = opts.total
  local started = now()
  local cost
  local n = 0
  while true do
    n = n + 1
    local left = total and (total - (now() - started)) or nil
    local ok, a, b, c = attempt(n, left)
    if ok then
      policy:release(cost)
      return a, b, c, n
    end
    local e = type(b) == "table" and b or {}
    if not e.retryable or n >= policy.max_attempts then return a, b, c, n end
    local taken = policy:acquire(e)
    if not taken then return a, b, c, n end
    cost = taken
    local d = policy:delay(n)
    if total and now() - started + d >= total then return a, b, c, n end
    if opts.on_retry then opts.on_retry(n, d, e) end
    sleep(d)
  end
end

--- A request's `timeout` (seconds): the transport's request timeout,
-- capped by what the total budget has left.
function M.request_timeout(request, left)
  if not left then return nil end
  if left < 0.001 then left = 0.001 end
  return request and min(request, left) or left
end

return M
