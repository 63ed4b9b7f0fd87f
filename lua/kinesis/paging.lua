-- kinesis.paging - client:pages(op, params) and client:items(op, params):
-- plain Lua iterators over every page / every item of a paginated operation,
-- driven by the model's paginators plus the Kinesis rules stated in prose.
-- They call the client's ordinary methods, so they work in any coroutine
-- and inside kinesis.run; no C frame sits between the caller and transport.

local errors = require "kinesis.errors"

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring

local M = {}

-- ListTagsForStream pages by the last tag key while HasMoreTags (API
-- reference, ListTagsForStream); the model has no paginator for it.
local EXTRA = {
  ListTagsForStream = {
    input_token = "ExclusiveStartTagKey", output_token = "Tags[-1].Key",
    more_results = "HasMoreTags", result_key = { "Tags" }, limit_key = "Limit",
  },
}

-- members the service rejects together with NextToken (API reference:
-- "Don't specify StreamName or StreamCreationTimestamp if you specify NextToken")
local DROP_WITH_TOKEN = {
  ListShards = { "StreamName", "StreamARN", "StreamCreationTimestamp", "ExclusiveStartShardId" },
  ListStreamConsumers = { "StreamCreationTimestamp" },
}

--- Evaluates a paginator path like "StreamDescription.Shards[-1].ShardId".
local function path_get(v, path)
  for part in path:gmatch("[^.]+") do
    if type(v) ~= "table" then return nil end
    local name, idx = part:match("^([^%[]+)%[(%-?%d+)%]$")
    if name then
      v = v[name]
      if type(v) ~= "table" then return nil end
      idx = tonumber(idx)
      if idx < 0 then idx = #v + 1 + idx else idx = idx + 1 end
      v = v[idx]
    else
      v = v[part]
    end
  end
  return v
end
M.path_get = path_get

function M.paginator(op)
  return op.paginator or EXTRA[op.name]
end

local function copy(t)
  local c = {}
  for k, v in pairs(t or {}) do c[k] = v end
  return c
end

--- Iterator over response pages. On failure it yields false, err once and
-- then ends (a nil first value would end a generic for before its body ran).
function M.pages(client, op, params)
  local pg = M.paginator(op)
  if not pg then
    error("kinesis: " .. op.name .. " is not paginated", 3)
  end
  local req = copy(params)
  local done, seen, pending = false, {}, nil
  return function()
    if done then return nil end
    if pending then
      done = true
      return false, pending
    end
    local out, err = client:call(op.name, req)
    if not out then
      -- false, not nil: a generic for ends on nil before its body sees err
      done = true
      return false, err
    end
    -- the continuation: the paginator's token, or for ListStreams on
    -- endpoints that answer HasMoreStreams without NextToken, the last name
    local key, token = pg.input_token, path_get(out, pg.output_token)
    if pg.more_results then
      local flag = path_get(out, pg.more_results)
      if flag == false then token = nil end
      if flag == true and token == nil and op.name == "ListStreams" then
        local names = out.StreamNames
        if type(names) == "table" and #names > 0 then
          key, token = "ExclusiveStartStreamName", names[#names]
        end
      end
    end
    if token == nil then
      done = true
      return out
    end
    if seen[key .. "\0" .. tostring(token)] then
      -- a server repeating its continuation would make the loop endless:
      -- hand out this page, then report the fault once
      pending = errors.protocol(op.name, "the server repeated the pagination token " .. tostring(token),
        { code = "RepeatedPaginationToken" })
      return out
    end
    seen[key .. "\0" .. tostring(token)] = true
    req = copy(req)
    if key ~= pg.input_token then req[pg.input_token] = nil end
    req[key] = token
    if key == "NextToken" then
      for _, k in ipairs(DROP_WITH_TOKEN[op.name] or {}) do req[k] = nil end
    end
    return out
  end
end

--- Iterator over the items of the result list(s) of every page.
function M.items(client, op, params)
  local pg = M.paginator(op)
  if not pg or not pg.result_key then
    error("kinesis: " .. op.name .. " has no item list", 3)
  end
  local next_page = M.pages(client, op, params)
  local list, i, done = nil, 0, false
  return function()
    while not done do
      if list and i < #list then
        i = i + 1
        return list[i]
      end
      local page, err = next_page()
      if not page then
        done = true
        if err then return false, err end
        return nil
      end
      list, i = nil, 0
      for _, key in ipairs(pg.result_key) do
        -- ListStreams: StreamSummaries (newer) carry more than StreamNames
        local l = path_get(page, key)
        if type(l) == "table" and (#l > 0 or not list) then
          if key == "StreamNames" and page.StreamSummaries then l = nil end
          if l then list = l end
        end
      end
      list = list or {}
    end
    return nil
  end
end

return M
