-- wrk script for unauthenticated endpoints (GET /api/v1/health): no headers, a JSON summary at the end.
-- GN_BENCH_DIR is the folder holding these scripts (bench/run.py sets it; defaults to ./bench).
dofile((os.getenv("GN_BENCH_DIR") or "bench") .. "/wrk_report.lua")
