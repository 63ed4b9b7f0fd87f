-- kinesis.errors - the one error model: every failure an operation returns
-- is a table {kind, code, message, status, request_id, retryable, op} with
-- __tostring. kind is "validation" | "aws" | "transport" | "protocol" |
-- "waiter". Every AWS error, whatever the service or path, is built by
-- M.aws, which takes the redactor: a new path cannot forget the secrets.
-- AWS error bodies follow the awsJson1_1 rules: the code comes from the
-- X-Amzn-ErrorType header or `__type`, cut at ':' and after '#'.

local cjson = require "cjson"

local format, type, tostring, setmetatable, error, pcall = string.format, type, tostring, setmetatable, error, pcall

local M = {}

local Error = {}
Error.__index = Error
Error.__name = "kinesis.error"

function Error.__tostring(e)
  local s = format("%s: %s error", e.op or "kinesis", e.kind or "unknown")
  if e.code then s = s .. " " .. e.code end
  if e.status then s = s .. format(" (HTTP %d)", e.status) end
  if e.message and e.message ~= "" then s = s .. ": " .. e.message end
  if e.request_id then s = s .. " [request id " .. e.request_id .. "]" end
  return s
end

M.Error = Error

function M.is_error(v)
  return type(v) == "table" and getmetatable(v) == Error
end

function M.new(fields)
  if fields.retryable == nil then fields.retryable = false end
  return setmetatable(fields, Error)
end

-- codes the AWS SDKs treat as throttling (retried with backoff)
local THROTTLING = {
  Throttling = true, ThrottlingException = true, ThrottledException = true,
  RequestThrottledException = true, TooManyRequestsException = true,
  ProvisionedThroughputExceededException = true, TransactionInProgressException = true,
  RequestLimitExceeded = true, BandwidthLimitExceeded = true, LimitExceededException = true,
  RequestThrottled = true, SlowDown = true, PriorRequestNotComplete = true,
  EC2ThrottledException = true, KMSThrottlingException = true,
}
-- transient service-side codes retried regardless of status
local TRANSIENT = {
  InternalFailure = true, InternalFailureException = true, InternalServerError = true,
  ServiceUnavailable = true, RequestTimeout = true, RequestTimeoutException = true,
}
M.THROTTLING, M.TRANSIENT = THROTTLING, TRANSIENT

local STATUS_CODE = {
  [400] = "BadRequest", [403] = "AccessDenied", [404] = "NotFound",
  [413] = "RequestEntityTooLarge", [429] = "TooManyRequestsException",
  [500] = "InternalFailure", [502] = "BadGateway", [503] = "ServiceUnavailable",
  [504] = "GatewayTimeout",
}

local function clean_code(code)
  if type(code) ~= "string" or code == "" then return nil end
  code = code:match("^[^:]*")           -- "Code:http://internal..." -> "Code"
  code = code:match("#(.*)$") or code   -- "com.amazonaws.kinesis.v20131202#Code" -> "Code"
  code = code:gsub("^%s+", ""):gsub("%s+$", "")
  if code == "" then return nil end
  return code
end
M.clean_code = clean_code

-- A redactor is a function(text) -> text, an object with :redact(text)
-- (a credential chain), or false where no secret can reach the message.
local function redactor_of(redact)
  if type(redact) == "function" then return redact end
  if type(redact) == "table" and type(redact.redact) == "function" then
    return function(text) return redact:redact(text) end
  end
  if redact == false then return nil end
  error("kinesis.errors.aws: a redactor is required (a function, a credential chain, or false)", 3)
end

--- The one constructor of an AWS error, for every service and every path
-- (an HTTP answer, an in-stream exception, an STS or SSO answer): fields
-- { op, code, message, status, request_id, ... }; the message goes through
-- `redact`, since services quote the signed request (session token
-- included) back in signature errors. retryable/throttling follow the code
-- and the status unless the caller set them.
function M.aws(fields, redact)
  local r = redactor_of(redact)
  local code = fields.code
  local status = fields.status
  fields.kind = "aws"
  if type(fields.message) ~= "string" then fields.message = "" end
  if r and fields.message ~= "" then fields.message = r(fields.message) end
  if fields.throttling == nil then fields.throttling = THROTTLING[code] or false end
  if fields.retryable == nil then
    fields.retryable = (THROTTLING[code] or TRANSIENT[code]
      or status == 500 or status == 502 or status == 503 or status == 504) and true or false
  end
  return M.new(fields)
end

--- Builds the error for a non-2xx HTTP response with a JSON error body
-- (awsJson1_0/1_1, restJson1); `redact` as for M.aws.
function M.from_response(op, resp, redact)
  local h = resp.headers or {}
  local status = resp.status
  local body = resp.body or ""
  local code = clean_code(h["x-amzn-errortype"])
  local message
  local ok, doc = pcall(cjson.decode, body)
  if ok and type(doc) == "table" then
    code = code or clean_code(doc.__type) or clean_code(doc.code) or clean_code(doc.Code)
    local m = doc.message
    if type(m) ~= "string" then m = doc.Message end
    if type(m) == "string" then message = m end
  elseif body ~= "" then
    -- not JSON (a proxy or load balancer page): keep a printable excerpt
    message = body:sub(1, 200):gsub("[%c]+", " ")
  end
  code = code or STATUS_CODE[status] or ("Http" .. tostring(status))
  return M.aws({
    code = code, message = message or "", status = status,
    request_id = h["x-amzn-requestid"], op = op,
  }, redact)
end

--- Builds a transport error from the transport's {code, message}.
-- transport failures worth another attempt; a TLS verification failure or
-- a request the transport refused will fail the same way again
local NOT_RETRYABLE_TRANSPORT = { TLS = true, InvalidRequest = true }

function M.transport(op, terr)
  local code = terr.code or "Transport"
  return M.new {
    kind = "transport", code = code, message = terr.message or "",
    retryable = not NOT_RETRYABLE_TRANSPORT[code], op = op,
  }
end

function M.validation(op, verr)
  return M.new {
    kind = "validation", code = "ValidationError", message = verr.message,
    field = verr.path, rule = verr.rule, op = op,
  }
end

function M.protocol(op, message, fields)
  local e = fields or {}
  e.kind, e.code, e.message, e.op = "protocol", e.code or "ProtocolError", message, op
  return M.new(e)
end

return M
