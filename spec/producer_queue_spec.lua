-- producer_queue_spec.lua - the producer's record queue in C
-- (src/l_pqueue.c, core.producer_queue), driven directly: routing by the
-- MD5 of the key, the PutRecords bodies it writes (plain and KPL
-- aggregates, checked against kinesis.kpl), answers read and settled, and
-- records leaving C as tables (failed, abandoned, drained, expired) and
-- coming back with push. No server: the queue does no I/O.
local core = require "kinesis.core"
local cjson = require "cjson"
local shards = require "kinesis.shards"
local kpl = require "kinesis.kpl"

local unpack = table.unpack or unpack
local MAX = "340282366920938463463374607431768211455"
local HEAD = '{"StreamName":"s \\"x\\"","Records":['
local BIG = 1e15 -- a limit not meant to bind
local AGG, COUNT = 51200, 1000

local function b64decode(s) return assert(core.b64decode(s)) end

local function shard(id, lo, hi)
  return { ShardId = id, HashKeyRange = { StartingHashKey = lo, EndingHashKey = hi },
           SequenceNumberRange = { StartingSequenceNumber = "1" } }
end

local function sid(n) return string.format("shardId-%012d", n) end

-- 4 shards of even ranges, listed out of hash key order: the queue
-- indexes set_shards hands out are not the list's positions
local function even4()
  local r = shards.even_ranges(4)
  local list = {}
  for i = 1, 4 do list[i] = shard(sid(i - 1), r[i].StartingHashKey, r[i].EndingHashKey) end
  return { list[3], list[1], list[4], list[2] }
end

-- 4 uneven shards, hand-written: [0, 10^37), [10^37, 10^38),
-- [10^38, 3*10^38), [3*10^38, 2^128)
local function uneven4()
  local z, n = string.rep("0", 37), string.rep("9", 37)
  return {
    shard(sid(13), "3" .. z .. "0", MAX),
    shard(sid(10), "0", n),
    shard(sid(11), "1" .. z, n .. "9"),
    shard(sid(12), "1" .. z .. "0", "2" .. n .. "9"),
  }
end

-- decimal a <= b, for strings without leading zeros (independent of C)
local function dec_le(a, b)
  if #a ~= #b then return #a < #b end
  return a <= b
end

-- decimal d - 1 (d > 0), digit by digit
local function dec1(d)
  local digits, i = { d:byte(1, -1) }, #d
  while digits[i] == 48 do digits[i], i = 57, i - 1 end
  digits[i] = digits[i] - 1
  return (string.char(unpack(digits)):gsub("^0+(%d)", "%1"))
end

local function queue(list)
  local q = core.producer_queue()
  q:configure(BIG, BIG, BIG, BIG, true)
  q:set_driver(true)
  local map = assert(shards.shard_map(list or even4()))
  local ci = q:set_shards(map, {})
  return q, map, ci
end

-- put with the limits given (none binding by default)
local function put(q, rec, now, max_n, max_b, linger)
  q:configure(BIG, max_n or BIG, max_b or BIG, linger or BIG, true)
  return q:put(rec, now or 0)
end

-- n distinct keys ("<prefix><i>") that the map routes to shard `id`
local function keys_on(map, id, n, prefix)
  local out, i = {}, 0
  while #out < n do
    i = i + 1
    local k = (prefix or "k") .. i
    if map:lookup(k).ShardId == id then out[#out + 1] = k end
  end
  return out
end

local function size_of(r) return #r.Data + #r.PartitionKey end

-- take with only the limits given binding (plain entries by default)
local function take(q, h, ci, id, o)
  o = o or {}
  return q:take(h, ci[id], id, o.max_entries or 500, o.max_bytes or BIG, o.rtok or BIG, o.btok or BIG,
    o.agg_max or 0, o.agg_count or COUNT, o.ordered)
end

-- A PutRecords answer: per entry { sid, seq } (stored) or { code, msg }
-- (failed), or a raw JSON object as a string.
local function answer(items)
  local recs, failed = {}, 0
  for i, it in ipairs(items) do
    if type(it) == "string" then
      recs[i] = it
    elseif it.code then
      failed = failed + 1
      recs[i] = string.format('{"ErrorCode":"%s","ErrorMessage":"%s"}', it.code, it.msg or "")
    else
      recs[i] = string.format('{"SequenceNumber":"%s","ShardId":"%s"}', it.seq, it.sid)
    end
  end
  return '{"FailedRecordCount":' .. failed .. ',"Records":[' .. table.concat(recs, ",") .. ']}'
end

-- take's entries and records
local function counts(ne, _, nrec) return { ne, nrec } end

-- q:settle, its `acknowledged` array (5 slots a record: the caller's
-- table, ShardId, SequenceNumber, SubSequenceNumber or false, attempts)
-- read back as one table a record; ids asked for whenever results are,
-- unless told
local function settle(q, h, ans, nlua, want, want_ids)
  if want_ids == nil then want_ids = want end
  local n, bytes, mem, answers, failed, acks, ids = q:settle(h, ans, nlua, want, want_ids)
  local results
  if want then
    results = {}
    for i = 0, n - 1 do
      local b = 5 * i
      results[i + 1] = { record = acks[b + 1], ShardId = acks[b + 2], SequenceNumber = acks[b + 3],
                         SubSequenceNumber = acks[b + 4], attempts = acks[b + 5] }
    end
    assert.is_nil(acks[5 * n + 1], "nothing after the last acknowledged record")
  else
    assert.is_nil(acks)
  end
  if want_ids then assert.equal(n, #ids) else assert.is_nil(ids) end
  return results, n, bytes, mem, answers, failed, ids
end

local function body_records(q, h, entries, n)
  local t = cjson.decode(q:body(h, HEAD, entries or {}, n or 0))
  assert.equal('s "x"', t.StreamName)
  return t.Records
end

local function raises(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.truthy(tostring(err):find(pattern, 1, true), tostring(err))
end

describe("producer_queue:body", function()
  local function check(entries)
    local q = core.producer_queue()
    local h = q:request()
    local body = q:body(h, HEAD, entries, #entries)
    local t = cjson.decode(body)
    assert.equal('s "x"', t.StreamName)
    assert.equal(#entries, #t.Records)
    for i, e in ipairs(entries) do
      local got = t.Records[i]
      assert.equal(e.Data, b64decode(got.Data), "Data of entry " .. i)
      assert.equal(e.PartitionKey, got.PartitionKey, "PartitionKey of entry " .. i)
      assert.equal(e.ExplicitHashKey, got.ExplicitHashKey, "ExplicitHashKey of entry " .. i)
    end
    -- a JSON string holds no raw control character: keys were escaped
    assert.is_nil(body:find("[%z\1-\31\127]"))
    q:abandon(h)
    q:close()
    return body
  end

  it("writes every entry: binary data of 0-5 bytes, keys that need escaping, hash keys", function()
    local entries = {}
    local keys = { "plain", 'q"uote', "back\\slash", "new\nline\t", "ctl\1\31", "sl/ash", "del\127",
                   "caf\195\169", "\240\159\152\128 emoji" }
    local nehk = 0
    for i = 1, 60 do
      local data = {}
      for j = 1, i % 6 do data[j] = string.char((i * 37 + j * 11) % 256) end
      entries[i] = { PartitionKey = keys[i % #keys + 1], Data = table.concat(data),
                     ExplicitHashKey = i % 4 == 0 and tostring(i * 1000003) or nil }
      if entries[i].ExplicitHashKey then nehk = nehk + 1 end
    end
    local body = check(entries)
    local _, seen = body:gsub('"ExplicitHashKey"', "")
    assert.equal(nehk, seen)
  end)

  it("writes the exact bytes: padded base64, escaped keys, UTF-8 keys as they are", function()
    local entries = {
      { PartitionKey = "k", Data = "abc" }, { PartitionKey = "\226\130\172", Data = "" },
      { PartitionKey = 'q"b\\s/', Data = "ab" }, { PartitionKey = "\8\9\10\12\13", Data = "a" },
      { PartitionKey = "c\1\31\127", Data = "\0\255\254", ExplicitHashKey = "42" },
      { PartitionKey = "caf\195\169\240\159\152\128", Data = "abcd" },
    }
    assert.equal(HEAD .. '{"Data":"YWJj","PartitionKey":"k"},{"Data":"","PartitionKey":"\226\130\172"},'
      .. '{"Data":"YWI=","PartitionKey":"q\\"b\\\\s\\/"},{"Data":"YQ==","PartitionKey":"\\b\\t\\n\\f\\r"},'
      .. '{"Data":"AP/+","PartitionKey":"c\\u0001\\u001f\\u007f","ExplicitHashKey":"42"},'
      .. '{"Data":"YWJjZA==","PartitionKey":"caf\195\169\240\159\152\128"}]}', check(entries))
  end)

  it("reuses its buffer: a short body after a long one holds nothing of the first", function()
    local q = core.producer_queue()
    local h = q:request()
    local big = {}
    for i = 1, 500 do big[i] = { PartitionKey = "key-" .. i, Data = string.rep("x", 1000) } end
    assert.is_true(#q:body(h, HEAD, big, 500) > 500000)
    assert.equal(HEAD .. '{"Data":"Yg==","PartitionKey":"a"}]}',
      q:body(h, HEAD, { { PartitionKey = "a", Data = "b" } }, 1))
    q:abandon(h)
    q:close()
  end)

  it("writes only the first n entries, and an empty list as []", function()
    local q = core.producer_queue()
    local h = q:request()
    local list = { { PartitionKey = "a", Data = "1" }, { PartitionKey = "b", Data = "2" } }
    assert.equal(HEAD .. '{"Data":"MQ==","PartitionKey":"a"}]}', q:body(h, HEAD, list, 1))
    assert.equal(HEAD .. "]}", q:body(h, HEAD, list, 0))
    q:abandon(h)
    q:close()
  end)

  it("raises on an entry without the fields the producer always sets, and after close", function()
    local q = core.producer_queue()
    local h = q:request()
    assert.has_error(function() q:body(h, HEAD, { { Data = "x" } }, 1) end,
      "producer queue: record table without a PartitionKey string")
    assert.has_error(function() q:body(h, HEAD, { { PartitionKey = "x" } }, 1) end,
      "producer queue: record table without a Data string")
    assert.has_error(function() q:body(h, HEAD, { { PartitionKey = "x", Data = "y", ExplicitHashKey = 1 } }, 1) end,
      "producer queue: record table without a ExplicitHashKey string")
    assert.has_error(function() q:body(h, HEAD, { 7 }, 1) end, "producer queue: entry 1 is not a table")
    -- still usable after raising
    assert.equal(HEAD .. '{"Data":"eQ==","PartitionKey":"x"}]}', q:body(h, HEAD, { { PartitionKey = "x", Data = "y" } }, 1))
    q:abandon(h)
    raises("no such request", q.body, q, h, HEAD, {}, 0)
    q:close()
    q:close()
    assert.has_error(function() q:body(h, HEAD, {}, 0) end, "producer queue is closed")
    assert.has_error(function() q:request() end, "producer queue is closed")
  end)
end)

describe("producer_queue:put", function()
  local function routes(list)
    math.randomseed(7)
    local q, map, ci = queue(list)
    local want = {}
    for i = 1, 4000 do
      local k = "r" .. math.random(1, 1e9) .. "-" .. i
      local sh = map:lookup(k)
      -- the range holds MD5(key), checked apart from the map's search
      local hk = core.hash_key(k)
      assert.is_true(dec_le(sh.HashKeyRange.StartingHashKey, hk) and dec_le(hk, sh.HashKeyRange.EndingHashKey))
      want[sh.ShardId] = (want[sh.ShardId] or 0) + 1
      assert.equal(1, put(q, { PartitionKey = k, Data = "v" .. i }))
    end
    local n = 0
    for _, sh in ipairs(list) do
      local i = ci[sh.ShardId]
      assert.is_number(i)
      assert.equal(want[sh.ShardId] or 0, q:queued(i), sh.ShardId)
      assert.is_true((want[sh.ShardId] or 0) > 50, "every shard gets some keys")
      -- each queue holds its shard's records, in put order
      local last = 0
      for _, r in ipairs(q:drain(i)) do
        assert.equal(sh.ShardId, map:lookup(r.PartitionKey).ShardId)
        assert.is_true(r.id > last)
        last = r.id
        n = n + 1
      end
    end
    assert.equal(4000, n)
    q:close()
  end

  it("queues each record on the shard whose range holds MD5(key): even ranges", function()
    routes(even4())
  end)

  it("queues each record on the shard whose range holds MD5(key): uneven hand-written ranges", function()
    routes(uneven4())
  end)

  it("returns nil without a map, and for a key or size the service refuses", function()
    local bare = core.producer_queue()
    assert.is_nil(put(bare, { PartitionKey = "k", Data = "d" }))
    bare:set_shards(assert(shards.shard_map(even4())), {})
    bare:set_driver(true)
    bare:configure(BIG, BIG, BIG, BIG, false)
    assert.is_nil(bare:put({ PartitionKey = "k", Data = "d" }, 0), "not accepting")
    assert.equal(0, (bare:fresh()))
    assert.equal(1, put(bare, { PartitionKey = "k", Data = "d" }))
    bare:close()
    local q = queue()
    local function refused(pk, data)
      assert.is_nil(put(q, { PartitionKey = pk, Data = data or "d" }), pk:sub(1, 20))
    end
    local function accepted(pk, data)
      assert.equal(1, put(q, { PartitionKey = pk, Data = data or "d" }), pk:sub(1, 20))
    end
    refused("")
    refused(string.rep("a", 257))
    refused(string.rep("\226\130\172", 257))
    refused("\255")
    refused("a\192\128")        -- overlong
    refused("\237\160\128")     -- a surrogate
    refused("a\226\130")        -- truncated
    refused("\244\144\128\128") -- past U+10FFFF
    refused("k", string.rep("x", 1048576))
    -- not the common case: the caller's checked path handles these
    assert.is_nil(put(q, { PartitionKey = "k", Data = "d", ExplicitHashKey = "1" }))
    assert.is_nil(put(q, { PartitionKey = 7, Data = "d" }))
    assert.is_nil(put(q, { PartitionKey = "k", Data = 7 }))
    assert.is_nil(put(q, { PartitionKey = "k" }))
    assert.is_nil(q:put("k", 0))
    assert.equal(0, (q:fresh()))
    accepted(string.rep("a", 256))
    accepted(string.rep("\226\130\172", 256))      -- 768 bytes, 256 characters
    accepted(string.rep("\240\159\152\128", 256))  -- 1024 bytes
    accepted("k", string.rep("x", 1048575))        -- exactly 1 MiB with its key
    local n, b = q:fresh()
    assert.equal(4, n)
    assert.equal(257 + 769 + 1025 + 1048576, b)
    q:close()
  end)

  it("queues only from a plain script's thread or with a sender running", function()
    local q, map, ci = queue()
    local rec = { PartitionKey = "k", Data = "d" }
    q:set_driver(false)
    assert.is_nil(put(q, rec))
    q:set_plain()
    assert.equal(1, put(q, rec))
    -- another thread (a task) is not the plain script's
    local co = coroutine.create(function() return put(q, rec) end)
    local ok, st = coroutine.resume(co)
    assert.is_true(ok)
    assert.is_nil(st)
    q:set_driver(true)
    co = coroutine.create(function() return put(q, rec) end)
    ok, st = coroutine.resume(co)
    assert.same({ true, 1 }, { ok, st })
    assert.equal(2, q:queued(ci[map:lookup("k").ShardId]))
    q:close()
  end)

  it("stamps a record with the monotonic clock unless told the time", function()
    local q, map, ci = queue()
    local before = core.monotime()
    assert.equal(1, q:put({ PartitionKey = "k", Data = "d" }))
    local after = core.monotime()
    local t = q:drain(ci[map:lookup("k").ShardId])[1].t
    assert.is_true(t >= before and t <= after, t .. " not in " .. before .. ".." .. after)
    q:close()
  end)

  it("returns 3 once a retry's backoff is over, when no request is due", function()
    local q = queue()
    q:set_next_retry(10)
    assert.equal(1, put(q, { PartitionKey = "a", Data = "d" }, 9.5))
    assert.equal(3, put(q, { PartitionKey = "b", Data = "d" }, 10))
    assert.equal(2, put(q, { PartitionKey = "c", Data = "d" }, 10, 3))
    q:set_next_retry(math.huge)
    assert.equal(1, put(q, { PartitionKey = "d", Data = "d" }, 11))
    q:close()
  end)

  it("counts what it holds: put, settled, and bounded by max_buffered", function()
    local q, map, ci = queue()
    local A = sid(1)
    local keys = keys_on(map, A, 4)
    local recs = {}
    for i = 1, 3 do recs[i] = { PartitionKey = keys[i], Data = string.rep("d", 10 * i) } end
    local held = size_of(recs[1]) + size_of(recs[2]) + size_of(recs[3])
    q:configure(held, BIG, BIG, BIG, true)
    for i = 1, 3 do assert.equal(1, q:put(recs[i], i)) end
    -- one byte over the bound: nil, nothing counted
    assert.is_nil(q:put({ PartitionKey = keys[4], Data = "" }, 4))
    assert.same({ 3, held, 3, held, held }, { q:counts() })
    assert.same({ 3, held }, { q:outstanding() })
    local h = q:request()
    take(q, h, ci, A)
    local ans = answer { { sid = A, seq = "1" }, { code = "InternalFailure", msg = "x" }, { sid = A, seq = "3" } }
    q:parse(h, ans, 3)
    local _, n, bytes, mem, _, failed = settle(q, h, ans, 0, false)
    assert.same({ 2, size_of(recs[1]) + size_of(recs[3]) }, { n, bytes })
    assert.equal(bytes, mem)
    -- the failed record is still pending, and held
    assert.same({ 1, size_of(recs[2]) }, { q:outstanding() })
    assert.same({ 3, held, 1, size_of(recs[2]), held }, { q:counts() })
    -- room again under max_buffered
    assert.equal(1, q:put({ PartitionKey = keys[4], Data = "" }, 5))
    -- what the caller settles itself, it accounts for
    q:account(0, 0, -1, -failed[1].size)
    assert.same({ 1, #keys[4] }, { q:outstanding() })
    assert.same({ 4, held + #keys[4], 1, #keys[4], held }, { q:counts() })
    q:close()
  end)

  it("copies key and data: the caller may change its table after put", function()
    local q, map, ci = queue()
    local rec = { PartitionKey = "same", Data = "before" }
    put(q, rec)
    rec.PartitionKey, rec.Data = "other", "after"
    local got = q:drain(ci[map:lookup("same").ShardId])
    assert.equal(1, #got)
    assert.equal("same", got[1].PartitionKey)
    assert.equal("before", got[1].Data)
    assert.equal(rec, got[1].record)
    q:close()
  end)

  it("returns 2 once max_n records or max_b bytes are fresh or the oldest is past linger", function()
    local q = queue()
    local r = function(i) return { PartitionKey = "kk" .. i, Data = "12345678" } end -- 11 bytes
    assert.equal(1, put(q, r(1), 0, 3))
    assert.equal(1, put(q, r(2), 0, 3))
    assert.equal(2, put(q, r(3), 0, 3))
    assert.equal(2, put(q, r(4), 0, 3))
    q:close()

    q = queue()
    assert.equal(1, put(q, r(1), 0, BIG, 23))
    assert.equal(1, put(q, r(2), 0, BIG, 23))
    assert.equal(2, put(q, r(3), 0, BIG, 23)) -- 33 bytes
    q:close()

    local map, ci
    q, map, ci = queue()
    assert.equal(1, put(q, r(1), 100, BIG, BIG, 0.5))
    assert.equal(1, put(q, r(2), 100.25, BIG, BIG, 0.5))
    assert.equal(2, put(q, r(3), 100.5, BIG, BIG, 0.5))
    -- once everything left, the next put starts a new linger
    for _, sh in ipairs(map:shards()) do q:drain(ci[sh.ShardId]) end
    assert.equal(1, put(q, r(4), 200, BIG, BIG, 0.5))
    assert.equal(1, put(q, r(5), 200.4, BIG, BIG, 0.5))
    q:close()
  end)

  it("fresh() gives the count, bytes and oldest put time; new_id and last_id number records", function()
    local q, map, ci = queue()
    assert.same({ 0, 0 }, { q:fresh() })
    assert.is_nil(select(3, q:fresh()))
    assert.equal(0, q:last_id())
    local ka = keys_on(map, sid(0), 1, "a")[1]
    local kb = keys_on(map, sid(2), 1, "b")[1]
    put(q, { PartitionKey = ka, Data = "xyz" }, 5.5)
    assert.equal(1, q:last_id())
    assert.equal(2, q:new_id())
    assert.equal(2, q:last_id())
    put(q, { PartitionKey = kb, Data = "12345" }, 7.25)
    assert.equal(3, q:last_id())
    assert.same({ 2, #ka + 3 + #kb + 5, 5.5 }, { q:fresh() })
    -- the oldest left: the other shard's record
    local got = q:drain(ci[sid(0)])
    assert.equal(1, got[1].id)
    assert.same({ 1, #kb + 5, 7.25 }, { q:fresh() })
    assert.equal(3, q:drain(ci[sid(2)])[1].id)
    assert.same({ 0, 0 }, { q:fresh() })
    q:close()
  end)
end)

describe("producer_queue:take, body, parse, settle (not aggregated)", function()
  it("takes one shard's records oldest first within max_entries, max_bytes and the tokens", function()
    local q, map, ci = queue()
    local id = sid(1)
    local keys = keys_on(map, id, 12)
    local recs = {}
    for i = 1, 12 do
      recs[i] = { PartitionKey = keys[i], Data = string.rep("d", i * 10) }
      put(q, recs[i], i)
    end
    put(q, { PartitionKey = keys_on(map, sid(3), 1)[1], Data = "elsewhere" }, 0)
    local h = q:request()
    local ne, nb, nrec, naggs, nagg_recs, oot = take(q, h, ci, id, { max_entries = 4 })
    assert.same({ 4, size_of(recs[1]) + size_of(recs[2]) + size_of(recs[3]) + size_of(recs[4]), 4, 0, 0, false },
      { ne, nb, nrec, naggs, nagg_recs, oot })
    assert.equal(8, q:queued(ci[id]))
    assert.same({ 4, 4 }, { q:size(h) })
    -- bytes: records 5 and 6 fit, 7 does not
    local lim = size_of(recs[5]) + size_of(recs[6]) + size_of(recs[7]) - 1
    ne, nb, nrec, naggs, nagg_recs, oot = take(q, h, ci, id, { max_bytes = lim })
    assert.same({ 2, size_of(recs[5]) + size_of(recs[6]), 2, 0, 0, false }, { ne, nb, nrec, naggs, nagg_recs, oot })
    -- fresh: the shard's remaining head (record 7) and the other shard's
    assert.same({ 7, (function()
      local s = 9 + #keys_on(map, sid(3), 1)[1]
      for i = 7, 12 do s = s + size_of(recs[i]) end
      return s
    end)(), 0 }, { q:fresh() })
    local got = body_records(q, h)
    assert.equal(6, #got)
    for i = 1, 6 do
      assert.equal(recs[i].PartitionKey, got[i].PartitionKey)
      assert.equal(recs[i].Data, b64decode(got[i].Data))
      assert.is_nil(got[i].ExplicitHashKey)
    end
    local entries, takes = q:abandon(h)
    assert.equal(6, #entries)
    assert.same({ 1, 1, 1, 1, 2, 2 }, takes)

    -- tokens: a record token each, bytes while some are left
    h = q:request()
    ne, nb, nrec, naggs, nagg_recs, oot = take(q, h, ci, id, { rtok = 2 })
    assert.same({ 2, size_of(recs[7]) + size_of(recs[8]), 2, true }, { ne, nb, nrec, oot })
    ne, nb, nrec, naggs, nagg_recs, oot = take(q, h, ci, id, { btok = size_of(recs[9]) + 1 })
    assert.same({ 2, size_of(recs[9]) + size_of(recs[10]), 2, true }, { ne, nb, nrec, oot })
    ne, nb, nrec, naggs, nagg_recs, oot = take(q, h, ci, id, { btok = 0 })
    assert.same({ 0, 0, 0, true }, { ne, nb, nrec, oot })
    -- an emptied queue is not out of tokens
    ne, nb, nrec, naggs, nagg_recs, oot = take(q, h, ci, id)
    assert.same({ 2, 2, false }, { ne, nrec, oot })
    ne, nb, nrec, naggs, nagg_recs, oot = take(q, h, ci, id)
    assert.same({ 0, 0, false }, { ne, nrec, oot })
    entries, takes = q:abandon(h)
    assert.same({ 1, 1, 2, 2, 4, 4 }, takes)
    for i = 1, 6 do assert.equal(recs[6 + i], entries[i].record) end
    q:close()
  end)

  it("writes Lua entries first, then the taken records; settles each as its answer says", function()
    local q, map, ci = queue()
    local A, B = sid(0), sid(3)
    local ka, kb = keys_on(map, A, 3, "a"), keys_on(map, B, 2, "b")
    local ra, rb, ida, idb = {}, {}, {}, {}
    for i = 1, 3 do
      ra[i] = { PartitionKey = ka[i], Data = "A-data-" .. i, extra = { i } }
      put(q, ra[i], 10 + i)
      ida[i] = q:last_id()
    end
    for i = 1, 2 do
      rb[i] = { PartitionKey = kb[i], Data = "B-data-" .. i }
      put(q, rb[i], 20 + i)
      idb[i] = q:last_id()
    end
    local retries = { { PartitionKey = "retry-1", Data = "r1" },
                      { PartitionKey = "retry-2", Data = "r2", ExplicitHashKey = "42" } }
    local h = q:request()
    assert.equal(3, (take(q, h, ci, A)))
    assert.equal(2, (take(q, h, ci, B)))
    local got = body_records(q, h, retries, 2)
    assert.equal(7, #got)
    local want = { retries[1], retries[2], ra[1], ra[2], ra[3], rb[1], rb[2] }
    for i, w in ipairs(want) do
      assert.equal(w.PartitionKey, got[i].PartitionKey, "entry " .. i)
      assert.equal(w.Data, b64decode(got[i].Data), "entry " .. i)
      assert.equal(w.ExplicitHashKey, got[i].ExplicitHashKey, "entry " .. i)
    end

    local ans = answer {
      { sid = "shardId-000000000009", seq = "901" },
      { code = "InternalFailure", msg = "boom" },
      { sid = A, seq = "1001" },
      '{"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate \\"exceeded\\" \\u00e9\\ud83d\\ude00 \\/"}',
      { sid = A, seq = "1003" },
      { sid = A, seq = "1004" }, -- stored, but on another shard than it was taken for
      { sid = B, seq = "2002" },
    }
    assert.equal(7, q:parse(h, ans, 7))
    local results, nacked, abytes, amem, answers, failed, ids = settle(q, h, ans, 2, true)
    assert.equal(3, nacked)
    local sz = size_of(ra[1]) + size_of(ra[3]) + size_of(rb[2])
    assert.equal(sz, abytes)
    assert.equal(sz, amem)
    assert.same({ ida[1], ida[3], idb[2] }, ids)
    assert.same({
      { record = ra[1], ShardId = A, SequenceNumber = "1001", attempts = 1, SubSequenceNumber = false },
      { record = ra[3], ShardId = A, SequenceNumber = "1003", attempts = 1, SubSequenceNumber = false },
      { record = rb[2], ShardId = B, SequenceNumber = "2002", attempts = 1, SubSequenceNumber = false },
    }, results)
    assert.equal(ra[1], results[1].record)
    assert.equal(ra[3], results[2].record)
    assert.equal(rb[2], results[3].record)
    assert.same({ { ShardId = "shardId-000000000009", SequenceNumber = "901" },
                  { ErrorCode = "InternalFailure", ErrorMessage = "boom" } }, answers)
    assert.equal(6, #failed)
    assert.same({
      { record = ra[2], PartitionKey = ka[2], Data = "A-data-2", size = size_of(ra[2]), id = ida[2], t = 12, attempts = 1 },
      { ErrorCode = "ProvisionedThroughputExceededException", ErrorMessage = 'Rate "exceeded" \195\169\240\159\152\128 /' },
      1,
      { record = rb[1], PartitionKey = kb[1], Data = "B-data-1", size = size_of(rb[1]), id = idb[1], t = 21, attempts = 1 },
      { ShardId = A, SequenceNumber = "1004" },
      2,
    }, failed)
    assert.equal(ra[2], failed[1].record)
    assert.equal(rb[1], failed[4].record)
    raises("no such request", q.size, q, h)
    assert.same({ 0, 0 }, { q:fresh() })
    q:close()
  end)

  it("leaves results and ids out unless asked, and counts ExplicitHashKey bytes in memory", function()
    local q, map, ci = queue()
    local A = sid(2)
    local R = { mine = true }
    q:push(ci[A], { record = R, PartitionKey = "pk", Data = "data", ExplicitHashKey = "12345",
                    id = q:new_id(), t = 1, attempts = 0 })
    local h = q:request()
    assert.equal(1, (take(q, h, ci, A)))
    local got = body_records(q, h)
    assert.equal("12345", got[1].ExplicitHashKey)
    local ans = answer { { sid = A, seq = "7" } }
    assert.equal(1, q:parse(h, ans, 1))
    local results, nacked, abytes, amem, answers, failed, ids = settle(q, h, ans, 0, false)
    assert.is_nil(results)
    assert.is_nil(ids)
    assert.same({ 1, 6, 11 }, { nacked, abytes, amem })
    assert.same({}, answers)
    assert.same({}, failed)
    -- results without ids, ids without results
    for _, want in ipairs({ { true, false }, { false, true } }) do
      local rec = { PartitionKey = "pk2", Data = "d2" }
      put(q, rec)
      local id = q:last_id()
      local sh = map:lookup("pk2").ShardId
      h = q:request()
      take(q, h, ci, sh)
      ans = answer { { sid = sh, seq = "8" } }
      q:parse(h, ans, 1)
      results, nacked, abytes, amem, answers, failed, ids = settle(q, h, ans, 0, want[1], want[2])
      if want[1] then
        assert.same({ { record = rec, ShardId = sh, SequenceNumber = "8", SubSequenceNumber = false, attempts = 1 } },
          results)
      else
        assert.same({ id }, ids)
      end
    end
    q:close()
  end)

  it("raises on settle without a matching parse; a malformed answer parses to nil, why", function()
    local q, map, ci = queue()
    local A = sid(1)
    for _, k in ipairs(keys_on(map, A, 2)) do put(q, { PartitionKey = k, Data = "x" }) end
    local h = q:request()
    assert.equal(2, (take(q, h, ci, A)))
    local ans = answer { { sid = A, seq = "1" }, { sid = A, seq = "2" } }
    assert.has_error(function() settle(q, h, ans, 0, true) end,
      "producer queue: settle without a matching parse")
    local short = answer { { sid = A, seq = "1" } }
    assert.equal(1, q:parse(h, short, 2))
    assert.has_error(function() settle(q, h, short, 0, true) end,
      "producer queue: settle without a matching parse")
    local n, why = q:parse(h, '{"Records":[{"ShardId":', 2)
    assert.is_nil(n)
    assert.is_string(why)
    assert.has_error(function() settle(q, h, ans, 0, true) end,
      "producer queue: settle without a matching parse")
    -- parsed for 2 entries: one Lua entry is not there
    assert.equal(2, q:parse(h, ans, 2))
    assert.has_error(function() settle(q, h, ans, 1, true) end,
      "producer queue: settle without a matching parse")
    assert.equal(2, select(2, settle(q, h, ans, 0, true)))
    -- the freed slot serves the next request, with nothing of the last
    for _, k in ipairs(keys_on(map, A, 2)) do put(q, { PartitionKey = k, Data = "y" }) end
    local h2 = q:request()
    assert.equal(h, h2)
    assert.equal(2, (take(q, h2, ci, A)))
    assert.has_error(function() q:settle(h2, ans, 0, true) end, "producer queue: settle without a matching parse")
    assert.equal(2, q:parse(h2, ans, 2))
    assert.equal(2, select(2, settle(q, h2, ans, 0, true)))
    q:close()
  end)

  it("fails an entry answered without a SequenceNumber, and refuses an answer longer than asked", function()
    local q, map, ci = queue()
    local A = sid(0)
    local keys = keys_on(map, A, 2)
    for _, k in ipairs(keys) do put(q, { PartitionKey = k, Data = "x" }) end
    local h = q:request()
    take(q, h, ci, A)
    -- longer answers: a count that is not the request's, or nil, why;
    -- either way nothing settles
    for extra = 1, 3 do
      local items = {}
      for j = 1, 2 + extra do items[j] = { sid = A, seq = tostring(j) } end
      local long = answer(items)
      local n, why = q:parse(h, long, 2)
      assert.is_true(n == 2 + extra or (n == nil and type(why) == "string"), tostring(n))
      assert.has_error(function() q:settle(h, long, 0, true) end, "producer queue: settle without a matching parse")
    end
    local ans = answer { '{"ShardId":"' .. A .. '"}', '{"SequenceNumber":null,"ShardId":"' .. A .. '"}' }
    assert.equal(2, q:parse(h, ans, 2))
    local results, nacked, _, _, _, failed = settle(q, h, ans, 0, true)
    assert.equal(0, nacked)
    assert.same({}, results)
    assert.equal(6, #failed)
    assert.same({ keys[1], keys[2] }, { failed[1].PartitionKey, failed[4].PartitionKey })
    assert.same({ ShardId = A }, failed[2])
    q:close()
  end)

  it("gives a reused slot nothing of the record that had it before", function()
    local q, map, ci = queue()
    local A = sid(1)
    local k = keys_on(map, A, 1)[1]
    local old = { PartitionKey = k, Data = "old" }
    q:push(ci[A], { record = old, PartitionKey = k, Data = "old", id = q:new_id(), t = 1, attempts = 1,
                    last_err = { code = "Throttled" } })
    local h = q:request()
    take(q, h, ci, A)
    local ans = answer { { sid = A, seq = "1" } }
    q:parse(h, ans, 1)
    assert.equal(1, select(2, settle(q, h, ans, 0, false)))
    local new = { PartitionKey = k, Data = "new" }
    put(q, new, 2)
    local got = q:drain(ci[A])
    assert.equal(new, got[1].record)
    assert.is_nil(got[1].last_err)
    q:close()
  end)

  it("keeps requests in flight at once apart, settled in any order", function()
    local q, map, ci = queue()
    local recs, hs = {}, {}
    for s = 0, 3 do
      recs[s] = {}
      for i, k in ipairs(keys_on(map, sid(s), 3, "s" .. s .. "-")) do
        recs[s][i] = { PartitionKey = k, Data = s .. ":" .. i }
        put(q, recs[s][i])
      end
    end
    for s = 0, 3 do
      hs[s] = q:request()
      assert.same({ s == 2 and 1 or 3, 3 }, counts(take(q, hs[s], ci, sid(s), { agg_max = s == 2 and AGG or 0 })))
    end
    for s = 0, 3 do
      local got = body_records(q, hs[s])
      local want = s == 2 and 1 or 3
      assert.equal(want, #got)
      if s ~= 2 then
        for i = 1, 3 do assert.equal(recs[s][i].Data, b64decode(got[i].Data)) end
      end
    end
    for _, s in ipairs({ 2, 0, 3 }) do
      local n = s == 2 and 1 or 3
      local items = {}
      for j = 1, n do items[j] = { sid = sid(s), seq = s .. j } end
      local ans = answer(items)
      assert.equal(n, q:parse(hs[s], ans, n))
      local results = settle(q, hs[s], ans, 0, true)
      assert.equal(3, #results)
      for i = 1, 3 do
        assert.equal(recs[s][i], results[i].record)
        assert.equal(sid(s), results[i].ShardId)
      end
    end
    local back, takes = q:abandon(hs[1])
    assert.same({ 1, 1, 1 }, takes)
    for i = 1, 3 do assert.equal(recs[1][i], back[i].record) end
    q:close()
  end)

  it("abandon hands back every entry with its take number and frees the request", function()
    local q, map, ci = queue()
    local A, B = sid(0), sid(1)
    local E = { code = "earlier" }
    local recs = {}
    for i, k in ipairs(keys_on(map, A, 2, "a")) do
      recs[i] = { PartitionKey = k, Data = "a" .. i }
      put(q, recs[i], i)
    end
    local kb = keys_on(map, B, 1, "b")[1]
    recs[3] = { PartitionKey = kb, Data = "b" }
    q:push(ci[B], { record = recs[3], PartitionKey = kb, Data = "b", id = q:new_id(), t = 3, attempts = 2,
                    last_err = E })
    local h = q:request()
    take(q, h, ci, A)
    take(q, h, ci, B)
    local entries, takes = q:abandon(h)
    assert.same({ 1, 1, 2 }, takes)
    assert.equal(3, #entries)
    for i = 1, 3 do
      assert.equal(recs[i], entries[i].record)
      assert.equal(recs[i].PartitionKey, entries[i].PartitionKey)
      assert.equal(recs[i].Data, entries[i].Data)
      assert.equal(i, entries[i].t)
    end
    assert.same({ 1, 1, 3 }, { entries[1].attempts, entries[2].attempts, entries[3].attempts })
    assert.equal(E, entries[3].last_err)
    assert.same({ 0, 0 }, { q:fresh() })
    raises("no such request", q.abandon, q, h)
    raises("no such request", q.take, q, h, ci[A], A, 1, BIG, BIG, BIG, 0, 1, false)
    -- put back at the front in reverse, they go out again in put order
    for i = 2, 1, -1 do q:push(ci[A], entries[i], true) end
    h = q:request()
    take(q, h, ci, A)
    local got = body_records(q, h)
    assert.same({ recs[1].PartitionKey, recs[2].PartitionKey }, { got[1].PartitionKey, got[2].PartitionKey })
    local again = q:abandon(h)
    assert.same({ 2, 2 }, { again[1].attempts, again[2].attempts })
    assert.same({ {}, {} }, { q:abandon(q:request()) })
    q:close()
  end)
end)

describe("producer_queue:take, aggregated", function()
  local function aggregate_of(got, i)
    local e = got[i]
    local data = b64decode(e.Data)
    local users = assert(kpl.deaggregate({ Data = data, PartitionKey = e.PartitionKey }, { strict = true }))
    return users, data, e
  end

  it("packs a shard's records in one aggregate, byte for byte what kinesis.kpl makes", function()
    local q, map, ci = queue()
    local A = sid(2)
    local keys = keys_on(map, A, 5)
    local recs, ids = {}, {}
    for i = 1, 20 do
      recs[i] = { PartitionKey = keys[(i - 1) % 5 + 1], Data = string.rep(string.char(i * 13 % 256), i) .. "\0\255" }
      put(q, recs[i])
      ids[i] = q:last_id()
    end
    local h = q:request()
    local ne, nb, nrec, naggs, nagg_recs, oot = take(q, h, ci, A, { agg_max = AGG })
    assert.same({ 1, 20, 1, 20, false }, { ne, nrec, naggs, nagg_recs, oot })
    assert.same({ 1, 20 }, { q:size(h) })
    local got = body_records(q, h)
    assert.equal(1, #got)
    local users, data, e = aggregate_of(got, 1)
    assert.equal(recs[1].PartitionKey, e.PartitionKey)
    assert.equal(core.hash_key(recs[1].PartitionKey), e.ExplicitHashKey)
    assert.equal(#data + #e.PartitionKey, nb)
    assert.equal(20, #users)
    for i = 1, 20 do
      assert.equal(recs[i].PartitionKey, users[i].PartitionKey)
      assert.equal(recs[i].Data, users[i].Data)
      assert.is_nil(users[i].ExplicitHashKey)
      assert.is_true(users[i].Aggregated)
    end
    assert.equal(assert(kpl.aggregate(recs)).Data, data)

    local ans = answer { { sid = A, seq = "49590338271490256608559692538361571095921575989136588898" } }
    assert.equal(1, q:parse(h, ans, 1))
    local results, nacked, abytes, amem, _, failed, rids = settle(q, h, ans, 0, true)
    local sz = 0
    for i = 1, 20 do sz = sz + size_of(recs[i]) end
    assert.same({ 20, sz, sz }, { nacked, abytes, amem })
    assert.same(ids, rids)
    assert.same({}, failed)
    for i = 1, 20 do
      assert.same({ record = recs[i], ShardId = A, attempts = 1, SubSequenceNumber = i - 1,
                    SequenceNumber = "49590338271490256608559692538361571095921575989136588898" }, results[i])
      assert.equal(recs[i], results[i].record)
    end
    q:close()
  end)

  it("packs hundreds of keys, repeated or not, as kinesis.kpl does", function()
    local q, map, ci = queue()
    local A = sid(3)
    local keys = keys_on(map, A, 300)
    local recs = {}
    for i = 1, 600 do
      local k = i <= 300 and keys[i] or keys[(i * 7) % 300 + 1]
      recs[i] = { PartitionKey = k, Data = tostring(i) }
      put(q, recs[i])
    end
    local h = q:request()
    assert.same({ 1, 600 }, counts(take(q, h, ci, A, { agg_max = 1048576 })))
    local got = body_records(q, h)
    local users, data = aggregate_of(got, 1)
    assert.equal(600, #users)
    for i = 1, 600 do assert.equal(recs[i].PartitionKey, users[i].PartitionKey) end
    assert.equal(kpl.aggregate(recs).Data, data)
    q:close()
  end)

  it("bounds an aggregate by agg_count, agg_max and max_bytes, in put order", function()
    local q, map, ci = queue()
    local A = sid(0)
    local keys = keys_on(map, A, 30)
    local recs = {}
    for i = 1, 20 do
      recs[i] = { PartitionKey = keys[i], Data = "r" .. i }
      put(q, recs[i])
    end
    local h = q:request()
    local ne, nb, nrec, naggs, nagg_recs = take(q, h, ci, A, { agg_max = AGG, agg_count = 7, max_entries = 2 })
    assert.same({ 2, 14, 2, 14 }, { ne, nrec, naggs, nagg_recs })
    ne, nb, nrec, naggs, nagg_recs = take(q, h, ci, A, { agg_max = AGG, agg_count = 7 })
    assert.same({ 1, 6, 1, 6 }, { ne, nrec, naggs, nagg_recs })
    local got = body_records(q, h)
    local k = 0
    for i, n in ipairs({ 7, 7, 6 }) do
      local users, data = aggregate_of(got, i)
      assert.equal(n, #users)
      local part = {}
      for j = 1, n do
        k = k + 1
        assert.equal(recs[k].Data, users[j].Data)
        part[j] = recs[k]
      end
      assert.equal(kpl.aggregate(part).Data, data)
    end
    q:abandon(h)

    -- agg_max: 1000-byte records, 5000-byte aggregates
    recs = {}
    for i = 1, 30 do
      recs[i] = { PartitionKey = keys[i], Data = string.rep(string.char(64 + i), 1000) }
      put(q, recs[i])
    end
    h = q:request()
    ne, nb, nrec = take(q, h, ci, A, { agg_max = 5000 })
    assert.equal(30, nrec)
    got = body_records(q, h)
    assert.equal(ne, #got)
    k = 0
    local total = 0
    for i = 1, ne do
      local users, data, e = aggregate_of(got, i)
      local size = #data + #e.PartitionKey
      total = total + size
      assert.is_true(size <= 5000, "aggregate " .. i .. " has " .. size .. " bytes")
      if i < ne then assert.is_true(#users >= 3, "aggregate " .. i .. " holds " .. #users .. " records") end
      for j = 1, #users do
        k = k + 1
        assert.equal(recs[k].Data, users[j].Data)
      end
    end
    assert.equal(30, k)
    assert.equal(total, nb)
    q:abandon(h)

    -- max_bytes bounds the sum of the entries
    for i = 1, 30 do put(q, recs[i]) end
    h = q:request()
    ne, nb, nrec = take(q, h, ci, A, { agg_max = 5000, max_bytes = 9000 })
    assert.is_true(nb <= 9000, nb)
    assert.is_true(ne >= 2 and nrec >= 6, ne .. " entries, " .. nrec .. " records")
    assert.equal(30 - nrec, q:queued(ci[A]))
    got = body_records(q, h)
    local sum = 0
    for i = 1, ne do sum = sum + #b64decode(got[i].Data) + #got[i].PartitionKey end
    assert.equal(nb, sum)
    q:close()
  end)

  it("sends a record too big to share an aggregate alone, and a lone record as it is", function()
    local q, map, ci = queue()
    local A = sid(3)
    local keys = keys_on(map, A, 6)
    local recs = {
      { PartitionKey = keys[1], Data = "s1" }, { PartitionKey = keys[2], Data = "s2" },
      { PartitionKey = keys[3], Data = string.rep("B", 4990) },
      { PartitionKey = keys[4], Data = "s3" }, { PartitionKey = keys[5], Data = "s4" },
    }
    for _, r in ipairs(recs) do put(q, r) end
    local h = q:request()
    local ne, nb, nrec, naggs, nagg_recs = take(q, h, ci, A, { agg_max = 5000 })
    assert.same({ 3, 5, 2, 4 }, { ne, nrec, naggs, nagg_recs })
    local got = body_records(q, h)
    local u1, d1 = aggregate_of(got, 1)
    assert.same({ "s1", "s2" }, { u1[1].Data, u1[2].Data })
    assert.equal(kpl.aggregate({ recs[1], recs[2] }).Data, d1)
    assert.same({ Data = core.b64encode(recs[3].Data), PartitionKey = keys[3] }, got[2])
    local u3, d3 = aggregate_of(got, 3)
    assert.same({ "s3", "s4" }, { u3[1].Data, u3[2].Data })
    assert.equal(kpl.aggregate({ recs[4], recs[5] }).Data, d3)
    assert.equal(#d1 + #keys[1] + size_of(recs[3]) + #d3 + #keys[4], nb)
    q:abandon(h)

    -- a large record that can still share one does
    local mid = { { PartitionKey = keys[2], Data = string.rep("M", 3000) }, { PartitionKey = keys[1], Data = "m1" },
                  { PartitionKey = keys[3], Data = "m3" } }
    for _, r in ipairs(mid) do put(q, r) end
    h = q:request()
    assert.same({ 1, 3 }, counts(take(q, h, ci, A, { agg_max = 5000 })))
    assert.equal(kpl.aggregate(mid).Data, b64decode(body_records(q, h)[1].Data))
    q:abandon(h)

    put(q, { PartitionKey = keys[6], Data = "only" })
    h = q:request()
    ne, nb, nrec, naggs, nagg_recs = take(q, h, ci, A, { agg_max = AGG })
    assert.same({ 1, #keys[6] + 4, 1, 0, 0 }, { ne, nb, nrec, naggs, nagg_recs })
    assert.same({ { Data = core.b64encode("only"), PartitionKey = keys[6] } }, body_records(q, h))
    local ans = answer { { sid = A, seq = "5" } }
    q:parse(h, ans, 1)
    local results = settle(q, h, ans, 0, true)
    assert.is_false(results[1].SubSequenceNumber)
    q:close()
  end)

  it("hands back a failed aggregate as an entry table; pushed back, it packs the same bytes", function()
    local q, map, ci = queue()
    local A = sid(1)
    local keys = keys_on(map, A, 6)
    local recs, ids = {}, {}
    for i = 1, 6 do
      recs[i] = { PartitionKey = keys[i], Data = "payload " .. i }
      put(q, recs[i], 50 + i)
      ids[i] = q:last_id()
    end
    local h = q:request()
    assert.equal(2, (take(q, h, ci, A, { agg_max = AGG, agg_count = 3 })))
    local got = body_records(q, h)
    local _, data2 = aggregate_of(got, 2)
    local ans = answer { { sid = A, seq = "100" }, { code = "InternalFailure", msg = "try again" } }
    assert.equal(2, q:parse(h, ans, 2))
    local results, nacked, _, _, _, failed, rids = settle(q, h, ans, 0, true)
    assert.equal(3, nacked)
    assert.same({ ids[1], ids[2], ids[3] }, rids)
    for i = 1, 3 do
      assert.equal(i - 1, results[i].SubSequenceNumber)
      assert.equal("100", results[i].SequenceNumber)
      assert.equal(recs[i], results[i].record)
    end
    assert.equal(3, #failed)
    local e = failed[1]
    assert.same({ ErrorCode = "InternalFailure", ErrorMessage = "try again" }, failed[2])
    assert.equal(1, failed[3])
    assert.equal(data2, e.Data)
    assert.equal(keys[4], e.PartitionKey)
    assert.equal(core.hash_key(keys[4]), e.ExplicitHashKey)
    assert.equal(#data2 + #keys[4], e.size)
    assert.equal(1, e.attempts)
    assert.equal(3, #e.recs)
    for j = 1, 3 do
      local r = e.recs[j]
      assert.same({ record = recs[3 + j], PartitionKey = keys[3 + j], Data = recs[3 + j].Data,
                    size = size_of(recs[3 + j]), id = ids[3 + j], t = 53 + j, attempts = 1 }, r)
      assert.equal(recs[3 + j], r.record)
    end
    for j = 3, 1, -1 do q:push(ci[A], e.recs[j], true) end
    h = q:request()
    assert.same({ 1, 3 }, counts(take(q, h, ci, A, { agg_max = AGG })))
    got = body_records(q, h)
    assert.equal(data2, b64decode(got[1].Data))
    ans = answer { { sid = A, seq = "101" } }
    q:parse(h, ans, 1)
    results = settle(q, h, ans, 0, true)
    assert.same({ 2, 2, 2 }, { results[1].attempts, results[2].attempts, results[3].attempts })
    assert.same({ 0, 1, 2 }, { results[1].SubSequenceNumber, results[2].SubSequenceNumber, results[3].SubSequenceNumber })
    q:close()
  end)

  it("keeps a pushed record's ExplicitHashKey inside an aggregate", function()
    local q, map, ci = queue()
    local A = sid(0)
    local keys = keys_on(map, A, 3)
    local recs = { { PartitionKey = keys[1], Data = "one" },
                   { PartitionKey = keys[2], Data = "two", ExplicitHashKey = "5" },
                   { PartitionKey = keys[3], Data = "three" } }
    put(q, recs[1])
    q:push(ci[A], { record = recs[2], PartitionKey = keys[2], Data = "two", ExplicitHashKey = "5",
                    id = q:new_id(), t = 0, attempts = 0 })
    put(q, recs[3])
    local h = q:request()
    assert.same({ 1, 3 }, counts(take(q, h, ci, A, { agg_max = AGG })))
    local got = body_records(q, h)
    local users, data, e = aggregate_of(got, 1)
    assert.equal(core.hash_key(keys[1]), e.ExplicitHashKey)
    assert.same({ false, "5", false }, { users[1].ExplicitHashKey or false, users[2].ExplicitHashKey,
                                         users[3].ExplicitHashKey or false })
    assert.equal(kpl.aggregate(recs).Data, data)
    -- first in its aggregate, its ExplicitHashKey is the entry's
    q:push(ci[A], { record = recs[2], PartitionKey = keys[2], Data = "two", ExplicitHashKey = "5",
                    id = q:new_id(), t = 0, attempts = 0 })
    put(q, recs[3])
    local h2 = q:request()
    assert.same({ 1, 2 }, counts(take(q, h2, ci, A, { agg_max = AGG })))
    local _, data2, e2 = aggregate_of(body_records(q, h2), 1)
    local ref = kpl.aggregate({ recs[2], recs[3] })
    assert.same({ ref.Data, ref.PartitionKey, "5" }, { data2, e2.PartitionKey, e2.ExplicitHashKey })
    q:abandon(h2)
    local ans = answer { { sid = A, seq = "9" } }
    q:parse(h, ans, 1)
    local _, nacked, abytes, amem = settle(q, h, ans, 0, false)
    local sz = size_of(recs[1]) + size_of(recs[2]) + size_of(recs[3])
    assert.same({ 3, sz, sz + 1 }, { nacked, abytes, amem })
    q:close()
  end)
end)

describe("producer_queue:take, ordered", function()
  local function keys3(map, id)
    local k = keys_on(map, id, 3)
    return k[1], k[2], k[3]
  end

  it("takes no second entry of a key in one take, and takes it in the next", function()
    local q, map, ci = queue()
    local A = sid(2)
    local a, b, c = keys3(map, A)
    local recs = { { PartitionKey = a, Data = "a1" }, { PartitionKey = b, Data = "b1" },
                   { PartitionKey = a, Data = "a2" }, { PartitionKey = c, Data = "c1" } }
    for _, r in ipairs(recs) do put(q, r) end
    local h = q:request()
    assert.same({ 2, 2 }, counts(take(q, h, ci, A, { ordered = true })))
    assert.equal(2, q:queued(ci[A]))
    -- a new take of the same request starts afresh
    assert.same({ 2, 2 }, counts(take(q, h, ci, A, { ordered = true })))
    local got = body_records(q, h)
    assert.same({ "a1", "b1", "a2", "c1" }, { b64decode(got[1].Data), b64decode(got[2].Data),
                                             b64decode(got[3].Data), b64decode(got[4].Data) })
    q:abandon(h)
    for _, r in ipairs(recs) do put(q, r) end
    h = q:request()
    assert.same({ 4, 4 }, counts(take(q, h, ci, A, { ordered = false })))
    q:close()
  end)

  it("remembers thousands of keys in one take (past its first table size)", function()
    local A = sid(0)
    local keys = keys_on(assert(shards.shard_map(even4())), A, 5000)
    -- 5000 keys, then one of them again: each probe a different key, in
    -- a new queue (whose key set starts small)
    for probe = 1, 5000, 625 do
      local q, _, ci = queue()
      for i = 1, 5000 do put(q, { PartitionKey = keys[i], Data = "x" }) end
      put(q, { PartitionKey = keys[probe], Data = "again" })
      local h = q:request()
      assert.same({ 5000, 5000 }, counts(take(q, h, ci, A, { max_entries = 20000, ordered = true })))
      assert.equal(1, q:queued(ci[A]))
      assert.equal("again", q:drain(ci[A])[1].Data)
      q:close()
    end
  end)

  it("packs several records of a key in one aggregate, but no key in two entries", function()
    local q, map, ci = queue()
    local A = sid(1)
    local a, b, c = keys3(map, A)
    for _, r in ipairs({ { a, "a1" }, { a, "a2" }, { b, "b1" }, { a, "a3" } }) do
      put(q, { PartitionKey = r[1], Data = r[2] })
    end
    local h = q:request()
    local ne, _, nrec, naggs = take(q, h, ci, A, { agg_max = AGG, ordered = true })
    assert.same({ 1, 4, 1 }, { ne, nrec, naggs })
    local users = assert(kpl.deaggregate({ Data = b64decode(body_records(q, h)[1].Data), PartitionKey = a }))
    assert.same({ "a1", "a2", "b1", "a3" }, { users[1].Data, users[2].Data, users[3].Data, users[4].Data })
    q:abandon(h)

    -- [a b] [c] then a again: the second aggregate stops before a
    for _, r in ipairs({ { a, "a1" }, { b, "b1" }, { c, "c1" }, { a, "a2" } }) do
      put(q, { PartitionKey = r[1], Data = r[2] })
    end
    h = q:request()
    ne, _, nrec, naggs = take(q, h, ci, A, { agg_max = AGG, agg_count = 2, ordered = true })
    assert.same({ 2, 3, 1 }, { ne, nrec, naggs })
    assert.equal(1, q:queued(ci[A]))
    local got = body_records(q, h)
    assert.same({ Data = core.b64encode("c1"), PartitionKey = c }, got[2])
    q:abandon(h)
    q:drain(ci[A])

    -- a record alone (too big to share), then its key small: one entry
    put(q, { PartitionKey = a, Data = string.rep("x", 4990) })
    put(q, { PartitionKey = a, Data = "small" })
    put(q, { PartitionKey = b, Data = "other" })
    h = q:request()
    assert.same({ 1, 1 }, counts(take(q, h, ci, A, { agg_max = 5000, ordered = true })))
    assert.same({ 1, 2 }, counts(take(q, h, ci, A, { agg_max = 5000, ordered = true })))
    q:close()
  end)
end)

describe("producer_queue:push, drain, expire, set_shards", function()
  it("pushes record tables at the back or the front, keeping ExplicitHashKey and last_err", function()
    local q, map, ci = queue()
    local A = sid(3)
    local keys = keys_on(map, A, 2)
    local r1, r2 = { PartitionKey = keys[1], Data = "one" }, { PartitionKey = keys[2], Data = "two" }
    put(q, r1, 1)
    put(q, r2, 2)
    local R, E = { PartitionKey = "whatever" }, { code = "Throttled" }
    local front = { record = R, PartitionKey = "front", Data = "F", ExplicitHashKey = "340282366920938463463374607431768211455",
                    id = 77, t = 0.5, attempts = 3, last_err = E }
    local back = { record = { n = 2 }, PartitionKey = "back", Data = "BB", id = 78, t = 9, attempts = 1 }
    q:push(ci[A], front, true)
    q:push(ci[A], back)
    assert.equal(4, q:queued(ci[A]))
    local n, b = q:fresh()
    assert.same({ 4, 3 + #keys[1] + 3 + #keys[2] + 6 + 6 }, { n, b })
    local got = q:drain(ci[A])
    assert.equal(4, #got)
    assert.same({ record = R, last_err = E, PartitionKey = "front", Data = "F", ExplicitHashKey = MAX,
                  size = 6, mem = 6 + #MAX, id = 77, t = 0.5, attempts = 3 }, got[1])
    assert.equal(R, got[1].record)
    assert.equal(E, got[1].last_err)
    assert.equal(r1, got[2].record)
    assert.equal(r2, got[3].record)
    assert.equal(back.record, got[4].record)
    assert.same({ 0, 0 }, { q:fresh() })
    -- a pushed record front-most is due at once
    q:push(ci[A], got[1], true)
    assert.equal(2, put(q, { PartitionKey = keys[1], Data = "later" }, 10, BIG, BIG, 5))
    q:close()
  end)

  it("raises on a record table it cannot take", function()
    local q, map, ci = queue()
    local A = sid(0)
    local function rec(t)
      local r = { record = {}, PartitionKey = "k", Data = "d", id = 1, t = 0, attempts = 0 }
      for k, v in pairs(t) do r[k] = v end
      return r
    end
    assert.has_error(function() q:push(ci[A], rec { ExplicitHashKey = "12a" }) end,
      "producer queue: record table with a bad ExplicitHashKey")
    assert.has_error(function() q:push(ci[A], rec { ExplicitHashKey = MAX .. "0" }) end,
      "producer queue: record table with a bad ExplicitHashKey")
    assert.has_error(function() q:push(ci[A], rec { Data = false }) end,
      "producer queue: record table without a Data string")
    assert.has_error(function() q:push(ci[A], rec { id = false }) end,
      "producer queue: record table without a number id")
    assert.has_error(function() q:push(ci[A], rec { t = "soon" }) end,
      "producer queue: record table without a number t")
    raises("no such shard queue", q.push, q, 0, rec {})
    raises("no such shard queue", q.push, q, 5, rec {})
    assert.same({ 0, 0 }, { q:fresh() })
    q:close()
  end)

  it("expires from the head only, or anywhere in the queue with whole = true", function()
    local q, map, ci = queue()
    local A = sid(2)
    local i = ci[A]
    local keys = keys_on(map, A, 6)
    for t = 1, 5 do put(q, { PartitionKey = keys[t], Data = "t" .. t }, t) end
    -- in put order, whole = false stops at the first record younger than the cutoff
    assert.same({}, q:expire(i, 0.5, false))
    q:push(i, { record = {}, PartitionKey = keys[6], Data = "t10", id = q:new_id(), t = 10, attempts = 1 }, true)
    -- [10 1 2 3 4 5]: the head is younger than the cutoff, and the queue
    -- is out of put order: every record is looked at, whole or not
    local dead = q:expire(i, 3, false)
    assert.same({ "t1", "t2", "t3" }, { dead[1].Data, dead[2].Data, dead[3].Data })
    assert.equal(3, #dead)
    assert.equal(3, q:queued(i))
    local n, b = q:fresh()
    assert.same({ 3, #keys[6] + 3 + #keys[4] + 2 + #keys[5] + 2 }, { n, b })
    -- [10 4 5]: the tail goes, and what comes after it still queues
    dead = q:expire(i, 5, true)
    assert.same({ "t4", "t5" }, { dead[1].Data, dead[2].Data })
    q:push(i, { record = {}, PartitionKey = keys[1], Data = "t20", id = q:new_id(), t = 20, attempts = 1 })
    local left = q:drain(i)
    assert.same({ "t10", "t20" }, { left[1].Data, left[2].Data })
    -- in put order, the head only
    for t = 1, 4 do put(q, { PartitionKey = keys[t], Data = "u" .. t }, t) end
    dead = q:expire(i, 2, false)
    assert.same({ "u1", "u2" }, { dead[1].Data, dead[2].Data })
    assert.same({ 2, #keys[3] + 2 + #keys[4] + 2, 3 }, { q:fresh() })
    q:close()
  end)

  -- A FIFO is not always in put order: a reshard routes older records to
  -- the back of a queue that carries on. Once records leave, the oldest
  -- put time must still count them, not only the FIFO heads, or fresh()
  -- and put()'s linger take a younger record for the oldest and a request
  -- goes out late.
  it("knows the oldest fresh record after others left, wherever it sits in its queue", function()
    local q, map, ci = queue()
    local A, B = sid(0), sid(1)
    local ka, kb = keys_on(map, A, 2), keys_on(map, B, 1)
    put(q, { PartitionKey = ka[1], Data = "young" }, 3)
    put(q, { PartitionKey = kb[1], Data = "other" }, 4)
    q:push(ci[A], { record = {}, PartitionKey = ka[2], Data = "old", id = q:new_id(), t = 1, attempts = 0 })
    assert.equal(1, select(3, q:fresh()))
    local h = q:request()
    assert.equal(1, (take(q, h, ci, B)))
    assert.equal(1, select(3, q:fresh()))
    -- 1 + 2.5 <= 3.6: due
    assert.equal(2, put(q, { PartitionKey = kb[1], Data = "next" }, 3.6, BIG, BIG, 2.5))
    q:close()
  end)

  it("carries queues to a new map by ShardId, and refuses to drop one not drained", function()
    local q, map, ci = queue()
    local list = even4()
    local byid = {}
    for _, sh in ipairs(list) do byid[sh.ShardId] = sh end
    math.randomseed(11)
    local before = {}
    for n = 1, 400 do
      local k = "c" .. math.random(1, 1e9) .. "-" .. n
      put(q, { PartitionKey = k, Data = "v" .. n }, n)
    end
    -- split shard 2: its children 4 and 5 replace it
    local parent = byid[sid(2)].HashKeyRange
    local mid = assert(shards.split_point(byid[sid(2)]))
    local list2 = { byid[sid(0)], byid[sid(1)], byid[sid(3)],
                    shard(sid(4), parent.StartingHashKey, dec1(mid)), shard(sid(5), mid, parent.EndingHashKey) }
    local map2 = assert(shards.shard_map(list2))
    local old = {}
    for _, id in ipairs({ sid(0), sid(1), sid(3) }) do
      old[id] = ci[id]
      before[id] = q:queued(ci[id])
    end
    local dropped = q:queued(ci[sid(2)])
    assert.is_true(dropped > 0)
    assert.has_error(function() q:set_shards(map2, old) end,
      "producer queue: shard queue " .. ci[sid(2)] .. " was not drained")
    -- nothing moved
    assert.equal(dropped, q:queued(ci[sid(2)]))
    assert.equal(400, (q:fresh()))
    local moved = q:drain(ci[sid(2)])
    local ci2 = q:set_shards(map2, old)
    for _, id in ipairs({ sid(0), sid(1), sid(3) }) do
      assert.equal(before[id], q:queued(ci2[id]), id)
    end
    assert.equal(0, q:queued(ci2[sid(4)]))
    assert.equal(0, q:queued(ci2[sid(5)]))
    for _, r in ipairs(moved) do q:push(ci2[map2:lookup(r.PartitionKey).ShardId], r) end
    assert.equal(400, (q:fresh()))
    -- new records route by the new map
    local k4 = keys_on(map2, sid(4), 1, "n")[1]
    assert.equal(1, put(q, { PartitionKey = k4, Data = "new" }, 500))
    for _, sh in ipairs(list2) do
      local last = 0
      for _, r in ipairs(q:drain(ci2[sh.ShardId])) do
        assert.equal(sh.ShardId, map2:lookup(r.PartitionKey).ShardId)
        assert.is_true(r.id > last, "put order kept")
        last = r.id
      end
    end
    -- an empty queue may go without a word
    local ci3 = q:set_shards(map, {})
    assert.equal(4, (function() local n = 0 for _ in pairs(ci3) do n = n + 1 end return n end)())
    q:close()
  end)
end)

describe("producer_queue memory", function()
  it("keeps nothing of settled records: Lua memory stays flat over 100,000 records", function()
    local q, map, ci = queue()
    local list = map:shards()
    local retry = {}
    local acked, base, top = 0, nil, 0
    local n_put = 0
    for round = 1, 100 do
      for _ = 1, 1000 do
        n_put = n_put + 1
        put(q, { PartitionKey = "m" .. n_put, Data = "payload" })
      end
      for _, r in ipairs(retry) do q:push(ci[map:lookup(r.PartitionKey).ShardId], r) end
      if round % 10 == 0 then
        -- the slots of the queue's user value (2 a record, see the header
        -- of l_pqueue.c) are reused: some 1,100 records are alive now
        for k in pairs((debug.getuservalue or debug.getfenv)(q)) do
          if type(k) == "number" and k > top then top = k end
        end
      end
      local h = q:request()
      local items, n = {}, 0
      for t, sh in ipairs(list) do
        local ne = take(q, h, ci, sh.ShardId, { max_entries = 2000, agg_max = round % 2 == 0 and 4096 or 0 })
        for _ = 1, ne do
          n = n + 1
          items[n] = (n % 10 == 0 and round < 100) and { code = "InternalFailure", msg = "m" }
                     or { sid = sh.ShardId, seq = tostring(t) }
        end
      end
      assert.equal(n, #body_records(q, h))
      local ans = answer(items)
      assert.equal(n, q:parse(h, ans, n))
      local _, nacked, _, _, _, failed = settle(q, h, ans, 0, true)
      acked = acked + nacked
      retry = {}
      for j = 1, #failed, 3 do
        local e = failed[j]
        if e.recs then
          for _, r in ipairs(e.recs) do retry[#retry + 1] = r end
        else
          retry[#retry + 1] = e
        end
      end
      if round == 10 then
        collectgarbage("collect")
        collectgarbage("collect")
        base = collectgarbage("count")
      end
    end
    assert.same({}, retry)
    assert.equal(100000, acked)
    assert.same({ 0, 0 }, { q:fresh() })
    collectgarbage("collect")
    collectgarbage("collect")
    local grown = collectgarbage("count") - base
    assert.is_true(grown < 512, string.format("Lua memory grew by %.0f KB", grown))
    assert.is_true(top > 2000 and top <= 2 * 2000, "highest slot " .. top)
    q:close()
    q:close()
    assert.has_error(function() q:fresh() end, "producer queue is closed")
  end)

  it("lets go of a record table once it has left C, whichever way", function()
    local q, map, ci = queue()
    local A = sid(2)
    local keys = keys_on(map, A, 4)
    local weak = setmetatable({}, { __mode = "k" })
    local function fill(agg)
      for i = 1, 4 do
        local r = { PartitionKey = keys[i], Data = "x" .. i }
        weak[r] = true
        put(q, r, i)
      end
      local h = q:request()
      take(q, h, ci, A, { agg_max = agg and AGG or 0, agg_count = 2 })
      return h
    end
    -- each way out in a function of its own: nothing stays on the stack
    local ways = {
      function() -- acknowledged, with results
        local h = fill(false)
        local ans = answer { { sid = A, seq = "1" }, { sid = A, seq = "2" }, { sid = A, seq = "3" }, { sid = A, seq = "4" } }
        q:parse(h, ans, 4)
        assert.equal(4, #settle(q, h, ans, 0, true))
      end,
      function() -- acknowledged in aggregates, without
        local h = fill(true)
        local ans = answer { { sid = A, seq = "1" }, { sid = A, seq = "2" } }
        q:parse(h, ans, 2)
        assert.equal(4, select(2, settle(q, h, ans, 0, false)))
      end,
      function() -- failed, plain and aggregated
        for _, agg in ipairs({ false, true }) do
          local h = fill(agg)
          local n = agg and 2 or 4
          local items = {}
          for j = 1, n do items[j] = { code = "InternalFailure", msg = "x" } end
          local ans = answer(items)
          q:parse(h, ans, n)
          assert.equal(3 * n, #select(6, settle(q, h, ans, 0, true)))
        end
      end,
      function() -- abandoned
        assert.equal(2, #q:abandon(fill(true)))
      end,
      function() -- drained and expired
        local h = fill(false)
        local back = q:abandon(h)
        for j = 1, 4 do q:push(ci[A], back[j]) end
        assert.equal(2, #q:expire(ci[A], 2, false))
        assert.equal(2, #q:drain(ci[A]))
      end,
    }
    for _, way in ipairs(ways) do way() end
    collectgarbage("collect")
    collectgarbage("collect")
    local left = 0
    for _ in pairs(weak) do left = left + 1 end
    assert.equal(0, left)
    q:close()
  end)

  it("frees what is queued or in flight when closed or collected", function()
    for _, closing in ipairs({ true, false }) do
      local q, map, ci = queue()
      for n = 1, 200 do put(q, { PartitionKey = "z" .. n, Data = string.rep("z", n) }) end
      local h = q:request()
      take(q, h, ci, sid(0), { agg_max = AGG })
      take(q, h, ci, sid(1))
      q:body(h, HEAD, {}, 0)
      local ans = answer { { sid = sid(0), seq = "1" } }
      q:parse(h, ans, 1)
      if closing then
        q:close()
        assert.has_error(function() settle(q, h, ans, 0, true) end, "producer queue is closed")
      end
      q, map, ci = nil, nil, nil
      collectgarbage("collect")
    end
  end)
end)
