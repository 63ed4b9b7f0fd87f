-- luajit_spec.lua - the pure core under LuaJIT, the VM OpenResty embeds:
-- build/5.1/kinesis/core.so (make LUA=luajit) and the Lua modules run
-- through `luajit` against the shared vectors (SigV4, hash keys and shard
-- maps, event-stream frames, base64), and the 5.1-compatible specs (SigV4
-- suite, shard maps, validation, the C codec, the producer's body writer,
-- paging, errors) run again under LuaJIT busted.
-- Each check runs in a luajit child process and reports JSON the spec reads.

local cjson = require "cjson"

local ROOT = os.getenv("PWD")
local SHARED = os.getenv("SHARED") or (ROOT .. "/../shared")
local LUAJIT = os.getenv("LUAJIT") or "luajit"
local CJSON_51 = "/usr/lib/x86_64-linux-gnu/lua/5.1/?.so"

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  return rc, (out:gsub("__rc=%d+%s*$", ""))
end

local ENV = ("cd %s && SHARED=%s LUA_PATH=%s LUA_CPATH=%s "):format(sh_quote(ROOT), sh_quote(SHARED),
  sh_quote(ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;" .. ROOT .. "/spec/?.lua;/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua"),
  sh_quote(ROOT .. "/build/5.1/?.so;" .. CJSON_51))

-- helpers every probe starts with (Lua 5.1 syntax)
local PRELUDE = [[
local cjson = require "cjson"
local core = require "kinesis.core"
local SHARED = assert(os.getenv("SHARED"))
local V = SHARED .. "/vectors/"
local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end
local function json(path) return cjson.decode(read(path)) end
local report = { fails = {} }
local function check(cond, what)
  if not cond then report.fails[#report.fails + 1] = what end
end
]]

-- runs `body` (after PRELUDE) under luajit; returns the table it printed
local function probe(body)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(PRELUDE, body, "\nio.write(cjson.encode(report))\n")
  f:close()
  local rc, out = run(ENV .. sh_quote(LUAJIT) .. " " .. sh_quote(path))
  os.remove(path)
  assert.equal(0, rc, out)
  local ok, r = pcall(cjson.decode, out:match("({.*})%s*$") or "")
  assert(ok and type(r) == "table", "probe output is not JSON: " .. out)
  return r
end

local function no_fails(r)
  -- cjson encodes an empty fails list as an object: both mean "none"
  assert.same({}, r.fails, table.concat(type(r.fails) == "table" and r.fails or {}, "\n"))
end

describe("the pure core under LuaJIT (build/5.1)", function()
  it("runs in LuaJIT and loads kinesis.core from build/5.1", function()
    local r = probe [[
      report.jit = jit and jit.version
      report.lua = _VERSION
      report.core = package.searchpath("kinesis.core", package.cpath)
      report.curl_loaded = package.loaded["kinesis.curl"] ~= nil
      local kinesis = require "kinesis"
      report.version = kinesis._VERSION
      report.curl_after_require = package.loaded["kinesis.curl"] ~= nil
    ]]
    assert.truthy(r.jit and r.jit:find("^LuaJIT 2%.1"), tostring(r.jit))
    assert.equal("Lua 5.1", r.lua)
    assert.equal(ROOT .. "/build/5.1/kinesis/core.so", r.core)
    assert.is_string(r.version)
    -- requiring kinesis loads no transport: OpenResty never touches libcurl
    assert.is_false(r.curl_after_require)
  end)

  it("signs the 26 Kinesis SigV4 vectors exactly", function()
    local r = probe [[
      local function epoch(s)
        local y, mo, d, h, mi, se = s:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)Z$")
        y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
        local function leap(x) return (x % 4 == 0 and x % 100 ~= 0) or x % 400 == 0 end
        local md = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
        local days = 0
        for x = 1970, y - 1 do days = days + (leap(x) and 366 or 365) end
        for m = 1, mo - 1 do days = days + md[m] + ((m == 2 and leap(y)) and 1 or 0) end
        return (days + d - 1) * 86400 + h * 3600 + mi * 60 + se
      end
      local index = json(V .. "sigv4-kinesis/index.json")
      report.count = 0
      for _, e in ipairs(index) do
        local v = json(V .. "sigv4-kinesis/" .. e.file)
        local names, headers = {}, {}
        for k in pairs(v.headers) do names[#names + 1] = k end
        table.sort(names)
        for _, k in ipairs(names) do headers[#headers + 1] = { k, v.headers[k] } end
        local out, err = core.signer():sign {
          method = v.method, path = v.path, headers = headers, body = v.body,
          region = v.region, service = v.service, access_key = v.access_key,
          secret_key = v.secret_key, session_token = v.session_token, time = epoch(v.datetime),
          normalize_path = v.signer_options.normalize_path, sign_body = v.signer_options.apply_checksum,
          debug = true,
        }
        check(out ~= nil, v.name .. ": " .. tostring(err))
        if out then
          check(out.canonical_request == v.expected.canonical_request, v.name .. ": canonical request")
          check(out.string_to_sign == v.expected.string_to_sign, v.name .. ": string to sign")
          check(out.signature == v.expected.signature, v.name .. ": signature")
          check(out.authorization == v.expected.authorization, v.name .. ": authorization")
          report.count = report.count + 1
        end
      end
    ]]
    no_fails(r)
    assert.equal(26, r.count)
  end)

  it("maps all partition-key vectors to their hash keys and shards", function()
    local r = probe [[
      local shards = require "kinesis.shards"
      local vec = json(V .. "hashkey.json")
      local maps = {}
      for name in pairs(vec.shard_maps) do
        local listing = json(V .. "shardmaps/" .. name .. ".json")
        maps[name] = assert(shards.shard_map(listing.list_shards_response.Shards))
      end
      report.keys, report.lookups, report.boundaries = 0, 0, 0
      for _, v in ipairs(vec.keys) do
        check(shards.hash_key(v.key) == v.hash_key, "hash key of " .. v.key_utf8_hex)
        report.keys = report.keys + 1
        for name, want in pairs(v.shard) do
          local got = maps[name]:lookup(v.key)
          check(got and got.ShardId == want, name .. ": shard of " .. v.key_utf8_hex)
          report.lookups = report.lookups + 1
        end
      end
      for name, list in pairs(vec.explicit_hash_key_boundaries) do
        for _, b in ipairs(list) do
          local got = maps[name]:lookup_hash(b.hash_key)
          check(got and got.ShardId == b.shard, name .. ": " .. b.why)
          report.boundaries = report.boundaries + 1
        end
      end
      report.zero = shards.hash_key("\0")
    ]]
    no_fails(r)
    assert.equal(210, r.keys)
    assert.equal(840, r.lookups)
    assert.is_true(r.boundaries >= 16)
    assert.equal("196354609347928108891364980146585313137", r.zero)
  end)

  it("decodes every event-stream vector whole and byte by byte, and rejects the corrupt ones", function()
    local r = probe [[
      local ES = V .. "eventstream/"
      local function decode(bin, step)
        local dec = core.es_decoder()
        local msgs, code = {}, nil
        local pos = 1
        while pos <= #bin and not code do
          -- failures are nil, { code =, message = }
          local ok, ferr = dec:feed(bin:sub(pos, pos + step - 1))
          pos = pos + step
          if not ok then code = ferr.code break end
          while true do
            local m, nerr = dec:next()
            if m then msgs[#msgs + 1] = m else code = nerr and nerr.code break end
          end
        end
        return msgs, code
      end
      local function set(name, bin, vjson)
        local j = json(vjson)
        for _, step in ipairs { #bin, 1, 7 } do
          local msgs, code = decode(bin, step)
          check(code == nil, name .. " step " .. step .. ": " .. tostring(code))
          check(#msgs == #j.messages, name .. ": message count")
          for i, want in ipairs(j.messages) do
            local m = msgs[i]
            if m then
              for _, h in ipairs(want.headers) do
                if h.type == 7 then check(m.headers[h.name] == h.value, name .. ": header " .. h.name) end
                check(m.types[h.name] == h.type, name .. ": type of " .. h.name)
              end
              if want.payload_base64 then
                check(m.payload == core.b64decode(want.payload_base64), name .. ": payload")
              elseif want.payload_sha256 then
                check(core.sha256_hex(m.payload) == want.payload_sha256, name .. ": payload sha256")
              end
            end
          end
        end
        report.positive = report.positive + 1
      end
      report.positive, report.negative = 0, 0
      local index = json(ES .. "kinesis-synthetic/index.json")
      local ours = { ["strict-duplicate-header"] = "duplicate_header",
                     ["strict-empty-header-name"] = "empty_header_name", ["huge-total-length"] = "too_large" }
      for _, v in ipairs(index) do
        local bin = read(ES .. "kinesis-synthetic/" .. v.bin)
        if v.kind == "positive" then
          set(v.name, bin, ES .. "kinesis-synthetic/" .. v.json)
        else
          local want = ours[v.name] or v.expected_error
          local _, code = decode(bin, #bin)
          if want == "incomplete" then
            check(code == nil, v.name .. ": no error before the end")
          else
            check(code == want, v.name .. ": " .. tostring(code) .. " ~= " .. tostring(want))
          end
          report.negative = report.negative + 1
        end
      end
      set("kinesis-local capture", read(ES .. "kinesis-local/subscribe-to-shard.bin"),
          ES .. "kinesis-local/subscribe-to-shard.json")
      report.crc = core.es_crc32("123456789")
    ]]
    no_fails(r)
    assert.equal(11, r.positive)
    assert.equal(17, r.negative)
    assert.equal(0xCBF43926, r.crc)
  end)

  it("round-trips base64 and JSON codecs with binary data", function()
    local r = probe [[
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      all = table.concat(all)
      for n = 0, 256 do
        local s = all:sub(1, n)
        check(core.b64decode(core.b64encode(s)) == s, "base64 length " .. n)
      end
      check(core.b64encode("foobar") == "Zm9vYmFy", "RFC 4648 foobar")
      check(core.b64encode("fo") == "Zm8=", "RFC 4648 fo")
      check(core.b64decode("Zm9vYg") == nil, "unpadded input is refused")
      local model = require "kinesis.model"
      local codec = require "kinesis.codec"
      local validate = require "kinesis.validate"
      local op = model.operations.PutRecords
      local params = { StreamName = "s", Records = { { PartitionKey = "k", Data = all } } }
      check(validate.input(model.shapes, op, params), "PutRecords input validates")
      local body = codec.encode(model.shapes, op.input, params)
      local wire = cjson.decode(body)
      check(core.b64decode(wire.Records[1].Data) == all, "Data travels as base64")
      local out = codec.decode(model.shapes, "GetRecordsOutput", cjson.encode {
        Records = { { SequenceNumber = "1", PartitionKey = "k", Data = core.b64encode(all),
                      ApproximateArrivalTimestamp = 1700000000.5 } },
        NextShardIterator = "it", MillisBehindLatest = 24 })
      check(out.Records[1].Data == all, "GetRecords Data decoded to raw bytes")
      check(out.MillisBehindLatest == 24, "integer member")
      check(out.Records[1].ApproximateArrivalTimestamp == 1700000000.5, "timestamp")
      report.done = true
    ]]
    no_fails(r)
    assert.is_true(r.done)
  end)

  -- the 5.1-compatible specs of the pure core and the Lua layer, as they are
  for _, name in ipairs { "sigv4", "shardmap", "validation", "codec", "producer_queue", "paging", "errors" } do
    it("passes spec/" .. name .. "_spec.lua under LuaJIT busted", function()
      local rc, out = run(ENV .. sh_quote(LUAJIT) .. " /usr/bin/busted --lua=" .. sh_quote(LUAJIT)
        .. " -o plainTerminal spec/" .. name .. "_spec.lua")
      local ok, fail, errs = out:match("(%d+) successes? / (%d+) failures? / (%d+) errors?")
      assert(ok, out)
      assert.equal(0, tonumber(fail) + tonumber(errs), out)
      assert.is_true(tonumber(ok) > 0, out)
      assert.equal(0, rc, out)
    end)
  end
end)
