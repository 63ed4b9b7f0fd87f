-- kinesis.producer - a KPL-class producer: records are routed to their shard
-- with the shard map (kinesis.shards), held per shard in C and packed there
-- into KPL aggregates (core.producer_queue, src/l_pqueue.c), batched into
-- PutRecords calls within the service's limits, paced by a token bucket per
-- shard that backs off on throttling (AIMD), and retried alone when they
-- fail, until their TTL. Every accepted record gets exactly one outcome
-- through on_result. This module decides (what to send, when, what to retry)
-- and handles what leaves the common path as Lua tables; the queue does the
-- per-record work. Where it runs (a plain script, a task of kinesis.run,
-- nginx) is asked of kinesis.runtime: a plain script sends inline, the other
-- two from a background task. docs/producer.md.

local core = require "kinesis.core"
local cjson = require "cjson"
local errors = require "kinesis.errors"
local runtime = require "kinesis.runtime"
local retry = require "kinesis.retry"
local shards_mod = require "kinesis.shards"
local validate = require "kinesis.validate"

local type, error, pairs, ipairs, tostring, setmetatable, pcall =
  type, error, pairs, ipairs, tostring, setmetatable, pcall
local min, max, random, floor, huge = math.min, math.max, math.random, math.floor, math.huge
local format, concat, sort = string.format, table.concat, table.sort
local hash_key, u128_check = core.hash_key, core.u128_check
local json_string = cjson.encode
local utf8_length = validate.utf8_length
local now_fn = runtime.now
local runtime_where = runtime.where

local M = {}

-- Service limits (PutRecords API reference): 500 records and 5 MiB a call;
-- Data + PartitionKey <= 1 MiB a record; PartitionKey 1-256 characters.
-- A shard takes 1,000 records and 1 MiB a second.
M.MAX_RECORDS, M.MAX_REQUEST_BYTES, M.MAX_RECORD_BYTES = 500, 5 * 1048576, 1048576
M.MAX_KEY_CHARS = 256
M.SHARD_RECORDS, M.SHARD_BYTES = 1000, 1048576

-- per-entry codes worth another try (the rest fail the record at once)
local RETRYABLE_ENTRY = {
  ProvisionedThroughputExceededException = true, InternalFailure = true,
  ServiceUnavailable = true, KMSThrottlingException = true,
}
local THROTTLED = "ProvisionedThroughputExceededException"

-- AIMD: a throttle halves the shard's rate (at most once per CUT_GAP s, so
-- one rejected batch counts once), never below MIN_FACTOR; after RECOVER_AFTER
-- s without throttling it grows back by GROW of the limit per second.
local CUT, CUT_GAP, MIN_FACTOR, RECOVER_AFTER, GROW = 0.5, 0.2, 0.05, 1.0, 0.1
-- a background task never sleeps longer than this, so exiting and new
-- work are noticed
local SLICE = 0.5
-- how often queues are scanned for records past their TTL
local EXPIRE_EVERY = 0.1
-- ListShards after a failure: 1 s doubling to 30 s (the KPL's refresh backoff)
local REFRESH_MIN, REFRESH_MAX = 1, 30
local STALE_GAP = 0.2

local PUT_RECORDS = require("kinesis.client").operations.PutRecords
-- the queue's put, called without a method lookup on every producer:put
local pq_put = getmetatable(core.producer_queue()).__index.put

---------------------------------------------------------------- errors

local function perr(code, message, fields)
  local e = fields or {}
  e.kind, e.code, e.message, e.op = e.kind or "producer", code, message, e.op or "producer"
  return errors.new(e)
end

local function bad_option(name, rule)
  error(format("kinesis.producer: option %s %s", name, rule), 3)
end

---------------------------------------------------------------- options

local DEFAULTS = {
  aggregate = true, aggregation_max_size = 51200, aggregation_max_count = 4294967295,
  linger = 0.1, record_ttl = 30, max_buffered_bytes = 32 * 1048576, rate_limit = 1.0,
  ordered = false, max_in_flight = 8, batch_max_records = 500, batch_max_bytes = 5 * 1048576,
  refresh_interval = 60, retry_base = 0.1, retry_max_delay = 5, exit_grace = 5,
}

local function check_opts(opts)
  if type(opts) ~= "table" then error("kinesis.producer: options table expected", 3) end
  local o = {}
  for k, v in pairs(DEFAULTS) do o[k] = v end
  local known = { stream = true, stream_arn = true, on_result = true }
  for k, v in pairs(opts) do
    if DEFAULTS[k] == nil and not known[k] then bad_option(tostring(k), "is not a producer option") end
    o[k] = v
  end
  if o.stream == nil and o.stream_arn == nil then bad_option("stream", "(or stream_arn) is required") end
  if o.stream ~= nil and (type(o.stream) ~= "string" or o.stream == "") then
    bad_option("stream", "must be a non-empty string")
  end
  if o.stream_arn ~= nil and (type(o.stream_arn) ~= "string" or not o.stream_arn:find("^arn:")) then
    bad_option("stream_arn", "must be an ARN string")
  end
  if type(o.aggregate) ~= "boolean" then bad_option("aggregate", "must be a boolean") end
  if type(o.ordered) ~= "boolean" then bad_option("ordered", "must be a boolean") end
  if o.on_result ~= nil and type(o.on_result) ~= "function" then bad_option("on_result", "must be a function") end
  local function number(name, lo, hi, integer)
    local v = o[name]
    if type(v) ~= "number" or v ~= v or v < lo or v > hi or (integer and v ~= floor(v)) then
      bad_option(name, format("must be a%s number in [%s, %s]", integer and "n integer" or "", lo, hi))
    end
  end
  number("aggregation_max_size", 64, M.MAX_RECORD_BYTES)
  number("aggregation_max_count", 1, 4294967295, true)
  number("linger", 0, 3600)
  number("record_ttl", 0.001, 86400)
  number("max_buffered_bytes", 1, huge)
  number("rate_limit", 1e-6, huge)
  number("max_in_flight", 1, 1024, true)
  number("batch_max_records", 1, M.MAX_RECORDS, true)
  number("batch_max_bytes", 1, M.MAX_REQUEST_BYTES)
  number("refresh_interval", 0.1, huge)
  number("retry_base", 0, 3600)
  number("retry_max_delay", 0, 3600)
  number("exit_grace", 0, 3600)
  return o
end

---------------------------------------------------------------- the producer

local Producer = {}
Producer.__index = Producer
Producer.__name = "kinesis.producer"
M.Producer = Producer

-- The client the producer sends PutRecords through: the user's client (its
-- signing, endpoint, transport and connections) with retries off, since
-- the producer retries each failed record itself with its own backoff and
-- TTL; a client retry on top would multiply attempts and delays.
local function sending_client(client)
  local policy = assert(retry.new({ mode = "off" }, now_fn))
  local c = setmetatable({ retry = policy }, { __index = client })
  c.transport = function() return client:transport() end
  return c
end

function M.new(client, opts)
  if type(client) ~= "table" or type(client.call) ~= "function" then
    error("kinesis.producer: a client (kinesis.new) expected", 2)
  end
  local o = check_opts(opts)
  local params = o.stream_arn and { StreamARN = o.stream_arn } or { StreamName = o.stream }
  local head = '{"' .. (o.stream_arn and "StreamARN" or "StreamName") .. '":'
    .. json_string(o.stream_arn or o.stream) .. ',"Records":['
  local self = setmetatable({
    client = client, sender = sending_client(client), opts = o, params = params, body_head = head,
    pq = core.producer_queue(),    -- fresh records, requests in flight (src/l_pqueue.c)
    on_result = o.on_result, ordered = o.ordered, aggregate = o.aggregate,
    key = {},                      -- the background task parks on this
    room_key = {},                 -- put() waiting for room parks on this
    map = nil, states = {}, state_list = {}, ranges = {}, rr = 1,
    unrouted = {},                 -- records waiting for the shard map
    suspects = {},                 -- aggregates acknowledged on a shard not in the map yet
    stale = true, next_refresh = 0, refresh_not_before = 0, refresh_delay = REFRESH_MIN, refreshing = false, last_list_error = nil,
    next_retry = huge, next_expire = 0,
    flushers = {}, want_room = 0,
    driver_running = false, inflight_requests = 0, closed = false, closing = false,
    exit_at = nil,
    -- counters
    n_acked = 0, bytes_acked = 0, n_failed = 0, failed_by_code = {},
    n_retried = 0, n_requests = 0, n_request_errors = 0, n_aggregates = 0, n_aggregated = 0,
    inflight_records = 0, n_map_refreshes = 0, n_resent = 0,
    progress_at = now_fn(), progress_acked = 0, progress_bytes = 0, started = now_fn(),
    -- options read on every put
    -- when fresh records make a batch worth sending at once: 500 records
    -- (5 MiB) unaggregated; aggregated, a full aggregate per shard
    -- (retuned when the map changes)
    ttl = o.record_ttl, linger = o.linger,
    max_n = o.aggregate and huge or o.batch_max_records,
    max_b = o.aggregate and min(o.batch_max_bytes, o.aggregation_max_size) or o.batch_max_bytes,
  }, Producer)
  self:_configure()
  return self
end

-- What pq:put checks by itself: the buffer bound, when a request is due
-- (max_n records or max_b bytes fresh, or linger), whether it takes
-- records (not once closing).
function Producer:_configure()
  self.pq:configure(self.opts.max_buffered_bytes, self.max_n, self.max_b, self.linger,
    not self.closing and not self.closed)
end

-- The two facts pq:put decides by that the producer changes: when the
-- earliest retry is due, and whether the background sender runs.
local function set_next_retry(self, t)
  self.next_retry = t
  self.pq:set_next_retry(t)
end

local function set_driver(self, running)
  self.driver_running = running
  self.pq:set_driver(running)
end

---------------------------------------------------------------- outcomes

-- Finishes record `rec`: counters, flush waiters, then the callback.
local function finish(self, rec, res)
  self.pq:account(0, 0, -1, -(rec.mem or rec.size))
  local fl = self.flushers
  for i = 1, #fl do
    local w = fl[i]
    if rec.id <= w.mark then
      w.left = w.left - 1
      if w.left == 0 then runtime.wake(w) end
    end
  end
  local cb = self.on_result
  if cb then
    local ok, err = pcall(cb, res)
    if not ok then runtime.log("error", "kinesis.producer: on_result raised: " .. tostring(err)) end
  end
end

local function succeed(self, rec, shard_id, seq, sub)
  self.n_acked = self.n_acked + 1
  self.bytes_acked = self.bytes_acked + rec.size
  local cb = self.on_result
  if #self.flushers == 0 then
    -- the common case, without finish()'s flush bookkeeping
    self.pq:account(0, 0, -1, -(rec.mem or rec.size))
    if cb then
      local ok, err = pcall(cb, { ok = true, record = rec.record, ShardId = shard_id, SequenceNumber = seq,
                                  SubSequenceNumber = sub, attempts = rec.attempts })
      if not ok then runtime.log("error", "kinesis.producer: on_result raised: " .. tostring(err)) end
    end
    return
  end
  local res
  if cb then
    res = { ok = true, record = rec.record, ShardId = shard_id, SequenceNumber = seq,
            SubSequenceNumber = sub, attempts = rec.attempts }
  end
  finish(self, rec, res)
end

local function fail(self, rec, err)
  self.n_failed = self.n_failed + 1
  local code = err.code or "Unknown"
  self.failed_by_code[code] = (self.failed_by_code[code] or 0) + 1
  local res
  if self.on_result then
    res = { ok = false, record = rec.record, err = err, attempts = rec.attempts }
  end
  finish(self, rec, res)
end

-- Records the queue acknowledged in bulk (pq:settle): counters, flush
-- waiters (by the records' ids, given while someone flushes), then one
-- on_result call per record. out holds 5 slots a record: its caller's
-- table, ShardId, SequenceNumber, SubSequenceNumber (false when not
-- aggregated), attempts.
local function acked(self, n, bytes, out, ids)
  if n == 0 then return end
  self.n_acked = self.n_acked + n
  self.bytes_acked = self.bytes_acked + bytes
  if ids then
    for _, w in ipairs(self.flushers) do
      local mark, c = w.mark, 0
      for i = 1, n do if ids[i] <= mark then c = c + 1 end end
      if c > 0 then
        w.left = w.left - c
        if w.left <= 0 then runtime.wake(w) end
      end
    end
  end
  local cb = self.on_result
  if not cb then return end
  -- one pcall for the lot: a callback that raises is logged, and the
  -- calls go on from the next record
  local i, last = 0, n * 5 - 5
  local function calls()
    while i <= last do
      local k = i
      i = i + 5
      local sub = out[k + 4]
      if sub then
        cb { ok = true, record = out[k + 1], ShardId = out[k + 2], SequenceNumber = out[k + 3],
             SubSequenceNumber = sub, attempts = out[k + 5] }
      else
        cb { ok = true, record = out[k + 1], ShardId = out[k + 2], SequenceNumber = out[k + 3],
             attempts = out[k + 5] }
      end
    end
  end
  while i <= last do
    local ok, err = pcall(calls)
    if not ok then runtime.log("error", "kinesis.producer: on_result raised: " .. tostring(err)) end
  end
end

-- The error a record gets when its TTL ran out: code Expired, the last
-- failure it met (if any) as err.last_error.
local function expired(self, rec)
  return perr("Expired", format("record not acknowledged within record_ttl (%g s) after %d attempt(s)",
    self.opts.record_ttl, rec.attempts), { last_error = rec.last_err, retryable = false })
end

---------------------------------------------------------------- shard state

-- Decimal strings without leading zeros compare by length, then bytes.
local function le(a, b)
  local la, lb = #a, #b
  if la ~= lb then return la < lb end
  return a <= b
end
M._le = le

-- A record's hash key: its ExplicitHashKey, else MD5 of its partition key
-- (not kept on the record: routing looks the key up in C, and the decimal
-- is needed only for an aggregate's key and for range checks).
local function hash_key_of(r)
  return r.ExplicitHashKey or hash_key(r.PartitionKey)
end

local function new_state(self, shard, now)
  local r = shard.HashKeyRange
  local cap_r = M.SHARD_RECORDS * self.opts.rate_limit
  local cap_b = M.SHARD_BYTES * self.opts.rate_limit
  return {
    id = shard.ShardId, lo = r.StartingHashKey, hi = r.EndingHashKey,
    ci = nil,                              -- its queue of fresh records in self.pq
    retry = {},                            -- entries waiting for another try (unordered mode)
    inflight = 0, blocked_until = 0,       -- ordered mode: one request at a time, backoff
    rtok = cap_r, btok = cap_b, last = now, factor = 1, last_cut = -huge, last_throttle = -huge,
    open = true,
  }
end

local function refill(self, s, now)
  local dt = now - s.last
  if dt <= 0 then return end
  s.last = now
  if s.factor < 1 and now - s.last_throttle > RECOVER_AFTER then
    s.factor = min(1, s.factor + GROW * dt)
  end
  local rl = self.opts.rate_limit * s.factor
  local cap_r, cap_b = M.SHARD_RECORDS * rl, M.SHARD_BYTES * rl
  s.rtok = min(cap_r, s.rtok + dt * cap_r)
  s.btok = min(cap_b, s.btok + dt * cap_b)
end

local function throttle(self, s, now)
  s.last_throttle = now
  if now - s.last_cut >= CUT_GAP then
    s.last_cut = now
    s.factor = max(MIN_FACTOR, s.factor * CUT)
    local rl = self.opts.rate_limit * s.factor
    s.rtok = min(s.rtok, M.SHARD_RECORDS * rl)
    s.btok = min(s.btok, M.SHARD_BYTES * rl)
    self.client:log { event = "producer_throttle", shard = s.id, factor = s.factor }
  end
end

-- Queues record table `rec` on shard state s (in C: s.ci is its queue).
local function push_fresh(self, s, rec)
  self.pq:push(s.ci, rec, false)
end

-- Routes `rec` to its shard's queue, or to the unrouted list without a map.
local function route(self, rec)
  local map = self.map
  if not map then
    self.unrouted[#self.unrouted + 1] = rec
    return
  end
  local ehk = rec.ExplicitHashKey
  local shard = ehk and map:lookup_hash(ehk) or map:lookup(rec.PartitionKey)
  push_fresh(self, self.states[shard.ShardId], rec)
end

-- Puts records back at the front of their shard's queue, keeping put order
-- (ordered mode: what failed goes before anything later of its keys).
local function requeue_front(self, s, recs)
  sort(recs, function(a, b) return a.id < b.id end)
  local pq, ci = self.pq, s.ci
  for i = #recs, 1, -1 do pq:push(ci, recs[i], true) end
end

---------------------------------------------------------------- the shard map

-- Lists the stream's shards through the client (its retries apply) and
-- rebuilds the map; records of shards that closed are routed again.
function Producer:_refresh(now)
  if self.refreshing then return end
  self.refreshing = true
  local list = {}
  local ok, lerr = pcall(function()
    for shard, err in self.client:items("list_shards", self.params) do
      if not shard then error(err, 0) end
      list[#list + 1] = shard
    end
  end)
  self.refreshing = false
  now = now_fn()
  local map, merr
  if ok then map, merr = shards_mod.shard_map(list) else merr = lerr end
  if not map then
    local err = errors.is_error(merr) and merr
      or perr("ShardMapError", "cannot build the shard map: " .. tostring(merr), { retryable = true })
    self.last_list_error = err
    self.refresh_not_before = now + self.refresh_delay
    self.refresh_delay = min(REFRESH_MAX, self.refresh_delay * 2)
    self.client:log { event = "producer_shard_map", ok = false, code = err.code, message = err.message }
    return
  end
  self.n_map_refreshes = self.n_map_refreshes + 1
  self.refresh_delay = REFRESH_MIN
  self.next_refresh = now + self.opts.refresh_interval
  -- a stale map is listed again at most every STALE_GAP seconds
  self.refresh_not_before = now + STALE_GAP
  self.stale = false
  self.last_list_error = nil
  for _, sh in ipairs(list) do
    local r = sh.HashKeyRange
    self.ranges[sh.ShardId] = { lo = r.StartingHashKey, hi = r.EndingHashKey }
  end
  local states, old_list = {}, self.state_list
  local new_list = {}
  for i, sh in ipairs(map:shards()) do
    local s = self.states[sh.ShardId] or new_state(self, sh, now)
    states[sh.ShardId] = s
    new_list[i] = s
  end
  if self.aggregate then
    self.max_b = min(self.opts.batch_max_bytes, self.opts.aggregation_max_size * #new_list)
    self:_configure()
  end
  if self.rr > #new_list then self.rr = 1 end
  -- what waits on a shard that is gone goes through the new map; the
  -- queues of the shards that stay move with them
  local moved, carried = {}, {}
  local pq = self.pq
  for _, s in ipairs(old_list) do
    if states[s.id] ~= s then
      s.open = false
      for _, r in ipairs(pq:drain(s.ci)) do moved[#moved + 1] = r end
      for _, e in ipairs(s.retry) do
        if e.recs then
          for _, r in ipairs(e.recs) do moved[#moved + 1] = r end
        else
          moved[#moved + 1] = e
        end
      end
      s.retry = {}
    else
      carried[s.id] = s.ci
    end
  end
  local ci = pq:set_shards(map, carried)
  for _, s in ipairs(new_list) do s.ci = ci[s.id] end
  self.map, self.states, self.state_list = map, states, new_list
  local unrouted = self.unrouted
  self.unrouted = {}
  for _, r in ipairs(unrouted) do moved[#moved + 1] = r end
  sort(moved, function(a, b) return a.id < b.id end)
  for _, r in ipairs(moved) do route(self, r) end
  self.client:log { event = "producer_shard_map", ok = true, shards = #new_list, rerouted = #moved }
  self:_settle_suspects(now)
end

-- Aggregates acknowledged on a shard the map did not know: now that it is
-- refreshed, each is acknowledged if that shard's range holds all its
-- records, or sent again (a KCL reader would drop it).
function Producer:_settle_suspects(now)
  local list = self.suspects
  if #list == 0 then return end
  self.suspects = {}
  for _, sp in ipairs(list) do
    local range = self.ranges[sp.shard_id]
    if range or not self.stale then self:_ack_aggregate(sp.entry, sp.shard_id, sp.seq, range, now)
    else self.suspects[#self.suspects + 1] = sp end
  end
end

---------------------------------------------------------------- put

--- producer:put(record) -> true | nil, err
function Producer:put(record)
  -- the common case in one C call (pq:put): a plain record, room in the
  -- buffer, a shard map, from a thread known to be a plain script's (the
  -- checked path asks the runtime once) or with the sender running. It
  -- answers 1 (queued), 2 (queued, a request is due) or 3 (queued, a
  -- retry is due: the sender sees to those itself); anything else takes
  -- the checks of _put_checked (same rules, with the error for each).
  local st = pq_put(self.pq, record)
  if st == 1 then return true end
  if st then
    if not self.driver_running then self:_pump_plain(false)
    elseif st == 2 then runtime.wake(self.key) end
    return true
  end
  return self:_put_checked(record)
end

function Producer:_put_checked(record)
  if type(record) ~= "table" then error("producer:put expects a record table", 2) end
  if self.closed or self.closing then
    return nil, perr("Closed", "the producer is closed", { op = "producer:put" })
  end
  local pk, data, ehk = record.PartitionKey, record.Data, record.ExplicitHashKey
  if type(pk) ~= "string" or pk == "" then
    return nil, perr("ValidationError", "PartitionKey must be a non-empty string",
      { kind = "validation", field = "PartitionKey", rule = "required", op = "producer:put" })
  end
  if type(data) ~= "string" then
    return nil, perr("ValidationError", "Data must be a string, got " .. type(data),
      { kind = "validation", field = "Data", rule = "type", op = "producer:put" })
  end
  local nchars = utf8_length(pk)
  if not nchars or nchars > M.MAX_KEY_CHARS then
    return nil, perr("ValidationError", nchars and format(
      "PartitionKey has %d characters, more than %d", nchars, M.MAX_KEY_CHARS)
      or "PartitionKey is not valid UTF-8",
      { kind = "validation", field = "PartitionKey", rule = nchars and "max" or "utf8", op = "producer:put" })
  end
  local size = #data + #pk
  if size > M.MAX_RECORD_BYTES then
    return nil, perr("RecordTooLarge", format(
      "Data (%d bytes) + PartitionKey (%d bytes) = %d bytes, over the service's 1 MiB (%d) a record",
      #data, #pk, size, M.MAX_RECORD_BYTES),
      { kind = "validation", field = "Data", rule = "max", op = "producer:put" })
  end
  if ehk ~= nil then
    local ok, why
    if type(ehk) == "string" then ok, why = u128_check(ehk) end
    if not ok then
      return nil, perr("ValidationError", "ExplicitHashKey must be a decimal string in 0..2^128-1"
        .. (why and (": " .. why.message) or ""),
        { kind = "validation", field = "ExplicitHashKey", rule = "pattern", op = "producer:put" })
    end
  end
  local mem = size + (ehk and #ehk or 0)
  local where = runtime.where()
  if where == "plain" then self.pq:set_plain() end
  local pending, held = self.pq:outstanding()
  if held + mem > self.opts.max_buffered_bytes and pending > 0 then
    local ok, err = self:_wait_room(mem, where)
    if not ok then return nil, err end
  end
  if where ~= "plain" and not self.driver_running then
    local ok, err = self:_start_driver()
    if not ok then return nil, err end
  end
  return self:_accept(record, pk, data, ehk, size, mem, where)
end

-- Takes a checked record into the buffer, and sends what is due.
function Producer:_accept(record, pk, data, ehk, size, mem, where)
  local now = now_fn()
  local id = self.pq:new_id()
  local rec = { record = record, PartitionKey = pk, Data = data, ExplicitHashKey = ehk,
                size = size, mem = ehk and mem or nil, id = id, t = now, attempts = 0 }
  self.pq:account(1, size, 1, mem)
  route(self, rec)
  if where == "plain" then
    if self:_due(now) then self:_pump_plain(false) end
  else
    local fn, fb = self.pq:fresh()
    if fn >= self.max_n or fb >= self.max_b then runtime.wake(self.key) end
  end
  return true
end

-- Waits until `mem` more bytes fit under max_buffered_bytes: by sending
-- (plain script), by parking (kinesis.run, nginx phases that yield), or not
-- at all (BufferFull) where nothing may wait.
function Producer:_wait_room(mem, where)
  local limit = self.opts.max_buffered_bytes
  if where == "plain" then
    while true do
      local pending, held = self.pq:outstanding()
      if held + mem <= limit or pending == 0 then break end
      self.want_room = self.want_room + 1
      local ok, err = pcall(self._pump_plain, self, true, true)
      self.want_room = self.want_room - 1
      if not ok then error(err, 0) end
    end
    return true
  end
  if not runtime.can_yield() then
    return nil, perr("BufferFull", format(
      "max_buffered_bytes (%d) reached and nothing can wait here (nginx phase %s)",
      limit, tostring(runtime.phase())), { op = "producer:put", retryable = true })
  end
  self.want_room = self.want_room + 1
  while not self.closed do
    local pending, held = self.pq:outstanding()
    if held + mem <= limit or pending == 0 then break end
    if not self.driver_running then
      local ok, err = self:_start_driver()
      if not ok then
        self.want_room = self.want_room - 1
        return nil, err
      end
    end
    runtime.wake(self.key)
    runtime.park(self.room_key, SLICE)
  end
  self.want_room = self.want_room - 1
  if self.closed then return nil, perr("Closed", "the producer is closed", { op = "producer:put" }) end
  return true
end

---------------------------------------------------------------- requests

-- Whether a request should go now: a full batch, a record past its
-- linger, a retry whose backoff is over, or someone waiting (flush, room,
-- close, exiting).
function Producer:_due(now)
  local o = self.opts
  local fn, fb, first = self.pq:fresh()
  if fn >= self.max_n or fb >= self.max_b then return true end
  if first and first + o.linger <= now then return true end
  if self.next_retry <= now then return true end
  if #self.unrouted > 0 and self.refresh_not_before <= now then return true end
  return false
end

function Producer:_forced()
  return #self.flushers > 0 or self.want_room > 0 or self.closing or self.exit_at ~= nil
end

-- Builds the next PutRecords request from what is ready, or returns nil.
-- Takes retries first, then fresh records, shard by shard (starting with a
-- different shard each time), within each shard's tokens and the request
-- limits, from shards with nothing in flight (so a key's records are
-- stored in put order when nothing fails); ordered mode also takes no key
-- twice in one request. Retries are Lua entries; fresh records go from
-- their shard's queue in C into the request's C part (pq:take), packed in
-- aggregates there when aggregation is on.
function Producer:_build(now, force)
  local o = self.opts
  local max_n, max_bytes = o.batch_max_records, o.batch_max_bytes
  local entries, n, nc, bytes = {}, 0, 0, 0
  local list = self.state_list
  local ns = #list
  if ns == 0 then return nil end
  local pq = self.pq
  local ordered = self.ordered
  local agg_max = self.aggregate and o.aggregation_max_size or 0
  local agg_count = o.aggregation_max_count
  local take_fresh = force or self:_due(now)
  local next_retry, gate = huge, huge
  local used = {}
  local h = pq:request()
  local takes, crecs = {}, 0
  local start = self.rr
  self.rr = start % ns + 1
  for k = 0, ns - 1 do
    if n + nc >= max_n then break end
    local s = list[(start + k - 1) % ns + 1]
    -- one request in flight per shard: two concurrent requests holding
    -- the same key could be stored in either order
    if s.inflight > 0 or s.blocked_until > now then
      if s.inflight == 0 then gate = min(gate, s.blocked_until) end
      goto continue
    end
    refill(self, s, now)
    -- retries whose backoff is over (unordered mode)
    do
      local rl = s.retry
      if #rl > 0 then
        local keep = {}
        for _, e in ipairs(rl) do
          if e.not_before <= now and n + nc < max_n and bytes + e.size <= max_bytes
              and s.rtok >= 1 and s.btok > 0 then
            n = n + 1
            entries[n] = e
            bytes = bytes + e.size
            s.rtok = s.rtok - 1
            s.btok = s.btok - e.size
            used[s] = true
            e.attempts = e.attempts + 1
            if e.recs then for _, r in ipairs(e.recs) do r.attempts = r.attempts + 1 end end
          else
            keep[#keep + 1] = e
            if e.not_before > now then next_retry = min(next_retry, e.not_before)
            else gate = min(gate, now + 0.01) end
          end
        end
        s.retry = keep
      end
    end
    if take_fresh and n + nc < max_n and pq:queued(s.ci) > 0 then
      local ne, nb, nrec, naggs, nagg_recs, out_of_tokens = pq:take(h, s.ci, s.id, max_n - n - nc,
        max_bytes - bytes, s.rtok, s.btok, agg_max, agg_count, ordered)
      takes[#takes + 1] = s
      if ne > 0 then
        nc = nc + ne
        crecs = crecs + nrec
        bytes = bytes + nb
        s.rtok = s.rtok - ne
        s.btok = s.btok - nb
        used[s] = true
        self.n_aggregates = self.n_aggregates + naggs
        self.n_aggregated = self.n_aggregated + nagg_recs
      end
      if out_of_tokens then gate = min(gate, now + 0.01) end
    end
    ::continue::
  end
  set_next_retry(self, next_retry)
  self.gate = gate
  if n + nc == 0 then
    pq:abandon(h)
    return nil
  end
  local shards_used = {}
  for s in pairs(used) do
    s.inflight = s.inflight + 1
    shards_used[#shards_used + 1] = s
  end
  local nrec = crecs
  for i = 1, n do
    local e = entries[i]
    nrec = nrec + (e.recs and #e.recs or 1)
  end
  self.inflight_records = self.inflight_records + nrec
  return { entries = entries, n = n, h = h, nc = nc, takes = takes, bytes = bytes, shards = shards_used,
           records = nrec }
end

-- An entry failed (err): retried after a full-jitter backoff while its
-- records' TTL allows, else each record fails.
local function entry_failed(self, e, err, retryable, now)
  local s = e.shard
  local recs = e.recs
  local ttl = self.ttl
  local deadline
  if recs then
    deadline = huge
    for _, r in ipairs(recs) do
      r.last_err = err
      if r.t + ttl < deadline then deadline = r.t + ttl end
    end
  else
    e.last_err = err
    deadline = e.t + ttl
  end
  if self.exit_at and self.exit_at < deadline then deadline = self.exit_at end
  local delay = random() * min(self.opts.retry_base * 2 ^ (e.attempts - 1), self.opts.retry_max_delay)
  if retryable and now + delay < deadline and not self.closed then
    local nrec = recs and #recs or 1
    self.n_retried = self.n_retried + nrec
    if self.ordered then
      return delay, recs or { e }
    end
    if not s.open then
      if recs then for _, r in ipairs(recs) do route(self, r) end else route(self, e) end
      return
    end
    e.not_before = now + delay
    s.retry[#s.retry + 1] = e
    if e.not_before < self.next_retry then set_next_retry(self, e.not_before) end
    return
  end
  local final = err
  if retryable then
    if recs then
      for _, r in ipairs(recs) do fail(self, r, expired(self, r)) end
    else
      fail(self, e, expired(self, e))
    end
    return
  end
  if recs then for _, r in ipairs(recs) do fail(self, r, final) end else fail(self, e, final) end
end

-- An aggregate acknowledged on shard_id: its records are acknowledged if
-- that shard's range holds every one of them; otherwise they are sent
-- again (routed afresh), since a KCL reader of that shard drops them.
function Producer:_ack_aggregate(e, shard_id, seq, range, now)
  local recs = e.recs
  local fits = true
  if range then
    local lo, hi = range.lo, range.hi
    for _, r in ipairs(recs) do
      local hk = hash_key_of(r)
      if not (le(lo, hk) and le(hk, hi)) then fits = false break end
    end
  else
    fits = false
  end
  if fits then
    for j, r in ipairs(recs) do succeed(self, r, shard_id, seq, j - 1) end
    return
  end
  self.n_resent = self.n_resent + #recs
  self.n_retried = self.n_retried + #recs
  self.client:log { event = "producer_resend", shard = shard_id, records = #recs,
                    reason = "aggregate acknowledged on a shard that does not hold all its records" }
  for _, r in ipairs(recs) do
    r.last_err = perr("WrongShard", "aggregate landed on " .. shard_id .. " outside its records' shard")
    if r.t + self.ttl <= now then
      fail(self, r, expired(self, r))
    elseif self.map and not self.stale then
      route(self, r)
    else
      self.unrouted[#self.unrouted + 1] = r
    end
  end
end

local function entry_ok(self, e, out, now)
  local shard_id, seq = out.ShardId, out.SequenceNumber
  if type(shard_id) ~= "string" or type(seq) ~= "string" then
    return entry_failed(self, e, errors.protocol("PutRecords",
      "a PutRecords result entry has neither ErrorCode nor ShardId and SequenceNumber",
      { retryable = true }), true, now)
  end
  local predicted = e.shard and e.shard.id
  if e.recs then
    if shard_id == predicted then
      local recs = e.recs
      for j = 1, #recs do succeed(self, recs[j], shard_id, seq, j - 1) end
      return
    end
    self.stale = true
    local range = self.ranges[shard_id]
    if range then return self:_ack_aggregate(e, shard_id, seq, range, now) end
    self.suspects[#self.suspects + 1] = { entry = e, shard_id = shard_id, seq = seq }
    return
  end
  if shard_id ~= predicted then self.stale = true end
  succeed(self, e, shard_id, seq, nil)
end

-- Settles entry e (a Lua entry: a retry, or a C entry that was not
-- acknowledged on its shard) from its answer entry r.
local function settle_entry(self, e, r, now, note)
  local code = r.ErrorCode
  local shard_id, seq = r.ShardId, r.SequenceNumber
  if not code and shard_id == e.shard.id and type(seq) == "string" then
    -- acknowledged on the shard predicted
    local recs = e.recs
    if not recs then
      succeed(self, e, shard_id, seq, nil)
    else
      for j = 1, #recs do succeed(self, recs[j], shard_id, seq, j - 1) end
    end
  elseif code then
    if code == THROTTLED then throttle(self, e.shard, now) end
    local eerr = errors.new { kind = "aws", code = code, message = r.ErrorMessage, op = "PutRecords",
                              retryable = RETRYABLE_ENTRY[code] == true, throttling = code == THROTTLED }
    note(e.shard, entry_failed(self, e, eerr, eerr.retryable, now))
  else
    entry_ok(self, e, r, now)
  end
end

-- Sends one request and settles every entry in it: the Lua entries
-- (retries) one by one, the C part in bulk (pq:settle), where only what
-- was not acknowledged on its shard comes back to Lua.
function Producer:_send(req)
  local pq, h = self.pq, req.h
  local entries, n = req.entries, req.n
  local total = n + req.nc
  local body = pq:body(h, self.body_head, entries, n)
  self.n_requests = self.n_requests + 1
  local answered
  -- the answer is read in C, without tables; a malformed one is a
  -- protocol error from the client, as the model's decoder's would be
  local function decode(raw)
    local count, why = pq:parse(h, raw, total)
    if not count then return nil, why end
    answered = count
    return raw
  end
  local ok, out, err = pcall(self.sender.attempts, self.sender, PUT_RECORDS, body, self.params, decode)
  if not ok then
    err = perr("InternalError", "PutRecords raised: " .. tostring(out), { retryable = true })
    out = nil
  end
  local now = now_fn()
  for _, s in ipairs(req.shards) do s.inflight = s.inflight - 1 end
  self.inflight_records = self.inflight_records - req.records
  if out and answered ~= total then
    err = errors.protocol("PutRecords", format("PutRecords answered %d entries for %d records",
      answered or 0, total), { retryable = true })
    out = nil
  end
  local backoff = {}   -- ordered mode: shard -> { delay, records }
  local function note(s, delay, recs)
    if delay then
      local b = backoff[s]
      if not b then b = { delay = delay, recs = {} } backoff[s] = b end
      if delay > b.delay then b.delay = delay end
      for _, r in ipairs(recs) do b.recs[#b.recs + 1] = r end
    end
  end
  local takes = req.takes
  if not out then
    self.n_request_errors = self.n_request_errors + 1
    local retryable = err.retryable == true
    if err.code == THROTTLED or err.throttling then
      for _, s in ipairs(req.shards) do throttle(self, s, now) end
    end
    for i = 1, n do
      local e = entries[i]
      note(e.shard, entry_failed(self, e, err, retryable, now))
    end
    local centries, ctakes = pq:abandon(h)
    for i = 1, #centries do
      local e = centries[i]
      e.shard = takes[ctakes[i]]
      note(e.shard, entry_failed(self, e, err, retryable, now))
    end
  else
    local nacked, abytes, _, answers, failed, acks, ids =
      pq:settle(h, out, n, self.on_result ~= nil, #self.flushers > 0)
    for i = 1, n do settle_entry(self, entries[i], answers[i], now, note) end
    for j = 1, #failed, 3 do
      local e = failed[j]
      e.shard = takes[failed[j + 2]]
      settle_entry(self, e, failed[j + 1], now, note)
    end
    acked(self, nacked, abytes, acks, ids)
  end
  for s, b in pairs(backoff) do
    s.blocked_until = now + b.delay
    if s.open then
      requeue_front(self, s, b.recs)
    else
      for _, r in ipairs(b.recs) do route(self, r) end
    end
  end
  if #self.suspects > 0 and not self.stale then self:_settle_suspects(now) end
  runtime.wake(self.room_key)
end

---------------------------------------------------------------- TTL

-- Fails (Expired) every record waiting past its TTL: fresh records from the
-- head of each queue (oldest first), retries, unrouted ones.
function Producer:_expire(now)
  if now < self.next_expire then return end
  self.next_expire = now + EXPIRE_EVERY
  local exit_at = self.exit_at
  local ttl = self.ttl
  local function gone(r) return r.t + ttl <= now or (exit_at ~= nil and exit_at <= now) end
  -- fresh records put at or before cutoff (all of them once exiting); in
  -- ordered mode retried records sit among younger ones: the whole queue
  local cutoff = (exit_at ~= nil and exit_at <= now) and huge or now - ttl
  local pq = self.pq
  for _, s in ipairs(self.state_list) do
    local dead = pq:expire(s.ci, cutoff, self.ordered)
    for i = 1, #dead do fail(self, dead[i], expired(self, dead[i])) end
    if #s.retry > 0 then
      local keep = {}
      for _, e in ipairs(s.retry) do
        local recs = e.recs
        local dead = false
        if recs then
          for _, r in ipairs(recs) do if gone(r) then dead = true break end end
        else
          dead = gone(e)
        end
        if dead then
          -- an aggregate expires as a whole: its records were sent together
          if recs then for _, r in ipairs(recs) do fail(self, r, expired(self, r)) end
          else fail(self, e, expired(self, e)) end
        else
          keep[#keep + 1] = e
        end
      end
      s.retry = keep
    end
  end
  if #self.unrouted > 0 then
    local keep = {}
    for _, r in ipairs(self.unrouted) do
      if gone(r) then
        r.last_err = r.last_err or self.last_list_error
        fail(self, r, expired(self, r))
      else
        keep[#keep + 1] = r
      end
    end
    self.unrouted = keep
  end
  runtime.wake(self.room_key)
end

-- The map is listed when missing or stale (no sooner than the backoff
-- after a failed listing allows) and every refresh_interval seconds.
function Producer:_need_refresh(now)
  if self.refreshing then return false end
  if self.map == nil or self.stale then return now >= self.refresh_not_before end
  return now >= self.next_refresh
end

-- When something next needs doing (seconds from now), for a waiting sender.
function Producer:_next_wait(now, force)
  local t = now + SLICE
  local _, _, first = self.pq:fresh()
  if first and not force then t = min(t, first + self.opts.linger) end
  if self.next_retry < t then t = self.next_retry end
  if self.gate and self.gate < t then t = self.gate end
  if self.pq:outstanding() > 0 then t = min(t, self.next_expire) end
  if (self.stale or not self.map) and self.refresh_not_before < t then t = self.refresh_not_before end
  local w = t - now
  if w < 0.001 then w = 0.001 end
  return w
end

---------------------------------------------------------------- plain script

-- Sends what is due, inline. force: send regardless of linger. wait: when
-- nothing can go now (tokens, backoff), sleep once until something can.
function Producer:_pump_plain(force, wait)
  while true do
    local now = now_fn()
    if self:_need_refresh(now) then self:_refresh(now) now = now_fn() end
    self:_expire(now)
    local req = self:_build(now, force or self:_forced())
    if req then
      self.inflight_requests = self.inflight_requests + 1
      local ok, err = pcall(self._send, self, req)
      self.inflight_requests = self.inflight_requests - 1
      if not ok then error(err, 0) end
      if wait then return end
    else
      if wait and self.pq:outstanding() > 0 then runtime.sleep(self:_next_wait(now, true)) end
      return
    end
  end
end

---------------------------------------------------------------- background

-- The background sender (kinesis.run task, nginx timer): refreshes the map,
-- expires, builds requests and sends each from its own task, until nothing
-- is left; put() starts it again.
function Producer:_drive()
  local spawn = runtime.spawn
  local function send(req)
    local ok, err = pcall(self._send, self, req)
    self.inflight_requests = self.inflight_requests - 1
    if not ok then runtime.log("error", "kinesis.producer: send failed: " .. tostring(err)) end
    runtime.wake(self.key)
  end
  while true do
    local now = now_fn()
    if self.pq:outstanding() == 0 and self.inflight_requests == 0 then break end
    if not self.exit_at and runtime.exiting() then
      self.exit_at = now + self.opts.exit_grace
      self.next_expire = 0
    end
    if self:_need_refresh(now) then self:_refresh(now) now = now_fn() end
    self:_expire(now)
    local force = self:_forced()
    while self.inflight_requests < self.opts.max_in_flight do
      local req = self:_build(now, force)
      if not req then break end
      self.inflight_requests = self.inflight_requests + 1
      spawn(send, req)
    end
    local w = self:_next_wait(now, force)
    if self.inflight_requests >= self.opts.max_in_flight then w = SLICE end
    runtime.park(self.key, w)
  end
end

function Producer:_start_driver()
  set_driver(self, true)
  local function main()
    local ok, err
    if runtime.where() == "nginx" then
      ok, err = pcall(runtime.run, function() self:_drive() end)
    else
      ok, err = pcall(self._drive, self)
    end
    set_driver(self, false)
    if not ok then runtime.log("error", "kinesis.producer: the sender stopped: " .. tostring(err)) end
    -- work that arrived while it was stopping
    if ok and self.pq:outstanding() > 0 then
      local sok, serr = self:_start_driver()
      if not sok then runtime.log("error", "kinesis.producer: " .. tostring(serr)) end
    end
  end
  local ok, err = runtime.timer(0, main)
  if not ok then
    set_driver(self, false)
    return nil, perr(runtime.exiting() and "Exiting" or "NoBackground",
      "cannot start the producer's sender: " .. tostring(err), { op = "producer:put" })
  end
  return true
end

---------------------------------------------------------------- flush, close

--- producer:flush() -> true | nil, err
function Producer:flush()
  if self.pq:outstanding() == 0 then return true end
  local where = runtime.where()
  if where == "plain" then
    local w = { mark = self.pq:last_id(), left = (self.pq:outstanding()) }
    self.flushers[#self.flushers + 1] = w
    local ok, err = pcall(function()
      while w.left > 0 do self:_pump_plain(true, true) end
    end)
    for i, x in ipairs(self.flushers) do if x == w then table.remove(self.flushers, i) break end end
    if not ok then error(err, 0) end
    return true
  end
  if not runtime.can_yield() then
    return nil, perr("CannotWait", "flush cannot wait in the nginx " .. tostring(runtime.phase()) .. " phase")
  end
  local w = { mark = self.pq:last_id(), left = (self.pq:outstanding()) }
  self.flushers[#self.flushers + 1] = w
  while w.left > 0 do
    if not self.driver_running then
      local ok, err = self:_start_driver()
      if not ok then
        for i, x in ipairs(self.flushers) do if x == w then table.remove(self.flushers, i) break end end
        return nil, err
      end
    end
    runtime.wake(self.key)
    runtime.park(w, SLICE)
  end
  for i, x in ipairs(self.flushers) do if x == w then table.remove(self.flushers, i) break end end
  return true
end

--- producer:close() -> true | nil, err
function Producer:close()
  if self.closed then return true end
  self.closing = true
  self:_configure()
  local ok, err = self:flush()
  if not ok then
    self.closing = false
    self:_configure()
    return nil, err
  end
  self.closed = true
  self.closing = false
  runtime.wake(self.room_key)
  return true
end

---------------------------------------------------------------- stats

--- producer:stats() -> table of counters
function Producer:stats()
  local rates = {}
  local now = now_fn()
  for _, s in ipairs(self.state_list) do
    refill(self, s, now)
    local rl = self.opts.rate_limit * s.factor
    rates[s.id] = { records_per_second = M.SHARD_RECORDS * rl, bytes_per_second = M.SHARD_BYTES * rl,
                    factor = s.factor }
  end
  local by_code = {}
  for k, v in pairs(self.failed_by_code) do by_code[k] = v end
  local n_put, bytes_put, pending, held, peak = self.pq:counts()
  local unacked = pending - self.inflight_records
  return {
    put = n_put, bytes_put = bytes_put,
    acknowledged = self.n_acked, bytes_acknowledged = self.bytes_acked,
    failed = self.n_failed, failed_by_code = by_code,
    retried = self.n_retried, resent = self.n_resent,
    pending = pending, in_flight = self.inflight_records, buffered = unacked,
    buffered_bytes = held, buffered_bytes_peak = peak,
    max_buffered_bytes = self.opts.max_buffered_bytes,
    requests = self.n_requests, request_errors = self.n_request_errors,
    in_flight_requests = self.inflight_requests,
    aggregates = self.n_aggregates, aggregated_records = self.n_aggregated,
    shards = #self.state_list, map_refreshes = self.n_map_refreshes, rates = rates,
  }
end

--- producer:progress() -> one line: rates since the previous call
function Producer:progress()
  local now = now_fn()
  local dt = now - self.progress_at
  if dt <= 0 then dt = 1e-9 end
  local rps = (self.n_acked - self.progress_acked) / dt
  local mbps = (self.bytes_acked - self.progress_bytes) / dt / 1e6
  self.progress_at, self.progress_acked, self.progress_bytes = now, self.n_acked, self.bytes_acked
  local n_put, _, pending, held = self.pq:counts()
  local fill = held / self.opts.max_buffered_bytes * 100
  return format("producer: %d put, %d acked, %d failed, %d retried | %.0f rec/s, %.2f MB/s | "
    .. "buffer %.1f%% (%d records, %.1f MiB) | %d requests", n_put, self.n_acked, self.n_failed,
    self.n_retried, rps, mbps, fill, pending, held / 1048576, self.n_requests)
end

function Producer:__tostring()
  return format("kinesis.producer(%s)", tostring(self.opts.stream or self.opts.stream_arn))
end

return M
