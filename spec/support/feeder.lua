-- feeder.lua - a producer process for the consumer specs: PutRecords with
-- partition keys k1..kK and, per key, the numbers 1, 2, 3, ... in the data,
-- one record (or one KPL aggregate of three) per key per request, each
-- request only after the previous one is acknowledged, so every key's
-- records enter the stream in order. Acknowledged records are appended to
-- the log as "key n" lines. Stops after `batches` requests or when the stop
-- file appears. A second run on the same log continues the numbers.
--   lua5.4 feeder.lua endpoint stream keys batches log [aggregate_every] [pause] [stopfile]
local kinesis = require "kinesis"
local peers = require "support.peers"
local cdata = require "support.cdata"

local endpoint, stream, keys, batches, logpath = arg[1], arg[2], tonumber(arg[3]), tonumber(arg[4]), arg[5]
local agg_every, pause, stopfile = tonumber(arg[6] or "0"), tonumber(arg[7] or "0"), arg[8]
local client = assert(kinesis.new { endpoint = endpoint, region = peers.region, credentials = peers.credentials })
local next_n = {}
for k = 1, keys do next_n[k] = 1 end
-- a second run on the same log goes on with each key's numbers
local old = io.open(logpath, "r")
if old then
  for key, n in old:read("a"):gmatch("k(%d+) (%d+)\n") do
    key, n = tonumber(key), tonumber(n)
    if next_n[key] and n >= next_n[key] then next_n[key] = n + 1 end
  end
  old:close()
end
local log = assert(io.open(logpath, "a"))

local function stopped()
  if not stopfile then return false end
  local f = io.open(stopfile, "r")
  if f then f:close() return true end
  return false
end

for b = 1, batches do
  if stopped() then break end
  local entries, meta = {}, {}
  for k = 1, keys do
    local key = "k" .. k
    local n = next_n[k]
    if agg_every > 0 and b % agg_every == 0 then
      local e = kinesis.aggregate {
        { PartitionKey = key, Data = cdata.payload(key, n) },
        { PartitionKey = key, Data = cdata.payload(key, n + 1) },
        { PartitionKey = key, Data = cdata.payload(key, n + 2) },
      }
      entries[#entries + 1] = { PartitionKey = e.PartitionKey, Data = e.Data, ExplicitHashKey = e.ExplicitHashKey }
      meta[#meta + 1] = { key = key, first = n, count = 3, k = k }
    else
      entries[#entries + 1] = { PartitionKey = key, Data = cdata.payload(key, n) }
      meta[#meta + 1] = { key = key, first = n, count = 1, k = k }
    end
  end
  -- resend what failed (throttled, resharding) before the next request
  local tries = 0
  while #entries > 0 do
    tries = tries + 1
    local out, err = client:put_records { StreamName = stream, Records = entries }
    local retry_e, retry_m = {}, {}
    if not out then
      io.stderr:write("feeder: ", tostring(err), "\n")
      retry_e, retry_m = entries, meta
    else
      for i, r in ipairs(out.Records) do
        if r.ErrorCode then
          retry_e[#retry_e + 1], retry_m[#retry_m + 1] = entries[i], meta[i]
        else
          local m = meta[i]
          for n = m.first, m.first + m.count - 1 do log:write(m.key, " ", n, "\n") end
          next_n[m.k] = m.first + m.count
        end
      end
      log:flush()
    end
    entries, meta = retry_e, retry_m
    if #entries > 0 then kinesis.sleep(math.min(1, 0.05 * tries)) end
    if tries > 200 then error("feeder: records keep failing") end
  end
  if pause > 0 then kinesis.sleep(pause) end
end
log:close()
