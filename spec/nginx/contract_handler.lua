-- contract_handler.lua - the nginx side of spec/transport_contract_spec.lua:
-- runs one case of spec/support/transport_cases.lua in a content phase with
-- the cosocket transport and answers its result as JSON. The spec posts the
-- case's context (endpoints, credentials) as the request body.

local cjson = require "cjson.safe"
local kinesis = require "kinesis"
local cases = require "support.transport_cases"

local ngx = ngx

local M = {}

local runs = 0

local function reply(status, t)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(assert(cjson.encode(t)))
end

function M.run()
  local case = cases.by_name[ngx.var.case_name]
  if not case then return reply(404, { error = "no case " .. tostring(ngx.var.case_name) }) end
  ngx.req.read_body()
  local ctx = cjson.decode(ngx.req.get_body_data() or "")
  if type(ctx) ~= "table" then return reply(400, { error = "the body is not a JSON context" }) end
  runs = runs + 1
  -- a pool of its own per run: no case rides on a connection another left
  -- in the worker's pool (and trusted/untrusted locations never share one)
  local pool = { name = "contract-" .. runs .. ngx.var.uri }
  ctx.transport = "cosocket"
  ctx.trust = {}          -- this location's lua_ssl_trusted_certificate, if any
  function ctx.client(endpoint, extra)
    local cfg = { endpoint = endpoint, region = ctx.region, credentials = ctx.credentials,
                  transport = "cosocket", pool = pool }
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return assert(kinesis.new(cfg))
  end
  function ctx.raw_transport(opts)
    opts = opts or {}
    opts.pool = pool
    return require("kinesis.transport.cosocket").new(opts)
  end
  local ok, result = pcall(case.run, ctx)
  if not ok then return reply(500, { error = tostring(result) }) end
  reply(200, result)
end

return M
