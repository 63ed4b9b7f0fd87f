-- kinesis.consumer - the KCL-class consumer: every shard of a stream read by
-- one task each (GetRecords polling or enhanced fan-out), parents drained
-- before children, records deaggregated and handed to one handler, progress
-- kept in a checkpoint store (kinesis.checkpoints) that may also hand out
-- leases. client:consumer(opts) builds one; consumer:run() reads until stop().

local errors = require "kinesis.errors"
local checkpoints = require "kinesis.checkpoints"
local kpl = require "kinesis.kpl"

local type, tostring, pairs, ipairs, pcall, xpcall, error, setmetatable, select =
  type, tostring, pairs, ipairs, pcall, xpcall, error, setmetatable, select
local format, min, max, floor, random = string.format, math.min, math.max, math.floor, math.random
local traceback = debug.traceback
local compare_sequence = checkpoints.compare_sequence
local PLAIN_RECORD = { __index = { SubSequenceNumber = 0 } }
local MAGIC = kpl.MAGIC
local MAGIC_LEN = #MAGIC

-- where code runs: kinesis.runtime when present, else the scheduler it grew from
local rt do
  local ok, mod = pcall(require, "kinesis.runtime")
  if ok and type(mod) == "table" and mod.spawn and mod.current_task then rt = mod
  else rt = require "kinesis.scheduler" end
end

local M = {}

-- KCL defaults (PollingConfig / the KCL configuration reference)
local MAX_RECORDS = 10000            -- GetRecords' Limit
local IDLE_TIME = 1.5                -- idleTimeBetweenReadsInMillis
local IDLE_FLOOR = 0.2               -- 5 GetRecords calls per second per shard
local SHARD_SYNC = 60                -- shard sync interval
local SHARD_BYTES_PER_S = 2 * 1024 * 1024   -- per-shard read limit, shared by all readers
local STEP = 0.1                     -- longest sleep slice: bounds how late stop() is seen

local Consumer = {}
Consumer.__index = Consumer
Consumer.__name = "kinesis.consumer"

local function bad(field, rule)
  error("kinesis.consumer: " .. field .. " " .. rule, 3)
end

local function consumer_error(code, message, fields)
  local e = { kind = "consumer", code = code, message = message }
  for k, v in pairs(fields or {}) do e[k] = v end
  return errors.new(e)
end

local function default_worker_id()
  local host = os.getenv("HOSTNAME")
  if not host or host == "" then
    local f = io.open("/etc/hostname", "r")
    host = f and f:read("*l") or "localhost"
    if f then f:close() end
  end
  local pid
  local f = io.open("/proc/self/stat", "r")
  if f then
    pid = (f:read("*l") or ""):match("^(%d+)")
    f:close()
  end
  return host .. ":" .. (pid or tostring(random(1, 1e9)))
end

local function check_number(opts, name, lo)
  local v = opts[name]
  if v ~= nil and (type(v) ~= "number" or v ~= v or v < lo) then
    bad(name, "must be a number >= " .. lo)
  end
end

--- client:consumer(opts) -> consumer. Misuse (a bad option) raises, naming
-- the option and the rule, before anything is sent. See docs/consumer.md.
function M.new(client, opts)
  if type(client) ~= "table" or type(client.call) ~= "function" then
    error("kinesis.consumer: a client is required (client:consumer{...})", 2)
  end
  if type(opts) ~= "table" then error("kinesis.consumer: options table required", 2) end
  if opts.stream ~= nil and (type(opts.stream) ~= "string" or opts.stream == "") then bad("stream", "must be a non-empty string") end
  if opts.stream_arn ~= nil and (type(opts.stream_arn) ~= "string" or not opts.stream_arn:match("^arn:")) then
    bad("stream_arn", "must be a stream ARN (arn:...)")
  end
  if not opts.stream and not opts.stream_arn then bad("stream", "is required (or stream_arn)") end
  if type(opts.handler) ~= "function" then bad("handler", "must be a function(records, ctx)") end
  if opts.application ~= nil and (type(opts.application) ~= "string" or opts.application == "") then
    bad("application", "must be a non-empty string")
  end
  local start = opts.start or "TRIM_HORIZON"
  if start ~= "TRIM_HORIZON" and start ~= "LATEST" and
    not (type(start) == "table" and type(start.timestamp) == "number") then
    bad("start", 'must be "TRIM_HORIZON", "LATEST" or { timestamp = epoch_seconds }')
  end
  local cpmode = opts.checkpoint or "auto"
  if cpmode ~= "auto" and cpmode ~= "manual" then bad("checkpoint", 'must be "auto" or "manual"') end
  if opts.fan_out ~= nil and (type(opts.fan_out) ~= "string" or not opts.fan_out:match("^[a-zA-Z0-9_.-]+$") or #opts.fan_out > 128) then
    bad("fan_out", "must be a stream consumer name (1-128 of a-z A-Z 0-9 _ . -)")
  end
  check_number(opts, "max_records", 1)
  if opts.max_records and opts.max_records > MAX_RECORDS then bad("max_records", "must be at most 10000") end
  check_number(opts, "idle_time_between_reads", IDLE_FLOOR)
  check_number(opts, "shard_sync_interval", 0.05)
  check_number(opts, "max_handler_attempts", 1)
  check_number(opts, "retry_delay", 0)
  check_number(opts, "max_retry_delay", 0)
  check_number(opts, "stop_after_idle", 0)
  check_number(opts, "read_rate", 0.01)
  if opts.on_error ~= nil and type(opts.on_error) ~= "function" then bad("on_error", "must be a function(err, ctx)") end
  if opts.log ~= nil and type(opts.log) ~= "function" then bad("log", "must be a function(event)") end
  local progress = opts.progress
  if progress == true then progress = 10 end
  if progress ~= nil and progress ~= false and (type(progress) ~= "number" or progress <= 0) then
    bad("progress", "must be true, false or a positive number of seconds")
  end
  if opts.progress_output ~= nil and type(opts.progress_output) ~= "function" then
    bad("progress_output", "must be a function(line)")
  end
  local store = opts.store
  if store ~= nil then
    for _, m in ipairs { "open", "get", "set", "list", "sync_shards", "acquire", "holds", "release", "close" } do
      if type(store[m]) ~= "function" then bad("store", "must implement " .. m .. "() (see kinesis.checkpoints)") end
    end
  end
  local application = opts.application or opts.stream or opts.stream_arn:match("([^/]+)$")
  if not store then
    store = checkpoints.file { path = application:gsub("[^%w._-]", "_") .. ".checkpoints" }
  end
  local self = setmetatable({
    client = client, opts = opts, store = store, handler = opts.handler,
    stream = opts.stream, stream_arn = opts.stream_arn, application = application,
    worker_id = opts.worker_id or default_worker_id(), start = start, checkpoint_mode = cpmode,
    fan_out = opts.fan_out, max_records = opts.max_records or MAX_RECORDS,
    idle_time = opts.idle_time_between_reads or IDLE_TIME,
    sync_interval = opts.shard_sync_interval or SHARD_SYNC,
    max_attempts = opts.max_handler_attempts or 3,
    retry_delay = opts.retry_delay or 1, max_retry_delay = opts.max_retry_delay or 30,
    read_rate = opts.read_rate or 1,
    progress = progress or nil, progress_output = opts.progress_output,
    stop_after_idle = opts.stop_after_idle,
    shards = {}, workers = {}, state = "new", reported = {},
    counters = { records = 0, bytes = 0, batches = 0, checkpoints = 0, errors = 0,
      get_records = 0, handler_failures = 0, expired_iterators = 0, throttled = 0, subscriptions = 0 },
    per_shard = {}, error_log = {},
  }, Consumer)
  return self
end

---------------------------------------------------------------- reporting

-- Sends an event to opts.log, else the client's log (when it has one).
function Consumer:_log(event)
  event.consumer = self.application
  local f = self.opts.log
  if f then
    pcall(f, event)
  elseif type(self.client.log) == "function" then
    pcall(self.client.log, self.client, event)
  end
end

-- Records an error once per (shard, code) in stats().errors and the log.
function Consumer:_report(shard_id, err, where)
  self.counters.errors = self.counters.errors + 1
  local key = tostring(shard_id) .. "\0" .. tostring(err and err.code) .. "\0" .. tostring(where)
  local entry = { shard_id = shard_id, where = where, code = err and err.code, message = tostring(err),
    err = err, time = os.time() }
  local log = self.error_log
  log[#log + 1] = entry
  if #log > 100 then table.remove(log, 1) end
  if not self.reported[key] then
    self.reported[key] = true
    self:_log { event = "consumer_error", shard_id = shard_id, where = where, err = err }
  end
end

local function shard_stats(self, id)
  local s = self.per_shard[id]
  if not s then
    s = { records = 0, bytes = 0, batches = 0, checkpoints = 0, errors = 0, millis_behind = nil,
      pending_records = 0, state = "waiting" }
    self.per_shard[id] = s
  end
  return s
end

--- A snapshot of the counters (see docs/consumer.md).
function Consumer:stats()
  local c = self.counters
  local out = {
    state = self.state, worker_id = self.worker_id,
    records = c.records, bytes = c.bytes, batches = c.batches, checkpoints = c.checkpoints,
    errors = c.errors, get_records = c.get_records, handler_failures = c.handler_failures,
    expired_iterators = c.expired_iterators, throttled = c.throttled, subscriptions = c.subscriptions,
    shards = {}, active_shards = 0, finished_shards = 0, max_millis_behind = 0, pending_records = 0,
    recent_errors = {},
  }
  for id, s in pairs(self.per_shard) do
    local copy = {}
    for k, v in pairs(s) do copy[k] = v end
    out.shards[id] = copy
    if s.state == "reading" then out.active_shards = out.active_shards + 1 end
    if s.state == "finished" then out.finished_shards = out.finished_shards + 1 end
    if s.millis_behind and s.state == "reading" then out.max_millis_behind = max(out.max_millis_behind, s.millis_behind) end
    out.pending_records = out.pending_records + (s.pending_records or 0)
  end
  for i, e in ipairs(self.error_log) do
    out.recent_errors[i] = { shard_id = e.shard_id, where = e.where, code = e.code, message = e.message, time = e.time }
  end
  if self.started then out.elapsed = rt.now() - self.started end
  return out
end

local function human_bytes(n)
  if n >= 2^30 then return format("%.1f GiB", n / 2^30) end
  if n >= 2^20 then return format("%.1f MiB", n / 2^20) end
  if n >= 2^10 then return format("%.1f KiB", n / 2^10) end
  return format("%d B", n)
end

--- The one-line progress report.
function Consumer:progress_line()
  local s = self:stats()
  local elapsed = s.elapsed or 0
  local rate = elapsed > 0 and s.records / elapsed or 0
  return format("consumer %s: %d records (%s) in %.1f s, %.0f records/s; %d shards reading, %d finished;"
    .. " %d ms behind; %d checkpoints; %d errors",
    self.application, s.records, human_bytes(s.bytes), elapsed, rate, s.active_shards, s.finished_shards,
    s.max_millis_behind, s.checkpoints, s.errors)
end

function Consumer:_emit_progress()
  local line = self:progress_line()
  if self.progress_output then
    pcall(self.progress_output, line)
  else
    io.stderr:write(line, "\n")
  end
end

---------------------------------------------------------------- sleeping

-- Sleeps up to `seconds` in short slices; returns early once the consumer
-- or the shard (`w`) is stopping. Returns true if it slept the whole time.
function Consumer:_nap(seconds, w)
  local deadline = rt.now() + seconds
  while true do
    if self.stopping or (w and w.stopping) then return false end
    local left = deadline - rt.now()
    if left <= 0 then return true end
    rt.sleep(min(left, STEP))
  end
end

function Consumer:_backoff(attempt)
  local d = min(self.max_retry_delay, self.retry_delay * 2 ^ (attempt - 1))
  return d * (0.5 + random() * 0.5)
end

---------------------------------------------------------------- positions

-- A checkpoint's starting position: params for GetShardIterator /
-- SubscribeToShard's StartingPosition, and the sub-sequence to skip to.
local function position_of(cp)
  local s = cp.sequence
  if s == "TRIM_HORIZON" or s == "LATEST" then return { Type = s } end
  if s == "AT_TIMESTAMP" then return { Type = "AT_TIMESTAMP", Timestamp = cp.timestamp } end
  if cp.sub_sequence then
    -- an aggregate checkpointed part-way: read it again, skip what was done
    return { Type = "AT_SEQUENCE_NUMBER", SequenceNumber = s }, s, cp.sub_sequence
  end
  return { Type = "AFTER_SEQUENCE_NUMBER", SequenceNumber = s }
end

function Consumer:_start_cp()
  local st = self.start
  if type(st) == "table" then return { sequence = "AT_TIMESTAMP", timestamp = st.timestamp } end
  return { sequence = st }
end

---------------------------------------------------------------- shard sync

local function stream_params(self, p)
  p = p or {}
  if self.stream_arn then p.StreamARN = self.stream_arn else p.StreamName = self.stream end
  return p
end

-- The stream's shards (every page of ListShards): list, or nil, err.
function Consumer:_list_shards()
  local out = {}
  for shard, err in self.client:items("list_shards", stream_params(self)) do
    if shard == false then return nil, err end
    out[#out + 1] = shard
  end
  return out
end

local function parents_of(shard)
  local p = {}
  if shard.ParentShardId then p[#p + 1] = shard.ParentShardId end
  if shard.AdjacentParentShardId then p[#p + 1] = shard.AdjacentParentShardId end
  return p
end

local function is_closed(shard)
  return shard.SequenceNumberRange and shard.SequenceNumberRange.EndingSequenceNumber ~= nil
end

-- Decides for each listed shard, from the checkpoints, whether it is done,
-- skipped, blocked by a parent, or ready, and the position a shard without
-- checkpoint starts from. The KCL's rules: a child waits until each parent
-- that is read shows SHARD_END, and starts at TRIM_HORIZON so each key's
-- records come in order across splits and merges; a parent no longer in the
-- stream (past retention) cannot be read and does not block. With start =
-- LATEST, shards not reached from a checkpointed parent start at LATEST
-- when open and are not read when closed (their records are older than the
-- consumer); a child of a shard that was read starts at TRIM_HORIZON.
function Consumer:_plan(list, cps)
  local by_id = {}
  for _, s in ipairs(list) do by_id[s.ShardId] = s end
  local memo = {}
  local latest = self.start == "LATEST"
  local function reads(id, depth)
    -- whether shard `id` is (or will be) read by this application
    if memo[id] ~= nil then return memo[id] end
    if depth > 64 then return false end
    local cp = cps[id]
    local r
    if cp then
      r = true
    elseif not by_id[id] then
      r = false
    elseif not latest then
      r = true
    else
      r = not is_closed(by_id[id])
      for _, p in ipairs(parents_of(by_id[id])) do
        if reads(p, depth + 1) then r = true end
      end
    end
    memo[id] = r
    return r
  end
  local plan = {}
  for _, s in ipairs(list) do
    local id = s.ShardId
    local cp = cps[id]
    local entry = { shard = s, cp = cp, blocked_by = {} }
    local read_parent = false
    for _, p in ipairs(parents_of(s)) do
      local pcp = cps[p]
      if reads(p, 0) and by_id[p] or pcp then read_parent = true end
      if pcp and pcp.sequence ~= "SHARD_END" then
        if by_id[p] then
          entry.blocked_by[#entry.blocked_by + 1] = p
        else
          entry.trimmed_parent = p    -- checkpointed, not finished, and gone from the stream
        end
      elseif not pcp and by_id[p] and reads(p, 0) then
        entry.blocked_by[#entry.blocked_by + 1] = p
      end
    end
    entry.initial = read_parent and { sequence = "TRIM_HORIZON" } or self:_start_cp()
    if cp and cp.sequence == "SHARD_END" then
      entry.status = "done"
    elseif not reads(id, 0) then
      entry.status = "skip"
    elseif #entry.blocked_by > 0 then
      entry.status = "blocked"
    else
      entry.status = "ready"
    end
    plan[id] = entry
  end
  return plan
end

-- One shard sync: list, plan, tell the store, take leases, start readers.
function Consumer:_sync()
  local list, err = self:_list_shards()
  if not list then return nil, err end
  local cps
  cps, err = self.store:list()
  if not cps then return nil, err end
  local plan = self:_plan(list, cps)
  local annotated = {}
  for i, s in ipairs(list) do
    local a = {}
    for k, v in pairs(s) do a[k] = v end
    a.initial = plan[s.ShardId].initial
    annotated[i] = a
  end
  local ok
  ok, err = self.store:sync_shards(annotated)
  if not ok then return nil, err end
  self.last_sync = rt.now()
  self.plan_now = plan
  return self:_acquire_and_start()
end

function Consumer:_acquire_and_start()
  local held, err = self.store:acquire()
  if not held then return nil, err end
  self.held = held
  self.last_acquire = rt.now()
  local plan = self.plan_now or {}
  for id in pairs(held) do
    local entry = plan[id]
    local w = self.workers[id]
    if w and entry then w.shard = entry.shard end    -- learns that its shard closed
    if w and w.done and not w.final and not self.stopping then
      -- a reader that lost its lease (or failed) starts again once held
      self.workers[id], w = nil, nil
    end
    if entry and not w then
      local st = shard_stats(self, id)
      if entry.status == "done" then
        st.state = "finished"
      elseif entry.status == "skip" then
        st.state = "skipped"
      elseif entry.status == "blocked" then
        st.state = "blocked"
        st.blocked_by = entry.blocked_by
      elseif not self.stopping then
        if entry.trimmed_parent and not self.reported["trim\0" .. id] then
          self.reported["trim\0" .. id] = true
          self:_report(id, consumer_error("ParentTrimmed", "parent shard " .. entry.trimmed_parent ..
            " was checkpointed before its end and is no longer in the stream; its remaining records are lost",
            { shard_id = id }), "sync")
        end
        if self.store.renew_interval then
          -- a lease store: the lease may have just moved here, with a newer
          -- checkpoint than the last sync read
          local cp = self.store:get(id)
          if cp then entry.cp = cp end
        end
        if entry.cp and entry.cp.sequence == "SHARD_END" then
          st.state = "finished"
        else
          self:_start_worker(entry)
        end
      end
    end
  end
  return true
end

---------------------------------------------------------------- one shard

local Ctx = {}
Ctx.__index = Ctx
Ctx.__name = "kinesis.consumer.context"

-- Writes cp for the worker's shard (compare-and-set against what it last
-- read or wrote). A conflict or a lost lease stops the shard.
function Consumer:_write_checkpoint(w, cp)
  local old = w.cp
  if checkpoints.equal(old, cp) then return true end
  local ok, err = self.store:set(w.id, cp, old)
  if not ok then
    if err and (err.code == "CheckpointConflict" or err.code == "LeaseLost") then
      w.stopping = true
      w.lost = true
    end
    self:_report(w.id, err, "checkpoint")
    shard_stats(self, w.id).errors = shard_stats(self, w.id).errors + 1
    return nil, err
  end
  w.cp = checkpoints.copy(cp)
  self.counters.checkpoints = self.counters.checkpoints + 1
  local st = shard_stats(self, w.id)
  st.checkpoints = st.checkpoints + 1
  st.checkpoint = w.cp
  return true
end

-- Orders two positions: (sequence, sub) pairs, sub nil = the whole record.
local function after(seq_a, sub_a, seq_b, sub_b)
  local c = compare_sequence(seq_a, seq_b)
  if c ~= 0 then return c > 0 end
  if sub_b == nil then return false end
  if sub_a == nil then return true end
  return sub_a > sub_b
end

--- ctx:checkpoint([record]) -> true | nil, err. Without a record: the whole
-- batch (the last record read). A record of an aggregate records its
-- sub-sequence number, so a restart skips only what was done. A position
-- the checkpoint already covers writes nothing (true, "behind").
function Ctx:checkpoint(record)
  local c, w = self._consumer, self._worker
  local cp
  if record == nil then
    cp = self._batch_cp
    if not cp then return true end
  else
    if type(record) ~= "table" or type(record.SequenceNumber) ~= "string" then
      error("ctx:checkpoint: record must be a record of this batch (with SequenceNumber)", 2)
    end
    if record == self._last_record and self._batch_cp then
      -- the batch's last record: the whole batch is done
      cp = self._batch_cp
    elseif record.Aggregated and record.SubSequenceNumber ~= nil then
      cp = { sequence = record.SequenceNumber, sub_sequence = record.SubSequenceNumber }
    else
      cp = { sequence = record.SequenceNumber }
    end
  end
  local cur = w.cp
  if cur and cur.sequence:match("^%d+$") and cp.sequence:match("^%d+$")
    and not after(cp.sequence, cp.sub_sequence, cur.sequence, cur.sub_sequence) then
    -- already covered (a batch handed over again after a failure): nothing to write
    return true, "behind"
  end
  local ok, err = c:_write_checkpoint(w, cp)
  if ok then self.checkpointed = true end
  return ok, err
end

-- Turns the raw records of one read into user records: deaggregated (KPL,
-- filtered to the shard's hash-key range as the KCL does), minus the
-- sub-records a part-way checkpoint already covers.
function Consumer:_user_records(w, raw)
  local users, n, bytes = {}, 0, 0
  local shard_opt = w.deagg_opts
  if not shard_opt then
    shard_opt = { shard = w.shard }
    w.deagg_opts = shard_opt
  end
  for i = 1, #raw do
    local r = raw[i]
    local us, err
    if r.Data:sub(1, MAGIC_LEN) ~= MAGIC then
      -- not an aggregate (the common case): the decoded record is handed over
      -- as it is; its SubSequenceNumber (0, as the KCL counts a plain record)
      -- comes from a shared metatable, since a fifth key would resize every
      -- record's table. A checkpoint (seq, k) covers it: it is (seq, 0)
      setmetatable(r, PLAIN_RECORD)
      if not (w.skip_seq and r.SequenceNumber == w.skip_seq) then
        n = n + 1
        users[n] = r
        bytes = bytes + #r.Data
      end
    else
      us, err = kpl.deaggregate(r, shard_opt)
      if not us then
        -- a damaged aggregate: keep its sound user records, report the rest
        self:_report(w.id, err, "deaggregate")
        us = err.records or {}
      end
    end
    local skip_seq, skip_sub = w.skip_seq, w.skip_sub
    for j = 1, us and #us or 0 do
      local u = us[j]
      if skip_seq and u.SequenceNumber == skip_seq and u.SubSequenceNumber ~= nil and u.SubSequenceNumber <= skip_sub then
        -- done before the restart
      else
        n = n + 1
        users[n] = u
        bytes = bytes + #u.Data
      end
    end
    if skip_seq and r.SequenceNumber ~= skip_seq then
      w.skip_seq, w.skip_sub = nil, nil
    end
  end
  if w.skip_seq and #raw > 0 then w.skip_seq, w.skip_sub = nil, nil end
  return users, bytes
end

-- Hands one batch to the handler until it returns (retrying a raising
-- handler with backoff; after max_handler_attempts on_error decides), then
-- checkpoints in auto mode. Returns "ok" | "skip" | "stop".
function Consumer:_deliver(w, users, bytes, last_seq, millis_behind)
  local st = shard_stats(self, w.id)
  local ctx = setmetatable({
    shard_id = w.id, millis_behind = millis_behind, worker_id = self.worker_id,
    application = self.application, attempt = 0, consumer = self,
    _consumer = self, _worker = w, _batch_cp = last_seq and { sequence = last_seq } or nil,
    _last_record = users[#users],
  }, Ctx)
  st.pending_records = #users
  if #users > 0 then
    local attempt = 0
    while true do
      attempt = attempt + 1
      ctx.attempt = attempt
      if not self.store:holds(w.id) then
        w.stopping, w.lost = true, true
        self:_report(w.id, checkpoints.lease_lost(w.id), "lease")
        return "stop"
      end
      local ok, herr = xpcall(self.handler, function(e)
        if type(e) == "table" then return e end
        return traceback(tostring(e), 2)
      end, users, ctx)
      if ok then break end
      self.counters.handler_failures = self.counters.handler_failures + 1
      st.errors = st.errors + 1
      local err = errors.is_error(herr) and herr or consumer_error("HandlerFailed", tostring(herr),
        { shard_id = w.id, cause = herr })
      err.attempts = attempt
      self:_report(w.id, err, "handler")
      if w.lost then return "stop" end
      local decision = "retry"
      if attempt >= self.max_attempts then
        if self.opts.on_error then
          local pok, d = pcall(self.opts.on_error, err, ctx)
          decision = pok and d or "retry"
        end
        if decision ~= "skip" and decision ~= "stop" then decision = "retry" end
      end
      if decision == "stop" then
        st.state = "failed"
        w.final = true
        return "stop"
      elseif decision == "skip" then
        break
      end
      -- the same batch again, after a pause; a stop ends the shard here,
      -- with nothing checkpointed past the last good batch
      if not self:_nap(self:_backoff(min(attempt, 16)), w) then return "stop" end
    end
    self.counters.records = self.counters.records + #users
    self.counters.bytes = self.counters.bytes + bytes
    self.counters.batches = self.counters.batches + 1
    st.records = st.records + #users
    st.bytes = st.bytes + bytes
    st.batches = st.batches + 1
  end
  if last_seq then
    w.processed = last_seq    -- where an expired iterator resumes
    if self.checkpoint_mode == "auto" then
      local ok = self:_write_checkpoint(w, { sequence = last_seq })
      if not ok and w.lost then return "stop" end
    end
  end
  st.pending_records = 0
  if self.checkpoint_mode == "manual" then
    w.all_checkpointed = checkpoints.equal(w.cp, ctx._batch_cp) or (#users == 0 and w.all_checkpointed ~= false)
  else
    w.all_checkpointed = true
  end
  return "ok"
end

-- The end of a closed shard: SHARD_END once everything read is checkpointed.
-- In manual mode an unconfirmed tail is offered to the handler once more with
-- an empty batch and ctx.shard_ended = true; ctx:checkpoint() then ends it.
function Consumer:_finish_shard(w, child_shards)
  if self.checkpoint_mode == "manual" and not w.all_checkpointed then
    local ctx = setmetatable({ shard_id = w.id, shard_ended = true, millis_behind = 0, attempt = 1,
      consumer = self, worker_id = self.worker_id, application = self.application,
      _consumer = self, _worker = w, _batch_cp = { sequence = "SHARD_END" } }, Ctx)
    local ok, herr = pcall(self.handler, {}, ctx)
    if not ok then self:_report(w.id, consumer_error("HandlerFailed", tostring(herr), { shard_id = w.id }), "handler") end
    if not (w.cp and w.cp.sequence == "SHARD_END") then
      self:_report(w.id, consumer_error("ShardEndNotCheckpointed",
        "manual checkpoint mode: the handler did not checkpoint the end of " .. w.id ..
        "; its children wait until it does (after a restart)", { shard_id = w.id }), "shard_end")
      return false
    end
  else
    local ok = self:_write_checkpoint(w, { sequence = "SHARD_END" })
    if not ok then return false end
  end
  shard_stats(self, w.id).state = "finished"
  shard_stats(self, w.id).millis_behind = 0
  self:_log { event = "shard_end", shard_id = w.id, children = child_shards }
  self.resync = true    -- children may now start
  return true
end

-- The position to read from: the checkpoint, else the planned start.
local function starting_position(w)
  local cp = w.cp or w.initial
  local pos, skip_seq, skip_sub = position_of(cp)
  w.skip_seq, w.skip_sub = skip_seq, skip_sub
  return pos
end

-- An iterator for the worker's shard from `pos`; nil, err.
function Consumer:_iterator(w, pos)
  local p = stream_params(self, { ShardId = w.id, ShardIteratorType = pos.Type })
  if pos.SequenceNumber then p.StartingSequenceNumber = pos.SequenceNumber end
  if pos.Timestamp then p.Timestamp = pos.Timestamp end
  local out, err = self.client:get_shard_iterator(p)
  if not out then return nil, err end
  return out.ShardIterator
end

local function gone(err)
  return err and err.code == "ResourceNotFoundException"
end

-- Ends a shard whose stream or shard no longer exists: reported once.
function Consumer:_shard_gone(w, err)
  w.final = true
  self:_report(w.id, err, "shard_gone")
  shard_stats(self, w.id).state = "gone"
  self.resync = true
end

-- The polling reader of one shard.
function Consumer:_poll(w)
  local st = shard_stats(self, w.id)
  local pos = starting_position(w)
  local it, err
  local failures = 0
  local min_gap = IDLE_FLOOR / self.read_rate
  local next_at = 0
  while not (self.stopping or w.stopping) do
    if not it then
      it, err = self:_iterator(w, pos)
      if not it then
        if gone(err) then return self:_shard_gone(w, err) end
        failures = failures + 1
        self:_report(w.id, err, "get_shard_iterator")
        if not self:_nap(self:_backoff(min(failures, 16)), w) then break end
        goto continue
      end
    end
    do
      local wait = next_at - rt.now()
      if wait > 0 and not self:_nap(wait, w) then break end
      if not self.store:holds(w.id) then
        w.lost = true
        self:_report(w.id, checkpoints.lease_lost(w.id), "lease")
        break
      end
      local began = rt.now()
      local out
      out, err = self.client:get_records { ShardIterator = it, Limit = self.max_records,
        StreamARN = self.stream_arn }
      self.counters.get_records = self.counters.get_records + 1
      if not out then
        failures = failures + 1
        if err.code == "ExpiredIteratorException" then
          -- KCL: a fresh iterator after the last record processed
          self.counters.expired_iterators = self.counters.expired_iterators + 1
          self:_log { event = "iterator_expired", shard_id = w.id }
          it = nil
          if w.processed then
            pos = { Type = "AFTER_SEQUENCE_NUMBER", SequenceNumber = w.processed }
            w.skip_seq = nil
          else
            pos = starting_position(w)
          end
          failures = 0
        elseif gone(err) then
          return self:_shard_gone(w, err)
        else
          if err.code == "ProvisionedThroughputExceededException" then
            self.counters.throttled = self.counters.throttled + 1
          end
          self:_report(w.id, err, "get_records")
          st.errors = st.errors + 1
          next_at = rt.now() + self:_backoff(min(failures, 16))
        end
        goto continue
      end
      failures = 0
      local raw = out.Records or {}
      st.millis_behind = out.MillisBehindLatest
      st.state = "reading"
      local users, bytes = self:_user_records(w, raw)
      local raw_bytes = 0
      for i = 1, #raw do raw_bytes = raw_bytes + #raw[i].Data end
      local last_seq = raw[#raw] and raw[#raw].SequenceNumber
      local verdict = self:_deliver(w, users, bytes, last_seq, out.MillisBehindLatest)
      if verdict == "stop" then break end
      if #raw > 0 or (out.MillisBehindLatest or 0) > 0 then
        w.idle_since = nil
      else
        w.idle_since = w.idle_since or rt.now()
      end
      if out.NextShardIterator == nil then
        self:_finish_shard(w, out.ChildShards)
        return
      end
      it = out.NextShardIterator
      -- pacing: the shard's 2 MiB/s and 5 calls/s are shared by every
      -- reader; an answer of B bytes costs B / 2 MiB seconds of the budget
      local gap = max(min_gap, raw_bytes / (SHARD_BYTES_PER_S * self.read_rate))
      if #raw == 0 and (out.MillisBehindLatest or 0) == 0 then gap = max(gap, self.idle_time) end
      next_at = began + gap
    end
    ::continue::
  end
end

-- Whether a closed shard whose subscription is caught up has nothing left:
-- one GetRecords after the last record processed that answers no records
-- and no next iterator. A safety net for services whose subscriptions keep
-- sending empty events after a shard's end instead of the final event with
-- ChildShards; asked at most every 5 s per shard.
function Consumer:_confirm_end(w)
  local now = rt.now()
  if w.end_checked and now - w.end_checked < 5 then return false end
  w.end_checked = now
  local pos = w.processed and { Type = "AFTER_SEQUENCE_NUMBER", SequenceNumber = w.processed }
    or position_of(w.cp or w.initial)
  local it = self:_iterator(w, pos)
  if not it then return false end
  local out = self.client:get_records { ShardIterator = it, Limit = 1, StreamARN = self.stream_arn }
  return out ~= nil and #(out.Records or {}) == 0 and out.NextShardIterator == nil
end

-- The enhanced fan-out reader of one shard: renewed subscriptions from the
-- last processed position.
function Consumer:_fan_out_read(w)
  local st = shard_stats(self, w.id)
  local failures = 0
  while not (self.stopping or w.stopping) do
    local pos = w.processed and { Type = "AFTER_SEQUENCE_NUMBER", SequenceNumber = w.processed }
      or starting_position(w)
    self.counters.subscriptions = self.counters.subscriptions + 1
    local sub = self.client:subscribe({ ConsumerARN = self.consumer_arn, ShardId = w.id, StartingPosition = pos },
      { event_timeout = self.opts.event_timeout })
    w.subscription = sub
    local ended, failed = false, nil
    for event, err in sub do
      if event == false then failed = err break end
      failures = 0
      local raw = event.Records or {}
      st.millis_behind = event.MillisBehindLatest
      st.state = "reading"
      local users, bytes = self:_user_records(w, raw)
      local last_seq = raw[#raw] and raw[#raw].SequenceNumber
      local verdict = self:_deliver(w, users, bytes, last_seq, event.MillisBehindLatest)
      if verdict == "stop" then sub:close() return end
      if #raw > 0 or (event.MillisBehindLatest or 0) > 0 then w.idle_since = nil
      else w.idle_since = w.idle_since or rt.now() end
      if sub.shard_ended then ended = true break end
      if #raw == 0 and (event.MillisBehindLatest or 0) == 0 and is_closed(w.shard) and self:_confirm_end(w) then
        ended = true
        break
      end
      if self.stopping or w.stopping or not self.store:holds(w.id) then break end
    end
    sub:close()
    w.subscription = nil
    if ended then
      self:_finish_shard(w, sub.child_shards)
      return
    end
    if failed then
      if gone(failed) then return self:_shard_gone(w, failed) end
      failures = failures + 1
      self:_report(w.id, failed, "subscribe")
      st.errors = st.errors + 1
      if not self:_nap(self:_backoff(min(failures, 16)), w) then break end
    end
    if not self.store:holds(w.id) then
      w.lost = true
      break
    end
  end
end

function Consumer:_start_worker(entry)
  local id = entry.shard.ShardId
  local w = { id = id, shard = entry.shard, cp = entry.cp, initial = entry.initial, done = false }
  self.workers[id] = w
  shard_stats(self, id).state = "reading"
  w.task = rt.spawn(function()
    local ok, err = xpcall(function()
      if self.fan_out then self:_fan_out_read(w) else self:_poll(w) end
    end, traceback)
    if shard_stats(self, id).state == "finished" then w.final = true end
    if not ok then self:_report(id, consumer_error("ReaderFailed", tostring(err), { shard_id = id }), "reader") end
    w.done = true
    local st = shard_stats(self, id)
    if st.state == "reading" or st.state == "blocked" then st.state = w.lost and "lost" or "stopped" end
    if not self.stopping then pcall(self.store.release, self.store, id) end
  end)
  return w
end

---------------------------------------------------------------- fan-out setup

-- Registers the stream consumer named by fan_out when missing and waits
-- until it is ACTIVE; sets self.consumer_arn.
function Consumer:_ensure_stream_consumer()
  local arn = self.stream_arn
  if not arn then
    local out, err = self.client:describe_stream_summary { StreamName = self.stream }
    if not out then return nil, err end
    arn = out.StreamDescriptionSummary.StreamARN
  end
  local name = self.fan_out
  local out, err = self.client:describe_stream_consumer { StreamARN = arn, ConsumerName = name }
  if not out then
    if err.code ~= "ResourceNotFoundException" then return nil, err end
    local reg
    reg, err = self.client:register_stream_consumer { StreamARN = arn, ConsumerName = name }
    if not reg and err.code ~= "ResourceInUseException" then return nil, err end
  end
  for _ = 1, 120 do
    out, err = self.client:describe_stream_consumer { StreamARN = arn, ConsumerName = name }
    if out and out.ConsumerDescription.ConsumerStatus == "ACTIVE" then
      self.consumer_arn = out.ConsumerDescription.ConsumerARN
      return true
    end
    if not out and err.code ~= "ResourceNotFoundException" then return nil, err end
    if not self:_nap(0.5) then return nil, consumer_error("Stopped", "stopped while waiting for the stream consumer") end
  end
  return nil, consumer_error("ConsumerNotActive", "stream consumer " .. name .. " did not become ACTIVE")
end

---------------------------------------------------------------- run / stop

-- SIGINT / SIGTERM as stop() in a plain script, through the C core's flag
-- (plain Lua cannot catch signals); absent elsewhere.
local function signal_watch(self)
  local core = require "kinesis.core"
  if self.opts.signals == false or not core.signals_catch or rt.where and rt.where() == "nginx" then return nil end
  local token = core.signals_catch()
  if not token then return nil end
  return function()
    local sig = core.signals_pending()
    if sig then
      self:_log { event = "signal", signal = sig }
      self:stop()
    end
  end, function() core.signals_restore(token) end
end

-- Whether every shard is caught up for stop_after_idle seconds: each
-- running reader idle that long, no reader about to start. A shard whose
-- reader ended (finished, failed, gone) or that waits for such a parent
-- counts as idle.
function Consumer:_all_idle()
  local now = rt.now()
  for id, e in pairs(self.plan_now or {}) do
    local w = self.workers[id]
    if w then
      if not w.done and (not w.idle_since or now - w.idle_since < self.stop_after_idle) then return false end
    elseif e.status == "ready" and (not self.held or self.held[id]) then
      return false    -- about to start here (a shard another worker holds is its business)
    end
  end
  return true
end

-- The coordinator: runs inside a task of kinesis.run (or an nginx thread).
function Consumer:_main()
  self.started = rt.now()
  self.state = "starting"
  local ok, err = self.store:open { client = self.client, stream = self.stream, stream_arn = self.stream_arn,
    application = self.application, worker_id = self.worker_id }
  if not ok then
    self.state = "failed"
    return nil, err
  end
  if self.fan_out then
    ok, err = self:_ensure_stream_consumer()
    if not ok then
      self.state = "failed"
      pcall(self.store.close, self.store)
      return nil, err
    end
  end
  local poll_signals, restore_signals = signal_watch(self)
  self.state = "running"
  local result, result_err = true, nil
  local failures = 0
  local next_progress = self.progress and rt.now() + self.progress
  local renew = self.store.renew_interval
  while not self.stopping do
    local now = rt.now()
    if self.resync or not self.last_sync or now - self.last_sync >= self.sync_interval then
      self.resync = false
      ok, err = self:_sync()
      if not ok then
        if gone(err) then
          -- the stream was deleted: every reader ends; run returns the error
          self:_report(nil, err, "list_shards")
          result, result_err = nil, err
          break
        end
        failures = failures + 1
        self:_report(nil, err, "sync")
        self.last_sync = now - self.sync_interval + min(self.sync_interval, self:_backoff(min(failures, 8)))
      else
        failures = 0
      end
    elseif renew and now - (self.last_acquire or 0) >= renew then
      ok, err = self:_acquire_and_start()
      if not ok then self:_report(nil, err, "acquire") end
    end
    if next_progress and rt.now() >= next_progress then
      self:_emit_progress()
      next_progress = rt.now() + self.progress
    end
    if self.stop_after_idle and self.last_sync and self:_all_idle() then
      self:_log { event = "idle_stop" }
      break
    end
    rt.sleep(STEP)
    if poll_signals then poll_signals() end
  end
  -- stop: readers finish the batch in hand and write their checkpoints
  self.stopping = true
  self.state = "stopping"
  for _, w in pairs(self.workers) do
    if w.task and not w.done then w.task:wait() end
  end
  for id in pairs(self.workers) do pcall(self.store.release, self.store, id) end
  pcall(self.store.close, self.store)
  if restore_signals then restore_signals() end
  if self.progress then self:_emit_progress() end
  self.state = "stopped"
  return result, result_err
end

--- Reads until stop() (or stop_after_idle); returns true, or nil, err when
-- it could not start or the stream disappeared. Inside kinesis.run (or
-- nginx) it runs in the calling task; in a plain script it starts its own
-- kinesis.run.
function Consumer:run()
  if self.state == "running" or self.state == "starting" then
    error("kinesis.consumer: run() is already running", 2)
  end
  self.stopping = false
  self.workers, self.resync, self.last_sync = {}, false, nil
  if rt.current_task() then return self:_main() end
  return rt.run(function() return self:_main() end)
end

--- Asks run() to finish: each reader ends after the batch in hand, final
-- checkpoints are written, leases released, then run() returns.
function Consumer:stop()
  self.stopping = true
  return true
end

function Consumer:__tostring()
  return format("kinesis.consumer(%s, %s, %s)", tostring(self.stream or self.stream_arn), self.application, self.state)
end

M.Consumer = Consumer
return M
