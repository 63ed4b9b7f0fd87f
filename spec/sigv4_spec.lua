-- SigV4 signer (src/sigv4.c through core.signer), SHA-256 and HMAC-SHA256.
-- Official vectors first: every header-signing case of the AWS suite
-- (aws-c-auth copy) stage by stage, the older botocore copy, and the
-- generated Kinesis vectors; then the behaviour the vectors do not pin.
local core = require "kinesis.core"
local cjson = require "cjson"
local lfs = require "lfs"

local SHARED = assert(os.getenv("SHARED"), "SHARED must point to the shared folder")
local VECTORS = SHARED .. "/vectors/"

local function readfile(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function exists(path)
  return lfs.attributes(path, "mode") ~= nil
end

local function subdirs(dir)
  local out = {}
  for name in lfs.dir(dir) do
    if name:sub(1, 1) ~= "." and lfs.attributes(dir .. "/" .. name, "mode") == "directory" then
      out[#out + 1] = name
    end
  end
  table.sort(out)
  return out
end

-- "2015-08-30T12:36:00Z" -> seconds since the epoch, by counting days
-- (deliberately not the civil-from-days formula the C code uses).
local function iso_to_epoch(s)
  local y, mo, d, h, mi, se = s:match("^(%d%d%d%d)-(%d%d)-(%d%d)T(%d%d):(%d%d):(%d%d)Z$")
  assert(y, "bad timestamp " .. tostring(s))
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  local function leap(yr) return (yr % 4 == 0 and yr % 100 ~= 0) or yr % 400 == 0 end
  local mdays = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
  local days = 0
  for yr = 1970, y - 1 do days = days + (leap(yr) and 366 or 365) end
  for m = 1, mo - 1 do days = days + mdays[m] + ((m == 2 and leap(y)) and 1 or 0) end
  days = days + d - 1
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(se)
end

-- request.txt / .req: request line, "Name:value" lines (a line starting
-- with whitespace continues the previous value), then an optional body
-- after one empty line.
local function parse_request(text)
  local head, body = text:match("^(.-)\n\n(.*)$")
  if not head then head = text:gsub("\n+$", "") end
  local lines = {}
  for line in (head .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = line end
  local method, target = lines[1]:match("^(%S+) (.*) HTTP/1%.1$")
  assert(method, "bad request line: " .. lines[1])
  local path, query = target:match("^([^?]*)%?(.*)$")
  if not path then path = target end
  local headers = {}
  for i = 2, #lines do
    local line = lines[i]
    if line:match("^[ \t]") then
      local last = headers[#headers]
      last[2] = last[2] .. "\n" .. line
    else
      local name, value = line:match("^([^:]+):(.*)$")
      assert(name, "bad header line: " .. line)
      headers[#headers + 1] = { name, value }
    end
  end
  return { method = method, path = path, query = query, headers = headers, body = body }
end

-- Removes (and returns the value of) every header called `name`.
local function take_header(headers, name)
  local kept, value = {}, nil
  for _, h in ipairs(headers) do
    if h[1]:lower() == name then value = h[2] else kept[#kept + 1] = h end
  end
  return kept, value
end

-- Multiset of "lowercase-name:value" lines, for order-free comparison.
local function header_lines(headers)
  local out = {}
  for _, h in ipairs(headers) do out[#out + 1] = h[1]:lower() .. ":" .. h[2] end
  table.sort(out)
  return out
end

local SUITE_TIME = iso_to_epoch("2015-08-30T12:36:00Z")
local AKID = "AKIDEXAMPLE"
local SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

describe("sha256_hex and hmac_sha256", function()
  it("match FIPS 180-4 SHA-256 examples", function()
    assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", core.sha256_hex(""))
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", core.sha256_hex("abc"))
    assert.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
      core.sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
    assert.equal("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
      core.sha256_hex(string.rep("a", 1000000)))
  end)

  it("is binary safe (embedded NUL is hashed, not a terminator)", function()
    assert.are_not.equal(core.sha256_hex("a"), core.sha256_hex("a\0b"))
    assert.equal("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d", core.sha256_hex("\0"))
  end)

  local function unhex(h) return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)) end
  local function hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end

  -- RFC 4231 section 4 (case 5 truncates the output, so it is left out).
  local rfc4231 = {
    { string.rep("\x0b", 20), "Hi There",
      "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7" },
    { "Jefe", "what do ya want for nothing?",
      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" },
    { string.rep("\xaa", 20), string.rep("\xdd", 50),
      "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe" },
    { unhex("0102030405060708090a0b0c0d0e0f10111213141516171819"), string.rep("\xcd", 50),
      "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b" },
    { string.rep("\xaa", 131), "Test Using Larger Than Block-Size Key - Hash Key First",
      "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54" },
    { string.rep("\xaa", 131),
      "This is a test using a larger than block-size key and a larger than block-size data. " ..
      "The key needs to be hashed before being used by the HMAC algorithm.",
      "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2" },
  }
  for i, v in ipairs(rfc4231) do
    it("HMAC-SHA256 matches RFC 4231 test case " .. (i < 5 and i or i + 1), function()
      local mac = core.hmac_sha256(v[1], v[2])
      assert.equal(32, #mac)
      assert.equal(v[3], hex(mac))
    end)
  end

  it("raise on wrong argument types", function()
    assert.has_error(function() core.sha256_hex(nil) end)
    assert.has_error(function() core.hmac_sha256("k", {}) end)
  end)
end)

-- 1a: the official suite, aws-c-auth layout ----------------------------------

describe("SigV4 official suite (vectors/sigv4)", function()
  local dir = VECTORS .. "sigv4"
  local cases = subdirs(dir)

  it("has all 38 cases", function()
    assert.equal(38, #cases)
  end)

  for _, name in ipairs(cases) do
    local base = dir .. "/" .. name .. "/"
    -- Every case has the header-signing files; the query (presigned URL)
    -- files are not used (Kinesis never presigns).
    if exists(base .. "header-canonical-request.txt") then
      local ctx = cjson.decode(readfile(base .. "context.json"))
      local req = parse_request(readfile(base .. "request.txt"))
      local opts = {
        method = req.method, path = req.path, query = req.query,
        headers = req.headers, body = req.body,
        region = ctx.region, service = ctx.service,
        access_key = ctx.credentials.access_key_id,
        secret_key = ctx.credentials.secret_access_key,
        session_token = ctx.credentials.token,
        time = iso_to_epoch(ctx.timestamp),
        normalize_path = ctx.normalize,
        sign_body = ctx.sign_body,
        omit_session_token = ctx.omit_session_token or false,
        debug = true,
      }
      local result
      local function signed()
        if not result then
          local out, err = core.signer():sign(opts)
          assert(out, err)
          result = out
        end
        return result
      end
      local expected_signed = parse_request(readfile(base .. "header-signed-request.txt"))
      local _, expected_auth = take_header(expected_signed.headers, "authorization")

      it(name .. ": canonical request", function()
        assert.equal(readfile(base .. "header-canonical-request.txt"), signed().canonical_request)
      end)
      it(name .. ": string to sign", function()
        assert.equal(readfile(base .. "header-string-to-sign.txt"), signed().string_to_sign)
      end)
      it(name .. ": signature", function()
        assert.equal(readfile(base .. "header-signature.txt"), signed().signature)
      end)
      it(name .. ": Authorization", function()
        assert.equal(expected_auth, signed().authorization)
      end)
      it(name .. ": signed request headers", function()
        local all = {}
        for _, h in ipairs(req.headers) do all[#all + 1] = h end
        for _, h in ipairs(signed().headers) do all[#all + 1] = h end
        assert.same(header_lines(expected_signed.headers), header_lines(all))
      end)
    end
  end
end)

-- 1b: the botocore copy: adds repeated query keys, '$' in the path, a
-- form POST without x-amz-content-sha256, and the session-token cases ------

describe("SigV4 botocore suite (vectors/sigv4-botocore)", function()
  local dir = VECTORS .. "sigv4-botocore"
  local cases = {}
  for _, name in ipairs(subdirs(dir)) do
    if exists(dir .. "/" .. name .. "/" .. name .. ".req") then
      cases[#cases + 1] = { name = name, base = dir .. "/" .. name .. "/" .. name }
    else
      for _, sub in ipairs(subdirs(dir .. "/" .. name)) do
        cases[#cases + 1] = { name = name .. "/" .. sub, base = dir .. "/" .. name .. "/" .. sub .. "/" .. sub }
      end
    end
  end
  local STS_TOKEN = readfile(dir .. "/post-sts-token/readme.txt"):match("\n(AQoD%S+)")

  it("has all 34 cases", function()
    assert.equal(34, #cases)
    assert.truthy(STS_TOKEN)
  end)

  for _, c in ipairs(cases) do
    local req = parse_request(readfile(c.base .. ".req"))
    -- The .req files already carry X-Amz-Date; the signer adds its own.
    local headers, date = take_header(req.headers, "x-amz-date")
    local opts = {
      method = req.method, path = req.path, query = req.query,
      headers = headers, body = req.body,
      region = "us-east-1", service = "service", access_key = AKID, secret_key = SECRET,
      time = SUITE_TIME, debug = true,
    }
    if c.name == "get-vanilla-with-session-token" then
      -- Its .req lacks the token: it is a credential (vectors README 1b).
      opts.session_token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"
    elseif c.name == "post-sts-token/post-sts-header-after" then
      opts.session_token = STS_TOKEN
      opts.omit_session_token = true
    end
    -- post-sts-header-before has the token as an ordinary request header:
    -- without a session_token option the signer signs it like any other.
    local result
    local function signed()
      if not result then
        local out, err = core.signer():sign(opts)
        assert(out, err)
        result = out
      end
      return result
    end

    it(c.name .. ": canonical request", function()
      assert.equal("20150830T123600Z", date)
      assert.equal(readfile(c.base .. ".creq"), signed().canonical_request)
    end)
    it(c.name .. ": string to sign", function()
      assert.equal(readfile(c.base .. ".sts"), signed().string_to_sign)
    end)
    it(c.name .. ": Authorization", function()
      assert.equal(readfile(c.base .. ".authz"), signed().authorization)
    end)
  end

  it("post-sts-header-after: the token is added after signing, unsigned", function()
    local out = assert(core.signer():sign{
      method = "POST", path = "/", headers = { { "Host", "example.amazonaws.com" } },
      region = "us-east-1", service = "service", access_key = AKID, secret_key = SECRET,
      session_token = STS_TOKEN, omit_session_token = true, time = SUITE_TIME,
    })
    assert.equal("host;x-amz-date", out.signed_headers)
    local _, token = take_header(out.headers, "x-amz-security-token")
    assert.equal(STS_TOKEN, token)
  end)
end)

-- 1c: generated Kinesis vectors (smithy signer, cross-checked) -------------

describe("SigV4 Kinesis vectors (vectors/sigv4-kinesis)", function()
  local dir = VECTORS .. "sigv4-kinesis"
  local index = cjson.decode(readfile(dir .. "/index.json"))
  local files = {}
  for name in lfs.dir(dir) do
    if name:match("%.json$") and name ~= "index.json" then files[#files + 1] = name end
  end
  table.sort(files)

  it("index.json lists every vector file", function()
    local listed = {}
    for _, e in ipairs(index) do listed[#listed + 1] = e.file end
    table.sort(listed)
    assert.same(files, listed)
    assert.equal(26, #files)
  end)

  for _, file in ipairs(files) do
    local v = cjson.decode(readfile(dir .. "/" .. file))
    local name, exp = v.name, v.expected
    local headers, names = {}, {}
    for k in pairs(v.headers) do names[#names + 1] = k end
    table.sort(names)
    for _, k in ipairs(names) do headers[#headers + 1] = { k, v.headers[k] } end
    local opts = {
      method = v.method, path = v.path, headers = headers, body = v.body,
      region = v.region, service = v.service,
      access_key = v.access_key, secret_key = v.secret_key, session_token = v.session_token,
      time = iso_to_epoch(v.datetime),
      normalize_path = v.signer_options.normalize_path,
      sign_body = v.signer_options.apply_checksum,
      debug = true,
    }
    local result
    local function signed()
      if not result then
        local out, err = core.signer():sign(opts)
        assert(out, err)
        result = out
      end
      return result
    end

    it(name .. ": body and payload hash", function()
      assert.equal(v.body_length, #v.body)
      assert.equal(exp.payload_hash, signed().payload_hash)
      assert.equal(exp.amz_date, signed().amz_date)
      assert.equal(exp.credential_scope, signed().credential_scope)
    end)
    it(name .. ": canonical request", function()
      assert.equal(exp.canonical_request, signed().canonical_request)
      assert.equal(exp.canonical_request_sha256, core.sha256_hex(signed().canonical_request))
    end)
    it(name .. ": string to sign", function()
      assert.equal(exp.string_to_sign, signed().string_to_sign)
    end)
    it(name .. ": signing key", function()
      assert.equal(exp.signing_key_hex, signed().signing_key)
    end)
    it(name .. ": signature", function()
      assert.equal(exp.signature, signed().signature)
    end)
    it(name .. ": Authorization and signed headers", function()
      assert.equal(exp.authorization, signed().authorization)
      assert.equal(exp.signed_headers, signed().signed_headers)
    end)
    it(name .. ": headers added by the signer", function()
      local want = {}
      for k, val in pairs(exp.headers_added_by_signer) do want[#want + 1] = k:lower() .. ":" .. val end
      table.sort(want)
      assert.same(want, header_lines(signed().headers))
    end)
  end
end)

-- Behaviour beyond the vectors ----------------------------------------------

local function kinesis_opts(over)
  local o = {
    method = "POST", path = "/",
    headers = {
      { "Host", "kinesis.us-east-1.amazonaws.com" },
      { "Content-Type", "application/x-amz-json-1.1" },
      { "X-Amz-Target", "Kinesis_20131202.PutRecord" },
    },
    body = '{"StreamName":"s","PartitionKey":"k","Data":"aGVsbG8="}',
    region = "us-east-1", service = "kinesis", access_key = AKID, secret_key = SECRET,
    time = SUITE_TIME,
  }
  for k, val in pairs(over or {}) do o[k] = val end
  return o
end

describe("signing-key cache", function()
  it("reuses the derived key for the same secret, day, region and service", function()
    local s = core.signer()
    local a = assert(s:sign(kinesis_opts()))
    assert.same({ hits = 0, misses = 1 }, s:cache_stats())
    local b = assert(s:sign(kinesis_opts()))
    assert.same({ hits = 1, misses = 1 }, s:cache_stats())
    assert.equal(a.signature, b.signature)
    -- later the same UTC day: same key, new date, new signature
    local c = assert(s:sign(kinesis_opts{ time = SUITE_TIME + 3600, debug = true }))
    assert.same({ hits = 2, misses = 1 }, s:cache_stats())
    assert.are_not.equal(a.signature, c.signature)
    local fresh = assert(core.signer():sign(kinesis_opts{ time = SUITE_TIME + 3600, debug = true }))
    assert.equal(fresh.signing_key, c.signing_key)
    assert.equal(fresh.signature, c.signature)
  end)

  it("derives a new key when the date, region, service or secret changes", function()
    local s = core.signer()
    local base = assert(s:sign(kinesis_opts{ debug = true }))
    local variants = {
      { time = SUITE_TIME + 86400 },                -- next day
      { region = "eu-west-1" },
      { service = "kinesis2" },
      { secret_key = SECRET:sub(1, -2) .. "Z" },     -- same length, last byte differs
    }
    for i, over in ipairs(variants) do
      over.debug = true
      local got = assert(s:sign(kinesis_opts(over)))
      local want = assert(core.signer():sign(kinesis_opts(over)))
      assert.equal(want.signing_key, got.signing_key)
      assert.equal(want.signature, got.signature)
      assert.are_not.equal(base.signing_key, got.signing_key)
      assert.are_not.equal(base.signature, got.signature)
      assert.equal(i + 1, s:cache_stats().misses)
    end
  end)

  it("stays correct when more configurations than slots interleave", function()
    local s = core.signer()
    local configs = {}
    for i = 1, 7 do
      configs[i] = { region = "r-" .. i, secret_key = SECRET .. (i % 3), time = SUITE_TIME + (i % 2) * 86400 }
    end
    local want = {}
    for i, c in ipairs(configs) do want[i] = assert(core.signer():sign(kinesis_opts(c))).signature end
    for round = 1, 5 do
      for i = 1, #configs do
        local k = (i * round) % #configs + 1
        assert.equal(want[k], assert(s:sign(kinesis_opts(configs[k]))).signature)
      end
    end
  end)

  it("close() wipes the cache and the signer keeps working", function()
    local s = core.signer()
    local a = assert(s:sign(kinesis_opts()))
    s:close()
    s:close()
    assert.same({ hits = 0, misses = 0 }, s:cache_stats())
    assert.equal(a.signature, assert(s:sign(kinesis_opts())).signature)
  end)
end)

describe("header injection and invalid input", function()
  local function sign_with_header(name, value)
    local o = kinesis_opts()
    o.headers[#o.headers + 1] = { name, value }
    return core.signer():sign(o)
  end

  local bad_values = {
    ["CRLF then a header"] = "x\r\nX-Evil: 1",
    ["bare LF then a header"] = "x\nX-Evil: 1",
    ["bare CR"] = "x\rX-Evil: 1",
    ["NUL"] = "x\0y",
    ["trailing CRLF"] = "x\r\n",
    ["trailing LF"] = "x\n",
  }
  for what, value in pairs(bad_values) do
    it("rejects a header value with " .. what, function()
      local out, err = sign_with_header("X-Custom", value)
      assert.is_nil(out)
      assert.matches("CR, LF or NUL", err)
    end)
  end

  for _, name in ipairs{ "X-Evil\r\nHost", "X-Evil\n", "X\0Y", "Bad Name", "Bad:Name", "" } do
    it(("rejects the header name %q"):format(name), function()
      local out, err = sign_with_header(name, "v")
      assert.is_nil(out)
      assert.matches("header 4", err)
    end)
  end

  it("accepts an obsolete line fold and signs it as one space", function()
    local o = kinesis_opts{ debug = true }
    o.headers[#o.headers + 1] = { "X-Folded", "a\r\n\tb\n   c" }
    local out = assert(core.signer():sign(o))
    assert.matches("\nx-folded:a b c\n", out.canonical_request, 1, true)
  end)

  it("rejects a session token with CR, LF or NUL", function()
    for _, tok in ipairs{ "abc\r\nX-Evil: 1", "abc\n", "a\0b" } do
      local out, err = core.signer():sign(kinesis_opts{ session_token = tok })
      assert.is_nil(out)
      assert.matches("session_token", err)
    end
  end)

  it("rejects headers the signer sets itself", function()
    for _, h in ipairs{ { "X-Amz-Date", "20150830T123600Z" }, { "authorization", "x" } } do
      local out, err = sign_with_header(h[1], h[2])
      assert.is_nil(out)
      assert.matches("set by the signer", err)
    end
    local o = kinesis_opts{ session_token = "tok" }
    o.headers[#o.headers + 1] = { "X-Amz-Security-Token", "tok" }
    local out, err = core.signer():sign(o)
    assert.is_nil(out)
    assert.matches("set by the signer", err)
    o = kinesis_opts{ sign_body = true }
    o.headers[#o.headers + 1] = { "x-amz-content-sha256", "UNSIGNED-PAYLOAD" }
    out, err = core.signer():sign(o)
    assert.is_nil(out)
    assert.matches("set by the signer", err)
  end)

  it("returns nil, err naming a missing or invalid field", function()
    for _, field in ipairs{ "method", "region", "service", "access_key", "secret_key" } do
      local o = kinesis_opts()
      o[field] = nil
      local out, err = core.signer():sign(o)
      assert.is_nil(out)
      assert.equal("invalid_request", err.code)
      assert.equal("missing " .. field, err.message)
    end
    local cases = {
      { { region = "us east 1" }, "invalid region" },
      { { region = string.rep("a", 65) }, "invalid region" },
      { { service = "kin/esis" }, "invalid service" },
      { { access_key = "AKID/EXAMPLE" }, "invalid access_key" },
      { { access_key = "AKID\nX" }, "invalid access_key" },
      { { method = "PO ST" }, "invalid method" },
      { { path = "no-slash" }, "path must start" },
      { { path = "/a\r\nb" }, "path contains" },
      { { query = "a=b\nc" }, "query contains" },
      { { time = -1 }, "time out of range" },
      { { time = 253402300800 }, "time out of range" },
      { { time = 0 / 0 }, "time out of range" },
      { { payload_hash = "abc" }, "invalid payload_hash" },
      { { payload_hash = string.rep("A", 64):lower():gsub("a", "g") }, "invalid payload_hash" },
    }
    for _, c in ipairs(cases) do
      local out, err = core.signer():sign(kinesis_opts(c[1]))
      assert.is_nil(out)
      assert.equal("invalid_request", err.code)
      assert.matches(c[2], err.message, 1, true)
    end
  end)

  it("raises on wrong argument types (programming errors)", function()
    local s = core.signer()
    assert.has_error(function() s:sign("x") end)
    assert.has_error(function() s.sign({}, kinesis_opts()) end)
    assert.has_error(function() s:sign(kinesis_opts{ headers = "Host: x" }) end)
    assert.has_error(function() s:sign(kinesis_opts{ headers = { "Host" } }) end)
    assert.has_error(function() s:sign(kinesis_opts{ headers = { { "Host" } } }) end)
    assert.has_error(function() s:sign(kinesis_opts{ headers = { { "Content-Length", 5 } } }) end)
    assert.has_error(function() s:sign(kinesis_opts{ body = 5 }) end)
    assert.has_error(function() s:sign(kinesis_opts{ time = "now" }) end)
    assert.has_error(function() s:sign(kinesis_opts{ normalize_path = "yes" }) end)
    assert.has_error(function() s:sign(kinesis_opts{ secret_key = {} }) end)
  end)
end)

describe("session token", function()
  it("is added as X-Amz-Security-Token and signed", function()
    local plain = assert(core.signer():sign(kinesis_opts()))
    local out = assert(core.signer():sign(kinesis_opts{ session_token = "TOKEN/abc+=", debug = true }))
    assert.equal("content-type;host;x-amz-date;x-amz-security-token;x-amz-target", out.signed_headers)
    assert.matches("\nx-amz-security-token:TOKEN/abc+=\n", out.canonical_request, 1, true)
    local _, tok = take_header(out.headers, "x-amz-security-token")
    assert.equal("TOKEN/abc+=", tok)
    assert.are_not.equal(plain.signature, out.signature)
    -- a different token changes the signature: it is really signed
    local other = assert(core.signer():sign(kinesis_opts{ session_token = "TOKEN/abd+=" }))
    assert.are_not.equal(out.signature, other.signature)
  end)

  it("an empty token counts as none", function()
    local plain = assert(core.signer():sign(kinesis_opts()))
    local out = assert(core.signer():sign(kinesis_opts{ session_token = "" }))
    assert.equal(plain.authorization, out.authorization)
    assert.equal(2, #out.headers)
  end)
end)

describe("signer output", function()
  it("is deterministic for a fixed time", function()
    local s = core.signer()
    local a = assert(s:sign(kinesis_opts{ debug = true, session_token = "t" }))
    local b = assert(s:sign(kinesis_opts{ debug = true, session_token = "t" }))
    local c = assert(core.signer():sign(kinesis_opts{ debug = true, session_token = "t" }))
    assert.same(a, b)
    assert.same(a, c)
    assert.equal("20150830T123600Z", a.amz_date)
  end)

  it("lists the headers to add in a fixed order", function()
    local out = assert(core.signer():sign(kinesis_opts{ session_token = "t", sign_body = true }))
    local names = {}
    for i, h in ipairs(out.headers) do names[i] = h[1] end
    assert.same({ "X-Amz-Date", "X-Amz-Security-Token", "x-amz-content-sha256", "Authorization" }, names)
    assert.equal(core.sha256_hex(kinesis_opts().body), out.headers[3][2])
    assert.equal(out.authorization, out.headers[4][2])
    assert.is_nil(out.canonical_request)
  end)

  it("uses the current time when time is nil, and drops fractions", function()
    local o = kinesis_opts()
    o.time = nil
    local before = os.time()
    local out = assert(core.signer():sign(o))
    local after = os.time()
    local ok = false
    for t = before, after do
      if os.date("!%Y%m%dT%H%M%SZ", t) == out.amz_date then ok = true end
    end
    assert.is_true(ok)
    local frac = assert(core.signer():sign(kinesis_opts{ time = SUITE_TIME + 0.999 }))
    assert.equal("20150830T123600Z", frac.amz_date)
  end)

  it("formats dates across years, leap days and the far future", function()
    for _, iso in ipairs{ "1970-01-01T00:00:00Z", "2000-02-29T23:59:59Z", "2024-02-29T00:00:00Z",
                          "2100-03-01T12:00:00Z", "9999-12-31T23:59:59Z" } do
      local out = assert(core.signer():sign(kinesis_opts{ time = iso_to_epoch(iso) }))
      assert.equal(iso:gsub("[-:]", ""), out.amz_date)
    end
  end)

  it("does not sign headers proxies rewrite (user-agent and the like)", function()
    local base = assert(core.signer():sign(kinesis_opts()))
    local o = kinesis_opts()
    for _, h in ipairs{ { "User-Agent", "lua-kinesis/1" }, { "Connection", "keep-alive" },
                        { "X-Amzn-Trace-Id", "Root=1" }, { "Proxy-Authorization", "x" },
                        { "Transfer-Encoding", "chunked" }, { "Expect", "100-continue" } } do
      o.headers[#o.headers + 1] = h
    end
    local out = assert(core.signer():sign(o))
    assert.equal(base.signed_headers, out.signed_headers)
    assert.equal(base.signature, out.signature)
  end)

  it("payload_hash replaces the body hash; UNSIGNED-PAYLOAD is accepted", function()
    local h = core.sha256_hex("other")
    local out = assert(core.signer():sign(kinesis_opts{ payload_hash = h, debug = true }))
    assert.equal(h, out.canonical_request:sub(-64))
    out = assert(core.signer():sign(kinesis_opts{ payload_hash = "UNSIGNED-PAYLOAD", debug = true }))
    assert.equal("\nUNSIGNED-PAYLOAD", out.canonical_request:sub(-17))
    local o = kinesis_opts{ payload_hash = h }
    o.headers[#o.headers + 1] = { "x-amz-content-sha256", "UNSIGNED-PAYLOAD" }
    local bad, err = core.signer():sign(o)
    assert.is_nil(bad)
    assert.matches("differs", err)
  end)

  it("sign_body adds x-amz-content-sha256 = SHA-256 of the body and signs it", function()
    local out = assert(core.signer():sign(kinesis_opts{ sign_body = true, debug = true }))
    local want = core.sha256_hex(kinesis_opts().body)
    assert.matches("\nx-amz-content-sha256:" .. want .. "\n", out.canonical_request, 1, true)
    assert.matches(";x-amz-content-sha256;", out.signed_headers, 1, true)
  end)

  it("canonicalizes queries: decode, RFC 3986 re-encode, sort by key then value", function()
    local out = assert(core.signer():sign(kinesis_opts{
      query = "b=2&a=z&a=y&%e1%88%b4=%7e&c&&d=a+b c&e=%zz&f=%2F", debug = true }))
    local q = out.canonical_request:match("^[^\n]*\n[^\n]*\n([^\n]*)\n")
    assert.equal("%E1%88%B4=~&a=y&a=z&b=2&c=&d=a%2Bb%20c&e=%25zz&f=%2F", q)
  end)

  it("normalizes and encodes paths", function()
    local function uri(path, normalize)
      local out = assert(core.signer():sign(kinesis_opts{ path = path, normalize_path = normalize, debug = true }))
      return (out.canonical_request:match("^[^\n]*\n([^\n]*)\n"))
    end
    assert.equal("/", uri("/", true))
    assert.equal("/", uri("", true))
    assert.equal("/a", uri("/a/b/..", true))          -- as botocore and smithy
    assert.equal("/a/", uri("/a/b/../", true))
    assert.equal("/a/c", uri("/a/./b/../../a//c", true))
    assert.equal("/", uri("/../..", true))
    assert.equal("/a/b/../", uri("/a/b/../", false))
    -- the path is the wire form: an escape is encoded once more (non-S3 rule)
    assert.equal("/a%2520b", uri("/a%20b", true))
    assert.equal("/%E2%82%AC/%24", uri("/\xe2\x82\xac/$", true))
  end)

  it("joins repeated headers in order and signs an empty value as 'name:'", function()
    local o = kinesis_opts{ debug = true }
    o.headers[#o.headers + 1] = { "X-B", " 2 " }
    o.headers[#o.headers + 1] = { "x-a", "" }
    o.headers[#o.headers + 1] = { "x-b", "1" }
    o.headers[#o.headers + 1] = { "X-B", "  3\t\t4  " }
    local out = assert(core.signer():sign(o))
    assert.matches("\nx-a:\nx-amz-date:20150830T123600Z\nx-amz-target:Kinesis_20131202.PutRecord\nx-b:2,1,3 4\n\n",
      out.canonical_request, 1, true)
  end)

  it("handles many headers (more than the C stack array)", function()
    local o = kinesis_opts()
    for i = 1, 40 do o.headers[#o.headers + 1] = { ("X-H%02d"):format(i), tostring(i) } end
    local out = assert(core.signer():sign(o))
    assert.equal(44, select(2, out.signed_headers:gsub(";", "")) + 1)
  end)
end)

describe("signer:sign_headers (the request pipeline's positional form)", function()
  local function positional(s, o, headers)
    return s:sign_headers(headers, o.method, o.path, o.body, o.region, o.service,
      o.access_key, o.secret_key, o.session_token, o.time)
  end
  local function copy(headers)
    local out = {}
    for i, h in ipairs(headers) do out[i] = { h[1], h[2] } end
    return out
  end

  it("appends exactly the headers sign{} returns, after the caller's, token or not", function()
    for _, token in ipairs { false, "TOKEN/abc+=" } do
      local o = kinesis_opts{ session_token = token or nil }
      local want = assert(core.signer():sign(o))
      local headers = copy(o.headers)
      local got = assert(positional(core.signer(), o, headers))
      assert.equal(headers, got)
      assert.same(o.headers, { headers[1], headers[2], headers[3] })
      local added = {}
      for i = 4, #headers do added[#added + 1] = headers[i] end
      assert.same(want.headers, added)
      assert.equal(token and 6 or 5, #headers)
    end
  end)

  it("signs the same as sign{} again and again with one signer (key and contexts reused)", function()
    local s = core.signer()
    for i = 1, 5 do
      local o = kinesis_opts{ time = SUITE_TIME + i * 86400, body = ("x"):rep(i * 100) }
      local want = assert(core.signer():sign(o)).authorization
      local headers = positional(s, o, copy(o.headers))
      assert.equal(want, headers[#headers][2])
      -- the derived key again, with the same key held by the HMAC context
      headers = positional(s, o, copy(o.headers))
      assert.equal(want, headers[#headers][2])
    end
  end)

  it("fails as sign{} does: nil, err, and nothing appended", function()
    local o = kinesis_opts{ region = "us east 1" }
    local headers = copy(o.headers)
    local out, err = positional(core.signer(), o, headers)
    assert.is_nil(out)
    assert.equal("invalid_request", err.code)
    assert.matches("invalid region", err.message, 1, true)
    assert.equal(3, #headers)
    o = kinesis_opts()
    headers = copy(o.headers)
    headers[#headers + 1] = { "Authorization", "x" }
    out, err = positional(core.signer(), o, headers)
    assert.is_nil(out)
    assert.matches("set by the signer", err.message)
    assert.has_error(function() positional(core.signer(), kinesis_opts{ secret_key = {} }, {}) end,
      "sign: field 'secret_key' must be a string (got table)")
    assert.has_error(function() positional(core.signer(), kinesis_opts{ time = "now" }, {}) end,
      "sign: field 'time' must be a number (got string)")
    assert.has_error(function() core.signer():sign_headers("Host: x") end)
  end)
end)
