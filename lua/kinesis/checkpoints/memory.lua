-- kinesis.checkpoints.memory - checkpoints in a Lua table: for tests, for
-- consumers whose place need not survive the process, and as the reference
-- implementation of the store interface (see kinesis.checkpoints). One store
-- object may be handed to successive consumers to carry their place over.

local checkpoints = require "kinesis.checkpoints"

local copy, equal, check_set = checkpoints.copy, checkpoints.equal, checkpoints.check_set
local pairs, setmetatable = pairs, setmetatable

local Store = {}
Store.__index = Store
Store.__name = "kinesis.checkpoints.memory"

local M = {}

--- Creates a memory store. opts.checkpoints: an initial { [shard_id] = cp }.
function M.new(opts)
  opts = opts or {}
  local self = setmetatable({ kind = "memory", cps = {}, shards = {}, writes = 0 }, Store)
  for id, cp in pairs(opts.checkpoints or {}) do
    check_set(id, cp)
    self.cps[id] = copy(cp)
  end
  return self
end

function Store:open(info)
  self.info = info
  return true
end

function Store:get(shard_id)
  return copy(self.cps[shard_id])
end

function Store:set(shard_id, cp, expected)
  check_set(shard_id, cp)
  if not equal(self.cps[shard_id], expected) then
    return nil, checkpoints.conflict(shard_id)
  end
  self.cps[shard_id] = copy(cp)
  self.writes = self.writes + 1
  return true
end

function Store:list()
  local out = {}
  for id, cp in pairs(self.cps) do out[id] = copy(cp) end
  return out
end

-- one worker reads every shard: no leases
checkpoints.single_worker(Store)

return M
