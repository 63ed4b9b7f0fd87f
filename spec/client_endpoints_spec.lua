-- The client's endpoint: the configured URL as it is, else the model's rule
-- set per call (partitions, FIPS, dual-stack, account endpoints from ARNs),
-- and the signing region follows. A recording transport captures the requests.

local peers = require "support.peers"

local function recorder()
  local t = { reqs = {} }
  function t.send(_, req)
    t.reqs[#t.reqs + 1] = req
    return { status = 200, headers = {}, body = "{}" }
  end
  return t
end

local function header(req, name)
  for _, h in ipairs(req.headers) do
    if h[1]:lower() == name:lower() then return h[2] end
  end
end

local ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"

-- no peer: the client's endpoint is whatever cfg says (or none at all)
local function client(cfg)
  local t = recorder()
  cfg.transport = t
  return peers.client({}, cfg), t
end

describe("endpoint resolution in the client", function()
  it("uses the regional endpoint for calls without an ARN", function()
    local c, t = client { region = "eu-west-1" }
    assert(c:list_streams {})
    assert.equal("https://kinesis.eu-west-1.amazonaws.com/", t.reqs[1].url)
    assert.equal("kinesis.eu-west-1.amazonaws.com", header(t.reqs[1], "Host"))
    assert.matches("/eu%-west%-1/kinesis/aws4_request", header(t.reqs[1], "Authorization"))
  end)

  it("uses the account's data and control endpoints when a StreamARN is given", function()
    local c, t = client { region = "us-east-1" }
    assert(c:put_record { StreamARN = ARN, PartitionKey = "k", Data = "x" })
    assert(c:describe_stream_summary { StreamARN = ARN })
    assert.equal("https://123456789012.data-kinesis.us-east-1.amazonaws.com/", t.reqs[1].url)
    assert.equal("https://123456789012.control-kinesis.us-east-1.amazonaws.com/", t.reqs[2].url)
    -- resolutions are cached by their parameters: a repeat adds no entry
    assert.equal(2, c.endpoint_cache_size)
    assert(c:put_record { StreamARN = ARN, PartitionKey = "k2", Data = "y" })
    assert.equal(2, c.endpoint_cache_size)
    assert.equal(t.reqs[1].url, t.reqs[3].url)
    assert.equal("123456789012.data-kinesis.us-east-1.amazonaws.com", header(t.reqs[1], "Host"))
  end)

  it("uses the China partition's DNS suffix and signs for its region", function()
    local c, t = client { region = "cn-north-1" }
    assert(c:list_streams {})
    assert.equal("https://kinesis.cn-north-1.amazonaws.com.cn/", t.reqs[1].url)
    assert.matches("/cn%-north%-1/kinesis/aws4_request", header(t.reqs[1], "Authorization"))
  end)

  it("honours FIPS and dual-stack", function()
    local c, t = client { region = "us-east-1", use_fips = true }
    assert(c:list_streams {})
    assert.equal("https://kinesis-fips.us-east-1.amazonaws.com/", t.reqs[1].url)
    local c2, t2 = client { region = "us-east-1", use_dualstack = true }
    assert(c2:list_streams {})
    assert.equal("https://kinesis.us-east-1.api.aws/", t2.reqs[1].url)
  end)

  it("sends to a configured endpoint as it is, for every operation", function()
    local c, t = client { region = "us-east-1", endpoint = "http://127.0.0.1:4568" }
    assert(c:put_record { StreamARN = ARN, PartitionKey = "k", Data = "x" })
    assert.equal("http://127.0.0.1:4568/", t.reqs[1].url)
    assert.equal("127.0.0.1:4568", header(t.reqs[1], "Host"))
  end)

  it("reports a rule-set error as a validation error before sending", function()
    local c, t = client { region = "us-east-1", endpoint = "http://127.0.0.1:4568", use_fips = true }
    local out, err = c:list_streams {}
    assert.is_nil(out)
    assert.equal("validation", err.kind)
    assert.equal("EndpointError", err.code)
    assert.truthy(err.message:find("FIPS", 1, true))
    assert.equal(0, #t.reqs)
  end)
end)
