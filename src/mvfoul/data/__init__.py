"""Data: SoccerNet annotations -> actions -> decoded frames -> clip tensors -> multi-view batches.

``annotations`` reads a split into :class:`~mvfoul.data.annotations.Action` records (the official
label rules decide which actions count), ``video`` decodes only the frames a window needs,
``transforms`` turns frames into normalised clip tensors, and ``dataset`` assembles the views of
an action and pads a batch to its largest view count.
"""
