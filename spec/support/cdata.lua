-- cdata.lua - the record data of the consumer specs: "key|n|" followed by
-- bytes derived from (key, n) covering every byte value, so a consumer's
-- output can be checked byte for byte without storing what was written.
local M = {}

function M.payload(key, n)
  local len = 16 + (n * 7) % 48
  local bytes = {}
  local seed = n * 31
  for i = 1, #key do seed = seed + key:byte(i) * i end
  for i = 1, len do bytes[i] = string.char((seed + i * 73) % 256) end
  return key .. "|" .. n .. "|" .. table.concat(bytes)
end

--- key, n of a payload, or nil if it is not one of ours or not byte-exact.
function M.parse(data)
  local key, n = data:match("^([^|]+)|(%d+)|")
  if not key then return nil end
  n = tonumber(n)
  if M.payload(key, n) ~= data then return nil end
  return key, n
end

return M
