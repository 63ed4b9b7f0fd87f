-- eventstream_spec.lua - the application/vnd.amazon.eventstream codec in the
-- C core (src/eventstream.c, src/crc32.c) through its binding
-- (core.es_decoder, core.es_encode, core.es_crc32). Evidence first: the
-- official AWS vectors, the Kinesis-shaped synthetic set and a real
-- kinesis-local capture, each fed whole, byte by byte, 7 bytes at a time and
-- in seeded random chunks; then hand-built frames (made here with an
-- independent pure-Lua CRC) for the edges the vectors do not reach.
local core = require "kinesis.core"
local cjson = require "cjson"

local SHARED = assert(os.getenv("SHARED"), "SHARED must point to the shared folder")
local ES = SHARED .. "/vectors/eventstream/"
local MiB = 1024 * 1024

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function read_json(path)
  return cjson.decode(read_file(path))
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local b64_index = {}
for i = 1, 64 do b64_index[B64:byte(i)] = i - 1 end

local function b64decode(s)
  local out, bits, nbits = {}, 0, 0
  for i = 1, #s do
    local v = b64_index[s:byte(i)]
    if v then
      bits = (bits << 6) | v
      nbits = nbits + 6
      if nbits >= 8 then
        nbits = nbits - 8
        out[#out + 1] = string.char((bits >> nbits) & 0xff)
      end
    end
  end
  return table.concat(out)
end

local function hex_uuid(raw)
  local h = raw:gsub(".", function(c) return string.format("%02x", c:byte()) end)
  return h:sub(1, 8) .. "-" .. h:sub(9, 12) .. "-" .. h:sub(13, 16) .. "-" ..
         h:sub(17, 20) .. "-" .. h:sub(21, 32)
end

local function sha256_hex(data)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  local p = assert(io.popen("sha256sum " .. path))
  local line = p:read("l")
  p:close()
  os.remove(path)
  return line:match("^(%x+)")
end

-- Bitwise CRC-32 (IEEE, reflected), independent of the C tables.
local function crc32_ref(s, crc)
  crc = (crc or 0) ~ 0xffffffff
  for i = 1, #s do
    crc = crc ~ s:byte(i)
    for _ = 1, 8 do
      if crc & 1 == 1 then crc = (crc >> 1) ~ 0xEDB88320 else crc = crc >> 1 end
    end
  end
  return crc ~ 0xffffffff
end

-- A frame built by hand: headers block and payload as given, lengths
-- overridable, both CRCs valid (so only the property under test is wrong).
local function frame(hblock, payload, o)
  o = o or {}
  local total = o.total or (16 + #hblock + #payload)
  local prelude = string.pack(">I4I4", total, o.hlen or #hblock)
  local body = prelude .. string.pack(">I4", crc32_ref(prelude)) .. hblock .. payload
  return body .. string.pack(">I4", crc32_ref(body))
end

local function hstring(name, value)
  return string.pack(">s1Bs2", name, 7, value)
end

-- Seeded generator (LCG) so "random" chunkings are the same on every run.
local function lcg(seed)
  local state = seed
  return function(n)
    state = (state * 1103515245 + 12345) % 2147483648
    return state % n
  end
end

local CHUNKINGS = {
  { "whole", function() return function(left) return left end end },
  { "1-byte chunks", function() return function() return 1 end end },
  { "7-byte chunks", function() return function() return 7 end end },
  { "random chunks (seed 20240229)", function()
      local r = lcg(20240229)
      return function()
        if r(10) == 0 then return 1 + r(4096) end
        return 1 + r(64)
      end
    end },
}

-- Feeds `bin` in the sizes next_size(bytes_left) gives, draining next()
-- after every feed. Returns the messages, the first error (code, text and
-- whether feed or next reported it), the largest buffered() seen and what
-- finish() said when no error came first.
-- The decoder's runtime failures are nil, { code =, message = } (the
-- bindings' one error shape); the checks below read them as nil, code, text.
local function split(v, err, ...)
  assert.are.equal(0, select("#", ...))
  if err == nil then return v end
  assert.is_table(err)
  assert.is_string(err.code)
  assert.is_string(err.message)
  assert.are.equal(err.message, tostring(err))
  return v, err.code, err.message
end

local function run(bin, next_size, max)
  local dec = core.es_decoder(max)
  local r = { msgs = {}, peak = 0, dec = dec }
  local pos = 1
  while pos <= #bin and not r.code do
    local n = next_size(#bin - pos + 1)
    local ok, code, text = split(dec:feed(bin:sub(pos, pos + n - 1)))
    pos = pos + n
    if not ok then
      r.code, r.text, r.where = code, text, "feed"
      break
    end
    if dec:buffered() > r.peak then r.peak = dec:buffered() end
    while true do
      local m, code2, text2 = split(dec:next())
      if m then
        r.msgs[#r.msgs + 1] = m
      else
        if code2 then r.code, r.text, r.where = code2, text2, "next" end
        break
      end
    end
  end
  if not r.code then r.finish = { split(dec:finish()) } end
  return r
end

local function count_keys(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- Expected Lua value of a vector header. The official JSON base64-encodes
-- string/bytes/uuid; the synthetic JSON gives plain strings, base64 bytes,
-- dashed uuids and int64 as decimal strings.
local function expected_value(h, official)
  local t, v = h.type, h.value
  if t == 0 or t == 1 then return t == 0 end
  if t == 6 then return b64decode(v) end
  if t == 7 then return official and b64decode(v) or v end
  if t == 9 then return official and hex_uuid(b64decode(v)) or v end
  if t == 5 and type(v) == "string" then return math.tointeger(tonumber(v)) end
  return math.tointeger(v)
end

local function check_message(m, headers, payload, official)
  assert.are.equal(#headers, count_keys(m.headers))
  assert.are.equal(#headers, count_keys(m.types))
  for _, h in ipairs(headers) do
    local want = expected_value(h, official)
    local got = m.headers[h.name]
    assert.are.equal(h.type, m.types[h.name], h.name)
    assert.are.equal("integer", math.type(m.types[h.name]))
    if type(want) == "number" then
      assert.are.equal("integer", math.type(got), h.name)
    end
    assert.are.equal(want, got, h.name)
  end
  if payload then assert.are.equal(payload, m.payload) end
end

-- Re-encodes a decoded message in the vector's wire order of headers.
local function reencode(m, headers)
  local list = {}
  for i, h in ipairs(headers) do
    list[i] = { name = h.name, type = m.types[h.name], value = m.headers[h.name] }
  end
  return core.es_encode(list, m.payload)
end

local function u32(signed) return math.tointeger(signed) % 4294967296 end

-- Every positive vector as { name, bin, messages = { {headers, payload|sha256, offset, total, prelude_crc, message_crc} }, official }
local POSITIVE = {}
for _, name in ipairs { "all_headers", "empty_message", "int32_header",
                        "payload_no_headers", "payload_one_str_header" } do
  local j = read_json(ES .. "official/decoded/positive/" .. name)
  POSITIVE[#POSITIVE + 1] = {
    name = "official/" .. name, official = true,
    bin = read_file(ES .. "official/encoded/positive/" .. name),
    messages = { { headers = j.headers, payload = b64decode(j.payload), offset = 0,
                   total = j.total_length, headers_length = j.headers_length,
                   prelude_crc = u32(j.prelude_crc), message_crc = u32(j.message_crc) } },
  }
end

local function synthetic_entry(name, bin_path, json_path)
  local j = read_json(json_path)
  local e = { name = name, bin = read_file(bin_path), messages = {} }
  for i, m in ipairs(j.messages) do
    e.messages[i] = {
      headers = m.headers, offset = math.tointeger(m.offset),
      total = math.tointeger(m.total_length), headers_length = m.headers_length,
      prelude_crc = math.tointeger(m.prelude_crc), message_crc = math.tointeger(m.message_crc),
      payload = m.payload_base64 and b64decode(m.payload_base64),
      payload_sha256 = m.payload_sha256, payload_length = m.payload_length,
    }
  end
  return e
end

local SYN = ES .. "kinesis-synthetic/"
local synthetic_index = read_json(SYN .. "index.json")
local NEGATIVE = {}
for _, v in ipairs(synthetic_index) do
  if v.kind == "positive" then
    POSITIVE[#POSITIVE + 1] = synthetic_entry("kinesis-synthetic/" .. v.name,
                                              SYN .. v.bin, SYN .. v.json)
  else
    NEGATIVE[#NEGATIVE + 1] = v
  end
end
POSITIVE[#POSITIVE + 1] = synthetic_entry("kinesis-local/subscribe-to-shard",
  ES .. "kinesis-local/subscribe-to-shard.bin", ES .. "kinesis-local/subscribe-to-shard.json")

local function check_positive(v, r)
  assert.is_nil(r.code, r.text)
  assert.are.same({ true }, r.finish)
  assert.are.equal(#v.messages, #r.msgs)
  for i, want in ipairs(v.messages) do
    local m = r.msgs[i]
    local bin = v.bin:sub(want.offset + 1, want.offset + want.total)
    -- the payload is exactly the bytes between the headers and the CRC
    assert.are.equal(bin:sub(13 + want.headers_length, -5), m.payload)
    if want.payload then
      check_message(m, want.headers, want.payload, v.official)
    else
      check_message(m, want.headers, nil, v.official)
      assert.are.equal(want.payload_length, #m.payload)
    end
  end
end

describe("eventstream CRC-32", function()
  it("matches the standard check value and chains like zlib", function()
    assert.are.equal(0xCBF43926, core.es_crc32("123456789"))
    assert.are.equal(0, core.es_crc32(""))
    assert.are.equal(0xCBF43926, core.es_crc32("56789", core.es_crc32("1234")))
  end)

  it("agrees with a bitwise CRC for every table entry, length and alignment", function()
    -- every byte value at every position mod 8 (slicing tables 0..3 read
    -- input bytes directly), then pseudo-random data (tables 4..7 are hit
    -- through crc ^ word) at offsets 0..7 and lengths 0..40
    local t = {}
    for i = 0, 2047 do t[#t + 1] = string.char((i // 8) % 256) end
    local r = lcg(7)
    for _ = 1, 65536 do t[#t + 1] = string.char(r(256)) end
    local s = table.concat(t)
    assert.are.equal(crc32_ref(s), core.es_crc32(s))
    for off = 1, 8 do
      for len = 0, 40 do
        local piece = s:sub(2048 + off, 2048 + off + len - 1)
        assert.are.equal(crc32_ref(piece), core.es_crc32(piece))
      end
    end
  end)

  it("reproduces the CRCs recorded in every positive vector", function()
    for _, v in ipairs(POSITIVE) do
      for _, m in ipairs(v.messages) do
        local bin = v.bin:sub(m.offset + 1, m.offset + m.total)
        assert.are.equal(m.prelude_crc, core.es_crc32(bin:sub(1, 8)), v.name)
        assert.are.equal(m.message_crc, core.es_crc32(bin:sub(1, -5)), v.name)
      end
    end
  end)
end)

describe("eventstream decoder: positive vectors", function()
  it("covers the expected vector sets", function()
    -- 5 official + 10 synthetic + the kinesis-local capture
    assert.are.equal(16, #POSITIVE)
    assert.are.equal(17, #NEGATIVE)
  end)

  for _, v in ipairs(POSITIVE) do
    for _, c in ipairs(CHUNKINGS) do
      it(v.name .. " decodes exactly, " .. c[1], function()
        local r = run(v.bin, c[2]())
        check_positive(v, r)
        assert.are.equal(0, r.dec:buffered())
      end)
    end
  end

  it("kinesis-synthetic/stream-sequence: 5 messages at every split point", function()
    local v
    for _, p in ipairs(POSITIVE) do
      if p.name == "kinesis-synthetic/stream-sequence" then v = p end
    end
    assert.are.equal(5, #v.messages)
    for cut = 1, #v.bin - 1 do
      local first = true
      local r = run(v.bin, function(left)
        if first then first = false return cut end
        return left
      end)
      check_positive(v, r)
    end
  end)

  it("kinesis-synthetic/subscribe-event-large: the 1 MiB record arrives intact", function()
    local v
    for _, p in ipairs(POSITIVE) do
      if p.name == "kinesis-synthetic/subscribe-event-large" then v = p end
    end
    local r = run(v.bin, function(left) return left end)
    assert.are.equal(1, #r.msgs)
    local want = v.messages[1]
    assert.are.equal(1398511, #v.bin)
    assert.are.equal(want.payload_sha256, sha256_hex(r.msgs[1].payload))
    local data = cjson.decode(r.msgs[1].payload).Records[1].Data
    local raw = b64decode(data)
    assert.are.equal(MiB, #raw)
  end)
end)

describe("eventstream decoder: negative vectors", function()
  local official_class = {
    ["Prelude checksum mismatch"] = "prelude_crc_mismatch",
    ["Message checksum mismatch"] = "message_crc_mismatch",
  }
  for _, name in ipairs { "corrupted_header_len", "corrupted_headers",
                          "corrupted_length", "corrupted_payload" } do
    it("official/" .. name .. " is rejected with its class", function()
      local bin = read_file(ES .. "official/encoded/negative/" .. name)
      local text = read_file(ES .. "official/decoded/negative/" .. name):gsub("%s+$", "")
      local want = assert(official_class[text], text)
      for _, c in ipairs(CHUNKINGS) do
        local r = run(bin, c[2]())
        assert.are.equal(0, #r.msgs)
        assert.are.equal(want, r.code, c[1])
        assert.are.equal("next", r.where)
        assert.is_string(r.text)
      end
    end)
  end

  -- The vectors call the two strict cases implementation_defined: this
  -- decoder rejects them. huge-total-length says "incomplete" for a decoder
  -- without a size cap; ours is capped at 16 MiB, so the prelude itself is
  -- refused as too_large before any of the 2 GiB could be buffered.
  local our_code = {
    ["strict-duplicate-header"] = "duplicate_header",
    ["strict-empty-header-name"] = "empty_header_name",
    ["huge-total-length"] = "too_large",
  }
  for _, v in ipairs(NEGATIVE) do
    it("kinesis-synthetic/" .. v.name .. " -> " .. (our_code[v.name] or v.expected_error), function()
      local bin = read_file(SYN .. v.bin)
      local j = read_json(SYN .. v.json)
      local want = our_code[v.name] or v.expected_error
      assert.are_not.equal("implementation_defined", want)
      local before = math.tointeger(j.expected_messages_before_error or 0)
      for _, c in ipairs(CHUNKINGS) do
        local r = run(bin, c[2]())
        assert.are.equal(before, #r.msgs, c[1])
        if want == "incomplete" then
          -- a streaming decoder waits for more bytes; only finish() fails
          assert.is_nil(r.code, r.text)
          assert.are.equal(nil, r.finish[1])
          assert.are.equal("incomplete", r.finish[2])
          assert.is_string(r.finish[3])
          assert.is_true(r.dec:buffered() > 0)
        else
          assert.are.equal(want, r.code, c[1] .. ": " .. tostring(r.text))
          assert.are.equal("next", r.where)
          -- sticky: the decoder stays failed and holds nothing
          local ok, code = split(r.dec:feed(bin))
          assert.is_nil(ok)
          assert.are.equal(want, code)
          local m, code2 = split(r.dec:next())
          assert.is_nil(m)
          assert.are.equal(want, code2)
          assert.are.equal(0, r.dec:buffered())
          local fok, fcode = split(r.dec:finish())
          assert.is_nil(fok)
          assert.are.equal(want, fcode)
        end
      end
    end)
  end

  it("trailing-partial-message: the first message decodes, then finish() reports incomplete", function()
    local bin = read_file(SYN .. "negative/trailing-partial-message.bin")
    local dec = core.es_decoder()
    assert.is_true(dec:feed(bin))
    local m = dec:next()
    assert.are.equal("SubscribeToShardEvent", m.headers[":event-type"])
    assert.is_nil(dec:next())
    assert.are.equal(20, dec:buffered())
    local ok, code, text = split(dec:finish())
    assert.is_nil(ok)
    assert.are.equal("incomplete", code)
    assert.matches("20 bytes", text)
  end)
end)

describe("eventstream encoder", function()
  for _, v in ipairs(POSITIVE) do
    it("re-encodes " .. v.name .. " byte for byte", function()
      local r = run(v.bin, function(left) return left end)
      assert.are.equal(#v.messages, #r.msgs)
      local parts = {}
      for i, want in ipairs(v.messages) do
        parts[i] = reencode(r.msgs[i], want.headers)
        assert.are.equal(v.bin:sub(want.offset + 1, want.offset + want.total), parts[i])
      end
      assert.are.equal(v.bin, table.concat(parts))
    end)
  end

  it("accepts type names, int64 as decimal strings and uuids in both forms", function()
    local uuid = "01020304-0506-0708-090a-0b0c0d0e0f10"
    local bytes = core.es_encode({
      { name = "t", type = "bool", value = true },
      { name = "f", type = "bool", value = false },
      { name = "b", type = "byte", value = -128 },
      { name = "s", type = "int16", value = -32768 },
      { name = "i", type = "int32", value = 2147483647 },
      { name = "l", type = "int64", value = "-9223372036854775808" },
      { name = "x", type = "bytes", value = "\0\1\255" },
      { name = "str", type = "string", value = "héllo" },
      { name = "ts", type = "timestamp", value = 1700000000123 },
      { name = "u", type = "uuid", value = uuid },
      { name = "u2", type = 9, value = "\1\2\3\4\5\6\7\8\9\10\11\12\13\14\15\16" },
      { name = "t0", type = 0 },
    }, "payload")
    local dec = core.es_decoder()
    assert.is_true(dec:feed(bytes))
    local m = assert(dec:next())
    assert.are.same({
      t = true, f = false, b = -128, s = -32768, i = 2147483647,
      l = math.mininteger, x = "\0\1\255", str = "héllo", ts = 1700000000123,
      u = uuid, u2 = uuid, t0 = true,
    }, m.headers)
    assert.are.same({ t = 0, f = 1, b = 2, s = 3, i = 4, l = 5, x = 6, str = 7,
                      ts = 8, u = 9, u2 = 9, t0 = 0 }, m.types)
    assert.are.equal("payload", m.payload)
    -- independent check of the framing
    assert.are.equal(#bytes, string.unpack(">I4", bytes))
    assert.are.equal(crc32_ref(bytes:sub(1, -5)), string.unpack(">I4", bytes, #bytes - 3))
  end)

  it("encodes no headers and an empty payload as the official empty_message", function()
    assert.are.equal(read_file(ES .. "official/encoded/positive/empty_message"),
                     core.es_encode({}, ""))
    assert.are.equal(read_file(ES .. "official/encoded/positive/empty_message"),
                     core.es_encode())
  end)

  it("raises on invalid headers", function()
    local cases = {
      { { name = "", type = 7, value = "x" } },
      { { name = string.rep("n", 256), type = 7, value = "x" } },
      { { name = "a", type = 10, value = "x" } },
      { { name = "a", type = "int8", value = 1 } },
      { { name = "a", type = "byte", value = 128 } },
      { { name = "a", type = "int16", value = 40000 } },
      { { name = "a", type = "int32", value = 2 ^ 31 } },
      { { name = "a", type = "int32", value = 1.5 } },
      { { name = "a", type = "int64", value = "12x" } },
      { { name = "a", type = "int64", value = "9223372036854775808" } },
      { { name = "a", type = "string", value = string.rep("v", 65536) } },
      { { name = "a", type = "string", value = 5 } },
      { { name = "a", type = "uuid", value = "not-a-uuid" } },
      { { name = "a", type = "bool", value = "yes" } },
      { { name = "a", type = 0, value = false } },
      { "not a table" },
      { { name = "a", type = 7, value = "x" }, { name = "a", type = 7, value = "y" } },
    }
    for i, headers in ipairs(cases) do
      assert.has_error(function() core.es_encode(headers, "") end, nil, "case " .. i)
    end
    assert.has_error(function() core.es_encode({}, string.rep("x", 16 * MiB)) end)
  end)

  it("finds duplicates among many headers (sorted path) and keeps unique ones", function()
    local list = {}
    for i = 1, 40 do list[i] = { name = "h" .. i, type = 4, value = i } end
    local bytes = core.es_encode(list, "")
    local dec = core.es_decoder()
    dec:feed(bytes)
    local m = assert(dec:next())
    assert.are.equal(40, count_keys(m.headers))
    assert.are.equal(17, m.headers.h17)
    list[33].name = "h5"
    local ok, err = pcall(core.es_encode, list, "")
    assert.is_false(ok)
    assert.matches("duplicate_header", err)
  end)
end)

describe("eventstream decoder: edges", function()
  it("rejects a header name or value that overruns the headers block", function()
    -- name length byte says 200, 5 bytes follow
    local r = run(frame("\200abcde", "p"), function(left) return left end)
    assert.are.equal("invalid_header", r.code)
    -- string value length says 300, 3 bytes follow
    r = run(frame(string.pack(">s1BI2", "n", 7, 300) .. "abc", ""), function() return 3 end)
    assert.are.equal("invalid_header", r.code)
    assert.matches("value runs past", r.text)
    -- headers_length one past what fits (CRCs valid)
    local h = hstring("a", "b")
    r = run(frame(h, "", { hlen = #h + 1 }), function(left) return left end)
    assert.are.equal("invalid_length", r.code)
  end)

  it("rejects a bad headers_length from the prelude alone, before the message arrives", function()
    local bin = frame(hstring("a", "b"), string.rep("p", 100), { hlen = 5000 })
    local dec = core.es_decoder()
    assert.is_true(dec:feed(bin:sub(1, 12)))
    local m, code = split(dec:next())
    assert.is_nil(m)
    assert.are.equal("invalid_length", code)
  end)

  it("does not allocate for an absurd total length", function()
    collectgarbage()
    collectgarbage()
    local before = collectgarbage("count")
    local huge = read_file(SYN .. "negative/huge-total-length.bin")
    assert.are.equal(0x7fffffff, string.unpack(">I4", huge))
    local dec = core.es_decoder()
    assert.is_true(dec:feed(huge))
    assert.are.equal(12, dec:buffered())
    local m, code, text = split(dec:next())
    assert.is_nil(m)
    assert.are.equal("too_large", code)
    assert.matches("2147483647", text)
    assert.are.equal(0, dec:buffered())
    -- more bytes after the failure are refused, not buffered
    assert.is_nil(dec:feed(string.rep("x", MiB)))
    assert.are.equal(0, dec:buffered())
    collectgarbage()
    collectgarbage()
    local grew = collectgarbage("count") - before
    assert.is_true(grew < 256, "grew " .. grew .. " KiB")
  end)

  it("does not pre-allocate an announced 16 MiB message (the buffer is GC-visible memory)", function()
    collectgarbage()
    collectgarbage()
    local before = collectgarbage("count")
    local total = 16 * MiB
    local prelude = string.pack(">I4I4", total, 0)
    prelude = prelude .. string.pack(">I4", crc32_ref(prelude))
    local dec = core.es_decoder()
    assert.is_true(dec:feed(prelude))
    assert.is_nil(dec:next())
    assert.is_true(dec:feed(string.rep("p", 1000)))
    assert.is_nil(dec:next())
    assert.are.equal(1012, dec:buffered())
    local grew = collectgarbage("count") - before
    assert.is_true(grew < 256, "grew " .. grew .. " KiB")
    -- the same check catches real buffering: 4 MiB more shows up
    assert.is_true(dec:feed(string.rep("q", 4 * MiB)))
    assert.is_true(collectgarbage("count") - before > 4 * 1024)
    local ok, code, text = split(dec:finish())
    assert.is_nil(ok)
    assert.are.equal("incomplete", code)
    assert.matches("16777216", text)
  end)

  it("rejects a message over the configured maximum as too_large", function()
    local bin = read_file(SYN .. "subscribe-event-records.bin")
    local r = run(bin, function(left) return left end, 1158)
    assert.are.equal("too_large", r.code)
    r = run(bin, function() return 1 end, 1158)
    assert.are.equal("too_large", r.code)
    assert.are.equal(12, r.peak) -- refused as soon as the prelude was complete
    r = run(bin, function(left) return left end, 1159)
    assert.is_nil(r.code)
    assert.are.equal(1, #r.msgs)
    -- 16 MiB is the default and the hard cap
    assert.has_error(function() core.es_decoder(16 * MiB + 1) end)
    assert.has_error(function() core.es_decoder(15) end)
    local prelude = string.pack(">I4I4", 16 * MiB + 1, 0)
    local dec = core.es_decoder()
    dec:feed(prelude .. string.pack(">I4", crc32_ref(prelude)))
    assert.are.equal("too_large", select(2, split(dec:next())))
  end)

  it("keeps buffered() and memory bounded over a long stream", function()
    -- distinct messages (counter header, varying payload) so a buffer
    -- compaction that moved the wrong bytes could not go unnoticed
    local r = lcg(99)
    local function message(i)
      return core.es_encode({
        { name = ":message-type", type = 7, value = "event" },
        { name = ":event-type", type = 7, value = "SubscribeToShardEvent" },
        { name = "n", type = 4, value = i },
      }, string.rep(string.char(65 + i % 26), 100 + r(400)))
    end
    local largest = 16 + 3 * 40 + 500
    local dec = core.es_decoder()
    local pending, made, seen, peak, mem_peak = "", 0, 0, 0, 0
    collectgarbage()
    local base = collectgarbage("count")
    for round = 1, 20000 do
      if #pending < 4096 then
        made = made + 1
        pending = pending .. message(made)
      end
      local n = 1 + r(2 * largest)
      assert.is_true(dec:feed(pending:sub(1, n)))
      pending = pending:sub(n + 1)
      while true do
        local m, code, text = split(dec:next())
        assert.is_nil(code, text)
        if not m then break end
        seen = seen + 1
        assert.are.equal(seen, m.headers.n)
        assert.are.equal(string.char(65 + seen % 26):rep(#m.payload), m.payload)
      end
      if dec:buffered() > peak then peak = dec:buffered() end
      if round % 1000 == 0 then
        collectgarbage()
        local mem = collectgarbage("count") - base
        if mem > mem_peak then mem_peak = mem end
      end
    end
    assert.is_true(seen > 10000)
    -- at most one partial message plus one chunk
    assert.is_true(peak < 3 * largest, "peak " .. peak)
    assert.is_true(mem_peak < 256, "memory grew by " .. mem_peak .. " KiB")
  end)

  it("gives back a large buffer once drained", function()
    local bin = read_file(SYN .. "subscribe-event-large.bin")
    local dec = core.es_decoder()
    collectgarbage()
    collectgarbage()
    local before = collectgarbage("count")
    for i = 1, #bin, 65536 do
      assert.is_true(dec:feed(bin:sub(i, i + 65535)))
    end
    assert.is_true(collectgarbage("count") - before > 1024)
    local m = assert(dec:next())
    assert.are.equal(1398404, #m.payload)
    m = nil
    collectgarbage()
    collectgarbage()
    assert.is_true(collectgarbage("count") - before < 512,
                   "still holding " .. (collectgarbage("count") - before) .. " KiB")
  end)

  it("decodes a message with many headers (scratch for the duplicate check) and rejects a late duplicate", function()
    local parts = {}
    for i = 1, 300 do parts[i] = hstring(string.format("name-%03d", i), "v") end
    local block = table.concat(parts)
    local r = run(frame(block, "x"), function(left) return left end)
    assert.is_nil(r.code, r.text)
    assert.are.equal(300, count_keys(r.msgs[1].headers))
    parts[300] = hstring("name-007", "w")
    r = run(frame(table.concat(parts), "x"), function() return 1 end)
    assert.are.equal("duplicate_header", r.code)
    assert.matches("name%-007", r.text)
    -- small count: pairwise path
    r = run(frame(hstring("a", "1") .. hstring("b", "2") .. hstring("a", "3"), ""),
            function(left) return left end)
    assert.are.equal("duplicate_header", r.code)
    r = run(frame(hstring("a", "1") .. string.pack(">s1B", "", 0), ""),
            function(left) return left end)
    assert.are.equal("empty_header_name", r.code)
  end)

  it("finish(): nothing held, a short prelude, a whole message not taken", function()
    local bin = read_file(ES .. "official/encoded/positive/int32_header")
    local dec = core.es_decoder()
    assert.is_true(dec:finish())
    dec:feed(bin:sub(1, 5))
    local ok, code, text = split(dec:finish())
    assert.is_nil(ok)
    assert.are.equal("incomplete", code)
    assert.matches("prelude", text)
    dec:feed(bin:sub(6))
    ok, code, text = split(dec:finish())
    assert.are.equal("incomplete", code)
    assert.matches("next%(%)", text)
    assert.are.equal(40972, dec:next().headers["event-type"])
    assert.is_true(dec:finish())
  end)

  it("close() is idempotent, frees the buffer and later use raises", function()
    local dec = core.es_decoder()
    dec:feed(string.rep("z", 10))
    assert.are.equal(10, dec:buffered())
    dec:close()
    dec:close()
    assert.are.equal(0, dec:buffered())
    assert.has_error(function() dec:feed("x") end)
    assert.has_error(function() dec:next() end)
    assert.has_error(function() dec:finish() end)
    -- __close on Lua 5.4 shares close()
    local chunk = assert(load([[
      local core = ...
      local d <close> = core.es_decoder()
      d:feed("abc")
      return d
    ]]))
    local d = chunk(core)
    assert.are.equal(0, d:buffered())
    assert.has_error(function() d:next() end)
  end)

  it("is collected with its buffer when dropped", function()
    collectgarbage()
    collectgarbage()
    local before = collectgarbage("count")
    for _ = 1, 50 do
      local dec = core.es_decoder()
      dec:feed(string.rep("y", 100000))
    end
    collectgarbage()
    collectgarbage()
    assert.is_true(collectgarbage("count") - before < 512)
  end)
end)

describe("eventstream under LuaJIT (Lua 5.1 API)", function()
  it("decodes vectors with int64 and timestamps as decimal strings", function()
    local so = "build/5.1/kinesis/core.so"
    local f = io.open(so, "rb")
    local has_luajit = os.execute("command -v luajit >/dev/null 2>&1")
    -- make test builds the LuaJIT modules first: their absence is a failure
    assert.truthy(has_luajit, "luajit is not installed")
    assert.truthy(f, so .. " is missing: run make LUA=luajit")
    f:close()
    local script = os.tmpname()
    local out = assert(io.open(script, "w"))
    out:write([[
      local core = require "kinesis.core"
      local function read(p) local f = assert(io.open(p, "rb")) local s = f:read("*a") f:close() return s end
      local es = os.getenv("SHARED") .. "/vectors/eventstream/"
      local dec = core.es_decoder()
      assert(dec:feed(read(es .. "official/encoded/positive/all_headers")))
      local m = assert(dec:next())
      local h = m.headers
      print(type(h.int64), h.int64, type(h.timestamp), h.timestamp, h.uuid, h.byte,
            tostring(h["bool true"]), m.payload)
      local seq = read(es .. "kinesis-synthetic/stream-sequence.bin")
      local n = 0
      for i = 1, #seq do
        assert(dec:feed(seq:sub(i, i)))
        while dec:next() do n = n + 1 end
      end
      local again = core.es_encode({ { name = "int64", type = 5, value = h.int64 } }, "")
      assert(dec:feed(again))
      print(n, dec:next().headers.int64, assert(dec:finish()))
    ]])
    out:close()
    local p = assert(io.popen("LUA_CPATH='build/5.1/?.so' luajit " .. script .. " 2>&1"))
    local text = p:read("a")
    p:close()
    os.remove(script)
    assert.are.equal("string\t42424242\tstring\t8675309\t01020304-0506-0708-090a-0b0c0d0e0f10\t-49\ttrue\t{'foo':'bar'}\n" ..
                     "5\t42424242\ttrue\n", text)
  end)
end)
