-- spec/answer_spec.lua - the PutRecords answer scanner (src/answer.c,
-- through core.put_records_answer) held against kinesis.codec's decoder of
-- PutRecordsOutput, the one Client:send uses: real answers, answers with
-- every kind of escape, white space and member order, and thousands of
-- mangled ones. Where the two may differ, a test below says why.

local core = require "kinesis.core"
local codec = require "kinesis.codec"
local kinesis = require "kinesis"

local format, concat, char = string.format, table.concat, string.char

-- the shapes and output shape exactly as a client decodes a PutRecords answer
local client = assert(kinesis.new { endpoint = "http://127.0.0.1:9", region = "us-east-1" })
local shapes = client.service.shapes
local OUT = client.service.operations.PutRecords.output

-- The same model, but PutRecordsOutput knows only Records: the codec then
-- skips FailedRecordCount and EncryptionType whatever they hold, as the
-- scanner does, and the two must agree on every body.
local lenient = {}
for k, v in pairs(shapes) do lenient[k] = v end
do
  local out_shape = {}
  for k, v in pairs(shapes[OUT]) do out_shape[k] = v end
  out_shape.members = { Records = shapes[OUT].members.Records }
  lenient[OUT] = out_shape
end
-- compiled by the C codec (a table it could not compile would be decoded
-- by the Lua reference instead, and the comparison would be another one)
assert(pcall(core.codec, lenient))

local FIELDS = { "SequenceNumber", "ShardId", "ErrorCode", "ErrorMessage" }

-- a deterministic generator, the same on every run
local seed = 4242
local function rand(n)
  seed = (seed * 1103515245 + 12345) % 2147483648
  return math.floor(seed / 65536) % n + 1
end

------------------------------------------------------------ the comparison

local function scan(body, cap)
  return core.put_records_answer(body, cap or 100000)
end

-- The scanner's entries as the codec's tables look (absent = nil).
local function same_entries(codec_out, got)
  local want = codec_out.Records or {}
  if #want ~= #got then return false, format("%d entries, codec %d", #got, #want) end
  for i = 1, #want do
    for _, f in ipairs(FIELDS) do
      if want[i][f] ~= got[i][f] then
        return false, format("entry %d %s: %q, codec %q", i, f, tostring(got[i][f]), tostring(want[i][f]))
      end
    end
  end
  return true
end

-- The one body the codec takes and the scanner refuses on purpose: a null
-- entry in Records, found where the scanner says it is.
local function null_entry(body, serr)
  local at = serr and serr:match("an entry of Records is null at byte (%d+)$")
  return at ~= nil and body:sub(tonumber(at) + 1, tonumber(at) + 4) == "null"
end

local stats
local function reset_stats()
  stats = { both_ok = 0, both_refused = 0, null_entry = 0, typed_only = 0 }
end
reset_stats()

-- Checks one body against both codecs; raises with the body on a broken rule.
local function compare(body, cap)
  local got, serr = scan(body, cap)
  local function broke(what, detail)
    error(format("%s (%s) for body %q", what, tostring(detail), body:sub(1, 400)), 2)
  end
  -- 1. the codec as Client:send runs it
  local out, cerr = codec.decode(shapes, OUT, body)
  if out then
    if got then
      local ok, why = same_entries(out, got)
      if not ok then broke("fields differ from the codec's", why) end
    elseif not null_entry(body, serr) then
      broke("the codec takes a body the scanner refuses", serr)
    end
  else
    assert(type(cerr) == "string" and (cerr:find("^invalid JSON") or cerr:find("^unexpected response shape")), cerr)
    if got then
      -- only a type the codec checks and the scanner skips may do this
      local shape = cerr:match("^unexpected response shape: (%S+)")
      if shape ~= "PositiveIntegerObject" and shape ~= "EncryptionType" then
        broke("the scanner takes a body the codec refuses", cerr)
      end
      stats.typed_only = stats.typed_only + 1
    end
  end
  -- 2. the codec skipping every top member but Records: the very same verdict
  local lout, lerr = codec.decode(lenient, OUT, body)
  if lout and got then
    local ok, why = same_entries(lout, got)
    if not ok then broke("fields differ from the lenient codec's", why) end
    stats.both_ok = stats.both_ok + 1
  elseif lout then
    if not null_entry(body, serr) then broke("the lenient codec takes a body the scanner refuses", serr) end
    stats.null_entry = stats.null_entry + 1
  elseif got then
    broke("the scanner takes a body the lenient codec refuses", lerr)
  else
    stats.both_refused = stats.both_refused + 1
  end
  return got, serr
end

------------------------------------------------------------ generated answers

local function digits(n)
  local t = {}
  for i = 1, n do t[i] = char(47 + rand(10)) end
  return concat(t)
end

local function ws()
  local k = rand(6)
  if k <= 3 then return "" end
  return ({ " ", "\n", "\r\n\t ", "  \t" })[rand(4)]
end

-- JSON text of s written with a random choice of escapes, \u escapes
-- (surrogate pairs above U+FFFF) and raw bytes where JSON allows them.
local function json_string(s)
  local out = { '"' }
  local i = 1
  while i <= #s do
    local c = s:byte(i)
    local len = c < 0x80 and 1 or c < 0xE0 and 2 or c < 0xF0 and 3 or 4
    local ch = s:sub(i, i + len - 1)
    local cp = utf8.codepoint(ch)
    local e
    if ch == '"' then e = '\\"'
    elseif ch == "\\" then e = "\\\\"
    elseif cp < 0x20 then
      e = ({ [8] = "\\b", [9] = "\\t", [10] = "\\n", [12] = "\\f", [13] = "\\r" })[cp]
      if not e or rand(2) == 1 then e = format("\\u%04x", cp) end
    elseif rand(4) == 1 then
      if cp >= 0x10000 then
        local v = cp - 0x10000
        e = format(rand(2) == 1 and "\\u%04x\\u%04x" or "\\u%04X\\u%04X", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF))
      elseif ch == "/" and rand(2) == 1 then e = "\\/"
      else e = format(rand(2) == 1 and "\\u%04x" or "\\u%04X", cp) end
    else
      e = ch
    end
    out[#out + 1] = e
    i = i + len
  end
  out[#out + 1] = '"'
  return concat(out)
end

local MESSAGE_BITS = { "Rate exceeded for shard ", "shardId-000000000001", " in stream ", "café",
  "😀", "\"quoted\"", "back\\slash", "a/b", "\n", "\t", "\0", "\31", "\b\f\r", "ü", "€", "𝄞",
  "arn:aws:kinesis:us-east-1:123456789012:stream/s" }

local function message()
  local t = {}
  for i = 1, rand(5) do t[i] = MESSAGE_BITS[rand(#MESSAGE_BITS)] end
  return concat(t)
end

-- Any JSON value, for members nobody reads.
local function junk(depth)
  local k = rand(depth > 3 and 6 or 8)
  if k == 1 then return tostring(rand(1000) - 500)
  elseif k == 2 then return ({ "-0.5e+10", "1E-3", "0", "3.25", "-12" })[rand(5)]
  elseif k == 3 then return ({ "true", "false", "null" })[rand(3)]
  elseif k <= 6 then return json_string(message())
  elseif k == 7 then
    local t = {}
    for i = 1, rand(4) - 1 do t[i] = ws() .. junk(depth + 1) .. ws() end
    return "[" .. concat(t, ",") .. ws() .. "]"
  else
    local t = {}
    for i = 1, rand(4) - 1 do t[i] = ws() .. json_string("k" .. i) .. ws() .. ":" .. ws() .. junk(depth + 1) end
    return "{" .. concat(t, ",") .. ws() .. "}"
  end
end

local function shuffle(t)
  for i = #t, 2, -1 do
    local j = rand(i)
    t[i], t[j] = t[j], t[i]
  end
  return t
end

local function object(members)
  local t = {}
  for i, m in ipairs(members) do t[i] = ws() .. json_string(m[1]) .. ws() .. ":" .. ws() .. m[2] .. ws() end
  return "{" .. concat(t, ",") .. ws() .. "}"
end

-- One entry: its JSON text and the values it stands for.
local function entry(opts)
  local want, members = {}, {}
  local k = rand(10)
  if k <= 6 or opts.plain then
    want.SequenceNumber = digits(56)
    want.ShardId = format("shardId-%012d", rand(4) - 1)
  elseif k <= 9 then
    want.ErrorCode = ({ "ProvisionedThroughputExceededException", "InternalFailure",
                        "KMSThrottlingException" })[rand(3)]
    want.ErrorMessage = message()
  else
    -- neither: what the producer counts as a protocol failure of that entry
  end
  for _, f in ipairs(FIELDS) do
    if want[f] then members[#members + 1] = { f, json_string(want[f]) }
    elseif not opts.plain and rand(5) == 1 then members[#members + 1] = { f, "null" } end
  end
  if not opts.plain then
    if rand(4) == 1 then members[#members + 1] = { "Unknown" .. rand(3), junk(1) } end
    shuffle(members)
  end
  return object(members), want
end

local function answer(n, opts)
  opts = opts or {}
  local texts, wants, failed = {}, {}, 0
  for i = 1, n do
    texts[i], wants[i] = entry(opts)
    if wants[i].ErrorCode then failed = failed + 1 end
  end
  local members = { { "FailedRecordCount", tostring(failed) },
                    { "Records", "[" .. (opts.plain and "" or ws()) .. concat(texts, "," .. (opts.plain and "" or ws())) .. "]" } }
  if not opts.plain then
    if rand(2) == 1 then members[#members + 1] = { "EncryptionType", rand(3) == 1 and "null" or '"KMS"' } end
    if rand(3) == 1 then members[#members + 1] = { "Extra", junk(1) } end
    shuffle(members)
  end
  return ws() .. object(members) .. ws(), wants
end

------------------------------------------------------------ the tests

describe("core.put_records_answer", function()
  it("reads real answers as the codec does, field for field", function()
    reset_stats()
    for _ = 1, 200 do
      local n = rand(12) - 1
      local body, wants = answer(n)
      local got = compare(body)
      assert.is_table(got, body)
      assert.equal(n, #got)
      for i = 1, n do
        for _, f in ipairs(FIELDS) do assert.equal(wants[i][f], got[i][f], f .. " in " .. body) end
      end
    end
    assert.equal(200, stats.both_ok)
  end)

  it("reads a full 500-entry answer (the size the producer settles)", function()
    local body, wants = answer(500, { plain = true })
    local got = compare(body, 500)
    assert.equal(500, #got)
    for i = 1, 500 do
      assert.equal(wants[i].SequenceNumber, got[i].SequenceNumber)
      assert.equal(wants[i].ShardId, got[i].ShardId)
      assert.equal(wants[i].ErrorCode, got[i].ErrorCode)
    end
    -- one more than the room given is a failure, not a short answer
    local ok, err = core.put_records_answer(body, 499)
    assert.is_nil(ok)
    assert.matches("more Records entries than room for at byte %d+$", err)
    -- and 500 is the default room
    assert.equal(500, #core.put_records_answer(body))
  end)

  it("decodes every escape: \\u00e9, surrogate pairs, \\u0000, the short forms", function()
    local body = '{"Records":[{"ErrorCode":"E\\u0078","ErrorMessage":' ..
      '"caf\\u00e9 \\uD83D\\uDE00 \\ud834\\udd1e \\"\\\\\\/\\b\\f\\n\\r\\t \\u0000\\u001f \\u20AC\\u00FC"}]}'
    local got = compare(body)
    assert.equal("Ex", got[1].ErrorCode)
    assert.equal('café 😀 𝄞 "\\/\b\f\n\r\t \0\31 €ü', got[1].ErrorMessage)
    assert.is_nil(got[1].SequenceNumber)
  end)

  it("takes white space everywhere and members in any order", function()
    local body = ' \r\n\t{ "ShardIdX" : 1 , "Records" :\n[ { "ShardId" : "shardId-000000000003" ,' ..
      ' "SequenceNumber"\t:\t"1" } , {"ErrorMessage":"m","ErrorCode":"c"} ] ,\n"FailedRecordCount" : 1 } \n'
    local got = compare(body)
    assert.same({ { ShardId = "shardId-000000000003", SequenceNumber = "1" },
                  { ErrorCode = "c", ErrorMessage = "m" } }, got)
  end)

  it("skips unknown members whatever they hold, and EncryptionType", function()
    local body = '{"EncryptionType":"KMS","Nested":{"a":[1,{"b":[true,false,null,"\\u00e9"]}],"c":{}},' ..
      '"Records":[{"X":[[[]]],"SequenceNumber":"9","Y":{"SequenceNumber":"no"},"ShardId":"s","Z":-1.5e-3}],' ..
      '"FailedRecordCount":0}'
    assert.same({ { SequenceNumber = "9", ShardId = "s" } }, compare(body))
  end)

  it("lets the last of a repeated member win, and a later null remove it", function()
    local body = '{"Records":[{"SequenceNumber":"1","SequenceNumber":"2","ShardId":"s","ShardId":null}],' ..
      '"Records":[{"SequenceNumber":"3"},{"ErrorCode":"a","ErrorCode":"b"}]}'
    assert.same({ { SequenceNumber = "3" }, { ErrorCode = "b" } }, compare(body))
    assert.same({}, compare('{"Records":[{"SequenceNumber":"1"}],"Records":null}'))
  end)

  it("reads member names written with escapes, as the codec does", function()
    local body = '{"Rec\\u006Frds":[{"Sequence\\u004eumber":"7","\\u0053hardId":"s","ErrorCod\\u0065":null}]}'
    assert.same({ { SequenceNumber = "7", ShardId = "s" } }, compare(body))
  end)

  it("gives no entries when Records is absent or null", function()
    assert.same({}, compare('{"FailedRecordCount":0}'))
    assert.same({}, compare('{"Records":null}'))
    assert.same({}, compare('{}'))
    assert.same({}, compare('{"Records":[]}'))
  end)

  it("reads what the codec reads beyond a strict parser: empty and null bodies, [] for {}", function()
    -- kinesis.codec reads an empty body and a null body as {}, and an empty
    -- container of the other kind as an empty one; the scanner does too, so
    -- such an answer fails in the producer's count check either way
    for _, body in ipairs { "", " null ", "[]", "[ ]", '{"Records":{}}', '{"Records":{ }}' } do
      assert.same({}, compare(body), body)
    end
    assert.same({ {}, { SequenceNumber = "1" } }, compare('{"Records":[[],{"SequenceNumber":"1"}]}'))
    for _, body in ipairs { " ", "[1]", '{"Records":{"a":1}}', '{"Records":[[1]]}', "nul", "{}}" } do
      assert.is_nil(compare(body), body)
    end
  end)

  it("refuses a null entry the codec would drop (it would shift every later entry)", function()
    local body = '{"Records":[{"SequenceNumber":"1"},null,{"SequenceNumber":"3"}]}'
    local out = assert(codec.decode(shapes, OUT, body))
    assert.equal(2, #out.Records)   -- the codec's: the third record's answer in second place
    local got, err = compare(body)
    assert.is_nil(got)
    assert.equal("PutRecords answer: an entry of Records is null at byte 35", err)
  end)

  it("skips FailedRecordCount and EncryptionType of a type the codec refuses", function()
    -- the codec refuses these as a protocol error; the scanner never reads
    -- them (the producer counts failures itself, entry by entry)
    for _, body in ipairs { '{"FailedRecordCount":"1","Records":[{"ErrorCode":"c"}]}',
                            '{"EncryptionType":5,"Records":[]}', '{"FailedRecordCount":{"a":[]},"Records":[]}' } do
      reset_stats()
      local out, cerr = codec.decode(shapes, OUT, body)
      assert.is_nil(out)
      assert.matches("^unexpected response shape", cerr)
      assert.is_table(compare(body), body)
      assert.equal(1, stats.typed_only)
    end
  end)

  it("refuses a field that is neither a string nor null, naming it", function()
    for _, f in ipairs(FIELDS) do
      for _, v in ipairs { "1", "true", "{}", "[]", '["a"]' } do
        local body = format('{"Records":[{"%s":%s}]}', f, v)
        local got, err = compare(body)
        assert.is_nil(got, body)
        assert.equal(format("PutRecords answer: %s is neither a string nor null at byte %d", f, #f + 16), err)
      end
    end
  end)

  it("refuses malformed JSON the codec refuses, saying what and where", function()
    local cases = {
      { '{"Records":[{"SequenceNumber":"1"},]}', "an entry of Records is not an object at byte 35" },
      { '{"Records":[{"SequenceNumber":"1"}', "unexpected end at byte 34" },
      { '{"Records":[{"SequenceNumber":"1"} {}]}', "expected ',' or ']' at byte 35" },
      { '{"Records":[{"SequenceNumber":"1",}]}', "expected a member name at byte 34" },
      { '{"Records":[{"SequenceNumber" "1"}]}', "expected ':' at byte 30" },
      { '{"Records":[],}', "expected a member name at byte 14" },
      { '{"Records":[]} x', "bytes after the value at byte 15" },
      { '{"Records":[]}{}', "bytes after the value at byte 14" },
      { '{"Records":[{"ErrorMessage":"a\\x"}]}', "bad escape at byte 30" },
      { '{"Records":[{"ErrorMessage":"\\u12G4"}]}', "bad \\u escape at byte 29" },
      { '{"Records":[{"ErrorMessage":"\\udc00"}]}', "lone low surrogate at byte 29" },
      { '{"Records":[{"ErrorMessage":"\\ud800"}]}', "unpaired surrogate at byte 29" },
      { '{"Records":[{"ErrorMessage":"\\ud800\\u0041"}]}', "unpaired surrogate at byte 29" },
      { '{"Records":[{"ErrorMessage":"a\tb"}]}', "control character in a string at byte 30" },
      { '{"Records":[{"ErrorMessage":"abc', "unterminated string at byte 32" },
      { '{"X":01,"Records":[]}', "expected ',' or '}' at byte 6" },
      { '{"X":-,"Records":[]}', "bad number at byte 6" },
      { '{"X":1.,"Records":[]}', "bad number at byte 7" },
      { '{"X":1e+,"Records":[]}', "bad number at byte 8" },
      { '{"X":tru,"Records":[]}', "unexpected character at byte 5" },
      { '{"X":[1,],"Records":[]}', "unexpected character at byte 8" },
      { '{"X":{"a":1,},"Records":[]}', "expected a member name at byte 12" },
      { '{"X":[1}],"Records":[]}', "expected ',' or a closing bracket at byte 7" },
      { '{"X":/*c*/1,"Records":[]}', "unexpected character at byte 5" },
      { "{'Records':[]}", "expected a member name at byte 1" },
      { '{"Records":"x"}', "Records is neither an array nor null at byte 11" },
      { '{"Records":[1]}', "an entry of Records is not an object at byte 12" },
    }
    for _, c in ipairs(cases) do
      local got, err = compare(c[1])
      assert.is_nil(got, c[1])
      assert.equal("PutRecords answer: " .. c[2], err, c[1])
      assert.is_nil(codec.decode(shapes, OUT, c[1]), c[1])
    end
  end)

  it("refuses deep nesting at the codec's limit, without a crash", function()
    local function nest(n) return ("["):rep(n) .. ("]"):rep(n) end
    -- the top object's member values are at depth 1, an entry's at depth 3:
    -- 500 levels in all are taken, 501 refused, by both
    assert.same({}, compare('{"X":' .. nest(500) .. '}'))
    assert.is_nil(compare('{"X":' .. nest(501) .. '}'))
    assert.same({ {} }, compare('{"Records":[{"X":' .. nest(498) .. '}]}'))
    assert.is_nil(compare('{"Records":[{"X":' .. nest(499) .. '}]}'))
    assert.same({}, compare('{"X":' .. ('{"a":'):rep(499) .. "1" .. ("}"):rep(499) .. '}'))
    assert.is_nil(compare('{"X":' .. ('{"a":'):rep(500) .. "1" .. ("}"):rep(500) .. '}'))
    local got, err = compare('{"X":' .. ("["):rep(200000))
    assert.is_nil(got)
    assert.equal("PutRecords answer: nested too deeply at byte 505", err)
    assert.is_nil(compare('{"Records":[{"X":' .. ('{"a":['):rep(100000)))
    assert.is_nil(compare(("["):rep(100000)))
  end)

  it("agrees with the codec on every truncation of a small answer", function()
    local body = '{"FailedRecordCount":1,"EncryptionType":"KMS","Records":[{"SequenceNumber":"4959","ShardId":' ..
      '"shardId-000000000000"},{"ErrorCode":"InternalFailure","ErrorMessage":"caf\\u00e9 \\ud83d\\ude00 \\"x\\""},' ..
      '{"X":[1,-2.5e3,true,null,{"a":"b"}],"SequenceNumber":null}]}'
    reset_stats()
    for i = 0, #body do compare(body:sub(1, i)) end
    -- only the whole body (and the empty one) is an answer
    assert.equal(2, stats.both_ok)
    assert.equal(#body - 1, stats.both_refused)
  end)

  it("agrees with the codec on thousands of mangled answers", function()
    local NOISE = { "{", "}", "[", "]", '"', ",", ":", "\\", "\\u", "\\ud83d", "\\ude00", "null", "true",
      "false", "0", "-", "1e5", ".", " ", "\n", "\0", "\31", "\127", "\255", "é", "[]", "{}", '""',
      '"SequenceNumber":', '"ShardId":', '"ErrorCode":', '"ErrorMessage":', '"Records":', "[null]", "1" }
    reset_stats()
    for _ = 1, 4000 do
      local body = answer(rand(4) - 1)
      for _ = 1, rand(3) do
        local i = rand(#body)
        local k = rand(5)
        if k == 1 then
          body = body:sub(1, i - 1) .. char(rand(256) - 1) .. body:sub(i + 1)   -- flip a byte
        elseif k == 2 then
          body = body:sub(1, i - 1) .. NOISE[rand(#NOISE)] .. body:sub(i)         -- insert
        elseif k == 3 then
          body = body:sub(1, i - 1) .. body:sub(i + rand(3))                     -- delete
        elseif k == 4 then
          body = body:sub(1, i - 1) .. NOISE[rand(#NOISE)] .. body:sub(i + 1)    -- replace
        else
          local j = rand(#body)                                                 -- duplicate a span
          if j < i then i, j = j, i end
          body = body:sub(1, j) .. body:sub(i, j) .. body:sub(j + 1)
        end
      end
      compare(body)
    end
    -- both verdicts are exercised, not just one
    assert.is_true(stats.both_ok > 300, "accepted: " .. stats.both_ok)
    assert.is_true(stats.both_refused > 1500, "refused: " .. stats.both_refused)
  end)

  it("raises on misuse", function()
    assert.has_error(function() core.put_records_answer(nil) end)
    assert.has_error(function() core.put_records_answer(123) end)
    assert.has_error(function() core.put_records_answer("{}", -1) end)
    assert.same({}, core.put_records_answer('{"Records":[]}', 0))
    assert.is_nil(core.put_records_answer('{"Records":[{}]}', 0))
  end)
end)
