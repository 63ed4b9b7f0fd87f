-- kinesis_logger.lua - ships one JSON line per nginx request to a Kinesis
-- stream through the lua-kinesis producer (docs/producer.md). The log phase
-- cannot do network I/O or wait: each request only hands its line to the
-- worker's producer, whose sender runs from an ngx.timer: it batches by
-- shard, aggregates, retries what failed and paces itself per shard. When
-- the buffer is full the line is refused (counted as dropped) instead of
-- stalling the request; when the worker exits, the sender sends what is
-- left at once and every line still gets its outcome.
--
--   init_worker_by_lua_block { require("kinesis_logger").init { stream = "access-log" } }
--   log_by_lua_block         { require("kinesis_logger").log_request() }

local kinesis = require "kinesis"
local cjson = require "cjson.safe"

local ngx = ngx
local log, ERR = ngx.log, ngx.ERR
local pairs, type, tostring, tonumber, error = pairs, type, tostring, tonumber, error

local M = {}

local producer     -- the worker's producer
local counts = { buffered = 0, sent = 0, failed = 0, dropped = 0 }

-- one outcome per line: acknowledged, or failed with the reason
local function on_result(r)
  if r.ok then
    counts.sent = counts.sent + 1
  else
    counts.failed = counts.failed + 1
    log(ERR, "kinesis_logger: a line was not delivered: ", tostring(r.err))
  end
end

--- Hands one line to the producer; callable from any phase (no I/O here).
function M.put(data, partition_key)
  if not producer then return nil, "kinesis_logger.init was not called in init_worker" end
  local ok, err = producer:put { PartitionKey = partition_key, Data = data }
  if not ok then
    -- BufferFull (the stream is slower than the traffic), or a line over
    -- the service's limits
    counts.dropped = counts.dropped + 1
    return nil, err
  end
  counts.buffered = counts.buffered + 1
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

--- Counters for this worker: lines buffered (accepted), sent, failed,
-- dropped (refused at put), pending (no outcome yet), and the producer's
-- own stats (batches = PutRecords calls, errors = failed calls).
function M.stats()
  local s = {}
  for k, v in pairs(counts) do s[k] = v end
  local ps = producer and producer:stats() or {}
  s.pending = ps.pending or 0
  s.batches = ps.requests or 0
  s.errors = ps.request_errors or 0
  s.retried = ps.retried or 0
  s.producer = ps
  s.progress = producer and producer:progress() or nil
  return s
end

--- Creates the worker's client and producer. opts: stream (required),
-- flush_interval (seconds a line may wait for others: the producer's
-- linger, default 1), max_buffer_bytes (8 MiB), any producer option under
-- `producer`, and any kinesis.new option (region, endpoint, credentials,
-- retry, timeout, pool).
function M.init(opts)
  if type(opts) ~= "table" or type(opts.stream) ~= "string" then
    error("kinesis_logger.init expects { stream = name, ... }", 2)
  end
  local mine = { stream = true, flush_interval = true, max_buffer_bytes = true, producer = true }
  local ccfg = {}
  for k, v in pairs(opts) do
    if not mine[k] then ccfg[k] = v end
  end
  -- no I/O here: credentials, endpoints and the shard map come on the first send
  local client, err = kinesis.new(ccfg)
  if not client then error("kinesis_logger: " .. tostring(err), 2) end
  local popts = { stream = opts.stream, linger = opts.flush_interval or 1,
                  max_buffered_bytes = opts.max_buffer_bytes or 8 * 1048576, on_result = on_result }
  for k, v in pairs(opts.producer or {}) do popts[k] = v end
  producer = client:producer(popts)
  return true
end

return M
