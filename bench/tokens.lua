-- GET <url> with `Authorization: Bearer <token>`, cycling over the tokens of a file (one
-- per line): `wrk -s tokens.lua URL -- TOKEN_FILE`. Requests are formatted once in `init`,
-- so each request costs wrk one table lookup. Each thread starts at its own offset.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "summary.lua")

local threads = 0
function setup(thread)
   thread:set("thread_index", threads)
   threads = threads + 1
end

local requests = {}
local count, at = 0, 0

function init(args)
   local path = args[1]
   if path == nil then
      error("usage: wrk -s tokens.lua URL -- TOKEN_FILE")
   end
   for line in io.lines(path) do
      if #line > 0 then
         requests[#requests + 1] =
            wrk.format(nil, nil, { Authorization = "Bearer " .. line })
      end
   end
   count = #requests
   if count == 0 then
      error("no tokens in " .. path)
   end
   at = ((thread_index or 0) * math.floor(count / 2)) % count
end

function request()
   at = at % count + 1
   return requests[at]
end
