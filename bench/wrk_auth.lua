-- wrk script: send "Authorization: Bearer <token>" with every request, the token read from the file named by
-- $GN_TOKEN_FILE (or given directly in $GN_TOKEN), and print a JSON summary at the end.
local token = os.getenv("GN_TOKEN")
if token == nil or token == "" then
  local file = assert(io.open(assert(os.getenv("GN_TOKEN_FILE"), "set GN_TOKEN_FILE or GN_TOKEN"), "r"))
  token = file:read("*l")
  file:close()
end
wrk.headers["Authorization"] = "Bearer " .. token
dofile((os.getenv("GN_BENCH_DIR") or "bench") .. "/wrk_report.lua")
