-- producer_reshard_spec.lua - aggregation across a SplitShard and a
-- MergeShards in the middle of a run (kinesis-local). Read back the way the
-- KCL reads (an aggregate holding a record outside its shard's range yields
-- nothing), every acknowledged record is where its outcome says; an
-- aggregate that landed on a shard not holding all its records (it was in
-- flight when the shard split) never carries an acknowledged record: the
-- producer sent those records again after refreshing its shard map.

local peers = require "support.peers"
local kinesis = require "kinesis"
local shards_mod = require "kinesis.shards"

describe("producer across resharding", function()
  local srv, client

  lazy_setup(function()
    srv = peers.start("kinesis-local", { env = { CREATE_STREAM_DURATION = "10ms", SPLIT_SHARD_DURATION = "10ms",
      MERGE_SHARDS_DURATION = "10ms", SHARD_LIMIT = "100" } })
    client = peers.client(srv)
  end)
  lazy_teardown(function()
    if client then client:close() end
    if srv then srv.stop() end
  end)

  local function open_shards(name)
    local list = {}
    for s, err in client:items("list_shards", { StreamName = name }) do
      assert(s, tostring(err))
      local r = s.SequenceNumberRange
      if type(r.EndingSequenceNumber) ~= "string" then list[#list + 1] = s end
    end
    table.sort(list, function(a, b)
      local x, y = a.HashKeyRange.StartingHashKey, b.HashKeyRange.StartingHashKey
      if #x ~= #y then return #x < #y end
      return x < y
    end)
    return list
  end

  local function active(name)
    assert(client:wait("stream_exists", { StreamName = name }, { delay = 0.05, max_attempts = 200 }))
    for _ = 1, 200 do
      local d = assert(client:describe_stream_summary { StreamName = name })
      if d.StreamDescriptionSummary.StreamStatus == "ACTIVE" then return end
      kinesis.sleep(0.05)
    end
    error("stream not ACTIVE")
  end

  it("splits and merges mid-run: no acknowledged record in an aggregate outside its shard", function()
    local name = "reshard"
    assert(client:create_stream { StreamName = name, ShardCount = 2 })
    active(name)
    local N = 0   -- records put: until the merge is done, then 1,500 more
    local outcomes, acked = {}, 0
    local p = client:producer { stream = name, linger = 0.02, rate_limit = 20,
      on_result = function(r)
        assert.is_nil(outcomes[r.record.user])
        outcomes[r.record.user] = r
        if r.ok then acked = acked + 1 end
      end }
    local split_done, merge_done = false, false
    kinesis.run(function()
      local writer = kinesis.spawn(function()
        local after = 0
        while after < 1500 do
          if merge_done then after = after + 1 end
          N = N + 1
          local i = N
          local data = string.pack(">I4", i) .. string.rep("r", math.random(0, 300))
          assert(p:put { PartitionKey = "pk-" .. math.random(1, 100000), Data = data, user = i })
          if i % 20 == 0 then kinesis.sleep(0.004) end
        end
        assert(p:flush())
      end)
      -- split the first shard once records flow, then merge two neighbours
      while acked < 1500 do kinesis.sleep(0.01) end
      local first = open_shards(name)[1]
      assert(client:split_shard { StreamName = name, ShardToSplit = first.ShardId,
                                  NewStartingHashKey = assert(shards_mod.split_point(first)) })
      active(name)
      split_done = true
      local at_split = acked
      while acked < at_split + 1500 do kinesis.sleep(0.01) end
      local open = open_shards(name)
      assert(client:merge_shards { StreamName = name, ShardToMerge = open[2].ShardId,
                                   AdjacentShardToMerge = open[3].ShardId })
      active(name)
      merge_done = true
      assert(writer:wait())
    end)
    assert.is_true(split_done and merge_done)
    local st = p:stats()
    assert.equal(N, st.acknowledged, "failed: " .. st.failed)
    assert.is_true(st.map_refreshes >= 2, "map refreshes " .. st.map_refreshes)
    -- the producer's map followed both changes: 2 -> 3 -> 2 open shards
    assert.equal(2, st.shards)

    -- every shard, closed ones included, read as the KCL reads it
    local at, bad_aggregates, bad_records, on_new = {}, 0, {}, 0
    local final = {}
    for s in client:items("list_shards", { StreamName = name }) do final[#final + 1] = s end
    assert.equal(2 + 2 + 1, #final)
    for _, shard in ipairs(final) do
      local it = assert(client:get_shard_iterator { StreamName = name, ShardId = shard.ShardId,
                                                    ShardIteratorType = "TRIM_HORIZON" }).ShardIterator
      while it do
        local out = assert(client:get_records { ShardIterator = it, Limit = 10000 })
        for _, r in ipairs(out.Records) do
          local users, err, dropped = kinesis.deaggregate(r, { shard = shard })
          assert(users, tostring(err))
          if dropped > 0 then
            bad_aggregates = bad_aggregates + 1
            for _, u in ipairs(assert(kinesis.deaggregate(r))) do bad_records[#bad_records + 1] = string.unpack(">I4", u.Data) end
          end
          for _, u in ipairs(users) do
            local id = string.unpack(">I4", u.Data)
            at[shard.ShardId .. "/" .. u.SequenceNumber .. "/" .. tostring(u.SubSequenceNumber)] = id
            if shard.ParentShardId then on_new = on_new + 1 end
          end
        end
        if #out.Records == 0 and (out.MillisBehindLatest or 0) == 0 then break end
        it = out.NextShardIterator
      end
    end
    -- records reached the shards the resharding made
    assert.is_true(on_new > 0)
    for i = 1, N do
      local r = outcomes[i]
      assert.is_true(r.ok, tostring(r.err))
      local pos = r.ShardId .. "/" .. r.SequenceNumber .. "/" .. tostring(r.SubSequenceNumber)
      assert.equal(i, at[pos], "record " .. i .. " is not readable where its outcome says (" .. pos .. ")")
    end
    -- an aggregate a reader drops was sent again: each of its records is
    -- acknowledged at a readable position (checked above), and the producer
    -- counted the re-send
    if bad_aggregates > 0 then assert.is_true(st.resent >= #bad_records, "resent " .. st.resent) end
    print(("\n[producer reshard] %d records; %d map refreshes; %d aggregates landed outside their records' "
      .. "shard and were re-sent (%d records)"):format(N, st.map_refreshes, bad_aggregates, st.resent))
  end)
end)
