-- batch_writer_spec.lua - the producer's PutRecords body writer
-- (src/l_batch.c, core.batch_writer): the body it writes parses as JSON to
-- exactly the entries given (Data base64, partition keys escaped as JSON
-- strings, ExplicitHashKey only where present), across reuse of its buffer.
local core = require "kinesis.core"
local cjson = require "cjson"

local function b64decode(s) return assert(core.b64decode(s)) end

describe("core.batch_writer", function()
  local head = '{"StreamName":"s \\"x\\"","Records":['

  local function check(entries)
    local w = core.batch_writer()
    local body = w:put_records(head, entries, #entries)
    local t = cjson.decode(body)
    assert.equal('s "x"', t.StreamName)
    assert.equal(#entries, #t.Records)
    for i, e in ipairs(entries) do
      local got = t.Records[i]
      assert.equal(e.Data, b64decode(got.Data), "Data of entry " .. i)
      assert.equal(e.PartitionKey, got.PartitionKey, "PartitionKey of entry " .. i)
      assert.equal(e.ExplicitHashKey, got.ExplicitHashKey, "ExplicitHashKey of entry " .. i)
    end
    w:close()
    return body
  end

  it("writes every entry: binary data of 0-5 bytes, keys that need escaping, hash keys", function()
    local entries = {}
    local keys = { "plain", 'q"uote', "back\\slash", "new\nline\t", "ctl\1\31", "sl/ash", "del\127",
                   "caf\195\169", "\240\159\152\128 emoji" }
    for i = 1, 60 do
      local data = {}
      for j = 1, i % 6 do data[j] = string.char((i * 37 + j * 11) % 256) end
      entries[i] = { PartitionKey = keys[i % #keys + 1], Data = table.concat(data),
                     ExplicitHashKey = i % 4 == 0 and tostring(i * 1000003) or nil }
    end
    check(entries)
  end)

  it("writes the exact bytes: padded base64, UTF-8 keys as they are", function()
    local entries = { { PartitionKey = "k", Data = "abc" }, { PartitionKey = "\226\130\172", Data = "" } }
    local body = check(entries)
    assert.equal(head .. '{"Data":"YWJj","PartitionKey":"k"},{"Data":"","PartitionKey":"\226\130\172"}]}', body)
  end)

  it("reuses its buffer: a short body after a long one holds nothing of the first", function()
    local w = core.batch_writer()
    local big = {}
    for i = 1, 500 do big[i] = { PartitionKey = "key-" .. i, Data = string.rep("x", 1000) } end
    assert.is_true(#w:put_records(head, big, 500) > 500000)
    local small = w:put_records(head, { { PartitionKey = "a", Data = "b" } }, 1)
    assert.equal(head .. '{"Data":"Yg==","PartitionKey":"a"}]}', small)
    w:close()
  end)

  it("writes only the first n entries, and an empty list as []", function()
    local w = core.batch_writer()
    local list = { { PartitionKey = "a", Data = "1" }, { PartitionKey = "b", Data = "2" } }
    assert.equal(head .. '{"Data":"MQ==","PartitionKey":"a"}]}', w:put_records(head, list, 1))
    assert.equal(head .. "]}", w:put_records(head, list, 0))
  end)

  it("raises on an entry without the fields the producer always sets, and after close", function()
    local w = core.batch_writer()
    assert.has_error(function() w:put_records(head, { { Data = "x" } }, 1) end,
      "batch writer: entry 1 has no PartitionKey string")
    assert.has_error(function() w:put_records(head, { 7 }, 1) end, "batch writer: entry 1 is not a table")
    w:close()
    w:close()
    assert.has_error(function() w:put_records(head, {}, 0) end, "batch writer is closed")
  end)
end)
