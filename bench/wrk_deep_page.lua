-- wrk script for a deep feed page: every request asks for the same page, named by a fixed cursor read from
-- the file in $GN_CURSOR_FILE (bench/run.py walks the feed to page N once and saves that page's cursor).
-- The bearer token comes from $GN_TOKEN_FILE or $GN_TOKEN, as in wrk_auth.lua.
dofile((os.getenv("GN_BENCH_DIR") or "bench") .. "/wrk_auth.lua")
local file = assert(io.open(assert(os.getenv("GN_CURSOR_FILE"), "set GN_CURSOR_FILE"), "r"))
local cursor = file:read("*l")
file:close()
local separator = "?"
if string.find(wrk.path, "?", 1, true) then
  separator = "&"
end
wrk.path = wrk.path .. separator .. "cursor=" .. cursor
