"""Data: SoccerNet annotations -> actions -> decoded frames -> clip tensors -> multi-view batches."""
