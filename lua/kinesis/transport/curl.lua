-- kinesis.transport.curl - the blocking transport: one libcurl easy handle
-- per client (so sequential calls reuse the connection), driven through the
-- kinesis.curl binding. It blocks the OS thread, so it refuses to run inside
-- an nginx request phase (use the cosocket transport there).
--
--   local t = require("kinesis.transport.curl").new{
--     timeout = { connect = 3, request = 30 }, verify = true, cafile = nil, http2 = true }
--   local resp, err = t:send{ method =, url =, headers = { {name, value}, ... }, body = }
--   -- resp: { status, headers (lower-cased names), body, http_version, request_id }
--   -- err:  { code = "Timeout" | "ConnectionRefused" | "ConnectionReset" | "TLS" | "DNS"
--   --         | "Transport" | "InvalidRequest", message, curl_code }
--   t:close()
local curl = require "kinesis.curl"

local type, setmetatable, ipairs = type, setmetatable, ipairs

local M = { name = "curl" }

local Transport = {}
Transport.__index = Transport

-- Inside nginx only the init phases may block: anywhere else (request
-- phases and timers alike) a blocking call stalls every request the worker
-- serves, and cosockets are available there.
local function nginx_phase()
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and type(ngx.get_phase) == "function" then
    local phase = ngx.get_phase()
    if phase ~= "init" and phase ~= "init_worker" then
      return phase
    end
  end
  return nil
end

function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("kinesis.transport.curl.new: options table expected, got " .. type(opts), 2)
  end
  local timeout = opts.timeout
  if type(timeout) == "number" then timeout = { request = timeout } end
  timeout = timeout or {}
  local easy_opts = {
    connect_timeout = timeout.connect,
    timeout = timeout.request,
    verify = opts.verify,
    cafile = opts.cafile,
    http2 = opts.http2,
  }
  return setmetatable({ handle = curl.easy(easy_opts), easy_opts = easy_opts, idle = {} }, Transport)
end

-- Inside kinesis.run each request in flight needs its own easy handle; idle
-- ones are kept for reuse (the multi handle pools the connections).
local function acquire(self)
  local idle = self.idle
  local h = idle[#idle]
  if h then
    idle[#idle] = nil
    return h
  end
  return curl.easy(self.easy_opts)
end

-- send(request) -> response | nil, err; same tables as kinesis.curl's h:send.
function Transport:send(req)
  local phase = nginx_phase()
  if phase then
    return nil, { code = "Transport", curl_code = 0,
                  message = "the blocking curl transport cannot run in the nginx '"
                    .. phase .. "' phase; use the cosocket transport" }
  end
  local sched = package.loaded["kinesis.scheduler"]
  if sched and sched.current_task() then
    -- a task of kinesis.run: hand the request to the run's multi handle
    -- and yield until it completes
    local h = acquire(self)
    local resp, err = sched.await_http(h, req)
    self.idle[#self.idle + 1] = h
    return resp, err
  end
  return self.handle:send(req)
end

-- { requests = n, connects = n }: connects stays 1 while keep-alive holds
function Transport:stats()
  return self.handle:stats()
end

function Transport:close()
  self.handle:close()
  for _, h in ipairs(self.idle) do h:close() end
  self.idle = {}
end

return M
