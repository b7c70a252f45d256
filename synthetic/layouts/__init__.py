"""Writers of the real datasets' layouts. Each exposes `jobs(spec)` (picklable callables that
render and write one unit of work and return truth rows) and `finish(spec, rows)` (index files
written once every job is done)."""
