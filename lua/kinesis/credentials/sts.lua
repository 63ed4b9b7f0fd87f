-- kinesis.credentials.sts - the two STS calls the credential chain needs,
-- AssumeRole (SigV4-signed by the C signer, service "sts") and
-- AssumeRoleWithWebIdentity (unsigned: the web identity token is the proof),
-- in the query protocol: a form-encoded POST to the regional endpoint, an
-- XML answer. Retries follow kinesis.retry; AWS errors are built by
-- errors.aws with a redactor. The tiny XML reader handles exactly what STS
-- sends (elements, text, entities, CDATA, comments) and rejects DTDs.
-- Protocol: https://docs.aws.amazon.com/STS/latest/APIReference/CommonParameters.html

local errors = require "kinesis.errors"
local common = require "kinesis.credentials.common"

local type, tostring, tonumber, pairs, ipairs, setmetatable =
  type, tostring, tonumber, pairs, ipairs, setmetatable
local find, sub, match, gsub, format, byte, char =
  string.find, string.sub, string.match, string.gsub, string.format, string.byte, string.char
local concat, sort = table.concat, table.sort
local floor = math.floor

local M = {}

M.API_VERSION = "2011-06-15"

---------------------------------------------------------------- XML reader

local ENTITIES = { lt = "<", gt = ">", amp = "&", quot = '"', apos = "'" }

-- code point -> UTF-8 (utf8.char is not in Lua 5.1)
local function utf8_char(cp)
  if cp < 0x80 then return char(cp) end
  if cp < 0x800 then
    return char(0xC0 + floor(cp / 0x40), 0x80 + cp % 0x40)
  end
  if cp < 0x10000 then
    return char(0xE0 + floor(cp / 0x1000), 0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end
  return char(0xF0 + floor(cp / 0x40000), 0x80 + floor(cp / 0x1000) % 0x40,
              0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

-- Replaces entity and character references; a bare '&' is an error.
local function decode_text(s, at)
  if not find(s, "&", 1, true) then return s end
  local out, n, pos = {}, 0, 1
  while true do
    local amp = find(s, "&", pos, true)
    if not amp then break end
    local ref, after = match(s, "^&(#?[%w]+);()", amp)
    local value
    if ref then
      if sub(ref, 1, 2) == "#x" then
        value = tonumber(sub(ref, 3), 16)
      elseif sub(ref, 1, 1) == "#" then
        value = tonumber(sub(ref, 2), 10)
      else
        value = ENTITIES[ref]
      end
      if type(value) == "number" then
        if value < 1 or value > 0x10FFFF or floor(value) ~= value then value = nil
        else value = utf8_char(value) end
      end
    end
    if not value then
      return nil, format("bad character reference near byte %d", at + amp - 1)
    end
    n = n + 1
    out[n] = sub(s, pos, amp - 1)
    n = n + 1
    out[n] = value
    pos = after
  end
  n = n + 1
  out[n] = sub(s, pos)
  return concat(out)
end

local function finish(el)
  el.text = concat(el.parts)
  el.parts = nil
end

--- Parses an XML document. Returns its root element { name (without a
-- namespace prefix), qname, attrs, children, text } or nil, err. Error
-- messages name byte offsets and tag names, never text content.
function M.parse_xml(s)
  if type(s) ~= "string" then return nil, "XML document must be a string" end
  local doc = { children = {} }
  local stack, top = { doc }, doc
  local pos, n = 1, #s
  if sub(s, 1, 3) == "\239\187\191" then pos = 4 end
  while pos <= n do
    local lt = find(s, "<", pos, true)
    if lt ~= pos then
      local raw = sub(s, pos, (lt or n + 1) - 1)
      if top == doc then
        if find(raw, "%S") then return nil, format("text outside the root element at byte %d", pos) end
      else
        local text, err = decode_text(raw, pos)
        if not text then return nil, err end
        top.parts[#top.parts + 1] = text
      end
      if not lt then break end
    end
    local c = sub(s, lt + 1, lt + 1)
    if c == "?" then
      local e = find(s, "?>", lt + 2, true)
      if not e then return nil, format("unterminated processing instruction at byte %d", lt) end
      pos = e + 2
    elseif c == "!" then
      if sub(s, lt, lt + 3) == "<!--" then
        local e = find(s, "-->", lt + 4, true)
        if not e then return nil, format("unterminated comment at byte %d", lt) end
        pos = e + 3
      elseif sub(s, lt, lt + 8) == "<![CDATA[" then
        if top == doc then return nil, format("CDATA outside the root element at byte %d", lt) end
        local e = find(s, "]]>", lt + 9, true)
        if not e then return nil, format("unterminated CDATA section at byte %d", lt) end
        top.parts[#top.parts + 1] = sub(s, lt + 9, e - 1)
        pos = e + 3
      else
        return nil, format("document type declarations are not supported (byte %d)", lt)
      end
    elseif c == "/" then
      local qname, after = match(s, "^([^%s>]+)%s*>()", lt + 2)
      if not qname then return nil, format("malformed closing tag at byte %d", lt) end
      if top == doc or qname ~= top.qname then
        return nil, format("closing tag </%s> at byte %d does not match <%s>", qname, lt,
                           top.qname or "")
      end
      finish(top)
      stack[#stack] = nil
      top = stack[#stack]
      pos = after
    else
      local qname, p = match(s, "^([%a_:][%w_:%.%-]*)()", lt + 1)
      if not qname then return nil, format("malformed tag at byte %d", lt) end
      local attrs, selfclose = {}, false
      while true do
        local ws, p2 = match(s, "^(%s*)()", p)
        p = p2
        if sub(s, p, p + 1) == "/>" then
          selfclose, p = true, p + 2
          break
        elseif sub(s, p, p) == ">" then
          p = p + 1
          break
        end
        local aname, quote, vstart = match(s, "^([%a_:][%w_:%.%-]*)%s*=%s*([\"'])()", p)
        if ws == "" or not aname then return nil, format("malformed attribute at byte %d", p) end
        local close = find(s, quote, vstart, true)
        if not close then return nil, format("unterminated attribute value at byte %d", vstart) end
        local value, err = decode_text(sub(s, vstart, close - 1), vstart)
        if not value then return nil, err end
        attrs[aname] = value
        p = close + 1
      end
      if top == doc and doc.root then
        return nil, format("second root element at byte %d", lt)
      end
      local el = { name = match(qname, "([^:]*)$"), qname = qname, attrs = attrs,
                   children = {}, parts = {} }
      top.children[#top.children + 1] = el
      if top == doc then doc.root = el end
      if selfclose then
        finish(el)
      else
        stack[#stack + 1] = el
        top = el
      end
      pos = p
    end
  end
  if top ~= doc then return nil, format("unclosed element <%s>", top.qname) end
  if not doc.root then return nil, "no root element" end
  return doc.root
end

--- The first child element of `el` with local name `name`, or nil.
function M.xml_child(el, name)
  if not el then return nil end
  for _, c in ipairs(el.children) do
    if c.name == name then return c end
  end
  return nil
end

--- Follows a path of local names: xml_path(root, "A", "B") -> element | nil.
function M.xml_path(el, ...)
  local path = { ... }
  for i = 1, #path do
    el = M.xml_child(el, path[i])
    if not el then return nil end
  end
  return el
end

---------------------------------------------------------------- timestamps

-- days since 1970-01-01 of a proleptic Gregorian date (Hinnant's algorithm)
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

--- "2024-05-01T12:00:00Z", "...T12:00:00.123Z" or "...T14:00:00+02:00" ->
-- whole seconds since the epoch (a fraction is dropped), or nil.
function M.parse_time(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, se, rest =
    match(s, "^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(.*)$")
  if not y then return nil end
  y, mo, d, h, mi, se = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(se)
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or se > 60 then return nil end
  rest = gsub(rest, "^%.%d+", "")
  local offset
  if rest == "Z" or rest == "z" then
    offset = 0
  else
    local sign, oh, om = match(rest, "^([%+%-])(%d%d):?(%d%d)$")
    if not sign then return nil end
    offset = (tonumber(oh) * 60 + tonumber(om)) * 60
    if sign == "-" then offset = -offset end
  end
  return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset
end

---------------------------------------------------------------- requests

-- RFC 3986 percent-encoding, as the query protocol's form body wants
local function pct(s)
  return (gsub(s, "[^A-Za-z0-9%-%._~]", function(c) return format("%%%02X", byte(c)) end))
end
M.percent_encode = pct

--- The form body for `action` with `params` (keys sorted, so it is stable).
function M.form_body(action, params)
  local keys = {}
  for k in pairs(params) do keys[#keys + 1] = k end
  sort(keys)
  local parts = { "Action=" .. pct(action), "Version=" .. M.API_VERSION }
  for _, k in ipairs(keys) do parts[#parts + 1] = pct(k) .. "=" .. pct(tostring(params[k])) end
  return concat(parts, "&")
end

--- The regional endpoint: https://sts.REGION.amazonaws.com (.com.cn in China).
-- https://docs.aws.amazon.com/general/latest/gr/sts.html
function M.endpoint(region)
  region = region or "us-east-1"
  if not match(region, "^[%w%-]+$") then return nil, "invalid region name" end
  local suffix = match(region, "^cn%-") and "amazonaws.com.cn" or "amazonaws.com"
  return format("https://sts.%s.%s", region, suffix)
end

-- scheme://host[:port][/path] -> url (with a path), path, Host header value
local function split_url(url)
  local scheme, hostport, path = match(url, "^(https?)://([^/?#]+)([^?#]*)$")
  if not scheme then return nil end
  if path == "" then path = "/" end
  local host, port = match(hostport, "^(.*):(%d+)$")
  local host_header = hostport
  if host and ((scheme == "http" and port == "80") or (scheme == "https" and port == "443")) then
    host_header = host
  end
  return scheme .. "://" .. hostport .. path, path, host_header
end

-- codes STS answers for conditions that pass (IDPCommunicationError: the
-- identity provider did not answer STS in time)
local RETRYABLE_CODES = {
  IDPCommunicationError = true, InternalFailure = true, ServiceUnavailable = true,
  Throttling = true, ThrottlingException = true, RequestLimitExceeded = true,
}

local function sts_error(action, fields)
  fields.op = action
  return errors.new(fields)
end

-- One response -> result element or nil, err
local function read_response(action, resp, redact)
  local root = M.parse_xml(resp.body or "")
  if resp.status < 200 or resp.status >= 300 then
    local e = root and M.xml_child(root, "Error")
    local code = e and M.xml_child(e, "Code")
    local msg = e and M.xml_child(e, "Message")
    local rid = root and (M.xml_child(root, "RequestId")
                          or M.xml_path(root, "ResponseMetadata", "RequestId"))
    local c = code and code.text or ""
    if c == "" then c = "HTTP" .. tostring(resp.status) end
    return nil, errors.aws({
      op = action, code = c, status = resp.status,
      message = msg and msg.text or ("STS answered HTTP " .. tostring(resp.status)),
      request_id = (rid and rid.text) or (resp.headers and resp.headers["x-amzn-requestid"]),
      retryable = (resp.status >= 500 or resp.status == 429 or RETRYABLE_CODES[c]) and true or nil,
    }, redact)
  end
  if not root then
    return nil, sts_error(action, { kind = "protocol", code = "InvalidResponse", status = resp.status,
      message = "STS " .. action .. " response is not XML" })
  end
  if root.name ~= action .. "Response" then
    return nil, sts_error(action, { kind = "protocol", code = "InvalidResponse", status = resp.status,
      message = format("STS %s response has root <%s>", action, root.name) })
  end
  local result = M.xml_child(root, action .. "Result")
  local creds = M.xml_child(result, "Credentials")
  local function text(name)
    local el = M.xml_child(creds, name)
    if el and el.text ~= "" then return el.text end
    return nil
  end
  local out = {
    access_key_id = text("AccessKeyId"), secret_access_key = text("SecretAccessKey"),
    session_token = text("SessionToken"),
  }
  local exp = text("Expiration")
  out.expiration = exp and M.parse_time(exp)
  for _, f in ipairs { "access_key_id", "secret_access_key", "session_token", "expiration" } do
    if not out[f] then
      return nil, sts_error(action, { kind = "protocol", code = "InvalidResponse", status = resp.status,
        message = format("STS %s response lacks a valid Credentials/%s", action,
          f == "expiration" and "Expiration" or f == "session_token" and "SessionToken"
          or f == "access_key_id" and "AccessKeyId" or "SecretAccessKey") })
    end
  end
  local arn = M.xml_path(result, "AssumedRoleUser", "Arn")
  out.assumed_role_arn = arn and arn.text or nil
  local rid = M.xml_path(root, "ResponseMetadata", "RequestId")
  out.request_id = rid and rid.text or nil
  return out
end

-- The redactor of a call: the chain's when given, else one that scrubs
-- the secrets this call carries.
local function redactor(opts)
  if opts.redact ~= nil then return opts.redact end
  local secrets = {}
  local c = opts.credentials
  if c then secrets[#secrets + 1] = c.secret_access_key; secrets[#secrets + 1] = c.session_token end
  secrets[#secrets + 1] = opts.web_identity_token
  return function(text)
    for _, v in ipairs(secrets) do
      if type(v) == "string" and #v >= 4 then
        local i, j = find(text, v, 1, true)
        while i do
          text = sub(text, 1, i - 1) .. "<redacted>" .. sub(text, j + 1)
          i, j = find(text, v, i + 10, true)
        end
      end
    end
    return text
  end
end

--- The retry policy STS calls use unless given one: standard mode, three
-- attempts, a 0.1 s backoff base (jittered, doubling, capped at 20 s).
M.RETRY = { mode = "standard", max_attempts = 3, base = 0.1, max_backoff = 20 }

--- Calls `action` with `params`. opts: region, endpoint (URL; else the
-- regional one), transport (with :send), credentials (nil = unsigned),
-- signer (a kinesis.core signer; one is made when needed), time (for the
-- signature), retry (a kinesis.retry policy; else one from M.RETRY with
-- max_attempts), total (seconds for all attempts), request_timeout (the
-- transport's, to cap by what `total` leaves), redact (a redactor for
-- errors.aws), sleep, on_retry(n, delay, err). Returns the parsed credentials or nil, err
-- (kinesis.errors), and the number of attempts.
function M.call(action, params, opts)
  local url = opts.endpoint
  if not url then
    local e, err = M.endpoint(opts.region)
    if not e then return nil, sts_error(action, { kind = "validation", code = "InvalidRegion", message = err }) end
    url = e
  end
  local full, path, host = split_url(url)
  if not full then
    return nil, sts_error(action, { kind = "validation", code = "InvalidEndpoint",
      message = "STS endpoint must be an http(s) URL without a query" })
  end
  local body = M.form_body(action, params)
  local content_type = "application/x-www-form-urlencoded; charset=utf-8"
  local policy = opts.retry
  if not policy then
    local cfg = setmetatable({ max_attempts = opts.max_attempts }, { __index = M.RETRY })
    policy = assert(require("kinesis.retry").new(cfg))
  end
  local redact = redactor(opts)
  local out, err, _, attempts = common.retrying(policy,
    { total = opts.total, sleep = opts.sleep, on_retry = opts.on_retry }, function(_, left)
    local headers = { { "Host", host }, { "Content-Type", content_type } }
    local creds = opts.credentials
    if creds then
      local signer = opts.signer or require("kinesis.core").signer()
      local signed, serr = signer:sign {
        method = "POST", path = path, query = "", headers = headers, body = body,
        region = opts.region or "us-east-1", service = "sts",
        access_key = creds.access_key_id, secret_key = creds.secret_access_key,
        session_token = creds.session_token, time = opts.time and opts.time() or nil,
      }
      if not signed then
        return false, nil, sts_error(action, { kind = "validation", code = "SigningError", message = tostring(serr) })
      end
      for _, h in ipairs(signed.headers) do headers[#headers + 1] = h end
    end
    local resp, terr = opts.transport:send { method = "POST", url = full, headers = headers, body = body,
      timeout = common.request_timeout(opts.request_timeout, left) }
    if not resp then
      terr = terr or {}
      return false, nil, errors.transport(action, { code = terr.code or "Transport",
        message = "STS " .. tostring(terr.message or "request failed") })
    end
    local res, rerr = read_response(action, resp, redact)
    if res then return true, res end
    return false, nil, rerr
  end)
  if out then return out, nil, attempts end
  if err then err.attempts = attempts end
  return nil, err, attempts
end

local function session_name(name)
  return name or ("lua-kinesis-" .. tostring(os.time()))
end

--- AssumeRole signed with opts.credentials. opts: role_arn, role_session_name,
-- external_id, duration_seconds, plus the M.call options.
function M.assume_role(opts)
  local params = { RoleArn = opts.role_arn, RoleSessionName = session_name(opts.role_session_name) }
  if opts.external_id then params.ExternalId = opts.external_id end
  if opts.duration_seconds then params.DurationSeconds = opts.duration_seconds end
  if not opts.credentials then
    return nil, sts_error("AssumeRole", { kind = "validation", code = "CredentialsError",
      message = "AssumeRole needs source credentials" })
  end
  return M.call("AssumeRole", params, opts)
end

--- AssumeRoleWithWebIdentity (unsigned). opts: role_arn, role_session_name,
-- web_identity_token, duration_seconds, plus the M.call options.
function M.assume_role_with_web_identity(opts)
  local params = { RoleArn = opts.role_arn, RoleSessionName = session_name(opts.role_session_name),
                   WebIdentityToken = opts.web_identity_token }
  if opts.duration_seconds then params.DurationSeconds = opts.duration_seconds end
  local o = setmetatable({ credentials = false }, { __index = opts })
  return M.call("AssumeRoleWithWebIdentity", params, o)
end

return M
