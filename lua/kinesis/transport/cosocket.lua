-- kinesis.transport.cosocket - HTTP/1.1 over nginx cosockets
-- (ngx.socket.tcp), the transport chosen automatically inside OpenResty:
-- every wait yields to the nginx event loop instead of blocking the worker.
-- Content-Length and chunked responses, keep-alive through the worker's
-- connection pool (setkeepalive), TLS through sslhandshake with certificate
-- verification on by default (trust comes from lua_ssl_trusted_certificate),
-- and the client's connect/request timeouts. Same tables as the curl one:
--
--   local t = require("kinesis.transport.cosocket").new{
--     timeout = { connect = 3, request = 30 }, verify = true,
--     pool = { size = 30, idle_timeout = 60, backlog = nil, name = nil } }  -- or pool = false
--   local resp, err = t:send{ method =, url =, headers = { {name, value}, ... }, body =, timeout = }
--   -- resp: { status, headers (lower-cased names), body, http_version, request_id }
--   -- err:  { code = "Timeout" | "ConnectionRefused" | "ConnectionReset" | "TLS" | "DNS"
--   --         | "Transport" | "InvalidRequest", message }
--   t:close()
--
-- No HTTP/2 here (cosockets have none), so no event streams: SubscribeToShard
-- needs HTTP/2 on the real service; open_stream returns an error saying so.

local core = require "kinesis.core"

local type, tostring, tonumber, setmetatable, ipairs, pairs, next, error, rawget =
  type, tostring, tonumber, setmetatable, ipairs, pairs, next, error, rawget
local find, sub, lower, match, format, gsub = string.find, string.sub, string.lower,
  string.match, string.format, string.gsub
local concat, sort = table.concat, table.sort
local floor, huge = math.floor, math.huge
local monotime = core.monotime

-- nginx's API table; nil outside nginx, where new() refuses to build a transport
local ngx = rawget(_G, "ngx")

local M = { name = "cosocket", streaming = false }

-- the phases in which cosockets work: those where nginx can yield, one list
-- kept by kinesis.runtime
local runtime = require "kinesis.runtime"
M.phases = require("kinesis.runtime.nginx").yielding_phases

local DEFAULT_CONNECT, DEFAULT_REQUEST = 3, 30      -- seconds, as the curl transport
local DEFAULT_POOL_SIZE, DEFAULT_IDLE = 30, 60      -- connections, seconds
local NO_LIMIT_MS = 2147483647                      -- a timeout of 0 means "none"
local MAX_HEADER_BYTES = 65536                      -- status line + headers
local MAX_HEADERS = 200

local Transport = {}
Transport.__index = Transport
Transport.__name = "kinesis.transport.cosocket"
Transport.name = M.name

local function fail(code, message)
  return nil, { code = code, message = message }
end

local function check_seconds(v, what)
  if v ~= nil and (type(v) ~= "number" or v < 0 or v ~= v) then
    error("kinesis.transport.cosocket.new: " .. what .. " must be a non-negative number of seconds", 3)
  end
  return v
end

--- Builds a transport. Raises on misuse (bad option types, outside nginx).
function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("kinesis.transport.cosocket.new: options table expected, got " .. type(opts), 2)
  end
  if type(ngx) ~= "table" or type(ngx.socket) ~= "table" then
    error("kinesis.transport.cosocket needs nginx (OpenResty / lua-nginx-module): ngx.socket is missing", 2)
  end
  -- a per-connection CA file cannot be given to sslhandshake: trust is
  -- configured for the whole http/server/location by lua_ssl_trusted_certificate
  if opts.cafile ~= nil then
    error("kinesis.transport.cosocket: cafile cannot be set per connection; "
      .. "use the nginx directive lua_ssl_trusted_certificate instead", 2)
  end
  local timeout = opts.timeout
  if type(timeout) == "number" then timeout = { request = timeout } end
  if timeout ~= nil and type(timeout) ~= "table" then
    error("kinesis.transport.cosocket.new: timeout must be a table or a number", 2)
  end
  timeout = timeout or {}
  local connect = check_seconds(timeout.connect, "timeout.connect")
  local request = check_seconds(timeout.request, "timeout.request")
  if connect == nil then connect = DEFAULT_CONNECT end
  if request == nil then request = DEFAULT_REQUEST end

  local pool = opts.pool
  local keepalive = true
  if pool == false then
    keepalive, pool = false, {}
  elseif pool == nil then
    pool = {}
  elseif type(pool) ~= "table" then
    error("kinesis.transport.cosocket.new: pool must be a table or false", 2)
  end
  local size = pool.size or DEFAULT_POOL_SIZE
  if type(size) ~= "number" or size < 1 or size ~= floor(size) then
    error("kinesis.transport.cosocket.new: pool.size must be a positive integer", 2)
  end
  local idle = check_seconds(pool.idle_timeout, "pool.idle_timeout") or DEFAULT_IDLE
  local backlog = pool.backlog
  if backlog ~= nil and (type(backlog) ~= "number" or backlog < 0 or backlog ~= floor(backlog)) then
    error("kinesis.transport.cosocket.new: pool.backlog must be a non-negative integer", 2)
  end
  if pool.name ~= nil and type(pool.name) ~= "string" then
    error("kinesis.transport.cosocket.new: pool.name must be a string", 2)
  end

  return setmetatable({
    connect_timeout = connect, request_timeout = request,
    verify = opts.verify ~= false,
    keepalive = keepalive, pool_size = size, idle_ms = floor(idle * 1000),
    backlog = backlog, pool_prefix = pool.name or "kinesis",
    requests = 0, connects = 0,
  }, Transport)
end

---------------------------------------------------------------- request

local TOKEN = "^[!#$%%&'*+%-.^_`|~%w]+$"

--- Splits an http(s) URL; nil, message when it is not one.
local function parse_url(url)
  if type(url) ~= "string" then return nil, "request url must be a string" end
  if find(url, "[%z\1-\32\127]") then return nil, "request url contains spaces or control characters" end
  local scheme, authority, target = match(url, "^(%a[%w+.-]*)://([^/?#]+)([^#]*)")
  if not scheme then return nil, "request url is not absolute: " .. url end
  scheme = lower(scheme)
  if scheme ~= "http" and scheme ~= "https" then
    return nil, "request url scheme must be http or https: " .. url
  end
  if find(authority, "@", 1, true) then return nil, "request url must not carry user info" end
  local host, port = match(authority, "^%[([%x:.]+)%]:?(%d*)$")
  local literal6 = host ~= nil
  if not host then host, port = match(authority, "^([^:]+):?(%d*)$") end
  if not host then return nil, "request url has a bad host: " .. url end
  local default = scheme == "https" and 443 or 80
  local nport = default
  if port ~= "" then
    nport = tonumber(port)
    if nport < 1 or nport > 65535 then return nil, "request url has a bad port: " .. url end
  end
  if target == "" then target = "/" end
  if sub(target, 1, 1) == "?" then target = "/" .. target end
  local host_header = literal6 and ("[" .. host .. "]") or host
  if nport ~= default then host_header = host_header .. ":" .. nport end
  return {
    scheme = scheme, tls = scheme == "https",
    -- cosockets take IPv6 literals in brackets (ngx_parse_url)
    connect_host = literal6 and ("[" .. host .. "]") or host,
    host = host, port = nport, target = target, host_header = host_header,
  }
end
M.parse_url = parse_url

-- header names and values that could split or smuggle a request
local function bad_header(name, value)
  if type(name) ~= "string" or not find(name, TOKEN) then
    return "header name " .. format("%q", tostring(name)) .. " is not an HTTP token"
  end
  if type(value) == "number" then value = tostring(value) end
  if type(value) ~= "string" then
    return "header " .. name .. " has a " .. type(value) .. " value"
  end
  if find(value, "[%z\r\n]") then
    return "header " .. name .. " contains CR, LF or NUL"
  end
  return nil, value
end

--- The request bytes as a table for sock:send; nil, message on bad input.
local function serialize(req, u)
  local method = req.method or "GET"
  if type(method) ~= "string" or not find(method, TOKEN) then
    return nil, "request method " .. format("%q", tostring(method)) .. " is not an HTTP token"
  end
  local body = req.body
  if body ~= nil and type(body) ~= "string" then
    return nil, "request body must be a string"
  end
  local out, n = { method, " ", u.target, " HTTP/1.1\r\n" }, 4
  local has_host, has_length = false, false
  local function add(name, value)
    local problem, v = bad_header(name, value)
    if problem then return problem end
    local lname = lower(name)
    if lname == "host" then
      has_host = true
    elseif lname == "content-length" then
      if tonumber(v) ~= #(body or "") then
        return "header Content-Length " .. v .. " does not match the body length " .. #(body or "")
      end
      has_length = true
    elseif lname == "transfer-encoding" or lname == "connection" and find(lower(v), "upgrade", 1, true) then
      return "header " .. name .. " is managed by the transport"
    end
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = name, ": ", v, "\r\n"
    n = n + 4
  end
  local headers = req.headers
  if headers ~= nil and type(headers) ~= "table" then
    return nil, "request headers must be a table"
  end
  if headers then
    if #headers > 0 or next(headers) == nil then
      for _, h in ipairs(headers) do
        if type(h) ~= "table" then return nil, "each header must be a {name, value} pair" end
        local problem = add(h[1], h[2])
        if problem then return nil, problem end
      end
    else
      -- a name = value map, in a stable order
      local names = {}
      for k in pairs(headers) do names[#names + 1] = k end
      sort(names, function(a, b) return tostring(a) < tostring(b) end)
      for _, k in ipairs(names) do
        local problem = add(k, headers[k])
        if problem then return nil, problem end
      end
    end
  end
  if not has_host then
    out[n + 1], out[n + 2], out[n + 3] = "Host: ", u.host_header, "\r\n"
    n = n + 3
  end
  if not has_length and (body or method == "POST" or method == "PUT") then
    out[n + 1], out[n + 2], out[n + 3] = "Content-Length: ", tostring(#(body or "")), "\r\n"
    n = n + 3
  end
  out[n + 1] = "\r\n"
  if body and body ~= "" then out[n + 2] = body end
  return out
end

---------------------------------------------------------------- I/O helpers

-- A request's time budget: the total deadline (request timeout) bounds
-- every step; the connect step is also bounded by the connect timeout.
local function deadline_of(self, req)
  local total = req.timeout
  if total == nil then total = self.request_timeout end
  if type(total) ~= "number" or total < 0 then return nil end
  if total == 0 then return huge end
  return monotime() + total
end

-- milliseconds left until `deadline` (at least 1), or nil when it passed
local function left_ms(deadline)
  if deadline == huge then return NO_LIMIT_MS end
  local left = deadline - monotime()
  if left <= 0 then return nil end
  local ms = floor(left * 1000 + 0.5)
  if ms < 1 then ms = 1 end
  if ms > NO_LIMIT_MS then ms = NO_LIMIT_MS end
  return ms
end

local function set_io_timeout(sock, deadline)
  local ms = left_ms(deadline)
  if not ms then return false end
  sock:settimeouts(ms, ms, ms)
  return true
end

-- maps a cosocket error string to the transport error codes
local function classify(err, stage)
  err = tostring(err)
  if err == "timeout" then return "Timeout" end
  if find(err, "connection refused", 1, true) then return "ConnectionRefused" end
  if stage == "connect" and (find(err, "resolve", 1, true) or find(err, "resolver", 1, true)
      or find(err, "host not found", 1, true)) then
    return "DNS"
  end
  if stage == "tls" then return "TLS" end
  if err == "closed" or find(err, "reset by peer", 1, true) or find(err, "broken pipe", 1, true) then
    return "ConnectionReset"
  end
  return "Transport"
end

local function io_error(err, stage, what)
  local code = classify(err, stage)
  if code == "Timeout" then
    return { code = code, message = what .. ": timed out" }
  end
  return { code = code, message = what .. ": " .. tostring(err) }
end

local function timed_out(what)
  return { code = "Timeout", message = what .. ": request timeout reached" }
end

-- reads one CRLF-terminated line within the deadline; on failure also
-- says whether any byte of it had arrived
local function read_line(sock, deadline, what)
  if not set_io_timeout(sock, deadline) then return nil, timed_out(what), false end
  local line, err, partial = sock:receive("*l")
  if not line then return nil, io_error(err, "read", what), partial == nil or partial == "" end
  return line
end

local function read_exact(sock, n, deadline, what)
  if n == 0 then return "" end
  if not set_io_timeout(sock, deadline) then return nil, timed_out(what) end
  local data, err = sock:receive(n)
  if not data then return nil, io_error(err, "read", what) end
  return data
end

---------------------------------------------------------------- response

--- Reads the status line and headers. Returns status, version, headers,
-- or nil, err, got_nothing (true when not one byte of a response came).
local function read_head(sock, deadline)
  local line, err, nothing
  local first = true
  while true do
    line, err, nothing = read_line(sock, deadline, "reading the response status")
    if not line then return nil, err, first and nothing end
    first = false
    local major, minor, status = match(line, "^HTTP/(%d)%.(%d) (%d%d%d)")
    if not status then
      return nil, { code = "Transport", message = "malformed HTTP status line: " .. sub(line, 1, 80) }
    end
    status = tonumber(status)
    local headers, count, bytes = {}, 0, #line
    while true do
      local h
      h, err = read_line(sock, deadline, "reading the response headers")
      if not h then return nil, err end
      if h == "" then break end
      bytes = bytes + #h + 2
      count = count + 1
      if bytes > MAX_HEADER_BYTES or count > MAX_HEADERS then
        return nil, { code = "Transport", message = "response headers exceed "
          .. MAX_HEADER_BYTES .. " bytes or " .. MAX_HEADERS .. " lines" }
      end
      local name, value = match(h, "^([^:%s]+):[ \t]*(.-)[ \t]*$")
      if not name then
        -- obsolete line folding and junk are refused (RFC 9112, 5.2)
        return nil, { code = "Transport", message = "malformed response header line: " .. sub(h, 1, 80) }
      end
      name = lower(name)
      local prev = headers[name]
      headers[name] = prev and (prev .. ", " .. value) or value
    end
    -- 1xx interim responses (100 Continue, 103 Early Hints) precede the real one
    if status >= 200 or status == 101 then
      return status, major .. "." .. minor, headers
    end
  end
end

-- the body of a chunked response (RFC 9112, 7.1), trailers read and dropped
local function read_chunked(sock, deadline)
  local parts, n = {}, 0
  while true do
    local line, err = read_line(sock, deadline, "reading a chunk size")
    if not line then return nil, err end
    local hex = match(line, "^(%x+)[ \t]*;?")
    if not hex or #hex > 12 then
      return nil, { code = "Transport", message = "malformed chunk size line: " .. sub(line, 1, 40) }
    end
    local size = tonumber(hex, 16)
    if size == 0 then break end
    local data
    data, err = read_exact(sock, size, deadline, "reading a chunk")
    if not data then return nil, err end
    n = n + 1
    parts[n] = data
    local crlf
    crlf, err = read_line(sock, deadline, "reading a chunk end")
    if not crlf then return nil, err end
    if crlf ~= "" then return nil, { code = "Transport", message = "chunk not followed by CRLF" } end
  end
  -- trailer section up to the empty line
  local bytes = 0
  while true do
    local line, err = read_line(sock, deadline, "reading the trailers")
    if not line then return nil, err end
    if line == "" then break end
    bytes = bytes + #line
    if bytes > MAX_HEADER_BYTES then
      return nil, { code = "Transport", message = "response trailers exceed " .. MAX_HEADER_BYTES .. " bytes" }
    end
  end
  return concat(parts)
end

-- reads until the server closes (a response with neither length nor chunks)
local function read_to_close(sock, deadline)
  if not set_io_timeout(sock, deadline) then return nil, timed_out("reading the response body") end
  local data, err, partial = sock:receive("*a")
  if not data then
    if err == "timeout" then return nil, timed_out("reading the response body") end
    return nil, io_error(err, "read", "reading the response body"), partial
  end
  return data
end

--- Reads the body as the headers frame it; returns body, reusable.
local function read_body(sock, method, status, headers, deadline)
  if method == "HEAD" or status == 204 or status == 304 or (status >= 100 and status < 200) then
    return "", true
  end
  local te = headers["transfer-encoding"]
  if te then
    -- chunked must be the final coding (RFC 9112, 6.3); nothing else is sent to us
    if not find(lower(te), "chunked%s*$") then
      return nil, { code = "Transport", message = "unsupported Transfer-Encoding: " .. te }
    end
    local body, err = read_chunked(sock, deadline)
    if not body then return nil, err end
    return body, true
  end
  local cl = headers["content-length"]
  if cl then
    local len = match(cl, "^%s*(%d+)%s*$")
    if not len then
      -- repeated identical values were joined with ", " (RFC 9110, 8.6)
      local first = match(cl, "^%s*(%d+)")
      if first and gsub(cl, "%s*" .. first .. "%s*,?", "") == "" then len = first end
    end
    len = len and tonumber(len)
    if not len or #cl > 20 then
      return nil, { code = "Transport", message = "malformed Content-Length: " .. cl }
    end
    local body, err = read_exact(sock, len, deadline, "reading the response body")
    if not body then return nil, err end
    return body, true
  end
  local body, err = read_to_close(sock, deadline)
  if not body then return nil, err end
  return body, false
end

local function keeps_alive(version, headers)
  local conn = headers["connection"]
  conn = conn and lower(conn) or ""
  if find(conn, "close", 1, true) then return false end
  if version == "1.0" then return find(conn, "keep-alive", 1, true) ~= nil end
  return true
end

---------------------------------------------------------------- send

local function phase_error()
  if runtime.can_yield() then return nil end
  local phase = runtime.phase() or "unknown"
  return {
    code = "InvalidRequest",
    message = "cosockets are not available in the nginx '" .. phase .. "' phase; "
      .. "send from a request phase (rewrite, access, content) or a timer (ngx.timer.at), "
      .. "or in init/init_worker force the blocking transport with transport = \"curl\"",
  }
end

-- a pool per destination, TLS mode and verification, so a verified request
-- never rides on a connection that was set up without verification
local function pool_name(self, u)
  return format("%s:%s:%s:%d:%s", self.pool_prefix, u.scheme, u.host, u.port,
    u.tls and (self.verify and "verify" or "noverify") or "plain")
end

-- Connects (or takes a pooled connection) and does the TLS handshake on a
-- new one. Returns sock, reused or nil, err.
local function open(self, u, deadline)
  local sock, err = ngx.socket.tcp()
  if not sock then return nil, { code = "Transport", message = "ngx.socket.tcp: " .. tostring(err) } end
  local total = left_ms(deadline)
  if not total then return nil, timed_out("connecting") end
  local cms = self.connect_timeout > 0 and floor(self.connect_timeout * 1000 + 0.5) or NO_LIMIT_MS
  if cms < 1 then cms = 1 end
  if cms > total then cms = total end
  sock:settimeouts(cms, total, total)
  -- without keep-alive the pool name is one nothing is ever put back into,
  -- so every connect is a new connection
  local ok
  ok, err = sock:connect(u.connect_host, u.port, {
    pool = self.keepalive and pool_name(self, u) or (pool_name(self, u) .. ":nopool"),
    pool_size = self.pool_size, backlog = self.backlog,
  })
  if not ok then
    return nil, io_error(err, "connect", format("connecting to %s:%d", u.host, u.port))
  end
  local reused = (sock:getreusedtimes() or 0) > 0
  if not reused then
    self.connects = self.connects + 1
    if u.tls then
      if not set_io_timeout(sock, deadline) then
        sock:close()
        return nil, timed_out("TLS handshake")
      end
      -- SNI and host-name verification both use the URL's host name
      local sess
      sess, err = sock:sslhandshake(false, u.host, self.verify)
      -- lua-nginx-module 0.10.23 (Debian 12) can answer true for a handshake
      -- whose verification failed when it completed without waiting; the
      -- socket is closed then, which getreusedtimes reports
      if sess and not sock:getreusedtimes() then
        sess, err = nil, "handshake failed (certificate verification or the peer closed the connection)"
      end
      if not sess then
        sock:close()
        local e = io_error(err, "tls", format("TLS handshake with %s:%d", u.host, u.port))
        if e.code == "TLS" and self.verify then
          e.message = e.message .. " (certificates are verified against lua_ssl_trusted_certificate)"
        end
        return nil, e
      end
    end
  end
  return sock, reused
end

-- one exchange on an open socket: returns resp or nil, err, retry_fresh
local function exchange(self, sock, reused, data, method, deadline)
  if not set_io_timeout(sock, deadline) then return nil, timed_out("sending the request") end
  local bytes, err = sock:send(data)
  if not bytes then
    -- a pooled connection the server already closed: safe to try once more
    return nil, io_error(err, "write", "sending the request"), reused and err ~= "timeout"
  end
  local status, version, headers
  local nothing
  status, version, headers = read_head(sock, deadline)
  if not status then
    err, nothing = version, headers
    return nil, err, reused and nothing and err.code == "ConnectionReset"
  end
  local body, reusable = read_body(sock, method, status, headers, deadline)
  if not body then return nil, reusable end
  local resp = {
    status = status, headers = headers, body = body, http_version = version,
    request_id = headers["x-amzn-requestid"],
  }
  local keep = reusable and keeps_alive(version, headers) and status ~= 101
  return resp, nil, nil, keep
end

--- Sends one request; returns the response table or nil, err.
function Transport:send(req)
  if type(req) ~= "table" then
    error("kinesis.transport.cosocket: send expects a request table", 2)
  end
  local perr = phase_error()
  if perr then return nil, perr end
  if req.stream then return self:open_stream(req) end
  local u, uerr = parse_url(req.url)
  if not u then return fail("InvalidRequest", uerr) end
  local data, serr = serialize(req, u)
  if not data then return fail("InvalidRequest", serr) end
  local deadline = deadline_of(self, req)
  if not deadline then return fail("InvalidRequest", "request timeout must be a non-negative number") end
  local method = req.method or "GET"

  self.requests = self.requests + 1
  local fresh_retry = false
  while true do
    local sock, reused = open(self, u, deadline)
    if not sock then return nil, reused end
    local resp, err, retry_fresh, keep = exchange(self, sock, reused, data, method, deadline)
    if resp then
      if keep and self.keepalive then
        local ok = sock:setkeepalive(self.idle_ms, self.pool_size)
        if not ok then sock:close() end
      else
        sock:close()
      end
      return resp
    end
    sock:close()
    -- a kept-alive connection may have been closed by the server while idle:
    -- resend once on a new connection when no byte of a response came back
    if not (retry_fresh and not fresh_retry) then return nil, err end
    fresh_retry = true
  end
end

--- Event streams (SubscribeToShard) need HTTP/2 on the real service;
-- cosockets speak HTTP/1.1 only, so this transport cannot carry them.
function Transport:open_stream()
  return fail("InvalidRequest", "the cosocket transport cannot carry event streams: "
    .. "SubscribeToShard needs HTTP/2, which nginx cosockets do not speak; "
    .. "read with GetRecords inside nginx, or subscribe from a process outside nginx")
end

-- { requests = n, connects = n }: connects counts new TCP connections, so it
-- stays below requests while the keep-alive pool is reused
function Transport:stats()
  return { requests = self.requests, connects = self.connects }
end

-- Connections live in the worker's cosocket pool, not in the transport, so
-- there is nothing to release; kept for the transport interface.
function Transport:close()
  return true
end

return M
