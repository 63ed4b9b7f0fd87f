-- Shard maps and resharding helpers (kinesis.shards): building a map from
-- ListShards output, the errors for lists that do not tile the hash key
-- space, neighbours for MergeShards, split points for SplitShard and the
-- layout of a new stream (checked against kinesalite's captured ranges).
local cjson = require "cjson"
local shards = require "kinesis.shards"

local SHARED = os.getenv("SHARED") or "../shared"
local MAX = "340282366920938463463374607431768211455"
local HALF = "170141183460469231731687303715884105728" -- 2^127

local function read_json(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return cjson.decode(text)
end

local function listing(name)
  return read_json(SHARED .. "/vectors/shardmaps/" .. name .. ".json").list_shards_response.Shards
end

local function shard(id, s, e, closed)
  return {
    ShardId = id,
    HashKeyRange = { StartingHashKey = s, EndingHashKey = e },
    SequenceNumberRange = { StartingSequenceNumber = "1", EndingSequenceNumber = closed and "2" or nil },
  }
end

-- Decimal string + 1, digit by digit (independent of the C code).
local function inc(dec)
  local digits, i = { dec:byte(1, -1) }, #dec
  while i >= 1 and digits[i] == 57 do digits[i], i = 48, i - 1 end
  if i == 0 then return "1" .. string.char(table.unpack(digits)) end
  digits[i] = digits[i] + 1
  return string.char(table.unpack(digits))
end

-- A stream of 2 shards whose first one was split: the ListShards output
-- lists the closed parent and its two children.
local function after_split()
  return {
    shard("shardId-000000000000", "0", "170141183460469231731687303715884105727", true),
    shard("shardId-000000000001", HALF, MAX),
    shard("shardId-000000000002", "0", "85070591730234615865843651857942052863"),
    shard("shardId-000000000003", "85070591730234615865843651857942052864",
      "170141183460469231731687303715884105727"),
  }
end

describe("kinesis.shards", function()
  it("exports the contract other modules code against", function()
    for _, name in ipairs({ "hash_key", "shard_map", "split_point", "even_ranges", "u128_check" }) do
      assert.is_function(shards[name], name)
    end
  end)
end)

describe("shard_map", function()
  it("keeps open shards only by default, and returns the caller's tables", function()
    local list = after_split()
    local map = assert(shards.shard_map(list))
    assert.are.equal(3, map:count())
    assert.are.equal(3, #map)
    local ordered = map:shards()
    assert.are.same({ list[3], list[4], list[2] }, ordered)
    assert.are.equal(list[3], ordered[1]) -- the same table, not a copy
    assert.are.equal(list[3], map:lookup_hash("0"))
    assert.are.equal(list[4], map:lookup_hash("85070591730234615865843651857942052864"))
    assert.are.equal(list[2], map:lookup_hash(HALF))
    assert.is_nil(map:shard("shardId-000000000000"))
    assert.are.equal(list[2], map:shard("shardId-000000000001"))
    assert.matches("kinesis.shard_map (3 shards)", tostring(map), 1, true)
  end)

  it("treats a JSON null EndingSequenceNumber as open (kinesis-local)", function()
    local list = listing("kinesis-local-4")
    assert.are.equal(cjson.null, list[1].SequenceNumberRange.EndingSequenceNumber)
    local map = assert(shards.shard_map(list))
    assert.are.equal(4, map:count())
  end)

  it("with include_closed keeps closed shards, so parent and children overlap", function()
    local map, err = shards.shard_map(after_split(), { include_closed = true })
    assert.is_nil(map)
    assert.matches("overlap", err, 1, true)
    assert.matches("shardId-000000000000", err, 1, true)
    assert.matches("shardId-000000000002", err, 1, true)
  end)

  it("with include_closed maps a set of shards that tiles, closed or not", function()
    -- The shards open before the split (all closed now) still form a map.
    local list = { shard("shardId-000000000000", "0", HALF:gsub("8$", "7"), true),
                   shard("shardId-000000000001", HALF, MAX) }
    assert.is_nil((shards.shard_map(list)))
    local map = assert(shards.shard_map(list, { include_closed = true }))
    assert.are.equal(list[1], map:lookup_hash("0"))
  end)

  it("names the shards around a gap (e.g. a missing ListShards page)", function()
    local list = {
      shard("shardId-000000000000", "0", "99"),
      shard("shardId-000000000001", "200", MAX),
    }
    local map, err = shards.shard_map(list)
    assert.is_nil(map)
    assert.are.equal("gap: no shard covers hash keys 100..199 (between shardId-000000000000 and shardId-000000000001)", err.message)

    map, err = shards.shard_map({ shard("shardId-000000000007", "1", MAX) })
    assert.is_nil(map)
    assert.are.equal("gap: no shard covers hash keys 0..0 (before shardId-000000000007)", err.message)

    local four = listing("kinesalite-4")
    table.remove(four) -- the last page lost
    map, err = shards.shard_map(four)
    assert.is_nil(map)
    assert.are.equal("gap: no shard covers hash keys 255211775190703847597530955573826158592.." .. MAX ..
      " (after shardId-000000000002)", err.message)
  end)

  it("names the shards of an overlap", function()
    local map, err = shards.shard_map({
      shard("a", "0", "100"), shard("b", "100", "200"), shard("c", "201", MAX) })
    assert.is_nil(map)
    assert.are.equal("overlap: a and b both cover hash keys 100..100", err.message)
    assert.are.equal("overlap", err.code)
  end)

  it("rejects bad decimals, naming the shard and the field", function()
    for _, bad in ipairs({ "-1", "01", "340282366920938463463374607431768211456", "", " 5", "x" }) do
      local map, err = shards.shard_map({ shard("shardId-000000000004", "0", bad) })
      assert.is_nil(map)
      assert.matches("shardId-000000000004 has a bad EndingHashKey", err, 1, true)
    end
    local map, err = shards.shard_map({ shard("s", "00", MAX) })
    assert.is_nil(map)
    assert.are.equal('s has a bad StartingHashKey "00": leading zero', err.message)
  end)

  it("rejects a range whose start is above its end", function()
    local map, err = shards.shard_map({ shard("s1", "0", "9"), shard("s2", MAX, "10") })
    assert.is_nil(map)
    assert.are.equal("s2: StartingHashKey " .. MAX .. " is greater than EndingHashKey 10", err.message)
  end)

  it("rejects malformed shard tables with nil, err", function()
    local cases = {
      { { 5 }, "shard 1 is a number" },
      { { { HashKeyRange = { StartingHashKey = "0", EndingHashKey = MAX } } }, "shard 1 has no ShardId" },
      { { { ShardId = "s" } }, "s has no HashKeyRange table" },
      { { { ShardId = "s", HashKeyRange = { StartingHashKey = 0, EndingHashKey = MAX } } },
        "s has no HashKeyRange.StartingHashKey string" },
      { { shard("s", "0", MAX), shard("s", "0", MAX) }, "s appears twice" },
      { {}, "no open shards" },
      { { shard("s", "0", MAX, true) }, "no open shards" },
    }
    for _, c in ipairs(cases) do
      local map, err = shards.shard_map(c[1])
      assert.is_nil(map)
      assert.matches(c[2], err, 1, true)
    end
  end)

  it("raises on misuse", function()
    assert.has_error(function() shards.shard_map(nil) end)
    assert.has_error(function() shards.shard_map("x") end)
    assert.has_error(function() shards.shard_map({}, 5) end)
    local map = assert(shards.shard_map({ shard("s", "0", MAX) }))
    assert.has_error(function() map:lookup(5) end)
    assert.has_error(function() map:lookup() end)
  end)

  it("a one-shard stream owns every key", function()
    local s = shard("only", "0", MAX)
    local map = assert(shards.shard_map({ s }))
    for _, k in ipairs({ "0", "1", HALF, MAX }) do assert.are.equal(s, map:lookup_hash(k)) end
    assert.are.equal(s, map:lookup("anything"))
    assert.are.same({ nil, nil }, { map:adjacent(s) })
  end)

  it("looks up correctly in a large map (binary search over 10000 shards)", function()
    local list = {}
    for i, r in ipairs(shards.even_ranges(10000)) do
      list[i] = { ShardId = "shardId-" .. i, HashKeyRange = r }
    end
    -- Reverse order: the map sorts.
    local rev = {}
    for i = #list, 1, -1 do rev[#rev + 1] = list[i] end
    local map = assert(shards.shard_map(rev))
    for i = 1, #list do
      assert.are.equal(list[i], map:lookup_hash(list[i].HashKeyRange.StartingHashKey))
      assert.are.equal(list[i], map:lookup_hash(list[i].HashKeyRange.EndingHashKey))
    end
    local t0 = os.clock()
    for i = 1, 100000 do map:lookup("key" .. i) end
    assert.is_true(os.clock() - t0 < 2, "100000 lookups took more than 2 s")
  end)

  it("close() frees the map; using it afterwards raises", function()
    local map = assert(shards.shard_map({ shard("s", "0", MAX) }))
    map:close()
    map:close() -- idempotent
    assert.matches("closed", tostring(map), 1, true)
    assert.has_error(function() map:lookup("k") end, "attempt to use a closed shard map")
  end)

  it("survives garbage collection of many maps", function()
    local list = listing("kinesis-local-7")
    for _ = 1, 2000 do assert(shards.shard_map(list)) end
    collectgarbage()
    collectgarbage()
    assert.are.equal("shardId-000000000006", assert(shards.shard_map(list)):lookup_hash(MAX).ShardId)
  end)
end)

describe("map:adjacent", function()
  local list = listing("kinesis-local-7")
  local map = assert(shards.shard_map(list))

  it("gives the lower and upper neighbours (by ShardId or shard table)", function()
    local lower, upper = map:adjacent("shardId-000000000003")
    assert.are.equal("shardId-000000000002", lower.ShardId)
    assert.are.equal("shardId-000000000004", upper.ShardId)
    lower, upper = map:adjacent(list[4])
    assert.are.equal(list[3], lower)
    assert.are.equal(list[5], upper)
  end)

  it("has one neighbour at either end", function()
    local lower, upper = map:adjacent("shardId-000000000000")
    assert.is_nil(lower)
    assert.are.equal("shardId-000000000001", upper.ShardId)
    lower, upper = map:adjacent("shardId-000000000006")
    assert.are.equal("shardId-000000000005", lower.ShardId)
    assert.is_nil(upper)
  end)

  it("neighbours are contiguous: EndingHashKey + 1 == StartingHashKey", function()
    local ordered = map:shards()
    for i = 1, #ordered - 1 do
      local _, upper = map:adjacent(ordered[i])
      assert.are.equal(ordered[i + 1], upper)
      assert.are.equal(inc(ordered[i].HashKeyRange.EndingHashKey), upper.HashKeyRange.StartingHashKey)
    end
  end)

  it("returns nil, nil, err for a shard not in the map", function()
    local lower, upper, err = map:adjacent("shardId-000000000099")
    assert.is_nil(lower)
    assert.is_nil(upper)
    assert.are.equal("shardId-000000000099 is not in this shard map", err.message)
    assert.are.equal("shard_not_found", err.code)
    -- a closed shard, left out of a default map
    local m2 = assert(shards.shard_map(after_split()))
    lower, upper, err = m2:adjacent(after_split()[1])
    assert.is_nil(lower)
    assert.matches("shardId-000000000000 is not in this shard map", err, 1, true)
    assert.has_error(function() map:adjacent(42) end)
    assert.has_error(function() map:adjacent({}) end)
  end)
end)

describe("even_ranges", function()
  it("reproduces kinesalite's layout of 4 and 7 shards exactly", function()
    for _, name in ipairs({ "kinesalite-4", "kinesalite-7" }) do
      local want = listing(name)
      local got = shards.even_ranges(#want)
      assert.are.equal(#want, #got)
      for i, s in ipairs(want) do
        assert.are.same(s.HashKeyRange, got[i], name .. " shard " .. i)
      end
    end
  end)

  it("differs from kinesis-local's 4-shard layout, which ends each range lower", function()
    local got = shards.even_ranges(4)
    local kl = listing("kinesis-local-4")
    assert.are.equal("85070591730234615865843651857942052863", got[1].EndingHashKey)
    assert.are.equal("85070591730234615865843651857942052862", kl[1].HashKeyRange.EndingHashKey)
    -- ...but agrees for 7 shards, where 2^128 mod 7 != 0
    assert.are.same(listing("kinesis-local-7")[3].HashKeyRange, shards.even_ranges(7)[3])
  end)

  it("lays out 1, 2, 3 and 16 shards", function()
    assert.are.same({ { StartingHashKey = "0", EndingHashKey = MAX } }, shards.even_ranges(1))
    assert.are.same({ { StartingHashKey = "0", EndingHashKey = "170141183460469231731687303715884105727" },
                      { StartingHashKey = HALF, EndingHashKey = MAX } }, shards.even_ranges(2))
    local three = shards.even_ranges(3)
    assert.are.equal("113427455640312821154458202477256070485", three[2].StartingHashKey)
    assert.are.equal("226854911280625642308916404954512140970", three[3].StartingHashKey)
    local sixteen = shards.even_ranges(16)
    assert.are.equal("21267647932558653966460912964485513216", sixteen[2].StartingHashKey) -- 2^124
    assert.are.equal(MAX, sixteen[16].EndingHashKey)
  end)

  it("every layout up to 64 shards is a valid shard map", function()
    for n = 1, 64 do
      local list = {}
      for i, r in ipairs(shards.even_ranges(n)) do list[i] = { ShardId = tostring(i), HashKeyRange = r } end
      local map, err = shards.shard_map(list)
      assert.is_truthy(map, err)
      assert.are.equal(n, map:count())
    end
  end)

  it("gives nil, err for a count out of range and raises for a non-integer", function()
    for _, n in ipairs({ 0, -1, 2 ^ 31, math.huge }) do
      local r, err = shards.even_ranges(n)
      assert.is_nil(r)
      assert.matches("shard count", err, 1, true)
    end
    assert.has_error(function() shards.even_ranges(1.5) end)
    assert.has_error(function() shards.even_ranges("x") end)
    assert.has_error(function() shards.even_ranges(0 / 0) end)
  end)
end)

describe("split_point", function()
  it("halves the whole key space at 2^127", function()
    assert.are.equal(HALF, shards.split_point(shard("s", "0", MAX)))
    assert.are.equal(HALF, shards.split_point({ StartingHashKey = "0", EndingHashKey = MAX }))
  end)

  it("halves each of kinesalite's 4 shards and kinesis-local's 7", function()
    local want = {
      "42535295865117307932921825928971026432",   -- 2^125
      "127605887595351923798765477786913079296",  -- 3 * 2^125
      "212676479325586539664609129644855132160",
      "297747071055821155530452781502797185024",
    }
    for i, s in ipairs(listing("kinesalite-4")) do
      assert.are.equal(want[i], shards.split_point(s))
    end
    -- kinesis-local-7 shard 0: [0, 48611766702991209066196372490252601635],
    -- an even count of keys, split into two equal halves.
    local s0 = listing("kinesis-local-7")[1]
    assert.are.equal("24305883351495604533098186245126300818", shards.split_point(s0))
  end)

  it("yields children that replace the parent in a valid map", function()
    local list = listing("kinesis-local-4")
    local parent = list[2]
    local key = assert(shards.split_point(parent))
    -- the lower child ends one below the split key: subtract 1 by hand
    -- (the key does not end in 0 here).
    assert.are_not.equal("0", key:sub(-1))
    local below = key:sub(1, -2) .. tostring(tonumber(key:sub(-1)) - 1)
    assert.are.equal(key, inc(below))
    local children = {
      shard("lower", parent.HashKeyRange.StartingHashKey, below),
      shard("upper", key, parent.HashKeyRange.EndingHashKey),
    }
    local next_list = { list[1], children[1], children[2], list[3], list[4] }
    local map = assert(shards.shard_map(next_list))
    assert.are.equal(children[1], map:lookup_hash(below))
    assert.are.equal(children[2], map:lookup_hash(key))
    local lower, upper = map:adjacent("lower")
    assert.are.equal(list[1], lower)
    assert.are.equal(children[2], upper)
  end)

  it("meets kinesalite's SplitShard rule: StartingHashKey + 1 < key < EndingHashKey", function()
    assert.are.equal("2", shards.split_point(shard("s", "0", "3")))   -- 4 keys: 0 1 | 2 3
    assert.are.equal("2", shards.split_point(shard("s", "0", "4")))   -- 5 keys: 0 1 | 2 3 4
    assert.are.equal("7", shards.split_point(shard("s", "5", "8")))
    for _, r in ipairs({ { "0", "0" }, { "0", "1" }, { "0", "2" }, { MAX, MAX } }) do
      local key, err = shards.split_point(shard("tiny", r[1], r[2]))
      assert.is_nil(key)
      assert.matches("tiny: hash key range too narrow to split", err, 1, true)
    end
  end)

  it("gives nil, err for bad input and raises for a non-table", function()
    local key, err = shards.split_point(shard("s", "01", MAX))
    assert.is_nil(key)
    assert.are.equal('s: bad StartingHashKey "01": leading zero', err.message)
    key, err = shards.split_point(shard("s", "9", "5"))
    assert.is_nil(key)
    assert.matches("greater than EndingHashKey", err, 1, true)
    key, err = shards.split_point({ ShardId = "s" })
    assert.is_nil(key)
    assert.matches("decimal strings", err, 1, true)
    key, err = shards.split_point({ ShardId = "s", HashKeyRange = "x" })
    assert.is_nil(key)
    assert.matches("HashKeyRange is not a table", err, 1, true)
    assert.has_error(function() shards.split_point("shardId-0") end)
  end)
end)
