-- consumer_plan_spec.lua - the consumer's shard plan (which shards are read,
-- in which order, from where), the KCL's rules checked case by case without
-- a server: a child waits for each parent that is read until it shows
-- SHARD_END and starts at TRIM_HORIZON; a parent gone from the stream does
-- not block; with LATEST, closed shards not reached from a read parent are
-- not read and open ones start at LATEST.

local consumer = require "kinesis.consumer"

local function shard(id, parent, adjacent, closed)
  return { ShardId = id, ParentShardId = parent, AdjacentParentShardId = adjacent,
    HashKeyRange = { StartingHashKey = "0", EndingHashKey = "1" },
    SequenceNumberRange = { StartingSequenceNumber = "1", EndingSequenceNumber = closed and "9" or nil } }
end

local function plan(start, list, cps)
  local fake_client = { call = function() end }
  local c = consumer.new(fake_client, { stream = "s", handler = function() end, start = start,
    store = require("kinesis.checkpoints").memory() })
  local p = c:_plan(list, cps)
  local out = {}
  for id, e in pairs(p) do
    out[id] = { e.status, e.initial.sequence, #e.blocked_by > 0 and table.concat(e.blocked_by, ",") or nil }
  end
  return out
end

describe("consumer shard plan", function()
  -- 0 split into 1 and 2; 1 and 2 merged into 3
  local list = { shard("0", nil, nil, true), shard("1", "0", nil, true), shard("2", "0", nil, true),
    shard("3", "1", "2", false) }

  it("TRIM_HORIZON: roots first, every child after each parent's SHARD_END", function()
    assert.are.same({
      ["0"] = { "ready", "TRIM_HORIZON" },
      ["1"] = { "blocked", "TRIM_HORIZON", "0" },
      ["2"] = { "blocked", "TRIM_HORIZON", "0" },
      ["3"] = { "blocked", "TRIM_HORIZON", "1,2" },
    }, plan("TRIM_HORIZON", list, {}))
    assert.are.same({
      ["0"] = { "done", "TRIM_HORIZON" },
      ["1"] = { "done", "TRIM_HORIZON" },
      ["2"] = { "ready", "TRIM_HORIZON" },
      ["3"] = { "blocked", "TRIM_HORIZON", "2" },
    }, plan("TRIM_HORIZON", list, { ["0"] = { sequence = "SHARD_END" }, ["1"] = { sequence = "SHARD_END" },
      ["2"] = { sequence = "5" } }))
  end)

  it("a merge waits for both parents, then starts", function()
    local p = plan("TRIM_HORIZON", list, { ["0"] = { sequence = "SHARD_END" }, ["1"] = { sequence = "SHARD_END" },
      ["2"] = { sequence = "SHARD_END" } })
    assert.are.same({ "ready", "TRIM_HORIZON" }, p["3"])
  end)

  it("a parent no longer in the stream does not block, checkpointed or not", function()
    local trimmed = { shard("3", "1", "2", false) }
    assert.are.same({ ["3"] = { "ready", "TRIM_HORIZON" } }, plan("TRIM_HORIZON", trimmed, {}))
    -- read before (it has a checkpoint) but gone: the child starts at TRIM_HORIZON
    local p = plan("LATEST", trimmed, { ["1"] = { sequence = "7" } })
    assert.are.same({ "ready", "TRIM_HORIZON" }, p["3"])
  end)

  it("LATEST: closed shards without a read parent are not read; open ones start at LATEST", function()
    assert.are.same({
      ["0"] = { "skip", "LATEST" },
      ["1"] = { "skip", "LATEST" },
      ["2"] = { "skip", "LATEST" },
      ["3"] = { "ready", "LATEST" },
    }, plan("LATEST", list, {}))
    -- once a parent was read (checkpointed), its children follow from their start
    local p = plan("LATEST", list, { ["0"] = { sequence = "SHARD_END" }, ["1"] = { sequence = "4" } })
    assert.are.same({ "ready", "TRIM_HORIZON" }, p["2"])
    assert.are.same({ "blocked", "TRIM_HORIZON", "1,2" }, p["3"])
  end)

  it("AT_TIMESTAMP: roots at the timestamp, children from their start", function()
    local p = plan({ timestamp = 1700000000 }, list, {})
    assert.are.same({ "ready", "AT_TIMESTAMP" }, p["0"])
    assert.are.same({ "blocked", "TRIM_HORIZON", "0" }, p["1"])
  end)
end)
