-- kinesis.leases - the lease rules of the KCL-format lease table, without I/O:
-- rows <-> leases and checkpoints, expiry by the observer's own monotonic
-- clock, and which leases a worker takes or steals (balanced by count).
-- kinesis.checkpoints.dynamodb does the conditional writes these decide.

local checkpoints = require "kinesis.checkpoints"

local type, pairs, ipairs, tonumber, tostring, format = type, pairs, ipairs, tonumber, tostring, string.format
local ceil, min, max, huge, random = math.ceil, math.min, math.max, math.huge, math.random

local M = {}

-- The attribute names of the KCL 2.x lease table (single-stream mode).
M.KEY = "leaseKey"
M.ATTR = {
  owner = "leaseOwner", counter = "leaseCounter", switches = "ownerSwitchesSinceCheckpoint",
  checkpoint = "checkpoint", sub = "checkpointSubSequenceNumber",
  pending = "pendingCheckpoint", pending_sub = "pendingCheckpointSubSequenceNumber",
  parents = "parentShardId", children = "childShardIds",
  starting_hash = "startingHashKey", ending_hash = "endingHashKey", throughput = "throughputKBps",
}
local A = M.ATTR

-- A checkpoint of a whole record. The KCL's checkpoint is the pair
-- (sequence, sub-sequence) and everything at or below it is done; a record
-- that is not an aggregate is (sequence, 0). "The whole record, whatever it
-- holds" is the largest sub-sequence number, which a KCL worker also reads
-- as "every sub-record of this sequence number is done".
M.WHOLE_RECORD = "9223372036854775807"

local POSITIONS = checkpoints.POSITIONS

local function str(item, name)
  local a = item[name]
  return type(a) == "table" and a.S or nil
end

local function num(item, name)
  local a = item[name]
  return type(a) == "table" and a.N or nil
end

local function set(item, name)
  local a = item[name]
  if type(a) ~= "table" or type(a.SS) ~= "table" then return nil end
  local out = {}
  for i, v in ipairs(a.SS) do out[i] = v end
  table.sort(out)
  return out
end

--- The checkpoint a row holds: { sequence, sub_sequence } (see
-- kinesis.checkpoints), or nil when the row has none.
function M.cp_of_row(item)
  local seq = str(item, A.checkpoint)
  if not seq then return nil end
  local cp = { sequence = seq }
  if POSITIONS[seq] then
    if seq == "AT_TIMESTAMP" then cp.timestamp = tonumber(num(item, "checkpointTimestamp") or "0") end
    return cp
  end
  local sub = num(item, A.sub)
  if sub and sub ~= M.WHOLE_RECORD then
    -- (seq, k): the sub-records 0..k of seq are done; a plain record is (seq, 0)
    cp.sub_sequence = math.tointeger and math.tointeger(tonumber(sub)) or tonumber(sub)
  end
  return cp
end

--- The attribute values a checkpoint is written as: checkpoint (S) and
-- checkpointSubSequenceNumber (N), as the KCL writes them.
function M.row_of_cp(cp)
  local sub = "0"
  if not POSITIONS[cp.sequence] then
    sub = cp.sub_sequence and format("%d", cp.sub_sequence) or M.WHOLE_RECORD
  end
  local out = { [A.checkpoint] = { S = cp.sequence }, [A.sub] = { N = sub } }
  if cp.sequence == "AT_TIMESTAMP" and cp.timestamp then
    out.checkpointTimestamp = { N = format("%.3f", cp.timestamp) }
  end
  return out
end

--- A lease from a row: { key, owner, counter, cp, parents, children,
-- switches, pending, raw = item }; nil, message when the row is not a lease.
function M.from_row(item)
  local key = str(item, M.KEY)
  if not key then return nil, "a row without leaseKey (S)" end
  local counter = tonumber(num(item, A.counter) or "0")
  return {
    key = key, owner = str(item, A.owner), counter = counter, cp = M.cp_of_row(item),
    parents = set(item, A.parents), children = set(item, A.children),
    switches = tonumber(num(item, A.switches) or "0"),
    pending = str(item, A.pending),
  }
end

function M.finished(lease)
  return lease.cp ~= nil and lease.cp.sequence == "SHARD_END"
end

--- Whether `lease` is expired for an observer who last saw its counter
-- change at lease.seen_at (its own monotonic clock): no clocks are compared
-- across machines. A lease without owner is free.
function M.expired(lease, now, failover)
  if lease.owner == nil then return true end
  return now - (lease.seen_at or now) > failover
end

local function shuffle(t)
  for i = #t, 2, -1 do
    local j = random(i)
    t[i], t[j] = t[j], t[i]
  end
  return t
end

--- Decides what worker `me` takes: leases is a list of live leases
-- (finished ones left out), held the set of keys `me` holds now.
-- opts: failover, max_leases, max_steal. Returns
-- { target =, workers =, take = { lease... }, steal = { lease... } }.
-- The KCL's rules: target = ceil(leases / workers), workers being the owners
-- of unexpired leases plus me, capped by max_leases; expired and free leases
-- first (the ones unseen for 3 x failover before the others); steal only
-- when nothing expired is left, only from the most loaded worker, at most
-- max_steal at a time.
function M.plan(leases, me, held, now, opts)
  local failover = opts.failover
  local counts, expired, stale = {}, {}, {}
  local mine = 0
  for _ in pairs(held) do mine = mine + 1 end
  counts[me] = mine
  for _, l in ipairs(leases) do
    if not held[l.key] then
      if l.owner == me or M.expired(l, now, failover) then
        -- free, expired, or left by an earlier run under this worker id
        if l.owner ~= nil and l.owner ~= me and now - (l.seen_at or now) > 3 * failover then
          stale[#stale + 1] = l
        else
          expired[#expired + 1] = l
        end
      else
        counts[l.owner] = (counts[l.owner] or 0) + 1
      end
    end
  end
  local workers = 0
  for _ in pairs(counts) do workers = workers + 1 end
  local target = #leases == 0 and 0 or ceil(#leases / workers)
  target = min(target, opts.max_leases or huge)
  local need = target - mine
  local out = { target = target, workers = workers, take = {}, steal = {} }
  if need <= 0 then return out end
  shuffle(stale)
  shuffle(expired)
  for _, list in ipairs { stale, expired } do
    for _, l in ipairs(list) do
      if #out.take >= need then break end
      out.take[#out.take + 1] = l
    end
  end
  if #out.take > 0 or #stale + #expired > 0 then return out end
  -- nothing free: steal from the most loaded worker, if it has more than its share
  local victim, most = nil, -1
  for owner, n in pairs(counts) do
    if owner ~= me and (n > most or (n == most and tostring(owner) < tostring(victim))) then
      victim, most = owner, n
    end
  end
  if not victim then return out end
  if most > target or (most == target and need > 1) then
    local n = min(need, opts.max_steal or 1, max(1, most - target))
    local theirs = {}
    for _, l in ipairs(leases) do
      if l.owner == victim and not M.expired(l, now, failover) then theirs[#theirs + 1] = l end
    end
    shuffle(theirs)
    for i = 1, min(n, #theirs) do out.steal[i] = theirs[i] end
    out.victim = victim
  end
  return out
end

return M
