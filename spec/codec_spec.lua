-- spec/codec_spec.lua - the C codec (kinesis.codec over src/l_codec.c)
-- against the Lua reference (kinesis.validate, kinesis.regex,
-- kinesis.codec_ref): the model's patterns on generated strings, every
-- operation's input on generated valid and broken parameters (same body,
-- same validation error), every output shape on generated and mangled
-- bodies, and the decoding rules stated one by one.

local cjson = require "cjson"
local core = require "kinesis.core"
local codec = require "kinesis.codec"
local ref = require "kinesis.codec_ref"
local validate = require "kinesis.validate"
local regex = require "kinesis.regex"
local model = require "kinesis.model"
local client = require "kinesis.client"

local shapes = model.shapes
local is54 = math.type ~= nil

-- a deterministic generator, the same on 5.4 and LuaJIT
local seed = 12345
local function rand(n)
  if n < 1 then return 1 end
  seed = (seed * 1103515245 + 12345) % 2147483648
  return math.floor(seed / 65536) % n + 1
end

------------------------------------------------------------ regex strings

-- A random string matching the pattern subset (the grammar of
-- kinesis.regex), built from the pattern text itself.
local function gen_match(src)
  local pos = 1
  local function peek() return src:sub(pos, pos) end
  local function take() local c = peek() pos = pos + 1 return c end
  local ranges_of = {
    d = { { 48, 57 } }, w = { { 48, 57 }, { 65, 90 }, { 97, 122 }, { 95, 95 } },
    s = { { 32, 32 }, { 9, 13 } }, S = { { 33, 126 } }, D = { { 65, 90 } }, W = { { 33, 47 } },
  }
  local function pick(ranges)
    local r = ranges[rand(#ranges)]
    return string.char(r[1] + rand(r[2] - r[1] + 1) - 1)
  end
  local function escape()
    local c = take()
    return ranges_of[c] or { { c:byte(), c:byte() } }
  end
  local function class()
    local neg = false
    if peek() == "^" then neg = true take() end
    local ranges, first = {}, true
    while true do
      local c = take()
      if c == "]" and not first then break end
      first = false
      local set = c == "\\" and escape() or { { c:byte(), c:byte() } }
      if #set == 1 and set[1][1] == set[1][2] and peek() == "-" and src:sub(pos + 1, pos + 1) ~= "]" then
        take()
        local h = take()
        if h == "\\" then h = string.char(escape()[1][1]) end
        ranges[#ranges + 1] = { set[1][1], h:byte() }
      else
        for _, r in ipairs(set) do ranges[#ranges + 1] = r end
      end
    end
    if neg then
      -- printable bytes outside the class
      local out = {}
      for b = 33, 126 do
        local inside = false
        for _, r in ipairs(ranges) do if b >= r[1] and b <= r[2] then inside = true end end
        if not inside then out[#out + 1] = { b, b } end
      end
      return out
    end
    return ranges
  end
  local alt
  local function seq()
    local items = {}
    while true do
      local c = peek()
      if c == "" or c == "|" or c == ")" then break end
      take()
      local atom
      if c == "^" or c == "$" then atom = function() return "" end
      elseif c == "." then atom = function() return pick { { 32, 126 } } end
      elseif c == "[" then local r = class() atom = function() return pick(r) end
      elseif c == "\\" then local r = escape() atom = function() return pick(r) end
      elseif c == "(" then
        if src:sub(pos, pos + 1) == "?:" then pos = pos + 2 end
        atom = alt()
        take()
      else atom = function() return c end end
      local q, min, max = peek(), nil, nil
      if q == "*" then min, max = 0, 4
      elseif q == "+" then min, max = 1, 5
      elseif q == "?" then min, max = 0, 1
      elseif q == "{" then
        local a, b, e = src:match("^{(%d+)(,?%d*)}()", pos)
        min = tonumber(a)
        max = b == "" and min or b == "," and min + 4 or tonumber(b:sub(2))
        pos = e - 1
      end
      if min then
        take()
        local inner = atom
        atom = function()
          local n = min + rand(max - min + 1) - 1
          local out = {}
          for i = 1, n do out[i] = inner() end
          return table.concat(out)
        end
      end
      items[#items + 1] = atom
    end
    return function()
      local out = {}
      for i, f in ipairs(items) do out[i] = f() end
      return table.concat(out)
    end
  end
  function alt()
    local branches = { seq() }
    while peek() == "|" do take() branches[#branches + 1] = seq() end
    return function() return branches[rand(#branches)]() end
  end
  return alt()
end

local NOISE = { "", "a", "0", ":", "/", "-", " ", "\n", "\0", "\255", "Z", ".", "_" }

local function mutate(s)
  local k = rand(4)
  local i = rand(#s + 1)
  if k == 1 then return s:sub(1, i - 1) .. NOISE[rand(#NOISE)] .. s:sub(i) end
  if k == 2 then return s:sub(1, i - 1) .. s:sub(i + 1) end
  if k == 3 then return s:sub(1, i - 1) .. NOISE[rand(#NOISE)] .. s:sub(i + 1) end
  return s .. s:sub(1, rand(#s + 1) - 1)
end

local patterns = {}
for _, sh in pairs(shapes) do
  if sh.pattern then patterns[sh.pattern] = true end
end
local pattern_list = {}
for p in pairs(patterns) do pattern_list[#pattern_list + 1] = p end
table.sort(pattern_list)

describe("the C matcher of the model's patterns", function()
  it("agrees with kinesis.regex on generated matching strings and their mutations", function()
    assert.is_true(#pattern_list >= 15)
    for _, p in ipairs(pattern_list) do
      local gen, lua_match = gen_match(p), regex.compile(p)
      local matched, missed = 0, 0
      for _ = 1, 400 do
        local s = gen()
        if rand(2) == 1 then s = mutate(s) end
        if rand(4) == 1 then s = mutate(s) end
        local want, got = lua_match(s), core.regex_test(p, s)
        assert(want == got, ("pattern %s on %q: reference %s, C %s"):format(p, s, tostring(want), tostring(got)))
        if want then matched = matched + 1 else missed = missed + 1 end
      end
      -- both outcomes are exercised for every pattern
      assert(matched > 20 and missed > 0, p .. ": " .. matched .. " matched, " .. missed .. " missed")
    end
  end)

  it("handles the subset's corners like the reference", function()
    local cases = {
      { "^a|b$", { "a", "xb", "ax", "c", "" } },
      { "x{2,3}", { "x", "xx", "axxxa" } },
      { "^[]a]+$", { "]", "a]", "b" } },
      { "^[^:*]*$", { "", "abc", "a:b", "*" } },
      { "^(?:ab|a)c$", { "abc", "ac", "abac" } },
      { "^[\\-a-c\\d]+$", { "-a9", "d" } },
      { "^\\S+\\s\\W\\D\\w$", { "ab ;x_", "ab ;1_" } },
      { "^.$", { "\n", "\r", "a" } },
      { "^(a|ab)(c|bcd)(d*)$", { "abcd", "abcdd", "acd" } },
    }
    for _, c in ipairs(cases) do
      local m = regex.compile(c[1])
      for _, s in ipairs(c[2]) do
        assert.equal(m(s), core.regex_test(c[1], s), c[1] .. " on " .. s)
      end
    end
    -- what the reference refuses, the C compiler refuses
    for _, bad in ipairs { "a{", "*a", "a+?", "\\q", "(a", "[a", "a)" } do
      assert.has_error(function() regex.compile(bad) end)
      assert.is_nil((core.regex_test(bad, "a")))
    end
  end)

  it("runs in linear time where a backtracking matcher would not", function()
    local p = "^arn:aws.*:kinesis:.*:\\d{12}:.*stream\\/[a-zA-Z0-9_.-]+\\/consumer\\/[a-zA-Z0-9_.-]+:[0-9]+$"
    local s = "arn:aws" .. (":kinesis:"):rep(3000)
    assert.is_false(core.regex_test(p, s))
  end)
end)

------------------------------------------------------------ input values

-- A value for shape `sname`: valid most of the time, broken in one of the
-- ways validation knows some of the time (`bad` is the chance in 100).
local function gen_value(sname, bad, depth)
  local sh = shapes[sname]
  local t = sh.type
  local broken = rand(100) <= bad
  depth = depth or 0
  if broken and rand(6) == 1 then
    local wrong = { 1, "x", true, {}, 1.5, -1 }
    return wrong[rand(#wrong)]
  end
  if t == "string" then
    if sh.enum then
      if broken then return sh.enum[1] .. "x" end
      return sh.enum[rand(#sh.enum)]
    end
    local s
    if sh.pattern then
      s = gen_match(sh.pattern)()
      if sname == "HashKey" and rand(3) == 1 then s = "340282366920938463463374607431768211456" end
      if broken then s = mutate(s) end
    else
      local n = math.max(sh.min or 0, 1) + rand(6) - 1
      local parts = {}
      for i = 1, n do parts[i] = ({ "a", "é", "b", "/", "\"", "\n", "\127", "z" })[rand(8)] end
      s = table.concat(parts)
      if broken then
        local k = rand(3)
        if k == 1 then s = "\255" .. s
        elseif k == 2 and sh.max then s = ("x"):rep(sh.max + 1)
        elseif sh.min and sh.min > 0 then s = "" end
      end
    end
    if sh.max and not broken and #s > sh.max then s = s:sub(1, sh.max) end
    return s
  elseif t == "blob" then
    local n = rand(40) - 1
    if broken and sh.max then return ("\0"):rep(sh.max + 1) end
    local b = {}
    for i = 1, n do b[i] = string.char(rand(256) - 1) end
    return table.concat(b)
  elseif t == "boolean" then
    return rand(2) == 1
  elseif t == "integer" or t == "long" then
    local lo, hi = sh.min or 0, math.min(sh.max or 1000, 100000)
    local v = lo + rand(hi - lo + 1) - 1
    if broken then
      local k = rand(4)
      if k == 1 then v = lo - 1 elseif k == 2 then v = (sh.max or 2^40) + 1
      elseif k == 3 then v = v + 0.5 else v = 2^31 end
    end
    return v
  elseif t == "timestamp" then
    if broken then return ({ 0 / 0, math.huge, "now" })[rand(3)] end
    return rand(2) == 1 and 1700000000 + rand(1000) or 1700000000.25
  elseif t == "double" then
    return rand(1000) / 8
  elseif t == "structure" or t == "union" then
    local v = {}
    if depth > 4 then return v end
    local names = {}
    for name in pairs(sh.members) do names[#names + 1] = name end
    table.sort(names)
    if t == "union" then
      local name = names[rand(#names)]
      v[name] = gen_value(sh.members[name].target, bad, depth + 1)
      return v
    end
    for _, name in ipairs(names) do
      local m = sh.members[name]
      if m.required or rand(2) == 1 then
        if not (broken and m.required and rand(3) == 1) then
          v[name] = gen_value(m.target, bad, depth + 1)
        end
      end
    end
    if broken and rand(4) == 1 then v.NotAMember = 1 end
    return v
  elseif t == "list" then
    local lo = sh.min or 0
    local n = lo + rand(3) - 1
    if sh.max and n > sh.max then n = sh.max end
    if broken and rand(3) == 1 then n = (sh.max or 3) + 1 end
    if n > 600 then n = 600 end
    local v = {}
    for i = 1, n do v[i] = gen_value(sh.member, bad, depth + 1) end
    if broken and rand(5) == 1 then v.x = 1 end
    return v
  elseif t == "map" then
    local v = {}
    for _ = 1, rand(3) - 1 do v[gen_value(sh.key, bad, depth + 1)] = gen_value(sh.value, bad, depth + 1) end
    return v
  end
end

-- the reference pipeline the client ran before the C codec
local function reference(op, params)
  local ok, err = validate.input(shapes, op, params)
  if not ok then return nil, err end
  return ref.encode(shapes, op.input, params)
end

local function deep_equal(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= "table" then return a == b or (a ~= a and b ~= b) end
  for k, v in pairs(a) do if not deep_equal(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

local op_names = {}
for name, op in pairs(model.operations) do
  if op.input then op_names[#op_names + 1] = name end
end
table.sort(op_names)

describe("kinesis.codec.encode_input", function()
  it("gives the reference's body or its exact validation error, for every operation", function()
    local oks, fails = 0, 0
    for _, name in ipairs(op_names) do
      local op = client.operations[name]
      if os.getenv("CODEC_DEBUG") then io.stderr:write(name, "\n") end
      for _ = 1, 60 do
        local params = gen_value(op.input, rand(3) == 1 and 20 or 2)
        if type(params) ~= "table" then params = {} end
        local want, werr = reference(op, params)
        local got, gerr = codec.encode_input(shapes, op, params)
        if want then
          assert(got, name .. ": C refused what the reference took: " .. tostring(gerr and gerr.message))
          assert(deep_equal(cjson.decode(want), cjson.decode(got)), name .. ": bodies differ\n" .. want .. "\n" .. got)
          oks = oks + 1
        else
          assert(not got, name .. ": C took what the reference refused: " .. werr.message)
          assert.same(werr, gerr)
          fails = fails + 1
        end
      end
    end
    assert.is_true(oks > 500 and fails > 200)
  end)

  it("writes blobs as base64 and strings escaped as before, in one buffer", function()
    local op = client.operations.put_records
    local data = {}
    for i = 0, 255 do data[#data + 1] = string.char(i) end
    local params = { StreamName = "s", Records = { { Data = table.concat(data), PartitionKey = "a/\"\\\127\1é" } } }
    local body = assert(codec.encode_input(shapes, op, params))
    local doc = cjson.decode(body)
    assert.equal(core.b64encode(table.concat(data)), doc.Records[1].Data)
    assert.truthy(body:find('"PartitionKey":"a\\/\\"\\\\\\u007f\\u0001é"', 1, true), body)
    -- a list stays a JSON array even when empty
    local lbody = assert(codec.encode_input(shapes, client.operations.add_tags_to_stream,
      { StreamName = "s", Tags = { k = "v" } }))
    assert.same({ StreamName = "s", Tags = { k = "v" } }, cjson.decode(lbody))
  end)

  it("names the field from 1, the rule and the value", function()
    local op = client.operations.put_records
    local recs = {}
    for i = 1, 500 do recs[i] = { Data = "x", PartitionKey = "p" } end
    recs[317].ExplicitHashKey = "340282366920938463463374607431768211456"
    local body, err = codec.encode_input(shapes, op, { StreamName = "s", Records = recs })
    assert.is_nil(body)
    assert.equal("Records[317].ExplicitHashKey", err.path)
    assert.equal("range", err.rule)
    assert.truthy(err.message:find("^Records%[317%]%.ExplicitHashKey: is not a 128%-bit hash key"), err.message)
    recs[317].ExplicitHashKey = nil
    local max = shapes.Data.max
    recs[12].Data = ("x"):rep(max + 1)
    body, err = codec.encode_input(shapes, op, { StreamName = "s", Records = recs })
    assert.equal(("Records[12].Data: size in bytes must be at most %d (got %d)"):format(max, max + 1), err.message)
    recs[12].Data = "x"
    recs[501] = { Data = "x", PartitionKey = "p" }
    body, err = codec.encode_input(shapes, op, { StreamName = "s", Records = recs })
    assert.equal("Records: number of items must be at most 500 (got 501)", err.message)
    body, err = codec.encode_input(shapes, client.operations.describe_stream, {})
    assert.equal("StreamName: StreamName or StreamARN is required", err.message)
    body, err = codec.encode_input(shapes, client.operations.add_tags_to_stream,
      { StreamName = "s", Tags = { [("k"):rep(200)] = "v" } })
    assert.equal("length", err.rule)
    assert.truthy(err.path:find('^Tags%["k+"%]$'), err.path)
  end)
end)

------------------------------------------------------------ decoding

local function out_value(sname, depth)
  local sh = shapes[sname]
  local t = sh.type
  depth = depth or 0
  if t == "string" then return ({ "a", "é\"\\/\n", "49651508112370573233364539185419153282036493009227382786", "" })[rand(4)]
  elseif t == "blob" then
    local b = {}
    for i = 1, rand(20) - 1 do b[i] = string.char(rand(256) - 1) end
    return table.concat(b)
  elseif t == "boolean" then return rand(2) == 1
  elseif t == "integer" or t == "long" then return rand(100000) - 1
  elseif t == "timestamp" then return 1713354821 + rand(1000) / 1000
  elseif t == "structure" or t == "union" then
    local v = {}
    if depth > 5 then return v end
    for name, m in pairs(sh.members) do
      if rand(3) > 1 then v[name] = out_value(m.target, depth + 1) end
    end
    return v
  elseif t == "list" then
    local v = {}
    for i = 1, rand(4) - 1 do v[i] = out_value(sh.member, depth + 1) end
    return v
  elseif t == "map" then
    local v = {}
    for _ = 1, rand(3) - 1 do v["k" .. rand(50)] = out_value(sh.value, depth + 1) end
    return v
  end
end

-- The reference's result with what the model does not know removed (the C
-- codec drops unknown members; the reference keeps them untouched).
local function known(sname, v)
  local sh = shapes[sname]
  if type(v) ~= "table" or not sh then return v end
  local t = sh.type
  local out = {}
  if t == "structure" or t == "union" then
    for k, x in pairs(v) do
      local m = sh.members[k]
      if m then out[k] = known(m.target, x) end
    end
  elseif t == "list" then
    for i, x in ipairs(v) do out[i] = known(sh.member, x) end
  elseif t == "map" then
    for k, x in pairs(v) do out[k] = known(sh.value, x) end
  else
    return v
  end
  return out
end

local out_names = {}
for _, op in pairs(model.operations) do
  if op.output then out_names[#out_names + 1] = op.output end
end
table.sort(out_names)

-- C succeeds only where the reference does, with the same values; the C
-- codec is stricter about scalar types (a number where the model says
-- string is a protocol error there, passed through by the reference).
local function compare(sname, body)
  local got, gerr = codec.decode(shapes, sname, body)
  local want, werr = ref.decode(shapes, sname, body)
  if got then
    assert(want, sname .. ": C took a body the reference refused (" .. tostring(werr) .. "): " .. body)
    assert(deep_equal(known(sname, want), got), sname .. ": values differ for " .. body)
  else
    assert.is_string(gerr)
  end
  return got ~= nil, want ~= nil
end

describe("kinesis.codec.decode", function()
  it("matches the reference on every output shape, for generated bodies", function()
    for _, sname in ipairs(out_names) do
      for _ = 1, 40 do
        local body = ref.encode(shapes, sname, out_value(sname))
        if not compare(sname, body) then
          error(sname .. ": C refused a well-formed body: " .. body .. " " .. tostring(select(2, codec.decode(shapes, sname, body))))
        end
      end
    end
  end)

  it("never crashes on mangled bodies and never takes what the reference refuses", function()
    local both, c_only_refused = 0, 0
    for _, sname in ipairs(out_names) do
      for _ = 1, 60 do
        local body = ref.encode(shapes, sname, out_value(sname))
        for _ = 1, rand(3) do
          local i = rand(#body)
          local k = rand(4)
          if k == 1 then body = body:sub(1, i)
          elseif k == 2 then body = body:sub(1, i - 1) .. NOISE[rand(#NOISE)] .. body:sub(i + 1)
          elseif k == 3 then body = body:sub(1, i - 1) .. ({ "null", "[]", "{}", "1e999", "\"\\ud800\"", "-0" })[rand(6)] .. body:sub(i)
          else body = body:sub(1, i - 1) .. body:sub(i + 2) end
        end
        local cok, rok = compare(sname, body)
        if cok and rok then both = both + 1 elseif rok then c_only_refused = c_only_refused + 1 end
      end
    end
    assert.is_true(both > 50)
  end)

  it("turns blobs into bytes, timestamps into numbers, integers into integers, nulls into nothing", function()
    local body = '{"Records":[{"SequenceNumber":"49651508112370573233364539185419153282036493009227382786",' ..
      '"ApproximateArrivalTimestamp":1.713354821007E9,"Data":"AAEC/w==","PartitionKey":"p\\u00e9\\ud83d\\ude00",' ..
      '"EncryptionType":null,"Unknown":{"deep":[1,2,{"x":null}]}},null],' ..
      '"NextShardIterator":"AAA\\/B","MillisBehindLatest":12,"ChildShards":null}'
    local out = assert(codec.decode(shapes, "GetRecordsOutput", body))
    local r = out.Records[1]
    assert.equal(1, #out.Records)
    assert.equal("\0\1\2\255", r.Data)
    assert.equal("49651508112370573233364539185419153282036493009227382786", r.SequenceNumber)
    assert.equal(1713354821.007, r.ApproximateArrivalTimestamp)
    assert.equal("pé\240\159\152\128", r.PartitionKey)
    assert.is_nil(r.EncryptionType)
    assert.is_nil(r.Unknown)
    assert.is_nil(out.ChildShards)
    assert.equal("AAA/B", out.NextShardIterator)
    assert.equal(12, out.MillisBehindLatest)
    if is54 then assert.equal("integer", math.type(out.MillisBehindLatest)) end
  end)

  it("makes every malformed body a message, not a crash", function()
    local bad = {
      '{"Records":[', '{"Records":[{"Data":"A"}]}', '{"Records":[{"Data":1}]}', '{"Records":{"a":1}}',
      '{"Records":[]} x', '{"Records":[],}', '{"MillisBehindLatest":"1","Records":[]}', '[',
      '{"Records":[{"Data":"AA=="}]', '"\\ud800"', '{"Records":["\1"]}', '{"Records":[], "NextShardIterator":"\\x"}',
      '{"Records":[{"SequenceNumber":7}]}', ("["):rep(100000), '{"A":' .. ("["):rep(100000),
    }
    for _, body in ipairs(bad) do
      local out, err = codec.decode(shapes, "GetRecordsOutput", body)
      assert.is_nil(out, body:sub(1, 60))
      assert.is_string(err)
      assert.truthy(err:find("invalid JSON") or err:find("unexpected response shape"), err)
    end
    assert.same({}, codec.decode(shapes, "GetRecordsOutput", ""))
    assert.same({}, codec.decode(shapes, "GetRecordsOutput", " null "))
  end)
end)

describe("kinesis.codec.decode of repeated members and escaped blobs", function()
  it("lets a later duplicate win and a later null remove, as the reference does", function()
    local seqs = {}
    for i = 1, 40 do seqs[i] = string.format('"SequenceNumber":"%d"', i) end
    local bodies = {
      '{"Records":[{"Data":"AA==","PartitionKey":"a","Data":"AQ==","PartitionKey":null}]}',
      '{"Records":[{"PartitionKey":null,"PartitionKey":"b"}]}',
      '{"Records":[{' .. table.concat(seqs, ",") .. ',"Data":"Ag=="}]}',
      '{"Records":[{' .. table.concat(seqs, ",") .. ',"SequenceNumber":null}]}',
      '{"MillisBehindLatest":1,"Records":[],"MillisBehindLatest":2,"NextShardIterator":"x","MillisBehindLatest":null}',
    }
    for _, body in ipairs(bodies) do
      local got = assert(codec.decode(shapes, "GetRecordsOutput", body))
      local want = assert(ref.decode(shapes, "GetRecordsOutput", body))
      assert.same(want, got)
    end
    local r = codec.decode(shapes, "GetRecordsOutput", bodies[1]).Records[1]
    assert.equal("\1", r.Data)
    assert.is_nil(r.PartitionKey)
    assert.equal("40", codec.decode(shapes, "GetRecordsOutput", bodies[3]).Records[1].SequenceNumber)
    assert.is_nil(codec.decode(shapes, "GetRecordsOutput", bodies[4]).Records[1].SequenceNumber)
    local top = codec.decode(shapes, "GetRecordsOutput", bodies[5])
    assert.is_nil(top.MillisBehindLatest)
    assert.equal("x", top.NextShardIterator)
  end)

  it("reads base64 written with JSON escapes, and refuses what is not base64", function()
    local function data(text)
      local out, err = codec.decode(shapes, "GetRecordsOutput", '{"Records":[{"Data":"' .. text .. '"}]}')
      return out and out.Records[1].Data, err
    end
    assert.equal("\255\255", data("\\/\\/8="))
    assert.equal("\0", data("AA\\u003d\\u003d"))
    assert.equal("", data(""))
    assert.equal("\0\1\2\255", data("AAEC/w=="))
    for _, bad in ipairs { "AA=", "AAE", "A===", "AA=A", "AB==", "AA\\u0000A", "AA\1A", "AA\\\"A" } do
      local out, err = data(bad)
      assert.is_nil(out, bad)
      assert.is_string(err)
    end
  end)
end)
