"""What every package may import: errors, process set-up (environment, Ray start-up, data dir,
tracking URI). Imports nothing heavy.
"""
