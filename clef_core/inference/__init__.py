"""The Predictor behind `clef predict`: a trained checkpoint applied to aligned faces (the face
front end is `preprocessing`'s).
"""
