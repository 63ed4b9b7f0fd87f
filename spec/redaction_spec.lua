-- redaction_spec.lua - secrets never leave the library in text, and nothing
-- a caller configures can smuggle a line break into a request header.
-- A child lua5.4 process runs failing calls of every kind with distinctive
-- secret values (static, environment, profile file, credential_process,
-- container and SSO credentials; servers that echo the request's secrets back in
-- their error answers, as AWS's signature-mismatch message does with the
-- canonical request), with KINESIS_LOG=debug; it prints tostring() of every error, client and
-- credentials object and every string field of every error. The spec greps
-- all of that output, stderr included, for the secrets, and checks that
-- each scenario really produced the error it was meant to.
local peers = require "support.peers"
local cjson = require "cjson"

local SECRET = "wJalrSECRETxUtnFEMIzK7MDENGbPxRfiCY"
local TOKEN = "IQoJSESSIONTOKENb3JpZ2luX2VjEJr8dGVzdA"
local AUTH = "CONTAINERAUTHTOKEN0123456789abcdef"
local AKID = "AKIDREDACTIONTEST01"
-- an IAM Identity Center token cache's secrets
local SSO_ACCESS = "aoaSSOACCESSTOKENredactionTest0123"
local SSO_REFRESH = "aorSSOREFRESHTOKENredactionTest4567"
local SSO_CLIENT_SECRET = "eyJSSOCLIENTSECRETredactionTest89ab"
local SECRETS = { SECRET, TOKEN, AUTH, SSO_ACCESS, SSO_REFRESH, SSO_CLIENT_SECRET }

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- An SSO profile (sso-session form) whose cached token is inside its
-- refresh window, with a refresh token and a client registration.
local function write_sso(home)
  os.execute("mkdir -p " .. sh_quote(home .. "/.aws/sso/cache"))
  write(home .. "/.aws/config", table.concat({
    "[profile sso]", "sso_session = corp", "sso_account_id = 123456789012", "sso_role_name = ReadOnly",
    "[sso-session corp]", "sso_start_url = https://corp.awsapps.com/start", "sso_region = us-east-1", "",
  }, "\n"))
  local p = io.popen("printf corp | sha1sum")
  local name = p:read("*a"):match("^(%x+)")
  p:close()
  write(home .. "/.aws/sso/cache/" .. name .. ".json", cjson.encode {
    accessToken = SSO_ACCESS, refreshToken = SSO_REFRESH, clientId = "client-id",
    clientSecret = SSO_CLIENT_SECRET, startUrl = "https://corp.awsapps.com/start", region = "us-east-1",
    expiresAt = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + 120),
    registrationExpiresAt = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + 86400),
  })
end

-- The child: runs one scenario (arg[1]) and prints what the library said.
local CHILD = [==[
local kinesis = require "kinesis"
local credentials = require "kinesis.credentials"
local scenario, endpoint, secret, token, akid = arg[1], arg[2], arg[3], arg[4], arg[5]

local seen = {}
local function dump(label, v, depth)
  depth = depth or 0
  if type(v) == "table" then
    if seen[v] or depth > 6 then return end
    seen[v] = true
    print(label .. " = " .. tostring(v))
    for k, x in pairs(v) do dump(label .. "." .. tostring(k), x, depth + 1) end
  elseif v ~= nil then
    print(label .. " = " .. tostring(v))
  end
end

local function client(creds, extra)
  local cfg = { endpoint = endpoint, region = "us-east-1", credentials = creds, retry = { mode = "off" },
                timeout = { connect = 2, request = 5 } }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  local c, err = kinesis.new(cfg)
  dump("new_error", err)
  return c
end

local static = { access_key_id = akid, secret_access_key = secret, session_token = token }

local function call(c, what)
  local out, err = c:list_streams {}
  print(what .. " result " .. tostring(out))
  dump(what, err)
  print(what .. " tostring " .. tostring(err))
  return out, err
end

if scenario == "server-echo" then
  local c = client(static)
  call(c, "aws_echo")       -- 400 InvalidSignatureException echoing the canonical request
  call(c, "html_echo")      -- 502 page echoing the request headers
  call(c, "json_echo")      -- 200 with a body that is not JSON and echoes them
  call(c, "skew_echo")      -- 400 SignatureDoesNotMatch (clock skew path), echoing
  print("client " .. tostring(c))
  dump("client_config_tostring", tostring(c.config))
  c:close()
elseif scenario == "subscribe-echo" then
  -- a 403 before the event stream starts, quoting the canonical request
  local c = client(static)
  local params = { ConsumerARN = "arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c:1",
                   ShardId = "shardId-000000000000", StartingPosition = { Type = "TRIM_HORIZON" } }
  for ev, err in c:subscribe_to_shard(params) do
    print("subscribe_to_shard event " .. tostring(ev))
    dump("sub_echo", err)
    print("sub_echo tostring " .. tostring(err))
  end
  for ev, err in c:subscribe(params) do
    print("subscribe event " .. tostring(ev))
    dump("resub_echo", err)
    print("resub_echo tostring " .. tostring(err))
    break
  end
  c:close()
elseif scenario == "header-injection" then
  for i, bad in ipairs { token .. "\r\nX-Injected: yes", token .. "\nX-Injected: yes",
                         token .. "\0tail", token .. "\rX" } do
    local c = client { access_key_id = akid, secret_access_key = secret, session_token = bad }
    call(c, "bad_token_" .. i)
    c:close()
  end
  local c = client { access_key_id = akid .. "\r\nX-Injected: yes", secret_access_key = secret }
  call(c, "bad_akid")
  c = client(static, { endpoint = endpoint .. "/\r\nX-Injected: yes" })
  if c then call(c, "bad_endpoint") end
  c = client(static, { region = "us-east-1\r\nX-Injected: yes", endpoint = false })
  if c then call(c, "bad_region") end
  local provider = function() return { access_key_id = akid, secret_access_key = secret,
                                        session_token = token .. "\r\nX-Injected: yes" } end
  c = client(provider)
  call(c, "bad_provider_token")
elseif scenario == "transport" then
  local c = client(static, { endpoint = "http://127.0.0.1:9" })
  call(c, "refused")
  c = client(static, { endpoint = endpoint:gsub("^http:", "https:") })
  call(c, "tls_to_plain")
  -- inside kinesis.run, and a task that raises with the error
  kinesis.run(function()
    local t = kinesis.spawn(function()
      local _, err = c:list_streams {}
      error(err)
    end)
    local ok, err = t:wait()
    print("task " .. tostring(ok))
    dump("task_error", err)
  end)
  local ok, msg = pcall(kinesis.run, function()
    kinesis.spawn(function()
      local _, err = c:list_streams {}
      error(tostring(err))
    end)
  end)
  print("run " .. tostring(ok) .. " " .. tostring(msg))
elseif scenario == "chain" then
  -- credentials from the environment, a profile file, credential_process
  -- or the container endpoint (set by the spec); the call fails somewhere
  local provider = credentials.chain { region = "us-east-1", profile = os.getenv("TEST_PROFILE") }
  local creds, err = provider:get()
  print("creds " .. tostring(creds))
  dump("chain_error", err)
  print("chain " .. tostring(provider))
  local c = client(nil, { profile = os.getenv("TEST_PROFILE") })
  if c then
    call(c, "chain_call")
    print("client " .. tostring(c))
  end
end
print("done " .. scenario)
]==]

describe("secrets in error messages, tostring and output", function()
  local stub, dir, child

  lazy_setup(function()
    stub = peers.start("stub")
    dir = peers.root .. "/spec/.tmp/redaction-" .. os.time() .. "-" .. math.random(1e6)
    -- an empty HOME for most runs; the profile test has its own
    os.execute("mkdir -p " .. sh_quote(dir .. "/home") .. " " .. sh_quote(dir .. "/profiles/.aws"))
    child = dir .. "/child.lua"
    write(child, CHILD)
  end)

  lazy_teardown(function()
    if stub then stub.stop() end
    if dir then os.execute("rm -rf " .. sh_quote(dir)) end
  end)

  before_each(function() stub:reset() end)

  -- Runs the child with `env` (NAME = value) and returns its stdout and
  -- stderr together. No AWS variable of the caller's reaches it, nor IMDS.
  local function run(scenario, env, home)
    local parts = { "env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN -u AWS_PROFILE",
      "-u AWS_CONTAINER_CREDENTIALS_FULL_URI -u AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
      "-u AWS_CONTAINER_AUTHORIZATION_TOKEN -u AWS_WEB_IDENTITY_TOKEN_FILE",
      "-u AWS_SHARED_CREDENTIALS_FILE -u AWS_CONFIG_FILE",
      "HOME=" .. sh_quote(home or (dir .. "/home")), "AWS_EC2_METADATA_DISABLED=true",
      -- every event the client logs is part of the output searched
      "KINESIS_LOG=debug" }
    for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. sh_quote(v) end
    local cmd = table.concat(parts, " ") .. " lua5.4 " .. sh_quote(child) .. " " .. sh_quote(scenario)
      .. " " .. sh_quote(stub.endpoint) .. " " .. sh_quote(SECRET) .. " " .. sh_quote(TOKEN)
      .. " " .. sh_quote(AKID) .. " 2>&1"
    local p = assert(io.popen(cmd))
    local out = p:read("*a")
    p:close()
    assert.truthy(out:find("done " .. scenario, 1, true), "the child did not finish:\n" .. out)
    return out
  end

  local function assert_no_secret(out)
    for _, s in ipairs(SECRETS) do
      local at = out:find(s, 1, true)
      if at then
        local from = math.max(1, at - 300)
        error(("a secret leaked into the output:\n...%s..."):format(out:sub(from, at + #s + 100)), 2)
      end
    end
  end

  it("servers that echo the secrets back: aws, non-JSON and protocol errors", function()
    local echo = ("The request signature we calculated does not match the signature you provided. "
      .. "The Canonical String for this request should have been 'POST\n/\n\ncontent-type:application/x-amz-json-1.1\n"
      .. "host:127.0.0.1\nx-amz-date:20260101T000000Z\nx-amz-security-token:%s\n' "
      .. "(key %s, Credential=%s/20260101/us-east-1/kinesis/aws4_request)"):format(TOKEN, SECRET, AKID)
    stub:queue {
      { status = 400, headers = { ["Content-Type"] = "application/x-amz-json-1.1",
                                   ["x-amzn-RequestId"] = "req-echo-1" },
        body = cjson.encode { __type = "InvalidSignatureException", message = echo } },
      { status = 502, headers = { ["Content-Type"] = "text/html" },
        body = "<html><body>Bad gateway. Your request: X-Amz-Security-Token: " .. TOKEN
          .. " secret " .. SECRET .. "</body></html>" },
      { status = 200, headers = { ["Content-Type"] = "application/x-amz-json-1.1" },
        body = "not json " .. TOKEN .. " " .. SECRET },
      { status = 400, headers = { ["Content-Type"] = "application/x-amz-json-1.1",
                                   Date = "Mon, 01 Jan 2001 00:00:00 GMT" },
        body = cjson.encode { __type = "SignatureDoesNotMatch", message = echo } },
      { status = 400, headers = { ["Content-Type"] = "application/x-amz-json-1.1" },
        body = cjson.encode { __type = "SignatureDoesNotMatch", message = echo } },
    }
    local out = run("server-echo")
    -- each scenario produced its error
    assert.truthy(out:find("aws_echo.code = InvalidSignatureException", 1, true), out)
    assert.truthy(out:find("html_echo.code = BadGateway", 1, true), out)
    assert.truthy(out:find("json_echo.kind = protocol", 1, true), out)
    assert.truthy(out:find("skew_echo.code = SignatureDoesNotMatch", 1, true), out)
    -- the log lines were there to be searched
    assert.truthy(out:find("event=response op=ListStreams attempt=1 status=400 code=InvalidSignatureException", 1, true), out)
    -- the request really carried the token (so the echo was a real leak risk)
    local reqs = stub:requests()
    assert.equal(TOKEN, reqs[1].headers["x-amz-security-token"])
    assert_no_secret(out)
  end)

  -- issue 11, finding 1: the pre-stream error path of SubscribeToShard
  -- built its error without the redactor
  it("SubscribeToShard answered 403 before the stream starts, echoing the token", function()
    local echo = ("The request signature we calculated does not match the signature you provided. "
      .. "The Canonical String for this request should have been 'POST\n/\n\n"
      .. "host:127.0.0.1\nx-amz-date:20260101T000000Z\nx-amz-security-token:%s\n'"):format(TOKEN)
    local answer = { status = 403, headers = { ["Content-Type"] = "application/x-amz-json-1.1",
                                               ["x-amzn-RequestId"] = "req-sub-echo" },
                     body = cjson.encode { __type = "InvalidSignatureException", message = echo } }
    stub:queue { answer, answer, answer, answer }
    local out = run("subscribe-echo")
    assert.truthy(out:find("sub_echo.code = InvalidSignatureException", 1, true), out)
    assert.truthy(out:find("resub_echo.code = InvalidSignatureException", 1, true), out)
    assert.truthy(out:find("sub_echo.message = The request signature", 1, true), out)
    assert.truthy(out:find("x-amz-security-token:<redacted>", 1, true), out)
    local reqs = stub:requests()
    assert.equal(TOKEN, reqs[1].headers["x-amz-security-token"])
    assert.equal("Kinesis_20131202.SubscribeToShard", reqs[1].headers["x-amz-target"])
    assert_no_secret(out)
  end)

  it("CR, LF or NUL in what becomes a header value is refused before anything is sent", function()
    local out = run("header-injection")
    for i = 1, 4 do
      assert.truthy(out:find("bad_token_" .. i .. " result nil", 1, true), out)
      assert.truthy(out:find("bad_token_" .. i .. ".retryable = false", 1, true), out)
    end
    assert.truthy(out:find("bad_akid result nil", 1, true), out)
    assert.truthy(out:find("bad_provider_token result nil", 1, true), out)
    -- a bad endpoint or region is refused by kinesis.new or by the call
    assert.falsy(out:find("bad_endpoint result table", 1, true), out)
    assert.falsy(out:find("bad_region result table", 1, true), out)
    assert.equal(0, #stub:requests(), "a request with an injected header reached the server")
    assert_no_secret(out)
  end)

  it("transport errors, TLS failures and errors raised through kinesis.run", function()
    local out = run("transport")
    assert.truthy(out:find("refused.code = ConnectionRefused", 1, true), out)
    assert.truthy(out:find("tls_to_plain.kind = transport", 1, true), out)
    assert.truthy(out:find("task false", 1, true), out)
    assert.truthy(out:find("run false", 1, true), out)
    assert_no_secret(out)
  end)

  it("environment credentials with a malformed session token", function()
    local out = run("chain", { AWS_ACCESS_KEY_ID = AKID, AWS_SECRET_ACCESS_KEY = SECRET,
                               AWS_SESSION_TOKEN = TOKEN .. "\nX-Injected: yes" })
    assert.truthy(out:find("chain_call result nil", 1, true), out)
    assert.equal(0, #stub:requests())
    assert_no_secret(out)
  end)

  it("a shared credentials file with a broken line, and a credential_process with bad output", function()
    write(dir .. "/profiles/.aws/credentials", table.concat({
      "[broken]", "aws_access_key_id = " .. AKID, "aws_secret_access_key " .. SECRET, "",
      "[partial]", "aws_secret_access_key = " .. SECRET, "aws_session_token = " .. TOKEN, "",
    }, "\n"))
    write(dir .. "/profiles/.aws/config", table.concat({
      "[profile proc]",
      "credential_process = printf '{\"Version\": 1, \"AccessKeyId\": \"" .. AKID
        .. "\", \"SecretAccessKey\": \"" .. SECRET .. "\", \"SessionToken\": \"" .. TOKEN .. "\"'",
      "",
    }, "\n"))
    for _, profile in ipairs { "broken", "partial", "proc" } do
      local out = run("chain", { TEST_PROFILE = profile }, dir .. "/profiles")
      assert.truthy(out:find("chain_error.code = CredentialsError", 1, true), profile .. ":\n" .. out)
      assert_no_secret(out)
    end
    assert.equal(0, #stub:requests())
  end)

  it("SSO: OIDC and the portal echo the refresh token, client secret and access token", function()
    local home = dir .. "/sso"
    write_sso(home)
    local function echo(status, code, text)
      return { status = status, headers = { ["Content-Type"] = "application/json", ["x-amzn-ErrorType"] = code },
               body = cjson.encode { error = "invalid_grant", message = text } }
    end
    local oidc = echo(400, "InvalidGrantException", ("refresh token %s of client secret %s refused")
      :format(SSO_REFRESH, SSO_CLIENT_SECRET))
    local portal = echo(401, "UnauthorizedException", "bearer " .. SSO_ACCESS .. " not valid")
    stub:queue { oidc, portal, oidc, portal }
    local out = run("chain", { TEST_PROFILE = "sso", AWS_ENDPOINT_URL_SSO = stub.endpoint,
                               AWS_ENDPOINT_URL_SSO_OIDC = stub.endpoint }, home)
    assert.truthy(out:find("chain_error.code = CredentialsError", 1, true), out)
    assert.truthy(out:find("UnauthorizedException (HTTP 401): bearer <redacted> not valid", 1, true), out)
    local reqs = stub:requests()
    assert.equal(4, #reqs)
    -- the secrets really went out (so the echoes were real leak risks)
    assert.equal(SSO_CLIENT_SECRET, cjson.decode(reqs[1].body).clientSecret)
    assert.equal(SSO_ACCESS, reqs[2].headers["x-amz-sso_bearer_token"])
    assert_no_secret(out)
  end)

  it("container credentials whose endpoint echoes the authorization token", function()
    stub:queue {
      { status = 403, headers = { ["Content-Type"] = "application/json" },
        body = cjson.encode { code = "AccessDenied", message = "bad token " .. AUTH } },
      { status = 403, headers = { ["Content-Type"] = "application/json" },
        body = cjson.encode { code = "AccessDenied", message = "bad token " .. AUTH } },
      { status = 500, headers = { ["Content-Type"] = "text/plain" }, body = "token was " .. AUTH },
      { status = 500, headers = { ["Content-Type"] = "text/plain" }, body = "token was " .. AUTH },
      { status = 500, headers = { ["Content-Type"] = "text/plain" }, body = "token was " .. AUTH },
      { status = 500, headers = { ["Content-Type"] = "text/plain" }, body = "token was " .. AUTH },
    }
    local out = run("chain", { AWS_CONTAINER_CREDENTIALS_FULL_URI = stub.endpoint .. "/creds",
                               AWS_CONTAINER_AUTHORIZATION_TOKEN = AUTH })
    assert.truthy(out:find("chain_error.code = CredentialsError", 1, true), out)
    local reqs = stub:requests()
    assert.is_true(#reqs >= 1)
    assert.equal(AUTH, reqs[1].headers["authorization"])
    assert_no_secret(out)
  end)

  it("container credentials with a line break in the authorization token are refused unsent", function()
    local out = run("chain", { AWS_CONTAINER_CREDENTIALS_FULL_URI = stub.endpoint .. "/creds",
                               AWS_CONTAINER_AUTHORIZATION_TOKEN = AUTH .. "\r\nX-Injected: yes" })
    assert.truthy(out:find("chain_error.code = CredentialsError", 1, true), out)
    assert.equal(0, #stub:requests())
    assert_no_secret(out)
  end)

  it("credentials that work still print masked: tostring of the credentials, chain and client", function()
    stub:queue { { status = 200, headers = { ["Content-Type"] = "application/x-amz-json-1.1" },
                   body = cjson.encode { StreamNames = {}, HasMoreStreams = false } } }
    local out = run("chain", { AWS_ACCESS_KEY_ID = AKID, AWS_SECRET_ACCESS_KEY = SECRET,
                               AWS_SESSION_TOKEN = TOKEN })
    assert.truthy(out:find("creds kinesis.credentials(", 1, true), out)
    assert.truthy(out:find("chain_call result table", 1, true), out)
    assert.equal(TOKEN, stub:requests()[1].headers["x-amz-security-token"])
    assert_no_secret(out)
  end)
end)
