-- IAM Identity Center (SSO) credentials (kinesis.credentials.sso): profiles
-- in a temporary HOME, token cache files where `aws sso login` leaves them,
-- and spec/support/metadata.js standing in for both the SSO portal
-- (GetRoleCredentials) and SSO OIDC (CreateToken) on loopback, reached
-- through AWS_ENDPOINT_URL_SSO / AWS_ENDPOINT_URL_SSO_OIDC / AWS_ENDPOINT_URL.
-- Cache file names are checked against sha1sum(1), not the library's SHA-1.
local credentials = require "kinesis.credentials"
local sso = require "kinesis.credentials.sso"
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

local function write(path, text)
  os.execute("mkdir -p " .. shell_quote(path:match("^(.*)/[^/]+$")))
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- SHA-1 hex by the coreutils tool, independent of kinesis.core
local function sha1sum(s)
  return (run("printf '%s' " .. shell_quote(s) .. " | sha1sum"):match("^(%x+)"))
end

local function iso(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", t)
end

local function http(method, url, body)
  local cmd = "curl -sS --noproxy '*' --max-time 10 -X " .. method .. " -w '\\n%{http_code}' "
  if body then cmd = cmd .. "-H 'Content-Type: application/json' --data-binary " .. shell_quote(body) .. " " end
  local out = run(cmd .. shell_quote(url) .. " 2>&1")
  local text, code = out:match("^(.*)\n(%d%d%d)$")
  assert(code, "control call failed: " .. out)
  return tonumber(code), text
end

local meta = {}
function meta.start()
  local out = run("node " .. shell_quote(ROOT .. "/spec/support/metadata.js") .. " "
                  .. shell_quote(cjson.encode { parent = PARENT_PID }) .. " 2>&1")
  local ok, info = pcall(cjson.decode, out:match("([^\n]*)\n?$"))
  assert(ok and type(info) == "table" and not info.error, "metadata.js did not start: " .. out)
  meta.pid, meta.port = math.floor(info.pid), math.floor(info.port)
  meta.endpoint = "http://127.0.0.1:" .. meta.port
end
function meta.control(method, what, value)
  local status, text = http(method, meta.endpoint .. "/__meta/" .. what,
                            value ~= nil and cjson.encode(value) or nil)
  assert(status == 200, "metadata control " .. what .. " answered " .. status .. ": " .. text)
  return cjson.decode(text)
end
function meta.set(cfg) return meta.control("POST", "config", cfg) end
function meta.stats() return meta.control("GET", "stats") end
function meta.requests() return meta.control("GET", "requests") end
function meta.config() return meta.control("GET", "config") end
function meta.stop()
  os.execute("kill -TERM " .. meta.pid .. " 2>/dev/null")
  for _ = 1, 50 do
    local stat = read("/proc/" .. meta.pid .. "/stat")
    if not stat or stat:match("^%d+ %b() (%a)") == "Z" then return end
    core.sleep(0.05)
  end
  os.execute("kill -KILL " .. meta.pid .. " 2>/dev/null")
end

local function assert_no_secret(text, ...)
  text = tostring(text)
  for i = 1, select("#", ...) do
    local s = select(i, ...)
    assert.is_nil(text:find(s, 1, true), "secret leaked into: " .. text)
  end
end

---------------------------------------------------------------- fixtures

local START_URL = "https://corp.awsapps.com/start"
local LEGACY_URL = "https://legacy.awsapps.com/start#/"
local ACCESS = "ssoAccessToken/initial-0123456789"
local REFRESH = "ssoRefreshToken/initial-abcdef"
local CLIENT_SECRET = "ssoClientSecret/initial-secret-value"

local tmp, home
local clock_offset = 0
local function clock() return os.time() + clock_offset end

lazy_setup(function()
  meta.start()
  os.execute("mkdir -p " .. shell_quote(ROOT .. "/spec/.tmp"))
  tmp = run("mktemp -d " .. shell_quote(ROOT .. "/spec/.tmp/sso.XXXXXX")):gsub("%s+$", "")
  home = tmp .. "/home"
  write(home .. "/.aws/config", table.concat({
    "[profile dev]",
    "sso_session = corp",
    "sso_account_id = 123456789012",
    "sso_role_name = ReadOnly",
    "region = eu-west-1",
    "[sso-session corp]",
    "sso_start_url = " .. START_URL,
    "sso_region = eu-west-1",
    "sso_registration_scopes = sso:account:access",
    "[profile legacy]",
    "sso_start_url = " .. LEGACY_URL,
    "sso_region = us-east-2",
    "sso_account_id = 123456789012",
    "sso_role_name = ReadOnly",
    "[profile bad-account]",
    "sso_session = corp",
    "sso_account_id = 1234",
    "sso_role_name = ReadOnly",
    "[profile lost-session]",
    "sso_session = nowhere",
    "sso_account_id = 123456789012",
    "sso_role_name = ReadOnly",
  }, "\n") .. "\n")
end)

lazy_teardown(function()
  if meta.pid then meta.stop() end
  if tmp and tmp:match("/spec/%.tmp/sso%.") then os.execute("rm -rf " .. shell_quote(tmp)) end
end)

local function cache_file(key)
  return home .. "/.aws/sso/cache/" .. sha1sum(key) .. ".json"
end

-- Writes the cache entry for `key`: a token expiring in `ttl` seconds,
-- with a refresh token and a client registration unless told otherwise.
local function cache(key, ttl, extra)
  local doc = {
    startUrl = key == "corp" and START_URL or key, region = "eu-west-1", accessToken = ACCESS,
    expiresAt = iso(os.time() + ttl), clientId = "test-client-id", clientSecret = CLIENT_SECRET,
    registrationExpiresAt = iso(os.time() + 86400 * 30), refreshToken = REFRESH,
  }
  for k, v in pairs(extra or {}) do doc[k] = v end   -- false: leave the field out
  for k, v in pairs(doc) do if v == false then doc[k] = nil end end
  return write(cache_file(key), cjson.encode(doc))
end

before_each(function()
  clock_offset = 0
  os.execute("rm -rf " .. shell_quote(home .. "/.aws/sso"))
  meta.set {
    sso = { access_tokens = { ACCESS }, account_id = "123456789012", role_name = "ReadOnly", expires_in = 3600,
            echo = false },
    oidc = { client_id = "test-client-id", client_secret = CLIENT_SECRET, refresh_token = REFRESH,
             expires_in = 28800, rotate = true, echo = false },
    fail_next = { sts = 0, imds = 0, container = 0, sso = 0, oidc = 0 },
  }
  meta.control("POST", "reset", {})
end)

local function env(extra)
  local e = { HOME = home, AWS_EC2_METADATA_DISABLED = "true",
              AWS_ENDPOINT_URL_SSO = meta.endpoint, AWS_ENDPOINT_URL_SSO_OIDC = meta.endpoint }
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

local function chain(profile, e, opts)
  local o = { env = e or env(), profile = profile, clock = clock }
  for k, v in pairs(opts or {}) do o[k] = v end
  return credentials.chain(o)
end

---------------------------------------------------------------- specs

describe("SSO credentials", function()
  it("name the token cache file by the SHA-1 hex of the session name, or of the start URL", function()
    assert.equal(sha1sum("corp"), core.sha1_hex("corp"))
    assert.equal(home .. "/.aws/sso/cache/" .. sha1sum("corp") .. ".json", sso.cache_path(home, "corp"))
    assert.equal(home .. "/.aws/sso/cache/" .. sha1sum(LEGACY_URL) .. ".json", sso.cache_path(home, LEGACY_URL))
    -- the public example: SHA-1 of "abc"
    assert.equal("a9993e364706816aba3e25717850c26c9cd0d89d", core.sha1_hex("abc"))
    -- an sso-session profile does not read the file named after its start URL
    cache(START_URL, 3600)
    local _, err = chain("dev"):get()
    assert.truthy(err.message:find("no cached SSO token (" .. cache_file("corp") .. ")", 1, true), err.message)
    assert.equal(0, #meta.requests())
  end)

  it("use a fresh cached token for GetRoleCredentials", function()
    local path = cache("corp", 3600)
    local before = read(path)
    local t0 = os.time()
    local c = assert(chain("dev"):get())
    assert.equal("sso", c.source)
    assert.equal("dev", c.profile)
    assert.matches("^ASIASSO%d+$", c.access_key_id)
    assert.matches("^SSOToken/", c.session_token)
    -- expiration comes in epoch milliseconds
    assert.is_true(c.expiration >= t0 + 3599 and c.expiration <= os.time() + 3601, tostring(c.expiration))
    local reqs = meta.requests()
    assert.equal(1, #reqs)
    assert.equal("GET", reqs[1].method)
    assert.equal("/federation/credentials?account_id=123456789012&role_name=ReadOnly", reqs[1].path)
    assert.equal(ACCESS, reqs[1].headers["x-amz-sso_bearer_token"])
    assert.equal(0, meta.stats().oidc_create_token)
    assert.equal(before, read(path))   -- nothing refreshed, nothing written
  end)

  it("refresh a token near expiry with CreateToken, rewrite the cache file and use the new token", function()
    local path = cache("corp", 120)   -- inside the 5-minute window
    -- AWS_ENDPOINT_URL serves both services when no per-service variable is set
    local events = {}
    local c = assert(chain("dev", env { AWS_ENDPOINT_URL_SSO = false, AWS_ENDPOINT_URL_SSO_OIDC = false,
                                        AWS_ENDPOINT_URL = meta.endpoint },
                           { log = function(ev) events[#events + 1] = ev end }):get())
    assert.equal("sso", c.source)
    assert.equal(1, #events)
    assert.equal("sso_token_refreshed", events[1].event)
    assert.equal("dev", events[1].profile)
    local reqs = meta.requests()
    assert.equal(2, #reqs)
    assert.equal("POST", reqs[1].method)
    assert.equal("/token", reqs[1].path)
    assert.same({ clientId = "test-client-id", clientSecret = CLIENT_SECRET, grantType = "refresh_token",
                  refreshToken = REFRESH }, cjson.decode(reqs[1].body))
    local doc = cjson.decode(read(path))
    assert.not_equal(ACCESS, doc.accessToken)
    assert.matches("^ssoAccess%d+/", doc.accessToken)
    assert.matches("^ssoRefresh%d+/", doc.refreshToken)         -- rotated by the server
    assert.equal(meta.config().oidc.refresh_token, doc.refreshToken)
    local exp = require("kinesis.credentials.sts").parse_time(doc.expiresAt)
    assert.is_true(exp >= os.time() + 28790 and exp <= os.time() + 28810, doc.expiresAt)
    -- what the refresh does not touch is kept
    assert.equal("test-client-id", doc.clientId)
    assert.equal(CLIENT_SECRET, doc.clientSecret)
    assert.equal(START_URL, doc.startUrl)
    -- the portal got the new token
    assert.equal(doc.accessToken, reqs[2].headers["x-amz-sso_bearer_token"])
    -- replaced by rename: no temporary file left, and owner-only like the CLI's
    assert.equal(sha1sum("corp") .. ".json\n", run("ls " .. shell_quote(home .. "/.aws/sso/cache")))
    assert.equal("600", run("stat -c %a " .. shell_quote(path)):gsub("%s+", ""))
    -- a second process reads the refreshed file and needs no refresh
    assert(chain("dev"):get())
    assert.equal(1, meta.stats().oidc_create_token)
  end)

  it("say to run aws sso login for an expired token that cannot be refreshed", function()
    cache("corp", -60, { refreshToken = false })
    local c, err = chain("dev"):get()
    assert.is_nil(c)
    assert.equal("CredentialsError", err.code)
    assert.matches('the SSO token has expired; run "aws sso login %-%-profile dev" '
      .. '%(or "aws sso login %-%-sso%-session corp"%)', err.message)
    assert.equal(0, #meta.requests())
    -- an expired client registration is no use for a refresh either
    cache("corp", -60, { registrationExpiresAt = iso(os.time() - 1) })
    local _, err2 = chain("dev"):get()
    assert.matches('aws sso login %-%-profile dev', err2.message)
    assert.equal(0, #meta.requests())
    -- no cache file at all
    os.execute("rm -rf " .. shell_quote(home .. "/.aws/sso"))
    local _, err3 = chain("dev"):get()
    assert.matches('no cached SSO token .*aws sso login %-%-profile dev', err3.message)
  end)

  it("report a refused refresh of an expired token with the login advice", function()
    cache("corp", -60)
    meta.set { oidc = { refresh_token = "some-other-refresh-token" } }
    local _, err = chain("dev"):get()
    assert.matches("refresh failed %(InvalidGrantException %(HTTP 400%)", err.message)
    assert.matches('aws sso login %-%-profile dev', err.message)
    assert.equal(1, meta.stats().oidc_create_token)
    assert.equal(0, meta.stats().sso_role_credentials)
  end)

  it("keep a still-valid token when its early refresh fails", function()
    cache("corp", 120)
    meta.set { oidc = { refresh_token = "some-other-refresh-token" } }
    local c = assert(chain("dev"):get())
    assert.equal("sso", c.source)
    assert.equal(ACCESS, meta.requests()[2].headers["x-amz-sso_bearer_token"])
  end)

  it("read the legacy profile form (start URL in the profile), which never refreshes", function()
    local path = cache(LEGACY_URL, 120)
    local before = read(path)
    local c = assert(chain("legacy"):get())
    assert.equal("sso", c.source)
    assert.equal(0, meta.stats().oidc_create_token)
    assert.equal(before, read(path))
    assert.equal(ACCESS, meta.requests()[1].headers["x-amz-sso_bearer_token"])
    cache(LEGACY_URL, -1)
    local _, err = chain("legacy"):get()
    assert.matches('the SSO token has expired; run "aws sso login %-%-profile legacy"$', err.message:match("^(.-) %[") or err.message)
    assert.is_nil(err.message:find("--sso-session", 1, true))
    assert.equal(0, meta.stats().oidc_create_token)
  end)

  it("refuse bad settings by field and rule, before any request", function()
    cache("corp", 3600)
    local _, err = chain("bad-account"):get()
    assert.matches('profile "bad%-account": sso_account_id must be 12 digits', err.message)
    local _, err2 = chain("lost-session"):get()
    assert.matches('sso_session "nowhere" has no %[sso%-session nowhere%] section', err2.message)
    assert.equal(0, #meta.requests())
  end)

  it("retry a failed portal call through the retry policy", function()
    cache("corp", 3600)
    meta.set { fail_next = { sso = 1 } }
    local events = {}
    local c = assert(chain("dev", nil, { retry = { sso = { base = 0.01 } },
                                         log = function(ev) events[#events + 1] = ev end }):get())
    assert.equal("sso", c.source)
    assert.equal(1, #events)
    assert.equal("retry", events[1].event)
    assert.equal("GetRoleCredentials", events[1].op)
    assert.equal("InternalFailure", events[1].reason)
    assert.is_true(events[1].delay >= 0 and events[1].delay <= 0.01)
    assert.equal(1, meta.stats().injected_failures)
    assert.equal(2, #meta.requests())
  end)

  it("keep the access token, refresh token, client secret and role credentials out of errors", function()
    -- servers that quote the secrets back (the portal its bearer token,
    -- OIDC the client secret and refresh token)
    cache("corp", 120)
    meta.set { sso = { access_tokens = { "another-token" }, echo = true },
               oidc = { refresh_token = "some-other-refresh-token", echo = true } }
    local p = chain("dev")
    local c, err = p:get()
    assert.is_nil(c)
    assert.matches("UnauthorizedException %(HTTP 401%): Session token not found or invalid %(<redacted>%)", err.message)
    assert.matches('aws sso login %-%-profile dev', err.message)
    local reqs = meta.requests()
    assert.equal(CLIENT_SECRET, cjson.decode(reqs[1].body).clientSecret)   -- they were sent...
    assert.equal(ACCESS, reqs[2].headers["x-amz-sso_bearer_token"])
    for _, text in ipairs { tostring(err), err.message, tostring(p) } do   -- ...and are not in the error
      assert_no_secret(text, ACCESS, REFRESH, CLIENT_SECRET)
    end
    -- an expired token whose refresh is refused: the OIDC error quotes its secrets
    cache("corp", -60)
    local _, err2 = chain("dev"):get()
    assert.matches("InvalidGrantException", err2.message)
    assert_no_secret(tostring(err2), REFRESH, CLIENT_SECRET, ACCESS)
    -- role credentials: masked in tostring, and scrubbed from later errors
    meta.set { sso = { access_tokens = { ACCESS } } }
    cache("corp", 3600)
    local ok = chain("dev")
    local creds = assert(ok:get())
    assert_no_secret(tostring(creds) .. tostring(ok), creds.secret_access_key, creds.session_token)
    assert.equal("a <redacted> b <redacted>", ok:redact("a " .. creds.secret_access_key .. " b " .. creds.session_token))
  end)

  it("work under LuaJIT too (SHA-1 from the 5.1 build, the portal over curl)", function()
    assert.truthy(read(ROOT .. "/build/5.1/kinesis/core.so"), "build/5.1 is missing: run make LUA=luajit")
    cache("corp", 3600)
    local script = write(tmp .. "/child.lua", [[
local c, err = require("kinesis.credentials").chain{ profile = "dev" }:get()
io.write(c and (c.source .. " " .. c.access_key_id) or tostring(err))
]])
    local out = run(table.concat({ "env -i", "PATH=" .. shell_quote(os.getenv("PATH")), "HOME=" .. shell_quote(home),
      "AWS_EC2_METADATA_DISABLED=true", "AWS_ENDPOINT_URL=" .. shell_quote(meta.endpoint),
      "LUA_PATH=" .. shell_quote(ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;"),
      "LUA_CPATH=" .. shell_quote(ROOT .. "/build/5.1/?.so;;"), "luajit", shell_quote(script) }, " ") .. " 2>&1")
    assert.matches("^sso ASIASSO%d+$", out)
  end)
end)
