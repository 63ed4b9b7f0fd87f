-- Binary safety end to end: data with NUL and 0xFF bytes, every byte value,
-- a 1 MiB record, and 256-character multi-byte partition keys are written to
-- kinesis-local and read back byte-exact.

local peers = require "support.peers"
local sleep = require("socket").sleep

describe("binary safety against kinesis-local", function()
  local srv, c
  local S = "binary-stream"

  lazy_setup(function()
    srv = peers.start("kinesis-local", { env = { CREATE_STREAM_DURATION = "50ms" } })
    c = peers.client(srv)
    assert(c:create_stream { StreamName = S, ShardCount = 1 })
    for _ = 1, 100 do
      local d = assert(c:describe_stream_summary { StreamName = S }).StreamDescriptionSummary
      if d.StreamStatus == "ACTIVE" then break end
      sleep(0.05)
    end
  end)
  lazy_teardown(function()
    if c then c:close() end
    if srv then srv.stop() end
  end)

  -- reads every record of the single shard from the sequence number `from`
  local function read_from(seq, n)
    local it = assert(c:get_shard_iterator { StreamName = S, ShardId = "shardId-000000000000",
      ShardIteratorType = "AT_SEQUENCE_NUMBER", StartingSequenceNumber = seq }).ShardIterator
    local got = {}
    for _ = 1, 20 do
      local out = assert(c:get_records { ShardIterator = it })
      for _, r in ipairs(out.Records) do got[#got + 1] = r end
      if #got >= n then break end
      it = out.NextShardIterator
    end
    return got
  end

  local all_bytes = {}
  for b = 0, 255 do all_bytes[#all_bytes + 1] = string.char(b) end
  all_bytes = table.concat(all_bytes)

  local function random_bytes(n, seed)
    math.randomseed(seed)
    local t = {}
    for i = 1, n do t[i] = string.char(math.random(0, 255)) end
    return table.concat(t)
  end

  it("round-trips NUL, 0xFF and all 256 byte values through PutRecord", function()
    local datas = { "\0", "\255", "\0\255\0", all_bytes, "\0" .. string.rep("\255", 1000) .. "\0" }
    local first
    for i, d in ipairs(datas) do
      local out = assert(c:put_record { StreamName = S, PartitionKey = "bin", Data = d })
      if i == 1 then first = out.SequenceNumber end
    end
    local got = read_from(first, #datas)
    assert.equal(#datas, #got)
    for i, d in ipairs(datas) do assert.equal(d, got[i].Data) end
  end)

  it("round-trips a 1 MiB record byte-exact", function()
    local key = "k"
    local big = random_bytes(1024 * 1024 - #key, 42)
    local out, err = c:put_record { StreamName = S, PartitionKey = key, Data = big }
    assert.is_nil(err)
    local got = read_from(out.SequenceNumber, 1)
    assert.equal(#big, #got[1].Data)
    assert.is_true(big == got[1].Data)
  end)

  it("round-trips 256-character multi-byte partition keys through PutRecords", function()
    local keys = { string.rep("é", 256), string.rep("中", 256), string.rep("😀", 128), -- kinesis-local counts UTF-16 units: 128 surrogate pairs
      string.rep("a", 255) .. "€" }
    local recs = {}
    for i, k in ipairs(keys) do recs[i] = { PartitionKey = k, Data = random_bytes(100 + i, i) } end
    local out = assert(c:put_records { StreamName = S, Records = recs })
    assert.equal(0, out.FailedRecordCount)
    local got = read_from(out.Records[1].SequenceNumber, #recs)
    for i, r in ipairs(recs) do
      assert.equal(r.PartitionKey, got[i].PartitionKey)
      assert.equal(r.Data, got[i].Data)
      assert.equal(out.Records[i].SequenceNumber, got[i].SequenceNumber)
    end
  end)

  it("round-trips random binary of many sizes", function()
    local recs = {}
    for i = 1, 50 do recs[i] = { PartitionKey = "p" .. i, Data = random_bytes(i * 37 % 3000, 100 + i) } end
    local out = assert(c:put_records { StreamName = S, Records = recs })
    local got = read_from(out.Records[1].SequenceNumber, #recs)
    assert.equal(#recs, #got)
    for i, r in ipairs(recs) do assert.equal(r.Data, got[i].Data) end
  end)
end)
