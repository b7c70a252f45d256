"""What every package may import: errors, process set-up (environment, Ray start-up, data dir,
tracking URI), the dataset registry (`datasets`) and the shard manifest (`manifest`). Imports
nothing heavy.
"""
