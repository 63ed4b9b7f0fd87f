-- bench/common.lua - what every benchmark script shares: the clock, peak
-- RSS, the deterministic test data, the one-line JSON result each script
-- prints for bench/driver.lua, and the timing loop.

local core = require "kinesis.core"
local cjson = require "cjson"

local M = {}

M.now = core.monotime

--- Peak resident set size of this process in KiB (VmHWM), or -1.
function M.hwm_kb()
  local f = io.open("/proc/self/status", "r")
  if not f then return -1 end
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmHWM:%s*(%d+)")) or -1
end

--- Prints the result table as the last line of stdout, with hwm_kb added.
function M.emit(t)
  t.hwm_kb = M.hwm_kb()
  io.write(cjson.encode(t), "\n")
  io.flush()
end

--- Deterministic bytes: `n` bytes that vary with `seed` (binary, all 256 values).
function M.bytes(n, seed)
  local t = {}
  local x = seed * 2654435761 % 4294967296
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    t[i] = string.char(math.floor(x / 65536) % 256)
  end
  return table.concat(t)
end

--- Calls f() in batches of `batch` until `seconds` have passed (after
-- `warmup` calls); returns calls per second, calls, elapsed seconds and
-- this process's CPU time per call in microseconds (os.clock: user +
-- system, so less sensitive than the rate to other load on the machine).
function M.rate(f, seconds, batch, warmup)
  batch = batch or 16
  for _ = 1, warmup or batch do f() end
  local now, clock = M.now, os.clock
  local calls, c0, t0 = 0, clock(), now()
  local elapsed
  repeat
    for _ = 1, batch do f() end
    calls = calls + batch
    elapsed = now() - t0
  until elapsed >= seconds
  return calls / elapsed, calls, elapsed, (clock() - c0) * 1e6 / calls
end

--- The benchmark client for a loopback endpoint.
function M.client(port, extra)
  local cfg = {
    endpoint = "http://127.0.0.1:" .. port, region = "us-east-1",
    credentials = { access_key_id = "AKID", secret_access_key = "SECRET" },
  }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return assert(require("kinesis").new(cfg))
end

--- Median of an array of numbers (a copy is sorted).
function M.median(xs)
  local t = {}
  for i = 1, #xs do t[i] = xs[i] end
  table.sort(t)
  local n = #t
  if n == 0 then return nil end
  local h = math.floor(n / 2)
  if n % 2 == 1 then return t[h + 1] end
  return (t[h] + t[h + 1]) / 2
end

--- The 500 records of the PutRecords benchmark: 100-byte blobs.
function M.put_records_params()
  local records = {}
  for i = 1, 500 do
    records[i] = { Data = M.bytes(100, i), PartitionKey = string.format("partition-key-%04d", i) }
  end
  return { StreamName = "bench", Records = records }
end

function M.put_record_params()
  return { StreamName = "bench", PartitionKey = "partition-key-0001", Data = M.bytes(100, 1) }
end

return M
