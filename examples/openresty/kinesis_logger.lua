-- kinesis_logger.lua - ships one JSON line per nginx request to a Kinesis
-- stream. The log phase cannot do network I/O, so each request only appends
-- to a per-worker buffer; a timer started in init_worker takes the buffer
-- every `flush_interval` seconds (sooner when a full batch is waiting) and
-- sends it with PutRecords, up to 500 records per call, the batches of one
-- flush concurrently (kinesis.spawn -> ngx.thread). Records PutRecords
-- reports as failed go back into the buffer for the next flush; when the
-- buffer is full, new lines are dropped and counted. On shutdown or reload
-- the timer runs one last time and flushes what is left.
--
--   init_worker_by_lua_block { require("kinesis_logger").init { stream = "access-log" } }
--   log_by_lua_block         { require("kinesis_logger").log_request() }

local kinesis = require "kinesis"
local cjson = require "cjson.safe"

local ngx = ngx
local timer_at, timer_every = ngx.timer.at, ngx.timer.every
local log, ERR, WARN = ngx.log, ngx.ERR, ngx.WARN
local min = math.min
local ipairs, pairs, type, tostring, tonumber, pcall, error = ipairs, pairs, type, tostring, tonumber, pcall, error

local M = {}

local MAX_RECORDS = 500                 -- PutRecords: records per call
local MAX_RECORD_BYTES = 1024 * 1024    -- a conservative per-record size

local cfg              -- options given to init
local client           -- the worker's kinesis client
local buffer, bytes = {}, 0              -- pending { PartitionKey =, Data = } entries
local flushing = false
local kick_pending = false
local stats = { buffered = 0, sent = 0, failed = 0, retried = 0, dropped = 0, batches = 0, errors = 0 }

--- Splits `entries` into PutRecords batches within the record and byte limits.
local function batches_of(entries)
  local out, cur, cur_bytes = {}, {}, 0
  for _, e in ipairs(entries) do
    local size = #e.Data + #e.PartitionKey
    if #cur >= cfg.batch_size or (cur_bytes + size > cfg.batch_bytes and #cur > 0) then
      out[#out + 1] = cur
      cur, cur_bytes = {}, 0
    end
    cur[#cur + 1] = e
    cur_bytes = cur_bytes + size
  end
  if #cur > 0 then out[#out + 1] = cur end
  return out
end

local function requeue(list)
  for _, e in ipairs(list) do
    e.tries = (e.tries or 0) + 1
    if e.tries > cfg.max_retries or #buffer >= cfg.max_buffer then
      stats.dropped = stats.dropped + 1
    else
      buffer[#buffer + 1] = e
      bytes = bytes + #e.Data
      stats.retried = stats.retried + 1
    end
  end
end

-- sends one batch; returns the entries to try again
local function send_batch(batch)
  local records = {}
  for i, e in ipairs(batch) do records[i] = { PartitionKey = e.PartitionKey, Data = e.Data } end
  local out, err = client:put_records { StreamName = cfg.stream, Records = records }
  stats.batches = stats.batches + 1
  if not out then
    -- the client already retried what was retryable; keep the lines for later
    stats.errors = stats.errors + 1
    log(ERR, "kinesis_logger: PutRecords failed: ", tostring(err))
    return batch
  end
  local again = {}
  for i, r in ipairs(out.Records) do
    if r.ErrorCode then
      again[#again + 1] = batch[i]
      stats.failed = stats.failed + 1
    else
      stats.sent = stats.sent + 1
    end
  end
  return again
end

--- Sends everything buffered now. Runs in a timer (cosockets allowed).
function M.flush()
  if flushing or #buffer == 0 then return true end
  flushing = true
  local taken = buffer
  buffer, bytes = {}, 0
  local ok, err = pcall(kinesis.run, function()
    local tasks = {}
    for i, batch in ipairs(batches_of(taken)) do
      tasks[i] = kinesis.spawn(send_batch, batch)
    end
    for i, r in ipairs(kinesis.wait_all(tasks)) do
      if r[1] then
        requeue(r[2])
      else
        log(ERR, "kinesis_logger: batch ", i, " raised: ", tostring(r[2]))
      end
    end
  end)
  flushing = false
  if not ok then log(ERR, "kinesis_logger: flush failed: ", tostring(err)) end
  return ok
end

local function on_timer(premature)
  -- premature: the worker is exiting (reload or shutdown); flush a last time
  M.flush()
  if premature and #buffer > 0 then
    log(WARN, "kinesis_logger: ", #buffer, " lines left unsent at worker exit")
  end
end

local function kick(premature)
  kick_pending = false
  on_timer(premature)
end

--- Appends one record; callable from any phase (no I/O here).
function M.put(data, partition_key)
  if not cfg then return nil, "kinesis_logger.init was not called in init_worker" end
  if #data > MAX_RECORD_BYTES then
    stats.dropped = stats.dropped + 1
    return nil, "record too large"
  end
  if #buffer >= cfg.max_buffer then
    stats.dropped = stats.dropped + 1
    return nil, "buffer full"
  end
  buffer[#buffer + 1] = { PartitionKey = partition_key, Data = data }
  bytes = bytes + #data
  stats.buffered = stats.buffered + 1
  -- a full batch waiting: flush now rather than at the next tick
  if (#buffer >= cfg.batch_size or bytes >= cfg.batch_bytes) and not kick_pending and not flushing then
    kick_pending = true
    local ok, err = timer_at(0, kick)
    if not ok then
      kick_pending = false
      log(WARN, "kinesis_logger: cannot start a flush timer: ", err)
    end
  end
  return true
end

--- The log-phase entry point: one JSON line about the current request.
function M.log_request()
  local var = ngx.var
  -- read once: ngx.var evaluates $request_id afresh (a new random id) on
  -- every access unless the configuration itself uses the variable
  local id = var.request_id
  local line = cjson.encode {
    time = ngx.now(), request_id = id, remote_addr = var.remote_addr,
    method = var.request_method, uri = var.uri, args = var.args, status = tonumber(var.status),
    bytes_sent = tonumber(var.bytes_sent), request_time = tonumber(var.request_time),
    user_agent = var.http_user_agent, host = var.host,
  }
  -- $request_id is random, so the lines spread over every shard
  return M.put(line .. "\n", id)
end

--- Counters for this worker.
function M.stats()
  local s = {}
  for k, v in pairs(stats) do s[k] = v end
  s.pending = #buffer
  return s
end

--- Starts the worker's flush timer. opts: stream (required), flush_interval
-- (seconds, 1), batch_size (500), batch_bytes (5 MiB), max_buffer (lines,
-- 10000), max_retries (3), and any kinesis.new option (region, endpoint,
-- credentials, retry, timeout, pool).
function M.init(opts)
  if type(opts) ~= "table" or type(opts.stream) ~= "string" then
    error("kinesis_logger.init expects { stream = name, ... }", 2)
  end
  cfg = {
    stream = opts.stream,
    flush_interval = opts.flush_interval or 1,
    batch_size = min(opts.batch_size or MAX_RECORDS, MAX_RECORDS),
    batch_bytes = opts.batch_bytes or 5 * 1024 * 1024,
    max_buffer = opts.max_buffer or 10000,
    max_retries = opts.max_retries or 3,
  }
  local ccfg = {}
  for k, v in pairs(opts) do
    if cfg[k] == nil then ccfg[k] = v end
  end
  -- no I/O here: credentials and endpoints are resolved on the first flush
  local c, err = kinesis.new(ccfg)
  if not c then error("kinesis_logger: " .. tostring(err), 2) end
  client = c
  local ok, terr = timer_every(cfg.flush_interval, on_timer)
  if not ok then error("kinesis_logger: cannot start the flush timer: " .. tostring(terr), 2) end
  return true
end

return M
