-- core.b64encode / core.b64decode (src/base64.c): RFC 4648 vectors, every
-- byte value, random round trips checked against a tiny pure-Lua
-- reference, and the strict decoder's rejections.
--
-- Decision: decoding is strict. Rejected: a length that is not a multiple
-- of 4, any byte outside A-Z a-z 0-9 + / (so whitespace, line breaks and
-- the URL-safe '-' '_' too), '=' anywhere but the last one or two places,
-- and non-zero bits under the padding (non-canonical forms like "QR==").
-- Kinesis and every SDK emit canonical, unwrapped base64.
local core = require "kinesis.core"

local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local VALUE = {}
for i = 1, 64 do VALUE[ALPHABET:sub(i, i)] = i - 1 end

-- Reference encoder: arithmetic on 24-bit groups, one table.concat.
local function ref_encode(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = n // 262144
    local c2 = n // 4096 % 64
    local c3 = n // 64 % 64
    local c4 = n % 64
    out[#out + 1] = ALPHABET:sub(c1 + 1, c1 + 1) .. ALPHABET:sub(c2 + 1, c2 + 1) ..
      (b and ALPHABET:sub(c3 + 1, c3 + 1) or "=") .. (c and ALPHABET:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end

-- Reference strict decoder: returns the bytes, or nil.
local function ref_decode(s)
  if #s % 4 ~= 0 then return nil end
  local pad = s:match("(=*)$")
  if #pad > 2 then return nil end
  local body = s:sub(1, #s - #pad)
  if body:find("[^A-Za-z0-9+/]") then return nil end
  local out = {}
  for i = 1, #body, 4 do
    local q = body:sub(i, i + 3)
    local n, bits = 0, 0
    for k = 1, #q do
      n = n * 64 + VALUE[q:sub(k, k)]
      bits = bits + 6
    end
    local bytes = bits // 8
    local extra = bits - bytes * 8
    if n % (1 << extra) ~= 0 then return nil end -- non-canonical tail bits
    n = n >> extra
    local chunk = {}
    for k = bytes, 1, -1 do
      chunk[k] = string.char(n % 256)
      n = n // 256
    end
    out[#out + 1] = table.concat(chunk)
  end
  return table.concat(out)
end

local function random_bytes(n)
  local t = {}
  for i = 1, n do t[i] = string.char(math.random(0, 255)) end
  return table.concat(t)
end

describe("base64", function()
  math.randomseed(20150830)

  it("matches the RFC 4648 section 10 vectors", function()
    local v = { [""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==",
                fooba = "Zm9vYmE=", foobar = "Zm9vYmFy" }
    for plain, enc in pairs(v) do
      assert.equal(enc, core.b64encode(plain))
      assert.equal(plain, core.b64decode(enc))
    end
  end)

  it("the reference implementation agrees with RFC 4648 too", function()
    assert.equal("Zm9vYmE=", ref_encode("fooba"))
    assert.equal("fooba", ref_decode("Zm9vYmE="))
    assert.is_nil(ref_decode("QR=="))
  end)

  it("encodes and decodes all 256 byte values", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    all = table.concat(all)
    local enc = core.b64encode(all)
    assert.equal(ref_encode(all), enc)
    assert.equal(all, core.b64decode(enc))
    for i = 0, 255 do
      for _, s in ipairs{ string.char(i), "a" .. string.char(i), string.char(i) .. "\0\255" } do
        local e = core.b64encode(s)
        assert.equal(ref_encode(s), e)
        assert.equal(s, core.b64decode(e))
      end
    end
  end)

  it("round-trips random binary of every length 0..300, as the reference does", function()
    for n = 0, 300 do
      for _ = 1, 3 do
        local s = random_bytes(n)
        local e = core.b64encode(s)
        assert.equal(ref_encode(s), e)
        assert.equal(4 * math.ceil(n / 3), #e)
        assert.equal(s, core.b64decode(e))
        assert.equal(s, ref_decode(e))
      end
    end
  end)

  it("round-trips 1 MiB (and a few sizes around the stack-buffer limit)", function()
    for _, n in ipairs{ 1536, 1537, 1538, 1539, 2048, 4096, 1024 * 1024, 1024 * 1024 + 1 } do
      local s = random_bytes(n)
      local e = core.b64encode(s)
      assert.equal(ref_encode(s), e)
      assert.equal(s, core.b64decode(e))
    end
  end)

  local rejects = {
    { "abc", "length" }, { "a", "length" }, { "abcde", "length" }, { "abc==", "length" },
    { "Zm9v\n", "length" },
    { "ab!d", "invalid character at offset 2" },
    { "ab-_", "invalid character at offset 2" },           -- URL-safe alphabet
    { "Zm9v\255\255\255\255", "invalid character at offset 4" },
    { "Zm\0v", "invalid character at offset 2" },
    { "aGVs bG8", "invalid character at offset 4" },        -- embedded space
    { "aGVs\nbG8", "invalid character at offset 4" },       -- embedded newline
    { "aGVs\r\nbG8=", "length" },                           -- MIME line break
    { "aGVsbG8=\r\n\r\n", "invalid padding at offset 7" },  -- trailing CRLFs
    { "\taGVsbG8", "invalid character at offset 0" },
    { "a===", "invalid padding at offset 1" },
    { "====", "invalid padding at offset 0" },
    { "ab=c", "invalid padding at offset 2" },
    { "=abc", "invalid padding at offset 0" },
    { "Zg==Zg==", "invalid padding at offset 2" },          -- padding mid-stream
    { "Zm9v=m9v", "invalid padding at offset 4" },
    { "QR==", "invalid padding at offset 1" },              -- non-zero bits under '='
    { "Zh==", "invalid padding at offset 1" },
    { "QUJ=", "invalid padding at offset 2" },
    { "Zm9vYmF=", "invalid padding at offset 6" },
  }
  for _, c in ipairs(rejects) do
    it(("rejects %q (%s)"):format(c[1], c[2]), function()
      local out, err = core.b64decode(c[1])
      assert.is_nil(out)
      assert.is_table(err)
      assert.equal("invalid_base64", err.code)
      assert.matches("invalid base64: ", err.message, 1, true)
      assert.matches(c[2], err.message, 1, true)
      assert.equal(err.message, tostring(err))
      assert.is_nil(ref_decode(c[1]))
    end)
  end

  it("accepts the canonical forms next to the rejected ones", function()
    assert.equal("A", core.b64decode("QQ=="))
    assert.equal("AB", core.b64decode("QUI="))
    assert.equal("f", core.b64decode("Zg=="))
    assert.equal("", core.b64decode(""))
  end)

  it("agrees with the reference on random near-base64 input (accept/reject and bytes)", function()
    local chars = ALPHABET .. "==== \n-_*\0\255"
    for _ = 1, 20000 do
      local n = math.random(0, 4) * 4 + (math.random() < 0.1 and math.random(1, 3) or 0)
      local t = {}
      for i = 1, n do
        local k = math.random(1, math.random() < 0.9 and 64 or #chars)
        t[i] = chars:sub(k, k)
      end
      local s = table.concat(t)
      -- bias towards valid padding at the end
      if n >= 4 and math.random() < 0.3 then s = s:sub(1, n - 2) .. (math.random() < 0.5 and "==" or "A=") end
      local want = ref_decode(s)
      local got, err = core.b64decode(s)
      if want == nil then
        assert(got == nil and type(err) == "table" and err.code == "invalid_base64", ("accepted %q"):format(s))
      else
        assert(got == want, ("decoded %q wrongly"):format(s))
      end
    end
  end)

  it("raises on wrong argument types", function()
    assert.has_error(function() core.b64encode(nil) end)
    assert.has_error(function() core.b64decode({}) end)
    assert.equal("MTIz", core.b64encode(123)) -- numbers are strings to the Lua API
  end)
end)
