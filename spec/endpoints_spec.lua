-- Endpoint resolution against the model's own conformance suite: every case of
-- smithy.rules#endpointTests (read from ../shared at test time) goes through
-- kinesis.endpoints, directly by its params and, where the case names
-- operation inputs, through params_for as a client call would. Also: the
-- committed rule table equals a fresh generation, and the library functions
-- and engine paths the Kinesis rule set does not reach.

local cjson = require "cjson"
local endpoints = require "kinesis.endpoints"

local SHARED = assert(os.getenv("SHARED"), "SHARED is not set: run through tools/test.sh")

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- the project root, from where this file lives
local ROOT do
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  ROOT = src:match("^(.*)/spec/[^/]+$") or "."
end

local smithy = cjson.decode(read(SHARED .. "/aws-model/smithy/kinesis.json"))
local service
for _, s in pairs(smithy.shapes) do
  if s.type == "service" then service = s end
end
local CASES = service.traits["smithy.rules#endpointTests"].testCases

-- endpoint-test built-ins -> the client config fields params_for reads
local BUILTIN_CONFIG = {
  ["AWS::Region"] = "region",
  ["AWS::UseFIPS"] = "use_fips",
  ["AWS::UseDualStack"] = "use_dualstack",
  ["SDK::Endpoint"] = "endpoint",
  ["AWS::Auth::AccountId"] = "account_id",
  ["AWS::Auth::AccountIdEndpointMode"] = "account_id_endpoint_mode",
}

local function no_env() return nil end

local function sigv4_scheme(properties)
  for _, s in ipairs(properties and properties.authSchemes or {}) do
    if s.name == "sigv4" then return s end
  end
end

-- asserts that (ep, err) is what the test case expects
local function check(expect, params, ep, err)
  if expect.error then
    assert.is_nil(ep)
    assert.are.equal(expect.error, err)
    return
  end
  local want = expect.endpoint
  assert.is_nil(err)
  assert.is_table(ep)
  assert.are.equal(want.url, ep.url)
  assert.are.same(want.properties or {}, ep.properties)
  assert.are.same(want.headers or {}, ep.headers or {})
  local scheme = sigv4_scheme(want.properties)
  assert.are.equal(scheme and scheme.signingRegion or params.Region, ep.signing_region)
  assert.are.equal(scheme and scheme.signingName or "kinesis", ep.signing_name)
end

describe("endpoint rule set: smithy.rules#endpointTests", function()
  it("the model has the 271 test cases", function()
    assert.are.equal(271, #CASES)
  end)

  for i, case in ipairs(CASES) do
    it(string.format("#%d %s", i, case.documentation or ""), function()
      local params = case.params or {}
      local ep, err = endpoints.resolve(params)
      check(case.expect, params, ep, err)
      for _, input in ipairs(case.operationInputs or {}) do
        local config = {}
        for builtin, v in pairs(input.builtInParams or {}) do
          local field = assert(BUILTIN_CONFIG[builtin], "unmapped built-in " .. builtin)
          config[field] = v
        end
        local p = endpoints.params_for(input.operationName, input.operationParams or {}, config, no_env)
        local ep2, err2 = endpoints.resolve(p)
        check(case.expect, p, ep2, err2)
      end
    end)
  end
end)

describe("lua/kinesis/endpoint_rules.lua", function()
  it("equals a fresh generation from the model", function()
    local cmd = "cd " .. shell_quote(ROOT) .. " && lua5.4 tools/gen_endpoints.lua "
      .. shell_quote(SHARED .. "/aws-model")
    local p = assert(io.popen(cmd))
    local fresh = p:read("*a")
    local ok = p:close()
    assert.is_true(ok == true or ok == 0, "the generator failed")
    assert.is_true(#fresh > 100000, "the generator wrote " .. #fresh .. " bytes")
    local committed = read(ROOT .. "/lua/kinesis/endpoint_rules.lua")
    assert.is_true(committed == fresh,
      "endpoint_rules.lua is stale: run lua5.4 tools/gen_endpoints.lua ../shared/aws-model > lua/kinesis/endpoint_rules.lua")
  end)

  it("holds the rule set and the partitions of the model", function()
    local data = require "kinesis.endpoint_rules"
    local model_rs = service.traits["smithy.rules#endpointRuleSet"]
    assert.are.equal(#model_rs.rules, #data.rule_set.rules)
    local names = {}
    for _, p in ipairs(data.partitions) do names[#names + 1] = p.id end
    assert.are.same({ "aws", "aws-cn", "aws-eusc", "aws-iso", "aws-iso-b", "aws-iso-e", "aws-iso-f", "aws-us-gov" }, names)
    assert.are.equal("kinesis", data.signing_name)
  end)
end)

describe("endpoint library functions", function()
  local lib = endpoints.lib

  it("substring counts from either end and refuses short or non-ASCII input", function()
    assert.are.equal("abc", lib.substring("abcdef", 0, 3, false))
    assert.are.equal("def", lib.substring("abcdef", 0, 3, true))
    assert.are.equal("e", lib.substring("abcdef", 1, 2, true))
    assert.is_nil(lib.substring("abc", 0, 4, false))
    assert.is_nil(lib.substring("abc", 2, 2, false))
    assert.is_nil(lib.substring("ab\195\169cd", 0, 2, false))
    assert.is_nil(lib.substring(nil, 0, 1, false))
  end)

  it("isValidHostLabel follows RFC 1123, per label with subdomains", function()
    assert.is_true(lib.isValidHostLabel("abc-123", false))
    assert.is_true(lib.isValidHostLabel(string.rep("a", 63), false))
    assert.is_false(lib.isValidHostLabel(string.rep("a", 64), false))
    assert.is_false(lib.isValidHostLabel("", false))
    assert.is_false(lib.isValidHostLabel("-abc", false))
    assert.is_false(lib.isValidHostLabel("abc-", false))
    assert.is_false(lib.isValidHostLabel("a_b", false))
    assert.is_false(lib.isValidHostLabel("a.b", false))
    assert.is_true(lib.isValidHostLabel("a.b.c", true))
    assert.is_false(lib.isValidHostLabel("a..c", true))
    assert.is_false(lib.isValidHostLabel("a.b.", true))
  end)

  it("uriEncode keeps only the unreserved characters, uppercase hex", function()
    assert.are.equal("a-Z_0.9~", lib.uriEncode("a-Z_0.9~"))
    assert.are.equal("%2F%3A%2C%3F%23%5B%5D%7B%7D%7C%40%21%20%24%26%27%28%29%2A%2B%3B%3D%25%3C%3E%22%5E%60%5C",
      lib.uriEncode("/:,?#[]{}|@! $&'()*+;=%<>\"^`\\"))
    assert.are.equal("%C3%A9", lib.uriEncode("\195\169"))
  end)

  it("parseURL splits http(s) URLs and refuses the rest", function()
    assert.are.same({ scheme = "https", authority = "example.com", path = "/", normalizedPath = "/", isIp = false },
      lib.parseURL("https://example.com"))
    assert.are.same({ scheme = "http", authority = "example.com:80", path = "/foo/bar", normalizedPath = "/foo/bar/", isIp = false },
      lib.parseURL("http://example.com:80/foo/bar"))
    assert.are.same({ scheme = "https", authority = "127.0.0.1", path = "/", normalizedPath = "/", isIp = true },
      lib.parseURL("https://127.0.0.1"))
    assert.are.same({ scheme = "https", authority = "[fe80::1]:443", path = "/x/", normalizedPath = "/x/", isIp = true },
      lib.parseURL("https://[fe80::1]:443/x/"))
    assert.is_false(lib.parseURL("https://999.999.abc.blah").isIp)
    assert.is_false(lib.parseURL("https://300.1.1.1").isIp)
    assert.is_nil(lib.parseURL("https://example.com:8443?foo=bar"))
    assert.is_nil(lib.parseURL("ftp://example.com"))
    assert.is_nil(lib.parseURL("http://abc.com:a/foo"))
    assert.is_nil(lib.parseURL("example.com"))
    assert.is_nil(lib.parseURL("https:///path"))
  end)

  it("getAttr reads keys and 0-based indexes", function()
    local v = { a = { b = { "x", "y" } }, list = { "p", "q" } }
    assert.are.equal("y", lib.getAttr(v, "a.b[1]"))
    assert.are.equal("p", lib.getAttr(v, "list[0]"))
    assert.is_nil(lib.getAttr(v, "list[2]"))
    assert.are.equal("q", lib.getAttr({ "p", "q" }, "[1]"))
    assert.is_nil(lib.getAttr("string", "a"))
  end)

  it("aws.parseArn splits the resource on ':' and '/'", function()
    assert.are.same({ partition = "aws", service = "kinesis", region = "us-east-1", accountId = "123",
                      resourceId = { "stream", "s", "consumer", "c", "1525898737" } },
      lib["aws.parseArn"]("arn:aws:kinesis:us-east-1:123:stream/s/consumer/c:1525898737"))
    assert.are.same({ partition = "aws", service = "iam", region = "", accountId = "012345678910",
                      resourceId = { "user", "johndoe" } },
      lib["aws.parseArn"]("arn:aws:iam::012345678910:user/johndoe"))
    assert.are.same({ "stream", "" }, lib["aws.parseArn"]("arn:aws:kinesis:r:1:stream/").resourceId)
    assert.is_nil(lib["aws.parseArn"]("arn:aws:kinesis:r:1:"))
    assert.is_nil(lib["aws.parseArn"]("arn:aws:kinesis:r"))
    assert.is_nil(lib["aws.parseArn"]("arn::kinesis:r:1:stream/s"))
    assert.is_nil(lib["aws.parseArn"]("arn:aws::r:1:stream/s"))
    assert.is_nil(lib["aws.parseArn"]("11111111-2222-3333-4444-555555555555"))
  end)

  it("aws.partition maps known regions, region patterns, and falls back to aws", function()
    local part = lib["aws.partition"]
    assert.are.equal("aws-cn", part("cn-north-1").name)
    assert.are.equal("amazonaws.com.cn", part("cn-north-1").dnsSuffix)
    assert.are.equal("aws-us-gov", part("us-gov-west-1").name)
    assert.are.equal("aws-iso", part("us-iso-east-1").name)
    assert.are.equal("aws-iso-b", part("us-isob-east-1").name)
    assert.are.equal("aws-iso-e", part("eu-isoe-west-9").name)
    assert.are.equal("aws-iso-f", part("us-isof-south-9").name)
    assert.are.equal("aws-eusc", part("eusc-de-east-9").name)
    assert.are.equal("aws-cn", part("cn-south-7").name)
    assert.are.equal("aws", part("us-east-99").name)
    assert.are.equal("aws", part("aws-global").name)
    assert.are.equal("aws", part("mars-north-1").name)
    assert.are.equal("sc2s.sgov.gov", part("us-isob-east-1").dnsSuffix)
    assert.are.equal("api.cloud-aws.adc-e.uk", part("eu-isoe-west-1").dualStackDnsSuffix)
    assert.is_nil(part(nil))
  end)
end)

describe("endpoint resolution", function()
  it("resolves FIPS, dual-stack and account endpoints with the signing region", function()
    local ep = assert(endpoints.resolve { Region = "eu-west-1", UseFIPS = true })
    assert.are.equal("https://kinesis-fips.eu-west-1.amazonaws.com", ep.url)
    assert.are.equal("eu-west-1", ep.signing_region)
    -- GovCloud regional endpoints are FIPS already (a special case of the rule set)
    ep = assert(endpoints.resolve { Region = "us-gov-east-1", UseFIPS = true })
    assert.are.equal("https://kinesis.us-gov-east-1.amazonaws.com", ep.url)
    assert.are.equal("us-gov-east-1", ep.signing_region)
    ep = assert(endpoints.resolve { Region = "cn-north-1", UseDualStack = true })
    assert.are.equal("https://kinesis.cn-north-1.api.amazonwebservices.com.cn", ep.url)
    ep = assert(endpoints.resolve { Region = "eu-west-1", OperationType = "data",
                                    StreamARN = "arn:aws:kinesis:eu-west-1:123456789012:stream/s" })
    assert.are.equal("https://123456789012.data-kinesis.eu-west-1.amazonaws.com", ep.url)
    assert.are.equal("eu-west-1", ep.signing_region)
    assert.are.equal("kinesis", ep.signing_name)
    assert.is_nil(ep.headers)
  end)

  it("refuses unknown parameters and wrong types, and raises on a non-table", function()
    local ep, err = endpoints.resolve { Region = "us-east-1", Regoin = "x" }
    assert.is_nil(ep)
    assert.matches("unknown endpoint parameter Regoin", err, 1, true)
    ep, err = endpoints.resolve { Region = "us-east-1", UseFIPS = "true" }
    assert.is_nil(ep)
    assert.matches("UseFIPS must be a boolean", err, 1, true)
    assert.has_error(function() endpoints.resolve("us-east-1") end)
  end)

  it("compiles other rule sets: templates, headers, authSchemes, defaults, exhaustion", function()
    local resolve = endpoints.compile({
      version = "1.0",
      parameters = {
        Region = { type = "string", required = true, default = "us-east-1" },
        Bucket = { type = "string" },
        Names = { type = "stringArray", required = true, default = { "a", "b" } },
      },
      rules = {
        { type = "tree",
          conditions = { { fn = "isSet", argv = { { ref = "Bucket" } } },
                         { fn = "aws.partition", argv = { { ref = "Region" } }, assign = "P" } },
          rules = {
            { type = "endpoint",
              conditions = { { fn = "stringEquals", argv = { { ref = "Bucket" }, "b{{x}}" } } },
              endpoint = {
                url = "https://{Bucket}.{Region}.{P#dnsSuffix}/{{literal}}",
                properties = { authSchemes = { { name = "sigv4a", signingRegionSet = { "*" } },
                                               { name = "sigv4", signingRegion = "{Region}-x", signingName = "s3" } },
                               tag = "{P#name}" },
                headers = { ["x-bucket"] = { "{Bucket}", { ref = "Region" } } },
              } },
            { type = "error",
              conditions = { { fn = "uriEncode", argv = { { ref = "Bucket" } }, assign = "Enc" },
                             { fn = "stringEquals", argv = { { ref = "Enc" }, "a%2Fb" } } },
              error = "bad bucket {Enc}" },
          } },
        { type = "endpoint", conditions = {},
          endpoint = { url = { fn = "getAttr", argv = { { ref = "Names" }, "[1]" } } } },
      },
    }, "svc")

    local ep = assert(resolve { Region = "cn-north-1", Bucket = "b{x}" })
    assert.are.equal("https://b{x}.cn-north-1.amazonaws.com.cn/{literal}", ep.url)
    assert.are.same({ ["x-bucket"] = { "b{x}", "cn-north-1" } }, ep.headers)
    assert.are.equal("cn-north-1-x", ep.signing_region)
    assert.are.equal("s3", ep.signing_name)
    assert.are.equal("aws-cn", ep.properties.tag)

    local _, err = resolve { Bucket = "a/b" }
    assert.are.equal("bad bucket a%2Fb", err)

    -- the tree matched and none of its rules did: exhaustion, not fall-through
    local none
    none, err = resolve { Bucket = "zzz" }
    assert.is_nil(none)
    assert.matches("exhausted", err)

    ep = assert(resolve {})
    assert.are.equal("b", ep.url)
    assert.are.equal("us-east-1", ep.signing_region)
    assert.are.equal("svc", ep.signing_name)

    local bad
    bad, err = resolve { Names = { "a", 1 } }
    assert.is_nil(bad)
    assert.matches("list of strings", err)
  end)

  it("refuses at compile time what it cannot evaluate", function()
    assert.has_error(function()
      endpoints.compile({ parameters = {}, rules = { { type = "error", error = "x",
        conditions = { { fn = "aws.noSuchFunction", argv = { "x" } } } } } })
    end)
    assert.has_error(function()
      endpoints.compile({ parameters = {}, rules = { { type = "error", conditions = {}, error = "{unclosed" } } })
    end)
  end)
end)

describe("endpoints.params_for", function()
  local function env_of(t) return function(name) return t[name] end end

  it("takes the operation type and the input's context parameters", function()
    local p = endpoints.params_for("PutRecord",
      { StreamName = "s", StreamARN = "arn:aws:kinesis:us-east-1:1:stream/s", Data = "x", PartitionKey = "k" },
      { region = "us-east-1" }, env_of {})
    assert.are.same({ OperationType = "data", StreamARN = "arn:aws:kinesis:us-east-1:1:stream/s",
                      Region = "us-east-1" }, p)
    p = endpoints.params_for("SubscribeToShard", { ConsumerARN = "arn:c", ShardId = "x" },
      { region = "eu-west-1", use_fips = true, use_dualstack = false }, env_of {})
    assert.are.same({ OperationType = "data", ConsumerARN = "arn:c", Region = "eu-west-1",
                      UseFIPS = true, UseDualStack = false }, p)
    p = endpoints.params_for(require("kinesis.model").operations.ListTagsForResource,
      { ResourceARN = "arn:r" }, {}, env_of {})
    assert.are.same({ OperationType = "control", ResourceARN = "arn:r" }, p)
  end)

  it("falls back to the environment, config first", function()
    local env = env_of {
      AWS_REGION = "ap-south-1", AWS_USE_FIPS_ENDPOINT = "TRUE", AWS_USE_DUALSTACK_ENDPOINT = "false",
      AWS_ENDPOINT_URL = "http://general:1", AWS_ENDPOINT_URL_KINESIS = "http://kinesis:2",
      AWS_ACCOUNT_ID_ENDPOINT_MODE = "required",
    }
    local p = endpoints.params_for("ListStreams", {}, {}, env)
    assert.are.same({ OperationType = "control", Region = "ap-south-1", UseFIPS = true, UseDualStack = false,
                      Endpoint = "http://kinesis:2", AccountIdEndpointMode = "required" }, p)
    p = endpoints.params_for("ListStreams", {}, { region = "us-west-1", endpoint = "http://cfg:3", use_fips = false }, env)
    assert.are.equal("us-west-1", p.Region)
    assert.are.equal("http://cfg:3", p.Endpoint)
    assert.is_false(p.UseFIPS)
    p = endpoints.params_for("ListStreams", {}, {}, env_of { AWS_DEFAULT_REGION = "sa-east-1",
      AWS_ENDPOINT_URL = "http://general:1" })
    assert.are.equal("sa-east-1", p.Region)
    assert.are.equal("http://general:1", p.Endpoint)
    p = endpoints.params_for("ListStreams", {}, {}, env_of { AWS_ENDPOINT_URL_KINESIS = "http://k:2",
      AWS_IGNORE_CONFIGURED_ENDPOINT_URLS = "true" })
    assert.is_nil(p.Endpoint)
  end)

  it("feeds resolve: a custom endpoint wins over the ARN", function()
    local p = endpoints.params_for("DescribeStreamSummary",
      { StreamARN = "arn:aws:kinesis:us-east-1:123456789012:stream/s" },
      { region = "us-east-1", endpoint = "http://127.0.0.1:4568" }, env_of {})
    local ep = assert(endpoints.resolve(p))
    assert.are.equal("http://127.0.0.1:4568", ep.url)
    assert.are.equal("us-east-1", ep.signing_region)
    p.Endpoint = nil
    ep = assert(endpoints.resolve(p))
    assert.are.equal("https://123456789012.control-kinesis.us-east-1.amazonaws.com", ep.url)
  end)

  it("raises on an unknown operation", function()
    assert.has_error(function() endpoints.params_for("NoSuchOperation", {}, {}) end)
  end)
end)
