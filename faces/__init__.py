"""The face front end: decoding, MTCNN detection with 5 landmarks, tracking and alignment.

Shared by `preprocessing` (the datasets' shards) and `clef_core.inference` (`clef predict`,
`clef explain`), so both see a face the same way. It sits below both: it imports only
`clef_core.common` (errors), never preprocessing, training, tracking or inference.
Importing it sets nothing for the process.
"""
