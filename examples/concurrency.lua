-- concurrency.lua - what kinesis.run buys: N PutRecord calls made one after
-- another, then the same N calls from N tasks of kinesis.run, and the ratio.
-- Concurrency overlaps waiting, so it needs a server that takes time to
-- answer, as the real service does (tens of milliseconds away). By default
-- this starts its own small server on loopback that answers every call
-- after DELAY_MS (50); give an endpoint to measure a real one instead:
--
--   lua5.4 examples/concurrency.lua                          # own server, 50 ms per answer
--   DELAY_MS=0 lua5.4 examples/concurrency.lua               # no latency: little to gain
--   lua5.4 examples/concurrency.lua http://127.0.0.1:4568    # e.g. make local-kinesis
--
-- Against kinesis-local expect little or no gain: it answers in about a
-- millisecond and is itself the bottleneck, so there is no waiting to overlap.

local kinesis = require "kinesis"

local N = tonumber(os.getenv("CALLS")) or 50
local endpoint = arg[1]
local server_pid

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- A loopback server that answers any POST with a PutRecord result after a
-- delay. It runs detached in its own process group and is killed at the end.
local SERVER_JS = [[
const http = require('http');
const delay = Number(process.argv[1] || 50);
const srv = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => setTimeout(() => {
    const body = '{"ShardId":"shardId-000000000000","SequenceNumber":"49590338271490256608559692538361571095921575989136588898"}';
    res.writeHead(200, { 'Content-Type': 'application/x-amz-json-1.1', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  }, delay));
});
srv.listen(0, '127.0.0.1', () => console.log(srv.address().port));
]]

local function start_server(delay_ms)
  local p = assert(io.popen(("setsid node -e %s %d & echo $!"):format(shell_quote(SERVER_JS), delay_ms)))
  server_pid = tonumber(p:read("*l"))
  local port = tonumber(p:read("*l"))
  -- the pipe stays open while the server runs; its output is one line
  if not port then error("could not start the loopback server (is node installed?)") end
  return "http://127.0.0.1:" .. port, p
end

local pipe, stream
if not endpoint then
  local delay_ms = tonumber(os.getenv("DELAY_MS")) or 50
  endpoint, pipe = start_server(delay_ms)
  stream = "any"
  print(("a loopback server answering after %d ms listens at %s"):format(delay_ms, endpoint))
end

local client = assert(kinesis.new {
  endpoint = endpoint,
  region = os.getenv("AWS_REGION") or "us-east-1",
  -- local servers accept any key; a real endpoint takes them from the environment
  credentials = not os.getenv("AWS_ACCESS_KEY_ID") and { access_key_id = "local", secret_access_key = "local" } or nil,
})

if not stream then
  stream = "concurrency-example-" .. os.time()
  assert(client:create_stream { StreamName = stream, ShardCount = 2 })
  assert(client:wait("stream_exists", { StreamName = stream }, { delay = 0.5, timeout = 120 }))
end

local function put(i)
  return assert(client:put_record { StreamName = stream, PartitionKey = "key-" .. i, Data = "record " .. i })
end

-- one after another: each call waits for its answer before the next is sent
local t0 = kinesis.now()
for i = 1, N do put(i) end
local sequential = kinesis.now() - t0

-- N tasks: every call is in flight at once over one curl multi handle
t0 = kinesis.now()
local results = kinesis.run(function()
  local tasks = {}
  for i = 1, N do tasks[i] = kinesis.spawn(put, i) end
  return kinesis.wait_all(tasks)
end)
local concurrent = kinesis.now() - t0

for _, r in ipairs(results) do
  if not r[1] then error(r[2]) end
end
print(("%d PutRecord calls one after another: %.3f s (%.0f calls/s)"):format(N, sequential, N / sequential))
print(("%d PutRecord calls from %d tasks of kinesis.run: %.3f s (%.0f calls/s)"):format(N, N, concurrent, N / concurrent))
print(("concurrent / sequential: x%.1f"):format(sequential / concurrent))

if stream ~= "any" then assert(client:delete_stream { StreamName = stream }) end
client:close()
if server_pid then
  os.execute("kill -TERM -" .. server_pid .. " 2>/dev/null || kill -TERM " .. server_pid .. " 2>/dev/null")
  pipe:close()
end
