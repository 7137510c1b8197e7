"""`autodep bench`: measure the in-process limit, the served system and a plain FastAPI baseline.

bench.cli runs everything (`autodep bench`, `make bench`); the pure parts (wrk's output, ratios,
tables) live in bench.wrk and bench.report so unit tests need no network. bench/ may import
torch (the in-process limit) but is never imported by web/, worker/ or autodep_celery/.
"""
