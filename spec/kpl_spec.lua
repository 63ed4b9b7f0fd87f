-- kpl_spec.lua - KPL aggregation: the C codec (src/kpl.c), its binding
-- (src/l_kpl.c: core.kpl_decode, core.kpl_encode, core.kpl_in_range) and
-- kinesis.kpl (aggregate, deaggregate, aggregator). Evidence first: every
-- vector of ../shared/vectors/kpl (made by aws-kinesis-agg) decoded and
-- re-encoded byte for byte, every negative one handled as its JSON says.
-- Then an independent pure-Lua encoder and MD5 for random round trips and
-- hand-built protobuf edge cases; the C decoder under ASan/UBSan over every
-- truncation and byte flip of the vectors; the aggregator's size limit; the
-- KCL shard filter against real shard maps; LuaJIT; kinesis-local.
local kpl = require "kinesis.kpl"
local core = require "kinesis.core"
local cjson = require "cjson"
local peers = require "support.peers"

local SHARED = assert(os.getenv("SHARED"), "SHARED must point to the shared folder")
local KPL = SHARED .. "/vectors/kpl/"
local null = cjson.null
local MiB = 1048576
local MAX_U128 = "340282366920938463463374607431768211455"

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function read_json(path)
  return cjson.decode(read_file(path))
end

local function unhex(h)
  return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

local function opt(v)
  if v == null then return nil end
  return v
end

local function shell_ok(cmd)
  local ok, how, code = os.execute(cmd)
  return ok == true and how == "exit" and code == 0
end

---------------------------------------------------------------- independent MD5 (RFC 1321)

local md5 do
  local K, S = {}, {
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
    5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
    6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
  }
  for i = 0, 63 do K[i] = math.floor(math.abs(math.sin(i + 1)) * 2 ^ 32) & 0xffffffff end
  local function rotl(x, c)
    return ((x << c) | (x >> (32 - c))) & 0xffffffff
  end
  function md5(msg)
    local len = #msg
    msg = msg .. "\128" .. string.rep("\0", (55 - len) % 64) .. string.pack("<I8", len * 8)
    local a0, b0, c0, d0 = 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476
    for chunk = 1, #msg, 64 do
      local M = { string.unpack("<I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4", msg, chunk) }
      local A, B, C, D = a0, b0, c0, d0
      for i = 0, 63 do
        local F, g
        if i < 16 then
          F, g = (B & C) | (~B & D), i
        elseif i < 32 then
          F, g = (D & B) | (~D & C), (5 * i + 1) % 16
        elseif i < 48 then
          F, g = B ~ C ~ D, (3 * i + 5) % 16
        else
          F, g = C ~ (B | (~D & 0xffffffff)), (7 * i) % 16
        end
        F = (F + A + K[i] + M[g + 1]) & 0xffffffff
        A, D, C = D, C, B
        B = (B + rotl(F, S[i + 1])) & 0xffffffff
      end
      a0, b0 = (a0 + A) & 0xffffffff, (b0 + B) & 0xffffffff
      c0, d0 = (c0 + C) & 0xffffffff, (d0 + D) & 0xffffffff
    end
    return string.pack("<I4I4I4I4", a0, b0, c0, d0)
  end
end

---------------------------------------------------------------- independent protobuf writer

-- varint of a 64-bit value (a negative Lua integer stands for >= 2^63)
local function varint(n)
  local t = {}
  repeat
    local b = n & 0x7f
    n = n >> 7
    if n ~= 0 then b = b | 0x80 end
    t[#t + 1] = string.char(b)
  until n == 0
  return table.concat(t)
end

local function key(field, wt) return varint((field << 3) | wt) end
local function fbytes(field, s) return key(field, 2) .. varint(#s) .. s end
local function fvarint(field, v) return key(field, 0) .. varint(v) end

local MAGIC = "\xF3\x89\x9A\xC2"
local function frame(pb) return MAGIC .. pb .. md5(pb) end

-- The protobuf in the byte layout the vectors document: tables deduplicated
-- in first-seen order, fields in number order, Record field 2 only with an EHK.
local function ref_protobuf(records)
  local pks, pkpos, ehks, ehkpos, recs = {}, {}, {}, {}, {}
  for i, r in ipairs(records) do
    if not pkpos[r.PartitionKey] then
      pks[#pks + 1] = r.PartitionKey
      pkpos[r.PartitionKey] = #pks - 1
    end
    local body = fvarint(1, pkpos[r.PartitionKey])
    if r.ExplicitHashKey then
      if not ehkpos[r.ExplicitHashKey] then
        ehks[#ehks + 1] = r.ExplicitHashKey
        ehkpos[r.ExplicitHashKey] = #ehks - 1
      end
      body = body .. fvarint(2, ehkpos[r.ExplicitHashKey])
    end
    recs[i] = fbytes(3, body .. fbytes(3, r.Data))
  end
  local out = {}
  for _, k in ipairs(pks) do out[#out + 1] = fbytes(1, k) end
  for _, k in ipairs(ehks) do out[#out + 1] = fbytes(2, k) end
  for _, r in ipairs(recs) do out[#out + 1] = r end
  return table.concat(out)
end

local function ref_aggregate(records)
  return frame(ref_protobuf(records))
end

-- canonical decimal strings compared as numbers
local function dec_cmp(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end

---------------------------------------------------------------- vectors

local INDEX = read_json(KPL .. "index.json")
local POSITIVE, NEGATIVE = {}, {}
for _, e in ipairs(INDEX) do
  local v = read_json(KPL .. e.json)
  v.bin = read_file(KPL .. e.bin)
  if e.kind == "positive" then POSITIVE[#POSITIVE + 1] = v else NEGATIVE[#NEGATIVE + 1] = v end
end

local function user_records_of(v)
  local t = {}
  for i, r in ipairs(v.records) do
    t[i] = { PartitionKey = r.partition_key, ExplicitHashKey = opt(r.explicit_hash_key),
             Data = peers.b64decode(r.data_base64) }
  end
  return t
end

describe("independent helpers of this spec", function()
  it("MD5 matches RFC 1321's examples and every vector's md5_hex", function()
    assert.equal(unhex("d41d8cd98f00b204e9800998ecf8427e"), md5(""))
    assert.equal(unhex("900150983cd24fb0d6963f7d28e17f72"), md5("abc"))
    assert.equal(unhex("57edf4a22be3c955ac49da2e2107b67a"),
      md5("12345678901234567890123456789012345678901234567890123456789012345678901234567890"))
    for _, v in ipairs(POSITIVE) do
      assert.equal(unhex(v.md5_hex), md5(v.bin:sub(5, -17)), v.name)
    end
  end)
end)

describe("KPL positive vectors", function()
  it("are the 11 the index lists", function()
    assert.equal(11, #POSITIVE)
    assert.equal(12, #NEGATIVE)
  end)

  for _, v in ipairs(POSITIVE) do
    describe(v.name, function()
      it("has the framing its JSON states", function()
        assert.equal(v.total_length, #v.bin)
        assert.equal(unhex(v.magic_hex), v.bin:sub(1, 4))
        assert.equal(v.protobuf_length, #v.bin - 20)
        assert.equal(unhex(v.md5_hex), v.bin:sub(-16))
        if v.protobuf_hex then assert.equal(unhex(v.protobuf_hex), v.bin:sub(5, -17)) end
      end)

      it("deaggregates to exactly the listed user records", function()
        local outer = { Data = v.bin, PartitionKey = "outer-pk", SequenceNumber = "49590338271490256608559692538361571095921575989136588898",
                        ApproximateArrivalTimestamp = 1700000000.25, EncryptionType = "NONE" }
        local users, err, dropped = kpl.deaggregate(outer)
        assert.is_nil(err)
        assert.equal(0, dropped)
        assert.equal(#v.records, #users)
        for i, r in ipairs(v.records) do
          local u = users[i]
          assert.equal(r.partition_key, u.PartitionKey)
          assert.equal(opt(r.explicit_hash_key), u.ExplicitHashKey)
          assert.equal(r.data_length, #u.Data)
          assert.is_true(peers.b64decode(r.data_base64) == u.Data, "data of user record " .. i)
          assert.equal(i - 1, u.SubSequenceNumber)
          assert.equal("integer", math.type(u.SubSequenceNumber))
          assert.equal(outer.SequenceNumber, u.SequenceNumber)
          assert.equal(outer.ApproximateArrivalTimestamp, u.ApproximateArrivalTimestamp)
          assert.equal("NONE", u.EncryptionType)
          assert.is_true(u.Aggregated)
          -- the key the KCL filters on
          assert.equal(r.effective_hash_key, u.ExplicitHashKey or core.hash_key(u.PartitionKey))
        end
        assert.equal(v.bin, outer.Data)
      end)

      it("decodes the key tables and the indexes as listed", function()
        local pks, ehks, recs = core.kpl_decode(v.bin)
        assert.same(v.partition_key_table, pks)
        assert.same(v.explicit_hash_key_table, ehks)
        assert.equal(#v.records, #recs)
        for i, r in ipairs(v.records) do
          assert.equal(r.partition_key_index, recs[i].partition_key_index)
          assert.equal(opt(r.explicit_hash_key_index), recs[i].explicit_hash_key_index)
        end
      end)

      it("is re-encoded byte for byte by aggregate() from the same user records", function()
        local records = user_records_of(v)
        local entry, err = kpl.aggregate(records)
        assert.is_nil(err)
        assert.is_true(entry.Data == v.bin, "aggregate differs from " .. v.name .. ".bin")
        -- the outer record: the first user record's keys (vectors: outer_record)
        assert.equal(v.outer_record.partition_key, entry.PartitionKey)
        assert.equal(opt(v.outer_record.explicit_hash_key), entry.ExplicitHashKey)
        -- this spec's reference encoder agrees, so it can judge random input
        assert.is_true(ref_aggregate(records) == v.bin)
        -- the aggregator gives the same bytes and accounts them exactly
        local agg = kpl.aggregator()
        for _, r in ipairs(records) do assert.is_nil(agg:add(r)) end
        assert.equal(#records, agg:count())
        assert.equal(#v.bin + #entry.PartitionKey, agg:size())
        local flushed = agg:flush()
        assert.is_true(flushed.Data == v.bin)
        assert.equal(0, agg:count())
        assert.is_nil(agg:flush())
      end)
    end)
  end
end)

describe("KPL negative vectors", function()
  -- What each JSON asks for, read from its kcl_behavior / recommended text.
  local function expectation(v)
    local kcl, rec = v.kcl_behavior, v.recommended
    local pass = kcl:find("returned unchanged", 1, true) or kcl:find("not aggregated", 1, true)
    local index = rec:find("report an error for the aggregate", 1, true)
    assert(not (pass and index), v.name .. ": both pass-through and error")
    assert(pass or index, v.name .. ": no expectation found in its JSON")
    local strict
    if kcl:find("MD5 mismatch", 1, true) then strict = "KPLChecksumMismatch"
    elseif kcl:find("protobuf parse fails", 1, true) then strict = "KPLMalformed"
    elseif kcl:find("missing required field", 1, true) then strict = "KPLMissingField" end
    return pass and "passthrough" or "error", strict
  end

  local seen = { passthrough = 0, error = 0 }
  for _, v in ipairs(NEGATIVE) do
    local want, strict_code = expectation(v)
    seen[want] = seen[want] + 1
    it(v.name .. " -> " .. want .. " (" .. v.recommended .. ")", function()
      assert.equal(v.length, #v.bin)
      assert.equal(unhex(v.hex), v.bin)
      local outer = { Data = v.bin, PartitionKey = "outer-pk", SequenceNumber = "1",
                      ApproximateArrivalTimestamp = 1700000001.5 }
      local users, err, dropped = kpl.deaggregate(outer)
      if want == "passthrough" then
        assert.is_nil(err)
        assert.equal(0, dropped)
        assert.equal(1, #users)
        local u = users[1]
        assert.is_true(u.Data == v.bin)
        assert.equal("outer-pk", u.PartitionKey)
        assert.equal("1", u.SequenceNumber)
        assert.equal(1700000001.5, u.ApproximateArrivalTimestamp)
        assert.is_false(u.Aggregated)
        assert.is_nil(u.SubSequenceNumber)
        assert.is_nil(u.ExplicitHashKey)
        assert.are_not.equal(outer, u)
        assert.is_nil(outer.Aggregated)
        local agg = v.aws_kinesis_agg_deaggregateSync.computeChecksums_true
        if agg.passthrough then assert.equal(peers.b64decode(agg.records[1].data_base64), u.Data) end
        -- strict mode: a record with the magic and a corrupt rest is an error
        local s_users, s_err = kpl.deaggregate(outer, { strict = true })
        if strict_code then
          assert.is_nil(s_users)
          assert.equal("protocol", s_err.kind)
          assert.equal(strict_code, s_err.code)
        else
          assert.is_nil(s_err)
          assert.is_true(s_users[1].Data == v.bin)
          assert.is_false(s_users[1].Aggregated)
        end
      else
        assert.is_nil(users)
        assert.equal("protocol", err.kind)
        assert.equal("KPLIndexOutOfRange", err.code)
        assert.equal("deaggregate", err.op)
        assert.same({}, err.records)
        assert.equal(1, #err.problems)
        assert.matches("outside a table of", tostring(err))
        local s_users, s_err = kpl.deaggregate(outer, { strict = true })
        assert.is_nil(s_users)
        assert.equal("KPLIndexOutOfRange", s_err.code)
      end
    end)
  end

  it("cover both behaviours", function()
    assert.equal(10, seen.passthrough)
    assert.equal(2, seen.error)
  end)
end)

---------------------------------------------------------------- random round trips

local function random_bytes(n)
  local t = {}
  for i = 1, (n + 7) // 8 do t[i] = string.pack("<j", math.random(0)) end
  return table.concat(t):sub(1, n)
end

-- 1-40 code points from ASCII, 2-, 3- and 4-byte UTF-8 ranges
local function random_key()
  local t = {}
  for i = 1, math.random(1, 40) do
    local r = math.random(1, 4)
    if r == 1 then t[i] = utf8.char(math.random(0x21, 0x7e))
    elseif r == 2 then t[i] = utf8.char(math.random(0x400, 0x4ff))
    elseif r == 3 then t[i] = utf8.char(math.random(0x4e00, 0x9fff))
    else t[i] = utf8.char(math.random(0x1f300, 0x1f64f)) end
  end
  return table.concat(t)
end

local function random_data_len()
  local r = math.random()
  if r < 0.05 then return 0 end
  if r < 0.65 then return math.random(1, 64) end
  if r < 0.95 then return math.random(65, 2000) end
  return math.random(2001, 20000)
end

-- n user records; keys are reused often (the tables are deduplicated) and
-- 40% of the records carry an ExplicitHashKey, edges included.
local function random_records(n)
  local keys, ehks, out = {}, { "0", MAX_U128, "170141183460469231731687303715884105728" }, {}
  for i = 1, n do
    local pk
    if #keys > 0 and math.random() < 0.3 then pk = keys[math.random(#keys)]
    else pk = random_key(); keys[#keys + 1] = pk end
    local ehk
    if math.random() < 0.4 then
      if math.random() < 0.5 then ehk = ehks[math.random(#ehks)]
      else ehk = core.hash_key(random_bytes(8)); ehks[#ehks + 1] = ehk end
    end
    out[i] = { PartitionKey = pk, ExplicitHashKey = ehk, Data = random_bytes(random_data_len()) }
  end
  return out
end

local function assert_same_records(want, got)
  assert.equal(#want, #got)
  for i, r in ipairs(want) do
    local u = got[i]
    assert.equal(r.PartitionKey, u.PartitionKey)
    assert.equal(r.ExplicitHashKey, u.ExplicitHashKey)
    assert.is_true(r.Data == u.Data, "data of record " .. i)
  end
end

describe("random round trips", function()
  it("aggregate -> deaggregate restores 1..500 records exactly and matches the reference encoder", function()
    math.randomseed(20240601)
    local sizes = { 1, 2, 3, 127, 128, 129, 255, 256, 257, 499, 500 }
    for _ = 1, 30 do sizes[#sizes + 1] = math.random(1, 500) end
    for _, n in ipairs(sizes) do
      local records = random_records(n)
      local entry, err = kpl.aggregate(records, { max_bytes = math.huge })
      assert.is_nil(err)
      -- the protobuf against the reference; the MD5 (checked against this
      -- spec's MD5 on every vector) is checked by deaggregate below
      assert.is_true(entry.Data:sub(5, -17) == ref_protobuf(records), "bytes differ from the reference for n = " .. n)
      assert.equal(records[1].PartitionKey, entry.PartitionKey)
      assert.equal(records[1].ExplicitHashKey, entry.ExplicitHashKey)
      local users, derr = kpl.deaggregate { Data = entry.Data, PartitionKey = entry.PartitionKey, SequenceNumber = "7" }
      assert.is_nil(derr)
      assert_same_records(records, users)
      for i, u in ipairs(users) do
        assert.equal(i - 1, u.SubSequenceNumber)
        assert.equal("7", u.SequenceNumber)
      end
    end
  end)

  it("an aggregate inside an aggregate is data: deaggregate unpacks one level", function()
    local inner = assert(kpl.aggregate { { PartitionKey = "a", Data = "x" }, { PartitionKey = "b", Data = "y" } })
    local outer = assert(kpl.aggregate { { PartitionKey = "o", Data = inner.Data }, { PartitionKey = "p", Data = MAGIC } })
    local users = assert(kpl.deaggregate { Data = outer.Data })
    assert.equal(2, #users)
    assert.equal(inner.Data, users[1].Data)
    assert.equal(MAGIC, users[2].Data)
  end)
end)

---------------------------------------------------------------- hand-built protobuf

describe("decoder edge cases (hand-built protobuf, valid MD5)", function()
  local REC = fvarint(1, 0) .. fbytes(3, "d")        -- a sound Record body
  local function agg(pb) return { Data = frame(pb), PartitionKey = "outer", SequenceNumber = "9" } end

  -- decodes to exactly one user record {pk, "d"}
  local function one(pb, pk)
    local users, err = kpl.deaggregate(agg(pb))
    assert.is_nil(err)
    assert.equal(1, #users)
    assert.is_true(users[1].Aggregated)
    assert.equal(pk or "pk", users[1].PartitionKey)
    assert.equal("d", users[1].Data)
  end

  -- not an aggregate for the KCL: passed through; strict mode names why
  local function rejected(pb, code)
    local rec = agg(pb)
    local users, err = kpl.deaggregate(rec)
    assert.is_nil(err)
    assert.equal(1, #users)
    assert.is_false(users[1].Aggregated)
    assert.is_true(users[1].Data == rec.Data)
    local s_users, s_err = kpl.deaggregate(rec, { strict = true })
    assert.is_nil(s_users)
    assert.equal(code, s_err.code)
  end

  local group = key(13, 3) .. fvarint(1, 1) .. key(14, 3) .. fbytes(2, "g") .. key(14, 4) .. key(13, 4)
  local unknown = fvarint(9, 300) .. key(10, 1) .. "12345678" .. fbytes(11, "abc") ..
                  key(12, 5) .. "1234" .. group .. fvarint(536870911, 1)

  it("skips unknown fields of every wire type, groups included, at every level", function()
    one(unknown .. fbytes(1, "pk") .. unknown .. fbytes(3, unknown .. REC .. unknown) .. unknown)
    local tag = fbytes(4, unknown .. fbytes(1, "k") .. unknown .. fbytes(2, "v") .. unknown)
    one(fbytes(1, "pk") .. fbytes(3, tag .. REC .. tag))
  end)

  it("treats a known field number with another wire type as unknown (as protobuf-java)", function()
    one(fvarint(1, 5) .. fbytes(1, "pk") .. key(2, 5) .. "abcd" .. fbytes(3, fbytes(1, "xx") .. REC .. fvarint(3, 7)))
  end)

  it("takes the last value of a repeated singular field", function()
    one(fbytes(1, "pk") .. fbytes(1, "other") .. fbytes(3, fvarint(1, 1) .. fbytes(3, "old") .. fvarint(1, 0) .. fbytes(3, "d")))
  end)

  it("reads a 10-byte varint holding 2^64-1 (then an index error, not a crash)", function()
    local users, err = kpl.deaggregate(agg(fbytes(1, "pk") .. fbytes(3, fvarint(1, -1) .. fbytes(3, "d"))))
    assert.is_nil(users)
    assert.equal("KPLIndexOutOfRange", err.code)
    one(fvarint(9, -1) .. fbytes(1, "pk") .. fbytes(3, REC))
  end)

  it("keeps deep groups up to a bound and refuses deeper nesting", function()
    local function nest(n)
      local open, close = {}, {}
      for i = 1, n do
        open[i] = key(20 + i, 3)
        close[n + 1 - i] = key(20 + i, 4)
      end
      return table.concat(open) .. table.concat(close)
    end
    one(nest(50) .. fbytes(1, "pk") .. fbytes(3, REC))
    rejected(nest(1000) .. fbytes(1, "pk") .. fbytes(3, REC), "KPLMalformed")
  end)

  local base = fbytes(1, "pk") .. fbytes(3, REC)
  local malformed = {
    ["truncated varint"] = base .. key(9, 0) .. "\x80",
    ["varint of 11 bytes"] = base .. key(9, 0) .. string.rep("\x80", 10) .. "\x01",
    ["varint above 2^64"] = base .. key(9, 0) .. string.rep("\xff", 9) .. "\x02",
    ["length past the end"] = base .. key(11, 2) .. varint(5) .. "abc",
    ["record length past the end"] = fbytes(1, "pk") .. key(3, 2) .. varint(#REC + 1) .. REC,
    ["truncated fixed64"] = base .. key(10, 1) .. "1234567",
    ["truncated fixed32"] = base .. key(12, 5) .. "123",
    ["field number 0"] = base .. "\x00\x01",
    ["field number above 2^29-1"] = base .. varint(1 << 32) .. "\x01",
    ["wire type 6"] = base .. key(9, 6),
    ["wire type 7"] = base .. key(9, 7),
    ["end group with no group"] = base .. key(9, 4),
    ["group never closed"] = base .. key(9, 3) .. fvarint(1, 1),
    ["group closed by another field"] = base .. key(9, 3) .. key(8, 4),
    ["truncated inside a record"] = fbytes(1, "pk") .. fbytes(3, key(1, 0) .. "\x80"),
    ["bad tag inside a Tag"] = fbytes(1, "pk") .. fbytes(3, REC .. fbytes(4, key(1, 7))),
    ["malformed after a missing field"] = fbytes(1, "pk") .. fbytes(3, fvarint(1, 0)) .. key(9, 6),
  }
  for name, pb in pairs(malformed) do
    it("passes through (strict: KPLMalformed): " .. name, function()
      rejected(pb, "KPLMalformed")
    end)
  end

  local missing = {
    ["Record without data"] = fbytes(1, "pk") .. fbytes(3, REC) .. fbytes(3, fvarint(1, 0)),
    ["Record without partition_key_index"] = fbytes(1, "pk") .. fbytes(3, fbytes(3, "d")),
    ["Tag without key"] = fbytes(1, "pk") .. fbytes(3, REC .. fbytes(4, fbytes(2, "v"))),
  }
  for name, pb in pairs(missing) do
    it("passes through (strict: KPLMissingField): " .. name, function()
      rejected(pb, "KPLMissingField")
    end)
  end

  it("gives no user records for a sound aggregate that holds none", function()
    local users, err = kpl.deaggregate(agg(fbytes(1, "pk") .. fbytes(2, "5")))
    assert.is_nil(err)
    assert.same({}, users)
  end)

  it("reports unusable user records, keeping the sound ones in err.records", function()
    local pb = fbytes(1, "pk") .. fbytes(2, "12x") .. fbytes(2, "77") ..
      fbytes(3, REC) ..                                             -- 0: sound
      fbytes(3, fvarint(1, 3) .. fbytes(3, "d")) ..                 -- 1: pk index 3 of 1
      fbytes(3, fvarint(1, 0) .. fvarint(2, 0) .. fbytes(3, "d")) .. -- 2: EHK "12x"
      fbytes(3, fvarint(1, 0) .. fvarint(2, 1) .. fbytes(3, "e")) .. -- 3: sound, EHK 77
      fbytes(3, fvarint(1, 0) .. fvarint(2, 2) .. fbytes(3, "d"))    -- 4: EHK index 2 of 2
    local users, err = kpl.deaggregate(agg(pb))
    assert.is_nil(users)
    assert.equal("KPLIndexOutOfRange", err.code)
    assert.equal(3, #err.problems)
    assert.matches("user record 2: ExplicitHashKey", err.problems[2])
    assert.equal(2, #err.records)
    assert.equal(0, err.records[1].SubSequenceNumber)
    assert.equal(3, err.records[2].SubSequenceNumber)
    assert.equal("77", err.records[2].ExplicitHashKey)
    assert.equal("e", err.records[2].Data)
    assert.equal("9", err.records[2].SequenceNumber)
    local _, err2 = kpl.deaggregate(agg(fbytes(1, "pk") .. fbytes(2, "01") ..
      fbytes(3, fvarint(1, 0) .. fvarint(2, 0) .. fbytes(3, "d"))))
    assert.equal("KPLBadExplicitHashKey", err2.code)
  end)

  it("decodes every prefix of a vector's protobuf either to the first k records or not at all", function()
    local v = POSITIVE[4] -- mixed-explicit-hash-keys
    assert.equal("mixed-explicit-hash-keys", v.name)
    local want = user_records_of(v)
    local pb = v.bin:sub(5, -17)
    local decoded = 0
    for n = 0, #pb - 1 do
      local rec = { Data = frame(pb:sub(1, n)) }
      local ok, users, err = pcall(kpl.deaggregate, rec)
      assert.is_true(ok, users)
      if users and users[1] and users[1].Aggregated then
        decoded = decoded + 1
        assert.is_true(#users < #want)
        for i, u in ipairs(users) do
          assert.equal(want[i].PartitionKey, u.PartitionKey)
          assert.equal(want[i].Data, u.Data)
        end
      elseif users then
        assert.is_true(#users == 0 or users[1].Data == rec.Data)
      else
        assert.equal("KPLIndexOutOfRange", err.code)
      end
    end
    assert.is_true(decoded > 0)
  end)

  it("survives 3000 random byte changes of vector protobufs with a recomputed MD5", function()
    math.randomseed(7)
    local outcomes = { aggregate = 0, passthrough = 0, error = 0 }
    for i = 1, 3000 do
      local v = POSITIVE[(i % #POSITIVE) + 1]
      if #v.bin < 20000 then
        local pb = v.bin:sub(5, -17)
        local pos = math.random(1, #pb)
        pb = pb:sub(1, pos - 1) .. string.char(math.random(0, 255)) .. pb:sub(pos + 1)
        local ok, users, err = pcall(kpl.deaggregate, { Data = frame(pb) })
        assert.is_true(ok, users)
        if not users then
          assert.equal("protocol", err.kind)
          outcomes.error = outcomes.error + 1
        elseif #users > 0 and users[1].Aggregated == false then
          outcomes.passthrough = outcomes.passthrough + 1
        else
          outcomes.aggregate = outcomes.aggregate + 1
        end
      end
    end
    assert.is_true(outcomes.aggregate > 0 and outcomes.passthrough > 0 and outcomes.error > 0)
  end)
end)

---------------------------------------------------------------- C decoder under sanitizers

local HARNESS = [=[
/* kpl_fuzz.c - written by spec/kpl_spec.lua. Every input is copied into an
 * allocation of exactly its size, so ASan reports any read past it. */
#include "kpl.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long fails, probes, decoded;
#define CHECK(c, what) do { if (!(c)) { fails++; fprintf(stderr, "FAIL %s (line %d)\n", what, __LINE__); } } while (0)

static void *xmalloc(size_t n) { void *p = malloc(n ? n : 1); if (!p) abort(); return p; }

static int same_bytes(kn_kpl_bytes a, kn_kpl_bytes b)
{
  return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static void alloc_msg(kn_kpl_message *m, const kn_kpl_counts *c)
{
  m->pks = xmalloc(c->pks * sizeof *m->pks);
  m->ehks = xmalloc(c->ehks * sizeof *m->ehks);
  m->records = xmalloc(c->records * sizeof *m->records);
  m->pk_count = c->pks;
  m->ehk_count = c->ehks;
  m->record_count = c->records;
}

static void free_msg(kn_kpl_message *m) { free(m->pks); free(m->ehks); free(m->records); }

/* scan + parse len bytes; when they decode, re-encode the sound records and
 * check the result decodes to the same message. */
static int probe(const unsigned char *src, size_t len)
{
  unsigned char *buf = xmalloc(len);
  kn_kpl_counts c;
  int rc;
  memcpy(buf, src, len);
  probes++;
  rc = kn_kpl_scan(buf, len, &c);
  if (rc == KN_KPL_OK) {
    kn_kpl_message m, keep, again;
    kn_kpl_counts c2;
    size_t i, n = 0, size = 0, written = 0;
    decoded++;
    alloc_msg(&m, &c);
    CHECK(kn_kpl_parse(buf, len, &m) == KN_KPL_OK, "parse after scan");
    CHECK(m.pk_count == c.pks && m.ehk_count == c.ehks && m.record_count == c.records, "counts");
    if (c.records > 0) {
      kn_kpl_message small = m;
      small.record_count = c.records - 1;
      CHECK(kn_kpl_parse(buf, len, &small) == KN_KPL_ESPACE, "ESPACE");
    }
    keep = m;
    keep.records = xmalloc(c.records * sizeof *keep.records);
    for (i = 0; i < m.record_count; i++)
      if (kn_kpl_record_check(&m, i) == KN_KPL_OK) keep.records[n++] = m.records[i];
    keep.record_count = n;
    CHECK(kn_kpl_record_check(&m, m.record_count) == KN_KPL_ESPACE, "check past the end");
    if (kn_kpl_encoded_size(&keep, &size) == KN_KPL_OK) {
      unsigned char *out = xmalloc(size);
      const uint8_t *pb = NULL;
      size_t pb_len = 0;
      if (size > 0) CHECK(kn_kpl_encode(&keep, out, size - 1, &written) == KN_KPL_ESPACE, "short output");
      CHECK(kn_kpl_encode(&keep, out, size, &written) == KN_KPL_OK && written == size, "encode");
      rc = kn_kpl_unwrap(out, size, &pb, &pb_len);
      if (size == KN_KPL_OVERHEAD) {
        CHECK(rc == KN_KPL_ENOTAGG, "empty aggregate is not one");
      } else {
        CHECK(rc == KN_KPL_OK && kn_kpl_scan(pb, pb_len, &c2) == KN_KPL_OK, "re-decode");
        alloc_msg(&again, &c2);
        CHECK(kn_kpl_parse(pb, pb_len, &again) == KN_KPL_OK, "re-parse");
        CHECK(again.pk_count == keep.pk_count && again.ehk_count == keep.ehk_count &&
              again.record_count == keep.record_count, "re-counts");
        for (i = 0; i < again.pk_count && i < keep.pk_count; i++)
          CHECK(same_bytes(again.pks[i], keep.pks[i]), "pk");
        for (i = 0; i < again.ehk_count && i < keep.ehk_count; i++)
          CHECK(same_bytes(again.ehks[i], keep.ehks[i]), "ehk");
        for (i = 0; i < again.record_count && i < keep.record_count; i++) {
          const kn_kpl_record *a = &again.records[i], *b = &keep.records[i];
          CHECK(a->pk_index == b->pk_index && a->has_ehk == b->has_ehk &&
                (!a->has_ehk || a->ehk_index == b->ehk_index) && same_bytes(a->data, b->data), "record");
        }
        free_msg(&again);
      }
      free(out);
    }
    if (m.record_count > 0) {
      kn_kpl_message bad = m;
      size_t sz;
      bad.pk_count = 0;
      CHECK(kn_kpl_encoded_size(&bad, &sz) == KN_KPL_EINDEX, "EINDEX");
    }
    free(keep.records);
    free_msg(&m);
    rc = KN_KPL_OK;
  }
  free(buf);
  return rc;
}

static unsigned char *slurp(const char *path, size_t *len)
{
  FILE *f = fopen(path, "rb");
  unsigned char *p;
  long n;
  if (!f) { perror(path); exit(2); }
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  p = xmalloc((size_t)n);
  if (fread(p, 1, (size_t)n, f) != (size_t)n) exit(2);
  fclose(f);
  *len = (size_t)n;
  return p;
}

int main(int argc, char **argv)
{
  int a;
  for (a = 1; a < argc; a++) {
    size_t len, pb_len = 0, n, i, step;
    unsigned char *data = slurp(argv[a], &len);
    const uint8_t *pb = NULL;
    CHECK(kn_kpl_unwrap(data, len, &pb, &pb_len) == KN_KPL_OK, argv[a]);
    CHECK(probe(pb, pb_len) == KN_KPL_OK, argv[a]);
    step = pb_len > 4096 ? pb_len / 1021 + 1 : 1;
    for (n = 0; n < pb_len; n += step) probe(pb, n);
    for (i = 0; i < pb_len; i += step) {
      static const unsigned char flips[] = {0x80, 0x01, 0xff, 0x07};
      unsigned char *copy = xmalloc(pb_len);
      size_t f;
      for (f = 0; f < sizeof flips; f++) {
        memcpy(copy, pb, pb_len);
        copy[i] ^= flips[f];
        probe(copy, pb_len);
      }
      free(copy);
    }
    /* the framing over every prefix of the whole record */
    for (n = 0; n < len; n += (len > 4096 ? len / 1021 + 1 : 1)) {
      unsigned char *copy = xmalloc(n);
      const uint8_t *p2;
      size_t l2;
      int rc;
      memcpy(copy, data, n);
      rc = kn_kpl_unwrap(copy, n, &p2, &l2);
      CHECK(rc == KN_KPL_ENOTAGG || rc == KN_KPL_ECHECKSUM, "prefix unwrap");
      free(copy);
    }
    free(data);
  }
  printf("probes=%ld decoded=%ld fails=%ld\n", probes, decoded, fails);
  return fails != 0;
}
]=]

describe("C decoder under AddressSanitizer and UBSan", function()
  it("never reads outside its input: every truncation and byte flip of every vector", function()
    os.execute("mkdir -p spec/.tmp")
    local src = "spec/.tmp/kpl_fuzz.c"
    local f = assert(io.open(src, "w"))
    f:write(HARNESS)
    f:close()
    local exe = "spec/.tmp/kpl_fuzz"
    assert.is_true(shell_ok("cc -std=c99 -g -O1 -Wall -Wextra -Werror -fsanitize=address,undefined " ..
      "-fno-sanitize-recover=all -fno-omit-frame-pointer -Isrc -o " .. exe .. " " .. src ..
      " src/kpl.c src/md5.c -lcrypto > spec/.tmp/kpl_fuzz.build.log 2>&1"), "build failed: spec/.tmp/kpl_fuzz.build.log")
    local files = {}
    for _, v in ipairs(POSITIVE) do files[#files + 1] = "'" .. KPL .. v.name .. ".bin'" end
    local p = assert(io.popen("ASAN_OPTIONS=detect_leaks=1 " .. exe .. " " .. table.concat(files, " ") .. " 2>&1"))
    local out = p:read("a")
    local ok = p:close()
    assert.is_true(ok, out)
    local probes, decoded, fails = out:match("probes=(%d+) decoded=(%d+) fails=(%d+)")
    assert.equal("0", fails, out)
    assert.is_true(tonumber(probes) > 15000, out)
    assert.is_true(tonumber(decoded) > 1000, out)
  end)
end)

---------------------------------------------------------------- aggregator

describe("aggregator", function()
  -- records sized so that entries fill up at several scales
  local function stream(n, max)
    local t = {}
    for i = 1, n do
      local r = math.random()
      local len = r < 0.7 and math.random(0, 200) or r < 0.95 and math.random(200, max // 8) or math.random(max // 3, max // 2)
      t[i] = { PartitionKey = (i % 7 == 0) and string.rep("é", 128) or random_key(),
               ExplicitHashKey = (i % 3 == 0) and core.hash_key("k" .. i) or nil,
               Data = random_bytes(len) }
    end
    return t
  end

  it("never hands out an entry over max_bytes, keeps order, and hands out only full entries", function()
    math.randomseed(99)
    for _, max in ipairs { MiB, 65536, 3000 } do
      local records = stream(max == MiB and 150 or 400, max)
      local agg = kpl.aggregator { max_bytes = max }
      local entries, nexts = {}, {}
      for _, r in ipairs(records) do
        local e, err = agg:add(r)
        assert.is_nil(err)
        if e then
          entries[#entries + 1] = e
          nexts[#entries] = r
        end
        assert.is_true(agg:size() <= max)
      end
      entries[#entries + 1] = agg:flush()
      assert.is_true(#entries >= 3, "max " .. max .. " gave " .. #entries .. " entries")
      local all = {}
      for k, e in ipairs(entries) do
        assert.is_true(#e.Data + #e.PartitionKey <= max, "entry over the limit")
        local users = assert(kpl.deaggregate(e))
        assert.equal(users[1].PartitionKey, e.PartitionKey)
        assert.equal(users[1].ExplicitHashKey, e.ExplicitHashKey)
        for _, u in ipairs(users) do all[#all + 1] = u end
        if nexts[k] then
          -- full: with the record that started the next entry it would not fit
          local with = {}
          for i, u in ipairs(users) do with[i] = u end
          with[#with + 1] = nexts[k]
          local none, err = kpl.aggregate(with, { max_bytes = max })
          assert.is_nil(none)
          assert.equal("RecordTooLarge", err.code)
        end
      end
      assert_same_records(records, all)
    end
  end)

  it("accounts the pending size exactly after every add", function()
    math.randomseed(5)
    local records = random_records(200)
    local agg = kpl.aggregator { max_bytes = 10 * MiB }
    for i, r in ipairs(records) do
      assert.is_nil(agg:add(r))
      if i % 17 == 0 or i < 5 then
        local pending = {}
        for k = 1, i do pending[k] = records[k] end
        assert.equal(20 + #ref_protobuf(pending) + #records[1].PartitionKey, agg:size())
      end
    end
  end)

  it("takes a user record that fills max_bytes exactly and refuses one byte more", function()
    -- PartitionKey "k", Data of L bytes: data field 1+3+L, Record body L+6,
    -- records field L+10, protobuf (with the 3-byte key table) L+13,
    -- plus magic and MD5 (20) plus the outer key (1): L + 34.
    local L = MiB - 34
    local agg = kpl.aggregator()
    local e, err = agg:add { PartitionKey = "k", Data = string.rep("x", L) }
    assert.is_nil(e)
    assert.is_nil(err)
    assert.equal(MiB, agg:size())
    local full = agg:flush()
    assert.equal(MiB, #full.Data + #full.PartitionKey)
    e, err = agg:add { PartitionKey = "k", Data = string.rep("x", L + 1) }
    assert.is_nil(e)
    assert.equal("validation", err.kind)
    assert.equal("RecordTooLarge", err.code)
    assert.equal(0, agg:count())
    -- the same record with a 2-byte key no longer fits either
    local _, err2 = agg:add { PartitionKey = "kk", Data = string.rep("x", L) }
    assert.equal("RecordTooLarge", err2.code)
  end)

  it("counts the outer partition key: a long first key leaves less room", function()
    local long = string.rep("p", 256)
    local agg = kpl.aggregator { max_bytes = 1000 }
    assert.is_nil(agg:add { PartitionKey = long, Data = "" })
    -- magic + MD5, the key table entry (1 + 2 + 256), the Record (1 + 1 +
    -- body 4), and the outer key counted by the service
    assert.equal(20 + (3 + 256) + (2 + 4) + 256, agg:size())
    local e
    repeat
      e = agg:add { PartitionKey = "s", Data = string.rep("z", 50) }
    until e
    assert.equal(long, e.PartitionKey)
    -- each further record costs 56 bytes (Record: 1 + 1 + 2 + 52)
    assert.is_true(#e.Data + 256 <= 1000)
    assert.is_true(#e.Data + 256 + 56 > 1000)
  end)

  it("leaves the pending aggregate alone when it refuses a record", function()
    local agg = kpl.aggregator { max_bytes = 200 }
    assert.is_nil(agg:add { PartitionKey = "a", Data = "1" })
    local size = agg:size()
    local e, err = agg:add { PartitionKey = "b", Data = string.rep("x", 500) }
    assert.is_nil(e)
    assert.equal("RecordTooLarge", err.code)
    e, err = agg:add { PartitionKey = "b", ExplicitHashKey = "-1", Data = "x" }
    assert.is_nil(e)
    assert.equal("ValidationError", err.code)
    assert.equal(1, agg:count())
    assert.equal(size, agg:size())
    local users = assert(kpl.deaggregate(agg:flush()))
    assert.equal(1, #users)
    assert.equal("1", users[1].Data)
  end)

  it("flushes on max_records", function()
    local agg = kpl.aggregator { max_records = 3 }
    local got = {}
    for i = 1, 10 do
      local e = agg:add { PartitionKey = "k" .. i, Data = tostring(i) }
      if e then got[#got + 1] = e end
    end
    got[#got + 1] = agg:flush()
    assert.equal(4, #got)
    assert.equal(3, #assert(kpl.deaggregate(got[1])))
    assert.equal(1, #assert(kpl.deaggregate(got[4])))
    assert.equal("k10", got[4].PartitionKey)
    assert.is_nil(agg:flush())
  end)

  it("refuses invalid user records with nil, err and raises on bad options", function()
    local agg = kpl.aggregator()
    for _, bad in ipairs {
      "not a table",
      { Data = "x" },
      { PartitionKey = "", Data = "x" },
      { PartitionKey = 5, Data = "x" },
      { PartitionKey = "k" },
      { PartitionKey = "k", Data = 12 },
      { PartitionKey = "k", Data = "x", ExplicitHashKey = 12 },
      { PartitionKey = "k", Data = "x", ExplicitHashKey = "340282366920938463463374607431768211456" },
      { PartitionKey = "k", Data = "x", ExplicitHashKey = "007" },
    } do
      local e, err = agg:add(bad)
      assert.is_nil(e)
      assert.equal("validation", err.kind)
      assert.equal("ValidationError", err.code)
    end
    assert.equal(0, agg:count())
    local _, err = kpl.aggregator({ max_bytes = 100.5 }):add { PartitionKey = "k", Data = string.rep("x", 100) }
    assert.equal("RecordTooLarge", err.code)
    assert.matches("over max_bytes 100.5", err.message, 1, true)
    assert.has_error(function() kpl.aggregator "big" end)
    assert.has_error(function() kpl.aggregator { max_bytes = 20 } end)
    assert.has_error(function() kpl.aggregator { max_bytes = "1" } end)
    assert.has_error(function() kpl.aggregator { max_records = 0 } end)
  end)

  it("aggregate() refuses an empty list, a bad record and more than max_bytes", function()
    local e, err = kpl.aggregate {}
    assert.is_nil(e)
    assert.equal("ValidationError", err.code)
    e, err = kpl.aggregate { { PartitionKey = "a", Data = "1" }, { PartitionKey = "b" } }
    assert.is_nil(e)
    assert.matches("record 2", err.message)
    local big = { { PartitionKey = "a", Data = string.rep("x", MiB // 2) }, { PartitionKey = "b", Data = string.rep("y", MiB // 2) } }
    e, err = kpl.aggregate(big)
    assert.is_nil(e)
    assert.equal("RecordTooLarge", err.code)
    assert.is_truthy(kpl.aggregate(big, { max_bytes = 2 * MiB }))
    assert.has_error(function() kpl.aggregate("x") end)
    assert.has_error(function() kpl.aggregate({}, "x") end)
  end)
end)

---------------------------------------------------------------- shard filter

describe("deaggregate with opts.shard (the KCL's hash key range filter)", function()
  local function in_range(h, s, e) return dec_cmp(s, h) <= 0 and dec_cmp(h, e) <= 0 end

  it("keeps an aggregate whose user records all fall in the shard, drops it whole otherwise, on four real shard maps", function()
    local kept, dropped_whole = 0, 0
    for _, name in ipairs { "kinesis-local-4", "kinesis-local-7", "kinesalite-4", "kinesalite-7" } do
      local map = read_json(SHARED .. "/vectors/shardmaps/" .. name .. ".json")
      for _, v in ipairs(POSITIVE) do
        for _, s in ipairs(map.shards) do
          local shard = { ShardId = s.shard_id, HashKeyRange = { StartingHashKey = s.starting_hash_key,
                                                                EndingHashKey = s.ending_hash_key } }
          local all_in = true
          for _, r in ipairs(v.records) do
            if not in_range(r.effective_hash_key, s.starting_hash_key, s.ending_hash_key) then all_in = false end
          end
          local users, err, dropped = kpl.deaggregate({ Data = v.bin, SequenceNumber = "1" }, { shard = shard })
          assert.is_nil(err)
          if all_in then
            kept = kept + 1
            assert.equal(#v.records, #users)
            assert.equal(0, dropped)
          else
            dropped_whole = dropped_whole + 1
            assert.same({}, users)
            assert.equal(#v.records, dropped)
          end
        end
      end
    end
    assert.is_true(kept > 0 and dropped_whole > 0)
  end)

  it("treats both range ends as inclusive and takes a bare range", function()
    local e = assert(kpl.aggregate { { PartitionKey = "a", ExplicitHashKey = "5", Data = "x" },
                                     { PartitionKey = "b", ExplicitHashKey = "9", Data = "y" } })
    local function n(s, t) return #assert(kpl.deaggregate(e, { shard = { StartingHashKey = s, EndingHashKey = t } })) end
    assert.equal(2, n("5", "9"))
    assert.equal(0, n("6", "9"))
    assert.equal(0, n("5", "8"))
    assert.equal(2, n("0", MAX_U128))
    -- without an EHK the MD5 hash key of the partition key decides
    local h = core.hash_key("pk-1")
    local e2 = assert(kpl.aggregate { { PartitionKey = "pk-1", Data = "x" } })
    assert.equal(1, #assert(kpl.deaggregate(e2, { shard = { StartingHashKey = h, EndingHashKey = h } })))
  end)

  it("never filters a record that is not an aggregate", function()
    local users, err, dropped = kpl.deaggregate({ Data = "plain", PartitionKey = "z" },
      { shard = { StartingHashKey = "0", EndingHashKey = "0" } })
    assert.is_nil(err)
    assert.equal(0, dropped)
    assert.equal("plain", users[1].Data)
  end)

  it("answers a bad decimal with nil, err and raises on a shard that is not one", function()
    local e = assert(kpl.aggregate { { PartitionKey = "a", Data = "x" } })
    local users, err = kpl.deaggregate(e, { shard = { HashKeyRange = { StartingHashKey = "01", EndingHashKey = "5" } } })
    assert.is_nil(users)
    assert.equal("validation", err.kind)
    assert.matches("StartingHashKey", err.message)
    assert.has_error(function() kpl.deaggregate(e, { shard = "shardId-0" }) end)
    assert.has_error(function() kpl.deaggregate(e, { shard = { HashKeyRange = {} } }) end)
    assert.has_error(function() kpl.deaggregate("x") end)
    assert.has_error(function() kpl.deaggregate({ Data = 5 }) end)
    assert.has_error(function() kpl.deaggregate({ Data = "x" }, 5) end)
  end)

  it("core.kpl_in_range compares as 128-bit integers", function()
    assert.is_true(core.kpl_in_range("x", MAX_U128, "0", MAX_U128))
    assert.is_false(core.kpl_in_range("x", "99", "100", MAX_U128))
    assert.is_true(core.kpl_in_range("x", "100", "100", "100"))
    local h = core.hash_key("x")
    assert.is_true(core.kpl_in_range("x", nil, h, h))
    local ok, why = core.kpl_in_range("x", "1e5", "0", "1")
    assert.is_nil(ok)
    assert.matches("ExplicitHashKey", why)
  end)
end)

---------------------------------------------------------------- binding misuse

describe("core.kpl_encode / kpl_decode misuse", function()
  it("raises on wrong arguments instead of writing a bad aggregate", function()
    assert.has_error(function() core.kpl_encode({ "a" }, {}, { { partition_key_index = 1, data = "" } }) end)
    assert.has_error(function() core.kpl_encode({ "a" }, {}, { { partition_key_index = 0, explicit_hash_key_index = 0, data = "" } }) end)
    assert.has_error(function() core.kpl_encode({ "a" }, {}, { { partition_key_index = -1, data = "" } }) end)
    assert.has_error(function() core.kpl_encode({ "a" }, {}, { { partition_key_index = 0.5, data = "" } }) end)
    assert.has_error(function() core.kpl_encode({ 1 }, {}, { { partition_key_index = 0, data = "" } }) end)
    assert.has_error(function() core.kpl_encode({ "a" }, {}, { { partition_key_index = 0 } }) end)
    assert.has_error(function() core.kpl_encode({ "a" }, {}, { "r" }) end)
    assert.has_error(function() core.kpl_decode(12) end)
    assert.equal(MAGIC, core.kpl_magic)
    assert.equal(MAGIC, kpl.MAGIC)
  end)
end)

---------------------------------------------------------------- LuaJIT

describe("kinesis.kpl under LuaJIT (Lua 5.1 API)", function()
  it("decodes and re-encodes a vector", function()
    local so = "build/5.1/kinesis/core.so"
    local f = io.open(so, "rb")
    -- make test builds the LuaJIT modules first: their absence is a failure
    assert.is_true(shell_ok("command -v luajit >/dev/null 2>&1"), "luajit is not installed")
    assert.truthy(f, so .. " is missing: run make LUA=luajit")
    f:close()
    local script = os.tmpname()
    local out = assert(io.open(script, "w"))
    out:write([[
      local kpl = require "kinesis.kpl"
      local f = assert(io.open(os.getenv("SHARED") .. "/vectors/kpl/many-records.bin", "rb"))
      local bin = f:read("*a")
      f:close()
      local users = assert(kpl.deaggregate({ Data = bin, SequenceNumber = "3" }))
      local e = assert(kpl.aggregate(users))
      local agg = kpl.aggregator { max_bytes = 4000 }
      local n = 0
      for _, u in ipairs(users) do if agg:add(u) then n = n + 1 end end
      print(#users, users[300].PartitionKey, users[300].SubSequenceNumber, tostring(e.Data == bin), n, agg:count())
    ]])
    out:close()
    local p = assert(io.popen("LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/5.1/?.so;;' luajit " .. script .. " 2>&1"))
    local text = p:read("a")
    p:close()
    os.remove(script)
    local many = POSITIVE[10]
    assert.equal("many-records", many.name)
    local agg = kpl.aggregator { max_bytes = 4000 }
    local users = assert(kpl.deaggregate { Data = many.bin })
    local n = 0
    for _, u in ipairs(users) do if agg:add(u) then n = n + 1 end end
    assert.equal(("300\t%s\t299\ttrue\t%d\t%d\n"):format(many.records[300].partition_key, n, agg:count()), text)
  end)
end)

---------------------------------------------------------------- kinesis-local

describe("interoperability with kinesis-local", function()
  local kinesis = require "kinesis"
  local sleep = require("socket").sleep
  local srv, c
  local S = "kpl-stream"

  lazy_setup(function()
    srv = peers.start("kinesis-local", { env = { CREATE_STREAM_DURATION = "50ms" } })
    c = assert(kinesis.new { endpoint = srv.endpoint, region = "us-east-1",
                             credentials = { access_key_id = "a", secret_access_key = "b" } })
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

  it("PutRecord of an aggregate of 100 records, GetRecords, deaggregate: the 100 records exactly", function()
    math.randomseed(100)
    local records = random_records(100)
    local entry = assert(kpl.aggregate(records))
    local put = assert(c:put_record { StreamName = S, PartitionKey = entry.PartitionKey,
                                      ExplicitHashKey = entry.ExplicitHashKey, Data = entry.Data })
    local got = read_from(put.SequenceNumber, 1)
    assert.equal(1, #got)
    assert.is_true(got[1].Data == entry.Data)
    local shards = assert(c:list_shards { StreamName = S }).Shards
    local users, err, dropped = kpl.deaggregate(got[1], { shard = shards[1] })
    assert.is_nil(err)
    assert.equal(0, dropped)
    assert_same_records(records, users)
    for i, u in ipairs(users) do
      assert.equal(i - 1, u.SubSequenceNumber)
      assert.equal(put.SequenceNumber, u.SequenceNumber)
      assert.equal(got[1].ApproximateArrivalTimestamp, u.ApproximateArrivalTimestamp)
    end
  end)

  it("PutRecords of the aggregator's entries and a plain record reads back in order", function()
    math.randomseed(101)
    local records = random_records(300)
    local agg = kpl.aggregator { max_bytes = 20000 }
    local entries = {}
    for _, r in ipairs(records) do
      local e, err = agg:add(r)
      assert.is_nil(err)
      if e then entries[#entries + 1] = e end
    end
    entries[#entries + 1] = agg:flush()
    assert.is_true(#entries >= 3)
    entries[#entries + 1] = { PartitionKey = "plain", Data = "not an aggregate" }
    local out = assert(c:put_records { StreamName = S, Records = entries })
    assert.equal(0, out.FailedRecordCount)
    local got = read_from(out.Records[1].SequenceNumber, #entries)
    assert.equal(#entries, #got)
    local all = {}
    for i, r in ipairs(got) do
      local users = assert(kpl.deaggregate(r))
      if i == #got then
        assert.equal(1, #users)
        assert.is_false(users[1].Aggregated)
        assert.equal("not an aggregate", users[1].Data)
      else
        for _, u in ipairs(users) do
          assert.equal(out.Records[i].SequenceNumber, u.SequenceNumber)
          all[#all + 1] = u
        end
      end
    end
    assert_same_records(records, all)
  end)
end)
