-- POST <url> with a JSON login body: `wrk -s login.lua URL -- USERNAME PASSWORD`.
-- The request is static (formatted once by wrk after `init`).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "summary.lua")

function init(args)
   local username, password = args[1], args[2]
   if username == nil or password == nil then
      error("usage: wrk -s login.lua URL -- USERNAME PASSWORD")
   end
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.body = string.format('{"username":"%s","password":"%s"}', username, password)
end
