-- tls_spec.lua - TLS verification is on by default. A certificate authority
-- and server certificates are made here with the openssl CLI; the fault
-- proxy (spec/support/faultproxy.js) serves HTTPS on loopback with them in
-- front of kinesis-local. Without the CA the call fails verification, with
-- it the call succeeds; a certificate for another name fails even with the
-- right CA. kinesis-local's own TLS port, whose certificate names no host,
-- works only with verification explicitly turned off.
local peers = require "support.peers"
local faultproxy = require "support.faultproxy"
local kinesis = require "kinesis"
local cjson = require "cjson"

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  assert(rc == 0, cmd .. "\n" .. out)
  return out
end

-- A CA (self-signed) and a leaf for `san` signed by it, as PEM files in dir.
local function make_ca(dir, name)
  local key, cert = dir .. "/" .. name .. ".key", dir .. "/" .. name .. ".pem"
  sh(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
    .. "-subj %s -addext 'basicConstraints=critical,CA:TRUE' "
    .. "-addext 'keyUsage=critical,keyCertSign,cRLSign' -keyout %s -out %s")
    :format(sh_quote("/CN=lua-kinesis test " .. name), sh_quote(key), sh_quote(cert)))
  return { key = key, cert = cert }
end

local function make_leaf(dir, name, ca, cn, san)
  local key, csr, cert, ext = dir .. "/" .. name .. ".key", dir .. "/" .. name .. ".csr",
    dir .. "/" .. name .. ".pem", dir .. "/" .. name .. ".ext"
  local f = assert(io.open(ext, "w"))
  f:write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
    "extendedKeyUsage=serverAuth\nsubjectAltName=", san, "\n")
  f:close()
  sh(("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj %s -keyout %s -out %s")
    :format(sh_quote("/CN=" .. cn), sh_quote(key), sh_quote(csr)))
  sh(("openssl x509 -req -in %s -CA %s -CAkey %s -CAcreateserial -days 2 -extfile %s -out %s")
    :format(sh_quote(csr), sh_quote(ca.cert), sh_quote(ca.key), sh_quote(ext), sh_quote(cert)))
  return { key = key, cert = cert }
end

describe("TLS verification", function()
  local dir, srv, ca, other_ca, good, wrong_name, proxy, wrong_proxy

  lazy_setup(function()
    dir = peers.root .. "/spec/.tmp/tls-" .. tostring(os.time()) .. "-" .. tostring(math.random(1e6))
    sh("mkdir -p " .. sh_quote(dir))
    ca = make_ca(dir, "ca")
    other_ca = make_ca(dir, "other-ca")
    good = make_leaf(dir, "loopback", ca, "127.0.0.1", "IP:127.0.0.1")
    wrong_name = make_leaf(dir, "elsewhere", ca, "kinesis.example.com", "DNS:kinesis.example.com")
    srv = peers.start("kinesis-local")
    proxy = faultproxy.start { upstream = srv.endpoint, tls = good }
    wrong_proxy = faultproxy.start { upstream = srv.endpoint, tls = wrong_name }
  end)

  lazy_teardown(function()
    if proxy then proxy:stop() end
    if wrong_proxy then wrong_proxy:stop() end
    if srv then srv.stop() end
    if dir then os.execute("rm -rf " .. sh_quote(dir)) end
  end)

  local function client(endpoint, extra)
    local cfg = { retry = { mode = "standard", max_attempts = 3, base = 0.01 },
                  timeout = { connect = 5, request = 10 } }
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return peers.client({ endpoint = endpoint }, cfg)
  end

  local function assert_tls_failure(out, err, meta, what)
    assert.is_nil(out, what .. ": the call went through")
    assert.is_table(err, what)
    assert.equal("transport", err.kind, what .. ": " .. tostring(err))
    assert.equal("TLS", err.code, what .. ": " .. tostring(err))
    assert.is_false(err.retryable, what .. ": a verification failure is not worth retrying")
    assert.equal(1, meta.attempts, what)
    local m = err.message:lower()
    assert.truthy(m:find("certificate", 1, true) or m:find("ssl", 1, true), err.message)
  end

  it("fails verification by default: the generated CA is not trusted", function()
    local c = client(proxy.endpoint)
    local out, err, meta = c:list_streams {}
    assert_tls_failure(out, err, meta, "default")
    assert.equal(0, proxy:stats().requests, "no request may reach a server that failed verification")
    c:close()
  end)

  it("succeeds with the CA that signed the 127.0.0.1 certificate (cafile)", function()
    local c = client(proxy.endpoint, { cafile = ca.cert })
    local out, err = c:list_streams {}
    assert.is_table(out, tostring(err))
    assert.is_table(out.StreamNames)
    c:close()
  end)

  it("fails with a CA that did not sign the certificate", function()
    local c = client(proxy.endpoint, { cafile = other_ca.cert })
    local out, err, meta = c:list_streams {}
    assert_tls_failure(out, err, meta, "other CA")
    c:close()
  end)

  it("fails for a certificate of another host name, even signed by the trusted CA", function()
    local c = client(wrong_proxy.endpoint, { cafile = ca.cert })
    local out, err, meta = c:list_streams {}
    assert_tls_failure(out, err, meta, "wrong name")
    c:close()
  end)

  it("verifies inside kinesis.run too (curl multi)", function()
    local bad, good_out
    kinesis.run(function()
      local c1 = client(proxy.endpoint)
      local c2 = client(proxy.endpoint, { cafile = ca.cert })
      local t1 = kinesis.spawn(function() return c1:list_streams {} end)
      local t2 = kinesis.spawn(function() return c2:list_streams {} end)
      local r = kinesis.wait_all { t1, t2 }
      bad = { out = r[1][2], err = r[1][3], meta = r[1][4] }
      good_out = r[2][2]
      c1:close()
      c2:close()
    end)
    assert_tls_failure(bad.out, bad.err, bad.meta, "multi, default")
    assert.is_table(good_out)
  end)

  describe("kinesis-local's TLS port (a certificate that names no host)", function()
    it("fails with verification on (the default)", function()
      local c = client(srv.tls_endpoint)
      local out, err, meta = c:list_streams {}
      assert_tls_failure(out, err, meta, "kinesis-local default")
      c:close()
    end)

    it("fails even when its own certificate is the trusted CA: the name cannot match", function()
      local pem = cjson.decode(peers.read_file(peers.root .. "/node_modules/kinesis-local/server.json")).server.cert
      local path = dir .. "/kinesis-local.pem"
      local f = assert(io.open(path, "w"))
      f:write(pem)
      f:close()
      local c = client(srv.tls_endpoint, { cafile = path })
      local out, err, meta = c:list_streams {}
      assert_tls_failure(out, err, meta, "kinesis-local with its certificate as CA")
      c:close()
    end)

    it("works only with verify = false", function()
      local c = client(srv.tls_endpoint, { verify = false })
      local out, err = c:list_streams {}
      assert.is_table(out, tostring(err))
      assert.is_table(out.StreamNames)
      c:close()
    end)
  end)
end)
