-- bench/producer.lua - producer records/s from a plain script to the nginx
-- stub (bench/run.sh: /producer answers ListShards with one shard and
-- PutRecords with one entry per record sent), each beside its baseline:
--
--   lua5.4 bench/producer.lua aggregate      PORT SECONDS  -- kinesis.aggregate alone on the same records
--   lua5.4 bench/producer.lua producer_agg   PORT SECONDS  -- the producer, aggregation on
--   lua5.4 bench/producer.lua put_records    PORT SECONDS  -- client:put_records of 500-record batches
--   lua5.4 bench/producer.lua producer_plain PORT SECONDS  -- the producer, aggregation off
--
-- The records: 100 B of data under 10,000 distinct 20-byte keys, built
-- once before any timing and shared by all four modes. The
-- producer's rate limit is opened wide (the stub is not a shard) and every
-- record's outcome is counted through on_result. Prints { rate, records,
-- seconds, cpu_us, hwm_kb } (rate in records/s).

local common = require "common"
local kinesis = require "kinesis"

local mode, port, seconds = arg[1], arg[2], tonumber(arg[3]) or 1

local NKEYS, NRECS = 10000, 20000
local keys, datas = {}, {}
for i = 1, NKEYS do keys[i] = string.format("user-%015d", i * 7919) end
for i = 1, 64 do datas[i] = common.bytes(100, i) end
local records = {}
for i = 1, NRECS do
  records[i] = { PartitionKey = keys[(i * 31) % NKEYS + 1], Data = datas[i % 64 + 1] }
end

local now, clock = common.now, os.clock

local function client()
  return common.client(port, { endpoint = "http://127.0.0.1:" .. port .. "/producer" })
end

-- runs step() (which handles `batch` records) until `seconds` have passed
local function measure(step, batch, finish)
  step(1)   -- warm-up
  local n, c0, t0 = 0, clock(), now()
  local i = 1
  repeat
    step(i)
    i = i + 1
    n = n + batch
  until now() - t0 >= seconds
  if finish then finish() end
  local elapsed = now() - t0
  return n / elapsed, n, elapsed, (clock() - c0) * 1e6 / n
end

local rate, n, elapsed, cpu_us
if mode == "aggregate" then
  -- what the producer does per aggregate, without routing or sending:
  -- kinesis.aggregate over consecutive runs of records filling ~50 KiB
  local per = 380
  local chunks = {}
  for c = 0, NRECS / per - 1 do
    local t = {}
    for j = 1, per do t[j] = records[c * per + j] end
    chunks[#chunks + 1] = t
  end
  local nch = #chunks
  rate, n, elapsed, cpu_us = measure(function(i)
    assert(kinesis.aggregate(chunks[(i - 1) % nch + 1], { max_bytes = 51200 }))
  end, per)
elseif mode == "put_records" then
  local c = client()
  local batches = {}
  for b = 0, NRECS / 500 - 1 do
    local t = {}
    for j = 1, 500 do t[j] = records[b * 500 + j] end
    batches[#batches + 1] = t
  end
  local nb = #batches
  rate, n, elapsed, cpu_us = measure(function(i)
    local out = assert(c:put_records { StreamName = "bench", Records = batches[(i - 1) % nb + 1] })
    assert(#out.Records == 500)
  end, 500)
elseif mode == "producer_agg" or mode == "producer_plain" then
  local c = client()
  local acked = 0
  local p = c:producer { stream = "bench", aggregate = mode == "producer_agg", rate_limit = 1e6,
                         max_buffered_bytes = 64 * 1048576,
                         on_result = function(r) if r.ok then acked = acked + 1 end end }
  local STEP = 500
  rate, n, elapsed, cpu_us = measure(function(i)
    local base = ((i - 1) * STEP) % NRECS
    -- the very record tables the baselines use, built before timing
    -- (the producer copies what it needs at put: they may be put again)
    for j = 1, STEP do assert(p:put(records[base + j])) end
  end, STEP, function() assert(p:flush()) end)
  -- everything put (warm-up included) was acknowledged
  assert(acked == n + STEP, ("acknowledged %d of %d"):format(acked, n + STEP))
else
  error("unknown mode " .. tostring(mode))
end
common.emit { rate = rate, records = n, seconds = elapsed, cpu_us = cpu_us }
