-- The credential provider chain (kinesis.credentials), its shared-file
-- parser (kinesis.ini) and its STS client (kinesis.credentials.sts). Every source is
-- exercised for real: files in a temporary HOME, credential_process
-- scripts, and spec/support/metadata.js, one loopback server speaking
-- IMDSv2, the container credentials API and STS (it verifies AssumeRole's
-- SigV4 signature). A last group runs child Lua processes with a real
-- process environment, under Lua 5.4 and LuaJIT.
local credentials = require "kinesis.credentials"
local sts = require "kinesis.credentials.sts"
local ini = require "kinesis.ini"
local core = require "kinesis.core"
local cjson = require "cjson"

---------------------------------------------------------------- harness

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function run(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a")
  p:close()
  return out
end

local ROOT = run("pwd"):gsub("%s+$", "")
local PARENT_PID = tonumber((run("echo $PPID")))

local function write(path, text, mode)
  os.execute("mkdir -p " .. shell_quote(path:match("^(.*)/[^/]+$")))
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  if mode then os.execute("chmod " .. mode .. " " .. shell_quote(path)) end
  return path
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function mkdtemp()
  os.execute("mkdir -p " .. shell_quote(ROOT .. "/spec/.tmp"))
  return (run("mktemp -d " .. shell_quote(ROOT .. "/spec/.tmp/creds.XXXXXX")):gsub("%s+$", ""))
end

-- application/x-www-form-urlencoded -> table
local function form(body)
  local t = {}
  for k, v in (body or ""):gmatch("([^&=]+)=([^&]*)") do
    local function dec(s)
      return (s:gsub("%+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
    end
    t[dec(k)] = dec(v)
  end
  return t
end

-- One control call with the curl command-line tool (not the library under test).
local function http(method, url, body)
  local cmd = "curl -sS --noproxy '*' --max-time 10 -X " .. method .. " -w '\\n%{http_code}' "
  if body then cmd = cmd .. "-H 'Content-Type: application/json' --data-binary " .. shell_quote(body) .. " " end
  local out = run(cmd .. shell_quote(url) .. " 2>&1")
  local text, code = out:match("^(.*)\n(%d%d%d)$")
  assert(code, "control call failed: " .. out)
  return tonumber(code), text
end

local Meta = {}
Meta.__index = Meta

local function start_meta(config)
  config = config or {}
  config.parent = PARENT_PID
  local out = run("node " .. shell_quote(ROOT .. "/spec/support/metadata.js") .. " "
                  .. shell_quote(cjson.encode(config)) .. " 2>&1")
  local ok, info = pcall(cjson.decode, out:match("([^\n]*)\n?$"))
  assert(ok and type(info) == "table" and not info.error, "metadata.js did not start: " .. out)
  local srv = setmetatable({ pid = math.floor(info.pid), port = math.floor(info.port),
                             log = info.log }, Meta)
  srv.endpoint = "http://127.0.0.1:" .. srv.port
  return srv
end

function Meta:control(method, what, value)
  local status, text = http(method, self.endpoint .. "/__meta/" .. what,
                            value ~= nil and cjson.encode(value) or nil)
  assert(status == 200, "metadata control " .. what .. " answered " .. status .. ": " .. text)
  return cjson.decode(text)
end
function Meta:stats() return self:control("GET", "stats") end
function Meta:requests() return self:control("GET", "requests") end
function Meta:set(cfg) return self:control("POST", "config", cfg) end
function Meta:reset() return self:control("POST", "reset", {}) end
function Meta:revoke() return self:control("POST", "revoke", {}) end
function Meta:stop()
  os.execute("kill -TERM " .. self.pid .. " 2>/dev/null")
  for _ = 1, 50 do
    local stat = read("/proc/" .. self.pid .. "/stat")
    if not stat or stat:match("^%d+ %b() (%a)") == "Z" then return end
    core.sleep(0.05)
  end
  os.execute("kill -KILL " .. self.pid .. " 2>/dev/null")
end

local DEFAULTS = {
  imds = { role = "test-role", expires_in = 21600, token_status = 200, v1 = false,
           credentials_status = 200, delay_ms = 0 },
  container = { path = "/v2/credentials/test-id", token = cjson.null, expires_in = 3600, status = 200 },
  sts = { expires_in = 3600, web_identity_token = "test-web-identity-token", region = cjson.null,
          status = 200, code = cjson.null, message = cjson.null },
  fail_next = { sts = 0, imds = 0, container = 0, sso = 0, oidc = 0 },
}

-- the long-term test key metadata.js accepts for AssumeRole
local STS_KEY = { access_key_id = "AKIDSTSTEST", secret_access_key = "sts-test-secret-key" }

local function merged(...)
  local out = {}
  for i = 1, select("#", ...) do
    for k, v in pairs(select(i, ...) or {}) do out[k] = v end   -- false: unset
  end
  return out
end

-- Order of the first occurrence of each needle in s (nil if one is missing).
local function in_order(s, needles)
  local last = 0
  for _, n in ipairs(needles) do
    local i = s:find(n, 1, true)
    if not i or i < last then return false end
    last = i
  end
  return true
end

local function assert_no_secret(text, ...)
  text = tostring(text)
  for i = 1, select("#", ...) do
    local s = select(i, ...)
    assert.is_nil(text:find(s, 1, true), "secret leaked into: " .. text)
  end
end

---------------------------------------------------------------- fixtures

local meta, tmp, empty_home
local clock_offset = 0
local function clock() return os.time() + clock_offset end

lazy_setup(function()
  meta = start_meta()
  tmp = mkdtemp()
  empty_home = tmp .. "/empty-home"
  os.execute("mkdir -p " .. shell_quote(empty_home))
end)

lazy_teardown(function()
  if meta then meta:stop() end
  if tmp and tmp:match("/spec/%.tmp/creds%.") then os.execute("rm -rf " .. shell_quote(tmp)) end
end)

before_each(function()
  clock_offset = 0
  meta:set(DEFAULTS)
  meta:reset()
end)

-- An environment with nothing configured except what `extra` adds.
local function env(extra)
  return merged({ HOME = empty_home, AWS_EC2_METADATA_DISABLED = "true" }, extra)
end

local function imds_env(extra)
  return merged({ HOME = empty_home, AWS_EC2_METADATA_SERVICE_ENDPOINT = meta.endpoint }, extra)
end

local function chain(e, opts)
  return credentials.chain(merged({ env = e, sts_endpoint = meta.endpoint, clock = clock }, opts))
end

---------------------------------------------------------------- kinesis.ini

describe("kinesis.ini", function()
  it("parses sections, comments, sub-properties and continuation lines", function()
    local text = table.concat({
      "\239\187\191# a comment",
      "; another",
      "[default]   # trailing comment on a header",
      "region = eu-west-1",
      "Output=json",
      "s3 =",
      "  max_concurrent_requests = 10",
      "  addressing_style = path",
      "",
      "[profile dev]",
      "credential_process = /bin/tool --arg 'x # not a comment' ; neither",
      "long = first",
      "  second",
      "[ profile spaced ]",
      "empty =",
    }, "\r\n")
    local parsed = assert(ini.parse(text))
    assert.same({ "default", "profile dev", "profile spaced" }, parsed.order)
    local d = parsed.sections.default
    assert.equal("eu-west-1", d.region)
    assert.equal("json", d.output)      -- keys are case-insensitive
    assert.same({ max_concurrent_requests = "10", addressing_style = "path" }, d.s3)
    local dev = parsed.sections["profile dev"]
    assert.equal("/bin/tool --arg 'x # not a comment' ; neither", dev.credential_process)
    assert.equal("first\nsecond", dev.long)
    assert.equal("", parsed.sections["profile spaced"].empty)
  end)

  it("maps config sections to profiles as the SDKs do", function()
    local parsed = assert(ini.parse(table.concat({
      "[default]", "region = a",
      "[profile default]", "region = b",
      "[profile x]", "region = c",
      "[y]", "region = ignored",
      "[sso-session corp]", "sso_region = us-east-1",
    }, "\n")))
    local profiles, others = ini.config_profiles(parsed)
    assert.equal("b", profiles.default.region)   -- [profile default] wins
    assert.equal("c", profiles.x.region)
    assert.is_nil(profiles.y)                      -- a bare name is not a config profile
    assert.equal("us-east-1", others["sso-session"].corp.sso_region)
    -- in the credentials file every section is a profile
    assert.equal("ignored", ini.credentials_profiles(parsed).y.region)
  end)

  it("reports malformed lines by number, never by content", function()
    for _, text in ipairs {
      "[default]\naws_secret_access_key SECRETVALUE123\n",
      "aws_secret_access_key = SECRETVALUE123\n",
      "[default\naws_secret_access_key = SECRETVALUE123\n",
      "[default]\n  SECRETVALUE123\n",
    } do
      local parsed, err = ini.parse(text)
      assert.is_nil(parsed)
      assert.matches("^line %d+: ", err)
      assert_no_secret(err, "SECRETVALUE123")
    end
  end)

  it("merges the two files, the credentials file winning", function()
    local dir = mkdtemp()
    write(dir .. "/config", "[profile p]\naws_access_key_id = FROMCONFIG\nregion = r1\n")
    write(dir .. "/credentials", "[p]\naws_access_key_id = FROMCREDS\n")
    local profiles, info = assert(ini.load(dir .. "/config", dir .. "/credentials"))
    assert.equal("FROMCREDS", profiles.p.aws_access_key_id)
    assert.equal("r1", profiles.p.region)
    assert.is_true(info.config and info.credentials)
    local none, info2 = assert(ini.load(dir .. "/missing", dir .. "/missing2"))
    assert.same({}, none)
    assert.is_false(info2.config or info2.credentials)
    os.execute("rm -rf " .. shell_quote(dir))
  end)
end)

---------------------------------------------------------------- kinesis.sts

describe("kinesis.credentials.sts", function()
  local REAL = [[<?xml version="1.0" encoding="UTF-8"?>
<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <SourceIdentity>Alice</SourceIdentity>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/demo/TestAR</Arn>
      <AssumedRoleId>ARO123EXAMPLE123:TestAR</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <SessionToken>AQoDYXdzEPT//////////wEXAMPLEtc764 &amp; more&#x2F;&#47;</SessionToken>
      <Expiration>2019-11-09T13:34:41Z</Expiration>
    </Credentials>
    <PackedPolicySize>6</PackedPolicySize>
  </AssumeRoleResult>
  <ResponseMetadata>
    <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
  </ResponseMetadata>
</AssumeRoleResponse>]]

  it("reads the AssumeRole response shape", function()
    local root = assert(sts.parse_xml(REAL))
    assert.equal("AssumeRoleResponse", root.name)
    assert.equal("https://sts.amazonaws.com/doc/2011-06-15/", root.attrs.xmlns)
    local c = sts.xml_path(root, "AssumeRoleResult", "Credentials")
    assert.equal("ASIAIOSFODNN7EXAMPLE", sts.xml_child(c, "AccessKeyId").text)
    assert.equal("AQoDYXdzEPT//////////wEXAMPLEtc764 & more//", sts.xml_child(c, "SessionToken").text)
    assert.equal("c6104cbe-af31-11e0-8154-cbc7ccf896c7",
                 sts.xml_path(root, "ResponseMetadata", "RequestId").text)
    assert.is_nil(sts.xml_path(root, "AssumeRoleResult", "Nope"))
  end)

  it("handles prefixes, CDATA, comments, self-closing tags and character references", function()
    local root = assert(sts.parse_xml(
      "<!-- c --><a:Root xmlns:a='urn:x'><a:V><![CDATA[<raw & text>]]></a:V><E/>"
      .. "<N k=\"&lt;&quot;\">&#233;&#x20AC;&#x1F600;</N></a:Root>"))
    assert.equal("Root", root.name)
    assert.equal("a:Root", root.qname)
    assert.equal("<raw & text>", sts.xml_child(root, "V").text)
    assert.equal("", sts.xml_child(root, "E").text)
    local n = sts.xml_child(root, "N")
    assert.equal('<"', n.attrs.k)
    assert.equal("\195\169\226\130\172\240\159\152\128", n.text)
  end)

  it("rejects malformed documents without quoting their text", function()
    for _, doc in ipairs {
      "", "<a>", "<a></b>", "<a/><b/>", "text<a/>", "<a>&bogus;</a>", "<a>& x</a>",
      "<!DOCTYPE a [<!ENTITY x 'y'>]><a/>", "<a b=c/>", "<a><![CDATA[x</a>", "<a><!-- x</a>",
    } do
      local root, err = sts.parse_xml(doc)
      assert.is_nil(root, doc)
      assert.is_string(err)
    end
    local _, err = sts.parse_xml("<Secret>SECRETVALUE123 &nope;</Secret>")
    assert_no_secret(err, "SECRETVALUE123")
  end)

  it("parses ISO 8601 times to epoch seconds", function()
    assert.equal(0, sts.parse_time("1970-01-01T00:00:00Z"))
    assert.equal(951827696, sts.parse_time("2000-02-29T12:34:56Z"))
    assert.equal(1735689599, sts.parse_time("2024-12-31T23:59:59.999Z"))
    assert.equal(-1, sts.parse_time("1969-12-31T23:59:59Z"))
    assert.equal(2147483648, sts.parse_time("2038-01-19T03:14:08Z"))
    assert.equal(4107542400, sts.parse_time("2100-03-01T00:00:00Z"))
    assert.equal(1714557600, sts.parse_time("2024-05-01T12:00:00+02:00"))
    assert.equal(1714557600, sts.parse_time("2024-05-01T09:00:00-0100"))
    for _, bad in ipairs { "2024-05-01", "2024-13-01T00:00:00Z", "2024-05-01T00:00:00", "soon", 5 } do
      assert.is_nil(sts.parse_time(bad))
    end
  end)

  it("encodes the query-protocol body and picks the regional endpoint", function()
    assert.equal("Action=AssumeRole&Version=2011-06-15&A=1&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fx"
      .. "&RoleSessionName=a%20b~c.d_e-f%2B", sts.form_body("AssumeRole",
        { RoleArn = "arn:aws:iam::1:role/x", RoleSessionName = "a b~c.d_e-f+", A = 1 }))
    assert.equal("https://sts.eu-west-1.amazonaws.com", sts.endpoint("eu-west-1"))
    assert.equal("https://sts.cn-north-1.amazonaws.com.cn", sts.endpoint("cn-north-1"))
    assert.equal("https://sts.us-east-1.amazonaws.com", sts.endpoint(nil))
    assert.is_nil(sts.endpoint("evil.com/x"))
  end)

  describe("against the loopback STS", function()
    local transport
    lazy_setup(function() transport = require("kinesis.transport.curl").new { timeout = 5 } end)
    lazy_teardown(function() transport:close() end)

    local function call(opts)
      return sts.assume_role(merged({ credentials = STS_KEY, endpoint = meta.endpoint, transport = transport,
        region = "eu-west-1", role_arn = "arn:aws:iam::123456789012:role/demo" }, opts))
    end

    it("signs AssumeRole with SigV4 (the server checks the signature) and reads the XML", function()
      meta:set { sts = { region = "eu-west-1", expires_in = 1800 } }
      local before = os.time()
      local out = assert(call { role_session_name = "spec", external_id = "ext-1", duration_seconds = 1800 })
      assert.matches("^ASIASTS%d+$", out.access_key_id)
      assert.is_string(out.secret_access_key)
      assert.matches("^STSToken/", out.session_token)
      assert.is_true(out.expiration >= before + 1799 and out.expiration <= os.time() + 1801)
      assert.equal("arn:aws:sts::123456789012:assumed-role/demo/spec", out.assumed_role_arn)
      local req = meta:requests()[1]
      assert.equal("POST", req.method)
      assert.equal("127.0.0.1:" .. meta.port, req.headers.host)
      assert.matches("^application/x%-www%-form%-urlencoded", req.headers["content-type"])
      assert.matches("Credential=AKIDSTSTEST/%d+/eu%-west%-1/sts/aws4_request", req.headers.authorization)
      assert.same({ Action = "AssumeRole", Version = "2011-06-15", RoleArn = "arn:aws:iam::123456789012:role/demo",
                    RoleSessionName = "spec", ExternalId = "ext-1", DurationSeconds = "1800" }, form(req.body))
      assert.equal(1, meta:stats().assume_role)
    end)

    it("gets SignatureDoesNotMatch for a wrong secret, as an aws error without secrets", function()
      local out, err = call { credentials = { access_key_id = "AKIDSTSTEST", secret_access_key = "wrong-secret-value" } }
      assert.is_nil(out)
      assert.equal("aws", err.kind)
      assert.equal("SignatureDoesNotMatch", err.code)
      assert.equal(403, err.status)
      assert.is_string(err.request_id)
      assert.is_false(err.retryable)
      assert_no_secret(tostring(err), "wrong-secret-value")
      -- a signature for another region does not pass either
      meta:set { sts = { region = "us-west-2" } }
      local _, err2 = call {}
      assert.equal("SignatureDoesNotMatch", err2.code)
      assert.equal(2, meta:stats().assume_role)
    end)

    it("signs with temporary credentials and their session token", function()
      local first = assert(call {})
      local second = assert(call { credentials = first, role_arn = "arn:aws:iam::123456789012:role/next" })
      assert.not_equal(first.access_key_id, second.access_key_id)
      local req = meta:requests()[2]
      assert.equal(first.session_token, req.headers["x-amz-security-token"])
      local _, err = call { credentials = { access_key_id = first.access_key_id,
        secret_access_key = first.secret_access_key, session_token = "forged" } }
      assert.equal("InvalidClientTokenId", err.code)
    end)

    it("calls AssumeRoleWithWebIdentity unsigned", function()
      local out = assert(sts.assume_role_with_web_identity { endpoint = meta.endpoint, transport = transport,
        role_arn = "arn:aws:iam::123456789012:role/web", role_session_name = "pod",
        web_identity_token = "test-web-identity-token" })
      assert.matches("^ASIAWEB", out.access_key_id)
      local req = meta:requests()[1]
      assert.is_nil(req.headers.authorization)
      assert.equal("test-web-identity-token", form(req.body).WebIdentityToken)
      local _, err = sts.assume_role_with_web_identity { endpoint = meta.endpoint, transport = transport,
        role_arn = "arn:aws:iam::123456789012:role/web", web_identity_token = "bad-token-value" }
      assert.equal("InvalidIdentityToken", err.code)
      assert.equal(400, err.status)
    end)

    it("retries 5xx answers up to three attempts", function()
      meta:set { sts = { status = 503, code = "ServiceUnavailable", message = "try later" } }
      local _, err = call {}
      assert.equal("ServiceUnavailable", err.code)
      assert.is_true(err.retryable)
      assert.equal(3, meta:stats().assume_role)
    end)
  end)
end)

---------------------------------------------------------------- sources

describe("environment credentials", function()
  it("come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN", function()
    local p = chain(env { AWS_ACCESS_KEY_ID = "AKIDENV", AWS_SECRET_ACCESS_KEY = "env-secret",
                          AWS_SESSION_TOKEN = "env-token" })
    local c = assert(p:get())
    assert.equal("AKIDENV", c.access_key_id)
    assert.equal("env-secret", c.secret_access_key)
    assert.equal("env-token", c.session_token)
    assert.equal("environment", c.source)
    assert.is_nil(c.expiration)
    assert.equal(c, p:get())   -- cached
  end)

  it("take AWS_CREDENTIAL_EXPIRATION as their expiration", function()
    local c = assert(chain(env { AWS_ACCESS_KEY_ID = "A", AWS_SECRET_ACCESS_KEY = "s",
                                 AWS_CREDENTIAL_EXPIRATION = "2100-03-01T00:00:00Z" }):get())
    assert.equal(4107542400, c.expiration)
  end)

  it("stop the chain when only half is set", function()
    local _, err = chain(env { AWS_SECRET_ACCESS_KEY = "half-secret-value",
      AWS_EC2_METADATA_DISABLED = false, AWS_EC2_METADATA_SERVICE_ENDPOINT = meta.endpoint }):get()
    assert.matches("environment: AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not", err.message)
    assert.matches("later sources were not tried", err.message)
    assert.equal(0, meta:stats().imds_token)
    assert_no_secret(tostring(err), "half-secret-value")
  end)
end)

describe("web identity credentials", function()
  local token_file
  before_each(function() token_file = write(tmp .. "/web/token", "test-web-identity-token\n") end)

  it("come from AssumeRoleWithWebIdentity with the token file's contents", function()
    local p = chain(env { AWS_WEB_IDENTITY_TOKEN_FILE = token_file,
      AWS_ROLE_ARN = "arn:aws:iam::123456789012:role/web", AWS_ROLE_SESSION_NAME = "my-pod" })
    local c = assert(p:get())
    assert.equal("web_identity", c.source)
    assert.matches("^ASIAWEB", c.access_key_id)
    assert.is_number(c.expiration)
    local req = meta:requests()[1]
    local f = form(req.body)
    assert.equal("AssumeRoleWithWebIdentity", f.Action)
    assert.equal("my-pod", f.RoleSessionName)
    assert.equal("arn:aws:iam::123456789012:role/web", f.RoleArn)
    assert.is_nil(req.headers.authorization)
  end)

  it("re-read the token file on refresh and report STS's refusal without the token", function()
    local p = chain(env { AWS_WEB_IDENTITY_TOKEN_FILE = token_file,
      AWS_ROLE_ARN = "arn:aws:iam::123456789012:role/web" })
    local c1 = assert(p:get())
    assert.matches("^lua%-kinesis%-%d+$", form(meta:requests()[1].body).RoleSessionName)
    write(token_file, "rotated-but-rejected-token")
    clock_offset = 3600   -- the cached credentials have expired
    local c, err = p:get()
    assert.is_nil(c)
    assert.matches("web identity: STS AssumeRoleWithWebIdentity failed: InvalidIdentityToken %(HTTP 400%)", err.message)
    assert_no_secret(tostring(err), "rotated-but-rejected-token", c1.secret_access_key, c1.session_token)
    assert.equal("rotated-but-rejected-token", form(meta:requests()[2].body).WebIdentityToken)
  end)

  it("need AWS_ROLE_ARN", function()
    local _, err = chain(env { AWS_WEB_IDENTITY_TOKEN_FILE = token_file }):get()
    assert.matches("web identity: AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not", err.message)
    local _, err2 = chain(env { AWS_WEB_IDENTITY_TOKEN_FILE = tmp .. "/web/missing",
                                AWS_ROLE_ARN = "arn:aws:iam::1:role/x" }):get()
    assert.matches("web identity: cannot read the web identity token file", err2.message)
  end)
end)

describe("shared config and credentials files", function()
  local home, script_dir

  lazy_setup(function()
    home = tmp .. "/home"
    script_dir = tmp .. "/scripts"
    write(script_dir .. "/process.sh", [[#!/bin/sh
dir=$(dirname "$0")
n=$(cat "$dir/count" 2>/dev/null || echo 0)
n=$((n + 1))
echo $n > "$dir/count"
printf '{"Version": 1, "AccessKeyId": "AKIDPROC%d", "SecretAccessKey": "proc-secret-%d", "SessionToken": "proc-token", "Expiration": "%s"}\n' \
  $n $n "$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)"
]], "755")
    write(script_dir .. "/fail.sh", [[#!/bin/sh
printf '{"Version": 1, "AccessKeyId": "AKIDFAIL", "SecretAccessKey": "failing-secret-value"}\n'
echo "token expired; last secret was failing-secret-value" >&2
exit 3
]], "755")
    write(home .. "/.aws/config", table.concat({
      "[default]",
      "region = eu-central-1",
      "[profile static]",
      "aws_access_key_id = AKIDCONFIG",
      "aws_secret_access_key = config-secret",
      "region = ap-south-1",
      "[profile regiononly]",
      "region = sa-east-1",
      "[profile role]",
      "role_arn = arn:aws:iam::123456789012:role/first",
      "source_profile = base",
      "role_session_name = spec-session",
      "external_id = ext-123",
      "duration_seconds = 1800",
      "[profile chained]",
      "role_arn = arn:aws:iam::123456789012:role/second",
      "source_profile = role",
      "[profile self]",
      "role_arn = arn:aws:iam::123456789012:role/self",
      "source_profile = self",
      "aws_access_key_id = AKIDSTSTEST",
      "aws_secret_access_key = sts-test-secret-key",
      "[profile loop-a]",
      "role_arn = arn:aws:iam::123456789012:role/a",
      "source_profile = loop-b",
      "[profile loop-b]",
      "role_arn = arn:aws:iam::123456789012:role/b",
      "source_profile = loop-a",
      "[profile from-env]",
      "role_arn = arn:aws:iam::123456789012:role/env",
      "credential_source = Environment",
      "[profile from-imds]",
      "role_arn = arn:aws:iam::123456789012:role/imds",
      "credential_source = Ec2InstanceMetadata",
      "[profile dangling]",
      "role_arn = arn:aws:iam::123456789012:role/x",
      "[profile badsource]",
      "role_arn = arn:aws:iam::123456789012:role/x",
      "credential_source = Mainframe",
      "[profile process]",
      "credential_process = " .. script_dir .. "/process.sh",
      "[profile process-fail]",
      "credential_process = " .. script_dir .. "/fail.sh",
      "[profile process-text]",
      "credential_process = echo not json",
      "[profile process-v2]",
      [[credential_process = echo '{"Version": 2, "AccessKeyId": "A", "SecretAccessKey": "S"}']],
      "[profile web]",
      "role_arn = arn:aws:iam::123456789012:role/webprofile",
      "web_identity_token_file = " .. tmp .. "/web-profile-token",
      "role_session_name = from-profile",
      "[profile sso]",
      "sso_session = corp",
      "sso_account_id = 123456789012",
      "sso_role_name = ReadOnly",
      "[sso-session corp]",
      "sso_start_url = https://corp.awsapps.com/start",
      "sso_region = us-east-1",
    }, "\n") .. "\n")
    write(home .. "/.aws/credentials", table.concat({
      "[default]",
      "aws_access_key_id = AKIDDEFAULT",
      "aws_secret_access_key = default-secret",
      "[base]",
      "aws_access_key_id = AKIDSTSTEST",
      "aws_secret_access_key = sts-test-secret-key",
      "[static]",
      "aws_access_key_id = AKIDCREDSFILE",
      "aws_secret_access_key = credsfile-secret",
    }, "\n") .. "\n")
    write(tmp .. "/web-profile-token", "test-web-identity-token")
  end)

  local function profile(name, extra, opts)
    return chain(env(merged({ HOME = home, AWS_PROFILE = name }, extra)), opts)
  end

  it("read the default profile's static keys", function()
    local c = assert(chain(env { HOME = home }):get())
    assert.equal("AKIDDEFAULT", c.access_key_id)
    assert.equal("default-secret", c.secret_access_key)
    assert.equal("profile", c.source)
    assert.equal("default", c.profile)
  end)

  it("select a profile by AWS_PROFILE or the profile option; the credentials file wins", function()
    assert.equal("AKIDCREDSFILE", assert(profile("static"):get()).access_key_id)
    local c = assert(chain(env { HOME = home, AWS_PROFILE = "nope" }, { profile = "static" }):get())
    assert.equal("credsfile-secret", c.secret_access_key)
  end)

  it("honour AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE with ~ expansion", function()
    write(tmp .. "/alt/.cfg", "[profile alt]\naws_access_key_id = AKIDALT\naws_secret_access_key = alt-secret\n")
    local c = assert(chain(env { HOME = tmp .. "/alt", AWS_CONFIG_FILE = "~/.cfg", AWS_PROFILE = "alt",
      AWS_SHARED_CREDENTIALS_FILE = tmp .. "/alt/none" }):get())
    assert.equal("AKIDALT", c.access_key_id)
  end)

  it("fail for a selected profile that does not exist, and skip a missing default", function()
    local _, err = profile("nope", { AWS_EC2_METADATA_DISABLED = false,
      AWS_EC2_METADATA_SERVICE_ENDPOINT = meta.endpoint }):get()
    assert.matches('shared files: profile "nope" not found in ' .. home:gsub("%p", "%%%0"), err.message)
    assert.equal(0, meta:stats().imds_token)
    -- a default profile with only a region is not a credential source: fall through
    local c = assert(chain(imds_env { HOME = home, AWS_PROFILE = "regiononly" }):get())
    assert.equal("imds", c.source)
  end)

  it("run credential_process and refresh it before its Expiration", function()
    os.remove(script_dir .. "/count")
    local p = profile("process")
    local c = assert(p:get())
    assert.equal("AKIDPROC1", c.access_key_id)
    assert.equal("proc-secret-1", c.secret_access_key)
    assert.equal("proc-token", c.session_token)
    assert.equal("process", c.source)
    assert.is_true(c.expiration > os.time() + 3500)
    assert.equal("AKIDPROC1", p:get().access_key_id)
    clock_offset = 3600 - 200   -- inside the refresh window, not yet expired
    assert.equal("AKIDPROC2", p:get().access_key_id)
    assert.equal("2", read(script_dir .. "/count"):match("%d+"))
  end)

  it("report credential_process failures without what it printed", function()
    local _, err = profile("process-fail"):get()
    assert.matches('credential_process of profile "process%-fail" exited with status 3: token expired', err.message)
    assert_no_secret(tostring(err), "failing-secret-value")
    assert.matches("<redacted>", err.message)
    local _, err2 = profile("process-text"):get()
    assert.matches("did not print a JSON object", err2.message)
    local _, err3 = profile("process-v2"):get()
    assert.matches("printed Version 2, expected 1", err3.message)
  end)

  it("assume role_arn with source_profile's keys through a signed STS call", function()
    meta:set { sts = { region = "ap-northeast-1" } }
    local c = assert(profile("role", nil, { region = "ap-northeast-1" }):get())
    assert.equal("assume_role", c.source)
    assert.equal("role", c.profile)
    assert.equal("arn:aws:iam::123456789012:role/first", c.role_arn)
    assert.matches("^ASIASTS", c.access_key_id)
    local reqs = meta:requests()
    assert.equal(1, #reqs)
    assert.matches("Credential=AKIDSTSTEST/", reqs[1].headers.authorization)
    assert.same({ Action = "AssumeRole", Version = "2011-06-15", RoleArn = "arn:aws:iam::123456789012:role/first",
                  RoleSessionName = "spec-session", ExternalId = "ext-123", DurationSeconds = "1800" },
                form(reqs[1].body))
    local st = meta:stats()
    assert.equal(1, st.assume_role)
    assert.equal(0, st.sts_rejected)
  end)

  it("follow source_profile chains, signing each hop with the previous role", function()
    local c = assert(profile("chained"):get())
    local reqs = meta:requests()
    assert.equal(2, #reqs)
    assert.equal("arn:aws:iam::123456789012:role/first", form(reqs[1].body).RoleArn)
    assert.equal("arn:aws:iam::123456789012:role/second", form(reqs[2].body).RoleArn)
    local hop = reqs[2].headers.authorization:match("Credential=([^/]+)/")
    assert.matches("^ASIASTS", hop)
    assert.is_string(reqs[2].headers["x-amz-security-token"])
    assert.equal(0, meta:stats().sts_rejected)
    assert.equal("arn:aws:iam::123456789012:role/second", c.role_arn)
  end)

  it("let a profile assume a role with its own keys, and detect cycles", function()
    assert.equal("assume_role", assert(profile("self"):get()).source)
    local _, err = profile("loop-a"):get()
    assert.matches("source_profile cycle: loop%-a %-> loop%-b %-> loop%-a", err.message)
    local _, err2 = profile("dangling"):get()
    assert.matches("has role_arn but no source_profile, credential_source or web_identity_token_file", err2.message)
    local _, err3 = profile("badsource"):get()
    assert.matches('unknown credential_source "Mainframe"', err3.message)
    -- an SSO profile with no cached token says how to log in (spec/sso_spec.lua has the rest)
    local _, err4 = profile("sso"):get()
    assert.matches('no cached SSO token .*; run "aws sso login %-%-profile sso"', err4.message)
  end)

  it("use credential_source as the role's source", function()
    -- Environment: keys in the environment would win the chain by themselves,
    -- so the profile is resolved directly through the named source
    local p = profile("from-env", { AWS_ACCESS_KEY_ID = "AKIDSTSTEST", AWS_SECRET_ACCESS_KEY = "sts-test-secret-key" })
    local shared = require "kinesis.credentials.profile"
    local profiles, info = assert(shared.load(p))
    local c = assert(shared.resolve(p, profiles, info, "from-env", {}))
    assert.equal("assume_role", c.source)
    assert.matches("Credential=AKIDSTSTEST/", meta:requests()[1].headers.authorization)
    -- Ec2InstanceMetadata: IMDS credentials sign the AssumeRole call
    meta:reset()
    local c2 = assert(profile("from-imds", { AWS_EC2_METADATA_DISABLED = false,
      AWS_EC2_METADATA_SERVICE_ENDPOINT = meta.endpoint }):get())
    assert.equal("assume_role", c2.source)
    local st = meta:stats()
    assert.equal(1, st.imds_credentials)
    assert.equal(1, st.assume_role)
    assert.equal(0, st.sts_rejected)
    assert.matches("Credential=ASIAIMDS", meta:requests()[4].headers.authorization)
  end)

  it("assume a role with a profile's web_identity_token_file", function()
    local c = assert(profile("web"):get())
    assert.equal("assume_role", c.source)
    local f = form(meta:requests()[1].body)
    assert.equal("AssumeRoleWithWebIdentity", f.Action)
    assert.equal("from-profile", f.RoleSessionName)
  end)

  it("give the profile's region to the client", function()
    assert.equal("eu-central-1", credentials.region_from_profile(nil, { env = { HOME = home } }))
    assert.equal("ap-south-1", credentials.region_from_profile("static", { env = { HOME = home } }))
    assert.equal("sa-east-1", credentials.region_from_profile(nil, { env = { HOME = home, AWS_PROFILE = "regiononly" } }))
    assert.is_nil(credentials.region_from_profile("nope", { env = { HOME = home } }))
    assert.is_nil(credentials.region_from_profile(nil, { env = { HOME = empty_home } }))
  end)

  it("report a malformed file by path and line, without its content", function()
    write(tmp .. "/bad/.aws/credentials", "[default]\naws_secret_access_key SECRETVALUE123\n")
    local _, err = chain(env { HOME = tmp .. "/bad" }):get()
    assert.matches("shared files: .*/bad/%.aws/credentials: line 2: expected 'name = value'", err.message)
    assert_no_secret(tostring(err), "SECRETVALUE123")
  end)
end)

describe("container credentials", function()
  local function cenv(extra)
    return env(merged({ AWS_CONTAINER_CREDENTIALS_FULL_URI = meta.endpoint .. "/v2/credentials/test-id" }, extra))
  end

  it("come from the full URI with the authorization token", function()
    meta:set { container = { token = "container-auth-token" } }
    local c = assert(chain(cenv { AWS_CONTAINER_AUTHORIZATION_TOKEN = "container-auth-token" }):get())
    assert.equal("container", c.source)
    assert.matches("^ASIAECS", c.access_key_id)
    assert.matches("^ECSToken/", c.session_token)
    local req = meta:requests()[1]
    assert.equal("GET", req.method)
    assert.equal("container-auth-token", req.headers.authorization)
  end)

  it("prefer the token file over the token variable and re-read it", function()
    meta:set { container = { token = "from-the-file" } }
    local file = write(tmp .. "/ecs/token", "from-the-file\n")
    local p = chain(cenv { AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE = file,
                           AWS_CONTAINER_AUTHORIZATION_TOKEN = "from-the-variable" })
    assert(p:get())
    write(file, "rotated-token")
    meta:set { container = { token = "rotated-token" } }
    clock_offset = 3600
    assert(p:get())
    local reqs = meta:requests()
    assert.equal("from-the-file", reqs[1].headers.authorization)
    assert.equal("rotated-token", reqs[2].headers.authorization)
  end)

  it("are refused for a missing or wrong token, and the error does not show it", function()
    meta:set { container = { token = "the-right-token" } }
    local _, err = chain(cenv()):get()
    assert.matches("container: GET .* HTTP 401 AccessDeniedException: Authorization header is missing", err.message)
    local _, err2 = chain(cenv { AWS_CONTAINER_AUTHORIZATION_TOKEN = "a-wrong-token-value" }):get()
    assert.matches("container: GET .* HTTP 403", err2.message)
    assert_no_secret(tostring(err2), "a-wrong-token-value", "the-right-token")
    assert.equal(2, meta:stats().container_rejected)
    local _, err3 = chain(cenv { AWS_CONTAINER_AUTHORIZATION_TOKEN = "bad\r\nX-Injected: 1" }):get()
    assert.matches("line break", err3.message)
  end)

  it("use the relative URI against the ECS host (overridable for tests)", function()
    local c = assert(chain(env { AWS_CONTAINER_CREDENTIALS_RELATIVE_URI = "/v2/credentials/test-id" },
                           { container_endpoint = meta.endpoint }):get())
    assert.equal("container", c.source)
    assert.equal("/v2/credentials/test-id", meta:requests()[1].path)
  end)

  it("refuse an http full URI to a host that is not loopback or a container agent", function()
    local _, err = chain(env { AWS_CONTAINER_CREDENTIALS_FULL_URI = "http://198.51.100.7/creds" }):get()
    assert.matches("uses http with host 198%.51%.100%.7", err.message)
  end)

  it("are refreshed before they expire (real time)", function()
    meta:set { container = { expires_in = 5 } }
    local p = credentials.chain { env = cenv(), refresh_window = 3, expiry_margin = 1 }
    local c1 = assert(p:get())
    assert.equal(c1.access_key_id, p:get().access_key_id)
    assert.equal(1, meta:stats().container)
    core.sleep(3.2)
    local c2 = assert(p:get())
    assert.is_true(os.time() < c1.expiration, "the old credentials had expired before the refresh")
    assert.not_equal(c1.access_key_id, c2.access_key_id)
    assert.equal(2, meta:stats().container)
  end)
end)

describe("EC2 instance metadata (IMDSv2)", function()
  it("takes a session token, then the role and its credentials", function()
    local p = chain(imds_env())
    local c = assert(p:get())
    assert.equal("imds", c.source)
    assert.matches("^ASIAIMDS", c.access_key_id)
    assert.matches("^IMDSToken/", c.session_token)
    assert.is_true(c.expiration > os.time() + 21000)
    local reqs = meta:requests()
    assert.equal(3, #reqs)
    assert.equal("PUT", reqs[1].method)
    assert.equal("/latest/api/token", reqs[1].path)
    assert.equal("21600", reqs[1].headers["x-aws-ec2-metadata-token-ttl-seconds"])
    assert.equal("/latest/meta-data/iam/security-credentials/", reqs[2].path)
    assert.equal("/latest/meta-data/iam/security-credentials/test-role", reqs[3].path)
    local token = reqs[2].headers["x-aws-ec2-metadata-token"]
    assert.is_string(token)
    assert.equal(token, reqs[3].headers["x-aws-ec2-metadata-token"])
    local st = meta:stats()
    assert.same({ 1, 1, 1, 0 }, { st.imds_token, st.imds_list, st.imds_credentials, st.imds_rejected })
  end)

  it("is served only with a valid token (the server's side of the contract)", function()
    local status = http("GET", meta.endpoint .. "/latest/meta-data/iam/security-credentials/")
    assert.equal(401, status)
    assert.equal("401", run("curl -s -o /dev/null -w '%{http_code}' -H 'X-aws-ec2-metadata-token: forged' "
      .. shell_quote(meta.endpoint .. "/latest/meta-data/iam/security-credentials/")))
    assert.equal(2, meta:stats().imds_rejected)
  end)

  it("reuses its token and takes a new one when the old one is rejected", function()
    meta:set { imds = { expires_in = 900 } }
    local p = chain(imds_env())
    local c1 = assert(p:get())
    clock_offset = 700
    assert.not_equal(c1.access_key_id, assert(p:get()).access_key_id)
    assert.equal(1, meta:stats().imds_token)    -- the cached token was reused
    meta:revoke()                                -- the server forgets every token
    clock_offset = 1400
    assert(p:get())
    local st = meta:stats()
    assert.equal(2, st.imds_token)
    assert.equal(1, st.imds_rejected)
    assert.equal(3, st.imds_credentials)
  end)

  it("does not fall back to IMDSv1 unless asked", function()
    meta:set { imds = { token_status = 404, v1 = true } }
    local _, err = chain(imds_env()):get()
    assert.matches("instance metadata: token request PUT .* HTTP 404 %(IMDSv1 fallback is off%)", err.message)
    assert.equal(0, meta:stats().imds_credentials)
    local c = assert(chain(imds_env(), { imds_v1_fallback = true }):get())
    assert.equal("imds", c.source)
    local reqs = meta:requests()
    assert.is_nil(reqs[#reqs].headers["x-aws-ec2-metadata-token"])
    -- 403 means IMDS refuses tokens: no fallback even when allowed
    meta:set { imds = { token_status = 403 } }
    local _, err2 = chain(imds_env(), { imds_v1_fallback = true }):get()
    assert.matches("HTTP 403 %(forbidden%)", err2.message)
  end)

  it("is skipped when AWS_EC2_METADATA_DISABLED is true", function()
    local _, err = chain(imds_env { AWS_EC2_METADATA_DISABLED = "TRUE" }):get()
    assert.matches("instance metadata: disabled by AWS_EC2_METADATA_DISABLED$", err.message)
    assert.equal(0, meta:stats().imds_token)
  end)

  it("says when no role is attached", function()
    meta:set { imds = { role = "" } }
    local _, err = chain(imds_env()):get()
    assert.matches("HTTP 404 %(no IAM role attached to this instance%)", err.message)
  end)

  it("gives up after its 1 s timeout", function()
    meta:set { imds = { delay_ms = 4000 } }
    local t0 = core.monotime()
    local _, err = chain(imds_env()):get()
    local took = core.monotime() - t0
    assert.matches("instance metadata: token request PUT .* request failed", err.message)
    assert.is_true(took >= 0.9 and took < 2.5, "took " .. took .. " s")
  end)

  it("refreshes early, and keeps valid credentials when a refresh fails", function()
    meta:set { imds = { expires_in = 900 } }
    local p = chain(imds_env())
    local c1 = assert(p:get())
    clock_offset = 500                                   -- 400 s left: still fresh
    assert.equal(c1, p:get())
    assert.equal(1, meta:stats().imds_credentials)
    meta:set { imds = { credentials_status = 500 } }
    clock_offset = 700                                   -- 200 s left: refresh, which fails
    assert.equal(c1, p:get())
    assert.equal(2, meta:stats().imds_credentials)
    assert.equal(c1, p:get())                            -- backing off: no new attempt yet
    assert.equal(2, meta:stats().imds_credentials)
    clock_offset = 860                                   -- 40 s left: too close to use
    local c, err = p:get()
    assert.is_nil(c)
    assert.matches("HTTP 500", err.message)
    assert_no_secret(tostring(err), c1.secret_access_key, c1.session_token)
    meta:set { imds = { credentials_status = 200 } }
    local c3 = assert(p:get())
    assert.not_equal(c1.access_key_id, c3.access_key_id)
  end)

  it("shares one refresh among 20 tasks asking at once", function()
    local kinesis = require "kinesis"
    meta:set { imds = { delay_ms = 150, expires_in = 900 } }
    local p = chain(imds_env())
    local function ask_all()
      return kinesis.run(function()
        local tasks = {}
        for i = 1, 20 do
          tasks[i] = kinesis.spawn(function()
            local c, err = p:get()
            return c and c.access_key_id or tostring(err)
          end)
        end
        return kinesis.wait_all(tasks)
      end)
    end
    local results = ask_all()
    assert.equal(20, #results)
    for i = 1, 20 do
      assert.is_true(results[i][1])
      assert.matches("^ASIAIMDS", results[i][2])
      assert.equal(results[1][2], results[i][2])
    end
    local st = meta:stats()
    assert.equal(1, st.imds_credentials)
    assert.equal(1, st.imds_token)
    -- expired: again exactly one fetch, and all 20 get the new credentials
    clock_offset = 900
    local again = ask_all()
    assert.equal(2, meta:stats().imds_credentials)
    for i = 1, 20 do
      assert.not_equal(results[1][2], again[i][2])
      assert.equal(again[1][2], again[i][2])
    end
    -- in the refresh window: one refresh, the other tasks keep the valid ones
    clock_offset = 700
    local early = ask_all()
    assert.equal(3, meta:stats().imds_credentials)
    local old, new = 0, 0
    for i = 1, 20 do
      if early[i][2] == again[1][2] then old = old + 1 else new = new + 1 end
    end
    assert.equal(20, old + new)
    assert.is_true(new >= 1 and old >= 1, ("old %d, new %d"):format(old, new))
  end)
end)

---------------------------------------------------------------- retries

describe("retries of STS, IMDS and container calls", function()
  local retry = require "kinesis.retry"
  local token_file
  before_each(function() token_file = write(tmp .. "/retry/token", "test-web-identity-token") end)

  -- a kinesis.retry policy whose delays are recorded (and kept short)
  local function recorded(cfg)
    local p = assert(retry.new(merged({ mode = "standard", max_attempts = 3, base = 0.02, max_backoff = 1 }, cfg)))
    local delay, seen = p.delay, {}
    p.delay = function(self, n)
      local d = delay(self, n)
      seen[#seen + 1] = { n = n, d = d }
      return d
    end
    return p, seen
  end

  local function web_env()
    return env { AWS_WEB_IDENTITY_TOKEN_FILE = token_file, AWS_ROLE_ARN = "arn:aws:iam::123456789012:role/web" }
  end

  it("STS: two 500s, then an answer on the third attempt, after the policy's jittered delays", function()
    local policy, seen = recorded()
    meta:set { fail_next = { sts = 2 } }
    -- the same seed gives the delays full jitter must draw: random() * base * 2^(n-1)
    math.randomseed(20261203)
    local expect = { math.random() * 0.02, math.random() * 0.04 }
    math.randomseed(20261203)
    local events = {}
    local c = assert(chain(web_env(), { retry = { sts = policy },
                                        log = function(ev) events[#events + 1] = ev end }):get())
    assert.equal("web_identity", c.source)
    local st = meta:stats()
    assert.equal(2, st.injected_failures)
    -- each retry is a log event with the delay the policy drew
    assert.equal(2, #events)
    for i = 1, 2 do
      assert.same({ event = "retry", op = "AssumeRoleWithWebIdentity", attempt = i, reason = "InternalFailure",
                    delay = seen[i].d }, events[i])
    end
    assert.equal(1, st.assume_role_web_identity)
    assert.equal(3, #meta:requests())
    assert.equal(2, #seen)
    for i = 1, 2 do
      assert.equal(i, seen[i].n)
      assert.is_true(seen[i].d >= 0 and seen[i].d <= 0.02 * 2 ^ (i - 1), "delay " .. seen[i].d)
      assert.near(expect[i], seen[i].d, 1e-12)
    end
    -- the retry quota paid for both retries and got the last one back on success
    assert.equal(retry.QUOTA_MAX - 2 * retry.RETRY_COST + retry.RETRY_COST, policy.quota)
  end)

  it("STS: gives up after max_attempts, and not at all when the quota is spent", function()
    local policy = recorded { max_attempts = 2 }
    meta:set { fail_next = { sts = 5 } }
    local _, err = chain(web_env(), { retry = { sts = policy } }):get()
    assert.matches("STS AssumeRoleWithWebIdentity failed: InternalFailure %(HTTP 500%)", err.message)
    assert.equal(2, meta:stats().injected_failures)
    meta:reset()
    local broke = recorded()
    broke.quota = 0
    local _, err2 = chain(web_env(), { retry = { sts = broke } }):get()
    assert.matches("InternalFailure", err2.message)
    assert.equal(1, meta:stats().injected_failures)
  end)

  it("STS: stops when the next delay would pass the total time", function()
    local policy = recorded()
    policy.delay = function() return 5 end
    policy.total = 1   -- the chain's retry option: a policy, or its config, with a total budget
    meta:set { fail_next = { sts = 2 } }
    local _, err = chain(web_env(), { retry = { sts = policy } }):get()
    assert.matches("InternalFailure", err.message)
    assert.equal(1, meta:stats().injected_failures)
    -- the default budget for STS is 30 s: one 5 s delay fits, then a success
    policy.total = nil
    meta:reset()
    meta:set { fail_next = { sts = 1 } }
    local slept = {}
    local runtime = require "kinesis.runtime"
    local real_sleep = runtime.sleep
    runtime.sleep = function(d) slept[#slept + 1] = d end
    local ok, c = pcall(function() return chain(web_env(), { retry = { sts = policy } }):get() end)
    runtime.sleep = real_sleep
    assert(ok, c)
    assert.is_truthy(c)
    assert.same({ 5 }, slept)   -- the runtime's sleep, with the policy's delay
  end)

  it("IMDS: AWS_METADATA_SERVICE_NUM_ATTEMPTS attempts through the policy (one by default)", function()
    local policy, seen = recorded()
    meta:set { fail_next = { imds = 2 } }
    local c = assert(chain(imds_env { AWS_METADATA_SERVICE_NUM_ATTEMPTS = "3" }, { retry = { imds = policy } }):get())
    assert.equal("imds", c.source)
    local st = meta:stats()
    assert.equal(2, st.injected_failures)
    assert.equal(1, st.imds_token)
    assert.equal(2, #seen)
    for i = 1, 2 do assert.is_true(seen[i].d >= 0 and seen[i].d <= 0.02 * 2 ^ (i - 1)) end
    meta:reset()
    meta:set { fail_next = { imds = 1 } }
    local _, err = chain(imds_env()):get()
    assert.matches("token request PUT .* HTTP 500", err.message)
    assert.equal(1, meta:stats().injected_failures)
    assert.equal(0, meta:stats().imds_token)
  end)

  it("refuses a retry option that names no kind or breaks a rule, at construction", function()
    assert.has_error(function() credentials.chain { retry = { s3 = {} } } end,
      "kinesis.credentials.chain: retry.s3 is not one of sts, sso, imds, container")
    assert.has_error(function() credentials.chain { retry = { sts = { max_attempts = 0 } } } end,
      "kinesis.credentials.chain: retry.sts: retry.max_attempts must be a positive integer")
    assert.has_error(function() credentials.chain { retry = { imds = 3 } } end,
      "kinesis.credentials.chain: retry.imds must be a table (a policy or its settings)")
  end)

  it("container: a 500 is retried once by default", function()
    meta:set { fail_next = { container = 1 } }
    local c = assert(chain(env { AWS_CONTAINER_CREDENTIALS_FULL_URI = meta.endpoint .. "/v2/credentials/test-id" }):get())
    assert.equal("container", c.source)
    assert.equal(1, meta:stats().injected_failures)
    assert.equal(1, meta:stats().container)
    assert.equal(2, #meta:requests())
  end)
end)

---------------------------------------------------------------- nginx

describe("inside nginx (light threads, cosockets)", function()
  local NGINX = os.getenv("NGINX") or "/usr/sbin/nginx"
  local MODULES = os.getenv("NGINX_MODULES") or "/usr/lib/nginx/modules"
  local prefix, port, pid

  -- one request runs two rounds of 20 light threads asking one chain at
  -- once: cold, then past expiration; one refresh a round, the others
  -- parked on the runtime until it ends
  local CONF = [[
load_module MODULES/ndk_http_module.so;
load_module MODULES/ngx_http_lua_module.so;
worker_processes 1;
error_log PREFIX/error.log info;
pid PREFIX/nginx.pid;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path PREFIX/tmp;
  lua_package_path "ROOT/lua/?.lua;ROOT/lua/?/init.lua;;";
  lua_package_cpath "ROOT/build/5.1/?.so;/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;";
  server {
    listen 127.0.0.1:PORT;
    location = /ready { return 204; }
    location = /refresh {
      content_by_lua_block {
        local kinesis = require "kinesis"
        local cjson = require "cjson"
        local offset = 0
        local p = require("kinesis.credentials").chain {
          -- a 5 s timeout (not IMDS's 1 s): on a loaded machine a slow
          -- answer would be retried, and the token counted twice
          env = { HOME = "/nonexistent", AWS_EC2_METADATA_SERVICE_ENDPOINT = ngx.var.arg_meta,
                  AWS_METADATA_SERVICE_TIMEOUT = "5" },
          clock = function() return ngx.time() + offset end,
          transport_factory = function(topts) return require("kinesis.transport.cosocket").new(topts) end,
        }
        local function round()
          return kinesis.run(function()
            local tasks = {}
            for i = 1, 20 do
              tasks[i] = kinesis.spawn(function()
                local c, err = p:get()
                return c and c.access_key_id or tostring(err)
              end)
            end
            local ids = {}
            for i, r in ipairs(kinesis.wait_all(tasks)) do ids[i] = r[2] end
            return ids
          end)
        end
        local first = round()
        offset = 900
        local second = round()
        ngx.say(cjson.encode { first = first, second = second, loads = p.loads })
      }
    }
  }
}
]]

  lazy_setup(function()
    assert(read(MODULES .. "/ngx_http_lua_module.so"), "ngx_http_lua_module.so not found in " .. MODULES)
    prefix = mkdtemp()
    os.execute("mkdir -p " .. shell_quote(prefix .. "/tmp"))
    port = tonumber((run([[node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})']]):match("%d+")))
    local conf = CONF:gsub("MODULES", MODULES):gsub("PREFIX", prefix):gsub("ROOT", ROOT):gsub("PORT", tostring(port))
    write(prefix .. "/nginx.conf", conf)
    local out = run(shell_quote(NGINX) .. " -p " .. shell_quote(prefix) .. " -c " .. shell_quote(prefix .. "/nginx.conf")
      .. " -e " .. shell_quote(prefix .. "/error.log") .. " 2>&1; echo rc=$?")
    assert(out:match("rc=0"), "nginx did not start: " .. out)
    for _ = 1, 50 do
      pid = tonumber(read(prefix .. "/nginx.pid") or "")
      if pid then break end
      core.sleep(0.1)
    end
    assert(pid, "nginx wrote no pid file")
    for _ = 1, 50 do
      if run("curl -sf -o /dev/null --noproxy '*' --max-time 2 http://127.0.0.1:" .. port .. "/ready; echo $?")
         :match("^0") then return end
      core.sleep(0.1)
    end
    error("nginx does not answer: " .. (read(prefix .. "/error.log") or ""))
  end)

  lazy_teardown(function()
    if pid then
      os.execute("kill -QUIT " .. pid .. " 2>/dev/null")
      for _ = 1, 30 do
        if not read("/proc/" .. pid .. "/stat") then break end
        core.sleep(0.1)
      end
      os.execute("kill -TERM " .. pid .. " 2>/dev/null")   -- a request still held: stop at once
    end
    if prefix and prefix:match("/spec/%.tmp/creds%.") then os.execute("rm -rf " .. shell_quote(prefix)) end
  end)

  it("shares one refresh among 20 light threads, the others parked until it ends", function()
    meta:set { imds = { delay_ms = 150, expires_in = 900 } }
    -- a parked thread nobody wakes would hold the request for 30 s
    local out = run("curl -sS --noproxy '*' --max-time 10 " .. shell_quote(("http://127.0.0.1:%d/refresh?meta=%s")
      :format(port, meta.endpoint)) .. " 2>&1")
    local ok, body = pcall(cjson.decode, out)
    assert(ok and type(body) == "table", "nginx answered: " .. out .. "\n" .. (read(prefix .. "/error.log") or ""))
    assert.equal(20, #body.first)
    assert.equal(20, #body.second)
    for i = 1, 20 do
      assert.matches("^ASIAIMDS", body.first[i])
      assert.equal(body.first[1], body.first[i])
      assert.equal(body.second[1], body.second[i])
    end
    assert.not_equal(body.first[1], body.second[1])
    assert.equal(2, body.loads)
    local st = meta:stats()
    -- every counter in the message: a second token has been seen once in
    -- a full-suite run and not reproduced since
    assert.equal(2, st.imds_credentials, cjson.encode(st))
    assert.equal(1, st.imds_token, cjson.encode(st) .. "\n" .. (read(prefix .. "/error.log") or ""):sub(-3000))
  end)
end)

---------------------------------------------------------------- the chain

describe("the chain", function()
  local home, token_file

  lazy_setup(function()
    home = tmp .. "/order-home"
    write(home .. "/.aws/credentials", "[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = file-secret\n")
    token_file = write(tmp .. "/order-token", "test-web-identity-token")
  end)

  it("tries the sources in the SDKs' order", function()
    local e = {
      HOME = home,
      AWS_ACCESS_KEY_ID = "AKIDENV", AWS_SECRET_ACCESS_KEY = "env-secret",
      AWS_WEB_IDENTITY_TOKEN_FILE = token_file, AWS_ROLE_ARN = "arn:aws:iam::123456789012:role/web",
      AWS_CONTAINER_CREDENTIALS_FULL_URI = meta.endpoint .. "/v2/credentials/test-id",
      AWS_EC2_METADATA_SERVICE_ENDPOINT = meta.endpoint,
    }
    local function source(opts)
      meta:reset()
      local c, err = chain(e, opts):get()
      assert(c, err)
      return c.source, meta:stats()
    end
    local s, st = source { credentials = { access_key_id = "AKIDEXPLICIT", secret_access_key = "x" } }
    assert.equal("explicit", s)
    s, st = source()
    assert.equal("environment", s)
    assert.equal(0, st.assume_role_web_identity + st.container + st.imds_token)
    e.AWS_ACCESS_KEY_ID, e.AWS_SECRET_ACCESS_KEY = nil, nil
    s, st = source()
    assert.equal("web_identity", s)
    assert.equal(1, st.assume_role_web_identity)
    assert.equal(0, st.container + st.imds_token)
    e.AWS_WEB_IDENTITY_TOKEN_FILE = nil
    s, st = source()
    assert.equal("profile", s)
    assert.equal(0, st.assume_role_web_identity + st.container + st.imds_token)
    e.HOME = empty_home
    s, st = source()
    assert.equal("container", s)
    assert.equal(1, st.container)
    assert.equal(0, st.imds_token)
    e.AWS_CONTAINER_CREDENTIALS_FULL_URI = nil
    s, st = source()
    assert.equal("imds", s)
    assert.equal(1, st.imds_credentials)
  end)

  it("says which sources were tried and why each failed, in order", function()
    local p = chain(env())
    local c, err = p:get()
    assert.is_nil(c)
    assert.equal("validation", err.kind)
    assert.equal("CredentialsError", err.code)
    assert.equal("no credentials: explicit: not set; environment: AWS_ACCESS_KEY_ID not set; "
      .. "web identity: AWS_WEB_IDENTITY_TOKEN_FILE not set; "
      .. "shared files: no " .. empty_home .. "/.aws/credentials or " .. empty_home .. "/.aws/config; "
      .. "container: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and _FULL_URI not set; "
      .. "instance metadata: disabled by AWS_EC2_METADATA_DISABLED", err.message)
    assert.is_true(in_order(tostring(err), { "explicit:", "environment:", "web identity:", "shared files:",
                                             "container:", "instance metadata:" }))
    assert.equal(6, #err.providers)
    assert.equal("shared files", err.providers[4].name)
  end)

  it("stops at a source that is configured but fails", function()
    meta:set { container = { token = "right" } }
    local _, err = chain(imds_env { AWS_CONTAINER_CREDENTIALS_FULL_URI = meta.endpoint .. "/v2/credentials/test-id",
                                    AWS_CONTAINER_AUTHORIZATION_TOKEN = "wrong" }):get()
    assert.matches("container: GET .* HTTP 403.*%[container is configured but failed; later sources were not tried%]$",
                   err.message)
    assert.is_nil(err.message:find("instance metadata:", 1, true))
    assert.equal(0, meta:stats().imds_token)
  end)

  it("uses only the explicit credentials when given, table, function or provider object", function()
    local e = env { AWS_ACCESS_KEY_ID = "AKIDENV", AWS_SECRET_ACCESS_KEY = "env-secret" }
    local c = assert(chain(e, { credentials = { access_key_id = "AKIDX", secret_access_key = "sx",
                                                session_token = "tx" } }):get())
    assert.equal("explicit", c.source)
    assert.equal("tx", c.session_token)
    local calls = 0
    local fn = function()
      calls = calls + 1
      return { access_key_id = "AKIDFN" .. calls, secret_access_key = "sfn", expiration = os.time() + 1000 }
    end
    local p = chain(e, { credentials = fn })
    assert.equal("AKIDFN1", p:get().access_key_id)
    assert.equal("AKIDFN1", p:get().access_key_id)
    clock_offset = 800      -- within the refresh window of the function's expiration
    assert.equal("AKIDFN2", p:get().access_key_id)
    assert.equal("custom", p:get().source)
    local inner = chain(e)
    assert.equal("environment", inner:get().source)
    assert.equal("custom", assert(chain(env(), { credentials = inner }):get()).source)
    local _, err = chain(e, { credentials = { access_key_id = "AKIDX" } }):get()
    assert.equal("no credentials: explicit: secret_access_key is missing "
      .. "[explicit is configured but failed; later sources were not tried]", err.message)
    local _, err2 = chain(e, { credentials = function() return nil, "vault is sealed" end }):get()
    assert.matches("^no credentials: explicit: custom provider: vault is sealed %[", err2.message)
    local _, err3 = chain(e, { credentials = function() error("boom") end }):get()
    assert.matches("^no credentials: explicit: custom provider raised: .*boom", err3.message)
    assert.has_error(function() credentials.chain { credentials = "AKID:secret" } end)
  end)

  it("reads nothing before the first get()", function()
    local reads = {}
    local real_getenv = os.getenv
    os.getenv = function(name) reads[#reads + 1] = name; return real_getenv(name) end
    package.loaded["kinesis.credentials"] = nil
    local ok, err = pcall(function()
      local fresh = require "kinesis.credentials"
      fresh.chain { region = "us-east-1" }
    end)
    os.getenv = real_getenv
    package.loaded["kinesis.credentials"] = credentials
    assert(ok, err)
    assert.same({}, reads)
    local asked = {}
    local p = credentials.chain { env = function(name)
      asked[#asked + 1] = name
      return ({ AWS_ACCESS_KEY_ID = "A", AWS_SECRET_ACCESS_KEY = "S" })[name]
    end }
    assert.same({}, asked)
    assert(p:get())
    assert.is_true(#asked > 0)
  end)
end)

describe("no secrets in errors, logs or tostring", function()
  it("keeps credentials out of tostring", function()
    local p = chain(env { AWS_ACCESS_KEY_ID = "AKIDVISIBLE1234", AWS_SECRET_ACCESS_KEY = "the-secret-key-value",
                          AWS_SESSION_TOKEN = "the-session-token-value" })
    assert.equal("kinesis.credentials.chain(not loaded)", tostring(p))
    local c = assert(p:get())
    for _, s in ipairs { tostring(c), tostring(p) } do
      assert_no_secret(s, "the-secret-key-value", "the-session-token-value", "AKIDVISIBLE1234")
    end
    assert.matches("1234", tostring(c))   -- the key id's last 4 characters identify it
    assert.equal("kinesis.credentials.chain(environment)", tostring(p))
  end)

  it("formats a fractional expiration from a custom provider", function()
    local p = chain(env(), { credentials = function()
      return { access_key_id = "AKIDFRACTION", secret_access_key = "s", expiration = os.time() + 5000.5 }
    end })
    local c = assert(p:get())
    assert.matches("expires %d+%)$", tostring(c))
    assert.matches("^kinesis%.credentials%.chain%(custom, expires in %d+ s%)$", tostring(p))
  end)

  it("redacts every secret the chain has seen from later errors", function()
    local n = 0
    local p = chain(env(), { credentials = function()
      n = n + 1
      if n == 1 then
        return { access_key_id = "AKIDONE", secret_access_key = "first-secret-value",
                 session_token = "first-token-value", expiration = os.time() + 100 }
      end
      error("refresh failed; stale keys were first-secret-value / first-token-value")
    end })
    assert(p:get())
    clock_offset = 100
    local _, err = p:get()
    assert.matches("stale keys were <redacted> / <redacted>", err.message)
    assert_no_secret(tostring(err), "first-secret-value", "first-token-value")
  end)

  it("never prints", function()
    local printed = {}
    local real_print, real_write = print, io.write
    print = function(...) printed[#printed + 1] = table.concat({ ... }, " ") end
    io.write = function(...) printed[#printed + 1] = table.concat({ ... }) end
    local ok, err = pcall(function()
      chain(env { AWS_SECRET_ACCESS_KEY = "printed-secret" }):get()
      chain(env { AWS_ACCESS_KEY_ID = "A", AWS_SECRET_ACCESS_KEY = "printed-secret" }):get()
    end)
    print, io.write = real_print, real_write
    assert(ok, err)
    assert.same({}, printed)
  end)
end)

---------------------------------------------------------------- real processes

describe("in a real process environment", function()
  local script
  lazy_setup(function()
    script = write(tmp .. "/child.lua", [[
local cjson = require "cjson"
local credentials = require "kinesis.credentials"
local p = credentials.chain(cjson.decode(arg[1] or "{}"))
local c, err = p:get()
local out
if c then
  out = { ok = true, access_key_id = c.access_key_id, secret_access_key = c.secret_access_key,
          session_token = c.session_token or cjson.null, source = c.source,
          expiration = c.expiration or cjson.null, profile = c.profile or cjson.null,
          tostring = tostring(p) }
else
  out = { ok = false, message = err.message, tostring = tostring(err) }
end
io.write(cjson.encode(out))
]])
  end)

  local function child(vars, opts, lua)
    local parts = { "env -i", "PATH=" .. shell_quote(os.getenv("PATH")) }
    local abi = lua == "luajit" and "5.1" or "5.4"
    parts[#parts + 1] = "LUA_PATH=" .. shell_quote(ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;")
    parts[#parts + 1] = "LUA_CPATH=" .. shell_quote(ROOT .. "/build/" .. abi .. "/?.so;;")
    for k, v in pairs(vars) do parts[#parts + 1] = k .. "=" .. shell_quote(v) end
    parts[#parts + 1] = lua or "lua5.4"
    parts[#parts + 1] = shell_quote(script)
    parts[#parts + 1] = shell_quote(cjson.encode(opts or {}))
    local out = run(table.concat(parts, " ") .. " 2>&1")
    local ok, doc = pcall(cjson.decode, out)
    assert(ok, "child said: " .. out)
    return doc
  end

  it("reads the environment variables", function()
    local r = child { HOME = empty_home, AWS_ACCESS_KEY_ID = "AKIDREALENV", AWS_SECRET_ACCESS_KEY = "real-env-secret",
                      AWS_SESSION_TOKEN = "real-env-token" }
    assert.is_true(r.ok)
    assert.equal("environment", r.source)
    assert.equal("AKIDREALENV", r.access_key_id)
    assert.equal("real-env-token", r.session_token)
    assert_no_secret(r.tostring, "real-env-secret", "real-env-token")
  end)

  it("reads ~/.aws from HOME", function()
    local h = tmp .. "/real-home"
    write(h .. "/.aws/credentials", "[work]\naws_access_key_id = AKIDREALFILE\naws_secret_access_key = real-file-secret\n")
    write(h .. "/.aws/config", "[profile work]\nregion = eu-north-1\n")
    local r = child { HOME = h, AWS_PROFILE = "work" }
    assert.is_true(r.ok, r.message)
    assert.equal("profile", r.source)
    assert.equal("work", r.profile)
    assert.equal("real-file-secret", r.secret_access_key)
  end)

  it("exchanges a web identity token at the STS endpoint from AWS_ENDPOINT_URL_STS", function()
    local tok = write(tmp .. "/real-token", "test-web-identity-token")
    local r = child { HOME = empty_home, AWS_WEB_IDENTITY_TOKEN_FILE = tok, AWS_REGION = "eu-west-3",
      AWS_ROLE_ARN = "arn:aws:iam::123456789012:role/real", AWS_ROLE_SESSION_NAME = "real-session",
      AWS_ENDPOINT_URL_STS = meta.endpoint }
    assert.is_true(r.ok, r.message)
    assert.equal("web_identity", r.source)
    assert.equal("real-session", form(meta:requests()[1].body).RoleSessionName)
  end)

  it("asks the container endpoint", function()
    meta:set { container = { token = "real-container-token" } }
    local r = child { HOME = empty_home, AWS_CONTAINER_CREDENTIALS_FULL_URI = meta.endpoint .. "/v2/credentials/test-id",
                      AWS_CONTAINER_AUTHORIZATION_TOKEN = "real-container-token" }
    assert.is_true(r.ok, r.message)
    assert.equal("container", r.source)
  end)

  it("asks instance metadata, and reports every source when nothing works", function()
    local r = child { HOME = empty_home, AWS_EC2_METADATA_SERVICE_ENDPOINT = meta.endpoint }
    assert.is_true(r.ok, r.message)
    assert.equal("imds", r.source)
    local none = child { HOME = empty_home, AWS_EC2_METADATA_DISABLED = "true" }
    assert.is_false(none.ok)
    assert.matches("^no credentials: explicit: not set; environment: AWS_ACCESS_KEY_ID not set;", none.message)
    assert.matches("kinesis: validation error CredentialsError: no credentials", none.tostring)
  end)

  it("runs the same under LuaJIT (IMDS, then a signed AssumeRole)", function()
    -- make test builds the LuaJIT modules first: their absence is a failure
    assert.is_true(run("command -v luajit") ~= "", "luajit is not installed")
    assert.truthy(read(ROOT .. "/build/5.1/kinesis/core.so"), "build/5.1 is missing: run make LUA=luajit")
    local r = child({ HOME = empty_home, AWS_EC2_METADATA_SERVICE_ENDPOINT = meta.endpoint }, nil, "luajit")
    assert.is_true(r.ok, r.message)
    assert.equal("imds", r.source)
    local h = tmp .. "/jit-home"
    write(h .. "/.aws/config", "[default]\nrole_arn = arn:aws:iam::123456789012:role/jit\nsource_profile = base\n"
      .. "[profile base]\naws_access_key_id = AKIDSTSTEST\naws_secret_access_key = sts-test-secret-key\n")
    meta:reset()
    local r2 = child({ HOME = h, AWS_DEFAULT_REGION = "us-west-1" }, { sts_endpoint = meta.endpoint }, "luajit")
    assert.is_true(r2.ok, r2.message)
    assert.equal("assume_role", r2.source)
    assert.matches("/us%-west%-1/sts/aws4_request", meta:requests()[1].headers.authorization)
    assert.equal(0, meta:stats().sts_rejected)
  end)
end)
