-- kinesis.dynamodb against dynalite: every operation of the DynamoDB model
-- reaches the server through the shared pipeline, AttributeValues round
-- trip, a failed condition is an aws error with its code, bad input is
-- refused before anything is sent, and the regional endpoints.

local peers = require "support.peers"
local dynamodb = require "kinesis.dynamodb"
local kinesis = require "kinesis"

local model = dynamodb.model

-- Minimal parameters for an operation: every required member, by shape type.
local function sample(sname, depth)
  local shape = model.shapes[sname]
  local t = shape.type
  if t == "string" then return "tbl-x" end
  if t == "long" or t == "integer" then return 1 end
  if t == "double" then return 1.5 end
  if t == "boolean" then return false end
  if t == "blob" then return "b" end
  if t == "timestamp" then return 0 end
  if t == "list" then return {} end
  if t == "map" then return {} end
  if t == "union" then return { S = "x" } end
  local out = {}
  if depth < 6 then
    for name, m in pairs(shape.members) do
      if m.required then out[name] = sample(m.target, depth + 1) end
    end
  end
  return out
end

-- what dynalite implements (node_modules/dynalite/actions)
local SERVED = {
  BatchGetItem = true, BatchWriteItem = true, CreateTable = true, DeleteItem = true, DeleteTable = true,
  DescribeTable = true, DescribeTimeToLive = true, GetItem = true, ListTables = true, ListTagsOfResource = true,
  PutItem = true, Query = true, Scan = true, TagResource = true, UntagResource = true, UpdateItem = true,
  UpdateTable = true,
}

describe("kinesis.dynamodb against dynalite", function()
  local srv, db
  local T = "items"

  local function wait_active(name)
    for _ = 1, 200 do
      local out = assert(db:describe_table { TableName = name })
      if out.Table.TableStatus == "ACTIVE" then return out.Table end
      os.execute("sleep 0.05")
    end
    error("table never ACTIVE")
  end

  lazy_setup(function()
    srv = peers.start("dynalite", { args = { "--createTableMs", "20", "--deleteTableMs", "20", "--updateTableMs", "20" } })
    db = assert(kinesis.dynamodb.new { endpoint = srv.endpoint, region = peers.region, credentials = peers.credentials,
      retry = { mode = "off" } })
    assert(db:create_table {
      TableName = T, BillingMode = "PAY_PER_REQUEST",
      KeySchema = { { AttributeName = "k", KeyType = "HASH" } },
      AttributeDefinitions = { { AttributeName = "k", AttributeType = "S" } },
    })
    wait_active(T)
  end)
  lazy_teardown(function()
    if db then db:close() end
    if srv then srv.stop() end
  end)

  it("has every operation of the model as a method and by name", function()
    local n = 0
    for name, op in pairs(model.operations) do
      n = n + 1
      assert.is_function(db[op.method], op.method)
      assert.equal(op, dynamodb.operations[name])
      assert.equal(op, dynamodb.operations[op.method])
    end
    assert.equal(57, n)
    assert.equal("put_item", model.operations.PutItem.method)
    assert.equal("DynamoDB_20120810", model.target_prefix)
    assert.equal("1.0", model.json_version)
  end)

  it("sends every operation to the server, which understands the ones it implements", function()
    local reached, understood = 0, 0
    for name, op in pairs(model.operations) do
      local params = op.input and sample(op.input, 0) or nil
      local out, err = db:call(name, params)
      if not out then
        -- the request left and came back as an AWS answer: never refused locally,
        -- never a malformed exchange
        assert.equal("aws", err.kind, name .. ": " .. tostring(err))
        if SERVED[name] then
          assert.are_not.equal("UnknownOperationException", err.code, name)
          understood = understood + 1
        else
          assert.equal("UnknownOperationException", err.code, name)
        end
      else
        assert.is_true(SERVED[name] == true, name)
        understood = understood + 1
      end
      reached = reached + 1
    end
    assert.equal(57, reached)
    assert.equal(17, understood)
  end)

  it("writes and reads items with the AttributeValue helpers", function()
    local value = {
      k = "key-1", s = "text \0 with a zero", n = 42, f = -1.25, big = dynamodb.number("12345678901234567890123456789"),
      t = true, no = false, z = dynamodb.null, list = { 1, "two", { three = 3 } }, map = { a = { b = { c = "d" } } },
      ss = dynamodb.set { "x", "y" }, ns = dynamodb.set({ 1, 2.5 }, "NS"), bin = dynamodb.binary("\1\2\255"),
    }
    local item = assert(dynamodb.to_item(value))
    assert(db:put_item { TableName = T, Item = item })
    local out = assert(db:get_item { TableName = T, Key = { k = { S = "key-1" } }, ConsistentRead = true })
    local back = assert(dynamodb.from_item(out.Item))
    assert.equal("text \0 with a zero", back.s)
    assert.equal(42, back.n)
    assert.equal(-1.25, back.f)
    assert.is_true(dynamodb.is_number(back.big))
    assert.equal("12345678901234567890123456789", back.big.text)
    assert.is_true(back.t)
    assert.is_false(back.no)
    assert.equal(dynamodb.null, back.z)
    assert.same({ 1, "two", { three = 3 } }, back.list)
    assert.same({ a = { b = { c = "d" } } }, back.map)
    assert.is_true(dynamodb.is_set(back.ss))
    table.sort(back.ss.items)
    assert.same({ "x", "y" }, back.ss.items)
    assert.equal("NS", back.ns.kind)
    assert.is_true(dynamodb.is_binary(back.bin))
    assert.equal("\1\2\255", back.bin.bytes)
    -- and the plain values survive a second trip unchanged
    assert.same(item.list, dynamodb.to_attr(back.list))
    assert.same(item.map, dynamodb.to_attr(back.map))
  end)

  it("converts values both ways without a server", function()
    assert.same({ S = "a" }, dynamodb.to_attr("a"))
    assert.same({ N = "7" }, dynamodb.to_attr(7))
    assert.same({ N = "7" }, dynamodb.to_attr(7.0))
    assert.same({ N = "0.1" }, dynamodb.to_attr(0.1))
    assert.same({ BOOL = false }, dynamodb.to_attr(false))
    assert.same({ NULL = true }, dynamodb.to_attr(nil))
    assert.same({ L = { { N = "1" }, { S = "b" } } }, dynamodb.to_attr { 1, "b" })
    assert.same({ M = {} }, dynamodb.to_attr {})
    assert.same({ SS = { "a", "b" } }, dynamodb.to_attr(dynamodb.set { "a", "b" }))
    assert.equal(0.1, dynamodb.from_attr { N = "0.1" })
    assert.equal(9007199254740993, dynamodb.from_attr { N = "9007199254740993" })
    local _, err = dynamodb.to_attr { a = { b = 0 / 0 } }
    assert.truthy(err:find("value.a.b", 1, true))
    _, err = dynamodb.to_attr(dynamodb.set {})
    assert.truthy(err:find("empty", 1, true))
    _, err = dynamodb.to_attr { [true] = 1 }
    assert.truthy(err:find("keys must be strings", 1, true))
    _, err = dynamodb.from_attr { X = "?" }
    assert.truthy(err:find("not an AttributeValue", 1, true))
  end)

  it("reports a failed condition as an aws error with the service's code", function()
    local item = assert(dynamodb.to_item { k = "cond", counter = 1 })
    assert(db:put_item { TableName = T, Item = item, ConditionExpression = "attribute_not_exists(k)" })
    local out, err, meta = db:put_item { TableName = T, Item = item, ConditionExpression = "attribute_not_exists(k)" }
    assert.is_nil(out)
    assert.equal("aws", err.kind)
    assert.equal("ConditionalCheckFailedException", err.code)
    assert.equal(400, err.status)
    assert.is_false(err.retryable)
    assert.equal("PutItem", err.op)
    assert.equal(1, meta.attempts)
    -- the legacy Expected form the KCL uses fails the same way
    out, err = db:update_item { TableName = T, Key = { k = { S = "cond" } },
      Expected = { counter = { Value = { N = "2" } } },
      AttributeUpdates = { counter = { Action = "PUT", Value = { N = "3" } } } }
    assert.is_nil(out)
    assert.equal("ConditionalCheckFailedException", err.code)
    out = assert(db:update_item { TableName = T, Key = { k = { S = "cond" } },
      Expected = { counter = { Value = { N = "1" } } },
      AttributeUpdates = { counter = { Action = "PUT", Value = { N = "3" } } }, ReturnValues = "ALL_NEW" })
    assert.equal("3", out.Attributes.counter.N)
  end)

  it("waits with the waiters of DynamoDB's model: table_exists, table_not_exists", function()
    local name = "waited"
    assert(db:create_table {
      TableName = name, BillingMode = "PAY_PER_REQUEST",
      KeySchema = { { AttributeName = "k", KeyType = "HASH" } },
      AttributeDefinitions = { { AttributeName = "k", AttributeType = "S" } },
    })
    local fast = { delay = 0.01, max_delay = 0.05, timeout = 10 }
    local out, err, attempts = db:wait("table_exists", { TableName = name }, fast)
    assert.is_table(out, tostring(err))
    assert.equal("ACTIVE", out.Table.TableStatus)
    assert.is_true(attempts >= 1)
    assert(db:delete_table { TableName = name })
    assert(db:wait("TableNotExists", { TableName = name }, fast))
    local gone, gerr = db:describe_table { TableName = name }
    assert.is_nil(gone)
    assert.equal("ResourceNotFoundException", gerr.code)
    -- the Kinesis waiters are not this client's
    local ok, why = pcall(db.wait, db, "stream_exists", { StreamName = "s" })
    assert.is_false(ok)
    assert.truthy(tostring(why):find("table_exists", 1, true), tostring(why))
  end)

  it("refuses bad input before anything is sent", function()
    local sent = 0
    local quiet = assert(dynamodb.new { endpoint = srv.endpoint, region = peers.region, credentials = peers.credentials,
      log = function(ev) if ev.event == "request" then sent = sent + 1 end end })
    local cases = {
      -- several required members missing: the first in name order, every time
      { {}, "Key", "required" },
      { { Key = { k = { S = "a" } } }, "TableName", "required" },
      { { TableName = T, Bogus = 1 }, "Bogus", "unknown" },
      { { TableName = T, Key = { k = { S = "a", N = "1" } } }, "Key", "union" },
      { { TableName = T, Key = { k = { S = 5 } } }, "Key", "type" },
      { { TableName = T, Key = { k = { S = "a" } }, ConsistentRead = "yes" }, "ConsistentRead", "type" },
    }
    for _, case in ipairs(cases) do
      local out, err = quiet:get_item(case[1])
      assert.is_nil(out)
      assert.equal("validation", err.kind)
      assert.equal("GetItem", err.op)
      assert.truthy(tostring(err.field):find(case[2], 1, true), tostring(err.field))
      assert.equal(case[3], err.rule)
    end
    assert.equal(0, sent)
    assert(quiet:describe_table { TableName = T })
    assert.equal(1, sent)
    quiet:close()
  end)

  it("retries DynamoDB's throttling codes through the shared retry policy, signed for dynamodb", function()
    local stub = peers.start("stub")
    local ok, perr = pcall(function()
      local c = assert(dynamodb.new { endpoint = stub.endpoint, region = "eu-west-1", credentials = peers.credentials,
        retry = { mode = "standard", max_attempts = 4, base = 0.001, max_backoff = 0.01 } })
      for _, code in ipairs { "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded" } do
        stub:reset()
        stub:queue {
          { status = 400, body = '{"__type":"com.amazonaws.dynamodb.v20120810#' .. code .. '","message":"slow down"}' },
          { status = 200, body = '{"TableNames":["a"]}' },
        }
        local out, err, meta = c:list_tables {}
        assert.is_nil(err, code)
        assert.same({ "a" }, out.TableNames)
        assert.equal(2, meta.attempts, code)
      end
      local r = stub:requests()[1]
      assert.equal("DynamoDB_20120810.ListTables", r.headers["x-amz-target"])
      assert.equal("application/x-amz-json-1.0", r.headers["content-type"])
      assert.truthy(r.headers["authorization"]:find("/eu-west-1/dynamodb/aws4_request", 1, true))
      -- a conditional failure is not retried
      stub:reset()
      stub:queue { { status = 400, body = '{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException"}' } }
      local out, err, meta = c:put_item { TableName = "t", Item = { k = { S = "a" } } }
      assert.is_nil(out)
      assert.equal("ConditionalCheckFailedException", err.code)
      assert.equal(1, meta.attempts)
      c:close()
    end)
    stub.stop()
    assert(ok, perr)
  end)

  it("resolves the regional endpoint from the partitions", function()
    local op = model.operations.GetItem
    local function url(cfg)
      cfg.credentials = peers.credentials
      local c = assert(dynamodb.new(cfg))
      local ep = assert(c:endpoint_for(op, {}))
      assert.equal(ep.signing_region or c.region, cfg.region)
      return ep.url
    end
    assert.equal("https://dynamodb.eu-west-1.amazonaws.com/", url { region = "eu-west-1", endpoint = false })
    assert.equal("https://dynamodb.cn-north-1.amazonaws.com.cn/", url { region = "cn-north-1", endpoint = false })
    assert.equal("https://dynamodb-fips.us-gov-west-1.amazonaws.com/",
      url { region = "us-gov-west-1", use_fips = true, endpoint = false })
    assert.equal("https://dynamodb.us-east-2.api.aws/", url { region = "us-east-2", use_dualstack = true, endpoint = false })
    assert.equal("http://127.0.0.1:1/", url { region = "ap-south-1", endpoint = "http://127.0.0.1:1" })
  end)

  it("takes its endpoint from AWS_ENDPOINT_URL_DYNAMODB before AWS_ENDPOINT_URL", function()
    local script = [[
      local d = require("kinesis.dynamodb")
      local c = assert(d.new { region = "us-east-1", credentials = { access_key_id = "a", secret_access_key = "b" } })
      local k = assert(require("kinesis").new { region = "us-east-1", credentials = { access_key_id = "a", secret_access_key = "b" } })
      io.write(c:endpoint_for(d.model.operations.GetItem, {}).url, " ", k:endpoint_for(require("kinesis.model").operations.ListStreams, {}).url)
    ]]
    local f = assert(io.popen("AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:7001 AWS_ENDPOINT_URL=http://127.0.0.1:7002 " ..
      "lua5.4 -e '" .. script:gsub("'", "'\\''") .. "' 2>&1"))
    local out = f:read("a")
    f:close()
    assert.equal("http://127.0.0.1:7001/ http://127.0.0.1:7002/", out)
  end)

  it("pages Scan through client:pages and client:items (LastEvaluatedKey -> ExclusiveStartKey)", function()
    for i = 1, 5 do assert(db:put_item { TableName = T, Item = assert(dynamodb.to_item { k = "page-" .. i }) }) end
    local all = assert(db:scan { TableName = T, ConsistentRead = true })
    assert.is_true(all.Count >= 5)
    local keys, pages = {}, 0
    for item, err in db:items("scan", { TableName = T, Limit = 2 }) do
      assert.is_truthy(item, tostring(err))
      keys[#keys + 1] = item.k.S
    end
    for page in db:pages("scan", { TableName = T, Limit = 2 }) do
      assert.is_truthy(page)
      pages = pages + 1
    end
    assert.equal(all.Count, #keys)
    assert.is_true(pages >= 3)
  end)

  it("is a separate client type whose Kinesis methods are not DynamoDB's", function()
    assert.truthy(tostring(db):find("kinesis.dynamodb.client", 1, true))
    assert.has_error(function() db.get_item { TableName = T } end)
    assert.has_error(function() db:call("PutRecord", {}) end)
  end)
end)
