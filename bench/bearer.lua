-- wrk script: send the bearer token read from $TOKEN_FILE (default /tmp/token) with every request.
local path = os.getenv("TOKEN_FILE") or "/tmp/token"
local file = assert(io.open(path, "r"))
local token = file:read("*l")
file:close()
wrk.headers["Authorization"] = "Bearer " .. token
