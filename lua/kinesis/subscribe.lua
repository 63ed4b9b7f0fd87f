-- kinesis.subscribe - enhanced fan-out: SubscribeToShard read as it streams.
-- The response body (application/vnd.amazon.eventstream) is pulled from the
-- transport in pieces and fed to the C event-stream decoder; each
-- SubscribeToShardEvent comes out of an iterator, so a five-minute
-- subscription never sits in memory. subscribe() renews subscriptions the
-- way the Kinesis developer guide describes (resume after the last
-- ContinuationSequenceNumber, back off on ResourceInUseException, stop at
-- the end of a closed shard).
--
--   for event, err in client:subscribe_to_shard(params) do ... end
--   for event, err in client:subscribe(params, opts) do ... end
--
-- Iterators yield `false, err` once on failure and then end (a nil first
-- value would end a generic for before its body saw err).

local cjson = require "cjson"
local core = require "kinesis.core"
local model = require "kinesis.model"
local codec = require "kinesis.codec"
local validate = require "kinesis.validate"
local errors = require "kinesis.errors"

local type, pairs, tostring, setmetatable, pcall = type, pairs, tostring, setmetatable, pcall
local format, min = string.format, math.min
local monotime = core.monotime
local rawget = rawget

local shapes, op = model.shapes, model.operations.SubscribeToShard

local M = {}

-- Seconds without any message after which a subscription counts as dead.
-- The service sends an event at least every 5 s, empty when nothing is
-- new (developer guide, "Develop enhanced fan-out consumers with the API").
M.DEFAULT_EVENT_TIMEOUT = 30
-- Error bodies before the stream starts are small; read at most this much.
local MAX_ERROR_BODY = 1024 * 1024

local function status_ok(status)
  return status >= 200 and status < 300
end

local function protocol_error(self, message, code)
  return errors.protocol(op.name, message, {
    code = code or "EventStreamError",
    status = self.response and self.response.status,
    request_id = self.response and self.response.request_id,
  })
end

local function transport_error(self, terr)
  local err = errors.transport(op.name, terr or {})
  if self.response then
    err.status = self.response.status
    err.request_id = self.response.request_id
  end
  return err
end

-- An `exception` or `error` message as the error model's table. The modelled
-- exceptions (ResourceInUseException, KMS*, InternalFailureException) carry
-- their name in :exception-type and {"message": ...} as payload; `error`
-- messages carry :error-code and :error-message (smithy event-stream spec).
local function stream_exception(self, msg)
  local h = msg.headers
  local code, message
  if h[":message-type"] == "exception" then
    code = h[":exception-type"]
    local ok, doc = pcall(cjson.decode, msg.payload)
    if ok and type(doc) == "table" then
      local m = doc.message
      if type(m) ~= "string" then m = doc.Message end
      if type(m) == "string" then message = m end
    end
    if not message and msg.payload ~= "" and not ok then
      message = msg.payload:sub(1, 200):gsub("[%c]+", " ")
    end
  else
    code = h[":error-code"]
    message = h[":error-message"]
  end
  code = errors.clean_code(type(code) == "string" and code or nil) or "UnknownEventStreamError"
  -- a service may quote the request back: errors.aws keeps the credentials out
  local client = self.client
  return errors.aws({
    code = code, message = message or "", op = op.name,
    status = self.response and self.response.status,
    request_id = self.response and self.response.request_id,
    in_stream = true,
  }, client and client.credential_provider or false)
end

---------------------------------------------------------------- one subscription

local Subscription = {}
Subscription.__index = Subscription
Subscription.__name = "kinesis.subscription"

-- Ends the subscription: the connection (or h2 stream) is released and the
-- decoder's buffer dropped. Idempotent.
function Subscription:close()
  if self.closed then return end
  self.closed = true
  if self.stream then
    self.stream:close()
    self.stream = nil
  end
  if self.decoder then
    self.decoder:close()
    self.decoder = nil
  end
end
Subscription.__close = Subscription.close
Subscription.__gc = Subscription.close

-- The iterator protocol: for event, err in sub do ... end
function Subscription:__call()
  return self:next()
end

-- Fails once: closes, and hands out false, err (then the iterator ends).
local function fail(self, err)
  self:close()
  self.err = err
  return false, err
end

-- Opens the HTTP request and waits for the response head. Returns true, or
-- nil, err (an ordinary AWS error for a non-2xx answer).
local function start(self)
  local client = self.client
  local req, err = client:build_request(op, self.body)
  if not req then return nil, err end
  local transport = client:transport()
  if type(transport) ~= "table" or type(transport.open_stream) ~= "function" then
    return nil, errors.new { kind = "validation", code = "StreamingNotSupported", op = op.name,
      message = "the transport " .. tostring(transport and transport.name or transport)
        .. " cannot stream responses (it has no open_stream)" }
  end
  local st, terr = transport:open_stream(req, { buffer = self.buffer })
  if not st then return nil, errors.transport(op.name, terr) end
  self.stream = st
  local head
  head, terr = st:head(self.event_timeout)
  if not head then return nil, transport_error(self, terr) end
  self.response = head
  if not status_ok(head.status) then
    -- an HTTP error before the stream starts: the body is the usual JSON error
    local parts, n = {}, 0
    while n < MAX_ERROR_BODY do
      local data, rerr = st:read(self.event_timeout)
      if not data then
        if rerr then return nil, transport_error(self, rerr) end
        break
      end
      parts[#parts + 1] = data
      n = n + #data
    end
    local aerr = errors.from_response(op.name, {
      status = head.status, headers = head.headers, body = table.concat(parts),
    }, client.credential_provider)
    return nil, aerr
  end
  self.decoder = core.es_decoder()
  return true
end

-- Turns one decoded message into an event, nil (skip it) or nil, err.
local function on_message(self, msg)
  local h = msg.headers
  local mtype = h[":message-type"]
  if mtype == "event" then
    local etype = h[":event-type"]
    if etype == "SubscribeToShardEvent" then
      local ok, doc = pcall(cjson.decode, msg.payload)
      if not ok or type(doc) ~= "table" then
        return nil, protocol_error(self, "SubscribeToShardEvent payload is not a JSON object: "
          .. tostring(ok and type(doc) or doc), "InvalidEventPayload")
      end
      local event, cerr = codec.convert(shapes, "SubscribeToShardEvent", doc)
      if not event then
        return nil, protocol_error(self, "unexpected SubscribeToShardEvent: " .. tostring(cerr),
          "InvalidEventPayload")
      end
      if type(event.Records) ~= "table" then event.Records = {} end
      return event
    end
    -- initial-response (real Kinesis sends it first, kinesis-local does
    -- not) and event types newer than this client carry nothing to hand out
    self.skipped = self.skipped + 1
    return nil
  elseif mtype == "exception" or mtype == "error" then
    return nil, stream_exception(self, msg)
  end
  return nil, protocol_error(self, "event-stream message with :message-type "
    .. tostring(mtype), "InvalidMessageType")
end

--- The next event, nil at the end of the subscription, or false, err once.
function Subscription:next()
  if self.closed then return nil end
  if not self.started then
    self.started = true
    local ok, err = start(self)
    if not ok then return fail(self, err) end
    self.last_message = monotime()
  end
  local dec = self.decoder
  while true do
    local msg, derr = dec:next()
    if msg then
      self.last_message = monotime()
      self.messages = self.messages + 1
      local event, err = on_message(self, msg)
      if err then return fail(self, err) end
      if event then
        self.events = self.events + 1
        return event
      end
    elseif derr then
      return fail(self, protocol_error(self, format("corrupt event stream (%s): %s", derr.code,
        derr.message), "EventStreamError"))
    else
      -- the inactivity timeout runs from the last complete message, so a
      -- server trickling bytes of a message that never completes still ends
      local left = self.last_message + self.event_timeout - monotime()
      local data, rerr
      if left > 0 then
        data, rerr = self.stream:read(left)
      else
        rerr = { code = "Timeout" }
      end
      if data then
        local ok, ferr = dec:feed(data)
        if not ok then
          return fail(self, protocol_error(self, format("corrupt event stream (%s): %s", ferr.code,
            ferr.message), "EventStreamError"))
        end
      elseif rerr then
        if rerr.code == "Timeout" then
          rerr = { code = "Timeout", message = format(
            "no event-stream message for %g s: the subscription is presumed dead", self.event_timeout) }
        end
        return fail(self, transport_error(self, rerr))
      else
        -- end of the response body: the subscription is over (SubscribeToShard
        -- ends after 5 minutes); a half message left over is a fault
        local ok, ferr = dec:finish()
        if not ok then
          return fail(self, protocol_error(self, format("event stream ended mid-message (%s): %s",
            ferr.code, ferr.message), "EventStreamError"))
        end
        self:close()
        self.finished = true
        return nil
      end
    end
  end
end

function Subscription:__tostring()
  return format("kinesis.subscription(%s, %d events%s)", tostring(self.params.ShardId),
    self.events, self.closed and ", closed" or "")
end

local function event_timeout_of(client, opts)
  local t = opts and opts.event_timeout
  if t == nil then
    local timeouts = rawget(client, "timeouts") or (client.config and client.config.timeout)
    t = type(timeouts) == "table" and timeouts.event or nil
  end
  return t or M.DEFAULT_EVENT_TIMEOUT
end

local function check_opts(opts, level)
  if opts ~= nil and type(opts) ~= "table" then
    error("kinesis: subscribe options must be a table", level + 1)
  end
  local t = opts and opts.event_timeout
  if t ~= nil and (type(t) ~= "number" or t <= 0) then
    error("kinesis: event_timeout must be a positive number of seconds", level + 1)
  end
  local b = opts and opts.buffer
  if b ~= nil and (type(b) ~= "number" or b < 1) then
    error("kinesis: buffer must be a positive number of bytes", level + 1)
  end
end

--- client:subscribe_to_shard(params [, opts]) -> subscription iterator.
-- opts: event_timeout (seconds without a message before the subscription
-- fails with a transport Timeout; default client timeout.event, else 30),
-- buffer (bytes the transport holds unread before it pauses the transfer).
-- The iterator is also a to-be-closed value (Lua 5.4) and has :close().
function M.subscribe_to_shard(client, params, opts)
  if params ~= nil and type(params) ~= "table" then
    error("kinesis: SubscribeToShard expects a table of parameters", 2)
  end
  check_opts(opts, 2)
  params = params or {}
  local self = setmetatable({
    client = client, params = params, event_timeout = event_timeout_of(client, opts),
    buffer = opts and opts.buffer, started = false, closed = false,
    events = 0, messages = 0, skipped = 0,
  }, Subscription)
  local ok, verr = validate.input(shapes, op, params)
  if not ok then
    -- yielded by the first call, like any other failure
    self.started = true
    local err = errors.validation(op.name, verr)
    self.next = function(s)
      if s.closed then return nil end
      return fail(s, err)
    end
  else
    self.body = codec.encode(shapes, op.input, params)
  end
  return self, nil, nil, self
end

---------------------------------------------------------------- renewal

local Renewal = {}
Renewal.__index = Renewal
Renewal.__name = "kinesis.subscribe"

function Renewal:close()
  if self.closed then return end
  self.closed = true
  if self.current then
    self.current:close()
    self.current = nil
  end
end
Renewal.__close = Renewal.close
Renewal.__gc = Renewal.close

function Renewal:__call()
  return self:next()
end

-- The parameters of the next subscription: after the last position seen.
local function next_params(self)
  if not self.position then return self.params end
  local p = {}
  for k, v in pairs(self.params) do p[k] = v end
  p.StartingPosition = { Type = "AFTER_SEQUENCE_NUMBER", SequenceNumber = self.position }
  return p
end

local function retryable(err)
  if err.kind == "protocol" then return true end   -- resume after the last event: nothing repeats
  return err.retryable == true
end

local function give_up(self, err)
  self:close()
  self.err = err
  return false, err
end

--- The next event across subscriptions, nil after the shard's end, or
-- false, err once when a failure is not worth another subscription.
function Renewal:next()
  local sleep = self.sleep
  while not self.closed do
    local sub = self.current
    if not sub then
      sub = M.subscribe_to_shard(self.client, next_params(self), self.sub_opts)
      self.current = sub
      self.subscriptions = self.subscriptions + 1
    end
    local event, err = sub:next()
    if event then
      self.failures = 0
      local seq = event.ContinuationSequenceNumber
      if seq == nil then
        -- a closed shard: the last event names the children to read next
        -- (SubscribeToShardEvent.ContinuationSequenceNumber is null then)
        self.child_shards = event.ChildShards or {}
        self.shard_ended = true
        self:close()
      else
        self.position = seq
      end
      return event
    end
    self.current = nil
    sub:close()
    if event == nil then
      -- the subscription's time is up (5 minutes): go on where it stopped.
      -- One that ended without a single message counts as a failure, so a
      -- server closing every subscription at once is not hammered.
      if sub.messages == 0 then
        self.failures = self.failures + 1
        if self.failures > self.max_retries then
          return give_up(self, errors.new { kind = "transport", code = "EmptySubscription", op = op.name,
            retryable = true, message = format("%d subscriptions in a row ended without any event",
              self.failures) })
        end
        local d = self:backoff()
        self:log("subscription_retry", "EmptySubscription", d)
        sleep(d)
      else
        self:log("subscription_renewed", nil, 0)
      end
    elseif err.code == "ResourceInUseException" then
      -- another subscription holds this consumer and shard, maybe our own
      -- previous one that the service has not let go of yet: wait >= 5 s
      -- (SubscribeToShard API reference) and try again
      self.failures = self.failures + 1
      self.in_use_waits = self.in_use_waits + 1
      if self.failures > self.max_retries then return give_up(self, err) end
      self:log("subscription_wait", err.code, self.in_use_delay)
      sleep(self.in_use_delay)
    elseif retryable(err) then
      self.failures = self.failures + 1
      if self.failures > self.max_retries then return give_up(self, err) end
      local d = self:backoff()
      self:log("subscription_retry", err.code, d)
      sleep(d)
    else
      return give_up(self, err)
    end
    self.last_error = err
  end
  return nil
end

-- A renewal event for the client's logger (kinesis.log), when it has one.
function Renewal:log(event, reason, delay)
  local logger = self.client.logger
  if logger then
    logger { event = event, op = op.name, shard = self.params.ShardId, reason = reason,
             delay = delay, position = self.position, subscriptions = self.subscriptions }
  end
end

-- Full-jitter exponential backoff from retry_delay up to 20 s.
function Renewal:backoff()
  local cap = min(20, self.retry_delay * 2 ^ (self.failures - 1))
  return cap * (0.5 + math.random() * 0.5)
end

function Renewal:__tostring()
  return format("kinesis.subscribe(%s, %d subscriptions%s)", tostring(self.params.ShardId),
    self.subscriptions, self.closed and ", closed" or "")
end

--- client:subscribe(params, opts) -> iterator of events across subscriptions.
-- opts: event_timeout, buffer (as subscribe_to_shard); in_use_delay (seconds
-- to wait after ResourceInUseException, at least 5, default 5);
-- max_retries (failed subscriptions in a row before giving up, default 5);
-- retry_delay (first backoff after other retryable failures, default 1 s).
-- After the loop: .position (last ContinuationSequenceNumber), .shard_ended
-- and .child_shards (at the end of a closed shard), .subscriptions.
function M.subscribe(client, params, opts)
  if params ~= nil and type(params) ~= "table" then
    error("kinesis: subscribe expects a table of parameters", 2)
  end
  check_opts(opts, 2)
  opts = opts or {}
  local in_use = opts.in_use_delay or 5
  if type(in_use) ~= "number" or in_use < 5 then
    error("kinesis: in_use_delay must be at least 5 seconds (SubscribeToShard allows one call per 5 s)", 2)
  end
  local max_retries = opts.max_retries or 5
  if type(max_retries) ~= "number" or max_retries < 0 then
    error("kinesis: max_retries must be a non-negative number", 2)
  end
  local retry_delay = opts.retry_delay or 1
  if type(retry_delay) ~= "number" or retry_delay < 0 then
    error("kinesis: retry_delay must be a non-negative number of seconds", 2)
  end
  local sleep = client:runtime()
  local self = setmetatable({
    client = client, params = params or {}, sleep = sleep,
    sub_opts = { event_timeout = opts.event_timeout, buffer = opts.buffer },
    in_use_delay = in_use, max_retries = max_retries, retry_delay = retry_delay,
    failures = 0, subscriptions = 0, in_use_waits = 0, closed = false,
  }, Renewal)
  return self, nil, nil, self
end

return M
