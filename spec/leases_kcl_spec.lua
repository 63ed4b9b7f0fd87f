-- A lease table a KCL 2.x worker left behind (its rows written here as the
-- KCL writes them: a checkpoint at a plain record (seq, 0), one inside an
-- aggregate (seq, 2), a split parent at SHARD_END with childShardIds, its
-- children at TRIM_HORIZON with parentShardId), resumed exactly by a consumer
-- on kinesis.checkpoints.dynamodb against kinesis-local and dynalite; and the
-- rows it writes back keep the KCL's names and types.

local peers = require "support.peers"
local kinesis = require "kinesis"

describe("a KCL-written lease table", function()
  local ksrv, dsrv, client, db
  local STREAM, TABLE = "kcl-interop", "kcl-interop-leases"

  lazy_setup(function()
    ksrv = peers.start("kinesis-local", { env = {
      CREATE_STREAM_DURATION = "10ms", SPLIT_SHARD_DURATION = "10ms", SHARD_LIMIT = "50" } })
    dsrv = peers.start("dynalite", { args = { "--createTableMs", "10" } })
    client = peers.client(ksrv)
    db = assert(kinesis.dynamodb.new { endpoint = dsrv.endpoint, region = peers.region, credentials = peers.credentials })
  end)
  lazy_teardown(function()
    if client then client:close() end
    if db then db:close() end
    if ksrv then ksrv.stop() end
    if dsrv then dsrv.stop() end
  end)

  local function shard_list()
    local out = {}
    for s in client:items("list_shards", { StreamName = STREAM }) do out[#out + 1] = assert(s) end
    return out
  end

  local function put(hash, data)
    return assert(client:put_record { StreamName = STREAM, PartitionKey = "k", ExplicitHashKey = hash, Data = data })
  end

  it("is resumed exactly, and written back in the KCL's format", function()
    assert(client:create_stream { StreamName = STREAM, ShardCount = 3 })
    assert(client:wait("stream_exists", { StreamName = STREAM }, { delay = 0.05, max_attempts = 200 }))
    local s = shard_list()
    local h0, h1, h2 = s[1].HashKeyRange.StartingHashKey, s[2].HashKeyRange.StartingHashKey,
      s[3].HashKeyRange.StartingHashKey
    -- shard 0: six plain records; the KCL checkpointed the third as (seq, 0)
    local seq0 = {}
    for i = 1, 6 do seq0[i] = put(h0, "plain-" .. i).SequenceNumber end
    -- shard 1: an aggregate of five, checkpointed at its sub-record 2, then two plain records
    local users = {}
    for i = 0, 4 do users[#users + 1] = { PartitionKey = "k", ExplicitHashKey = h1, Data = "agg-" .. i } end
    local agg = kinesis.aggregate(users)
    local agg_seq = put(h1, agg.Data).SequenceNumber
    put(h1, "after-agg-1")
    put(h1, "after-agg-2")
    -- shard 2: read to its end by the KCL, then split
    put(h2, "parent-old")
    local split_at = assert(kinesis.split_point(s[3]))
    assert(client:split_shard { StreamName = STREAM, ShardToSplit = s[3].ShardId, NewStartingHashKey = split_at })
    for _ = 1, 200 do
      if assert(client:describe_stream_summary { StreamName = STREAM }).StreamDescriptionSummary.StreamStatus == "ACTIVE" then break end
      kinesis.sleep(0.05)
    end
    local children = {}
    for _, x in ipairs(shard_list()) do
      if x.ParentShardId == s[3].ShardId then children[#children + 1] = x end
    end
    assert.equal(2, #children)
    put(children[1].HashKeyRange.StartingHashKey, "child-a")
    put(children[2].HashKeyRange.StartingHashKey, "child-b")

    -- the table as a KCL 2.x worker (now dead) left it
    assert(db:create_table { TableName = TABLE, BillingMode = "PAY_PER_REQUEST",
      KeySchema = { { AttributeName = "leaseKey", KeyType = "HASH" } },
      AttributeDefinitions = { { AttributeName = "leaseKey", AttributeType = "S" } } })
    local function row(key, fields)
      local item = { leaseKey = { S = key }, ownerSwitchesSinceCheckpoint = { N = "0" } }
      for k, v in pairs(fields) do item[k] = v end
      for _ = 1, 100 do
        local ok, err = db:put_item { TableName = TABLE, Item = item }
        if ok then return end
        assert.equal("ResourceNotFoundException", err.code)
        kinesis.sleep(0.05)
      end
    end
    local child_ids = { children[1].ShardId, children[2].ShardId }
    table.sort(child_ids)
    row(s[1].ShardId, { leaseOwner = { S = "kcl-host:7" }, leaseCounter = { N = "41" },
      checkpoint = { S = seq0[3] }, checkpointSubSequenceNumber = { N = "0" },
      startingHashKey = { S = s[1].HashKeyRange.StartingHashKey }, endingHashKey = { S = s[1].HashKeyRange.EndingHashKey } })
    row(s[2].ShardId, { leaseOwner = { S = "kcl-host:7" }, leaseCounter = { N = "17" },
      checkpoint = { S = agg_seq }, checkpointSubSequenceNumber = { N = "2" },
      ownerSwitchesSinceCheckpoint = { N = "3" },
      pendingCheckpoint = { S = agg_seq }, pendingCheckpointSubSequenceNumber = { N = "3" } })
    row(s[3].ShardId, { leaseOwner = { S = "kcl-host:7" }, leaseCounter = { N = "99" },
      checkpoint = { S = "SHARD_END" }, checkpointSubSequenceNumber = { N = "0" }, childShardIds = { SS = child_ids } })
    for _, c in ipairs(children) do
      row(c.ShardId, { leaseCounter = { N = "0" }, checkpoint = { S = "TRIM_HORIZON" },
        checkpointSubSequenceNumber = { N = "0" }, parentShardId = { SS = { s[3].ShardId } } })
    end

    local seen = {}
    local store = kinesis.checkpoints.dynamodb { table = TABLE, endpoint = dsrv.endpoint, failover_time = 1 }
    local consumer = client:consumer {
      stream = STREAM, application = "kcl-interop", worker_id = "lua-worker", store = store,
      idle_time_between_reads = 0.2, shard_sync_interval = 0.5, stop_after_idle = 3,
      handler = function(records)
        for _, r in ipairs(records) do seen[#seen + 1] = r.Data end
      end,
    }
    assert(consumer:run())
    table.sort(seen)
    assert.same({ "after-agg-1", "after-agg-2", "agg-3", "agg-4", "child-a", "child-b",
      "plain-4", "plain-5", "plain-6" }, seen)

    -- the rows it wrote back: the KCL's names and types, owner switches counted and reset
    local function item(key)
      return assert(db:get_item { TableName = TABLE, Key = { leaseKey = { S = key } }, ConsistentRead = true }).Item
    end
    local r0 = item(s[1].ShardId)
    assert.same({ S = seq0[6] }, r0.checkpoint)
    assert.equal("string", type(r0.checkpointSubSequenceNumber.N))
    assert.same({ N = "0" }, r0.ownerSwitchesSinceCheckpoint)
    assert.is_true(tonumber(r0.leaseCounter.N) > 41)
    assert.is_nil(r0.leaseOwner)   -- released on stop
    local r1 = item(s[2].ShardId)
    assert.is_nil(r1.pendingCheckpoint)
    assert.is_nil(r1.pendingCheckpointSubSequenceNumber)
    assert.equal("S", next(r1.checkpoint))
    for _, c in ipairs(children) do
      local rc = item(c.ShardId)
      assert.same({ s[3].ShardId }, rc.parentShardId.SS)
      assert.is_truthy(rc.checkpoint.S:match("^%d+$"))
    end
    -- the parent stays finished (never read again)
    local rp = db:get_item { TableName = TABLE, Key = { leaseKey = { S = s[3].ShardId } }, ConsistentRead = true }
    if rp.Item then assert.same({ S = "SHARD_END" }, rp.Item.checkpoint) end
  end)
end)
