-- kinesis.transport.curl - the blocking transport: one libcurl easy handle
-- per client (so sequential calls reuse the connection), driven through the
-- kinesis.curl binding. It blocks the OS thread, so it refuses to run inside
-- an nginx request phase (use the cosocket transport there).
--
--   local t = require("kinesis.transport.curl").new{
--     timeout = { connect = 3, request = 30 }, verify = true, cafile = nil, http2 = true }
--   local resp, err = t:send{ method =, url =, headers = { {name, value}, ... }, body = }
--   t:drop_connection()   -- the last answer could not be decoded: not reused
--   -- resp: { status, headers (lower-cased names), body, http_version, request_id }
--   -- err:  { code = "Timeout" | "ConnectionRefused" | "ConnectionReset" | "TLS" | "DNS"
--   --         | "Transport" | "InvalidRequest", message, curl_code }
--   local st, err = t:open_stream(req [, { buffer = bytes }])   -- SubscribeToShard
--   local head, err = st:head(timeout)      -- { status, headers, http_version, request_id }
--   local bytes, err = st:read(timeout)     -- bytes | nil (end) | nil, err (code "Timeout", ...)
--   st:close()
--   t:close()
local curl = require "kinesis.curl"
local runtime = require "kinesis.runtime"

local type, setmetatable, ipairs, pcall, tostring, error = type, setmetatable, ipairs, pcall, tostring, error
local rawget = rawget

local M = { name = "curl" }

local Transport = {}
Transport.__index = Transport

-- Inside nginx only the init phases may block: anywhere else (request
-- phases and timers alike) a blocking call stalls every request the worker
-- serves, and cosockets are available there (kinesis.runtime decides).
local function nginx_phase()
  if runtime.must_not_block() then return runtime.phase() end
  return nil
end

-- InvalidRequest: refused unsent and never retried (it would fail again)
local function refusal(phase)
  return { code = "InvalidRequest", curl_code = 0,
           message = "the blocking curl transport cannot run in the nginx '"
             .. phase .. "' phase; use the cosocket transport" }
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

-- The run's poller: one curl multi handle per kinesis.run, registered with
-- the runtime's loop, which asks it to wait while a request is in flight or
-- a stream reader is parked; it wakes the key of each transfer with news.
local function run_poller()
  local state = runtime.run_state()
  local p = state.curl_poller
  if p then return p end
  local multi = curl.multi()
  local keys = {}          -- transfer id -> the key its task is parked on
  p = { multi = multi, keys = keys, inflight = 0, stream_waiting = 0 }
  function p.pending() return p.inflight > 0 or p.stream_waiting > 0 end
  function p.wait(timeout)
    local done, err = multi:wait(timeout)
    if not done then error("kinesis.run: " .. tostring(err and err.message or err), 0) end
    for i = 1, #done do
      local d = done[i]
      local key = keys[d.id]
      if key then
        if d.stream then
          runtime.wake(key, "news")
        else
          keys[d.id] = nil
          p.inflight = p.inflight - 1
          runtime.wake(key, d.resp, d.err)
        end
      end
    end
  end
  function p.close() multi:close() end
  state.curl_poller = p
  runtime.add_poller(p)
  return p
end

-- send(request) -> response | nil, err; same tables as kinesis.curl's h:send.
function Transport:send(req)
  local phase = nginx_phase()
  if phase then
    return nil, refusal(phase)
  end
  if runtime.current_task() then
    -- a task of kinesis.run: hand the request to the run's multi handle
    -- and park until it completes
    local p = run_poller()
    local h = acquire(self)
    local id, err = p.multi:add(h, req)
    if not id then
      self.idle[#self.idle + 1] = h
      return nil, err
    end
    local key = {}
    p.keys[id] = key
    p.inflight = p.inflight + 1
    local _, resp, rerr = runtime.park(key)
    self.idle[#self.idle + 1] = h
    self.last = h
    return resp, rerr
  end
  self.last = self.handle
  return self.handle:send(req)
end

--- The caller could not decode the last answer: its connection may be out
-- of step (bytes past a wrong Content-Length still to come), so it is not
-- reused. Failed transfers and leftover bytes already seen need no call.
function Transport:drop_connection()
  local h = self.last
  if h and not h:busy() then h:drop_connection() end
end

---------------------------------------------------------------- streams

-- A response body read while it arrives, through a curl multi: the run's
-- shared one inside a kinesis.run task (waiting yields to the scheduler),
-- else the transport's own (waiting blocks in curl_multi_poll). The C side
-- buffers at most `buffer` unread bytes and pauses the transfer beyond that.
local Stream = {}
Stream.__index = Stream
Stream.__name = "kinesis.curl_stream"

local monotime = require("kinesis.core").monotime

local function timeout_error(what, seconds)
  return { code = "Timeout", curl_code = 28,
           message = ("no %s within %g s"):format(what, seconds) }
end

-- Releases the transfer and gives the handle back; idempotent.
local function release(self)
  if self.closed then return end
  self.closed = true
  if not self.ended then
    -- the multi may already be closed (its kinesis.run has returned)
    pcall(self.multi.remove, self.multi, self.id)
  end
  local idle = self.transport.idle
  if idle then idle[#idle + 1] = self.handle end
  self.handle = nil
end

-- One pull from the C buffers; true when something changed.
local function pull(self)
  if self.ended then return false end
  local ok, r = pcall(self.multi.read, self.multi, self.id)
  if not ok then
    r = { err = { code = "Transport", curl_code = 0,
                  message = "the stream's curl multi is closed: " .. tostring(r) } }
  elseif r == nil then
    r = { err = { code = "Transport", curl_code = 0, message = "the stream was released" } }
  end
  local news = false
  if r.head then self.response, news = r.head, true end
  if r.data then
    local q = self.queue
    q[#q + 1] = r.data
    news = true
  end
  if r.done or r.err then
    self.ended, self.err, news = true, r.err, true
    release(self)
  end
  return news
end

-- Waits (yielding inside a run) until the multi reports news or `seconds` pass.
local function wait(self, seconds)
  local p = self.poller
  if p and runtime.current_task() then
    p.keys[self.id] = self.key
    p.stream_waiting = p.stream_waiting + 1
    runtime.park(self.key, seconds)
    p.stream_waiting = p.stream_waiting - 1
    p.keys[self.id] = nil
  else
    local ok, events, err = pcall(self.multi.wait, self.multi, seconds)
    if not ok or not events then
      self.ended, self.err = true, { code = "Transport", curl_code = 0,
        message = "curl multi failed: " .. tostring(ok and (err and err.message) or events) }
      release(self)
    end
  end
end

--- Waits for the status line and headers: response (without body) or nil, err.
function Stream:head(timeout)
  local deadline = timeout and monotime() + timeout
  while true do
    if self.response then return self.response end
    if self.ended then
      return nil, self.err or { code = "Transport", curl_code = 0,
                                message = "the stream ended without a response" }
    end
    if not pull(self) then
      local left = deadline and deadline - monotime()
      if left and left <= 0 then return nil, timeout_error("response", timeout) end
      wait(self, left or 60)
    end
  end
end

--- Next body bytes: a string, nil at the end of the body, nil, err on
-- failure (transport error table) or when nothing came within `timeout`.
function Stream:read(timeout)
  local deadline = timeout and monotime() + timeout
  while true do
    local q = self.queue
    if #q > 0 then
      local s = q[1]
      if #q == 1 then q[1] = nil else table.remove(q, 1) end
      return s
    end
    if self.ended then
      if self.err then return nil, self.err end
      return nil
    end
    if not pull(self) then
      local left = deadline and deadline - monotime()
      if left and left <= 0 then return nil, timeout_error("data", timeout) end
      wait(self, left or 60)
    end
  end
end

--- Abandons the transfer (drops the connection or resets the h2 stream).
function Stream:close()
  release(self)
end
Stream.__close = Stream.close
Stream.__gc = Stream.close

-- LuaJIT calls __gc on userdata only: a proxy ties the stream's life to one.
local newproxy = rawget(_G, "newproxy")

--- Starts req as a stream; returns the stream or nil, err (as send's).
function Transport:open_stream(req, opts)
  local phase = nginx_phase()
  if phase then
    return nil, refusal(phase)
  end
  local poller, multi
  if runtime.current_task() then
    poller = run_poller()
    multi = poller.multi
  else
    multi = self.stream_multi
    if not multi then
      multi = curl.multi()
      self.stream_multi = multi
    end
  end
  local h = acquire(self)
  local id, err = multi:add(h, req, { stream = true, buffer = opts and opts.buffer })
  if not id then
    self.idle[#self.idle + 1] = h
    return nil, err
  end
  local st = setmetatable({ transport = self, multi = multi, id = id, handle = h,
                            poller = poller, key = {}, queue = {} }, Stream)
  if newproxy then
    local p = newproxy(true)
    getmetatable(p).__gc = function() release(st) end
    st.gc_proxy = p
  end
  return st
end

-- { requests = n, connects = n }: connects stays 1 while keep-alive holds
function Transport:stats()
  return self.handle:stats()
end

function Transport:close()
  self.handle:close()
  if self.stream_multi then
    self.stream_multi:close()
    self.stream_multi = nil
  end
  for _, h in ipairs(self.idle) do h:close() end
  self.idle = {}
end

return M
