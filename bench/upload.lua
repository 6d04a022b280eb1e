-- wrk script: POST a JPEG to /api/images/ with tags; every request's bytes differ.
-- Arguments after `--`: the JPEG's path, then the tags (comma-separated).
-- A JPEG comment segment (FF FE) after the start marker makes each upload unique, so
-- content-addressed storage cannot skip the write.

local counter = 0
local threads = {}
local boundary = "imagestore-bench-7e3f1c"
local prefix, suffix

function setup(thread)
   table.insert(threads, thread)
   thread:set("id", #threads)
end

function init(args)
   local file = assert(io.open(args[1], "rb"))
   local image = file:read("*a")
   file:close()
   -- The body around the comment segment, built once: a request copies a large image only to
   -- join the parts.
   prefix = "--" .. boundary .. "\r\n"
      .. 'Content-Disposition: form-data; name="tags"\r\n\r\n' .. args[2] .. "\r\n"
      .. "--" .. boundary .. "\r\n"
      .. 'Content-Disposition: form-data; name="image"; filename="bench.jpg"\r\n'
      .. "Content-Type: image/jpeg\r\n\r\n"
      .. image:sub(1, 2)
   suffix = image:sub(3) .. "\r\n--" .. boundary .. "--\r\n"
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
   server_errors = 0
end

function request()
   counter = counter + 1
   local comment = string.format("bench upload %d-%d", id, counter)
   local length = #comment + 2
   local segment = "\255\254" .. string.char(math.floor(length / 256), length % 256) .. comment
   return wrk.format(nil, nil, nil, prefix .. segment .. suffix)
end

function response(status, headers, body)
   if status >= 500 then
      server_errors = server_errors + 1
   end
end

function done(summary, latency, requests)
   local total = 0
   for _, thread in ipairs(threads) do
      total = total + thread:get("server_errors")
   end
   io.write(string.format("5xx responses: %d\n", total))
end
